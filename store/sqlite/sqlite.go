// Package sqlite is the embedded store.Store: one SQLite file through the
// pure-Go modernc.org/sqlite driver, schema managed by goose migrations
// embedded in the binary. It suits a single usher replica; several replicas
// share store/postgres instead.
//
// Writes go through a pool of exactly one connection whose transactions
// start with BEGIN IMMEDIATE, so usher's own writers queue in Go instead of
// failing with SQLITE_BUSY; reads use a separate read-only pool and, in WAL
// mode, never wait for the writer.
package sqlite

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"runtime"
	"strings"
	"time"

	"github.com/pressly/goose/v3"
	sqlite "modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/usherhq/usher/store"
)

//go:embed migrations/*.sql
var migrations embed.FS

// Options tune Open. The zero value is the production default.
type Options struct {
	// NoMigrate opens without applying migrations (they are run by
	// `usher migrate` instead); Open then fails if the schema is behind.
	NoMigrate bool
	// Now is the clock for defaulted timestamps; nil means time.Now.
	Now func() time.Time
	// Log receives migration progress; nil discards it.
	Log *slog.Logger
}

// Store is a store.Store on one SQLite file.
type Store struct {
	path  string
	now   func() time.Time
	write *sql.DB // one connection, BEGIN IMMEDIATE
	read  *sql.DB // read-only connections
}

var _ store.Store = (*Store)(nil)

// busyTimeout is how long a connection waits for a lock held by another
// process (a backup, the sqlite3 shell) before giving up.
const busyTimeout = "5000"

// dsn builds a modernc DSN. The path is escaped because SQLite decodes it
// as a URI: '?' and '#' in a file name would otherwise cut it short.
func dsn(path string, readOnly bool) string {
	esc := strings.NewReplacer("%", "%25", "?", "%3f", "#", "%23").Replace(path)
	q := "_pragma=busy_timeout(" + busyTimeout + ")&_pragma=foreign_keys(1)&_pragma=synchronous(FULL)"
	if readOnly {
		q += "&_pragma=query_only(1)"
	} else {
		q += "&_pragma=journal_mode(WAL)&_txlock=immediate"
	}
	return "file:" + esc + "?" + q
}

func openWriter(ctx context.Context, path string) (*sql.DB, error) {
	db, err := sql.Open("sqlite", dsn(path, false))
	if err != nil {
		return nil, fmt.Errorf("sqlite %s: open: %w", path, err)
	}
	db.SetMaxOpenConns(1)
	db.SetMaxIdleConns(1)
	db.SetConnMaxLifetime(0)
	db.SetConnMaxIdleTime(0)
	// Connect now: the writer's first connection switches the file to WAL
	// before any reader opens it.
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("sqlite %s: open: %w", path, err)
	}
	return db, nil
}

func provider(db *sql.DB, log *slog.Logger) (*goose.Provider, error) {
	fsys, err := fs.Sub(migrations, "migrations")
	if err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return goose.NewProvider(goose.DialectSQLite3, db, fsys, goose.WithSlog(log))
}

// Migrate brings the schema of the database file at path up to date,
// creating the file if needed.
func Migrate(ctx context.Context, path string) error {
	db, err := openWriter(ctx, path)
	if err != nil {
		return err
	}
	defer db.Close()
	return migrate(ctx, path, db, nil)
}

func migrate(ctx context.Context, path string, db *sql.DB, log *slog.Logger) error {
	p, err := provider(db, log)
	if err != nil {
		return fmt.Errorf("sqlite %s: migrate: %w", path, err)
	}
	if _, err := p.Up(ctx); err != nil {
		return fmt.Errorf("sqlite %s: migrate: %w", path, err)
	}
	return nil
}

// Open opens (creating if needed) the database file at path and, unless
// opts.NoMigrate, migrates it.
func Open(ctx context.Context, path string, opts Options) (*Store, error) {
	write, err := openWriter(ctx, path)
	if err != nil {
		return nil, err
	}
	if opts.NoMigrate {
		p, err := provider(write, opts.Log)
		if err == nil {
			var pending bool
			pending, err = p.HasPending(ctx)
			if err == nil && pending {
				err = errors.New("schema is not up to date; run `usher migrate`")
			}
		}
		if err != nil {
			write.Close()
			return nil, fmt.Errorf("sqlite %s: check schema: %w", path, err)
		}
	} else if err := migrate(ctx, path, write, opts.Log); err != nil {
		write.Close()
		return nil, err
	}
	read, err := sql.Open("sqlite", dsn(path, true))
	if err != nil {
		write.Close()
		return nil, fmt.Errorf("sqlite %s: open: %w", path, err)
	}
	n := max(4, runtime.GOMAXPROCS(0))
	read.SetMaxOpenConns(n)
	read.SetMaxIdleConns(n)
	s := &Store{path: path, now: opts.Now, write: write, read: read}
	if s.now == nil {
		s.now = time.Now
	}
	return s, nil
}

// Close closes both pools.
func (s *Store) Close() error {
	return errors.Join(s.read.Close(), s.write.Close())
}

// Ping checks that both pools can reach the file.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.write.PingContext(ctx); err != nil {
		return fmt.Errorf("sqlite %s: ping: %w", s.path, err)
	}
	if err := s.read.PingContext(ctx); err != nil {
		return fmt.Errorf("sqlite %s: ping: %w", s.path, err)
	}
	return nil
}

func millis(t time.Time) int64 { return t.UnixMilli() }

func fromMillis(ms int64) time.Time { return time.UnixMilli(ms).UTC() }

const bindingCols = `idp, subject, username, created_at, last_login`

type scanner interface{ Scan(...any) error }

func scanBinding(row scanner) (store.Binding, error) {
	var (
		b       store.Binding
		created int64
		last    sql.NullInt64
	)
	if err := row.Scan(&b.IdP, &b.Subject, &b.Username, &created, &last); err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			return b, store.ErrNotFound
		}
		return b, err
	}
	b.CreatedAt = fromMillis(created)
	if last.Valid {
		b.LastLogin = fromMillis(last.Int64)
	}
	return b, nil
}

// Bind implements store.Store. An unchanged binding is answered from the
// read pool, so a returning user's login does not queue for the writer.
func (s *Store) Bind(ctx context.Context, b store.Binding) (store.Binding, error) {
	if b.IdP == "" || b.Subject == "" || b.Username == "" {
		return store.Binding{}, fmt.Errorf("sqlite %s: bind %q/%q → %q: idp, subject and username are required", s.path, b.IdP, b.Subject, b.Username)
	}
	cur, err := scanBinding(s.read.QueryRowContext(ctx,
		`SELECT `+bindingCols+` FROM bindings WHERE idp = ? AND subject = ?`, b.IdP, b.Subject))
	switch {
	case err == nil && cur.Username == b.Username:
		return cur, nil
	case err != nil && !errors.Is(err, store.ErrNotFound):
		return store.Binding{}, fmt.Errorf("sqlite %s: bind %s/%s → %s: %w", s.path, b.IdP, b.Subject, b.Username, err)
	}

	created := b.CreatedAt
	if created.IsZero() {
		created = s.now()
	}
	// The upsert keeps created_at and last_login of an existing identity
	// (a rename); the UNIQUE username_key refuses a name another identity
	// owns, and the failed statement changes nothing.
	got, err := scanBinding(s.write.QueryRowContext(ctx, `
		INSERT INTO bindings (idp, subject, username, username_key, created_at)
		VALUES (?, ?, ?, ?, ?)
		ON CONFLICT (idp, subject) DO UPDATE
		SET username = excluded.username, username_key = excluded.username_key
		RETURNING `+bindingCols,
		b.IdP, b.Subject, b.Username, strings.ToLower(b.Username), millis(created)))
	if err != nil {
		var se *sqlite.Error
		if errors.As(err, &se) && se.Code() == sqlite3.SQLITE_CONSTRAINT_UNIQUE {
			err = store.ErrUsernameTaken
		}
		return store.Binding{}, fmt.Errorf("sqlite %s: bind %s/%s → %s: %w", s.path, b.IdP, b.Subject, b.Username, err)
	}
	return got, nil
}

// Binding implements store.Store.
func (s *Store) Binding(ctx context.Context, idp, subject string) (store.Binding, error) {
	b, err := scanBinding(s.read.QueryRowContext(ctx,
		`SELECT `+bindingCols+` FROM bindings WHERE idp = ? AND subject = ?`, idp, subject))
	if err != nil {
		return b, fmt.Errorf("sqlite %s: binding %s/%s: %w", s.path, idp, subject, err)
	}
	return b, nil
}

// BindingByUsername implements store.Store.
func (s *Store) BindingByUsername(ctx context.Context, username string) (store.Binding, error) {
	b, err := scanBinding(s.read.QueryRowContext(ctx,
		`SELECT `+bindingCols+` FROM bindings WHERE username_key = ?`, strings.ToLower(username)))
	if err != nil {
		return b, fmt.Errorf("sqlite %s: binding of username %s: %w", s.path, username, err)
	}
	return b, nil
}

// RecordLogin implements store.Store.
func (s *Store) RecordLogin(ctx context.Context, idp, subject string, at time.Time) error {
	res, err := s.write.ExecContext(ctx,
		`UPDATE bindings SET last_login = ? WHERE idp = ? AND subject = ?`, millis(at), idp, subject)
	if err == nil {
		var n int64
		if n, err = res.RowsAffected(); err == nil && n == 0 {
			err = store.ErrNotFound
		}
	}
	if err != nil {
		return fmt.Errorf("sqlite %s: record login of %s/%s: %w", s.path, idp, subject, err)
	}
	return nil
}

// Append implements store.Store.
func (s *Store) Append(ctx context.Context, events ...store.Event) error {
	if len(events) == 0 {
		return nil
	}
	if err := s.append(ctx, events); err != nil {
		return fmt.Errorf("sqlite %s: append %d audit events: %w", s.path, len(events), err)
	}
	return nil
}

func (s *Store) append(ctx context.Context, events []store.Event) error {
	tx, err := s.write.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	stmt, err := tx.PrepareContext(ctx, `
		INSERT INTO audit (time, action, idp, subject, username, app, actor, outcome, detail)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`)
	if err != nil {
		return err
	}
	defer stmt.Close()
	now := s.now()
	for _, e := range events {
		at := e.Time
		if at.IsZero() {
			at = now
		}
		if _, err := stmt.ExecContext(ctx, millis(at), e.Action, e.IdP, e.Subject, e.Username, e.App, e.Actor, e.Outcome, e.Detail); err != nil {
			return err
		}
	}
	return tx.Commit()
}

// Audit implements store.Store.
func (s *Store) Audit(ctx context.Context, f store.AuditFilter) ([]store.Event, error) {
	var (
		where []string
		args  []any
	)
	for _, c := range []struct{ col, val string }{
		{"idp", f.IdP}, {"username", f.Username}, {"app", f.App}, {"action", f.Action},
	} {
		if c.val != "" {
			where = append(where, c.col+" = ?")
			args = append(args, c.val)
		}
	}
	if !f.Since.IsZero() {
		where = append(where, "time >= ?")
		args = append(args, millis(f.Since))
	}
	if !f.Until.IsZero() {
		where = append(where, "time < ?")
		args = append(args, millis(f.Until))
	}
	q := `SELECT id, time, action, idp, subject, username, app, actor, outcome, detail FROM audit`
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	limit := f.Limit
	if limit <= 0 {
		limit = 100
	}
	q += " ORDER BY time DESC, id DESC LIMIT ?"
	args = append(args, limit)

	rows, err := s.read.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("sqlite %s: audit: %w", s.path, err)
	}
	defer rows.Close()
	var evs []store.Event
	for rows.Next() {
		var (
			e  store.Event
			at int64
		)
		if err := rows.Scan(&e.ID, &at, &e.Action, &e.IdP, &e.Subject, &e.Username, &e.App, &e.Actor, &e.Outcome, &e.Detail); err != nil {
			return nil, fmt.Errorf("sqlite %s: audit: %w", s.path, err)
		}
		e.Time = fromMillis(at)
		evs = append(evs, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite %s: audit: %w", s.path, err)
	}
	return evs, nil
}
