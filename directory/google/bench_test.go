package google_test

import (
	"bufio"
	"context"
	"encoding/base64"
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
	"github.com/usherhq/usher/directory/google"
	"github.com/usherhq/usher/directory/google/googletest"
)

// The load benchmark runs only with USHER_LOAD=1:
//
//	USHER_LOAD=1 go test -run '^$' -bench . -benchtime 1x ./directory/google/
//
// It serves the emulator from a child process (this test binary, re-run
// with USHER_GOOGLE_EMULATOR=1), so that the memory measured is the
// pull's alone: peak RSS (VmHWM, reset before the pull) and peak Go
// heap, sampled.

func TestMain(m *testing.M) {
	if os.Getenv("USHER_GOOGLE_EMULATOR") == "1" {
		serveEmulator()
		return
	}
	os.Exit(m.Run())
}

// The benchmark account: loadUsers people, each a direct member of
// loadPerUser of loadGroups groups, and the first group holding the next
// loadNested ones (a department tree, flattened by derived membership).
const (
	loadUsers   = 20_000
	loadGroups  = 200
	loadPerUser = 5
	loadNested  = 20
)

// serveEmulator seeds the load account, prints the URL and the service
// account's key (base64), and serves until stdin closes.
func serveEmulator() {
	srv := googletest.New(nil, nil)
	key, clientID := srv.NewServiceAccount("usher-load")
	srv.Delegate(clientID, googletest.ScopeUserReadonly, googletest.ScopeGroupReadonly)
	srv.SetQuota(1 << 30)
	srv.AddUser(googletest.User{PrimaryEmail: "admin@load.test", IsAdmin: true, OrgUnitPath: "/IT"})
	gids := make([]string, loadGroups)
	for g := range loadGroups {
		gids[g] = srv.AddGroup(googletest.Group{Email: fmt.Sprintf("group-%03d@load.test", g), Name: fmt.Sprintf("Group %03d", g)})
	}
	for g := 1; g <= loadNested && g < loadGroups; g++ {
		srv.AddMember(gids[0], gids[g])
	}
	for i := range loadUsers {
		id := srv.AddUser(googletest.User{
			PrimaryEmail: fmt.Sprintf("user%05d@load.test", i), GivenName: "User", FamilyName: fmt.Sprintf("%05d", i),
			Suspended: i%50 == 0, OrgUnitPath: "/Staff",
			ExternalIDs: []googletest.ExternalID{{Type: "organization", Value: strconv.Itoa(10000 + i)}},
		})
		for k := range loadPerUser {
			srv.AddMember(gids[(i*7+k*37)%loadGroups], id)
		}
	}
	srv.Start()
	fmt.Printf("%s %s\n", srv.URL, base64.StdEncoding.EncodeToString(key))
	io.Copy(io.Discard, os.Stdin)
	srv.Close()
}

func startEmulator(b *testing.B) (url string, key []byte) {
	b.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "USHER_GOOGLE_EMULATOR=1")
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
	url, enc, _ := strings.Cut(strings.TrimSpace(line), " ")
	key, err = base64.StdEncoding.DecodeString(enc)
	if err != nil {
		b.Fatal(err)
	}
	return url, key
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

func BenchmarkGoogleFullPull(b *testing.B) {
	if os.Getenv("USHER_LOAD") != "1" {
		b.Skip("set USHER_LOAD=1 to run the load benchmarks")
	}
	url, key := startEmulator(b)
	var calls atomic.Int64
	cfg := &google.Config{ServiceAccountKey: config.SecretValue(string(key)), Admin: "admin@load.test", OAuthURL: url, APIURL: url,
		OrgUnits: []string{"/Staff"}, Attributes: []string{"externalIds.organization"}}
	conn, err := cfg.Open("load", "google", directory.Deps{Observe: func(string, string, time.Duration) { calls.Add(1) }})
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
