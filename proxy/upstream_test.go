package proxy

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"net/textproto"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// countConns starts srv counting the connections it accepts.
func countConns(h http.Handler) (*httptest.Server, *atomic.Int64) {
	var n atomic.Int64
	srv := httptest.NewUnstartedServer(h)
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			n.Add(1)
		}
	}
	srv.Start()
	return srv, &n
}

func get(t *testing.T, rt http.RoundTripper, u, method string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest(method, u, nil)
	resp, err := rt.RoundTrip(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, u, err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatalf("%s %s: body: %v", method, u, err)
	}
	return resp, string(b)
}

func TestDirectPathReusesConnections(t *testing.T) {
	t.Parallel()
	up, conns := countConns(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/chunked":
			w.Header().Set("Trailer", "X-Sum")
			io.WriteString(w, "part one, ")
			w.(http.Flusher).Flush()
			io.WriteString(w, "part two")
			w.Header().Set("X-Sum", "42")
		case "/empty":
			w.WriteHeader(http.StatusNoContent)
		case "/not-modified":
			w.WriteHeader(http.StatusNotModified)
		default:
			w.Header().Set("Content-Length", "5")
			io.WriteString(w, "hello")
		}
	}))
	defer up.Close()
	tr := SharedTransport()
	defer tr.CloseIdleConnections()
	u, _ := url.Parse(up.URL)
	rt := tr.bound(u)
	for i := 0; i < 20; i++ {
		for _, c := range []struct{ method, path, body string }{
			{"GET", "/", "hello"}, {"HEAD", "/", ""}, {"GET", "/chunked", "part one, part two"},
			{"GET", "/empty", ""}, {"GET", "/not-modified", ""}, {"OPTIONS", "/", "hello"},
		} {
			resp, body := get(t, rt, up.URL+c.path, c.method)
			if body != c.body {
				t.Fatalf("%s %s: body %q, want %q", c.method, c.path, body, c.body)
			}
			if c.path == "/chunked" && resp.Trailer.Get("X-Sum") != "42" {
				t.Fatalf("trailer %v", resp.Trailer)
			}
		}
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("upstream saw %d connections for 120 sequential requests, want 1", n)
	}
	if n := tr.pool(u).dials.Load(); n != 1 {
		t.Errorf("pool dialed %d times, want 1", n)
	}
}

// rawUpstream serves each accepted connection with fn, in its own
// goroutine.
func rawUpstream(t *testing.T, fn func(n int, c net.Conn, br *bufio.Reader)) (string, *atomic.Int64) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	var n atomic.Int64
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			i := int(n.Add(1))
			go func() {
				defer c.Close()
				fn(i, c, bufio.NewReader(c))
			}()
		}
	}()
	return "http://" + ln.Addr().String(), &n
}

func readReq(br *bufio.Reader) bool {
	req, err := http.ReadRequest(br)
	if err != nil {
		return false
	}
	io.Copy(io.Discard, req.Body)
	return true
}

const okAnswer = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"

// An upstream that hangs up on an idle connection, or answers it with
// bytes nobody asked for, never makes a request fail or read the wrong
// answer. DELETE is not sent twice, so it passes only if the dead
// connection is found before the request goes out.
func TestDirectPathDropsDeadIdleConnections(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		after func(c net.Conn) // shortly after the first answer
	}{
		{"closed", func(c net.Conn) { c.Close() }},
		{"unsolicited answer", func(c net.Conn) {
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nsmuggled")
			time.Sleep(time.Second)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			u, conns := rawUpstream(t, func(n int, c net.Conn, br *bufio.Reader) {
				for readReq(br) {
					io.WriteString(c, okAnswer)
					if n == 1 {
						time.Sleep(20 * time.Millisecond) // the answer is read on its own
						tc.after(c)
						return
					}
				}
			})
			tr := SharedTransport()
			defer tr.CloseIdleConnections()
			for i := 0; i < 3; i++ {
				if _, body := get(t, tr, u+"/", "DELETE"); body != "ok" {
					t.Fatalf("request %d: body %q", i, body)
				}
				time.Sleep(100 * time.Millisecond) // let the close or the bytes arrive
			}
			if n := conns.Load(); n != 2 {
				t.Errorf("%d connections, want 2 (the first one dropped once)", n)
			}
		})
	}
}

// The race the idle check cannot see: the upstream closes a kept-alive
// connection just as a request arrives on it. Replayable requests are sent
// again on a fresh connection; others fail, as with http.Transport.
func TestDirectPathRetriesOnlyReplayableRequests(t *testing.T) {
	t.Parallel()
	for _, method := range []string{"GET", "DELETE"} {
		t.Run(method, func(t *testing.T) {
			t.Parallel()
			var got sync.Map
			u, conns := rawUpstream(t, func(n int, c net.Conn, br *bufio.Reader) {
				for i := 0; ; i++ {
					req, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					got.Store(req.URL.Path, true)
					if n == 1 && i == 1 {
						return // read the second request, answer nothing, hang up
					}
					io.WriteString(c, okAnswer)
				}
			})
			tr := SharedTransport()
			defer tr.CloseIdleConnections()
			get(t, tr, u+"/first", method)
			req, _ := http.NewRequest(method, u+"/second", nil)
			resp, err := tr.RoundTrip(req)
			if method == "GET" {
				if err != nil {
					t.Fatalf("GET not retried: %v", err)
				}
				resp.Body.Close()
				if n := conns.Load(); n != 2 {
					t.Errorf("%d connections, want 2", n)
				}
				return
			}
			if err == nil {
				resp.Body.Close()
				t.Fatalf("DELETE was sent again after the upstream may have acted on it")
			}
			if n := conns.Load(); n != 1 {
				t.Errorf("%d connections, want 1 (no retry)", n)
			}
		})
	}
}

func TestDirectPathCancellation(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	defer close(release)
	u, _ := rawUpstream(t, func(n int, c net.Conn, br *bufio.Reader) {
		readReq(br)
		<-release // a report that takes for ever
	})
	tr := SharedTransport()
	defer tr.CloseIdleConnections()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", u+"/report", nil)
	done := make(chan error, 1)
	go func() {
		_, err := tr.RoundTrip(req)
		done <- err
	}()
	time.Sleep(50 * time.Millisecond)
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v, want context.Canceled", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("RoundTrip still waiting after the request was cancelled")
	}
	pu, _ := url.Parse(u)
	p := tr.pool(pu)
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.idle) != 0 {
		t.Fatal("a cancelled connection went back to the pool")
	}
}

// A body closed before its end (client gone mid-download) closes the
// connection: its unread rest would be read as the next answer.
func TestDirectPathEarlyCloseDropsConnection(t *testing.T) {
	t.Parallel()
	up, conns := countConns(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, strings.Repeat("x", 1<<20))
	}))
	defer up.Close()
	tr := SharedTransport()
	defer tr.CloseIdleConnections()
	for i := 0; i < 3; i++ {
		req, _ := http.NewRequest("GET", up.URL, nil)
		resp, err := tr.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		io.ReadFull(resp.Body, make([]byte, 10))
		resp.Body.Close()
		p := tr.pool(mustParseURL(t, up.URL))
		p.mu.Lock()
		idle := len(p.idle)
		p.mu.Unlock()
		if idle != 0 {
			t.Fatal("a connection with an unread answer went back to the pool")
		}
	}
	if n := conns.Load(); n != 3 {
		t.Errorf("%d connections, want 3", n)
	}
}

// Answers without a length end with the connection; it is never reused.
func TestDirectPathCloseDelimitedAnswer(t *testing.T) {
	t.Parallel()
	u, conns := rawUpstream(t, func(n int, c net.Conn, br *bufio.Reader) {
		readReq(br)
		io.WriteString(c, "HTTP/1.1 200 OK\r\n\r\nuntil close")
	})
	tr := SharedTransport()
	defer tr.CloseIdleConnections()
	for i := 0; i < 2; i++ {
		if _, body := get(t, tr, u, "GET"); body != "until close" {
			t.Fatalf("body %q", body)
		}
	}
	if n := conns.Load(); n != 2 {
		t.Errorf("%d connections, want 2", n)
	}
}

func TestDirectPathRefusesBadAnswers(t *testing.T) {
	t.Parallel()
	for name, answer := range map[string]string{
		"huge header":         "HTTP/1.1 200 OK\r\nX-Big: " + strings.Repeat("a", 11<<20) + "\r\n\r\n",
		"two lengths":         "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok",
		"unasked for upgrade": "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
		"garbage":             "SSH-2.0-OpenSSH_9.2\r\n",
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			u, _ := rawUpstream(t, func(n int, c net.Conn, br *bufio.Reader) {
				readReq(br)
				io.WriteString(c, answer)
			})
			fwd := NewForwarder(mustParseURL(t, u), testNames, nil, nil)
			w := httptest.NewRecorder()
			fwd.Forward(w, httptest.NewRequest("GET", "http://jira.example.com/", nil), testSession())
			if w.Code != http.StatusBadGateway {
				t.Fatalf("status %d, want 502", w.Code)
			}
		})
	}
}

// 1xx answers (103 Early Hints) reach the client, then the final answer.
func TestDirectPathForwardsEarlyHints(t *testing.T) {
	t.Parallel()
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Link", "</app.css>; rel=preload")
		w.WriteHeader(http.StatusEarlyHints)
		w.Header().Del("Link")
		io.WriteString(w, "page")
	}))
	defer up.Close()
	st := newStackTo(t, up.URL)
	var hints []string
	trace := &httptrace.ClientTrace{Got1xxResponse: func(code int, h textproto.MIMEHeader) error {
		hints = append(hints, h.Get("Link"))
		return nil
	}}
	req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace), "GET", st.URL+"/", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "page" || len(hints) != 1 || hints[0] != "</app.css>; rel=preload" {
		t.Fatalf("body %q, hints %q", body, hints)
	}
}

func TestIdleConnectionsReaped(t *testing.T) {
	t.Parallel()
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	defer up.Close()
	tr := SharedTransport()
	tr.idleTimeout = 100 * time.Millisecond
	get(t, tr, up.URL, "GET")
	u, _ := url.Parse(up.URL)
	p := tr.pool(u)
	deadline := time.Now().Add(5 * time.Second)
	for {
		p.mu.Lock()
		n := len(p.idle)
		p.mu.Unlock()
		if n == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d idle connections still open after the idle timeout", n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestDirectPathChoice(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		mod  func(r *http.Request)
		want bool
	}{
		{"plain GET", func(r *http.Request) {}, true},
		{"bodiless DELETE", func(r *http.Request) { r.Method = "DELETE" }, true},
		{"POST with body", func(r *http.Request) {
			r.Method = "POST"
			r.Body = io.NopCloser(strings.NewReader("x"))
			r.ContentLength = 1
		}, false},
		{"chunked body", func(r *http.Request) { r.Body = io.NopCloser(strings.NewReader("x")); r.ContentLength = -1 }, false},
		{"upgrade", func(r *http.Request) { r.Header.Set("Upgrade", "websocket") }, false},
		{"expect", func(r *http.Request) { r.Header.Set("Expect", "100-continue") }, false},
		{"https", func(r *http.Request) { r.URL.Scheme = "https" }, false},
	} {
		r, _ := http.NewRequest("GET", "http://app.internal/", nil)
		tc.mod(r)
		if got := direct(r); got != tc.want {
			t.Errorf("%s: direct = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func mustParseURL(t *testing.T, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// newStackTo runs a front server forwarding everything to upstream with
// the test session, and returns it.
func newStackTo(t *testing.T, upstream string) *httptest.Server {
	t.Helper()
	fwd := NewForwarder(mustParseURL(t, upstream), testNames, nil, nil)
	sess := testSession()
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fwd.Forward(w, r, sess) }))
	t.Cleanup(front.Close)
	return front
}
