package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"testing"
)

// TestStatementCache: a connection prepares each statement text once and
// runs it again with new arguments; the same text run while its rows are
// still open, a failing statement and a canceled one leave the kept
// statement working; scripts and PRAGMAs are not kept.
func TestStatementCache(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db, err := openDB("file:" + filepath.Join(t.TempDir(), "cache.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	conn, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	kept := func() int {
		n := 0
		if err := conn.Raw(func(dc any) error {
			n = len(dc.(*cachingConn).stmts)
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		return n
	}
	if _, err := conn.ExecContext(ctx, "CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT NOT NULL); PRAGMA user_version = 1"); err != nil {
		t.Fatal(err)
	}
	const insert, get = "INSERT INTO t (k, v) VALUES (?, ?)", "SELECT v FROM t WHERE k = ?"
	for i := range 3 {
		if _, err := conn.ExecContext(ctx, insert, i, fmt.Sprint("v", i)); err != nil {
			t.Fatalf("insert %d: %v", i, err)
		}
	}
	if n := kept(); n != 1 {
		t.Fatalf("%d statements kept after a script and three inserts of one text, want 1", n)
	}
	// A duplicate key fails; the kept statement still works afterwards.
	if _, err := conn.ExecContext(ctx, insert, 1, "again"); err == nil {
		t.Fatal("duplicate insert succeeded")
	}
	if _, err := conn.ExecContext(ctx, insert, 3, "v3"); err != nil {
		t.Fatalf("insert after a failed one: %v", err)
	}
	// The same query while its rows are open: the second goes uncached.
	rows, err := conn.QueryContext(ctx, "SELECT k FROM t WHERE k < ? ORDER BY k", 10)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for rows.Next() {
		var k int
		if err := rows.Scan(&k); err != nil {
			t.Fatal(err)
		}
		var v string
		if err := conn.QueryRowContext(ctx, get, k).Scan(&v); err != nil {
			t.Fatalf("get %d: %v", k, err)
		}
		inner, err := conn.QueryContext(ctx, "SELECT k FROM t WHERE k < ? ORDER BY k", 1)
		if err != nil {
			t.Fatalf("same query while its rows are open: %v", err)
		}
		inner.Close()
		got = append(got, v)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	rows.Close()
	if fmt.Sprint(got) != "[v0 v1 v2 v3]" {
		t.Fatalf("read %v, want [v0 v1 v2 v3]", got)
	}
	// A canceled context ends the call; the statement serves the next.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	var v string
	if err := conn.QueryRowContext(cctx, get, 2).Scan(&v); !errors.Is(err, context.Canceled) {
		t.Fatalf("canceled get = %v, want context.Canceled", err)
	}
	if err := conn.QueryRowContext(ctx, get, 2).Scan(&v); err != nil || v != "v2" {
		t.Fatalf("get after a canceled one = %q, %v; want v2", v, err)
	}
	if err := conn.QueryRowContext(ctx, get, 9).Scan(&v); !errors.Is(err, sql.ErrNoRows) {
		t.Fatalf("get of a missing row = %v, want sql.ErrNoRows", err)
	}
	if n := kept(); n != 3 {
		t.Fatalf("%d statements kept, want 3 (insert, the range query, get)", n)
	}
}
