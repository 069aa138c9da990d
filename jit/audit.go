package jit

import (
	"context"
	"fmt"
	"log/slog"
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
	ActDeprovision  Action = "deprovision" // usher took a person's access away
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
}

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
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), auditTimeout)
	defer cancel()
	if err := a.Store.Append(wctx, events...); err != nil {
		log := a.Log
		if log == nil {
			log = slog.Default()
		}
		e := entries[0]
		log.Error("audit: could not record", "action", string(e.Action), "idp", events[0].IdP,
			"username", e.Username, "app", e.App, "entries", len(entries), "err", err)
		return fmt.Errorf("audit %s: %w", e.Action, err)
	}
	return nil
}

// isJSON reports whether detail is a JSON object (an explanation or a
// sweep item), which must stay parseable and so gets no prefix.
func isJSON(detail string) bool { return len(detail) > 1 && detail[0] == '{' }
