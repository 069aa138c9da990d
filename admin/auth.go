package admin

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/usherhq/usher/session"
)

// principal is the admin behind a request.
type principal struct {
	// Actor goes into audit events: "admin:token" or "admin:<username>".
	Actor string
	// csrf is the session-like value CSRF tokens derive from; nil when
	// the request carried no ambient credential (a bearer token), which a
	// forged cross-site request cannot carry either.
	csrf *session.Session
	// cookie is set when the admin signed in with the token form.
	cookie bool
}

type principalKey struct{}

func principalOf(r *http.Request) principal {
	p, _ := r.Context().Value(principalKey{}).(principal)
	return p
}

var (
	errNoAuth   = errors.New("admin: not signed in")
	errBadToken = errors.New("admin: wrong bearer token")
)

// notInGroupError is an usher session without the admin group: signed in,
// but not an admin.
type notInGroupError struct{ user, group string }

func (e *notInGroupError) Error() string {
	return fmt.Sprintf("admin: %s is not in group %q", e.user, e.group)
}

// cookiePayload is sealed into the admin cookie. T ties it to the token
// it was issued for, so changing the token signs every browser out.
type cookiePayload struct {
	ID string `json:"i"`
	T  string `json:"t"`
}

func (h *handler) tokenOK(t string) bool {
	if h.o.Token == "" {
		return false
	}
	sum := sha256.Sum256([]byte(t))
	// Comparing digests keeps the comparison constant-time in the
	// token's length too.
	return subtle.ConstantTimeCompare(sum[:], h.tokenSum[:]) == 1
}

func (h *handler) tokenTag() string {
	return base64.RawURLEncoding.EncodeToString(h.tokenSum[:16])
}

// authenticate finds the admin behind r: a bearer token (the only way
// into the API), else the admin cookie, else an usher session with the
// admin group.
func (h *handler) authenticate(r *http.Request) (principal, error) {
	if a := r.Header.Get("Authorization"); a != "" {
		scheme, tok, _ := strings.Cut(a, " ")
		if strings.EqualFold(scheme, "Bearer") && h.tokenOK(strings.TrimSpace(tok)) {
			return principal{Actor: "admin:token"}, nil
		}
		return principal{}, errBadToken
	}
	if isAPI(r) || h.o.Codec == nil {
		return principal{}, errNoAuth
	}
	if ck, err := r.Cookie(CookieName); err == nil && h.o.Token != "" {
		if plain, err := h.o.Codec.Open("admin", ck.Value); err == nil {
			var p cookiePayload
			if json.Unmarshal(plain, &p) == nil && p.ID != "" &&
				subtle.ConstantTimeCompare([]byte(p.T), []byte(h.tokenTag())) == 1 {
				// The prefix keeps these IDs apart from usher session IDs,
				// so their CSRF tokens never coincide.
				return principal{Actor: "admin:token", csrf: &session.Session{ID: "admin-cookie:" + p.ID}, cookie: true}, nil
			}
		}
	}
	if h.o.SSO != nil {
		s, _, err := h.o.Codec.Load(r)
		if err == nil {
			if s.IdP == h.o.SSO.IdP && slices.Contains(s.Groups, h.o.SSO.Group) {
				return principal{Actor: "admin:" + s.Username, csrf: s}, nil
			}
			return principal{}, &notInGroupError{user: s.Username, group: h.o.SSO.Group}
		}
	}
	return principal{}, errNoAuth
}

// gate admits admins and refuses everyone else: 401 JSON for the API and
// for scripts with a wrong token, the login page for browsers, 403 for a
// browser POST without its CSRF token.
func (h *handler) gate(w http.ResponseWriter, r *http.Request) (principal, bool) {
	p, err := h.authenticate(r)
	var nig *notInGroupError
	switch {
	case err == nil:
	case isAPI(r) || errors.Is(err, errBadToken):
		if errors.Is(err, errBadToken) {
			h.log.Warn("admin: wrong bearer token", "path", r.URL.Path, "remote", r.RemoteAddr)
		}
		w.Header().Set("WWW-Authenticate", `Bearer realm="usher admin"`)
		writeJSON(w, http.StatusUnauthorized, apiError{Error: "authentication required: Authorization: Bearer <admin token>"})
		return p, false
	case errors.As(err, &nig):
		h.log.Warn("admin: refused session without the admin group", "user", nig.user, "group", nig.group, "path", r.URL.Path)
		h.renderLogin(w, r, http.StatusForbidden, "/admin/",
			fmt.Sprintf("You are signed in as %s, who is not in the admin group %q.", nig.user, nig.group))
		return p, false
	default:
		rd := "/admin/"
		if r.Method == http.MethodGet || r.Method == http.MethodHead {
			rd = r.URL.RequestURI()
		}
		http.Redirect(w, r, "/admin/login?"+url.Values{"rd": {rd}}.Encode(), http.StatusSeeOther)
		return p, false
	}
	if p.csrf != nil && r.Method != http.MethodGet && r.Method != http.MethodHead {
		if !h.o.Codec.CheckCSRF(p.csrf, r.PostFormValue("csrf")) {
			h.log.Warn("admin: POST without a valid CSRF token", "actor", p.Actor, "path", r.URL.Path)
			h.render(w, r, http.StatusForbidden, "message", "Refused",
				messageData{Message: "This form is stale or did not come from the admin pages. Go back, reload the page and try again.", Err: true})
			return p, false
		}
	}
	return p, true
}

// csrfToken is the token forms of p's pages carry; "" for bearer admins.
func (h *handler) csrfToken(p principal) string {
	if p.csrf == nil || h.o.Codec == nil {
		return ""
	}
	return h.o.Codec.CSRFToken(p.csrf)
}

type loginData struct {
	Message  string
	Return   string
	Token    bool
	SSO      *SSO
	Back     string // the admin address to come back to after SSO
	CanLogin bool
}

func (h *handler) renderLogin(w http.ResponseWriter, r *http.Request, status int, rd, msg string) {
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	d := loginData{
		Message: msg, Return: rd, Token: h.o.Token != "" && h.o.Codec != nil, SSO: h.o.SSO,
		Back: scheme + "://" + r.Host + rd,
	}
	d.CanLogin = d.Token || (d.SSO != nil && h.o.Codec != nil)
	h.render(w, r, status, "login", "Admin sign-in", d)
}

func (h *handler) loginPage(w http.ResponseWriter, r *http.Request) {
	rd := safeReturn(r.URL.Query().Get("rd"))
	if _, err := h.authenticate(r); err == nil {
		http.Redirect(w, r, rd, http.StatusSeeOther)
		return
	}
	h.renderLogin(w, r, http.StatusOK, rd, "")
}

func (h *handler) loginSubmit(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, maxForm)
	rd := safeReturn(r.PostFormValue("rd"))
	if h.o.Codec == nil || h.o.Token == "" {
		h.renderLogin(w, r, http.StatusBadRequest, rd, "Sign-in with the admin token is not configured.")
		return
	}
	if !h.tokenOK(r.PostFormValue("token")) {
		h.log.Warn("admin: wrong token at sign-in", "remote", r.RemoteAddr)
		h.renderLogin(w, r, http.StatusUnauthorized, rd, "That token is not the admin token.")
		return
	}
	var id [16]byte
	rand.Read(id[:]) // never fails since Go 1.24
	plain, _ := json.Marshal(cookiePayload{ID: base64.RawURLEncoding.EncodeToString(id[:]), T: h.tokenTag()})
	sealed, err := h.o.Codec.Seal("admin", plain, h.now().Add(cookieTTL))
	if err != nil {
		h.fail(w, r, http.StatusInternalServerError, "The admin cookie could not be sealed.", err)
		return
	}
	http.SetCookie(w, h.cookie(r, sealed, cookieTTL))
	h.log.Info("admin signed in with the token", "remote", r.RemoteAddr)
	http.Redirect(w, r, rd, http.StatusSeeOther)
}

// cookie is host-only and SameSite=Strict: the admin listener has its own
// port and no cross-site flows, so the browser never needs to send it
// from elsewhere. Secure follows this listener's own TLS, not the public
// one's, because the admin port is often plain HTTP on loopback.
func (h *handler) cookie(r *http.Request, value string, ttl time.Duration) *http.Cookie {
	c := &http.Cookie{
		Name: CookieName, Value: value, Path: "/", HttpOnly: true,
		Secure: r.TLS != nil, SameSite: http.SameSiteStrictMode,
		MaxAge: int(ttl / time.Second),
	}
	if ttl <= 0 {
		c.MaxAge = -1
	}
	return c
}

func (h *handler) logout(w http.ResponseWriter, r *http.Request) {
	p := principalOf(r)
	http.SetCookie(w, h.cookie(r, "", 0))
	if !p.cookie && p.csrf != nil {
		h.render(w, r, http.StatusOK, "message", "Signed out", messageData{
			Message: "You reached the admin pages through your usher session; sign out of usher to end it."})
		return
	}
	http.Redirect(w, r, "/admin/login", http.StatusSeeOther)
}

// safeReturn keeps the post-login redirect on the admin pages.
func safeReturn(rd string) string {
	u, err := url.Parse(rd)
	if err != nil || u.Scheme != "" || u.Host != "" || u.User != nil ||
		!strings.HasPrefix(rd, "/admin") || strings.ContainsAny(rd, "\\\r\n") || strings.HasPrefix(rd, "/admin/login") {
		return "/admin/"
	}
	return rd
}
