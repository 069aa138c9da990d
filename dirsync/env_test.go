package dirsync

import (
	"context"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/usherhq/usher/config"
	"github.com/usherhq/usher/directory"
	"github.com/usherhq/usher/jit"
	"github.com/usherhq/usher/store"
	"github.com/usherhq/usher/store/sqlite"
	"github.com/usherhq/usher/targets"
	"github.com/usherhq/usher/targets/atlassiantest"
	"github.com/usherhq/usher/targets/jira"
)

// memDir is an in-memory directory with deltas: a token is the change
// sequence it was taken at. Knobs make pulls fail the ways real ones do.
type memDir struct {
	mu       sync.Mutex
	people   map[string]*directory.Person // by ID
	changed  map[string]int               // ID → sequence of its last change
	deleted  map[string]int               // ID → sequence it was deleted at
	seq      int
	expired  int // tokens below this are expired
	pageSize int
	// failAfter makes a pull stop with ErrIncomplete after that many
	// pages (0: never); failDelta makes deltas fail the same way.
	failAfter int
	failDelta bool
	// noGroups makes deltas report people without membership data.
	noGroups             bool
	pulls, deltas, reads int
}

var (
	_ directory.Connector = (*memDir)(nil)
	_ directory.Deltaer   = (*memDir)(nil)
)

func newMemDir() *memDir {
	return &memDir{people: map[string]*directory.Person{}, changed: map[string]int{}, deleted: map[string]int{}, pageSize: 2}
}

func (d *memDir) Name() string { return "corp" }
func (d *memDir) IdP() string  { return "okta" }

// put adds or replaces a person (key: ID "id-<name>", subject
// "sub-<name>", username name).
func (d *memDir) put(name string, status directory.Status, groups ...string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.seq++
	id := "id-" + name
	p := &directory.Person{ID: id, Subject: "sub-" + name, Username: name, Email: name + "@corp.test",
		DisplayName: "Person " + name, Status: status, Groups: slices.Clone(groups), GroupsComplete: true,
		Attributes: map[string][]string{"department": {"dept-" + name}}}
	for _, g := range groups {
		p.GroupIDs = append(p.GroupIDs, "gid-"+g)
	}
	d.people[id], d.changed[id] = p, d.seq
	delete(d.deleted, id)
}

func (d *memDir) remove(name string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.seq++
	delete(d.people, "id-"+name)
	d.deleted["id-"+name] = d.seq
}

func (d *memDir) expire() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.seq++
	d.expired = d.seq // every token taken so far
}

func (d *memDir) Pull(ctx context.Context, fn func(directory.Page) error) error {
	d.mu.Lock()
	d.pulls++
	ids := make([]string, 0, len(d.people))
	for id := range d.people {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	var all []directory.Person
	for _, id := range ids {
		all = append(all, *d.people[id])
	}
	size, failAfter := d.pageSize, d.failAfter
	d.mu.Unlock()
	for i, page := 0, 0; i < len(all); i += size {
		if failAfter > 0 && page == failAfter {
			return fmt.Errorf("memdir: page %d: HTTP 503: %w", page+1, directory.ErrIncomplete)
		}
		page++
		if err := fn(directory.Page{People: all[i:min(i+size, len(all))]}); err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
	}
	return nil
}

func (d *memDir) Person(_ context.Context, subject string) (*directory.Person, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.reads++
	for _, p := range d.people {
		if p.Subject == subject {
			q := *p
			return &q, nil
		}
	}
	return nil, directory.ErrNotFound
}

func (d *memDir) Delta(_ context.Context, token string, fn func(directory.Page) error) (string, error) {
	d.mu.Lock()
	d.deltas++
	cur := strconv.Itoa(d.seq)
	if token == "" {
		d.mu.Unlock()
		return cur, nil
	}
	since, err := strconv.Atoi(token)
	if err != nil || since < d.expired {
		d.mu.Unlock()
		return "", fmt.Errorf("memdir: token %q: %w", token, directory.ErrDeltaExpired)
	}
	if d.failDelta {
		d.mu.Unlock()
		return "", fmt.Errorf("memdir: delta: HTTP 503: %w", directory.ErrIncomplete)
	}
	var out []directory.Person
	for id, seq := range d.changed {
		if p := d.people[id]; seq > since && p != nil {
			q := *p
			if d.noGroups {
				q.Groups, q.GroupIDs, q.GroupsComplete = nil, nil, false
			}
			out = append(out, q)
		}
	}
	for id, seq := range d.deleted {
		if seq > since {
			out = append(out, directory.Person{ID: id, Subject: "sub-" + id[3:], Status: directory.Deleted})
		}
	}
	d.mu.Unlock()
	slices.SortFunc(out, func(a, b directory.Person) int { return cmpString(a.ID, b.ID) })
	if len(out) > 0 {
		if err := fn(directory.Page{People: out}); err != nil {
			return "", err
		}
	}
	return cur, nil
}

func cmpString(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// env is a real lifecycle over SQLite and an emulated Jira.
type env struct {
	st    *sqlite.Store
	jira  *atlassiantest.Server
	l     *jit.Lifecycle
	dir   *memDir
	clock *clockwork.FakeClock
	runs  []*Result // OnRun calls
	mu    sync.Mutex
}

var t0 = time.Date(2025, 6, 1, 3, 0, 0, 0, time.UTC)

// mapping: everyone needs staff; engineering gives jira-developers; all
// get usher-users.
var mapping = config.Mapping{
	Attributes: map[string]config.ValueRule{"department": {Claim: "department"}},
	Groups: config.GroupMapping{
		Map:      []config.GroupMap{{IdPGroup: "engineering", Groups: config.AppGroups{"jira": {"jira-developers"}}}},
		Defaults: config.AppGroups{"*": {"usher-users"}},
	},
	Access: config.Access{RequireGroups: []string{"staff"}},
}

func newEnv(t testing.TB) *env {
	t.Helper()
	clock := clockwork.NewFakeClockAt(t0)
	st, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "usher.db"), sqlite.Options{Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	srv := atlassiantest.New(atlassiantest.Jira, atlassiantest.Options{AdminUser: "admin", AdminPassword: "pw", Groups: []string{"hand-picked"}})
	hs := httptest.NewServer(srv)
	t.Cleanup(hs.Close)
	upstream, err := url.Parse(hs.URL)
	if err != nil {
		t.Fatal(err)
	}
	deps := targets.Deps{Upstream: upstream, Sleep: func(ctx context.Context, _ time.Duration) error { return ctx.Err() }}
	j, err := (&jira.Config{Conn: targets.Conn{Username: "admin", Password: config.SecretValue("pw")}}).Open("jira", deps)
	if err != nil {
		t.Fatal(err)
	}
	m, err := jit.Compile(mapping.WithDefaults(config.ClaimDefaults{Username: "preferred_username", DisplayName: "name"}),
		jit.Scope{IdP: "okta", Apps: []string{"jira"}})
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.DiscardHandler)
	l := &jit.Lifecycle{
		Mappers: map[string]*jit.Mapper{"okta": m}, Apps: map[string]targets.Target{"jira": j}, Store: st,
		Audit: &jit.AuditLog{Store: st, Log: log, Now: clock.Now}, Log: log, Now: clock.Now, FastPath: time.Hour, CreateGroups: true,
	}
	return &env{st: st, jira: srv, l: l, dir: newMemDir(), clock: clock}
}

func (e *env) syncer(t testing.TB, cfg Config) *Syncer {
	t.Helper()
	s, err := New(cfg, Deps{
		Conn: e.dir, Lifecycle: e.l, Mapper: e.l.Mappers["okta"], Apps: []string{"jira"}, Store: e.st,
		Clock: e.clock, Owner: "replica-a",
		OnRun: func(r *Result) { e.mu.Lock(); e.runs = append(e.runs, r); e.mu.Unlock() },
	})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func (e *env) groups(t *testing.T, name string) []string {
	t.Helper()
	u, ok := e.jira.User(name)
	if !ok {
		t.Fatalf("jira has no user %s", name)
	}
	g := slices.Clone(u.Groups)
	slices.Sort(g)
	return g
}

func (e *env) audit(t *testing.T, action jit.Action) []store.Event {
	t.Helper()
	evs, err := e.st.Audit(t.Context(), store.AuditFilter{Action: string(action), Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	return evs
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
