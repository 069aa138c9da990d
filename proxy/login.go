package proxy

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/usherhq/usher/jit"
	"github.com/usherhq/usher/metrics"
	"github.com/usherhq/usher/providers"
)

// flow is the per-login state kept in the encrypted flow cookie between
// Begin and the IdP's callback. Nothing in it is ever taken from the IdP.
type flow struct {
	IdP    string `json:"i"`
	State  []byte `json:"s"`
	Return string `json:"r"`
}

// FlowCookiePrefix starts the name of every login flow cookie; the flow
// ID completes it, so parallel logins in several tabs do not collide.
const FlowCookiePrefix = "usher_flow_"

// maxFlows is how many logins may be in flight in one browser (tabs)
// before the older flow cookies are dropped.
const maxFlows = 4

// login serves GET /usher/login: the chooser page, or straight to the IdP
// when only one is configured or ?idp= names one.
func (h *Handler) login(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	rd, err := safeReturn(q.Get("rd"), h.scheme, h.hosts)
	if err != nil {
		h.fail(w, r, http.StatusBadRequest, "Invalid return address", "The link you followed names a return address outside this site, so usher will not use it.", err)
		return
	}
	if id := q.Get("idp"); id != "" {
		idp := h.idps[id]
		if idp == nil {
			h.fail(w, r, http.StatusNotFound, "Unknown sign-in option", "There is no identity provider called "+id+".", nil)
			return
		}
		h.begin(w, r, idp, rd, q.Get("login_hint"))
		return
	}
	if len(h.order) == 1 {
		h.begin(w, r, h.order[0], rd, "")
		return
	}
	h.chooser(w, r, rd, "", "")
}

// discover serves the chooser's e-mail form: home-realm discovery by the
// domain of the address typed.
func (h *Handler) discover(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 16<<10)
	if err := r.ParseForm(); err != nil {
		h.fail(w, r, http.StatusBadRequest, "Invalid form", "The sign-in form could not be read.", err)
		return
	}
	rd, err := safeReturn(r.PostForm.Get("rd"), h.scheme, h.hosts)
	if err != nil {
		h.fail(w, r, http.StatusBadRequest, "Invalid return address", "The link you followed names a return address outside this site, so usher will not use it.", err)
		return
	}
	email := strings.TrimSpace(r.PostForm.Get("email"))
	at := strings.LastIndexByte(email, '@')
	if at < 1 || at == len(email)-1 {
		h.chooser(w, r, rd, email, "Enter your full work e-mail address, like name@example.com.")
		return
	}
	idp := h.domains[strings.ToLower(email[at+1:])]
	if idp == nil {
		h.chooser(w, r, rd, email, "No sign-in option is set up for "+email[at+1:]+". Choose one below.")
		return
	}
	h.begin(w, r, idp, rd, email)
}

func (h *Handler) begin(w http.ResponseWriter, r *http.Request, idp *IdP, rd, hint string) {
	flowID := randomID()
	ch, err := idp.Provider.Begin(r.Context(), flowID, hint)
	if err != nil {
		h.fail(w, r, http.StatusBadGateway, "Sign-in is unavailable", "usher could not start the sign-in with "+idp.Name+". Try again in a moment.", fmt.Errorf("begin login at %s: %w", idp.Provider.ID(), err))
		return
	}
	body, err := json.Marshal(flow{IdP: idp.Provider.ID(), State: ch.State, Return: rd})
	if err != nil {
		h.fail(w, r, http.StatusInternalServerError, "Sign-in failed", "usher could not start the sign-in.", err)
		return
	}
	sealed, err := h.opt.Codec.Seal("flow:"+flowID, body, h.now().Add(h.opt.FlowTimeout))
	if err != nil {
		h.fail(w, r, http.StatusInternalServerError, "Sign-in failed", "usher could not start the sign-in.", err)
		return
	}
	// Abandoned logins leave flow cookies behind until they expire; a
	// loop of them must not grow the Cookie header past what servers
	// accept. Beyond a few, the old ones go.
	prefix := h.opt.Codec.PrefixedName(FlowCookiePrefix)
	var stale []string
	for _, c := range r.Cookies() {
		if strings.HasPrefix(c.Name, prefix) {
			stale = append(stale, strings.TrimPrefix(c.Name, h.opt.Codec.PrefixedName("")))
		}
	}
	if len(stale) >= maxFlows {
		for _, name := range stale {
			h.opt.Codec.ClearCookie(w, name)
		}
	}
	h.opt.Codec.SetFlowCookie(w, FlowCookiePrefix+flowID, sealed, h.opt.FlowTimeout)
	w.Header().Set("Cache-Control", "no-store")
	if ch.Form == nil {
		http.Redirect(w, r, ch.URL, http.StatusFound)
		return
	}
	h.render(w, r, http.StatusOK, "post", postPage{URL: ch.URL, Form: ch.Form})
}

// callback finishes a login at /usher/{type}/{idp}/callback or .../acs.
func (h *Handler) callback(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("idp")
	idp := h.idpAt(r)
	if idp == nil {
		h.fail(w, r, http.StatusNotFound, "Unknown sign-in option", "There is no such identity provider.", nil)
		return
	}
	// Providers bound what they read themselves; this is the outer
	// limit, as large as the provider's own.
	r.Body = http.MaxBytesReader(w, r.Body, callbackBodyLimit(idp.Provider))
	var fl *flow
	if flowID := idp.Provider.FlowID(r); validFlowID(flowID) {
		name := FlowCookiePrefix + flowID
		if c, err := r.Cookie(h.opt.Codec.PrefixedName(name)); err == nil {
			h.opt.Codec.ClearCookie(w, name) // one use only
			raw, err := h.opt.Codec.Open("flow:"+flowID, c.Value)
			if err != nil {
				h.refuse(w, r, id, "", providers.Refused(providers.ReasonState, "flow cookie: %w", err), "Your sign-in took too long or was started in another browser. Please try again.")
				return
			}
			fl = new(flow)
			if err := json.Unmarshal(raw, fl); err != nil {
				h.refuse(w, r, id, "", providers.Refused(providers.ReasonState, "flow cookie: %w", err), "Your sign-in could not be completed. Please try again.")
				return
			}
			if fl.IdP != id {
				h.refuse(w, r, id, "", providers.Refused(providers.ReasonState, "flow started at %q answered at %q", fl.IdP, id), "The answer came from a different identity provider than the one you chose. Please try again.")
				return
			}
		}
	}
	var state []byte
	if fl != nil {
		state = fl.State
	}
	res, err := idp.Provider.Finish(r.Context(), r, state)
	if err != nil {
		if errors.Is(err, providers.ErrRefused) {
			h.refuse(w, r, id, "", err, "The identity provider's answer could not be accepted. Please try again.")
			return
		}
		h.opt.Metrics.Login(id, metrics.OutcomeError, metrics.ReasonIdPError)
		h.fail(w, r, http.StatusBadGateway, "Sign-in failed", "usher could not complete the sign-in with "+idp.Name+". Try again in a moment.", fmt.Errorf("finish login at %s: %w", id, err))
		return
	}
	rd := "/"
	if fl != nil {
		rd = fl.Return
	} else if res.ReturnTo != "" {
		if rd, err = safeReturn(res.ReturnTo, h.scheme, h.hosts); err != nil {
			rd = "/"
		}
	}
	h.establish(w, r, idp, res.Identity, rd)
}

// refuse answers a login the IdP's answer did not allow (a bad
// signature, a replay, a stale flow).
func (h *Handler) refuse(w http.ResponseWriter, r *http.Request, idp, subject string, err error, msg string) {
	h.opt.Metrics.Login(idp, metrics.OutcomeRefused, refusalReason(err))
	h.audit(r, jit.Entry{Action: jit.ActLoginRefused, Cause: jit.LoginVia(idp), Subject: subject, Outcome: jit.ResultRefused, Detail: err.Error()})
	h.fail(w, r, http.StatusForbidden, "Sign-in refused", msg, err)
}

// refusalReason is the metric reason of a refusal: the one the refusal
// carries (providers.Reason values are metrics' login reasons).
func refusalReason(err error) string {
	return string(providers.ReasonOf(err))
}

// audit records an entry through the one audit writer, which keeps it
// even when the browser has gone.
func (h *Handler) audit(r *http.Request, e jit.Entry) {
	if h.opt.Audit != nil {
		_ = h.opt.Audit.Record(r.Context(), e)
	}
}

// metadata serves a provider's metadata (SAML SP metadata).
func (h *Handler) metadata(w http.ResponseWriter, r *http.Request) {
	idp := h.idpAt(r)
	if idp == nil {
		h.fail(w, r, http.StatusNotFound, "Not found", "There is no such identity provider.", nil)
		return
	}
	m, ok := idp.Provider.(providers.Metadataer)
	if !ok {
		h.fail(w, r, http.StatusNotFound, "Not found", "This identity provider has no metadata.", nil)
		return
	}
	body, ctype, err := m.Metadata()
	if err != nil {
		h.fail(w, r, http.StatusInternalServerError, "Metadata unavailable", "usher could not build its metadata.", err)
		return
	}
	w.Header().Set("Content-Type", ctype)
	_, _ = w.Write(body)
}

// logoutPage asks for confirmation: logout changes state, so it only
// happens on a POST carrying the session's CSRF token.
func (h *Handler) logoutPage(w http.ResponseWriter, r *http.Request) {
	s, _, err := h.opt.Codec.Load(r)
	if err != nil {
		h.opt.Codec.Clear(w)
		http.Redirect(w, r, "/usher/logged-out", http.StatusFound)
		return
	}
	h.render(w, r, http.StatusOK, "logout", logoutPage{User: s.Username, Token: h.opt.Codec.CSRFToken(s)})
}

func (h *Handler) logout(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 16<<10)
	if err := r.ParseForm(); err != nil {
		h.fail(w, r, http.StatusBadRequest, "Invalid form", "The sign-out form could not be read.", err)
		return
	}
	s, _, err := h.opt.Codec.Load(r)
	if err != nil {
		h.opt.Codec.Clear(w)
		http.Redirect(w, r, "/usher/logged-out", http.StatusSeeOther)
		return
	}
	if !h.opt.Codec.CheckCSRF(s, r.PostForm.Get("csrf")) {
		h.fail(w, r, http.StatusForbidden, "Sign-out refused", "The sign-out form was not sent by this site. Use the sign-out button on the usher page.", errors.New("logout: bad CSRF token"))
		return
	}
	h.opt.Codec.Clear(w)
	shared := true
	if h.opt.Sessions != nil {
		if err := h.opt.Sessions.RevokeSession(r.Context(), s); err != nil {
			// This replica refuses the cookie already, and the session
			// layer keeps retrying until the store takes the revocation;
			// until then other replicas may accept a copy of the cookie.
			shared = false
			h.log.Error("revoke session at logout: not shared with the other replicas yet", "idp", s.IdP, "err", err, "request_id", requestID(r))
		}
	}
	h.audit(r, jit.Entry{Action: jit.ActLogout, Cause: jit.LoginVia(s.IdP), Subject: s.Subject, Username: s.Username, Outcome: jit.ResultOK})
	target := "/usher/logged-out"
	if idp := h.idps[s.IdP]; idp != nil {
		if lo, ok := idp.Provider.(providers.Logouter); ok {
			back := h.opt.PublicURL.JoinPath("/usher/logged-out").String()
			u, err := lo.LogoutURL(r.Context(), providers.Identity{IdP: s.IdP, Subject: s.Subject, LogoutHint: s.LogoutHint}, back)
			if err != nil {
				h.log.Warn("idp logout url", "idp", s.IdP, "err", err, "request_id", requestID(r))
			} else if u != "" {
				target = u
			}
		}
	}
	if !shared {
		h.render(w, r, http.StatusOK, "message", messagePage{Title: "Signed out",
			Message: "You are signed out of usher on this server. usher could not reach its database to tell its other servers yet; " +
				"it keeps trying, and until it gets through a copy of your session used elsewhere may still work for a short while.",
			Link: target})
		return
	}
	http.Redirect(w, r, target, http.StatusSeeOther)
}

func (h *Handler) loggedOut(w http.ResponseWriter, r *http.Request) {
	h.render(w, r, http.StatusOK, "message", messagePage{Title: "Signed out", Message: "You are signed out of usher.", Link: "/"})
}

// randomID returns 128 random bits, base64url encoded (22 characters).
func randomID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

func validFlowID(s string) bool {
	if len(s) != 22 {
		return false
	}
	_, err := base64.RawURLEncoding.DecodeString(s)
	return err == nil
}
