// Package postgres is the store.Store that several usher replicas share:
// PostgreSQL through a pgx connection pool, schema managed by goose
// migrations embedded in the binary (the same versions as store/sqlite).
//
// Correctness across replicas comes from the database, not from Go locks:
// username uniqueness is a constraint, Bind is a single upsert, and
// concurrent migrations serialise on a goose advisory lock.
package postgres

import (
	"cmp"
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"

	"github.com/usherhq/usher/store"
)

//go:embed migrations/*.sql
var migrations embed.FS

// Options tune Open. The zero value is the production default.
type Options struct {
	// MaxConns caps the pool; default 10.
	MaxConns int32
	// StatementTimeout bounds every statement on the server; default 5s.
	StatementTimeout time.Duration
	// ConnectTimeout bounds each connection attempt; default 5s.
	ConnectTimeout time.Duration
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
	name string // host:port/database, for errors; never the password
	now  func() time.Time
	pool *pgxpool.Pool
}

var _ store.Store = (*Store)(nil)

// Open connects to dsn, checks the server answers and, unless
// opts.NoMigrate, migrates the schema. An unreachable server fails within
// ConnectTimeout with an error naming host:port.
func Open(ctx context.Context, dsn string, opts Options) (*Store, error) {
	pool, name, err := connect(ctx, dsn, opts)
	if err != nil {
		return nil, err
	}
	if opts.NoMigrate {
		err = checkSchema(ctx, pool, opts.Log)
	} else {
		err = migrate(ctx, pool, opts.Log)
	}
	if err != nil {
		pool.Close()
		return nil, fmt.Errorf("postgres %s: %w", name, err)
	}
	s := &Store{name: name, now: opts.Now, pool: pool}
	if s.now == nil {
		s.now = time.Now
	}
	return s, nil
}

// Migrate brings the schema of the database at dsn up to date. Replicas
// running it at once take turns.
func Migrate(ctx context.Context, dsn string) error {
	pool, name, err := connect(ctx, dsn, Options{})
	if err != nil {
		return err
	}
	defer pool.Close()
	if err := migrate(ctx, pool, nil); err != nil {
		return fmt.Errorf("postgres %s: %w", name, err)
	}
	return nil
}

func connect(ctx context.Context, dsn string, opts Options) (*pgxpool.Pool, string, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		// pgx's parse errors redact passwords only on a best-effort basis,
		// and a malformed DSN is where that fails; keep them out.
		return nil, "", errors.New("postgres: cannot parse the DSN (details withheld: it may hold a password)")
	}
	cfg.MaxConns = cmp.Or(opts.MaxConns, 10)
	cc := cfg.ConnConfig
	cc.ConnectTimeout = cmp.Or(opts.ConnectTimeout, 5*time.Second)
	cc.RuntimeParams["statement_timeout"] = strconv.FormatInt(cmp.Or(opts.StatementTimeout, 5*time.Second).Milliseconds(), 10)
	if cc.RuntimeParams["application_name"] == "" {
		cc.RuntimeParams["application_name"] = "usher"
	}
	addr := net.JoinHostPort(cc.Host, strconv.Itoa(int(cc.Port)))
	name := addr + "/" + cc.Database

	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, "", fmt.Errorf("postgres %s: open pool: %w", name, err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		var pgErr *pgconn.PgError
		switch {
		case errors.As(err, &pgErr):
			// The server answered: wrong user, password or database.
			return nil, "", fmt.Errorf("postgres %s: connect: %w", name, err)
		case ctx.Err() != nil:
			return nil, "", fmt.Errorf("postgres %s: connect: %w", name, ctx.Err())
		default:
			return nil, "", fmt.Errorf("postgres %s: database unreachable: %w", name, err)
		}
	}
	return pool, name, nil
}

func provider(pool *pgxpool.Pool, log *slog.Logger) (*goose.Provider, func() error, error) {
	fsys, err := fs.Sub(migrations, "migrations")
	if err != nil {
		return nil, nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	locker, err := lock.NewPostgresSessionLocker(lock.WithLockTimeout(1, 300))
	if err != nil {
		return nil, nil, err
	}
	// goose speaks database/sql; borrow the pool's connections for it.
	db := stdlib.OpenDBFromPool(pool)
	p, err := goose.NewProvider(goose.DialectPostgres, db, fsys, goose.WithSlog(log), goose.WithSessionLocker(locker))
	if err != nil {
		db.Close()
		return nil, nil, err
	}
	return p, db.Close, nil
}

func migrate(ctx context.Context, pool *pgxpool.Pool, log *slog.Logger) error {
	p, closeDB, err := provider(pool, log)
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	defer closeDB()
	if _, err := p.Up(ctx); err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	return nil
}

func checkSchema(ctx context.Context, pool *pgxpool.Pool, log *slog.Logger) error {
	p, closeDB, err := provider(pool, log)
	if err != nil {
		return fmt.Errorf("check schema: %w", err)
	}
	defer closeDB()
	pending, err := p.HasPending(ctx)
	if err != nil {
		return fmt.Errorf("check schema: %w", err)
	}
	if pending {
		return errors.New("check schema: schema is not up to date; run `usher migrate`")
	}
	return nil
}

// Close closes the pool.
func (s *Store) Close() error {
	s.pool.Close()
	return nil
}

// Ping checks the server answers.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.pool.Ping(ctx); err != nil {
		return fmt.Errorf("postgres %s: ping: %w", s.name, err)
	}
	return nil
}

// ts is how times go in: UTC, millisecond precision, like store/sqlite.
func ts(t time.Time) time.Time { return t.UTC().Truncate(time.Millisecond) }

const bindingCols = `idp, subject, username, created_at, last_login`

func scanBinding(row pgx.Row) (store.Binding, error) {
	var (
		b    store.Binding
		last *time.Time
	)
	if err := row.Scan(&b.IdP, &b.Subject, &b.Username, &b.CreatedAt, &last); err != nil {
		if errors.Is(err, pgx.ErrNoRows) {
			return store.Binding{}, store.ErrNotFound
		}
		return store.Binding{}, err
	}
	b.CreatedAt = b.CreatedAt.UTC()
	if last != nil {
		b.LastLogin = last.UTC()
	}
	return b, nil
}

// Bind implements store.Store. An unchanged binding is answered by a read;
// otherwise one upsert does the work, so two replicas binding the same
// username race only inside PostgreSQL, where the unique constraint picks
// the winner.
func (s *Store) Bind(ctx context.Context, b store.Binding) (store.Binding, error) {
	if b.IdP == "" || b.Subject == "" || b.Username == "" {
		return store.Binding{}, fmt.Errorf("postgres %s: bind %q/%q → %q: idp, subject and username are required", s.name, b.IdP, b.Subject, b.Username)
	}
	created := b.CreatedAt
	if created.IsZero() {
		created = s.now()
	}
	// ON CONFLICT only arbitrates the primary key. When one identity is
	// inserted twice at once, the loser trips the username constraint
	// instead; the owner then turns out to be the identity itself, and
	// another pass finds the committed row. Three passes also cover a
	// rename racing with it.
	var (
		got store.Binding
		err error
	)
	for range 3 {
		got, err = s.bind(ctx, b, created)
		if !errors.Is(err, store.ErrUsernameTaken) {
			break
		}
		owner, oerr := s.BindingByUsername(ctx, b.Username)
		if oerr != nil && !errors.Is(oerr, store.ErrNotFound) {
			return store.Binding{}, oerr
		}
		if oerr == nil && (owner.IdP != b.IdP || owner.Subject != b.Subject) {
			break
		}
	}
	if err != nil {
		return store.Binding{}, fmt.Errorf("postgres %s: bind %s/%s → %s: %w", s.name, b.IdP, b.Subject, b.Username, err)
	}
	return got, nil
}

func (s *Store) bind(ctx context.Context, b store.Binding, created time.Time) (store.Binding, error) {
	cur, err := scanBinding(s.pool.QueryRow(ctx,
		`SELECT `+bindingCols+` FROM bindings WHERE idp = $1 AND subject = $2`, b.IdP, b.Subject))
	switch {
	case err == nil && cur.Username == b.Username:
		return cur, nil
	case err != nil && !errors.Is(err, store.ErrNotFound):
		return store.Binding{}, err
	}
	got, err := scanBinding(s.pool.QueryRow(ctx, `
		INSERT INTO bindings (idp, subject, username, username_key, created_at)
		VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (idp, subject) DO UPDATE
		SET username = EXCLUDED.username, username_key = EXCLUDED.username_key
		RETURNING `+bindingCols,
		b.IdP, b.Subject, b.Username, strings.ToLower(b.Username), ts(created)))
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "23505" && pgErr.ConstraintName == "bindings_username_key" {
		err = store.ErrUsernameTaken
	}
	return got, err
}

// Binding implements store.Store.
func (s *Store) Binding(ctx context.Context, idp, subject string) (store.Binding, error) {
	b, err := scanBinding(s.pool.QueryRow(ctx,
		`SELECT `+bindingCols+` FROM bindings WHERE idp = $1 AND subject = $2`, idp, subject))
	if err != nil {
		return b, fmt.Errorf("postgres %s: binding %s/%s: %w", s.name, idp, subject, err)
	}
	return b, nil
}

// BindingByUsername implements store.Store.
func (s *Store) BindingByUsername(ctx context.Context, username string) (store.Binding, error) {
	b, err := scanBinding(s.pool.QueryRow(ctx,
		`SELECT `+bindingCols+` FROM bindings WHERE username_key = $1`, strings.ToLower(username)))
	if err != nil {
		return b, fmt.Errorf("postgres %s: binding of username %s: %w", s.name, username, err)
	}
	return b, nil
}

// RecordLogin implements store.Store.
func (s *Store) RecordLogin(ctx context.Context, idp, subject string, at time.Time) error {
	tag, err := s.pool.Exec(ctx,
		`UPDATE bindings SET last_login = $1 WHERE idp = $2 AND subject = $3`, ts(at), idp, subject)
	if err == nil && tag.RowsAffected() == 0 {
		err = store.ErrNotFound
	}
	if err != nil {
		return fmt.Errorf("postgres %s: record login of %s/%s: %w", s.name, idp, subject, err)
	}
	return nil
}

// Append implements store.Store. The events go in one batch inside one
// transaction, so their IDs follow their order.
func (s *Store) Append(ctx context.Context, events ...store.Event) error {
	if len(events) == 0 {
		return nil
	}
	now := s.now()
	batch := &pgx.Batch{}
	for _, e := range events {
		at := e.Time
		if at.IsZero() {
			at = now
		}
		batch.Queue(`INSERT INTO audit (time, action, idp, subject, username, app, actor, outcome, detail)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)`,
			ts(at), e.Action, e.IdP, e.Subject, e.Username, e.App, e.Actor, e.Outcome, e.Detail)
	}
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		return tx.SendBatch(ctx, batch).Close()
	})
	if err != nil {
		return fmt.Errorf("postgres %s: append %d audit events: %w", s.name, len(events), err)
	}
	return nil
}

// Audit implements store.Store.
func (s *Store) Audit(ctx context.Context, f store.AuditFilter) ([]store.Event, error) {
	var (
		where []string
		args  []any
	)
	add := func(cond string, v any) {
		args = append(args, v)
		where = append(where, fmt.Sprintf(cond, len(args)))
	}
	for _, c := range []struct{ col, val string }{
		{"idp", f.IdP}, {"username", f.Username}, {"app", f.App}, {"action", f.Action},
	} {
		if c.val != "" {
			add(c.col+" = $%d", c.val)
		}
	}
	if !f.Since.IsZero() {
		add("time >= $%d", ts(f.Since))
	}
	if !f.Until.IsZero() {
		add("time < $%d", ts(f.Until))
	}
	q := `SELECT id, time, action, idp, subject, username, app, actor, outcome, detail FROM audit`
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	limit := f.Limit
	if limit <= 0 {
		limit = 100
	}
	args = append(args, limit)
	q += fmt.Sprintf(" ORDER BY time DESC, id DESC LIMIT $%d", len(args))

	rows, err := s.pool.Query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("postgres %s: audit: %w", s.name, err)
	}
	evs, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (store.Event, error) {
		var e store.Event
		err := row.Scan(&e.ID, &e.Time, &e.Action, &e.IdP, &e.Subject, &e.Username, &e.App, &e.Actor, &e.Outcome, &e.Detail)
		e.Time = e.Time.UTC()
		return e, err
	})
	if err != nil {
		return nil, fmt.Errorf("postgres %s: audit: %w", s.name, err)
	}
	if len(evs) == 0 {
		evs = nil
	}
	return evs, nil
}
