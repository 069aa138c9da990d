package rest

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1" //nolint:gosec // x5t is defined as a SHA-1 thumbprint (RFC 7515 §4.1.7); it names a certificate, it protects nothing.
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/jonboulle/clockwork"
)

// StaticAuth sets a fixed header value (Okta "SSWS <token>"). A 401 is
// final: there is nothing to refresh.
type StaticAuth struct {
	Header string // default Authorization
	Value  string
}

func (a StaticAuth) Authorize(_ context.Context, r *http.Request) error {
	h := a.Header
	if h == "" {
		h = "Authorization"
	}
	r.Header.Set(h, a.Value)
	return nil
}

func (a StaticAuth) Refresh(string) bool { return false }

// Token is an OAuth 2.0 access token.
type Token struct {
	AccessToken string
	// Type is the Authorization scheme, "Bearer" when the server said
	// nothing.
	Type   string
	Expiry time.Time
}

// TokenCache holds one access token, fetches a new one when the cached
// one is within its renewal margin of expiring (5 minutes, or a third
// of the lifetime for short-lived tokens), and drops it when the server
// refuses it. Concurrent callers share one fetch. It implements Auth.
type TokenCache struct {
	fetch func(ctx context.Context) (Token, error)
	clock clockwork.Clock

	lock chan struct{} // a mutex that honours ctx while a fetch runs
	mu   sync.Mutex
	tok  Token
	// renewAt is when the cached token should be replaced.
	renewAt time.Time
}

// NewTokenCache caches what fetch returns. clock nil means real time.
func NewTokenCache(fetch func(ctx context.Context) (Token, error), clock clockwork.Clock) *TokenCache {
	if clock == nil {
		clock = clockwork.NewRealClock()
	}
	return &TokenCache{fetch: fetch, clock: clock, lock: make(chan struct{}, 1)}
}

// renewMargin is how long before expiry a token is replaced.
func renewMargin(lifetime time.Duration) time.Duration {
	const margin = 5 * time.Minute
	if lifetime < 3*margin {
		return lifetime / 3
	}
	return margin
}

func (c *TokenCache) cached() (Token, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.tok.AccessToken == "" || !c.clock.Now().Before(c.renewAt) {
		return Token{}, false
	}
	return c.tok, true
}

// Token returns a valid token, fetching one if needed.
func (c *TokenCache) Token(ctx context.Context) (Token, error) {
	if t, ok := c.cached(); ok {
		return t, nil
	}
	select {
	case c.lock <- struct{}{}:
	case <-ctx.Done():
		return Token{}, ctx.Err()
	}
	defer func() { <-c.lock }()
	if t, ok := c.cached(); ok { // another caller fetched while we waited
		return t, nil
	}
	now := c.clock.Now()
	t, err := c.fetch(ctx)
	if err != nil {
		return Token{}, err
	}
	if t.Type == "" {
		t.Type = "Bearer"
	}
	c.mu.Lock()
	c.tok = t
	c.renewAt = t.Expiry.Add(-renewMargin(t.Expiry.Sub(now)))
	c.mu.Unlock()
	return t, nil
}

func (c *TokenCache) Authorize(ctx context.Context, r *http.Request) error {
	t, err := c.Token(ctx)
	if err != nil {
		return err
	}
	r.Header.Set("Authorization", t.Type+" "+t.AccessToken)
	return nil
}

// Refresh drops the cached token if it is the one refused (a concurrent
// caller may already have replaced it) and asks for a retry.
func (c *TokenCache) Refresh(refused string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if refused == "" || refused == c.tok.Type+" "+c.tok.AccessToken {
		c.tok = Token{}
	}
	return true
}

// ClientCredentials fetches tokens with the OAuth 2.0 client credentials
// grant (RFC 6749 §4.4), proving the client with a secret in the form,
// HTTP Basic, or a signed JWT client assertion (RFC 7523,
// private_key_jwt). Use its Fetch with a TokenCache.
type ClientCredentials struct {
	// Client talks to the token endpoint; its origin is the endpoint's.
	Client   *Client
	TokenURL string
	ClientID string
	// Secret is sent as client_secret, or with BasicAuth as the password
	// of HTTP Basic.
	Secret    string
	BasicAuth bool
	// Assertion signs a client assertion instead of a secret.
	Assertion *Assertion
	// Scope is the space-separated scope parameter, if any.
	Scope string
	// Form holds further form fields.
	Form url.Values
	// JSON sends the grant as a JSON object of the same fields instead
	// of a form (OneLogin's token endpoint takes
	// {"grant_type":"client_credentials"} with HTTP Basic).
	JSON bool
	// Decode reads the endpoint's error answers; default
	// DecodeOAuthError (RFC 6749 §5.2). OneLogin answers in its own
	// envelope.
	Decode func(status int, h http.Header, body []byte) error
}

// OAuthError is a token endpoint's error answer (RFC 6749 §5.2), with
// Entra's error_codes when present.
type OAuthError struct {
	Code        string `json:"error"`
	Description string `json:"error_description"`
	Codes       []int  `json:"error_codes"`
}

func (e *OAuthError) Error() string {
	if e.Description == "" {
		return e.Code
	}
	return e.Code + ": " + e.Description
}

// DecodeOAuthError is a Config.Decode for token endpoints.
func DecodeOAuthError(status int, h http.Header, body []byte) error {
	var e OAuthError
	if json.Unmarshal(body, &e) == nil && e.Code != "" {
		return &e
	}
	return decodePlain(status, h, body)
}

// Fetch requests a token.
func (cc *ClientCredentials) Fetch(ctx context.Context) (Token, error) {
	form := url.Values{"grant_type": {"client_credentials"}}
	for k, v := range cc.Form {
		form[k] = v
	}
	if cc.Scope != "" {
		form.Set("scope", cc.Scope)
	}
	hdr := http.Header{}
	switch {
	case cc.Assertion != nil:
		a, err := cc.Assertion.Sign(cc.ClientID, cc.TokenURL, cc.Client.Clock().Now())
		if err != nil {
			return Token{}, err
		}
		form.Set("client_id", cc.ClientID)
		form.Set("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
		form.Set("client_assertion", a)
	case cc.BasicAuth:
		hdr.Set("Authorization", "Basic "+base64.StdEncoding.EncodeToString(
			[]byte(url.QueryEscape(cc.ClientID)+":"+url.QueryEscape(cc.Secret))))
	default:
		form.Set("client_id", cc.ClientID)
		form.Set("client_secret", cc.Secret)
	}
	body, ctype := []byte(form.Encode()), "application/x-www-form-urlencoded"
	if cc.JSON {
		obj := make(map[string]string, len(form))
		for k := range form {
			obj[k] = form.Get(k)
		}
		var err error
		if body, err = json.Marshal(obj); err != nil {
			return Token{}, fmt.Errorf("token: %w", err)
		}
		ctype = "application/json"
	}
	return requestToken(ctx, cc.Client, cc.TokenURL, hdr, body, ctype, cc.Decode)
}

// requestToken POSTs a token request and reads the standard answer
// (RFC 6749 §5.1).
func requestToken(ctx context.Context, c *Client, tokenURL string, hdr http.Header, body []byte, ctype string,
	decode func(int, http.Header, []byte) error) (Token, error) {
	if decode == nil {
		decode = DecodeOAuthError
	}
	now := c.Clock().Now()
	res, err := c.Do(ctx, Request{
		Op: "token", Method: http.MethodPost, URL: tokenURL, Header: hdr,
		Body: body, ContentType: ctype, NoAuth: true, Decode: decode,
	})
	if err != nil {
		return Token{}, err
	}
	var tr struct {
		AccessToken string          `json:"access_token"`
		TokenType   string          `json:"token_type"`
		ExpiresIn   json.RawMessage `json:"expires_in"`
	}
	if err := DecodeJSON(res.Body, &tr); err != nil {
		return Token{}, fmt.Errorf("token: %w", err)
	}
	if tr.AccessToken == "" {
		return Token{}, errors.New("token: the answer has no access_token")
	}
	if tr.TokenType != "" && !strings.EqualFold(tr.TokenType, "Bearer") {
		return Token{}, fmt.Errorf("token: unsupported token_type %q", tr.TokenType)
	}
	// expires_in is a number; old Entra endpoints sent it as a string.
	secs, err := strconv.ParseInt(strings.Trim(string(tr.ExpiresIn), `"`), 10, 64)
	if err != nil || secs <= 0 {
		// No lifetime: assume a short one, so a wrong guess costs a fetch.
		secs = 300
	}
	return Token{AccessToken: tr.AccessToken, Type: "Bearer", Expiry: now.Add(time.Duration(secs) * time.Second)}, nil
}

// JWTBearer fetches tokens with the JWT bearer authorization grant (RFC
// 7523 §2.1): the assertion itself is the grant. Google service
// accounts use it, with iss = the service account's e-mail, sub = the
// user to act as (domain-wide delegation) and the scopes in a scope
// claim. Use its Fetch with a TokenCache.
type JWTBearer struct {
	// Client talks to the token endpoint; its origin is the endpoint's.
	Client   *Client
	TokenURL string
	// Issuer is the assertion's iss (the service account's e-mail).
	Issuer string
	// Assertion signs the grant; its Subject and Claims carry sub and
	// scope. The audience is TokenURL.
	Assertion *Assertion
}

// Fetch requests a token.
func (jb *JWTBearer) Fetch(ctx context.Context) (Token, error) {
	a, err := jb.Assertion.Sign(jb.Issuer, jb.TokenURL, jb.Client.Clock().Now())
	if err != nil {
		return Token{}, err
	}
	form := url.Values{"grant_type": {"urn:ietf:params:oauth:grant-type:jwt-bearer"}, "assertion": {a}}
	return requestToken(ctx, jb.Client, jb.TokenURL, nil, []byte(form.Encode()), "application/x-www-form-urlencoded", nil)
}

// Assertion signs JWT client assertions (RFC 7523 §3): iss = sub = the
// client ID (sub = Subject when set), aud = the token endpoint, a fresh
// jti, iat = nbf = now and a short exp.
type Assertion struct {
	Key crypto.Signer
	// Alg is the JWS algorithm: RS256/384/512, PS256/384/512 for RSA
	// keys, ES256/384/512 for EC keys.
	Alg jose.SignatureAlgorithm
	// KeyID goes into the kid header when set (Okta).
	KeyID string
	// Cert and Thumbprint put the certificate's thumbprint into the
	// header: Thumbprint "x5t" (SHA-1) or "x5t#S256" (SHA-256), as Entra
	// matches the assertion to an uploaded certificate by it.
	Cert       *x509.Certificate
	Thumbprint string
	// TTL is the assertion's lifetime (default 5 minutes).
	TTL time.Duration
	// Subject replaces the client ID as sub: the user a JWT bearer grant
	// acts as (Google's domain-wide delegation).
	Subject string
	// Claims are further claims (Google's scope).
	Claims map[string]any
}

// Sign builds one assertion.
func (a *Assertion) Sign(clientID, audience string, now time.Time) (string, error) {
	opts := (&jose.SignerOptions{}).WithType("JWT")
	if a.KeyID != "" {
		opts = opts.WithHeader(jose.HeaderKey("kid"), a.KeyID)
	}
	if a.Cert != nil {
		switch a.Thumbprint {
		case "x5t":
			sum := sha1.Sum(a.Cert.Raw) //nolint:gosec // see import
			opts = opts.WithHeader(jose.HeaderKey("x5t"), base64.RawURLEncoding.EncodeToString(sum[:]))
		case "x5t#S256":
			sum := sha256.Sum256(a.Cert.Raw)
			opts = opts.WithHeader(jose.HeaderKey("x5t#S256"), base64.RawURLEncoding.EncodeToString(sum[:]))
		default:
			return "", fmt.Errorf("assertion: unknown thumbprint header %q", a.Thumbprint)
		}
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: a.Alg, Key: a.Key}, opts)
	if err != nil {
		return "", fmt.Errorf("assertion: %w", err)
	}
	jti := make([]byte, 16)
	if _, err := rand.Read(jti); err != nil {
		return "", fmt.Errorf("assertion: %w", err)
	}
	ttl := a.TTL
	if ttl <= 0 {
		ttl = 5 * time.Minute
	}
	sub := clientID
	if a.Subject != "" {
		sub = a.Subject
	}
	claims := jwt.Claims{
		Issuer: clientID, Subject: sub, Audience: jwt.Audience{audience},
		ID:       base64.RawURLEncoding.EncodeToString(jti),
		IssuedAt: jwt.NewNumericDate(now), NotBefore: jwt.NewNumericDate(now),
		Expiry: jwt.NewNumericDate(now.Add(ttl)),
	}
	b := jwt.Signed(signer).Claims(claims)
	if len(a.Claims) > 0 {
		b = b.Claims(a.Claims)
	}
	s, err := b.Serialize()
	if err != nil {
		return "", fmt.Errorf("assertion: %w", err)
	}
	return s, nil
}

// DefaultAlg is the usual JWS algorithm for a key: RS256 for RSA, ES256,
// ES384 or ES512 by curve size for EC, EdDSA for Ed25519.
func DefaultAlg(key crypto.Signer) (jose.SignatureAlgorithm, error) {
	switch k := key.(type) {
	case *rsa.PrivateKey:
		return jose.RS256, nil
	case *ecdsa.PrivateKey:
		switch k.Curve.Params().BitSize {
		case 256:
			return jose.ES256, nil
		case 384:
			return jose.ES384, nil
		case 521:
			return jose.ES512, nil
		}
	case ed25519.PrivateKey:
		return jose.EdDSA, nil
	}
	return "", fmt.Errorf("unsupported key type %T", key)
}

// ParsePrivateKey reads the first private key in PEM text: PKCS #8,
// PKCS #1 (RSA) or SEC 1 (EC).
func ParsePrivateKey(text string) (crypto.Signer, error) {
	rest := []byte(text)
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			return nil, errors.New("no PEM private key found")
		}
		var k any
		var err error
		switch block.Type {
		case "PRIVATE KEY":
			k, err = x509.ParsePKCS8PrivateKey(block.Bytes)
		case "RSA PRIVATE KEY":
			k, err = x509.ParsePKCS1PrivateKey(block.Bytes)
		case "EC PRIVATE KEY":
			k, err = x509.ParseECPrivateKey(block.Bytes)
		case "ENCRYPTED PRIVATE KEY":
			return nil, errors.New("encrypted private keys are not supported; store the key unencrypted behind a secret file")
		default:
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("parse %s: %w", block.Type, err)
		}
		s, ok := k.(crypto.Signer)
		if !ok {
			return nil, fmt.Errorf("unsupported key type %T", k)
		}
		return s, nil
	}
}

// ParseCertificate reads the first certificate in PEM text.
func ParseCertificate(text string) (*x509.Certificate, error) {
	rest := []byte(text)
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			return nil, errors.New("no PEM certificate found")
		}
		if block.Type == "CERTIFICATE" {
			return x509.ParseCertificate(block.Bytes)
		}
	}
}
