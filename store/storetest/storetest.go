// Package storetest is the conformance suite for store.Store: every backend
// runs Run against a fresh database, so SQLite and PostgreSQL cannot drift
// apart in the behaviour the rest of usher relies on.
package storetest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/usherhq/usher/store"
)

// Run runs the conformance suite as subtests. open must return a store
// backed by a fresh, empty, migrated database; the suite closes it.
func Run(t *testing.T, open func(t *testing.T) store.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s store.Store)
	}{
		{"BindNew", testBindNew},
		{"BindIdempotent", testBindIdempotent},
		{"BindInvalid", testBindInvalid},
		{"UsernameTaken", testUsernameTaken},
		{"Rename", testRename},
		{"NotFound", testNotFound},
		{"RecordLogin", testRecordLogin},
		{"RecordLogins", testRecordLogins},
		{"RecordedBinding", testRecordedBinding},
		{"AppendOrder", testAppendOrder},
		{"AuditFilters", testAuditFilters},
		{"ConcurrentBind", testConcurrentBind},
		{"ConcurrentBindSameIdentity", testConcurrentBindSameIdentity},
		{"ContextCanceled", testContextCanceled},
		{"TimePrecision", testTimePrecision},
		{"BadText", testBadText},
		{"FreeText", testFreeText},
		{"DeadlinePassed", testDeadlinePassed},
		{"BrakeCounts", testBrakeCounts},
		{"BrakeConcurrent", testBrakeConcurrent},
		{"BrakeInvalid", testBrakeInvalid},
		{"Holds", testHolds},
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

// base is a time with sub-millisecond digits in a non-UTC zone, so every
// test also checks truncation and normalisation.
var base = time.Date(2026, 3, 1, 12, 0, 0, 123456789, time.FixedZone("CET", 3600))

func ms(t time.Time) time.Time { return t.UTC().Truncate(time.Millisecond) }

func mustBind(t *testing.T, s store.Store, b store.Binding) store.Binding {
	t.Helper()
	got, err := s.Bind(context.Background(), b)
	if err != nil {
		t.Fatalf("Bind(%s/%s → %s): %v", b.IdP, b.Subject, b.Username, err)
	}
	return got
}

func sameBinding(t *testing.T, what string, got, want store.Binding) {
	t.Helper()
	if got.IdP != want.IdP || got.Subject != want.Subject || got.Username != want.Username ||
		!got.CreatedAt.Equal(want.CreatedAt) || !got.LastLogin.Equal(want.LastLogin) {
		t.Fatalf("%s:\n got %+v\nwant %+v", what, got, want)
	}
	for _, tm := range []time.Time{got.CreatedAt, got.LastLogin} {
		if !tm.IsZero() && tm.Location() != time.UTC {
			t.Fatalf("%s: time %v not in UTC", what, tm)
		}
	}
}

func testBindNew(t *testing.T, s store.Store) {
	ctx := context.Background()
	want := store.Binding{IdP: "okta", Subject: "123", Username: "alice", CreatedAt: ms(base)}
	got := mustBind(t, s, store.Binding{IdP: "okta", Subject: "123", Username: "alice", CreatedAt: base})
	sameBinding(t, "Bind", got, want)

	byID, err := s.Binding(ctx, "okta", "123")
	if err != nil {
		t.Fatalf("Binding: %v", err)
	}
	sameBinding(t, "Binding", byID, want)
	byName, err := s.BindingByUsername(ctx, "alice")
	if err != nil {
		t.Fatalf("BindingByUsername: %v", err)
	}
	sameBinding(t, "BindingByUsername", byName, want)

	// A zero CreatedAt is filled in by the store.
	before := time.Now().Add(-time.Second)
	b := mustBind(t, s, store.Binding{IdP: "okta", Subject: "456", Username: "bob"})
	if b.CreatedAt.Before(before) || b.CreatedAt.After(time.Now().Add(time.Second)) {
		t.Fatalf("zero CreatedAt became %v, want about now", b.CreatedAt)
	}
	// The same subject at another IdP is another identity.
	mustBind(t, s, store.Binding{IdP: "entra", Subject: "123", Username: "carol", CreatedAt: base})
}

func testBindIdempotent(t *testing.T, s store.Store) {
	first := mustBind(t, s, store.Binding{IdP: "okta", Subject: "123", Username: "alice", CreatedAt: base})
	for i := range 3 {
		again := mustBind(t, s, store.Binding{IdP: "okta", Subject: "123", Username: "alice",
			CreatedAt: base.Add(time.Duration(i+1) * time.Hour)})
		sameBinding(t, "Bind again", again, first)
	}
	// LastLogin survives a repeated Bind.
	at := base.Add(time.Minute)
	if err := s.RecordLogin(context.Background(), "okta", "123", at); err != nil {
		t.Fatalf("RecordLogin: %v", err)
	}
	again := mustBind(t, s, store.Binding{IdP: "okta", Subject: "123", Username: "alice"})
	first.LastLogin = ms(at)
	sameBinding(t, "Bind after login", again, first)
}

func testBindInvalid(t *testing.T, s store.Store) {
	for _, b := range []store.Binding{
		{Subject: "1", Username: "a"},
		{IdP: "okta", Username: "a"},
		{IdP: "okta", Subject: "1"},
	} {
		if _, err := s.Bind(context.Background(), b); err == nil || errors.Is(err, store.ErrUsernameTaken) || !errors.Is(err, store.ErrInvalid) {
			t.Errorf("Bind(%+v) = %v, want a validation error", b, err)
		}
	}
}

func testUsernameTaken(t *testing.T, s store.Store) {
	ctx := context.Background()
	alice := mustBind(t, s, store.Binding{IdP: "okta", Subject: "123", Username: "alice", CreatedAt: base})
	bob := mustBind(t, s, store.Binding{IdP: "okta", Subject: "456", Username: "bob", CreatedAt: base})

	for _, b := range []store.Binding{
		{IdP: "entra", Subject: "123", Username: "alice"}, // new identity
		{IdP: "okta", Subject: "456", Username: "alice"},  // bound identity renaming onto a taken name
		{IdP: "entra", Subject: "789", Username: "ALICE"}, // the apps treat case as the same user
	} {
		_, err := s.Bind(ctx, b)
		if !errors.Is(err, store.ErrUsernameTaken) {
			t.Fatalf("Bind(%s/%s → %s) = %v, want ErrUsernameTaken", b.IdP, b.Subject, b.Username, err)
		}
	}
	// Nothing changed.
	got, err := s.BindingByUsername(ctx, "alice")
	if err != nil {
		t.Fatalf("BindingByUsername(alice): %v", err)
	}
	sameBinding(t, "alice", got, alice)
	got, err = s.Binding(ctx, "okta", "456")
	if err != nil {
		t.Fatalf("Binding(okta/456): %v", err)
	}
	sameBinding(t, "bob", got, bob)
	for _, id := range [][2]string{{"entra", "123"}, {"entra", "789"}} {
		if _, err := s.Binding(ctx, id[0], id[1]); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("Binding(%s/%s) = %v, want ErrNotFound", id[0], id[1], err)
		}
	}
}

func testRename(t *testing.T, s store.Store) {
	ctx := context.Background()
	old := mustBind(t, s, store.Binding{IdP: "okta", Subject: "123", Username: "alice", CreatedAt: base})
	if err := s.RecordLogin(ctx, "okta", "123", base.Add(time.Hour)); err != nil {
		t.Fatalf("RecordLogin: %v", err)
	}
	got := mustBind(t, s, store.Binding{IdP: "okta", Subject: "123", Username: "alice.smith", CreatedAt: base.Add(48 * time.Hour)})
	want := store.Binding{IdP: "okta", Subject: "123", Username: "alice.smith",
		CreatedAt: old.CreatedAt, LastLogin: ms(base.Add(time.Hour))}
	sameBinding(t, "renamed", got, want)

	if _, err := s.BindingByUsername(ctx, "alice"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("old username still bound: %v", err)
	}
	byName, err := s.BindingByUsername(ctx, "alice.smith")
	if err != nil {
		t.Fatalf("BindingByUsername(new): %v", err)
	}
	sameBinding(t, "by new name", byName, want)

	// The freed name can go to someone else.
	mustBind(t, s, store.Binding{IdP: "entra", Subject: "999", Username: "alice"})

	// A change of case only is a rename of the identity's own name.
	got = mustBind(t, s, store.Binding{IdP: "okta", Subject: "123", Username: "Alice.Smith"})
	want.Username = "Alice.Smith"
	sameBinding(t, "case rename", got, want)
	byName, err = s.BindingByUsername(ctx, "alice.smith")
	if err != nil {
		t.Fatalf("BindingByUsername(other case): %v", err)
	}
	sameBinding(t, "lookup in other case", byName, want)
}

func testNotFound(t *testing.T, s store.Store) {
	ctx := context.Background()
	if _, err := s.Binding(ctx, "okta", "nobody"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Binding = %v, want ErrNotFound", err)
	}
	if _, err := s.BindingByUsername(ctx, "nobody"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("BindingByUsername = %v, want ErrNotFound", err)
	}
	mustBind(t, s, store.Binding{IdP: "okta", Subject: "123", Username: "alice"})
	if _, err := s.Binding(ctx, "entra", "123"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Binding at another IdP = %v, want ErrNotFound", err)
	}
	if err := s.Ping(ctx); err != nil {
		t.Fatalf("Ping: %v", err)
	}
}

func testRecordLogin(t *testing.T, s store.Store) {
	ctx := context.Background()
	b := mustBind(t, s, store.Binding{IdP: "okta", Subject: "123", Username: "alice", CreatedAt: base})
	if !b.LastLogin.IsZero() {
		t.Fatalf("new binding has LastLogin %v", b.LastLogin)
	}
	for _, at := range []time.Time{base.Add(time.Minute), base.Add(2 * time.Hour)} {
		if err := s.RecordLogin(ctx, "okta", "123", at); err != nil {
			t.Fatalf("RecordLogin: %v", err)
		}
		got, err := s.Binding(ctx, "okta", "123")
		if err != nil {
			t.Fatalf("Binding: %v", err)
		}
		b.LastLogin = ms(at)
		sameBinding(t, "after login", got, b)
	}
	if err := s.RecordLogin(ctx, "okta", "nobody", base); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("RecordLogin(unknown) = %v, want ErrNotFound", err)
	}
}

// testRecordLogins: many identities in one call, each set to its own
// time; never moved back; an identity not bound is skipped; more than one
// statement's worth of rows all land; bad input is refused whole.
func testRecordLogins(t *testing.T, s store.Store) {
	ctx := context.Background()
	const n = 600 // more than one transaction's worth (sqlstore's maxRows)
	want := make([]store.Binding, n)
	logins := make([]store.Login, 0, n+1)
	for i := range want {
		sub := fmt.Sprint(i)
		want[i] = mustBind(t, s, store.Binding{IdP: "okta", Subject: sub, Username: "user" + sub, CreatedAt: base})
		at := base.Add(time.Duration(i) * time.Second)
		logins = append(logins, store.Login{IdP: "okta", Subject: sub, At: at})
		want[i].LastLogin = ms(at)
	}
	// Identity 1 has a newer login stored already: the batch's older time
	// must not move it back.
	newer := base.Add(time.Hour)
	if err := s.RecordLogin(ctx, "okta", "1", newer); err != nil {
		t.Fatalf("RecordLogin: %v", err)
	}
	want[1].LastLogin = ms(newer)
	logins = append(logins, store.Login{IdP: "okta", Subject: "nobody", At: base}) // not bound: skipped
	if err := s.RecordLogins(ctx, logins...); err != nil {
		t.Fatalf("RecordLogins: %v", err)
	}
	for _, w := range []int{0, 1, 2, n - 1} {
		got, err := s.Binding(ctx, "okta", want[w].Subject)
		if err != nil {
			t.Fatalf("Binding: %v", err)
		}
		sameBinding(t, "after RecordLogins", got, want[w])
	}
	if _, err := s.Binding(ctx, "okta", "nobody"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("RecordLogins bound an unknown identity: %v", err)
	}
	// A later batch moves times forward.
	later := base.Add(2 * time.Hour)
	if err := s.RecordLogins(ctx, store.Login{IdP: "okta", Subject: "1", At: later}, store.Login{IdP: "okta", Subject: "2", At: later}); err != nil {
		t.Fatalf("RecordLogins: %v", err)
	}
	for _, sub := range []string{"1", "2"} {
		got, err := s.Binding(ctx, "okta", sub)
		if err != nil {
			t.Fatalf("Binding: %v", err)
		}
		if !got.LastLogin.Equal(ms(later)) {
			t.Fatalf("LastLogin of %s = %v, want %v", sub, got.LastLogin, ms(later))
		}
	}
	if err := s.RecordLogins(ctx); err != nil {
		t.Fatalf("RecordLogins of nothing: %v", err)
	}
	// Bad input anywhere refuses the whole call before anything is written.
	for name, l := range map[string]store.Login{
		"no subject": {IdP: "okta", At: later},
		"no time":    {IdP: "okta", Subject: "3"},
	} {
		err := s.RecordLogins(ctx, store.Login{IdP: "okta", Subject: "0", At: later.Add(time.Hour)}, l)
		if !errors.Is(err, store.ErrInvalid) {
			t.Errorf("RecordLogins with %s = %v, want ErrInvalid", name, err)
		}
	}
	if got, _ := s.Binding(ctx, "okta", "0"); !got.LastLogin.Equal(want[0].LastLogin) {
		t.Errorf("a refused RecordLogins wrote: LastLogin = %v, want %v", got.LastLogin, want[0].LastLogin)
	}
}

// testRecordedBinding: Recorded's binding is Binding's, with or without
// a profile or states beside it.
func testRecordedBinding(t *testing.T, s store.Store) {
	ctx := context.Background()
	want := mustBind(t, s, store.Binding{IdP: "okta", Subject: "123", Username: "Alice", CreatedAt: base})
	if err := s.RecordLogin(ctx, "okta", "123", base.Add(time.Hour)); err != nil {
		t.Fatalf("RecordLogin: %v", err)
	}
	want.LastLogin = ms(base.Add(time.Hour))
	got, err := s.Recorded(ctx, "okta", "123", "alice", "jira")
	if err != nil || !got.Bound || got.Profile != nil || len(got.States) != 0 {
		t.Fatalf("Recorded = %+v, %v; want the binding alone", got, err)
	}
	sameBinding(t, "Recorded", got.Binding, want)
	if err := s.PutAppState(ctx, store.AppState{App: "jira", Username: "alice", Hash: "h"}); err != nil {
		t.Fatalf("PutAppState: %v", err)
	}
	if got, err = s.Recorded(ctx, "okta", "123", "alice", "jira"); err != nil || !got.Bound || len(got.States) != 1 {
		t.Fatalf("Recorded = %+v, %v; want the binding and one state", got, err)
	}
	sameBinding(t, "Recorded with a state", got.Binding, want)
	other, err := s.Recorded(ctx, "okta", "456", "alice", "jira")
	if err != nil || other.Bound || other.Binding != (store.Binding{}) || len(other.States) != 1 {
		t.Fatalf("Recorded of an unbound identity = %+v, %v; want no binding and alice's state", other, err)
	}
}

func event(i int, at time.Time) store.Event {
	return store.Event{Time: at, Action: "login", IdP: "okta", Subject: fmt.Sprint(i),
		Username: fmt.Sprintf("user%d", i), App: "jira", Actor: "login", Outcome: "ok", Detail: fmt.Sprint(i)}
}

func all(t *testing.T, s store.Store, f store.AuditFilter) []store.Event {
	t.Helper()
	evs, err := s.Audit(context.Background(), f)
	if err != nil {
		t.Fatalf("Audit(%+v): %v", f, err)
	}
	return evs
}

func details(evs []store.Event) []string {
	var d []string
	for _, e := range evs {
		d = append(d, e.Detail)
	}
	return d
}

func testAppendOrder(t *testing.T, s store.Store) {
	ctx := context.Background()
	if err := s.Append(ctx); err != nil {
		t.Fatalf("Append(): %v", err)
	}
	var batch []store.Event
	for i := range 5 {
		batch = append(batch, event(i, base)) // same time: only the ID orders them
	}
	if err := s.Append(ctx, batch...); err != nil {
		t.Fatalf("Append: %v", err)
	}
	if err := s.Append(ctx, event(5, base)); err != nil {
		t.Fatalf("Append: %v", err)
	}
	got := all(t, s, store.AuditFilter{})
	if want := []string{"5", "4", "3", "2", "1", "0"}; !slices.Equal(details(got), want) {
		t.Fatalf("order = %v, want %v", details(got), want)
	}
	for i := 1; i < len(got); i++ {
		if got[i].ID >= got[i-1].ID {
			t.Fatalf("IDs not increasing with append order: %d then %d", got[i].ID, got[i-1].ID)
		}
	}
	want := event(0, ms(base))
	want.ID = got[5].ID
	if got[5] != want {
		t.Fatalf("round trip:\n got %+v\nwant %+v", got[5], want)
	}

	// A zero Time is filled in by the store.
	if err := s.Append(ctx, store.Event{Action: "bind", Outcome: "ok"}); err != nil {
		t.Fatalf("Append: %v", err)
	}
	got = all(t, s, store.AuditFilter{Action: "bind"})
	if len(got) != 1 || got[0].Time.IsZero() || got[0].Time.Location() != time.UTC {
		t.Fatalf("zero-time event came back as %+v", got)
	}
}

func testAuditFilters(t *testing.T, s store.Store) {
	ctx := context.Background()
	// Appended out of time order, so "newest first" must come from Time.
	evs := []store.Event{
		{Time: base.Add(3 * time.Minute), Action: "login", IdP: "okta", Username: "alice", App: "jira", Outcome: "ok", Detail: "a"},
		{Time: base.Add(1 * time.Minute), Action: "login", IdP: "entra", Username: "bob", App: "confluence", Outcome: "ok", Detail: "b"},
		{Time: base.Add(5 * time.Minute), Action: "login.refused", IdP: "okta", Username: "bob", App: "jira", Outcome: "refused", Detail: "c"},
		{Time: base.Add(2 * time.Minute), Action: "bind", IdP: "okta", Username: "alice", App: "", Outcome: "ok", Detail: "d"},
		{Time: base.Add(4 * time.Minute), Action: "login", IdP: "entra", Username: "alice", App: "jira", Outcome: "error", Detail: "e"},
	}
	if err := s.Append(ctx, evs...); err != nil {
		t.Fatalf("Append: %v", err)
	}
	tests := []struct {
		name string
		f    store.AuditFilter
		want []string
	}{
		{"all", store.AuditFilter{}, []string{"c", "e", "a", "d", "b"}},
		{"idp", store.AuditFilter{IdP: "okta"}, []string{"c", "a", "d"}},
		{"username", store.AuditFilter{Username: "alice"}, []string{"e", "a", "d"}},
		{"app", store.AuditFilter{App: "jira"}, []string{"c", "e", "a"}},
		{"action", store.AuditFilter{Action: "login"}, []string{"e", "a", "b"}},
		{"since inclusive", store.AuditFilter{Since: base.Add(3 * time.Minute)}, []string{"c", "e", "a"}},
		{"until exclusive", store.AuditFilter{Until: base.Add(3 * time.Minute)}, []string{"d", "b"}},
		{"window", store.AuditFilter{Since: base.Add(2 * time.Minute), Until: base.Add(5 * time.Minute)}, []string{"e", "a", "d"}},
		{"limit", store.AuditFilter{Limit: 2}, []string{"c", "e"}},
		{"combined", store.AuditFilter{IdP: "entra", Username: "alice", App: "jira", Action: "login", Limit: 10}, []string{"e"}},
		{"no match", store.AuditFilter{IdP: "nope"}, nil},
	}
	for _, tt := range tests {
		if got := details(all(t, s, tt.f)); !slices.Equal(got, tt.want) {
			t.Errorf("%s: got %v, want %v", tt.name, got, tt.want)
		}
	}

	// Limit defaults to 100.
	var many []store.Event
	for i := range 120 {
		many = append(many, event(i, base.Add(-time.Hour)))
	}
	if err := s.Append(ctx, many...); err != nil {
		t.Fatalf("Append: %v", err)
	}
	if got := all(t, s, store.AuditFilter{}); len(got) != 100 {
		t.Fatalf("default limit gave %d events, want 100", len(got))
	}
}

func testConcurrentBind(t *testing.T, s store.Store) {
	const identities, perIdentity = 8, 4
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		winners = map[string]int{}
		errs    []error
	)
	start := make(chan struct{})
	for i := range identities {
		for range perIdentity {
			wg.Go(func() {
				<-start
				sub := fmt.Sprint(i)
				_, err := s.Bind(context.Background(), store.Binding{IdP: "okta", Subject: sub, Username: "contested"})
				mu.Lock()
				defer mu.Unlock()
				switch {
				case err == nil:
					winners[sub]++
				case !errors.Is(err, store.ErrUsernameTaken):
					errs = append(errs, err)
				}
			})
		}
	}
	close(start)
	wg.Wait()
	for _, err := range errs {
		t.Errorf("Bind: unexpected error %v", err)
	}
	if len(winners) != 1 {
		t.Fatalf("winning identities = %v, want exactly one", winners)
	}
	for sub, n := range winners {
		if n != perIdentity {
			t.Errorf("winner %s succeeded %d of %d times; its repeated Binds must all succeed", sub, n, perIdentity)
		}
		got, err := s.BindingByUsername(context.Background(), "contested")
		if err != nil || got.Subject != sub {
			t.Fatalf("BindingByUsername = %+v, %v; want subject %s", got, err, sub)
		}
	}
}

// Several logins of one new identity at once (two tabs, two replicas) all
// succeed: racing with yourself is not a takeover.
func testConcurrentBindSameIdentity(t *testing.T, s store.Store) {
	const rounds, racers = 20, 8
	for r := range rounds {
		var wg sync.WaitGroup
		errs := make(chan error, racers)
		start := make(chan struct{})
		sub := fmt.Sprint(r)
		for range racers {
			wg.Go(func() {
				<-start
				_, err := s.Bind(context.Background(), store.Binding{IdP: "okta", Subject: sub, Username: "user" + sub})
				errs <- err
			})
		}
		close(start)
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatalf("round %d: concurrent Bind of one identity: %v", r, err)
			}
		}
	}
}

func testContextCanceled(t *testing.T, s store.Store) {
	mustBind(t, s, store.Binding{IdP: "okta", Subject: "123", Username: "alice"})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	calls := map[string]func() error{
		"Bind": func() error {
			_, err := s.Bind(ctx, store.Binding{IdP: "okta", Subject: "456", Username: "bob"})
			return err
		},
		"Binding": func() error { _, err := s.Binding(ctx, "okta", "123"); return err },
		"BindingByUsername": func() error {
			_, err := s.BindingByUsername(ctx, "alice")
			return err
		},
		"RecordLogin": func() error { return s.RecordLogin(ctx, "okta", "123", base) },
		"RecordLogins": func() error {
			return s.RecordLogins(ctx, store.Login{IdP: "okta", Subject: "123", At: base})
		},
		"Append": func() error { return s.Append(ctx, event(1, base)) },
		"Audit":  func() error { _, err := s.Audit(ctx, store.AuditFilter{}); return err },
		"Ping":   func() error { return s.Ping(ctx) },
	}
	for name, call := range calls {
		// The caller gave up: that is not the database's fault.
		if err := call(); !errors.Is(err, context.Canceled) || errors.Is(err, store.ErrUnavailable) {
			t.Errorf("%s with canceled context = %v, want context.Canceled and not ErrUnavailable", name, err)
		}
	}
	// Nothing was written.
	if _, err := s.Binding(context.Background(), "okta", "456"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("canceled Bind left a binding: %v", err)
	}
	if evs := all(t, s, store.AuditFilter{}); len(evs) != 0 {
		t.Errorf("canceled Append left %d events", len(evs))
	}
}

func testTimePrecision(t *testing.T, s store.Store) {
	ctx := context.Background()
	at := time.Date(2031, 12, 31, 23, 59, 59, 999_999_999, time.FixedZone("PST", -8*3600))
	b := mustBind(t, s, store.Binding{IdP: "okta", Subject: "1", Username: "u", CreatedAt: at})
	if err := s.RecordLogin(ctx, "okta", "1", at.Add(-500*time.Microsecond)); err != nil {
		t.Fatalf("RecordLogin: %v", err)
	}
	got, err := s.Binding(ctx, "okta", "1")
	if err != nil {
		t.Fatalf("Binding: %v", err)
	}
	want := store.Binding{IdP: "okta", Subject: "1", Username: "u",
		CreatedAt: ms(at), LastLogin: ms(at.Add(-500 * time.Microsecond))}
	sameBinding(t, "Bind result", b, store.Binding{IdP: "okta", Subject: "1", Username: "u", CreatedAt: ms(at)})
	sameBinding(t, "stored", got, want)

	if err := s.Append(ctx, event(1, at)); err != nil {
		t.Fatalf("Append: %v", err)
	}
	evs := all(t, s, store.AuditFilter{Since: at, Until: at.Add(time.Millisecond)})
	if len(evs) != 1 || !evs[0].Time.Equal(ms(at)) || evs[0].Time.Location() != time.UTC {
		t.Fatalf("event time round trip = %+v, want %v UTC", evs, ms(at))
	}
}
