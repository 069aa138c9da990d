package oidc

// The `config:` block of an OIDC IdP: its keys, defaults and checks.

import (
	"fmt"
	"net"
	"net/url"
	"slices"
	"strings"
	"time"

	gooidc "github.com/coreos/go-oidc/v3/oidc"

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
