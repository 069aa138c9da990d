package proxy

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"

	"github.com/usherhq/usher/providers"
	"github.com/usherhq/usher/session"
	"github.com/usherhq/usher/store"
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
	h.opt.Codec.SetFlowCookie(w, FlowCookiePrefix+flowID, sealed, h.opt.FlowTimeout)
	w.Header().Set("Cache-Control", "no-store")
	if ch.Form == nil {
		http.Redirect(w, r, ch.URL, http.StatusFound)
		return
	}
	h.render(w, r, http.StatusOK, "post", postPage{URL: ch.URL, Form: ch.Form})
}

// callback finishes a login at /usher/{typ}/{idp}/callback or .../acs.
func (h *Handler) callback(typ string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		id := r.PathValue("idp")
		idp := h.idps[id]
		if idp == nil || idp.Provider.Type() != typ {
			h.fail(w, r, http.StatusNotFound, "Unknown sign-in option", "There is no such identity provider.", nil)
			return
		}
		var fl *flow
		if flowID := idp.Provider.FlowID(r); validFlowID(flowID) {
			name := FlowCookiePrefix + flowID
			if c, err := r.Cookie(h.opt.Codec.PrefixedName(name)); err == nil {
				h.opt.Codec.ClearCookie(w, name) // one use only
				raw, err := h.opt.Codec.Open("flow:"+flowID, c.Value)
				if err != nil {
					h.refuse(w, r, id, "", fmt.Errorf("flow cookie: %w", err), "Your sign-in took too long or was started in another browser. Please try again.")
					return
				}
				fl = new(flow)
				if err := json.Unmarshal(raw, fl); err != nil {
					h.refuse(w, r, id, "", fmt.Errorf("flow cookie: %w", err), "Your sign-in could not be completed. Please try again.")
					return
				}
				if fl.IdP != id {
					h.refuse(w, r, id, "", fmt.Errorf("flow started at %q answered at %q", fl.IdP, id), "The answer came from a different identity provider than the one you chose. Please try again.")
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
}

// establish binds the identity, records the login and issues the session.
func (h *Handler) establish(w http.ResponseWriter, r *http.Request, idp *IdP, id providers.Identity, rd string) {
	ctx := r.Context()
	now := h.now()
	p, err := profileOf(idp, id)
	if err != nil {
		h.refuse(w, r, id.IdP, id.Subject, err, "Your account could not be mapped to a user name: "+err.Error()+".")
		return
	}
	_, err = h.opt.Store.Bind(ctx, store.Binding{IdP: id.IdP, Subject: id.Subject, Username: p.Username, CreatedAt: now})
	if errors.Is(err, store.ErrUsernameTaken) {
		h.audit(r, store.Event{Action: "login.refused", IdP: id.IdP, Subject: id.Subject, Username: p.Username, Outcome: "refused", Detail: "username bound to another identity"})
		h.fail(w, r, http.StatusForbidden, "Account name already in use", "The user name "+p.Username+" already belongs to another account, so usher will not sign you in as that user. Ask your administrator to link the accounts.", err)
		return
	}
	if err == nil {
		err = h.opt.Store.RecordLogin(ctx, id.IdP, id.Subject, now)
	}
	if err != nil {
		h.fail(w, r, http.StatusServiceUnavailable, "Sign-in is unavailable", "usher could not record your sign-in. Try again in a moment.", fmt.Errorf("record login of %s/%s: %w", id.IdP, id.Subject, err))
		return
	}
	h.audit(r, store.Event{Action: "login", IdP: id.IdP, Subject: id.Subject, Username: p.Username, Outcome: "ok"})
	s := &session.Session{
		ID: randomID(), IdP: id.IdP, Subject: id.Subject,
		Username: p.Username, Email: p.Email, DisplayName: p.DisplayName, Groups: p.Groups,
		LogoutHint: id.LogoutHint, Created: now, Seen: now,
	}
	if err := h.opt.Codec.Save(w, s); err != nil {
		h.fail(w, r, http.StatusInternalServerError, "Sign-in failed", "usher could not create your session.", err)
		return
	}
	h.log.Info("login", "idp", id.IdP, "subject", id.Subject, "username", p.Username, "request_id", requestID(r))
	w.Header().Set("Cache-Control", "no-store")
	http.Redirect(w, r, rd, http.StatusFound)
}

// profile is what the session carries about a person.
type profile struct {
	Username, Email, DisplayName string
	Groups                       []string
}

// profileOf derives the profile from an identity's claims. The username
// is normalised by one rule, Unicode NFKC then lowercase, and refused when
// it holds anything but letters, digits and . _ @ + -, so that two
// spellings can never silently become one account.
func profileOf(idp *IdP, id providers.Identity) (profile, error) {
	claim := idp.Claims.Username
	if claim == "" {
		claim = "nameid"
	}
	raw := id.Claim(claim)
	if raw == "" {
		return profile{}, fmt.Errorf("the identity provider sent no %q claim", claim)
	}
	u, err := NormalizeUsername(raw)
	if err != nil {
		return profile{}, err
	}
	return profile{
		Username:    u,
		Email:       id.Claim(idp.Claims.Email),
		DisplayName: id.Claim(idp.Claims.DisplayName),
		Groups:      id.Claims[idp.Claims.Groups],
	}, nil
}

// NormalizeUsername applies usher's username rule: Unicode NFKC, then
// lowercase, then only ASCII letters, digits and . _ @ + - are allowed.
// Input that NFKC would change (full-width letters, the Kelvin sign,
// ligatures) is refused rather than folded, so that two different IdP
// spellings can never silently become one app account; the identity
// binding in the store is the second line of defence.
func NormalizeUsername(raw string) (string, error) {
	if !utf8.ValidString(raw) {
		return "", errors.New("user name is not valid UTF-8")
	}
	n := norm.NFKC.String(raw)
	if n != raw {
		return "", fmt.Errorf("user name %q holds compatibility characters", raw)
	}
	if len(n) == 0 || len(n) > 255 {
		return "", fmt.Errorf("user name %q is empty or too long", raw)
	}
	// Check before lowercasing: Unicode lowercasing maps some non-ASCII
	// letters into ASCII (U+0130 "İ" becomes "i").
	for _, c := range n {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '@' || c == '+' || c == '-') {
			return "", fmt.Errorf("user name %q holds the character %q, which is not allowed", raw, c)
		}
	}
	u := strings.ToLower(n)
	return u, nil
}

func (h *Handler) refuse(w http.ResponseWriter, r *http.Request, idp, subject string, err error, msg string) {
	h.audit(r, store.Event{Action: "login.refused", IdP: idp, Subject: subject, Outcome: "refused", Detail: err.Error()})
	h.fail(w, r, http.StatusForbidden, "Sign-in refused", msg, err)
}

func (h *Handler) audit(r *http.Request, e store.Event) {
	if e.Time.IsZero() {
		e.Time = h.now()
	}
	if e.Actor == "" {
		e.Actor = "login"
	}
	if err := h.opt.Store.Append(r.Context(), e); err != nil {
		h.log.Error("audit", "err", err, "action", e.Action, "idp", e.IdP, "request_id", requestID(r))
	}
}

// metadata serves SAML SP metadata.
func (h *Handler) metadata(w http.ResponseWriter, r *http.Request) {
	idp := h.idps[r.PathValue("idp")]
	if idp == nil || idp.Provider.Type() != "saml" {
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

// sloReturn is where a SAML IdP sends the browser back after single logout.
func (h *Handler) sloReturn(w http.ResponseWriter, r *http.Request) {
	idp := h.idps[r.PathValue("idp")]
	if idp == nil || idp.Provider.Type() != "saml" {
		h.fail(w, r, http.StatusNotFound, "Not found", "There is no such identity provider.", nil)
		return
	}
	if lr, ok := idp.Provider.(providers.LogoutResponder); ok {
		if err := lr.HandleLogoutResponse(r); err != nil {
			h.log.Warn("saml logout response", "idp", idp.Provider.ID(), "err", err, "request_id", requestID(r))
		}
	}
	h.opt.Codec.Clear(w)
	http.Redirect(w, r, "/usher/logged-out", http.StatusFound)
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
	if h.opt.Revocations != nil {
		h.opt.Revocations.Add(s.ID, s.Created.Add(h.opt.Codec.Absolute()))
	}
	h.audit(r, store.Event{Action: "logout", IdP: s.IdP, Subject: s.Subject, Username: s.Username, Outcome: "ok"})
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
