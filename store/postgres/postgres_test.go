package postgres

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"

	"github.com/usherhq/usher/store"
	"github.com/usherhq/usher/store/postgres/migrations"
	"github.com/usherhq/usher/store/postgres/pgtest"
	"github.com/usherhq/usher/store/storetest"
)

func open(t testing.TB, dsn string, opts Options) *Store {
	t.Helper()
	s, err := Open(context.Background(), dsn, opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return s
}

func TestConformance(t *testing.T) {
	t.Parallel()
	storetest.Run(t, func(t *testing.T) store.Store {
		return open(t, pgtest.Migrated(t), Options{})
	})
}

// Two replicas opening (and so migrating) one fresh database at once, then
// racing for one username: the database decides, exactly one identity wins.
func TestReplicas(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dsn := pgtest.DSN(t)
	var replicas [3]*Store
	var wg sync.WaitGroup
	errs := make([]error, len(replicas))
	for i := range replicas {
		wg.Go(func() { replicas[i], errs[i] = Open(ctx, dsn, Options{MaxConns: 4}) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("replica %d: Open: %v", i, err)
		}
		defer replicas[i].Close()
	}

	results := make(chan error, 60)
	for i := range 60 {
		wg.Go(func() {
			sub := fmt.Sprint(i % 6)
			_, err := replicas[i%len(replicas)].Bind(ctx, store.Binding{IdP: "okta", Subject: sub, Username: "contested"})
			if err == nil {
				err = errors.New("ok " + sub)
			}
			results <- err
		})
	}
	wg.Wait()
	close(results)
	winners := map[string]bool{}
	for err := range results {
		switch {
		case strings.HasPrefix(err.Error(), "ok "):
			winners[err.Error()] = true
		case !errors.Is(err, store.ErrUsernameTaken):
			t.Errorf("Bind: %v", err)
		}
	}
	if len(winners) != 1 {
		t.Fatalf("winners = %v, want exactly one identity", winners)
	}
}

func TestNoMigrate(t *testing.T) {
	t.Parallel()
	dsn := pgtest.DSN(t)
	_, err := Open(context.Background(), dsn, Options{NoMigrate: true})
	if err == nil || !strings.Contains(err.Error(), "usher migrate") {
		t.Fatalf("Open(NoMigrate) on an empty database = %v, want a hint to run `usher migrate`", err)
	}
	if err := Migrate(context.Background(), dsn); err != nil {
		t.Fatalf("Migrate: %v", err)
	}
	if err := Migrate(context.Background(), dsn); err != nil {
		t.Fatalf("Migrate again: %v", err)
	}
	open(t, dsn, Options{NoMigrate: true}).Close()
	// pgtest's migrated copies are at the current version.
	open(t, pgtest.Migrated(t), Options{NoMigrate: true}).Close()
}

// A server that is not there fails Open at once, naming where it looked
// and never the password.
func TestUnreachable(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // nothing listens there now

	_, err = Open(context.Background(), "postgres://usher:s3cr3t-pw@"+addr+"/usher?sslmode=disable", Options{ConnectTimeout: 2 * time.Second})
	if err == nil {
		t.Fatal("Open succeeded against a closed port")
	}
	msg := err.Error()
	t.Log(msg)
	if !strings.Contains(msg, addr) || !strings.Contains(msg, "unreachable") {
		t.Errorf("error %q should name %s and say unreachable", msg, addr)
	}
	if strings.Contains(msg, "s3cr3t-pw") {
		t.Errorf("error %q leaks the password", msg)
	}
}

func TestWrongDatabase(t *testing.T) {
	t.Parallel()
	pgtest.DSN(t) // skips or fails like the others when there is no server
	_, err := Open(context.Background(), "postgres://postgres:pw-x@127.0.0.1:5432/no_such_db_usher?sslmode=disable", Options{})
	if err == nil || strings.Contains(err.Error(), "unreachable") || strings.Contains(err.Error(), "pw-x") {
		t.Fatalf("Open of a missing database = %v, want a connect error that is not 'unreachable' and hides the password", err)
	}
}

func TestBadDSNHidesPassword(t *testing.T) {
	t.Parallel()
	_, err := Open(context.Background(), "postgres://u:sec:ret@h:x/db", Options{})
	if err == nil || strings.Contains(err.Error(), "sec") || strings.Contains(err.Error(), "ret@") {
		t.Fatalf("Open(bad DSN) = %v, want an error without the password", err)
	}
}

func TestStatementTimeout(t *testing.T) {
	t.Parallel()
	s := open(t, pgtest.Migrated(t), Options{StatementTimeout: 50 * time.Millisecond})
	defer s.Close()
	_, err := s.pool.Exec(context.Background(), "SELECT pg_sleep(1)")
	if err == nil || !strings.Contains(err.Error(), "statement timeout") {
		t.Fatalf("pg_sleep(1) with a 50ms statement_timeout = %v, want a statement timeout", err)
	}
}

// BenchmarkLogin measures one login's worth of store work: Bind of a known
// identity, RecordLogin and one audit event.
func BenchmarkLogin(b *testing.B) {
	s := open(b, pgtest.Migrated(b), Options{})
	defer s.Close()
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

func TestSCIMConformance(t *testing.T) {
	t.Parallel()
	storetest.RunSCIM(t, func(t *testing.T) *Store { return open(t, pgtest.Migrated(t), Options{}) })
}

func TestSweepsConformance(t *testing.T) {
	t.Parallel()
	storetest.RunSweeps(t, func(t *testing.T) *Store { return open(t, pgtest.Migrated(t), Options{}) })
}

func BenchmarkHotPath(b *testing.B) {
	storetest.Benchmark(b, func(b *testing.B) store.Store { return open(b, pgtest.Migrated(b), Options{}) })
}

// A database made by an earlier version, with rows it wrote (a job
// released with a NULL lease, as the first releases wrote it), migrates
// forward on Open and its rows work.
func TestOlderSchemaMigrates(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dsn := pgtest.DSN(t)
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		t.Fatal(err)
	}
	db := stdlib.OpenDB(*cfg)
	defer db.Close()
	p, err := goose.NewProvider(goose.DialectPostgres, db, migrations.FS)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.UpTo(ctx, 5); err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{
		`INSERT INTO bindings (idp, subject, username, username_key, created_at) VALUES ('okta', '1', 'Alice', 'alice', now())`,
		`INSERT INTO jobs (kind, app, key, payload, not_before, created_at, updated_at, owner, lease_until)
		 VALUES ('reconcile', 'jira', 'alice', '', now() - interval '1 minute', now(), now(), '', NULL)`,
	} {
		if _, err := db.ExecContext(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	s := open(t, dsn, Options{})
	defer s.Close()
	if b, err := s.BindingByUsername(ctx, "ALICE"); err != nil || b.Subject != "1" {
		t.Fatalf("old binding = %+v, %v", b, err)
	}
	jobs, err := s.Claim(ctx, "w", time.Now(), 10, time.Minute)
	if err != nil || len(jobs) != 1 {
		t.Fatalf("Claim of the old job = %+v, %v; want it", jobs, err)
	}
	if err := s.Complete(ctx, jobs[0].ID, "w"); err != nil {
		t.Fatal(err)
	}
}

// BenchmarkBrake: one SCIM brake decision with 1000 removals and 1000
// holds in the window.
func BenchmarkBrake(b *testing.B) {
	storetest.BenchmarkBrake(b, func(b *testing.B) store.Store { return open(b, pgtest.Migrated(b), Options{}) }, 1000)
}
