package proxy

import (
	"errors"
	"net/http"
	"strings"

	"github.com/usherhq/usher/jit"
	"github.com/usherhq/usher/metrics"
	"github.com/usherhq/usher/providers"
	"github.com/usherhq/usher/session"
)

// establish admits the person through the lifecycle (mapping, policy,
// binding, provisioning, audit all happen there) and issues the session.
func (h *Handler) establish(w http.ResponseWriter, r *http.Request, idp *IdP, id providers.Identity, rd string) {
	a, err := h.opt.Lifecycle.Admit(r.Context(), id, jit.LoginVia(id.IdP))
	if err != nil {
		h.refuseAdmission(w, r, id, err)
		return
	}
	p := a.Profile
	now := h.now()
	s := &session.Session{
		ID: randomID(), IdP: id.IdP, Subject: id.Subject,
		Username: p.Username, Email: p.Email, DisplayName: p.DisplayName, Groups: p.IdPGroups,
		Apps: a.Apps, LogoutHint: id.LogoutHint, Created: now, Seen: now,
	}
	for _, name := range h.opt.SessionAttributes {
		if v := p.Attributes[name]; v != "" {
			if s.Attributes == nil {
				s.Attributes = map[string]string{}
			}
			s.Attributes[name] = v
		}
	}
	err = h.opt.Codec.Save(w, s)
	if errors.Is(err, session.ErrTooLarge) && len(s.Groups) > 0 {
		// Too many IdP groups for a cookie: the person still gets in, the
		// apps get no groups header. Filter groups (mapping.groups.include)
		// to send them.
		h.log.Warn("session too large for the groups header; sending no groups", "idp", id.IdP, "subject", id.Subject,
			"groups", len(s.Groups), "request_id", requestID(r))
		s.Groups = nil
		err = h.opt.Codec.Save(w, s)
	}
	if err != nil {
		h.opt.Metrics.Login(id.IdP, metrics.OutcomeError, metrics.ReasonOther)
		h.fail(w, r, http.StatusInternalServerError, "Sign-in failed", "usher could not create your session.", err)
		return
	}
	h.opt.Metrics.Login(id.IdP, metrics.OutcomeOK, metrics.ReasonNone)
	h.log.Info("login", "idp", id.IdP, "subject", id.Subject, "username", p.Username, "queued", a.Queued, "request_id", requestID(r))
	w.Header().Set("Cache-Control", "no-store")
	http.Redirect(w, r, rd, http.StatusFound)
}

// admissionRefusal is how one kind of refused admission is answered.
type admissionRefusal struct {
	status         int
	outcome        string // metrics.Outcome*
	reason         string // metrics.Reason*
	title, message string
}

// refusalFor maps an admission error to its page, status and metric
// reason. It is the one place that does; anything it does not know is a
// technical failure.
func refusalFor(e *jit.AdmitError) admissionRefusal {
	if e == nil {
		return admissionRefusal{http.StatusInternalServerError, metrics.OutcomeError, metrics.ReasonOther,
			"Sign-in failed", "usher could not complete your sign-in. Try again in a moment."}
	}
	switch e.Kind {
	case jit.Denied:
		return admissionRefusal{http.StatusForbidden, metrics.OutcomeDenied, metrics.ReasonPolicy,
			"Access denied", "You signed in, but " + e.Reason + "."}
	case jit.Unmatched:
		return admissionRefusal{http.StatusForbidden, metrics.OutcomeRefused, metrics.ReasonOther,
			"Sign-in refused", "Your account could not be matched to a user of these applications. Ask your administrator; quote the request ID below."}
	case jit.UsernameTaken:
		return admissionRefusal{http.StatusForbidden, metrics.OutcomeRefused, metrics.ReasonUsernameTaken,
			"Account name already in use", "The user name " + e.Username + " already belongs to another account, so usher will not sign you in as that user. Ask your administrator to link the accounts."}
	case jit.AdoptionRefused:
		return admissionRefusal{http.StatusForbidden, metrics.OutcomeRefused, metrics.ReasonUsernameTaken,
			"Account not linked", "An account called " + e.Username + " already exists in " + strings.Join(e.Apps, ", ") + " and usher may not take it over for this sign-in option. Ask your administrator to link it to you; quote the request ID below."}
	case jit.AccessRemoved:
		return admissionRefusal{http.StatusForbidden, metrics.OutcomeDenied, metrics.ReasonPolicy,
			"Access removed", "Your access to these applications has been removed. Ask your administrator if this is a mistake."}
	case jit.ProvisioningFailed:
		return admissionRefusal{http.StatusServiceUnavailable, metrics.OutcomeError, metrics.ReasonProvisioning,
			"Your account could not be set up", "usher could not set up your account in " + strings.Join(e.Apps, ", ") + ". Try again in a few minutes."}
	case jit.StoreUnavailable:
		return admissionRefusal{http.StatusServiceUnavailable, metrics.OutcomeError, metrics.ReasonStore,
			"Sign-in is unavailable", "usher could not reach its database. Try again in a moment."}
	}
	return refusalFor(nil)
}

// refuseAdmission answers a login the lifecycle did not admit.
func (h *Handler) refuseAdmission(w http.ResponseWriter, r *http.Request, id providers.Identity, err error) {
	e := jit.AdmitErrorOf(err)
	rf := refusalFor(e)
	h.opt.Metrics.Login(id.IdP, rf.outcome, rf.reason)
	if rf.status == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", "30")
	}
	if e != nil && e.Kind == jit.AccessRemoved {
		// A deprovisioned person is a decision working as meant, not a
		// failure: logged at Info with who it was.
		h.log.Info("login refused: access removed", "idp", id.IdP, "subject", id.Subject, "username", e.Username,
			"apps", e.Apps, "request_id", requestID(r))
		err = nil // logged here; fail logs only causes
	}
	h.fail(w, r, rf.status, rf.title, rf.message, err)
}
