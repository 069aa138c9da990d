package onelogin_test

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
	"github.com/usherhq/usher/directory/onelogin"
	"github.com/usherhq/usher/directory/onelogin/onelogintest"
)

// The load benchmark runs only with USHER_LOAD=1:
//
//	USHER_LOAD=1 go test -run '^$' -bench . -benchtime 1x ./directory/onelogin/
//
// It serves the emulator from a child process (this test binary, re-run
// with USHER_ONELOGIN_EMULATOR=1), so that the memory measured is the
// pull's alone: peak RSS (VmHWM, reset before the pull) and peak Go
// heap, sampled.

func TestMain(m *testing.M) {
	if os.Getenv("USHER_ONELOGIN_EMULATOR") == "1" {
		serveEmulator()
		return
	}
	os.Exit(m.Run())
}

// The benchmark account: loadUsers people holding loadPerUser of
// loadRoles roles each, in one of loadGroups groups.
const (
	loadUsers   = 20_000
	loadRoles   = 50
	loadPerUser = 3
	loadGroups  = 10
)

func serveEmulator() {
	srv := onelogintest.New(nil, nil)
	srv.AddCredential("usher", "s3cret", onelogintest.ReadAll)
	roles := make([]int64, loadRoles)
	for r := range loadRoles {
		roles[r] = srv.AddRole(fmt.Sprintf("Role %02d", r))
	}
	groups := make([]int64, loadGroups)
	for g := range loadGroups {
		groups[g] = srv.AddGroup(fmt.Sprintf("Group %02d", g))
	}
	for i := range loadUsers {
		u := onelogintest.User{
			Username: fmt.Sprintf("user%05d", i), Email: fmt.Sprintf("user%05d@load.test", i),
			Firstname: "User", Lastname: fmt.Sprintf("%05d", i), State: 1, Status: 1, GroupID: groups[i%loadGroups],
			CustomAttributes: map[string]string{"employee_id": strconv.Itoa(10000 + i)},
		}
		if i%50 == 0 {
			u.Status = 2
		}
		for k := range loadPerUser {
			u.RoleIDs = append(u.RoleIDs, roles[(i*7+k*13)%loadRoles])
		}
		srv.AddUser(u)
	}
	srv.Start()
	fmt.Println(srv.URL)
	io.Copy(io.Discard, os.Stdin)
	srv.Close()
}

func startEmulator(b *testing.B) string {
	b.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "USHER_ONELOGIN_EMULATOR=1")
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
	return strings.TrimSpace(line)
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

func BenchmarkOneLoginFullPull(b *testing.B) {
	if os.Getenv("USHER_LOAD") != "1" {
		b.Skip("set USHER_LOAD=1 to run the load benchmarks")
	}
	url := startEmulator(b)
	var calls atomic.Int64
	cfg := &onelogin.Config{BaseURL: url, ClientID: "usher", ClientSecret: config.SecretValue("s3cret"),
		GroupsFrom: []string{"roles", "group"}, Attributes: []string{"custom_attributes.employee_id"}}
	conn, err := cfg.Open("load", "onelogin", directory.Deps{Observe: func(string, string, time.Duration) { calls.Add(1) }})
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

// BenchmarkOneLoginDelta100 measures a delta carrying 100 changes in an
// account of 20,000 people (the emulator in this process).
func BenchmarkOneLoginDelta100(b *testing.B) {
	if os.Getenv("USHER_LOAD") != "1" {
		b.Skip("set USHER_LOAD=1 to run the load benchmarks")
	}
	srv := onelogintest.New(b, nil).Start()
	srv.AddCredential("usher", "s3cret", onelogintest.ReadAll)
	r := srv.AddRole("Jira")
	var users []int64
	for i := range loadUsers {
		users = append(users, srv.AddUser(onelogintest.User{Username: fmt.Sprintf("u%05d", i), RoleIDs: []int64{r}}))
	}
	var calls atomic.Int64
	cfg := &onelogin.Config{BaseURL: srv.URL, ClientID: "usher", ClientSecret: config.SecretValue("s3cret"), DeltaOverlap: time.Nanosecond}
	c, err := cfg.Open("load", "onelogin", directory.Deps{Client: srv.Client(), Observe: func(string, string, time.Duration) { calls.Add(1) }})
	if err != nil {
		b.Fatal(err)
	}
	conn := c.(directory.Deltaer)
	ctx := context.Background()
	next := 0
	b.ResetTimer()
	for b.Loop() {
		b.StopTimer()
		// Date has second resolution: the mark must fall after the
		// seeding and before the changes.
		time.Sleep(1100 * time.Millisecond)
		tok, err := conn.Delta(ctx, "", func(directory.Page) error { return nil })
		if err != nil {
			b.Fatal(err)
		}
		time.Sleep(1100 * time.Millisecond)
		for range 100 {
			u := users[next%len(users)]
			next++
			srv.UpdateUser(u, func(x *onelogintest.User) { x.Status = 2 })
		}
		calls.Store(0)
		b.StartTimer()
		people := 0
		if _, err := conn.Delta(ctx, tok, func(p directory.Page) error { people += len(p.People); return nil }); err != nil {
			b.Fatal(err)
		}
		if people < 100 {
			b.Fatalf("delta reported %d people, want the 100 changed", people)
		}
		b.ReportMetric(float64(people), "people")
		b.ReportMetric(float64(calls.Load()), "calls")
	}
}
