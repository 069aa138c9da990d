// Package dirsync owns the sync from the IdPs' own directories into the
// apps: a Syncer per configured directory reads its people (a full pull,
// or a delta when the connector has deltas and a full pull is not due),
// maps each one with the IdP's mapping, exactly as at login, and admits
// them through the lifecycle, so that people exist in the apps with
// their groups before their first login. It keeps the delta token and
// the last runs in the store's blobs, runs on a schedule under a store
// lease (one replica syncs), and previews a sync without changing
// anything (a dry run).
//
// A sync never takes access away. A person the directory says has left
// (disabled, deleted, or missing from a complete pull) is the business
// of a sweep whose source names the directory (package sweep), where the
// safety valve and the dry-run plan apply. A sync does bring back a
// person that same directory's sweep took away, when the directory says
// they are active again (the lifecycle withdraws its own decisions).
package dirsync

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jonboulle/clockwork"
	"golang.org/x/sync/errgroup"

	"github.com/usherhq/usher/directory"
	"github.com/usherhq/usher/jit"
	"github.com/usherhq/usher/providers"
	"github.com/usherhq/usher/store"
)

// Lifecycle is the person lifecycle's way in (jit.Lifecycle).
type Lifecycle interface {
	Admit(ctx context.Context, id providers.Identity, cause jit.Cause) (*jit.Admission, error)
	// Sync re-applies a person's recorded profile without the fast path.
	Sync(ctx context.Context, idp, subject string, cause jit.Cause) ([]jit.Outcome, error)
}

// Store is what a sync reads and keeps: bindings and app states to tell
// what would change, blobs for the delta token and the last runs, and
// leases so that one replica syncs a directory at a time.
type Store interface {
	Binding(ctx context.Context, idp, subject string) (store.Binding, error)
	BindingByUsername(ctx context.Context, username string) (store.Binding, error)
	AppState(ctx context.Context, app, username string) (store.AppState, error)
	// Profile is the profile recorded for an admin's sync (manual
	// provisioning).
	Profile(ctx context.Context, idp, subject string) ([]byte, time.Time, error)
	Lease(ctx context.Context, name, owner string, ttl time.Duration) (bool, error)
	ReleaseLease(ctx context.Context, name, owner string) error
	store.Blobs
}

// Config is how one directory is synced (the directory's entry in the
// config file, less the connector's own block).
type Config struct {
	// Automatic admits people usher does not know yet; without it a sync
	// only updates people already bound (who signed in, or were pushed).
	Automatic bool
	// GroupIDs offers the people's group object IDs to the mapping
	// instead of their names (what Entra ID's tokens carry).
	GroupIDs bool
	// GroupClaim is the claim the IdP's mapping reads groups from.
	GroupClaim string
	// Claims offer directory fields under further claim names: claim →
	// field (subject, id, username, email, display_name, given_name,
	// family_name, groups, group_ids) or a directory attribute's name.
	Claims map[string]string
	// Concurrency is how many people are admitted at once (default 4).
	Concurrency int
	// FullEvery is how old the last complete full pull may be before a
	// scheduled sync pulls in full again instead of a delta (default 24h).
	FullEvery time.Duration
	// Schedule (cron) or Every runs the sync in Background; neither
	// means by hand only.
	Schedule string
	Every    time.Duration
	// Scope identifies the connector's configured scope (a hash of its
	// block): a delta token taken under another scope is not used.
	Scope string
}

// Deps are a Syncer's collaborators.
type Deps struct {
	Conn      directory.Connector
	Lifecycle Lifecycle
	// Mapper is the IdP's mapping, for dry runs and to tell unchanged
	// people without admitting them.
	Mapper *jit.Mapper
	// Apps are the provisioned apps' names.
	Apps  []string
	Store Store
	Log   *slog.Logger
	// Clock tells the time and paces lease renewal; nil is the real one.
	Clock clockwork.Clock
	// Owner names this replica in leases.
	Owner string
	// Lease is the lease's TTL (default 2m), renewed at a third.
	Lease time.Duration
	// OnRun is called after every recorded run (metrics).
	OnRun func(*Result)
}

// Syncer syncs one directory. It is safe for concurrent use: runs of
// the same directory are serialised (in this process by a lock, across
// replicas by the store lease); one person's sync may run beside them.
type Syncer struct {
	name, idp string
	cfg       Config
	d         Deps
	clock     clockwork.Clock
	running   sync.Mutex
	progress  atomic.Pointer[Progress]
}

var (
	// ErrBusy: a sync of the directory is running (here or, through the
	// store lease, on another replica).
	ErrBusy = errors.New("dirsync: a sync of this directory is already running")
	// ErrNotInDirectory: the directory does not know the person.
	ErrNotInDirectory = errors.New("dirsync: the directory does not know this person")
)

const (
	defaultLease     = 2 * time.Minute
	defaultFullEvery = 24 * time.Hour
	// maxItems bounds the people a Result lists; the counts cover all.
	maxItems = 1000
)

// New checks cfg and deps and returns the Syncer.
func New(cfg Config, d Deps) (*Syncer, error) {
	if d.Conn == nil || d.Lifecycle == nil || d.Mapper == nil || d.Store == nil {
		return nil, errors.New("dirsync: connector, lifecycle, mapper and store are required")
	}
	name := d.Conn.Name()
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = 4
	}
	if cfg.FullEvery <= 0 {
		cfg.FullEvery = defaultFullEvery
	}
	if cfg.GroupClaim == "" {
		cfg.GroupClaim = "groups"
	}
	if d.Log == nil {
		d.Log = slog.New(slog.DiscardHandler)
	}
	d.Log = d.Log.With("directory", name)
	if d.Clock == nil {
		d.Clock = clockwork.NewRealClock()
	}
	if d.Lease <= 0 {
		d.Lease = defaultLease
	}
	if d.Owner == "" {
		return nil, fmt.Errorf("dirsync %s: an owner is required for the lease", name)
	}
	d.Apps = slices.Sorted(slices.Values(d.Apps))
	return &Syncer{name: name, idp: d.Conn.IdP(), cfg: cfg, d: d, clock: d.Clock}, nil
}

// Name is the directory's configured name.
func (s *Syncer) Name() string { return s.name }

// IdP is the id of the IdP whose people the directory holds.
func (s *Syncer) IdP() string { return s.idp }

// Config is the syncer's configuration, defaults applied.
func (s *Syncer) Config() Config { return s.cfg }

// Options say what one run does.
type Options struct {
	// Full pulls every person; otherwise a delta runs when the connector
	// has deltas, a token is kept and the last full pull is recent.
	Full bool
	// DryRun maps every person and reports what would change, with no
	// app call and no store write (no lease, no recorded run).
	DryRun bool
	// By says who started the run ("schedule", "admin:alice", "cli"),
	// for the run record and the audit reason.
	By string
	// Progress, when set, is called after each page.
	Progress func(Progress)
}

// Progress is a running sync's state.
type Progress struct {
	Kind    string    `json:"kind"`
	Started time.Time `json:"started"`
	// People read so far; Expected is how many the last complete full
	// pull read (0 when unknown).
	People   int `json:"people"`
	Expected int `json:"expected"`
	Created  int `json:"created"`
	Updated  int `json:"updated"`
	Failed   int `json:"failed"`
}

// Running is the state of the run in progress in this process, or nil.
func (s *Syncer) Running() *Progress { return s.progress.Load() }

// Run syncs everyone (full) or what changed (a delta, when due), or with
// dryRun only reports what a full sync would do.
func (s *Syncer) Run(ctx context.Context, full, dryRun bool) (*Result, error) {
	return s.RunWith(ctx, Options{Full: full, DryRun: dryRun})
}

// RunWith runs one sync. It returns ErrBusy when a run of the directory
// is under way (a dry run is never refused). A pull or delta that stops early still returns its
// Result (what was read was applied) with the error; the delta token
// only advances past what was read in full.
func (s *Syncer) RunWith(ctx context.Context, o Options) (*Result, error) {
	if o.DryRun {
		// A dry run writes nothing, so it may run beside a sync.
		return s.runLocked(ctx, o)
	}
	if !s.running.TryLock() {
		return nil, ErrBusy
	}
	defer s.running.Unlock()
	return s.runLocked(ctx, o)
}

func (s *Syncer) runLocked(ctx context.Context, o Options) (res *Result, err error) {
	if !o.DryRun {
		lease := "directory:" + s.name
		ok, err := s.d.Store.Lease(ctx, lease, s.d.Owner, s.d.Lease)
		if err != nil {
			return nil, fmt.Errorf("dirsync %s: lease: %w", s.name, err)
		}
		if !ok {
			return nil, ErrBusy
		}
		defer func() {
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			defer cancel()
			if err := s.d.Store.ReleaseLease(rctx, lease, s.d.Owner); err != nil {
				s.d.Log.Warn("dirsync: release lease", "err", err)
			}
		}()
		var cancel context.CancelCauseFunc
		ctx, cancel = context.WithCancelCause(ctx)
		defer cancel(nil)
		stop := s.renew(ctx, cancel, lease)
		defer stop()
	}

	st, err := s.loadState(ctx)
	if err != nil {
		return nil, err
	}
	runs, err := s.loadRuns(ctx)
	if err != nil {
		return nil, err
	}
	now := s.clock.Now()
	res = &Result{Directory: s.name, IdP: s.idp, DryRun: o.DryRun, Started: now, By: o.By}
	if !o.DryRun {
		res.Run = nextRun(runs)
	}
	expected := lastFullPeople(runs)
	dl, canDelta := s.d.Conn.(directory.Deltaer)
	delta := !o.Full && !o.DryRun && canDelta && st.Token != "" && st.Scope == s.cfg.Scope && now.Sub(st.LastFull) < s.cfg.FullEvery
	// Each published Progress is a fresh value, never changed after:
	// Running hands it to other goroutines.
	publish := func(p *Progress) {
		if !o.DryRun { // Running is the real run's
			s.progress.Store(p)
		}
	}
	defer publish(nil)

	var runErr error
	if delta {
		res.Kind = KindDelta
		base := Progress{Kind: KindDelta, Started: now}
		publish(&base)
		var next string
		next, runErr = dl.Delta(ctx, st.Token, s.pageFunc(ctx, res, base, publish, o))
		switch {
		case errors.Is(runErr, directory.ErrDeltaExpired):
			s.d.Log.Info("dirsync: the delta token expired; pulling in full")
			res.Note = "the delta token expired; ran a full pull instead"
			res.reset()
			delta, runErr = false, nil
		case runErr == nil:
			res.Complete = true
			st.Token = next
		}
	}
	if !delta {
		res.Kind = KindFull
		base := Progress{Kind: KindFull, Started: now, Expected: expected}
		publish(&base)
		var token string
		if canDelta && !o.DryRun {
			// The starting point is taken before the pull, so that a change
			// made while it runs is in the next delta.
			t, err := dl.Delta(ctx, "", func(directory.Page) error { return nil })
			if err != nil {
				s.d.Log.Warn("dirsync: no delta starting point; the next sync pulls in full again", "err", err)
			} else {
				token = t
			}
		}
		runErr = s.d.Conn.Pull(ctx, s.pageFunc(ctx, res, base, publish, o))
		if runErr == nil {
			res.Complete = true
			st.Token, st.Scope, st.LastFull = token, s.cfg.Scope, now
		}
	}
	res.Finished = s.clock.Now()
	if runErr != nil {
		res.Error = runErr.Error()
		runErr = fmt.Errorf("dirsync %s: %s: %w", s.name, res.Kind, runErr)
	}
	res.Groups = len(res.groups)
	if o.DryRun {
		return res, runErr
	}
	// What the run read was applied whatever happens to the bookkeeping:
	// record it even when ctx ended.
	bctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	if res.Complete {
		if err := s.saveState(bctx, st); err != nil {
			runErr = errors.Join(runErr, err)
		}
	}
	if err := s.recordRun(bctx, runs, res); err != nil {
		runErr = errors.Join(runErr, err)
	}
	if s.d.OnRun != nil {
		s.d.OnRun(res)
	}
	s.d.Log.Info("dirsync: run finished", "run", res.Run, "kind", res.Kind, "complete", res.Complete,
		"people", res.People, "created", res.Created, "updated", res.Updated, "failed", res.Failed, "by", res.By)
	return res, runErr
}

// pageFunc handles one page: its people are synced, at most Concurrency
// at a time, before the next page is read.
func (s *Syncer) pageFunc(ctx context.Context, res *Result, base Progress, publish func(*Progress), o Options) func(directory.Page) error {
	var mu sync.Mutex
	reason := res.Kind + " sync"
	if o.By != "" {
		reason += " by " + o.By
	}
	cause := jit.ByDirectory(s.name, res.Run, reason)
	cause.IdP = s.idp
	return func(page directory.Page) error {
		g, gctx := errgroup.WithContext(ctx)
		g.SetLimit(s.cfg.Concurrency)
		for i := range page.People {
			p := page.People[i]
			g.Go(func() error {
				it := s.one(gctx, p, o.DryRun, cause)
				mu.Lock()
				defer mu.Unlock()
				res.add(it, p)
				return nil
			})
		}
		_ = g.Wait()
		next := base
		next.People, next.Created, next.Updated, next.Failed = res.People, res.Created, res.Updated, res.Failed
		publish(&next)
		if o.Progress != nil {
			o.Progress(next)
		}
		return ctx.Err()
	}
}

// renew keeps the lease while the run lasts and cancels the run when it
// is lost, so two replicas never sync one directory at once for long.
func (s *Syncer) renew(ctx context.Context, cancel context.CancelCauseFunc, lease string) func() {
	quit := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		t := s.clock.NewTicker(s.d.Lease / 3)
		defer t.Stop()
		for {
			select {
			case <-quit:
				return
			case <-ctx.Done():
				return
			case <-t.Chan():
				ok, err := s.d.Store.Lease(ctx, lease, s.d.Owner, s.d.Lease)
				if err == nil && !ok {
					err = ErrBusy
				}
				if err != nil {
					s.d.Log.Error("dirsync: lost the lease; stopping", "err", err)
					cancel(fmt.Errorf("lease lost: %w", err))
					return
				}
			}
		}
	}()
	return func() { close(quit); <-finished }
}

// SyncPerson reads one person from the directory now and admits them,
// re-applying their profile to every app even when it looks unchanged:
// an admin's "sync this person now". It admits a person usher does not
// know yet even without Automatic, since an admin asked. A person the
// directory says has left is reported, not removed: that is the sweep's.
// ErrNotInDirectory when the directory does not know the subject.
func (s *Syncer) SyncPerson(ctx context.Context, subject, by string) (*Item, error) {
	p, err := s.d.Conn.Person(ctx, subject)
	if errors.Is(err, directory.ErrNotFound) {
		return nil, fmt.Errorf("dirsync %s: %s: %w", s.name, subject, ErrNotInDirectory)
	}
	if err != nil {
		return nil, fmt.Errorf("dirsync %s: read %s: %w", s.name, subject, err)
	}
	reason := "sync of one person"
	if by != "" {
		reason += " by " + by
	}
	cause := jit.ByDirectory(s.name, 0, reason)
	cause.IdP = s.idp
	if it, done := s.screen(*p); done {
		return &it, nil
	}
	it := s.admit(ctx, *p, s.identity(*p), cause)
	if it.Outcome == OutcomeFailed {
		return &it, errors.New(it.Detail)
	}
	if it.fastPath || it.manual {
		// The fast path skipped apps whose profile looked applied, or
		// manual provisioning only recorded the profile: an admin asking
		// wants the apps checked and set.
		outs, err := s.d.Lifecycle.Sync(ctx, s.idp, p.Subject, cause)
		for _, o := range outs {
			for _, c := range o.Changes {
				it.Changes = append(it.Changes, o.App+": "+c)
			}
		}
		if err != nil {
			it.Outcome, it.Detail = OutcomeFailed, err.Error()
			return &it, err
		}
		if len(it.Changes) > 0 && it.Outcome == OutcomeUnchanged {
			it.Outcome = OutcomeUpdated
		}
		if it.manual {
			it.Detail = "manual provisioning: recorded and applied, as an admin asked"
		}
	}
	return &it, nil
}
