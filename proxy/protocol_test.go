package proxy

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// ledger is an upstream that reads every request body and writes down
// what it received, one line per request.
type ledger struct {
	mu   sync.Mutex
	seen []string
}

func (l *ledger) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	line := fmt.Sprintf("%s %s %q", r.Method, r.URL.Path, body)
	if err != nil {
		line += " (body error)"
	}
	l.mu.Lock()
	l.seen = append(l.seen, line)
	l.mu.Unlock()
	fmt.Fprintf(w, "upstream saw %s %s", r.Method, r.URL.Path)
}

func (l *ledger) requests() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.seen)
}

// protoStack is client → front (Forwarder, counting what it forwards) →
// upstream.
type protoStack struct {
	front *httptest.Server
	mu    sync.Mutex
	sent  []string // what the front server parsed and forwarded
}

func newProtoStack(t *testing.T, upstream http.Handler) *protoStack {
	t.Helper()
	up := httptest.NewServer(upstream)
	t.Cleanup(up.Close)
	fwd := NewForwarder(mustParseURL(t, up.URL), testNames, nil, nil)
	ps := &protoStack{}
	ps.front = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ps.mu.Lock()
		ps.sent = append(ps.sent, r.Method+" "+r.URL.Path)
		ps.mu.Unlock()
		fwd.Forward(w, r, testSession())
	}))
	t.Cleanup(ps.front.Close)
	return ps
}

func (ps *protoStack) forwarded() []string {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	return slices.Clone(ps.sent)
}

// exchange writes raw on one connection and reads answers until the
// server closes it or stays silent for a moment. closed reports that
// the server closed the connection.
func exchange(t *testing.T, addr, raw string) (answers []*http.Response, bodies []string, closed bool) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	for {
		c.SetReadDeadline(time.Now().Add(time.Second))
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			var ne net.Error
			return answers, bodies, !(errors.As(err, &ne) && ne.Timeout())
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		answers, bodies = append(answers, resp), append(bodies, string(b))
	}
}

// TestSmugglingNeverSplitsARequest sends the classic desync attempts. Go's
// server (usher's front) refuses the ambiguous ones outright and reads
// the others by Transfer-Encoding, as RFC 9112 says. Whatever it accepts,
// the upstream must see exactly the requests usher parsed and forwarded
// (the "smuggled" request never as a request of its own), and after any
// chunked request usher closes the client connection, so bytes a front
// proxy counted differently can never prefix another request (RFC 9112
// §6.1: "the server MUST close the connection after responding").
func TestSmugglingNeverSplitsARequest(t *testing.T) {
	t.Parallel()
	smuggled := "GET /smuggled HTTP/1.1\r\nHost: jira.example.com\r\n\r\n"
	chunk := fmt.Sprintf("%x\r\n%s\r\n0\r\n\r\n", len(smuggled), smuggled)
	for _, tc := range []struct {
		name       string
		raw        string
		wantStatus int // of the first answer; 0 = any 4xx/5xx refusal
	}{
		{"CL.TE", "POST /a HTTP/1.1\r\nHost: jira.example.com\r\nContent-Length: " +
			fmt.Sprint(len("0\r\n\r\n"+smuggled)) + "\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + smuggled, http.StatusOK},
		{"TE.CL", "POST /a HTTP/1.1\r\nHost: jira.example.com\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n" + chunk, http.StatusOK},
		{"TE.CL, CL first", "POST /a HTTP/1.1\r\nHost: jira.example.com\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n" + chunk, http.StatusOK},
		{"duplicate Content-Length", "POST /a HTTP/1.1\r\nHost: jira.example.com\r\nContent-Length: 0\r\nContent-Length: " +
			fmt.Sprint(len(smuggled)) + "\r\n\r\n" + smuggled, 0},
		{"Content-Length list", "POST /a HTTP/1.1\r\nHost: jira.example.com\r\nContent-Length: 0, " +
			fmt.Sprint(len(smuggled)) + "\r\n\r\n" + smuggled, 0},
		{"two Transfer-Encodings", "POST /a HTTP/1.1\r\nHost: jira.example.com\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\nContent-Length: 5\r\n\r\n" + chunk, 0},
		{"Transfer-Encoding list", "POST /a HTTP/1.1\r\nHost: jira.example.com\r\nTransfer-Encoding: identity, chunked\r\nContent-Length: 5\r\n\r\n" + chunk, 0},
		{"obfuscated Transfer-Encoding", "POST /a HTTP/1.1\r\nHost: jira.example.com\r\nTransfer-Encoding: xchunked\r\nContent-Length: 5\r\n\r\n" + chunk, 0},
		{"space before colon", "POST /a HTTP/1.1\r\nHost: jira.example.com\r\nTransfer-Encoding : chunked\r\nContent-Length: 5\r\n\r\n" + chunk, 0},
		{"negative Content-Length", "POST /a HTTP/1.1\r\nHost: jira.example.com\r\nContent-Length: -1\r\n\r\n" + smuggled, 0},
		{"plus-signed Content-Length", "POST /a HTTP/1.1\r\nHost: jira.example.com\r\nContent-Length: +5\r\n\r\n" + smuggled, 0},
		{"bad chunk size", "POST /a HTTP/1.1\r\nHost: jira.example.com\r\nTransfer-Encoding: chunked\r\n\r\n1;" + strings.Repeat("x", 5000) + "\r\nx\r\n0\r\n\r\n" + smuggled, 0},
		{"GET with a body", "GET /a HTTP/1.1\r\nHost: jira.example.com\r\nContent-Length: " + fmt.Sprint(len(smuggled)) + "\r\n\r\n" + smuggled, http.StatusOK},
		{"HTTP/1.0 with Transfer-Encoding", "POST /a HTTP/1.0\r\nHost: jira.example.com\r\nTransfer-Encoding: chunked\r\nContent-Length: " +
			fmt.Sprint(len(chunk)) + "\r\n\r\n" + chunk, http.StatusOK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			led := &ledger{}
			ps := newProtoStack(t, led)
			answers, bodies, _ := exchange(t, addr(ps.front), tc.raw)
			if len(answers) == 0 {
				t.Fatal("no answer at all")
			}
			switch {
			case tc.wantStatus == 0 && answers[0].StatusCode < 400:
				t.Fatalf("accepted (%s, %q); want a refusal", answers[0].Status, bodies[0])
			case tc.wantStatus != 0 && answers[0].StatusCode != tc.wantStatus:
				t.Fatalf("status %s, want %d", answers[0].Status, tc.wantStatus)
			}
			// The smuggled text may arrive as body bytes; never as a
			// request, and the upstream sees no request usher did not
			// forward (it may see fewer: a body that fails to parse is cut
			// off before the request is sent).
			got, sent := led.requests(), ps.forwarded()
			for _, r := range got {
				if strings.HasPrefix(r, "GET /smuggled ") {
					t.Fatalf("the smuggled request reached the upstream as a request: %q", got)
				}
			}
			if len(got) > len(sent) || len(sent) > 1 {
				t.Fatalf("usher forwarded %q, the upstream saw %q; want at most the one request", sent, got)
			}
			for i, r := range got {
				if !strings.HasPrefix(r, sent[i]+" ") {
					t.Fatalf("usher forwarded %q, the upstream saw %q", sent, got)
				}
			}
			if len(answers) > 1 {
				t.Fatalf("%d answers to one request: %v", len(answers), bodies)
			}
		})
	}
}

// TestChunkedRequestClosesConnection: after a request framed by
// Transfer-Encoding, which is where a front proxy and usher could count
// a body differently, usher answers and closes the connection.
func TestChunkedRequestClosesConnection(t *testing.T) {
	t.Parallel()
	ps := newProtoStack(t, &ledger{})
	answers, _, closed := exchange(t, addr(ps.front),
		"POST /a HTTP/1.1\r\nHost: jira.example.com\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"+
			"GET /b HTTP/1.1\r\nHost: jira.example.com\r\n\r\n")
	if len(answers) != 1 || !closed {
		t.Fatalf("%d answers, closed %v; want one answer, then the connection closed", len(answers), closed)
	}
	if !answers[0].Close { // ReadResponse turns "Connection: close" into Close
		t.Error("the answer did not say Connection: close")
	}
}

// TestPipelining: requests written back to back on one connection are
// answered in order, each by its own upstream request.
func TestPipelining(t *testing.T) {
	t.Parallel()
	led := &ledger{}
	ps := newProtoStack(t, led)
	raw := "GET /one HTTP/1.1\r\nHost: jira.example.com\r\n\r\n" +
		"POST /two HTTP/1.1\r\nHost: jira.example.com\r\nContent-Length: 5\r\n\r\nhello" +
		"HEAD /three HTTP/1.1\r\nHost: jira.example.com\r\n\r\n" +
		"GET /four HTTP/1.1\r\nHost: jira.example.com\r\nConnection: close\r\n\r\n"
	c, err := net.Dial("tcp", addr(ps.front))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, raw)
	c.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(c)
	for _, want := range []struct{ method, path string }{{"GET", "/one"}, {"POST", "/two"}, {"HEAD", "/three"}, {"GET", "/four"}} {
		resp, err := http.ReadResponse(br, &http.Request{Method: want.method})
		if err != nil {
			t.Fatalf("answer to %s: %v", want.path, err)
		}
		body, _ := io.ReadAll(resp.Body)
		if wb := "upstream saw " + want.method + " " + want.path; want.method != "HEAD" && string(body) != wb {
			t.Fatalf("answer %q, want %q", body, wb)
		}
	}
	want := []string{`GET /one ""`, `POST /two "hello"`, `HEAD /three ""`, `GET /four ""`}
	if got := led.requests(); !slices.Equal(got, want) {
		t.Fatalf("upstream saw %q, want %q", got, want)
	}
}

// TestExpectContinue: the client's Expect: 100-continue travels to the
// upstream, so an upstream that refuses the request does so before the
// client sends its (perhaps 2 GB) body; one that accepts gets it.
func TestExpectContinue(t *testing.T) {
	t.Parallel()
	up := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Expect") != "100-continue" {
			http.Error(w, "Expect did not reach the upstream", http.StatusExpectationFailed)
			return
		}
		if r.URL.Path == "/refuse" {
			http.Error(w, "too large", http.StatusRequestEntityTooLarge)
			return
		}
		b, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "got %q", b)
	})
	ps := newProtoStack(t, up)
	for _, tc := range []struct {
		path       string
		wantStatus int
		sendBody   bool
	}{{"/accept", http.StatusOK, true}, {"/refuse", http.StatusRequestEntityTooLarge, false}} {
		t.Run(tc.path, func(t *testing.T) {
			c, err := net.Dial("tcp", addr(ps.front))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(10 * time.Second))
			fmt.Fprintf(c, "PUT %s HTTP/1.1\r\nHost: jira.example.com\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n", tc.path)
			br := bufio.NewReader(c)
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatal(err)
			}
			if tc.sendBody {
				if resp.StatusCode != http.StatusContinue {
					t.Fatalf("first answer %s, want 100 Continue", resp.Status)
				}
				io.WriteString(c, "hello")
				if resp, err = http.ReadResponse(br, nil); err != nil {
					t.Fatal(err)
				}
			}
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tc.wantStatus {
				t.Fatalf("status %s (%q), want %d", resp.Status, body, tc.wantStatus)
			}
			if tc.sendBody && string(body) != `got "hello"` {
				t.Fatalf("body %q", body)
			}
		})
	}
}

// TestHopByHopHeaders: connection-specific headers, including those the
// client or the upstream names in Connection, stay on their own hop in
// both directions.
func TestHopByHopHeaders(t *testing.T) {
	t.Parallel()
	var got http.Header
	var mu sync.Mutex
	up := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		got = r.Header.Clone()
		mu.Unlock()
		w.Header().Set("Connection", "X-Resp-Hop")
		w.Header().Set("X-Resp-Hop", "1")
		w.Header().Set("Keep-Alive", "timeout=9")
		w.Header().Set("Proxy-Authenticate", "Basic")
		w.Header().Set("X-End-To-End", "kept")
		io.WriteString(w, "ok")
	})
	ps := newProtoStack(t, up)
	for _, method := range []string{"GET", "POST"} { // the direct path and http.Transport
		t.Run(method, func(t *testing.T) {
			body := ""
			if method == "POST" {
				body = "Content-Length: 2\r\n\r\nhi"
			} else {
				body = "\r\n"
			}
			answers, _, _ := exchange(t, addr(ps.front), method+" /x HTTP/1.1\r\nHost: jira.example.com\r\n"+
				"Connection: keep-alive, X-Req-Hop\r\nX-Req-Hop: 1\r\nKeep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\n"+
				"Proxy-Authorization: Basic Zm9vOmJhcg==\r\nTE: trailers, deflate\r\nUpgrade: h2c\r\nX-End-To-End: kept\r\n"+body)
			if len(answers) != 1 {
				t.Fatalf("%d answers", len(answers))
			}
			mu.Lock()
			h := got
			mu.Unlock()
			for _, name := range []string{"X-Req-Hop", "Keep-Alive", "Proxy-Connection", "Proxy-Authorization", "Upgrade"} {
				if v, ok := h[name]; ok {
					t.Errorf("upstream saw %s: %q", name, v)
				}
			}
			if h.Get("Te") != "trailers" || h.Get("X-End-To-End") != "kept" {
				t.Errorf("upstream saw Te %q, X-End-To-End %q", h.Get("Te"), h.Get("X-End-To-End"))
			}
			if c := h.Get("Connection"); c != "" && !strings.EqualFold(c, "keep-alive") {
				t.Errorf("upstream saw Connection: %q", c)
			}
			resp := answers[0]
			for _, name := range []string{"X-Resp-Hop", "Keep-Alive", "Proxy-Authenticate"} {
				if v, ok := resp.Header[name]; ok {
					t.Errorf("client saw %s: %q", name, v)
				}
			}
			if resp.Header.Get("X-End-To-End") != "kept" {
				t.Error("client lost an end-to-end header")
			}
		})
	}
}

// TestStreamingUpload: a request body reaches the upstream as it comes,
// not after the whole upload: the client sends its second chunk only
// once the upstream has read the first.
func TestStreamingUpload(t *testing.T) {
	t.Parallel()
	gotFirst := make(chan struct{})
	up := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		br := bufio.NewReader(r.Body)
		first, err := br.ReadString('\n')
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		close(gotFirst)
		rest, _ := io.ReadAll(br)
		fmt.Fprintf(w, "%s|%s", strings.TrimSpace(first), rest)
	})
	ps := newProtoStack(t, up)
	c, err := net.Dial("tcp", addr(ps.front))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, "POST /upload HTTP/1.1\r\nHost: jira.example.com\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nfirst\n\r\n")
	select {
	case <-gotFirst:
	case <-time.After(5 * time.Second):
		t.Fatal("the upstream did not get the first chunk before the upload ended: the body was buffered")
	}
	io.WriteString(c, "6\r\nsecond\r\n0\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	if string(body) != "first|second" {
		t.Fatalf("body %q", body)
	}
}
