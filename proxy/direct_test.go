package proxy

import (
	"bufio"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// seenRequest is what an upstream received, as comparable values.
type seenRequest struct {
	Method, URI, Proto, Host string
	Header                   map[string][]string
}

// scriptedUpstream records every request and answers by path.
type scriptedUpstream struct {
	mu   sync.Mutex
	seen []seenRequest
}

func (u *scriptedUpstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := map[string][]string{}
	for k, v := range r.Header {
		h[k] = slices.Clone(v)
	}
	u.mu.Lock()
	u.seen = append(u.seen, seenRequest{r.Method, r.RequestURI, r.Proto, r.Host, h})
	u.mu.Unlock()
	switch r.URL.Path {
	case "/hop":
		w.Header().Set("Connection", "X-Resp-Hop, close-not")
		w.Header().Set("X-Resp-Hop", "1")
		w.Header().Set("Keep-Alive", "timeout=9")
		w.Header().Set("Proxy-Authenticate", "Basic")
		w.Header().Add("Set-Cookie", "a=1")
		w.Header().Add("Set-Cookie", "b=2")
		io.WriteString(w, "hop")
	case "/trailers":
		w.Header().Set("Trailer", "X-Announced")
		io.WriteString(w, "part 1 ")
		w.(http.Flusher).Flush()
		io.WriteString(w, "part 2")
		w.Header().Set("X-Announced", "yes")
		w.Header().Set(http.TrailerPrefix+"X-Unannounced", "also")
	case "/announced-trailer":
		w.Header().Set("Trailer", "X-Sum")
		io.WriteString(w, "summed")
		w.Header().Set("X-Sum", "42")
	case "/sse":
		w.Header().Set("Content-Type", "text/event-stream; charset=utf-8")
		for i := range 3 {
			fmt.Fprintf(w, "data: %d\n\n", i)
			w.(http.Flusher).Flush()
		}
	case "/hints":
		w.Header().Set("Link", "</a.css>; rel=preload")
		w.WriteHeader(http.StatusEarlyHints)
		w.Header().Del("Link")
		io.WriteString(w, "hinted")
	case "/empty":
		w.WriteHeader(http.StatusNoContent)
	case "/not-modified":
		w.Header().Set("ETag", `"x"`)
		w.WriteHeader(http.StatusNotModified)
	default:
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, "body of "+r.URL.Path)
	}
}

func (u *scriptedUpstream) last(t *testing.T) seenRequest {
	t.Helper()
	u.mu.Lock()
	defer u.mu.Unlock()
	if len(u.seen) == 0 {
		t.Fatal("upstream saw nothing")
	}
	return u.seen[len(u.seen)-1]
}

// seenAnswer is what a client received, as comparable values.
type seenAnswer struct {
	Status        int
	Header        map[string][]string
	Body          string
	Trailer       map[string][]string
	Informational []int
}

func rawExchange(t *testing.T, addr, raw, method string) seenAnswer {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, raw)
	br := bufio.NewReader(c)
	var a seenAnswer
	for {
		resp, err := http.ReadResponse(br, &http.Request{Method: method})
		if err != nil {
			t.Fatalf("reading the answer: %v", err)
		}
		if resp.StatusCode >= 100 && resp.StatusCode < 200 {
			a.Informational = append(a.Informational, resp.StatusCode)
			continue
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		a.Status, a.Body = resp.StatusCode, string(b)
		a.Header = map[string][]string(resp.Header.Clone())
		delete(a.Header, "Date")
		a.Trailer = map[string][]string(resp.Trailer)
		return a
	}
}

// TestDirectMatchesReverseProxy sends the same requests through the
// direct path and through ReverseProxy (with the same Forwarder) and
// compares, field by field, what the upstream received and what the
// client got back.
func TestDirectMatchesReverseProxy(t *testing.T) {
	t.Parallel()
	up := &scriptedUpstream{}
	upSrv := httptest.NewServer(up)
	defer upSrv.Close()
	names := testNames
	names.CookiePrefixes = []string{"__Host-usher_session"}
	fronts := map[bool]string{}
	for _, direct := range []bool{true, false} {
		fwd := NewForwarder(mustParseURL(t, upSrv.URL), names, nil, nil)
		fwd.noDirect = !direct
		if direct && fwd.direct == nil {
			t.Fatal("the direct path is off for a plain upstream")
		}
		front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			var s = testSession()
			if strings.HasPrefix(r.URL.Path, "/anon") {
				s = nil
			}
			fwd.Forward(w, r, s)
		}))
		defer front.Close()
		fronts[direct] = addr(front)
	}
	for _, tc := range []struct {
		name, method, target string
		lines                []string
	}{
		{"browser", "GET", "/browse/X-1", []string{"User-Agent: Mozilla/5.0", "Accept: text/html", "Accept-Language: en"}},
		{"hop-by-hop", "GET", "/x", []string{"Connection: keep-alive, X-Req-Hop, Cookie", "X-Req-Hop: 1", "Keep-Alive: timeout=5",
			"Proxy-Connection: keep-alive", "Proxy-Authorization: Basic eDp5", "TE: trailers, gzip", "Cookie: a=1"}},
		{"Te without trailers", "GET", "/x", []string{"TE: gzip"}},
		{"Te trailers with a parameter", "GET", "/x", []string{"TE: gzip, Trailers ;q=1"}},
		{"Connection token with a parameter", "GET", "/x", []string{"Connection: X-Req-Hop;x, , X-Other ", "X-Req-Hop: 1", "X-Other: 2"}},
		// Only ASCII letters fold: U+212A (Kelvin) is not K, U+017F (long s) not s.
		{"Connection names a header in Unicode", "GET", "/x", []string{"Connection: \u212a-Req, X-\u017fkip", "K-Req: 1", "X-Skip: 2"}},
		{"Te trailers in Unicode", "GET", "/x", []string{"TE: trailer\u017f"}},
		{"Connection names usher's header", "GET", "/x", []string{"Connection: X-Remote-User, x-usher-secret", "X-Remote-User: mallory"}},
		{"spoofs", "GET", "/anon/x", []string{"X-Forwarded-For: 6.6.6.6", "x_forwarded_host: evil", "Forwarded: for=1.2.3.4", "X-Remote-User: mallory", "X-Request-Id: mine"}},
		{"duplicates", "GET", "/x", []string{"Accept: a", "Accept: b", "Cookie: __Host-usher_session=abc; j=1", "Cookie: k=2"}},
		{"empty User-Agent", "GET", "/x", []string{"User-Agent:"}},
		{"two User-Agents", "GET", "/x", []string{"User-Agent: one", "User-Agent: two"}},
		{"padded value", "GET", "/x", []string{"X-Pad:    padded   "}},
		{"query", "GET", "/search?q=a%20b&x=1&&y", nil},
		{"empty query", "GET", "/search?", nil},
		{"escaped path", "GET", "/a%2Fb/c%20d/%E2%82%AC", nil},
		{"query ReverseProxy re-encodes", "GET", "/q?a=1;b=2", nil},
		{"HEAD", "HEAD", "/x", nil},
		{"hop-by-hop answer", "GET", "/hop", nil},
		{"trailers", "GET", "/trailers", []string{"TE: trailers"}},
		{"announced trailer only", "GET", "/announced-trailer", nil},
		{"event stream", "GET", "/sse", nil},
		{"early hints", "GET", "/hints", nil},
		{"no content", "GET", "/empty", nil},
		{"not modified", "GET", "/not-modified", []string{`If-None-Match: "x"`}},
		{"host with port", "GET", "/x", []string{"X-Host: ignored"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			raw := tc.method + " " + tc.target + " HTTP/1.1\r\nHost: jira.example.com:8443\r\n" + strings.Join(append(tc.lines, ""), "\r\n") + "\r\n"
			var got [2]seenRequest
			var ans [2]seenAnswer
			for i, direct := range []bool{true, false} {
				ans[i] = rawExchange(t, fronts[direct], raw, tc.method)
				got[i] = up.last(t)
			}
			// The client's connection differs between the two runs: only
			// the port of X-Forwarded-For could, and it carries none.
			if !reflect.DeepEqual(got[0], got[1]) {
				t.Errorf("upstream saw\n direct:       %v\n ReverseProxy: %v", got[0], got[1])
				for k := range merge(got[0].Header, got[1].Header) {
					if !slices.Equal(got[0].Header[k], got[1].Header[k]) {
						t.Errorf("  %s: %q vs %q", k, got[0].Header[k], got[1].Header[k])
					}
				}
			}
			if !reflect.DeepEqual(ans[0], ans[1]) {
				t.Errorf("client got\n direct:       %+v\n ReverseProxy: %+v", ans[0], ans[1])
			}
		})
	}
}

func merge(a, b map[string][]string) map[string][]string {
	m := maps.Clone(a)
	maps.Copy(m, b)
	return m
}

// The direct path is taken only where it applies; the rest is left to
// ReverseProxy.
func TestDirectChoice(t *testing.T) {
	t.Parallel()
	fwd := NewForwarder(mustParseURL(t, "http://app.internal:8080"), testNames, nil, nil)
	for _, tc := range []struct {
		name string
		mod  func(r *http.Request)
		want bool
	}{
		{"GET", func(r *http.Request) {}, true},
		{"HEAD", func(r *http.Request) { r.Method = "HEAD" }, true},
		{"bodiless DELETE", func(r *http.Request) { r.Method = "DELETE" }, false},
		{"POST", func(r *http.Request) {
			r.Method = "POST"
			r.Body = io.NopCloser(strings.NewReader("x"))
			r.ContentLength = 1
		}, false},
		{"GET with a body", func(r *http.Request) { r.Body = io.NopCloser(strings.NewReader("x")); r.ContentLength = 1 }, false},
		{"upgrade", func(r *http.Request) { r.Header.Set("Upgrade", "websocket") }, false},
		{"expect", func(r *http.Request) { r.Header.Set("Expect", "100-continue") }, false},
		{"semicolon query", func(r *http.Request) { r.URL.RawQuery = "a=1;b=2" }, false},
		{"bad escape in query", func(r *http.Request) { r.URL.RawQuery = "a=%zz" }, false},
		{"zone in host", func(r *http.Request) { r.Host = "[fe80::1%25eth0]" }, false},
	} {
		r := httptest.NewRequest("GET", "http://jira.example.com/x", nil)
		tc.mod(r)
		if got := fwd.directOK(r); got != tc.want {
			t.Errorf("%s: direct = %v, want %v", tc.name, got, tc.want)
		}
	}
	for _, u := range []string{"http://app.internal/jira", "http://app.internal/?x=1", "https://app.internal"} {
		if NewForwarder(mustParseURL(t, u), testNames, nil, nil).direct != nil {
			t.Errorf("%s: direct path on", u)
		}
	}
}
