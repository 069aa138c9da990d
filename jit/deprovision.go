package jit

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/usherhq/usher/store"
	"github.com/usherhq/usher/targets"
)

// Leaver names a person to take out of one app.
type Leaver struct {
	App      string `json:"app"`
	IdP      string `json:"idp"`
	Subject  string `json:"subject"`
	Username string `json:"username"`
	Reason   string `json:"reason"` // "scim: deactivated", "sweep leavers: inactive 90 days"
	Actor    string `json:"actor"`  // "scim", "sweep:leavers", "admin:alice"
}

// Deactivate deactivates the person in the app (for Bitbucket: frees the
// seat) and marks the app state deprovisioned, so that a later login does
// not bring them back until an IdP or an admin reactivates them. It is
// idempotent. A temporary app failure queues the deactivation durably and
// returns nil: the person is still refused at usher (their sessions are
// revoked by the caller), and the app follows when it is back.
func (r *Reconciler) Deactivate(ctx context.Context, l Leaver) error {
	err := r.deactivate(ctx, l, false)
	if err != nil && targets.IsTemporary(err) {
		payload, merr := json.Marshal(l)
		if merr == nil {
			_, merr = r.Store.Enqueue(ctx, store.Job{Kind: "deprovision", App: l.App, Key: l.Username, Payload: payload, NotBefore: r.now()})
		}
		if merr != nil {
			return fmt.Errorf("deactivate %s in %s: %w (and queueing failed: %v)", l.Username, l.App, err, merr)
		}
		r.auditLeaver(ctx, l, "app.deactivate", "queued", err.Error())
		return nil
	}
	return err
}

// deactivate records the decision first (from then on logins are refused
// and a retry knows it is wanted), then changes the app. A queued retry
// (fromQueue) that finds the mark cleared does nothing: the IdP brought
// the person back after the job was queued.
func (r *Reconciler) deactivate(ctx context.Context, l Leaver, fromQueue bool) error {
	dir := r.Apps[l.App]
	if dir == nil {
		return fmt.Errorf("deactivate %s: no such app %s", l.Username, l.App)
	}
	st, err := r.Store.AppState(ctx, l.App, l.Username)
	switch {
	case errors.Is(err, store.ErrNotFound):
		st = store.AppState{App: l.App, Username: l.Username, IdP: l.IdP, Subject: l.Subject}
	case err != nil:
		return fmt.Errorf("deactivate %s in %s: read state: %w", l.Username, l.App, err)
	case fromQueue && !st.Deprovisioned:
		return nil
	}
	if !st.Deprovisioned {
		st.Deprovisioned, st.DeprovisionedAt, st.DeprovisionedReason = true, r.now(), l.Reason
		st.Hash = "" // a later reactivation must run in full
		if err := r.Store.PutAppState(ctx, st); err != nil {
			return fmt.Errorf("deactivate %s in %s: save state: %w", l.Username, l.App, err)
		}
	}
	u, err := dir.GetUser(ctx, l.Username)
	switch {
	case errors.Is(err, targets.ErrNotFound):
		// Nothing to deactivate in the app; the decision is recorded.
	case err != nil:
		return err
	case u.Active:
		if err := dir.SetActive(ctx, l.Username, false); err != nil {
			r.auditLeaver(ctx, l, "app.deactivate", "error", err.Error())
			return err
		}
		r.auditLeaver(ctx, l, "app.deactivate", "ok", "deactivated "+l.Username)
	}
	return nil
}

// Reinstate clears the deprovisioned mark of a person in every app, when
// the IdP says they are back (SCIM active again), under each of the
// usernames given (the current one and, after a rename, the previous one).
// Only marks SCIM set are cleared: a push of an active user must not undo
// a sweep's or an admin's decision. The next reconcile reactivates them.
func (r *Reconciler) Reinstate(ctx context.Context, why string, usernames ...string) error {
	for app := range r.Apps {
		for _, username := range usernames {
			if username == "" {
				continue
			}
			if err := r.reinstate(ctx, app, username, why); err != nil {
				return err
			}
		}
	}
	return nil
}

func (r *Reconciler) reinstate(ctx context.Context, app, username, why string) error {
	st, err := r.Store.AppState(ctx, app, username)
	if errors.Is(err, store.ErrNotFound) || (err == nil && (!st.Deprovisioned || !strings.HasPrefix(st.DeprovisionedReason, "scim:"))) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("reinstate %s in %s: %w", username, app, err)
	}
	st.Deprovisioned, st.DeprovisionedReason, st.Hash = false, "", ""
	if err := r.Store.PutAppState(ctx, st); err != nil {
		return fmt.Errorf("reinstate %s in %s: %w", username, app, err)
	}
	r.auditLeaver(ctx, Leaver{App: app, IdP: st.IdP, Subject: st.Subject, Username: username, Reason: why, Actor: "scim"}, "app.reinstate", "ok", why)
	return nil
}

func (r *Reconciler) auditLeaver(ctx context.Context, l Leaver, action, outcome, detail string) {
	e := store.Event{
		Time: r.now(), Action: action, IdP: l.IdP, Subject: l.Subject, Username: l.Username,
		App: l.App, Actor: l.Actor, Outcome: outcome, Detail: l.Reason + ": " + detail,
	}
	if err := r.Store.Append(context.WithoutCancel(ctx), e); err != nil {
		r.log().Error("audit", "action", action, "app", l.App, "username", l.Username, "err", err)
	}
}
