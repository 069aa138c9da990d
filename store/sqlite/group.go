package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/usherhq/usher/store/internal/sqlstore"
)

// groupDB is the store's write pool: SQLite's one writer connection,
// shared by concurrent writers through group commit. A writer that finds
// others queued behind it leaves its transaction open for them: each
// runs its statements inside it, in a savepoint of its own, and the last
// one in line commits for all. Every writer still returns only once the
// commit that holds its statements is on disk (synchronous=FULL), so
// durability is what it was with a commit each; what changes is that a
// busy moment costs one disk flush for many writes instead of one each,
// and a writer waits for the flush of its batch instead of for every
// flush queued before it.
//
// A writer alone commits at once, as before. A batch is committed when
// nobody waits behind it, when it holds maxBatch writes or when it has
// been open maxBatchAge, so a steady stream of writers cannot keep its
// first one waiting. A writer whose statements fail has them rolled back
// to its savepoint and gets its error; the others' statements stay. If
// SQLite abandons the whole transaction (a full disk, an I/O error),
// every writer in the batch gets that error: none of them was written.
//
// Statements run under the caller's context while the batch holds no one
// else's work; after that they cannot be canceled, because SQLite answers
// an interrupted statement in a transaction by rolling back the whole
// transaction, other writers' work with it. Inside a write transaction no
// statement waits for a lock, so they are short. Waiting for the writer
// honours the context; waiting for the commit of one's batch does not
// (it is one disk flush away), so that a write is never reported failed
// when it is about to be written.
type groupDB struct {
	db *sql.DB // one connection; transactions begin IMMEDIATE

	maxAge  time.Duration // maxBatchAge, but for tests
	commits atomic.Int64  // batches committed, for tests

	lock    chan struct{} // held by the writer whose statements run now
	waiting atomic.Int32  // writers waiting for lock
	cur     *batch        // the open transaction; guarded by lock

	// kick asks the committer to look at an open batch that a writer
	// gave up waiting to join, so that no batch stays open with nobody
	// left to commit it.
	kick    chan struct{}
	stop    chan struct{}
	closing sync.Once
	done    chan struct{}
}

// batch is one transaction shared by several writers.
type batch struct {
	tx     *sql.Tx
	n      int // writers whose statements it holds
	opened time.Time
	done   chan struct{} // closed once committed or abandoned
	err    error         // why not, set before done closes
}

const (
	maxBatch    = 256
	maxBatchAge = 3 * time.Millisecond
)

func newGroupDB(db *sql.DB) *groupDB {
	w := &groupDB{db: db, maxAge: maxBatchAge, lock: make(chan struct{}, 1), kick: make(chan struct{}, 1),
		stop: make(chan struct{}), done: make(chan struct{})}
	go w.committer()
	return w
}

var _ sqlstore.DB = (*groupDB)(nil)

// committer commits a batch that its writers left open for a writer who
// then gave up waiting.
func (w *groupDB) committer() {
	defer close(w.done)
	for {
		select {
		case <-w.stop:
			return
		case <-w.kick:
			w.waiting.Add(1)
			w.lock <- struct{}{}
			w.waiting.Add(-1)
			w.release()
		}
	}
}

// acquire waits for the writer's turn.
func (w *groupDB) acquire(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	w.waiting.Add(1)
	select {
	case w.lock <- struct{}{}:
		w.waiting.Add(-1)
	case <-ctx.Done():
		w.waiting.Add(-1)
		select {
		case w.kick <- struct{}{}:
		default:
		}
		return ctx.Err()
	}
	if err := ctx.Err(); err != nil {
		w.release()
		return err
	}
	return nil
}

// release ends the holder's turn, committing the open batch unless a
// writer waiting behind it can still join.
func (w *groupDB) release() {
	if b := w.cur; b != nil && (w.waiting.Load() == 0 || b.n >= maxBatch || time.Since(b.opened) >= w.maxAge) {
		w.commit()
	}
	<-w.lock
}

// commit commits the open batch.
func (w *groupDB) commit() {
	err := w.cur.tx.Commit()
	if err == nil {
		w.commits.Add(1)
	}
	w.finish(err)
}

// finish ends the open batch with err (nil: committed).
func (w *groupDB) finish(err error) {
	b := w.cur
	w.cur = nil
	if err != nil {
		b.err = fmt.Errorf("commit of %d writes: %w", b.n, err)
	}
	close(b.done)
}

// open returns the open batch, beginning one if there is none. BEGIN
// IMMEDIATE waits for another process's write lock (a backup, the
// sqlite3 shell) as long as ctx allows; the transaction itself outlives
// the writer that began it (database/sql would roll it back when the
// context it was begun with ends).
func (w *groupDB) open(ctx context.Context) (*batch, error) {
	if w.cur != nil {
		return w.cur, nil
	}
	bctx, cancel := context.WithCancel(context.Background())
	stop := context.AfterFunc(ctx, cancel)
	tx, err := w.db.BeginTx(bctx, nil)
	if !stop() {
		// ctx ended meanwhile: bctx is canceled, and with it the
		// transaction, if it began.
		if err == nil {
			_ = tx.Rollback()
			err = ctx.Err()
		}
		return nil, err
	}
	if err != nil {
		cancel()
		return nil, err
	}
	w.cur = &batch{tx: tx, opened: time.Now(), done: make(chan struct{})}
	return w.cur, nil
}

// stmtContext is the context the holder's statements run under (see
// groupDB).
func stmtContext(ctx context.Context, b *batch) context.Context {
	if b.n == 0 {
		return ctx
	}
	return context.WithoutCancel(ctx)
}

// savepoint starts the holder's part of batch b.
func (w *groupDB) savepoint(b *batch) error {
	_, err := b.tx.ExecContext(context.Background(), "SAVEPOINT w")
	if err != nil {
		w.abandon(err)
	}
	return err
}

// rollback undoes the holder's statements after they failed with cause.
// When SQLite has abandoned the whole transaction, so has the batch.
func (w *groupDB) rollback(b *batch, cause error) {
	_, err := b.tx.ExecContext(context.Background(), "ROLLBACK TO w")
	if err == nil {
		_, err = b.tx.ExecContext(context.Background(), "RELEASE w")
	}
	if err != nil {
		w.abandon(cause)
	}
}

// abandon rolls the open batch back: every writer in it fails with cause.
func (w *groupDB) abandon(cause error) {
	b := w.cur
	_ = b.tx.Rollback()
	w.finish(fmt.Errorf("transaction abandoned: %w", cause))
}

// commitOf makes the holder, whose statements are in b, part of b's
// commit: it ends its turn and waits for the batch to be written.
func (w *groupDB) commitOf(b *batch) error {
	if _, err := b.tx.ExecContext(context.Background(), "RELEASE w"); err != nil {
		w.abandon(err)
		w.release()
		<-b.done
		return b.err
	}
	b.n++
	w.release()
	<-b.done
	return b.err
}

// run runs fn as one writer's part of a batch.
func (w *groupDB) run(ctx context.Context, fn func(ctx context.Context, tx *sql.Tx) error) error {
	if err := w.acquire(ctx); err != nil {
		return err
	}
	b, err := w.open(ctx)
	if err == nil {
		err = w.savepoint(b)
	}
	if err != nil {
		w.release()
		return err
	}
	if err := fn(stmtContext(ctx, b), b.tx); err != nil {
		w.rollback(b, err)
		w.release()
		return err
	}
	return w.commitOf(b)
}

func (w *groupDB) Exec(ctx context.Context, query string, args ...any) (n int64, err error) {
	err = w.run(ctx, func(ctx context.Context, tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, query, args...)
		if err == nil {
			n, err = res.RowsAffected()
		}
		return err
	})
	return n, err
}

// QueryRow runs the statement when the row is scanned, which the store
// does at once.
func (w *groupDB) QueryRow(ctx context.Context, query string, args ...any) sqlstore.Row {
	return groupRow{w, ctx, query, args}
}

type groupRow struct {
	w     *groupDB
	ctx   context.Context
	query string
	args  []any
}

func (r groupRow) Scan(dest ...any) error {
	return r.w.run(r.ctx, func(ctx context.Context, tx *sql.Tx) error {
		return tx.QueryRowContext(ctx, r.query, r.args...).Scan(dest...)
	})
}

// Query runs a statement whose rows the caller reads at its own pace
// (Claim's UPDATE ... RETURNING) on its own: the open batch is committed
// first, and the writer is held until the rows are closed.
func (w *groupDB) Query(ctx context.Context, query string, args ...any) (sqlstore.Rows, error) {
	if err := w.acquire(ctx); err != nil {
		return nil, err
	}
	if w.cur != nil {
		w.commit()
	}
	rows, err := w.db.QueryContext(ctx, query, args...)
	if err != nil {
		w.release()
		return nil, err
	}
	return &heldRows{Rows: rows, release: w.release}, nil
}

// heldRows release the writer when closed.
type heldRows struct {
	*sql.Rows
	release func()
	closed  bool
}

func (r *heldRows) Close() {
	if !r.closed {
		r.closed = true
		r.Rows.Close()
		r.release()
	}
}

// Begin starts a writer's transaction within a batch: it holds the
// writer until Commit or Rollback.
func (w *groupDB) Begin(ctx context.Context, _ bool) (sqlstore.Tx, error) {
	if err := w.acquire(ctx); err != nil {
		return nil, err
	}
	b, err := w.open(ctx)
	if err == nil {
		err = w.savepoint(b)
	}
	if err != nil {
		w.release()
		return nil, err
	}
	return &groupTx{w: w, b: b}, nil
}

// groupTx is one writer's transaction: a savepoint in a batch.
type groupTx struct {
	w    *groupDB
	b    *batch
	done bool
}

func (t *groupTx) stmtCtx(ctx context.Context) context.Context { return stmtContext(ctx, t.b) }

func (t *groupTx) Exec(ctx context.Context, query string, args ...any) (int64, error) {
	if t.done {
		return 0, sql.ErrTxDone
	}
	res, err := t.b.tx.ExecContext(t.stmtCtx(ctx), query, args...)
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

func (t *groupTx) Query(ctx context.Context, query string, args ...any) (sqlstore.Rows, error) {
	if t.done {
		return nil, sql.ErrTxDone
	}
	rows, err := t.b.tx.QueryContext(t.stmtCtx(ctx), query, args...)
	if err != nil {
		return nil, err
	}
	return txRows{rows}, nil
}

func (t *groupTx) QueryRow(ctx context.Context, query string, args ...any) sqlstore.Row {
	if t.done {
		return errRow{sql.ErrTxDone}
	}
	return t.b.tx.QueryRowContext(t.stmtCtx(ctx), query, args...)
}

func (t *groupTx) Commit(context.Context) error {
	if t.done {
		return sql.ErrTxDone
	}
	t.done = true
	return t.w.commitOf(t.b)
}

// Rollback undoes this writer's statements; after Commit it does
// nothing.
func (t *groupTx) Rollback(context.Context) error {
	if t.done {
		return nil
	}
	t.done = true
	t.w.rollback(t.b, errors.New("a writer's rollback to its savepoint failed"))
	t.w.release()
	return nil
}

type txRows struct{ *sql.Rows }

func (r txRows) Close() { r.Rows.Close() }

type errRow struct{ err error }

func (r errRow) Scan(...any) error { return r.err }

func (w *groupDB) Ping(ctx context.Context) error { return w.db.PingContext(ctx) }

// Close stops the committer and closes the connection; no writer may be
// running. A second Close only closes the (closed) connection again.
func (w *groupDB) Close() error {
	w.closing.Do(func() { close(w.stop) })
	<-w.done
	return w.db.Close()
}
