package proxy

import (
	"errors"
	"fmt"
	"net/http"
	"slices"

	"github.com/usherhq/usher/jit"
	"github.com/usherhq/usher/metrics"
	"github.com/usherhq/usher/providers"
)

// SAML single logout at /usher/saml/{idp}/slo. Two messages arrive here:
// the IdP's answer to the logout request usher sent when the person signed
// out of usher (sloReturn), and a logout request from the IdP when the
// person signed out at the IdP or at another of its services (sloRequest).

// slo serves /usher/saml/{idp}/slo, by either SAML binding (GET for
// HTTP-Redirect, POST for HTTP-POST).
func (h *Handler) slo(w http.ResponseWriter, r *http.Request) {
	idp := h.idpAt(r)
	if idp == nil {
		h.fail(w, r, http.StatusNotFound, "Not found", "There is no such identity provider.", nil)
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, callbackBodyLimit(idp.Provider))
	if lrh, ok := idp.Provider.(providers.LogoutRequestHandler); ok && lrh.IsLogoutRequest(r) {
		h.sloRequest(w, r, idp, lrh)
		return
	}
	h.sloReturn(w, r, idp)
}

// sloReturn is where a SAML IdP sends the browser back after the single
// logout usher started. usher cleared its own session before it sent the
// browser away, so a verified answer only confirms it; an answer usher
// cannot verify (SimpleSAMLphp does not sign it by default) is logged, and
// the person still sees that they are signed out. Nothing is ever cleared
// on an unverified answer, and a browser that still holds a valid session
// (a cross-site link here, not the end of a logout) is told that the
// sign-out was not confirmed.
func (h *Handler) sloReturn(w http.ResponseWriter, r *http.Request, idp *IdP) {
	lr, ok := idp.Provider.(providers.LogoutResponder)
	if !ok {
		h.fail(w, r, http.StatusNotFound, "Not found", "There is no such identity provider.", nil)
		return
	}
	err := lr.HandleLogoutResponse(r)
	if err == nil {
		h.opt.Codec.Clear(w)
		http.Redirect(w, r, "/usher/logged-out", http.StatusFound)
		return
	}
	if _, _, lerr := h.opt.Codec.Load(r); lerr == nil {
		h.fail(w, r, http.StatusBadRequest, "Sign-out not confirmed", "The identity provider's sign-out answer could not be accepted, and you are still signed in. Use the sign-out button to sign out.",
			fmt.Errorf("saml logout response at %s: %w", idp.Provider.ID(), err))
		return
	}
	h.log.Warn("saml logout response not accepted; the browser was already signed out of usher",
		"idp", idp.Provider.ID(), "err", err, "request_id", requestID(r))
	h.render(w, r, http.StatusOK, "message", messagePage{
		Title:   "Signed out",
		Message: "You are signed out of usher. " + idp.Name + " did not confirm that it signed you out too; close the browser to be sure.",
		Link:    "/",
	})
}

// sloRequest ends the sessions a verified logout request from the IdP
// names, on every replica, and sends the browser back to the IdP with the
// answer: success only when they were all ended.
func (h *Handler) sloRequest(w http.ResponseWriter, r *http.Request, idp *IdP, lrh providers.LogoutRequestHandler) {
	id := idp.Provider.ID()
	s, _, serr := h.opt.Codec.Load(r)
	var current *providers.Identity
	if serr == nil && s.IdP == id {
		current = &providers.Identity{IdP: s.IdP, Subject: s.Subject, LogoutHint: s.LogoutHint}
	}
	lr, err := lrh.HandleLogoutRequest(r.Context(), r, current)
	if err != nil {
		status, title := http.StatusBadGateway, "Sign-out failed"
		if errors.Is(err, providers.ErrRefused) {
			status, title = http.StatusBadRequest, "Sign-out request refused"
		}
		h.fail(w, r, status, title, "The sign-out request from "+idp.Name+" could not be accepted.",
			fmt.Errorf("saml logout request at %s: %w", id, err))
		return
	}

	ended := len(lr.Subjects) > 0
	if !ended {
		h.log.Warn("saml logout request names nobody usher can find: the subject comes from an attribute and the browser brought no session of that person",
			"idp", id, "request_id", requestID(r))
	}
	cause := jit.LoginVia(id)
	cause.Reason = "single logout requested by the IdP"
	for _, subject := range lr.Subjects {
		e := jit.Entry{Action: jit.ActLogout, Cause: cause, Subject: subject, Outcome: jit.ResultOK}
		if err := h.revokeIdentity(r, id, subject); err != nil {
			ended = false
			e.Outcome, e.Detail = jit.ResultError, err.Error()
			h.log.Error("revoke sessions at IdP logout", "idp", id, "subject", subject, "err", err, "request_id", requestID(r))
		} else {
			h.opt.Metrics.Revocation(metrics.SourceLogout)
		}
		h.audit(r, e)
	}
	if serr == nil && s.IdP == id && slices.Contains(lr.Subjects, s.Subject) {
		h.opt.Codec.Clear(w)
	}

	ch, err := lr.Answer(ended)
	if err != nil {
		h.log.Error("answer saml logout request", "idp", id, "err", err, "request_id", requestID(r))
		h.render(w, r, http.StatusOK, "message", messagePage{Title: "Signed out", Message: "You are signed out of usher.", Link: "/"})
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	if ch.Form == nil {
		http.Redirect(w, r, ch.URL, http.StatusFound)
		return
	}
	h.render(w, r, http.StatusOK, "post", postPage{URL: ch.URL, Form: ch.Form})
}

// revokeIdentity ends every session of (idp, subject) on every replica.
func (h *Handler) revokeIdentity(r *http.Request, idp, subject string) error {
	if h.opt.Sessions == nil {
		return errors.New("no shared session revocation is configured")
	}
	return h.opt.Sessions.RevokeIdentity(r.Context(), idp, subject)
}

// defaultCallbackBody bounds callback bodies of providers that name no
// bound of their own: an OIDC form_post is a few KiB.
const defaultCallbackBody = 1 << 20

// callbackBodyLimit is the outer bound on a callback or logout body at
// p's endpoints: p's own (a SAML response as large as max_response_bytes
// allows, base64 and URL encoded), or the default.
func callbackBodyLimit(p providers.Provider) int64 {
	if bl, ok := p.(providers.BodyLimiter); ok {
		if n := bl.MaxBodyBytes(); n > 0 {
			return n
		}
	}
	return defaultCallbackBody
}
