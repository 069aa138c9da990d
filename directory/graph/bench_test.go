package graph_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"runtime/metrics"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/usherhq/usher/config"
	"github.com/usherhq/usher/directory"
	"github.com/usherhq/usher/directory/graph"
	"github.com/usherhq/usher/directory/graph/graphtest"
)

// The load benchmarks run only with USHER_LOAD=1:
//
//	USHER_LOAD=1 go test -run '^$' -bench . -benchtime 1x ./directory/graph/
//
// BenchmarkGraphFullPull serves the emulator from a child process (this
// test binary, re-run with USHER_GRAPH_EMULATOR=1), so that the memory
// measured is the pull's alone: peak RSS (VmHWM, reset before the pull)
// and peak Go heap, sampled.

func TestMain(m *testing.M) {
	if os.Getenv("USHER_GRAPH_EMULATOR") == "1" {
		serveEmulator()
		return
	}
	os.Exit(m.Run())
}

// loadShape is the benchmark directory: users people, groups groups,
// each person a direct member of perUser groups, and the first group
// holding the next nested ones (a department tree).
const (
	loadUsers   = 100_000
	loadGroups  = 5_000
	loadPerUser = 10
	loadNested  = 50
)

// serveEmulator seeds the load directory, prints the URL and tenant, and
// serves until stdin closes.
func serveEmulator() {
	users, _ := strconv.Atoi(os.Getenv("USHER_GRAPH_USERS"))
	groups, _ := strconv.Atoi(os.Getenv("USHER_GRAPH_GROUPS"))
	srv := graphtest.New(nil, nil)
	srv.AddSecretApp("app", "s3cret")
	gids := make([]string, groups)
	for g := range groups {
		gids[g] = srv.AddGroup(graphtest.Group{DisplayName: fmt.Sprintf("group-%04d", g), SecurityEnabled: true})
	}
	for g := 1; g <= loadNested && g < groups; g++ {
		srv.AddMember(gids[0], gids[g])
	}
	for i := range users {
		id := srv.AddUser(graphtest.User{
			UserPrincipalName: fmt.Sprintf("user%06d@contoso.test", i), Mail: fmt.Sprintf("user%06d@contoso.test", i),
			DisplayName: fmt.Sprintf("User %06d", i), GivenName: "User", Surname: fmt.Sprintf("%06d", i),
			AccountEnabled: i%50 != 0,
		})
		for k := range loadPerUser {
			srv.AddMember(gids[(i*7+k*997)%groups], id)
		}
	}
	srv.Start()
	fmt.Printf("%s %s\n", srv.URL, srv.Tenant)
	io.Copy(io.Discard, os.Stdin)
	srv.Close()
}

func startEmulator(b *testing.B, users, groups int) (url, tenant string) {
	b.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "USHER_GRAPH_EMULATOR=1",
		"USHER_GRAPH_USERS="+strconv.Itoa(users), "USHER_GRAPH_GROUPS="+strconv.Itoa(groups))
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
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		b.Fatalf("emulator: %v", err)
	}
	url, tenant, _ = strings.Cut(strings.TrimSpace(line), " ")
	return url, tenant
}

// peakRSS is the process's resident high-water mark, in bytes.
func peakRSS() int64 {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// resetPeakRSS starts a new high-water mark (Linux clear_refs 5).
func resetPeakRSS() { os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) }

// heapSampler records the peak of live heap objects while it runs.
func heapSampler() (stop func() int64) {
	var peak atomic.Int64
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for {
			metrics.Read(s)
			if v := int64(s[0].Value.Uint64()); v > peak.Load() {
				peak.Store(v)
			}
			select {
			case <-done:
				return
			case <-tick.C:
			}
		}
	}()
	return func() int64 {
		close(done)
		<-finished
		return peak.Load()
	}
}

func BenchmarkGraphFullPull(b *testing.B) {
	if os.Getenv("USHER_LOAD") != "1" {
		b.Skip("set USHER_LOAD=1 to run the load benchmarks")
	}
	url, tenant := startEmulator(b, loadUsers, loadGroups)
	var calls atomic.Int64
	cfg := &graph.Config{TenantID: tenant, ClientID: "app", ClientSecret: config.SecretValue("s3cret"), LoginURL: url, GraphURL: url}
	conn, err := cfg.Open("entra", "entra", directory.Deps{Observe: func(string, string, time.Duration) { calls.Add(1) }})
	if err != nil {
		b.Fatal(err)
	}
	runtime.GC()
	resetPeakRSS()
	b.ResetTimer()
	for b.Loop() {
		calls.Store(0)
		stop := heapSampler()
		people, memberships := 0, 0
		began := time.Now()
		err := conn.Pull(context.Background(), func(p directory.Page) error {
			people += len(p.People)
			for _, q := range p.People {
				memberships += len(q.Groups)
			}
			return nil
		})
		took := time.Since(began)
		heap := stop()
		if err != nil {
			b.Fatal(err)
		}
		if people != loadUsers {
			b.Fatalf("pulled %d people, want %d", people, loadUsers)
		}
		b.ReportMetric(float64(people), "people")
		b.ReportMetric(float64(memberships), "memberships")
		b.ReportMetric(float64(calls.Load()), "calls")
		b.ReportMetric(took.Seconds(), "pull-s")
		b.ReportMetric(float64(heap)/(1<<20), "peak-heap-MiB")
		b.ReportMetric(float64(peakRSS())/(1<<20), "peak-RSS-MiB")
	}
}

// BenchmarkGraphDelta100 measures the calls of a delta that carries 100
// changes (25 renames, 25 disables, 25 membership additions, 25
// deletions) in a directory of 10,000 people and 500 groups.
func BenchmarkGraphDelta100(b *testing.B) {
	if os.Getenv("USHER_LOAD") != "1" {
		b.Skip("set USHER_LOAD=1 to run the load benchmarks")
	}
	srv := graphtest.New(b, nil).Start()
	srv.AddSecretApp("app", "s3cret")
	var users, groups []string
	for i := range 10_000 {
		users = append(users, srv.AddUser(graphtest.User{UserPrincipalName: fmt.Sprintf("u%05d@contoso.test", i), AccountEnabled: true}))
	}
	for g := range 500 {
		groups = append(groups, srv.AddGroup(graphtest.Group{DisplayName: fmt.Sprintf("g%03d", g)}))
		for _, u := range users[g*20 : g*20+20] {
			srv.AddMember(groups[g], u)
		}
	}
	var calls atomic.Int64
	cfg := &graph.Config{TenantID: srv.Tenant, ClientID: "app", ClientSecret: config.SecretValue("s3cret"), LoginURL: srv.URL, GraphURL: srv.URL}
	c, err := cfg.Open("entra", "entra", directory.Deps{Client: srv.Client(), Observe: func(string, string, time.Duration) { calls.Add(1) }})
	if err != nil {
		b.Fatal(err)
	}
	conn := c.(directory.Deltaer)
	ctx := context.Background()
	next := 0
	b.ResetTimer()
	for b.Loop() {
		b.StopTimer()
		tok, err := conn.Delta(ctx, "", func(directory.Page) error { return nil })
		if err != nil {
			b.Fatal(err)
		}
		for i := range 100 {
			u := users[next%len(users)]
			next++
			switch i % 4 {
			case 0:
				srv.UpdateUser(u, map[string]any{"displayName": "renamed"})
			case 1:
				srv.UpdateUser(u, map[string]any{"accountEnabled": false})
			case 2:
				srv.AddMember(groups[i%len(groups)], u)
			case 3:
				srv.SoftDeleteUser(u)
			}
		}
		calls.Store(0)
		b.StartTimer()
		people := 0
		if _, err := conn.Delta(ctx, tok, func(p directory.Page) error { people += len(p.People); return nil }); err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(people), "people")
		b.ReportMetric(float64(calls.Load()), "calls")
	}
}
