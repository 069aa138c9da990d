package sweep

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/usherhq/usher/config"
	"github.com/usherhq/usher/directory"
	"github.com/usherhq/usher/directory/scimpull"
	"github.com/usherhq/usher/store"
	"github.com/usherhq/usher/store/sqlite"
	"github.com/usherhq/usher/targets"
)

// BenchmarkSweep100k plans and applies a sweep over 100,000 managed users
// of whom 1% left (SCIM inactive), against the emulator answering every
// call after 2ms, with the policy's default concurrency of 4 per app.
// Seeding takes a while, so it runs only with USHER_LOAD=1:
//
//	USHER_LOAD=1 go test -run '^$' -bench Sweep100k -benchtime 1x ./sweep
//
// The emulator runs in a child process (this test binary, re-run with
// USHER_SWEEP_EMULATOR=1), so that the memory measured is the sweep's and
// its store's alone. It reports app calls; the seconds spent planning and
// in all; the process's resident set before the run and its peak during
// the run (VmHWM, reset before the run); the Go heap's peak (heap objects
// live or not yet swept, sampled), the largest live heap a collection
// found, and the peak of HeapInuse; and the bytes allocated per run.
func BenchmarkSweep100k(b *testing.B) {
	if os.Getenv("USHER_LOAD") != "1" {
		b.Skip("set USHER_LOAD=1 to run the 100k load benchmark")
	}
	benchSweep(b, 100_000, false)
}

// BenchmarkSweep100kDirectory is the same with the leavers found by a
// complete pull of a directory (a SCIM listing of everyone but them, 1,000
// to a page) instead of SCIM push.
func BenchmarkSweep100kDirectory(b *testing.B) {
	if os.Getenv("USHER_LOAD") != "1" {
		b.Skip("set USHER_LOAD=1 to run the 100k load benchmark")
	}
	benchSweep(b, 100_000, true)
}

// BenchmarkSweep2k is the same at a size that runs anywhere.
func BenchmarkSweep2k(b *testing.B) { benchSweep(b, 2_000, false) }

// BenchmarkSweep2kDirectory is the same with a directory.
func BenchmarkSweep2kDirectory(b *testing.B) { benchSweep(b, 2_000, true) }

func TestMain(m *testing.M) {
	if os.Getenv("USHER_SWEEP_EMULATOR") == "1" {
		serveEmulator()
		return
	}
	os.Exit(m.Run())
}

// benchPerson is user i of the benchmark; every hundredth has left.
func benchPerson(i int) person {
	p := person{name: fmt.Sprintf("user%06d", i), scim: "active", lastLogin: t0.Add(-time.Hour)}
	if i%100 == 0 {
		p.scim = "inactive"
	}
	return p
}

// serveEmulator serves the benchmark's Jira (USHER_SWEEP_USERS people)
// and, under /scim/v2/Users, a SCIM listing of everyone but the leavers
// (token "tok"); it answers commands on stdin, one a line, until stdin
// closes:
// "calls" prints the calls served since the last "calls" and starts
// counting again; "reset" makes the leavers active again.
func serveEmulator() {
	n, _ := strconv.Atoi(os.Getenv("USHER_SWEEP_USERS"))
	srv := newJiraEmulator()
	for i := range n {
		srv.AddUser(appUser(benchPerson(i)))
	}
	srv.SetLatency(2 * time.Millisecond)
	srv.ResetCalls()
	listing := &scimServer{token: "tok"}
	if os.Getenv("USHER_SWEEP_DIRECTORY") == "1" {
		for i := range n {
			if p := benchPerson(i); p.scim == "active" {
				listing.users = append(listing.users, scimUsers(p.name)...)
			}
		}
	}
	mux := http.NewServeMux()
	mux.Handle("/scim/v2/Users", listing)
	mux.Handle("/", srv)
	hs := httptest.NewServer(mux)
	defer hs.Close()
	fmt.Println(hs.URL)
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		switch in.Text() {
		case "calls":
			fmt.Println(srv.Reads() + srv.Writes())
			srv.ResetCalls()
		case "reset":
			for i := 0; i < n; i += 100 {
				srv.AddUser(appUser(benchPerson(i)))
			}
			srv.ResetCalls()
			fmt.Println("ok")
		}
	}
}

// emulator is the child process serving the benchmark's Jira.
type emulator struct {
	url string
	in  io.Writer
	out *bufio.Reader
}

func startEmulator(b *testing.B, n int, withDir bool) *emulator {
	b.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "USHER_SWEEP_EMULATOR=1", "USHER_SWEEP_USERS="+strconv.Itoa(n))
	if withDir {
		cmd.Env = append(cmd.Env, "USHER_SWEEP_DIRECTORY=1")
	}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		stdin.Close()
		cmd.Wait()
	})
	e := &emulator{in: stdin, out: bufio.NewReader(stdout)}
	e.url = e.line(b)
	return e
}

func (e *emulator) line(b *testing.B) string {
	b.Helper()
	line, err := e.out.ReadString('\n')
	if err != nil {
		b.Fatalf("emulator: %v", err)
	}
	return strings.TrimSpace(line)
}

func (e *emulator) do(b *testing.B, cmd string) string {
	b.Helper()
	if _, err := fmt.Fprintln(e.in, cmd); err != nil {
		b.Fatalf("emulator: %v", err)
	}
	return e.line(b)
}

func benchSweep(b *testing.B, n int, withDir bool) {
	ctx := context.Background()
	emu := startEmulator(b, n, withDir)
	// Seeding is one store write at a time; on tmpfs it skips the fsyncs.
	dir := b.TempDir()
	if d, err := os.MkdirTemp("/dev/shm", "usher-sweep-bench"); err == nil {
		dir = d
		b.Cleanup(func() { os.RemoveAll(d) })
	}
	st, err := sqlite.Open(ctx, filepath.Join(dir, "usher.db"), sqlite.Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { st.Close() })
	seedStart := time.Now()
	var leavers []string
	for i := range n {
		p := benchPerson(i)
		if p.scim == "inactive" {
			leavers = append(leavers, p.name)
		}
		seed(b, st, p)
	}
	b.Logf("seeded %d users (%d leavers) in %v", n, len(leavers), time.Since(seedStart).Round(time.Millisecond))
	e := &env{st: st, apps: map[string]targets.Target{"jira": openJira(b, emu.url, &http.Client{Timeout: time.Minute})}}
	p := policy()
	p.MaxShare = 0.02
	d := e.deps()
	if withDir {
		p.Sources = Sources{Directory: "okta-scim"}
		cfg := &scimpull.Config{URL: emu.url + "/scim/v2", Token: config.SecretValue("tok"), SubjectAttribute: "externalId", PageSize: 1000}
		conn, err := cfg.Open("okta-scim", "okta", directory.Deps{})
		if err != nil {
			b.Fatal(err)
		}
		d.Directory = conn
	}
	planned := &planClock{}
	d.Log = slog.New(planned)
	s := e.sweeper(b, p, d)

	var (
		calls                   int
		heap                    heapPeaks
		rssBefore, rssPeak      int64
		before, after           runtime.MemStats
		planSeconds, runSeconds float64
	)
	b.ResetTimer()
	for i := range b.N {
		if i > 0 {
			b.StopTimer()
			for _, name := range leavers {
				must(b, st.PutAppState(ctx, store.AppState{App: "jira", Username: name, IdP: "okta", Subject: sub(name), Hash: "h"}))
			}
			emu.do(b, "reset")
			b.StartTimer()
		}
		runtime.GC()
		debug.FreeOSMemory()
		runtime.ReadMemStats(&before)
		rssBefore = procStatus("VmRSS")
		resetPeakRSS()
		stop := sampleHeap()
		began := time.Now()
		planned.start(began)
		res, err := s.Run(ctx, false)
		took := time.Since(began)
		heap = stop()
		rssPeak = procStatus("VmHWM")
		runtime.ReadMemStats(&after)
		if err != nil {
			b.Fatal(err)
		}
		if res.Applied != len(leavers) {
			b.Fatalf("applied %d of %d", res.Applied, len(leavers))
		}
		c, err := strconv.Atoi(emu.do(b, "calls"))
		if err != nil {
			b.Fatalf("emulator calls: %v", err)
		}
		calls += c
		planSeconds += planned.took().Seconds()
		runSeconds += took.Seconds()
	}
	b.StopTimer()
	b.ReportMetric(float64(calls)/float64(b.N), "app-calls/op")
	b.ReportMetric(planSeconds/float64(b.N), "plan-s")
	b.ReportMetric(runSeconds/float64(b.N), "run-s")
	b.ReportMetric(float64(rssBefore)/(1<<20), "RSS-before-MiB")
	b.ReportMetric(float64(rssPeak)/(1<<20), "peak-RSS-MiB")
	b.ReportMetric(float64(before.HeapInuse)/(1<<20), "heap-inuse-before-MiB")
	b.ReportMetric(float64(heap.inuse)/(1<<20), "peak-heap-inuse-MiB")
	b.ReportMetric(float64(heap.objects)/(1<<20), "peak-heap-MiB")
	b.ReportMetric(float64(heap.live)/(1<<20), "max-live-heap-MiB")
	b.ReportMetric(float64(after.TotalAlloc-before.TotalAlloc)/(1<<20), "alloc-MiB/op")
}

// planClock is a log handler that times the run's "sweep: planned" line.
type planClock struct {
	mu       sync.Mutex
	from, at time.Time
}

func (c *planClock) start(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.from, c.at = t, time.Time{}
}

func (c *planClock) took() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.at.IsZero() {
		return 0
	}
	return c.at.Sub(c.from)
}

func (c *planClock) Enabled(context.Context, slog.Level) bool { return true }
func (c *planClock) WithAttrs([]slog.Attr) slog.Handler       { return c }
func (c *planClock) WithGroup(string) slog.Handler            { return c }
func (c *planClock) Handle(_ context.Context, r slog.Record) error {
	if r.Message == "sweep: planned" {
		c.mu.Lock()
		defer c.mu.Unlock()
		c.at = time.Now()
	}
	return nil
}

// heapPeaks are the largest Go heap figures seen during a run.
type heapPeaks struct {
	// objects: bytes of heap objects, live or not yet swept; live: the
	// live heap the last collection marked; inuse: HeapInuse (spans
	// holding objects).
	objects, live, inuse uint64
}

// sampleHeap records heap peaks until stopped.
func sampleHeap() (stop func() heapPeaks) {
	done := make(chan struct{})
	var (
		wg   sync.WaitGroup
		peak heapPeaks
	)
	wg.Go(func() {
		t := time.NewTicker(5 * time.Millisecond)
		defer t.Stop()
		s := []metrics.Sample{
			{Name: "/memory/classes/heap/objects:bytes"},
			{Name: "/gc/heap/live:bytes"},
			{Name: "/memory/classes/heap/unused:bytes"},
		}
		for {
			metrics.Read(s)
			peak.objects = max(peak.objects, s[0].Value.Uint64())
			peak.live = max(peak.live, s[1].Value.Uint64())
			peak.inuse = max(peak.inuse, s[0].Value.Uint64()+s[2].Value.Uint64())
			select {
			case <-done:
				return
			case <-t.C:
			}
		}
	})
	return func() heapPeaks { close(done); wg.Wait(); return peak }
}

// procStatus is a size field of /proc/self/status (Linux) in bytes, or 0.
func procStatus(field string) int64 {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for line := range strings.Lines(string(data)) {
		if rest, ok := strings.CutPrefix(line, field+":"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// resetPeakRSS starts a new high-water mark (Linux clear_refs 5).
func resetPeakRSS() { _ = os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) }
