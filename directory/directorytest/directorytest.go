package directorytest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/usherhq/usher/directory"
)

// opTimeout bounds one connector operation in real time: the suite never
// sleeps, so anything slower is a hang.
const opTimeout = 60 * time.Second

// Run runs the contract against the connector the opener's backends
// open. Subtests run one after the other (a backend may be a real server
// shared between them); each gets a fresh Backend.
func Run(t *testing.T, open Opener) {
	t.Run("Pull", func(t *testing.T) { testPull(t, open) })
	t.Run("PullCallbackError", func(t *testing.T) { testPullCallbackError(t, open) })
	t.Run("PullCancelled", func(t *testing.T) { testPullCancelled(t, open) })
	t.Run("Person", func(t *testing.T) { testPerson(t, open) })
	t.Run("Concurrent", func(t *testing.T) { testConcurrent(t, open) })
	t.Run("PullThrottled", func(t *testing.T) { testPullThrottled(t, open) })
	t.Run("PullFailingPage", func(t *testing.T) {
		testPullIncomplete(t, open, func(c Caps) bool { return c.FailPage }, Backend.FailPage)
	})
	t.Run("PullTruncated", func(t *testing.T) {
		testPullIncomplete(t, open, func(c Caps) bool { return c.Truncate }, Backend.Truncate)
	})
	t.Run("Delta", func(t *testing.T) { testDelta(t, open) })
}

// env is one subtest's backend, seeded, with the connector opened on it.
type env struct {
	b      Backend
	caps   Caps
	clock  *clockwork.FakeClock
	calls  *Calls
	seeded Seeded
	conn   directory.Connector
	// groups are each fixture person's expected groups (transitive), by
	// key.
	groups map[string][]string
}

func setup(t *testing.T, open Opener) *env {
	t.Helper()
	clock := clockwork.NewFakeClockAt(time.Date(2025, 3, 1, 9, 0, 0, 0, time.UTC))
	b := open(t, clock)
	e := &env{b: b, caps: b.Caps(), clock: clock, calls: &Calls{}}
	f := NewFixture(e.caps)
	e.groups = f.transitive()
	e.seeded = b.Seed(t, f)
	for _, p := range f.People {
		if _, ok := e.seeded.People[p.Key]; !ok {
			t.Fatalf("Seed returned no Want for %q", p.Key)
		}
	}
	for _, g := range f.Groups {
		if e.seeded.Groups[g.Name] == "" {
			t.Fatalf("Seed returned no ID for group %q", g.Name)
		}
	}
	e.conn = b.Open(t, Deps(t, clock, e.calls))
	return e
}

// Deps are the dependencies the suite opens connectors with: the fake
// clock, a logger writing to the test log and a call counter. Connector
// tests outside the suite may use them too.
func Deps(t *testing.T, clock clockwork.Clock, calls *Calls) directory.Deps {
	return directory.Deps{
		Log:     slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug})),
		Clock:   clock,
		Observe: calls.Observe,
	}
}

// Calls counts the API calls a connector reports through
// directory.Deps.Observe.
type Calls struct {
	mu sync.Mutex
	n  map[string]int // "op result" → count
}

// Observe is a directory.Deps.Observe.
func (c *Calls) Observe(op, result string, _ time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n == nil {
		c.n = map[string]int{}
	}
	c.n[op+" "+result]++
}

// Total is the number of calls observed with that result ("" for all).
func (c *Calls) Total(result string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for k, v := range c.n {
		if result == "" || strings.HasSuffix(k, " "+result) {
			n += v
		}
	}
	return n
}

// Reset forgets the calls counted so far.
func (c *Calls) Reset() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.n = nil
}

// String lists the counts, for failure messages.
func (c *Calls) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	keys := make([]string, 0, len(c.n))
	for k := range c.n {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "%s=%d ", k, c.n[k])
	}
	return strings.TrimSpace(b.String())
}

// NewFixture is the suite's one fixture, shaped by what the directory
// can express:
//
//	groups: platform ⊂ engineering ⊂ staff (nested when Caps.Nesting), admins
//	ada   active    engineering, admins → staff through nesting
//	bob   disabled  staff
//	cleo  inactive  staff (only with Caps.Inactive)
//	dan   active    platform → engineering, staff through nesting
//	eve   active    admins, outside the scope (not in staff)
//
// Without nesting, ada and dan are direct members of every group they
// would reach through it, so the expected groups are the same.
func NewFixture(c Caps) Fixture {
	f := Fixture{ScopeGroup: "staff"}
	ada := person("ada", "Ada", "Lovelace", directory.Active, true)
	bob := person("bob", "Bob", "Babbage", directory.Disabled, true)
	cleo := person("cleo", "Cleo", "Cray", directory.Inactive, true)
	dan := person("dan", "Dan", "Dijkstra", directory.Active, true)
	eve := person("eve", "Eve", "Easley", directory.Active, false)
	bob.Groups = []string{"staff"}
	cleo.Groups = []string{"staff"}
	eve.Groups = []string{"admins"}
	if c.Nesting {
		f.Groups = []Group{
			{Name: "platform"},
			{Name: "engineering", Subgroups: []string{"platform"}},
			{Name: "staff", Subgroups: []string{"engineering"}},
			{Name: "admins"},
		}
		ada.Groups = []string{"engineering", "admins"}
		dan.Groups = []string{"platform"}
	} else {
		f.Groups = []Group{{Name: "platform"}, {Name: "engineering"}, {Name: "staff"}, {Name: "admins"}}
		ada.Groups = []string{"engineering", "staff", "admins"}
		dan.Groups = []string{"platform", "engineering", "staff"}
	}
	f.People = []Person{ada, bob}
	if c.Inactive {
		f.People = append(f.People, cleo)
	}
	f.People = append(f.People, dan, eve)
	return f
}

func person(key, given, family string, s directory.Status, inScope bool) Person {
	return Person{
		Key: key, Username: key, Email: key + "@example.test",
		GivenName: given, FamilyName: family, DisplayName: given + " " + family,
		Status: s, InScope: inScope,
	}
}

// transitive is every person's expected groups: direct memberships and
// every group reached through Subgroups, sorted.
func (f Fixture) transitive() map[string][]string {
	parents := map[string][]string{} // group → groups it is a direct member of
	for _, g := range f.Groups {
		for _, s := range g.Subgroups {
			parents[s] = append(parents[s], g.Name)
		}
	}
	out := map[string][]string{}
	for _, p := range f.People {
		out[p.Key] = closure(p.Groups, parents)
	}
	return out
}

func closure(direct []string, parents map[string][]string) []string {
	seen := map[string]bool{}
	stack := slices.Clone(direct)
	for len(stack) > 0 {
		g := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if seen[g] {
			continue
		}
		seen[g] = true
		stack = append(stack, parents[g]...)
	}
	out := make([]string, 0, len(seen))
	for g := range seen {
		out = append(out, g)
	}
	slices.Sort(out)
	return out
}

// Drive runs op while advancing the fake clock one second at a time
// whenever something waits on it, so throttling and backoff take no real
// time. It returns op's error and how much fake time passed. op gets a
// context bounded in real time. Connector tests outside the suite use it
// for their own fault cases.
func Drive(t *testing.T, clock *clockwork.FakeClock, op func(ctx context.Context) error) (time.Duration, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- op(ctx) }()
	var advanced time.Duration
	for {
		waiting := make(chan error, 1)
		bctx, bcancel := context.WithCancel(ctx)
		go func() { waiting <- clock.BlockUntilContext(bctx, 1) }()
		select {
		case err := <-done:
			bcancel()
			return advanced, err
		case err := <-waiting:
			bcancel()
			if err != nil {
				// The real-time bound ran out: wait for op to give up.
				return advanced, <-done
			}
			clock.Advance(time.Second)
			advanced += time.Second
		}
	}
}

// pull runs a Pull to the end and returns a copy of every person listed.
func pull(t *testing.T, e *env) ([]directory.Person, time.Duration, error) {
	t.Helper()
	var got []directory.Person
	waited, err := Drive(t, e.clock, func(ctx context.Context) error {
		return e.conn.Pull(ctx, func(p directory.Page) error {
			for _, q := range p.People {
				got = append(got, clonePerson(q))
			}
			return nil
		})
	})
	return got, waited, err
}

func clonePerson(p directory.Person) directory.Person {
	p.Groups = slices.Clone(p.Groups)
	p.GroupIDs = slices.Clone(p.GroupIDs)
	if p.Attributes != nil {
		a := make(map[string][]string, len(p.Attributes))
		for k, v := range p.Attributes {
			a[k] = slices.Clone(v)
		}
		p.Attributes = a
	}
	return p
}

// checkPerson compares a listed person with the fixture's.
func (e *env) checkPerson(t *testing.T, got directory.Person, p Person, wantGroups []string) {
	t.Helper()
	w := e.seeded.People[p.Key]
	where := p.Key
	check := func(field, got, want string) {
		t.Helper()
		if got != want {
			t.Errorf("%s: %s = %q, want %q", where, field, got, want)
		}
	}
	check("ID", got.ID, w.ID)
	check("Subject", got.Subject, w.Subject)
	check("Username", got.Username, w.Username)
	check("Email", got.Email, p.Email)
	check("GivenName", got.GivenName, p.GivenName)
	check("FamilyName", got.FamilyName, p.FamilyName)
	check("DisplayName", got.DisplayName, p.DisplayName)
	if got.Status != p.Status {
		t.Errorf("%s: Status = %v, want %v", where, got.Status, p.Status)
	}
	if !got.GroupsComplete {
		t.Errorf("%s: GroupsComplete = false, want true", where)
	}
	e.checkGroups(t, where, got, wantGroups)
}

// checkGroups compares Groups as a set and checks that GroupIDs are the
// same groups' IDs, in the same order.
func (e *env) checkGroups(t *testing.T, where string, got directory.Person, want []string) {
	t.Helper()
	names := slices.Clone(got.Groups)
	slices.Sort(names)
	if !slices.Equal(names, want) {
		t.Errorf("%s: Groups = %q, want %q", where, names, want)
	}
	if len(got.GroupIDs) != len(got.Groups) {
		t.Errorf("%s: %d GroupIDs for %d Groups", where, len(got.GroupIDs), len(got.Groups))
		return
	}
	for i, g := range got.Groups {
		if id := e.seeded.Groups[g]; id != "" && got.GroupIDs[i] != id {
			t.Errorf("%s: GroupIDs[%d] = %q, want %q (the ID of %q)", where, i, got.GroupIDs[i], id, g)
		}
	}
}

// byID indexes people by ID, failing on duplicates.
func byID(t *testing.T, people []directory.Person) map[string]directory.Person {
	t.Helper()
	m := make(map[string]directory.Person, len(people))
	for _, p := range people {
		if _, dup := m[p.ID]; dup {
			t.Errorf("person %s (%s) listed twice", p.ID, p.Subject)
		}
		m[p.ID] = p
	}
	return m
}

// checkPull compares a complete pull with the fixture: exactly the
// in-scope people, each as seeded.
func (e *env) checkPull(t *testing.T, got []directory.Person) {
	t.Helper()
	f := NewFixture(e.caps)
	m := byID(t, got)
	for _, p := range f.People {
		w := e.seeded.People[p.Key]
		q, ok := m[w.ID]
		switch {
		case p.InScope && !ok:
			t.Errorf("%s (%s) missing from the pull", p.Key, w.ID)
		case !p.InScope && ok:
			t.Errorf("%s (%s) is outside the scope but was listed", p.Key, w.ID)
		case ok:
			e.checkPerson(t, q, p, e.groups[p.Key])
			if q.OutOfScope {
				t.Errorf("%s: OutOfScope set by Pull", p.Key)
			}
		}
		delete(m, w.ID)
	}
	for id, q := range m {
		t.Errorf("pull listed %s (%s), who is not in the fixture", id, q.Subject)
	}
}

func testPull(t *testing.T, open Opener) {
	e := setup(t, open)
	if n := e.conn.Name(); n == "" {
		t.Error("Name() is empty")
	}
	got, _, err := pull(t, e)
	if err != nil {
		t.Fatalf("Pull: %v", err)
	}
	e.checkPull(t, got)
	if e.calls.Total("") == 0 {
		t.Error("the connector reported no calls to Deps.Observe")
	}
	t.Logf("pull calls: %s", e.calls)

	// A second pull of an unchanged directory lists the same.
	again, _, err := pull(t, e)
	if err != nil {
		t.Fatalf("second Pull: %v", err)
	}
	e.checkPull(t, again)
}

func testPullCallbackError(t *testing.T, open Opener) {
	e := setup(t, open)
	stop := errors.New("callback says stop")
	pages := 0
	_, err := Drive(t, e.clock, func(ctx context.Context) error {
		return e.conn.Pull(ctx, func(directory.Page) error {
			pages++
			return stop
		})
	})
	if err != stop {
		t.Errorf("Pull = %v, want the callback's error as is", err)
	}
	if pages != 1 {
		t.Errorf("callback called %d times after returning an error, want 1", pages)
	}
}

func testPullCancelled(t *testing.T, open Opener) {
	e := setup(t, open)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err := e.conn.Pull(ctx, func(directory.Page) error { return nil })
	if err == nil {
		t.Fatal("Pull with a cancelled context returned nil: a pull that read nothing claimed to be complete")
	}
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Pull = %v, want an error wrapping context.Canceled", err)
	}
}

func testPerson(t *testing.T, open Opener) {
	e := setup(t, open)
	f := NewFixture(e.caps)
	lookup := func(subject string) (*directory.Person, error) {
		var p *directory.Person
		_, err := Drive(t, e.clock, func(ctx context.Context) error {
			var err error
			p, err = e.conn.Person(ctx, subject)
			return err
		})
		return p, err
	}
	for _, fp := range f.People {
		w := e.seeded.People[fp.Key]
		got, err := lookup(w.Subject)
		if err != nil {
			t.Errorf("Person(%s %q): %v", fp.Key, w.Subject, err)
			continue
		}
		if got.OutOfScope == fp.InScope {
			t.Errorf("Person(%s): OutOfScope = %v, want %v", fp.Key, got.OutOfScope, !fp.InScope)
		}
		e.checkPerson(t, *got, fp, e.groups[fp.Key])
	}

	_, err := lookup(e.seeded.Unknown)
	if !errors.Is(err, directory.ErrNotFound) {
		t.Errorf("Person(unknown %q) = %v, want ErrNotFound", e.seeded.Unknown, err)
	}
	if errors.Is(err, directory.ErrIncomplete) {
		t.Errorf("Person(unknown) = %v: not found is not an incomplete listing", err)
	}
}

// testConcurrent runs a pull and lookups at once (run with -race).
func testConcurrent(t *testing.T, open Opener) {
	e := setup(t, open)
	f := NewFixture(e.caps)
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for range 2 {
		wg.Go(func() {
			errs <- e.conn.Pull(ctx, func(directory.Page) error { return nil })
		})
	}
	for _, p := range f.People {
		wg.Go(func() {
			_, err := e.conn.Person(ctx, e.seeded.People[p.Key].Subject)
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("concurrent call: %v", err)
		}
	}
}

func testPullThrottled(t *testing.T, open Opener) {
	e := setup(t, open)
	if !e.caps.Throttle {
		t.Skip("backend cannot throttle")
	}
	const wait = 7 * time.Second
	e.b.Throttle(t, wait)
	got, waited, err := pull(t, e)
	if err != nil {
		t.Fatalf("throttled Pull: %v (a throttle must be waited out, not fail the pull)", err)
	}
	e.checkPull(t, got)
	if waited < wait {
		t.Errorf("the connector waited %s on its clock, want at least the %s the directory asked for", waited, wait)
	}
	if e.calls.Total("throttled") == 0 {
		t.Errorf("no call reported as throttled to Deps.Observe (calls: %s)", e.calls)
	}
}

func testPullIncomplete(t *testing.T, open Opener, supported func(Caps) bool, arm func(Backend, *testing.T)) {
	e := setup(t, open)
	if !supported(e.caps) {
		t.Skip("backend cannot inject this fault")
	}
	arm(e.b, t)
	got, _, err := pull(t, e)
	if err == nil {
		t.Fatalf("Pull returned nil after listing %d people: an incomplete listing was called complete", len(got))
	}
	if !errors.Is(err, directory.ErrIncomplete) {
		t.Errorf("Pull = %v, want an error wrapping directory.ErrIncomplete", err)
	}
	t.Logf("Pull: %v (calls: %s)", err, e.calls)
}

// delta runs one Delta and returns the people it reported, by ID (a
// later report of the same person wins), and the calls it took.
func (e *env) delta(t *testing.T, d directory.Deltaer, token string) (map[string]directory.Person, string, int, error) {
	t.Helper()
	e.calls.Reset()
	got := map[string]directory.Person{}
	var next string
	_, err := Drive(t, e.clock, func(ctx context.Context) error {
		var err error
		next, err = d.Delta(ctx, token, func(p directory.Page) error {
			for _, q := range p.People {
				got[q.ID] = clonePerson(q)
			}
			return nil
		})
		return err
	})
	return got, next, e.calls.Total(""), err
}

func testDelta(t *testing.T, open Opener) {
	e := setup(t, open)
	if !e.caps.Delta {
		t.Skip("connector implements no delta")
	}
	d, ok := e.conn.(directory.Deltaer)
	if !ok {
		t.Fatalf("Caps.Delta is set but %T does not implement directory.Deltaer", e.conn)
	}
	f := NewFixture(e.caps)

	got, tok0, _, err := e.delta(t, d, "")
	if err != nil {
		t.Fatalf("Delta(\"\"): %v", err)
	}
	if tok0 == "" {
		t.Fatal("Delta(\"\") returned an empty token")
	}
	if len(got) != 0 {
		t.Errorf("Delta(\"\") listed %d people, want none (a starting token only)", len(got))
	}

	// Changes: a new person, a rename, a disable, a delete, and (where the
	// directory has one) a return from a temporary state.
	fay := person("fay", "Fay", "Fermi", directory.Active, true)
	fay.Groups = []string{"platform"}
	if !e.caps.Nesting {
		fay.Groups = []string{"platform", "engineering", "staff"}
	}
	wantFay := e.b.Create(t, fay)
	e.seeded.People["fay"] = wantFay
	e.b.Rename(t, "ada", "Ada King")
	e.b.SetStatus(t, "dan", directory.Disabled)
	e.b.Delete(t, "bob")
	if e.caps.Inactive {
		e.b.SetStatus(t, "cleo", directory.Active)
	}

	got, tok1, calls, err := e.delta(t, d, tok0)
	if err != nil {
		t.Fatalf("Delta(changes): %v", err)
	}
	if tok1 == "" {
		t.Fatal("Delta returned an empty next token")
	}
	t.Logf("delta reported %d people in %d calls: %s", len(got), calls, e.calls)
	if limit := 8 + 3*len(got); calls > limit {
		t.Errorf("delta took %d calls for %d people, want at most %d", calls, len(got), limit)
	}

	want := map[string]Person{} // current state by key
	for _, p := range f.People {
		want[p.Key] = p
	}
	ada := want["ada"]
	ada.DisplayName = "Ada King"
	want["ada"] = ada
	dan := want["dan"]
	dan.Status = directory.Disabled
	want["dan"] = dan
	if e.caps.Inactive {
		cleo := want["cleo"]
		cleo.Status = directory.Active
		want["cleo"] = cleo
	}
	want["fay"] = fay
	groups := e.groups
	groups["fay"] = closure(fay.Groups, map[string][]string{"platform": {"engineering"}, "engineering": {"staff"}})

	mustReport := []string{"fay", "ada", "dan"}
	if e.caps.Inactive {
		mustReport = append(mustReport, "cleo")
	}
	for _, k := range mustReport {
		if _, ok := got[e.seeded.People[k].ID]; !ok {
			t.Errorf("delta did not report the change to %s", k)
		}
	}
	bob := e.seeded.People["bob"]
	if q, ok := got[bob.ID]; ok {
		if !q.Status.Leaver() {
			t.Errorf("deleted bob reported with Status %v, want a leaver", q.Status)
		}
		if e.caps.DeltaDeletes && q.Status != directory.Deleted {
			t.Errorf("deleted bob reported with Status %v, want Deleted", q.Status)
		}
		delete(got, bob.ID)
	} else if e.caps.DeltaDeletes {
		t.Error("delta did not report deleted bob")
	}

	// Everyone reported (the changed people and any the directory repeats)
	// must be reported as they now are.
	for key, p := range want {
		if key == "bob" {
			continue
		}
		q, ok := got[e.seeded.People[key].ID]
		if !ok {
			continue
		}
		delete(got, q.ID)
		if !p.InScope {
			if !q.OutOfScope {
				t.Errorf("delta reported %s, who is outside the scope, without OutOfScope", key)
			}
			continue
		}
		if q.OutOfScope {
			t.Errorf("delta reported %s as OutOfScope", key)
		}
		w := e.seeded.People[key]
		if q.Subject != w.Subject || q.Status != p.Status || q.DisplayName != p.DisplayName || q.Username != w.Username {
			t.Errorf("delta reported %s as {Subject %q, Username %q, Status %v, DisplayName %q}, want {%q, %q, %v, %q}",
				key, q.Subject, q.Username, q.Status, q.DisplayName, w.Subject, w.Username, p.Status, p.DisplayName)
		}
		if q.GroupsComplete {
			e.checkGroups(t, key, q, groups[key])
		}
	}
	for id, q := range got {
		t.Errorf("delta reported %s (%s), who is not in the directory", id, q.Subject)
	}

	// Nothing changed since tok1: the delta still works and hands on a
	// token.
	_, tok2, calls, err := e.delta(t, d, tok1)
	if err != nil {
		t.Fatalf("Delta(no changes): %v", err)
	}
	if tok2 == "" {
		t.Fatal("Delta(no changes) returned an empty token")
	}
	t.Logf("empty delta took %d calls", calls)

	if !e.caps.ExpireDelta {
		t.Log("backend cannot expire delta tokens; expiry not tested")
		return
	}
	e.b.ExpireDelta(t)
	_, _, _, err = e.delta(t, d, tok2)
	if !errors.Is(err, directory.ErrDeltaExpired) {
		t.Errorf("Delta(expired token) = %v, want ErrDeltaExpired", err)
	}
}
