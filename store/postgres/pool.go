package postgres

import (
	"context"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/usherhq/usher/store/internal/sqlstore"
)

// pool is sqlstore's DB on a pgx pool. A statement that failed before any
// of it was sent (pgconn.SafeToRetry: a connection that died in the pool)
// runs once more on another connection; nothing that may have reached the
// server is run twice.
type pool struct{ p *pgxpool.Pool }

var _ sqlstore.DB = pool{}

func (d pool) Exec(ctx context.Context, query string, args ...any) (int64, error) {
	tag, err := d.p.Exec(ctx, query, args...)
	if err != nil && pgconn.SafeToRetry(err) && ctx.Err() == nil {
		tag, err = d.p.Exec(ctx, query, args...)
	}
	return tag.RowsAffected(), err
}

func (d pool) Query(ctx context.Context, query string, args ...any) (sqlstore.Rows, error) {
	rows, err := d.p.Query(ctx, query, args...)
	if err != nil && pgconn.SafeToRetry(err) && ctx.Err() == nil {
		rows, err = d.p.Query(ctx, query, args...)
	}
	if err != nil {
		return nil, err
	}
	return rows, nil
}

func (d pool) QueryRow(ctx context.Context, query string, args ...any) sqlstore.Row {
	return row{d.p, ctx, query, args}
}

// row runs its statement when scanned, so that it can run it again.
type row struct {
	p     *pgxpool.Pool
	ctx   context.Context
	query string
	args  []any
}

func (r row) Scan(dest ...any) error {
	err := r.p.QueryRow(r.ctx, r.query, r.args...).Scan(dest...)
	if err != nil && pgconn.SafeToRetry(err) && r.ctx.Err() == nil {
		err = r.p.QueryRow(r.ctx, r.query, r.args...).Scan(dest...)
	}
	return err
}

func (d pool) Begin(ctx context.Context, snapshot bool) (sqlstore.Tx, error) {
	var opts pgx.TxOptions
	if snapshot {
		opts = pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}
	}
	t, err := d.p.BeginTx(ctx, opts)
	if err != nil && pgconn.SafeToRetry(err) && ctx.Err() == nil {
		t, err = d.p.BeginTx(ctx, opts)
	}
	if err != nil {
		return nil, err
	}
	return tx{t}, nil
}

func (d pool) Ping(ctx context.Context) error { return d.p.Ping(ctx) }

func (d pool) Close() error {
	d.p.Close()
	return nil
}

// tx is a transaction: bound to one connection, never retried.
type tx struct{ t pgx.Tx }

func (t tx) Exec(ctx context.Context, query string, args ...any) (int64, error) {
	tag, err := t.t.Exec(ctx, query, args...)
	return tag.RowsAffected(), err
}

func (t tx) Query(ctx context.Context, query string, args ...any) (sqlstore.Rows, error) {
	rows, err := t.t.Query(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	return rows, nil
}

func (t tx) QueryRow(ctx context.Context, query string, args ...any) sqlstore.Row {
	return t.t.QueryRow(ctx, query, args...)
}

func (t tx) Commit(ctx context.Context) error   { return t.t.Commit(ctx) }
func (t tx) Rollback(ctx context.Context) error { return t.t.Rollback(ctx) }
