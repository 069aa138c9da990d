package proxy

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"
)

// bodyStack is client → LimitBodies → Forwarder → upstream.
func bodyStack(t *testing.T, l BodyLimits, up http.Handler) string {
	t.Helper()
	upSrv := httptest.NewServer(up)
	t.Cleanup(upSrv.Close)
	fwd := NewForwarder(mustParseURL(t, upSrv.URL), testNames, nil, nil)
	front := httptest.NewServer(LimitBodies(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fwd.Forward(w, r, testSession())
	}), l))
	t.Cleanup(front.Close)
	return addr(front)
}

// sendPaced writes the request head, then the body in pieces of size
// bytes every gap, and returns the answer's status (0: no answer).
func sendPaced(t *testing.T, a string, total, size int, gap time.Duration) (int, string) {
	t.Helper()
	c, err := net.Dial("tcp", a)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "PUT /upload HTTP/1.1\r\nHost: jira.example.com\r\nContent-Length: %d\r\n\r\n", total)
	answered := make(chan struct{})
	go func() {
		for sent := 0; sent < total; sent += size {
			select {
			case <-answered:
				return
			case <-time.After(gap):
			}
			n := min(size, total-sent)
			if _, err := c.Write([]byte(strings.Repeat("x", n))); err != nil {
				return
			}
		}
	}()
	defer close(answered)
	c.SetReadDeadline(time.Now().Add(20 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return 0, err.Error()
	}
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestSlowBodies(t *testing.T) {
	t.Parallel()
	l := BodyLimits{ReadTimeout: 300 * time.Millisecond, MinRate: 1000}
	up := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, err := io.Copy(io.Discard, r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		if r.URL.Query().Has("slow-answer") {
			time.Sleep(3 * l.ReadTimeout)
		}
		fmt.Fprintf(w, "got %d", n)
	})
	a := bodyStack(t, l, up)
	for _, tc := range []struct {
		name            string
		total, size     int
		gap             time.Duration
		wantStatus      int
		atLeast, atMost time.Duration
	}{
		// Nothing after the head: cut after ReadTimeout.
		{"silent", 100, 100, time.Hour, http.StatusRequestTimeout, 250 * time.Millisecond, 2 * time.Second},
		// A byte every 200 ms keeps each read under ReadTimeout, but 5 B/s
		// is far below MinRate.
		{"trickle", 1000, 1, 200 * time.Millisecond, http.StatusRequestTimeout, 250 * time.Millisecond, 3 * time.Second},
		// 2,000 B/s for 1.5 s: longer than ReadTimeout, at twice MinRate.
		{"steady above the rate", 3000, 100, 50 * time.Millisecond, http.StatusOK, 0, 10 * time.Second},
		// 4 MB as fast as loopback goes.
		{"large and fast", 4 << 20, 64 << 10, 0, http.StatusOK, 0, 10 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			start := time.Now()
			status, body := sendPaced(t, a, tc.total, tc.size, tc.gap)
			took := time.Since(start)
			if status != tc.wantStatus {
				t.Fatalf("status %d (%q) after %s, want %d", status, body, took, tc.wantStatus)
			}
			if status == http.StatusOK && body != fmt.Sprintf("got %d", tc.total) {
				t.Fatalf("body %q", body)
			}
			if took < tc.atLeast || took > tc.atMost {
				t.Fatalf("took %s, want %s..%s", took, tc.atLeast, tc.atMost)
			}
		})
	}
	// Once the body is in, the deadline is gone: an upstream that takes
	// longer than ReadTimeout to answer is not cut off.
	t.Run("slow answer after the body", func(t *testing.T) {
		t.Parallel()
		c, err := net.Dial("tcp", a)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		io.WriteString(c, "POST /x?slow-answer HTTP/1.1\r\nHost: jira.example.com\r\nContent-Length: 5\r\n\r\nhello")
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK || string(b) != "got 5" {
			t.Fatalf("%s %q", resp.Status, b)
		}
	})
}

func dialFrom(t *testing.T, local, to string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}, Timeout: 5 * time.Second}
	c, err := d.Dial("tcp", to)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// alive sends a request on c and reports whether an answer came.
func alive(c net.Conn) bool {
	c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		return false
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

func TestConnsPerClient(t *testing.T) {
	t.Parallel()
	for _, exempt := range []bool{false, true} {
		t.Run(fmt.Sprintf("exempt=%v", exempt), func(t *testing.T) {
			t.Parallel()
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			var ex []netip.Prefix
			if exempt {
				ex, _ = ParsePrefixes([]string{"127.0.0.1"})
			}
			srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {})}
			go srv.Serve(LimitConnsPerClient(ln, 3, ex, nil))
			defer srv.Close()
			to := ln.Addr().String()
			var first []net.Conn
			for i := 0; i < 3; i++ {
				c := dialFrom(t, "127.0.0.1", to)
				if !alive(c) {
					t.Fatalf("connection %d refused", i+1)
				}
				first = append(first, c)
			}
			if got := alive(dialFrom(t, "127.0.0.1", to)); got != exempt {
				t.Fatalf("fourth connection served = %v, want %v", got, exempt)
			}
			if !alive(dialFrom(t, "127.0.0.2", to)) {
				t.Fatal("another client was refused")
			}
			first[0].Close()
			time.Sleep(50 * time.Millisecond) // let the server see the close
			if !alive(dialFrom(t, "127.0.0.1", to)) {
				t.Fatal("a closed connection still counts")
			}
		})
	}
}

func TestRequestsPerClient(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	var started sync.WaitGroup
	h := LimitRequestsPerClient(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		started.Done()
		<-release
	}), 2)
	serve := func(remote string) chan int {
		ch := make(chan int, 1)
		go func() {
			r := httptest.NewRequest("GET", "/", nil)
			r.RemoteAddr = remote
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			ch <- w.Code
		}()
		return ch
	}
	started.Add(4)
	held := []chan int{serve("[2001:db8::1]:1000"), serve("[2001:db8::2]:1001"), serve("192.0.2.1:5"), serve("[2001:db8:0:1::1]:9")}
	started.Wait()
	// Same /64 as the first two: over the limit.
	select {
	case code := <-serve("[2001:db8::3]:1002"):
		if code != http.StatusTooManyRequests {
			t.Fatalf("third request of the /64: %d, want 429", code)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("third request of the /64 was let in")
	}
	close(release)
	for _, ch := range held {
		if code := <-ch; code != http.StatusOK {
			t.Fatalf("held request: %d", code)
		}
	}
	started.Add(1)
	if code := <-serve("[2001:db8::3]:1002"); code != http.StatusOK {
		t.Fatalf("after the others finished: %d", code)
	}
}

func TestClientKey(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"192.0.2.7":            "192.0.2.7",
		"::ffff:192.0.2.7":     "192.0.2.7",
		"2001:db8:1:2:3:4:5:6": "2001:db8:1:2::",
		"2001:db8:1:2:ffff::9": "2001:db8:1:2::",
		"2001:db8:1:3::1":      "2001:db8:1:3::",
	} {
		if got := clientKey(netip.MustParseAddr(in)).String(); got != want {
			t.Errorf("clientKey(%s) = %s, want %s", in, got, want)
		}
	}
}
