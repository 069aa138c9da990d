// Package sweep owns scheduled deprovisioning: a planning pass that turns
// evidence (SCIM push state, a complete pull of an IdP's directory, login
// inactivity, end dates, admin-set expiries) into a plan over the users
// usher itself provisioned; a safety valve that refuses implausible plans
// as a whole, before anything is applied; an executor that re-checks every
// user right before acting, records per-item progress so a crashed run
// resumes without repeating itself, and audits every change; and the
// schedule, where a database lease makes exactly one replica sweep.
//
// A sweep's memory does not grow with the company: the planner reads the
// bindings and the evidence about them a page at a time, counts what it
// finds and records every item in the store (keeping only the first
// MaxShown to show), the valve decides on the counts, and the executor
// reads the items back a page at a time. Only a directory source is held
// whole, as a compact index of its pull.
package sweep

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/usherhq/usher/directory"
	"github.com/usherhq/usher/jit"
	"github.com/usherhq/usher/store"
	"github.com/usherhq/usher/targets"
)

// Store is what a sweep reads and writes.
type Store interface {
	store.Store
	store.Provisioning
	store.Coordination
	store.Sweeps
	store.SCIM
}

// Deps are the sweeper's collaborators.
type Deps struct {
	Store Store
	// Apps are the configured apps by name; the planner reads them (group
	// memberships for protected groups), it never changes them.
	Apps map[string]targets.Target
	// Remover takes a leaver's access away (jit.Lifecycle): it records
	// the decision, ends the sessions and changes the app, in that order,
	// as for every other source.
	Remover Remover
	// Log receives the sweeper's lines; New adds the "sweep" key with the
	// policy's name, so pass a logger without one.
	Log *slog.Logger
	Now func() time.Time
	// Directory is the connector of the directory sources.directory
	// names (nil when the policy has none).
	Directory directory.Connector
	// DirectoryScope identifies the directory's configured scope (a hash
	// of its block). When it changed since the last sweep, absence from
	// that sweep's pull does not count: people outside the old scope are
	// not leavers for being outside the new one (reference §7.2).
	DirectoryScope string
	// Owner names this replica in leases; default hostname plus random.
	Owner string
	// Lease is the lease TTL for Run (default 2m), renewed at a third.
	Lease time.Duration
	// OnRun is called after every run that got the lease (metrics).
	OnRun func(res *Result, d time.Duration)
	// OnBlocked is called whenever Run refuses a plan (metrics).
	OnBlocked func(policy, reason string)
}

// Remover is the lifecycle's removal.
type Remover interface {
	Remove(ctx context.Context, rm jit.Removal, cause jit.Cause) ([]jit.RemoveOutcome, error)
}

// Sweeper runs one policy. It is safe for concurrent use; concurrent runs
// of the same policy are serialised by the store lease.
type Sweeper struct {
	p       Policy
	d       Deps
	apps    []string // in scope, sorted
	idps    map[string]bool
	blocked atomic.Int64
	running sync.Mutex  // one run at a time in this process
	busy    atomic.Bool // a run holds running
	// shown is MaxShown and applyPage the constant, but for tests.
	shown, applyPage int
}

// ErrLeaseHeld is returned by Run (wrapped, with the policy's name) when
// another owner holds the policy's lease: another replica (or run) is
// sweeping.
var ErrLeaseHeld = errors.New("lease held by another owner")

// ErrBlocked is returned when the safety valve refused a plan.
var ErrBlocked = errors.New("sweep blocked by safety valve")

// New checks p and deps and returns the Sweeper.
func New(p Policy, deps Deps) (*Sweeper, error) {
	if errs := p.Validate(); len(errs) > 0 {
		return nil, fmt.Errorf("sweep %s: %w", p.Name, errors.Join(errs...))
	}
	p = p.withDefaults()
	if deps.Store == nil {
		return nil, fmt.Errorf("sweep %s: no store", p.Name)
	}
	if deps.Log == nil {
		deps.Log = slog.New(slog.DiscardHandler)
	}
	// The one place the sweep's name is added to its log lines: callers
	// pass their logger as it is.
	deps.Log = deps.Log.With("sweep", p.Name)
	if deps.Now == nil {
		deps.Now = time.Now
	}
	if deps.Lease <= 0 {
		deps.Lease = 2 * time.Minute
	}
	if deps.Owner == "" {
		deps.Owner = defaultOwner()
	}
	if deps.Remover == nil {
		return nil, fmt.Errorf("sweep %s: no remover", p.Name)
	}
	if name := p.Sources.Directory; name != "" {
		switch d := deps.Directory; {
		case d == nil:
			return nil, fmt.Errorf("sweep %s: sources.directory: no directory %q is open", p.Name, name)
		case d.Name() != name:
			return nil, fmt.Errorf("sweep %s: sources.directory names %q, but the connector given is %q", p.Name, name, d.Name())
		case d.IdP() != p.IdPs[0]:
			return nil, fmt.Errorf("sweep %s: directory %s holds the people of IdP %s, not %s", p.Name, name, d.IdP(), p.IdPs[0])
		}
	}
	s := &Sweeper{p: p, d: deps, idps: map[string]bool{}, shown: MaxShown, applyPage: applyPage}
	for _, idp := range p.IdPs {
		s.idps[idp] = true
	}
	s.apps = p.Apps
	if len(s.apps) == 0 {
		for name := range deps.Apps {
			s.apps = append(s.apps, name)
		}
	}
	s.apps = slices.Clone(s.apps)
	slices.Sort(s.apps)
	for _, app := range s.apps {
		dir, ok := deps.Apps[app]
		if !ok {
			return nil, fmt.Errorf("sweep %s: apps: no app %q", p.Name, app)
		}
		if _, ok := dir.(targets.Deleter); p.Action == Delete && !ok {
			return nil, fmt.Errorf("sweep %s: action delete: app %s cannot delete users", p.Name, app)
		}
	}
	if len(s.apps) == 0 {
		return nil, fmt.Errorf("sweep %s: no apps to sweep", p.Name)
	}
	return s, nil
}

func defaultOwner() string {
	host, _ := os.Hostname()
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return fmt.Sprintf("%s-%d-%s", host, os.Getpid(), hex.EncodeToString(b))
}

// Policy returns the policy with defaults applied.
func (s *Sweeper) Policy() Policy { return s.p }

// Running reports whether a run of this sweeper is under way in this
// process (shutdown says which sweeps it interrupted).
func (s *Sweeper) Running() bool { return s.busy.Load() }

// Blocked counts the runs the safety valve refused.
func (s *Sweeper) Blocked() int64 { return s.blocked.Load() }

// Run sweeps once: take the lease "sweep:<name>", finish a run a crash
// left unfinished or else plan, check the valve, apply, and record the run.
// Dry runs (dryRun or the policy's dry_run) plan and record only. It
// returns ErrLeaseHeld when another owner is sweeping; a blocked plan
// returns the Result together with an error wrapping ErrBlocked. When ctx
// ends mid-run the run stays "running" and the next Run resumes it.
func (s *Sweeper) Run(ctx context.Context, dryRun bool) (*Result, error) {
	return s.run(ctx, s.d.Owner, s.d.Lease, dryRun || s.p.DryRun)
}

func (s *Sweeper) run(ctx context.Context, owner string, ttl time.Duration, dryRun bool) (res *Result, err error) {
	// The store lease keeps other replicas out; this keeps a second run
	// of the same replica (an admin's "run now" during a scheduled run)
	// out, since the lease is re-entrant for its owner.
	if !s.running.TryLock() {
		return nil, fmt.Errorf("sweep %s: %w", s.p.Name, ErrLeaseHeld)
	}
	defer s.running.Unlock()
	s.busy.Store(true)
	defer s.busy.Store(false)
	lease := "sweep:" + s.p.Name
	ok, err := s.d.Store.Lease(ctx, lease, owner, ttl)
	if err != nil {
		return nil, fmt.Errorf("sweep %s: %w", s.p.Name, err)
	}
	if !ok {
		return nil, fmt.Errorf("sweep %s: %w", s.p.Name, ErrLeaseHeld)
	}
	if s.d.OnRun != nil {
		began := time.Now()
		defer func() {
			if res != nil {
				s.d.OnRun(res, time.Since(began))
			}
		}()
	}
	defer func() {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		if err := s.d.Store.ReleaseLease(rctx, lease, owner); err != nil {
			s.d.Log.Warn("sweep: release lease", "err", err)
		}
	}()
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	stop := s.renew(ctx, cancel, lease, owner, ttl)
	defer stop()

	if !dryRun {
		res, err := s.resume(ctx)
		if res != nil || err != nil {
			return res, err
		}
	}
	// The run is recorded before it plans, so that its items have a
	// place: they go to the store as they are found (memory holds the
	// counts and the first items), and the apply reads them back. Until
	// the plan is recorded with the run, a crash leaves nothing to resume.
	id, err := s.d.Store.StartSweep(ctx, store.SweepRun{Policy: s.p.Name, DryRun: dryRun, Started: s.d.Now(), State: "running"})
	if err != nil {
		return nil, fmt.Errorf("sweep %s: %w", s.p.Name, err)
	}
	// Every earlier run is finished (resume closed any that was not):
	// only its counts and shown plan are worth keeping.
	if err := s.d.Store.ForgetSweepItems(ctx, s.p.Name, id); err != nil {
		s.d.Log.Warn("sweep: forget the items of earlier runs", "err", err)
	}
	plan, err := s.plan(ctx, s.recorder(id))
	if err != nil {
		s.close(ctx, id, 0, "planning failed: "+err.Error())
		return nil, fmt.Errorf("sweep %s: plan: %w", s.p.Name, err)
	}
	s.d.Log.Info("sweep: planned", "run", id, "actions", plan.Actions(), "users", plan.Users, "managed", plan.Managed, "blocked", plan.Blocked)
	if plan.scope != "" && !dryRun {
		// The next sweep counts absence from the directory again: this
		// one saw a complete pull under the current scope.
		if err := s.d.Store.PutBlob(ctx, s.scopeKey(), []byte(plan.scope)); err != nil {
			s.close(ctx, id, plan.Actions(), "keeping the directory's scope failed: "+err.Error())
			return nil, fmt.Errorf("sweep %s: keep the directory's scope: %w", s.p.Name, err)
		}
	}
	data, err := json.Marshal(plan)
	if err != nil {
		s.close(ctx, id, plan.Actions(), "encoding the plan failed: "+err.Error())
		return nil, fmt.Errorf("sweep %s: encode plan: %w", s.p.Name, err)
	}
	now := s.d.Now()
	run := store.SweepRun{ID: id, Policy: s.p.Name, DryRun: dryRun, Planned: plan.Actions(), Plan: data}
	res = &Result{RunID: id, Policy: s.p.Name, DryRun: dryRun, Plan: plan, Planned: plan.Actions(),
		Blocked: plan.Blocked, BlockReason: plan.BlockReason}
	switch {
	case dryRun:
		run.State, run.Finished = "done", now
		if plan.Blocked {
			run.Reason = "dry run; would be blocked: " + plan.BlockReason
		} else {
			run.Reason = "dry run"
		}
	case plan.Blocked:
		run.State, run.Finished, run.Reason = "blocked", now, plan.BlockReason
		s.blocked.Add(1)
		s.d.Log.Error("sweep blocked by safety valve", "reason", plan.BlockReason,
			"planned", plan.Actions(), "users", plan.Users, "managed", plan.Managed)
		if s.d.OnBlocked != nil {
			s.d.OnBlocked(s.p.Name, plan.BlockReason)
		}
	default:
		run.State = "running"
	}
	if err := s.d.Store.UpdateSweep(ctx, run); err != nil {
		s.close(ctx, id, plan.Actions(), "recording the plan failed: "+err.Error())
		return nil, fmt.Errorf("sweep %s: %w", s.p.Name, err)
	}
	switch {
	case dryRun:
		return res, nil
	case plan.Blocked:
		return res, fmt.Errorf("sweep %s: %w: %s", s.p.Name, ErrBlocked, plan.BlockReason)
	}
	return s.execute(ctx, res)
}

// recorder records a run's items in the store as the planner hands them
// over, numbering them in plan order.
func (s *Sweeper) recorder(run int64) func(context.Context, []Item) error {
	seq := int64(0)
	return func(ctx context.Context, items []Item) error {
		rows := make([]store.SweepItem, len(items))
		for i, it := range items {
			data, err := json.Marshal(it)
			if err != nil {
				return fmt.Errorf("encode item: %w", err)
			}
			seq++
			rows[i] = store.SweepItem{Seq: seq, Key: it.key(), Data: data}
		}
		if err := s.d.Store.AddSweepItems(ctx, run, rows); err != nil {
			return fmt.Errorf("record the plan of run %d: %w", run, err)
		}
		return nil
	}
}

// close ends run id as failed before it applied anything, so that it is
// never resumed. It runs even when ctx is being cancelled; should it
// fail, the next run finds the plan unrecorded and closes the run then.
func (s *Sweeper) close(ctx context.Context, id int64, planned int, reason string) {
	bctx, cancel := bookkeeping(ctx)
	defer cancel()
	if err := s.d.Store.FinishSweep(bctx, store.SweepRun{ID: id, Policy: s.p.Name, State: "failed",
		Planned: planned, Reason: reason, Finished: s.d.Now()}); err != nil {
		s.d.Log.Warn("sweep: close the failed run", "run", id, "err", err)
	}
}

// resume finishes the policy's run a crash left "running". It returns
// nil, nil when there is none.
func (s *Sweeper) resume(ctx context.Context) (*Result, error) {
	run, err := s.d.Store.UnfinishedSweep(ctx, s.p.Name)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return nil, nil
	case err != nil:
		return nil, fmt.Errorf("sweep %s: %w", s.p.Name, err)
	}
	var plan Plan
	reason := ""
	switch {
	case len(run.Plan) == 0:
		reason = "abandoned: it stopped while planning"
	case run.DryRun || json.Unmarshal(run.Plan, &plan) != nil || plan.Blocked:
		reason = "abandoned: nothing to resume"
	}
	if reason != "" {
		// Close it so it is not found again.
		run.State, run.Reason, run.Finished = "failed", reason, s.d.Now()
		if err := s.d.Store.FinishSweep(ctx, run); err != nil {
			return nil, fmt.Errorf("sweep %s: %w", s.p.Name, err)
		}
		return nil, nil
	}
	if err := s.adopt(ctx, run.ID, &plan); err != nil {
		return nil, fmt.Errorf("sweep %s: resume run %d: %w", s.p.Name, run.ID, err)
	}
	s.d.Log.Info("sweep: resuming unfinished run", "run", run.ID, "planned", plan.Actions())
	res := &Result{RunID: run.ID, Policy: s.p.Name, Resumed: true, Plan: &plan, Planned: plan.Actions()}
	return s.execute(ctx, res)
}

// adopt prepares a run an earlier version planned, which kept its items
// in the plan alone: they are recorded as this version's, and counted.
func (s *Sweeper) adopt(ctx context.Context, id int64, plan *Plan) error {
	if plan.Planned > 0 || plan.Skips > 0 || len(plan.Items) == 0 {
		return nil
	}
	for _, it := range plan.Items {
		if it.Action == Skip {
			plan.Skips++
		} else {
			plan.Planned++
		}
	}
	some, err := s.d.Store.SweepItems(ctx, id, store.SweepItemFilter{Limit: 1})
	if err != nil || len(some) > 0 {
		return err
	}
	return s.recorder(id)(ctx, plan.Items)
}

// execute applies the items of run res.RunID not done yet and records
// the outcome, unless ctx ended first or the plan could not be read: then
// the run stays open for resume.
func (s *Sweeper) execute(ctx context.Context, res *Result) (*Result, error) {
	err := s.apply(ctx, res)
	if cause := context.Cause(ctx); cause != nil {
		return res, fmt.Errorf("sweep %s: run %d interrupted after %d items: %w", s.p.Name, res.RunID, res.Applied+res.Skipped, cause)
	}
	if err != nil {
		return res, fmt.Errorf("sweep %s: run %d: %w; the next run resumes it", s.p.Name, res.RunID, err)
	}
	if n := res.unrecorded; n > 0 {
		// Leave the run open: the next Run resumes it and, finding this
		// run's marker, finishes the bookkeeping without touching the app.
		return res, fmt.Errorf("sweep %s: run %d: %d items changed in the app but not fully recorded; the next run finishes them",
			s.p.Name, res.RunID, n)
	}
	run := store.SweepRun{ID: res.RunID, Policy: s.p.Name, Planned: res.Planned, Applied: res.Applied,
		Failed: res.Failed, State: "done", Finished: s.d.Now()}
	if res.Failed > 0 {
		run.Reason = fmt.Sprintf("%d items failed; the next run retries them", res.Failed)
	}
	if err := s.d.Store.FinishSweep(ctx, run); err != nil {
		return res, fmt.Errorf("sweep %s: %w", s.p.Name, err)
	}
	s.d.Log.Info("sweep: done", "run", res.RunID, "applied", res.Applied, "skipped", res.Skipped, "failed", res.Failed)
	return res, nil
}

// renew keeps the lease while the run lasts and cancels the run when the
// lease is lost, so two replicas never act at once for long.
func (s *Sweeper) renew(ctx context.Context, cancel context.CancelCauseFunc, lease, owner string, ttl time.Duration) func() {
	quit := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(ttl / 3)
		defer t.Stop()
		for {
			select {
			case <-quit:
				return
			case <-ctx.Done():
				return
			case <-t.C:
				ok, err := s.d.Store.Lease(ctx, lease, owner, ttl)
				if err == nil && !ok {
					err = ErrLeaseHeld
				}
				if err != nil {
					s.d.Log.Error("sweep: lost lease; stopping", "err", err)
					cancel(fmt.Errorf("lease lost: %w", err))
					return
				}
			}
		}
	}()
	return func() { close(quit); <-finished }
}

// Apply acts on p outside Run (no lease; the caller coordinates), as a new
// recorded run. It refuses a blocked plan, and a plan that lists only some
// of its items (more than MaxShown): Run acts on those.
func (s *Sweeper) Apply(ctx context.Context, p *Plan) (*Result, error) {
	if p.Blocked {
		return nil, fmt.Errorf("sweep %s: %w: %s", s.p.Name, ErrBlocked, p.BlockReason)
	}
	if p.Omitted > 0 {
		return nil, fmt.Errorf("sweep %s: the plan lists %d of its %d items; run the sweep to act on all of them",
			s.p.Name, len(p.Items), len(p.Items)+p.Omitted)
	}
	data, err := json.Marshal(p)
	if err != nil {
		return nil, fmt.Errorf("sweep %s: encode plan: %w", s.p.Name, err)
	}
	res := &Result{Policy: s.p.Name, Plan: p, Planned: p.Actions()}
	res.RunID, err = s.d.Store.StartSweep(ctx, store.SweepRun{Policy: s.p.Name, Started: s.d.Now(), State: "running"})
	if err != nil {
		return nil, fmt.Errorf("sweep %s: %w", s.p.Name, err)
	}
	if err := s.recorder(res.RunID)(ctx, p.Items); err != nil {
		s.close(ctx, res.RunID, p.Actions(), err.Error())
		return nil, fmt.Errorf("sweep %s: %w", s.p.Name, err)
	}
	if err := s.d.Store.UpdateSweep(ctx, store.SweepRun{ID: res.RunID, State: "running", Planned: p.Actions(), Plan: data}); err != nil {
		s.close(ctx, res.RunID, p.Actions(), "recording the plan failed: "+err.Error())
		return nil, fmt.Errorf("sweep %s: %w", s.p.Name, err)
	}
	return s.execute(ctx, res)
}
