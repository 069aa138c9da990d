// Package directorytest owns the contract every directory.Connector
// meets. Run seeds a Backend (an emulator, or a real server such as
// slapd) with one fixed fixture, opens the connector under test against
// it and checks what usher relies on: a complete Pull lists exactly the
// people in scope with the right status, subject and transitive groups;
// Person tells in scope, out of scope and unknown apart; throttling is
// waited out on the injected clock and counted; a page that keeps
// failing or a listing cut short is an error wrapping
// directory.ErrIncomplete, never a short success; and where the connector
// implements directory.Deltaer, changes come through in a few calls and
// an expired token says so.
//
// A backend author implements Backend (seeding, mutations, fault knobs)
// for one directory and calls Run from the connector's tests:
//
//	func TestContract(t *testing.T) {
//		directorytest.Run(t, func(t *testing.T, clock *clockwork.FakeClock) directorytest.Backend {
//			return newBackend(t, clock) // a fresh emulator for this subtest
//		})
//	}
package directorytest

import (
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/usherhq/usher/directory"
)

// Caps says what a directory can express and which faults its backend
// can inject. The suite skips what a backend does not support and says
// so in the test log, so a missing capability is visible, not silent.
type Caps struct {
	// Nesting: groups can be members of groups, and a connector reports
	// memberships through nesting. Without it the suite seeds every
	// membership directly.
	Nesting bool
	// Inactive: the directory has a temporary state that is not a leaver
	// (Okta LOCKED_OUT, an AD lockout), so SetStatus(directory.Inactive)
	// and a fixture person with Status Inactive are possible.
	Inactive bool
	// Delta: the connector implements directory.Deltaer.
	Delta bool
	// DeltaDeletes: Delete makes the person come through the next Delta
	// with Status directory.Deleted (Graph @removed, an LDAP tombstone).
	// False where a deletion is invisible to the delta (a hard-deleted
	// Okta user is simply gone); the suite then only requires that a
	// reported deleted person is a leaver.
	DeltaDeletes bool
	// Fault knobs the backend implements (see Backend).
	Throttle, FailPage, Truncate, ExpireDelta bool
}

// Person is one person of the fixture as the suite wants the directory
// to hold them. The backend maps the fields onto the directory's own
// attributes (Username "ada" may become the UPN "ada@contoso.test").
type Person struct {
	// Key is the suite's handle for the person ("ada"); it is not a
	// directory attribute.
	Key         string
	Username    string
	Email       string
	GivenName   string
	FamilyName  string
	DisplayName string
	// Status is Active, Disabled or (with Caps.Inactive) Inactive.
	Status directory.Status
	// Groups are the groups the person is a direct member of, by
	// Group.Name.
	Groups []string
	// InScope false means: place this person outside the connector's
	// configured scope, however this directory scopes. A backend that
	// scopes by group membership needs do nothing more (the person is not
	// in Fixture.ScopeGroup); one that scopes by search base puts them in
	// another subtree, one that scopes by filter makes the filter miss.
	InScope bool
}

// Group is one group of the fixture.
type Group struct {
	Name string
	// Subgroups are the groups that are direct members of this one. Only
	// set when the backend reports Caps.Nesting.
	Subgroups []string
}

// Fixture is what Seed creates. Groups come in an order where every
// subgroup precedes the groups that contain it.
type Fixture struct {
	Groups []Group
	People []Person
	// ScopeGroup is a group every in-scope person belongs to (directly or
	// through nesting) and no out-of-scope person does. A backend whose
	// connector scopes by group membership configures it as the scope;
	// others create it as an ordinary group.
	ScopeGroup string
}

// Want is what the connector must report for one seeded person, as only
// the backend knows it: the IDs the directory assigned and the values
// its configuration derives.
type Want struct {
	// ID is the directory's immutable key for the person.
	ID string
	// Subject is the value of the configured subject attribute.
	Subject string
	// Username is the login name the connector reports.
	Username string
}

// Seeded is what Seed returns.
type Seeded struct {
	// People are by Person.Key, every fixture person included.
	People map[string]Want
	// Groups maps Group.Name to the directory's group ID.
	Groups map[string]string
	// Unknown is a subject in this directory's format (a GUID, an Okta
	// id, an uid) that belongs to nobody: Person must answer
	// directory.ErrNotFound for it.
	Unknown string
}

// Backend is one directory under test, empty when the opener returns it,
// used by one subtest only. Methods fail the test (t.Fatal) when the
// directory refuses a change; the suite never calls a fault knob that
// Caps does not claim.
//
// Faults concern "the people listing": the directory calls whose pages
// Pull turns into people (Graph /users, Okta /api/v1/users, the LDAP
// paged search of people), not group or membership reads. The connector
// Open returns must be configured with the smallest page size the
// directory allows (ideally 2), so that the fixture spans several pages
// and a fault can strike mid-pull.
type Backend interface {
	Caps() Caps

	// Seed creates the fixture's groups, memberships and people.
	Seed(t *testing.T, f Fixture) Seeded
	// Open returns the connector under test, configured for the seeded
	// directory: scope as Seed placed the out-of-scope people, small
	// pages, and deps as given (the suite's fake clock, logger and call
	// counter; the backend sets deps.Client when it needs its own).
	Open(t *testing.T, deps directory.Deps) directory.Connector

	// Create adds one person after Seed, with memberships; the suite uses
	// it for deltas.
	Create(t *testing.T, p Person) Want
	// Rename changes the display name of the person with that key.
	Rename(t *testing.T, key, displayName string)
	// SetStatus puts the person in Active, Inactive (with Caps.Inactive)
	// or Disabled.
	SetStatus(t *testing.T, key string, s directory.Status)
	// Delete removes the person the way an administrator deletes one in
	// this directory (Graph: a soft delete; Okta: deactivate, then
	// delete).
	Delete(t *testing.T, key string)

	// Throttle arms a throttling answer for the second page request of
	// the people listing, given once: the directory's throttling signal
	// (HTTP 429) saying "retry after wait", the way the directory says it
	// (Retry-After, X-Rate-Limit-Reset, ...). The connector must wait it
	// out on deps.Clock and finish the pull.
	Throttle(t *testing.T, wait time.Duration)
	// FailPage makes the second page of the people listing fail every
	// time it is asked for (an HTTP 5xx; an LDAP "unavailable").
	FailPage(t *testing.T)
	// Truncate cuts the people listing short the way the protocol lets a
	// client notice: an HTTP body that ends before its Content-Length on
	// the second page, every time; LDAP sizeLimitExceeded.
	Truncate(t *testing.T)
	// ExpireDelta makes every delta token handed out so far unacceptable
	// to the directory (Graph: past its 7 days; LDAP: a changelog that
	// no longer reaches back).
	ExpireDelta(t *testing.T)
}

// Opener builds a fresh Backend for one subtest. clock is the fake clock
// the suite puts in directory.Deps; an emulator uses it too (token
// expiry, HTTP-date Retry-After), so both sides agree on the time.
type Opener func(t *testing.T, clock *clockwork.FakeClock) Backend
