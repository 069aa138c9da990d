// Package targets is usher's view of the apps it provisions: one small
// interface (Target) that the Jira, Confluence, Bitbucket, Crowd and
// Atlassian Cloud adapters implement over each app's own REST API, a
// shared REST client
// (auth, timeouts, concurrency limit, 429/5xx backoff), and the errors
// provisioning needs to tell "not there" from "try again later".
package targets

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// User is a user as an app reports it.
type User struct {
	// Name is the login username (Jira name, Confluence username,
	// Bitbucket name, Crowd name). Apps compare it case-insensitively.
	Name string
	// Key is the app's immutable identifier where it has one (Jira key,
	// Confluence userKey, Bitbucket numeric id or slug); "" otherwise.
	Key         string
	DisplayName string
	Email       string
	// EmailUnknown says the app did not report the e-mail address
	// (Confluence's user resource has none): an empty Email says nothing,
	// and the caller compares the e-mail it wants with the one it last
	// applied instead.
	EmailUnknown bool
	Active       bool
	// LastLogin is zero when the app does not expose it.
	LastLogin time.Time
	// ProfileReadOnly says the app will not let usher change this
	// person's display name or e-mail (an Atlassian Cloud account outside
	// the organization's verified domains belongs to its person): a
	// difference is reported, not corrected, and UpdateUser refuses with
	// ErrUnmanaged.
	ProfileReadOnly bool
	// Adopted is set by CreateUser when it bound an account that existed
	// already (found by exact e-mail) instead of making one, so that the
	// caller can apply its adoption policy and say what happened.
	Adopted bool
}

// NewUser is what CreateUser needs.
type NewUser struct {
	Name        string
	DisplayName string
	Email       string
	// NoAdopt forbids taking over an account the app finds some other way
	// than by username (Atlassian Cloud finds people by e-mail): the IdP's
	// adoption policy is "never". Such a create fails with ErrNotAdopted.
	NoAdopt bool
	// Password is set only for apps that require one on create; adapters
	// generate a long random one when empty, since logins go through usher.
	Password string
}

// Update changes profile fields; nil fields are left alone.
type Update struct {
	DisplayName *string
	Email       *string
}

// Page is one page of ListUsers. Next is the cursor of the following
// page, "" after the last one.
type Page struct {
	Users []User
	Next  string
}

// Target is one app's users and groups, as usher provisions them. (The
// word "directory" is kept for the IdPs' directories that usher reads
// people from.) Methods are safe for concurrent use and honour context
// cancellation. Usernames are matched the way the
// app matches them (case-insensitively for all four Atlassian apps).
type Target interface {
	// App is the configured app name ("jira"), for errors and metrics.
	App() string
	// GetUser returns ErrNotFound when the user does not exist.
	GetUser(ctx context.Context, username string) (*User, error)
	// CreateUser returns ErrExists when the username is taken; it does not
	// add groups (apps that put new users into default groups do so).
	CreateUser(ctx context.Context, u NewUser) (*User, error)
	// UpdateUser changes display name and/or e-mail. ErrNotFound.
	UpdateUser(ctx context.Context, username string, u Update) error
	// SetActive activates or deactivates. Idempotent, and writes nothing
	// when the user is already in that state. ErrNotFound. For Bitbucket,
	// which has no REST deactivation, false takes away what its
	// configuration names (the licence groups, a direct global
	// permission) and true adds the first licence group back; other
	// groups that grant a seat are the caller's to decide (SeatHolder).
	SetActive(ctx context.Context, username string, active bool) error
	// UserGroups lists the user's direct group memberships. ErrNotFound.
	UserGroups(ctx context.Context, username string) ([]string, error)
	// AddToGroup is idempotent (already a member → nil). ErrNotFound when
	// the user is missing; ErrGroupNotFound when the group is.
	AddToGroup(ctx context.Context, username, group string) error
	// RemoveFromGroup is idempotent: nil whenever the user ends up not a
	// member, including when the user or the group does not exist.
	RemoveFromGroup(ctx context.Context, username, group string) error
	// CreateGroup is idempotent (exists → nil).
	CreateGroup(ctx context.Context, group string) error
	// ListUsers returns one page starting at cursor ("" = first page).
	ListUsers(ctx context.Context, cursor string, limit int) (Page, error)
}

// AttributeSetter is implemented by apps with a place for custom
// attributes (Jira user properties, Crowd user attributes).
type AttributeSetter interface {
	// SetAttributes writes the given attributes (others are left alone).
	SetAttributes(ctx context.Context, username string, attrs map[string]string) error
	// Attributes reads the attributes usher may have written.
	Attributes(ctx context.Context, username string, names []string) (map[string]string, error)
}

// Renamer is implemented by apps that can change a username in place.
type Renamer interface {
	Rename(ctx context.Context, from, to string) error
}

// Deleter is implemented by apps that can delete users.
type Deleter interface {
	DeleteUser(ctx context.Context, username string) error
}

// Deactivator is implemented by apps where deactivating can mean
// different things (Atlassian Cloud: suspending access in the
// organization's directory, deactivating a managed account, or, for an
// account the organization does not manage, only cutting its access).
// Deactivate does what SetActive(false) does, with the same idempotence
// and errors, and says which it was.
type Deactivator interface {
	Deactivate(ctx context.Context, username string) (Deactivation, error)
}

// Deactivation is what Deactivate did.
type Deactivation struct {
	// Changed says the app changed now (false: the person was inactive
	// already).
	Changed bool
	// Done is a sentence for the audit log ("suspended access in the
	// organization's directory"); it also says when nothing was written.
	Done string
	// RemoveManagedGroups asks the caller to remove the memberships usher
	// manages as well: the account stays usable outside the app (an
	// unmanaged Cloud account), so its groups must not keep granting. It
	// is set again when the person is inactive already, so a retry that
	// finds the account deactivated still finishes the removal.
	RemoveManagedGroups bool
}

// SeatHolder is implemented by apps where a person's seat comes through
// group memberships rather than an account switch (Bitbucket: any group
// holding LICENSED_USER or a higher global permission, §5.5). Since
// usher removes only memberships it added, SetActive(false) takes away
// only what the app's configuration names (Seat.Released and a direct
// permission); the caller decides about the other seat-granting
// memberships (usher's removal takes those it manages, never those given
// by hand). Safe for concurrent use; honours cancellation.
type SeatHolder interface {
	// Seat says what gives username a seat now. ErrNotFound. The app's
	// list of seat-granting groups may be cached for a short while.
	Seat(ctx context.Context, username string) (Seat, error)
}

// Seat is what gives one person a seat in an app. A person holds no seat
// when Groups is empty and Direct is "".
type Seat struct {
	// Groups are the person's direct groups that grant a seat.
	Groups []string
	// Released are those of Groups that SetActive(false) takes away by
	// itself (Bitbucket's licence_groups).
	Released []string
	// Direct is the seat-granting permission the person holds directly
	// ("" when none); SetActive(false) revokes it.
	Direct string
}

// Accounts keeps, durably and shared by every replica, the app's own id
// of each person for apps that address people by an id rather than by a
// username (Atlassian Cloud's accountId). Keys are the configured app
// name and the usher username, compared case-insensitively. Methods are
// safe for concurrent use and honour context cancellation.
type Accounts interface {
	// AccountID returns the id bound to username, or ErrNotFound.
	AccountID(ctx context.Context, app, username string) (string, error)
	// Username returns the username bound to id, or ErrNotFound.
	Username(ctx context.Context, app, id string) (string, error)
	// PutAccountID binds username to id, replacing any earlier binding
	// of either. Idempotent.
	PutAccountID(ctx context.Context, app, username, id string) error
	// DeleteAccountID forgets username's binding; nil when there is none.
	DeleteAccountID(ctx context.Context, app, username string) error
}

var (
	// ErrNotFound: the user does not exist.
	ErrNotFound = errors.New("user not found")
	// ErrGroupNotFound: the group does not exist.
	ErrGroupNotFound = errors.New("group not found")
	// ErrExists: the username is taken.
	ErrExists = errors.New("user already exists")
	// ErrNotAdopted: an account exists that CreateUser may not take over
	// (NewUser.NoAdopt).
	ErrNotAdopted = errors.New("an existing account may not be taken over")
	// ErrGroupReadOnly: the group's memberships are not usher's to change
	// (an Atlassian Cloud group that the organization's IdP sync owns).
	// Callers leave the group alone and say why.
	ErrGroupReadOnly = errors.New("group is read-only")
	// ErrUnmanaged: the account belongs to its person, not to the
	// organization usher acts for (an Atlassian Cloud account outside the
	// verified domains); usher may change its access and groups, not its
	// profile or the account itself.
	ErrUnmanaged = errors.New("account is not managed by the organization")
)

// Error is a failed app call: which app, which operation, which user, and
// whether trying again later may help (outage, 5xx, 429).
type Error struct {
	App       string
	Op        string // "create user", "add to group jira-users", ...
	User      string
	Status    int // HTTP status, 0 when the request did not get an answer
	Temporary bool
	Err       error
}

func (e *Error) Error() string {
	s := fmt.Sprintf("%s: %s %s", e.App, e.Op, e.User)
	if e.Status != 0 {
		s += fmt.Sprintf(": HTTP %d", e.Status)
	}
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

func (e *Error) Unwrap() error { return e.Err }

// IsTemporary reports whether err is worth retrying later.
func IsTemporary(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.Temporary
}
