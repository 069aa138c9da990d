package jit

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/usherhq/usher/store"
	"github.com/usherhq/usher/targets"
)

// Worker drains the durable retry queue: changes a login could not apply
// because an app was down. Several replicas may run one each; the store
// leases every job to one worker at a time.
type Worker struct {
	Lifecycle *Lifecycle
	Store     store.Provisioning
	// Owner names this worker in job leases (host name and process).
	Owner string
	// Interval between polls, default 5s; Lease per claimed job, default 2m.
	Interval, Lease time.Duration
	// MinBackoff is the first wait after a failed attempt, doubling with
	// each failure up to MaxBackoff; defaults 5s and 1h.
	MinBackoff, MaxBackoff time.Duration
	// ProbeEvery is how often an app with waiting jobs is asked whether
	// it answers again (one cheap read); when it does, its jobs are due
	// at once, so a change does not wait out its backoff after the app's
	// recovery. Zero probes every 15s; negative never.
	ProbeEvery time.Duration
}

// Run polls until ctx ends. A job that is being applied when ctx ends is
// finished first (bounded by the apps' own call timeouts).
func (w *Worker) Run(ctx context.Context) {
	interval := w.Interval
	if interval <= 0 {
		interval = 5 * time.Second
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	var probed time.Time
	for {
		if every := w.probeEvery(); every > 0 && time.Since(probed) >= every {
			probed = time.Now()
			w.Probe(ctx)
		}
		if _, err := w.Drain(ctx); err != nil && ctx.Err() == nil {
			w.Lifecycle.log().Error("retry queue", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Drain applies every job due now and returns how many it completed.
func (w *Worker) Drain(ctx context.Context) (int, error) {
	lease := w.Lease
	if lease <= 0 {
		lease = 2 * time.Minute
	}
	done := 0
	for ctx.Err() == nil {
		// One job at a time: a job against a down app can take minutes of
		// retries, and a batch would outlive its lease and be claimed again
		// by another replica.
		jobs, err := w.Store.Claim(ctx, w.Owner, w.Lifecycle.now(), 1, lease)
		if err != nil {
			return done, fmt.Errorf("claim jobs: %w", err)
		}
		if len(jobs) == 0 {
			return done, nil
		}
		for _, j := range jobs {
			// A claimed job runs to the end even if ctx ends meanwhile,
			// so shutdown stops at a safe point between jobs.
			if w.run(context.WithoutCancel(ctx), j) {
				done++
			}
		}
	}
	return done, nil
}

// Job kinds of the retry queue.
const (
	jobReconcile = "reconcile"
	jobRemove    = "deprovision"
)

func (w *Worker) run(ctx context.Context, j store.Job) bool {
	if j.Kind == jobRemove {
		return w.runRemove(ctx, j)
	}
	r := w.Lifecycle.rec()
	var d Desired
	if err := json.Unmarshal(j.Payload, &d); err != nil {
		// A payload this version cannot read stays visible in the queue.
		_ = w.Store.Retry(ctx, j.ID, w.Owner, r.now().Add(w.maxBackoff()), "unreadable payload: "+err.Error())
		return false
	}
	cause := d.cause().retried()
	d = w.newest(ctx, d)
	d.Cause, d.Why = cause, ""
	o := r.Apply(ctx, d, false)
	if o.Err == nil || errors.Is(o.Err, ErrDeprovisioned) {
		if err := w.Store.Complete(ctx, j.ID, w.Owner); err != nil {
			r.log().Error("complete job", "job", j.ID, "err", err)
		}
		return o.Err == nil
	}
	w.retryLater(ctx, j, o.Err)
	return false
}

// newest returns the person's latest recorded wish for the job's app: a
// login after the job was queued may have changed it, and applying the
// older payload would undo that login's changes.
func (w *Worker) newest(ctx context.Context, d Desired) Desired {
	b, _, err := w.Store.Profile(ctx, d.IdP, d.Subject)
	if err != nil {
		return d
	}
	var ds map[string]Desired
	if json.Unmarshal(b, &ds) != nil {
		return d
	}
	nd, ok := ds[d.App]
	if !ok {
		return d
	}
	if nd.Username == d.Username || nd.Username == "" {
		nd.PrevUsername = d.PrevUsername // a pending rename is the job's to finish
	} else {
		nd.PrevUsername = d.Username
	}
	return nd
}

func (w *Worker) probeEvery() time.Duration {
	if w.ProbeEvery == 0 {
		return 15 * time.Second
	}
	return w.ProbeEvery
}

// probeTimeout bounds one probe of one app.
const probeTimeout = 5 * time.Second

// Probe asks every app that has jobs waiting for a retry whether it
// answers again, and makes the jobs of each that does due now. It returns
// the apps it woke.
func (w *Worker) Probe(ctx context.Context) []string {
	l := w.Lifecycle
	apps, err := w.Store.WaitingApps(ctx, l.now())
	if err != nil {
		if ctx.Err() == nil {
			l.log().Warn("retry queue: which apps wait", "err", err)
		}
		return nil
	}
	var woke []string
	for _, app := range apps {
		t := l.Apps[app]
		if t == nil {
			continue
		}
		pctx, cancel := context.WithTimeout(ctx, probeTimeout)
		_, err := t.ListUsers(pctx, "", 1)
		cancel()
		if err != nil {
			continue // still down: the jobs keep their backoff
		}
		n, err := w.Store.Wake(ctx, app, l.now())
		if err != nil {
			l.log().Warn("retry queue: wake jobs", "app", app, "err", err)
			continue
		}
		if n > 0 {
			l.log().Info("app answers again: its queued changes are tried now", "app", app, "jobs", n)
			woke = append(woke, app)
		}
	}
	return woke
}

func (w *Worker) maxBackoff() time.Duration {
	if w.MaxBackoff > 0 {
		return w.MaxBackoff
	}
	return time.Hour
}

// backoff doubles from MinBackoff with each attempt, capped at
// MaxBackoff, with equal jitter: half fixed, half random, so that jobs
// that failed together do not all come back together.
func (w *Worker) backoff(attempt int) time.Duration {
	first := w.MinBackoff
	if first <= 0 {
		first = 5 * time.Second
	}
	d := first << min(attempt, 20)
	if m := w.maxBackoff(); d > m || d <= 0 {
		d = m
	}
	return d/2 + rand.N(d/2+1)
}

// runRemove applies a queued removal, unless the decision was withdrawn
// since (the IdP brought the person back): then the job is done.
func (w *Worker) runRemove(ctx context.Context, j store.Job) bool {
	r := w.Lifecycle.rec()
	var rj removeJob
	if err := json.Unmarshal(j.Payload, &rj); err != nil {
		_ = w.Store.Retry(ctx, j.ID, w.Owner, r.now().Add(w.maxBackoff()), "unreadable payload: "+err.Error())
		return false
	}
	st, err := r.Store.AppState(ctx, rj.App, rj.Username)
	switch {
	case errors.Is(err, store.ErrNotFound) || err == nil && !st.Deprovisioned:
		// Withdrawn meanwhile: nothing left to do.
		if err := w.Store.Complete(ctx, j.ID, w.Owner); err != nil {
			r.log().Error("complete job", "job", j.ID, "err", err)
		}
		return true
	case err != nil:
		w.retryLater(ctx, j, err)
		return false
	}
	rj.Cause = rj.cause().retried()
	if _, err := r.act(ctx, rj); err != nil && !errors.Is(err, targets.ErrNotFound) {
		w.retryLater(ctx, j, err)
		return false
	}
	if err := w.Store.Complete(ctx, j.ID, w.Owner); err != nil {
		r.log().Error("complete job", "job", j.ID, "err", err)
	}
	return true
}

func (w *Worker) retryLater(ctx context.Context, j store.Job, cause error) {
	r := w.Lifecycle.rec()
	next := r.now().Add(w.backoff(j.Attempts + 1))
	if err := w.Store.Retry(ctx, j.ID, w.Owner, next, cause.Error()); err != nil {
		r.log().Error("reschedule job", "job", j.ID, "err", err)
	}
	r.log().Warn("queued change failed again", "kind", j.Kind, "app", j.App, "username", j.Key, "attempt", j.Attempts+1, "next", next, "err", cause)
}
