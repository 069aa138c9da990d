package jit

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/usherhq/usher/config"
	"github.com/usherhq/usher/providers"
	"github.com/usherhq/usher/store"
	"github.com/usherhq/usher/targets"
)

// LifecycleStore is what the lifecycle keeps: who is bound to which
// username, what was applied to each app, the retry queue, and what the
// SCIM brakes counted and held (with the count of each IdP's pushed
// people, which a brake's share is of).
type LifecycleStore interface {
	Bind(ctx context.Context, b store.Binding) (store.Binding, error)
	Binding(ctx context.Context, idp, subject string) (store.Binding, error)
	BindingByUsername(ctx context.Context, username string) (store.Binding, error)
	RecordLogin(ctx context.Context, idp, subject string, at time.Time) error
	SCIMUsers(ctx context.Context, idp string, offset, limit int) (users []store.SCIMUser, total int, err error)
	store.Provisioning
	store.Brakes
}

// LifecycleMetrics is what the lifecycle counts (metrics.Metrics).
type LifecycleMetrics interface {
	// Revocation counts a person's sessions revoked, by source.
	Revocation(source string)
	// SCIMHeld counts a removal an IdP's SCIM brake held.
	SCIMHeld(idp string)
}

// Sessions ends a person's sessions on every replica.
type Sessions interface {
	RevokeIdentity(ctx context.Context, idp, subject string) error
}

// Lifecycle owns what happens to a person. Every way in (a login, a login
// through usher's OpenID Provider, a SCIM push, a directory sync, an
// admin's "sync now") goes through Admit; every way out (a SCIM
// deactivation, a directory leaver, a sweep, an admin) goes through
// Remove. Handlers, the SCIM router, the sweep and the admin page only
// translate to and from these calls. It is safe for concurrent use.
type Lifecycle struct {
	// Mappers are the IdPs' compiled mappings, by IdP id.
	Mappers map[string]*Mapper
	// Apps are the provisioned apps by name (apps usher only proxies to
	// are absent).
	Apps     map[string]targets.Target
	Store    LifecycleStore
	Sessions Sessions
	Audit    *AuditLog
	// Logins coalesces last-login writes; nil writes each at once.
	Logins *LoginTimes
	// Owner names this replica (as in its heartbeat lease "replica:" +
	// Owner): an admission records each app change it is about to make
	// as a queued job leased to Owner, so a crash does not lose it.
	Owner string
	// Metrics counts revocations by source and held removals; nil counts
	// nothing.
	Metrics LifecycleMetrics
	Log     *slog.Logger
	Now     func() time.Time
	// FastPath is how long an applied profile counts as fresh: a login
	// whose profile hash matches within it makes no app call. Zero
	// disables the fast path.
	FastPath time.Duration
	// CreateGroups creates a mapped group that does not exist yet.
	CreateGroups bool
	// Deadline bounds an admission's work in each app (every call and
	// retry): an app that has not finished by then counts as down, so a
	// silent app cannot hold a login. Zero means no bound beyond the
	// caller's context.
	Deadline time.Duration
	// QueueWhenDown lets a person an app already knows sign in while that
	// app is down, their change queued (provisioning.on_app_down: queue).
	QueueWhenDown bool
	// Overage completes partial group lists (group overage) by IdP id,
	// for the IdPs whose directory can tell a person's groups; an IdP
	// without one maps a partial list by adding groups only.
	Overage map[string]GroupResolver
	// Brakes are the IdPs' SCIM brakes by IdP id; an IdP without one has
	// no brake.
	Brakes map[string]Brake

	// applying serialises reconciles of one person in one app within this
	// process, so that concurrent logins of one person make one change
	// (and one audit entry), not one each.
	applying keyLocks

	// noEmail holds the IdPs whose people came without an e-mail
	// address, so that this Lifecycle (one per loaded config) warns once
	// per IdP rather than at every login.
	noEmail sync.Map
}

// Admission is an admitted person.
type Admission struct {
	Profile *Profile
	// Known says the identity was bound before this admission.
	Known bool
	// Apps are the apps the person may enter: nil means every app (the
	// IdP restricts none and none took the person away), so the common
	// case costs the session nothing.
	Apps []string
	// Queued names the apps whose change waits in the retry queue.
	Queued []string
	// Outcomes are what provisioning did per app (empty when it did not
	// run: manual or off).
	Outcomes []Outcome
}

// RefusalKind sorts admission refusals; the proxy maps each to a page,
// a status and a metric reason, once.
type RefusalKind int

const (
	// Denied: the access policy refused the person (require_groups, ...).
	Denied RefusalKind = iota + 1
	// Unmatched: the identity could not be mapped to a usable profile.
	Unmatched
	// UsernameTaken: another identity owns the username.
	UsernameTaken
	// AccessRemoved: usher took the person's access away in every app.
	AccessRemoved
	// ProvisioningFailed: an app the person needs could not be set up.
	ProvisioningFailed
	// StoreUnavailable: usher's database did not answer.
	StoreUnavailable
	// AdoptionRefused: an app account of that name exists, no usher
	// identity owns it, and the IdP's adoption policy does not allow
	// taking it over.
	AdoptionRefused
)

func (k RefusalKind) String() string {
	switch k {
	case Denied:
		return "denied"
	case Unmatched:
		return "unmatched"
	case UsernameTaken:
		return "username taken"
	case AccessRemoved:
		return "access removed"
	case ProvisioningFailed:
		return "provisioning failed"
	case StoreUnavailable:
		return "store unavailable"
	case AdoptionRefused:
		return "adoption refused"
	}
	return "refused"
}

// AdmitError is an admission that did not happen. Reason is safe to show
// the person; Err keeps the technical cause for the log.
type AdmitError struct {
	Kind     RefusalKind
	Username string
	// Apps names the apps that failed (ProvisioningFailed) or that
	// refused adoption (AdoptionRefused).
	Apps   []string
	Reason string
	Err    error
}

func (e *AdmitError) Error() string {
	s := "admit: " + e.Kind.String()
	if e.Username != "" {
		s += " (" + e.Username + ")"
	}
	if e.Reason != "" {
		s += ": " + e.Reason
	}
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

func (e *AdmitError) Unwrap() error { return e.Err }

// AdmitErrorOf returns err's *AdmitError, or nil.
func AdmitErrorOf(err error) *AdmitError {
	var e *AdmitError
	if errors.As(err, &e) {
		return e
	}
	return nil
}

func (l *Lifecycle) now() time.Time {
	if l.Now != nil {
		return l.Now()
	}
	return time.Now()
}

func (l *Lifecycle) log() *slog.Logger {
	if l.Log != nil {
		return l.Log
	}
	return slog.Default()
}

// Admit lets a person in: it maps the identity to a profile, applies the
// access policy, binds the identity to its username, provisions the apps
// (or records the profile for an admin's sync in manual mode) and audits
// the result. A login (SourceLogin) also records the login time; a person
// an app already knows gets in while that app is down when QueueWhenDown
// allows it. A push or sync (any other source) has no one waiting: every
// change an app could not take now is queued.
//
// The error is an *AdmitError whose Kind says what to tell the person.
func (l *Lifecycle) Admit(ctx context.Context, id providers.Identity, cause Cause) (*Admission, error) {
	if cause.IdP == "" {
		cause.IdP = id.IdP
	}
	mapper := l.Mappers[id.IdP]
	if mapper == nil {
		return nil, &AdmitError{Kind: Unmatched, Reason: "no such identity provider", Err: fmt.Errorf("admit: unknown idp %q", id.IdP)}
	}
	login := cause.Source == SourceLogin
	id = l.completeGroups(ctx, mapper, id, cause)
	p, err := mapper.Map(id)
	var denied *DeniedError
	switch {
	case errors.As(err, &denied):
		l.record(ctx, Entry{Action: l.act(cause, stepDenied), Cause: cause, Subject: id.Subject, Outcome: ResultRefused, Detail: denied.Reason})
		return nil, &AdmitError{Kind: Denied, Reason: denied.Reason, Err: err}
	case err != nil:
		l.record(ctx, Entry{Action: l.act(cause, stepRefused), Cause: cause, Subject: id.Subject, Outcome: ResultRefused, Detail: err.Error()})
		return nil, &AdmitError{Kind: Unmatched, Err: err}
	}
	for _, w := range p.Warnings {
		l.log().Warn("mapping", "idp", id.IdP, "subject", id.Subject, "source", string(cause.Source), "warning", w)
	}
	if p.Email == "" {
		l.warnNoEmail(mapper, id.Subject, cause)
	}
	// One read: the binding, and what adoption and provisioning need to
	// tell whether any app has to be asked (the fast path).
	r := l.rec()
	rec, err := l.Store.Recorded(ctx, id.IdP, id.Subject, p.Username, r.appsOf(p)...)
	if err != nil {
		return nil, &AdmitError{Kind: StoreUnavailable, Username: p.Username, Err: fmt.Errorf("read binding and records of %s/%s: %w", id.IdP, id.Subject, err)}
	}
	prev, known := rec.Binding, rec.Bound
	if !known || !strings.EqualFold(prev.Username, p.Username) {
		// A username this identity does not own yet: if an app already
		// has an account of that name that usher never provisioned, taking
		// it over is the IdP's adoption policy's decision.
		if err := l.adopt(ctx, mapper, p, rec.States, cause); err != nil {
			return nil, err
		}
	}
	// An identity that keeps its username is bound already: no write.
	if !known || prev.Username != p.Username {
		if err := l.bind(ctx, id, p, cause); err != nil {
			return nil, err
		}
	}
	prevName := ""
	if known && prev.Username != p.Username {
		prevName = prev.Username
	}
	a := &Admission{Profile: p, Known: known}
	var removed []string
	switch {
	case len(l.Apps) == 0 || p.Provisioning == ProvisionOff:
	case p.Provisioning == ProvisionManual:
		if _, _, _, err := r.record(ctx, p, &rec); err != nil {
			return nil, &AdmitError{Kind: StoreUnavailable, Username: p.Username, Err: err}
		}
		l.record(ctx, Entry{Action: ActPlanned, Cause: cause, Subject: id.Subject, Username: p.Username, Outcome: ResultOK,
			Detail: "manual provisioning: waiting for an admin's sync"})
	default:
		if cause.Source == SourceSCIM || cause.Source == SourceDirectory {
			// The IdP says the person is active: what that same source
			// took away comes back. Marks of sweeps and admins stay.
			if _, err := l.reinstate(ctx, cause, cause.Source, p.Username, prevName); err != nil {
				return nil, &AdmitError{Kind: StoreUnavailable, Username: p.Username, Err: err}
			}
		}
		queue := queueAlways
		if login {
			queue = queueNever
			if known && l.QueueWhenDown {
				queue = queueKnown
			}
		}
		outs, err := r.provision(ctx, p, prevName, cause, queue, &rec)
		a.Outcomes = outs
		for _, o := range outs {
			switch {
			case errors.Is(o.Err, ErrDeprovisioned):
				removed = append(removed, o.App)
			case o.Queued:
				a.Queued = append(a.Queued, o.App)
			}
		}
		if err != nil {
			var failed []string
			for _, o := range outs {
				if o.Err != nil && !o.Queued && !errors.Is(o.Err, ErrDeprovisioned) {
					failed = append(failed, o.App)
				}
			}
			l.record(ctx, Entry{Action: l.act(cause, stepFailed), Cause: cause, Subject: id.Subject, Username: p.Username,
				Outcome: ResultError, Detail: err.Error()})
			kind := ProvisioningFailed
			if errors.Is(err, store.ErrUnavailable) {
				kind = StoreUnavailable
			}
			return nil, &AdmitError{Kind: kind, Username: p.Username, Apps: failed, Err: err}
		}
		if len(outs) > 0 && len(removed) == len(outs) {
			l.record(ctx, Entry{Action: l.act(cause, stepRefused), Cause: cause, Subject: id.Subject, Username: p.Username,
				Outcome: ResultRefused, Detail: "deprovisioned in every app"})
			return nil, &AdmitError{Kind: AccessRemoved, Username: p.Username, Apps: removed}
		}
	}
	if login {
		if err := l.noteLogin(ctx, id.IdP, id.Subject); err != nil {
			return nil, &AdmitError{Kind: StoreUnavailable, Username: p.Username, Err: fmt.Errorf("record login of %s/%s: %w", id.IdP, id.Subject, err)}
		}
	}
	admitted := Entry{Action: l.act(cause, stepAdmitted), Cause: cause, Subject: id.Subject, Username: p.Username,
		Outcome: ResultOK, Detail: Explain(id, p)}
	if login {
		// A sign-in's own record: every change it made was recorded on
		// its own already, so a crash may lose this one.
		l.Audit.Defer(ctx, admitted)
	} else {
		l.record(ctx, admitted)
	}
	a.Apps = allowedApps(mapper, p, removed)
	return a, nil
}

// warnNoEmail tells the admin, once per IdP, that its people arrive
// without an e-mail address: the apps get accounts without one and
// adoption by verified e-mail never matches. The usual cause is a
// mapping that reads a claim the IdP does not send: SAML IdPs name the
// e-mail attribute by a URI, not "email".
func (l *Lifecycle) warnNoEmail(m *Mapper, subject string, cause Cause) {
	if _, seen := l.noEmail.Load(m.idp); seen {
		return
	}
	if _, seen := l.noEmail.LoadOrStore(m.idp, true); seen {
		return // another login got here first
	}
	l.log().Warn("identity provider sent no e-mail address (warned once per IdP): set mapping.email.claim to the claim or attribute that holds it",
		"idp", m.idp, "mapping_email", m.email.source(), "subject", subject, "source", string(cause.Source),
		"hint", "SAML IdPs often send http://schemas.xmlsoap.org/ws/2005/05/identity/claims/emailaddress (check the IdP's attribute statements); OIDC IdPs send email with the email scope, and usher passes it on only when verified (email_verified)")
}

// admitStep is how far an admission got, for its audit action.
type admitStep int

const (
	stepAdmitted admitStep = iota
	stepDenied             // the access policy refused
	stepRefused            // the identity or account could not be taken
	stepFailed             // an app or the store failed
)

// admitActions name each step per source, so the audit log tells a
// login from a push from a sync at a glance.
var admitActions = map[Source][4]Action{
	SourceLogin:     {ActLogin, ActLoginDenied, ActLoginRefused, ActLoginFailed},
	SourceSCIM:      {ActSCIMPush, ActSCIMDenied, ActSCIMRefused, ActSCIMRefused},
	SourceDirectory: {ActDirAdmit, ActDirDenied, ActDirRefused, ActDirRefused},
}

// act is the audit action of an admission step by the cause's source;
// other sources (an admin's link or sync) read as a push.
func (l *Lifecycle) act(c Cause, step admitStep) Action {
	if as, ok := admitActions[c.Source]; ok {
		return as[step]
	}
	return admitActions[SourceSCIM][step]
}

func (l *Lifecycle) noteLogin(ctx context.Context, idp, subject string) error {
	if l.Logins != nil {
		return l.Logins.Note(ctx, idp, subject, l.now())
	}
	return l.Store.RecordLogin(ctx, idp, subject, l.now())
}

// record writes audit entries; a failure is logged by the writer and
// does not undo what happened.
func (l *Lifecycle) record(ctx context.Context, es ...Entry) { _ = l.Audit.Record(ctx, es...) }

// allowedApps is the session's app list: nil when the IdP lets its users
// into every app and none took the person away. A restricted IdP always
// gets an explicit list, so an app added by a later reload is not open
// to it.
func allowedApps(m *Mapper, p *Profile, removed []string) []string {
	if len(removed) == 0 && !m.RestrictsApps() {
		return nil
	}
	apps := []string{}
	for name := range p.Apps {
		if !slices.Contains(removed, name) {
			apps = append(apps, name)
		}
	}
	slices.Sort(apps)
	return apps
}

// Sync applies the person's last recorded profile to every app now,
// without the fast path: the "sync now" an admin expects, and the apply
// step of manual provisioning.
func (l *Lifecycle) Sync(ctx context.Context, idp, subject string, cause Cause) ([]Outcome, error) {
	if len(l.Apps) == 0 {
		return nil, errors.New("no app is configured for provisioning")
	}
	return l.rec().Sync(ctx, idp, subject, cause)
}

// rec is the reconcile engine over the lifecycle's apps and store.
func (l *Lifecycle) rec() *Reconciler {
	return &Reconciler{Apps: l.Apps, Store: l.Store, Audit: l.Audit, Log: l.Log, Now: l.Now, FastPath: l.FastPath, CreateGroups: l.CreateGroups,
		Deadline: l.Deadline, applying: &l.applying, Owner: l.Owner}
}

// usernames returns the non-empty, distinct names.
func usernames(names ...string) []string {
	var out []string
	for _, n := range names {
		if n != "" && !slices.ContainsFunc(out, func(o string) bool { return strings.EqualFold(o, n) }) {
			out = append(out, n)
		}
	}
	return out
}

// adopt checks, for each app the profile reaches, whether an account of
// the profile's username already exists there without usher having
// provisioned it, and if so whether the IdP's adoption policy lets this
// person take it over, before the username is bound to them. states are
// the username's app states as the admission read them: an app where
// usher provisioned that username is usher's to manage. It reads each
// other app once, and only for a username the identity does not own yet.
// At a login an app it cannot read fails the admission, as it would for
// any new person; for a push or a sync the app is checked again when the
// queued change reaches it (Reconciler.Apply), so nothing is lost and
// nothing is taken over.
func (l *Lifecycle) adopt(ctx context.Context, m *Mapper, p *Profile, states map[string]store.AppState, cause Cause) error {
	if m.Adoption() == config.AdoptAlways {
		return nil
	}
	apps := make([]string, 0, len(p.Apps))
	for app := range p.Apps {
		if l.Apps[app] != nil {
			apps = append(apps, app)
		}
	}
	slices.Sort(apps)
	// The apps are read concurrently, each within the deadline, so a
	// first login waits for the slowest app, not the sum.
	type found struct {
		u   *targets.User
		err error
	}
	reads := make([]found, len(apps))
	var wg sync.WaitGroup
	for i, app := range apps {
		if _, ok := states[app]; ok {
			reads[i].err = targets.ErrNotFound // usher provisioned that account: it is usher's to manage
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			gctx, cancel := within(ctx, l.Deadline)
			defer cancel()
			reads[i].u, reads[i].err = l.Apps[app].GetUser(gctx, p.Username)
		}()
	}
	wg.Wait()
	var refused, failed, why []string
	var errs []error
	for i, app := range apps {
		u, err := reads[i].u, reads[i].err
		switch {
		case errors.Is(err, targets.ErrNotFound):
			continue // nothing to take over: usher creates it (or usher made it)
		case err != nil && cause.Source == SourceLogin:
			failed = append(failed, app)
			errs = append(errs, err)
			continue
		case err != nil:
			continue // checked again when the queued change is applied
		}
		if ok, reason := adoptable(m.Adoption(), p.Email, u); !ok {
			refused = append(refused, app)
			why = append(why, app+": "+reason)
		}
	}
	if len(failed) > 0 {
		err := errors.Join(errs...)
		l.record(ctx, Entry{Action: l.act(cause, stepFailed), Cause: cause, Subject: p.Subject, Username: p.Username, Outcome: ResultError,
			Detail: "could not check for an existing account: " + err.Error()})
		return &AdmitError{Kind: ProvisioningFailed, Username: p.Username, Apps: failed, Err: err}
	}
	if len(refused) == 0 {
		return nil
	}
	detail := fmt.Sprintf("an account named %s exists and no usher identity owns it (adoption: %s; %s); an admin can link it on the admin page",
		p.Username, m.Adoption(), strings.Join(why, "; "))
	l.record(ctx, Entry{Action: l.act(cause, stepRefused), Cause: cause, Subject: p.Subject, Username: p.Username,
		Outcome: ResultRefused, Detail: detail})
	return &AdmitError{Kind: AdoptionRefused, Username: p.Username, Apps: refused, Reason: strings.Join(why, "; ")}
}

// Link binds an identity to a username by an admin's decision: the
// identity may then take over the app accounts of that name whatever its
// IdP's adoption policy says (the next admission provisions them). The
// username must be the one the IdP's mapping gives the person; it is
// refused when another identity owns it.
func (l *Lifecycle) Link(ctx context.Context, idp, subject, username string, cause Cause) error {
	if idp == "" || subject == "" || username == "" {
		return errors.New("link: idp, subject and username are required")
	}
	if l.Mappers[idp] == nil {
		return fmt.Errorf("link: no identity provider %q is configured", idp)
	}
	if cause.IdP == "" {
		cause.IdP = idp
	}
	b, err := l.Store.Bind(ctx, store.Binding{IdP: idp, Subject: subject, Username: username, CreatedAt: l.now()})
	if err != nil {
		if errors.Is(err, store.ErrUsernameTaken) {
			if owner, oerr := l.Store.BindingByUsername(ctx, username); oerr == nil {
				return fmt.Errorf("link %s/%s to %s: %s/%s owns that username: %w", idp, subject, username, owner.IdP, owner.Subject, err)
			}
		}
		return fmt.Errorf("link %s/%s to %s: %w", idp, subject, username, err)
	}
	// The accounts of that name are usher's to manage from now on: the
	// state records it, so the next reconcile updates them instead of
	// asking the adoption policy.
	m := l.Mappers[idp]
	for app := range l.Apps {
		if !m.Allows(app) {
			continue
		}
		if _, err := l.Store.AppState(ctx, app, b.Username); !errors.Is(err, store.ErrNotFound) {
			continue // already usher's (or unreadable: the next reconcile says)
		}
		if err := l.Store.RecordSync(ctx, store.AppState{App: app, Username: b.Username, IdP: idp, Subject: subject}); err != nil {
			return fmt.Errorf("link %s/%s to %s in %s: %w", idp, subject, b.Username, app, err)
		}
	}
	l.record(ctx, Entry{Action: ActLink, Cause: cause, Subject: subject, Username: b.Username, Outcome: ResultOK,
		Detail: "linked to the existing account " + b.Username})
	return nil
}

// bind binds the identity to the profile's username (a new identity, or
// a rename at the IdP), refusing a username another identity owns.
func (l *Lifecycle) bind(ctx context.Context, id providers.Identity, p *Profile, cause Cause) error {
	if _, err := l.Store.Bind(ctx, store.Binding{IdP: id.IdP, Subject: id.Subject, Username: p.Username, CreatedAt: l.now()}); err != nil {
		if errors.Is(err, store.ErrUsernameTaken) {
			l.record(ctx, Entry{Action: l.act(cause, stepRefused), Cause: cause, Subject: id.Subject, Username: p.Username,
				Outcome: ResultRefused, Detail: "username bound to another identity"})
			return &AdmitError{Kind: UsernameTaken, Username: p.Username, Err: err}
		}
		return &AdmitError{Kind: StoreUnavailable, Username: p.Username, Err: fmt.Errorf("bind %s/%s: %w", id.IdP, id.Subject, err)}
	}
	return nil
}
