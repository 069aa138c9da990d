package store

import (
	"context"
	"time"
)

// Revocation ends sessions before they expire: one session by ID, or
// every session of an identity created before Before.
type Revocation struct {
	Seq       int64 // assigned by the store, increasing
	SessionID string
	IdP       string
	Subject   string
	Before    time.Time
	Until     time.Time // after this the revocation can be forgotten
	CreatedAt time.Time
}

// Coordination is what replicas share to act as one: replay protection,
// session revocation, leader leases. Methods are safe for concurrent use.
type Coordination interface {
	// SeenOnce records key until expires and reports whether it was
	// already recorded (and unexpired): a replay. Atomic across replicas.
	SeenOnce(ctx context.Context, key string, expires time.Time) (bool, error)

	// Revoke records a revocation and returns its Seq.
	Revoke(ctx context.Context, r Revocation) (int64, error)
	// Revocations lists revocations with Seq > after that are not yet past
	// Until, in Seq order, so replicas can poll cheaply.
	Revocations(ctx context.Context, after int64) ([]Revocation, error)

	// Lease takes or renews the named lease for owner for ttl. It returns
	// true when owner holds it afterwards: it was free, expired or already
	// owner's. Used for leader election (sweeps, retry worker).
	Lease(ctx context.Context, name, owner string, ttl time.Duration) (bool, error)
	// ReleaseLease gives the lease up if owner holds it.
	ReleaseLease(ctx context.Context, name, owner string) error
}
