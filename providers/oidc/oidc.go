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
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	gooidc "github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"

	"github.com/usherhq/usher/config"
	"github.com/usherhq/usher/providers"
)

// Config is an OIDC IdP's `config:` block.
type Config struct {
	// Issuer is the IdP's issuer URL; discovery is fetched from
	// {issuer}/.well-known/openid-configuration and ID tokens must carry it.
	Issuer       string        `yaml:"issuer"`
	ClientID     string        `yaml:"client_id"`
	ClientSecret config.Secret `yaml:"client_secret"`
	// Scopes default to openid, profile, email; openid is required.
	Scopes []string `yaml:"scopes"`
	// UseUserinfo merges the userinfo endpoint's claims into the ID
	// token's (for IdPs that keep groups out of the ID token).
	UseUserinfo bool `yaml:"use_userinfo"`
	// RedirectURL overrides {PublicURL}/usher/oidc/{id}/callback.
	RedirectURL string `yaml:"redirect_url"`
	// ExtraAuthParams are added to the authorization request (prompt,
	// domain_hint, ...). Protocol parameters cannot be overridden.
	ExtraAuthParams map[string]string `yaml:"extra_auth_params"`
	// AllowedAlgs restrict ID token signatures; only asymmetric algorithms
	// are accepted, default RS256, RS384, RS512, ES256, ES384, ES512,
	// PS256, PS384, PS512, EdDSA.
	AllowedAlgs []string `yaml:"allowed_algs"`
	// Skew is the clock skew tolerated on ID token times (exp, iat),
	// default 60s.
	Skew time.Duration `yaml:"skew"`
	// SubjectClaim names the ID token claim that is the subject, default
	// "sub". Entra ID's sub is pairwise per application while its SCIM
	// provisioning and Graph use the object ID: there, say "oid". A token
	// without the claim is refused.
	SubjectClaim string `yaml:"subject_claim"`
	// EmailVerified says when the email claim counts: "claim" (default)
	// only with email_verified true beside it; "assume" also without any
	// email_verified claim, for IdPs that vouch for every address they
	// send and never say so (Entra ID). email_verified false never
	// counts. An address that does not count is passed on as
	// unverified_email, never as email.
	EmailVerified string `yaml:"email_verified"`

	// Now is the clock (tests set it); default time.Now.
	Now func() time.Time `yaml:"-"`
}

var _ providers.Config = (*Config)(nil)

var asymmetricAlgs = []string{
	gooidc.RS256, gooidc.RS384, gooidc.RS512,
	gooidc.ES256, gooidc.ES384, gooidc.ES512,
	gooidc.PS256, gooidc.PS384, gooidc.PS512,
	gooidc.EdDSA,
}

// reservedParams are set by the flow itself; letting configuration
// override them would undo PKCE, nonce or state binding.
var reservedParams = []string{
	"client_id", "client_secret", "code_challenge", "code_challenge_method",
	"login_hint", "nonce", "redirect_uri", "response_type", "scope", "state",
	"request", "request_uri",
}

const (
	defaultSkew = 60 * time.Second
	maxSkew     = 5 * time.Minute

	// maxDiscoveryBytes bounds the discovery document; real ones are a few
	// KiB.
	maxDiscoveryBytes = 256 << 10
	// maxResponseBytes bounds every other IdP response (JWKS, token,
	// userinfo); a JWKS holds a handful of keys, a userinfo answer with
	// hundreds of groups stays far below it.
	maxResponseBytes = 1 << 20
	// keyFetchTimeout bounds how long a login waits for the JWKS when the
	// ID token names a key usher has not cached (a key rotation): a slow
	// JWKS endpoint must not hold logins for the client's whole timeout.
	// Tokens signed with cached keys never wait for it.
	keyFetchTimeout = 3 * time.Second
)

// Email verification modes.
const (
	EmailVerifiedClaim  = "claim"
	EmailVerifiedAssume = "assume"
)

// ClaimUnverifiedEmail is where an email claim that does not count goes,
// so the admin can still see it in the login's explanation.
const ClaimUnverifiedEmail = "unverified_email"

// withDefaults is the one place defaults are applied.
func (c Config) withDefaults() Config {
	if len(c.Scopes) == 0 {
		c.Scopes = []string{gooidc.ScopeOpenID, "profile", "email"}
	}
	if len(c.AllowedAlgs) == 0 {
		c.AllowedAlgs = slices.Clone(asymmetricAlgs)
	}
	if c.Skew == 0 {
		c.Skew = defaultSkew
	}
	if c.SubjectClaim == "" {
		c.SubjectClaim = "sub"
	}
	if c.EmailVerified == "" {
		c.EmailVerified = EmailVerifiedClaim
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

// ClaimDefaults implements providers.Config: OIDC's standard claims.
func (c *Config) ClaimDefaults() config.ClaimDefaults {
	return config.ClaimDefaults{Username: "preferred_username", DisplayName: "name"}
}

// Validate reports every problem in the block as a *config.FieldError
// naming the key it concerns.
func (c *Config) Validate() []error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, &config.FieldError{Field: key, Msg: fmt.Sprintf(format, args...)})
	}
	if c.Issuer == "" {
		bad("issuer", "required")
	} else if err := checkURL(c.Issuer); err != nil {
		bad("issuer", "%v", err)
	}
	if c.ClientID == "" {
		bad("client_id", "required")
	}
	if len(c.Scopes) > 0 && !slices.Contains(c.Scopes, gooidc.ScopeOpenID) {
		bad("scopes", "must include %q", gooidc.ScopeOpenID)
	}
	if c.RedirectURL != "" {
		if err := checkURL(c.RedirectURL); err != nil {
			bad("redirect_url", "%v", err)
		}
	}
	for k := range c.ExtraAuthParams {
		if slices.Contains(reservedParams, k) {
			bad("extra_auth_params."+k, "is set by usher itself and cannot be overridden")
		}
	}
	for _, a := range c.AllowedAlgs {
		switch {
		case slices.Contains(asymmetricAlgs, a):
		case a == "none" || strings.HasPrefix(a, "HS"):
			bad("allowed_algs", "%q is never allowed: ID tokens must be signed with the IdP's private key", a)
		default:
			bad("allowed_algs", "unknown algorithm %q (allowed: %s)", a, strings.Join(asymmetricAlgs, ", "))
		}
	}
	if c.Skew < 0 || c.Skew > maxSkew {
		bad("skew", "must be between 0 and %s", maxSkew)
	}
	if slices.Contains(protocolClaims, c.SubjectClaim) && c.SubjectClaim != "sub" {
		bad("subject_claim", "%q describes the token, not the person", c.SubjectClaim)
	}
	switch c.EmailVerified {
	case "", EmailVerifiedClaim, EmailVerifiedAssume:
	default:
		bad("email_verified", "%q is neither %s nor %s", c.EmailVerified, EmailVerifiedClaim, EmailVerifiedAssume)
	}
	return errs
}

// checkURL accepts absolute https URLs, and http only on loopback (demo and
// tests), because codes and tokens travel over these connections.
func checkURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("not a URL: %v", err)
	}
	if u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		return fmt.Errorf("%q must be an absolute URL without query or fragment", raw)
	}
	switch u.Scheme {
	case "https":
		return nil
	case "http":
		h := u.Hostname()
		if ip := net.ParseIP(h); h == "localhost" || (ip != nil && ip.IsLoopback()) {
			return nil
		}
		return fmt.Errorf("%q must use https (http only on loopback)", raw)
	default:
		return fmt.Errorf("%q must use https", raw)
	}
}

// Open validates the block, resolves the client secret and runs discovery.
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
type Provider struct {
	id          string
	issuer      string
	clientID    string
	oauth       oauth2.Config
	op          *gooidc.Provider
	verifier    *gooidc.IDTokenVerifier
	algs        []string
	authParams  []oauth2.AuthCodeOption
	useUserinfo bool
	now         func() time.Time
	skew        time.Duration
	subject     string // the claim that is the subject
	assumeEmail bool   // email_verified: assume
	// requireIss is the discovery flag
	// authorization_response_iss_parameter_supported (RFC 9207).
	requireIss bool
	endSession string
	client     *http.Client
}

var (
	_ providers.Provider = (*Provider)(nil)
	_ providers.Logouter = (*Provider)(nil)
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
	client := boundedClient(deps.Client, 15*time.Second, discovery)

	op, err := gooidc.NewProvider(gooidc.ClientContext(ctx, client), cfg.Issuer)
	if err != nil {
		return nil, fmt.Errorf("oidc %s: discovery at %s: %w", id, cfg.Issuer, err)
	}
	var meta struct {
		EndSession string   `json:"end_session_endpoint"`
		IssParam   bool     `json:"authorization_response_iss_parameter_supported"`
		Algs       []string `json:"id_token_signing_alg_values_supported"`
	}
	if err := op.Claims(&meta); err != nil {
		return nil, fmt.Errorf("oidc %s: discovery document: %w", id, err)
	}
	if len(meta.Algs) > 0 && !slices.ContainsFunc(meta.Algs, func(a string) bool { return slices.Contains(cfg.AllowedAlgs, a) }) {
		logger.Warn("oidc: the IdP announces no allowed ID token algorithm; logins will fail",
			"idp", id, "announced", meta.Algs, "allowed", cfg.AllowedAlgs)
	}

	var jwks struct {
		URI string `json:"jwks_uri"`
	}
	if err := op.Claims(&jwks); err != nil || jwks.URI == "" {
		return nil, fmt.Errorf("oidc %s: discovery document has no jwks_uri", id)
	}
	// Keys come through their own client with a short timeout; go-oidc
	// keeps the keys it has when a fetch fails, so tokens signed with
	// cached keys verify while the JWKS endpoint is slow or down.
	keyClient := boundedClient(deps.Client, keyFetchTimeout, discovery)
	keyClient.Timeout = keyFetchTimeout
	keys := gooidc.NewRemoteKeySet(gooidc.ClientContext(context.Background(), keyClient), jwks.URI)

	p := &Provider{
		id:       id,
		issuer:   cfg.Issuer,
		clientID: cfg.ClientID,
		oauth: oauth2.Config{
			ClientID:     cfg.ClientID,
			ClientSecret: secret,
			Endpoint:     op.Endpoint(),
			RedirectURL:  redirect,
			Scopes:       cfg.Scopes,
		},
		op: op,
		// The verifier checks signatures (with the allowed algorithms
		// only) and parses; verifyIDToken makes every other check itself,
		// with its clock and skew, so each refusal carries its reason.
		verifier: gooidc.NewVerifier(cfg.Issuer, keySet{keys}, &gooidc.Config{
			SupportedSigningAlgs: cfg.AllowedAlgs,
			SkipClientIDCheck:    true,
			SkipIssuerCheck:      true,
			SkipExpiryCheck:      true,
		}),
		algs:        cfg.AllowedAlgs,
		useUserinfo: cfg.UseUserinfo,
		now:         cfg.Now,
		skew:        cfg.Skew,
		subject:     cfg.SubjectClaim,
		assumeEmail: cfg.EmailVerified == EmailVerifiedAssume,
		requireIss:  meta.IssParam,
		endSession:  meta.EndSession,
		client:      client,
	}
	for k, v := range cfg.ExtraAuthParams {
		p.authParams = append(p.authParams, oauth2.SetAuthURLParam(k, v))
	}
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
	return &providers.Challenge{URL: p.oauth.AuthCodeURL(flowID, opts...), State: raw}, nil
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
	} else if p.requireIss {
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
	tok, err := p.oauth.Exchange(ctx, code, oauth2.VerifierOption(st.Verifier))
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
	idt, claims, err := p.verifyIDToken(ctx, rawID, st.Nonce)
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
		if err := p.mergeUserinfo(ctx, tok, idt.Subject, claims); err != nil {
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

// keyErrSlot is the context key under which verifyIDToken asks keySet to
// keep the error of the signature check, which go-oidc's verifier
// flattens to text.
type keyErrSlot struct{}

// keySet is go-oidc's key set, reporting its error through the context.
type keySet struct{ remote gooidc.KeySet }

func (k keySet) VerifySignature(ctx context.Context, jwt string) ([]byte, error) {
	payload, err := k.remote.VerifySignature(ctx, jwt)
	if slot, ok := ctx.Value(keyErrSlot{}).(*error); ok && err != nil {
		*slot = err
	}
	return payload, err
}

// verifyIDToken checks signature (allowed asymmetric algorithms only),
// issuer, audience, azp, expiry, not-before, issue time and nonce, and
// returns the raw claims. go-oidc checks the signature and parses; every
// other check is made here, so each refusal says its reason.
func (p *Provider) verifyIDToken(ctx context.Context, raw, nonce string) (*gooidc.IDToken, map[string]any, error) {
	alg, err := jwtAlg(raw)
	if err != nil {
		return nil, nil, p.refuse(providers.ReasonOther, "malformed ID token: %v", err)
	}
	if !slices.Contains(p.algs, alg) {
		return nil, nil, p.refuse(providers.ReasonSignature, "ID token signed with %q, which is not allowed", alg)
	}
	var keyErr error
	vctx, cancel := context.WithTimeout(context.WithValue(ctx, keyErrSlot{}, &keyErr), keyFetchTimeout)
	defer cancel()
	idt, err := p.verifier.Verify(vctx, raw)
	switch {
	case err == nil:
	case keyErr != nil && errors.Unwrap(keyErr) != nil:
		// go-oidc wraps (%w) only the failure to fetch the JWKS, which
		// is an outage, not a bad token. Its other key set errors are
		// plain: the token's signature is wrong.
		return nil, nil, fmt.Errorf("oidc %s: verify ID token: %w", p.id, keyErr)
	case keyErr != nil:
		return nil, nil, p.refuse(providers.ReasonSignature, "ID token signature: %v", keyErr)
	default:
		// Parsing: a malformed token or claims.
		return nil, nil, p.refuse(providers.ReasonOther, "ID token rejected: %v", err)
	}
	if idt.Issuer != p.issuer && !(p.issuer == googleIssuer && idt.Issuer == googleIssuerNoScheme) {
		return nil, nil, p.refuse(providers.ReasonAudience, "ID token issued by a different provider: %q, expected %q", idt.Issuer, p.issuer)
	}
	if !slices.Contains(idt.Audience, p.clientID) {
		return nil, nil, p.refuse(providers.ReasonAudience, "ID token for %q, expected audience %q", idt.Audience, p.clientID)
	}
	var claims map[string]any
	if err := decodeClaims(idt, &claims); err != nil {
		return nil, nil, p.refuse(providers.ReasonOther, "ID token claims: %v", err)
	}
	// A time within exactly skew of its limit is accepted.
	now := p.now()
	late, early := now.Add(-p.skew), now.Add(p.skew)
	if idt.Expiry.Before(late) {
		return nil, nil, p.refuse(providers.ReasonExpired, "ID token expired at %s", idt.Expiry.UTC().Format(time.RFC3339))
	}
	if idt.IssuedAt.After(early) {
		return nil, nil, p.refuse(providers.ReasonExpired, "ID token issued in the future (iat %s, now %s, skew %s)",
			idt.IssuedAt.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339), p.skew)
	}
	if nbf, ok := numericDate(claims["nbf"]); ok && nbf.After(early) {
		return nil, nil, p.refuse(providers.ReasonExpired, "ID token not valid before %s (now %s, skew %s)",
			nbf.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339), p.skew)
	}
	if subtle.ConstantTimeCompare([]byte(idt.Nonce), []byte(nonce)) != 1 {
		return nil, nil, p.refuse(providers.ReasonState, "ID token nonce does not match this login flow")
	}
	if idt.Subject == "" {
		return nil, nil, p.refuse(providers.ReasonOther, "ID token has no subject")
	}
	azp, hasAzp := claims["azp"].(string)
	switch {
	case hasAzp && azp != p.clientID:
		return nil, nil, p.refuse(providers.ReasonAudience, "ID token authorized party %q is not client %q", azp, p.clientID)
	case !hasAzp && (claims["azp"] != nil || len(idt.Audience) > 1):
		return nil, nil, p.refuse(providers.ReasonAudience, "ID token has several audiences but no authorized party (azp)")
	}
	return idt, claims, nil
}

// Google's ID tokens sometimes name the issuer without its scheme; go-oidc
// accepts that for Google alone, and so does usher.
const (
	googleIssuer         = "https://accounts.google.com"
	googleIssuerNoScheme = "accounts.google.com"
)

// numericDate reads a JWT NumericDate claim (seconds since the epoch,
// possibly with a fraction).
func numericDate(v any) (time.Time, bool) {
	n, ok := v.(json.Number)
	if !ok {
		return time.Time{}, false
	}
	f, err := n.Float64()
	if err != nil {
		return time.Time{}, false
	}
	sec := int64(f)
	return time.Unix(sec, int64((f-float64(sec))*1e9)), true
}

// jwtAlg reads the alg header without trusting anything else in the token.
func jwtAlg(raw string) (string, error) {
	head, _, ok := strings.Cut(raw, ".")
	if !ok {
		return "", errors.New("not a JWS")
	}
	b, err := base64.RawURLEncoding.DecodeString(head)
	if err != nil {
		return "", fmt.Errorf("header: %v", err)
	}
	var h struct {
		Alg string `json:"alg"`
	}
	if err := json.Unmarshal(b, &h); err != nil {
		return "", fmt.Errorf("header: %v", err)
	}
	return h.Alg, nil
}

// decodeClaims keeps numbers as written (json.Number), so 1700000000 does
// not become 1.7e+09.
func decodeClaims(src interface{ Claims(any) error }, into *map[string]any) error {
	var raw json.RawMessage
	if err := src.Claims(&raw); err != nil {
		return err
	}
	dec := json.NewDecoder(strings.NewReader(string(raw)))
	dec.UseNumber()
	return dec.Decode(into)
}

// protocolClaims describe the token, not the person; the ID token's values
// win over userinfo's.
var protocolClaims = []string{"iss", "sub", "aud", "exp", "iat", "nbf", "auth_time", "nonce", "azp", "at_hash", "c_hash", "acr", "amr", "sid", "jti"}

func (p *Provider) mergeUserinfo(ctx context.Context, tok *oauth2.Token, sub string, claims map[string]any) error {
	ui, err := p.op.UserInfo(ctx, oauth2.StaticTokenSource(tok))
	if err != nil {
		return fmt.Errorf("oidc %s: userinfo: %w", p.id, err)
	}
	if ui.Subject != sub {
		return p.refuse(providers.ReasonOther, "userinfo subject %q differs from the ID token's %q", ui.Subject, sub)
	}
	var extra map[string]any
	if err := decodeClaims(ui, &extra); err != nil {
		return fmt.Errorf("oidc %s: userinfo claims: %w", p.id, err)
	}
	if _, ok := extra["email"]; ok {
		// An address and its verification travel together: the ID
		// token's email_verified says nothing about userinfo's address.
		delete(claims, "email_verified")
	}
	for k, v := range extra {
		if !slices.Contains(protocolClaims, k) && k != p.subject {
			claims[k] = v
		}
	}
	return nil
}

// dropped are token mechanics that would only clutter an Identity.
var dropped = []string{"nonce", "at_hash", "c_hash", "_claim_names", "_claim_sources"}

// flatten turns JSON claims into string lists: scalars as text, arrays of
// scalars as lists, nested objects under dotted keys (realm_access.roles).
func flatten(claims map[string]any) map[string][]string {
	out := make(map[string][]string, len(claims))
	for k, v := range claims {
		if slices.Contains(dropped, k) {
			continue
		}
		flattenInto(out, k, v)
	}
	// Of the distributed claims, only the fact that the groups are
	// elsewhere matters (Entra's group overage): the mapping must not
	// take a missing groups claim for "in no group". The endpoint itself
	// is never called, so it is not kept.
	if names, ok := claims["_claim_names"].(map[string]any); ok {
		if src, ok := names["groups"].(string); ok {
			out["_claim_names.groups"] = []string{src}
		}
	}
	return out
}

func flattenInto(out map[string][]string, key string, v any) {
	switch v := v.(type) {
	case nil:
	case string:
		out[key] = append(out[key], v)
	case json.Number:
		out[key] = append(out[key], v.String())
	case bool:
		out[key] = append(out[key], fmt.Sprint(v))
	case float64:
		out[key] = append(out[key], fmt.Sprint(v))
	case []any:
		for _, e := range v {
			flattenInto(out, key, e)
		}
	case map[string]any:
		for k, e := range v {
			flattenInto(out, key+"."+k, e)
		}
	}
}

// LogoutURL is the IdP's end_session_endpoint with client_id and
// post_logout_redirect_uri; no id_token_hint, so the session cookie need
// not carry the ID token. "" when the IdP has no such endpoint.
func (p *Provider) LogoutURL(_ context.Context, _ providers.Identity, returnTo string) (string, error) {
	if p.endSession == "" {
		return "", nil
	}
	u, err := url.Parse(p.endSession)
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

// boundedClient is base (or, without one, a client with timeout) with
// every response body bounded: the discovery document at discovery to
// maxDiscoveryBytes, anything else to maxResponseBytes. go-oidc reads
// discovery, JWKS and userinfo bodies whole, so the bound must sit below it.
func boundedClient(base *http.Client, timeout time.Duration, discovery string) *http.Client {
	c := &http.Client{Timeout: timeout}
	if base != nil {
		cp := *base
		c = &cp
	}
	rt := c.Transport
	if rt == nil {
		rt = http.DefaultTransport
	}
	c.Transport = &boundedTransport{base: rt, discovery: discovery}
	return c
}

// boundedTransport fails a response whose body is longer than its limit,
// rather than handing on a truncated one.
type boundedTransport struct {
	base      http.RoundTripper
	discovery string
}

func (t *boundedTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := t.base.RoundTrip(r)
	if err != nil {
		return nil, err
	}
	limit := int64(maxResponseBytes)
	u := *r.URL
	u.RawQuery, u.Fragment = "", ""
	if u.String() == t.discovery {
		limit = maxDiscoveryBytes
	}
	if resp.ContentLength > limit {
		resp.Body.Close()
		return nil, fmt.Errorf("%s: response of %d bytes is larger than %d", u.Redacted(), resp.ContentLength, limit)
	}
	resp.Body = &boundedBody{rc: resp.Body, left: limit, limit: limit, url: u.Redacted()}
	return resp, nil
}

type boundedBody struct {
	rc    io.ReadCloser
	left  int64
	limit int64
	url   string
}

func (b *boundedBody) Read(p []byte) (int, error) {
	if b.left < 0 {
		return 0, b.tooLarge()
	}
	if int64(len(p)) > b.left+1 {
		p = p[:b.left+1]
	}
	n, err := b.rc.Read(p)
	b.left -= int64(n)
	if b.left < 0 {
		// One byte past the limit: the body is too large. Hand back
		// what fits, never the byte beyond it.
		return n + int(b.left), b.tooLarge()
	}
	return n, err
}

func (b *boundedBody) tooLarge() error {
	return fmt.Errorf("%s: response body larger than %d bytes", b.url, b.limit)
}

func (b *boundedBody) Close() error { return b.rc.Close() }
