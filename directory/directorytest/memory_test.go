package directorytest_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/usherhq/usher/directory"
	"github.com/usherhq/usher/directory/directorytest"
)

// TestSuiteAgainstMemory runs the suite against a small in-memory
// directory and connector written to the contract, proving that the
// suite passes a correct connector and showing backend authors the
// shape of a Backend.
func TestSuiteAgainstMemory(t *testing.T) {
	directorytest.Run(t, func(t *testing.T, clock *clockwork.FakeClock) directorytest.Backend {
		return &memBackend{dir: &memDir{clock: clock, people: map[string]*memPerson{}, groups: map[string]*memGroup{}}}
	})
}

// memDir is the "server": people, groups, a change sequence and faults.
type memDir struct {
	mu     sync.Mutex
	clock  clockwork.Clock
	seq    int
	people map[string]*memPerson // by ID
	groups map[string]*memGroup  // by name
	// faults
	throttle     time.Duration // next page-2 request is throttled once
	failPage     bool
	truncate     bool
	expiredBelow int // delta tokens below this are refused
}

type memPerson struct {
	p       directorytest.Person
	id      string
	seq     int
	deleted bool
}

type memGroup struct {
	name, id string
	parents  []string
}

// page answers one page request of the people listing: people after
// offset, wait > 0 to throttle, or an error.
func (d *memDir) page(offset, size int) (people []memPerson, more bool, wait time.Duration, err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if offset > 0 {
		switch {
		case d.throttle > 0:
			wait, d.throttle = d.throttle, 0
			return nil, false, wait, nil
		case d.failPage:
			return nil, false, 0, errors.New("503 unavailable")
		case d.truncate:
			return nil, false, 0, errTruncated
		}
	}
	ids := make([]string, 0, len(d.people))
	for id, p := range d.people {
		if !p.deleted && p.p.InScope {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	for i := offset; i < len(ids) && i < offset+size; i++ {
		people = append(people, *d.people[ids[i]])
	}
	return people, offset+size < len(ids), 0, nil
}

var errTruncated = errors.New("listing truncated")

func (d *memDir) groupsOf(p *memPerson) []string {
	var out []string
	seen := map[string]bool{}
	stack := slices.Clone(p.p.Groups)
	for len(stack) > 0 {
		g := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if seen[g] {
			continue
		}
		seen[g] = true
		out = append(out, g)
		stack = append(stack, d.groups[g].parents...)
	}
	slices.Sort(out)
	return out
}

// memConn is the connector under test.
type memConn struct {
	dir  *memDir
	deps directory.Deps
}

func (c *memConn) Name() string { return "memory" }
func (c *memConn) IdP() string  { return "mem-idp" }

func (c *memConn) toPerson(p memPerson) directory.Person {
	c.dir.mu.Lock()
	groups := c.dir.groupsOf(&p)
	ids := make([]string, len(groups))
	for i, g := range groups {
		ids[i] = c.dir.groups[g].id
	}
	c.dir.mu.Unlock()
	return directory.Person{
		ID: p.id, Subject: "sub-" + p.p.Key, Username: p.p.Username, Email: p.p.Email,
		DisplayName: p.p.DisplayName, GivenName: p.p.GivenName, FamilyName: p.p.FamilyName,
		Status: p.p.Status, Groups: groups, GroupIDs: ids, GroupsComplete: true,
		OutOfScope: !p.p.InScope,
	}
}

func (c *memConn) wait(ctx context.Context, d time.Duration) error {
	tm := c.deps.Clock.NewTimer(d)
	defer tm.Stop()
	select {
	case <-tm.Chan():
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (c *memConn) Pull(ctx context.Context, fn func(directory.Page) error) error {
	const size = 2
	for offset := 0; ; offset += size {
		var people []memPerson
		var more bool
		for attempt := 0; ; attempt++ {
			if err := ctx.Err(); err != nil {
				return fmt.Errorf("memory: pull: %w", err)
			}
			ps, m, wait, err := c.dir.page(offset, size)
			switch {
			case wait > 0:
				c.deps.Observe("users", "throttled", 0)
				if err := c.wait(ctx, wait); err != nil {
					return fmt.Errorf("memory: pull: %w", err)
				}
				continue
			case errors.Is(err, errTruncated):
				c.deps.Observe("users", "error", 0)
				return fmt.Errorf("memory: page at %d: %w: %w", offset, directory.ErrIncomplete, err)
			case err != nil:
				c.deps.Observe("users", "error", 0)
				if attempt == 3 {
					return fmt.Errorf("memory: page at %d: %w: %w", offset, directory.ErrIncomplete, err)
				}
				if err := c.wait(ctx, time.Duration(attempt+1)*time.Second); err != nil {
					return fmt.Errorf("memory: pull: %w", err)
				}
				continue
			}
			c.deps.Observe("users", "ok", 0)
			people, more = ps, m
			break
		}
		var page directory.Page
		for _, p := range people {
			page.People = append(page.People, c.toPerson(p))
		}
		if len(page.People) > 0 {
			if err := fn(page); err != nil {
				return err
			}
		}
		if !more {
			return nil
		}
	}
}

func (c *memConn) Person(ctx context.Context, subject string) (*directory.Person, error) {
	c.deps.Observe("user", "ok", 0)
	c.dir.mu.Lock()
	var found *memPerson
	for _, p := range c.dir.people {
		if "sub-"+p.p.Key == subject && !p.deleted {
			cp := *p
			found = &cp
		}
	}
	c.dir.mu.Unlock()
	if found == nil {
		return nil, fmt.Errorf("memory: person %q: %w", subject, directory.ErrNotFound)
	}
	p := c.toPerson(*found)
	return &p, nil
}

func (c *memConn) Delta(ctx context.Context, token string, fn func(directory.Page) error) (string, error) {
	c.deps.Observe("delta", "ok", 0)
	c.dir.mu.Lock()
	seq := c.dir.seq
	if token == "" {
		c.dir.mu.Unlock()
		return strconv.Itoa(seq), nil
	}
	since, err := strconv.Atoi(token)
	if err != nil || since < c.dir.expiredBelow {
		c.dir.mu.Unlock()
		return "", fmt.Errorf("memory: token %q: %w", token, directory.ErrDeltaExpired)
	}
	var changed []memPerson
	for _, p := range c.dir.people {
		if p.seq > since {
			changed = append(changed, *p)
		}
	}
	c.dir.mu.Unlock()
	var page directory.Page
	for _, p := range changed {
		q := c.toPerson(p)
		if p.deleted {
			q = directory.Person{ID: p.id, Subject: q.Subject, Status: directory.Deleted}
		}
		page.People = append(page.People, q)
	}
	if len(page.People) > 0 {
		if err := fn(page); err != nil {
			return "", err
		}
	}
	return strconv.Itoa(seq), nil
}

// memBackend adapts memDir to directorytest.Backend.
type memBackend struct{ dir *memDir }

func (b *memBackend) Caps() directorytest.Caps {
	return directorytest.Caps{
		Nesting: true, Inactive: true, Delta: true, DeltaDeletes: true,
		Throttle: true, FailPage: true, Truncate: true, ExpireDelta: true,
	}
}

func (b *memBackend) Seed(t *testing.T, f directorytest.Fixture) directorytest.Seeded {
	s := directorytest.Seeded{People: map[string]directorytest.Want{}, Groups: map[string]string{}, Unknown: "sub-nobody"}
	b.dir.mu.Lock()
	for i, g := range f.Groups {
		b.dir.groups[g.Name] = &memGroup{name: g.Name, id: fmt.Sprintf("g%d", i)}
		s.Groups[g.Name] = fmt.Sprintf("g%d", i)
	}
	for _, g := range f.Groups {
		for _, sub := range g.Subgroups {
			b.dir.groups[sub].parents = append(b.dir.groups[sub].parents, g.Name)
		}
	}
	b.dir.mu.Unlock()
	for _, p := range f.People {
		s.People[p.Key] = b.Create(t, p)
	}
	return s
}

func (b *memBackend) Open(t *testing.T, deps directory.Deps) directory.Connector {
	return &memConn{dir: b.dir, deps: deps}
}

func (b *memBackend) Create(t *testing.T, p directorytest.Person) directorytest.Want {
	b.dir.mu.Lock()
	defer b.dir.mu.Unlock()
	b.dir.seq++
	id := fmt.Sprintf("u%02d", len(b.dir.people))
	b.dir.people[id] = &memPerson{p: p, id: id, seq: b.dir.seq}
	return directorytest.Want{ID: id, Subject: "sub-" + p.Key, Username: p.Username}
}

func (b *memBackend) change(t *testing.T, key string, fn func(*memPerson)) {
	b.dir.mu.Lock()
	defer b.dir.mu.Unlock()
	for _, p := range b.dir.people {
		if p.p.Key == key {
			b.dir.seq++
			p.seq = b.dir.seq
			fn(p)
			return
		}
	}
	t.Fatalf("no person %q", key)
}

func (b *memBackend) Rename(t *testing.T, key, name string) {
	b.change(t, key, func(p *memPerson) { p.p.DisplayName = name })
}

func (b *memBackend) SetStatus(t *testing.T, key string, s directory.Status) {
	b.change(t, key, func(p *memPerson) { p.p.Status = s })
}

func (b *memBackend) Delete(t *testing.T, key string) {
	b.change(t, key, func(p *memPerson) { p.deleted = true })
}

func (b *memBackend) Throttle(t *testing.T, wait time.Duration) {
	b.dir.mu.Lock()
	defer b.dir.mu.Unlock()
	b.dir.throttle = wait
}

func (b *memBackend) FailPage(t *testing.T) {
	b.dir.mu.Lock()
	defer b.dir.mu.Unlock()
	b.dir.failPage = true
}

func (b *memBackend) Truncate(t *testing.T) {
	b.dir.mu.Lock()
	defer b.dir.mu.Unlock()
	b.dir.truncate = true
}

func (b *memBackend) ExpireDelta(t *testing.T) {
	b.dir.mu.Lock()
	defer b.dir.mu.Unlock()
	b.dir.expiredBelow = b.dir.seq + 1
}
