// Package directory is usher's view of the identity providers' own
// directories (Microsoft Graph, Okta, Google Workspace, OneLogin, LDAP and
// Active Directory, a SCIM service provider): the people an IdP keeps,
// with their state and group memberships, read on a schedule rather than
// at login. One package per directory implements Connector; the sync and
// the sweeps in usher only ever see this package's types.
//
// (The apps usher provisions into are package targets'. "Directory" in
// usher's code always means an IdP's directory.)
//
// Completeness is the rule that keeps people in their jobs: a Pull that
// returns nil read every page of the configured scope. Anything else (an
// error, a throttled stop, a listing the server cut short) is an error,
// and the caller must not take anyone's absence from it as a leaver.
package directory

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"time"

	"github.com/jonboulle/clockwork"
)

// Status is what a directory says about a person's account.
type Status int

const (
	// Active: the person may sign in.
	Active Status = iota
	// Inactive is a temporary state that is not a leaver: locked out,
	// password expired, in recovery, staged or provisioned but not yet
	// activated (Okta LOCKED_OUT, PASSWORD_EXPIRED, RECOVERY, STAGED,
	// PROVISIONED; OneLogin states 3 to 5; an AD lockout).
	Inactive
	// Disabled is the directory's explicit "this account is off" signal:
	// Graph accountEnabled=false, Okta SUSPENDED or DEPROVISIONED, Google
	// suspended or archived, OneLogin suspended, AD's ACCOUNTDISABLE bit.
	// A disabled person is a leaver.
	Disabled
	// Deleted appears only in deltas: the directory said the person was
	// removed (Graph @removed, an LDAP tombstone). A leaver. A deleted
	// person carries ID, and Subject only when the connector can tell it
	// without reading the person (it is gone): the subject attribute is
	// the ID, or the tombstone keeps it. The caller matches a Deleted
	// person with an empty Subject by ID.
	Deleted
)

func (s Status) String() string {
	switch s {
	case Active:
		return "active"
	case Inactive:
		return "inactive"
	case Disabled:
		return "disabled"
	case Deleted:
		return "deleted"
	}
	return "unknown"
}

// Leaver reports whether the status means the person has left.
func (s Status) Leaver() bool { return s == Disabled || s == Deleted }

// Person is one person as a directory lists them.
type Person struct {
	// ID is the directory's immutable key (Graph id, Okta id, Google id,
	// OneLogin id, AD objectGUID, OpenLDAP entryUUID), as a string.
	ID string
	// Subject is the value that equals the login subject the connector's
	// IdP sends for this person (the configured subject attribute; ID
	// when none is configured). It is what binds a directory person to
	// an usher identity.
	Subject string
	// Username is the directory's login name (userPrincipalName, Okta
	// login, primaryEmail, OneLogin username, sAMAccountName or uid).
	Username    string
	Email       string
	DisplayName string
	GivenName   string
	FamilyName  string
	Status      Status
	// Groups are the display names of the groups the person belongs to,
	// through nesting where the directory nests groups.
	Groups []string
	// GroupIDs are the same groups' immutable IDs, in the same order,
	// for mappings that name groups by ID (Entra object IDs).
	GroupIDs []string
	// GroupsComplete says Groups is the whole list. A connector that could
	// not read every membership (a delta without membership data) leaves
	// it false, and the sync then only adds groups for this person.
	GroupsComplete bool
	// Attributes are further directory attributes under their native
	// names (department, employeeId, title, ...), for mappings.
	Attributes map[string][]string
	// OutOfScope: the directory knows the person, but the configured
	// scope (filters, groups, search base) would not list them. Set by
	// Connector.Person, and by Deltaer.Delta for a changed person the
	// change took (or left) outside the scope, so that a delta can say
	// "no longer ours" without a full pull. Pull never sets it.
	OutOfScope bool
}

// Page is one batch of people. Connectors decide the size (usually the
// API's page size); consumers must not keep a Page after their callback
// returns unless they copy what they need.
type Page struct {
	People []Person
}

// Connector reads one configured directory. Implementations are safe for
// concurrent use and honour context cancellation; every network call they
// make has a deadline.
type Connector interface {
	// Name is the configured directory name, for logs, metrics and audit.
	Name() string
	// IdP is the id of the IdP whose logins these people are: a Person's
	// Subject is that IdP's login subject.
	IdP() string
	// Pull lists every person in the configured scope (filters, groups,
	// search base) and calls fn once per page, in order. An error from fn
	// stops the pull and is returned as is. Pull returns nil only when
	// every page was read: a complete pull. Throttling is waited out
	// within the connector's limits; a listing the server truncated or a
	// page that kept failing is an error wrapping ErrIncomplete.
	Pull(ctx context.Context, fn func(Page) error) error
	// Person looks one person up by Subject, whatever their status. A
	// person the directory knows but outside the configured scope comes
	// back with OutOfScope set. ErrNotFound when the directory does not
	// know the subject (deleted, or never there).
	Person(ctx context.Context, subject string) (*Person, error)
}

// Deltaer is implemented by connectors whose API lists changes since a
// point in time or a token (Graph delta queries, Okta lastUpdated,
// OneLogin updated_since, LDAP uSNChanged or modifyTimestamp).
type Deltaer interface {
	// Delta calls fn with the people changed since token (Deleted ones
	// included) and returns the token for the next call. An empty token
	// asks for a starting point: Delta then returns the current token
	// without listing anyone. ErrDeltaExpired means the directory no
	// longer accepts token: the caller runs a full Pull and starts over.
	// A delta is never a complete listing: nobody's absence means
	// anything in it.
	Delta(ctx context.Context, token string, fn func(Page) error) (next string, err error)
}

var (
	// ErrNotFound: the directory does not know the person.
	ErrNotFound = errors.New("directory: person not found")
	// ErrIncomplete marks a pull that did not read the whole scope.
	ErrIncomplete = errors.New("directory: incomplete listing")
	// ErrDeltaExpired: the delta token is no longer accepted.
	ErrDeltaExpired = errors.New("directory: delta token expired")
)

// Deps is what usher hands every connector when opening it.
type Deps struct {
	// Client makes the connector's HTTP calls; it carries no timeout of
	// its own, connectors set per-call deadlines. Nil means a default
	// client.
	Client *http.Client
	Log    *slog.Logger
	// Clock tells the time and waits out Retry-After (tests use a fake
	// one). Nil means the real clock.
	Clock clockwork.Clock
	// Observe counts API calls: op ("users", "groups", "members",
	// "token", ...), result ("ok", "throttled", "error") and duration.
	// Nil means no metrics.
	Observe func(op, result string, d time.Duration)
}

// Config is a directory type's own configuration, decoded strictly from
// the directory entry's type-specific block. Validate returns every
// problem, as *config.FieldError where it concerns one key.
type Config interface {
	Validate() []error
	Open(name, idp string, deps Deps) (Connector, error)
}
