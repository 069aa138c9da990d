// Package pgtest gives tests their own PostgreSQL database, dropped at
// cleanup, so parallel tests and concurrent runs never see each other's
// rows: DSN an empty one, Migrated one with usher's schema in place.
//
// Migrated databases are copies (CREATE DATABASE ... TEMPLATE) of a
// template database migrated once and kept on the server, named after the
// schema's version and a hash of the migrations: a test binary migrates
// only when no current template exists, and test binaries running at the
// same time, even from different checkouts, share or build templates
// without racing. Nobody may connect to a template (its ALLOW_CONNECTIONS
// is off), which is what lets copies be taken at any time.
//
// The server is taken from USHER_TEST_POSTGRES (a postgres:// URL whose
// database is used to create the others), default
// postgres://postgres@127.0.0.1:5432/test?sslmode=disable. When it cannot
// be reached the test is skipped, or fails when CI is set, so a CI job
// without its database cannot pass by testing nothing.
package pgtest

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"

	"github.com/usherhq/usher/store/internal/sqlstore"
	"github.com/usherhq/usher/store/postgres/migrations"
)

// DefaultDSN is the server the tests use unless USHER_TEST_POSTGRES says
// otherwise.
const DefaultDSN = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"

// DSN creates an empty database for t and returns its DSN. Several calls in
// one test give several databases; two replicas of one store share one DSN.
func DSN(t testing.TB) string {
	t.Helper()
	// template0: nobody is ever connected to it, unlike template1, which
	// makes concurrent CREATE DATABASE fail.
	return create(t, func(context.Context, string) (string, error) { return "template0", nil })
}

// Migrated creates a database with usher's schema, migrated to the
// current version, for t and returns its DSN.
func Migrated(t testing.TB) string {
	t.Helper()
	return create(t, template)
}

func create(t testing.TB, source func(ctx context.Context, admin string) (string, error)) string {
	t.Helper()
	admin := os.Getenv("USHER_TEST_POSTGRES")
	if admin == "" {
		admin = DefaultDSN
	}
	u, err := url.Parse(admin)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		t.Fatalf("pgtest: USHER_TEST_POSTGRES must be a postgres:// URL")
	}

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	conn, err := connect(ctx, admin)
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("pgtest: PostgreSQL unreachable and CI is set: %v", err)
		}
		t.Skipf("pgtest: PostgreSQL unreachable, skipping (set CI to fail instead): %v", err)
	}
	defer conn.Close(ctx)
	src, err := source(ctx, admin)
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}

	name := "usher_test_" + rand.Text()[:16]
	name = strings.ToLower(name)
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+name+" TEMPLATE "+src); err != nil {
		t.Fatalf("pgtest: create database %s from %s: %v", name, src, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		conn, err := connect(ctx, admin)
		if err != nil {
			t.Errorf("pgtest: drop database %s: %v", name, err)
			return
		}
		defer conn.Close(ctx)
		// FORCE: a store the test forgot to close must not keep the
		// database alive.
		if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			t.Errorf("pgtest: drop database %s: %v", name, err)
		}
	})

	u.Path = "/" + name
	return u.String()
}

func connect(ctx context.Context, dsn string) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		return nil, err
	}
	cfg.ConnectTimeout = 5 * time.Second
	return pgx.ConnectConfig(ctx, cfg)
}

// The template is made once per test binary.
var (
	templateOnce sync.Once
	templateName string
	templateErr  error
)

// template returns the name of the migrated template database on the
// server at admin, building it first if no current one exists.
func template(ctx context.Context, admin string) (string, error) {
	templateOnce.Do(func() {
		templateName, templateErr = schemaName()
		if templateErr == nil {
			templateErr = build(ctx, admin, templateName)
		}
		if templateErr != nil {
			templateErr = fmt.Errorf("template %s: %w", templateName, templateErr)
		}
	})
	return templateName, templateErr
}

// schemaName names the template after the last migration's version and a
// hash of every migration, so a changed or added file makes a new one.
func schemaName() (string, error) {
	files, err := fs.Glob(migrations.FS, "*.sql")
	if err != nil {
		return "", err
	}
	slices.Sort(files)
	h := sha256.New()
	version := 0
	for _, f := range files {
		b, err := fs.ReadFile(migrations.FS, f)
		if err != nil {
			return "", err
		}
		fmt.Fprintf(h, "%s\x00%d\x00", f, len(b))
		h.Write(b)
		num, _, _ := strings.Cut(f, "_")
		if n, err := strconv.Atoi(num); err == nil {
			version = max(version, n)
		}
	}
	return fmt.Sprintf("usher_template_v%d_%s", version, hex.EncodeToString(h.Sum(nil))[:12]), nil
}

// templateLock serialises template building across test binaries.
const templateLock = 0x75736865727470 // "ushertp"

// build makes the template database name unless it exists, under an
// advisory lock so that concurrent test binaries build it once.
func build(ctx context.Context, admin, name string) error {
	conn, err := connect(ctx, admin)
	if err != nil {
		return err
	}
	defer conn.Close(ctx) // also releases the lock
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock($1)", int64(templateLock)); err != nil {
		return err
	}
	var ready bool
	err = conn.QueryRow(ctx, "SELECT datistemplate AND NOT datallowconn FROM pg_database WHERE datname = $1", name).Scan(&ready)
	switch {
	case err == nil && ready:
		return nil // built by an earlier or a concurrent run
	case err == nil:
		// Half built by a run that died: start over.
		if _, err := conn.Exec(ctx, "DROP DATABASE "+name+" WITH (FORCE)"); err != nil {
			return err
		}
	case !errors.Is(err, pgx.ErrNoRows):
		return err
	}
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+name+" TEMPLATE template0"); err != nil {
		return err
	}
	if err := migrate(ctx, admin, name); err != nil {
		return err
	}
	// A copy cannot be taken while anyone is connected to its source, and
	// a closed connection's server process may take a moment to leave.
	for {
		var n int
		if err := conn.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE datname = $1", name).Scan(&n); err != nil {
			return err
		}
		if n == 0 {
			break
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
	// Last: the template counts as built once nobody can connect to it.
	_, err = conn.Exec(ctx, "ALTER DATABASE "+name+" WITH IS_TEMPLATE true ALLOW_CONNECTIONS false")
	return err
}

func migrate(ctx context.Context, admin, name string) error {
	cfg, err := pgx.ParseConfig(admin)
	if err != nil {
		return err
	}
	cfg.Database = name
	cfg.ConnectTimeout = 5 * time.Second
	db := stdlib.OpenDB(*cfg)
	defer db.Close()
	return sqlstore.Migrate(ctx, db, goose.DialectPostgres, migrations.FS, nil, false)
}
