package jit

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/usherhq/usher/config"
	"github.com/usherhq/usher/store"
	"github.com/usherhq/usher/targets"
)

// Desired is what one app should hold for one person: the part of a
// Profile that concerns that app. It is self-contained, so a queued retry
// needs neither the IdP's claims nor the mapping that produced it.
type Desired struct {
	App          string            `json:"app"`
	IdP          string            `json:"idp"`
	Subject      string            `json:"subject"`
	Username     string            `json:"username"`
	PrevUsername string            `json:"prev_username,omitempty"` // a rename at the IdP
	Email        string            `json:"email"`
	DisplayName  string            `json:"display_name"`
	Attributes   map[string]string `json:"attributes,omitempty"`
	Groups       []Grant           `json:"groups"`
	Sync         string            `json:"sync"`
	Hash         string            `json:"hash"`
	// Adoption is the IdP's policy for an app account of this username
	// that exists but that usher never provisioned (config.Adopt*; ""
	// means verified_email).
	Adoption string `json:"adoption,omitempty"`
	Cause    Cause  `json:"cause"`
	// Why is the cause as a previous version wrote it into queued jobs;
	// read only, so those jobs still say where they came from.
	Why string `json:"why,omitempty"`
	// prior is the desired state recorded for this app before this one,
	// when there was one. If its hash is the app state's, it is what
	// usher last applied: the only word on the e-mail in an app that does
	// not report it (Confluence). Queued jobs go without it.
	prior *Desired
}

// cause is d's cause, also for jobs a previous version queued.
func (d Desired) cause() Cause {
	if d.Cause.Source == "" {
		return Cause{Source: SourceRetry, IdP: d.IdP, Reason: d.Why}
	}
	return d.Cause
}

// DesiredFor extracts app's desired state from a profile.
func DesiredFor(p *Profile, app string, cause Cause) Desired {
	ap := p.Apps[app]
	d := Desired{
		App: app, IdP: p.IdP, Subject: p.Subject, Username: p.Username,
		Email: p.Email, DisplayName: p.DisplayName, Attributes: p.Attributes,
		Hash: p.Hash(app), Cause: cause, Sync: SyncFull, Adoption: p.Adoption,
	}
	if ap != nil {
		d.Groups, d.Sync = ap.Groups, ap.Sync
	}
	return d
}

// Reconciler makes apps match desired states with the fewest calls: it
// reads the actual user and groups, writes only differences, and records
// each change as an audit event. It is the Lifecycle's engine; nothing
// else drives it. It is safe for concurrent use.
type Reconciler struct {
	Apps  map[string]targets.Target
	Store store.Provisioning
	Audit *AuditLog
	Log   *slog.Logger
	Now   func() time.Time
	// FastPath is how long an applied profile counts as fresh: a login
	// whose profile hash matches within it makes no app call. Zero
	// disables the fast path.
	FastPath time.Duration
	// CreateGroups creates a mapped group that does not exist yet.
	CreateGroups bool
	// Deadline bounds one admission's work in one app (all of its calls
	// and retries); past it the app counts as down for this admission.
	// Zero means no bound beyond the caller's.
	Deadline time.Duration

	applying *keyLocks // shared by the lifecycle's reconcilers; nil locks nothing
	// Owner names this replica in the intents it records before an
	// admission's app calls; "" records none.
	Owner string
}

// Outcome is what reconcile did for one app.
type Outcome struct {
	App     string
	Skipped string   // "fast path", "deprovisioned", "" when it ran
	Changes []string // human summaries, e.g. "added to jira-users"
	Queued  bool     // a temporary failure was put on the retry queue
	// Known says usher had provisioned the person into this app before.
	Known bool
	Err   error
}

// ErrDeprovisioned means the person was deprovisioned by policy in an app
// and a login does not bring them back.
var ErrDeprovisioned = errors.New("deprovisioned by policy")

// ErrAdoptionRefused means an app account of the person's username exists
// that usher never provisioned, and the IdP's adoption policy does not let
// this person take it over.
var ErrAdoptionRefused = errors.New("adoption of an existing account refused")

// adoptable applies an adoption policy to an existing app account u for a
// person whose verified e-mail is email; why says what stopped it.
func adoptable(policy, email string, u *targets.User) (ok bool, why string) {
	switch {
	case policy == config.AdoptAlways:
		return true, ""
	case policy == config.AdoptNever:
		return false, "the IdP may not adopt existing accounts"
	case email == "":
		return false, "the IdP sent no verified e-mail to compare"
	case u.EmailUnknown:
		return false, "the app does not tell the account's e-mail"
	case !strings.EqualFold(strings.TrimSpace(u.Email), email):
		return false, "the account's e-mail differs from the IdP's verified e-mail"
	}
	return true, ""
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// queuePolicy says which temporary app failures go to the retry queue
// instead of failing the admission.
type queuePolicy int

const (
	// queueNever: a new person at login; nothing is queued, the login
	// fails with the clear page.
	queueNever queuePolicy = iota
	// queueKnown: a person the failing app already knows gets in with
	// the change queued; an app that does not know them fails the login,
	// since it would refuse them.
	queueKnown
	// queueAlways: no one is waiting (SCIM, directory sync); every
	// change is queued and nothing is lost.
	queueAlways
)

// provision reconciles every app of the profile concurrently, so an
// admission waits for the slowest app, not the sum.
// rec is what the store recorded of the person when the admission began
// (Provisioning.Recorded); it spares record its read, and tells which
// apps hold this very profile already (the fast path): those need no
// lock, no read of their own and no goroutine.
func (r *Reconciler) provision(ctx context.Context, p *Profile, prevUsername string, cause Cause, queue queuePolicy, rec *store.Recorded) ([]Outcome, error) {
	desired, prior, states, err := r.record(ctx, p, rec)
	if err != nil {
		return nil, err
	}
	apps := r.appsOf(p)
	out := make([]Outcome, len(apps))
	var wg sync.WaitGroup
	for i, app := range apps {
		d := desired[app]
		d.Cause = cause
		if st, ok := states[app]; ok && r.fresh(st, d) { // false when FastPath is 0
			out[i] = Outcome{App: app, Skipped: "fast path", Known: true}
			continue
		}
		d.PrevUsername = prevUsername
		if pd, ok := prior[app]; ok {
			d.prior = &pd
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			actx, cancel := ctx, context.CancelFunc(func() {})
			if r.Deadline > 0 {
				actx, cancel = context.WithTimeout(ctx, r.Deadline)
			}
			var it intent
			out[i] = r.apply(actx, d, true, func() error { return it.record(ctx, r, d) })
			cancel()
			// An app that did not answer within the deadline counts as
			// down: its change waits in the queue, as for an outage.
			late := ctx.Err() == nil && errors.Is(out[i].Err, context.DeadlineExceeded)
			queueIt := out[i].Err != nil && (targets.IsTemporary(out[i].Err) || late) && (queue == queueAlways || queue == queueKnown && out[i].Known)
			out[i].Queued = it.resolve(ctx, r, d, out[i].Err, queueIt)
		}()
	}
	wg.Wait()
	var errs []error
	for _, o := range out {
		if o.Err != nil && !o.Queued && !errors.Is(o.Err, ErrDeprovisioned) {
			errs = append(errs, o.Err)
		}
	}
	return out, errors.Join(errs...)
}

// intent is an admission's change to one app, recorded before the first
// app call: a crash (kill -9, a lost host) in the middle leaves it in the
// queue, where any replica finishes it, at once when the dead process's
// heartbeat runs out, at the latest when its lease does.
type intent struct{ id int64 }

// intentLease is how long an intent stays its owner's before others may
// take it: longer than an admission may spend in an app.
func (r *Reconciler) intentLease() time.Duration {
	if r.Deadline > 0 {
		return r.Deadline + 30*time.Second
	}
	return 2 * time.Minute
}

func (it *intent) record(ctx context.Context, r *Reconciler, d Desired) error {
	if r.Owner == "" {
		return nil // no replica name, no intents (tests of the reconciler alone)
	}
	payload, err := json.Marshal(d)
	if err != nil {
		return fmt.Errorf("reconcile %s for %s: %w", d.App, d.Username, err)
	}
	id, err := r.Store.Intend(ctx, store.Job{Kind: jobReconcile, App: d.App, Key: d.Username, Payload: payload, NotBefore: r.now()},
		r.Owner, r.intentLease())
	if err != nil {
		return fmt.Errorf("reconcile %s for %s: record the change before making it: %w", d.App, d.Username, err)
	}
	it.id = id
	return nil
}

// resolve ends the intent: a change that landed (or that failed for
// good, or that a new person's failed login leaves to their next try) is
// done; one the app could not take now stays queued. It reports whether
// the change is queued.
func (it *intent) resolve(ctx context.Context, r *Reconciler, d Desired, err error, queueIt bool) bool {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), takeBackTimeout)
	defer cancel()
	switch {
	case it.id == 0 && queueIt:
		return r.enqueue(ctx, d, err)
	case it.id == 0:
		return false
	case queueIt:
		if rerr := r.Store.Retry(ctx, it.id, r.Owner, r.now(), err.Error()); rerr != nil {
			r.log().Error("queue provisioning retry", "app", d.App, "username", d.Username, "err", rerr, "cause", err)
			return false
		}
		r.queued(ctx, d, err)
		return true
	}
	if cerr := r.Store.Complete(ctx, it.id, r.Owner); cerr != nil && !errors.Is(cerr, store.ErrNotFound) {
		// The queue keeps the intent; the worker applies it again, which
		// changes nothing that landed.
		r.log().Warn("close the record of a change", "app", d.App, "username", d.Username, "err", cerr)
	}
	return false
}

func (r *Reconciler) enqueue(ctx context.Context, d Desired, cause error) bool {
	payload, err := json.Marshal(d)
	if err == nil {
		_, err = r.Store.Enqueue(ctx, store.Job{Kind: jobReconcile, App: d.App, Key: d.Username, Payload: payload, NotBefore: r.now()})
	}
	if err != nil {
		r.log().Error("queue provisioning retry", "app", d.App, "username", d.Username, "err", err, "cause", cause)
		return false
	}
	r.queued(ctx, d, cause)
	return true
}

// queued audits and logs a change put on the retry queue.
func (r *Reconciler) queued(ctx context.Context, d Desired, cause error) {
	r.audit(ctx, d, ActQueue, ResultQueued, cause.Error())
	r.log().Warn("app unreachable: change queued for retry", "app", d.App, "idp", d.IdP, "subject", d.Subject,
		"username", d.Username, "cause", d.Cause.String(), "err", cause)
}

func (r *Reconciler) now() time.Time {
	if r.Now != nil {
		return r.Now()
	}
	return time.Now()
}

func (r *Reconciler) log() *slog.Logger {
	if r.Log != nil {
		return r.Log
	}
	return slog.Default()
}

// fresh reports whether st holds d's profile, applied within FastPath:
// the fast path, on which a login asks the app nothing.
func (r *Reconciler) fresh(st store.AppState, d Desired) bool {
	return r.FastPath > 0 && !st.Deprovisioned && st.Hash == d.Hash && r.now().Sub(st.SyncedAt) < r.FastPath
}

// Apply makes one app match d. With fast set, an unchanged recent profile
// is skipped without any app call. Apply is idempotent: it re-reads the
// actual state first, so a retry after a crash or an outage never applies
// a change twice.
func (r *Reconciler) Apply(ctx context.Context, d Desired, fast bool) Outcome {
	return r.apply(ctx, d, fast, nil)
}

// apply is Apply; before, when set, runs just before the run's first
// change to the app (never on the fast path, for a removed person, or
// when the app turns out to hold the profile already), and its error
// stops the run before that change.
func (r *Reconciler) apply(ctx context.Context, d Desired, fast bool, before func() error) Outcome {
	if r.applying != nil {
		// A second login of the same person waits for the first and then,
		// finding the profile applied, takes the fast path.
		defer r.applying.lock(d.App + "\x00" + strings.ToLower(d.Username))()
	}
	o := Outcome{App: d.App}
	dir := r.Apps[d.App]
	if dir == nil {
		o.Err = fmt.Errorf("reconcile %s: no such app", d.App)
		return o
	}
	st, err := r.Store.AppState(ctx, d.App, d.Username)
	if errors.Is(err, store.ErrNotFound) && d.PrevUsername != "" {
		// A rename at the IdP: the state, and with it a deprovisioned
		// mark, follows the person to the new name.
		if prev, perr := r.Store.AppState(ctx, d.App, d.PrevUsername); perr == nil {
			st, err = prev, nil
			st.Username = d.Username
		}
	}
	switch {
	case errors.Is(err, store.ErrNotFound):
		st = store.AppState{App: d.App, Username: d.Username}
	case err != nil:
		o.Err = fmt.Errorf("reconcile %s for %s: read state: %w", d.App, d.Username, err)
		return o
	default:
		o.Known = true
	}
	if st.Deprovisioned {
		o.Skipped, o.Err = "deprovisioned", fmt.Errorf("%s: %s: %w (%s)", d.App, d.Username, ErrDeprovisioned, st.DeprovisionedReason)
		return o
	}
	if fast && r.fresh(st, d) {
		o.Skipped = "fast path"
		return o
	}
	a := applier{r: r, dir: dir, d: d, o: &o, applied: st.Hash, before: before}
	err = a.run(ctx)
	// What follows records what the run did: it must not be cut short by
	// the deadline or a client that left, which may be why the run ended.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), takeBackTimeout)
	defer cancel()
	// A removal decided while this ran wins. It records its decision
	// before it changes the app, and this checks after changing it, so
	// either the removal read the app after these changes (and undid
	// them) or this sees the decision and takes its own changes back.
	cur, cerr := r.Store.AppState(ctx, d.App, d.Username)
	if cerr == nil && cur.Deprovisioned {
		a.takeBack(ctx)
		o.Err = fmt.Errorf("%s: %s: %w (%s)", d.App, d.Username, ErrDeprovisioned, cur.DeprovisionedReason)
		return o
	}
	if err != nil {
		o.Err = err
		if !o.Known && (a.activated || len(a.added) > 0) {
			// This run made the account (or gave an account access) and
			// then failed: record it all the same, so that usher manages
			// it and a later removal or sweep can take it away. The empty
			// hash makes the next run apply the profile in full.
			st.IdP, st.Subject, st.Hash, st.SyncedAt = d.IdP, d.Subject, "", time.Time{}
			if rerr := r.Store.RecordSync(context.WithoutCancel(ctx), st); rerr != nil {
				r.log().Error("record an account a failed reconcile created", "app", d.App, "username", d.Username, "err", rerr, "cause", err)
			}
		}
		return o
	}
	if cerr != nil && !errors.Is(cerr, store.ErrNotFound) {
		o.Err = fmt.Errorf("reconcile %s for %s: re-read state: %w", d.App, d.Username, cerr)
		return o
	}
	st.IdP, st.Subject, st.Hash, st.SyncedAt = d.IdP, d.Subject, d.Hash, r.now()
	if err := r.Store.RecordSync(ctx, st); err != nil {
		o.Err = fmt.Errorf("reconcile %s for %s: save state: %w", d.App, d.Username, err)
	}
	return o
}

// applier runs one reconcile of one app, remembering what it changed
// that a removal would take away.
type applier struct {
	r   *Reconciler
	dir targets.Target
	d   Desired
	o   *Outcome
	// activated: created or reactivated the account; added: the groups
	// it added.
	activated bool
	added     []string
	// applied is the hash of the profile last applied in full ("" when
	// none, or when a removal or reinstatement reset it).
	applied string
	// before runs ahead of the first change (see apply); began says it
	// has.
	before func() error
	began  bool
}

// changing comes before each change to the app; ahead of the first it
// runs before, which records the change as an intent (see intent), so
// that a crash from there on leaves it queued. A run that only reads,
// finding the app as it should be (a returning person whose profile is
// unchanged but older than the fast path), writes no intent.
func (a *applier) changing() error {
	if a.before == nil || a.began {
		return nil
	}
	a.began = true
	return a.before()
}

// takeBack undoes what the applier changed that a removal takes away:
// the account goes back to inactive, the groups it added go. Profile
// updates stay; they give no access. It runs on a context the caller
// cannot cancel: a half-undone change is the one thing worse than none.
func (a *applier) takeBack(ctx context.Context) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), takeBackTimeout)
	defer cancel()
	d := a.d
	for _, g := range a.added {
		if err := a.dir.RemoveFromGroup(ctx, d.Username, g); err != nil {
			a.r.log().Error("take back a group a login added after a removal", "app", d.App, "username", d.Username, "group", g, "err", err)
			continue
		}
		if err := a.r.Store.RemoveManaged(ctx, d.App, d.Username, g); err != nil {
			a.r.log().Warn("forget a group taken back", "app", d.App, "username", d.Username, "group", g, "err", err)
		}
		a.change(ctx, ActGroupRemove, "removed from "+g+" again: access was removed meanwhile")
	}
	if a.activated {
		if err := a.dir.SetActive(ctx, d.Username, false); err != nil {
			a.r.log().Error("deactivate again after a removal", "app", d.App, "username", d.Username, "err", err)
			return
		}
		a.change(ctx, ActDeactivate, "deactivated "+d.Username+" again: access was removed meanwhile")
	}
}

// takeBackTimeout bounds the undo of a login overtaken by a removal.
const takeBackTimeout = 30 * time.Second

func (a *applier) change(ctx context.Context, action Action, detail string) {
	a.o.Changes = append(a.o.Changes, detail)
	a.r.audit(ctx, a.d, action, ResultOK, detail)
}

func (a *applier) failed(ctx context.Context, action Action, err error) error {
	a.r.audit(ctx, a.d, action, ResultError, err.Error())
	return err
}

func (a *applier) run(ctx context.Context) error {
	d := a.d
	u, err := a.dir.GetUser(ctx, d.Username)
	if errors.Is(err, targets.ErrNotFound) && d.PrevUsername != "" && !strings.EqualFold(d.PrevUsername, d.Username) {
		u, err = a.rename(ctx)
	}
	switch {
	case err == nil && !a.o.Known:
		// An account usher did not make: taking it over is the IdP's
		// adoption policy's decision, checked here too so that a queued
		// change obeys it as a login does.
		if ok, why := adoptable(d.Adoption, d.Email, u); !ok {
			return a.failed(ctx, ActAppRead, fmt.Errorf("%s: %s: %w: %s", d.App, d.Username, ErrAdoptionRefused, why))
		}
		a.change(ctx, ActAppRead, fmt.Sprintf("adopted the existing account %s (adoption: %s)", d.Username, orDefault(d.Adoption, config.AdoptVerifiedEmail)))
	case errors.Is(err, targets.ErrNotFound):
		if err := a.changing(); err != nil {
			return err
		}
		u, err = a.dir.CreateUser(ctx, targets.NewUser{Name: d.Username, DisplayName: d.DisplayName, Email: d.Email,
			NoAdopt: d.Adoption == config.AdoptNever})
		if errors.Is(err, targets.ErrNotAdopted) {
			return a.failed(ctx, ActAppCreate, fmt.Errorf("%s: %s: %w: %v", d.App, d.Username, ErrAdoptionRefused, err))
		}
		if errors.Is(err, targets.ErrExists) {
			// A retried create that had landed: read what is there.
			u, err = a.dir.GetUser(ctx, d.Username)
		} else if err == nil && u.Adopted {
			// The app had an account for this e-mail already (Atlassian
			// Cloud): say so, since bound is not made.
			a.change(ctx, ActAppCreate, fmt.Sprintf("adopted the existing account %s for %s (%s)", u.Key, d.Username, d.Email))
		} else if err == nil {
			a.activated = true
			a.change(ctx, ActAppCreate, fmt.Sprintf("created %s (%q, %s)", d.Username, d.DisplayName, d.Email))
		}
		if err != nil {
			return a.failed(ctx, ActAppCreate, err)
		}
	case err != nil:
		return a.failed(ctx, ActAppRead, err)
	}

	var up targets.Update
	var what []string
	if d.DisplayName != "" && u.DisplayName != d.DisplayName {
		up.DisplayName = &d.DisplayName
		what = append(what, fmt.Sprintf("display name %q → %q", u.DisplayName, d.DisplayName))
	}
	if change, desc := a.emailChange(u); change {
		up.Email = &d.Email
		what = append(what, desc)
	}
	if len(what) > 0 && u.ProfileReadOnly {
		// The account is its person's, not the organization's (an
		// unmanaged Cloud account): report the difference, change nothing.
		a.r.audit(ctx, d, ActAppUpdate, ResultSkipped, "not the organization's account, so usher cannot change "+strings.Join(what, ", "))
	} else if len(what) > 0 {
		if err := a.changing(); err != nil {
			return err
		}
		if err := a.dir.UpdateUser(ctx, d.Username, up); err != nil {
			return a.failed(ctx, ActAppUpdate, err)
		}
		a.change(ctx, ActAppUpdate, strings.Join(what, ", "))
	}
	if !u.Active {
		// A deactivation may have landed since Apply read the state (SCIM
		// or a sweep racing this login): never undo it.
		if st, err := a.r.Store.AppState(ctx, d.App, d.Username); err == nil && st.Deprovisioned {
			return fmt.Errorf("%s: %s: %w (%s)", d.App, d.Username, ErrDeprovisioned, st.DeprovisionedReason)
		}
		if err := a.changing(); err != nil {
			return err
		}
		a.activated = true // from here on, a removal may need this undone
		if err := a.dir.SetActive(ctx, d.Username, true); err != nil {
			return a.failed(ctx, ActAppActivate, err)
		}
		a.change(ctx, ActAppActivate, "reactivated "+d.Username)
	}
	if err := a.groups(ctx); err != nil {
		return err
	}
	return a.attributes(ctx)
}

// emailChange reports whether the app should be sent d's e-mail, and how
// to describe it. An app that reports e-mail is compared with its
// answer. One that does not (Confluence's user resource has none, §4.3)
// is compared with what usher applied last: nothing changed when this
// very profile was applied, and the previous recorded state tells the
// old e-mail when it is the one applied. When usher cannot tell, it
// sends the e-mail: one write more, never a change lost.
func (a *applier) emailChange(u *targets.User) (bool, string) {
	d := a.d
	switch {
	case d.Email == "":
		return false, ""
	case !u.EmailUnknown:
		return !strings.EqualFold(u.Email, d.Email), fmt.Sprintf("e-mail %q → %q", u.Email, d.Email)
	case a.applied != "" && a.applied == d.Hash:
		return false, ""
	case a.applied != "" && d.prior != nil && d.prior.Hash == a.applied:
		return !strings.EqualFold(d.prior.Email, d.Email), fmt.Sprintf("e-mail %q → %q", d.prior.Email, d.Email)
	}
	return true, fmt.Sprintf("e-mail set to %q (%s does not report it)", d.Email, d.App)
}

// rename moves the app account of a person whose username changed at the
// IdP, so the same (idp, subject) keeps one account.
func (a *applier) rename(ctx context.Context) (*targets.User, error) {
	d := a.d
	rn, ok := a.dir.(targets.Renamer)
	if !ok {
		return nil, targets.ErrNotFound // the app cannot rename: a new account is made
	}
	if _, err := a.dir.GetUser(ctx, d.PrevUsername); err != nil {
		return nil, err
	}
	if err := a.changing(); err != nil {
		return nil, err
	}
	if err := rn.Rename(ctx, d.PrevUsername, d.Username); err != nil {
		// A retried rename whose first answer was lost finds the old name
		// gone: if the new one exists, the rename landed.
		if _, gerr := a.dir.GetUser(ctx, d.Username); !errors.Is(err, targets.ErrNotFound) || gerr != nil {
			return nil, a.failed(ctx, ActAppRename, err)
		}
	}
	a.change(ctx, ActAppRename, fmt.Sprintf("renamed %s → %s", d.PrevUsername, d.Username))
	a.moveManaged(ctx)
	return a.dir.GetUser(ctx, d.Username)
}

// moveManaged carries the memberships usher manages over to the new
// username: the renamed account keeps them, and without the records a
// later mapping change could never take them away again.
func (a *applier) moveManaged(ctx context.Context) {
	d := a.d
	ms, err := a.r.Store.Managed(ctx, d.App, d.PrevUsername)
	if err != nil || len(ms) == 0 {
		if err != nil {
			a.r.log().Warn("read managed groups of old username", "app", d.App, "username", d.PrevUsername, "err", err)
		}
		return
	}
	names := make([]string, len(ms))
	for i := range ms {
		names[i] = ms[i].Group
		ms[i].Username = d.Username
	}
	// Add before forgetting: a crash in between leaves records under both
	// names, never a membership nobody manages.
	if err := a.r.Store.AddManaged(ctx, ms...); err != nil {
		a.r.log().Warn("move managed groups to new username", "app", d.App, "username", d.Username, "err", err)
		return
	}
	if err := a.r.Store.RemoveManaged(ctx, d.App, d.PrevUsername, names...); err != nil {
		a.r.log().Warn("forget managed groups of old username", "app", d.App, "username", d.PrevUsername, "err", err)
	}
}

// groups adds missing desired groups and, in full sync, removes the
// memberships usher added that are no longer desired. Memberships usher
// did not add are never removed.
func (a *applier) groups(ctx context.Context) error {
	d := a.d
	actual, err := a.dir.UserGroups(ctx, d.Username)
	if err != nil {
		return a.failed(ctx, ActAppGroups, err)
	}
	have := make(map[string]bool, len(actual))
	for _, g := range actual {
		have[strings.ToLower(g)] = true
	}
	want := make(map[string]bool, len(d.Groups))
	for _, g := range d.Groups {
		want[strings.ToLower(g.Group)] = true
		if have[strings.ToLower(g.Group)] {
			continue // present already, by usher or by hand: not ours to claim
		}
		// Record first, add second: a crash between the two leaves a
		// record of a membership that is missing, which the next run
		// forgets and redoes, never a membership usher added but would
		// not know to remove.
		if err := a.changing(); err != nil {
			return err
		}
		m := store.Membership{App: d.App, Username: d.Username, Group: g.Group, IdP: d.IdP, Rule: g.Rule, AddedAt: a.r.now()}
		if err := a.r.Store.AddManaged(ctx, m); err != nil {
			return fmt.Errorf("reconcile %s for %s: record managed %s: %w", d.App, d.Username, g.Group, err)
		}
		a.added = append(a.added, g.Group)
		err := a.dir.AddToGroup(ctx, d.Username, g.Group)
		if errors.Is(err, targets.ErrGroupNotFound) && a.r.CreateGroups {
			if err = a.dir.CreateGroup(ctx, g.Group); err == nil {
				a.change(ctx, ActGroupCreate, "created group "+g.Group)
				err = a.dir.AddToGroup(ctx, d.Username, g.Group)
			}
		}
		if err != nil {
			if ferr := a.r.Store.RemoveManaged(context.WithoutCancel(ctx), d.App, d.Username, g.Group); ferr != nil {
				a.r.log().Warn("forget unapplied membership", "app", d.App, "username", d.Username, "group", g.Group, "err", ferr)
			}
			if errors.Is(err, targets.ErrGroupReadOnly) {
				// Owned by the organization's IdP sync: leave it alone, say
				// why, and go on with the other groups.
				a.r.audit(ctx, d, ActGroupAdd, ResultSkipped, fmt.Sprintf("left %s alone: %v", g.Group, err))
				a.added = a.added[:len(a.added)-1]
				continue
			}
			return a.failed(ctx, ActGroupAdd, fmt.Errorf("add to %s: %w", g.Group, err))
		}
		a.change(ctx, ActGroupAdd, fmt.Sprintf("added to %s (%s)", g.Group, g.Rule))
		have[strings.ToLower(g.Group)] = true
	}

	managed, err := a.r.Store.Managed(ctx, d.App, d.Username)
	if err != nil {
		return fmt.Errorf("reconcile %s for %s: read managed groups: %w", d.App, d.Username, err)
	}
	var forget []string
	for _, m := range managed {
		k := strings.ToLower(m.Group)
		switch {
		case want[k]:
		case !have[k]:
			forget = append(forget, m.Group) // removed by hand meanwhile
		case d.Sync == SyncAddOnly:
		default:
			if err := a.changing(); err != nil {
				return err
			}
			if err := a.dir.RemoveFromGroup(ctx, d.Username, m.Group); errors.Is(err, targets.ErrGroupReadOnly) {
				// No longer usher's to manage: stop claiming it.
				a.r.audit(ctx, d, ActGroupRemove, ResultSkipped, fmt.Sprintf("left %s alone: %v", m.Group, err))
				forget = append(forget, m.Group)
				continue
			} else if err != nil {
				return a.failed(ctx, ActGroupRemove, fmt.Errorf("remove from %s: %w", m.Group, err))
			}
			a.change(ctx, ActGroupRemove, "removed from "+m.Group)
			if err := a.r.Store.RemoveManaged(ctx, d.App, d.Username, m.Group); err != nil {
				return fmt.Errorf("reconcile %s for %s: forget managed %s: %w", d.App, d.Username, m.Group, err)
			}
		}
	}
	if len(forget) > 0 {
		if err := a.r.Store.RemoveManaged(ctx, d.App, d.Username, forget...); err != nil {
			return fmt.Errorf("reconcile %s for %s: forget managed groups: %w", d.App, d.Username, err)
		}
	}
	return nil
}

func (a *applier) attributes(ctx context.Context) error {
	d := a.d
	as, ok := a.dir.(targets.AttributeSetter)
	if !ok || len(d.Attributes) == 0 {
		return nil
	}
	names := make([]string, 0, len(d.Attributes))
	for k := range d.Attributes {
		names = append(names, k)
	}
	slices.Sort(names)
	cur, err := as.Attributes(ctx, d.Username, names)
	if err != nil {
		return a.failed(ctx, ActAttributes, err)
	}
	diff := map[string]string{}
	var what []string
	for _, k := range names {
		if cur[k] != d.Attributes[k] {
			diff[k] = d.Attributes[k]
			what = append(what, fmt.Sprintf("%s %q → %q", k, cur[k], d.Attributes[k]))
		}
	}
	if len(diff) == 0 {
		return nil
	}
	if err := a.changing(); err != nil {
		return err
	}
	if err := as.SetAttributes(ctx, d.Username, diff); err != nil {
		return a.failed(ctx, ActAttributes, err)
	}
	a.change(ctx, ActAttributes, strings.Join(what, ", "))
	return nil
}

func (r *Reconciler) audit(ctx context.Context, d Desired, action Action, outcome Result, detail string) {
	_ = r.Audit.Record(ctx, Entry{Action: action, Cause: d.cause(), IdP: d.IdP, Subject: d.Subject,
		Username: d.Username, App: d.App, Outcome: outcome, Detail: detail})
}

// Record keeps the profile's per-app desired states in the store, so that
// an admin's "sync now" (or manual provisioning) can apply them later.
// The cause is not part of the record: an unchanged profile writes
// nothing, whoever admitted the person.
func (r *Reconciler) Record(ctx context.Context, p *Profile, cause Cause) error {
	_, _, _, err := r.record(ctx, p, nil)
	return err
}

// appsOf are the provisioned apps the profile reaches, sorted.
func (r *Reconciler) appsOf(p *Profile) []string {
	apps := make([]string, 0, len(p.Apps))
	for app := range p.Apps {
		if r.Apps[app] != nil {
			apps = append(apps, app)
		}
	}
	slices.Sort(apps)
	return apps
}

// record is Record, returning the desired states it recorded (by app,
// without a cause), those recorded before (nil when there were none or
// they do not decode) and the app states of the profile's username, read
// with them in one go (nil if that read failed). rec, when set, is that
// read made already.
func (r *Reconciler) record(ctx context.Context, p *Profile, rec *store.Recorded) (desired, prior map[string]Desired, states map[string]store.AppState, err error) {
	apps := r.appsOf(p)
	ds := make(map[string]Desired, len(apps))
	for _, app := range apps {
		ds[app] = DesiredFor(p, app, Cause{})
	}
	b, err := json.Marshal(ds)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("record profile of %s/%s: %w", p.IdP, p.Subject, err)
	}
	if rec == nil {
		rec = new(store.Recorded)
		*rec, err = r.Store.Recorded(ctx, p.IdP, p.Subject, p.Username, apps...)
	}
	if err == nil && bytes.Equal(rec.Profile, b) {
		return ds, ds, rec.States, nil // unchanged: a read is cheaper than a durable write
	}
	if err == nil && rec.Profile != nil && json.Unmarshal(rec.Profile, &prior) != nil {
		prior = nil
	}
	if err := r.Store.PutProfile(ctx, p.IdP, p.Subject, b, r.now()); err != nil {
		return nil, nil, nil, fmt.Errorf("record profile of %s/%s: %w", p.IdP, p.Subject, err)
	}
	return ds, prior, rec.States, nil
}

// Sync applies the identity's last recorded profile to every app now,
// without the fast path: the "sync now" an admin expects.
func (r *Reconciler) Sync(ctx context.Context, idp, subject string, cause Cause) ([]Outcome, error) {
	b, _, err := r.Store.Profile(ctx, idp, subject)
	if err != nil {
		return nil, fmt.Errorf("sync %s/%s: %w", idp, subject, err)
	}
	var ds map[string]Desired
	if err := json.Unmarshal(b, &ds); err != nil {
		return nil, fmt.Errorf("sync %s/%s: read profile: %w", idp, subject, err)
	}
	apps := make([]string, 0, len(ds))
	for app := range ds {
		apps = append(apps, app)
	}
	slices.Sort(apps)
	out := make([]Outcome, len(apps))
	var wg sync.WaitGroup
	for i, app := range apps {
		d := ds[app]
		d.Cause, d.Why = cause, ""
		wg.Add(1)
		go func() { defer wg.Done(); out[i] = r.Apply(ctx, d, false) }()
	}
	wg.Wait()
	var errs []error
	for _, o := range out {
		if o.Err != nil {
			errs = append(errs, o.Err)
		}
	}
	return out, errors.Join(errs...)
}
