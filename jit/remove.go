package jit

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/usherhq/usher/store"
	"github.com/usherhq/usher/targets"
)

// RemoveAction is what taking a person's access away does in an app.
type RemoveAction string

const (
	// Deactivate deactivates the account (Bitbucket: frees the seat).
	Deactivate RemoveAction = "deactivate"
	// RemoveManagedGroups takes away the memberships usher added.
	RemoveManagedGroups RemoveAction = "remove_managed_groups"
	// RemoveLicenceGroup takes away the one group that costs a seat.
	RemoveLicenceGroup RemoveAction = "remove_licence_group"
	// Delete deletes the account, where the app can.
	Delete RemoveAction = "delete"
)

// Removal names a person whose access ends, and how.
type Removal struct {
	IdP, Subject string
	// Apps limits the removal to these apps; nil means every app usher
	// provisioned the person into.
	Apps []string
	// Action defaults to Deactivate.
	Action RemoveAction
	// LicenceGroups names, per app, the group RemoveLicenceGroup takes
	// away.
	LicenceGroups map[string]string
	// DryRun records nothing and changes nothing: the outcomes say what
	// would happen.
	DryRun bool
}

// RemoveOutcome is what a removal did in one app.
type RemoveOutcome struct {
	App      string
	Username string
	// Changed: the app changed now. Queued: the change waits in the
	// retry queue (the decision is recorded, logins are refused
	// meanwhile); with Err also set, the app refused it for a reason
	// other than an outage, and an admin should look. Held: the IdP's
	// SCIM brake held the removal for an admin; nothing was decided.
	Changed, Queued, Held bool
	// Skipped says why nothing was done ("not provisioned there").
	Skipped string
	Err     error
}

// ErrUnbound means a removal named an identity no username is bound to:
// the person never used usher, or the subject a SCIM push or directory
// names does not match the login subject (scim.subject, directory
// subject attribute).
var ErrUnbound = errors.New("no identity is bound to this subject")

// Remove takes a person's access away, in one order for every source
// (SCIM, a directory, a sweep, an admin): first the decision is recorded
// in each app's state, so that from then on every login is refused and a
// retry knows what is wanted; then the person's sessions end on every
// replica; then each app changes, concurrently. A temporary app failure
// queues the change durably and counts as done for the caller. Remove is
// idempotent: a second call with the same cause finishes what the first
// started (a crashed sweep resumes through it).
//
// A login racing a removal never undoes it: a login that changed an app
// checks the decision afterwards and takes back what it changed (see
// Reconciler.Apply), and a removal reads the app after recording it, so
// whichever comes second sees the other.
//
// A SCIM removal (SourceSCIM) passes the IdP's brake first, if it has one
// (see Brake): past the brake's limit nothing is decided; the removal is
// held for an admin, the person's sessions end or not as configured, and
// every outcome says Held; being held is not an error.
func (l *Lifecycle) Remove(ctx context.Context, rm Removal, cause Cause) ([]RemoveOutcome, error) {
	return l.remove(ctx, rm, cause, cause.Source == SourceSCIM)
}

// remove is Remove; braked says whether the IdP's SCIM brake applies (a
// released hold has passed it).
func (l *Lifecycle) remove(ctx context.Context, rm Removal, cause Cause, braked bool) ([]RemoveOutcome, error) {
	if rm.Action == "" {
		rm.Action = Deactivate
	}
	if cause.IdP == "" {
		cause.IdP = rm.IdP
	}
	b, err := l.Store.Binding(ctx, rm.IdP, rm.Subject)
	if errors.Is(err, store.ErrNotFound) {
		l.log().Warn("remove: no identity bound to this subject; nothing to take away in the apps (check the SCIM or directory subject attribute if this is unexpected)",
			"idp", rm.IdP, "subject", rm.Subject, "cause", cause.String())
		if !rm.DryRun {
			l.record(ctx, Entry{Action: ActDeprovision, Cause: cause, Subject: rm.Subject, Outcome: ResultUnbound, Detail: ErrUnbound.Error()})
		}
		return nil, fmt.Errorf("remove %s/%s: %w", rm.IdP, rm.Subject, ErrUnbound)
	}
	if err != nil {
		return nil, fmt.Errorf("remove %s/%s: %w", rm.IdP, rm.Subject, err)
	}
	apps := rm.Apps
	if apps == nil {
		for app := range l.Apps {
			apps = append(apps, app)
		}
	}
	slices.Sort(apps)
	outs := make([]RemoveOutcome, 0, len(apps))
	var states []store.AppState
	for _, app := range apps {
		o := RemoveOutcome{App: app, Username: b.Username}
		st, err := l.Store.AppState(ctx, app, b.Username)
		switch {
		case l.Apps[app] == nil:
			o.Err = fmt.Errorf("remove %s: no such app %s", b.Username, app)
		case errors.Is(err, store.ErrNotFound):
			o.Skipped = "not provisioned in " + app
		case err != nil:
			o.Err = fmt.Errorf("remove %s in %s: read state: %w", b.Username, app, err)
		case rm.Action == Delete && !canDelete(l.Apps[app]):
			o.Err = fmt.Errorf("remove %s: %s cannot delete users", b.Username, app)
		case rm.Action == RemoveLicenceGroup && rm.LicenceGroups[app] == "":
			o.Err = fmt.Errorf("remove %s: no licence group configured for %s", b.Username, app)
		default:
			states = append(states, st)
		}
		outs = append(outs, o)
	}
	if rm.DryRun {
		return outs, errors.Join(outcomeErrs(outs)...)
	}
	// The brake weighs only removals that change an app: a push about a
	// person usher never provisioned, or already removed everywhere (a
	// delete after a deactivation), takes nothing and passes uncounted.
	if braked && slices.ContainsFunc(states, func(st store.AppState) bool { return !st.Deprovisioned }) {
		h, err := l.holdBack(ctx, rm, b, cause)
		if err != nil {
			return nil, err
		}
		if h != nil {
			for i := range outs {
				outs[i].Held = true
				if outs[i].Skipped == "" && outs[i].Err == nil {
					outs[i].Skipped = "held by the SCIM brake of " + rm.IdP
				}
			}
			return outs, errors.Join(outcomeErrs(outs)...)
		}
	}

	// 1. The decision, first.
	for i := range states {
		st := &states[i]
		if st.Deprovisioned {
			continue // an earlier decision stands; the action below is idempotent
		}
		st.Deprovisioned, st.DeprovisionedAt = true, l.now()
		st.DeprovisionedSource, st.DeprovisionedActor, st.DeprovisionedRun = string(cause.Source), cause.Actor, cause.Run
		st.DeprovisionedAction, st.DeprovisionedReason = string(rm.Action), cause.Reason
		st.Hash = "" // a later reinstatement must run in full
		if err := l.Store.PutAppState(ctx, *st); err != nil {
			// Nothing has changed in any app yet: fail as a whole.
			return nil, fmt.Errorf("remove %s in %s: record decision: %w", b.Username, st.App, err)
		}
	}
	l.record(ctx, Entry{Action: ActDeprovision, Cause: cause, Subject: rm.Subject, Username: b.Username, Outcome: ResultOK, Detail: string(rm.Action)})
	// The decision is made: what follows runs to the end even if the
	// caller is cancelled (a shutdown, a browser gone), within a bound.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), removeTimeout)
	defer cancel()

	// 2. Sessions, everywhere (see revoke).
	l.revoke(ctx, rm.IdP, rm.Subject, b.Username, cause)

	// 3. The apps.
	rec := l.rec()
	var wg sync.WaitGroup
	for _, st := range states {
		i := slices.IndexFunc(outs, func(o RemoveOutcome) bool { return o.App == st.App })
		job := removeJob{App: st.App, IdP: rm.IdP, Subject: rm.Subject, Username: b.Username, Action: rm.Action,
			LicenceGroup: rm.LicenceGroups[st.App], Cause: cause}
		wg.Add(1)
		go func() {
			defer wg.Done()
			outs[i] = rec.takeAway(ctx, job)
		}()
	}
	wg.Wait()
	return outs, errors.Join(outcomeErrs(outs)...)
}

// removeTimeout bounds what a removal does after recording its decision:
// revoking and the app calls (each app call has its own, shorter
// timeouts and retries).
const removeTimeout = 2 * time.Minute

func outcomeErrs(outs []RemoveOutcome) []error {
	var errs []error
	for _, o := range outs {
		if o.Err != nil {
			errs = append(errs, o.Err)
		}
	}
	return errs
}

func canDelete(t targets.Target) bool {
	_, ok := t.(targets.Deleter)
	return ok
}

// removeJob is one app's part of a removal, also as the retry queue
// keeps it.
type removeJob struct {
	App          string       `json:"app"`
	IdP          string       `json:"idp"`
	Subject      string       `json:"subject"`
	Username     string       `json:"username"`
	Action       RemoveAction `json:"action"`
	LicenceGroup string       `json:"licence_group,omitempty"`
	Cause        Cause        `json:"cause"`
	// Reason and Actor are how a previous version described the cause
	// of queued deactivations; read only.
	Reason string `json:"reason,omitempty"`
	Actor  string `json:"actor,omitempty"`
}

// takeAway applies a recorded removal to one app. A failure queues the
// change durably, so the decision reaches the app when it can take it,
// unless the decision is withdrawn meanwhile. A temporary failure (the
// app is down) is not an error of the removal; any other failure is
// returned as well, for an admin to look at, while the queue keeps
// trying.
func (r *Reconciler) takeAway(ctx context.Context, j removeJob) RemoveOutcome {
	o := RemoveOutcome{App: j.App, Username: j.Username}
	changed, err := r.act(ctx, j)
	switch {
	case err == nil:
		o.Changed = changed
		return o
	case errors.Is(err, targets.ErrNotFound):
		o.Skipped = "no account in " + j.App
		return o
	}
	if !targets.IsTemporary(err) {
		o.Err = err
	}
	payload, merr := json.Marshal(j)
	if merr == nil {
		_, merr = r.Store.Enqueue(ctx, store.Job{Kind: jobRemove, App: j.App, Key: j.Username, Payload: payload, NotBefore: r.now()})
	}
	if merr != nil {
		o.Err = fmt.Errorf("%w (and queueing failed: %v)", err, merr) // act's error names the app and user
		r.auditRemove(ctx, j, ResultError, o.Err.Error())
		return o
	}
	o.Queued = true
	r.log().Warn("removal queued for retry", "app", j.App, "idp", j.IdP, "subject", j.Subject, "username", j.Username,
		"action", string(j.Action), "cause", j.Cause.String(), "err", err)
	if o.Err != nil {
		r.auditRemove(ctx, j, ResultError, err.Error()+" (queued for retry)")
	} else {
		r.auditRemove(ctx, j, ResultQueued, err.Error())
	}
	return o
}

// act makes the change; changed reports whether the app changed.
func (r *Reconciler) act(ctx context.Context, j removeJob) (changed bool, err error) {
	t := r.Apps[j.App]
	if t == nil {
		return false, fmt.Errorf("remove %s: no such app %s", j.Username, j.App)
	}
	switch j.Action {
	case Deactivate, "":
		if dv, ok := t.(targets.Deactivator); ok {
			return r.deactivate(ctx, t, dv, j)
		}
		if sh, ok := t.(targets.SeatHolder); ok {
			return r.freeSeat(ctx, t, sh, j)
		}
		u, err := t.GetUser(ctx, j.Username)
		if err != nil || !u.Active {
			return false, err
		}
		if err := t.SetActive(ctx, j.Username, false); err != nil {
			return false, err
		}
		r.auditRemove(ctx, j, ResultOK, "deactivated "+j.Username)
		return true, nil
	case RemoveManagedGroups:
		ms, err := r.Store.Managed(ctx, j.App, j.Username)
		if err != nil {
			return false, fmt.Errorf("remove %s in %s: read managed groups: %w", j.Username, j.App, err)
		}
		var groups []string
		for _, m := range ms {
			// A group gone, or now owned by the organization's IdP sync
			// (Atlassian Cloud), is no longer usher's: forget it.
			if err := t.RemoveFromGroup(ctx, j.Username, m.Group); err != nil && !errors.Is(err, targets.ErrGroupNotFound) && !errors.Is(err, targets.ErrGroupReadOnly) {
				return len(groups) > 0, err
			}
			groups = append(groups, m.Group)
		}
		if len(groups) == 0 {
			return false, nil
		}
		if err := r.Store.RemoveManaged(ctx, j.App, j.Username, groups...); err != nil {
			return true, fmt.Errorf("remove %s in %s: forget managed groups: %w", j.Username, j.App, err)
		}
		r.auditRemove(ctx, j, ResultOK, "removed from "+strings.Join(groups, ", "))
		return true, nil
	case RemoveLicenceGroup:
		if j.LicenceGroup == "" {
			return false, fmt.Errorf("remove %s: no licence group configured for %s", j.Username, j.App)
		}
		err := t.RemoveFromGroup(ctx, j.Username, j.LicenceGroup)
		if errors.Is(err, targets.ErrGroupNotFound) {
			return false, nil
		}
		if err != nil {
			return false, err
		}
		if err := r.Store.RemoveManaged(ctx, j.App, j.Username, j.LicenceGroup); err != nil {
			return true, fmt.Errorf("remove %s in %s: forget managed %s: %w", j.Username, j.App, j.LicenceGroup, err)
		}
		r.auditRemove(ctx, j, ResultOK, "removed from "+j.LicenceGroup)
		return true, nil
	case Delete:
		d, ok := t.(targets.Deleter)
		if !ok {
			return false, fmt.Errorf("remove %s: %s cannot delete users", j.Username, j.App)
		}
		if err := d.DeleteUser(ctx, j.Username); err != nil {
			return false, err
		}
		r.auditRemove(ctx, j, ResultOK, "deleted "+j.Username)
		return true, nil
	}
	return false, fmt.Errorf("remove %s in %s: unknown action %q", j.Username, j.App, j.Action)
}

// deactivate is Deactivate for apps where deactivating means more than
// one thing (Atlassian Cloud): the app says which it did, and that goes
// into the audit entry. When the account stays usable outside the app
// (an unmanaged Cloud account), the memberships usher manages go too.
func (r *Reconciler) deactivate(ctx context.Context, t targets.Target, dv targets.Deactivator, j removeJob) (bool, error) {
	d, err := dv.Deactivate(ctx, j.Username)
	if err != nil {
		return false, err
	}
	if d.Changed {
		r.auditRemove(ctx, j, ResultOK, d.Done)
	}
	if !d.RemoveManagedGroups {
		return d.Changed, nil
	}
	ms, err := r.Store.Managed(ctx, j.App, j.Username)
	if err != nil {
		return d.Changed, fmt.Errorf("remove %s in %s: read managed groups: %w", j.Username, j.App, err)
	}
	changed := d.Changed
	record := func(outcome Result, detail string) {
		_ = r.Audit.Record(ctx, Entry{Action: ActGroupRemove, Cause: j.cause(), IdP: j.IdP, Subject: j.Subject,
			Username: j.Username, App: j.App, Outcome: outcome, Detail: detail})
	}
	for _, m := range ms {
		err := t.RemoveFromGroup(ctx, j.Username, m.Group)
		switch {
		case errors.Is(err, targets.ErrGroupReadOnly), errors.Is(err, targets.ErrGroupNotFound):
			record(ResultSkipped, fmt.Sprintf("left %s alone: %v", m.Group, err))
		case err != nil:
			return changed, err
		default:
			changed = true
			record(ResultOK, "removed from "+m.Group+": the account stays usable outside "+j.App)
		}
		if err := r.Store.RemoveManaged(ctx, j.App, j.Username, m.Group); err != nil {
			return changed, fmt.Errorf("remove %s in %s: forget managed %s: %w", j.Username, j.App, m.Group, err)
		}
	}
	return changed, nil
}

// SeatRelease is what deactivating does to a seat that comes through
// group memberships (targets.SeatHolder, Bitbucket).
type SeatRelease struct {
	// Freed are what the deactivation takes away that grants a seat: the
	// app's own licence groups, the other seat-granting groups whose
	// membership usher manages, and "direct <PERMISSION>" for a
	// permission held directly.
	Freed []string
	// Kept are the seat-granting groups it leaves: memberships given by
	// hand, outside the app's licence groups. usher removes only what it
	// added, so while any is left the person keeps the seat.
	Kept []string
	// managed are those of Freed that the caller removes itself (the app
	// takes Released and the direct permission away on SetActive(false)).
	managed []string
}

// ReleaseSeat says what deactivating frees of seat, given the
// memberships usher manages for the person in that app. The sweep's plan
// shows it; Remove does it.
func ReleaseSeat(seat targets.Seat, managed []store.Membership) SeatRelease {
	var r SeatRelease
	for _, g := range seat.Groups {
		switch {
		case slices.ContainsFunc(seat.Released, func(x string) bool { return strings.EqualFold(x, g) }):
			r.Freed = append(r.Freed, g)
		case slices.ContainsFunc(managed, func(m store.Membership) bool { return strings.EqualFold(m.Group, g) }):
			r.Freed = append(r.Freed, g)
			r.managed = append(r.managed, g)
		default:
			r.Kept = append(r.Kept, g)
		}
	}
	if seat.Direct != "" {
		r.Freed = append(r.Freed, "direct "+seat.Direct)
	}
	return r
}

// freeSeat is Deactivate in an app without an account switch, where the
// seat comes through groups (Bitbucket): SetActive(false) takes away the
// licence groups and a direct permission, then the memberships usher
// manages in other seat-granting groups go too. Memberships given by hand
// stay, and with them the seat: the audit says so, for an admin to
// decide. Idempotent: a person holding no seat is left alone.
func (r *Reconciler) freeSeat(ctx context.Context, t targets.Target, sh targets.SeatHolder, j removeJob) (bool, error) {
	seat, err := sh.Seat(ctx, j.Username)
	if err != nil {
		return false, err
	}
	if len(seat.Groups) == 0 && seat.Direct == "" {
		return false, nil
	}
	ms, err := r.Store.Managed(ctx, j.App, j.Username)
	if err != nil {
		return false, fmt.Errorf("remove %s in %s: read managed groups: %w", j.Username, j.App, err)
	}
	rel := ReleaseSeat(seat, ms)
	changed := false
	if len(seat.Released) > 0 || seat.Direct != "" {
		if err := t.SetActive(ctx, j.Username, false); err != nil {
			return false, err
		}
		changed = true
	}
	for _, g := range rel.managed {
		if err := t.RemoveFromGroup(ctx, j.Username, g); err != nil && !errors.Is(err, targets.ErrGroupNotFound) {
			return changed, err
		}
		changed = true
	}
	// The licence groups usher added are gone as well: forget them all.
	var forget []string
	for _, m := range ms {
		if slices.ContainsFunc(rel.Freed, func(g string) bool { return strings.EqualFold(g, m.Group) }) {
			forget = append(forget, m.Group)
		}
	}
	if len(forget) > 0 {
		if err := r.Store.RemoveManaged(ctx, j.App, j.Username, forget...); err != nil {
			return changed, fmt.Errorf("remove %s in %s: forget managed groups: %w", j.Username, j.App, err)
		}
	}
	if changed {
		r.auditRemove(ctx, j, ResultOK, "freed the seat of "+j.Username+": took away "+strings.Join(rel.Freed, ", "))
	}
	if len(rel.Kept) > 0 {
		r.auditRemove(ctx, j, ResultSkipped, fmt.Sprintf("%s keeps a seat through %s: given by hand and not in licence_groups, so not usher's to remove",
			j.Username, strings.Join(rel.Kept, ", ")))
	}
	return changed, nil
}

// removeActions are the audit actions of the removal actions.
var removeActions = map[RemoveAction]Action{
	Deactivate: ActDeactivate, "": ActDeactivate, Delete: ActDelete,
	RemoveManagedGroups: ActGroupRemove, RemoveLicenceGroup: ActGroupRemove,
}

func (r *Reconciler) auditRemove(ctx context.Context, j removeJob, outcome Result, detail string) {
	_ = r.Audit.Record(ctx, Entry{Action: removeActions[j.Action], Cause: j.cause(), IdP: j.IdP, Subject: j.Subject,
		Username: j.Username, App: j.App, Outcome: outcome, Detail: detail})
}

func (j removeJob) cause() Cause {
	if j.Cause.Source != "" {
		return j.Cause
	}
	src, actor, _ := strings.Cut(j.Actor, ":")
	return Cause{Source: Source(src), Actor: actor, IdP: j.IdP, Reason: j.Reason}
}

// Reinstate withdraws the removal of a person in every app (an admin's
// decision, or an IdP saying the person is back) and applies their last
// recorded profile, which reactivates them. Only decisions of the source
// given are withdrawn: an IdP's SCIM push that says "active" does not undo
// a sweep's or an admin's decision. An admin (SourceAdmin) withdraws any,
// and always re-applies the profile; another source re-applies it only
// when it withdrew something, so that an "active" push about a person
// nobody removed costs no app call.
func (l *Lifecycle) Reinstate(ctx context.Context, idp, subject string, cause Cause) ([]Outcome, error) {
	if cause.IdP == "" {
		cause.IdP = idp
	}
	b, err := l.Store.Binding(ctx, idp, subject)
	if errors.Is(err, store.ErrNotFound) {
		return nil, fmt.Errorf("reinstate %s/%s: %w", idp, subject, ErrUnbound)
	}
	if err != nil {
		return nil, fmt.Errorf("reinstate %s/%s: %w", idp, subject, err)
	}
	n, err := l.reinstate(ctx, cause, cause.Source, b.Username)
	if err != nil {
		return nil, err
	}
	if n == 0 && cause.Source != SourceAdmin {
		return nil, nil
	}
	return l.Sync(ctx, idp, subject, cause)
}

// reinstate clears the marks the source set under each username given
// (the current one and, after a rename, the previous one); for a
// directory, only that directory's own (cause.Actor). An admin clears
// any. The next reconcile reactivates. It returns how many it cleared.
func (l *Lifecycle) reinstate(ctx context.Context, cause Cause, src Source, names ...string) (int, error) {
	n := 0
	for app := range l.Apps {
		for _, username := range usernames(names...) {
			st, err := l.Store.AppState(ctx, app, username)
			if errors.Is(err, store.ErrNotFound) || err == nil && !st.Deprovisioned {
				continue
			}
			if err != nil {
				return n, fmt.Errorf("reinstate %s in %s: %w", username, app, err)
			}
			if src != SourceAdmin && (Source(st.DeprovisionedSource) != src || src == SourceDirectory && st.DeprovisionedActor != cause.Actor) {
				continue
			}
			was := fmt.Sprintf("removed by %s", Cause{Source: Source(st.DeprovisionedSource), Actor: st.DeprovisionedActor, Run: st.DeprovisionedRun, Reason: st.DeprovisionedReason})
			st.Deprovisioned, st.DeprovisionedAt, st.Hash = false, time.Time{}, ""
			st.DeprovisionedSource, st.DeprovisionedActor, st.DeprovisionedRun, st.DeprovisionedAction, st.DeprovisionedReason = "", "", 0, "", ""
			if err := l.Store.PutAppState(ctx, st); err != nil {
				return n, fmt.Errorf("reinstate %s in %s: %w", username, app, err)
			}
			n++
			l.record(ctx, Entry{Action: ActReinstate, Cause: cause, IdP: st.IdP, Subject: st.Subject, Username: username, App: app,
				Outcome: ResultOK, Detail: was})
		}
	}
	return n, nil
}
