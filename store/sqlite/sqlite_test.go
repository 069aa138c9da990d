package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/usherhq/usher/store"
	"github.com/usherhq/usher/store/storetest"
)

func openTemp(t testing.TB, name string, opts Options) *Store {
	t.Helper()
	s, err := Open(context.Background(), filepath.Join(t.TempDir(), name), opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return s
}

func TestConformance(t *testing.T) {
	t.Parallel()
	storetest.Run(t, func(t *testing.T) store.Store {
		return openTemp(t, "usher.db", Options{})
	})
}

// A file name SQLite would read as URI syntax must still name that file.
func TestOddPath(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "a?b#c%20d.db")
	s, err := Open(context.Background(), path, Options{})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer s.Close()
	if _, err := s.Bind(context.Background(), store.Binding{IdP: "okta", Subject: "1", Username: "alice"}); err != nil {
		t.Fatalf("Bind: %v", err)
	}
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("database not at the given path: %v", err)
	}
}

func TestReopenKeepsData(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "usher.db")
	s, err := Open(ctx, path, Options{})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	want, err := s.Bind(ctx, store.Binding{IdP: "okta", Subject: "1", Username: "alice"})
	if err != nil {
		t.Fatalf("Bind: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	s, err = Open(ctx, path, Options{NoMigrate: true})
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	defer s.Close()
	got, err := s.Binding(ctx, "okta", "1")
	if err != nil || got != want {
		t.Fatalf("after reopen: %+v, %v; want %+v", got, err, want)
	}
	var mode string
	if err := s.read.QueryRowContext(ctx, "PRAGMA journal_mode").Scan(&mode); err != nil || mode != "wal" {
		t.Fatalf("journal_mode = %q, %v; want wal", mode, err)
	}
}

func TestNoMigrateRefusesOldSchema(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "usher.db")
	_, err := Open(context.Background(), path, Options{NoMigrate: true})
	if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "usher migrate") {
		t.Fatalf("Open(NoMigrate) on an empty file = %v, want an error naming the file and `usher migrate`", err)
	}
	if err := Migrate(context.Background(), path); err != nil {
		t.Fatalf("Migrate: %v", err)
	}
	s, err := Open(context.Background(), path, Options{NoMigrate: true})
	if err != nil {
		t.Fatalf("Open after Migrate: %v", err)
	}
	s.Close()
}

func TestOpenUnwritable(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "missing", "dir", "usher.db")
	_, err := Open(context.Background(), path, Options{})
	if err == nil || !strings.Contains(err.Error(), path) {
		t.Fatalf("Open in a missing directory = %v, want an error naming %s", err, path)
	}
}

func TestInjectedClock(t *testing.T) {
	t.Parallel()
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	s := openTemp(t, "usher.db", Options{Now: func() time.Time { return at }})
	defer s.Close()
	b, err := s.Bind(context.Background(), store.Binding{IdP: "okta", Subject: "1", Username: "alice"})
	if err != nil || !b.CreatedAt.Equal(at) {
		t.Fatalf("Bind = %+v, %v; want CreatedAt %v", b, err, at)
	}
}

// BenchmarkLogin measures one login's worth of store work: Bind of a known
// identity, RecordLogin and one audit event.
func BenchmarkLogin(b *testing.B) {
	s := openTemp(b, "usher.db", Options{})
	defer s.Close()
	benchLogin(b, s)
}

func benchLogin(b *testing.B, s store.Store) {
	ctx := context.Background()
	const users = 1000
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			i++
			sub := fmt.Sprint(i % users)
			if _, err := s.Bind(ctx, store.Binding{IdP: "okta", Subject: sub, Username: "user" + sub}); err != nil {
				b.Error(err)
				return
			}
			now := time.Now()
			if err := s.RecordLogin(ctx, "okta", sub, now); err != nil {
				b.Error(err)
				return
			}
			if err := s.Append(ctx, store.Event{Time: now, Action: "login", IdP: "okta", Subject: sub, Username: "user" + sub, Actor: "login", Outcome: "ok"}); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "logins/s")
}

// Two handles on one file (say `usher serve` and `usher migrate`, or a
// restart overlapping the old process) wait for each other's locks through
// busy_timeout instead of failing with SQLITE_BUSY.
func TestTwoHandlesOneFile(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "usher.db")
	var handles [2]*Store
	for i := range handles {
		s, err := Open(ctx, path, Options{})
		if err != nil {
			t.Fatalf("Open %d: %v", i, err)
		}
		defer s.Close()
		handles[i] = s
	}
	errs := make(chan error, 200)
	var wg sync.WaitGroup
	for i := range 200 {
		wg.Go(func() {
			s := handles[i%2]
			sub := fmt.Sprint(i % 50)
			if _, err := s.Bind(ctx, store.Binding{IdP: "okta", Subject: sub, Username: "user" + sub}); err != nil {
				errs <- err
				return
			}
			errs <- s.Append(ctx, store.Event{Action: "login", Subject: sub})
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	evs, err := handles[0].Audit(ctx, store.AuditFilter{Limit: 1000})
	if err != nil || len(evs) != 200 {
		t.Fatalf("Audit = %d events, %v; want 200", len(evs), err)
	}
}

func TestSCIMConformance(t *testing.T) {
	t.Parallel()
	storetest.RunSCIM(t, func(t *testing.T) *Store { return openTemp(t, "usher.db", Options{}) })
}

func TestSweepsConformance(t *testing.T) {
	t.Parallel()
	storetest.RunSweeps(t, func(t *testing.T) *Store { return openTemp(t, "usher.db", Options{}) })
}

func BenchmarkHotPath(b *testing.B) {
	storetest.Benchmark(b, func(b *testing.B) store.Store { return openTemp(b, "usher.db", Options{}) })
}

// A file another process holds locked does not hold a caller past the
// store's bound: the call fails with ErrUnavailable, and works once the
// lock is gone.
func TestLockedFileTimesOut(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "usher.db")
	const bound = 300 * time.Millisecond
	s, err := Open(ctx, path, Options{Timeout: bound})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	other, err := sql.Open("sqlite", dsn(path, false))
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	lock, err := other.BeginTx(ctx, nil) // BEGIN IMMEDIATE: the write lock
	if err != nil {
		t.Fatal(err)
	}
	if _, err := lock.ExecContext(ctx, `DELETE FROM leases`); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err = s.Bind(ctx, store.Binding{IdP: "okta", Subject: "1", Username: "alice"})
	if took := time.Since(start); !errors.Is(err, store.ErrUnavailable) || took > 10*bound {
		t.Fatalf("Bind while another process writes = %v after %v, want ErrUnavailable after about %v", err, took, bound)
	}
	if err := lock.Rollback(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Bind(ctx, store.Binding{IdP: "okta", Subject: "1", Username: "alice"}); err != nil {
		t.Fatalf("Bind after the lock is gone: %v", err)
	}
}

// BenchmarkBrake: one SCIM brake decision with 1000 removals and 1000
// holds in the window.
func BenchmarkBrake(b *testing.B) {
	storetest.BenchmarkBrake(b, func(b *testing.B) store.Store { return openTemp(b, "usher.db", Options{}) }, 1000)
}
