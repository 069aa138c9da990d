package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/usherhq/usher/proxy"
)

// TestLoadWrk is the load script behind the proxy figures in the issue
// notes. It runs only when asked:
//
//	USHER_LOAD=1 go test ./cmd/usher -run TestLoadWrk -v -count=1
//
// It needs wrk (Debian package "wrk"). On loopback, wrk drives 32
// connections (-t2 -c32) against: the upstream directly ("direct"), a bare
// httputil.ReverseProxy over a stock http.Transport with pooled copy
// buffers ("bare", what a proxy built on the standard library costs), and
// usher with a valid session. The upstream answers every request with
// 1 KiB of HTML and runs in its own process, so the CPU time of this
// process during a run is the proxy's alone (plus an idle test harness).
// Columns, per request unless said otherwise:
//
//	req/s, xdirect  throughput, and as a share of the direct run's
//	proxy µs        CPU time of the proxy's process
//	upstr. µs       CPU time of the upstream process
//	wrk µs          CPU time of wrk
//	up conns        connections the upstream accepted in the run (the
//	                whole run, not per request: reuse shows as a small
//	                number, at most about one per wrk connection)
//	allocs, B/req   heap allocations of this process
//	p99             wrk's 99th percentile latency
//	idle            share of the machine's CPU left idle during the run
//
// On a 2-core machine shared with other work the CPU figures move with
// the machine's load by as much as half; compare targets within one run,
// not across runs. Each round runs every target once, one after the
// other, so a burst of load from elsewhere hits all targets alike; the
// figures printed are medians over the rounds.
//
//	USHER_LOAD_DURATION  length of each wrk run (default 5s)
//	USHER_LOAD_ROUNDS    rounds (default 3)
//	USHER_LOAD_PROFILE   a directory: after the measured rounds, one more
//	                     run per in-process proxy with the CPU profiler
//	                     on, written to DIR/<target>.cpu.pprof, and the
//	                     heap profiles before and after that run. Read
//	                     them with
//	                       go tool pprof -top DIR/usher.cpu.pprof
//	                       go tool pprof -sample_index=alloc_objects -top \
//	                         -diff_base DIR/usher.allocs-before.pprof DIR/usher.allocs.pprof
//
// When nginx is installed (Debian package nginx-light), it runs as a
// fourth target: a plain proxy_pass with kept-alive upstream connections
// and two workers, the reference for what proxying costs here.
//
// It asserts nothing about speed (a shared machine makes any threshold
// flaky); it fails only when a run sees errors or non-2xx answers.
func TestLoadWrk(t *testing.T) {
	if os.Getenv("USHER_LOAD") == "" {
		t.Skip("set USHER_LOAD=1 to run the wrk load script")
	}
	wrk, err := exec.LookPath("wrk")
	if err != nil {
		t.Fatal("wrk not found: apt-get install wrk")
	}
	d := envOr("USHER_LOAD_DURATION", "5s")
	rounds, err := strconv.Atoi(envOr("USHER_LOAD_ROUNDS", "3"))
	if err != nil || rounds < 1 {
		t.Fatalf("USHER_LOAD_ROUNDS=%q", os.Getenv("USHER_LOAD_ROUNDS"))
	}

	up := startUpstreamProcess(t)
	e := startEnvWith(t, envOptions{Upstream: up.url})
	c := e.browser()
	wantStatus(t, e.login(c, "/", "acme", "alice", "pw-alice"), http.StatusOK)
	var cookie string
	for _, ck := range c.Jar.Cookies(mustURL(e.url)) {
		cookie = ck.Name + "=" + ck.Value
	}
	if cookie == "" {
		t.Fatal("no session cookie after login")
	}

	upstream, _ := url.Parse(up.url)
	transport := proxy.SharedTransport().HTTP // the stock transport
	defer transport.CloseIdleConnections()
	bare := &httputil.ReverseProxy{
		Rewrite:    func(pr *httputil.ProxyRequest) { pr.SetURL(upstream); pr.SetXForwarded() },
		Transport:  transport,
		BufferPool: &bufPool{},
	}
	bareSrv := httptest.NewServer(bare)
	defer bareSrv.Close()

	targets := []loadTarget{
		{name: "direct", url: up.url + "/"},
		{name: "bare", url: bareSrv.URL + "/"},
		{name: "usher", url: e.url + "/", headers: []string{"Cookie: " + cookie}},
	}
	if ng := startNginx(t, upstream.Host); ng != nil {
		targets = append(targets, loadTarget{name: "nginx", url: ng.url + "/", proc: ng})
	}
	results := map[string][]loadResult{}
	for range rounds {
		for _, tg := range targets {
			results[tg.name] = append(results[tg.name], runWrk(t, wrk, d, tg, up, nil))
		}
	}
	if dir := os.Getenv("USHER_LOAD_PROFILE"); dir != "" {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for _, tg := range targets[1:] {
			if tg.proc == nil {
				runWrk(t, wrk, d, tg, up, &profileTo{dir: dir})
			}
		}
		fmt.Printf("\nprofiles in %s: go tool pprof -top %s\n", dir, filepath.Join(dir, "usher.cpu.pprof"))
	}

	fmt.Printf("\nwrk -t2 -c32 -d%s on loopback, %d-byte answer, median of %d rounds (%d CPUs)\n",
		d, len(upstreamBody), rounds, runtime.NumCPU())
	fmt.Printf("  %-8s %9s %8s %10s %10s %8s %9s %9s %10s %9s %6s\n", "", "req/s", "xdirect", "proxy µs", "upstr. µs", "wrk µs", "up conns", "allocs", "B/req", "p99", "idle")
	direct := median(results["direct"], func(r loadResult) float64 { return r.rps })
	if len(targets) == 3 {
		fmt.Println("  (nginx not found: apt-get install nginx-light to compare)")
	}
	for _, tg := range targets {
		rs := results[tg.name]
		rps := median(rs, func(r loadResult) float64 { return r.rps })
		fmt.Printf("  %-8s %9.0f %7.2fx %10.1f %10.1f %8.1f %9.0f %9.1f %10.0f %9s %5.0f%%\n", tg.name, rps, rps/direct,
			median(rs, func(r loadResult) float64 { return r.selfCPU }),
			median(rs, func(r loadResult) float64 { return r.upCPU }),
			median(rs, func(r loadResult) float64 { return r.wrkCPU }),
			median(rs, func(r loadResult) float64 { return r.upConns }),
			median(rs, func(r loadResult) float64 { return r.allocs }),
			median(rs, func(r loadResult) float64 { return r.bytes }),
			time.Duration(median(rs, func(r loadResult) float64 { return float64(r.p99) })).Round(10*time.Microsecond),
			100*median(rs, func(r loadResult) float64 { return r.idle }))
	}
}

type loadTarget struct {
	name, url string
	headers   []string
	// proc, when set, is the proxy's own process; otherwise the proxy
	// runs in this one.
	proc *process
}

// loadResult is one wrk run. CPU figures are µs per request; allocs and
// bytes are this process's heap allocations per request.
type loadResult struct {
	rps, selfCPU, upCPU, wrkCPU float64
	upConns                     float64 // connections the upstream accepted during the run
	allocs, bytes               float64
	p99                         time.Duration
	idle                        float64 // share of the machine's CPU time left idle
}

type profileTo struct{ dir string }

var (
	wrkRequests = regexp.MustCompile(`(\d+) requests in`)
	wrkRPS      = regexp.MustCompile(`Requests/sec:\s+([0-9.]+)`)
	wrkP99      = regexp.MustCompile(`99%\s+([0-9.]+)(us|ms|s)`)
)

func runWrk(t *testing.T, wrk, d string, tg loadTarget, up *process, prof *profileTo) loadResult {
	t.Helper()
	args := []string{"-t2", "-c32", "-d" + d, "--latency"}
	for _, h := range tg.headers {
		args = append(args, "-H", h)
	}
	args = append(args, tg.url)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	var cpuFile *os.File
	if prof != nil && tg.proc == nil {
		writeHeapProfile(t, filepath.Join(prof.dir, tg.name+".allocs-before.pprof"))
		var err error
		if cpuFile, err = os.Create(filepath.Join(prof.dir, tg.name+".cpu.pprof")); err != nil {
			t.Fatal(err)
		}
		if err := pprof.StartCPUProfile(cpuFile); err != nil {
			t.Fatal(err)
		}
	}
	runtime.GC()
	var ms0, ms1 runtime.MemStats
	runtime.ReadMemStats(&ms0)
	proxyCPU := selfCPU
	if tg.proc != nil {
		proxyCPU = func() time.Duration { return tg.proc.cpu(t) }
	}
	conns0 := up.conns(t)
	self0, up0, busy0, idle0, wrk0 := proxyCPU(), up.cpu(t), machineBusy(), machineIdle(), childrenCPU()
	out, err := exec.CommandContext(ctx, wrk, args...).CombinedOutput()
	self1, up1, busy1, idle1, wrk1 := proxyCPU(), up.cpu(t), machineBusy(), machineIdle(), childrenCPU()
	conns1 := up.conns(t)
	runtime.ReadMemStats(&ms1)
	if tg.proc != nil {
		ms1 = ms0 // another process's allocations are not ours to count
	}
	if prof != nil && tg.proc == nil {
		pprof.StopCPUProfile()
		cpuFile.Close()
		writeHeapProfile(t, filepath.Join(prof.dir, tg.name+".allocs.pprof"))
	}
	if err != nil {
		t.Fatalf("wrk %s: %v\n%s", tg.name, err, out)
	}
	t.Logf("%s:\n%s", tg.name, out)
	if bytes.Contains(out, []byte("Non-2xx")) || bytes.Contains(out, []byte("Socket errors")) {
		t.Fatalf("wrk %s: errors or non-2xx answers\n%s", tg.name, out)
	}
	m, r := wrkRequests.FindSubmatch(out), wrkRPS.FindSubmatch(out)
	if m == nil || r == nil {
		t.Fatalf("wrk %s: unexpected output\n%s", tg.name, out)
	}
	n, _ := strconv.ParseFloat(string(m[1]), 64)
	res := loadResult{
		selfCPU: float64((self1 - self0).Microseconds()) / n,
		upCPU:   float64((up1 - up0).Microseconds()) / n,
		wrkCPU:  float64((wrk1 - wrk0).Microseconds()) / n,
		upConns: float64(conns1 - conns0 - 1), // less the count request itself
		allocs:  float64(ms1.Mallocs-ms0.Mallocs) / n,
		bytes:   float64(ms1.TotalAlloc-ms0.TotalAlloc) / n,
		idle:    float64(idle1-idle0) / float64(idle1-idle0+busy1-busy0),
	}
	res.rps, _ = strconv.ParseFloat(string(r[1]), 64)
	if p := wrkP99.FindSubmatch(out); p != nil {
		v, _ := strconv.ParseFloat(string(p[1]), 64)
		unit := map[string]time.Duration{"us": time.Microsecond, "ms": time.Millisecond, "s": time.Second}[string(p[2])]
		res.p99 = time.Duration(v * float64(unit))
	}
	return res
}

func writeHeapProfile(t *testing.T, path string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := pprof.Lookup("allocs").WriteTo(f, 0); err != nil {
		t.Fatal(err)
	}
}

// machineBusy and machineIdle are the machine's CPU ticks, busy and
// idle, from the first line of /proc/stat.
func machineBusy() int64 { b, _ := machineTicks(); return b }
func machineIdle() int64 { _, i := machineTicks(); return i }

func machineTicks() (busy, idle int64) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	for i, f := range strings.Fields(line)[1:] {
		v, _ := strconv.ParseInt(f, 10, 64)
		if i == 3 || i == 4 { // idle, iowait
			idle += v
		} else {
			busy += v
		}
	}
	return busy, idle
}

// childrenCPU is the CPU time of the child processes waited for so far
// (wrk's runs).
func childrenCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_CHILDREN, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// selfCPU is the user plus system CPU time of this process so far.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func median(rs []loadResult, f func(loadResult) float64) float64 {
	v := make([]float64, len(rs))
	for i, r := range rs {
		v[i] = f(r)
	}
	slices.Sort(v)
	return v[len(v)/2]
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// upstreamBody is the load test's answer: 1 KiB of HTML.
var upstreamBody = func() []byte {
	b := []byte("<!doctype html><title>app</title>\n" + strings.Repeat("<p>lorem ipsum dolor sit amet</p>\n", 28))
	return append(b, bytes.Repeat([]byte{' '}, 1024-len(b))...)
}()

// process is a child process of the load test: the upstream app (this
// test binary, running TestLoadUpstreamProcess) or nginx.
type process struct {
	url string
	pid int
}

func startUpstreamProcess(t *testing.T) *process {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestLoadUpstreamProcess$")
	cmd.Env = append(os.Environ(), "USHER_LOAD_UPSTREAM_PROCESS=1")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stdin.Close() // the child serves until its stdin closes
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	})
	line, err := bufio.NewReader(stdout).ReadString('\n')
	addr, ok := strings.CutPrefix(strings.TrimSpace(line), "LISTEN ")
	if err != nil || !ok {
		t.Fatalf("upstream process said %q, %v", line, err)
	}
	return &process{url: "http://" + addr, pid: cmd.Process.Pid}
}

// conns is how many connections the upstream process has accepted.
func (p *process) conns(t *testing.T) int {
	resp, err := http.Get(p.url + "/_conns")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	n, err := strconv.Atoi(string(b))
	if err != nil {
		t.Fatalf("upstream connection count %q", b)
	}
	return n
}

// cpu is the user plus system CPU time so far of the process and its
// children (nginx's workers), from /proc/PID/stat (fields 14 and 15, in
// clock ticks of 1/100 s: every run lasts seconds, so the tick is fine
// enough).
func (p *process) cpu(t *testing.T) time.Duration {
	pids := []string{strconv.Itoa(p.pid)}
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", p.pid, p.pid)); err == nil {
		pids = append(pids, strings.Fields(string(b))...)
	}
	var ticks int64
	for _, pid := range pids {
		b, err := os.ReadFile("/proc/" + pid + "/stat")
		if err != nil {
			t.Fatal(err)
		}
		// The command name (field 2) is in parentheses and may hold spaces.
		f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+2:]))
		utime, _ := strconv.ParseInt(f[11], 10, 64)
		stime, _ := strconv.ParseInt(f[12], 10, 64)
		ticks += utime + stime
	}
	return time.Duration(ticks) * 10 * time.Millisecond
}

// startNginx runs nginx as a plain reverse proxy to upstream (host:port)
// with kept-alive upstream connections, the reference point for what a
// proxy costs here. It returns nil when nginx is not installed.
func startNginx(t *testing.T, upstream string) *process {
	t.Helper()
	bin, err := exec.LookPath("nginx")
	if err != nil {
		return nil
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	dir := t.TempDir()
	conf := fmt.Sprintf(`daemon off;
master_process on;
worker_processes 2;
pid %[1]s/nginx.pid;
error_log stderr error;
events { worker_connections 1024; }
http {
	access_log off;
	client_body_temp_path %[1]s;
	proxy_temp_path %[1]s;
	fastcgi_temp_path %[1]s;
	uwsgi_temp_path %[1]s;
	scgi_temp_path %[1]s;
	upstream app { server %[2]s; keepalive 64; }
	server {
		listen %[3]s;
		location / {
			proxy_pass http://app;
			proxy_http_version 1.1;
			proxy_set_header Connection "";
		}
	}
}
`, dir, upstream, addr)
	if err := os.WriteFile(filepath.Join(dir, "nginx.conf"), []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-p", dir, "-c", filepath.Join(dir, "nginx.conf"), "-e", "stderr")
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGQUIT) // graceful stop of master and workers
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	})
	for deadline := time.Now().Add(5 * time.Second); ; {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("nginx did not listen on %s", addr)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return &process{url: "http://" + addr, pid: cmd.Process.Pid}
}

// TestLoadUpstreamProcess is the upstream app of TestLoadWrk when this
// binary runs as its child; otherwise it does nothing.
func TestLoadUpstreamProcess(t *testing.T) {
	if os.Getenv("USHER_LOAD_UPSTREAM_PROCESS") == "" {
		t.Skip("runs only as TestLoadWrk's upstream process")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var conns atomic.Int64
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/_conns" { // for the load test, not through a proxy
				fmt.Fprint(w, conns.Load())
				return
			}
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			w.Write(upstreamBody)
		}),
		ReadHeaderTimeout: 10 * time.Second,
		ConnState: func(_ net.Conn, s http.ConnState) {
			if s == http.StateNew {
				conns.Add(1)
			}
		},
	}
	go srv.Serve(ln)
	fmt.Printf("LISTEN %s\n", ln.Addr())
	io.Copy(io.Discard, os.Stdin)
	srv.Close()
}

type bufPool struct{ p sync.Pool }

func (b *bufPool) Get() []byte {
	if v, ok := b.p.Get().(*[]byte); ok {
		return *v
	}
	return make([]byte, 32<<10)
}

func (b *bufPool) Put(v []byte) { b.p.Put(&v) }
