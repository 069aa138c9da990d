package store

import (
	"context"
	"time"
)

// Hold is a SCIM removal an IdP's brake held back: the IdP said the
// person is inactive (or deleted them) while it was already removing more
// people than its brake allows, so the person keeps their app accounts
// until an admin releases the removal or drops it.
type Hold struct {
	IdP      string
	Subject  string
	Username string // the username bound to the identity when it was held
	// Reason is the push's own reason ("scim: deactivated").
	Reason string
	HeldAt time.Time
	// The brake's numbers when it held the removal: the IdP's SCIM
	// removals counted within the window, its holds before this one, its
	// pushed people, how many removals and holds the window allowed, and
	// the window.
	Removed int
	Holds   int
	People  int
	Limit   int
	Window  time.Duration // kept to the second
	// SessionsRevoked says the person's sessions were ended when held
	// (held_sessions: revoke).
	SessionsRevoked bool
}

// BrakeCheck asks whether one SCIM removal may pass an IdP's brake.
type BrakeCheck struct {
	IdP, Subject string
	// At is when the removal happens; Since starts the window
	// (At minus the brake's window).
	At, Since time.Time
	// Limit is how many removals the window allows, holds included.
	Limit int
	// Hold is what to record if the removal is held: Username, Reason,
	// People, Window and SessionsRevoked are the caller's; the store sets
	// IdP, Subject, HeldAt (At), Removed, Holds and Limit.
	Hold Hold
}

// BrakeResult is the brake's answer.
type BrakeResult struct {
	// Held: the removal must not happen; the hold is recorded. Otherwise
	// the removal is counted and may go ahead.
	Held bool
	// New: this call recorded the hold (false when the person was held
	// already, which is never held twice).
	New bool
	// Removed and Holds are the IdP's counted removals within the window
	// and its holds, after this call.
	Removed, Holds int
	// Hold is the person's hold when Held.
	Hold Hold
}

// Brakes keep what the SCIM brake of each IdP decides on: the SCIM
// removals it let pass, by person and time, and the removals it held
// back. Methods are safe for concurrent use; ErrNotFound when a hold does
// not exist.
type Brakes interface {
	// Brake decides one removal atomically across replicas, one decision
	// per IdP at a time: a person already held stays held (Held, not
	// New); a person whose removal was counted since Since passes again
	// (a repeated push counts once); otherwise the removal passes, and
	// is counted at At, when the IdP's removals counted since Since plus
	// its holds are fewer than Limit, and is held (recorded from Hold)
	// when they are not.
	Brake(ctx context.Context, c BrakeCheck) (BrakeResult, error)
	// Hold returns one person's hold.
	Hold(ctx context.Context, idp, subject string) (Hold, error)
	// Holds pages through an IdP's holds, oldest first (then by subject);
	// total counts them all. A limit of zero or less returns the total
	// only.
	Holds(ctx context.Context, idp string, offset, limit int) (holds []Hold, total int, err error)
	// HoldCounts counts the holds of every IdP that has any.
	HoldCounts(ctx context.Context) (map[string]int, error)
	// DeleteHold removes a hold (released or dropped). ErrNotFound when
	// there is none, so of two admins acting at once one learns the other
	// was first.
	DeleteHold(ctx context.Context, idp, subject string) error
}
