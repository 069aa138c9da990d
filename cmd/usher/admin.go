package main

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/usherhq/usher/admin"
	"github.com/usherhq/usher/config"
	"github.com/usherhq/usher/dirsync"
	"github.com/usherhq/usher/jit"
	"github.com/usherhq/usher/providers"
	"github.com/usherhq/usher/store"
	"github.com/usherhq/usher/sweep"
)

// adminHandler builds the admin listener's handler for a generation.
func (m *Main) adminHandler(g *generation) (http.Handler, error) {
	cfg := g.cfg
	acts := &adminActions{m: m, g: g}
	opts := admin.Options{
		Store: m.store, Actions: acts, Directories: acts, Holds: acts, IdPs: adminIdPs(cfg), Codec: g.codec,
		Config:  cfg.Redacted,
		Ready:   func(ctx context.Context) []admin.Check { return m.ready(ctx, g) },
		Metrics: m.metrics.Handler(m.reg),
		Log:     m.Log, Now: m.Now,
		AccountID: func(ctx context.Context, app, username string) string {
			if !cloudApp(cfg, app) {
				return ""
			}
			id, err := blobAccounts{m.store}.AccountID(ctx, app, username)
			if err != nil {
				return ""
			}
			return id
		},
	}
	if !cfg.Admin.Token.IsZero() {
		tok, err := cfg.Admin.Token.Resolve()
		if err != nil {
			return nil, fmt.Errorf("admin.token: %w", err)
		}
		opts.Token = tok
	}
	if cfg.Admin.SSOGroup != "" {
		login := g.public.JoinPath("/usher/login")
		login.RawQuery = url.Values{"rd": {"/"}}.Encode()
		opts.SSO = &admin.SSO{IdP: cfg.Admin.SSOIdP, Group: cfg.Admin.SSOGroup, LoginURL: login.String()}
	}
	return admin.New(opts), nil
}

// Bounds of the /readyz checks. Each check has its own and all run at
// once, so a store that hangs cannot use up the time of the IdP and app
// checks and have its fault reported as theirs. The longest, with the
// grace, stays below the admin package's overall bound (5 s).
const (
	storeCheckTimeout = 2 * time.Second
	checkTimeout      = 3 * time.Second
	// checkGrace is how long past its bound a check that ignores its
	// context is awaited before it is reported as not answering.
	checkGrace = 250 * time.Millisecond
)

// readyCheck is one named check of /readyz with its own bound.
type readyCheck struct {
	name    string
	timeout time.Duration
	run     func(context.Context) error // nil: nothing to check, ready
}

// ready names what is wrong for /readyz: the store, each IdP (providers
// that are providers.Checker say whether they can serve logins; each
// keeps its answer a while, so probes do not load the IdP), and each
// app's REST API.
func (m *Main) ready(ctx context.Context, g *generation) []admin.Check {
	checks := []readyCheck{{name: "store", timeout: storeCheckTimeout, run: m.store.Ping}}
	for _, p := range g.providers {
		c := readyCheck{name: "idp:" + p.ID(), timeout: checkTimeout}
		if ch, ok := p.(providers.Checker); ok {
			c.run = ch.Ready
		}
		checks = append(checks, c)
	}
	for _, app := range slices.Sorted(maps.Keys(g.dirs)) {
		dir := g.dirs[app]
		checks = append(checks, readyCheck{name: "app:" + app, timeout: checkTimeout, run: func(ctx context.Context) error {
			_, err := dir.ListUsers(ctx, "", 1)
			return err
		}})
	}
	out := runChecks(ctx, checks)
	// The store is critical; so are the IdPs, but only all of them at
	// once: with one down, people of the others still sign in.
	out[0].Critical = true
	idpsDown, idps := 0, 0
	for _, c := range out {
		if strings.HasPrefix(c.Name, "idp:") {
			idps++
			if c.Err != nil {
				idpsDown++
			}
		}
	}
	if idps > 0 && idpsDown == idps {
		out = append(out, admin.Check{Name: "idps", Err: errors.New("no identity provider is available: nobody can sign in"), Critical: true})
	}
	return out
}

// runChecks runs checks at once, each within its own timeout, and
// returns their results in order. A check still running past its
// timeout and checkGrace is reported as not answering, not waited for.
func runChecks(ctx context.Context, checks []readyCheck) []admin.Check {
	out := make([]admin.Check, len(checks))
	type result struct {
		i   int
		err error
	}
	results := make(chan result, len(checks)) // buffered: a late check must not block
	pending := map[int]bool{}
	var longest time.Duration
	for i, c := range checks {
		out[i].Name = c.name
		if c.run == nil {
			continue
		}
		pending[i] = true
		longest = max(longest, c.timeout)
		go func() {
			cctx, cancel := context.WithTimeout(ctx, c.timeout)
			defer cancel()
			err := c.run(cctx)
			if err != nil && cctx.Err() != nil && ctx.Err() == nil {
				err = fmt.Errorf("did not answer within %s: %w", c.timeout, err)
			}
			results <- result{i, err}
		}()
	}
	timer := time.NewTimer(longest + checkGrace)
	defer timer.Stop()
	for len(pending) > 0 {
		select {
		case r := <-results:
			out[r.i].Err = r.err
			delete(pending, r.i)
		case <-timer.C:
			for i := range pending {
				out[i].Err = fmt.Errorf("did not answer within %s", checks[i].timeout)
			}
			return out
		}
	}
	return out
}

// adminActions are the admin page's buttons.
type adminActions struct {
	m *Main
	g *generation
}

func (a *adminActions) SyncUser(ctx context.Context, idp, subject, actor string) ([]string, error) {
	outs, err := a.g.lifecycle.Sync(ctx, idp, subject, adminCause(actor, "sync now"))
	return changeLines(outs), err
}

func (a *adminActions) Reinstate(ctx context.Context, idp, subject, actor string) ([]string, error) {
	outs, err := a.g.lifecycle.Reinstate(ctx, idp, subject, adminCause(actor, "reinstated"))
	if errors.Is(err, jit.ErrUnbound) {
		err = fmt.Errorf("%w: %w", store.ErrNotFound, err) // the admin page's 404
	}
	return changeLines(outs), err
}

// changeLines says per app what a sync did, including what it left alone
// and why (a removal stands, a change waits in the queue), so that "nothing
// changed" never hides a person who is still removed.
func changeLines(outs []jit.Outcome) []string {
	var lines []string
	for _, o := range outs {
		for _, c := range o.Changes {
			lines = append(lines, o.App+": "+c)
		}
		switch {
		case errors.Is(o.Err, jit.ErrDeprovisioned):
			lines = append(lines, o.Err.Error()+": not applied; Reinstate brings them back") // "jira: alice: deprovisioned by policy (...)"
		case o.Queued:
			lines = append(lines, fmt.Sprintf("%s: queued for retry: %v", o.App, o.Err))
		case o.Err == nil && len(o.Changes) == 0:
			lines = append(lines, o.App+": already in sync")
		}
	}
	return lines
}

func (a *adminActions) PlanSweep(ctx context.Context, policy string) (*admin.SweepPlan, error) {
	s := a.g.sweepers[policy]
	if s == nil {
		return nil, fmt.Errorf("no sweep policy %q", policy)
	}
	p, err := s.Plan(ctx)
	if err != nil {
		return nil, err
	}
	return planView(p, nil), nil
}

func (a *adminActions) RunSweep(ctx context.Context, policy string, dryRun bool, actor string) (*admin.SweepPlan, error) {
	s := a.g.sweepers[policy]
	if s == nil {
		return nil, fmt.Errorf("no sweep policy %q", policy)
	}
	a.m.Log.Info("sweep started by admin", "policy", policy, "dry_run", dryRun, "actor", actor)
	res, err := s.Run(ctx, dryRun)
	if res == nil {
		return nil, err
	}
	v := planView(res.Plan, res)
	return v, err
}

func (a *adminActions) Policies() []string { return a.g.sweepOrder }

func (a *adminActions) Link(ctx context.Context, idp, subject, username, actor string) error {
	return a.g.lifecycle.Link(ctx, idp, subject, username, adminCause(actor, "linked to an existing account by hand"))
}

func (a *adminActions) Reload(ctx context.Context, actor string) error {
	a.m.Log.Info("reload requested", "actor", actor)
	return a.m.Reload(ctx)
}

func (a *adminActions) Directories() []admin.Directory {
	var out []admin.Directory
	for _, d := range a.g.cfg.Directories {
		when := "by hand only"
		switch {
		case d.Schedule != "":
			when = "cron " + d.Schedule
		case d.Every > 0:
			when = "every " + d.Every.String()
		}
		if d.Schedule != "" || d.Every > 0 {
			when += ", a full pull every " + d.FullEvery.String()
		}
		out = append(out, admin.Directory{Name: d.Name, Type: d.Type, IdP: d.IdP, Schedule: when, Automatic: d.Automatic})
	}
	return out
}

func (a *adminActions) syncer(name string) (*dirsync.Syncer, error) {
	s := a.g.syncers[name]
	if s == nil {
		return nil, fmt.Errorf("no directory %q", name)
	}
	return s, nil
}

func (a *adminActions) DirectoryRuns(ctx context.Context, name string) ([]dirsync.Result, *dirsync.Progress, error) {
	s, err := a.syncer(name)
	if err != nil {
		return nil, nil, err
	}
	runs, err := s.Runs(ctx)
	return runs, s.Running(), err
}

func (a *adminActions) StartSync(ctx context.Context, name, actor string) error {
	s, err := a.syncer(name)
	if err != nil {
		return err
	}
	if a.g.background == nil {
		return errors.New("usher is not running its background work")
	}
	a.m.Log.Info("directory sync started by admin", "directory", name, "actor", actor)
	return a.g.background.Trigger(s, dirsync.Options{Full: true, By: actor})
}

func (a *adminActions) DryRunSync(ctx context.Context, name, actor string) (*dirsync.Result, error) {
	s, err := a.syncer(name)
	if err != nil {
		return nil, err
	}
	return s.RunWith(ctx, dirsync.Options{Full: true, DryRun: true, By: actor})
}

func (a *adminActions) DirectoryOf(idp string) string {
	if s := a.g.syncerOf(idp); s != nil {
		return s.Name()
	}
	return ""
}

func (a *adminActions) SyncPerson(ctx context.Context, idp, subject, actor string) (*dirsync.Item, error) {
	s := a.g.syncerOf(idp)
	if s == nil {
		return nil, fmt.Errorf("IdP %s has no directory", idp)
	}
	return s.SyncPerson(ctx, subject, actor)
}

// adminIdPs are the configured IdPs as the admin overview shows them.
func adminIdPs(cfg *config.Config) []admin.IdP {
	out := make([]admin.IdP, 0, len(cfg.IdPs))
	for _, idp := range cfg.IdPs {
		v := admin.IdP{ID: idp.ID, Name: idp.Name, Type: idp.Type, Adoption: idp.Adoption, SCIM: idp.SCIM != nil}
		if sc := idp.SCIM; sc != nil {
			v.Automatic = sc.Automatic
			if b := sc.Brake; b != nil {
				v.Brake = &admin.Brake{MaxCount: b.MaxCount, MaxShare: b.MaxShare, Window: b.Window, HeldSessions: b.HeldSessions}
			}
		}
		out = append(out, v)
	}
	return out
}

// Release carries out a removal an IdP's SCIM brake held.
func (a *adminActions) Release(ctx context.Context, idp, subject, actor string) ([]string, error) {
	outs, err := a.g.lifecycle.Release(ctx, idp, subject, adminCause(actor, "released a removal the SCIM brake held"))
	if errors.Is(err, jit.ErrNotHeld) {
		return nil, fmt.Errorf("%w: %w", store.ErrNotFound, err)
	}
	changes := make([]string, 0, len(outs))
	for _, o := range outs {
		what := "nothing to change"
		switch {
		case o.Err != nil:
			what = "failed: " + o.Err.Error()
			if o.Queued {
				what += " (queued for retry)"
			}
		case o.Queued:
			what = "queued for retry (the app is down)"
		case o.Changed:
			what = "removed"
		case o.Skipped != "":
			what = o.Skipped
		}
		changes = append(changes, o.App+": "+what)
	}
	if outs != nil {
		// Decided and released: an app that did not take it is in the
		// lines above, the audit log and the retry queue.
		return changes, nil
	}
	return changes, err
}

// Drop withdraws a removal an IdP's SCIM brake held.
func (a *adminActions) Drop(ctx context.Context, idp, subject, actor string) error {
	err := a.g.lifecycle.DropHold(ctx, idp, subject, adminCause(actor, "dropped a removal the SCIM brake held"))
	if errors.Is(err, jit.ErrNotHeld) {
		return fmt.Errorf("%w: %w", store.ErrNotFound, err)
	}
	return err
}

func (a *adminActions) ReleaseAll(ctx context.Context, idp, actor string) (int, error) {
	a.m.Log.Info("release of every removal the SCIM brake holds", "idp", idp, "actor", actor)
	return a.g.lifecycle.ReleaseHolds(ctx, idp, adminCause(actor, "released every removal the SCIM brake held"))
}

func (a *adminActions) DropAll(ctx context.Context, idp, actor string) (int, error) {
	a.m.Log.Info("drop of every removal the SCIM brake holds", "idp", idp, "actor", actor)
	return a.g.lifecycle.DropHolds(ctx, idp, adminCause(actor, "dropped every removal the SCIM brake held"))
}

// adminCause is the cause of an admin page action; actor is how the
// admin package names the principal ("admin:alice", "admin:token").
func adminCause(actor, reason string) jit.Cause {
	return jit.ByAdmin(strings.TrimPrefix(actor, "admin:"), reason)
}

func planView(p *sweep.Plan, res *sweep.Result) *admin.SweepPlan {
	v := &admin.SweepPlan{}
	if p != nil {
		v.Policy, v.Blocked, v.BlockReason, v.Managed, v.Omitted = p.Policy, p.Blocked, p.BlockReason, p.Managed, p.Omitted
		v.Counts = map[string]int{}
		if p.Planned > 0 {
			v.Counts[string(p.Action)] = p.Planned
		}
		if p.Skips > 0 {
			v.Counts[string(sweep.Skip)] = p.Skips
		}
		for _, it := range p.Items {
			v.Items = append(v.Items, admin.SweepItem{IdP: it.IdP, Subject: it.Subject, Username: it.Username, App: it.App,
				Reason: it.Reason, Action: string(it.Action)})
		}
	}
	if res != nil {
		v.Applied, v.Failed = res.Applied, res.Failed
		outcome := map[string]string{}
		for _, o := range res.Items {
			outcome[o.App+"\x00"+o.Username] = o.Outcome
		}
		for i := range v.Items {
			v.Items[i].Outcome = outcome[v.Items[i].App+"\x00"+v.Items[i].Username]
			if res.DryRun && v.Items[i].Outcome == "" {
				v.Items[i].Outcome = "dry run: not applied"
			}
		}
	}
	return v
}
