package jit

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"time"

	"github.com/usherhq/usher/store"
)

// Brake is an IdP's SCIM brake (idps[].scim.brake). A SCIM push is the
// IdP's explicit word that a person is gone, but a group unassigned by
// mistake in Entra or Okta says the same of thousands of people in
// seconds. Within any Window, the IdP's SCIM removals plus the removals
// already held may reach MaxCount and MaxShare of the IdP's people (its
// pushed SCIM users); each removal past that is held: recorded for an
// admin, who releases it (the removal happens) or drops it (the person
// stays). The person's sessions end when held unless KeepSessions.
//
// Only removals that would change an app count or are held: a push about
// a person with no account usher provisioned, or whose every account is
// deactivated already (Entra's delete of a disabled person), passes.
type Brake struct {
	// MaxCount is how many removals a window allows; 0: no count limit.
	MaxCount int
	// MaxShare is the share of the IdP's pushed people a window allows,
	// rounded down; 0: no share limit.
	MaxShare float64
	Window   time.Duration
	// KeepSessions leaves a held person's sessions alone
	// (held_sessions: keep).
	KeepSessions bool
}

// Limit is how many removals and holds a window allows when the IdP has
// people pushed SCIM users.
func (b Brake) Limit(people int) int {
	limit := math.MaxInt32 // the store keeps it in a 32-bit column
	if b.MaxCount > 0 {
		limit = min(limit, b.MaxCount)
	}
	if b.MaxShare > 0 {
		// The epsilon keeps 0.29 × 100 at 29: a float product lands a
		// hair below the integer it means.
		limit = min(limit, int(math.Floor(b.MaxShare*float64(people)+1e-9)))
	}
	return limit
}

// String is the brake's setting as the audit log and the admin page
// show it: "max 25 or 10% within 1h0m0s".
func (b Brake) String() string {
	var s string
	switch {
	case b.MaxCount > 0 && b.MaxShare > 0:
		s = fmt.Sprintf("max %d or %g%%", b.MaxCount, 100*b.MaxShare)
	case b.MaxCount > 0:
		s = fmt.Sprintf("max %d", b.MaxCount)
	default:
		s = fmt.Sprintf("max %g%%", 100*b.MaxShare)
	}
	return s + " within " + b.Window.String()
}

// ErrNotHeld means no removal of that person is held: an admin released
// or dropped it already, or the IdP pushed the person active again.
var ErrNotHeld = errors.New("no removal of this person is held")

// holdBack asks the IdP's brake whether a SCIM removal of b may go ahead.
// When it may not, the hold is recorded and audited, the person's sessions
// end as configured, and the hold is returned; nil means go ahead.
func (l *Lifecycle) holdBack(ctx context.Context, rm Removal, b store.Binding, cause Cause) (*store.Hold, error) {
	br, ok := l.Brakes[rm.IdP]
	if !ok {
		return nil, nil
	}
	// The count is one indexed count(*), not a listing: a burst of pushes
	// asks it once each.
	_, people, err := l.Store.SCIMUsers(ctx, rm.IdP, 0, 0)
	if err != nil {
		return nil, fmt.Errorf("remove %s/%s: count the IdP's people for its SCIM brake: %w", rm.IdP, rm.Subject, err)
	}
	now := l.now()
	res, err := l.Store.Brake(ctx, store.BrakeCheck{
		IdP: rm.IdP, Subject: rm.Subject, At: now, Since: now.Add(-br.Window), Limit: br.Limit(people),
		Hold: store.Hold{Username: b.Username, Reason: cause.Reason, People: people, Window: br.Window, SessionsRevoked: !br.KeepSessions},
	})
	if err != nil {
		return nil, fmt.Errorf("remove %s/%s: SCIM brake: %w", rm.IdP, rm.Subject, err)
	}
	if !res.Held {
		return nil, nil
	}
	h := res.Hold
	if !res.New {
		l.log().Info("remove: held by the SCIM brake already; waiting for an admin", "idp", rm.IdP, "subject", rm.Subject,
			"username", b.Username, "cause", cause.String())
		return &h, nil
	}
	l.log().Warn("SCIM brake: removal held for an admin (release or drop it on the admin page)", "idp", rm.IdP, "subject", rm.Subject,
		"username", b.Username, "removed", h.Removed, "held", h.Holds, "people", h.People, "limit", h.Limit, "window", br.Window.String())
	l.record(ctx, Entry{Action: ActHeld, Cause: cause, Subject: rm.Subject, Username: b.Username, Outcome: ResultHeld,
		Detail: heldDetail(h, br)})
	if l.Metrics != nil {
		l.Metrics.SCIMHeld(rm.IdP)
	}
	if !br.KeepSessions {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), removeTimeout)
		defer cancel()
		l.revoke(ctx, rm.IdP, rm.Subject, b.Username, cause)
	}
	return &h, nil
}

// heldDetail says why a removal was held, with the brake's numbers.
func heldDetail(h store.Hold, br Brake) string {
	sessions := "sessions revoked"
	if !h.SessionsRevoked {
		sessions = "sessions kept"
	}
	return fmt.Sprintf("held by the SCIM brake (%s): %d removals and %d held within %s reach its limit of %d for %d people; %s; an admin releases or drops it",
		br, h.Removed, h.Holds, h.Window, h.Limit, h.People, sessions)
}

// revoke ends the identity's sessions on every replica. This replica
// refuses them at once; the session layer keeps retrying to share the
// revocation with the others, so a failure here is logged, not returned.
func (l *Lifecycle) revoke(ctx context.Context, idp, subject, username string, cause Cause) {
	if l.Metrics != nil {
		l.Metrics.Revocation(string(cause.Source))
	}
	if l.Sessions == nil {
		return
	}
	if err := l.Sessions.RevokeIdentity(ctx, idp, subject); err != nil {
		l.log().Error("remove: sessions end on this replica; other replicas learn it when the store answers",
			"idp", idp, "subject", subject, "username", username, "err", err)
	}
}

// Release carries out a removal the IdP's SCIM brake held, by an admin's
// decision (cause): the person is removed as the push asked, past the
// brake, and then the hold goes. The removal is recorded as the IdP's
// (SCIM's), so that the IdP pushing the person active again reinstates
// them as it would any SCIM removal; the admin who released it is in the
// audit log. A removal that failed as a whole (the store) keeps the hold;
// one that reached some apps but not others (the retry queue finishes it)
// does not.
func (l *Lifecycle) Release(ctx context.Context, idp, subject string, cause Cause) ([]RemoveOutcome, error) {
	if cause.IdP == "" {
		cause.IdP = idp
	}
	h, err := l.Store.Hold(ctx, idp, subject)
	if errors.Is(err, store.ErrNotFound) {
		return nil, fmt.Errorf("release %s/%s: %w", idp, subject, ErrNotHeld)
	}
	if err != nil {
		return nil, fmt.Errorf("release %s/%s: %w", idp, subject, err)
	}
	push := SCIMPush(idp, h.Reason)
	outs, err := l.remove(ctx, Removal{IdP: idp, Subject: subject}, push, false)
	if err != nil && outs == nil && !errors.Is(err, ErrUnbound) {
		return nil, err // nothing was decided: the hold stays for another try
	}
	if derr := l.Store.DeleteHold(ctx, idp, subject); derr != nil && !errors.Is(derr, store.ErrNotFound) {
		return outs, errors.Join(err, fmt.Errorf("release %s/%s: the removal is done, the hold stays listed: %w", idp, subject, derr))
	}
	detail := fmt.Sprintf("released the removal the SCIM brake held at %s (%s)", h.HeldAt.UTC().Format(time.RFC3339), h.Reason)
	if errors.Is(err, ErrUnbound) {
		detail += ": no identity is bound to this subject any more, so there was nothing to remove"
		err = nil
	}
	l.record(ctx, Entry{Action: ActHoldReleased, Cause: cause, Subject: subject, Username: h.Username, Outcome: ResultOK, Detail: detail})
	return outs, err
}

// DropHold withdraws a removal the IdP's SCIM brake held: the person
// keeps their access. An admin drops a hold the IdP sent by mistake; the
// IdP itself withdraws it by pushing the person active again (a SCIM
// cause). The IdP still saying "inactive" is not forgotten: its next push
// about the person, or a sweep with a scim source, acts again unless the
// IdP is fixed. ErrNotHeld when there is no hold.
func (l *Lifecycle) DropHold(ctx context.Context, idp, subject string, cause Cause) error {
	if cause.IdP == "" {
		cause.IdP = idp
	}
	// Every SCIM activation asks: a read answers the common case, no hold,
	// without a write.
	h, err := l.Store.Hold(ctx, idp, subject)
	if err == nil {
		err = l.Store.DeleteHold(ctx, idp, subject)
	}
	if errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("drop hold of %s/%s: %w", idp, subject, ErrNotHeld)
	}
	if err != nil {
		return fmt.Errorf("drop hold of %s/%s: %w", idp, subject, err)
	}
	detail := "dropped: the person keeps their access; the IdP still says inactive, so its next push about them or a sweep with a scim source removes them again unless the IdP is fixed"
	if cause.Source == SourceSCIM {
		detail = "the IdP pushed the person active again: the held removal is withdrawn"
	}
	l.record(ctx, Entry{Action: ActHoldDropped, Cause: cause, Subject: subject, Username: h.Username, Outcome: ResultOK,
		Detail: fmt.Sprintf("%s (held at %s: %s)", detail, h.HeldAt.UTC().Format(time.RFC3339), h.Reason)})
	return nil
}

// releaseConcurrency is how many held removals ReleaseHolds carries out
// at once: each calls every app, which are shared with logins.
const releaseConcurrency = 4

// ReleaseHolds releases every removal idp's brake holds, a few at a time,
// and returns how many it released. It stops starting new ones when ctx
// ends; the holds left stay listed. Errors of single people are joined;
// a removal that was decided but that an app refused counts as released
// (the audit log and the retry queue have the app's error).
func (l *Lifecycle) ReleaseHolds(ctx context.Context, idp string, cause Cause) (int, error) {
	return l.eachHold(ctx, idp, releaseConcurrency, func(h store.Hold) error {
		outs, err := l.Release(ctx, h.IdP, h.Subject, cause)
		if err != nil && outs != nil {
			l.log().Warn("release: decided, but an app did not take it", "idp", h.IdP, "subject", h.Subject, "username", h.Username, "err", err)
			return nil
		}
		return err
	})
}

// DropHolds drops every removal idp's brake holds and returns how many.
func (l *Lifecycle) DropHolds(ctx context.Context, idp string, cause Cause) (int, error) {
	return l.eachHold(ctx, idp, 1, func(h store.Hold) error { return l.DropHold(ctx, h.IdP, h.Subject, cause) })
}

// holdsPage is how many holds eachHold reads at a time.
const holdsPage = 500

// eachHold runs fn on each of idp's holds as they are now, n at a time,
// and counts those it succeeded on. A hold another admin settled meanwhile
// (ErrNotHeld) is neither counted nor an error.
func (l *Lifecycle) eachHold(ctx context.Context, idp string, n int, fn func(store.Hold) error) (int, error) {
	// Read them all first: fn removes holds from the list it would page.
	var holds []store.Hold
	for {
		page, total, err := l.Store.Holds(ctx, idp, len(holds), holdsPage)
		if err != nil {
			return 0, fmt.Errorf("holds of %s: %w", idp, err)
		}
		holds = append(holds, page...)
		if len(page) == 0 || len(holds) >= total {
			break
		}
	}
	var (
		mu   sync.Mutex
		done int
		errs []error
		wg   sync.WaitGroup
	)
	sem := make(chan struct{}, n)
	for _, h := range holds {
		if ctx.Err() != nil {
			break
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			err := fn(h)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				done++
			case !errors.Is(err, ErrNotHeld):
				errs = append(errs, err)
			}
		}()
	}
	wg.Wait()
	if err := ctx.Err(); err != nil && done+len(errs) < len(holds) {
		errs = append(errs, fmt.Errorf("holds of %s: stopped after %d of %d: %w", idp, done, len(holds), err))
	}
	return done, errors.Join(errs...)
}
