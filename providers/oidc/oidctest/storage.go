package oidctest

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	zoidc "github.com/zitadel/oidc/v3/pkg/oidc"
	"github.com/zitadel/oidc/v3/pkg/op"
)

// storage is the in-memory op.Storage behind an IdP. It keeps only what the
// authorization code flow needs: pending auth requests, codes and access
// tokens. Refresh tokens, JWT profile grants and token exchange are refused.
type storage struct {
	key     *rsa.PrivateKey
	keyID   string
	now     func() time.Time
	tokenTT time.Duration

	mu       sync.Mutex
	users    map[string]*User // by subject
	byName   map[string]*User // by username
	clients  map[string]*client
	requests map[string]*authRequest
	codes    map[string]string // code → request id
	tokens   map[string]*accessToken
}

var (
	_ op.Storage                   = (*storage)(nil)
	_ op.CanSetUserinfoFromRequest = (*storage)(nil)
)

type accessToken struct {
	subject  string
	clientID string
	scopes   []string
	expires  time.Time
}

func newID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (Go 1.24+)
	return hex.EncodeToString(b)
}

// checkPassword completes the auth request id for the user, as the login
// form does after the user typed the right password.
func (s *storage) checkPassword(id, username, password string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	req, ok := s.requests[id]
	if !ok {
		return errors.New("unknown or finished login request")
	}
	u, ok := s.byName[username]
	if !ok || subtle.ConstantTimeCompare([]byte(u.Password), []byte(password)) != 1 {
		return errors.New("wrong username or password")
	}
	req.subject = u.Subject
	req.authTime = s.now()
	req.done = true
	return nil
}

func (s *storage) loginHint(id string) (string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	req, ok := s.requests[id]
	if !ok {
		return "", false
	}
	return req.loginHint, true
}

func (s *storage) CreateAuthRequest(_ context.Context, r *zoidc.AuthRequest, userID string) (op.AuthRequest, error) {
	for _, p := range r.Prompt {
		if p == zoidc.PromptNone {
			// There is no session at this IdP, so a silent login cannot
			// succeed: the client gets a real error response.
			return nil, zoidc.ErrLoginRequired()
		}
	}
	req := &authRequest{
		id:           newID(),
		clientID:     r.ClientID,
		redirectURI:  r.RedirectURI,
		state:        r.State,
		nonce:        r.Nonce,
		scopes:       r.Scopes,
		responseType: r.ResponseType,
		responseMode: r.ResponseMode,
		loginHint:    r.LoginHint,
		subject:      userID,
	}
	if r.CodeChallenge != "" {
		req.challenge = &zoidc.CodeChallenge{Challenge: r.CodeChallenge, Method: r.CodeChallengeMethod}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.requests[req.id] = req
	return req, nil
}

func (s *storage) AuthRequestByID(_ context.Context, id string) (op.AuthRequest, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	req, ok := s.requests[id]
	if !ok {
		return nil, errors.New("auth request not found")
	}
	return req, nil
}

func (s *storage) AuthRequestByCode(ctx context.Context, code string) (op.AuthRequest, error) {
	s.mu.Lock()
	id, ok := s.codes[code]
	s.mu.Unlock()
	if !ok {
		return nil, errors.New("code invalid or already used")
	}
	return s.AuthRequestByID(ctx, id)
}

func (s *storage) SaveAuthCode(_ context.Context, id, code string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.codes[code] = id
	return nil
}

// DeleteAuthRequest runs after the token response is built, so a code
// works exactly once.
func (s *storage) DeleteAuthRequest(_ context.Context, id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.requests, id)
	for code, rid := range s.codes {
		if rid == id {
			delete(s.codes, code)
		}
	}
	return nil
}

func (s *storage) CreateAccessToken(_ context.Context, r op.TokenRequest) (string, time.Time, error) {
	var clientID string
	if ar, ok := r.(*authRequest); ok {
		clientID = ar.clientID
	}
	t := &accessToken{
		subject:  r.GetSubject(),
		clientID: clientID,
		scopes:   r.GetScopes(),
		expires:  s.now().Add(s.tokenTT),
	}
	id := newID()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tokens[id] = t
	return id, t.expires, nil
}

func (s *storage) CreateAccessAndRefreshTokens(context.Context, op.TokenRequest, string) (string, string, time.Time, error) {
	return "", "", time.Time{}, errors.New("refresh tokens are not supported")
}

func (s *storage) TokenRequestByRefreshToken(context.Context, string) (op.RefreshTokenRequest, error) {
	return nil, op.ErrInvalidRefreshToken
}

func (s *storage) TerminateSession(_ context.Context, userID, clientID string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for id, t := range s.tokens {
		if t.subject == userID && t.clientID == clientID {
			delete(s.tokens, id)
		}
	}
	return nil
}

func (s *storage) RevokeToken(_ context.Context, tokenID, _, clientID string) *zoidc.Error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if t, ok := s.tokens[tokenID]; ok {
		if t.clientID != clientID {
			return zoidc.ErrInvalidClient().WithDescription("token was not issued for this client")
		}
		delete(s.tokens, tokenID)
	}
	return nil
}

func (s *storage) GetRefreshTokenInfo(context.Context, string, string) (string, string, error) {
	return "", "", op.ErrInvalidRefreshToken
}

func (s *storage) SigningKey(context.Context) (op.SigningKey, error) {
	return signingKey{key: s.key, id: s.keyID}, nil
}

func (s *storage) SignatureAlgorithms(context.Context) ([]jose.SignatureAlgorithm, error) {
	return []jose.SignatureAlgorithm{jose.RS256}, nil
}

func (s *storage) KeySet(context.Context) ([]op.Key, error) {
	return []op.Key{publicKey{key: &s.key.PublicKey, id: s.keyID}}, nil
}

func (s *storage) GetClientByClientID(_ context.Context, id string) (op.Client, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.clients[id]
	if !ok {
		return nil, fmt.Errorf("client %q not found", id)
	}
	return c, nil
}

func (s *storage) AuthorizeClientIDSecret(_ context.Context, id, secret string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.clients[id]
	if !ok || subtle.ConstantTimeCompare([]byte(c.secret), []byte(secret)) != 1 {
		return errors.New("wrong client id or secret")
	}
	return nil
}

// SetUserinfoFromScopes is deprecated upstream; SetUserinfoFromRequest does
// the work.
func (s *storage) SetUserinfoFromScopes(context.Context, *zoidc.UserInfo, string, string, []string) error {
	return nil
}

func (s *storage) SetUserinfoFromRequest(_ context.Context, ui *zoidc.UserInfo, r op.IDTokenRequest, scopes []string) error {
	return s.setUserinfo(ui, r.GetSubject(), scopes)
}

func (s *storage) SetUserinfoFromToken(_ context.Context, ui *zoidc.UserInfo, tokenID, _, _ string) error {
	s.mu.Lock()
	t, ok := s.tokens[tokenID]
	s.mu.Unlock()
	if !ok || !s.now().Before(t.expires) {
		return errors.New("access token invalid or expired")
	}
	return s.setUserinfo(ui, t.subject, t.scopes)
}

func (s *storage) setUserinfo(ui *zoidc.UserInfo, subject string, scopes []string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	u, ok := s.users[subject]
	if !ok {
		return fmt.Errorf("user %q not found", subject)
	}
	ui.Subject = u.Subject
	for _, sc := range scopes {
		switch sc {
		case zoidc.ScopeEmail:
			ui.Email = u.Email
			switch u.EmailVerified {
			case Verified:
				ui.EmailVerified = zoidc.Bool(u.Email != "")
			case Unverified:
				// The registered field omits false; an extra claim
				// says it.
				ui.AppendClaims("email_verified", false)
			}
		case zoidc.ScopeProfile:
			ui.PreferredUsername = u.Username
			ui.Name = u.Name
		}
	}
	if len(u.Groups) > 0 {
		ui.AppendClaims("groups", append([]string(nil), u.Groups...))
	}
	for k, v := range u.Claims {
		ui.AppendClaims(k, v)
	}
	return nil
}

func (s *storage) SetIntrospectionFromToken(context.Context, *zoidc.IntrospectionResponse, string, string, string) error {
	return errors.New("introspection is not supported")
}

func (s *storage) GetPrivateClaimsFromScopes(context.Context, string, string, []string) (map[string]any, error) {
	return nil, nil
}

func (s *storage) GetKeyByIDAndClientID(context.Context, string, string) (*jose.JSONWebKey, error) {
	return nil, errors.New("JWT profile grants are not supported")
}

func (s *storage) ValidateJWTProfileScopes(context.Context, string, []string) ([]string, error) {
	return nil, errors.New("JWT profile grants are not supported")
}

func (s *storage) Health(context.Context) error { return nil }

// authRequest is one pending authorization request.
type authRequest struct {
	id           string
	clientID     string
	redirectURI  string
	state        string
	nonce        string
	scopes       []string
	responseType zoidc.ResponseType
	responseMode zoidc.ResponseMode
	challenge    *zoidc.CodeChallenge
	loginHint    string

	// Guarded by storage.mu once stored.
	subject  string
	authTime time.Time
	done     bool
}

func (a *authRequest) GetID() string                          { return a.id }
func (a *authRequest) GetACR() string                         { return "" }
func (a *authRequest) GetAMR() []string                       { return []string{"pwd"} }
func (a *authRequest) GetAudience() []string                  { return []string{a.clientID} }
func (a *authRequest) GetAuthTime() time.Time                 { return a.authTime }
func (a *authRequest) GetClientID() string                    { return a.clientID }
func (a *authRequest) GetCodeChallenge() *zoidc.CodeChallenge { return a.challenge }
func (a *authRequest) GetNonce() string                       { return a.nonce }
func (a *authRequest) GetRedirectURI() string                 { return a.redirectURI }
func (a *authRequest) GetResponseType() zoidc.ResponseType    { return a.responseType }
func (a *authRequest) GetResponseMode() zoidc.ResponseMode    { return a.responseMode }
func (a *authRequest) GetScopes() []string                    { return a.scopes }
func (a *authRequest) GetState() string                       { return a.state }
func (a *authRequest) GetSubject() string                     { return a.subject }
func (a *authRequest) Done() bool                             { return a.done }

// client is a registered relying party. Clients with a secret authenticate
// at the token endpoint (basic or post); clients without one are public and
// must use PKCE.
type client struct {
	id             string
	secret         string
	redirectURIs   []string
	logoutURIs     []string
	idTokenTTL     time.Duration
	loginURLPrefix string
}

var _ op.Client = (*client)(nil)

func (c *client) GetID() string                    { return c.id }
func (c *client) RedirectURIs() []string           { return c.redirectURIs }
func (c *client) PostLogoutRedirectURIs() []string { return c.logoutURIs }
func (c *client) ApplicationType() op.ApplicationType {
	if c.secret == "" {
		return op.ApplicationTypeNative
	}
	return op.ApplicationTypeWeb
}
func (c *client) AuthMethod() zoidc.AuthMethod {
	if c.secret == "" {
		return zoidc.AuthMethodNone
	}
	return zoidc.AuthMethodBasic
}
func (c *client) ResponseTypes() []zoidc.ResponseType {
	return []zoidc.ResponseType{zoidc.ResponseTypeCode}
}
func (c *client) GrantTypes() []zoidc.GrantType {
	return []zoidc.GrantType{zoidc.GrantTypeCode}
}
func (c *client) LoginURL(id string) string            { return c.loginURLPrefix + id }
func (c *client) AccessTokenType() op.AccessTokenType  { return op.AccessTokenTypeBearer }
func (c *client) IDTokenLifetime() time.Duration       { return c.idTokenTTL }
func (c *client) DevMode() bool                        { return true } // http redirect URIs on loopback
func (c *client) IsScopeAllowed(string) bool           { return true }
func (c *client) IDTokenUserinfoClaimsAssertion() bool { return true }
func (c *client) ClockSkew() time.Duration             { return 0 }
func (c *client) RestrictAdditionalIdTokenScopes() func([]string) []string {
	return func(s []string) []string { return s }
}
func (c *client) RestrictAdditionalAccessTokenScopes() func([]string) []string {
	return func(s []string) []string { return s }
}

type signingKey struct {
	key *rsa.PrivateKey
	id  string
}

func (k signingKey) SignatureAlgorithm() jose.SignatureAlgorithm { return jose.RS256 }
func (k signingKey) Key() any                                    { return k.key }
func (k signingKey) ID() string                                  { return k.id }

type publicKey struct {
	key *rsa.PublicKey
	id  string
}

func (k publicKey) ID() string                         { return k.id }
func (k publicKey) Algorithm() jose.SignatureAlgorithm { return jose.RS256 }
func (k publicKey) Use() string                        { return "sig" }
func (k publicKey) Key() any                           { return k.key }
