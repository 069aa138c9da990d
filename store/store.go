// Package store is usher's persistence: identity bindings and logins, the
// audit log, provisioning state and the retry queue, coordination between
// replicas (replay cache, revocations, leases), pushed SCIM users and
// the SCIM brake's counts and held removals, sweep runs and small blobs
// (keys, certificates, directory sync state).
// Implementations live in store/sqlite (the embedded default)
// and store/postgres (shared by several replicas), which open their
// database and describe its dialect; the statements are written once, in
// store/internal/sqlstore, so a new method is one implementation there.
// store/storetest is the conformance suite every implementation passes.
package store

import (
	"context"
	"errors"
	"time"
)

// ErrNotFound is returned when a looked-up record does not exist.
var ErrNotFound = errors.New("store: not found")

// ErrConflict is returned when a unique value (a SCIM userName or
// externalId within an IdP) is already taken.
var ErrConflict = errors.New("store: conflict")

// ErrUsernameTaken is returned when a username is already bound to another
// (idp, subject).
var ErrUsernameTaken = errors.New("store: username bound to another identity")

// ErrInvalid is returned for input no backend can store: a required field
// left empty, a malformed key or cursor, text with a NUL byte or invalid
// UTF-8 (which PostgreSQL refuses, so SQLite refuses it too). It is the
// caller's mistake: sending the same input again fails again. Backends
// refuse it before talking to the database. Free text that records what
// happened elsewhere (Event.Detail, a job's last error, a sweep's reason)
// is not refused but stored with such bytes replaced by U+FFFD, so that
// another system's odd error message cannot lose the record.
var ErrInvalid = errors.New("store: invalid input")

// ErrUnavailable is returned when the database could not be reached or did
// not answer in time (the store's bound or the caller's deadline, whichever
// is sooner). The call may be retried later; a write that failed with it
// may or may not have been applied, so retried writes must be idempotent,
// as the Store's writes are.
var ErrUnavailable = errors.New("store: database unavailable")

// Binding ties an IdP identity to the app username derived from it.
type Binding struct {
	IdP       string
	Subject   string
	Username  string
	CreatedAt time.Time
	LastLogin time.Time // zero until the first recorded login
}

// Login is one identity's sign-in time, for RecordLogins.
type Login struct {
	IdP     string
	Subject string
	At      time.Time
}

// Event is one audit record. Events are append-only.
type Event struct {
	ID       int64 // assigned by the store
	Time     time.Time
	Action   string // "login", "login.refused", "bind", ...
	IdP      string
	Subject  string
	Username string
	App      string
	Actor    string // who caused it: "login", "scim", "sweep", "admin:<name>"
	Outcome  string // "ok", "refused", "error"
	Detail   string // free text or JSON; never secrets. NUL and invalid UTF-8 are stored as U+FFFD
}

// AuditFilter selects events; zero fields match everything. Results are
// newest first (by Time, then by ID). Since is inclusive, Until exclusive.
type AuditFilter struct {
	IdP      string
	Username string
	App      string
	Action   string
	Since    time.Time
	Until    time.Time
	Limit    int // default 100
}

// Store is implemented by every backend. Methods are safe for concurrent
// use and honour context cancellation. Every call is bounded: it returns by
// the caller's deadline or the store's own timeout, whichever is sooner,
// with ErrUnavailable when the database did not answer by then; a canceled
// context gives an error wrapping context.Canceled. Text arguments with a
// NUL byte or invalid UTF-8 are refused with ErrInvalid.
type Store interface {
	// Bind records that (b.IdP, b.Subject) owns b.Username, and returns the
	// stored binding. It is idempotent. When the identity is already bound
	// to another username, the binding moves to the new one (a rename at
	// the IdP) if that username is free. ErrUsernameTaken when another
	// identity owns the username; nothing changes then. Usernames compare
	// case-insensitively, as the apps compare them, and come back as bound.
	// A zero CreatedAt means now; LastLogin is ignored (see RecordLogin).
	// Times are kept at millisecond precision and returned in UTC.
	Bind(ctx context.Context, b Binding) (Binding, error)
	// Binding returns the binding of an identity, or ErrNotFound.
	Binding(ctx context.Context, idp, subject string) (Binding, error)
	// BindingByUsername returns who owns a username, or ErrNotFound.
	BindingByUsername(ctx context.Context, username string) (Binding, error)
	// RecordLogin sets the identity's last login time. ErrNotFound when the
	// identity is not bound.
	RecordLogin(ctx context.Context, idp, subject string, at time.Time) error
	// RecordLogins sets the last login times of many identities in one
	// transaction: the flush of logins noted in memory (jit.LoginTimes),
	// one durable write for a second's worth of sign-ins. It never moves
	// a last login back (a time older than the stored one changes
	// nothing), so an old batch retried late cannot undo a newer one.
	// Identities not bound (any more) are skipped, not an error. Either
	// every time is written or, on error, none.
	RecordLogins(ctx context.Context, logins ...Login) error
	// Append adds audit events in order, in one transaction. A zero Time
	// means now; ID is assigned by the store and increases.
	Append(ctx context.Context, events ...Event) error
	// Audit lists events matching f, newest first.
	Audit(ctx context.Context, f AuditFilter) ([]Event, error)
	// Ping checks the database is reachable.
	Ping(ctx context.Context) error
	Close() error

	Provisioning
	Coordination
	SCIM
	Sweeps
	Blobs
	Brakes
}
