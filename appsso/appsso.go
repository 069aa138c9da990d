// Package appsso is usher's OpenID Provider: the one the apps' built-in
// SSO signs people in through (Jira, Confluence and Bitbucket Data
// Center's "Authentication methods" OpenID Connect client, or any relying
// party). It owns the client registrations, the authorization endpoint,
// which is usher's own login (a person with a usher session is not sent to
// an IdP again; one without goes through /usher/login and is admitted and
// provisioned there), single-use short-lived codes, tokens, userinfo,
// discovery, and the signing keys, which live sealed in the store, shared
// by every replica, and rotate.
//
// The protocol work (request parsing and validation, client
// authentication, PKCE, token responses, ID token signing) is
// zitadel/oidc's op package; its types stay inside this package. Its
// Storage contract is met without storing flows: see grant.go.
//
// Behaviour follows shared/reference/atlassian-sso-and-cloud.md, part A.
package appsso

import (
	"context"
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/zitadel/oidc/v3/pkg/oidc"
	"github.com/zitadel/oidc/v3/pkg/op"

	"github.com/usherhq/usher/jit"
	"github.com/usherhq/usher/session"
	"github.com/usherhq/usher/store"
)

// Path is where the provider is served on usher's public listener; the
// issuer is the public URL followed by Path, without a trailing slash.
const Path = "/usher/op"

// Store is what the provider keeps in usher's store: signing keys
// (Blobs), consumed codes (SeenOnce) and the key-rotation lease.
type Store interface {
	store.Blobs
	SeenOnce(ctx context.Context, key string, expires time.Time) (bool, error)
	Lease(ctx context.Context, name, owner string, ttl time.Duration) (bool, error)
	ReleaseLease(ctx context.Context, name, owner string) error
}

// Options configure a Provider.
type Options struct {
	// PublicURL is usher's public base URL; the issuer is PublicURL+Path.
	PublicURL *url.URL
	Clients   []Client
	// Sessions opens usher's session cookie (and refuses revoked ones).
	Sessions *session.Codec
	// Secrets are usher's session keys, first one sealing. The provider
	// seals its codes, tokens and private keys under keys derived from
	// them, so it needs no secret of its own and rolls with them.
	Secrets [][]byte
	Store   Store
	// Audit records refusals (jit.AuditLog, usher's one audit writer).
	Audit interface {
		Record(ctx context.Context, entries ...jit.Entry) error
	}
	// Admits reports whether the config in force lets the people of idp
	// into app (the IdP is still configured and its access policy still
	// names the app), so that a reload that closes an app shuts out
	// sessions issued before it, as the proxy does. Nil admits all.
	Admits func(idp, app string) bool
	// Revoker is consulted at userinfo: tokens of a revoked usher session
	// (logout, deprovisioning) or of a replayed code are refused.
	Revoker session.Revoker
	// Revocations records the revocation of a replayed code's tokens on
	// every replica (session.Shared).
	Revocations interface {
		RevokeSession(ctx context.Context, s *session.Session) error
	}
	// FlowTimeout bounds a round trip through usher's login (default 10m).
	FlowTimeout time.Duration
	// Owner names this replica in the key-rotation lease.
	Owner string
	// RotateEvery is how long a signing key signs (default 30 days);
	// Prepublish is how long a new key is published before it signs
	// (default 10 minutes, several KeyRefresh intervals); KeyRefresh is how
	// often keys are re-read from the store (default 1 minute).
	RotateEvery, Prepublish, KeyRefresh time.Duration
	Log                                 *slog.Logger
	Now                                 func() time.Time
}

// Provider is the OpenID Provider. It is an http.Handler for everything
// under Path and safe for concurrent use.
type Provider struct {
	opt     Options
	log     *slog.Logger
	now     func() time.Time
	issuer  string
	clients map[string]*client
	seal    *session.Codec
	keys    *keyring
	op      *op.Provider
	mux     *http.ServeMux
	disco   *oidc.DiscoveryConfiguration
}

// New builds the provider and makes sure signing keys exist: it creates
// the first ones, or waits briefly for another replica that is creating
// them.
func New(ctx context.Context, opt Options) (*Provider, error) {
	if opt.PublicURL == nil || opt.Sessions == nil || opt.Store == nil || len(opt.Secrets) == 0 {
		return nil, errors.New("appsso: PublicURL, Sessions, Secrets and Store are required")
	}
	p := &Provider{opt: opt, log: opt.Log, now: opt.Now, clients: map[string]*client{}}
	if p.log == nil {
		p.log = slog.Default()
	}
	if p.now == nil {
		p.now = time.Now
	}
	if p.opt.FlowTimeout <= 0 {
		p.opt.FlowTimeout = 10 * time.Minute
	}
	for _, d := range []struct {
		v   *time.Duration
		def time.Duration
	}{{&p.opt.RotateEvery, 30 * 24 * time.Hour}, {&p.opt.Prepublish, 10 * time.Minute}, {&p.opt.KeyRefresh, time.Minute}} {
		if *d.v <= 0 {
			*d.v = d.def
		}
	}
	// The issuer is byte-identical everywhere (discovery, iss, the admin's
	// Atlassian setting): no trailing slash (reference §5, §10).
	p.issuer = opt.PublicURL.Scheme + "://" + opt.PublicURL.Host + Path

	derived := make([][]byte, len(opt.Secrets))
	for i, s := range opt.Secrets {
		k, err := hkdf.Key(sha256.New, s, nil, "usher appsso v1", 32)
		if err != nil {
			return nil, fmt.Errorf("appsso: derive key %d: %w", i+1, err)
		}
		derived[i] = k
	}
	var err error
	p.seal, err = session.NewCodec(derived, session.Options{Name: "usher_appsso", Idle: time.Hour, Absolute: time.Hour, Now: p.now})
	if err != nil {
		return nil, fmt.Errorf("appsso: %w", err)
	}
	algs := []jose.SignatureAlgorithm{jose.RS256}
	for _, c := range opt.Clients {
		if c.ID == "" || p.clients[c.ID] != nil {
			return nil, fmt.Errorf("appsso: client ID %q empty or registered twice", c.ID)
		}
		if c.Public != (c.Secret == "") {
			return nil, fmt.Errorf("appsso: client %q: a secret, or public, not both", c.ID)
		}
		cl := newClient(c)
		if cl.alg != jose.RS256 && cl.alg != jose.ES256 {
			return nil, fmt.Errorf("appsso: client %q: signing algorithm %q", c.ID, c.SigningAlg)
		}
		p.clients[c.ID] = cl
		if !slices.Contains(algs, cl.alg) {
			algs = append(algs, cl.alg)
		}
	}
	p.keys = &keyring{
		store: opt.Store, seal: p.seal, algs: algs, owner: opt.Owner, now: p.now, log: p.log,
		rotateEvery: p.opt.RotateEvery, prepublish: p.opt.Prepublish,
		// An ID token signed just before the switch lives tokenTTL; the
		// Atlassian client allows 60 s of clock skew (reference §10).
		retireAfter: tokenTTL + 5*time.Minute,
		cache:       map[string]*signingKey{},
	}
	if err := p.keys.ready(ctx, 10*time.Second); err != nil {
		return nil, err
	}

	opts := []op.Option{op.WithCrypto(sealer{p})}
	if opt.PublicURL.Scheme == "http" {
		opts = append(opts, op.WithAllowInsecure())
	}
	p.op, err = op.NewProvider(&op.Config{CodeMethodS256: true, AuthMethodPost: true}, storage{p}, op.StaticIssuer(p.issuer), opts...)
	if err != nil {
		return nil, fmt.Errorf("appsso: %w", err)
	}
	p.disco = p.discovery()
	p.mux = p.routes()
	return p, nil
}

// Issuer is the provider's issuer URL, as relying parties must configure it.
func (p *Provider) Issuer() string { return p.issuer }

// Run re-reads the signing keys every KeyRefresh, so keys another replica
// created or retired are used and published here, and rotates them when
// due. It returns when ctx ends.
func (p *Provider) Run(ctx context.Context) {
	t := time.NewTicker(p.opt.KeyRefresh)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := p.RefreshKeys(ctx); err != nil && ctx.Err() == nil {
			p.log.Error("appsso: refresh signing keys", "err", err)
		}
	}
}

// RefreshKeys re-reads the signing keys and rotates them when due.
func (p *Provider) RefreshKeys(ctx context.Context) error {
	if _, err := p.keys.rotate(ctx); err != nil {
		return err
	}
	return p.keys.load(ctx)
}

func (p *Provider) routes() *http.ServeMux {
	m := http.NewServeMux()
	m.HandleFunc("GET "+Path+oidc.DiscoveryEndpoint, p.discover)
	m.HandleFunc("GET "+Path+"/authorize", p.authorize)
	m.HandleFunc("POST "+Path+"/authorize", p.authorize)
	m.HandleFunc("GET "+Path+"/continue", p.continueLogin)
	m.HandleFunc("POST "+Path+"/token", p.token)
	m.HandleFunc("GET "+Path+"/userinfo", p.userinfo)
	m.HandleFunc("POST "+Path+"/userinfo", p.userinfo)
	m.HandleFunc("GET "+Path+"/keys", p.jwks)
	m.HandleFunc(Path+"/", func(w http.ResponseWriter, r *http.Request) {
		p.fail(w, r, http.StatusNotFound, "Not found", "There is no such page.", nil)
	})
	return m
}

// ServeHTTP serves the provider's endpoints under Path.
func (p *Provider) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p.mux.ServeHTTP(w, r.WithContext(op.ContextWithIssuer(r.Context(), p.issuer)))
}

// discovery is the provider's metadata. It names only what is served: the
// code flow, its endpoints, userinfo (which the Atlassian client's
// discovery dereferences unconditionally, reference §5) and the JWKS.
func (p *Provider) discovery() *oidc.DiscoveryConfiguration {
	algs := make([]string, len(p.keys.algs))
	for i, a := range p.keys.algs {
		algs[i] = string(a)
	}
	methods := []oidc.AuthMethod{oidc.AuthMethodBasic, oidc.AuthMethodPost}
	for _, c := range p.clients {
		if c.Public {
			methods = append(methods, oidc.AuthMethodNone)
			break
		}
	}
	return &oidc.DiscoveryConfiguration{
		Issuer:                            p.issuer,
		AuthorizationEndpoint:             p.issuer + "/authorize",
		TokenEndpoint:                     p.issuer + "/token",
		UserinfoEndpoint:                  p.issuer + "/userinfo",
		JwksURI:                           p.issuer + "/keys",
		ScopesSupported:                   []string{oidc.ScopeOpenID, oidc.ScopeProfile, oidc.ScopeEmail, scopeGroups},
		ResponseTypesSupported:            []string{string(oidc.ResponseTypeCode)},
		ResponseModesSupported:            []string{string(oidc.ResponseModeQuery), string(oidc.ResponseModeFormPost)},
		GrantTypesSupported:               []oidc.GrantType{oidc.GrantTypeCode},
		SubjectTypesSupported:             []string{"public"},
		IDTokenSigningAlgValuesSupported:  algs,
		TokenEndpointAuthMethodsSupported: methods,
		ClaimsSupported: []string{"sub", "iss", "aud", "exp", "iat", "auth_time", "nonce", "azp", "at_hash", "c_hash",
			"preferred_username", "name", "email", "email_verified", "groups"},
		CodeChallengeMethodsSupported: []oidc.CodeChallengeMethod{oidc.CodeChallengeMethodS256, oidc.CodeChallengeMethodPlain},
	}
}

func (p *Provider) discover(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "public, max-age=300")
	op.Discover(w, p.disco)
}

func (p *Provider) jwks(w http.ResponseWriter, r *http.Request) {
	// Shorter than Prepublish, so relying parties that cache the set see a
	// new key before it signs.
	w.Header().Set("Cache-Control", "public, max-age=300")
	op.Keys(w, r, storage{p})
}

// token serves the token endpoint: the authorization code grant only.
func (p *Provider) token(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Pragma", "no-cache")
	r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	if err := r.ParseForm(); err != nil {
		op.RequestError(w, r, oidc.ErrInvalidRequest().WithDescription("cannot parse the form").WithParent(err), nil)
		return
	}
	switch gt := r.PostForm.Get("grant_type"); gt {
	case string(oidc.GrantTypeCode):
	case "":
		op.RequestError(w, r, oidc.ErrInvalidRequest().WithDescription("grant_type missing"), nil)
		return
	default:
		op.RequestError(w, r, oidc.ErrUnsupportedGrantType().WithDescription("only authorization_code is offered"), nil)
		return
	}
	// The ID token is signed with the algorithm registered for the
	// client the request names; the op package authenticates it after.
	id := r.PostForm.Get("client_id")
	if u, _, ok := r.BasicAuth(); ok {
		id, _ = url.QueryUnescape(u)
	}
	ctx := r.Context()
	if c := p.clients[id]; c != nil {
		ctx = context.WithValue(ctx, algKey{}, c.alg)
	}
	op.CodeExchange(w, r.WithContext(ctx), p.op)
}

func (p *Provider) userinfo(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	op.Userinfo(w, r, p.op)
}

// subject is the sub claim: stable per person (IdP and IdP subject),
// opaque, and the same for every app, so that an app's own link to the
// identity (Atlassian's jit_idp_id) survives renames.
func subject(idp, sub string) string {
	h := sha256.New()
	h.Write([]byte("usher sub v1\x00"))
	h.Write([]byte(idp))
	h.Write([]byte{0})
	h.Write([]byte(sub))
	return base64.RawURLEncoding.EncodeToString(h.Sum(nil))
}
