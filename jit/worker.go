package jit

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/usherhq/usher/store"
)

// Worker drains the durable retry queue: changes a login could not apply
// because an app was down. Several replicas may run one each; the store
// leases every job to one worker at a time.
type Worker struct {
	Reconciler *Reconciler
	Store      store.Provisioning
	// Owner names this worker in job leases (host name and process).
	Owner string
	// Interval between polls, default 5s; Lease per claimed job, default 2m.
	Interval, Lease time.Duration
	// MaxBackoff caps the wait between attempts of one job, default 1h.
	MaxBackoff time.Duration
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
	for {
		if _, err := w.Drain(ctx); err != nil && ctx.Err() == nil {
			w.Reconciler.log().Error("retry queue", "err", err)
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
		jobs, err := w.Store.Claim(ctx, w.Owner, w.Reconciler.now(), 1, lease)
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

func (w *Worker) run(ctx context.Context, j store.Job) bool {
	if j.Kind == "deprovision" {
		return w.runDeprovision(ctx, j)
	}
	r := w.Reconciler
	var d Desired
	if err := json.Unmarshal(j.Payload, &d); err != nil {
		// A payload this version cannot read stays visible in the queue.
		_ = w.Store.Retry(ctx, j.ID, w.Owner, r.now().Add(w.maxBackoff()), "unreadable payload: "+err.Error())
		return false
	}
	d = w.newest(ctx, d)
	d.Why = "retry: " + d.Why
	o := r.Apply(ctx, d, false)
	if o.Err == nil || errors.Is(o.Err, ErrDeprovisioned) {
		if err := w.Store.Complete(ctx, j.ID, w.Owner); err != nil {
			r.log().Error("complete job", "job", j.ID, "err", err)
		}
		return o.Err == nil
	}
	next := r.now().Add(w.backoff(j.Attempts + 1))
	if err := w.Store.Retry(ctx, j.ID, w.Owner, next, o.Err.Error()); err != nil {
		r.log().Error("reschedule job", "job", j.ID, "err", err)
	}
	r.log().Warn("provisioning retry failed", "app", d.App, "username", d.Username, "attempt", j.Attempts+1, "next", next, "err", o.Err)
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

func (w *Worker) maxBackoff() time.Duration {
	if w.MaxBackoff > 0 {
		return w.MaxBackoff
	}
	return time.Hour
}

// backoff is exponential from 5 s with full jitter, capped.
func (w *Worker) backoff(attempt int) time.Duration {
	d := 5 * time.Second << min(attempt, 20)
	if m := w.maxBackoff(); d > m || d <= 0 {
		d = m
	}
	return d/2 + rand.N(d/2+1)
}

func (w *Worker) runDeprovision(ctx context.Context, j store.Job) bool {
	r := w.Reconciler
	var l Leaver
	if err := json.Unmarshal(j.Payload, &l); err != nil {
		_ = w.Store.Retry(ctx, j.ID, w.Owner, r.now().Add(w.maxBackoff()), "unreadable payload: "+err.Error())
		return false
	}
	if err := r.deactivate(ctx, l, true); err != nil {
		next := r.now().Add(w.backoff(j.Attempts + 1))
		if rerr := w.Store.Retry(ctx, j.ID, w.Owner, next, err.Error()); rerr != nil {
			r.log().Error("reschedule job", "job", j.ID, "err", rerr)
		}
		return false
	}
	if err := w.Store.Complete(ctx, j.ID, w.Owner); err != nil {
		r.log().Error("complete job", "job", j.ID, "err", err)
	}
	return true
}
