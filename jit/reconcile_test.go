package jit

import (
	"context"
	"errors"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/usherhq/usher/config"
	"github.com/usherhq/usher/store"
	"github.com/usherhq/usher/store/sqlite"
	"github.com/usherhq/usher/targets"
	"github.com/usherhq/usher/targets/atlassiantest"
	"github.com/usherhq/usher/targets/bitbucket"
	"github.com/usherhq/usher/targets/confluence"
	"github.com/usherhq/usher/targets/crowd"
	"github.com/usherhq/usher/targets/jira"
	"github.com/usherhq/usher/targets/targettest"
)

// fixture is a Lifecycle (and its Reconciler) over emulated apps (one
// per kind, named after it) and a SQLite store in a temporary directory.
type fixture struct {
	l        *Lifecycle
	r        *Reconciler
	st       *sqlite.Store
	clock    *clockwork.FakeClock
	srv      map[string]*atlassiantest.Server
	dir      map[string]targets.Target
	sessions *revocations
}

// revocations records the identities whose sessions were ended.
type revocations struct {
	mu  sync.Mutex
	ids []string
}

func (r *revocations) RevokeIdentity(_ context.Context, idp, subject string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ids = append(r.ids, idp+"/"+subject)
	return nil
}

func (r *revocations) revoked() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.ids)
}

var seedGroups = []string{"developers", "support", "hand-picked"}

func newFixture(t *testing.T, kinds ...atlassiantest.Kind) *fixture {
	t.Helper()
	clk := clockwork.NewFakeClockAt(time.Date(2025, 3, 1, 9, 0, 0, 0, time.UTC))
	st, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "usher.db"), sqlite.Options{Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	f := &fixture{st: st, clock: clk, srv: map[string]*atlassiantest.Server{}, dir: map[string]targets.Target{}, sessions: &revocations{}}
	pw := config.SecretValue("pw")
	conn := targets.Conn{Username: "admin", Password: pw}
	for _, k := range kinds {
		srv := atlassiantest.New(k, atlassiantest.Options{
			AdminUser: "admin", AdminPassword: "pw", CrowdApp: "usher", CrowdAppPassword: "pw", Groups: seedGroups,
		})
		// The client's retries of a down app must not wait in a test.
		deps := targets.Deps{Upstream: targettest.Serve(t, srv), Sleep: func(ctx context.Context, _ time.Duration) error { return ctx.Err() }}
		var cfg targets.Config
		switch k {
		case atlassiantest.Jira:
			cfg = &jira.Config{Conn: conn}
		case atlassiantest.Confluence:
			cfg = &confluence.Config{Conn: conn}
		case atlassiantest.Bitbucket:
			cfg = &bitbucket.Config{Conn: conn, LicenceGroups: []string{"stash-users"}}
		case atlassiantest.Crowd:
			cfg = &crowd.Config{Application: "usher", ApplicationPassword: pw}
		}
		d, err := cfg.Open(string(k), deps)
		if err != nil {
			t.Fatal(err)
		}
		f.srv[string(k)], f.dir[string(k)] = srv, d
	}
	log := slog.New(slog.DiscardHandler)
	f.l = &Lifecycle{Apps: f.dir, Store: st, Sessions: f.sessions, Audit: &AuditLog{Store: st, Log: log, Now: clk.Now}, Owner: "replica-1",
		Now: clk.Now, FastPath: time.Hour, Log: log, QueueWhenDown: true, Mappers: map[string]*Mapper{}}
	f.r = f.l.rec()
	return f
}

// alice is the desired state of one person in app with the given groups.
func alice(app string, groups ...string) Desired {
	return Desired{
		App: app, IdP: "okta", Subject: "sub-alice", Username: "alice", Email: "alice@acme.test",
		DisplayName: "Alice Archer", Groups: grants(groups...), Sync: SyncFull, Hash: "h1", Cause: LoginVia("okta"),
	}
}

func grants(groups ...string) []Grant {
	var gs []Grant
	for _, g := range groups {
		gs = append(gs, Grant{Group: g, Rule: "map[0]"})
	}
	return gs
}

func (f *fixture) apply(t *testing.T, d Desired, fast bool) Outcome {
	t.Helper()
	o := f.r.Apply(t.Context(), d, fast)
	if o.Err != nil {
		t.Fatalf("Apply %s: %v", d.App, o.Err)
	}
	return o
}

// user returns the app's view of a user, failing when it is missing.
func (f *fixture) user(t *testing.T, app, name string) atlassiantest.User {
	t.Helper()
	u, ok := f.srv[app].User(name)
	if !ok {
		t.Fatalf("%s has no user %s", app, name)
	}
	return u
}

func (f *fixture) managed(t *testing.T, app, username string) []string {
	t.Helper()
	ms, err := f.st.Managed(t.Context(), app, username)
	if err != nil {
		t.Fatal(err)
	}
	var gs []string
	for _, m := range ms {
		gs = append(gs, m.Group)
	}
	slices.Sort(gs)
	return gs
}

func (f *fixture) state(t *testing.T, app, username string) store.AppState {
	t.Helper()
	st, err := f.st.AppState(t.Context(), app, username)
	if err != nil {
		t.Fatalf("app state of %s in %s: %v", username, app, err)
	}
	return st
}

// bind binds an okta identity to username.
func (f *fixture) bind(t *testing.T, subject, username string) {
	t.Helper()
	if _, err := f.st.Bind(t.Context(), store.Binding{IdP: "okta", Subject: subject, Username: username}); err != nil {
		t.Fatal(err)
	}
}

// scimOff is the cause of a SCIM deactivation of an okta person.
var scimOff = SCIMPush("okta", "deactivated")

func (f *fixture) resetCalls() {
	for _, s := range f.srv {
		s.ResetCalls()
	}
}

func has(list []string, s string) bool { return slices.Contains(list, s) }

func TestApplyCreatesThenOnlyReads(t *testing.T) {
	for _, k := range []atlassiantest.Kind{atlassiantest.Jira, atlassiantest.Confluence, atlassiantest.Bitbucket, atlassiantest.Crowd} {
		t.Run(string(k), func(t *testing.T) {
			f := newFixture(t, k)
			app := string(k)
			d := alice(app, "developers", "support")
			if o := f.apply(t, d, false); o.Known || len(o.Changes) == 0 {
				t.Fatalf("first Apply: %+v, want unknown and changes", o)
			}
			u := f.user(t, app, "alice")
			if u.DisplayName != "Alice Archer" || !u.Active || !has(u.Groups, "developers") || !has(u.Groups, "support") {
				t.Fatalf("created %+v", u)
			}
			// Confluence's user resource has no e-mail (EmailUnknown), so
			// only the other apps can be checked; none may be rewritten.
			if k != atlassiantest.Confluence && u.Email != "alice@acme.test" {
				t.Errorf("e-mail %q", u.Email)
			}

			f.resetCalls()
			o := f.apply(t, d, false)
			if w := f.srv[app].Writes(); w != 0 || len(o.Changes) != 0 || !o.Known {
				t.Fatalf("second Apply made %d writes, changes %q, known %v; calls %v", w, o.Changes, o.Known, f.srv[app].Calls())
			}
			if f.srv[app].Reads() == 0 {
				t.Error("second Apply without the fast path made no read")
			}
		})
	}
}

func TestFastPath(t *testing.T) {
	f := newFixture(t, atlassiantest.Jira)
	d := alice("jira", "developers")
	f.apply(t, d, true)

	f.resetCalls()
	if o := f.apply(t, d, true); o.Skipped != "fast path" {
		t.Fatalf("fresh unchanged Apply: %+v", o)
	}
	if n := f.srv["jira"].Reads() + f.srv["jira"].Writes(); n != 0 {
		t.Fatalf("fast path made %d calls: %v", n, f.srv["jira"].Calls())
	}

	changed := d
	changed.Hash = "h2"
	if o := f.apply(t, changed, true); o.Skipped != "" || f.srv["jira"].Reads() == 0 {
		t.Fatalf("changed profile skipped: %+v", o)
	}

	f.clock.Advance(f.r.FastPath + time.Second)
	f.resetCalls()
	if o := f.apply(t, changed, true); o.Skipped != "" || f.srv["jira"].Reads() == 0 || f.srv["jira"].Writes() != 0 {
		t.Fatalf("expired fast path: %+v, calls %v", o, f.srv["jira"].Calls())
	}
}

func TestGroupsUsherDidNotAddSurvive(t *testing.T) {
	tests := []struct {
		name        string
		sync        string
		wantGroups  []string // among developers, support, hand-picked
		wantManaged []string
	}{
		{"full sync removes only its own", SyncFull, []string{"hand-picked", "support"}, []string{"support"}},
		{"add_only never removes", SyncAddOnly, []string{"developers", "hand-picked", "support"}, []string{"developers", "support"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, atlassiantest.Jira)
			ctx := t.Context()
			f.apply(t, alice("jira", "developers"), false)
			// An admin grants hand-picked; usher does not record it.
			if err := f.dir["jira"].AddToGroup(ctx, "alice", "hand-picked"); err != nil {
				t.Fatal(err)
			}
			d := alice("jira", "support")
			d.Sync = tt.sync
			f.apply(t, d, false)

			var got []string
			for _, g := range f.user(t, "jira", "alice").Groups {
				if has(seedGroups, g) {
					got = append(got, g)
				}
			}
			slices.Sort(got)
			if !slices.Equal(got, tt.wantGroups) {
				t.Errorf("groups %q, want %q", got, tt.wantGroups)
			}
			if m := f.managed(t, "jira", "alice"); !slices.Equal(m, tt.wantManaged) {
				t.Errorf("managed %q, want %q", m, tt.wantManaged)
			}
		})
	}
}

func TestHandGrantedGroupIsNotClaimedWhenDesired(t *testing.T) {
	f := newFixture(t, atlassiantest.Jira)
	f.apply(t, alice("jira"), false)
	if err := f.dir["jira"].AddToGroup(t.Context(), "alice", "hand-picked"); err != nil {
		t.Fatal(err)
	}
	// The mapping starts granting it, then stops: it was there before
	// usher wanted it, so it is not usher's to take away.
	f.apply(t, alice("jira", "hand-picked"), false)
	if m := f.managed(t, "jira", "alice"); len(m) != 0 {
		t.Fatalf("usher claimed %q", m)
	}
	f.apply(t, alice("jira"), false)
	if !has(f.user(t, "jira", "alice").Groups, "hand-picked") {
		t.Fatal("hand-granted group removed")
	}
}

func TestManagedMembershipRemovedByHandIsForgotten(t *testing.T) {
	f := newFixture(t, atlassiantest.Jira)
	f.apply(t, alice("jira", "developers", "support"), false)
	if err := f.dir["jira"].RemoveFromGroup(t.Context(), "alice", "developers"); err != nil {
		t.Fatal(err)
	}
	f.resetCalls()
	f.apply(t, alice("jira", "support"), false)
	if w := f.srv["jira"].Writes(); w != 0 {
		t.Errorf("made %d writes: %v", w, f.srv["jira"].Calls())
	}
	if m := f.managed(t, "jira", "alice"); !slices.Equal(m, []string{"support"}) {
		t.Errorf("managed %q, want [support]", m)
	}
}

// TestCrashBetweenRecordAndAdd leaves the record of a membership that
// never reached the app, as a crash between the two steps would.
func TestCrashBetweenRecordAndAdd(t *testing.T) {
	tests := []struct {
		name      string
		desired   []string
		wantAdds  int
		wantGroup bool
		wantRecs  []string
	}{
		{"still desired: added once", []string{"developers"}, 1, true, []string{"developers"}},
		{"no longer desired: record forgotten", nil, 0, false, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, atlassiantest.Jira)
			ctx := t.Context()
			f.apply(t, alice("jira"), false)
			if err := f.st.AddManaged(ctx, store.Membership{App: "jira", Username: "alice", Group: "developers", IdP: "okta", Rule: "map[0]"}); err != nil {
				t.Fatal(err)
			}
			f.resetCalls()
			f.apply(t, alice("jira", tt.desired...), false)
			calls := f.srv["jira"].Calls()
			if calls["POST /rest/api/2/group/user"] != tt.wantAdds || calls["DELETE /rest/api/2/group/user"] != 0 {
				t.Errorf("calls %v, want %d adds and no removal", calls, tt.wantAdds)
			}
			if got := has(f.user(t, "jira", "alice").Groups, "developers"); got != tt.wantGroup {
				t.Errorf("member of developers = %v, want %v", got, tt.wantGroup)
			}
			if m := f.managed(t, "jira", "alice"); !slices.Equal(m, tt.wantRecs) {
				t.Errorf("managed %q, want %q", m, tt.wantRecs)
			}
		})
	}
}

func TestRenameKeepsTheAccount(t *testing.T) {
	f := newFixture(t, atlassiantest.Jira)
	f.apply(t, alice("jira", "developers"), false)
	key := f.user(t, "jira", "alice").Key

	d := alice("jira", "developers")
	d.Username, d.PrevUsername = "alice.archer", "alice"
	f.resetCalls()
	o := f.apply(t, d, false)
	if n := f.srv["jira"].Calls()["POST /rest/api/2/user"]; n != 0 {
		t.Fatalf("rename created a user: %v", f.srv["jira"].Calls())
	}
	if _, ok := f.srv["jira"].User("alice"); ok {
		t.Error("old username still exists")
	}
	if u := f.user(t, "jira", "alice.archer"); u.Key != key || !has(u.Groups, "developers") {
		t.Errorf("renamed user %+v, want key %s and developers", u, key)
	}
	if !slices.ContainsFunc(o.Changes, func(c string) bool { return strings.HasPrefix(c, "renamed alice") }) {
		t.Errorf("changes %q", o.Changes)
	}
	// The membership usher added stays usher's under the new name, so a
	// later mapping change still takes it away.
	if m := f.managed(t, "jira", "alice.archer"); !slices.Equal(m, []string{"developers"}) {
		t.Errorf("managed under new name %q, want [developers]", m)
	}
	if m := f.managed(t, "jira", "alice"); len(m) != 0 {
		t.Errorf("managed under old name %q", m)
	}
	d.Groups = nil
	f.apply(t, d, false)
	if has(f.user(t, "jira", "alice.archer").Groups, "developers") {
		t.Error("developers survived after the mapping stopped granting it")
	}
}

func TestDeactivatedUserIsReactivatedOnLogin(t *testing.T) {
	f := newFixture(t, atlassiantest.Jira)
	f.srv["jira"].AddUser(atlassiantest.User{Name: "alice", DisplayName: "Alice Archer", Email: "alice@acme.test"})
	o := f.apply(t, alice("jira"), false)
	if !f.user(t, "jira", "alice").Active || !slices.Contains(o.Changes, "reactivated alice") {
		t.Fatalf("not reactivated: %+v", o)
	}
}

func TestDeactivate(t *testing.T) {
	f := newFixture(t, atlassiantest.Jira)
	ctx := t.Context()
	f.apply(t, alice("jira", "developers"), false)
	f.bind(t, "sub-alice", "alice")
	rm := Removal{IdP: "okta", Subject: "sub-alice"}

	f.resetCalls()
	if _, err := f.l.Remove(ctx, rm, scimOff); err != nil {
		t.Fatal(err)
	}
	if f.user(t, "jira", "alice").Active || f.srv["jira"].Writes() != 1 {
		t.Fatalf("after Remove: active %v, calls %v", f.user(t, "jira", "alice").Active, f.srv["jira"].Calls())
	}
	st := f.state(t, "jira", "alice")
	if !st.Deprovisioned || st.DeprovisionedSource != "scim" || st.DeprovisionedReason != "deactivated" ||
		st.DeprovisionedAction != "deactivate" || !st.DeprovisionedAt.Equal(f.clock.Now()) {
		t.Errorf("state %+v", st)
	}
	f.resetCalls()
	if _, err := f.l.Remove(ctx, rm, scimOff); err != nil || f.srv["jira"].Writes() != 0 {
		t.Fatalf("second Remove: %v, calls %v", err, f.srv["jira"].Calls())
	}
	evs, err := f.st.Audit(ctx, store.AuditFilter{Username: "alice", Action: "app.deactivate"})
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 1 || evs[0].Outcome != "ok" || evs[0].Actor != "scim" || evs[0].App != "jira" {
		t.Errorf("audit %+v, want one ok event by scim", evs)
	}

	// A login does not bring the person back, and asks the app nothing.
	f.resetCalls()
	o := f.r.Apply(ctx, alice("jira", "developers"), false)
	if !errors.Is(o.Err, ErrDeprovisioned) || o.Skipped != "deprovisioned" {
		t.Fatalf("Apply after Deactivate: %+v", o)
	}
	if n := f.srv["jira"].Reads() + f.srv["jira"].Writes(); n != 0 {
		t.Errorf("refused Apply made %d calls", n)
	}

	if _, err := f.l.reinstate(ctx, SCIMPush("okta", "active again"), SourceSCIM, "alice"); err != nil {
		t.Fatal(err)
	}
	if st := f.state(t, "jira", "alice"); st.Deprovisioned {
		t.Fatalf("still deprovisioned: %+v", st)
	}
	if o := f.apply(t, alice("jira", "developers"), true); !slices.Contains(o.Changes, "reactivated alice") || !f.user(t, "jira", "alice").Active {
		t.Fatalf("Apply after Reinstate: %+v", o)
	}
}

// An account someone deleted by hand in the app: the decision is
// recorded all the same, and the app is left alone.
func TestDeactivateMissingUser(t *testing.T) {
	f := newFixture(t, atlassiantest.Jira)
	ctx := t.Context()
	if err := f.st.PutAppState(ctx, store.AppState{App: "jira", Username: "ghost", IdP: "okta", Subject: "sub-ghost"}); err != nil {
		t.Fatal(err)
	}
	f.bind(t, "sub-ghost", "ghost")
	outs, err := f.l.Remove(ctx, Removal{IdP: "okta", Subject: "sub-ghost"}, BySweep("leavers", 4, "inactive 90 days"))
	if err != nil {
		t.Fatal(err)
	}
	if w := f.srv["jira"].Writes(); w != 0 || len(outs) != 1 || outs[0].Skipped == "" {
		t.Errorf("made %d writes, outcomes %+v", w, outs)
	}
	if st := f.state(t, "jira", "ghost"); !st.Deprovisioned || st.DeprovisionedSource != "sweep" || st.DeprovisionedActor != "leavers" ||
		st.DeprovisionedRun != 4 || st.DeprovisionedReason != "inactive 90 days" || st.Subject != "sub-ghost" {
		t.Errorf("state %+v", st)
	}
}

func TestAttributesWrittenOnce(t *testing.T) {
	for _, k := range []atlassiantest.Kind{atlassiantest.Jira, atlassiantest.Crowd} {
		t.Run(string(k), func(t *testing.T) {
			f := newFixture(t, k)
			app := string(k)
			d := alice(app)
			d.Attributes = map[string]string{"department": "R&D", "cost_center": "42"}
			f.apply(t, d, false)
			if a := f.user(t, app, "alice").Attributes; a["department"] != "R&D" || a["cost_center"] != "42" {
				t.Fatalf("attributes %v", a)
			}

			f.resetCalls()
			f.apply(t, d, false)
			if w := f.srv[app].Writes(); w != 0 {
				t.Fatalf("unchanged attributes: %d writes %v", w, f.srv[app].Calls())
			}

			d.Attributes = map[string]string{"department": "Sales", "cost_center": "42"}
			o := f.apply(t, d, false)
			if a := f.user(t, app, "alice").Attributes; a["department"] != "Sales" {
				t.Fatalf("attributes %v", a)
			}
			if w := f.srv[app].Writes(); w != 1 || !slices.Contains(o.Changes, `department "R&D" → "Sales"`) {
				t.Errorf("one changed attribute: %d writes, changes %q", w, o.Changes)
			}
		})
	}
}

// TestConfluenceEmailUnknown: Confluence does not report e-mail, which
// must not read as a difference to correct on every login.
func TestConfluenceEmailUnknown(t *testing.T) {
	f := newFixture(t, atlassiantest.Confluence)
	f.apply(t, alice("confluence"), false)
	u, err := f.dir["confluence"].GetUser(t.Context(), "alice")
	if err != nil {
		t.Fatal(err)
	}
	if !u.EmailUnknown {
		t.Skip("this Confluence reports e-mail")
	}
	for range 2 {
		f.resetCalls()
		if o := f.apply(t, alice("confluence"), false); f.srv["confluence"].Writes() != 0 || len(o.Changes) != 0 {
			t.Fatalf("re-apply: changes %q, calls %v", o.Changes, f.srv["confluence"].Calls())
		}
	}
}

// TestConfluenceEmailChange: Confluence's user resource has no e-mail
// (reference §4.3), so a changed e-mail is judged against what usher
// applied last, and sent; an unchanged one is never sent.
func TestConfluenceEmailChange(t *testing.T) {
	const put = "PUT /rest/api/admin/user/{username}"
	f := newFixture(t, atlassiantest.Confluence)
	ctx := t.Context()
	srv := f.srv["confluence"]
	login := func(p *Profile) Outcome {
		t.Helper()
		f.clock.Advance(2 * f.r.FastPath) // no fast path: the apps are read
		f.resetCalls()
		out, err := f.r.provision(ctx, p, "", LoginVia("okta"), queueNever, nil)
		if err != nil || len(out) != 1 {
			t.Fatalf("provision: %+v, %v", out, err)
		}
		return out[0]
	}
	p := profile("confluence")
	login(p)

	p.Email = "alice@new.example"
	o := login(p)
	if got := f.user(t, "confluence", "alice").Email; got != "alice@new.example" {
		t.Fatalf("e-mail in confluence = %q, want the new one", got)
	}
	if n := srv.Calls()[put]; n != 1 || !slices.Contains(o.Changes, `e-mail "alice@acme.test" → "alice@new.example"`) {
		t.Errorf("e-mail change: %d updates, changes %q", n, o.Changes)
	}

	// Unchanged: no write at all.
	if o := login(p); srv.Writes() != 0 || len(o.Changes) != 0 {
		t.Errorf("unchanged login: changes %q, calls %v", o.Changes, srv.Calls())
	}

	// Only the groups change: the e-mail is known to be applied already.
	p.Apps["confluence"].Groups = grants("developers", "support")
	if login(p); srv.Calls()[put] != 0 || srv.Writes() != 1 {
		t.Errorf("group change sent the e-mail: %v", srv.Calls())
	}

	// A retry of a queued change carries no record of what was applied
	// before: it sends the e-mail rather than guess.
	f.resetCalls()
	d := DesiredFor(p, "confluence", Cause{Source: SourceRetry, IdP: "okta"})
	d.Email, d.Hash = "alice@third.example", "queued"
	o = f.apply(t, d, false)
	if got := f.user(t, "confluence", "alice").Email; got != "alice@third.example" || srv.Calls()[put] != 1 {
		t.Errorf("retry: e-mail %q, calls %v, changes %q", got, srv.Calls(), o.Changes)
	}
}

// TestAccountOfAFailedReconcileIsRecorded: a reconcile that created the
// account and then failed (a mapped group is missing) still records the
// account, so a removal takes it away.
func TestAccountOfAFailedReconcileIsRecorded(t *testing.T) {
	f := newFixture(t, atlassiantest.Jira)
	ctx := t.Context()
	o := f.r.Apply(ctx, alice("jira", "no-such-group"), true)
	if !errors.Is(o.Err, targets.ErrGroupNotFound) {
		t.Fatalf("Apply = %+v, want the missing group's error", o)
	}
	if !f.user(t, "jira", "alice").Active {
		t.Fatal("the account was not created")
	}
	if st := f.state(t, "jira", "alice"); st.Hash != "" || st.Subject != "sub-alice" {
		t.Errorf("state %+v, want the account recorded with no applied hash", st)
	}
	f.bind(t, "sub-alice", "alice")
	if _, err := f.l.Remove(ctx, Removal{IdP: "okta", Subject: "sub-alice"}, scimOff); err != nil {
		t.Fatal(err)
	}
	if f.user(t, "jira", "alice").Active {
		t.Error("removal left the account active")
	}
}

// TestDeactivateFreesBitbucketSeat: a seat that comes through a mapped
// group (one holding LICENSED_USER through Bitbucket's global
// permissions, not listed in licence_groups) is freed by deactivation;
// one that comes through a membership given by hand stays, and the
// audit says so.
func TestDeactivateFreesBitbucketSeat(t *testing.T) {
	tests := []struct {
		name         string
		byHand       bool // an admin put alice into hand-picked, which grants a seat
		wantLicensed bool
	}{
		{"seat through a mapped group", false, false},
		{"seat also through a group given by hand", true, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, atlassiantest.Bitbucket)
			ctx := t.Context()
			srv := f.srv["bitbucket"]
			srv.SetGroupPermission("developers", "LICENSED_USER")
			srv.SetGroupPermission("hand-picked", "PROJECT_CREATE")
			f.apply(t, alice("bitbucket", "developers"), false)
			if tt.byHand {
				if err := f.dir["bitbucket"].AddToGroup(ctx, "alice", "hand-picked"); err != nil {
					t.Fatal(err)
				}
			}
			f.bind(t, "sub-alice", "alice")
			if _, err := f.l.Remove(ctx, Removal{IdP: "okta", Subject: "sub-alice"}, scimOff); err != nil {
				t.Fatal(err)
			}
			u := f.user(t, "bitbucket", "alice")
			if u.Licensed != tt.wantLicensed {
				t.Errorf("licensed = %v, want %v (groups %q)", u.Licensed, tt.wantLicensed, u.Groups)
			}
			if has(u.Groups, "developers") || has(u.Groups, "stash-users") {
				t.Errorf("groups after deactivation %q: the mapped and the licence group must go", u.Groups)
			}
			if has(u.Groups, "hand-picked") != tt.byHand {
				t.Errorf("groups after deactivation %q: a membership given by hand is not usher's", u.Groups)
			}
			if m := f.managed(t, "bitbucket", "alice"); len(m) != 0 {
				t.Errorf("still managed: %q", m)
			}
			evs, err := f.st.Audit(ctx, store.AuditFilter{Username: "alice", Action: string(ActDeactivate)})
			if err != nil {
				t.Fatal(err)
			}
			var kept bool
			for _, e := range evs {
				kept = kept || e.Outcome == string(ResultSkipped) && strings.Contains(e.Detail, "hand-picked")
			}
			if kept != tt.byHand {
				t.Errorf("audit %+v: want a note on the seat kept through hand-picked: %v", evs, tt.byHand)
			}

			// Again: nothing left to take.
			f.resetCalls()
			if _, err := f.l.Remove(ctx, Removal{IdP: "okta", Subject: "sub-alice"}, scimOff); err != nil || srv.Writes() != 0 {
				t.Errorf("second removal: %v, calls %v", err, srv.Calls())
			}
		})
	}
}

func TestReleaseSeat(t *testing.T) {
	seat := targets.Seat{Groups: []string{"stash-users", "Developers", "hand-picked"}, Released: []string{"stash-users"}, Direct: "LICENSED_USER"}
	ms := []store.Membership{{Group: "developers"}, {Group: "team-x"}}
	r := ReleaseSeat(seat, ms)
	if want := []string{"stash-users", "Developers", "direct LICENSED_USER"}; !slices.Equal(r.Freed, want) {
		t.Errorf("Freed %q, want %q", r.Freed, want)
	}
	if want := []string{"hand-picked"}; !slices.Equal(r.Kept, want) {
		t.Errorf("Kept %q, want %q", r.Kept, want)
	}
	if r := ReleaseSeat(targets.Seat{}, ms); len(r.Freed)+len(r.Kept) != 0 {
		t.Errorf("no seat: %+v", r)
	}
}

func profile(apps ...string) *Profile {
	p := &Profile{
		IdP: "okta", Subject: "sub-alice", Username: "alice", Email: "alice@acme.test", DisplayName: "Alice Archer",
		Apps: map[string]*AppProfile{},
	}
	for _, app := range apps {
		p.Apps[app] = &AppProfile{Groups: grants("developers"), Sync: SyncFull}
	}
	return p
}

func TestLoginReconcilesEveryApp(t *testing.T) {
	f := newFixture(t, atlassiantest.Jira, atlassiantest.Confluence, atlassiantest.Crowd)
	f.srv["confluence"].SetLatency(20 * time.Millisecond)
	out, err := f.r.provision(t.Context(), profile("jira", "confluence", "crowd", "not-configured"), "", LoginVia("okta"), queueNever, nil)
	if err != nil {
		t.Fatal(err)
	}
	var apps []string
	for _, o := range out {
		apps = append(apps, o.App)
		if o.Err != nil || len(o.Changes) == 0 {
			t.Errorf("%s: %+v", o.App, o)
		}
		if !has(f.user(t, o.App, "alice").Groups, "developers") {
			t.Errorf("%s: not in developers", o.App)
		}
	}
	if want := []string{"confluence", "crowd", "jira"}; !slices.Equal(apps, want) {
		t.Errorf("outcomes for %q, want %q", apps, want)
	}
}

func TestLoginWhenAnAppIsDown(t *testing.T) {
	tests := []struct {
		name       string
		provisoned bool // usher provisioned alice into jira before
		known      bool // the login says she logged in before
		wantQueued bool
	}{
		{"known to the app: queued", true, true, true},
		{"new to the app: refused", false, true, false},
		{"not known to usher: refused", true, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, atlassiantest.Jira, atlassiantest.Confluence)
			ctx := t.Context()
			p := profile("jira", "confluence")
			if tt.provisoned {
				if _, err := f.r.provision(ctx, p, "", LoginVia("okta"), queueNever, nil); err != nil {
					t.Fatal(err)
				}
				f.clock.Advance(2 * f.r.FastPath)
			}
			f.srv["jira"].SetDown(true)
			queue := queueNever
			if tt.known {
				queue = queueKnown
			}
			out, err := f.r.provision(ctx, p, "", LoginVia("okta"), queue, nil)
			if (err == nil) != tt.wantQueued {
				t.Fatalf("Login error %v, want error %v", err, !tt.wantQueued)
			}
			if len(out) != 2 || out[0].App != "confluence" || out[0].Err != nil || out[1].App != "jira" {
				t.Fatalf("outcomes %+v", out)
			}
			if jo := out[1]; jo.Queued != tt.wantQueued || !targets.IsTemporary(jo.Err) {
				t.Errorf("jira outcome %+v, want queued %v with the temporary error", jo, tt.wantQueued)
			}
			q, err := f.st.Queue(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if want := map[bool]int{true: 1, false: 0}[tt.wantQueued]; q.Depth != want {
				t.Errorf("queue depth %d, want %d", q.Depth, want)
			}
		})
	}
}

func TestRenameDoesNotUndoDeprovisioning(t *testing.T) {
	f := newFixture(t, atlassiantest.Jira)
	ctx := t.Context()
	f.apply(t, alice("jira", "developers"), false)
	f.bind(t, "sub-alice", "alice")
	if _, err := f.l.Remove(ctx, Removal{IdP: "okta", Subject: "sub-alice"}, scimOff); err != nil {
		t.Fatal(err)
	}
	// alice comes back under a new username: still deprovisioned.
	d := alice("jira", "developers")
	d.Username, d.PrevUsername = "alice.archer", "alice"
	f.resetCalls()
	if o := f.r.Apply(ctx, d, false); !errors.Is(o.Err, ErrDeprovisioned) || !o.Known {
		t.Fatalf("renamed login of a deprovisioned person: %+v", o)
	}
	if n := f.srv["jira"].Reads() + f.srv["jira"].Writes(); n != 0 {
		t.Fatalf("refused Apply made %d calls", n)
	}
	// The IdP reinstates her under both names: the rename and reactivation go through.
	if _, err := f.l.reinstate(ctx, SCIMPush("okta", "active"), SourceSCIM, "alice.archer", "alice"); err != nil {
		t.Fatal(err)
	}
	o := f.r.Apply(ctx, d, false)
	if o.Err != nil {
		t.Fatal(o.Err)
	}
	if u := f.user(t, "jira", "alice.archer"); !u.Active {
		t.Fatalf("alice.archer after reinstatement: %+v (changes %q)", u, o.Changes)
	}
}
