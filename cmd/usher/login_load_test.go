package main

import (
	"fmt"
	"os"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestLoadLoginBurst is the latency figure of the login target:
// 200 people who know usher already log in at the same moment, each with
// a group change (one add and one remove in each of two apps), against
// emulated apps that take 5 ms per REST call. It runs only when asked:
//
//	USHER_LOAD=1 go test ./cmd/usher -run TestLoadLoginBurst -v -count=1
//
// For each backend and each per-app concurrency cap (the apps'
// `concurrency:` setting) it runs rounds of one burst each and prints the
// p50, p90, p99 and slowest login, how long the burst took as a whole,
// and the CPU time this process (usher and the emulated apps, which run
// in it) spent per login. On a machine shared with other work the
// latencies move with its load; the CPU column much less so. A login with a change makes four sequential app calls per app
// (read user, read groups, add, remove), so 20 ms is its floor here, and
// a burst cannot end sooner than 200 × 4 calls × 5 ms ÷ cap per app
// (500 ms at the default cap of 8).
//
//	USHER_LOAD_BACKENDS     default "sqlite,postgres"
//	USHER_LOAD_CONCURRENCY  per-app caps, default "8,64"
//	USHER_LOAD_PEOPLE       logins per burst, default 200
//	USHER_LOAD_ROUNDS       bursts per setting, default 3
//	USHER_LOAD_LATENCY      per app call, default 5ms
//	USHER_LOAD_PG_CONNS     PostgreSQL's pool (store.max_conns), default 10
//	USHER_LOAD_HANG         an app ("jira" or "confluence") that hangs:
//	                        it takes every call and never answers, so
//	                        each login waits out provisioning.deadline
//	                        (5s) for it and queues its change there
//	USHER_LOAD_PROFILE      a directory: the CPU profile of the bursts of
//	                        each setting goes to DIR/burst-<backend>-<cap>.cpu.pprof
//
// It asserts nothing about speed (a shared machine makes any threshold
// flaky); it fails only when a login fails.
func TestLoadLoginBurst(t *testing.T) {
	if os.Getenv("USHER_LOAD") == "" {
		t.Skip("set USHER_LOAD=1 to run the login burst")
	}
	people, _ := strconv.Atoi(envOr("USHER_LOAD_PEOPLE", "200"))
	rounds, _ := strconv.Atoi(envOr("USHER_LOAD_ROUNDS", "3"))
	latency, err := time.ParseDuration(envOr("USHER_LOAD_LATENCY", "5ms"))
	if err != nil || people < 1 || rounds < 1 {
		t.Fatalf("bad USHER_LOAD_PEOPLE, USHER_LOAD_ROUNDS or USHER_LOAD_LATENCY")
	}
	pgConns, _ := strconv.Atoi(envOr("USHER_LOAD_PG_CONNS", "10"))
	var caps []int
	for _, s := range strings.Split(envOr("USHER_LOAD_CONCURRENCY", "8,64"), ",") {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			t.Fatalf("bad USHER_LOAD_CONCURRENCY %q", s)
		}
		caps = append(caps, n)
	}
	fmt.Printf("%d logins at once, each with a group change; %v per app call\n", people, latency)
	if h := os.Getenv("USHER_LOAD_HANG"); h != "" {
		fmt.Printf("%s hangs: every login waits for it until provisioning.deadline\n", h)
	}
	fmt.Printf("%-9s %4s %5s %8s %8s %8s %8s %8s %9s\n", "backend", "cap", "round", "p50", "p90", "p99", "max", "burst", "cpu/login")
	for _, backend := range strings.Split(envOr("USHER_LOAD_BACKENDS", "sqlite,postgres"), ",") {
		for _, c := range caps {
			env := newLoginEnv(t, backend, loginEnvOptions{Concurrency: c, PGConns: int32(pgConns)})
			names := env.people(t, people, groupSets[0])
			for _, e := range env.emus {
				e.SetLatency(latency)
				if string(e.Kind()) == os.Getenv("USHER_LOAD_HANG") {
					e.SetLatency(time.Hour)
				}
			}
			if dir := os.Getenv("USHER_LOAD_PROFILE"); dir != "" {
				f, err := os.Create(fmt.Sprintf("%s/burst-%s-%d.cpu.pprof", dir, backend, c))
				if err != nil {
					t.Fatal(err)
				}
				if err := pprof.StartCPUProfile(f); err != nil {
					t.Fatal(err)
				}
			}
			for round := 1; round <= rounds; round++ {
				cpu := selfCPU()
				took, wall := burst(t, env, names, groupSets[round%2])
				cpu = (selfCPU() - cpu) / time.Duration(len(names))
				fmt.Printf("%-9s %4d %5d %8s %8s %8s %8s %8s %9s\n", backend, c, round,
					ms(quantile(took, 0.50)), ms(quantile(took, 0.90)), ms(quantile(took, 0.99)), ms(took[len(took)-1]), ms(wall), ms(cpu))
			}
			if os.Getenv("USHER_LOAD_PROFILE") != "" {
				pprof.StopCPUProfile()
			}
		}
	}
}

// burst logs every person in at once with groups and returns each
// login's time, sorted, and the burst's.
func burst(t *testing.T, env *loginEnv, names []string, groups string) ([]time.Duration, time.Duration) {
	took := make([]time.Duration, len(names))
	errs := make([]error, len(names))
	start := make(chan struct{})
	var ready, done sync.WaitGroup
	for i, who := range names {
		ready.Add(1)
		done.Go(func() {
			ready.Done()
			<-start
			t0 := time.Now()
			errs[i] = env.login(who, groups)
			took[i] = time.Since(t0)
		})
	}
	ready.Wait()
	t0 := time.Now()
	close(start)
	done.Wait()
	wall := time.Since(t0)
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	slices.Sort(took)
	return took, wall
}

// quantile is the q-quantile of sorted durations (nearest rank).
func quantile(sorted []time.Duration, q float64) time.Duration {
	i := int(q*float64(len(sorted))+0.5) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

func ms(d time.Duration) string {
	return strconv.FormatFloat(float64(d)/float64(time.Millisecond), 'f', 1, 64) + "ms"
}
