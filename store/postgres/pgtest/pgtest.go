// Package pgtest gives tests their own PostgreSQL database: a fresh one per
// call, dropped at cleanup, so parallel tests and concurrent runs never see
// each other's rows.
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
	"encoding/hex"
	"net/url"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// DefaultDSN is the server the tests use unless USHER_TEST_POSTGRES says
// otherwise.
const DefaultDSN = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"

// DSN creates an empty database for t and returns its DSN. Several calls in
// one test give several databases; two replicas of one store share one DSN.
func DSN(t testing.TB) string {
	t.Helper()
	admin := os.Getenv("USHER_TEST_POSTGRES")
	if admin == "" {
		admin = DefaultDSN
	}
	u, err := url.Parse(admin)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		t.Fatalf("pgtest: USHER_TEST_POSTGRES must be a postgres:// URL")
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := connect(ctx, admin)
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("pgtest: PostgreSQL unreachable and CI is set: %v", err)
		}
		t.Skipf("pgtest: PostgreSQL unreachable, skipping (set CI to fail instead): %v", err)
	}
	defer conn.Close(ctx)

	var b [8]byte
	rand.Read(b[:])
	name := "usher_test_" + hex.EncodeToString(b[:])
	// template0: nobody is ever connected to it, unlike template1, which
	// makes concurrent CREATE DATABASE fail.
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+name+" TEMPLATE template0"); err != nil {
		t.Fatalf("pgtest: create database %s: %v", name, err)
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
