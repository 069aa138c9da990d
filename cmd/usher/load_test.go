package main

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/usherhq/usher/proxy"
)

// TestLoadWrk is the load script behind the proxy figures in the README
// and issue notes. It runs only when asked:
//
//	USHER_LOAD=1 go test ./cmd/usher -run TestLoadWrk -v
//
// It needs wrk (Debian package "wrk") and measures, in one run and on
// loopback, 32 connections against: the upstream directly, a bare
// httputil.ReverseProxy with a pooled transport, and usher with a valid
// session. It asserts nothing about speed; it prints the figures.
func TestLoadWrk(t *testing.T) {
	if os.Getenv("USHER_LOAD") == "" {
		t.Skip("set USHER_LOAD=1 to run the wrk load script")
	}
	wrk, err := exec.LookPath("wrk")
	if err != nil {
		t.Fatal("wrk not found: apt-get install wrk")
	}
	e := startEnv(t)
	c := e.browser()
	wantStatus(t, e.login(c, "/", "acme", "alice", "pw-alice"), http.StatusOK)
	var cookie string
	for _, ck := range c.Jar.Cookies(mustURL(e.url)) {
		cookie = ck.Name + "=" + ck.Value
	}

	upstream, _ := url.Parse(e.upstream.srv.URL)
	bare := &httputil.ReverseProxy{
		Rewrite:   func(pr *httputil.ProxyRequest) { pr.SetURL(upstream); pr.SetXForwarded() },
		Transport: proxy.SharedTransport(),
	}
	bareSrv := httptest.NewServer(bare)
	defer bareSrv.Close()
	// The same bare proxy with a copy-buffer pool, as usher's forwarder
	// has, to show what that alone is worth.
	pooled := &httputil.ReverseProxy{Rewrite: bare.Rewrite, Transport: bare.Transport, BufferPool: &bufPool{}}
	pooledSrv := httptest.NewServer(pooled)
	defer pooledSrv.Close()

	d := os.Getenv("USHER_LOAD_DURATION")
	if d == "" {
		d = "10s"
	}
	run := func(name, target string, hdr ...string) float64 {
		args := []string{"-t2", "-c32", "-d" + d, "--latency"}
		for _, h := range hdr {
			args = append(args, "-H", h)
		}
		args = append(args, target)
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		out, err := exec.CommandContext(ctx, wrk, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("wrk %s: %v\n%s", name, err, out)
		}
		m := regexp.MustCompile(`Requests/sec:\s+([0-9.]+)`).FindSubmatch(out)
		if m == nil {
			t.Fatalf("wrk %s: no Requests/sec in\n%s", name, out)
		}
		if bytes.Contains(out, []byte("Non-2xx")) {
			t.Fatalf("wrk %s: non-2xx responses\n%s", name, out)
		}
		rps, _ := strconv.ParseFloat(string(m[1]), 64)
		t.Logf("%s:\n%s", name, out)
		return rps
	}
	direct := run("direct", e.upstream.srv.URL+"/")
	bareRPS := run("bare reverse proxy", bareSrv.URL+"/")
	pooledRPS := run("bare reverse proxy with buffer pool", pooledSrv.URL+"/")
	usher := run("usher with session", e.url+"/", "Cookie: "+cookie)
	fmt.Printf("\nwrk -t2 -c32 -d%s on loopback\n", d)
	fmt.Printf("  upstream directly             %10.0f req/s\n", direct)
	fmt.Printf("  bare ReverseProxy             %10.0f req/s  (%.2fx direct)\n", bareRPS, bareRPS/direct)
	fmt.Printf("  bare ReverseProxy, buf pool   %10.0f req/s  (%.2fx direct)\n", pooledRPS, pooledRPS/direct)
	fmt.Printf("  usher, valid session          %10.0f req/s  (%.2fx direct, %.2fx bare, %.2fx pooled bare)\n", usher, usher/direct, usher/bareRPS, usher/pooledRPS)
}

type bufPool struct{ p sync.Pool }

func (b *bufPool) Get() []byte {
	if v, ok := b.p.Get().(*[]byte); ok {
		return *v
	}
	return make([]byte, 32<<10)
}

func (b *bufPool) Put(v []byte) { b.p.Put(&v) }
