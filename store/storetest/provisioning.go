package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/usherhq/usher/store"
)

// suiteClock is the store's injected clock in the provisioning and
// coordination suites: tests move it instead of sleeping.
type suiteClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *suiteClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *suiteClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

type clockedTest[S any] struct {
	name string
	fn   func(t *testing.T, s S, clock *suiteClock)
}

// runClocked runs each test on a fresh store whose clock starts at base,
// closing the store afterwards when it can be closed.
func runClocked[S any](t *testing.T, open func(t *testing.T, now func() time.Time) S, tests []clockedTest[S]) {
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel() // every test has a database of its own
			clock := &suiteClock{now: base}
			s := open(t, clock.Now)
			t.Cleanup(func() {
				if c, ok := any(s).(io.Closer); ok {
					if err := c.Close(); err != nil {
						t.Errorf("close: %v", err)
					}
				}
			})
			tt.fn(t, s, clock)
		})
	}
}

// RunProvisioning runs the store.Provisioning conformance suite as
// subtests. open must return a store on a fresh, empty, migrated database
// that takes its time from now; the suite closes it if it is an io.Closer.
func RunProvisioning(t *testing.T, open func(t *testing.T, now func() time.Time) store.Provisioning) {
	runClocked(t, open, []clockedTest[store.Provisioning]{
		{"AppState", testAppState},
		{"Recorded", testRecorded},
		{"RecordSyncKeepsTheMark", testRecordSync},
		{"AppStatesPaging", testAppStatesPaging},
		{"Managed", testManaged},
		{"EnqueueDedup", testEnqueueDedup},
		{"ClaimOrder", testClaimOrder},
		{"CompleteRetry", testCompleteRetry},
		{"CompleteAfterReenqueue", testCompleteAfterReenqueue},
		{"QueueStats", testQueueStats},
		{"IntendAndDeadOwners", testIntend},
		{"WakeAnApp", testWake},
		{"ConcurrentClaim", testConcurrentClaim},
		{"ProvisioningContextCanceled", testProvisioningCanceled},
		{"Profile", testProfile},
	})
}

func testProfile(t *testing.T, s store.Provisioning, _ *suiteClock) {
	ctx := context.Background()
	if _, _, err := s.Profile(ctx, "okta", "00u1"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("missing profile: err = %v, want ErrNotFound", err)
	}
	at := base.Add(time.Minute)
	if err := s.PutProfile(ctx, "okta", "00u1", []byte(`{"v":1}`), at); err != nil {
		t.Fatal(err)
	}
	if err := s.PutProfile(ctx, "okta", "00u1", []byte(`{"v":2}`), at.Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	if err := s.PutProfile(ctx, "entra", "00u1", []byte(`{"other":true}`), at); err != nil {
		t.Fatal(err)
	}
	p, when, err := s.Profile(ctx, "okta", "00u1")
	if err != nil || string(p) != `{"v":2}` || !when.Equal(msOrZero(at.Add(time.Second))) || when.Location() != time.UTC {
		t.Fatalf("Profile = %s, %v, %v", p, when, err)
	}
	if err := s.PutProfile(ctx, "", "x", nil, at); err == nil {
		t.Fatal("PutProfile without idp succeeded")
	}
}

func sameAppState(t *testing.T, what string, got, want store.AppState) {
	t.Helper()
	want.SyncedAt, want.DeprovisionedAt = msOrZero(want.SyncedAt), msOrZero(want.DeprovisionedAt)
	if got.App != want.App || got.Username != want.Username || got.IdP != want.IdP ||
		got.Subject != want.Subject || got.Hash != want.Hash || !got.SyncedAt.Equal(want.SyncedAt) ||
		got.Deprovisioned != want.Deprovisioned || !got.DeprovisionedAt.Equal(want.DeprovisionedAt) ||
		got.DeprovisionedReason != want.DeprovisionedReason || got.DeprovisionedSource != want.DeprovisionedSource ||
		got.DeprovisionedActor != want.DeprovisionedActor || got.DeprovisionedRun != want.DeprovisionedRun ||
		got.DeprovisionedAction != want.DeprovisionedAction {
		t.Fatalf("%s:\n got %+v\nwant %+v", what, got, want)
	}
	inUTC(t, what, got.SyncedAt, got.DeprovisionedAt)
}

func msOrZero(t time.Time) time.Time {
	if t.IsZero() {
		return t
	}
	return ms(t)
}

func inUTC(t *testing.T, what string, times ...time.Time) {
	t.Helper()
	for _, tm := range times {
		if !tm.IsZero() && tm.Location() != time.UTC {
			t.Fatalf("%s: time %v not in UTC", what, tm)
		}
	}
}

func testAppState(t *testing.T, s store.Provisioning, _ *suiteClock) {
	ctx := context.Background()
	if _, err := s.AppState(ctx, "jira", "alice"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("AppState of nobody = %v, want ErrNotFound", err)
	}
	st := store.AppState{App: "jira", Username: "alice", IdP: "okta", Subject: "123", Hash: "h1", SyncedAt: base}
	if err := s.PutAppState(ctx, st); err != nil {
		t.Fatalf("PutAppState: %v", err)
	}
	got, err := s.AppState(ctx, "jira", "alice")
	if err != nil {
		t.Fatalf("AppState: %v", err)
	}
	sameAppState(t, "AppState", got, st)
	// The apps compare usernames case-insensitively; so does the store.
	if got, err = s.AppState(ctx, "jira", "ALICE"); err != nil {
		t.Fatalf("AppState(ALICE): %v", err)
	}
	sameAppState(t, "AppState(ALICE)", got, st)
	if _, err := s.AppState(ctx, "confluence", "alice"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("AppState in another app = %v, want ErrNotFound", err)
	}

	// Replacing, under another spelling, replaces everything.
	st2 := store.AppState{App: "jira", Username: "Alice", IdP: "entra", Subject: "9", Hash: "h2",
		SyncedAt: base.Add(time.Hour), Deprovisioned: true, DeprovisionedAt: base.Add(2 * time.Hour),
		DeprovisionedReason: "gone from okta", DeprovisionedSource: "sweep", DeprovisionedActor: "leavers",
		DeprovisionedRun: 1 << 40, DeprovisionedAction: "remove_licence_group"}
	if err := s.PutAppState(ctx, st2); err != nil {
		t.Fatalf("PutAppState again: %v", err)
	}
	if got, err = s.AppState(ctx, "jira", "alice"); err != nil {
		t.Fatalf("AppState: %v", err)
	}
	sameAppState(t, "replaced", got, st2)
	// And back: zero times stay zero.
	st3 := store.AppState{App: "jira", Username: "alice", Hash: "h3"}
	if err := s.PutAppState(ctx, st3); err != nil {
		t.Fatalf("PutAppState: %v", err)
	}
	if got, err = s.AppState(ctx, "jira", "alice"); err != nil {
		t.Fatalf("AppState: %v", err)
	}
	sameAppState(t, "reactivated", got, st3)

	for _, bad := range []store.AppState{{Username: "x"}, {App: "jira"}} {
		if err := s.PutAppState(ctx, bad); !errors.Is(err, store.ErrInvalid) {
			t.Errorf("PutAppState(%+v) = %v, want a validation error (ErrInvalid)", bad, err)
		}
	}
}

// testRecorded: one person's profile and states in several apps at
// once; apps without a state are absent, other users' states never show,
// and each half is there without the other.
func testRecorded(t *testing.T, s store.Provisioning, _ *suiteClock) {
	ctx := context.Background()
	empty, err := s.Recorded(ctx, "okta", "1", "alice", "jira")
	if err != nil || empty.Bound || empty.Binding != (store.Binding{}) || empty.Profile != nil || !empty.ProfileAt.IsZero() || len(empty.States) != 0 {
		t.Fatalf("Recorded of nobody = %+v, %v; want nothing", empty, err)
	}
	want := map[string]store.AppState{
		"jira": {App: "jira", Username: "Alice", IdP: "okta", Subject: "1", Hash: "h1", SyncedAt: base},
		"confluence": {App: "confluence", Username: "alice", IdP: "okta", Subject: "1", Hash: "h2", SyncedAt: base.Add(time.Minute),
			Deprovisioned: true, DeprovisionedAt: base.Add(time.Hour), DeprovisionedReason: "gone", DeprovisionedSource: "scim",
			DeprovisionedActor: "okta-scim", DeprovisionedRun: 7, DeprovisionedAction: "deactivate"},
	}
	for _, st := range []store.AppState{
		want["jira"], want["confluence"],
		{App: "bitbucket", Username: "alice", Hash: "h3"}, // an app not asked for
		{App: "jira", Username: "bob", Hash: "h4"},        // another user
	} {
		if err := s.PutAppState(ctx, st); err != nil {
			t.Fatalf("PutAppState: %v", err)
		}
	}
	check := func(what string, got store.Recorded, profile string) {
		t.Helper()
		if string(got.Profile) != profile {
			t.Fatalf("%s: profile %q, want %q", what, got.Profile, profile)
		}
		if len(got.States) != len(want) {
			t.Fatalf("%s: %d states (%v), want %d", what, len(got.States), got.States, len(want))
		}
		for app, w := range want {
			sameAppState(t, what+" "+app, got.States[app], w)
		}
	}
	got, err := s.Recorded(ctx, "okta", "1", "ALICE", "jira", "confluence", "crowd")
	if err != nil {
		t.Fatalf("Recorded: %v", err)
	}
	check("states without a profile", got, "")
	if err := s.PutProfile(ctx, "okta", "1", []byte(`{"jira":{}}`), base.Add(time.Second)); err != nil {
		t.Fatalf("PutProfile: %v", err)
	}
	if got, err = s.Recorded(ctx, "okta", "1", "alice", "jira", "confluence"); err != nil {
		t.Fatalf("Recorded: %v", err)
	}
	check("profile and states", got, `{"jira":{}}`)
	if !got.ProfileAt.Equal(ms(base.Add(time.Second))) {
		t.Fatalf("ProfileAt = %v, want %v", got.ProfileAt, ms(base.Add(time.Second)))
	}
	only, err := s.Recorded(ctx, "okta", "1", "carol", "jira")
	if err != nil || string(only.Profile) != `{"jira":{}}` || len(only.States) != 0 {
		t.Fatalf("Recorded with no state = %+v, %v; want the profile alone", only, err)
	}
	if none, err := s.Recorded(ctx, "okta", "1", "alice"); err != nil || len(none.States) != 0 || none.Profile == nil {
		t.Fatalf("Recorded of no apps = %+v, %v; want the profile alone", none, err)
	}
}

func usernames(sts []store.AppState) []string {
	var u []string
	for _, st := range sts {
		u = append(u, st.Username)
	}
	return u
}

// testRecordSync: a reconcile that finishes after a removal was decided
// must not clear it.
func testRecordSync(t *testing.T, s store.Provisioning, _ *suiteClock) {
	ctx := context.Background()
	synced := store.AppState{App: "jira", Username: "bob", IdP: "okta", Subject: "7", Hash: "h1", SyncedAt: base}
	if err := s.RecordSync(ctx, synced); err != nil {
		t.Fatalf("RecordSync (create): %v", err)
	}
	got, err := s.AppState(ctx, "jira", "bob")
	if err != nil {
		t.Fatalf("AppState: %v", err)
	}
	sameAppState(t, "created by RecordSync", got, synced)

	marked := synced
	marked.Deprovisioned, marked.DeprovisionedAt, marked.DeprovisionedSource = true, base.Add(time.Minute), "sweep"
	marked.DeprovisionedActor, marked.DeprovisionedRun, marked.DeprovisionedAction, marked.DeprovisionedReason = "leavers", 3, "deactivate", "gone"
	marked.Hash = ""
	if err := s.PutAppState(ctx, marked); err != nil {
		t.Fatalf("PutAppState: %v", err)
	}
	late := store.AppState{App: "jira", Username: "Bob", IdP: "okta", Subject: "7", Hash: "h2", SyncedAt: base.Add(2 * time.Minute)}
	if err := s.RecordSync(ctx, late); err != nil {
		t.Fatalf("RecordSync (late): %v", err)
	}
	if got, err = s.AppState(ctx, "jira", "bob"); err != nil {
		t.Fatalf("AppState: %v", err)
	}
	want := marked
	want.Username, want.Hash, want.SyncedAt = "Bob", "h2", late.SyncedAt
	sameAppState(t, "after a late RecordSync", got, want)
	if err := s.RecordSync(ctx, store.AppState{App: "jira"}); err == nil {
		t.Fatal("RecordSync without username succeeded")
	}
}

func testAppStatesPaging(t *testing.T, s store.Provisioning, _ *suiteClock) {
	ctx := context.Background()
	for _, u := range []string{"dave", "Bob", "alice", "carol", "Eve"} {
		if err := s.PutAppState(ctx, store.AppState{App: "jira", Username: u, Hash: "h-" + u}); err != nil {
			t.Fatalf("PutAppState: %v", err)
		}
	}
	if err := s.PutAppState(ctx, store.AppState{App: "confluence", Username: "zed"}); err != nil {
		t.Fatalf("PutAppState: %v", err)
	}
	page := func(after string, limit int) []string {
		t.Helper()
		sts, err := s.AppStates(ctx, "jira", after, limit)
		if err != nil {
			t.Fatalf("AppStates(%q, %d): %v", after, limit, err)
		}
		for _, st := range sts {
			if st.App != "jira" || st.Hash != "h-"+st.Username {
				t.Fatalf("AppStates returned %+v", st)
			}
		}
		return usernames(sts)
	}
	// Ordered as the apps compare names: case does not sort "Bob" first.
	tests := []struct {
		after string
		limit int
		want  []string
	}{
		{"", 2, []string{"alice", "Bob"}},
		{"Bob", 2, []string{"carol", "dave"}},
		{"dave", 2, []string{"Eve"}},
		{"Eve", 2, nil},
		{"bob", 10, []string{"carol", "dave", "Eve"}},
		{"", 0, []string{"alice", "Bob", "carol", "dave", "Eve"}},
	}
	for _, tt := range tests {
		if got := page(tt.after, tt.limit); !slices.Equal(got, tt.want) {
			t.Errorf("AppStates(after %q, limit %d) = %v, want %v", tt.after, tt.limit, got, tt.want)
		}
	}
	sts, err := s.AppStates(ctx, "confluence", "", 10)
	if err != nil || !slices.Equal(usernames(sts), []string{"zed"}) {
		t.Fatalf("AppStates(confluence) = %v, %v; want [zed]", usernames(sts), err)
	}
}

func managed(t *testing.T, s store.Provisioning, app, username string) []store.Membership {
	t.Helper()
	ms, err := s.Managed(context.Background(), app, username)
	if err != nil {
		t.Fatalf("Managed(%s, %s): %v", app, username, err)
	}
	for _, m := range ms {
		inUTC(t, "Managed", m.AddedAt)
	}
	return ms
}

func groups(ms []store.Membership) []string {
	var g []string
	for _, m := range ms {
		g = append(g, m.Group)
	}
	return g
}

func testManaged(t *testing.T, s store.Provisioning, clock *suiteClock) {
	ctx := context.Background()
	if ms := managed(t, s, "jira", "alice"); len(ms) != 0 {
		t.Fatalf("Managed of nobody = %v", ms)
	}
	if err := s.AddManaged(ctx); err != nil {
		t.Fatalf("AddManaged(): %v", err)
	}
	users := store.Membership{App: "jira", Username: "alice", Group: "jira-users", IdP: "okta", Rule: "map[0]", AddedAt: base}
	admins := store.Membership{App: "jira", Username: "alice", Group: "Jira-Admins", IdP: "okta", Rule: "rules[1]", AddedAt: base.Add(time.Minute)}
	if err := s.AddManaged(ctx, users, admins,
		store.Membership{App: "confluence", Username: "alice", Group: "confluence-users", IdP: "okta", Rule: "default"},
		store.Membership{App: "jira", Username: "bob", Group: "jira-users", IdP: "entra", Rule: "default"},
	); err != nil {
		t.Fatalf("AddManaged: %v", err)
	}
	got := managed(t, s, "jira", "Alice")
	admins.AddedAt, users.AddedAt = ms(admins.AddedAt), ms(users.AddedAt)
	if len(got) != 2 || got[0] != admins || got[1] != users {
		t.Fatalf("Managed(jira, Alice) =\n %+v\nwant\n %+v", got, []store.Membership{admins, users})
	}

	// Adding a group again in another case is the same group: the stored
	// spelling and AddedAt stay, the grant is the latest.
	if err := s.AddManaged(ctx, store.Membership{App: "jira", Username: "ALICE", Group: "JIRA-ADMINS",
		IdP: "entra", Rule: "map[2]", AddedAt: base.Add(time.Hour)}); err != nil {
		t.Fatalf("AddManaged again: %v", err)
	}
	got = managed(t, s, "jira", "alice")
	admins.IdP, admins.Rule = "entra", "map[2]"
	if len(got) != 2 || got[0] != admins {
		t.Fatalf("after re-adding: %+v, want first %+v", got, admins)
	}

	// A zero AddedAt means now.
	clock.Add(time.Minute)
	if err := s.AddManaged(ctx, store.Membership{App: "jira", Username: "alice", Group: "jira-devs"}); err != nil {
		t.Fatalf("AddManaged: %v", err)
	}
	got = managed(t, s, "jira", "alice")
	if !slices.Equal(groups(got), []string{"Jira-Admins", "jira-devs", "jira-users"}) || !got[1].AddedAt.Equal(ms(clock.Now())) {
		t.Fatalf("after adding jira-devs: %+v", got)
	}

	if err := s.RemoveManaged(ctx, "jira", "ALICE", "jira-ADMINS", "jira-devs", "never-added"); err != nil {
		t.Fatalf("RemoveManaged: %v", err)
	}
	if err := s.RemoveManaged(ctx, "jira", "alice"); err != nil {
		t.Fatalf("RemoveManaged of no groups: %v", err)
	}
	if err := s.RemoveManaged(ctx, "jira", "nobody", "jira-users"); err != nil {
		t.Fatalf("RemoveManaged of nobody: %v", err)
	}
	if g := groups(managed(t, s, "jira", "alice")); !slices.Equal(g, []string{"jira-users"}) {
		t.Fatalf("after RemoveManaged: %v, want [jira-users]", g)
	}
	if g := groups(managed(t, s, "jira", "bob")); !slices.Equal(g, []string{"jira-users"}) {
		t.Fatalf("bob's groups: %v, want [jira-users]", g)
	}
	if g := groups(managed(t, s, "confluence", "alice")); !slices.Equal(g, []string{"confluence-users"}) {
		t.Fatalf("alice's confluence groups: %v", g)
	}

	for _, bad := range []store.Membership{{Username: "a", Group: "g"}, {App: "jira", Group: "g"}, {App: "jira", Username: "a"}} {
		if err := s.AddManaged(ctx, bad); !errors.Is(err, store.ErrInvalid) {
			t.Errorf("AddManaged(%+v) = %v, want a validation error (ErrInvalid)", bad, err)
		}
	}
}

func mustEnqueue(t *testing.T, s store.Provisioning, j store.Job) int64 {
	t.Helper()
	id, err := s.Enqueue(context.Background(), j)
	if err != nil {
		t.Fatalf("Enqueue(%s/%s/%s): %v", j.Kind, j.App, j.Key, err)
	}
	return id
}

func claim(t *testing.T, s store.Provisioning, owner string, now time.Time, limit int, lease time.Duration) []store.Job {
	t.Helper()
	jobs, err := s.Claim(context.Background(), owner, now, limit, lease)
	if err != nil {
		t.Fatalf("Claim(%s): %v", owner, err)
	}
	for _, j := range jobs {
		inUTC(t, "Claim", j.NotBefore, j.CreatedAt, j.UpdatedAt)
	}
	return jobs
}

func jobIDs(jobs []store.Job) []int64 {
	var ids []int64
	for _, j := range jobs {
		ids = append(ids, j.ID)
	}
	return ids
}

func queue(t *testing.T, s store.Provisioning) store.QueueStats {
	t.Helper()
	st, err := s.Queue(context.Background())
	if err != nil {
		t.Fatalf("Queue: %v", err)
	}
	return st
}

func testEnqueueDedup(t *testing.T, s store.Provisioning, clock *suiteClock) {
	ctx := context.Background()
	id := mustEnqueue(t, s, store.Job{Kind: "reconcile", App: "jira", Key: "alice", Payload: []byte(`{"v":1}`), NotBefore: base.Add(time.Minute)})
	clock.Add(10 * time.Second)
	again := mustEnqueue(t, s, store.Job{Kind: "reconcile", App: "jira", Key: "alice", Payload: []byte(`{"v":2}`), NotBefore: base.Add(2 * time.Minute)})
	if again != id {
		t.Fatalf("Enqueue of a pending (kind, app, key) gave ID %d, want %d", again, id)
	}
	others := map[int64]bool{id: true}
	for _, j := range []store.Job{
		{Kind: "deprovision", App: "jira", Key: "alice"},
		{Kind: "reconcile", App: "confluence", Key: "alice"},
		{Kind: "reconcile", App: "jira", Key: "bob"},
	} {
		others[mustEnqueue(t, s, j)] = true
	}
	if len(others) != 4 {
		t.Fatalf("jobs differing in kind, app or key share IDs: %v", others)
	}
	if st := queue(t, s); st.Depth != 4 || !st.Oldest.Equal(ms(base)) {
		t.Fatalf("Queue = depth %d oldest %v, want 4 and %v", st.Depth, st.Oldest, ms(base))
	}

	// Not due before its replaced NotBefore.
	for _, j := range claim(t, s, "w", base.Add(time.Minute+30*time.Second), 10, time.Minute) {
		if j.ID == id {
			t.Fatalf("job claimed before its replaced NotBefore: %+v", j)
		}
	}
	jobs := claim(t, s, "w", base.Add(2*time.Minute), 10, time.Minute)
	if len(jobs) != 1 || jobs[0].ID != id {
		t.Fatalf("Claim at the new NotBefore = %v, want [%d]", jobIDs(jobs), id)
	}
	want := store.Job{ID: id, Kind: "reconcile", App: "jira", Key: "alice", Payload: []byte(`{"v":2}`),
		NotBefore: ms(base.Add(2 * time.Minute)), CreatedAt: ms(base), UpdatedAt: ms(base.Add(10 * time.Second))}
	if got := jobs[0]; got.Kind != want.Kind || got.App != want.App || got.Key != want.Key ||
		!bytes.Equal(got.Payload, want.Payload) || got.Attempts != 0 || got.LastError != "" ||
		!got.NotBefore.Equal(want.NotBefore) || !got.CreatedAt.Equal(want.CreatedAt) || !got.UpdatedAt.Equal(want.UpdatedAt) {
		t.Fatalf("replaced job:\n got %+v\nwant %+v", got, want)
	}

	for _, bad := range []store.Job{{App: "jira", Key: "a"}, {Kind: "reconcile", Key: "a"}, {Kind: "reconcile", App: "jira"}} {
		if _, err := s.Enqueue(ctx, bad); !errors.Is(err, store.ErrInvalid) {
			t.Errorf("Enqueue(%+v) = %v, want a validation error (ErrInvalid)", bad, err)
		}
	}
}

func testClaimOrder(t *testing.T, s store.Provisioning, _ *suiteClock) {
	ctx := context.Background()
	at := func(d time.Duration) store.Job {
		return store.Job{Kind: "reconcile", App: "jira", Key: fmt.Sprint("user-", d), NotBefore: base.Add(d)}
	}
	j1 := mustEnqueue(t, s, at(3*time.Minute))
	j2 := mustEnqueue(t, s, at(time.Minute))
	j3 := mustEnqueue(t, s, store.Job{Kind: "deprovision", App: "jira", Key: "x", NotBefore: base.Add(time.Minute)})
	j4 := mustEnqueue(t, s, at(10*time.Minute))
	j5 := mustEnqueue(t, s, at(2*time.Minute))
	// A zero NotBefore is due at once (the store's now).
	j6 := mustEnqueue(t, s, store.Job{Kind: "reconcile", App: "jira", Key: "now"})

	now := base.Add(5 * time.Minute)
	if got := jobIDs(claim(t, s, "a", now, 4, time.Minute)); !slices.Equal(got, []int64{j6, j2, j3, j5}) {
		t.Fatalf("first Claim = %v, want %v (by NotBefore, then ID)", got, []int64{j6, j2, j3, j5})
	}
	if got := jobIDs(claim(t, s, "b", now, 10, time.Minute)); !slices.Equal(got, []int64{j1}) {
		t.Fatalf("second Claim = %v, want [%d]: leased and future jobs stay", got, j1)
	}
	if got := claim(t, s, "b", now.Add(59*time.Second), 10, time.Minute); len(got) != 0 {
		t.Fatalf("Claim while leases run = %v, want none", jobIDs(got))
	}
	// When the lease ends, the jobs are free for anyone.
	if got := jobIDs(claim(t, s, "c", now.Add(time.Minute), 10, time.Hour)); !slices.Equal(got, []int64{j6, j2, j3, j5, j1}) {
		t.Fatalf("Claim after the leases = %v, want %v", got, []int64{j6, j2, j3, j5, j1})
	}
	if got := jobIDs(claim(t, s, "d", base.Add(10*time.Minute), 10, time.Minute)); !slices.Equal(got, []int64{j4}) {
		t.Fatalf("Claim at j4's NotBefore = %v, want [%d]", got, j4)
	}

	if got := claim(t, s, "e", base.Add(time.Hour), 0, time.Minute); len(got) != 0 {
		t.Fatalf("Claim(limit 0) = %v, want none", jobIDs(got))
	}
	if _, err := s.Claim(ctx, "", now, 1, time.Minute); !errors.Is(err, store.ErrInvalid) {
		t.Errorf("Claim without owner = %v, want ErrInvalid", err)
	}
	if _, err := s.Claim(ctx, "a", now, 1, 0); !errors.Is(err, store.ErrInvalid) {
		t.Errorf("Claim without lease = %v, want ErrInvalid", err)
	}
}

func testCompleteRetry(t *testing.T, s store.Provisioning, clock *suiteClock) {
	ctx := context.Background()
	now := clock.Now()
	id := mustEnqueue(t, s, store.Job{Kind: "reconcile", App: "jira", Key: "alice"})
	claim(t, s, "a", now, 1, time.Minute)
	if err := s.Complete(ctx, id, "b"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Complete by a non-owner = %v, want ErrNotFound", err)
	}
	if err := s.Complete(ctx, id, ""); !errors.Is(err, store.ErrInvalid) {
		t.Fatalf("Complete by no owner = %v, want ErrInvalid", err)
	}
	if st := queue(t, s); st.Depth != 1 {
		t.Fatalf("depth after refused Complete = %d, want 1", st.Depth)
	}
	if err := s.Complete(ctx, id, "a"); err != nil {
		t.Fatalf("Complete: %v", err)
	}
	if st := queue(t, s); st.Depth != 0 || !st.Oldest.IsZero() {
		t.Fatalf("Queue after Complete = %+v, want empty", st)
	}
	if err := s.Complete(ctx, id, "a"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Complete twice = %v, want ErrNotFound", err)
	}

	// Retry: counted, delayed, released.
	id = mustEnqueue(t, s, store.Job{Kind: "reconcile", App: "jira", Key: "bob", Payload: []byte("p")})
	claim(t, s, "a", now, 1, time.Minute)
	if err := s.Retry(ctx, id, "b", now.Add(time.Minute), "x"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Retry by a non-owner = %v, want ErrNotFound", err)
	}
	clock.Add(time.Second)
	if err := s.Retry(ctx, id, "a", now.Add(5*time.Minute), "jira: 503"); err != nil {
		t.Fatalf("Retry: %v", err)
	}
	if got := claim(t, s, "b", now.Add(5*time.Minute-time.Millisecond), 1, time.Minute); len(got) != 0 {
		t.Fatalf("claimed before the retry's NotBefore: %+v", got)
	}
	jobs := claim(t, s, "b", now.Add(5*time.Minute), 1, time.Minute)
	if len(jobs) != 1 {
		t.Fatalf("Claim at the retry's NotBefore = %v, want the job", jobs)
	}
	if j := jobs[0]; j.ID != id || j.Attempts != 1 || j.LastError != "jira: 503" || string(j.Payload) != "p" ||
		!j.NotBefore.Equal(ms(now.Add(5*time.Minute))) || !j.UpdatedAt.Equal(ms(clock.Now())) {
		t.Fatalf("retried job = %+v", j)
	}
	// a's claim is gone: b holds it now.
	if err := s.Complete(ctx, id, "a"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Complete by the former owner = %v, want ErrNotFound", err)
	}
	if err := s.Retry(ctx, id, "b", now.Add(6*time.Minute), "jira: 502"); err != nil {
		t.Fatalf("Retry: %v", err)
	}
	jobs = claim(t, s, "c", now.Add(6*time.Minute), 1, time.Minute)
	if len(jobs) != 1 || jobs[0].Attempts != 2 || jobs[0].LastError != "jira: 502" {
		t.Fatalf("twice retried job = %+v", jobs)
	}

	// An expired lease is taken over; the old owner's Complete is refused.
	later := now.Add(8 * time.Minute)
	if got := jobIDs(claim(t, s, "d", later, 1, time.Minute)); !slices.Equal(got, []int64{id}) {
		t.Fatalf("Claim of an expired lease = %v, want [%d]", got, id)
	}
	if err := s.Complete(ctx, id, "c"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Complete after losing the lease = %v, want ErrNotFound", err)
	}
	if err := s.Complete(ctx, id, "d"); err != nil {
		t.Fatalf("Complete by the new owner: %v", err)
	}
}

func testCompleteAfterReenqueue(t *testing.T, s store.Provisioning, clock *suiteClock) {
	ctx := context.Background()
	now := clock.Now()
	id := mustEnqueue(t, s, store.Job{Kind: "reconcile", App: "jira", Key: "alice", Payload: []byte("old")})
	jobs := claim(t, s, "a", now, 1, time.Minute)
	if len(jobs) != 1 || string(jobs[0].Payload) != "old" {
		t.Fatalf("Claim = %+v", jobs)
	}
	// A login wants something newer while a is applying "old".
	if got := mustEnqueue(t, s, store.Job{Kind: "reconcile", App: "jira", Key: "alice", Payload: []byte("new")}); got != id {
		t.Fatalf("re-enqueue gave ID %d, want %d", got, id)
	}
	// The lease still runs: nobody else gets it meanwhile.
	if got := claim(t, s, "b", now, 1, time.Minute); len(got) != 0 {
		t.Fatalf("re-enqueued leased job claimed by another owner: %+v", got)
	}
	if err := s.Complete(ctx, id, "a"); err != nil {
		t.Fatalf("Complete: %v", err)
	}
	if st := queue(t, s); st.Depth != 1 {
		t.Fatalf("depth after completing an outdated payload = %d, want 1", st.Depth)
	}
	jobs = claim(t, s, "b", now, 1, time.Minute)
	if len(jobs) != 1 || jobs[0].ID != id || string(jobs[0].Payload) != "new" {
		t.Fatalf("Claim after Complete = %+v, want the released job with the new payload", jobs)
	}
	if err := s.Complete(ctx, id, "b"); err != nil {
		t.Fatalf("Complete: %v", err)
	}
	if st := queue(t, s); st.Depth != 0 {
		t.Fatalf("depth after completing the newest payload = %d, want 0", st.Depth)
	}

	// A completed job enqueued again is a new job.
	if again := mustEnqueue(t, s, store.Job{Kind: "reconcile", App: "jira", Key: "alice"}); again == id {
		t.Fatalf("enqueue after Complete reused ID %d", id)
	}
}

func testQueueStats(t *testing.T, s store.Provisioning, clock *suiteClock) {
	ctx := context.Background()
	if st := queue(t, s); st.Depth != 0 || !st.Oldest.IsZero() || len(st.LastErrors) != 0 {
		t.Fatalf("empty Queue = %+v", st)
	}
	start := clock.Now()
	var ids []int64
	for i := range 12 {
		ids = append(ids, mustEnqueue(t, s, store.Job{Kind: "reconcile", App: "jira", Key: fmt.Sprint("u", i)}))
		clock.Add(time.Second)
	}
	now := clock.Now()
	claim(t, s, "w", now, 100, time.Minute)
	if st := queue(t, s); st.Depth != 12 || !st.Oldest.Equal(ms(start)) || st.Oldest.Location() != time.UTC {
		t.Fatalf("Queue with leased jobs = depth %d oldest %v, want 12 and %v", st.Depth, st.Oldest, ms(start))
	}
	// Fail them in an order unlike their IDs.
	order := []int{5, 0, 11, 3, 7, 1, 9, 2, 10, 4, 8, 6}
	for _, i := range order {
		clock.Add(time.Second)
		if err := s.Retry(ctx, ids[i], "w", now.Add(time.Hour), fmt.Sprint("e", i)); err != nil {
			t.Fatalf("Retry: %v", err)
		}
	}
	st := queue(t, s)
	var got []string
	for _, j := range st.LastErrors {
		got = append(got, j.LastError)
	}
	var want []string
	for k := len(order) - 1; k >= 2; k-- {
		want = append(want, fmt.Sprint("e", order[k]))
	}
	if st.Depth != 12 || !slices.Equal(got, want) {
		t.Fatalf("Queue = depth %d, errors %v; want 12, %v", st.Depth, got, want)
	}
}

// testIntend: a change recorded before its owner works on it is not
// picked up by anyone else while the owner lives, is its own to finish,
// and is free at once when the owner's heartbeat has run out.
func testIntend(t *testing.T, s store.Provisioning, clock *suiteClock) {
	ctx := context.Background()
	job := store.Job{Kind: "reconcile", App: "jira", Key: "alice", Payload: []byte(`{"v":1}`)}
	id, err := s.Intend(ctx, job, "a", time.Minute)
	if err != nil {
		t.Fatalf("Intend: %v", err)
	}
	if got := claim(t, s, "b", clock.Now(), 10, time.Minute); len(got) != 0 {
		t.Fatalf("another owner claimed an intended job: %+v", got)
	}
	if err := s.Complete(ctx, id, "a"); err != nil {
		t.Fatalf("Complete by its owner: %v", err)
	}
	if st := queue(t, s); st.Depth != 0 {
		t.Fatalf("depth %d after Complete", st.Depth)
	}

	// A queued change for the same person: the intent takes it over with
	// the newer payload.
	mustEnqueue(t, s, store.Job{Kind: "reconcile", App: "jira", Key: "bob", Payload: []byte(`{"v":1}`)})
	id, err = s.Intend(ctx, store.Job{Kind: "reconcile", App: "jira", Key: "bob", Payload: []byte(`{"v":2}`)}, "a", time.Minute)
	if err != nil {
		t.Fatalf("Intend over a queued job: %v", err)
	}
	if got := claim(t, s, "b", clock.Now(), 10, time.Minute); len(got) != 0 {
		t.Fatalf("claimed while intended: %+v", got)
	}

	// The owner dies. Without a heartbeat, its jobs wait for the lease.
	if c, ok := s.(interface {
		Lease(ctx context.Context, name, owner string, ttl time.Duration) (bool, error)
	}); ok {
		if held, err := c.Lease(ctx, "replica:a", "a", 10*time.Second); err != nil || !held {
			t.Fatalf("heartbeat: %v %v", held, err)
		}
		clock.Add(5 * time.Second)
		if got := claim(t, s, "b", clock.Now(), 10, time.Minute); len(got) != 0 {
			t.Fatalf("claimed while the owner's heartbeat runs: %+v", got)
		}
		clock.Add(6 * time.Second) // heartbeat over, lease still running
		got := claim(t, s, "b", clock.Now(), 10, time.Minute)
		if len(got) != 1 || got[0].ID != id || string(got[0].Payload) != `{"v":2}` {
			t.Fatalf("after the owner's heartbeat ran out: %+v, want job %d with the newer payload", got, id)
		}
		if err := s.Complete(ctx, id, "a"); err == nil {
			t.Fatal("the dead owner completed a job another owner holds")
		}
	}
	for _, bad := range []store.Job{{App: "jira", Key: "x"}, {Kind: "k", Key: "x"}, {Kind: "k", App: "jira"}} {
		if _, err := s.Intend(ctx, bad, "a", time.Minute); !errors.Is(err, store.ErrInvalid) {
			t.Errorf("Intend(%+v) = %v, want ErrInvalid", bad, err)
		}
	}
	if _, err := s.Intend(ctx, job, "", time.Minute); !errors.Is(err, store.ErrInvalid) {
		t.Errorf("Intend without owner = %v", err)
	}
}

// testWake: the jobs waiting on one app become due when it answers
// again; leased jobs and other apps' jobs stay as they are.
func testWake(t *testing.T, s store.Provisioning, clock *suiteClock) {
	ctx := context.Background()
	now := clock.Now()
	later := now.Add(time.Hour)
	for _, k := range []string{"a", "b", "c"} {
		mustEnqueue(t, s, store.Job{Kind: "reconcile", App: "jira", Key: k, NotBefore: later})
	}
	mustEnqueue(t, s, store.Job{Kind: "reconcile", App: "wiki", Key: "a", NotBefore: later})
	mustEnqueue(t, s, store.Job{Kind: "reconcile", App: "crowd", Key: "a", NotBefore: now})
	apps, err := s.WaitingApps(ctx, now)
	if err != nil || !slices.Equal(apps, []string{"jira", "wiki"}) {
		t.Fatalf("WaitingApps = %v, %v", apps, err)
	}
	// One of jira's is being worked on (leased).
	if _, err := s.Intend(ctx, store.Job{Kind: "reconcile", App: "jira", Key: "c", NotBefore: later}, "w", time.Hour); err != nil {
		t.Fatal(err)
	}
	n, err := s.Wake(ctx, "jira", now)
	if err != nil || n != 2 {
		t.Fatalf("Wake(jira) = %d, %v; want 2", n, err)
	}
	got := claim(t, s, "x", now, 10, time.Minute)
	var keys []string
	for _, j := range got {
		keys = append(keys, j.App+"/"+j.Key)
	}
	slices.Sort(keys)
	if !slices.Equal(keys, []string{"crowd/a", "jira/a", "jira/b"}) {
		t.Fatalf("due after Wake: %v", keys)
	}
	if _, err := s.Wake(ctx, "", now); !errors.Is(err, store.ErrInvalid) {
		t.Errorf("Wake without app = %v", err)
	}
}

// Many workers of two owners drain one queue at once: while leases run,
// each job goes to exactly one of them.
func testConcurrentClaim(t *testing.T, s store.Provisioning, clock *suiteClock) {
	const jobs, workers = 200, 16
	for i := range jobs {
		mustEnqueue(t, s, store.Job{Kind: "reconcile", App: "jira", Key: fmt.Sprint("u", i)})
	}
	now := clock.Now()
	var (
		wg     sync.WaitGroup
		mu     sync.Mutex
		claims = map[int64][]string{}
		errs   []error
	)
	start := make(chan struct{})
	for w := range workers {
		owner := []string{"a", "b"}[w%2]
		wg.Go(func() {
			<-start
			for {
				got, err := s.Claim(context.Background(), owner, now, 7, time.Hour)
				mu.Lock()
				if err != nil {
					errs = append(errs, err)
				}
				for _, j := range got {
					claims[j.ID] = append(claims[j.ID], owner)
				}
				mu.Unlock()
				if err != nil || len(got) == 0 {
					return
				}
			}
		})
	}
	close(start)
	wg.Wait()
	for _, err := range errs {
		t.Fatalf("Claim: %v", err)
	}
	if len(claims) != jobs {
		t.Fatalf("%d jobs claimed, want %d", len(claims), jobs)
	}
	for id, owners := range claims {
		if len(owners) != 1 {
			t.Fatalf("job %d claimed %d times (%v), want once", id, len(owners), owners)
		}
	}
	if got := claim(t, s, "c", now.Add(time.Hour-time.Millisecond), 10, time.Hour); len(got) != 0 {
		t.Fatalf("Claim while every lease runs = %d jobs, want none", len(got))
	}
	// Expired leases: everything is claimable again.
	if got := claim(t, s, "c", now.Add(time.Hour), 1000, time.Hour); len(got) != jobs {
		t.Fatalf("Claim after the leases expired = %d jobs, want %d", len(got), jobs)
	}
}

func testProvisioningCanceled(t *testing.T, s store.Provisioning, _ *suiteClock) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	calls := map[string]func() error{
		"AppState":      func() error { _, err := s.AppState(ctx, "jira", "alice"); return err },
		"PutAppState":   func() error { return s.PutAppState(ctx, store.AppState{App: "jira", Username: "alice"}) },
		"AppStates":     func() error { _, err := s.AppStates(ctx, "jira", "", 10); return err },
		"Managed":       func() error { _, err := s.Managed(ctx, "jira", "alice"); return err },
		"AddManaged":    func() error { return s.AddManaged(ctx, store.Membership{App: "jira", Username: "alice", Group: "g"}) },
		"RemoveManaged": func() error { return s.RemoveManaged(ctx, "jira", "alice", "g") },
		"Enqueue": func() error {
			_, err := s.Enqueue(ctx, store.Job{Kind: "reconcile", App: "jira", Key: "alice"})
			return err
		},
		"Claim":    func() error { _, err := s.Claim(ctx, "a", base, 1, time.Minute); return err },
		"Complete": func() error { return s.Complete(ctx, 1, "a") },
		"Retry":    func() error { return s.Retry(ctx, 1, "a", base, "x") },
		"Queue":    func() error { _, err := s.Queue(ctx); return err },
	}
	for name, call := range calls {
		// The caller gave up: that is not the database's fault.
		if err := call(); !errors.Is(err, context.Canceled) || errors.Is(err, store.ErrUnavailable) {
			t.Errorf("%s with canceled context = %v, want context.Canceled and not ErrUnavailable", name, err)
		}
	}
	if _, err := s.AppState(context.Background(), "jira", "alice"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("canceled PutAppState left a state: %v", err)
	}
	if st := queue(t, s); st.Depth != 0 {
		t.Errorf("canceled Enqueue left %d jobs", st.Depth)
	}
}
