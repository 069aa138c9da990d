package jit

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/usherhq/usher/store"
)

// Action is what an audit entry records.
type Action string

// The audit log's actions. Their strings are what the admin page filters
// on and what exported logs contain; keep them stable.
const (
	ActLogin        Action = "login"         // a person signed in
	ActLoginDenied  Action = "login.denied"  // the access policy refused them
	ActLoginRefused Action = "login.refused" // the IdP's answer or the account was refused
	ActLoginFailed  Action = "login.failed"  // provisioning failed, so no session
	ActLogout       Action = "logout"
	ActLink         Action = "link"              // an admin linked an identity to an app account
	ActSCIMPush     Action = "scim.push"         // a SCIM push was mapped and admitted
	ActSCIMDenied   Action = "scim.denied"       // the access policy refused a pushed person
	ActSCIMRefused  Action = "scim.refused"      // a pushed person could not be bound
	ActSync         Action = "sync"              // an admin's sync of a person
	ActDirAdmit     Action = "directory.admit"   // a directory sync admitted a person
	ActDirDenied    Action = "directory.denied"  // the access policy refused a person a directory lists
	ActDirRefused   Action = "directory.refused" // a person a directory lists could not be admitted
	ActPlanned      Action = "provisioning.planned"
	ActDeprovision  Action = "deprovision"          // usher took a person's access away
	ActHeld         Action = "deprovision.held"     // an IdP's SCIM brake held a removal back for an admin
	ActHoldReleased Action = "deprovision.released" // an admin released a held removal: it happened
	ActHoldDropped  Action = "deprovision.dropped"  // a held removal was withdrawn: by an admin, or the IdP pushed the person active
	ActReinstate    Action = "app.reinstate"
	ActQueue        Action = "queue" // a change waits in the retry queue
	ActAppRead      Action = "app.read"
	ActAppCreate    Action = "app.create"
	ActAppUpdate    Action = "app.update"
	ActAppRename    Action = "app.rename"
	ActAppActivate  Action = "app.activate"
	ActAppGroups    Action = "app.groups"
	ActGroupCreate  Action = "app.group.create"
	ActGroupAdd     Action = "app.group.add"
	ActGroupRemove  Action = "app.group.remove"
	ActAttributes   Action = "app.attributes"
	ActDeactivate   Action = "app.deactivate"
	ActDelete       Action = "app.delete"
	ActConfigReload Action = "config.reload"
)

// Result is how an audited step ended.
type Result string

const (
	ResultOK      Result = "ok"
	ResultRefused Result = "refused"
	ResultError   Result = "error"
	ResultQueued  Result = "queued"
	// ResultUnbound: a removal named an identity nobody is bound to.
	ResultUnbound Result = "unbound"
	// ResultDryRun: the change was planned, not applied.
	ResultDryRun Result = "dry-run"
	// ResultHeld: an IdP's SCIM brake held a removal back for an admin.
	ResultHeld Result = "held"
	// ResultSkipped: usher left something alone on purpose and says why
	// (a group the organization's IdP sync owns, a profile that is its
	// person's, not the organization's).
	ResultSkipped Result = "skipped"
)

// Entry is one audit record before it is stored.
type Entry struct {
	Action   Action
	Cause    Cause
	IdP      string // defaults to Cause.IdP
	Subject  string
	Username string
	App      string
	Outcome  Result
	// Detail is free text or JSON for the admin; never secrets.
	Detail string
}

// Appender is the store's audit append.
type Appender interface {
	Append(ctx context.Context, events ...store.Event) error
}

// AuditLog is usher's one audit writer: every package that records what
// happened to a person goes through it, so each entry has a typed action,
// a cause and an outcome, and none is lost because the request that
// caused it went away. It is safe for concurrent use.
type AuditLog struct {
	Store Appender
	Log   *slog.Logger
	Now   func() time.Time

	mu       sync.Mutex
	running  bool          // a Run loop writes deferred entries
	deferred []store.Event // waiting for the next batch
	kick     chan struct{} // a full batch is waiting
}

// Batching of deferred entries: a batch is written every deferEvery, or
// as soon as deferBatch entries wait. A crash loses at most that much.
const (
	deferEvery = 200 * time.Millisecond
	deferBatch = 256
)

// auditTimeout bounds one audit write. It runs on a context detached from
// the caller's: a browser that disconnects after its login was admitted
// must not take the login's entry with it.
const auditTimeout = 10 * time.Second

// Record appends entries in one transaction. The write outlives the
// caller's cancellation (bounded by auditTimeout). A failure is logged
// here and returned for callers whose bookkeeping depends on it (a sweep
// keeps its run open); others may ignore it.
func (a *AuditLog) Record(ctx context.Context, entries ...Entry) error {
	if a == nil || len(entries) == 0 {
		return nil
	}
	return a.write(ctx, a.events(entries), entries[0])
}

// Defer queues entries whose loss in a crash harms nothing usher
// decides (the record of a login that changed nothing): a Run loop
// writes them in batches, one transaction for many logins, so that a
// busy morning of sign-ins is not one synchronous disk flush each. A
// crash loses at most the last fraction of a second of them. Decisions
// (provisioning, removals, refusals) always go through Record. Without a
// running Run loop Defer writes at once.
func (a *AuditLog) Defer(ctx context.Context, entries ...Entry) {
	if a == nil || len(entries) == 0 {
		return
	}
	evs := a.events(entries)
	a.mu.Lock()
	if !a.running {
		a.mu.Unlock()
		_ = a.write(ctx, evs, entries[0])
		return
	}
	a.deferred = append(a.deferred, evs...)
	full := len(a.deferred) >= deferBatch
	a.mu.Unlock()
	if full {
		select {
		case a.kick <- struct{}{}:
		default:
		}
	}
}

// Run writes deferred entries until ctx ends, then writes what is left.
func (a *AuditLog) Run(ctx context.Context) {
	a.mu.Lock()
	a.running = true
	if a.kick == nil {
		a.kick = make(chan struct{}, 1)
	}
	kick := a.kick
	a.mu.Unlock()
	t := time.NewTicker(deferEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			a.mu.Lock()
			a.running = false
			a.mu.Unlock()
			a.flush(context.WithoutCancel(ctx))
			return
		case <-t.C:
		case <-kick:
		}
		a.flush(ctx)
	}
}

// Flush writes the deferred entries now.
func (a *AuditLog) Flush(ctx context.Context) { a.flush(ctx) }

// flush writes the deferred entries in one transaction; on failure they
// wait for the next try, bounded so that a long outage cannot grow them
// without end.
func (a *AuditLog) flush(ctx context.Context) {
	a.mu.Lock()
	evs := a.deferred
	a.deferred = nil
	a.mu.Unlock()
	if len(evs) == 0 {
		return
	}
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), auditTimeout)
	defer cancel()
	if err := a.Store.Append(wctx, evs...); err != nil {
		a.log().Error("audit: could not record deferred entries; kept for the next try", "entries", len(evs), "err", err)
		a.mu.Lock()
		if keep := 100_000 - len(a.deferred); keep > 0 {
			a.deferred = append(evs[max(0, len(evs)-keep):], a.deferred...)
		}
		a.mu.Unlock()
	}
}

func (a *AuditLog) log() *slog.Logger {
	if a.Log != nil {
		return a.Log
	}
	return slog.Default()
}

// events turns entries into store events stamped now.
func (a *AuditLog) events(entries []Entry) []store.Event {
	now := time.Now
	if a.Now != nil {
		now = a.Now
	}
	t := now()
	events := make([]store.Event, len(entries))
	for i, e := range entries {
		idp := e.IdP
		if idp == "" {
			idp = e.Cause.IdP
		}
		detail := e.Detail
		if r := e.Cause.String(); detail == "" {
			detail = r
		} else if !isJSON(detail) {
			detail = r + ": " + detail
		}
		events[i] = store.Event{
			Time: t, Action: string(e.Action), IdP: idp, Subject: e.Subject, Username: e.Username,
			App: e.App, Actor: e.Cause.ActorLabel(), Outcome: string(e.Outcome), Detail: detail,
		}
	}
	return events
}

// write appends events in one transaction, outliving the caller's
// cancellation within auditTimeout.
func (a *AuditLog) write(ctx context.Context, events []store.Event, first Entry) error {
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), auditTimeout)
	defer cancel()
	if err := a.Store.Append(wctx, events...); err != nil {
		e := first
		a.log().Error("audit: could not record", "action", string(e.Action), "idp", events[0].IdP,
			"username", e.Username, "app", e.App, "entries", len(events), "err", err)
		return fmt.Errorf("audit %s: %w", e.Action, err)
	}
	return nil
}

// isJSON reports whether detail is a JSON object (an explanation or a
// sweep item), which must stay parseable and so gets no prefix.
func isJSON(detail string) bool { return len(detail) > 1 && detail[0] == '{' }
