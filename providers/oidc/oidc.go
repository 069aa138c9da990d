// Package oidc owns usher's generic OpenID Connect relying party: the
// authorization code flow with PKCE (S256) and nonce, RFC 9207 issuer
// checks, ID token verification restricted to asymmetric algorithms, an
// optional userinfo merge, claim flattening into providers.Identity and
// RP-initiated logout. Vendor quirks (Entra, Okta, Google) belong in thin
// option sets around this package, not in it.
package oidc

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	gooidc "github.com/coreos/go-oidc/v3/oidc"
	"github.com/jonboulle/clockwork"
	"golang.org/x/oauth2"

	"github.com/usherhq/usher/providers"
)

// Open validates the block, resolves the client secret and loads
// discovery: from the IdP, else from the cache, else in the background
// (the provider then opens unavailable rather than failing). Close stops
// the background work.
func (c *Config) Open(ctx context.Context, id string, deps providers.Deps) (providers.Provider, error) {
	if errs := c.Validate(); len(errs) > 0 {
		return nil, fmt.Errorf("oidc %s: invalid config: %w", id, errors.Join(errs...))
	}
	var secret string
	if !c.ClientSecret.IsZero() {
		s, err := c.ClientSecret.Resolve()
		if err != nil {
			return nil, fmt.Errorf("oidc %s: client_secret: %w", id, err)
		}
		secret = s
	}
	return c.open(ctx, id, deps, secret)
}

// Provider is one OIDC IdP. Safe for concurrent use.
//
// What discovery says is loaded at Open, from the IdP or, when the IdP
// does not answer, from the last good copy in the cache. With neither,
// the provider opens unavailable: Begin fails with an
// *providers.UnavailableError and a background loop fetches the document
// again, with backoff, until it loads or Close is called.
type Provider struct {
	id          string
	name        string
	issuer      string
	clientID    string
	secret      string
	redirect    string
	scopes      []string
	algs        []string
	authParams  []oauth2.AuthCodeOption
	useUserinfo bool
	now         func() time.Time
	skew        time.Duration
	subject     string // the claim that is the subject
	assumeEmail bool   // email_verified: assume
	// discoveryURL is {issuer}/.well-known/openid-configuration.
	discoveryURL string
	// client fetches discovery and talks to the token and userinfo
	// endpoints; keyClient fetches the JWKS with a short timeout.
	client    *http.Client
	keyClient *http.Client
	log       *slog.Logger
	cache     providers.Cache
	clock     clockwork.Clock

	// disc is nil until a discovery document is loaded; a later one
	// replaces it whole, and a login in flight keeps the copy it read.
	disc atomic.Pointer[discovered]
	// loadErr is the last failure to fetch discovery, nil after a
	// success.
	loadErr atomic.Pointer[error]
	keys    readyCache

	stopOnce  sync.Once
	stopRetry context.CancelFunc
	retryDone chan struct{}
}

var (
	_ providers.Provider = (*Provider)(nil)
	_ providers.Logouter = (*Provider)(nil)
	_ providers.Checker  = (*Provider)(nil)
	_ io.Closer          = (*Provider)(nil)
)

func (c *Config) open(ctx context.Context, id string, deps providers.Deps, secret string) (*Provider, error) {
	cfg := c.withDefaults()
	redirect := cfg.RedirectURL
	if redirect == "" {
		if deps.PublicURL == nil {
			return nil, fmt.Errorf("oidc %s: no public URL to derive the redirect URL from", id)
		}
		redirect = deps.PublicURL.JoinPath("usher", "oidc", id, "callback").String()
	}
	logger := deps.Log
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	discovery := strings.TrimSuffix(cfg.Issuer, "/") + "/.well-known/openid-configuration"
	// Keys come through their own client with a short timeout; go-oidc
	// keeps the keys it has when a fetch fails, so tokens signed with
	// cached keys verify while the JWKS endpoint is slow or down.
	keyClient := boundedClient(deps.Client, keyFetchTimeout, discovery)
	keyClient.Timeout = keyFetchTimeout
	p := &Provider{
		id:           id,
		name:         deps.Name,
		issuer:       cfg.Issuer,
		clientID:     cfg.ClientID,
		secret:       secret,
		redirect:     redirect,
		scopes:       cfg.Scopes,
		algs:         cfg.AllowedAlgs,
		useUserinfo:  cfg.UseUserinfo,
		now:          cfg.Now,
		skew:         cfg.Skew,
		subject:      cfg.SubjectClaim,
		assumeEmail:  cfg.EmailVerified == EmailVerifiedAssume,
		discoveryURL: discovery,
		client:       boundedClient(deps.Client, 15*time.Second, discovery),
		keyClient:    keyClient,
		log:          logger.With("idp", id),
		cache:        deps.Cache,
		clock:        deps.Clock,
	}
	if p.name == "" {
		p.name = id
	}
	if p.clock == nil {
		p.clock = clockwork.NewRealClock()
	}
	for k, v := range cfg.ExtraAuthParams {
		p.authParams = append(p.authParams, oauth2.SetAuthURLParam(k, v))
	}
	p.openDiscovery(ctx)
	return p, nil
}

// ID is the configured IdP id.
func (p *Provider) ID() string { return p.id }

// Type is "oidc".
func (p *Provider) Type() string { return "oidc" }

// flowState is what Begin hands usher to keep in the encrypted flow cookie.
type flowState struct {
	IdP      string `json:"idp"`
	Issuer   string `json:"iss"`
	FlowID   string `json:"flow"`
	Nonce    string `json:"nonce"`
	Verifier string `json:"pkce"`
}

// Begin builds the authorization request: code flow, PKCE S256, a fresh
// nonce, state = flowID.
func (p *Provider) Begin(_ context.Context, flowID, loginHint string) (*providers.Challenge, error) {
	if flowID == "" {
		return nil, fmt.Errorf("oidc %s: begin: empty flow id", p.id)
	}
	d := p.disc.Load()
	if d == nil {
		return nil, p.Available()
	}
	st := flowState{
		IdP:      p.id,
		Issuer:   p.issuer,
		FlowID:   flowID,
		Nonce:    randomString(),
		Verifier: oauth2.GenerateVerifier(),
	}
	raw, err := json.Marshal(st)
	if err != nil {
		return nil, fmt.Errorf("oidc %s: encode flow state: %w", p.id, err)
	}
	opts := slices.Clone(p.authParams)
	opts = append(opts,
		oauth2.S256ChallengeOption(st.Verifier),
		gooidc.Nonce(st.Nonce),
	)
	if loginHint != "" {
		opts = append(opts, oauth2.SetAuthURLParam("login_hint", loginHint))
	}
	return &providers.Challenge{URL: d.oauth.AuthCodeURL(flowID, opts...), State: raw}, nil
}

func randomString() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (Go 1.24+)
	return base64.RawURLEncoding.EncodeToString(b)
}

// callbackParams reads the authorization response from the query, or from
// the body for response_mode=form_post.
func callbackParams(r *http.Request) url.Values {
	if err := r.ParseForm(); err != nil {
		return r.URL.Query()
	}
	return r.Form
}

// FlowID returns the callback's state parameter.
func (p *Provider) FlowID(r *http.Request) string {
	return callbackParams(r).Get("state")
}

// Finish checks the authorization response against the flow that started
// it, redeems the code at this IdP's token endpoint with the PKCE verifier
// and verifies the ID token.
func (p *Provider) Finish(ctx context.Context, r *http.Request, state []byte) (*providers.Result, error) {
	if state == nil {
		return nil, p.refuse(providers.ReasonState, "callback without a login flow (expired, or not started by usher)")
	}
	var st flowState
	if err := json.Unmarshal(state, &st); err != nil {
		return nil, p.refuse(providers.ReasonState, "unreadable flow state")
	}
	if st.IdP != p.id || st.Issuer != p.issuer {
		return nil, p.refuse(providers.ReasonState, "flow was started for IdP %q (issuer %s)", st.IdP, st.Issuer)
	}
	if st.FlowID == "" || st.Nonce == "" || st.Verifier == "" {
		return nil, p.refuse(providers.ReasonState, "incomplete flow state")
	}
	d := p.disc.Load()
	if d == nil {
		return nil, p.Available()
	}
	q := callbackParams(r)
	if got := q.Get("state"); subtle.ConstantTimeCompare([]byte(got), []byte(st.FlowID)) != 1 {
		if got == "" {
			return nil, p.refuse(providers.ReasonState, "callback has no state parameter")
		}
		return nil, p.refuse(providers.ReasonState, "state parameter does not belong to this login flow")
	}
	// RFC 9207: the iss parameter tells which IdP produced the response, so
	// a response from another IdP cannot be replayed here (mix-up attack).
	if iss, ok := q["iss"]; ok {
		if len(iss) != 1 || iss[0] != p.issuer {
			return nil, p.refuse(providers.ReasonAudience, "authorization response from issuer %q, expected %q", strings.Join(iss, ","), p.issuer)
		}
	} else if d.requireIss {
		return nil, p.refuse(providers.ReasonAudience, "authorization response lacks the iss parameter the IdP promises (RFC 9207)")
	}
	if e := q.Get("error"); e != "" {
		if d := q.Get("error_description"); d != "" {
			return nil, p.refuse(providers.ReasonIdPError, "IdP answered %s: %s", e, d)
		}
		return nil, p.refuse(providers.ReasonIdPError, "IdP answered %s", e)
	}
	code := q.Get("code")
	if code == "" {
		return nil, p.refuse(providers.ReasonOther, "callback has no code")
	}

	ctx = gooidc.ClientContext(ctx, p.client)
	tok, err := d.oauth.Exchange(ctx, code, oauth2.VerifierOption(st.Verifier))
	if err != nil {
		var re *oauth2.RetrieveError
		if errors.As(err, &re) && re.ErrorCode == "invalid_grant" {
			// The code is unknown, used, expired, issued to another
			// client or for another PKCE verifier: a refusal, not an
			// outage. A code used twice is the common case.
			return nil, p.refuse(providers.ReasonReplay, "token endpoint rejected the code: %s %s", re.ErrorCode, re.ErrorDescription)
		}
		return nil, p.outage(ctx, fmt.Errorf("oidc %s: exchange code: %w", p.id, err))
	}
	rawID, _ := tok.Extra("id_token").(string)
	if rawID == "" {
		return nil, p.refuse(providers.ReasonOther, "token response has no id_token")
	}
	idt, claims, err := p.verifyWith(ctx, d, rawID, st.Nonce)
	if err != nil {
		return nil, p.outage(ctx, err)
	}
	if idt.AccessTokenHash != "" {
		if err := idt.VerifyAccessToken(tok.AccessToken); err != nil {
			return nil, p.refuse(providers.ReasonSignature, "access token does not match the ID token's at_hash")
		}
	}
	subject, err := p.subjectOf(claims)
	if err != nil {
		return nil, err
	}
	if p.useUserinfo {
		if err := p.mergeUserinfo(ctx, d, tok, idt.Subject, claims); err != nil {
			return nil, p.outage(ctx, err)
		}
	}
	p.checkEmail(claims)
	return &providers.Result{Identity: providers.Identity{
		IdP:     p.id,
		Subject: subject,
		Claims:  flatten(claims),
	}}, nil
}

// outage passes err on, unless it is a technical failure that came after
// the request's context ended: then the browser went away (or usher is
// stopping), which is no failure of the IdP and must not count as one.
func (p *Provider) outage(ctx context.Context, err error) error {
	if ctx.Err() == nil || errors.Is(err, providers.ErrRefused) {
		return err
	}
	return p.refuse(providers.ReasonOther, "request cancelled before the login finished (the browser went away?): %v", err)
}

func (p *Provider) refuse(reason providers.Reason, format string, args ...any) error {
	return providers.Refused(reason, "oidc %s: "+format, append([]any{p.id}, args...)...)
}

// subjectOf reads the configured subject claim from the verified ID
// token's claims: a non-empty string (or number, written as is).
func (p *Provider) subjectOf(claims map[string]any) (string, error) {
	var s string
	switch v := claims[p.subject].(type) {
	case string:
		s = v
	case json.Number:
		s = v.String()
	case nil:
		return "", p.refuse(providers.ReasonOther, "ID token has no %q claim for the subject", p.subject)
	default:
		return "", p.refuse(providers.ReasonOther, "ID token claim %q is not a single value, so it cannot be the subject", p.subject)
	}
	if s == "" {
		return "", p.refuse(providers.ReasonOther, "ID token claim %q for the subject is empty", p.subject)
	}
	return s, nil
}

// checkEmail keeps the email claim only when it counts: beside an
// email_verified claim that is true, or, with email_verified: assume,
// beside none at all. An explicit false never counts. An address that
// does not count moves to unverified_email, where the login's explanation
// still shows it but no mapping of "email" reads it: it must not reach an
// app account or the e-mail header.
func (p *Provider) checkEmail(claims map[string]any) {
	email, ok := claims["email"]
	if !ok {
		return
	}
	switch v := claims["email_verified"].(type) {
	case bool:
		if v {
			return
		}
	case string:
		// Some IdPs (older Cognito pools, a few bridges) send the
		// boolean as text.
		if v == "true" {
			return
		}
	case nil:
		if p.assumeEmail {
			return
		}
	}
	delete(claims, "email")
	claims[ClaimUnverifiedEmail] = email
}

// LogoutURL is the IdP's end_session_endpoint with client_id and
// post_logout_redirect_uri; no id_token_hint, so the session cookie need
// not carry the ID token. "" when the IdP has no such endpoint, or while
// no discovery document is loaded (usher's own session is gone either way).
func (p *Provider) LogoutURL(_ context.Context, _ providers.Identity, returnTo string) (string, error) {
	d := p.disc.Load()
	if d == nil || d.endSession == "" {
		return "", nil
	}
	u, err := url.Parse(d.endSession)
	if err != nil {
		return "", fmt.Errorf("oidc %s: end_session_endpoint: %w", p.id, err)
	}
	q := u.Query()
	q.Set("client_id", p.clientID)
	if returnTo != "" {
		q.Set("post_logout_redirect_uri", returnTo)
	}
	u.RawQuery = q.Encode()
	return u.String(), nil
}
