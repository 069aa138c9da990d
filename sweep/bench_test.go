package sweep

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/usherhq/usher/store"
	"github.com/usherhq/usher/targets/atlassiantest"
)

// BenchmarkSweep100k plans and applies a sweep over 100,000 managed users
// of whom 1% left (SCIM inactive), against the emulator answering every
// call after 2ms, with the policy's default concurrency of 4 per app.
// Seeding takes a while, so it runs only with USHER_LOAD=1:
//
//	USHER_LOAD=1 go test -run '^$' -bench Sweep100k -benchtime 1x ./sweep
//
// It reports app calls, peak heap in use during the run, bytes allocated
// per run, and the process's peak RSS (VmHWM, seeding included).
func BenchmarkSweep100k(b *testing.B) {
	if os.Getenv("USHER_LOAD") != "1" {
		b.Skip("set USHER_LOAD=1 to run the 100k load benchmark")
	}
	benchSweep(b, 100_000)
}

// BenchmarkSweep2k is the same at a size that runs anywhere.
func BenchmarkSweep2k(b *testing.B) { benchSweep(b, 2_000) }

func benchSweep(b *testing.B, n int) {
	ctx := context.Background()
	// Seeding is one store write at a time; on tmpfs it skips the fsyncs.
	dir := b.TempDir()
	if d, err := os.MkdirTemp("/dev/shm", "usher-sweep-bench"); err == nil {
		dir = d
		b.Cleanup(func() { os.RemoveAll(d) })
	}
	e := newEnvIn(b, dir, nil)
	seedStart := time.Now()
	var leavers []string
	for i := range n {
		name := fmt.Sprintf("user%06d", i)
		p := person{name: name, scim: "active", lastLogin: t0.Add(-time.Hour)}
		if i%100 == 0 {
			p.scim = "inactive"
			leavers = append(leavers, name)
		}
		e.add(b, p)
	}
	b.Logf("seeded %d users (%d leavers) in %v", n, len(leavers), time.Since(seedStart).Round(time.Millisecond))
	e.srv.SetLatency(2 * time.Millisecond)
	p := policy()
	p.MaxShare = 0.02
	s := e.sweeper(b, p)

	var calls, peak uint64
	var before, after runtime.MemStats
	b.ResetTimer()
	for i := range b.N {
		if i > 0 {
			b.StopTimer()
			reset(b, e, leavers)
			b.StartTimer()
		}
		e.srv.ResetCalls()
		runtime.GC()
		runtime.ReadMemStats(&before)
		stopSampling := sampleHeap(&peak)
		res, err := s.Run(ctx, false)
		stopSampling()
		runtime.ReadMemStats(&after)
		if err != nil {
			b.Fatal(err)
		}
		if res.Applied != len(leavers) {
			b.Fatalf("applied %d of %d", res.Applied, len(leavers))
		}
		calls += uint64(e.srv.Reads() + e.srv.Writes())
	}
	b.StopTimer()
	b.ReportMetric(float64(calls)/float64(b.N), "app-calls/op")
	b.ReportMetric(float64(peak)/(1<<20), "peak-heap-inuse-MB")
	// The emulator's 100k users live in this process too: the baseline
	// before the run shows what the sweep itself adds.
	b.ReportMetric(float64(before.HeapInuse)/(1<<20), "heap-inuse-before-MB")
	b.ReportMetric(float64(after.TotalAlloc-before.TotalAlloc)/(1<<20), "alloc-MB/op")
	if hwm := vmHWM(); hwm > 0 {
		b.ReportMetric(float64(hwm)/(1<<10), "VmHWM-MB")
	}
}

// reset makes the leavers active and provisioned again.
func reset(b *testing.B, e *env, leavers []string) {
	for _, name := range leavers {
		e.srv.AddUser(atlassiantest.User{Name: name, DisplayName: name, Active: true, Groups: []string{"jira-software-users"}})
		must(b, e.st.PutAppState(context.Background(), store.AppState{App: "jira", Username: name, IdP: "okta", Subject: sub(name), Hash: "h"}))
	}
}

// sampleHeap records the largest HeapInuse seen until stopped.
func sampleHeap(peak *uint64) func() {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(20 * time.Millisecond)
		defer t.Stop()
		var m runtime.MemStats
		for {
			runtime.ReadMemStats(&m)
			*peak = max(*peak, m.HeapInuse)
			select {
			case <-done:
				return
			case <-t.C:
			}
		}
	})
	return func() { close(done); wg.Wait() }
}

// vmHWM is the process's peak resident set in KiB (Linux), or 0.
func vmHWM() int {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(rest), " kB"))
			return kb
		}
	}
	return 0
}
