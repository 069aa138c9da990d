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
			actx, cancel := within(ctx, r.Deadline)
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

// within bounds ctx by d, an admission's Deadline in one app; a d of
// zero leaves it as it is.
func within(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	if d <= 0 {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, d)
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

func (r *Reconciler) audit(ctx context.Context, d Desired, action Action, outcome Result, detail string) {
	_ = r.Audit.Record(ctx, Entry{Action: action, Cause: d.cause(), IdP: d.IdP, Subject: d.Subject,
		Username: d.Username, App: d.App, Outcome: outcome, Detail: detail})
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

// record keeps the profile's per-app desired states in the store, so that
// an admin's "sync now" (or manual provisioning) can apply them later.
// The cause is not part of the record: an unchanged profile writes
// nothing, whoever admitted the person. It returns the desired states it
// recorded (by app, without a cause), those recorded before (nil when
// there were none or they do not decode) and the app states of the
// profile's username, read with them in one go (nil if that read failed).
// rec, when set, is that read made already.
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
