package sqlite

import (
	"context"
	"database/sql/driver"
	"errors"
	"strings"
)

// The driver parses every statement it is handed afresh, and parsing is
// most of what a short query costs: a login's reads spent a fifth of
// their CPU time in SQLite's parser. The store's statements are a fixed
// set of texts, so each connection keeps the statements it has prepared
// and runs them again with new arguments; database/sql gives a
// connection to one goroutine at a time, so the cache needs no lock.

// stmtCacheSize bounds the statements one connection keeps; texts beyond
// it (or longer than stmtCacheText) are prepared for one use, as before.
// The store has fewer fixed statements than this; the rest are built per
// call (multi-row inserts, audit filters).
const (
	stmtCacheSize = 256
	stmtCacheText = 4096
)

// cachingConnector opens connections that keep their prepared statements.
type cachingConnector struct{ driver.Connector }

func (c cachingConnector) Connect(ctx context.Context) (driver.Conn, error) {
	conn, err := c.Connector.Connect(ctx)
	if err != nil {
		return nil, err
	}
	inner, ok := conn.(innerConn)
	if !ok {
		conn.Close()
		return nil, errors.New("sqlite: the driver's connection lacks the context methods the store needs")
	}
	return &cachingConn{innerConn: inner, stmts: map[string]*cachedStmt{}}, nil
}

// innerConn is what every connection of the driver implements, and what
// the wrapper forwards, so that database/sql sees the same capabilities
// through it (see sqlite.NewConnector).
type innerConn interface {
	driver.Conn
	driver.ConnBeginTx
	driver.ConnPrepareContext
	driver.ExecerContext
	driver.QueryerContext
	driver.Pinger
	driver.SessionResetter
	driver.Validator
}

// cachingConn is a driver connection whose ExecContext and QueryContext
// reuse a prepared statement per text.
type cachingConn struct {
	innerConn
	stmts map[string]*cachedStmt
}

var _ innerConn = (*cachingConn)(nil)

type cachedStmt struct {
	stmt interface {
		driver.Stmt
		driver.StmtExecContext
		driver.StmtQueryContext
	}
	// busy: rows of it are open; a statement cannot run twice at once,
	// so a second use meanwhile goes uncached.
	busy bool
}

// Unwrap returns the driver's connection (sqlite.Limit looks through it).
func (c *cachingConn) Unwrap() driver.Conn { return c.innerConn }

// stmt returns the cached statement for query, preparing it on first use;
// nil means run it uncached.
func (c *cachingConn) stmt(ctx context.Context, query string) (*cachedStmt, error) {
	if s, ok := c.stmts[query]; ok {
		if s.busy {
			return nil, nil
		}
		return s, nil
	}
	if len(c.stmts) >= stmtCacheSize || len(query) > stmtCacheText || !keep(query) {
		return nil, nil
	}
	ds, err := c.innerConn.PrepareContext(ctx, query)
	if err != nil {
		return nil, err
	}
	st, ok := ds.(interface {
		driver.Stmt
		driver.StmtExecContext
		driver.StmtQueryContext
	})
	if !ok {
		ds.Close()
		return nil, nil
	}
	s := &cachedStmt{stmt: st}
	c.stmts[query] = s
	return s, nil
}

// keep reports whether query is a statement worth keeping: a query, a
// change of rows or a writer's savepoint (see groupDB), not a migration's
// script or a PRAGMA run once.
func keep(query string) bool {
	q := strings.TrimLeft(query, " \t\r\n")
	for _, verb := range []string{"SELECT", "INSERT", "UPDATE", "DELETE", "WITH", "SAVEPOINT", "RELEASE"} {
		if len(q) >= len(verb) && strings.EqualFold(q[:len(verb)], verb) {
			return true
		}
	}
	return false
}

func (c *cachingConn) ExecContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Result, error) {
	s, err := c.stmt(ctx, query)
	if err != nil {
		return nil, err
	}
	if s == nil {
		return c.innerConn.ExecContext(ctx, query, args)
	}
	return s.stmt.ExecContext(ctx, args)
}

func (c *cachingConn) QueryContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Rows, error) {
	s, err := c.stmt(ctx, query)
	if err != nil {
		return nil, err
	}
	if s == nil {
		return c.innerConn.QueryContext(ctx, query, args)
	}
	rows, err := s.stmt.QueryContext(ctx, args)
	if err != nil {
		return nil, err
	}
	s.busy = true
	return &cachedRows{Rows: rows, s: s}, nil
}

// Close closes the kept statements, then the connection.
func (c *cachingConn) Close() error {
	var errs []error
	for q, s := range c.stmts {
		errs = append(errs, s.stmt.Close())
		delete(c.stmts, q)
	}
	return errors.Join(append(errs, c.innerConn.Close())...)
}

// cachedRows frees its statement for the next use when closed. It keeps
// the optional column-type methods of the driver's rows out of sight;
// the store scans into typed destinations and needs none of them.
type cachedRows struct {
	driver.Rows
	s *cachedStmt
}

func (r *cachedRows) Close() error {
	err := r.Rows.Close()
	r.s.busy = false
	return err
}
