package postgres

import (
	"context"
	"errors"
	"net/url"
	"testing"
	"time"

	"github.com/usherhq/usher/netfault"
	"github.com/usherhq/usher/store"
	"github.com/usherhq/usher/store/postgres/pgtest"
)

// bound is the store's timeout in the fault tests. Calls must fail within
// a generous multiple of it, so a loaded machine does not fail the tests.
const bound = time.Second

// throughProxy opens a store on a fresh database through a fault proxy.
func throughProxy(t *testing.T) (*Store, *netfault.Proxy) {
	t.Helper()
	dsn := pgtest.Migrated(t)
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	p := netfault.New(t, u.Host)
	u.Host = p.Addr()
	s := open(t, u.String(), Options{Timeout: bound, MaxConns: 4})
	t.Cleanup(func() { s.Close() })
	return s, p
}

// hotCalls are the calls a login and the retry worker make, each with
// fresh arguments, so that a call that worked leaves the next one work to do.
func hotCalls(s *Store) map[string]func(ctx context.Context) error {
	n := 0
	return map[string]func(ctx context.Context) error{
		"Binding": func(ctx context.Context) error { _, err := s.Binding(ctx, "okta", "alice"); return err },
		"Bind": func(ctx context.Context) error {
			n++
			_, err := s.Bind(ctx, store.Binding{IdP: "okta", Subject: "new", Username: "new" + string(rune('a'+n))})
			return err
		},
		"Append": func(ctx context.Context) error { return s.Append(ctx, store.Event{Action: "login"}) },
		"Claim": func(ctx context.Context) error {
			_, err := s.Claim(ctx, "worker", time.Now(), 1, time.Minute)
			return err
		},
		"Ping": func(ctx context.Context) error { return s.Ping(ctx) },
	}
}

func warm(t *testing.T, s *Store) {
	t.Helper()
	ctx := context.Background()
	if _, err := s.Bind(ctx, store.Binding{IdP: "okta", Subject: "alice", Username: "alice"}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Enqueue(ctx, store.Job{Kind: "reconcile", App: "jira", Key: "alice"}); err != nil {
		t.Fatal(err)
	}
}

// allWork checks every hot call works again, at once.
func allWork(t *testing.T, s *Store, after string) {
	t.Helper()
	for name, call := range hotCalls(s) {
		if err := call(context.Background()); err != nil {
			t.Errorf("%s after %s: %v", name, after, err)
		}
	}
}

// A database that accepts connections but never answers does not hold a
// caller: every call fails with ErrUnavailable within the bound, bad input
// is still refused at once without asking the database, and once the
// database answers again the next calls work.
func TestHangingDatabase(t *testing.T) {
	t.Parallel()
	s, p := throughProxy(t)
	warm(t, s)

	p.Set(netfault.Hang)
	for name, call := range hotCalls(s) {
		start := time.Now()
		err := call(context.Background())
		took := time.Since(start)
		if !errors.Is(err, store.ErrUnavailable) {
			t.Errorf("%s while the database hangs = %v, want ErrUnavailable", name, err)
		}
		if took > 3*bound {
			t.Errorf("%s while the database hangs took %v, want about %v", name, took, bound)
		}
	}
	// A caller's shorter deadline wins over the store's bound.
	ctx, cancel := context.WithTimeout(context.Background(), bound/10)
	start := time.Now()
	_, err := s.Binding(ctx, "okta", "alice")
	cancel()
	if !errors.Is(err, store.ErrUnavailable) || !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 2*bound {
		t.Errorf("Binding with a %v deadline while hanging = %v after %v", bound/10, err, time.Since(start))
	}
	// Bad input never reaches the database, so it is refused at once.
	start = time.Now()
	_, err = s.Bind(context.Background(), store.Binding{IdP: "okta", Subject: "x", Username: "nul\x00"})
	if !errors.Is(err, store.ErrInvalid) || time.Since(start) > bound/2 {
		t.Errorf("Bind of bad text while hanging = %v after %v, want ErrInvalid at once", err, time.Since(start))
	}

	p.Set(netfault.Pass)
	allWork(t, s, "the hang")
}

// Connections cut while idle in the pool (a server restart, a failover)
// are not handed out to fail the next call: it takes a live one.
func TestCutConnections(t *testing.T) {
	t.Parallel()
	s, p := throughProxy(t)
	warm(t, s)
	for round := range 3 {
		allWork(t, s, "warming up") // several connections in the pool, used just now
		if p.Cut() == 0 {
			t.Fatalf("round %d: no connection to cut", round)
		}
		allWork(t, s, "a cut")
	}
}

// A database that refuses connections fails calls fast, and is used again
// once it is back.
func TestRefusingDatabase(t *testing.T) {
	t.Parallel()
	s, p := throughProxy(t)
	warm(t, s)
	p.Set(netfault.Refuse)
	p.Cut()
	for name, call := range hotCalls(s) {
		start := time.Now()
		if err := call(context.Background()); !errors.Is(err, store.ErrUnavailable) || time.Since(start) > 3*bound {
			t.Errorf("%s while the database refuses = %v after %v, want ErrUnavailable", name, err, time.Since(start))
		}
	}
	p.Set(netfault.Pass)
	allWork(t, s, "refusals")
}
