package sqlstore

import (
	"context"
	"database/sql"
)

// DB is what the store needs of a connection pool. It is small so that
// each backend can hand over its driver's own pool: database/sql's for
// SQLite, pgx's for PostgreSQL (which spares every call database/sql's
// conversions and its goroutine per query).
type DB interface {
	Querier
	// Begin starts a transaction; with snapshot, a read-only one whose
	// statements all see the same data.
	Begin(ctx context.Context, snapshot bool) (Tx, error)
	Ping(ctx context.Context) error
	Close() error
}

// Querier runs statements, on a pool or in a transaction. A statement
// that failed before any of it reached the server may be retried on
// another connection; one that may have reached it never is.
type Querier interface {
	// Exec runs a statement and reports how many rows it changed.
	Exec(ctx context.Context, query string, args ...any) (int64, error)
	Query(ctx context.Context, query string, args ...any) (Rows, error)
	// QueryRow runs a statement for one row; scanning no row gives an
	// error wrapping sql.ErrNoRows.
	QueryRow(ctx context.Context, query string, args ...any) Row
}

// Tx is a transaction.
type Tx interface {
	Querier
	Commit(ctx context.Context) error
	Rollback(ctx context.Context) error
}

// Rows are the rows of a query.
type Rows interface {
	Next() bool
	Scan(dest ...any) error
	Err() error
	Close()
}

// Row is the row of QueryRow.
type Row interface {
	Scan(dest ...any) error
}

// SQL is a DB on a database/sql pool; snapshot begins the read-only
// transactions that see one snapshot.
func SQL(db *sql.DB, snapshot *sql.TxOptions) DB { return sqlDB{sqlQuerier{db}, db, snapshot} }

type sqlDB struct {
	sqlQuerier
	db       *sql.DB
	snapshot *sql.TxOptions
}

func (d sqlDB) Begin(ctx context.Context, snapshot bool) (Tx, error) {
	var opts *sql.TxOptions
	if snapshot {
		opts = d.snapshot
	}
	tx, err := d.db.BeginTx(ctx, opts)
	if err != nil {
		return nil, err
	}
	return sqlTx{sqlQuerier{tx}, tx}, nil
}

func (d sqlDB) Ping(ctx context.Context) error { return d.db.PingContext(ctx) }
func (d sqlDB) Close() error                   { return d.db.Close() }

type sqlTx struct {
	sqlQuerier
	tx *sql.Tx
}

func (t sqlTx) Commit(context.Context) error   { return t.tx.Commit() }
func (t sqlTx) Rollback(context.Context) error { return t.tx.Rollback() }

// sqlQuerier is a database/sql pool or transaction.
type sqlQuerier struct {
	q interface {
		ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
		QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
		QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
	}
}

func (q sqlQuerier) Exec(ctx context.Context, query string, args ...any) (int64, error) {
	res, err := q.q.ExecContext(ctx, query, args...)
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

func (q sqlQuerier) Query(ctx context.Context, query string, args ...any) (Rows, error) {
	rows, err := q.q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	return sqlRows{rows}, nil
}

func (q sqlQuerier) QueryRow(ctx context.Context, query string, args ...any) Row {
	return q.q.QueryRowContext(ctx, query, args...)
}

type sqlRows struct{ *sql.Rows }

func (r sqlRows) Close() { r.Rows.Close() }
