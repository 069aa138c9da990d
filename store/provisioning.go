package store

import (
	"context"
	"time"
)

// AppState is what usher last applied to one app for one user: the fast
// path compares Hash with the freshly mapped profile and skips the app
// when it matches and SyncedAt is recent.
type AppState struct {
	App      string
	Username string
	IdP      string
	Subject  string
	Hash     string    // hash of the last profile applied in full
	SyncedAt time.Time // when Hash was applied
	// Deprovisioned is set when a sweep, SCIM or an admin took access
	// away; a later login does not reactivate the user while it is set.
	// The other Deprovisioned fields say who and how, as structured
	// fields the lifecycle writes and reads (never parsed from Reason).
	Deprovisioned   bool
	DeprovisionedAt time.Time
	// DeprovisionedSource is what decided it: "scim", "sweep", "admin",
	// "directory".
	DeprovisionedSource string
	// DeprovisionedActor names who within the source: the sweep policy,
	// the admin, the directory; "" for SCIM.
	DeprovisionedActor string
	// DeprovisionedRun is the sweep or directory sync run, 0 otherwise.
	DeprovisionedRun int64
	// DeprovisionedAction is what was done: "deactivate",
	// "remove_managed_groups", "remove_licence_group", "delete".
	DeprovisionedAction string
	// DeprovisionedReason is the human explanation.
	DeprovisionedReason string
}

// Recorded is what Provisioning.Recorded returns.
type Recorded struct {
	// Binding is the identity's binding when Bound; the zero Binding
	// otherwise.
	Binding Binding
	Bound   bool
	// Profile is the identity's last profile, nil when none was recorded;
	// ProfileAt is when it was stored.
	Profile   []byte
	ProfileAt time.Time
	// States are the username's states by app; an app where usher never
	// provisioned the user is absent.
	States map[string]AppState
}

// Membership is a group membership usher added and therefore manages:
// full sync may remove it later. Memberships an admin granted by hand
// never appear here and are never removed.
type Membership struct {
	App      string
	Username string
	Group    string
	IdP      string // which IdP's mapping granted it
	Rule     string // which mapping line ("map[0]", "rules[1]", "default")
	AddedAt  time.Time
}

// Job is one durable provisioning task: the change a login could not
// apply because the app was down, retried with backoff until it lands.
// Jobs are deduplicated by (Kind, App, Key): enqueuing again replaces the
// payload of a pending job, so a retry always applies the newest wish.
type Job struct {
	ID        int64
	Kind      string // "reconcile", "deprovision", ...
	App       string
	Key       string // the username
	Payload   []byte // JSON, owned by the caller
	Attempts  int
	NotBefore time.Time
	LastError string
	CreatedAt time.Time
	UpdatedAt time.Time
}

// QueueStats describe the retry queue for the admin page and metrics.
type QueueStats struct {
	Depth      int
	Oldest     time.Time // zero when empty
	LastErrors []Job     // most recently failed first, at most 10
}

// Provisioning is the state of just-in-time provisioning. Methods are safe
// for concurrent use by several replicas.
type Provisioning interface {
	// AppState returns ErrNotFound when usher never provisioned the user
	// into the app.
	AppState(ctx context.Context, app, username string) (AppState, error)
	// Recorded returns, in one read, what usher recorded of one person:
	// the identity's binding (see Store.Binding), its last profile (see
	// PutProfile) and the states of username in each of apps (see
	// AppState). It is what a login needs to tell whether anything changed
	// and which apps, if any, have to be asked. The username matches in
	// any case.
	Recorded(ctx context.Context, idp, subject, username string, apps ...string) (Recorded, error)
	// PutAppState creates or replaces the state.
	PutAppState(ctx context.Context, s AppState) error
	// RecordSync records that a profile was applied: it creates the state
	// or updates its username spelling, IdP, Subject, Hash and SyncedAt,
	// and leaves the Deprovisioned fields as stored, in one statement, so
	// that a reconcile finishing never clears a removal decided while it
	// ran.
	RecordSync(ctx context.Context, s AppState) error
	// AppStates lists the states of one app, ordered by username, after
	// the cursor (a username; "" = from the start).
	AppStates(ctx context.Context, app, after string, limit int) ([]AppState, error)

	// Managed lists the memberships usher manages for a user in an app.
	Managed(ctx context.Context, app, username string) ([]Membership, error)
	// AddManaged records memberships usher added (upsert).
	AddManaged(ctx context.Context, ms ...Membership) error
	// RemoveManaged forgets memberships (no error when absent).
	RemoveManaged(ctx context.Context, app, username string, groups ...string) error

	// Enqueue adds a job or, when a job with the same (Kind, App, Key) is
	// pending, replaces its payload and NotBefore; it returns the job ID.
	Enqueue(ctx context.Context, j Job) (int64, error)
	// Intend records a change before its owner starts on it: the job is
	// created (or its payload replaced) already leased to owner for lease,
	// so nobody else picks it up while owner works; owner then Completes
	// it, or Retries it as a queued change. If owner dies, the job is
	// claimed like any other when the lease ends, or at once when owner's
	// heartbeat lease ("replica:"+owner, see Claim) has run out. It
	// returns the job ID.
	Intend(ctx context.Context, j Job, owner string, lease time.Duration) (int64, error)
	// Claim leases up to limit due jobs (NotBefore <= now, not leased or
	// lease expired) to owner for lease. Two callers never get the same
	// job while its lease runs. A job whose owner keeps a heartbeat lease
	// named "replica:"+owner (Coordination.Lease) is also free once that
	// heartbeat has expired: its owner is known to be gone.
	Claim(ctx context.Context, owner string, now time.Time, limit int, lease time.Duration) ([]Job, error)
	// Wake makes the waiting jobs of app due at now (a probe found the app
	// answering again) and returns how many it woke. Leased jobs are left
	// alone.
	Wake(ctx context.Context, app string, now time.Time) (int, error)
	// WaitingApps names the apps that have jobs waiting past now for a
	// retry, sorted.
	WaitingApps(ctx context.Context, now time.Time) ([]string, error)
	// Complete deletes a job the owner finished. A job re-enqueued since
	// it was claimed (newer payload) is kept and released instead.
	Complete(ctx context.Context, id int64, owner string) error
	// Retry releases a job for another attempt at notBefore, recording
	// the error (free text, see ErrInvalid) and counting the attempt.
	Retry(ctx context.Context, id int64, owner string, notBefore time.Time, lastErr string) error
	// Queue returns depth, oldest job and recent errors.
	Queue(ctx context.Context) (QueueStats, error)

	// PutProfile keeps the last mapped profile of an identity (JSON owned
	// by the caller), so an admin's "sync now" and manual provisioning
	// can apply it without a new login. It replaces the previous one.
	PutProfile(ctx context.Context, idp, subject string, profile []byte, at time.Time) error
	// Profile returns it and when it was stored, or ErrNotFound.
	Profile(ctx context.Context, idp, subject string) ([]byte, time.Time, error)
}
