package jit

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/usherhq/usher/store"
	"github.com/usherhq/usher/targets/atlassiantest"
)

func (f *fixture) worker(owner string) *Worker {
	return &Worker{Lifecycle: f.l, Store: f.st, Owner: owner}
}

func (f *fixture) drain(t *testing.T, w *Worker) int {
	t.Helper()
	n, err := w.Drain(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func (f *fixture) queue(t *testing.T) store.QueueStats {
	t.Helper()
	q, err := f.st.Queue(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return q
}

func (f *fixture) enqueue(t *testing.T, kind, app, key string, payload []byte) {
	t.Helper()
	if _, err := f.st.Enqueue(t.Context(), store.Job{Kind: kind, App: app, Key: key, Payload: payload, NotBefore: f.clock.Now()}); err != nil {
		t.Fatal(err)
	}
}

func TestWorkerAppliesQueuedLoginWhenAppIsBack(t *testing.T) {
	f := newFixture(t, atlassiantest.Jira)
	ctx := t.Context()
	p := profile("jira")
	if _, err := f.r.provision(ctx, p, "", LoginVia("okta"), queueNever, nil); err != nil {
		t.Fatal(err)
	}
	f.clock.Advance(2 * f.r.FastPath)
	p.DisplayName = "Alice Archer-Smith"
	f.srv["jira"].SetDown(true)
	if out, err := f.r.provision(ctx, p, "", LoginVia("okta"), queueKnown, nil); err != nil || !out[0].Queued {
		t.Fatalf("Login while down: %+v, %v", out, err)
	}

	w := f.worker("w1")
	if n := f.drain(t, w); n != 0 {
		t.Fatalf("drained %d while the app is down", n)
	}
	f.srv["jira"].SetDown(false)
	if n := f.drain(t, w); n != 0 {
		t.Fatalf("drained %d before the backoff ended", n)
	}
	f.clock.Advance(time.Minute)
	if n := f.drain(t, w); n != 1 {
		t.Fatalf("drained %d, want 1", n)
	}
	if u := f.user(t, "jira", "alice"); u.DisplayName != "Alice Archer-Smith" {
		t.Errorf("display name %q", u.DisplayName)
	}
	if q := f.queue(t); q.Depth != 0 {
		t.Errorf("queue %+v, want empty", q)
	}
}

func TestWorkerBacksOff(t *testing.T) {
	f := newFixture(t, atlassiantest.Jira)
	payload, _ := json.Marshal(alice("jira", "developers"))
	f.enqueue(t, "reconcile", "jira", "alice", payload)
	f.srv["jira"].SetDown(true)
	w := f.worker("w1")
	for attempt := 1; attempt <= 4; attempt++ {
		if n := f.drain(t, w); n != 0 {
			t.Fatalf("attempt %d: drained %d while down", attempt, n)
		}
		q := f.queue(t)
		if q.Depth != 1 || len(q.LastErrors) != 1 {
			t.Fatalf("attempt %d: queue %+v", attempt, q)
		}
		j := q.LastErrors[0]
		// Full jitter over 5s·2^attempt: the wait lies in [d/2, d].
		d := 5 * time.Second << attempt
		wait := j.NotBefore.Sub(f.clock.Now())
		if j.Attempts != attempt || !strings.Contains(j.LastError, "503") || wait < d/2 || wait > d {
			t.Fatalf("attempt %d: attempts %d, wait %v (want %v..%v), error %q", attempt, j.Attempts, wait, d/2, d, j.LastError)
		}
		f.clock.Advance(wait)
	}
}

func TestWorkersShareTheQueue(t *testing.T) {
	f := newFixture(t, atlassiantest.Jira)
	const jobs = 40
	for i := range jobs {
		d := alice("jira", "developers")
		d.Username = fmt.Sprintf("user%02d", i)
		payload, _ := json.Marshal(d)
		f.enqueue(t, "reconcile", "jira", d.Username, payload)
	}
	var (
		wg   sync.WaitGroup
		done [2]int
	)
	for i := range done {
		w := f.worker(fmt.Sprintf("w%d", i))
		wg.Go(func() {
			n, err := w.Drain(t.Context())
			if err != nil {
				t.Error(err)
			}
			done[i] = n
		})
	}
	wg.Wait()
	calls := f.srv["jira"].Calls()
	if done[0]+done[1] != jobs || calls["POST /rest/api/2/user"] != jobs || calls["POST /rest/api/2/group/user"] != jobs {
		t.Errorf("workers completed %v; calls %v; want each of %d jobs applied once", done, calls, jobs)
	}
	if q := f.queue(t); q.Depth != 0 {
		t.Errorf("queue depth %d", q.Depth)
	}
}

func TestQueuedDeactivationIsAppliedLater(t *testing.T) {
	f := newFixture(t, atlassiantest.Jira)
	ctx := t.Context()
	f.apply(t, alice("jira"), false)
	f.srv["jira"].SetDown(true)
	f.bind(t, "sub-alice", "alice")
	outs, err := f.l.Remove(ctx, Removal{IdP: "okta", Subject: "sub-alice"}, scimOff)
	if err != nil || len(outs) != 1 || !outs[0].Queued {
		t.Fatalf("Remove while down: %+v, %v", outs, err)
	}
	if got := f.sessions.revoked(); !slices.Equal(got, []string{"okta/sub-alice"}) {
		t.Errorf("revoked %q, want okta/sub-alice at once, app down or not", got)
	}
	if q := f.queue(t); q.Depth != 1 {
		t.Fatalf("queue depth %d, want 1", q.Depth)
	}

	f.srv["jira"].SetDown(false)
	if n := f.drain(t, f.worker("w1")); n != 1 {
		t.Fatalf("drained %d, want 1", n)
	}
	if f.user(t, "jira", "alice").Active {
		t.Error("still active")
	}
	if st := f.state(t, "jira", "alice"); !st.Deprovisioned || st.DeprovisionedSource != "scim" {
		t.Errorf("state %+v", st)
	}
	if q := f.queue(t); q.Depth != 0 {
		t.Errorf("queue depth %d", q.Depth)
	}
}

func TestUnreadablePayloadStaysQueued(t *testing.T) {
	for _, kind := range []string{"reconcile", "deprovision"} {
		t.Run(kind, func(t *testing.T) {
			f := newFixture(t, atlassiantest.Jira)
			f.enqueue(t, kind, "jira", "alice", []byte(`{"app": 42`))
			if n := f.drain(t, f.worker("w1")); n != 0 {
				t.Fatalf("drained %d", n)
			}
			q := f.queue(t)
			if q.Depth != 1 || len(q.LastErrors) != 1 || !strings.HasPrefix(q.LastErrors[0].LastError, "unreadable payload") {
				t.Fatalf("queue %+v", q)
			}
			if n := f.srv["jira"].Reads() + f.srv["jira"].Writes(); n != 0 {
				t.Errorf("made %d app calls", n)
			}
		})
	}
}

// A login after a job was queued wins: the worker applies the newest
// recorded wish, not the job's older payload.
func TestWorkerAppliesTheNewestWish(t *testing.T) {
	f := newFixture(t, atlassiantest.Jira)
	ctx := t.Context()
	old, _ := json.Marshal(alice("jira", "developers"))
	f.enqueue(t, "reconcile", "jira", "alice", old)
	// A later login records (and applies) the newer wish.
	p := profile("jira")
	f.srv["jira"].AddGroup("testers")
	p.Apps["jira"].Groups = grants("testers")
	if _, err := f.r.provision(ctx, p, "", LoginVia("okta"), queueNever, nil); err != nil {
		t.Fatal(err)
	}
	// The login's change took the queued job over (same person, same
	// app) and finished it: nothing older is left to apply.
	f.drain(t, f.worker("w1"))
	if q := f.queue(t); q.Depth != 0 {
		t.Fatalf("queue depth %d after the newer login and a drain", q.Depth)
	}
	if got := f.user(t, "jira", "alice").Groups; !has(got, "testers") || has(got, "developers") {
		t.Fatalf("groups %q: want the newer login's testers, not the queued developers", got)
	}
}

// A change cut off by a crash (the process died between recording it
// and finishing it) is finished by another replica as soon as the dead
// one's heartbeat runs out, with the person's newest wish.
func TestCrashedChangeIsFinishedByAnotherReplica(t *testing.T) {
	f := newFixture(t, atlassiantest.Jira)
	ctx := t.Context()
	d := alice("jira", "developers")
	payload, _ := json.Marshal(d)
	// What replica-1 recorded before it died mid-change.
	if _, err := f.st.Intend(ctx, store.Job{Kind: jobReconcile, App: "jira", Key: "alice", Payload: payload, NotBefore: f.clock.Now()}, "replica-1", time.Hour); err != nil {
		t.Fatal(err)
	}
	if _, err := f.st.Lease(ctx, "replica:replica-1", "replica-1", 15*time.Second); err != nil {
		t.Fatal(err)
	}
	w := f.worker("replica-2")
	if n := f.drain(t, w); n != 0 {
		t.Fatalf("replica-2 took a change whose owner still lives: %d", n)
	}
	f.clock.Advance(20 * time.Second) // no heartbeat since: replica-1 is gone
	if n := f.drain(t, w); n != 1 {
		t.Fatalf("drained %d after the owner's heartbeat ran out, want 1", n)
	}
	if got := f.user(t, "jira", "alice").Groups; !has(got, "developers") {
		t.Fatalf("groups %q", got)
	}
}

// A deactivation queued while the app was down is dropped when the IdP
// brings the person back before the app is.
func TestQueuedDeactivationYieldsToReinstatement(t *testing.T) {
	f := newFixture(t, atlassiantest.Jira)
	ctx := t.Context()
	f.apply(t, alice("jira", "developers"), false)
	f.srv["jira"].SetDown(true)
	f.bind(t, "sub-alice", "alice")
	if _, err := f.l.Remove(ctx, Removal{IdP: "okta", Subject: "sub-alice"}, scimOff); err != nil {
		t.Fatal(err)
	}
	if st := f.state(t, "jira", "alice"); !st.Deprovisioned {
		t.Fatalf("decision not recorded while the app is down: %+v", st)
	}
	if _, err := f.l.reinstate(ctx, SCIMPush("okta", "active"), SourceSCIM, "alice"); err != nil {
		t.Fatal(err)
	}
	f.srv["jira"].SetDown(false)
	f.resetCalls()
	f.clock.Advance(2 * time.Hour)
	if n := f.drain(t, f.worker("w1")); n != 1 {
		t.Fatalf("drained %d, want 1", n)
	}
	if w := f.srv["jira"].Writes(); w != 0 || !f.user(t, "jira", "alice").Active {
		t.Fatalf("the stale deactivation ran: %d writes, active %v", w, f.user(t, "jira", "alice").Active)
	}
}

// A change that waits out a long backoff is tried as soon as a probe
// finds its app answering again, not an hour later.
func TestProbeDrainsTheQueueWhenTheAppIsBack(t *testing.T) {
	f := newFixture(t, atlassiantest.Jira)
	ctx := t.Context()
	f.apply(t, alice("jira"), false)
	f.clock.Advance(2 * f.r.FastPath)
	f.srv["jira"].SetDown(true)
	p := profile("jira")
	if out, err := f.r.provision(ctx, p, "", LoginVia("okta"), queueKnown, nil); err != nil || !out[0].Queued {
		t.Fatalf("provision while down: %+v %v", out, err)
	}
	w := f.worker("w1")
	w.MinBackoff, w.MaxBackoff = time.Hour, time.Hour
	if n := f.drain(t, w); n != 0 { // fails again: an hour's backoff now
		t.Fatalf("drained %d while down", n)
	}
	if woke := w.Probe(ctx); len(woke) != 0 {
		t.Fatalf("probe woke %v while the app is down", woke)
	}
	f.srv["jira"].SetDown(false)
	if n := f.drain(t, w); n != 0 {
		t.Fatalf("drained %d before the probe: the backoff should still hold", n)
	}
	if woke := w.Probe(ctx); !slices.Equal(woke, []string{"jira"}) {
		t.Fatalf("probe woke %v, want jira", woke)
	}
	if n := f.drain(t, w); n != 1 {
		t.Fatalf("drained %d after the probe, want 1", n)
	}
	if !has(f.user(t, "jira", "alice").Groups, "developers") {
		t.Fatal("the queued change did not land")
	}
}
