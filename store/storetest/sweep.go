package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/usherhq/usher/store"
)

// RunSweeps runs the store.Sweeps conformance suite as subtests. open must
// return a store backed by a fresh, empty, migrated database; the suite
// closes it. The store's Provisioning and SCIM make what the planner's
// batched reads find.
func RunSweeps[S interface {
	store.Store
	store.Sweeps
	store.Provisioning
	store.SCIM
}](t *testing.T, open func(t *testing.T) S) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s sweepStore)
	}{
		{"RunLifecycle", testSweepRunLifecycle},
		{"UnfinishedLatest", testSweepUnfinishedLatest},
		{"RunsOrderAndLimit", testSweepRunsOrder},
		{"MarkSwept", testSweepMarkSwept},
		{"UpdateSweep", testSweepUpdate},
		{"PlannedItems", testSweepPlannedItems},
		{"PlannedItemsPending", testSweepPlannedItemsPending},
		{"ForgetItems", testSweepForgetItems},
		{"AppStatesOf", testSweepAppStatesOf},
		{"SCIMUsersOf", testSweepSCIMUsersOf},
		{"AccessExpiries", testSweepAccessExpiries},
		{"BindingsPaging", testSweepBindingsPaging},
		{"BindingsCursor", testSweepBindingsCursor},
		{"AccessExpiry", testSweepAccessExpiry},
		{"ContextCanceled", testSweepContextCanceled},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel() // every test has a database of its own
			s := open(t)
			t.Cleanup(func() {
				if err := s.Close(); err != nil {
					t.Errorf("close: %v", err)
				}
			})
			tt.fn(t, s)
		})
	}
}

// sweepStore is what the sweep suite needs: Bind to make bindings to page
// through, app states and SCIM users for the batched reads, and the Sweeps
// under test.
type sweepStore interface {
	store.Store
	store.Sweeps
	store.Provisioning
	store.SCIM
}

func sweepStart(t *testing.T, s store.Sweeps, r store.SweepRun) int64 {
	t.Helper()
	id, err := s.StartSweep(context.Background(), r)
	if err != nil {
		t.Fatalf("StartSweep(%s): %v", r.Policy, err)
	}
	return id
}

func sweepRuns(t *testing.T, s store.Sweeps, limit int) []store.SweepRun {
	t.Helper()
	runs, err := s.SweepRuns(context.Background(), limit)
	if err != nil {
		t.Fatalf("SweepRuns(%d): %v", limit, err)
	}
	return runs
}

func sweepSameRun(t *testing.T, what string, got, want store.SweepRun) {
	t.Helper()
	if got.ID != want.ID || got.Policy != want.Policy || got.DryRun != want.DryRun ||
		!got.Started.Equal(ms(want.Started)) || !got.Finished.Equal(ms(want.Finished)) ||
		got.State != want.State || got.Planned != want.Planned || got.Applied != want.Applied ||
		got.Failed != want.Failed || got.Reason != want.Reason || !bytes.Equal(got.Plan, want.Plan) {
		t.Fatalf("%s:\n got %+v\nwant %+v", what, got, want)
	}
	for _, tm := range []time.Time{got.Started, got.Finished} {
		if !tm.IsZero() && tm.Location() != time.UTC {
			t.Fatalf("%s: time %v not in UTC", what, tm)
		}
	}
}

func testSweepRunLifecycle(t *testing.T, s sweepStore) {
	ctx := context.Background()
	plan := []byte(`{"deactivate":[{"app":"jira","username":"alice"}],"note":"ünïcode \u0000 bytes"}`)
	run := store.SweepRun{Policy: "nightly", Started: base, State: "running", Planned: 1, Plan: plan}
	run.ID = sweepStart(t, s, run)
	if run.ID <= 0 {
		t.Fatalf("StartSweep returned ID %d", run.ID)
	}
	runs := sweepRuns(t, s, 10)
	if len(runs) != 1 {
		t.Fatalf("SweepRuns = %+v, want one run", runs)
	}
	sweepSameRun(t, "started run", runs[0], run)
	got, err := s.UnfinishedSweep(ctx, "nightly")
	if err != nil {
		t.Fatalf("UnfinishedSweep: %v", err)
	}
	sweepSameRun(t, "unfinished run", got, run)
	if _, err := s.UnfinishedSweep(ctx, "weekly"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("UnfinishedSweep(other policy) = %v, want ErrNotFound", err)
	}

	// FinishSweep sets counts, state, reason and Finished, and keeps the
	// rest (the plan, the start).
	fin := store.SweepRun{ID: run.ID, Policy: "ignored", Started: base.Add(time.Hour), State: "failed",
		Planned: 3, Applied: 1, Failed: 2, Reason: "jira: 503", Finished: base.Add(time.Minute), Plan: []byte(`{}`)}
	if err := s.FinishSweep(ctx, fin); err != nil {
		t.Fatalf("FinishSweep: %v", err)
	}
	want := run
	want.State, want.Planned, want.Applied, want.Failed, want.Reason, want.Finished = "failed", 3, 1, 2, "jira: 503", base.Add(time.Minute)
	sweepSameRun(t, "finished run", sweepRuns(t, s, 10)[0], want)
	if _, err := s.UnfinishedSweep(ctx, "nightly"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("UnfinishedSweep after finish = %v, want ErrNotFound", err)
	}
	if err := s.FinishSweep(ctx, store.SweepRun{ID: run.ID + 1000, State: "done"}); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("FinishSweep(unknown) = %v, want ErrNotFound", err)
	}

	// Defaults: a zero Started or Finished is now, an empty State is
	// "running" at the start and "done" at the end; a blocked dry run is
	// recorded as such.
	before := time.Now().Add(-time.Second)
	id := sweepStart(t, s, store.SweepRun{Policy: "nightly", DryRun: true})
	r, err := s.UnfinishedSweep(ctx, "nightly")
	if err != nil || r.ID != id || !r.DryRun || r.State != "running" || r.Started.Before(before) || len(r.Plan) != 0 {
		t.Fatalf("defaulted run = %+v, %v", r, err)
	}
	if err := s.FinishSweep(ctx, store.SweepRun{ID: id}); err != nil {
		t.Fatalf("FinishSweep: %v", err)
	}
	r = sweepRuns(t, s, 1)[0]
	if r.ID != id || r.State != "done" || r.Finished.Before(before) || r.Finished.After(time.Now().Add(time.Second)) {
		t.Fatalf("defaulted finish = %+v", r)
	}
	blocked := store.SweepRun{Policy: "nightly", Started: base, Finished: base, State: "blocked",
		Planned: 500, Reason: "500 of 600 managed users exceeds 10%"}
	blocked.ID = sweepStart(t, s, blocked)
	sweepSameRun(t, "blocked run", sweepRuns(t, s, 1)[0], blocked)

	if _, err := s.StartSweep(ctx, store.SweepRun{}); err == nil {
		t.Fatal("StartSweep without a policy succeeded")
	}
}

func testSweepUnfinishedLatest(t *testing.T, s sweepStore) {
	ctx := context.Background()
	older := sweepStart(t, s, store.SweepRun{Policy: "p", Started: base})
	newer := sweepStart(t, s, store.SweepRun{Policy: "p", Started: base.Add(time.Hour)})
	other := sweepStart(t, s, store.SweepRun{Policy: "q", Started: base.Add(2 * time.Hour)})
	done := sweepStart(t, s, store.SweepRun{Policy: "p", Started: base.Add(3 * time.Hour)})
	if err := s.FinishSweep(ctx, store.SweepRun{ID: done, State: "done"}); err != nil {
		t.Fatalf("FinishSweep: %v", err)
	}
	for _, tt := range []struct {
		policy string
		want   int64
	}{{"p", newer}, {"q", other}} {
		r, err := s.UnfinishedSweep(ctx, tt.policy)
		if err != nil || r.ID != tt.want || r.Policy != tt.policy {
			t.Fatalf("UnfinishedSweep(%s) = %+v, %v; want run %d", tt.policy, r, err, tt.want)
		}
	}
	if err := s.FinishSweep(ctx, store.SweepRun{ID: newer, State: "failed", Reason: "crash"}); err != nil {
		t.Fatalf("FinishSweep: %v", err)
	}
	if r, err := s.UnfinishedSweep(ctx, "p"); err != nil || r.ID != older {
		t.Fatalf("UnfinishedSweep(p) = %+v, %v; want run %d", r, err, older)
	}
}

func testSweepRunsOrder(t *testing.T, s sweepStore) {
	if runs := sweepRuns(t, s, 10); len(runs) != 0 {
		t.Fatalf("SweepRuns on an empty store = %+v", runs)
	}
	var ids []int64
	for i := range 5 {
		ids = append(ids, sweepStart(t, s, store.SweepRun{Policy: "p", Started: base.Add(time.Duration(i) * time.Minute)}))
	}
	slices.Reverse(ids)
	runIDs := func(runs []store.SweepRun) []int64 {
		var got []int64
		for _, r := range runs {
			got = append(got, r.ID)
		}
		return got
	}
	if got := runIDs(sweepRuns(t, s, 3)); !slices.Equal(got, ids[:3]) {
		t.Fatalf("SweepRuns(3) = %v, want %v", got, ids[:3])
	}
	if got := runIDs(sweepRuns(t, s, 0)); !slices.Equal(got, ids) {
		t.Fatalf("SweepRuns(0) = %v, want all %v", got, ids)
	}
}

func testSweepMarkSwept(t *testing.T, s sweepStore) {
	ctx := context.Background()
	run := sweepStart(t, s, store.SweepRun{Policy: "p"})
	other := sweepStart(t, s, store.SweepRun{Policy: "p"})
	swept := func(id int64) map[string]bool {
		t.Helper()
		done, err := s.Swept(ctx, id)
		if err != nil {
			t.Fatalf("Swept(%d): %v", id, err)
		}
		if done == nil {
			t.Fatalf("Swept(%d) = nil map", id)
		}
		return done
	}
	if done := swept(run); len(done) != 0 {
		t.Fatalf("Swept of a new run = %v", done)
	}
	// A resumed sweep marks again what it did before the crash.
	for _, item := range []string{"jira/alice", "jira/bob", "jira/alice", "confluence/alice", "jira/bob"} {
		if err := s.MarkSwept(ctx, run, item); err != nil {
			t.Fatalf("MarkSwept(%d, %s): %v", run, item, err)
		}
	}
	want := map[string]bool{"jira/alice": true, "jira/bob": true, "confluence/alice": true}
	if done := swept(run); len(done) != len(want) || !done["jira/alice"] || !done["jira/bob"] || !done["confluence/alice"] {
		t.Fatalf("Swept = %v, want %v", done, want)
	}
	if done := swept(other); len(done) != 0 {
		t.Fatalf("Swept of another run = %v, want none", done)
	}
	if done := swept(run + 1000); len(done) != 0 {
		t.Fatalf("Swept of an unknown run = %v, want none", done)
	}
	if err := s.MarkSwept(ctx, run+1000, "jira/alice"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("MarkSwept(unknown run) = %v, want ErrNotFound", err)
	}
}

func testSweepUpdate(t *testing.T, s sweepStore) {
	ctx := context.Background()
	run := store.SweepRun{Policy: "nightly", Started: base, State: "running"}
	run.ID = sweepStart(t, s, run)

	// Planned: the plan and counts recorded, the run going on (no
	// Finished), Policy and Started kept whatever is passed.
	plan := []byte(`{"planned":2,"items":[{"app":"jira","username":"ålice"}]}`)
	upd := store.SweepRun{ID: run.ID, Policy: "ignored", Started: base.Add(time.Hour), DryRun: true,
		State: "running", Planned: 2, Plan: plan}
	if err := s.UpdateSweep(ctx, upd); err != nil {
		t.Fatalf("UpdateSweep: %v", err)
	}
	want := run
	want.Planned, want.Plan = 2, plan
	sweepSameRun(t, "planned run", sweepRuns(t, s, 1)[0], want)
	if got, err := s.UnfinishedSweep(ctx, "nightly"); err != nil || got.ID != run.ID {
		t.Fatalf("UnfinishedSweep after a plan = %+v, %v; want the run", got, err)
	}

	// Blocked: state, reason and Finished at once; an empty State means
	// running, a zero Finished leaves it unset.
	upd = store.SweepRun{ID: run.ID, State: "blocked", Planned: 9, Applied: 1, Failed: 2, Reason: "too many",
		Finished: base.Add(time.Minute), Plan: plan}
	if err := s.UpdateSweep(ctx, upd); err != nil {
		t.Fatalf("UpdateSweep: %v", err)
	}
	want.State, want.Planned, want.Applied, want.Failed, want.Reason, want.Finished = "blocked", 9, 1, 2, "too many", base.Add(time.Minute)
	sweepSameRun(t, "blocked run", sweepRuns(t, s, 1)[0], want)
	if err := s.UpdateSweep(ctx, store.SweepRun{ID: run.ID}); err != nil {
		t.Fatalf("UpdateSweep: %v", err)
	}
	want = run
	sweepSameRun(t, "reset run", sweepRuns(t, s, 1)[0], want)

	if err := s.UpdateSweep(ctx, store.SweepRun{ID: run.ID + 1000, State: "done"}); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("UpdateSweep(unknown) = %v, want ErrNotFound", err)
	}
}

// sweepItems pages through all of a run's planned items.
func sweepItems(t *testing.T, s store.Sweeps, run int64, limit int, pending bool) []store.SweepItem {
	t.Helper()
	var (
		all   []store.SweepItem
		after int64
	)
	for range 1000 {
		page, err := s.SweepItems(context.Background(), run, store.SweepItemFilter{After: after, Limit: limit, Pending: pending})
		if err != nil {
			t.Fatalf("SweepItems(%d, after %d): %v", run, after, err)
		}
		if len(page) > limit {
			t.Fatalf("SweepItems(limit %d) = %d items", limit, len(page))
		}
		if len(page) == 0 {
			return all
		}
		all = append(all, page...)
		after = page[len(page)-1].Seq
	}
	t.Fatal("SweepItems never ended")
	return nil
}

func sweepItemSeqs(items []store.SweepItem) []int64 {
	var seqs []int64
	for _, it := range items {
		seqs = append(seqs, it.Seq)
	}
	return seqs
}

func testSweepPlannedItems(t *testing.T, s sweepStore) {
	ctx := context.Background()
	run := sweepStart(t, s, store.SweepRun{Policy: "p"})
	other := sweepStart(t, s, store.SweepRun{Policy: "p"})
	if items := sweepItems(t, s, run, 10, false); len(items) != 0 {
		t.Fatalf("items of a new run = %+v", items)
	}
	// Recorded in batches, out of order, with a binary-safe payload;
	// each item comes back as given, in Seq order.
	want := map[int64]store.SweepItem{}
	var batches [][]store.SweepItem
	for b := range 5 {
		var batch []store.SweepItem
		for i := range 50 {
			seq := int64(250 - (b*50 + i)) // 250 down to 1
			it := store.SweepItem{Seq: seq, Key: fmt.Sprintf("jira/user%03d", seq),
				Data: fmt.Appendf(nil, "{\"seq\":%d,\"note\":\"ünï\"}\x00\xff%d", seq, seq)}
			want[seq] = it
			batch = append(batch, it)
		}
		batches = append(batches, batch)
	}
	for _, batch := range batches {
		if err := s.AddSweepItems(ctx, run, batch); err != nil {
			t.Fatalf("AddSweepItems: %v", err)
		}
	}
	if err := s.AddSweepItems(ctx, other, []store.SweepItem{{Seq: 1, Key: "jira/other", Data: []byte(`{}`)}}); err != nil {
		t.Fatalf("AddSweepItems(other run): %v", err)
	}
	items := sweepItems(t, s, run, 100, false)
	if len(items) != 250 {
		t.Fatalf("paged %d items, want 250", len(items))
	}
	for i, it := range items {
		w := want[int64(i+1)]
		if it.Seq != w.Seq || it.Key != w.Key || !bytes.Equal(it.Data, w.Data) {
			t.Fatalf("item %d = %+v, want %+v", i, it, w)
		}
	}
	page, err := s.SweepItems(ctx, run, store.SweepItemFilter{After: 245})
	if err != nil || !slices.Equal(sweepItemSeqs(page), []int64{246, 247, 248, 249, 250}) {
		t.Fatalf("SweepItems(after 245) = %v, %v", sweepItemSeqs(page), err)
	}
	// limit <= 0 is a default page, not everything or nothing.
	if page, err := s.SweepItems(ctx, run, store.SweepItemFilter{}); err != nil || len(page) == 0 || len(page) >= 250 {
		t.Fatalf("SweepItems(limit 0) = %d items, %v", len(page), err)
	}

	// Recording an item again replaces it: a retried batch is harmless.
	again := store.SweepItem{Seq: 7, Key: "confluence/user007", Data: []byte(`{"again":true}`)}
	if err := s.AddSweepItems(ctx, run, []store.SweepItem{again, want[8]}); err != nil {
		t.Fatalf("AddSweepItems(again): %v", err)
	}
	page, err = s.SweepItems(ctx, run, store.SweepItemFilter{After: 6, Limit: 2})
	if err != nil || len(page) != 2 || page[0].Key != again.Key || !bytes.Equal(page[0].Data, again.Data) || page[1].Seq != 8 {
		t.Fatalf("after recording again = %+v, %v", page, err)
	}
	if n := len(sweepItems(t, s, run, 100, false)); n != 250 {
		t.Fatalf("%d items after recording again, want 250", n)
	}
	if items := sweepItems(t, s, other, 10, false); len(items) != 1 || items[0].Key != "jira/other" {
		t.Fatalf("items of the other run = %+v", items)
	}
	if items := sweepItems(t, s, run+1000, 10, false); len(items) != 0 {
		t.Fatalf("items of an unknown run = %+v", items)
	}

	// Refusals: an unknown run, a Seq below 1, all or nothing.
	if err := s.AddSweepItems(ctx, run+1000, []store.SweepItem{{Seq: 1, Key: "jira/x", Data: []byte(`{}`)}}); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("AddSweepItems(unknown run) = %v, want ErrNotFound", err)
	}
	bad := []store.SweepItem{{Seq: 251, Key: "jira/ok", Data: []byte(`{}`)}, {Seq: 0, Key: "jira/zero", Data: []byte(`{}`)}}
	if err := s.AddSweepItems(ctx, run, bad); err == nil {
		t.Fatal("AddSweepItems with Seq 0 succeeded")
	}
	if n := len(sweepItems(t, s, run, 100, false)); n != 250 {
		t.Fatalf("%d items after a refused batch, want 250", n)
	}
	if err := s.AddSweepItems(ctx, run, nil); err != nil {
		t.Fatalf("AddSweepItems(none) = %v", err)
	}
}

func testSweepPlannedItemsPending(t *testing.T, s sweepStore) {
	ctx := context.Background()
	run := sweepStart(t, s, store.SweepRun{Policy: "p"})
	other := sweepStart(t, s, store.SweepRun{Policy: "p"})
	var items []store.SweepItem
	for i := 1; i <= 30; i++ {
		items = append(items, store.SweepItem{Seq: int64(i), Key: fmt.Sprintf("jira/user%02d", i), Data: []byte(`{}`)})
	}
	// Two linked identities with the same account: one key, two items.
	items = append(items, store.SweepItem{Seq: 31, Key: "jira/user03", Data: []byte(`{}`)})
	if err := s.AddSweepItems(ctx, run, items); err != nil {
		t.Fatalf("AddSweepItems: %v", err)
	}
	for _, key := range []string{"jira/user01", "jira/user03", "jira/user04", "jira/user30", "jira/nobody"} {
		if err := s.MarkSwept(ctx, run, key); err != nil {
			t.Fatalf("MarkSwept(%s): %v", key, err)
		}
	}
	// Another run's progress does not count.
	if err := s.MarkSwept(ctx, other, "jira/user02"); err != nil {
		t.Fatalf("MarkSwept: %v", err)
	}
	var want []int64
	for i := int64(2); i <= 29; i++ {
		if i != 3 && i != 4 {
			want = append(want, i)
		}
	}
	if got := sweepItemSeqs(sweepItems(t, s, run, 7, true)); !slices.Equal(got, want) {
		t.Fatalf("pending items = %v, want %v", got, want)
	}
	if n := len(sweepItems(t, s, run, 7, false)); n != 31 {
		t.Fatalf("%d items in all, want 31", n)
	}
}

func testSweepForgetItems(t *testing.T, s sweepStore) {
	ctx := context.Background()
	runs := map[string]int64{}
	for _, name := range []string{"done", "blocked", "running", "other-policy", "current"} {
		policy := "p"
		if name == "other-policy" {
			policy = "q"
		}
		id := sweepStart(t, s, store.SweepRun{Policy: policy})
		runs[name] = id
		if err := s.AddSweepItems(ctx, id, []store.SweepItem{{Seq: 1, Key: "jira/a", Data: []byte(`{}`)}, {Seq: 2, Key: "jira/b", Data: []byte(`{}`)}}); err != nil {
			t.Fatalf("AddSweepItems: %v", err)
		}
		if err := s.MarkSwept(ctx, id, "jira/a"); err != nil {
			t.Fatalf("MarkSwept: %v", err)
		}
		switch name {
		case "done", "blocked", "other-policy":
			if err := s.FinishSweep(ctx, store.SweepRun{ID: id, State: name}); err != nil {
				t.Fatalf("FinishSweep: %v", err)
			}
		}
	}
	if err := s.FinishSweep(ctx, store.SweepRun{ID: runs["other-policy"], State: "done"}); err != nil {
		t.Fatalf("FinishSweep: %v", err)
	}
	if err := s.ForgetSweepItems(ctx, "p", runs["current"]); err != nil {
		t.Fatalf("ForgetSweepItems: %v", err)
	}
	for name, id := range runs {
		kept := name == "running" || name == "other-policy" || name == "current"
		items := sweepItems(t, s, id, 10, false)
		done, err := s.Swept(ctx, id)
		if err != nil {
			t.Fatalf("Swept: %v", err)
		}
		if got := len(items) == 2 && done["jira/a"]; got != kept {
			t.Errorf("run %s: items %d, progress %v; want kept %v", name, len(items), done, kept)
		}
		if !kept && (len(items) != 0 || len(done) != 0) {
			t.Errorf("run %s: items %d, progress %v; want none", name, len(items), done)
		}
	}
	// The runs themselves stay.
	if n := len(sweepRuns(t, s, 10)); n != len(runs) {
		t.Fatalf("%d runs after forgetting items, want %d", n, len(runs))
	}
}

func testSweepAppStatesOf(t *testing.T, s sweepStore) {
	ctx := context.Background()
	for _, a := range []store.AppState{
		{App: "jira", Username: "Alice", IdP: "okta", Subject: "1", Hash: "h1"},
		{App: "jira", Username: "bob", IdP: "okta", Subject: "2", Deprovisioned: true, DeprovisionedReason: "left"},
		{App: "jira", Username: "Ünïcode", Hash: "h3"},
		{App: "confluence", Username: "alice", IdP: "okta", Subject: "1"},
	} {
		if err := s.PutAppState(ctx, a); err != nil {
			t.Fatalf("PutAppState(%+v): %v", a, err)
		}
	}
	names := func(states []store.AppState) []string {
		var out []string
		for _, a := range states {
			out = append(out, a.App+"/"+a.Username)
		}
		slices.Sort(out)
		return out
	}
	// Any case finds the state, as stored; a name twice finds it once;
	// unknown names and other apps' states are not found.
	got, err := s.AppStatesOf(ctx, "jira", []string{"ALICE", "bob", "üNÏCODE", "carol", "alice"})
	if err != nil {
		t.Fatalf("AppStatesOf: %v", err)
	}
	if want := []string{"jira/Alice", "jira/bob", "jira/Ünïcode"}; !slices.Equal(names(got), want) {
		t.Fatalf("AppStatesOf = %v, want %v", names(got), want)
	}
	for _, a := range got {
		if a.Username == "bob" && (!a.Deprovisioned || a.DeprovisionedReason != "left" || a.IdP != "okta" || a.Subject != "2") {
			t.Fatalf("bob's state = %+v, lacks its fields", a)
		}
	}
	if got, err := s.AppStatesOf(ctx, "confluence", []string{"Alice"}); err != nil || !slices.Equal(names(got), []string{"confluence/alice"}) {
		t.Fatalf("AppStatesOf(confluence) = %v, %v", names(got), err)
	}
	if got, err := s.AppStatesOf(ctx, "jira", nil); err != nil || len(got) != 0 {
		t.Fatalf("AppStatesOf(none) = %v, %v", got, err)
	}
	// A page of names in one call.
	many := make([]string, 600)
	for i := range many {
		many[i] = fmt.Sprint("nobody", i)
	}
	many[599] = "alice"
	if got, err := s.AppStatesOf(ctx, "jira", many); err != nil || !slices.Equal(names(got), []string{"jira/Alice"}) {
		t.Fatalf("AppStatesOf(600 names) = %v, %v", names(got), err)
	}
	if _, err := s.AppStatesOf(ctx, "jira", []string{"a\x00b"}); !errors.Is(err, store.ErrInvalid) {
		t.Fatalf("AppStatesOf(NUL) = %v, want ErrInvalid", err)
	}
}

func testSweepSCIMUsersOf(t *testing.T, s sweepStore) {
	ctx := context.Background()
	for _, u := range []store.SCIMUser{
		{IdP: "okta", ID: "id-1", UserName: "Alice@Example.com", Subject: "s1", Active: true},
		{IdP: "okta", ID: "id-2", UserName: "bob@example.com", Subject: "s2"},
		{IdP: "okta", ID: "id-3", UserName: "bob2@example.com", Subject: "s2"}, // a second user of s2
		{IdP: "okta", ID: "id-4", UserName: "unbound@example.com"},
		{IdP: "entra", ID: "id-1", UserName: "alice@example.com", Subject: "s1"},
	} {
		if err := s.PutSCIMUser(ctx, u); err != nil {
			t.Fatalf("PutSCIMUser(%+v): %v", u, err)
		}
	}
	ids := func(users []store.SCIMUser) []string {
		var out []string
		for _, u := range users {
			out = append(out, u.IdP+"/"+u.ID)
		}
		slices.Sort(out)
		return out
	}
	for _, tt := range []struct {
		idp, attr string
		values    []string
		want      []string
	}{
		{"okta", "subject", []string{"s1", "s2", "s9"}, []string{"okta/id-1", "okta/id-2", "okta/id-3"}},
		{"okta", "subject", []string{"S1"}, nil}, // exact
		{"okta", "subject", []string{""}, nil},   // unbound users are no one's
		{"entra", "subject", []string{"s1"}, []string{"entra/id-1"}},
		{"okta", "userName", []string{"ALICE@example.COM", "unbound@example.com", "x"}, []string{"okta/id-1", "okta/id-4"}},
		{"okta", "UserName", []string{"bob@example.com"}, []string{"okta/id-2"}},
		{"okta", "userName", nil, nil},
	} {
		got, err := s.SCIMUsersOf(ctx, tt.idp, tt.attr, tt.values)
		if err != nil || !slices.Equal(ids(got), tt.want) {
			t.Errorf("SCIMUsersOf(%s, %s, %q) = %v, %v; want %v", tt.idp, tt.attr, tt.values, ids(got), err, tt.want)
		}
	}
	got, err := s.SCIMUsersOf(ctx, "okta", "subject", []string{"s1"})
	if err != nil || len(got) != 1 || got[0].UserName != "Alice@Example.com" || !got[0].Active || got[0].Subject != "s1" {
		t.Fatalf("SCIMUsersOf fields = %+v, %v", got, err)
	}
	if _, err := s.SCIMUsersOf(ctx, "okta", "externalId", []string{"x"}); !errors.Is(err, store.ErrInvalid) {
		t.Fatalf("SCIMUsersOf(externalId) = %v, want ErrInvalid", err)
	}
}

func testSweepAccessExpiries(t *testing.T, s sweepStore) {
	ctx := context.Background()
	at := time.Date(2026, 6, 30, 17, 0, 0, 999_999_999, time.FixedZone("PST", -8*3600))
	for _, e := range []struct{ idp, subject string }{{"okta", "1"}, {"okta", "ü"}, {"entra", "2"}} {
		if err := s.SetAccessExpiry(ctx, e.idp, e.subject, at); err != nil {
			t.Fatalf("SetAccessExpiry: %v", err)
		}
	}
	got, err := s.AccessExpiries(ctx, "okta", []string{"1", "2", "ü", "3"})
	if err != nil || len(got) != 2 || !got["1"].Equal(ms(at)) || !got["ü"].Equal(ms(at)) || got["1"].Location() != time.UTC {
		t.Fatalf("AccessExpiries = %v, %v; want 1 and ü at %v UTC", got, err, ms(at))
	}
	if got, err := s.AccessExpiries(ctx, "okta", nil); err != nil || got == nil || len(got) != 0 {
		t.Fatalf("AccessExpiries(none) = %v, %v; want an empty map", got, err)
	}
}

// sweepCursorOf is the documented cursor of a binding.
func sweepCursorOf(b store.Binding) string { return b.IdP + "\x00" + b.Subject }

func testSweepBindingsPaging(t *testing.T, s sweepStore) {
	ctx := context.Background()
	if bs, err := s.Bindings(ctx, "", 100); err != nil || len(bs) != 0 {
		t.Fatalf("Bindings of an empty store = %v, %v", bs, err)
	}
	// IdPs that prefix each other and subjects that sort differently as
	// numbers, in another case or beyond ASCII, bound in random order.
	idps := []string{"ok", "okta", "Okta", "entra", "entra-2"}
	type key struct{ idp, sub string }
	var want []key
	for i := range 250 {
		idp := idps[i%len(idps)]
		sub := fmt.Sprint(i)
		switch i % 7 {
		case 1:
			sub = "A" + sub
		case 2:
			sub = "a" + sub
		case 3:
			sub = "é" + sub
		case 4:
			sub = "z-" + sub
		}
		want = append(want, key{idp, sub})
	}
	for _, i := range rand.Perm(len(want)) {
		k := want[i]
		mustBind(t, s, store.Binding{IdP: k.idp, Subject: k.sub, Username: "user" + fmt.Sprint(i), CreatedAt: base})
	}
	slices.SortFunc(want, func(a, b key) int {
		return strings.Compare(a.idp+"\x00"+a.sub, b.idp+"\x00"+b.sub)
	})

	var (
		got   []key
		after string
		pages []int
	)
	for range 10 {
		bs, err := s.Bindings(ctx, after, 100)
		if err != nil {
			t.Fatalf("Bindings(%q, 100): %v", after, err)
		}
		pages = append(pages, len(bs))
		if len(bs) == 0 {
			break
		}
		for _, b := range bs {
			got = append(got, key{b.IdP, b.Subject})
			if b.Username == "" || !b.CreatedAt.Equal(ms(base)) {
				t.Fatalf("paged binding %+v lacks its fields", b)
			}
		}
		after = sweepCursorOf(bs[len(bs)-1])
	}
	if !slices.Equal(pages, []int{100, 100, 50, 0}) {
		t.Fatalf("page sizes = %v, want [100 100 50 0]", pages)
	}
	if !slices.Equal(got, want) {
		for i := range min(len(got), len(want)) {
			if got[i] != want[i] {
				t.Fatalf("binding %d = %q, want %q (bytewise (idp, subject) order)", i, got[i], want[i])
			}
		}
		t.Fatalf("paged %d bindings, want %d", len(got), len(want))
	}

	// limit <= 0 is a default page, not everything or nothing.
	if bs, err := s.Bindings(ctx, "", 0); err != nil || len(bs) == 0 || len(bs) > 250 {
		t.Fatalf("Bindings(\"\", 0) = %d bindings, %v", len(bs), err)
	}
}

func testSweepBindingsCursor(t *testing.T, s sweepStore) {
	ctx := context.Background()
	for i, k := range [][2]string{{"a", "1"}, {"a", "2"}, {"ab", "0"}, {"b", "1"}} {
		mustBind(t, s, store.Binding{IdP: k[0], Subject: k[1], Username: fmt.Sprint("u", i)})
	}
	tests := []struct {
		after string
		want  []string
	}{
		{"", []string{"a/1", "a/2", "ab/0", "b/1"}},
		{"a\x001", []string{"a/2", "ab/0", "b/1"}},
		{"a\x0015", []string{"a/2", "ab/0", "b/1"}}, // need not name a binding
		{"a\x00", []string{"a/1", "a/2", "ab/0", "b/1"}},
		{"a\x00z", []string{"ab/0", "b/1"}}, // "a" ends before "ab" starts
		{"ab\x000", []string{"b/1"}},
		{"b\x001", nil},
		{"c\x00", nil},
	}
	for _, tt := range tests {
		bs, err := s.Bindings(ctx, tt.after, 10)
		var got []string
		for _, b := range bs {
			got = append(got, b.IdP+"/"+b.Subject)
		}
		if err != nil || !slices.Equal(got, tt.want) {
			t.Errorf("Bindings(%q) = %v, %v; want %v", tt.after, got, err, tt.want)
		}
	}
	if bs, err := s.Bindings(ctx, "a", 10); !errors.Is(err, store.ErrInvalid) {
		t.Errorf("Bindings with a cursor lacking NUL = %v, %v; want ErrInvalid", bs, err)
	}
}

func testSweepAccessExpiry(t *testing.T, s sweepStore) {
	ctx := context.Background()
	expiry := func(idp, subject string) time.Time {
		t.Helper()
		at, err := s.AccessExpiry(ctx, idp, subject)
		if err != nil {
			t.Fatalf("AccessExpiry(%s/%s): %v", idp, subject, err)
		}
		return at
	}
	set := func(idp, subject string, at time.Time) {
		t.Helper()
		if err := s.SetAccessExpiry(ctx, idp, subject, at); err != nil {
			t.Fatalf("SetAccessExpiry(%s/%s, %v): %v", idp, subject, at, err)
		}
	}
	if at := expiry("okta", "1"); !at.IsZero() {
		t.Fatalf("unset expiry = %v, want zero", at)
	}
	at := time.Date(2026, 6, 30, 17, 0, 0, 999_999_999, time.FixedZone("PST", -8*3600))
	set("okta", "1", at) // no binding needed
	if got := expiry("okta", "1"); !got.Equal(ms(at)) || got.Location() != time.UTC {
		t.Fatalf("expiry = %v, want %v UTC", got, ms(at))
	}
	if got := expiry("entra", "1"); !got.IsZero() {
		t.Fatalf("another IdP's identity has expiry %v", got)
	}
	set("okta", "1", base)
	if got := expiry("okta", "1"); !got.Equal(ms(base)) {
		t.Fatalf("moved expiry = %v, want %v", got, ms(base))
	}
	set("okta", "1", time.Time{})
	if got := expiry("okta", "1"); !got.IsZero() {
		t.Fatalf("cleared expiry = %v, want zero", got)
	}
	set("okta", "1", time.Time{}) // clearing again is fine
}

func testSweepContextCanceled(t *testing.T, s sweepStore) {
	run := sweepStart(t, s, store.SweepRun{Policy: "p"})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	calls := map[string]func() error{
		"StartSweep":      func() error { _, err := s.StartSweep(ctx, store.SweepRun{Policy: "q"}); return err },
		"FinishSweep":     func() error { return s.FinishSweep(ctx, store.SweepRun{ID: run, State: "done"}) },
		"SweepRuns":       func() error { _, err := s.SweepRuns(ctx, 10); return err },
		"UnfinishedSweep": func() error { _, err := s.UnfinishedSweep(ctx, "p"); return err },
		"MarkSwept":       func() error { return s.MarkSwept(ctx, run, "x") },
		"Swept":           func() error { _, err := s.Swept(ctx, run); return err },
		"UpdateSweep":     func() error { return s.UpdateSweep(ctx, store.SweepRun{ID: run, State: "done"}) },
		"AddSweepItems": func() error {
			return s.AddSweepItems(ctx, run, []store.SweepItem{{Seq: 1, Key: "jira/a", Data: []byte("{}")}})
		},
		"SweepItems":       func() error { _, err := s.SweepItems(ctx, run, store.SweepItemFilter{}); return err },
		"ForgetSweepItems": func() error { return s.ForgetSweepItems(ctx, "p", run+1) },
		"Bindings":         func() error { _, err := s.Bindings(ctx, "", 10); return err },
		"SetAccessExpiry":  func() error { return s.SetAccessExpiry(ctx, "okta", "1", base) },
		"AccessExpiry":     func() error { _, err := s.AccessExpiry(ctx, "okta", "1"); return err },
	}
	for name, call := range calls {
		// The caller gave up: that is not the database's fault.
		if err := call(); !errors.Is(err, context.Canceled) || errors.Is(err, store.ErrUnavailable) {
			t.Errorf("%s with canceled context = %v, want context.Canceled and not ErrUnavailable", name, err)
		}
	}
	bg := context.Background()
	if r, err := s.UnfinishedSweep(bg, "p"); err != nil || r.ID != run {
		t.Errorf("canceled FinishSweep finished the run: %+v, %v", r, err)
	}
	if done, err := s.Swept(bg, run); err != nil || len(done) != 0 {
		t.Errorf("canceled MarkSwept marked: %v, %v", done, err)
	}
	if items, err := s.SweepItems(bg, run, store.SweepItemFilter{}); err != nil || len(items) != 0 {
		t.Errorf("canceled AddSweepItems recorded %v, %v", items, err)
	}
	if at, err := s.AccessExpiry(bg, "okta", "1"); err != nil || !at.IsZero() {
		t.Errorf("canceled SetAccessExpiry set %v, %v", at, err)
	}
}
