package atlassiantest

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io"
	"mime"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// The built-in OpenID Connect client of Jira, Confluence and Bitbucket
// Data Center ("SSO for Atlassian Data Center", admin page
// "Authentication methods"), emulated to shared/reference/
// atlassian-sso-and-cloud.md part A, so that usher's OpenID Provider can
// be tested against what the real client does (§ numbers below are that
// page's). One OIDC IdP is configured, with id 1. What the reference marks
// [U] is noted where it is used.

// SSO is the emulated app's OIDC IdP configuration: the fields an admin
// fills in on "Authentication methods" (§2.2, §2.3).
type SSO struct {
	// BaseURL is the product's base URL, with any context path. The
	// redirect URI is BaseURL without trailing "/" plus
	// /plugins/servlet/oidc/callback (§3).
	BaseURL string
	// IssuerURL is "Issuer URL": discovery is fetched from it, and the ID
	// token's iss must equal it byte for byte (§5, §10).
	IssuerURL    string
	ClientID     string
	ClientSecret string
	// AdditionalScopes follow "openid" in the request (§6).
	AdditionalScopes []string
	// UsernameClaim is the "Username claim" mapping expression; empty is
	// ${sub}. A bare name without ${} is taken literally (§11).
	UsernameClaim string
	// JIT is "Just-in-time provisioning"; nil is off (§13).
	JIT *SSOJIT
	// VerifySignature checks the ID token's signature against the JWKS.
	// The observed build does not (§10); later builds may [U].
	VerifySignature bool
	// ShowLoginForm keeps the product's own login form. Off, and with one
	// IdP, pages send unauthenticated visitors straight to SSO (§17 [U]).
	ShowLoginForm bool
	// HTTP is the back-channel client (discovery, token, userinfo); its
	// deadline stands for the client's 10 s connect / 120 s read timeouts.
	HTTP *http.Client
}

// SSOJIT is the jit-configuration sub-entity (§2.3).
type SSOJIT struct {
	DisplayName string // mapping expression, e.g. ${name}
	Email       string // mapping expression, e.g. ${email}
	Groups      string // claim name whose value is a string array
	// AdditionalScopes are requested only when JIT is on.
	AdditionalScopes []string
}

const (
	ssoCallbackPath = "/plugins/servlet/oidc/callback"
	ssoLoginPath    = "/plugins/servlet/external-login/"
	ssoInitiatePath = "/plugins/servlet/oidc/initiate-login"
	// ssoGrace is the life of per-login state (§7).
	ssoGrace = 300 * time.Second
	// ssoSkew is the ID token clock skew allowance (§10).
	ssoSkew = 60 * time.Second
	// productSession is the product's session cookie.
	productSession = "JSESSIONID"
)

// ssoState is the client's state: configuration, discovered endpoints,
// the cluster-wide login-data cache, product sessions, JIT links.
type ssoState struct {
	cfg      SSO
	basePath string
	endpoints
	mu       sync.Mutex
	logins   map[string]ssoLogin // by state (§7)
	sessions map[string]string   // product session ID → lower-case username
	jitIDs   map[*user]string    // jit_idp_id attribute (§13)
	errors   []string            // messages of failed logins, for tests
}

type endpoints struct{ authorize, token, userinfo, jwks string }

type ssoLogin struct {
	nonce, target string
	created       time.Time
}

// EnableSSO configures the emulated app's OIDC client and runs discovery
// (§5). It fails as the app's "Fill using discovery" would.
func (s *Server) EnableSSO(ctx context.Context, cfg SSO) error {
	if cfg.HTTP == nil {
		cfg.HTTP = &http.Client{Timeout: 30 * time.Second}
	}
	cfg.BaseURL = strings.TrimRight(cfg.BaseURL, "/")
	bu, err := url.Parse(cfg.BaseURL)
	if err != nil || bu.Host == "" {
		return fmt.Errorf("atlassiantest: sso: base URL %q", cfg.BaseURL)
	}
	st := &ssoState{cfg: cfg, basePath: bu.Path, logins: map[string]ssoLogin{}, sessions: map[string]string{}, jitIDs: map[*user]string{}}
	if st.endpoints, err = s.discover(ctx, &st.cfg); err != nil {
		return err
	}
	s.mu.Lock()
	s.sso = st
	s.mu.Unlock()
	return nil
}

// RefreshDiscovery re-reads the discovery document, as the daily refresh
// job does (§5).
func (s *Server) RefreshDiscovery(ctx context.Context) error {
	st := s.ssoConfig()
	if st == nil {
		return errors.New("atlassiantest: sso is not enabled")
	}
	cfg := st.cfg
	ep, err := s.discover(ctx, &cfg)
	if err != nil {
		return err
	}
	st.mu.Lock()
	st.endpoints, st.cfg.IssuerURL = ep, cfg.IssuerURL
	st.mu.Unlock()
	return nil
}

// SSOErrors returns the messages of the SSO logins that failed, oldest
// first: what the real app logs with the error page's UUID (§15).
func (s *Server) SSOErrors() []string {
	st := s.ssoConfig()
	if st == nil {
		return nil
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	return slices.Clone(st.errors)
}

// SSOSessionUser reports who a product session cookie value belongs to.
func (s *Server) SSOSessionUser(id string) (string, bool) {
	st := s.ssoConfig()
	if st == nil {
		return "", false
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	u, ok := st.sessions[id]
	return u, ok
}

func (s *Server) ssoConfig() *ssoState {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sso
}

// discover fetches issuer + /.well-known/openid-configuration. The issuer
// returned must equal the one requested; on failure an issuer ending in
// "/" is tried once without it, and the stripped form is kept (§5).
func (s *Server) discover(ctx context.Context, cfg *SSO) (endpoints, error) {
	ep, err := s.discoverOnce(ctx, cfg.HTTP, cfg.IssuerURL)
	if err != nil && strings.HasSuffix(cfg.IssuerURL, "/") {
		stripped := strings.TrimRight(cfg.IssuerURL, "/")
		if ep2, err2 := s.discoverOnce(ctx, cfg.HTTP, stripped); err2 == nil {
			cfg.IssuerURL = stripped
			return ep2, nil
		}
	}
	return ep, err
}

func (s *Server) discoverOnce(ctx context.Context, c *http.Client, issuer string) (endpoints, error) {
	u, err := url.Parse(issuer)
	if err != nil || u.RawQuery != "" {
		return endpoints{}, fmt.Errorf("atlassiantest: sso: issuer %q (one with a query is refused)", issuer)
	}
	wk := issuer
	if !strings.HasSuffix(wk, "/") {
		wk += "/"
	}
	wk += ".well-known/openid-configuration"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, wk, nil)
	if err != nil {
		return endpoints{}, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return endpoints{}, fmt.Errorf("atlassiantest: sso: discovery: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return endpoints{}, fmt.Errorf("atlassiantest: sso: discovery answered %s", resp.Status)
	}
	var doc struct {
		Issuer        string   `json:"issuer"`
		Authorization string   `json:"authorization_endpoint"`
		Token         string   `json:"token_endpoint"`
		Userinfo      *string  `json:"userinfo_endpoint"`
		JWKS          string   `json:"jwks_uri"`
		SubjectTypes  []string `json:"subject_types_supported"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&doc); err != nil {
		return endpoints{}, fmt.Errorf("atlassiantest: sso: discovery document: %w", err)
	}
	switch {
	case doc.Issuer != issuer:
		return endpoints{}, fmt.Errorf("atlassiantest: sso: The returned issuer doesn't match the expected: %q", doc.Issuer)
	case doc.SubjectTypes == nil:
		return endpoints{}, errors.New("atlassiantest: sso: discovery document lacks subject_types_supported")
	case doc.JWKS == "":
		// Older Nimbus versions require it [U for the bundled version].
		return endpoints{}, errors.New("atlassiantest: sso: discovery document lacks jwks_uri")
	case doc.Userinfo == nil:
		// The client dereferences it without a null check (§5).
		return endpoints{}, errors.New("atlassiantest: sso: NullPointerException reading userinfo_endpoint")
	}
	return endpoints{authorize: doc.Authorization, token: doc.Token, userinfo: *doc.Userinfo, jwks: doc.JWKS}, nil
}

// serveSSO handles the SSO servlets and the product session; it reports
// whether it answered the request.
func (s *Server) serveSSO(w http.ResponseWriter, r *http.Request, st *ssoState) bool {
	p, ok := strings.CutPrefix(r.URL.Path, st.basePath)
	if !ok {
		return false
	}
	switch {
	case p == ssoCallbackPath:
		if r.Method != http.MethodGet {
			// The consumer servlet implements GET only (§8).
			w.Header().Set("Allow", "GET")
			http.Error(w, "HTTP method POST is not supported by this URL", http.StatusMethodNotAllowed)
			return true
		}
		s.ssoCallback(w, r, st)
	case strings.HasPrefix(p, ssoLoginPath):
		id := strings.TrimPrefix(p, ssoLoginPath)
		switch {
		case !regexp.MustCompile(`^[0-9]+$`).MatchString(id):
			s.ssoFail(w, st, http.StatusBadRequest, "Invalid IdP id "+id)
		case id != "1":
			s.ssoFail(w, st, http.StatusNotFound, "IdP not found")
		default:
			s.ssoBegin(w, r, st, r.URL.Query().Get("authDest"), "", false)
		}
	case p == ssoInitiatePath:
		q := r.URL.Query()
		switch iss := q.Get("iss"); {
		case iss == "":
			http.Redirect(w, r, st.basePath+"/plugins/servlet/login", http.StatusFound)
		case iss != st.cfg.IssuerURL:
			s.ssoFail(w, st, http.StatusBadRequest, "Login flow initiated by unknown issuer")
		default:
			s.ssoBegin(w, r, st, q.Get("target_link_uri"), q.Get("login_hint"), false)
		}
	case p == "/secure/Logout!default.jspa" || p == "/logout.action" || p == "/j_atl_security_logout":
		// Product logout ends the product session only: no RP-initiated,
		// front- or back-channel logout reaches the IdP (§16).
		if c, err := r.Cookie(productSession); err == nil {
			st.mu.Lock()
			delete(st.sessions, c.Value)
			st.mu.Unlock()
		}
		http.SetCookie(w, &http.Cookie{Name: productSession, Value: "", Path: "/", MaxAge: -1, HttpOnly: true})
		http.Redirect(w, r, st.basePath+"/", http.StatusFound)
	default:
		return false
	}
	return true
}

// ssoUser is the product session's user, or nil.
func (s *Server) ssoUser(r *http.Request, st *ssoState) string {
	c, err := r.Cookie(productSession)
	if err != nil {
		return ""
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.sessions[c.Value]
}

// ssoBegin stores the per-login data under a fresh state, sets the marker
// cookie and sends the browser to the authorization endpoint (§6, §7).
func (s *Server) ssoBegin(w http.ResponseWriter, r *http.Request, st *ssoState, target, loginHint string, forceLogin bool) {
	state, nonce := nimbusRandom(), nimbusRandom()
	st.mu.Lock()
	st.logins[state] = ssoLogin{nonce: nonce, target: target, created: s.now()}
	cfg, ep := st.cfg, st.endpoints
	st.mu.Unlock()
	// Written "without SameSite restrictions" (§7): no attribute at all.
	http.SetCookie(w, &http.Cookie{Name: "session-data-" + state, Value: "", Path: "/", MaxAge: int(ssoGrace / time.Second), HttpOnly: true})
	scopes := []string{"openid"}
	more := cfg.AdditionalScopes
	if cfg.JIT != nil {
		more = append(slices.Clone(more), cfg.JIT.AdditionalScopes...)
	}
	for _, sc := range more {
		if sc != "" && !slices.Contains(scopes, sc) {
			scopes = append(scopes, sc)
		}
	}
	q := url.Values{
		"response_type": {"code"},
		"client_id":     {cfg.ClientID},
		"redirect_uri":  {cfg.BaseURL + ssoCallbackPath},
		"scope":         {strings.Join(scopes, " ")}, // Encode writes spaces as "+" (§6)
		"state":         {state},
		"nonce":         {nonce},
	}
	if forceLogin {
		q.Set("prompt", "login")
	}
	if loginHint != "" {
		q.Set("login_hint", loginHint)
	}
	// No PKCE, response_mode, max_age, acr_values or claims (§6).
	sep := "?"
	if strings.Contains(ep.authorize, "?") {
		sep = "&"
	}
	http.Redirect(w, r, ep.authorize+sep+q.Encode(), http.StatusFound)
}

// nimbusRandom is Nimbus' default State and Nonce: 32 random bytes,
// base64url, 43 characters (§6 [U for the length]).
func nimbusRandom() string {
	var b [32]byte
	_, _ = rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// ssoCallback is OidcConsumerServlet (§8–§14).
func (s *Server) ssoCallback(w http.ResponseWriter, r *http.Request, st *ssoState) {
	q := r.URL.Query()
	if e := q.Get("error"); e != "" {
		b, _ := json.Marshal(map[string]string{"error": e, "error_description": q.Get("error_description")})
		s.ssoFail(w, st, http.StatusBadRequest, "Error when fetching authorization response. Error: "+string(b))
		return
	}
	state := q.Get("state")
	// Both the marker cookie and the cache entry are required, then both
	// deleted: state is single-use (§7).
	_, cookieErr := r.Cookie("session-data-" + state)
	st.mu.Lock()
	login, cached := st.logins[state]
	delete(st.logins, state)
	cfg, ep := st.cfg, st.endpoints
	st.mu.Unlock()
	http.SetCookie(w, &http.Cookie{Name: "session-data-" + state, Value: "", Path: "/", MaxAge: -1})
	if state == "" || cookieErr != nil || !cached || s.now().Sub(login.created) > ssoGrace {
		s.ssoFail(w, st, http.StatusBadRequest, "Unknown state in response")
		return
	}
	tok, err := s.ssoExchange(r.Context(), cfg, ep, q.Get("code"))
	if err != nil {
		s.ssoFail(w, st, http.StatusBadRequest, err.Error())
		return
	}
	claims, err := s.ssoIDToken(r.Context(), cfg, ep, tok.IDToken, login.nonce)
	if err != nil {
		s.ssoFail(w, st, http.StatusBadRequest, "ID token parsing failed: "+err.Error())
		return
	}
	username, err := s.ssoUsername(r.Context(), cfg, ep, claims, tok.AccessToken)
	if err != nil {
		s.ssoFail(w, st, http.StatusBadRequest, err.Error())
		return
	}
	if cfg.JIT != nil {
		if err := s.ssoJIT(st, cfg.JIT, claims, username); err != nil {
			s.ssoFail(w, st, http.StatusBadRequest, err.Error())
			return
		}
	}
	s.mu.Lock()
	u := s.lookup(username) // case-insensitive, as embedded Crowd resolves (§12)
	var msg string
	switch {
	case u == nil || !u.active:
		msg = "Received SSO request for user " + username + ", but the user does not exist"
	case !s.licensed(u):
		msg = "Received SSO request for user " + username + ", but the user is not permitted to log in"
	default:
		u.lastLogin = s.now()
		s.gen.Add(1)
	}
	s.mu.Unlock()
	if msg != "" {
		s.ssoFail(w, st, http.StatusBadRequest, msg)
		return
	}
	// A fresh product session (fixation protection, §14).
	sid := nimbusRandom()
	st.mu.Lock()
	if old, err := r.Cookie(productSession); err == nil {
		delete(st.sessions, old.Value)
	}
	st.sessions[sid] = lower(username)
	st.mu.Unlock()
	http.SetCookie(w, &http.Cookie{Name: productSession, Value: sid, Path: "/", HttpOnly: true})
	target := login.target
	if target == "" || !strings.HasPrefix(target, "/") || strings.HasPrefix(target, "//") {
		// How far the real normaliser blocks foreign hosts is [U]; the
		// emulator only follows local paths.
		target = st.basePath + "/"
	}
	http.Redirect(w, r, target, http.StatusFound)
}

type ssoTokens struct {
	AccessToken string `json:"access_token"`
	TokenType   string `json:"token_type"`
	IDToken     string `json:"id_token"`
}

// ssoExchange is the token request (§9): client_secret_basic with the
// form-URL-encoded ID and secret, exactly 200, JSON with a Bearer access
// token and an ID token.
func (s *Server) ssoExchange(ctx context.Context, cfg SSO, ep endpoints, code string) (*ssoTokens, error) {
	form := url.Values{"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {cfg.BaseURL + ssoCallbackPath}}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, ep.token, strings.NewReader(form.Encode()))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(url.QueryEscape(cfg.ClientID), url.QueryEscape(cfg.ClientSecret))
	resp, err := cfg.HTTP.Do(req)
	if err != nil {
		return nil, fmt.Errorf("Exchanging authorization tokens failed. %w", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != http.StatusOK {
		var oe struct {
			Error       string `json:"error"`
			Description string `json:"error_description"`
		}
		if json.Unmarshal(body, &oe) == nil && (oe.Error != "" || oe.Description != "") {
			b, _ := json.Marshal(map[string]string{"error": oe.Error, "error_description": oe.Description})
			return nil, fmt.Errorf("Exchanging authorization tokens failed. Error: %s", b)
		}
		return nil, fmt.Errorf("Exchanging authorization tokens failed. (status %d)", resp.StatusCode)
	}
	if mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); mt != "application/json" {
		return nil, fmt.Errorf("Exchanging authorization tokens failed. Content type %q", resp.Header.Get("Content-Type"))
	}
	var t ssoTokens
	if err := json.Unmarshal(body, &t); err != nil {
		return nil, fmt.Errorf("Exchanging authorization tokens failed. %w", err)
	}
	switch {
	case t.AccessToken == "":
		return nil, errors.New("Exchanging authorization tokens failed. Missing access_token")
	case !strings.EqualFold(t.TokenType, "Bearer"):
		return nil, fmt.Errorf("Exchanging authorization tokens failed. Token type %q", t.TokenType)
	case t.IDToken == "":
		return nil, errors.New("Exchanging authorization tokens failed. Missing id_token")
	}
	return &t, nil
}

// ssoIDToken reads and checks the ID token's claims (§10).
func (s *Server) ssoIDToken(ctx context.Context, cfg SSO, ep endpoints, raw, nonce string) (map[string]any, error) {
	jws, err := jose.ParseSigned(raw, []jose.SignatureAlgorithm{jose.RS256, jose.RS384, jose.RS512, jose.ES256, jose.ES384, jose.PS256})
	if err != nil {
		return nil, fmt.Errorf("not a JWS: %w", err)
	}
	payload := jws.UnsafePayloadWithoutVerification()
	if cfg.VerifySignature {
		if payload, err = s.ssoVerify(ctx, cfg, ep, jws); err != nil {
			return nil, err
		}
	}
	dec := json.NewDecoder(strings.NewReader(string(payload)))
	dec.UseNumber()
	var claims map[string]any
	if err := dec.Decode(&claims); err != nil {
		return nil, fmt.Errorf("claims: %w", err)
	}
	now := s.now()
	str := func(k string) string { v, _ := claims[k].(string); return v }
	num := func(k string) (time.Time, bool) {
		n, ok := claims[k].(json.Number)
		if !ok {
			return time.Time{}, false
		}
		f, err := n.Float64()
		return time.Unix(int64(f), 0), err == nil
	}
	if iss := str("iss"); iss != cfg.IssuerURL {
		return nil, fmt.Errorf("Unexpected JWT issuer: %s", iss)
	}
	if str("sub") == "" {
		return nil, errors.New("JWT missing required claims: [sub]")
	}
	var aud []string
	switch a := claims["aud"].(type) {
	case string:
		aud = []string{a}
	case []any:
		for _, x := range a {
			if s, ok := x.(string); ok {
				aud = append(aud, s)
			}
		}
	}
	if !slices.Contains(aud, cfg.ClientID) {
		return nil, fmt.Errorf("Unexpected JWT audience: %v", aud)
	}
	if len(aud) > 1 {
		switch azp := str("azp"); {
		case azp == "":
			return nil, errors.New("JWT authorized party (azp) claim required when multiple (aud) audiences present")
		case azp != cfg.ClientID:
			return nil, fmt.Errorf("Unexpected JWT authorized party (azp) claim value: %s", azp)
		}
	}
	if exp, ok := num("exp"); !ok || !exp.After(now.Add(-ssoSkew)) {
		return nil, errors.New("Expired JWT")
	}
	if iat, ok := num("iat"); !ok || iat.After(now.Add(ssoSkew)) {
		return nil, errors.New("JWT issue time ahead of current time")
	}
	switch n := str("nonce"); {
	case n == "":
		return nil, errors.New("Missing JWT nonce (nonce) claim")
	case n != nonce:
		return nil, errors.New("Unexpected JWT nonce (nonce) claim: " + n)
	}
	return claims, nil
}

func (s *Server) ssoVerify(ctx context.Context, cfg SSO, ep endpoints, jws *jose.JSONWebSignature) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, ep.jwks, nil)
	if err != nil {
		return nil, err
	}
	resp, err := cfg.HTTP.Do(req)
	if err != nil {
		return nil, fmt.Errorf("JWKS: %w", err)
	}
	defer resp.Body.Close()
	var set jose.JSONWebKeySet
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&set); err != nil {
		return nil, fmt.Errorf("JWKS: %w", err)
	}
	kid := jws.Signatures[0].Header.KeyID
	for _, k := range set.Key(kid) {
		if p, err := jws.Verify(k); err == nil {
			return p, nil
		}
	}
	return nil, fmt.Errorf("Signed JWT rejected: no matching key %q", kid)
}

var placeholder = regexp.MustCompile(`\$\{([^}]*)\}`)

// expand evaluates a mapping expression against claims: every ${name}
// must be a string claim; missing ones are looked up in more (userinfo)
// when it is given.
func expand(expr string, claims map[string]any, more func() (map[string]any, error)) (string, error) {
	var firstErr error
	var extra map[string]any
	out := placeholder.ReplaceAllStringFunc(expr, func(m string) string {
		name := m[2 : len(m)-1]
		switch v := claims[name].(type) {
		case string:
			if v != "" {
				return v
			}
		case nil:
		default:
			if firstErr == nil {
				firstErr = fmt.Errorf("ID token parsing failed: claim %s is not a string", name)
			}
			return ""
		}
		if more == nil {
			if firstErr == nil {
				firstErr = fmt.Errorf("Claim [%s] could not be found", name)
			}
			return ""
		}
		if extra == nil {
			var err error
			if extra, err = more(); err != nil {
				if firstErr == nil {
					firstErr = err
				}
				return ""
			}
		}
		switch v := extra[name].(type) {
		case nil:
		case string:
			if v != "" {
				return v
			}
		default: // userinfo values are stringified (§11.1)
			b, _ := json.Marshal(v)
			return string(b)
		}
		if firstErr == nil {
			firstErr = fmt.Errorf("Couldn't find claim representing username: %s", name)
		}
		return ""
	})
	return out, firstErr
}

// ssoUsername derives the username (§11): ID token first, userinfo as the
// fallback for claims missing there.
func (s *Server) ssoUsername(ctx context.Context, cfg SSO, ep endpoints, claims map[string]any, accessToken string) (string, error) {
	expr := cfg.UsernameClaim
	if expr == "" {
		expr = "${sub}"
	}
	return expand(expr, claims, func() (map[string]any, error) { return s.ssoUserinfo(ctx, cfg, ep, accessToken) })
}

func (s *Server) ssoUserinfo(ctx context.Context, cfg SSO, ep endpoints, accessToken string) (map[string]any, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, ep.userinfo, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+accessToken)
	resp, err := cfg.HTTP.Do(req)
	if err != nil {
		return nil, fmt.Errorf("Error when fetching data from userinfo endpoint: %w", err)
	}
	defer resp.Body.Close()
	mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if resp.StatusCode != http.StatusOK || mt != "application/json" {
		return nil, fmt.Errorf("Error when fetching data from userinfo endpoint: %s", resp.Status)
	}
	var m map[string]any
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&m); err != nil {
		return nil, fmt.Errorf("Error when fetching data from userinfo endpoint: %w", err)
	}
	return m, nil
}

// ssoJIT provisions from ID token claims only (§13): find the user by
// jit_idp_id, then by name; create, rename, update and sync groups (the
// claim's groups exactly: others are removed, missing ones created).
func (s *Server) ssoJIT(st *ssoState, jit *SSOJIT, claims map[string]any, username string) error {
	sub, _ := claims["sub"].(string)
	if sub == "" {
		return errors.New("Subject not found")
	}
	display, err := expand(jit.DisplayName, claims, nil)
	if err != nil {
		return err
	}
	email, err := expand(jit.Email, claims, nil)
	if err != nil {
		return err
	}
	var groups []string
	switch g := claims[jit.Groups].(type) {
	case nil:
		return errors.New("Received no groups claim in OIDC response, the group mapping may be incorrect")
	case []any:
		for _, x := range g {
			name, ok := x.(string)
			if !ok {
				return fmt.Errorf("Claim [%s] was not of type String array", jit.Groups)
			}
			groups = append(groups, name)
		}
	default:
		return fmt.Errorf("Claim [%s] was not of type String array", jit.Groups)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.gen.Add(1)
	var u *user
	st.mu.Lock()
	for cand, id := range st.jitIDs {
		if id == sub {
			u = cand
		}
	}
	st.mu.Unlock()
	if u == nil {
		u = s.lookup(username)
	}
	if u == nil {
		if s.opts.Seats > 0 && !s.seatsLeft() {
			return errors.New("User could not be created due to the license's limit")
		}
		u = &user{name: username, displayName: display, email: email, active: true}
		u.first, u.last = splitName(display)
		s.insert(u)
		if s.defaultGroup != "" {
			s.join(u, s.ensureGroup(s.defaultGroup))
		}
	}
	st.mu.Lock()
	st.jitIDs[u] = sub
	st.mu.Unlock()
	if u.name != username { // plain equals: a case-only change renames too
		s.rename(u, username)
	}
	u.displayName, u.email = display, email
	want := map[string]bool{}
	for _, g := range groups {
		want[lower(g)] = true
		s.join(u, s.ensureGroup(g))
	}
	for g := range u.groups {
		if !want[g] {
			s.leave(u, s.groups[g])
		}
	}
	return nil
}

var ssoErrorPage = template.Must(template.New("").Parse(`<!doctype html><html><head><meta charset="utf-8"><title>Can't log you in right now</title></head>
<body><h1>Can't log you in right now</h1><p>Contact your administrator and give them this error ID: <code>{{.ID}}</code></p>
<p>(emulator: {{.Message}})</p></body></html>`))

// ssoFail answers as the ErrorHandlingFilter does (§15): an HTML page with
// a UUID, the cause only in the log (the emulator shows it too, for tests).
func (s *Server) ssoFail(w http.ResponseWriter, st *ssoState, status int, msg string) {
	var b [16]byte
	_, _ = rand.Read(b[:])
	id := fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
	st.mu.Lock()
	st.errors = append(st.errors, msg)
	st.mu.Unlock()
	s.log.Error(fmt.Sprintf("[UUID: %s] %s", id, msg))
	w.Header().Set("Content-Type", "text/html;charset=UTF-8")
	w.Header().Set("Referrer-Policy", "origin-when-cross-origin")
	w.WriteHeader(status)
	_ = ssoErrorPage.Execute(w, struct{ ID, Message string }{id, msg})
}
