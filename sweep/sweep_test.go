package sweep

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/usherhq/usher/config"
	"github.com/usherhq/usher/directory"
	"github.com/usherhq/usher/directory/scimpull"
	"github.com/usherhq/usher/jit"
	"github.com/usherhq/usher/store"
	"github.com/usherhq/usher/store/sqlite"
	"github.com/usherhq/usher/targets"
	"github.com/usherhq/usher/targets/atlassiantest"
	"github.com/usherhq/usher/targets/bitbucket"
)

func days(n int) time.Duration { return time.Duration(n) * 24 * time.Hour }

// company is the main fixture: one user per rule, the protected ones, a
// hand-made account and bystanders.
func company() []person {
	recent := t0.Add(-days(1))
	return []person{
		{name: "alice", scim: "active", lastLogin: recent},
		{name: "bob", scim: "active", lastLogin: recent},
		{name: "carol", scim: "active", lastLogin: recent},
		{name: "leaver", scim: "inactive", lastLogin: recent},
		// bound, provisioned, never pushed (or not yet): SCIM says nothing
		// about them, so they are no leaver.
		{name: "gone", lastLogin: recent},
		{name: "sleepy", scim: "active", lastLogin: t0.Add(-days(120))},
		{name: "never", scim: "active", created: t0.Add(-days(200))},
		{name: "fresh", scim: "active", created: t0.Add(-days(5))},
		{name: "contractor", scim: "active", lastLogin: recent,
			attrs: map[string]any{"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": map[string]any{"contractEndDate": "2025-05-15"}}},
		{name: "contractor2", scim: "active", lastLogin: recent, attrs: map[string]any{"contractEndDate": "2025-12-31"}},
		{name: "lastday", scim: "active", lastLogin: recent, attrs: map[string]any{"contractEndDate": "2025-06-01"}},
		{name: "expired", scim: "active", lastLogin: recent, expiry: t0.Add(-time.Hour)},
		{name: "later", scim: "active", lastLogin: recent, expiry: t0.Add(days(3))},
		{name: "admin", scim: "inactive", lastLogin: recent},
		{name: "svc-build", scim: "inactive", lastLogin: recent},
		{name: "boss", scim: "inactive", lastLogin: recent, groups: []string{"jira-administrators"}},
		{name: "local-bob", local: true},
		{name: "local-old", local: true},
	}
}

var companyLeavers = map[string]string{
	"leaver": RuleSCIM, "sleepy": RuleInactive, "never": RuleInactive,
	"contractor": RuleEndDate, "expired": RuleAccessExpiry,
}

var companySkipped = map[string]string{
	"admin": "protected user (admin)", "svc-build": "protected user (svc-*)",
	"boss": "member of protected group jira-administrators",
}

func TestPlan(t *testing.T) {
	e := newEnv(t, company())
	s := e.sweeper(t, policy())
	p, err := s.Plan(t.Context())
	must(t, err)
	if p.Blocked {
		t.Fatalf("blocked: %s", p.BlockReason)
	}
	got := map[string]Item{}
	for _, it := range p.Items {
		got[it.Username] = it
	}
	for name, rule := range companyLeavers {
		it, ok := got[name]
		if !ok || it.Action != Deactivate || it.Rule != rule {
			t.Errorf("%s: got %+v, want deactivate by %s", name, it, rule)
		}
	}
	for name, why := range companySkipped {
		if it := got[name]; it.Action != Skip || it.Skip != why {
			t.Errorf("%s: got %+v, want skip %q", name, it, why)
		}
	}
	if len(got) != len(companyLeavers)+len(companySkipped) {
		t.Errorf("plan has %d items, want %d:\n%s", len(got), len(companyLeavers)+len(companySkipped), p.Table())
	}
	if p.Managed != 16 || p.Users != 5 {
		t.Errorf("managed %d users %d, want 16 and 5", p.Managed, p.Users)
	}
	if e.srv.Writes() != 0 {
		t.Errorf("Plan wrote %d times to the app", e.srv.Writes())
	}
	table := p.Table()
	for _, want := range []string{"5 actions for 5 of 16 managed users", "contractor", "skipped: protected user (svc-*)"} {
		if !strings.Contains(table, want) {
			t.Errorf("table lacks %q:\n%s", want, table)
		}
	}
	var back Plan
	data, _ := json.Marshal(p)
	must(t, json.Unmarshal(data, &back))
	if !reflect.DeepEqual(back.Items, p.Items) {
		t.Error("plan does not survive JSON")
	}
}

func TestRunDeactivatesLeavers(t *testing.T) {
	e := newEnv(t, company())
	s := e.sweeper(t, policy())
	res, err := s.Run(t.Context(), false)
	must(t, err)
	if res.Applied != 5 || res.Failed != 0 || res.Skipped != 0 {
		t.Fatalf("applied %d failed %d skipped %d, want 5/0/0: %+v", res.Applied, res.Failed, res.Skipped, res.Items)
	}
	for _, p := range company() {
		_, leaver := companyLeavers[p.name]
		if got := e.active(t, p.name); got == leaver {
			t.Errorf("%s: active %v, want %v", p.name, got, !leaver)
		}
		if p.local {
			continue
		}
		as, err := e.st.AppState(t.Context(), "jira", p.name)
		must(t, err)
		if as.Deprovisioned != leaver {
			t.Errorf("%s: app state deprovisioned %v, want %v", p.name, as.Deprovisioned, leaver)
		}
	}
	if n := e.srv.Calls()[putUser]; n != 5 {
		t.Errorf("%d user writes, want 5", n)
	}
	slices.Sort(e.revoked)
	if want := []string{"okta/sub-contractor", "okta/sub-expired", "okta/sub-leaver", "okta/sub-never", "okta/sub-sleepy"}; !slices.Equal(e.revoked, want) {
		t.Errorf("revoked %v, want %v", e.revoked, want)
	}
	evs := e.audit(t)
	if len(evs) != 5 {
		t.Fatalf("%d audit events, want 5", len(evs))
	}
	for _, ev := range evs {
		if ev.Action != "app.deactivate" || ev.Outcome != "ok" || ev.App != "jira" || !strings.Contains(ev.Detail, "["+companyLeavers[ev.Username]+"]") {
			t.Errorf("audit event %+v", ev)
		}
	}
	run := e.lastRun(t)
	if run.State != "done" || run.Planned != 5 || run.Applied != 5 || run.DryRun || len(run.Plan) == 0 {
		t.Errorf("run %+v", run)
	}

	// A second run finds nothing left to do and writes nothing.
	e.srv.ResetCalls()
	res, err = s.Run(t.Context(), false)
	must(t, err)
	if res.Planned != 0 || e.srv.Writes() != 0 {
		t.Errorf("second run planned %d and wrote %d times", res.Planned, e.srv.Writes())
	}
}

func TestDryRunActsOnNothing(t *testing.T) {
	for _, viaPolicy := range []bool{false, true} {
		e := newEnv(t, company())
		p := policy()
		p.DryRun = viaPolicy
		res, err := e.sweeper(t, p).Run(t.Context(), !viaPolicy)
		must(t, err)
		if !res.DryRun || res.Planned != 5 || res.Applied != 0 || res.Plan == nil {
			t.Errorf("result %+v", res)
		}
		if e.srv.Writes() != 0 || len(e.revoked) != 0 || len(e.audit(t)) != 0 {
			t.Errorf("dry run wrote %d times, revoked %v", e.srv.Writes(), e.revoked)
		}
		if run := e.lastRun(t); !run.DryRun || run.State != "done" || run.Planned != 5 || run.Applied != 0 {
			t.Errorf("run %+v", run)
		}
		as, err := e.st.AppState(t.Context(), "jira", "leaver")
		must(t, err)
		if as.Deprovisioned {
			t.Error("dry run marked leaver deprovisioned")
		}
	}
}

func TestValveBlocks(t *testing.T) {
	for _, tc := range []struct {
		name   string
		tweak  func(*Policy)
		reason string
	}{
		{"max_count", func(p *Policy) { p.MaxCount = 4 }, "more than max_count 4"},
		{"max_share", func(p *Policy) { p.MaxShare = 0.2 }, "5 of 16 managed users (31.2%), more than max_share 20.0%"},
		{"default share", func(p *Policy) { p.MaxShare = 0 }, "more than max_share 5.0%"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, company())
			p := policy()
			tc.tweak(&p)
			var logs logBuffer
			var hooked []string
			d := e.deps()
			d.Log = slog.New(slog.NewTextHandler(&logs, nil))
			d.OnBlocked = func(policy, reason string) { hooked = append(hooked, policy+": "+reason) }
			s := e.sweeper(t, p, d)
			res, err := s.Run(t.Context(), false)
			if !errors.Is(err, ErrBlocked) {
				t.Fatalf("err %v, want ErrBlocked", err)
			}
			if !res.Blocked || !strings.Contains(res.BlockReason, tc.reason) {
				t.Errorf("block reason %q, want %q", res.BlockReason, tc.reason)
			}
			assertNobody(t, e)
			if s.Blocked() != 1 || len(hooked) != 1 {
				t.Errorf("counter %d, hook %v", s.Blocked(), hooked)
			}
			if !strings.Contains(logs.String(), "level=ERROR msg=\"sweep blocked by safety valve\"") {
				t.Errorf("log lacks the stable message:\n%s", logs.String())
			}
			run := e.lastRun(t)
			if run.State != "blocked" || !strings.Contains(run.Reason, tc.reason) || len(run.Plan) == 0 || run.Finished.IsZero() {
				t.Errorf("run %+v", run)
			}
		})
	}
}

func assertNobody(t *testing.T, e *env) {
	t.Helper()
	if w := e.srv.Writes(); w != 0 {
		t.Errorf("%d app writes, want none", w)
	}
	for _, u := range e.srv.Users() {
		if !u.Active {
			t.Errorf("%s was deactivated", u.Name)
		}
	}
	if len(e.revoked) != 0 || len(e.audit(t)) != 0 {
		t.Errorf("revoked %v, audit %v", e.revoked, e.audit(t))
	}
}

func TestDirectoryPull(t *testing.T) {
	people := []person{
		{name: "alice", lastLogin: t0}, {name: "bob", lastLogin: t0}, {name: "carol", lastLogin: t0},
		{name: "dave", lastLogin: t0}, {name: "local-eve", local: true},
	}
	dave := scimUsers("dave")[0]
	dave["active"] = false
	full := append(scimUsers("alice", "bob"), dave)
	for _, tc := range []struct {
		name   string
		srv    scimServer
		gone   []string // deactivated
		reason string   // non-empty: blocked with this
	}{
		{"complete", scimServer{users: full}, []string{"carol", "dave"}, ""},
		{"empty", scimServer{}, nil, "the pull of directory okta-scim returned no users while usher manages 4 users of okta"},
		{"server error", scimServer{users: full, status: http.StatusInternalServerError}, nil, "did not complete"},
		{"total above served", scimServer{users: full, serve: 2}, nil, "incomplete listing"},
		{"short page", scimServer{users: full, perPage: 2, total: 5}, nil, "incomplete listing"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, people)
			tc.srv.token = "tok"
			hs := httptest.NewServer(&tc.srv)
			defer hs.Close()
			p := Policy{Name: "leavers", IdPs: []string{"okta"}, MaxShare: 1, Sources: Sources{Directory: "okta-scim"}}
			d := e.deps()
			d.Directory = scimDirectory(t, hs.URL)
			s := e.sweeper(t, p, d)
			res, err := s.Run(t.Context(), false)
			if tc.reason != "" {
				if !errors.Is(err, ErrBlocked) || !strings.Contains(res.BlockReason, tc.reason) {
					t.Fatalf("err %v, reason %q; want blocked with %q", err, res.BlockReason, tc.reason)
				}
				assertNobody(t, e)
				if run := e.lastRun(t); run.State != "blocked" {
					t.Errorf("run state %s", run.State)
				}
				return
			}
			must(t, err)
			var got []string
			for _, u := range e.srv.Users() {
				if !u.Active {
					got = append(got, u.Name)
				}
			}
			if !slices.Equal(got, tc.gone) {
				t.Errorf("deactivated %v, want %v", got, tc.gone)
			}
			// The removal is the directory's: its sync brings the person
			// back when they are active there again.
			st, err := e.st.AppState(t.Context(), "jira", "dave")
			must(t, err)
			if st.DeprovisionedSource != "directory" || st.DeprovisionedActor != "okta-scim" || st.DeprovisionedRun != res.RunID ||
				!strings.Contains(st.DeprovisionedReason, "sweep leavers") {
				t.Errorf("dave's removal recorded as %s/%s run %d: %q", st.DeprovisionedSource, st.DeprovisionedActor, st.DeprovisionedRun, st.DeprovisionedReason)
			}
		})
	}
}

// scimDirectory is the scim connector over a SCIM service provider at
// base, matching people by externalId. Its retries give up at once: a
// test must not wait.
func scimDirectory(t testing.TB, base string) directory.Connector {
	t.Helper()
	cfg := &scimpull.Config{URL: base + "/scim/v2", Token: config.SecretValue("tok"), SubjectAttribute: "externalId",
		PageSize: 2, MaxWait: time.Millisecond}
	conn, err := cfg.Open("okta-scim", "okta", directory.Deps{})
	if err != nil {
		t.Fatal(err)
	}
	return conn
}

// TestDirectoryScopeChange: after the directory's configured scope
// changes, the first sweep does not count absence from it (only explicit
// signals), and the next one does.
func TestDirectoryScopeChange(t *testing.T) {
	e := newEnv(t, []person{{name: "alice", lastLogin: t0}, {name: "bob", lastLogin: t0}, {name: "carol", lastLogin: t0}, {name: "dave", lastLogin: t0}})
	dave := scimUsers("dave")[0]
	dave["active"] = false
	srv := &scimServer{users: append(scimUsers("alice", "bob"), dave), token: "tok"}
	hs := httptest.NewServer(srv)
	defer hs.Close()
	p := Policy{Name: "leavers", IdPs: []string{"okta"}, MaxShare: 1, Sources: Sources{Directory: "okta-scim"}}
	run := func(scope string, dry bool) *Result {
		t.Helper()
		d := e.deps()
		d.Directory, d.DirectoryScope = scimDirectory(t, hs.URL), scope
		res, err := e.sweeper(t, p, d).Run(t.Context(), dry)
		must(t, err)
		return res
	}
	users := func(res *Result) []string {
		var out []string
		for _, it := range res.Plan.Items {
			out = append(out, it.Username)
		}
		return out
	}
	// The first sweep ever has nothing to compare with: it counts.
	if got := users(run("v1", true)); !slices.Equal(got, []string{"carol", "dave"}) {
		t.Errorf("first sweep plans %v", got)
	}
	run("v1", false)                                               // keeps v1; carol and dave go
	e.srv.AddUser(atlassiantest.User{Name: "carol", Active: true}) // an admin brought carol back by hand
	must(t, e.st.PutAppState(t.Context(), store.AppState{App: "jira", Username: "carol", IdP: "okta", Subject: sub("carol"), Hash: "h"}))
	res := run("v2", true)
	if got := users(res); len(got) != 0 || len(res.Plan.Warnings) == 0 {
		t.Errorf("after a scope change: plans %v, warnings %v; want nothing, with a warning", got, res.Plan.Warnings)
	}
	run("v2", false)
	if got := users(run("v2", true)); !slices.Equal(got, []string{"carol"}) {
		t.Errorf("the sweep after that plans %v, want carol again", got)
	}
}

// TestSCIMWithoutData: an IdP that never pushed SCIM does not make every
// user "deleted".
func TestSCIMWithoutData(t *testing.T) {
	e := newEnv(t, []person{{name: "alice", lastLogin: t0}, {name: "bob", lastLogin: t0}})
	p := policy()
	p.Sources = Sources{SCIM: true}
	plan, err := e.sweeper(t, p).Plan(t.Context())
	must(t, err)
	if len(plan.Items) != 0 || plan.Managed != 2 {
		t.Errorf("plan %s", plan.Table())
	}
}

// A first SCIM import that has reached only some people: those it has
// not reached yet are not leavers, whatever the sweep does in the
// meantime. Only a push that says "inactive" makes one.
func TestSCIMPartialImport(t *testing.T) {
	var people []person
	for i := range 30 {
		p := person{name: fmt.Sprintf("user%02d", i), lastLogin: t0}
		switch {
		case i < 10:
			p.scim = "active" // the first batch
		case i == 10:
			p.scim = "inactive" // the one real leaver
		}
		people = append(people, p)
	}
	e := newEnv(t, people)
	p := policy()
	p.Sources = Sources{SCIM: true}
	for run := range 2 {
		res, err := e.sweeper(t, p).Run(t.Context(), false)
		must(t, err)
		if run == 0 && res.Applied != 1 {
			t.Fatalf("first run applied %d, want 1: %s", res.Applied, res.Plan.Table())
		}
	}
	for _, pp := range people {
		if got, want := e.active(t, pp.name), pp.name != "user10"; got != want {
			t.Errorf("%s active %v, want %v", pp.name, got, want)
		}
	}
}

func TestKillAndResume(t *testing.T) {
	var people []person
	for i := range 20 {
		people = append(people, person{name: "leaver" + string(rune('a'+i)), scim: "inactive", lastLogin: t0})
		people = append(people, person{name: "stayer" + string(rune('a'+i)), scim: "active", lastLogin: t0})
	}
	e := newEnv(t, people)
	p := policy()
	p.Concurrency = 1
	s := e.sweeper(t, p)

	ctx, cancel := context.WithCancel(t.Context())
	e.onRevoke = func(n int) {
		if n == 5 {
			cancel() // the "crash": after the fifth user's app change
		}
	}
	res, err := s.Run(ctx, false)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err %v, want canceled", err)
	}
	if res.Applied != 5 {
		t.Errorf("first run applied %d, want 5", res.Applied)
	}
	if run := e.lastRun(t); run.State != "running" {
		t.Fatalf("run state %s, want running", run.State)
	}
	e.onRevoke = nil

	res, err = s.Run(t.Context(), false)
	must(t, err)
	if !res.Resumed || res.Applied != 15 || res.Failed != 0 {
		t.Errorf("resumed %v applied %d failed %d, want true/15/0", res.Resumed, res.Applied, res.Failed)
	}
	if n := e.srv.Calls()[putUser]; n != 20 {
		t.Errorf("%d user writes, want 20 (one per leaver)", n)
	}
	if n := len(e.audit(t)); n != 20 {
		t.Errorf("%d audit events, want 20", n)
	}
	if len(e.revoked) != 20 {
		t.Errorf("%d revocations, want 20", len(e.revoked))
	}
	for _, p := range people {
		if got := e.active(t, p.name); got != (p.scim == "active") {
			t.Errorf("%s active %v", p.name, got)
		}
	}
	if run := e.lastRun(t); run.State != "done" || run.Applied != 15 {
		t.Errorf("run %+v", run)
	}
	// Nothing is left: a further run plans nothing.
	res, err = s.Run(t.Context(), false)
	must(t, err)
	if res.Resumed || res.Planned != 0 {
		t.Errorf("third run %+v", res)
	}
}

// failingProgress fails recording sweep progress while fail is set.
type failingProgress struct {
	Store
	fail *bool
}

func (f failingProgress) MarkSwept(ctx context.Context, run int64, key string) error {
	if *f.fail {
		return errors.New("progress store down")
	}
	return f.Store.MarkSwept(ctx, run, key)
}

// TestBookkeepingFailureResumes: the app changed but recording the
// progress failed; the next run finishes the records without a second
// app write.
func TestBookkeepingFailureResumes(t *testing.T) {
	e := newEnv(t, []person{{name: "leaver", scim: "inactive", lastLogin: t0}, {name: "alice", scim: "active", lastLogin: t0}})
	fail := true
	d := e.deps()
	d.Store = failingProgress{Store: e.st, fail: &fail}
	s := e.sweeper(t, policy(), d)
	if _, err := s.Run(t.Context(), false); err == nil || !strings.Contains(err.Error(), "not fully recorded") {
		t.Fatalf("err %v", err)
	}
	fail = false
	res, err := s.Run(t.Context(), false)
	must(t, err)
	if !res.Resumed || res.Applied != 1 {
		t.Errorf("result %+v", res)
	}
	if n := e.srv.Calls()[putUser]; n != 1 {
		t.Errorf("%d user writes, want 1", n)
	}
	evs := e.audit(t)
	if len(evs) != 1 || evs[0].Outcome != "ok" {
		t.Errorf("audit %+v", evs)
	}
}

func TestLeaseOneSweeper(t *testing.T) {
	var people []person
	for i := range 10 {
		people = append(people, person{name: "leaver" + string(rune('a'+i)), scim: "inactive", lastLogin: t0})
		people = append(people, person{name: "stayer" + string(rune('a'+i)), scim: "active", lastLogin: t0})
	}
	e := newEnv(t, people)
	// The leader's first revocation waits until the other sweeper gave
	// up, so both runs overlap for certain.
	loserDone := make(chan struct{})
	var once sync.Once
	e.onRevoke = func(n int) {
		if n == 1 {
			<-loserDone
		}
	}
	var (
		wg      sync.WaitGroup
		results [2]*Result
		errs    [2]error
	)
	for i, owner := range []string{"replica-a", "replica-b"} {
		d := e.deps()
		d.Owner = owner
		s := e.sweeper(t, policy(), d)
		wg.Go(func() {
			results[i], errs[i] = s.Run(t.Context(), false)
			if errors.Is(errs[i], ErrLeaseHeld) {
				once.Do(func() { close(loserDone) })
			}
		})
	}
	wg.Wait()
	held, swept := 0, 0
	for i := range 2 {
		switch {
		case errors.Is(errs[i], ErrLeaseHeld):
			held++
		case errs[i] == nil && results[i].Applied == 10:
			swept++
		default:
			t.Errorf("run %d: %v %+v", i, errs[i], results[i])
		}
	}
	if held != 1 || swept != 1 {
		t.Errorf("%d held off, %d swept; want 1 and 1", held, swept)
	}
	if n := e.srv.Calls()[putUser]; n != 10 {
		t.Errorf("%d user writes, want 10", n)
	}
	runs, err := e.st.SweepRuns(t.Context(), 10)
	must(t, err)
	if len(runs) != 1 {
		t.Errorf("%d runs recorded, want 1", len(runs))
	}
}

func TestRemoveManagedGroups(t *testing.T) {
	e := newEnv(t, []person{
		{name: "leaver", scim: "inactive", lastLogin: t0, groups: []string{"jira-devs", "jira-hand"}, managed: []string{"jira-devs"}},
		{name: "alice", scim: "active", lastLogin: t0},
	})
	p := policy()
	p.Action = RemoveManagedGroups
	res, err := e.sweeper(t, p).Run(t.Context(), false)
	must(t, err)
	if res.Applied != 1 {
		t.Fatalf("result %+v", res)
	}
	u, _ := e.srv.User("leaver")
	if !u.Active || slices.Contains(u.Groups, "jira-devs") || !slices.Contains(u.Groups, "jira-hand") {
		t.Errorf("leaver %+v: want active, without jira-devs, still in jira-hand", u)
	}
	ms, err := e.st.Managed(t.Context(), "jira", "leaver")
	must(t, err)
	if len(ms) != 0 {
		t.Errorf("managed %v", ms)
	}
	if evs := e.audit(t); len(evs) != 1 || evs[0].Action != "app.group.remove" || !strings.Contains(evs[0].Detail, "jira-devs") {
		t.Errorf("audit %+v", evs)
	}
}

// TestRecheck: the world changes between plan and apply.
func TestRecheck(t *testing.T) {
	e := newEnv(t, []person{
		{name: "back", scim: "inactive", lastLogin: t0},     // reactivated in SCIM meanwhile
		{name: "promoted", scim: "inactive", lastLogin: t0}, // made an admin meanwhile
		{name: "unbound", scim: "inactive", lastLogin: t0},  // deprovisioned by SCIM meanwhile
		{name: "leaver", scim: "inactive", lastLogin: t0},
		{name: "alice", scim: "active", lastLogin: t0},
	})
	s := e.sweeper(t, policy())
	plan, err := s.Plan(t.Context())
	must(t, err)
	if plan.Actions() != 4 {
		t.Fatalf("plan:\n%s", plan.Table())
	}
	ctx := t.Context()
	u, err := e.st.SCIMUser(ctx, "okta", "id-back")
	must(t, err)
	u.Active = true
	must(t, e.st.PutSCIMUser(ctx, u))
	e.srv.AddUser(atlassiantest.User{Name: "promoted", Active: true, Groups: []string{"jira-software-users", "service-accounts"}})
	as, err := e.st.AppState(ctx, "jira", "unbound")
	must(t, err)
	as.Deprovisioned, as.DeprovisionedReason = true, "scim: deactivated"
	must(t, e.st.PutAppState(ctx, as))
	e.srv.ResetCalls()

	res, err := s.Apply(ctx, plan)
	must(t, err)
	if res.Applied != 1 || res.Skipped != 3 {
		t.Errorf("applied %d skipped %d: %+v", res.Applied, res.Skipped, res.Items)
	}
	for _, name := range []string{"back", "promoted", "unbound"} {
		if !e.active(t, name) {
			t.Errorf("%s deactivated", name)
		}
	}
	if e.active(t, "leaver") {
		t.Error("leaver still active")
	}
}

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		p    Policy
		want []string
	}{
		{"empty", Policy{}, []string{"name: required", "idps:", "sources:"}},
		{"both schedules", Policy{Name: "x", IdPs: []string{"a"}, Sources: Sources{SCIM: true}, Schedule: "0 3 * * *", Every: time.Hour}, []string{"every: set schedule or every"}},
		{"bad cron", Policy{Name: "x", IdPs: []string{"a"}, Sources: Sources{SCIM: true}, Schedule: "soon"}, []string{"schedule: not a cron"}},
		{"directory two idps", Policy{Name: "x", IdPs: []string{"a", "b"}, Sources: Sources{Directory: "corp"}},
			[]string{"sources.directory: a directory belongs to exactly one IdP"}},
		{"licence group", Policy{Name: "x", IdPs: []string{"a"}, Sources: Sources{SCIM: true}, Action: RemoveLicenceGroup, Apps: []string{"jira"}},
			[]string{"licence_groups.jira: required"}},
		{"action", Policy{Name: "x", IdPs: []string{"a"}, Sources: Sources{SCIM: true}, Action: "nuke"}, []string{"action: want"}},
		{"globs and valve", Policy{Name: "x", IdPs: []string{"a"}, Sources: Sources{SCIM: true}, ProtectedUsers: []string{"["}, MaxShare: 2},
			[]string{"protected_users[0]: bad glob", "max_share:"}},
		{"ok", Policy{Name: "x", IdPs: []string{"a"}, Sources: Sources{InactiveDays: 90}, Schedule: "0 3 * * *"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			errs := tc.p.Validate()
			var got []string
			for _, err := range errs {
				got = append(got, err.Error())
			}
			joined := strings.Join(got, "\n")
			for _, w := range tc.want {
				if !strings.Contains(joined, w) {
					t.Errorf("errors lack %q:\n%s", w, joined)
				}
			}
			if tc.want == nil && len(errs) > 0 {
				t.Errorf("unexpected errors:\n%s", joined)
			}
		})
	}
}

// onlyDirectory hides the adapter's optional capabilities.
type onlyDirectory struct{ targets.Target }

func TestNewChecksApps(t *testing.T) {
	e := newEnv(t, nil)
	p := policy()
	p.Apps = []string{"confluence"}
	if _, err := New(p, e.deps()); err == nil || !strings.Contains(err.Error(), `no app "confluence"`) {
		t.Errorf("unknown app: err %v", err)
	}
	p.Apps, p.Action = nil, Delete
	if _, err := New(p, e.deps()); err != nil {
		t.Errorf("jira can delete: %v", err)
	}
	d := e.deps()
	d.Apps = map[string]targets.Target{"jira": onlyDirectory{e.apps["jira"]}}
	if _, err := New(p, d); err == nil || !strings.Contains(err.Error(), "cannot delete users") {
		t.Errorf("delete without Deleter: err %v", err)
	}
}

func TestEndDate(t *testing.T) {
	for _, tc := range []struct {
		res  string
		want time.Time
		err  bool
	}{
		{`{"contractEndDate":"2025-05-15"}`, time.Date(2025, 5, 16, 0, 0, 0, 0, time.UTC), false},
		{`{"ContractEndDate":"2025-05-15T12:00:00+02:00"}`, time.Date(2025, 5, 15, 10, 0, 0, 0, time.UTC), false},
		{`{"urn:x:ext":{"contractEndDate":"2025-05-15"}}`, time.Date(2025, 5, 16, 0, 0, 0, 0, time.UTC), false},
		{`{"other":1}`, time.Time{}, false},
		{`{"contractEndDate":null}`, time.Time{}, false},
		{`{"contractEndDate":"next week"}`, time.Time{}, true},
		{`{"contractEndDate":5}`, time.Time{}, true},
	} {
		got, err := endDate([]byte(tc.res), "contractEndDate")
		if (err != nil) != tc.err || !got.Equal(tc.want) {
			t.Errorf("%s: got %v, %v", tc.res, got, err)
		}
	}
}

// TestPlanShowsBitbucketSeats: Bitbucket has no deactivation, a seat
// comes through any group holding a global permission. The plan shows
// which seat-granting memberships a deactivation takes away (the
// licence group, mapped groups usher manages) and which it leaves
// (given by hand), and the run does exactly that.
func TestPlanShowsBitbucketSeats(t *testing.T) {
	ctx := t.Context()
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "usher.db"), sqlite.Options{})
	must(t, err)
	t.Cleanup(func() { st.Close() })
	srv := atlassiantest.New(atlassiantest.Bitbucket, atlassiantest.Options{AdminUser: "admin", AdminPassword: "pw"})
	srv.SetGroupPermission("developers", "LICENSED_USER")
	srv.SetGroupPermission("hand-picked", "PROJECT_CREATE")
	hs := httptest.NewServer(srv)
	t.Cleanup(hs.Close)
	u, err := url.Parse(hs.URL)
	must(t, err)
	cfg := &bitbucket.Config{Conn: targets.Conn{Username: "admin", Password: config.SecretValue("pw")}, LicenceGroups: []string{"stash-users"}}
	bb, err := cfg.Open("bitbucket", targets.Deps{Upstream: u})
	must(t, err)
	people := map[string][]string{ // name → groups; developers is usher's, hand-picked an admin's
		"leaver": {"stash-users", "developers"},
		"keeper": {"developers", "hand-picked"},
	}
	for name, groups := range people {
		srv.AddUser(atlassiantest.User{Name: name, DisplayName: name, Email: name + "@example.com", Active: true, Groups: groups})
		must(t, bind(ctx, st, name, t0.Add(-days(10))))
		must(t, st.PutAppState(ctx, store.AppState{App: "bitbucket", Username: name, IdP: "okta", Subject: sub(name), Hash: "h"}))
		must(t, st.AddManaged(ctx, store.Membership{App: "bitbucket", Username: name, Group: "developers", IdP: "okta", Rule: "map[0]"}))
		must(t, st.PutSCIMUser(ctx, store.SCIMUser{IdP: "okta", ID: "id-" + name, UserName: name, Subject: sub(name), Active: false}))
	}
	srv.ResetCalls()
	now := func() time.Time { return t0 }
	log := slog.New(slog.DiscardHandler)
	apps := map[string]targets.Target{"bitbucket": bb}
	lc := &jit.Lifecycle{Apps: apps, Store: st, Audit: &jit.AuditLog{Store: st, Log: log, Now: now}, Now: now, Log: log}
	s, err := New(Policy{Name: "leavers", IdPs: []string{"okta"}, Sources: Sources{SCIM: true}, MaxShare: 1},
		Deps{Store: st, Apps: apps, Remover: lc, Now: now, Log: log, Owner: "test", Lease: time.Minute})
	must(t, err)

	p, err := s.Plan(ctx)
	must(t, err)
	want := map[string][2][]string{
		"leaver": {{"developers", "stash-users"}, nil},
		"keeper": {{"developers"}, {"hand-picked"}},
	}
	for _, it := range p.Items {
		w := want[it.Username]
		if !slices.Equal(it.Seats, w[0]) || !slices.Equal(it.SeatKept, w[1]) {
			t.Errorf("%s: seats %q kept %q, want %q and %q", it.Username, it.Seats, it.SeatKept, w[0], w[1])
		}
	}
	if len(p.Items) != 2 || srv.Writes() != 0 {
		t.Fatalf("plan %d items, %d writes:\n%s", len(p.Items), srv.Writes(), p.Table())
	}
	table := p.Table()
	for _, w := range []string{"frees seat: developers, stash-users", "seat stays: hand-picked given by hand; takes away developers"} {
		if !strings.Contains(table, w) {
			t.Errorf("table lacks %q:\n%s", w, table)
		}
	}

	res, err := s.Run(ctx, false)
	must(t, err)
	if res.Applied != 2 {
		t.Fatalf("result %+v", res)
	}
	for name, licensed := range map[string]bool{"leaver": false, "keeper": true} {
		if u, _ := srv.User(name); u.Licensed != licensed || slices.Contains(u.Groups, "developers") {
			t.Errorf("%s after the sweep: %+v, want licensed %v and out of developers", name, u, licensed)
		}
	}
}

// Running says a run is under way, so that a shutdown can name the
// sweeps it interrupts; a second run at once is refused with the name.
func TestRunningDuringARun(t *testing.T) {
	e := newEnv(t, company())
	s := e.sweeper(t, policy())
	var (
		mu     sync.Mutex
		during []bool
		second error
	)
	e.onRevoke = func(n int) {
		mu.Lock()
		defer mu.Unlock()
		during = append(during, s.Running())
		if n == 1 {
			_, second = s.Run(t.Context(), false)
		}
	}
	if s.Running() {
		t.Fatal("running before any run")
	}
	if _, err := s.Run(t.Context(), false); err != nil {
		t.Fatal(err)
	}
	if s.Running() {
		t.Error("still running after the run")
	}
	if len(during) == 0 || slices.Contains(during, false) {
		t.Errorf("Running during the run: %v", during)
	}
	if !errors.Is(second, ErrLeaseHeld) || second.Error() != "sweep leavers: lease held by another owner" {
		t.Errorf("a second run at once: %v", second)
	}
}

func TestDirectorySourceWiring(t *testing.T) {
	e := newEnv(t, nil)
	p := Policy{Name: "leavers", IdPs: []string{"okta"}, Sources: Sources{Directory: "okta-scim"}}
	conn := scimDirectory(t, "http://127.0.0.1:1")
	other, err := (&scimpull.Config{URL: "http://127.0.0.1:1/scim/v2", Token: config.SecretValue("tok")}).Open("okta-scim", "entra", directory.Deps{})
	must(t, err)
	for name, c := range map[string]directory.Connector{"none": nil, "another IdP's": other} {
		d := e.deps()
		d.Directory = c
		if _, err := New(p, d); err == nil {
			t.Errorf("%s connector accepted", name)
		}
	}
	q := p
	q.Sources.Directory = "corp"
	d := e.deps()
	d.Directory = conn
	if _, err := New(q, d); err == nil {
		t.Error("a connector of another name accepted")
	}
	s, err := New(p, d)
	must(t, err)
	// A run resumes the removals it made in the directory's name, and
	// only those.
	for _, tc := range []struct {
		st   store.AppState
		ours bool
	}{
		{store.AppState{DeprovisionedSource: "directory", DeprovisionedActor: "okta-scim", DeprovisionedRun: 3}, true},
		{store.AppState{DeprovisionedSource: "directory", DeprovisionedActor: "okta-scim", DeprovisionedRun: 2}, false},
		{store.AppState{DeprovisionedSource: "directory", DeprovisionedActor: "corp", DeprovisionedRun: 3}, false},
		{store.AppState{DeprovisionedSource: "sweep", DeprovisionedActor: "leavers", DeprovisionedRun: 3}, true},
		{store.AppState{DeprovisionedSource: "scim", DeprovisionedRun: 3}, false},
	} {
		if got := s.ours(tc.st, 3); got != tc.ours {
			t.Errorf("ours(%+v) = %v", tc.st, got)
		}
	}
}
