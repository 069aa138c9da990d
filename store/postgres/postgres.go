// Package postgres is the store.Store that several usher replicas share:
// PostgreSQL through a pgx connection pool, schema managed by goose
// migrations embedded in the binary (the same versions as store/sqlite).
// The statements are store/internal/sqlstore's, shared with store/sqlite;
// this package connects and says how PostgreSQL differs.
//
// Correctness across replicas comes from the database, not from Go locks:
// username uniqueness is a constraint, Bind is a single upsert, and
// concurrent migrations serialise on a goose advisory lock.
//
// A pooled connection is checked before reuse when it may have died
// unnoticed: when it sat idle over a second, when a call found the database
// unavailable since it was last used, or when the server closed it or sent
// it something while idle (a restart's goodbye). A statement that failed
// before any byte of it was sent is retried on another connection; one
// that may have reached the server never is.
package postgres

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"

	"github.com/usherhq/usher/store"
	"github.com/usherhq/usher/store/internal/sqlstore"
	"github.com/usherhq/usher/store/postgres/migrations"
)

// Options tune Open. The zero value is the production default.
type Options struct {
	// MaxConns caps the pool; default 10.
	MaxConns int32
	// StatementTimeout bounds every statement on the server; default 5s.
	StatementTimeout time.Duration
	// ConnectTimeout bounds each connection attempt; default 5s.
	ConnectTimeout time.Duration
	// Timeout bounds every call on the client, when the caller's context
	// allows longer, so that a server that accepts connections but never
	// answers cannot hold a caller; default 5s.
	Timeout time.Duration
	// NoMigrate opens without applying migrations (they are run by
	// `usher migrate` instead); Open then fails if the schema is behind.
	NoMigrate bool
	// Now is the clock for defaulted timestamps; nil means time.Now.
	Now func() time.Time
	// Log receives migration progress; nil discards it.
	Log *slog.Logger
}

// Store is a store.Store on a PostgreSQL database.
type Store struct {
	*sqlstore.Store
	pool *pgxpool.Pool
}

var _ store.Store = (*Store)(nil)

// flavor is how PostgreSQL differs: numbered placeholders, timestamptz,
// row locks that concurrent replicas skip, and text that orders by the
// database's locale unless told otherwise.
var flavor = sqlstore.Flavor{
	Name:            "postgres",
	Numbered:        true,
	Time:            func(t time.Time) any { return t },
	SkipLocked:      " FOR UPDATE SKIP LOCKED",
	LockRevocations: "LOCK TABLE revocations IN EXCLUSIVE MODE",
	Bytewise:        ` COLLATE "C"`,
	JSONEach:        "json_array_elements_text(CAST(CAST(? AS text) AS json))",
	JSONAgg:         "json_agg",
	Classify:        classify,
}

// uniqueKeys names each unique constraint as sqlstore does: the
// "table.column" that tells it apart.
var uniqueKeys = map[string]string{
	"bindings_username_key":    "bindings.username_key",
	"scim_users_user_name":     "scim_users.user_name_key",
	"scim_users_external_id":   "scim_users.external_id",
	"scim_groups_display_name": "scim_groups.display_name_key",
	"scim_groups_external_id":  "scim_groups.external_id",
}

func classify(err error) sqlstore.Fault {
	if pe, ok := errors.AsType[*pgconn.PgError](err); ok {
		switch class := pe.Code[:2]; {
		case pe.Code == "23505":
			return sqlstore.Fault{Kind: sqlstore.Unique, Key: uniqueKeys[pe.ConstraintName]}
		case pe.Code == "23503":
			return sqlstore.Fault{Kind: sqlstore.ForeignKey}
		case class == "22", class == "54":
			// Data exceptions (bad encoding, NUL) and limits (a key too
			// long for an index): the same input fails again.
			return sqlstore.Fault{Kind: sqlstore.Invalid}
		case class == "08", class == "53", class == "57", pe.Code == "25006":
			// Connection trouble, out of resources, shutting down or
			// canceled (statement_timeout), a standby after a failover.
			return sqlstore.Fault{Kind: sqlstore.Unavailable}
		}
		return sqlstore.Fault{}
	}
	var ne net.Error
	switch {
	case errors.As(err, new(*pgconn.ConnectError)), errors.As(err, &ne),
		errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, pgconn.ErrConnClosed),
		pgconn.Timeout(err), pgconn.SafeToRetry(err):
		return sqlstore.Fault{Kind: sqlstore.Unavailable}
	}
	return sqlstore.Fault{}
}

// Open connects to dsn, checks the server answers and, unless
// opts.NoMigrate, migrates the schema. An unreachable server fails within
// ConnectTimeout with an error naming host:port.
func Open(ctx context.Context, dsn string, opts Options) (*Store, error) {
	cfg, name, err := parse(dsn, opts)
	if err != nil {
		return nil, err
	}
	h := &health{}
	cfg.MaxConns = cmp.Or(opts.MaxConns, 10)
	cfg.ShouldPing = h.shouldPing
	cfg.PrepareConn = h.prepare
	p, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("postgres %s: open pool: %w", name, err)
	}
	if err := reachable(ctx, p.Ping(ctx), name); err != nil {
		p.Close()
		return nil, err
	}
	if err := migrate(ctx, cfg.ConnConfig, name, opts.Log, opts.NoMigrate); err != nil {
		p.Close()
		return nil, err
	}
	db := pool{p}
	s := sqlstore.New(flavor, sqlstore.Config{
		Name: name, Read: db, Write: db, Now: opts.Now, Timeout: opts.Timeout, Unavailable: h.fault,
	})
	return &Store{Store: s, pool: p}, nil
}

// Migrate brings the schema of the database at dsn up to date. Replicas
// running it at once take turns.
func Migrate(ctx context.Context, dsn string) error {
	cfg, name, err := parse(dsn, Options{})
	if err != nil {
		return err
	}
	return migrate(ctx, cfg.ConnConfig, name, nil, false)
}

// migrate migrates (or, with check, checks) the schema through a
// database/sql pool of its own, as goose wants, without the statement
// timeout: building an index on a large table may take longer than any
// call should.
func migrate(ctx context.Context, cc *pgx.ConnConfig, name string, log *slog.Logger, check bool) error {
	cc = cc.Copy()
	cc.RuntimeParams["statement_timeout"] = "0"
	db := stdlib.OpenDB(*cc)
	defer db.Close()
	db.SetMaxOpenConns(2)
	if err := reachable(ctx, db.PingContext(ctx), name); err != nil {
		return err
	}
	what := "migrate"
	if check {
		what = "check schema"
	}
	locker, err := lock.NewPostgresSessionLocker(lock.WithLockTimeout(1, 300))
	if err == nil {
		err = sqlstore.Migrate(ctx, db, goose.DialectPostgres, migrations.FS, log, check, goose.WithSessionLocker(locker))
	}
	if err != nil {
		return fmt.Errorf("postgres %s: %s: %w", name, what, err)
	}
	return nil
}

// parse reads the DSN and applies opts; name says where the database is,
// for errors, without the password.
func parse(dsn string, opts Options) (*pgxpool.Config, string, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		// pgx's parse errors redact passwords only on a best-effort basis,
		// and a malformed DSN is where that fails; keep them out.
		return nil, "", errors.New("postgres: cannot parse the DSN (details withheld: it may hold a password)")
	}
	cc := cfg.ConnConfig
	cc.ConnectTimeout = cmp.Or(opts.ConnectTimeout, 5*time.Second)
	cc.RuntimeParams["statement_timeout"] = strconv.FormatInt(cmp.Or(opts.StatementTimeout, 5*time.Second).Milliseconds(), 10)
	if cc.RuntimeParams["application_name"] == "" {
		cc.RuntimeParams["application_name"] = "usher"
	}
	return cfg, net.JoinHostPort(cc.Host, strconv.Itoa(int(cc.Port))) + "/" + cc.Database, nil
}

// reachable explains a failed first ping.
func reachable(ctx context.Context, err error, name string) error {
	switch {
	case err == nil:
		return nil
	case errors.As(err, new(*pgconn.PgError)):
		// The server answered: wrong user, password or database.
		return fmt.Errorf("postgres %s: connect: %w", name, err)
	case ctx.Err() != nil:
		return fmt.Errorf("postgres %s: connect: %w", name, ctx.Err())
	default:
		return fmt.Errorf("postgres %s: database unreachable: %w: %w", name, store.ErrUnavailable, err)
	}
}

// health decides which pooled connections to check before reuse.
type health struct {
	lastFault atomic.Int64 // unix nanoseconds of the last call that found the database unavailable
}

// fault records that a call found the database unavailable.
func (h *health) fault() { h.lastFault.Store(time.Now().UnixNano()) }

// shouldPing pings a connection idle for over a second (pgx's default) or
// last handed out before the latest fault: it may have died with the
// others.
func (h *health) shouldPing(_ context.Context, p pgxpool.ShouldPingParams) bool {
	return p.IdleDuration > time.Second || time.Now().Add(-p.IdleDuration).UnixNano() <= h.lastFault.Load()
}

// prepare runs on every acquire: a connection the server closed, or spoke
// on, while it sat idle gets pinged, so a restarted server's dead
// connections are dropped (the pool then takes another) instead of
// failing the next statement.
func (h *health) prepare(ctx context.Context, c *pgx.Conn) (bool, error) {
	if readable(c.PgConn().Conn()) {
		return c.PgConn().Ping(ctx) == nil, nil
	}
	return true, nil
}
