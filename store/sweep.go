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
	// Plan is the plan as the sweep shows it (JSON: counts, the first
	// items); every item of it is kept apart (SweepItems).
	Plan []byte
}

// SweepItem is one item of a run's plan, as the sweep encoded it: what
// the run does to, or leaves alone for, one user in one app. A run's
// items are recorded while it plans and read back, page by page, while
// it applies, so neither end holds the whole plan.
type SweepItem struct {
	// Seq is the item's place in the plan; the sweep numbers them from 1.
	Seq int64
	// Key is what MarkSwept records the item done under.
	Key  string
	Data []byte // JSON owned by the sweep
}

// SweepItemFilter selects a page of a run's planned items.
type SweepItemFilter struct {
	After int64 // only items with a Seq above it
	Limit int   // <= 0 means 100
	// Pending leaves out the items whose Key MarkSwept recorded.
	Pending bool
}

// Sweeps keeps sweep runs and per-item progress, so a sweep that crashed
// resumes without applying anything twice.
type Sweeps interface {
	// StartSweep records a new run and returns its ID.
	StartSweep(ctx context.Context, r SweepRun) (int64, error)
	// FinishSweep updates counts, state, reason and Finished.
	FinishSweep(ctx context.Context, r SweepRun) error
	// UpdateSweep sets Planned, Applied, Failed, State, Reason, Plan and
	// Finished (zero: unset) of run r.ID; the sweep records its plan with
	// it once planning ended. ErrNotFound for an unknown run.
	UpdateSweep(ctx context.Context, r SweepRun) error
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
	// AddSweepItems records planned items of a run, all or none; an item
	// whose Seq the run holds already is replaced. ErrNotFound for an
	// unknown run.
	AddSweepItems(ctx context.Context, runID int64, items []SweepItem) error
	// SweepItems pages through a run's planned items in Seq order. An
	// unknown run has none.
	SweepItems(ctx context.Context, runID int64, f SweepItemFilter) ([]SweepItem, error)
	// ForgetSweepItems deletes the planned items and the progress of the
	// finished runs (any state but "running") of policy whose ID is below
	// before. The runs themselves stay.
	ForgetSweepItems(ctx context.Context, policy string, before int64) error

	// Bindings pages through all identity bindings ordered by (idp,
	// subject) after the cursor (idp+"\x00"+subject; "" = start).
	Bindings(ctx context.Context, after string, limit int) ([]Binding, error)
	// SetAccessExpiry sets (or clears, with a zero time) an admin-set date
	// after which the identity loses access.
	SetAccessExpiry(ctx context.Context, idp, subject string, at time.Time) error
	// AccessExpiry returns it (zero when unset).
	AccessExpiry(ctx context.Context, idp, subject string) (time.Time, error)

	// The sweep planner reads the evidence about a page of people at a
	// time, a query per kind rather than one per person. A nil or empty
	// list finds nothing.

	// AppStatesOf returns the states of app for those of usernames
	// (compared case-insensitively) it has, in no particular order.
	AppStatesOf(ctx context.Context, app string, usernames []string) ([]AppState, error)
	// SCIMUsersOf returns idp's pushed users whose attr is one of values,
	// in no particular order: "subject" (exact; several users may share
	// one, and none matches "") or "userName" (case-insensitive).
	SCIMUsersOf(ctx context.Context, idp, attr string, values []string) ([]SCIMUser, error)
	// AccessExpiries returns, by subject, the expiries set for those of
	// idp's subjects that have one.
	AccessExpiries(ctx context.Context, idp string, subjects []string) (map[string]time.Time, error)
}
