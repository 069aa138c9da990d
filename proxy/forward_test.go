package proxy

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/usherhq/usher/session"
)

var testNames = HeaderNames{
	Username:     "X-Remote-User",
	Email:        "X-Remote-Email",
	DisplayName:  "X-Remote-Name",
	Groups:       "X-Remote-Groups",
	Strip:        []string{"X-Debug-User"},
	SecretHeader: "X-Usher-Secret",
	SecretValue:  "s3cret",
}

func testSession() *session.Session {
	return &session.Session{
		ID: "sid", IdP: "entra", Subject: "00u1",
		Username: "jdoe", Email: "jdoe@example.com", DisplayName: "Jürgen Döe",
		Groups: []string{"jira-users", "Ωmega team"},
	}
}

// recorder is an upstream app that records every request it receives.
type recorder struct {
	mu   sync.Mutex
	reqs []*http.Request
}

func (rec *recorder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rec.mu.Lock()
	rec.reqs = append(rec.reqs, r.Clone(context.Background()))
	rec.mu.Unlock()
	io.WriteString(w, "upstream ok")
}

func (rec *recorder) last(t *testing.T) *http.Request {
	t.Helper()
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.reqs) == 0 {
		t.Fatal("upstream received nothing")
	}
	return rec.reqs[len(rec.reqs)-1]
}

// stack is client → front server (usher's Forwarder) → upstream. Requests
// under /anon/ are forwarded without a session.
type stack struct {
	front    *httptest.Server
	upstream *httptest.Server
	fwd      *Forwarder
	logs     *bytes.Buffer
}

func newStack(t *testing.T, upstream http.Handler, s *session.Session) *stack {
	t.Helper()
	up := httptest.NewServer(upstream)
	t.Cleanup(up.Close)
	u, _ := url.Parse(up.URL)
	logs := &bytes.Buffer{}
	var mu sync.Mutex
	log := slog.New(slog.NewTextHandler(lockedWriter{&mu, logs}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	fwd := NewForwarder(u, testNames, nil, log)
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/anon/") {
			fwd.Forward(w, r, nil)
			return
		}
		fwd.Forward(w, r, s)
	}))
	t.Cleanup(front.Close)
	return &stack{front: front, upstream: up, fwd: fwd, logs: logs}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// rawRequest writes a request byte for byte (header spellings, duplicates
// and all) and returns the response.
func rawRequest(t *testing.T, addr, path string, headerLines ...string) *http.Response {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	var b strings.Builder
	fmt.Fprintf(&b, "GET %s HTTP/1.1\r\nHost: jira.example.com\r\n", path)
	for _, l := range headerLines {
		b.WriteString(l + "\r\n")
	}
	b.WriteString("\r\n")
	if _, err := io.WriteString(conn, b.String()); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp
}

// spellings returns every header of h whose name is a spelling of name
// (case and '_' for '-' ignored), with its values.
func spellings(h http.Header, name string) map[string][]string {
	out := map[string][]string{}
	for k, v := range h {
		if normalHeader(k) == normalHeader(name) {
			out[k] = v
		}
	}
	return out
}

func addr(s *httptest.Server) string { return strings.TrimPrefix(s.URL, "http://") }

// TestSpoofMatrix runs over both ways a request can leave usher: the
// direct path and ReverseProxy.
func TestSpoofMatrix(t *testing.T) {
	for _, direct := range []bool{true, false} {
		t.Run(fmt.Sprintf("direct=%v", direct), func(t *testing.T) { spoofMatrix(t, direct) })
	}
}

func spoofMatrix(t *testing.T, direct bool) {
	rec := &recorder{}
	st := newStack(t, rec, testSession())
	st.fwd.noDirect = !direct
	want := map[string]string{ // what usher sends with a session
		"X-Remote-User":   "jdoe",
		"X-Remote-Email":  "jdoe@example.com",
		"X-Remote-Name":   "Jürgen Döe",
		"X-Remote-Groups": "jira-users,Ωmega team",
		"X-Usher-Secret":  "s3cret",
		"X-Debug-User":    "",
	}
	variants := func(name string) map[string][]string {
		lower, upper := strings.ToLower(name), strings.ToUpper(name)
		under := strings.ReplaceAll(name, "-", "_")
		mixed := strings.Replace(lower, "-", "_", 1)
		return map[string][]string{
			"canonical":              {name + ": mallory"},
			"lower":                  {lower + ": mallory"},
			"upper":                  {upper + ": mallory"},
			"underscores":            {under + ": mallory"},
			"lower underscores":      {strings.ToLower(under) + ": mallory"},
			"mixed separators":       {mixed + ": mallory"},
			"duplicate":              {name + ": mallory", name + ": eve"},
			"duplicate spellings":    {name + ": mallory", under + ": eve", lower + ": trudy"},
			"empty value":            {name + ":"},
			"Connection-named":       {"Connection: " + name, name + ": mallory"},
			"Connection-named lower": {"Connection: keep-alive, " + lower, lower + ": mallory"},
			"Connection underscore":  {"Connection: " + under, under + ": mallory"},
		}
	}
	for name, usherValue := range want {
		for vname, lines := range variants(name) {
			for _, anon := range []bool{false, true} {
				path := "/browse/X-1"
				if anon {
					path = "/anon/rest/api/2/myself"
				}
				t.Run(fmt.Sprintf("%s/%s/anon=%v", name, vname, anon), func(t *testing.T) {
					resp := rawRequest(t, addr(st.front), path, lines...)
					if resp.StatusCode != http.StatusOK {
						t.Fatalf("status %s", resp.Status)
					}
					got := spellings(rec.last(t).Header, name)
					expect := usherValue
					if anon && name != "X-Usher-Secret" {
						expect = ""
					}
					if expect == "" {
						if len(got) != 0 {
							t.Fatalf("upstream saw %v, want no %s at all", got, name)
						}
						return
					}
					if len(got) != 1 || !slices.Equal(got[name], []string{expect}) {
						t.Fatalf("upstream saw %v, want exactly %s: %q", got, name, expect)
					}
				})
			}
		}
	}
}

func TestHeaderValues(t *testing.T) {
	tests := []struct {
		name      string
		mod       func(*session.Session)
		header    string
		want      string // "" = header absent
		wantDebug bool
	}{
		{"non-ASCII display name as UTF-8", func(s *session.Session) { s.DisplayName = "José Ñúñez 名前" }, "X-Remote-Name", "José Ñúñez 名前", false},
		{"CRLF in display name dropped", func(s *session.Session) { s.DisplayName = "x\r\nX-Remote-User: admin" }, "X-Remote-Name", "", true},
		{"NUL in username dropped", func(s *session.Session) { s.Username = "jdoe\x00admin" }, "X-Remote-User", "", true},
		{"leading space username dropped", func(s *session.Session) { s.Username = " admin" }, "X-Remote-User", "", true},
		{"tab in email dropped", func(s *session.Session) { s.Email = "a\t@example.com" }, "X-Remote-Email", "", true},
		{"invalid UTF-8 dropped", func(s *session.Session) { s.DisplayName = "\xff\xfe" }, "X-Remote-Name", "", true},
		{"empty username not sent", func(s *session.Session) { s.Username = "" }, "X-Remote-User", "", false},
		{"comma group dropped", func(s *session.Session) { s.Groups = []string{"a", "b,c", "d"} }, "X-Remote-Groups", "a,d", true},
		{"bad groups dropped", func(s *session.Session) { s.Groups = []string{"", "x\n", "Ωmega", " y"} }, "X-Remote-Groups", "Ωmega", true},
		{"no groups", func(s *session.Session) { s.Groups = nil }, "X-Remote-Groups", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := testSession()
			tt.mod(s)
			rec := &recorder{}
			st := newStack(t, rec, s)
			resp, err := http.Get(st.front.URL + "/")
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status %s", resp.Status)
			}
			got := spellings(rec.last(t).Header, tt.header)
			if tt.want == "" && len(got) != 0 || tt.want != "" && !slices.Equal(got[tt.header], []string{tt.want}) {
				t.Fatalf("upstream saw %q, want %q", got, tt.want)
			}
			if logged := strings.Contains(st.logs.String(), "left out"); logged != tt.wantDebug {
				t.Errorf("debug log = %v, want %v: %s", logged, tt.wantDebug, st.logs)
			}
			if problems := HeaderProblems(s); (len(problems) > 0) != tt.wantDebug {
				t.Errorf("HeaderProblems = %q", problems)
			}
		})
	}
}

func TestForwardedHeaders(t *testing.T) {
	rec := &recorder{}
	st := newStack(t, rec, testSession())
	spoof := []string{
		"X-Forwarded-For: 6.6.6.6",
		"X_Forwarded_For: 6.6.6.6",
		"X-Forwarded-Host: evil.example",
		"x-forwarded-proto: https",
		"Forwarded: for=6.6.6.6;host=evil.example",
	}
	check := func(t *testing.T, wantHost, wantProto string) {
		t.Helper()
		r := rec.last(t)
		for name, want := range map[string]string{
			"X-Forwarded-For":   "127.0.0.1",
			"X-Forwarded-Host":  "jira.example.com",
			"X-Forwarded-Proto": wantProto,
		} {
			if got := spellings(r.Header, name); len(got) != 1 || !slices.Equal(got[name], []string{want}) {
				t.Errorf("%s: upstream saw %q, want %q", name, got, want)
			}
		}
		if got := spellings(r.Header, "Forwarded"); len(got) != 0 {
			t.Errorf("Forwarded reached upstream: %q", got)
		}
		if r.Host != wantHost {
			t.Errorf("Host = %q, want %q", r.Host, wantHost)
		}
	}

	rawRequest(t, addr(st.front), "/", spoof...)
	check(t, "jira.example.com", "http")

	st.fwd.PreserveHost = false
	st.fwd.Proto = "https"
	rawRequest(t, addr(st.front), "/anon/x", spoof...)
	check(t, addr(st.upstream), "https")
}

func TestUpstreamPath(t *testing.T) {
	rec := &recorder{}
	up := httptest.NewServer(rec)
	defer up.Close()
	u, _ := url.Parse(up.URL + "/jira")
	fwd := NewForwarder(u, testNames, nil, nil)
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fwd.Forward(w, r, nil) }))
	defer front.Close()
	resp, err := http.Get(front.URL + "/browse/X-1?a=b")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got := rec.last(t).URL.String(); got != "/jira/browse/X-1?a=b" {
		t.Fatalf("upstream URL %q", got)
	}
}

// TestStreaming proves each flushed chunk reaches the client before the
// upstream writes the next: the upstream waits for the client to have read
// the first one, so a proxy that buffered would deadlock (the context
// deadline only turns that into a failure instead of a hang).
func TestStreaming(t *testing.T) {
	for _, ct := range []string{"text/event-stream", "text/plain"} {
		t.Run(ct, func(t *testing.T) {
			release := make(chan struct{})
			var once sync.Once
			unblock := func() { once.Do(func() { close(release) }) }
			defer unblock()
			up := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", ct)
				io.WriteString(w, "first\n")
				w.(http.Flusher).Flush()
				<-release
				io.WriteString(w, "second\n")
			})
			st := newStack(t, up, testSession())
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			req, _ := http.NewRequestWithContext(ctx, "GET", st.front.URL+"/stream", nil)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			br := bufio.NewReader(resp.Body)
			line, err := br.ReadString('\n')
			if err != nil || line != "first\n" {
				t.Fatalf("first chunk: %q, %v (not flushed through the proxy)", line, err)
			}
			unblock()
			rest, err := io.ReadAll(br)
			if err != nil || string(rest) != "second\n" {
				t.Fatalf("rest: %q, %v", rest, err)
			}
		})
	}
}

// TestWebSocket runs a real Upgrade handshake through the proxy over a
// hijacked connection and echoes bytes both ways. The client also names
// the identity header in Connection and sends its own copy.
func TestWebSocket(t *testing.T) {
	up := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
			http.Error(w, "upgrade required", http.StatusUpgradeRequired)
			return
		}
		user := strings.Join(spellings(r.Header, "X-Remote-User")["X-Remote-User"], "|")
		n := len(spellings(r.Header, "X-Remote-User"))
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Error(err)
			return
		}
		defer conn.Close()
		io.WriteString(conn, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
		for {
			line, err := brw.ReadString('\n')
			if err != nil {
				return
			}
			fmt.Fprintf(conn, "%s(%d):%s", user, n, line)
		}
	})
	st := newStack(t, up, testSession())
	conn, err := net.Dial("tcp", addr(st.front))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second)) // hang guard only
	io.WriteString(conn, "GET /ws HTTP/1.1\r\nHost: jira.example.com\r\n"+
		"Connection: Upgrade, X-Remote-User\r\nUpgrade: websocket\r\n"+
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"+
		"X-Remote-User: mallory\r\n\r\n")
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("status %s", resp.Status)
	}
	for _, msg := range []string{"hello\n", "again\n"} {
		io.WriteString(conn, msg)
		got, err := br.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		if want := "jdoe(1):" + msg; got != want {
			t.Fatalf("echo %q, want %q", got, want)
		}
	}
}

func TestUpstreamDown(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse("http://" + l.Addr().String())
	l.Close()
	var logs bytes.Buffer
	fwd := NewForwarder(u, testNames, nil, slog.New(slog.NewTextHandler(&logs, nil)))
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fwd.Forward(w, r, testSession()) }))
	defer front.Close()
	resp, err := http.Get(front.URL + "/secret/path")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadGateway {
		t.Fatalf("status %s", resp.Status)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Errorf("Content-Type %q", ct)
	}
	if b := string(body); strings.Contains(b, "dial") || strings.Contains(b, "127.0.0.1") || len(b) > 100 {
		t.Errorf("body leaks internals: %q", b)
	}
	if l := logs.String(); !strings.Contains(l, "level=ERROR") || !strings.Contains(l, "connection refused") || !strings.Contains(l, "/secret/path") {
		t.Errorf("log: %s", l)
	}
}

func TestRequestIDOnErrorPageAndNeverTheClients(t *testing.T) {
	var got []string
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = r.Header.Values("X-Request-Id")
	}))
	u, _ := url.Parse(up.URL)
	fwd := NewForwarder(u, testNames, nil, nil)
	req := httptest.NewRequest("GET", "http://jira.example.com/x", nil)
	req.Header["X-Request-Id"] = []string{"client-chosen"}
	req.Header["x_request_id"] = []string{"client-chosen-too"}
	fwd.Forward(httptest.NewRecorder(), req, nil)
	if len(got) != 0 {
		t.Fatalf("app saw the client's X-Request-Id %q", got)
	}
	up.Close() // now the upstream is down: the 502 page quotes an ID
	w := httptest.NewRecorder()
	fwd.Forward(w, httptest.NewRequest("GET", "http://jira.example.com/x", nil), nil)
	if w.Code != http.StatusBadGateway || !strings.Contains(w.Body.String(), "Request ID: ") {
		t.Fatalf("502 page: %d %q", w.Code, w.Body)
	}
}
