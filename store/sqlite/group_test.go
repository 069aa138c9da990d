package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// openGroup is a groupDB on a fresh file with one table t (k primary key).
func openGroup(t *testing.T) *groupDB {
	t.Helper()
	path := filepath.Join(t.TempDir(), "group.db")
	db, err := openWriter(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`CREATE TABLE t (k INTEGER PRIMARY KEY)`); err != nil {
		t.Fatal(err)
	}
	w := newGroupDB(db)
	w.maxAge = time.Hour // batches end when nobody waits, not by age
	t.Cleanup(func() {
		w.Close()
		w.Close() // twice: no panic
	})
	return w
}

// rows lists t's keys, read on a connection of its own (what the read
// pool sees: committed rows only).
func rows(t *testing.T, w *groupDB) []int {
	t.Helper()
	r, err := w.db.Query(`SELECT k FROM t ORDER BY k`)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var ks []int
	for r.Next() {
		var k int
		if err := r.Scan(&k); err != nil {
			t.Fatal(err)
		}
		ks = append(ks, k)
	}
	return ks
}

// TestGroupCommit: writers queued behind one another share one commit;
// a writer whose statement fails, or who rolls its transaction back, has
// only its own work undone; every writer returns after its commit.
func TestGroupCommit(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	w := openGroup(t)
	if _, err := w.Exec(ctx, `INSERT INTO t (k) VALUES (?)`, 0); err != nil {
		t.Fatal(err)
	}
	if n := w.commits.Load(); n != 1 {
		t.Fatalf("a writer alone: %d commits, want 1", n)
	}

	// Hold the writer while 30 writers queue, then let them go.
	if err := w.acquire(ctx); err != nil {
		t.Fatal(err)
	}
	const writers = 30
	errs := make([]error, writers)
	var wg sync.WaitGroup
	for i := range writers {
		wg.Go(func() {
			k := 100 + i
			switch i {
			case 7: // a duplicate key: fails alone
				k = 0
			case 11: // a transaction rolled back
				tx, err := w.Begin(ctx, false)
				if err == nil {
					_, err = tx.Exec(ctx, `INSERT INTO t (k) VALUES (?)`, k)
					tx.Rollback(ctx)
					if err == nil {
						err = errors.New("rolled back")
					}
				}
				errs[i] = err
				return
			case 13: // a transaction of two statements, committed
				tx, err := w.Begin(ctx, false)
				if err == nil {
					if _, err = tx.Exec(ctx, `INSERT INTO t (k) VALUES (?)`, k); err == nil {
						if _, err = tx.Exec(ctx, `INSERT INTO t (k) VALUES (?)`, k+1000); err == nil {
							err = tx.Commit(ctx)
						}
					}
					tx.Rollback(ctx)
				}
				errs[i] = err
				return
			case 17: // a row read back through RETURNING
				var got int
				errs[i] = w.QueryRow(ctx, `INSERT INTO t (k) VALUES (?) RETURNING k`, k).Scan(&got)
				if errs[i] == nil && got != k {
					errs[i] = fmt.Errorf("RETURNING gave %d, want %d", got, k)
				}
				return
			}
			_, errs[i] = w.Exec(ctx, `INSERT INTO t (k) VALUES (?)`, k)
		})
	}
	for w.waiting.Load() < writers {
		time.Sleep(time.Millisecond)
	}
	w.release()
	wg.Wait()
	want := []int{0}
	for i, err := range errs {
		switch {
		case i == 7 || i == 11:
			if err == nil {
				t.Errorf("writer %d: no error", i)
			}
		case err != nil:
			t.Errorf("writer %d: %v", i, err)
		default:
			want = append(want, 100+i)
		}
	}
	want = append(want, 1113)
	if got := rows(t, w); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("rows %v, want %v", got, want)
	}
	// The queued writers need not all land in one batch (the failing one
	// may find nobody waiting), but far fewer commits than writers.
	if n := w.commits.Load() - 1; n > 3 {
		t.Fatalf("%d writers queued together took %d commits", writers, n)
	}
}

// TestGroupCommitAbandonedWait: a writer that gives up waiting does not
// leave the batch it would have joined open forever. The race it covers
// (the holder sees a writer waiting and leaves its batch open; that
// writer then gives up) is set up by hand: the waiting writer's count,
// then its giving up.
func TestGroupCommitAbandonedWait(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	w := openGroup(t)
	if err := w.acquire(ctx); err != nil {
		t.Fatal(err)
	}
	b, err := w.open(ctx)
	if err == nil {
		err = w.savepoint(b)
	}
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.tx.Exec(`INSERT INTO t (k) VALUES (1)`); err != nil {
		t.Fatal(err)
	}
	w.waiting.Add(1) // a writer queued behind the holder
	committed := make(chan error, 1)
	go func() { committed <- w.commitOf(b) }()
	time.Sleep(10 * time.Millisecond)
	select {
	case <-committed:
		t.Fatal("batch committed with a writer waiting to join it")
	default:
	}
	// It gives up, as acquire does on a canceled context.
	w.waiting.Add(-1)
	w.kick <- struct{}{}
	select {
	case err := <-committed:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("batch left open after its only follower gave up")
	}
	if got := rows(t, w); fmt.Sprint(got) != "[1]" {
		t.Fatalf("rows %v, want [1]", got)
	}

	// The real thing: a writer whose context ends while it waits returns
	// context.Canceled and leaves nothing waiting.
	if err := w.acquire(ctx); err != nil {
		t.Fatal(err)
	}
	gctx, giveUp := context.WithCancel(ctx)
	gaveUp := make(chan error, 1)
	go func() { _, err := w.Exec(gctx, `INSERT INTO t (k) VALUES (2)`); gaveUp <- err }()
	for w.waiting.Load() < 1 {
		time.Sleep(time.Millisecond)
	}
	giveUp()
	if err := <-gaveUp; !errors.Is(err, context.Canceled) {
		t.Fatalf("writer that gave up: %v, want context.Canceled", err)
	}
	w.release()
	if _, err := w.Exec(ctx, `INSERT INTO t (k) VALUES (3)`); err != nil {
		t.Fatal(err)
	}
	if got := rows(t, w); fmt.Sprint(got) != "[1 3]" {
		t.Fatalf("rows %v, want [1 3]", got)
	}
}

// TestGroupCommitCanceledStatement: a writer alone in its batch whose
// statement is interrupted fails alone, and the next writer works.
func TestGroupCommitCanceledStatement(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	w := openGroup(t)
	cctx, cancel := context.WithCancel(ctx)
	tx, err := w.Begin(cctx, false)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(cctx, `INSERT INTO t (k) VALUES (1)`); err != nil {
		t.Fatal(err)
	}
	cancel()
	if _, err := tx.Exec(cctx, `INSERT INTO t (k) VALUES (2)`); err == nil {
		t.Fatal("statement on a canceled context succeeded")
	}
	tx.Rollback(ctx)
	if err := tx.Commit(ctx); !errors.Is(err, sql.ErrTxDone) {
		t.Fatalf("Commit after Rollback = %v, want sql.ErrTxDone", err)
	}
	if _, err := w.Exec(ctx, `INSERT INTO t (k) VALUES (3)`); err != nil {
		t.Fatalf("next writer: %v", err)
	}
	if got := rows(t, w); fmt.Sprint(got) != "[3]" {
		t.Fatalf("rows %v, want [3]", got)
	}
}
