package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/usherhq/usher/jit"
	"github.com/usherhq/usher/store"
	"github.com/usherhq/usher/store/postgres/pgtest"
	"github.com/usherhq/usher/sweep"
)

// TestReplicasSharePostgres runs two ushers on one PostgreSQL database,
// as two replicas behind a load balancer.
func TestReplicasSharePostgres(t *testing.T) {
	t.Parallel()
	e := startEnvWith(t, envOptions{SAML: true, Apps: true, Mapping: jitMapping, DSN: pgtest.DSN(t)})
	_, urlB := e.replica(t)

	// A session made on A works on B (same keys, no server-side state).
	c := e.browser()
	wantStatus(t, e.login(c, "/jira/", "acme", "alice", "pw-alice"), http.StatusOK)
	wantStatus(t, e.get(c, urlB+"/jira/"), http.StatusOK)

	// One SAML assertion posted to A and then to B: B refuses the replay.
	c2, c3 := e.browser(), e.browser()
	resp := e.get(c2, e.url+"/usher/login?idp=corp&rd=/")
	acs, err := e.samlAnswer(resp.Header.Get("Location"), "carol", "pw-carol")
	if err != nil {
		t.Fatal(err)
	}
	c3.Jar.SetCookies(mustURL(e.url), c2.Jar.Cookies(mustURL(e.url)))
	resp, err = c2.PostForm(acs.URL.String(), acs.PostForm)
	if err != nil {
		t.Fatal(err)
	}
	wantStatus(t, resp, http.StatusFound)
	resp, err = c3.PostForm(urlB+acs.URL.Path, acs.PostForm)
	if err != nil {
		t.Fatal(err)
	}
	wantStatus(t, resp, http.StatusForbidden)

	// Deprovisioned on A: B refuses alice's session within 5 seconds.
	start := time.Now()
	if _, err := e.m.gen.Load().lifecycle.Remove(context.Background(), jit.Removal{IdP: "acme", Subject: "00u-alice"}, jit.ByAdmin("test", "left the company")); err != nil {
		t.Fatal(err)
	}
	for e.get(c, urlB+"/jira/").StatusCode != http.StatusFound {
		if time.Since(start) > 5*time.Second {
			t.Fatal("replica B still accepts a session revoked on A after 5 s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("revocation reached replica B after %v (poll interval 500ms)", time.Since(start).Round(time.Millisecond))
}

// TestReplicasDrainOneQueue: two replicas' retry workers drain one queue
// and every job is applied exactly once.
func TestReplicasDrainOneQueue(t *testing.T) {
	t.Parallel()
	e := startEnvWith(t, envOptions{Apps: true, Mapping: jitMapping, DSN: pgtest.DSN(t)})
	b, _ := e.replica(t)
	ctx := context.Background()
	const n = 60
	for i := range n {
		d := jit.Desired{App: "jira", IdP: "acme", Subject: fmt.Sprintf("s%d", i), Username: fmt.Sprintf("user%02d", i),
			Email: fmt.Sprintf("user%02d@acme.test", i), DisplayName: "User", Groups: []jit.Grant{{Group: "support-team", Rule: "map[1]"}},
			Sync: jit.SyncFull, Hash: "h", Why: "login via acme"}
		payload, _ := json.Marshal(d)
		if _, err := e.m.store.Enqueue(ctx, store.Job{Kind: "reconcile", App: "jira", Key: d.Username, Payload: payload}); err != nil {
			t.Fatal(err)
		}
	}
	jira := e.apps["jira"]
	jira.SetLatency(2 * time.Millisecond)
	jira.ResetCalls()
	var wg sync.WaitGroup
	done := make([]int, 2)
	for i, m := range []*Main{e.m, b} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var err error
			if done[i], err = m.gen.Load().worker.Drain(ctx); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	calls := jira.Calls()
	t.Logf("replica A applied %d jobs, replica B %d; jira calls %v", done[0], done[1], calls)
	if done[0]+done[1] != n || calls["POST /rest/api/2/user"] != n || calls["POST /rest/api/2/group/user"] != n {
		t.Fatalf("applied %d+%d jobs, %d creates and %d group adds; want exactly %d of each", done[0], done[1],
			calls["POST /rest/api/2/user"], calls["POST /rest/api/2/group/user"], n)
	}
	if done[0] == 0 || done[1] == 0 {
		t.Logf("note: one replica drained everything (%v); still exactly once", done)
	}
	if q, err := e.m.store.Queue(ctx); err != nil || q.Depth != 0 {
		t.Fatalf("queue after drain: %+v, %v", q, err)
	}
}

// TestSweepLeaderAcrossReplicas: sweeps on two replicas never overlap,
// and when the leader dies holding the lease the other takes over once
// the lease runs out.
func TestSweepLeaderAcrossReplicas(t *testing.T) {
	t.Parallel()
	e := startEnvWith(t, envOptions{Apps: true, Mapping: jitMapping, DSN: pgtest.DSN(t), Extra: sweepConfig})
	b, _ := e.replica(t)
	ctx := context.Background()
	wantStatus(t, e.login(e.browser(), "/jira/", "acme", "alice", "pw-alice"), http.StatusOK)
	if err := e.m.store.SetAccessExpiry(ctx, "acme", "00u-alice", time.Now().Add(-time.Hour)); err != nil {
		t.Fatal(err)
	}
	jira := e.apps["jira"]
	jira.SetLatency(20 * time.Millisecond) // keep a run long enough to overlap
	jira.ResetCalls()

	// Both replicas' schedules fire at once, several times over.
	var held, ran int
	var mu sync.Mutex
	for range 3 {
		var wg sync.WaitGroup
		for _, m := range []*Main{e.m, b} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				res, err := m.gen.Load().sweepers["expired"].Run(ctx, false)
				mu.Lock()
				defer mu.Unlock()
				switch {
				case errors.Is(err, sweep.ErrLeaseHeld):
					held++
				case err != nil:
					t.Error(err)
				case res.Applied > 0:
					ran++
				}
			}()
		}
		wg.Wait()
	}
	if ran != 1 || jira.Calls()["PUT /rest/api/2/user"] != 1 {
		t.Fatalf("%d runs applied changes and jira saw %d deactivations; want exactly one (lease refusals: %d)", ran, jira.Calls()["PUT /rest/api/2/user"], held)
	}
	t.Logf("6 concurrent runs: 1 applied, %d refused by the lease, the rest found nothing to do", held)

	// A leader dies mid-sweep holding the lease: the other replica waits
	// for the lease to run out, then takes over.
	wantStatus(t, e.login(e.browser(), "/jira/", "acme", "bob", "pw-mallory"), http.StatusOK)
	if err := e.m.store.SetAccessExpiry(ctx, "acme", "00u-mallory", time.Now().Add(-time.Hour)); err != nil {
		t.Fatal(err)
	}
	const ttl = 2 * time.Second
	if ok, err := e.m.store.Lease(ctx, "sweep:expired", "dead-replica", ttl); err != nil || !ok {
		t.Fatalf("dead replica lease: %v %v", ok, err)
	}
	start := time.Now()
	for {
		_, err := b.gen.Load().sweepers["expired"].Run(ctx, false)
		if err == nil {
			break
		}
		if !errors.Is(err, sweep.ErrLeaseHeld) {
			t.Fatal(err)
		}
		if time.Since(start) > ttl+5*time.Second {
			t.Fatal("replica B never took over the sweep from the dead leader")
		}
		time.Sleep(100 * time.Millisecond)
	}
	took := time.Since(start)
	if took < ttl-200*time.Millisecond {
		t.Fatalf("replica B swept after %v, before the dead leader's lease (%v) ran out", took, ttl)
	}
	if u, _ := jira.User("bob"); u.Active {
		t.Fatal("bob still active after the takeover sweep")
	}
	t.Logf("replica B took over %v after the leader died (lease %v)", took.Round(10*time.Millisecond), ttl)
}
