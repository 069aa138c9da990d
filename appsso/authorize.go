package appsso

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"slices"
	"time"

	"github.com/zitadel/oidc/v3/pkg/oidc"
	"github.com/zitadel/oidc/v3/pkg/op"

	"github.com/usherhq/usher/jit"
	"github.com/usherhq/usher/session"
)

// maxCodeGrant bounds the sealed grant in a code: codes travel in the
// callback URL, and Tomcat's default request header limit is 8 KiB. Groups
// that do not fit are left out of the tokens (and logged).
const maxCodeGrant = 2500

// maxEcho bounds state and nonce (the Atlassian client sends 43
// characters of each).
const maxEcho = 512

// authorize is the authorization endpoint, and usher's login for the app:
//
//   - the client and redirect URI are checked first; an unknown client or
//     a redirect URI not registered byte for byte gets an error page and
//     never a redirect (the URI is not trusted yet);
//   - then the request is validated by the op package (scopes, response
//     type, prompt, PKCE method), whose errors go back to the redirect URI;
//   - a person with a usher session that may enter the app gets a code at
//     once; one without is sent through /usher/login, which admits and
//     provisions them like any other login, and comes back to continue.
func (p *Provider) authorize(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	req, err := op.ParseAuthorizeRequest(r, p.op.Decoder())
	if err != nil {
		p.fail(w, r, http.StatusBadRequest, "Invalid sign-in request", "The application sent a sign-in request usher cannot read.", err)
		return
	}
	c := p.clients[req.ClientID]
	if c == nil {
		p.fail(w, r, http.StatusBadRequest, "Unknown application", "The application that sent you here is not registered at usher. Ask your administrator.",
			errors.New("appsso: authorize: unknown client "+req.ClientID))
		return
	}
	if !slices.Contains(c.Client.RedirectURIs, req.RedirectURI) {
		p.fail(w, r, http.StatusBadRequest, "Unregistered return address", "The application asked usher to send you back to an address it has not registered, so usher will not. Ask your administrator.",
			errors.New("appsso: authorize: client "+c.ID+" sent an unregistered redirect_uri "+req.RedirectURI))
		return
	}
	if req.ResponseType != oidc.ResponseTypeCode {
		// The code flow only; the error goes back in the query, where a
		// code client looks for it.
		req.ResponseType, req.ResponseMode = oidc.ResponseTypeCode, ""
		op.AuthRequestError(w, r, req, &oidc.Error{ErrorType: "unsupported_response_type", Description: "only response_type=code is offered"}, p.op)
		return
	}
	ctx := r.Context()
	if _, err := op.ValidateAuthRequestClient(ctx, req, c, p.op.IDTokenHintVerifier(ctx)); err != nil {
		op.AuthRequestError(w, r, req, err, p.op)
		return
	}
	if req.RequestParam != "" {
		op.AuthRequestError(w, r, req, oidc.ErrRequestNotSupported(), p.op)
		return
	}
	// The request travels sealed through usher's login, whose return
	// address is bounded (2 KiB): keep what the client echoes small.
	if len(req.State) > maxEcho || len(req.Nonce) > maxEcho || len(req.CodeChallenge) > 128 {
		op.AuthRequestError(w, r, req, oidc.ErrInvalidRequest().WithDescription("state, nonce or code_challenge too long"), p.op)
		return
	}
	if c.Public && req.CodeChallenge == "" {
		op.AuthRequestError(w, r, req, oidc.ErrInvalidRequest().WithDescription("this client must send a PKCE code_challenge"), p.op)
		return
	}
	p.proceed(w, r, c, pendingFrom(req, p.now()), false)
}

// continueLogin is where usher's login sends the browser back.
func (p *Provider) continueLogin(w http.ResponseWriter, r *http.Request) {
	raw, err := p.seal.Open(purposePending, r.URL.Query().Get("id"))
	if err != nil {
		p.fail(w, r, http.StatusBadRequest, "Sign-in expired", "Your sign-in took too long or the link is broken. Go back to the application and sign in again.", err)
		return
	}
	pend := new(pending)
	if err := json.Unmarshal(raw, pend); err != nil {
		p.fail(w, r, http.StatusBadRequest, "Sign-in expired", "Your sign-in could not be completed. Go back to the application and sign in again.", err)
		return
	}
	// A reload may have removed the client or the redirect URI since.
	c := p.clients[pend.Client]
	if c == nil || !slices.Contains(c.Client.RedirectURIs, pend.Redirect) {
		p.fail(w, r, http.StatusBadRequest, "Unknown application", "The application that sent you here is no longer registered at usher. Ask your administrator.",
			errors.New("appsso: continue: client or redirect URI no longer registered: "+pend.Client))
		return
	}
	p.proceed(w, r, c, pend, true)
}

var errStale = errors.New("appsso: session older than max_age")

// proceed issues a code for the person of the usher session, or gets them
// one. returned says the browser already went through usher's login for
// this request: it is not sent again (a browser that drops cookies would
// loop).
func (p *Provider) proceed(w http.ResponseWriter, r *http.Request, c *client, pend *pending, returned bool) {
	now := p.now()
	s, refresh, err := p.opt.Sessions.Load(r) // refuses revoked sessions too
	if err == nil && pend.MaxAge != nil {
		// prompt=login (max_age 0) or max_age: a login made during this
		// flow counts as fresh, so the person is not sent round again.
		fresh := s.Created.UnixNano() >= pend.Created
		if !fresh && now.Sub(s.Created) > time.Duration(*pend.MaxAge)*time.Second {
			err = errStale
		}
	}
	if err != nil {
		switch {
		case pend.None:
			op.AuthRequestError(w, r, pend, oidc.ErrLoginRequired(), p.op)
		case returned:
			p.fail(w, r, http.StatusUnauthorized, "Sign-in did not complete", "usher could not see your sign-in. Allow cookies for this site, then go back to the application and sign in again.", err)
		default:
			p.toLogin(w, r, pend)
		}
		return
	}
	if refresh {
		if err := p.opt.Sessions.Save(w, s); err != nil {
			p.log.Warn("appsso: refresh session cookie", "err", err)
		}
	}
	if s.Apps != nil && !slices.Contains(s.Apps, c.App) || p.opt.Admits != nil && !p.opt.Admits(s.IdP, c.App) {
		p.audit(r, jit.Entry{Action: jit.ActLoginRefused, Cause: jit.LoginVia(s.IdP), Subject: s.Subject, Username: s.Username, App: c.App,
			Outcome: jit.ResultRefused, Detail: "no access to " + c.App + " (OpenID Provider client " + c.ID + ")"})
		p.fail(w, r, http.StatusForbidden, "No access to "+c.App, "Your account is not allowed to use "+c.App+". Ask your administrator if you need it.", nil)
		return
	}
	g := p.grantFor(c, pend, s)
	ar, err := codeRequest(g)
	if err == nil && len(ar.id) > maxCodeGrant && len(g.Groups) > 0 {
		p.log.Warn("appsso: too many groups for a code; the tokens carry none", "client", c.ID, "groups", len(g.Groups))
		g.Groups = nil
		ar, err = codeRequest(g)
	}
	if err != nil {
		op.AuthRequestError(w, r, pend, oidc.ErrServerError().WithParent(err), p.op)
		return
	}
	p.log.Info("appsso: code issued", "client", c.ID, "app", c.App, "idp", s.IdP, "username", s.Username)
	w.Header().Set("Cache-Control", "no-store")
	op.AuthResponse(ar, p.op, w, r)
}

func (p *Provider) grantFor(c *client, pend *pending, s *session.Session) *grant {
	g := &grant{
		pending: *pend, ID: randomID(),
		Sub: subject(s.IdP, s.Subject), Username: s.Username, Email: s.Email, Name: s.DisplayName,
		AuthTime: s.Created.UnixNano(), IdP: s.IdP, Subject: s.Subject, SessionCreated: s.Created.UnixNano(),
	}
	if c.Groups && slices.Contains(pend.Scopes, scopeGroups) {
		g.Groups = s.Groups
		if g.Groups == nil {
			g.Groups = []string{}
		}
	}
	return g
}

// toLogin sends the browser through usher's login with the request sealed
// into the return address, which is a path on usher's own host (the
// login's return-URL rules accept nothing else).
func (p *Provider) toLogin(w http.ResponseWriter, r *http.Request, pend *pending) {
	b, err := json.Marshal(pend)
	if err != nil {
		op.AuthRequestError(w, r, pend, oidc.ErrServerError().WithParent(err), p.op)
		return
	}
	sealed, err := p.seal.Seal(purposePending, b, p.now().Add(p.opt.FlowTimeout))
	if err != nil {
		op.AuthRequestError(w, r, pend, oidc.ErrServerError().WithParent(err), p.op)
		return
	}
	back := Path + "/continue?" + url.Values{"id": {sealed}}.Encode()
	login := p.opt.PublicURL.JoinPath("/usher/login")
	login.RawQuery = url.Values{"rd": {back}}.Encode()
	w.Header().Set("Cache-Control", "no-store")
	http.Redirect(w, r, login.String(), http.StatusFound)
}

func (p *Provider) audit(r *http.Request, e jit.Entry) {
	if p.opt.Audit != nil {
		_ = p.opt.Audit.Record(r.Context(), e)
	}
}

// randomID returns 128 random bits, base64url (22 characters).
func randomID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}
