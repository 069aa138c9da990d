package store

import (
	"context"
	"time"
)

// SweepRun is one deprovisioning sweep: its plan, whether the safety valve
// blocked it, and its outcome.
type SweepRun struct {
	ID       int64
	Policy   string
	DryRun   bool
	Started  time.Time
	Finished time.Time // zero while running
	State    string    // "running", "done", "blocked", "failed"
	Planned  int
	Applied  int
	Failed   int
	Reason   string // why it was blocked or failed; free text, see ErrInvalid
	Plan     []byte // JSON plan
}

// Sweeps keeps sweep runs and per-item progress, so a sweep that crashed
// resumes without applying anything twice.
type Sweeps interface {
	// StartSweep records a new run and returns its ID.
	StartSweep(ctx context.Context, r SweepRun) (int64, error)
	// FinishSweep updates counts, state, reason and Finished.
	FinishSweep(ctx context.Context, r SweepRun) error
	// SweepRuns lists the latest runs, newest first.
	SweepRuns(ctx context.Context, limit int) ([]SweepRun, error)
	// UnfinishedSweep returns the latest run of policy still "running"
	// (a crash), or ErrNotFound.
	UnfinishedSweep(ctx context.Context, policy string) (SweepRun, error)
	// MarkSwept records that item (a username/app key) of run is done;
	// idempotent.
	MarkSwept(ctx context.Context, runID int64, item string) error
	// Swept reports the items of a run already done.
	Swept(ctx context.Context, runID int64) (map[string]bool, error)

	// Bindings pages through all identity bindings ordered by (idp,
	// subject) after the cursor (idp+"\x00"+subject; "" = start).
	Bindings(ctx context.Context, after string, limit int) ([]Binding, error)
	// SetAccessExpiry sets (or clears, with a zero time) an admin-set date
	// after which the identity loses access.
	SetAccessExpiry(ctx context.Context, idp, subject string, at time.Time) error
	// AccessExpiry returns it (zero when unset).
	AccessExpiry(ctx context.Context, idp, subject string) (time.Time, error)
}
