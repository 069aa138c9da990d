package appsso

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"time"

	"github.com/zitadel/oidc/v3/pkg/oidc"
	"github.com/zitadel/oidc/v3/pkg/op"
)

// Nothing of a flow is stored: each step's state travels sealed (AES-GCM
// under keys derived from usher's session keys, with an expiry) to the
// next. The one durable write of a whole flow is the code's ID, recorded
// once when the code is redeemed (store SeenOnce, atomic across
// replicas), so a second redemption is refused on every replica.
//
//	authorize ──pending (sealed into the continue URL, flow timeout)──▶ usher login ──▶ continue
//	continue  ──grant (sealed into the code, codeTTL)──▶ app's callback ──▶ token
//	token     ──grant minus the request (sealed into the access token, accessTTL)──▶ userinfo
const (
	purposePending = "appsso pending"
	purposeCode    = "appsso code"
	purposeAccess  = "appsso access"

	// codeTTL: codes are short-lived (the reference suggests ≤ 60 s); the
	// app redeems them over the back channel at once.
	codeTTL = time.Minute
	// tokenTTL is the life of access and ID tokens. The Atlassian client
	// uses both only during the callback.
	tokenTTL = 10 * time.Minute

	// codePrefix and accessPrefix mark what the op package hands our
	// Crypto to seal: a done request's ID (which becomes the code) or an
	// access token ID.
	codePrefix   = "c"
	accessPrefix = "a"
)

// pending is an authorization request that passed validation and waits
// for the person to have a usher session.
type pending struct {
	Client    string   `json:"c"`
	Redirect  string   `json:"r"`
	Scopes    []string `json:"s,omitempty"`
	State     string   `json:"st,omitempty"`
	Nonce     string   `json:"n,omitempty"`
	Mode      string   `json:"m,omitempty"` // response_mode
	Challenge string   `json:"cc,omitempty"`
	Method    string   `json:"cm,omitempty"`
	// MaxAge is max_age (0 for prompt=login): the session must be that
	// fresh, or made during this flow.
	MaxAge *uint `json:"ma,omitempty"`
	// None is prompt=none: never show a page, answer login_required.
	None    bool  `json:"pn,omitempty"`
	Created int64 `json:"t"` // unix ns
}

func pendingFrom(r *oidc.AuthRequest, now time.Time) *pending {
	p := &pending{
		Client: r.ClientID, Redirect: r.RedirectURI, Scopes: r.Scopes, State: r.State, Nonce: r.Nonce,
		Mode: string(r.ResponseMode), Challenge: r.CodeChallenge, Method: string(r.CodeChallengeMethod),
		MaxAge: r.MaxAge, Created: now.UnixNano(),
	}
	for _, pr := range r.Prompt {
		p.None = p.None || pr == oidc.PromptNone
	}
	return p
}

// op.ErrAuthRequest, so errors go back to the client's redirect URI.
func (p *pending) GetRedirectURI() string             { return p.Redirect }
func (p *pending) GetResponseType() oidc.ResponseType { return oidc.ResponseTypeCode }
func (p *pending) GetState() string                   { return p.State }
func (p *pending) GetResponseMode() oidc.ResponseMode { return oidc.ResponseMode(p.Mode) }

// grant is what a code stands for: the request and the person, as the
// usher session described them when the code was issued.
type grant struct {
	pending
	ID       string   `json:"id"` // the code's ID: replay key, revocation key of its tokens
	Sub      string   `json:"sub"`
	Username string   `json:"u"`
	Email    string   `json:"e,omitempty"`
	Name     string   `json:"nm,omitempty"`
	Groups   []string `json:"g,omitempty"`
	AuthTime int64    `json:"at"`
	// IdP, Subject and SessionCreated find the usher session's revocations.
	IdP            string `json:"i"`
	Subject        string `json:"su"`
	SessionCreated int64  `json:"sc"`
	Expires        int64  `json:"x,omitempty"` // access tokens: unix ns
}

// authRequest is a grant as zitadel's op package sees it: a done
// op.AuthRequest (when a code is made or redeemed) and an
// op.TokenRequest (when tokens are made).
type authRequest struct {
	g  *grant
	id string
}

var (
	_ op.AuthRequest    = (*authRequest)(nil)
	_ op.IDTokenRequest = (*authRequest)(nil)
)

func (a *authRequest) GetID() string          { return a.id }
func (a *authRequest) GetACR() string         { return "" }
func (a *authRequest) GetAMR() []string       { return nil }
func (a *authRequest) GetAudience() []string  { return []string{a.g.Client} }
func (a *authRequest) GetAuthTime() time.Time { return time.Unix(0, a.g.AuthTime) }
func (a *authRequest) GetClientID() string    { return a.g.Client }
func (a *authRequest) GetNonce() string       { return a.g.Nonce }
func (a *authRequest) GetRedirectURI() string { return a.g.Redirect }
func (a *authRequest) GetScopes() []string    { return a.g.Scopes }
func (a *authRequest) GetState() string       { return a.g.State }
func (a *authRequest) GetSubject() string     { return a.g.Sub }
func (a *authRequest) Done() bool             { return true }
func (a *authRequest) GetResponseType() oidc.ResponseType {
	return oidc.ResponseTypeCode
}
func (a *authRequest) GetResponseMode() oidc.ResponseMode { return oidc.ResponseMode(a.g.Mode) }
func (a *authRequest) GetCodeChallenge() *oidc.CodeChallenge {
	if a.g.Challenge == "" {
		return nil
	}
	m := oidc.CodeChallengeMethod(a.g.Method)
	if m == "" {
		m = oidc.CodeChallengeMethodPlain
	}
	return &oidc.CodeChallenge{Challenge: a.g.Challenge, Method: m}
}

// codeRequest is the done request whose ID the op package seals into the
// code (through Crypto.Encrypt).
func codeRequest(g *grant) (*authRequest, error) {
	b, err := json.Marshal(g)
	if err != nil {
		return nil, fmt.Errorf("appsso: encode grant: %w", err)
	}
	return &authRequest{g: g, id: codePrefix + string(b)}, nil
}

// accessTokenID is the token ID the op package seals (with the subject)
// into the access token: the grant without what only the code needed.
// Base64, because the op package splits the sealed text at ":".
func accessTokenID(g *grant, expires time.Time) (string, error) {
	t := *g
	t.Redirect, t.State, t.Nonce, t.Mode, t.Challenge, t.Method, t.MaxAge, t.None = "", "", "", "", "", "", nil, false
	t.Expires = expires.UnixNano()
	b, err := json.Marshal(&t)
	if err != nil {
		return "", fmt.Errorf("appsso: encode access token: %w", err)
	}
	return accessPrefix + base64.RawURLEncoding.EncodeToString(b), nil
}

func parseAccessTokenID(id string) (*grant, error) {
	if len(id) < 2 || id[:1] != accessPrefix {
		return nil, fmt.Errorf("appsso: not an access token")
	}
	b, err := base64.RawURLEncoding.DecodeString(id[1:])
	if err != nil {
		return nil, fmt.Errorf("appsso: access token: %w", err)
	}
	g := new(grant)
	if err := json.Unmarshal(b, g); err != nil {
		return nil, fmt.Errorf("appsso: access token: %w", err)
	}
	return g, nil
}
