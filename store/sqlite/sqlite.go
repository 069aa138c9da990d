// Package sqlite is the embedded store.Store: one SQLite file through the
// pure-Go modernc.org/sqlite driver, schema managed by goose migrations
// embedded in the binary. It suits a single usher replica; several replicas
// share store/postgres instead. The statements are store/internal/sqlstore's,
// shared with store/postgres; this package opens the file and says how
// SQLite differs.
//
// Writes go through a pool of exactly one connection whose transactions
// start with BEGIN IMMEDIATE, so usher's own writers queue in Go instead of
// failing with SQLITE_BUSY; writers queued at the same moment share one
// transaction and one commit (group commit, see groupDB). Reads use a
// separate read-only pool and, in WAL mode, never wait for the writer.
// Every commit is synchronous=FULL, and a write returns only once its
// commit is done: a write the store acknowledged survives a power cut.
// Connections keep their prepared statements (see cachingConn).
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
	"github.com/usherhq/usher/store/internal/sqlstore"
)

//go:embed migrations/*.sql
var migrations embed.FS

// Options tune Open. The zero value is the production default.
type Options struct {
	// NoMigrate opens without applying migrations (they are run by
	// `usher migrate` instead); Open then fails if the schema is behind.
	NoMigrate bool
	// Timeout bounds every call when the caller's context allows longer;
	// default 5s.
	Timeout time.Duration
	// Now is the clock for defaulted timestamps; nil means time.Now.
	Now func() time.Time
	// Log receives migration progress; nil discards it.
	Log *slog.Logger
}

// Store is a store.Store on one SQLite file.
type Store struct {
	*sqlstore.Store
	read *sql.DB
}

var _ store.Store = (*Store)(nil)

// flavor is how SQLite differs: times are unix milliseconds, and with one
// writer at a time there are no row locks to take.
var flavor = sqlstore.Flavor{
	Name:     "sqlite",
	Time:     func(t time.Time) any { return t.UnixMilli() },
	JSONEach: "json_each(?)",
	JSONAgg:  "json_group_array",
	Classify: classify,
}

func classify(err error) sqlstore.Fault {
	var se *sqlite.Error
	if !errors.As(err, &se) {
		return sqlstore.Fault{}
	}
	switch se.Code() {
	case sqlite3.SQLITE_CONSTRAINT_UNIQUE, sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY:
		return sqlstore.Fault{Kind: sqlstore.Unique, Key: uniqueKey(se.Error())}
	case sqlite3.SQLITE_CONSTRAINT_FOREIGNKEY:
		return sqlstore.Fault{Kind: sqlstore.ForeignKey}
	}
	switch se.Code() & 0xff {
	case sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED, sqlite3.SQLITE_IOERR, sqlite3.SQLITE_CANTOPEN,
		sqlite3.SQLITE_FULL, sqlite3.SQLITE_PROTOCOL:
		// Another process holds the file past busy_timeout, or the disk
		// failed or filled up: nothing the caller's input could change.
		return sqlstore.Fault{Kind: sqlstore.Unavailable}
	case sqlite3.SQLITE_TOOBIG:
		return sqlstore.Fault{Kind: sqlstore.Invalid}
	}
	return sqlstore.Fault{}
}

// uniqueKey finds the key's last column in SQLite's message, "UNIQUE
// constraint failed: scim_users.idp, scim_users.user_name_key", which is
// the one that tells the unique keys of a table apart.
func uniqueKey(msg string) string {
	i := strings.LastIndex(msg, "constraint failed: ")
	if i < 0 {
		return ""
	}
	cols, _, _ := strings.Cut(msg[i+len("constraint failed: "):], " (") // the driver's " (2067)"
	if i := strings.LastIndex(cols, ", "); i >= 0 {
		cols = cols[i+len(", "):]
	}
	return cols
}

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

// openDB opens a pool on dsn whose connections keep their prepared
// statements (see cachingConn).
func openDB(dsn string) (*sql.DB, error) {
	c, err := sqlite.NewConnector(dsn)
	if err != nil {
		return nil, err
	}
	return sql.OpenDB(cachingConnector{c}), nil
}

func openWriter(ctx context.Context, path string) (*sql.DB, error) {
	db, err := openDB(dsn(path, false))
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

func migrate(ctx context.Context, path string, db *sql.DB, log *slog.Logger, check bool) error {
	fsys, err := fs.Sub(migrations, "migrations")
	if err == nil {
		err = sqlstore.Migrate(ctx, db, goose.DialectSQLite3, fsys, log, check)
	}
	if err != nil {
		what := "migrate"
		if check {
			what = "check schema"
		}
		return fmt.Errorf("sqlite %s: %s: %w", path, what, err)
	}
	return nil
}

// Migrate brings the schema of the database file at path up to date,
// creating the file if needed.
func Migrate(ctx context.Context, path string) error {
	db, err := openWriter(ctx, path)
	if err != nil {
		return err
	}
	defer db.Close()
	return migrate(ctx, path, db, nil, false)
}

// Open opens (creating if needed) the database file at path and, unless
// opts.NoMigrate, migrates it.
func Open(ctx context.Context, path string, opts Options) (*Store, error) {
	write, err := openWriter(ctx, path)
	if err != nil {
		return nil, err
	}
	if err := migrate(ctx, path, write, opts.Log, opts.NoMigrate); err != nil {
		write.Close()
		return nil, err
	}
	read, err := openDB(dsn(path, true))
	if err != nil {
		write.Close()
		return nil, fmt.Errorf("sqlite %s: open: %w", path, err)
	}
	n := max(4, runtime.GOMAXPROCS(0))
	read.SetMaxOpenConns(n)
	read.SetMaxIdleConns(n)
	s := sqlstore.New(flavor, sqlstore.Config{
		Name: path, Now: opts.Now, Timeout: opts.Timeout,
		// A read transaction in WAL mode reads one snapshot.
		Read:  sqlstore.SQL(read, &sql.TxOptions{ReadOnly: true}),
		Write: newGroupDB(write),
	})
	return &Store{Store: s, read: read}, nil
}
