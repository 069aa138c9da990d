// Package sqlstore is the one implementation of store.Store that
// store/sqlite and store/postgres share, written against a small DB
// interface each backend fills with its driver's own pool (database/sql
// for SQLite, pgx for PostgreSQL). What differs between the two databases
// (placeholders, row locking, how a time is stored, a few SQL functions,
// what their errors mean) is a Flavor the backend hands to New. Argument checks, defaults, deadlines, error
// mapping and every statement live here once: a new Store method is
// written here, in SQL both databases speak, and reaches for the Flavor
// only where they differ.
//
// Every call runs under a deadline (the caller's, or the store's timeout
// when that is sooner). Failures come back wrapped once, naming the store
// and what the call did, and typed: store.ErrInvalid for input refused
// before the database was asked, store.ErrUnavailable for a database that
// could not be reached or did not answer in time.
package sqlstore

import (
	"cmp"
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/usherhq/usher/store"
)

// Flavor is what one SQL database does differently.
type Flavor struct {
	// Name starts every error: "sqlite", "postgres".
	Name string
	// Numbered placeholders: statements are written with ? and sent with
	// $1, $2, ... when set.
	Numbered bool
	// Time encodes a timestamp column's value (already UTC, to the
	// millisecond). Reading needs no flavor: see at.
	Time func(time.Time) any
	// SkipLocked ends a SELECT that picks rows to change, so concurrent
	// writers skip rows another is changing instead of queueing behind it
	// (" FOR UPDATE SKIP LOCKED"); empty where writers are serial anyway.
	SkipLocked string
	// LockRevocations, when set, runs first in Revoke's transaction so that
	// revocations commit in seq order (see Revoke).
	LockRevocations string
	// Bytewise follows a text column in ORDER BY or a comparison so that it
	// orders by bytes whatever the database's locale (` COLLATE "C"`);
	// empty where that is the default.
	Bytewise string
	// JSONEach is a set-returning function of one JSON array parameter,
	// whose column "value" holds the elements as text: lists of any length
	// go as one parameter, so each statement has one text.
	JSONEach string
	// JSONAgg aggregates a text column into a JSON array (NULL over no rows).
	JSONAgg string
	// Classify tells apart the driver errors the store maps.
	Classify func(error) Fault
}

// FaultKind is what a driver error means to the store.
type FaultKind int

const (
	// Other is any error the store passes on as it is.
	Other FaultKind = iota
	// Unique: a unique constraint refused the write.
	Unique
	// ForeignKey: the write referred to a row that does not exist.
	ForeignKey
	// Unavailable: the database could not be reached, did not answer, or
	// cannot work now (shutting down, out of connections).
	Unavailable
	// Invalid: the database refused a value as malformed or too large.
	Invalid
)

// Fault classifies a driver error.
type Fault struct {
	Kind FaultKind
	// Key names the unique key a Unique fault tripped, as "table.column"
	// of the column that tells the key apart ("bindings.username_key").
	Key string
}

// Config is the rest of what New needs.
type Config struct {
	// Name says which database, for errors: a path or host:port/database,
	// never a password.
	Name string
	// Read and Write are the pools for reads and for writes; they may be
	// the same. Close closes them.
	Read, Write DB
	// Now is the clock for defaulted timestamps; nil means time.Now.
	Now func() time.Time
	// Timeout bounds every call when the caller's context allows longer;
	// 0 means DefaultTimeout.
	Timeout time.Duration
	// Unavailable, when set, is told every time a call finds the database
	// unavailable, so the pool can check idle connections before reuse.
	Unavailable func()
}

// DefaultTimeout bounds a call when Config.Timeout is 0.
const DefaultTimeout = 5 * time.Second

// Store is a store.Store on a SQL database of one Flavor.
type Store struct {
	f           Flavor
	name        string
	read, write DB
	now         func() time.Time
	timeout     time.Duration
	unavailable func()
}

var _ store.Store = (*Store)(nil)

// New returns the store on the pools of c.
func New(f Flavor, c Config) *Store {
	s := &Store{
		f: f, name: f.Name + " " + c.Name, read: c.Read, write: c.Write,
		now: c.Now, timeout: cmp.Or(c.Timeout, DefaultTimeout), unavailable: c.Unavailable,
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.unavailable == nil {
		s.unavailable = func() {}
	}
	return s
}

// Close closes the pools.
func (s *Store) Close() error {
	if s.read == s.write {
		return s.write.Close()
	}
	return errors.Join(s.read.Close(), s.write.Close())
}

// Ping checks that the database answers on every pool.
func (s *Store) Ping(ctx context.Context) (err error) {
	ctx, end := s.call(ctx, &err, "ping")
	defer end()
	if err := s.write.Ping(ctx); err != nil || s.read == s.write {
		return err
	}
	return s.read.Ping(ctx)
}

// call starts a store call. The context it returns is bounded by the
// store's timeout; the function, deferred, releases that bound and turns
// *errp into the error the caller sees: classified (see classify) and
// prefixed with the store's name and what the call did, formatted from
// format and args only when there is an error to report.
func (s *Store) call(ctx context.Context, errp *error, format string, args ...any) (context.Context, func()) {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	return ctx, func() {
		if *errp != nil {
			// Before cancel: classify reads why ctx ended.
			*errp = fmt.Errorf("%s: %s: %w", s.name, escape(fmt.Sprintf(format, args...)), s.classify(ctx, *errp))
		}
		cancel()
	}
}

// classify maps err to the store's error kinds. ctx is the call's bounded
// context: when it has ended, its deadline (or the caller's cancellation)
// is why the call failed.
func (s *Store) classify(ctx context.Context, err error) error {
	for _, known := range []error{store.ErrNotFound, store.ErrConflict, store.ErrUsernameTaken, store.ErrInvalid, store.ErrUnavailable} {
		if errors.Is(err, known) {
			return err
		}
	}
	if errors.Is(err, sql.ErrNoRows) {
		return store.ErrNotFound
	}
	f := s.f.Classify(err)
	switch f.Kind {
	case Invalid:
		return fmt.Errorf("%w: %w", store.ErrInvalid, err)
	case Unique:
		return fmt.Errorf("%w: %w", store.ErrConflict, err)
	}
	if cerr := ctx.Err(); cerr != nil {
		if !errors.Is(err, cerr) {
			// Drivers report an interrupted statement their own way.
			err = fmt.Errorf("%w: %w", cerr, err)
		}
		if errors.Is(cerr, context.DeadlineExceeded) {
			s.unavailable()
			return fmt.Errorf("%w: no answer in time: %w", store.ErrUnavailable, err)
		}
		return err // canceled by the caller: not the database's fault
	}
	if f.Kind == Unavailable || errors.Is(err, driver.ErrBadConn) || errors.Is(err, sql.ErrConnDone) {
		s.unavailable()
		return fmt.Errorf("%w: %w", store.ErrUnavailable, err)
	}
	return err
}

// invalid is a refusal of the caller's input.
func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", store.ErrInvalid, fmt.Sprintf(format, args...))
}

// text refuses strings no backend stores alike: PostgreSQL cannot keep a
// NUL byte in text and refuses invalid UTF-8, so neither backend accepts
// them, and a caller gets ErrInvalid instead of a database error that looks
// temporary.
func text(ss ...string) error {
	for _, v := range ss {
		if isText(v) {
			continue
		}
		if strings.IndexByte(v, 0) >= 0 {
			return invalid("%s contains a NUL byte", strconv.QuoteToASCII(v))
		}
		if !utf8.ValidString(v) {
			return invalid("%s is not valid UTF-8", strconv.QuoteToASCII(v))
		}
	}
	return nil
}

// scrub makes free text (an audit event's Detail, a job's last error, a
// sweep's reason) storable instead of refusing it: these carry other
// systems' error messages, which may hold any bytes, and refusing them
// would lose the record. NUL and invalid UTF-8 become U+FFFD, the same in
// every backend.
func scrub(v string) string {
	if isText(v) {
		return v
	}
	return strings.ToValidUTF8(strings.ReplaceAll(v, "\x00", "\uFFFD"), "\uFFFD")
}

// escape shows the bytes text refuses as \xNN, so that an error naming
// refused input is itself text a caller can log or audit.
func escape(v string) string {
	if isText(v) {
		return v
	}
	var b strings.Builder
	for i := 0; i < len(v); {
		r, n := utf8.DecodeRuneInString(v[i:])
		if r == 0 || (r == utf8.RuneError && n == 1) {
			fmt.Fprintf(&b, "\\x%02x", v[i])
		} else {
			b.WriteString(v[i : i+n])
		}
		i += n
	}
	return b.String()
}

// isText reports whether text accepts v.
func isText(v string) bool { return strings.IndexByte(v, 0) < 0 && utf8.ValidString(v) }

// checkArgs applies text to every string argument of a statement.
func checkArgs(args []any) error {
	for _, a := range args {
		if v, ok := a.(string); ok {
			if err := text(v); err != nil {
				return err
			}
		}
	}
	return nil
}

// fold is the case-insensitive key of a name: lower case, as the apps
// compare names. Invalid UTF-8 is kept as it is, so that the argument
// check refuses it instead of ToLower quietly replacing it.
func fold(v string) string {
	if !utf8.ValidString(v) {
		return v
	}
	return strings.ToLower(v)
}

// orNow is t, or the store's now when t is zero.
func (s *Store) orNow(t time.Time) time.Time {
	if t.IsZero() {
		return s.now()
	}
	return t
}

// orTime is t, or def when t is zero.
func orTime(t, def time.Time) time.Time {
	if t.IsZero() {
		return def
	}
	return t
}

// ts encodes a time for a timestamp column: UTC, millisecond precision.
func (s *Store) ts(t time.Time) any { return s.f.Time(t.UTC().Truncate(time.Millisecond)) }

// nullTS is ts, with a zero time stored as NULL so "never" survives the
// trip.
func (s *Store) nullTS(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return s.ts(t)
}

// at reads a timestamp column into *t, in UTC, whichever way the flavor
// stores it: unix milliseconds or a timestamp. NULL reads as the zero time.
func at(t *time.Time) sql.Scanner { return timeCol{t} }

type timeCol struct{ t *time.Time }

func (c timeCol) Scan(v any) error {
	switch v := v.(type) {
	case nil:
		*c.t = time.Time{}
	case int64:
		*c.t = time.UnixMilli(v).UTC()
	case time.Time:
		*c.t = v.UTC()
	default:
		return fmt.Errorf("cannot read a %T as a time", v)
	}
	return nil
}

// scanner is a row to scan.
type scanner interface{ Scan(dest ...any) error }

// errRow is a row that was never asked for: scanning it gives err.
type errRow struct{ err error }

func (r errRow) Scan(...any) error { return r.err }

// exec runs a statement and returns how many rows it changed.
func (s *Store) exec(ctx context.Context, q Querier, query string, args ...any) (int64, error) {
	if err := checkArgs(args); err != nil {
		return 0, err
	}
	return q.Exec(ctx, s.sql(query), args...)
}

// query runs a statement that returns rows.
func (s *Store) query(ctx context.Context, q Querier, query string, args ...any) (Rows, error) {
	if err := checkArgs(args); err != nil {
		return nil, err
	}
	return q.Query(ctx, s.sql(query), args...)
}

// row runs a statement that returns at most one row; no row scans as
// sql.ErrNoRows, which the call reports as store.ErrNotFound.
func (s *Store) row(ctx context.Context, q Querier, query string, args ...any) scanner {
	if err := checkArgs(args); err != nil {
		return errRow{err}
	}
	return q.QueryRow(ctx, s.sql(query), args...)
}

// collect scans every row of a query; no rows is a nil slice.
func collect[T any](rows Rows, err error, scan func(scanner) (T, error)) ([]T, error) {
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []T
	for rows.Next() {
		v, err := scan(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, rows.Err()
}

// tx runs fn in a transaction on db, a snapshot one when asked,
// committing when fn succeeds. A failed commit is never retried: it may
// have been applied.
func (s *Store) tx(ctx context.Context, db DB, snapshot bool, fn func(Querier) error) error {
	tx, err := db.Begin(ctx, snapshot)
	if err != nil {
		return err
	}
	// After a commit this does nothing; past the deadline, pgx drops the
	// connection rather than wait.
	defer tx.Rollback(ctx)
	if err := fn(tx); err != nil {
		return err
	}
	return tx.Commit(ctx)
}

// maxRows bounds the rows of one multi-row INSERT, far below either
// database's limit on parameters.
const maxRows = 500

// insertRows inserts rows, each the values of one "(?, ...)" tuple, with
// statements head + tuples + tail, one per maxRows rows, in one
// transaction when there are more.
func (s *Store) insertRows(ctx context.Context, head, tail string, rows [][]any) error {
	for _, r := range rows {
		if err := checkArgs(r); err != nil {
			return err
		}
	}
	tuple := "(?" + strings.Repeat(", ?", len(rows[0])-1) + ")"
	insert := func(q Querier) error {
		for start := 0; start < len(rows); start += maxRows {
			chunk := rows[start:min(start+maxRows, len(rows))]
			var b strings.Builder
			args := make([]any, 0, len(chunk)*len(chunk[0]))
			b.WriteString(head)
			for i, r := range chunk {
				if i > 0 {
					b.WriteString(", ")
				}
				b.WriteString(tuple)
				args = append(args, r...)
			}
			b.WriteString(tail)
			if _, err := s.exec(ctx, q, b.String(), args...); err != nil {
				return err
			}
		}
		return nil
	}
	if len(rows) <= maxRows {
		return insert(s.write) // one statement is one transaction
	}
	return s.tx(ctx, s.write, false, func(tx Querier) error { return insert(tx) })
}

// sql rewrites a statement's ? placeholders for the flavor. Statements
// never hold a literal '?'.
func (s *Store) sql(query string) string {
	if !s.f.Numbered {
		return query
	}
	n := strings.Count(query, "?")
	if n == 0 {
		return query
	}
	var b strings.Builder
	b.Grow(len(query) + 2*n)
	i := 0
	for {
		j := strings.IndexByte(query, '?')
		if j < 0 {
			b.WriteString(query)
			return b.String()
		}
		i++
		b.WriteString(query[:j])
		b.WriteByte('$')
		b.WriteString(strconv.Itoa(i))
		query = query[j+1:]
	}
}
