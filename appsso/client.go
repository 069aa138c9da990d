package appsso

import (
	"crypto/sha256"
	"crypto/subtle"
	"strings"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/zitadel/oidc/v3/pkg/oidc"
	"github.com/zitadel/oidc/v3/pkg/op"
)

// Client is one app's registration: its built-in SSO is the relying party.
type Client struct {
	// ID is the client_id.
	ID string
	// Secret is the client secret; "" for a public client.
	Secret string
	// Public clients have no secret and must use PKCE.
	Public bool
	// RedirectURIs are matched exactly, byte for byte.
	RedirectURIs []string
	// App is the usher app the client signs people into: the session must
	// allow it.
	App string
	// Groups adds a groups claim for the groups scope.
	Groups bool
	// SigningAlg signs the client's ID tokens: "RS256" or "ES256".
	SigningAlg string
}

// client is a Client as zitadel's op package sees it.
type client struct {
	Client
	alg        jose.SignatureAlgorithm
	secretHash [32]byte
	insecure   bool // redirect URIs on http: a loopback or lab app
}

var _ op.Client = (*client)(nil)

func newClient(c Client) *client {
	cl := &client{Client: c, alg: jose.SignatureAlgorithm(c.SigningAlg), secretHash: sha256.Sum256([]byte(c.Secret))}
	if cl.alg == "" {
		// The observed Atlassian build does not verify the ID token's
		// signature; later builds may [U, reference §10, §32]. RS256 with a
		// kid and a published JWKS is safe under either.
		cl.alg = jose.RS256
	}
	for _, u := range c.RedirectURIs {
		cl.insecure = cl.insecure || strings.HasPrefix(u, "http://")
	}
	return cl
}

// checkSecret compares in constant time; hashing first hides the length.
func (c *client) checkSecret(secret string) bool {
	if c.Public {
		return false
	}
	h := sha256.Sum256([]byte(secret))
	return subtle.ConstantTimeCompare(h[:], c.secretHash[:]) == 1
}

func (c *client) GetID() string                    { return c.ID }
func (c *client) RedirectURIs() []string           { return c.Client.RedirectURIs }
func (c *client) PostLogoutRedirectURIs() []string { return nil }
func (c *client) ApplicationType() op.ApplicationType {
	return op.ApplicationTypeWeb
}

// AuthMethod: the Atlassian client sends no PKCE (reference §6; later
// builds [U]), so confidential clients may omit it; it is honoured when
// sent.
func (c *client) AuthMethod() oidc.AuthMethod {
	if c.Public {
		return oidc.AuthMethodNone
	}
	return oidc.AuthMethodBasic // client_secret_post is accepted too (Config.AuthMethodPost)
}
func (c *client) ResponseTypes() []oidc.ResponseType {
	return []oidc.ResponseType{oidc.ResponseTypeCode}
}
func (c *client) GrantTypes() []oidc.GrantType { return []oidc.GrantType{oidc.GrantTypeCode} }

// LoginURL is not used: the authorize endpoint is usher's own and sends
// people to usher's login itself.
func (c *client) LoginURL(string) string              { return "" }
func (c *client) AccessTokenType() op.AccessTokenType { return op.AccessTokenTypeBearer }
func (c *client) IDTokenLifetime() time.Duration      { return tokenTTL }

// DevMode lets a registered http:// redirect URI through for public
// clients too; config keeps redirect URIs on the app's own host.
func (c *client) DevMode() bool { return c.insecure }
func (c *client) RestrictAdditionalIdTokenScopes() func([]string) []string {
	return func(s []string) []string { return s }
}
func (c *client) RestrictAdditionalAccessTokenScopes() func([]string) []string {
	return func(s []string) []string { return s }
}
func (c *client) IsScopeAllowed(scope string) bool { return scope == scopeGroups && c.Groups }

// IDTokenUserinfoClaimsAssertion puts the profile and e-mail claims in the
// ID token even though an access token is issued: the Atlassian client
// reads the username and its JIT attributes from the ID token only
// (reference §11, §13).
func (c *client) IDTokenUserinfoClaimsAssertion() bool { return true }
func (c *client) ClockSkew() time.Duration             { return 0 }
