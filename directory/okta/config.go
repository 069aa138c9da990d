package okta

import (
	"fmt"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/usherhq/usher/config"
	"github.com/usherhq/usher/directory"
	"github.com/usherhq/usher/directory/rest"
)

// Config is an Okta directory's block:
//
//	org_url: https://example.okta.com
//	api_token: {env: OKTA_TOKEN}           # or client_id + private_key
//	subject_attribute: id                  # Okta's OIDC sub
//	groups: [jira-users]                   # scope: people in these groups
//	attributes: [department, employeeNumber]
//
// The OAuth 2.0 service app (preferred over an API token, which acts as
// the admin who made it and expires after 30 days unused) needs the
// scopes okta.users.read and okta.groups.read granted and a read-only
// admin role.
type Config struct {
	// OrgURL is the org's base URL (https://example.okta.com), also the
	// issuer of service-app tokens.
	OrgURL string `yaml:"org_url"`
	// APIToken is an SSWS API token; or ClientID with PrivateKey (PEM,
	// RSA or EC) and KeyID for a service app's private_key_jwt.
	APIToken   config.Secret `yaml:"api_token"`
	ClientID   string        `yaml:"client_id"`
	PrivateKey config.Secret `yaml:"private_key"`
	KeyID      string        `yaml:"key_id"`
	// Scopes default to okta.users.read okta.groups.read.
	Scopes []string `yaml:"scopes"`
	// SubjectAttribute is what equals the login subject the IdP sends:
	// id (default; the sub of Okta's OIDC tokens), login, email, or
	// another profile attribute by name (looked up through Okta's search,
	// which is eventually consistent).
	SubjectAttribute string `yaml:"subject_attribute"`
	// Groups limit the scope to members of at least one of these groups:
	// group IDs (00g...) or names. Okta groups do not nest.
	Groups []string `yaml:"groups"`
	// Attributes are profile attributes to read into Person.Attributes.
	Attributes []string `yaml:"attributes"`
	// PageSize is the limit of each listing (default and most 200, as
	// Okta recommends).
	PageSize int `yaml:"page_size"`
	// Concurrency is how many membership reads run at once (default 2:
	// Okta's rate limits are per endpoint and modest).
	Concurrency int `yaml:"concurrency"`
	// Timeout bounds one attempt of one call (default 30s).
	Timeout time.Duration `yaml:"timeout"`
	// MaxWait caps the time one pull or delta spends waiting on rate
	// limits and backoff in all (default 10m); a lookup gets a twentieth.
	MaxWait time.Duration `yaml:"max_wait"`
	// DeltaOverlap is how far before the previous delta each delta looks
	// again (default 15m); see Connector.Delta.
	DeltaOverlap time.Duration `yaml:"delta_overlap"`
}

var _ directory.Config = (*Config)(nil)

const (
	maxPageSize    = 200
	maxConcurrency = 8
)

var defaultScopes = []string{"okta.users.read", "okta.groups.read"}

func (c Config) withDefaults() Config {
	c.OrgURL = strings.TrimRight(c.OrgURL, "/")
	if len(c.Scopes) == 0 {
		c.Scopes = defaultScopes
	}
	if c.SubjectAttribute == "" {
		c.SubjectAttribute = "id"
	}
	if c.PageSize == 0 {
		c.PageSize = maxPageSize
	}
	if c.Concurrency == 0 {
		c.Concurrency = 2
	}
	if c.Timeout == 0 {
		c.Timeout = 30 * time.Second
	}
	if c.MaxWait == 0 {
		c.MaxWait = 10 * time.Minute
	}
	if c.DeltaOverlap == 0 {
		c.DeltaOverlap = 15 * time.Minute
	}
	return c
}

// Validate reports every problem as a *config.FieldError.
func (c *Config) Validate() []error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, config.FieldErrorf(key, format, args...))
	}
	if c.OrgURL == "" {
		bad("org_url", "required")
	} else if err := rest.CheckBaseURL(c.OrgURL); err != nil {
		bad("org_url", "%v", err)
	} else if u, _ := url.Parse(c.OrgURL); strings.Trim(u.Path, "/") != "" {
		bad("org_url", "want the org's base URL (%s://%s), no path", u.Scheme, u.Host)
	}
	hasToken, hasApp := !c.APIToken.IsZero(), c.ClientID != "" || !c.PrivateKey.IsZero()
	switch {
	case hasToken && hasApp:
		bad("api_token", "set api_token or client_id with private_key, not both")
	case !hasToken && !hasApp:
		bad("api_token", "set api_token, or client_id with private_key")
	case hasApp && c.ClientID == "":
		bad("client_id", "required with private_key")
	case hasApp && c.PrivateKey.IsZero():
		bad("private_key", "required with client_id")
	}
	if c.KeyID != "" && !hasApp {
		bad("key_id", "only used with client_id and private_key")
	}
	if len(c.Scopes) > 0 && hasToken {
		bad("scopes", "only used with client_id (an API token has its admin's rights)")
	}
	for i, s := range c.Scopes {
		if !strings.HasPrefix(s, "okta.") || strings.ContainsAny(s, " \t") {
			bad(fmt.Sprintf("scopes[%d]", i), "%q is not an Okta API scope", s)
		}
	}
	if a := c.SubjectAttribute; a != "" && !isAttrName(a) {
		bad("subject_attribute", "%q is not id, login, email or a profile attribute name", a)
	}
	for i, g := range c.Groups {
		if strings.TrimSpace(g) == "" {
			bad(fmt.Sprintf("groups[%d]", i), "empty group")
		}
		if slices.Index(c.Groups, g) != i {
			bad(fmt.Sprintf("groups[%d]", i), "%q is listed twice", g)
		}
	}
	for i, a := range c.Attributes {
		if !isAttrName(a) {
			bad(fmt.Sprintf("attributes[%d]", i), "%q is not a profile attribute name", a)
		}
	}
	if c.PageSize < 0 || c.PageSize > maxPageSize {
		bad("page_size", "must be between 1 and %d", maxPageSize)
	}
	if c.Concurrency < 0 || c.Concurrency > maxConcurrency {
		bad("concurrency", "must be between 1 and %d", maxConcurrency)
	}
	if c.Timeout < 0 {
		bad("timeout", "must not be negative")
	}
	if c.MaxWait < 0 {
		bad("max_wait", "must not be negative")
	}
	if c.DeltaOverlap < 0 {
		bad("delta_overlap", "must not be negative")
	}
	return errs
}

// isAttrName accepts Okta profile attribute names (letters, digits,
// underscore; not starting with a digit).
func isAttrName(s string) bool {
	if s == "" {
		return false
	}
	for i, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r == '_':
		case r >= '0' && r <= '9' && i > 0:
		default:
			return false
		}
	}
	return true
}

// Open resolves the credentials and builds the connector.
func (c *Config) Open(name, idp string, deps directory.Deps) (directory.Connector, error) {
	if errs := c.Validate(); len(errs) > 0 {
		return nil, fmt.Errorf("okta %s: %w", name, errs[0])
	}
	cfg := c.withDefaults()
	org, _ := url.Parse(cfg.OrgURL)
	var auth rest.Auth
	if !cfg.APIToken.IsZero() {
		tok, err := cfg.APIToken.Resolve()
		if err != nil {
			return nil, fmt.Errorf("okta %s: api_token: %w", name, err)
		}
		auth = rest.StaticAuth{Value: "SSWS " + tok}
	} else {
		keyPEM, err := cfg.PrivateKey.Resolve()
		if err != nil {
			return nil, fmt.Errorf("okta %s: private_key: %w", name, err)
		}
		key, err := rest.ParsePrivateKey(keyPEM)
		if err != nil {
			return nil, fmt.Errorf("okta %s: private_key: %w", name, err)
		}
		alg, err := rest.DefaultAlg(key)
		if err != nil {
			return nil, fmt.Errorf("okta %s: private_key: %w", name, err)
		}
		tc, err := rest.New(rest.Config{
			Service: "okta " + name + " token", Origin: org, HTTP: deps.Client, Clock: deps.Clock,
			Log: deps.Log, Observe: deps.Observe, Timeout: cfg.Timeout, MaxAttempts: 3,
			Retry: retry, Pace: pace,
		})
		if err != nil {
			return nil, err
		}
		cc := &rest.ClientCredentials{
			Client: tc, TokenURL: cfg.OrgURL + "/oauth2/v1/token", ClientID: cfg.ClientID,
			Scope:     strings.Join(cfg.Scopes, " "),
			Assertion: &rest.Assertion{Key: key, Alg: alg, KeyID: cfg.KeyID, TTL: 5 * time.Minute},
		}
		auth = rest.NewTokenCache(cc.Fetch, deps.Clock)
	}
	return newConnector(name, idp, cfg, auth, deps)
}
