package jit

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/usherhq/usher/config"
	"github.com/usherhq/usher/providers"
	"github.com/usherhq/usher/store"
	"github.com/usherhq/usher/targets/atlassiantest"
)

// withMapping gives the fixture's lifecycle an okta mapping: Engineering
// → developers in every app, require the Staff group, provisioning mode
// as given.
func (f *fixture) withMapping(t *testing.T, mode string) { f.withPolicy(t, mode, "") }

// withPolicy is withMapping with an adoption policy.
func (f *fixture) withPolicy(t *testing.T, mode, adoption string) {
	t.Helper()
	apps := make([]string, 0, len(f.dir))
	for app := range f.dir {
		apps = append(apps, app)
	}
	m := config.Mapping{
		Provisioning: mode,
		Groups: config.GroupMapping{Map: []config.GroupMap{
			{IdPGroup: "Engineering", Groups: config.AppGroups{"*": {"developers"}}},
		}},
		Access: config.Access{RequireGroups: []string{"Staff"}},
	}
	mp, err := Compile(m, Scope{IdP: "okta", Claims: claimsOf["oidc"], Apps: apps, Privileged: testPrivileged, Adoption: adoption})
	if err != nil {
		t.Fatal(err)
	}
	f.l.Mappers["okta"] = mp
}

// handMade adds an account to jira that nobody made through usher.
func (f *fixture) handMade(name, email string) {
	f.srv["jira"].AddUser(atlassiantest.User{Name: name, DisplayName: "Hand Made", Email: email, Active: true})
}

func person(subject, username string, groups ...string) providers.Identity {
	return providers.Identity{IdP: "okta", Subject: subject, Claims: map[string][]string{
		"preferred_username": {username}, "email": {username + "@acme.test"}, "name": {strings.ToUpper(username[:1]) + username[1:]},
		"groups": append([]string{"Staff"}, groups...),
	}}
}

func (f *fixture) events(t *testing.T, action Action) []store.Event {
	t.Helper()
	evs, err := f.st.Audit(t.Context(), store.AuditFilter{Action: string(action), Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	return evs
}

// failingStore stands in for a database that does not answer.
type failingStore struct{ LifecycleStore }

func (failingStore) Binding(context.Context, string, string) (store.Binding, error) {
	return store.Binding{}, fmt.Errorf("postgres: %w", store.ErrUnavailable)
}

func (failingStore) Recorded(context.Context, string, string, string, ...string) (store.Recorded, error) {
	return store.Recorded{}, fmt.Errorf("postgres: %w", store.ErrUnavailable)
}

func TestAdmit(t *testing.T) {
	tests := []struct {
		name     string
		mode     string
		adoption string
		cause    Cause
		id       providers.Identity
		// setup prepares the world before the admission.
		setup func(t *testing.T, f *fixture)
		// wantKind is the refusal, 0 for an admission.
		wantKind   RefusalKind
		wantApps   []string // the admission's app list (nil: every app)
		wantQueued []string
		wantAudit  Action
		// check inspects the world afterwards.
		check func(t *testing.T, f *fixture, a *Admission)
	}{
		{
			name: "new person", cause: LoginVia("okta"), id: person("s1", "alice", "Engineering"), wantAudit: ActLogin,
			check: func(t *testing.T, f *fixture, a *Admission) {
				if u := f.user(t, "jira", "alice"); !u.Active || !has(u.Groups, "developers") {
					t.Errorf("jira user %+v", u)
				}
				if b, err := f.st.Binding(t.Context(), "okta", "s1"); err != nil || b.Username != "alice" || b.LastLogin.IsZero() {
					t.Errorf("binding %+v, %v", b, err)
				}
				if a.Known {
					t.Error("a first admission says the person was known")
				}
			},
		},
		{
			name: "denied by the access policy", cause: LoginVia("okta"),
			id:       providers.Identity{IdP: "okta", Subject: "s1", Claims: map[string][]string{"preferred_username": {"alice"}}},
			wantKind: Denied, wantAudit: ActLoginDenied,
			check: func(t *testing.T, f *fixture, _ *Admission) {
				if _, err := f.st.Binding(t.Context(), "okta", "s1"); !errors.Is(err, store.ErrNotFound) {
					t.Errorf("a denied person was bound: %v", err)
				}
				if _, ok := f.srv["jira"].User("alice"); ok {
					t.Error("a denied person was provisioned")
				}
			},
		},
		{
			name: "username owned by another identity", cause: LoginVia("okta"), id: person("s2", "alice"),
			setup:    func(t *testing.T, f *fixture) { f.bind(t, "s1", "alice") },
			wantKind: UsernameTaken, wantAudit: ActLoginRefused,
		},
		{
			name: "manual provisioning", mode: ProvisionManual, cause: LoginVia("okta"), id: person("s1", "alice", "Engineering"),
			wantAudit: ActPlanned,
			check: func(t *testing.T, f *fixture, _ *Admission) {
				if _, ok := f.srv["jira"].User("alice"); ok || f.srv["jira"].Writes() != 0 {
					t.Error("manual mode wrote to the app")
				}
				if _, _, err := f.st.Profile(t.Context(), "okta", "s1"); err != nil {
					t.Errorf("profile not recorded for the admin's sync: %v", err)
				}
			},
		},
		{
			name: "app down, known person", cause: LoginVia("okta"), id: person("s1", "alice", "Engineering"),
			setup: func(t *testing.T, f *fixture) {
				if _, err := f.l.Admit(t.Context(), person("s1", "alice"), LoginVia("okta")); err != nil {
					t.Fatal(err)
				}
				f.srv["jira"].SetDown(true)
			},
			wantQueued: []string{"jira"}, wantAudit: ActLogin,
			check: func(t *testing.T, f *fixture, a *Admission) {
				if q := f.queue(t); q.Depth != 1 {
					t.Errorf("queue depth %d, want 1", q.Depth)
				}
			},
		},
		{
			name: "app down, new person", cause: LoginVia("okta"), id: person("s1", "alice"),
			setup:    func(t *testing.T, f *fixture) { f.srv["jira"].SetDown(true) },
			wantKind: ProvisioningFailed, wantAudit: ActLoginFailed,
			check: func(t *testing.T, f *fixture, _ *Admission) {
				if q := f.queue(t); q.Depth != 0 {
					t.Errorf("a refused login queued %d changes", q.Depth)
				}
				// A new person is checked in every app before any account
				// is made: with jira down, confluence gets no stray account.
				if _, ok := f.srv["confluence"].User("alice"); ok || f.srv["confluence"].Writes() != 0 {
					t.Error("an account was made in confluence for a login that failed")
				}
				if _, err := f.st.Binding(t.Context(), "okta", "s1"); !errors.Is(err, store.ErrNotFound) {
					t.Errorf("a failed first login bound the identity: %v", err)
				}
			},
		},
		{
			name: "removed everywhere", cause: LoginVia("okta"), id: person("s1", "alice"),
			setup: func(t *testing.T, f *fixture) {
				if _, err := f.l.Admit(t.Context(), person("s1", "alice"), LoginVia("okta")); err != nil {
					t.Fatal(err)
				}
				if _, err := f.l.Remove(t.Context(), Removal{IdP: "okta", Subject: "s1"}, ByAdmin("ada", "left")); err != nil {
					t.Fatal(err)
				}
			},
			wantKind: AccessRemoved, wantAudit: ActLoginRefused,
			check: func(t *testing.T, f *fixture, _ *Admission) {
				if f.user(t, "jira", "alice").Active {
					t.Error("a login undid the removal")
				}
			},
		},
		{
			name: "removed from one app", cause: LoginVia("okta"), id: person("s1", "alice"),
			setup: func(t *testing.T, f *fixture) {
				if _, err := f.l.Admit(t.Context(), person("s1", "alice"), LoginVia("okta")); err != nil {
					t.Fatal(err)
				}
				if _, err := f.l.Remove(t.Context(), Removal{IdP: "okta", Subject: "s1", Apps: []string{"jira"}}, ByAdmin("ada", "no jira")); err != nil {
					t.Fatal(err)
				}
			},
			wantApps: []string{"confluence"}, wantAudit: ActLogin,
		},
		{
			name: "SCIM push reinstates what SCIM removed", cause: SCIMPush("okta", "active"), id: person("s1", "alice"),
			setup: func(t *testing.T, f *fixture) {
				if _, err := f.l.Admit(t.Context(), person("s1", "alice"), LoginVia("okta")); err != nil {
					t.Fatal(err)
				}
				if _, err := f.l.Remove(t.Context(), Removal{IdP: "okta", Subject: "s1"}, scimOff); err != nil {
					t.Fatal(err)
				}
			},
			wantAudit: ActSCIMPush,
			check: func(t *testing.T, f *fixture, _ *Admission) {
				if !f.user(t, "jira", "alice").Active || f.state(t, "jira", "alice").Deprovisioned {
					t.Error("not reactivated")
				}
				if evs := f.events(t, ActReinstate); len(evs) != 2 {
					t.Errorf("%d reinstatements audited, want one per app", len(evs))
				}
			},
		},
		{
			name: "SCIM push does not undo a sweep", cause: SCIMPush("okta", "active"), id: person("s1", "alice"),
			setup: func(t *testing.T, f *fixture) {
				if _, err := f.l.Admit(t.Context(), person("s1", "alice"), LoginVia("okta")); err != nil {
					t.Fatal(err)
				}
				if _, err := f.l.Remove(t.Context(), Removal{IdP: "okta", Subject: "s1"}, BySweep("leavers", 1, "inactive")); err != nil {
					t.Fatal(err)
				}
			},
			wantKind: AccessRemoved, wantAudit: ActSCIMRefused,
		},
		{
			name: "SCIM push of a new person while an app is down", cause: SCIMPush("okta", "created"), id: person("s1", "alice"),
			setup:      func(t *testing.T, f *fixture) { f.srv["jira"].SetDown(true) },
			wantQueued: []string{"jira"}, wantAudit: ActSCIMPush,
			check: func(t *testing.T, f *fixture, _ *Admission) {
				if _, err := f.st.Binding(t.Context(), "okta", "s1"); err != nil {
					t.Errorf("not bound: %v", err)
				}
			},
		},
		{
			name: "existing account, same verified e-mail: adopted", cause: LoginVia("okta"), id: person("s1", "alice"),
			setup:     func(t *testing.T, f *fixture) { f.handMade("alice", "ALICE@acme.test") },
			wantAudit: ActLogin,
			check: func(t *testing.T, f *fixture, _ *Admission) {
				if u := f.user(t, "jira", "alice"); u.DisplayName != "Alice" {
					t.Errorf("adopted account %+v not brought in line", u)
				}
			},
		},
		{
			// Confluence's REST API does not tell an account's e-mail, so
			// verified_email has nothing to compare: the sign-in is
			// refused (usher check warns of it), and always adopts.
			name: "existing Confluence account, verified_email: refused", cause: LoginVia("okta"), id: person("s1", "alice"),
			setup: func(t *testing.T, f *fixture) {
				f.srv["confluence"].AddUser(atlassiantest.User{Name: "alice", DisplayName: "Hand Made", Email: "alice@acme.test", Active: true})
			},
			wantKind: AdoptionRefused, wantAudit: ActLoginRefused,
		},
		{
			name: "existing Confluence account, always: adopted", adoption: config.AdoptAlways, cause: LoginVia("okta"), id: person("s1", "alice"),
			setup: func(t *testing.T, f *fixture) {
				f.srv["confluence"].AddUser(atlassiantest.User{Name: "alice", DisplayName: "Hand Made", Email: "alice@acme.test", Active: true})
			},
			wantAudit: ActLogin,
		},
		{
			name: "existing account, other e-mail: refused", cause: LoginVia("okta"), id: person("s1", "localadmin"),
			setup:    func(t *testing.T, f *fixture) { f.handMade("localadmin", "ops@acme.test") },
			wantKind: AdoptionRefused, wantAudit: ActLoginRefused,
			check: func(t *testing.T, f *fixture, _ *Admission) {
				if u := f.user(t, "jira", "localadmin"); u.DisplayName != "Hand Made" || u.Email != "ops@acme.test" || f.srv["jira"].Writes() != 0 {
					t.Errorf("the hand-made account was touched: %+v", u)
				}
				if _, err := f.st.Binding(t.Context(), "okta", "s1"); !errors.Is(err, store.ErrNotFound) {
					t.Errorf("the refused identity was bound: %v", err)
				}
			},
		},
		{
			name: "existing account, policy never", adoption: config.AdoptNever, cause: LoginVia("okta"), id: person("s1", "alice"),
			setup:    func(t *testing.T, f *fixture) { f.handMade("alice", "alice@acme.test") },
			wantKind: AdoptionRefused,
		},
		{
			name: "existing account, policy always", adoption: config.AdoptAlways, cause: LoginVia("okta"), id: person("s1", "alice"),
			setup:     func(t *testing.T, f *fixture) { f.handMade("alice", "someone@else.test") },
			wantAudit: ActLogin,
		},
		{
			name: "existing account linked by an admin", adoption: config.AdoptNever, cause: LoginVia("okta"), id: person("s1", "alice"),
			setup: func(t *testing.T, f *fixture) {
				f.handMade("alice", "someone@else.test")
				if err := f.l.Link(t.Context(), "okta", "s1", "alice", ByAdmin("ada", "")); err != nil {
					t.Fatal(err)
				}
			},
			wantAudit: ActLogin,
			check: func(t *testing.T, f *fixture, _ *Admission) {
				if evs := f.events(t, ActLink); len(evs) != 1 || evs[0].Actor != "admin:ada" {
					t.Errorf("link audit %+v", evs)
				}
			},
		},
		{
			name: "existing account, unverified e-mail: refused", cause: LoginVia("okta"),
			id: providers.Identity{IdP: "okta", Subject: "s1", Claims: map[string][]string{
				"preferred_username": {"alice"}, "unverified_email": {"alice@acme.test"}, "groups": {"Staff"}}},
			setup:    func(t *testing.T, f *fixture) { f.handMade("alice", "alice@acme.test") },
			wantKind: AdoptionRefused,
		},
		{
			name: "SCIM push while the app is down, account exists: checked when the app is back", cause: SCIMPush("okta", "created"),
			id: person("s1", "localadmin"),
			setup: func(t *testing.T, f *fixture) {
				f.handMade("localadmin", "ops@acme.test")
				f.srv["jira"].SetDown(true)
			},
			wantQueued: []string{"jira"}, wantAudit: ActSCIMPush,
			check: func(t *testing.T, f *fixture, _ *Admission) {
				f.srv["jira"].SetDown(false)
				f.drain(t, f.worker("w1"))
				if u := f.user(t, "jira", "localadmin"); u.DisplayName != "Hand Made" || u.Email != "ops@acme.test" {
					t.Errorf("the queued change took over the hand-made account: %+v", u)
				}
				if _, err := f.st.AppState(t.Context(), "jira", "localadmin"); !errors.Is(err, store.ErrNotFound) {
					t.Errorf("the hand-made account is recorded as usher's: %v", err)
				}
			},
		},
		{
			name: "store unavailable", cause: LoginVia("okta"), id: person("s1", "alice"),
			setup:    func(t *testing.T, f *fixture) { f.l.Store = failingStore{f.l.Store} },
			wantKind: StoreUnavailable,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, atlassiantest.Jira, atlassiantest.Confluence)
			f.withPolicy(t, tt.mode, tt.adoption)
			if tt.setup != nil {
				tt.setup(t, f)
			}
			f.resetCalls()
			a, err := f.l.Admit(t.Context(), tt.id, tt.cause)
			if tt.wantKind != 0 {
				ae := AdmitErrorOf(err)
				if ae == nil || ae.Kind != tt.wantKind {
					t.Fatalf("Admit = %+v, %v; want a %s refusal", a, err, tt.wantKind)
				}
			} else {
				if err != nil {
					t.Fatalf("Admit: %v", err)
				}
				if !slices.Equal(a.Apps, tt.wantApps) || !slices.Equal(a.Queued, tt.wantQueued) {
					t.Errorf("apps %q queued %q, want %q and %q", a.Apps, a.Queued, tt.wantApps, tt.wantQueued)
				}
			}
			if tt.wantAudit != "" {
				evs := f.events(t, tt.wantAudit)
				if len(evs) == 0 || evs[0].Subject != tt.id.Subject || evs[0].Actor != tt.cause.ActorLabel() {
					t.Errorf("audit %s: %+v", tt.wantAudit, evs)
				}
			}
			if tt.check != nil {
				tt.check(t, f, a)
			}
		})
	}
}

func TestRemove(t *testing.T) {
	tests := []struct {
		name    string
		rm      Removal
		cause   Cause
		setup   func(t *testing.T, f *fixture)
		wantErr error
		check   func(t *testing.T, f *fixture, outs []RemoveOutcome)
	}{
		{
			name: "deactivate everywhere", rm: Removal{IdP: "okta", Subject: "s1"}, cause: scimOff,
			check: func(t *testing.T, f *fixture, outs []RemoveOutcome) {
				for _, app := range []string{"confluence", "jira"} {
					st := f.state(t, app, "alice")
					if f.user(t, app, "alice").Active || !st.Deprovisioned || st.DeprovisionedSource != "scim" || st.DeprovisionedAction != "deactivate" {
						t.Errorf("%s: state %+v", app, st)
					}
				}
				if len(outs) != 2 || !outs[0].Changed || !outs[1].Changed {
					t.Errorf("outcomes %+v", outs)
				}
			},
		},
		{
			name: "nobody bound", rm: Removal{IdP: "okta", Subject: "s9"}, cause: scimOff, wantErr: ErrUnbound,
			check: func(t *testing.T, f *fixture, _ []RemoveOutcome) {
				if evs := f.events(t, ActDeprovision); len(evs) != 1 || evs[0].Outcome != string(ResultUnbound) {
					t.Errorf("audit %+v", evs)
				}
				if len(f.sessions.revoked()) != 0 {
					t.Error("revoked sessions of nobody")
				}
			},
		},
		{
			name: "app down: decided, revoked, queued", rm: Removal{IdP: "okta", Subject: "s1"}, cause: BySweep("leavers", 2, "inactive"),
			setup: func(t *testing.T, f *fixture) { f.srv["jira"].SetDown(true) },
			check: func(t *testing.T, f *fixture, outs []RemoveOutcome) {
				if !f.state(t, "jira", "alice").Deprovisioned || f.queue(t).Depth != 1 || outs[1].App != "jira" || !outs[1].Queued {
					t.Errorf("outcomes %+v, queue %d", outs, f.queue(t).Depth)
				}
				if !slices.Equal(f.sessions.revoked(), []string{"okta/s1"}) {
					t.Errorf("revoked %q", f.sessions.revoked())
				}
			},
		},
		{
			name: "managed groups only", rm: Removal{IdP: "okta", Subject: "s1", Apps: []string{"jira"}, Action: RemoveManagedGroups}, cause: ByAdmin("ada", ""),
			setup: func(t *testing.T, f *fixture) {
				if err := f.dir["jira"].AddToGroup(t.Context(), "alice", "support"); err != nil { // by hand
					t.Fatal(err)
				}
			},
			check: func(t *testing.T, f *fixture, _ []RemoveOutcome) {
				u := f.user(t, "jira", "alice")
				if !u.Active || has(u.Groups, "developers") || !has(u.Groups, "support") {
					t.Errorf("jira user %+v: want active, in support (by hand), not in developers (usher's)", u)
				}
				if !f.user(t, "confluence", "alice").Active || has(f.managed(t, "jira", "alice"), "developers") {
					t.Error("touched confluence, or still manages developers")
				}
			},
		},
		{
			name: "licence group", rm: Removal{IdP: "okta", Subject: "s1", Apps: []string{"jira"}, Action: RemoveLicenceGroup,
				LicenceGroups: map[string]string{"jira": "developers"}}, cause: BySweep("seats", 1, "inactive"),
			check: func(t *testing.T, f *fixture, _ []RemoveOutcome) {
				if has(f.user(t, "jira", "alice").Groups, "developers") {
					t.Error("still in the licence group")
				}
			},
		},
		{
			name: "licence group not configured", rm: Removal{IdP: "okta", Subject: "s1", Apps: []string{"jira"}, Action: RemoveLicenceGroup},
			cause: BySweep("seats", 1, "inactive"), wantErr: errAny,
			check: func(t *testing.T, f *fixture, _ []RemoveOutcome) {
				if f.state(t, "jira", "alice").Deprovisioned {
					t.Error("a removal that cannot be done was recorded")
				}
			},
		},
		{
			name: "not provisioned in an app", rm: Removal{IdP: "okta", Subject: "s1", Apps: []string{"jira"}}, cause: scimOff,
			setup: func(t *testing.T, f *fixture) {
				f.bind(t, "s2", "bob")
			},
			check: func(t *testing.T, f *fixture, outs []RemoveOutcome) {
				outs2, err := f.l.Remove(t.Context(), Removal{IdP: "okta", Subject: "s2"}, scimOff)
				if err != nil || len(outs2) != 2 || outs2[0].Skipped == "" || outs2[1].Skipped == "" {
					t.Errorf("bob, never provisioned: %+v, %v", outs2, err)
				}
			},
		},
		{
			name: "dry run", rm: Removal{IdP: "okta", Subject: "s1", DryRun: true}, cause: BySweep("leavers", 0, "inactive"),
			check: func(t *testing.T, f *fixture, outs []RemoveOutcome) {
				if f.state(t, "jira", "alice").Deprovisioned || !f.user(t, "jira", "alice").Active || len(f.sessions.revoked()) != 0 || f.srv["jira"].Writes() != 0 {
					t.Error("a dry run changed something")
				}
				if len(outs) != 2 {
					t.Errorf("outcomes %+v", outs)
				}
			},
		},
		{
			name: "twice: the second changes nothing", rm: Removal{IdP: "okta", Subject: "s1"}, cause: scimOff,
			check: func(t *testing.T, f *fixture, _ []RemoveOutcome) {
				f.resetCalls()
				if _, err := f.l.Remove(t.Context(), Removal{IdP: "okta", Subject: "s1"}, scimOff); err != nil {
					t.Fatal(err)
				}
				if w := f.srv["jira"].Writes() + f.srv["confluence"].Writes(); w != 0 {
					t.Errorf("second removal wrote %d times", w)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, atlassiantest.Jira, atlassiantest.Confluence)
			f.withMapping(t, "")
			if _, err := f.l.Admit(t.Context(), person("s1", "alice", "Engineering"), LoginVia("okta")); err != nil {
				t.Fatal(err)
			}
			if tt.setup != nil {
				tt.setup(t, f)
			}
			f.resetCalls()
			outs, err := f.l.Remove(t.Context(), tt.rm, tt.cause)
			switch {
			case tt.wantErr == errAny && err == nil, tt.wantErr == nil && err != nil, tt.wantErr != nil && tt.wantErr != errAny && !errors.Is(err, tt.wantErr):
				t.Fatalf("Remove = %+v, %v; want %v", outs, err, tt.wantErr)
			}
			if tt.check != nil {
				tt.check(t, f, outs)
			}
		})
	}
}

// errAny stands for "some error" in table tests.
var errAny = errors.New("any error")

// A login racing a removal of the same person: whatever the
// interleaving, the removal wins. Each round starts from an account
// someone deactivated by hand (so the login reactivates it) and a group
// the login adds; the removal deactivates (or takes the managed groups
// away) at the same moment.
func TestLoginRacingRemovalNeverUndoesIt(t *testing.T) {
	f := newFixture(t, atlassiantest.Jira)
	f.withMapping(t, "")
	f.srv["jira"].SetLatency(200 * time.Microsecond)
	f.srv["jira"].AddGroup("developers")
	ctx := t.Context()
	const rounds = 60
	for i := range rounds {
		name := fmt.Sprintf("racer%d", i)
		sub := "sub-" + name
		if _, err := f.l.Admit(ctx, person(sub, name), LoginVia("okta")); err != nil {
			t.Fatal(err)
		}
		u := f.user(t, "jira", name)
		u.Active = false // deactivated by hand: not usher's decision
		f.srv["jira"].AddUser(u)
		f.clock.Advance(2 * f.l.FastPath)

		action := Deactivate
		if i%2 == 1 {
			action = RemoveManagedGroups
		}
		var wg sync.WaitGroup
		wg.Add(2)
		go func() {
			defer wg.Done()
			_, _ = f.l.Admit(ctx, person(sub, name, "Engineering"), LoginVia("okta"))
		}()
		go func() {
			defer wg.Done()
			if i%3 == 0 {
				time.Sleep(time.Duration(i%5) * 100 * time.Microsecond)
			}
			if _, err := f.l.Remove(ctx, Removal{IdP: "okta", Subject: sub, Action: action}, BySweep("leavers", int64(i), "inactive")); err != nil {
				t.Error(err)
			}
		}()
		wg.Wait()
		u = f.user(t, "jira", name)
		switch action {
		case Deactivate:
			if u.Active {
				t.Fatalf("round %d: the login reactivated %s after the removal deactivated them", i, name)
			}
		case RemoveManagedGroups:
			if has(u.Groups, "developers") {
				t.Fatalf("round %d: the login's group survived the removal of managed groups: %q", i, u.Groups)
			}
		}
		if !f.state(t, "jira", name).Deprovisioned {
			t.Fatalf("round %d: the decision was lost", i)
		}
	}
}

// A silent app cannot hold a login: past the deadline a known person gets
// in with the change queued, a new person gets the clear refusal, and
// neither waits much longer than the deadline.
func TestAdmitWithASilentApp(t *testing.T) {
	f := newFixture(t, atlassiantest.Jira, atlassiantest.Confluence)
	f.withMapping(t, "")
	ctx := t.Context()
	if _, err := f.l.Admit(ctx, person("s1", "alice"), LoginVia("okta")); err != nil {
		t.Fatal(err)
	}
	f.clock.Advance(2 * f.l.FastPath)
	f.l.Deadline = 300 * time.Millisecond
	f.srv["jira"].SetLatency(time.Minute)

	start := time.Now()
	a, err := f.l.Admit(ctx, person("s1", "alice", "Engineering"), LoginVia("okta"))
	if err != nil {
		t.Fatalf("known person: %v", err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("known person waited %v for a silent app (deadline 300ms)", took)
	}
	if !slices.Equal(a.Queued, []string{"jira"}) || f.queue(t).Depth != 1 {
		t.Errorf("queued %q, depth %d; want jira's change queued", a.Queued, f.queue(t).Depth)
	}
	if !has(f.user(t, "confluence", "alice").Groups, "developers") {
		t.Error("the app that answered did not get the change")
	}

	start = time.Now()
	_, err = f.l.Admit(ctx, person("s2", "bob"), LoginVia("okta"))
	if ae := AdmitErrorOf(err); ae == nil || ae.Kind != ProvisioningFailed {
		t.Fatalf("new person with a silent app: %v, want ProvisioningFailed", err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("new person waited %v", took)
	}
}

// Concurrent logins of one person make one change and one audit entry
// per change, not one each.
func TestConcurrentLoginsChangeOnce(t *testing.T) {
	f := newFixture(t, atlassiantest.Jira)
	f.withMapping(t, "")
	ctx := t.Context()
	if _, err := f.l.Admit(ctx, person("s1", "alice"), LoginVia("okta")); err != nil {
		t.Fatal(err)
	}
	f.srv["jira"].SetLatency(2 * time.Millisecond)
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() {
			if _, err := f.l.Admit(ctx, person("s1", "alice", "Engineering"), LoginVia("okta")); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if n := len(f.events(t, ActGroupAdd)); n != 1 {
		t.Errorf("%d group additions audited for one real one", n)
	}
	if got := f.user(t, "jira", "alice").Groups; !has(got, "developers") {
		t.Errorf("groups %q", got)
	}
}
