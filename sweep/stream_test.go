package sweep

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/usherhq/usher/directory"
	"github.com/usherhq/usher/store"
)

// small is a sweeper that lists at most shown items and outcomes and
// reads its plan back page items at a time.
func small(t *testing.T, e *env, p Policy, shown, page int) *Sweeper {
	t.Helper()
	s := e.sweeper(t, p)
	s.shown, s.applyPage = shown, page
	return s
}

// TestLargePlanStreams: a plan larger than what a Plan lists keeps exact
// counts and says how many items it does not list; the run applies every
// item, reading the plan back from the store a page at a time, and a run
// killed past the first page resumes with the rest, each leaver changed
// once.
func TestLargePlanStreams(t *testing.T) {
	t.Parallel()
	const leavers, stayers, shown, page, kill = 25, 5, 10, 7, 12
	var people []person
	for i := range leavers + stayers {
		p := person{name: fmt.Sprintf("user%02d", i), scim: "active", lastLogin: t0}
		if i < leavers {
			p.scim = "inactive"
		}
		people = append(people, p)
	}
	people = append(people, person{name: "svc-batch", scim: "inactive", lastLogin: t0})
	e := newEnv(t, people)
	p := policy()

	s := small(t, e, p, shown, page)
	plan, err := s.Plan(t.Context())
	must(t, err)
	if plan.Planned != leavers || plan.Skips != 1 || plan.Users != leavers || plan.Managed != leavers+stayers+1 {
		t.Fatalf("planned %d skips %d users %d managed %d", plan.Planned, plan.Skips, plan.Users, plan.Managed)
	}
	if len(plan.Items) != shown || plan.Omitted != leavers+1-shown {
		t.Fatalf("lists %d items, omits %d", len(plan.Items), plan.Omitted)
	}
	table := plan.Table()
	for _, want := range []string{fmt.Sprintf("%d actions for %d of %d managed users", leavers, leavers, plan.Managed),
		fmt.Sprintf("... and %d more items, not shown (%d listed)\n", plan.Omitted, shown)} {
		if !strings.Contains(table, want) {
			t.Errorf("table lacks %q:\n%s", want, table)
		}
	}
	if _, err := s.Apply(t.Context(), plan); err == nil || !strings.Contains(err.Error(), "run the sweep") {
		t.Errorf("Apply of a plan that lists only some items: %v", err)
	}

	// Killed after the twelfth change, on the second page of the plan.
	p.Concurrency = 1
	s = small(t, e, p, shown, page)
	ctx, cancel := context.WithCancel(t.Context())
	e.onRevoke = func(n int) {
		if n == kill {
			cancel()
		}
	}
	res, err := s.Run(ctx, false)
	if !errors.Is(err, context.Canceled) || res.Applied != kill || len(res.Items) != shown || res.Omitted != kill-shown {
		t.Fatalf("first run: applied %d, lists %d, omits %d, err %v", res.Applied, len(res.Items), res.Omitted, err)
	}
	first := res.RunID
	e.onRevoke = nil
	res, err = s.Run(t.Context(), false)
	must(t, err)
	if !res.Resumed || res.RunID != first || res.Applied != leavers-kill || res.Failed != 0 || res.Planned != leavers {
		t.Fatalf("resumed %v run %d applied %d failed %d planned %d", res.Resumed, res.RunID, res.Applied, res.Failed, res.Planned)
	}
	if n := e.srv.Calls()[putUser]; n != leavers {
		t.Errorf("%d user writes, want %d (one per leaver)", n, leavers)
	}
	if n := len(e.audit(t)); n != leavers {
		t.Errorf("%d audit events, want %d", n, leavers)
	}
	for _, pp := range people {
		if got, want := e.active(t, pp.name), pp.scim == "active" || pp.name == "svc-batch"; got != want {
			t.Errorf("%s active %v, want %v", pp.name, got, want)
		}
	}
	if run := e.lastRun(t); run.ID != first || run.State != "done" {
		t.Errorf("run %+v", run)
	}

	// A dry run over the same people (as if they were back) records every
	// item, and forgets those of the finished run.
	for i := range leavers {
		name := fmt.Sprintf("user%02d", i)
		must(t, e.st.PutAppState(t.Context(), store.AppState{App: "jira", Username: name, IdP: "okta", Subject: sub(name), Hash: "h"}))
	}
	res, err = s.Run(t.Context(), true)
	must(t, err)
	if res.Planned != leavers || len(res.Plan.Items) != shown || res.Plan.Omitted != leavers+1-shown {
		t.Errorf("dry run planned %d, lists %d, omits %d", res.Planned, len(res.Plan.Items), res.Plan.Omitted)
	}
	if items, err := e.st.SweepItems(t.Context(), first, store.SweepItemFilter{}); err != nil || len(items) != 0 {
		t.Errorf("the finished run's items are still kept: %d, %v", len(items), err)
	}
	items, err := e.st.SweepItems(t.Context(), res.RunID, store.SweepItemFilter{Limit: 100})
	must(t, err)
	if len(items) != leavers+1 {
		t.Fatalf("the dry run recorded %d items, want %d", len(items), leavers+1)
	}
	for i, row := range items {
		var it Item
		must(t, json.Unmarshal(row.Data, &it))
		if row.Seq != int64(i+1) || row.Key != it.key() || (i < shown && !reflect.DeepEqual(it, res.Plan.Items[i])) {
			t.Errorf("recorded item %d: seq %d key %q %+v", i, row.Seq, row.Key, it)
		}
	}
}

// A run that stopped while planning (the process died) left items but no
// plan: they never passed the valve, so the next run closes it and plans
// afresh, and acts on none of them.
func TestRunStoppedWhilePlanning(t *testing.T) {
	e := newEnv(t, []person{
		{name: "alice", scim: "active", lastLogin: t0},
		{name: "leaver", scim: "inactive", lastLogin: t0},
	})
	ctx := t.Context()
	id, err := e.st.StartSweep(ctx, store.SweepRun{Policy: "leavers", Started: t0, State: "running"})
	must(t, err)
	data, _ := json.Marshal(Item{IdP: "okta", Subject: sub("alice"), Username: "alice", App: "jira", Rule: RuleSCIM, Action: Deactivate})
	must(t, e.st.AddSweepItems(ctx, id, []store.SweepItem{{Seq: 1, Key: "jira/alice", Data: data}}))

	res, err := e.sweeper(t, policy()).Run(ctx, false)
	must(t, err)
	if res.Resumed || res.RunID == id || res.Applied != 1 {
		t.Errorf("result %+v", res)
	}
	if !e.active(t, "alice") || e.active(t, "leaver") {
		t.Errorf("alice active %v, leaver active %v", e.active(t, "alice"), e.active(t, "leaver"))
	}
	runs, err := e.st.SweepRuns(ctx, 10)
	must(t, err)
	if len(runs) != 2 || runs[1].ID != id || runs[1].State != "failed" || !strings.Contains(runs[1].Reason, "stopped while planning") {
		t.Errorf("runs %+v", runs)
	}
}

// failingPlanStore fails recording the plan's items.
type failingPlanStore struct{ Store }

func (failingPlanStore) AddSweepItems(context.Context, int64, []store.SweepItem) error {
	return errors.New("disk full")
}

// A plan that cannot be recorded is not applied, and its run is closed
// as failed, saying why.
func TestPlanNotRecorded(t *testing.T) {
	e := newEnv(t, company())
	d := e.deps()
	d.Store = failingPlanStore{e.st}
	_, err := e.sweeper(t, policy(), d).Run(t.Context(), false)
	if err == nil || !strings.Contains(err.Error(), "disk full") {
		t.Fatalf("err %v", err)
	}
	assertNobody(t, e)
	if run := e.lastRun(t); run.State != "failed" || !strings.Contains(run.Reason, "planning failed") || !strings.Contains(run.Reason, "disk full") {
		t.Errorf("run %+v", run)
	}
}

// A run an earlier version planned kept its items in its plan alone; it
// resumes from them, without repeating what it did.
func TestResumeRunOfEarlierVersion(t *testing.T) {
	e := newEnv(t, []person{
		{name: "done", scim: "inactive", lastLogin: t0},
		{name: "todo", scim: "inactive", lastLogin: t0},
		{name: "alice", scim: "active", lastLogin: t0},
	})
	ctx := t.Context()
	item := func(name string) Item {
		return Item{IdP: "okta", Subject: sub(name), Username: name, App: "jira", Rule: RuleSCIM, Reason: "inactive in SCIM", Action: Deactivate}
	}
	// The earlier version's plan: no counts, every item listed.
	old, err := json.Marshal(map[string]any{"policy": "leavers", "action": "deactivate", "managed": 3, "users": 2,
		"items": []Item{item("done"), item("todo")}, "blocked": false})
	must(t, err)
	id, err := e.st.StartSweep(ctx, store.SweepRun{Policy: "leavers", Started: t0, State: "running", Planned: 2, Plan: old})
	must(t, err)
	must(t, e.st.MarkSwept(ctx, id, "jira/done"))

	res, err := e.sweeper(t, policy()).Run(ctx, false)
	must(t, err)
	if !res.Resumed || res.RunID != id || res.Applied != 1 || res.Planned != 2 {
		t.Errorf("result %+v", res)
	}
	if !e.active(t, "done") || e.active(t, "todo") || !e.active(t, "alice") {
		t.Error("the resumed run acted on the wrong people")
	}
}

func TestDirIndex(t *testing.T) {
	x := newDirIndex()
	for _, p := range []directory.Person{
		{Subject: "s-ann", ID: "id-ann", Username: "Ann", Status: directory.Active},
		{Subject: "s-ina", ID: "id-ina", Username: "ina", Status: directory.Inactive},
		{Subject: "s-dis", ID: "id-dis", Username: "dis", Status: directory.Disabled},
		{Subject: "s-del", ID: "id-del", Username: "del", Status: directory.Deleted},
		// Listed twice, disabled then active (two accounts, one name):
		// in.
		{Subject: "s-two", ID: "id-two-a", Username: "two", Status: directory.Disabled},
		{Subject: "s-two-b", ID: "id-two-b", Username: "TWO", Status: directory.Active},
		{Subject: "", ID: "id-only", Username: "", Status: directory.Disabled},
	} {
		x.add(exactKey, p.Subject, p.Status)
		x.add(exactKey, p.ID, p.Status)
		x.add(lowerKey, strings.ToLower(p.Username), p.Status)
	}
	x.sort()
	for _, tc := range []struct {
		subject, username   string
		want, wantNoMissing string
	}{
		{"s-ann", "ann", "", ""},
		{"id-ann", "somebody", "", ""}, // matched by the directory's ID
		{"s-other", "ANN", "", ""},     // by username, in any case
		{"s-ina", "ina", "", ""},       // only temporarily inactive
		{"s-dis", "dis", "disabled in the directory", "disabled in the directory"},
		{"s-del", "x", "deleted in the directory", "deleted in the directory"},
		{"s-dis", "ann", "", ""}, // listed as in under another key
		{"s-two", "two", "", ""},
		{"id-only", "x", "disabled in the directory", "disabled in the directory"},
		{"s-gone", "gone", "missing from a complete pull of the directory", ""},
		{"ANN", "x", "", ""}, // a subject that is the username
		{"", "", "missing from a complete pull of the directory", ""},
	} {
		b := store.Binding{IdP: "okta", Subject: tc.subject, Username: tc.username}
		x.noMissing = false
		if got := x.gone(b); got != tc.want {
			t.Errorf("gone(%s, %s) = %q, want %q", tc.subject, tc.username, got, tc.want)
		}
		x.noMissing = true
		if got := x.gone(b); got != tc.wantNoMissing {
			t.Errorf("after a scope change, gone(%s, %s) = %q, want %q", tc.subject, tc.username, got, tc.wantNoMissing)
		}
	}
	// Keys are per pull: another index knows nobody.
	if got := newDirIndex().gone(store.Binding{Subject: "s-ann", Username: "ann"}); got == "" {
		t.Error("a fresh index found ann")
	}
}

// The planner reads a page's evidence at once and matches it as one
// person's: a pushed user by the login subject, else by username; an app
// state of the identity, or of nobody in particular (from before states
// named theirs), not another identity's.
func TestPlanMatchesEvidence(t *testing.T) {
	e := newEnv(t, []person{
		{name: "bysubject", scim: "inactive", lastLogin: t0},
		{name: "byname", lastLogin: t0},
		{name: "legacy", lastLogin: t0},
		{name: "taken", lastLogin: t0},
		{name: "expired", lastLogin: t0, expiry: t0.Add(-time.Minute)},
	})
	ctx := t.Context()
	// Pushed before anyone bound it: no subject, the username matches.
	must(t, e.st.PutSCIMUser(ctx, store.SCIMUser{IdP: "okta", ID: "id-byname", UserName: "BYNAME", Active: false}))
	// A state from before states named their identity.
	must(t, e.st.PutAppState(ctx, store.AppState{App: "jira", Username: "legacy", Hash: "h"}))
	must(t, e.st.PutSCIMUser(ctx, store.SCIMUser{IdP: "okta", ID: "id-legacy", UserName: "legacy", Subject: sub("legacy"), Active: false}))
	// The app account "taken" belongs to another identity.
	must(t, e.st.PutAppState(ctx, store.AppState{App: "jira", Username: "taken", IdP: "okta", Subject: "someone-else", Hash: "h"}))
	must(t, e.st.PutSCIMUser(ctx, store.SCIMUser{IdP: "okta", ID: "id-taken", UserName: "taken", Subject: sub("taken"), Active: false}))

	p := policy()
	p.ProtectedGroups = nil
	plan, err := e.sweeper(t, p).Plan(ctx)
	must(t, err)
	got := map[string]string{}
	for _, it := range plan.Items {
		got[it.Username] = it.Rule + " " + it.SCIMID
	}
	want := map[string]string{"bysubject": "scim id-bysubject", "byname": "scim id-byname", "legacy": "scim id-legacy",
		"expired": "access_expiry "}
	if !reflect.DeepEqual(got, want) || plan.Managed != 4 {
		t.Errorf("plan %v, managed %d; want %v and 4", got, plan.Managed, want)
	}
}
