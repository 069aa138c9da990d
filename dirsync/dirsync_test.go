package dirsync

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/usherhq/usher/config"
	"github.com/usherhq/usher/directory"
	"github.com/usherhq/usher/jit"
	"github.com/usherhq/usher/providers"
	"github.com/usherhq/usher/store"
)

// seed is the usual directory: two engineers, a salesperson, someone
// outside the required staff group, a disabled leaver, a locked-out one.
func (e *env) seed() {
	e.dir.put("alice", directory.Active, "staff", "engineering")
	e.dir.put("bob", directory.Active, "staff", "engineering")
	e.dir.put("carol", directory.Active, "staff", "sales")
	e.dir.put("dave", directory.Active, "contractors")
	e.dir.put("erin", directory.Disabled, "staff")
	e.dir.put("frank", directory.Inactive, "staff")
}

func TestFullSyncCreatesPeopleBeforeTheirFirstLogin(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.seed()
	s := e.syncer(t, Config{Automatic: true, Scope: "v1"})
	res, err := s.Run(t.Context(), true, false)
	must(t, err)
	if res.Run != 1 || res.Kind != KindFull || !res.Complete || res.People != 6 {
		t.Fatalf("run %d kind %s complete %v people %d", res.Run, res.Kind, res.Complete, res.People)
	}
	if res.Created != 3 || res.Denied != 1 || res.Leavers != 1 || res.Skipped != 1 || res.Failed != 0 {
		t.Errorf("counts created %d denied %d leavers %d skipped %d failed %d:\n%s", res.Created, res.Denied, res.Leavers, res.Skipped, res.Failed, res.Table())
	}
	if res.Groups != 4 {
		t.Errorf("groups seen %d, want 4", res.Groups)
	}
	for name, want := range map[string][]string{
		"alice": {"jira-developers", "jira-software-users", "usher-users"},
		"bob":   {"jira-developers", "jira-software-users", "usher-users"},
		"carol": {"jira-software-users", "usher-users"},
	} {
		if got := e.groups(t, name); !slices.Equal(got, want) {
			t.Errorf("%s: jira groups %v, want %v", name, got, want)
		}
		u, _ := e.jira.User(name)
		if !u.Active || u.Email != name+"@corp.test" {
			t.Errorf("%s: %+v", name, u)
		}
	}
	for _, name := range []string{"dave", "erin", "frank"} {
		if _, ok := e.jira.User(name); ok {
			t.Errorf("%s was created", name)
		}
	}
	// Every admission is audited with the directory as its cause, and the
	// denied person who was never usher's leaves no trace.
	evs := e.audit(t, jit.ActDirAdmit)
	if len(evs) != 3 {
		t.Fatalf("%d admissions audited, want 3", len(evs))
	}
	for _, ev := range evs {
		if ev.Actor != "directory:corp" {
			t.Errorf("admission of %s audited as %q", ev.Username, ev.Actor)
		}
	}
	if n := len(e.audit(t, jit.ActSCIMDenied)); n != 0 {
		t.Errorf("%d denials audited for a person usher never knew", n)
	}
	if len(e.runs) != 1 || e.runs[0] != res {
		t.Errorf("OnRun called %d times", len(e.runs))
	}

	// Nothing changed: the next full sync makes no app call and writes no
	// audit entry.
	e.jira.ResetCalls()
	res, err = s.Run(t.Context(), true, false)
	must(t, err)
	if res.Run != 2 || res.Unchanged != 3 || res.Created+res.Updated != 0 {
		t.Errorf("second run %d: unchanged %d, created %d, updated %d", res.Run, res.Unchanged, res.Created, res.Updated)
	}
	if n := e.jira.Reads() + e.jira.Writes(); n != 0 {
		t.Errorf("an unchanged sync made %d app calls", n)
	}
	if n := len(e.audit(t, jit.ActDirAdmit)); n != 3 {
		t.Errorf("%d admissions audited after an unchanged sync, want still 3", n)
	}
	runs, err := s.Runs(t.Context())
	must(t, err)
	if len(runs) != 2 || runs[0].Run != 2 || runs[1].Run != 1 || runs[0].Items != nil {
		t.Errorf("runs %+v", runs)
	}
}

func TestDeltaMovesExactlyTheManagedMembership(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.seed()
	s := e.syncer(t, Config{Automatic: true, Scope: "v1"})
	_, err := s.Run(t.Context(), true, false)
	must(t, err)
	// An admin gave alice a group by hand; then the directory moves her
	// out of engineering.
	must(t, e.l.Apps["jira"].AddToGroup(t.Context(), "alice", "hand-picked"))
	e.dir.put("alice", directory.Active, "staff")
	e.dir.put("gina", directory.Active, "staff", "engineering") // a newcomer
	e.dir.mu.Lock()
	pulls := e.dir.pulls
	e.dir.mu.Unlock()

	res, err := s.Run(t.Context(), false, false)
	must(t, err)
	if res.Kind != KindDelta || res.People != 2 || res.Updated != 1 || res.Created != 1 {
		t.Fatalf("delta: kind %s people %d updated %d created %d\n%s", res.Kind, res.People, res.Updated, res.Created, res.Table())
	}
	if e.dir.pulls != pulls {
		t.Error("the delta pulled in full")
	}
	if got, want := e.groups(t, "alice"), []string{"hand-picked", "jira-software-users", "usher-users"}; !slices.Equal(got, want) {
		t.Errorf("alice: %v, want %v (only the managed membership goes)", got, want)
	}
	if got := e.groups(t, "gina"); !slices.Contains(got, "jira-developers") {
		t.Errorf("gina: %v", got)
	}
}

func TestDeltaWithoutMembershipsReadsThePerson(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.seed()
	s := e.syncer(t, Config{Automatic: true, Scope: "v1"})
	_, err := s.Run(t.Context(), true, false)
	must(t, err)
	e.dir.put("alice", directory.Active, "staff")
	e.dir.noGroups = true
	res, err := s.Run(t.Context(), false, false)
	must(t, err)
	if res.Updated != 1 || e.dir.reads != 1 {
		t.Fatalf("updated %d, person reads %d", res.Updated, e.dir.reads)
	}
	if got := e.groups(t, "alice"); slices.Contains(got, "jira-developers") {
		t.Errorf("alice kept jira-developers: %v", got)
	}
}

func TestExpiredDeltaTokenPullsInFull(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.seed()
	s := e.syncer(t, Config{Automatic: true, Scope: "v1"})
	_, err := s.Run(t.Context(), true, false)
	must(t, err)
	e.dir.put("gina", directory.Active, "staff")
	e.dir.expire()
	res, err := s.Run(t.Context(), false, false)
	must(t, err)
	if res.Kind != KindFull || !res.Complete || res.Created != 1 || res.People != 7 || !strings.Contains(res.Note, "expired") {
		t.Fatalf("kind %s complete %v created %d people %d note %q", res.Kind, res.Complete, res.Created, res.People, res.Note)
	}
	// The full pull left a fresh token: the next run is a delta again.
	res, err = s.Run(t.Context(), false, false)
	must(t, err)
	if res.Kind != KindDelta || res.People != 0 {
		t.Errorf("after the full pull: kind %s people %d", res.Kind, res.People)
	}
}

func TestWhenAFullPullIsDue(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.seed()
	s := e.syncer(t, Config{Automatic: true, Scope: "v1", FullEvery: 6 * time.Hour})
	kind := func() string {
		t.Helper()
		res, err := s.Run(t.Context(), false, false)
		must(t, err)
		return res.Kind
	}
	if k := kind(); k != KindFull {
		t.Errorf("first run %s: no token yet, want full", k)
	}
	if k := kind(); k != KindDelta {
		t.Errorf("second run %s, want delta", k)
	}
	e.clock.Advance(6 * time.Hour)
	if k := kind(); k != KindFull {
		t.Errorf("after full_every: %s, want full", k)
	}
	// A changed scope (the connector's block) discards the token.
	s2 := e.syncer(t, Config{Automatic: true, Scope: "v2", FullEvery: 6 * time.Hour})
	if res, err := s2.Run(t.Context(), false, false); err != nil || res.Kind != KindFull {
		t.Errorf("after a scope change: %v %v, want a full pull", res.Kind, err)
	}
}

func TestIncompletePullAppliesWhatItReadAndKeepsNoToken(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.seed()
	e.dir.failAfter = 1 // the first page (alice, bob) arrives, then 503s
	s := e.syncer(t, Config{Automatic: true, Scope: "v1"})
	res, err := s.Run(t.Context(), false, false)
	if !errors.Is(err, directory.ErrIncomplete) || res == nil || res.Complete || res.Error == "" {
		t.Fatalf("err %v, res %+v", err, res)
	}
	if res.Created != 2 {
		t.Errorf("created %d, want alice and bob from the first page", res.Created)
	}
	if _, _, err := e.st.Blob(t.Context(), "directory/corp/delta"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("an incomplete pull saved a delta state: %v", err)
	}
	runs, err := s.Runs(t.Context())
	must(t, err)
	if len(runs) != 1 || runs[0].Complete || runs[0].Error == "" {
		t.Errorf("the incomplete run is not recorded as such: %+v", runs)
	}
	// The next run pulls in full again, and completes.
	e.dir.failAfter = 0
	res, err = s.Run(t.Context(), false, false)
	must(t, err)
	if res.Kind != KindFull || !res.Complete || res.Created != 1 {
		t.Errorf("retry: kind %s complete %v created %d", res.Kind, res.Complete, res.Created)
	}
}

func TestFailingDeltaKeepsItsToken(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.seed()
	s := e.syncer(t, Config{Automatic: true, Scope: "v1"})
	_, err := s.Run(t.Context(), true, false)
	must(t, err)
	before, _, err := e.st.Blob(t.Context(), "directory/corp/delta")
	must(t, err)
	e.dir.put("gina", directory.Active, "staff")
	e.dir.failDelta = true
	if _, err := s.Run(t.Context(), false, false); !errors.Is(err, directory.ErrIncomplete) {
		t.Fatalf("err %v", err)
	}
	after, _, err := e.st.Blob(t.Context(), "directory/corp/delta")
	must(t, err)
	if string(before) != string(after) {
		t.Errorf("a failed delta moved the token: %s → %s", before, after)
	}
	e.dir.failDelta = false
	res, err := s.Run(t.Context(), false, false)
	must(t, err)
	if res.Kind != KindDelta || res.Created != 1 {
		t.Errorf("the next delta: kind %s created %d", res.Kind, res.Created)
	}
}

func TestSyncNeverRemovesLeavers(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.seed()
	s := e.syncer(t, Config{Automatic: true, Scope: "v1"})
	_, err := s.Run(t.Context(), true, false)
	must(t, err)
	e.dir.put("alice", directory.Disabled, "staff", "engineering")
	e.dir.remove("bob")
	res, err := s.Run(t.Context(), false, false)
	must(t, err)
	if res.Leavers != 2 {
		t.Errorf("leavers %d, want 2:\n%s", res.Leavers, res.Table())
	}
	for _, name := range []string{"alice", "bob"} {
		if u, _ := e.jira.User(name); !u.Active {
			t.Errorf("%s was deactivated by a sync", name)
		}
	}
	// A full pull where bob is missing does not remove him either.
	res, err = s.Run(t.Context(), true, false)
	must(t, err)
	if u, _ := e.jira.User("bob"); !u.Active || res.Complete != true {
		t.Errorf("bob after a full pull without him: active %v", u.Active)
	}
}

func TestNotAutomaticOnlyUpdatesKnownPeople(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.seed()
	// bob signed in once, before any sync.
	_, err := e.l.Admit(t.Context(), s0(e, "bob", "staff"), jit.LoginVia("okta"))
	must(t, err)
	s := e.syncer(t, Config{Scope: "v1"})
	res, err := s.Run(t.Context(), true, false)
	must(t, err)
	if res.Updated != 1 || res.Created != 0 {
		t.Errorf("updated %d created %d:\n%s", res.Updated, res.Created, res.Table())
	}
	if _, ok := e.jira.User("alice"); ok {
		t.Error("alice was created although the directory is not automatic")
	}
	if got := e.groups(t, "bob"); !slices.Contains(got, "jira-developers") {
		t.Errorf("bob: %v", got)
	}
}

// s0 is a login identity as the OIDC IdP would send it.
func s0(e *env, name string, groups ...string) providers.Identity {
	p := directory.Person{Subject: "sub-" + name, Username: name, Email: name + "@corp.test", DisplayName: "Person " + name, Groups: groups, GroupsComplete: true}
	return (&Syncer{cfg: Config{GroupClaim: "groups"}, idp: "okta"}).identity(p)
}

func TestDryRunChangesNothing(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.seed()
	s := e.syncer(t, Config{Automatic: true, Scope: "v1"})
	_, err := s.Run(t.Context(), true, false)
	must(t, err)
	// Since then: carol moved to engineering, harry is new, and ivan's
	// username is already bound to someone of another IdP.
	e.dir.put("carol", directory.Active, "staff", "engineering")
	e.dir.put("harry", directory.Active, "staff")
	_, err = e.st.Bind(t.Context(), store.Binding{IdP: "globex", Subject: "g-ivan", Username: "ivan"})
	must(t, err)
	e.dir.put("ivan", directory.Active, "staff")
	e.jira.ResetCalls()
	blobs, err := e.st.BlobKeys(t.Context(), "", true)
	must(t, err)
	events := len(e.audit(t, ""))

	res, err := s.Run(t.Context(), false, true)
	must(t, err)
	if !res.DryRun || res.Run != 0 || res.Kind != KindFull {
		t.Errorf("dry run %v run %d kind %s", res.DryRun, res.Run, res.Kind)
	}
	want := map[Outcome][]string{
		OutcomeCreated: {"harry"}, OutcomeUpdated: {"carol"}, OutcomeDenied: {"dave"},
		OutcomeRefused: {"ivan"}, OutcomeLeaver: {"erin"}, OutcomeSkipped: {"frank"},
	}
	got := map[Outcome][]string{}
	for _, it := range res.Items {
		got[it.Outcome] = append(got[it.Outcome], it.Username)
	}
	for o, names := range want {
		if !slices.Equal(got[o], names) {
			t.Errorf("%s: %v, want %v", o, got[o], names)
		}
	}
	if res.Unchanged != 2 {
		t.Errorf("unchanged %d, want alice and bob", res.Unchanged)
	}
	if n := e.jira.Reads() + e.jira.Writes(); n != 0 {
		t.Errorf("the dry run made %d app calls", n)
	}
	after, err := e.st.BlobKeys(t.Context(), "", true)
	must(t, err)
	if !slices.Equal(blobs, after) || len(e.audit(t, "")) != events {
		t.Errorf("the dry run wrote: blobs %v → %v, audit %d → %d", blobs, after, events, len(e.audit(t, "")))
	}
	if _, err := e.st.Binding(t.Context(), "okta", "sub-harry"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("the dry run bound harry: %v", err)
	}
	if !strings.Contains(res.Table(), "dry run: nothing changed") {
		t.Errorf("table:\n%s", res.Table())
	}
}

func TestReinstatesOnlyItsOwnRemovals(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.seed()
	s := e.syncer(t, Config{Automatic: true, Scope: "v1"})
	_, err := s.Run(t.Context(), true, false)
	must(t, err)
	// A sweep with this directory as its source took alice away; an
	// admin took bob away.
	_, err = e.l.Remove(t.Context(), jit.Removal{IdP: "okta", Subject: "sub-alice"}, jit.ByDirectory("corp", 7, "disabled in the directory"))
	must(t, err)
	_, err = e.l.Remove(t.Context(), jit.Removal{IdP: "okta", Subject: "sub-bob"}, jit.ByAdmin("root", "left"))
	must(t, err)
	res, err := s.Run(t.Context(), true, false)
	must(t, err)
	if u, _ := e.jira.User("alice"); !u.Active {
		t.Error("alice, active in the directory again, was not reinstated")
	}
	if u, _ := e.jira.User("bob"); u.Active {
		t.Error("bob, removed by an admin, was reactivated by a sync")
	}
	if res.Updated != 1 || res.Skipped != 2 {
		t.Errorf("updated %d skipped %d:\n%s", res.Updated, res.Skipped, res.Table())
	}
	if n := len(e.audit(t, jit.ActReinstate)); n != 1 {
		t.Errorf("%d reinstatements audited", n)
	}
}

func TestLeaseKeepsOneReplica(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.seed()
	ok, err := e.st.Lease(t.Context(), "directory:corp", "replica-b", time.Minute)
	if err != nil || !ok {
		t.Fatal(ok, err)
	}
	s := e.syncer(t, Config{Automatic: true})
	if _, err := s.Run(t.Context(), true, false); !errors.Is(err, ErrBusy) {
		t.Fatalf("err %v, want ErrBusy", err)
	}
	if e.dir.pulls != 0 {
		t.Error("pulled without the lease")
	}
	// A dry run needs no lease.
	if _, err := s.Run(t.Context(), true, true); err != nil {
		t.Errorf("dry run: %v", err)
	}
	must(t, e.st.ReleaseLease(t.Context(), "directory:corp", "replica-b"))
	if _, err := s.Run(t.Context(), true, false); err != nil {
		t.Errorf("after release: %v", err)
	}
	// Released after the run.
	if ok, err := e.st.Lease(t.Context(), "directory:corp", "replica-b", time.Minute); err != nil || !ok {
		t.Errorf("lease not released: %v %v", ok, err)
	}
}

func TestSyncPerson(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.seed()
	s := e.syncer(t, Config{Scope: "v1"}) // not automatic: an admin's ask still creates
	it, err := s.SyncPerson(t.Context(), "sub-alice", "admin:root")
	must(t, err)
	if it.Outcome != OutcomeCreated || it.Username != "alice" {
		t.Fatalf("%+v", it)
	}
	// Someone changed alice's groups in Jira by hand; the fast path would
	// not look, an admin's sync does.
	must(t, e.l.Apps["jira"].RemoveFromGroup(t.Context(), "alice", "jira-developers"))
	it, err = s.SyncPerson(t.Context(), "sub-alice", "admin:root")
	must(t, err)
	if it.Outcome != OutcomeUpdated || !slices.Contains(e.groups(t, "alice"), "jira-developers") {
		t.Errorf("%+v, groups %v", it, e.groups(t, "alice"))
	}
	evs := e.audit(t, jit.ActDirAdmit)
	if len(evs) == 0 || evs[0].Actor != "directory:corp" {
		t.Errorf("audit %+v", evs)
	}
	if it, err := s.SyncPerson(t.Context(), "sub-erin", "admin:root"); err != nil || it.Outcome != OutcomeLeaver {
		t.Errorf("erin: %+v %v", it, err)
	}
	if _, err := s.SyncPerson(t.Context(), "sub-nobody", "admin:root"); !errors.Is(err, ErrNotInDirectory) {
		t.Errorf("unknown subject: %v", err)
	}
}

func TestClaims(t *testing.T) {
	t.Parallel()
	s := &Syncer{idp: "entra", cfg: Config{GroupClaim: "http://schemas.microsoft.com/ws/2008/06/identity/claims/groups", GroupIDs: true,
		Claims: map[string]string{"http://schemas.xmlsoap.org/ws/2005/05/identity/claims/emailaddress": "email", "nameid": "username", "dept": "department", "gone": "nothing"}}}
	p := directory.Person{ID: "oid-1", Subject: "sub-1", Username: "a@x.test", Email: "a@x.test", DisplayName: "A", Groups: []string{"G"},
		GroupIDs: []string{"gid"}, GroupsComplete: true, Attributes: map[string][]string{"department": {"R&D"}, "email": {"native@x.test"}}}
	id := s.identity(p)
	for k, want := range map[string]string{
		"http://schemas.microsoft.com/ws/2008/06/identity/claims/groups":     "gid",
		"http://schemas.xmlsoap.org/ws/2005/05/identity/claims/emailaddress": "a@x.test",
		"nameid": "a@x.test", "dept": "R&D", "department": "R&D", "email": "native@x.test", "sub": "sub-1", "displayName": "A",
	} {
		if got := id.Claims[k]; len(got) != 1 || got[0] != want {
			t.Errorf("%s = %q, want %q", k, got, want)
		}
	}
	if _, ok := id.Claims["gone"]; ok {
		t.Error("a claim of an absent attribute was set")
	}
	if _, ok := id.Claims[jit.ClaimGroupsIncomplete]; ok {
		t.Error("complete groups marked incomplete")
	}
	p.GroupsComplete, p.Groups, p.GroupIDs = false, nil, nil
	if id := s.identity(p); id.Claim(jit.ClaimGroupsIncomplete) != "true" {
		t.Error("partial groups not marked")
	}
}

func TestCancelledRunStopsBetweenPages(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.seed()
	s := e.syncer(t, Config{Automatic: true, Scope: "v1"})
	ctx, cancel := context.WithCancel(t.Context())
	var pages int
	res, err := s.RunWith(ctx, Options{Full: true, Progress: func(p Progress) {
		pages++
		if p.Expected != 0 {
			t.Errorf("expected %d before any complete pull", p.Expected)
		}
		cancel()
	}})
	if !errors.Is(err, context.Canceled) || pages != 1 || res.People != 2 || res.Complete {
		t.Fatalf("err %v pages %d people %d complete %v", err, pages, res.People, res.Complete)
	}
	// The recorded run survives the cancellation.
	runs, err := s.Runs(t.Context())
	must(t, err)
	if len(runs) != 1 {
		t.Errorf("runs %+v", runs)
	}
	res, err = s.RunWith(t.Context(), Options{Full: true, Progress: func(p Progress) {
		if p.Expected != 0 {
			t.Errorf("expected %d: the only recorded full pull was incomplete", p.Expected)
		}
	}})
	must(t, err)
	_, err = s.RunWith(t.Context(), Options{Full: true, Progress: func(p Progress) {
		if p.Expected != res.People {
			t.Errorf("expected %d, want %d from the last complete pull", p.Expected, res.People)
		}
	}})
	must(t, err)
}

func TestManualProvisioningRecordsOnlyChanges(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	m := mapping
	m.Provisioning = jit.ProvisionManual
	mp, err := jit.Compile(m, jit.Scope{IdP: "okta", Apps: []string{"jira"}, Claims: config.ClaimDefaults{Username: "preferred_username", DisplayName: "name"}})
	must(t, err)
	e.l.Mappers["okta"] = mp
	e.dir.put("alice", directory.Active, "staff", "engineering")
	s := e.syncer(t, Config{Automatic: true, Scope: "v1"})
	res, err := s.Run(t.Context(), true, false)
	must(t, err)
	if res.Updated != 1 || len(e.audit(t, jit.ActPlanned)) != 1 {
		t.Fatalf("first sync: updated %d, planned %d", res.Updated, len(e.audit(t, jit.ActPlanned)))
	}
	if _, ok := e.jira.User("alice"); ok {
		t.Error("manual provisioning created alice in jira")
	}
	res, err = s.Run(t.Context(), true, false)
	must(t, err)
	if res.Unchanged != 1 || len(e.audit(t, jit.ActPlanned)) != 1 {
		t.Errorf("second sync: unchanged %d, planned %d; want the recorded profile left as is", res.Unchanged, len(e.audit(t, jit.ActPlanned)))
	}
	e.dir.put("alice", directory.Active, "staff")
	res, err = s.Run(t.Context(), true, false)
	must(t, err)
	if res.Updated != 1 || len(e.audit(t, jit.ActPlanned)) != 2 {
		t.Errorf("after a change: updated %d, planned %d", res.Updated, len(e.audit(t, jit.ActPlanned)))
	}
}

func TestSyncPersonAppliesManualProvisioning(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	m := mapping
	m.Provisioning = jit.ProvisionManual
	mp, err := jit.Compile(m, jit.Scope{IdP: "okta", Apps: []string{"jira"}, Claims: config.ClaimDefaults{Username: "preferred_username", DisplayName: "name"}})
	must(t, err)
	e.l.Mappers["okta"] = mp
	e.dir.put("alice", directory.Active, "staff", "engineering")
	s := e.syncer(t, Config{Scope: "v1"})
	it, err := s.SyncPerson(t.Context(), "sub-alice", "admin:root")
	must(t, err)
	if got := e.groups(t, "alice"); !slices.Contains(got, "jira-developers") || it.Outcome != OutcomeUpdated {
		t.Errorf("%+v; jira groups %v", it, got)
	}
}
