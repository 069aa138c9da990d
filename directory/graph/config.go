package graph

import (
	"crypto/rsa"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/usherhq/usher/config"
	"github.com/usherhq/usher/directory"
	"github.com/usherhq/usher/directory/rest"
)

// Config is a Microsoft Graph directory's block:
//
//	tenant_id: 72f988bf-86f1-41af-91ab-2d7cd011db47
//	client_id: 0b1c...
//	client_secret: {env: GRAPH_SECRET}     # or private_key + certificate
//	subject_attribute: id                  # = the token's oid
//	groups: [jira-users]                   # scope: people in these groups
//	user_filter: "userType eq 'Member'"    # scope: an OData filter on /users
//	group_filter: "startswith(displayName,'jira-')"
//	attributes: [department, employeeId]
//
// The app needs the application permissions User.Read.All and
// GroupMember.Read.All (or Directory.Read.All), admin-consented;
// User-LifeCycleInfo.Read.All too with leave_date.
type Config struct {
	// TenantID is the tenant GUID or a verified domain.
	TenantID string `yaml:"tenant_id"`
	ClientID string `yaml:"client_id"`
	// ClientSecret, or PrivateKey with Certificate (PEM): exactly one
	// credential.
	ClientSecret config.Secret `yaml:"client_secret"`
	PrivateKey   config.Secret `yaml:"private_key"`
	Certificate  config.Secret `yaml:"certificate"`
	// AssertionAlg signs the certificate credential's assertion: PS256
	// with an x5t#S256 header (the default, current Entra docs) or RS256
	// with x5t (older docs and clients).
	AssertionAlg string `yaml:"assertion_alg"`
	// LoginURL and GraphURL default to the global cloud
	// (https://login.microsoftonline.com, https://graph.microsoft.com);
	// national clouds and tests set them.
	LoginURL string `yaml:"login_url"`
	GraphURL string `yaml:"graph_url"`
	// SubjectAttribute is the user property equal to the login subject
	// the IdP sends: id (default; the token's oid claim),
	// userPrincipalName, mail, onPremisesSamAccountName,
	// onPremisesUserPrincipalName, onPremisesImmutableId or employeeId.
	SubjectAttribute string `yaml:"subject_attribute"`
	// Groups limit the scope to people in at least one of these groups,
	// through nesting: object IDs, or display names that must match
	// exactly one group.
	Groups []string `yaml:"groups"`
	// UserFilter limits the scope with an OData $filter on /users. Only
	// what Graph serves without advanced queries is allowed (eq, in,
	// startswith, and, or; no ne, not, endswith): advanced queries are
	// eventually consistent, and a just-created person missing from a
	// "complete" pull would read as a leaver.
	UserFilter string `yaml:"user_filter"`
	// GroupFilter limits which groups are read and reported (same
	// rules). It saves the membership reads of groups no mapping uses.
	GroupFilter string `yaml:"group_filter"`
	// Attributes are further user properties to read into
	// Person.Attributes (department, employeeId, jobTitle,
	// onPremisesExtensionAttributes, extension_<app>_<name>, ...).
	Attributes []string `yaml:"attributes"`
	// LeaveDate makes a past employeeLeaveDateTime mean Disabled.
	LeaveDate bool `yaml:"leave_date"`
	// PageSize is $top for every listing, 1 to 999 (default 999).
	PageSize int `yaml:"page_size"`
	// Concurrency is how many membership reads run at once (default 4).
	Concurrency int `yaml:"concurrency"`
	// Timeout bounds one attempt of one call (default 30s).
	Timeout time.Duration `yaml:"timeout"`
	// MaxWait caps the time one pull or delta spends waiting on
	// throttling and backoff in all (default 10m); a lookup gets a
	// twentieth of it.
	MaxWait time.Duration `yaml:"max_wait"`
}

var _ directory.Config = (*Config)(nil)

const (
	defaultLoginURL = "https://login.microsoftonline.com"
	defaultGraphURL = "https://graph.microsoft.com"
	maxPageSize     = 999
	maxConcurrency  = 16
)

var subjectAttributes = []string{
	"id", "userPrincipalName", "mail", "onPremisesSamAccountName",
	"onPremisesUserPrincipalName", "onPremisesImmutableId", "employeeId",
}

// withDefaults is the one place defaults are applied.
func (c Config) withDefaults() Config {
	if c.LoginURL == "" {
		c.LoginURL = defaultLoginURL
	}
	if c.GraphURL == "" {
		c.GraphURL = defaultGraphURL
	}
	c.LoginURL = strings.TrimRight(c.LoginURL, "/")
	c.GraphURL = strings.TrimRight(c.GraphURL, "/")
	if c.SubjectAttribute == "" {
		c.SubjectAttribute = "id"
	}
	if c.AssertionAlg == "" {
		c.AssertionAlg = string(jose.PS256)
	}
	if c.PageSize == 0 {
		c.PageSize = maxPageSize
	}
	if c.Concurrency == 0 {
		c.Concurrency = 4
	}
	if c.Timeout == 0 {
		c.Timeout = 30 * time.Second
	}
	if c.MaxWait == 0 {
		c.MaxWait = 10 * time.Minute
	}
	return c
}

// Validate reports every problem as a *config.FieldError.
func (c *Config) Validate() []error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, config.FieldErrorf(key, format, args...))
	}
	if c.TenantID == "" {
		bad("tenant_id", "required (the tenant GUID or a verified domain)")
	} else if strings.ContainsAny(c.TenantID, "/?#% ") {
		bad("tenant_id", "%q is not a tenant GUID or domain", c.TenantID)
	}
	if c.ClientID == "" {
		bad("client_id", "required")
	}
	hasSecret, hasKey := !c.ClientSecret.IsZero(), !c.PrivateKey.IsZero()
	switch {
	case hasSecret && hasKey:
		bad("client_secret", "set client_secret or private_key with certificate, not both")
	case !hasSecret && !hasKey:
		bad("client_secret", "set client_secret, or private_key with certificate")
	case hasKey && c.Certificate.IsZero():
		bad("certificate", "required with private_key (Entra finds the key by the certificate's thumbprint)")
	}
	if !c.Certificate.IsZero() && !hasKey {
		bad("certificate", "only used with private_key")
	}
	if c.AssertionAlg != "" && c.AssertionAlg != string(jose.PS256) && c.AssertionAlg != string(jose.RS256) {
		bad("assertion_alg", "want PS256 or RS256, got %q", c.AssertionAlg)
	}
	for key, u := range map[string]string{"login_url": c.LoginURL, "graph_url": c.GraphURL} {
		if u == "" {
			continue
		}
		if err := rest.CheckBaseURL(u); err != nil {
			bad(key, "%v", err)
		} else if p, _ := url.Parse(u); strings.Trim(p.Path, "/") != "" {
			bad(key, "want the host only (%s://%s), no path", p.Scheme, p.Host)
		}
	}
	if c.SubjectAttribute != "" && !slices.Contains(subjectAttributes, c.SubjectAttribute) {
		bad("subject_attribute", "want one of %s, got %q", strings.Join(subjectAttributes, ", "), c.SubjectAttribute)
	}
	for i, g := range c.Groups {
		if strings.TrimSpace(g) == "" {
			bad(fmt.Sprintf("groups[%d]", i), "empty group")
		}
		if slices.Index(c.Groups, g) != i {
			bad(fmt.Sprintf("groups[%d]", i), "%q is listed twice", g)
		}
	}
	if err := checkFilter(c.UserFilter); err != nil {
		bad("user_filter", "%v", err)
	}
	if err := checkFilter(c.GroupFilter); err != nil {
		bad("group_filter", "%v", err)
	}
	for i, a := range c.Attributes {
		if !isPropertyName(a) {
			bad(fmt.Sprintf("attributes[%d]", i), "%q is not a Graph property name", a)
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
	return errs
}

func isPropertyName(s string) bool {
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

// checkFilter refuses what would make Graph answer from its eventually
// consistent index (reference §2.3): ne, not, endswith, $search, $count.
// It looks at words outside string literals only.
func checkFilter(f string) error {
	if f == "" {
		return nil
	}
	var words []string
	var cur strings.Builder
	inString := false
	flush := func() {
		if cur.Len() > 0 {
			words = append(words, strings.ToLower(cur.String()))
			cur.Reset()
		}
	}
	for i := 0; i < len(f); i++ {
		ch := f[i]
		switch {
		case ch == '\'':
			flush()
			if inString && i+1 < len(f) && f[i+1] == '\'' {
				i++ // an escaped quote
				continue
			}
			inString = !inString
		case inString:
		case ch == '(' || ch == ')' || ch == ',' || ch == ' ':
			flush()
		default:
			cur.WriteByte(ch)
		}
	}
	if inString {
		return fmt.Errorf("unterminated string literal")
	}
	flush()
	for _, w := range words {
		switch {
		case w == "ne" || w == "not" || w == "endswith":
			return fmt.Errorf("%q needs Graph's advanced (eventually consistent) queries, which a complete pull cannot use", w)
		case strings.HasPrefix(w, "$"):
			return fmt.Errorf("%q: give the filter expression only", w)
		case w == "any" || w == "all" || strings.Contains(w, "/any") || strings.Contains(w, "/all"):
			return fmt.Errorf("lambda operators need Graph's advanced queries")
		}
	}
	return nil
}

// Open resolves the credentials and builds the connector.
func (c *Config) Open(name, idp string, deps directory.Deps) (directory.Connector, error) {
	if errs := c.Validate(); len(errs) > 0 {
		return nil, fmt.Errorf("graph %s: %w", name, errs[0])
	}
	cfg := c.withDefaults()
	auth, err := cfg.credentials(name, deps)
	if err != nil {
		return nil, err
	}
	return newConnector(name, idp, cfg, auth, deps)
}

// credentials builds the token cache for the configured credential.
func (c Config) credentials(name string, deps directory.Deps) (*rest.TokenCache, error) {
	loginURL, _ := url.Parse(c.LoginURL)
	tc, err := rest.New(rest.Config{
		Service: "graph " + name + " login", Origin: loginURL, HTTP: deps.Client, Clock: deps.Clock,
		Log: deps.Log, Observe: deps.Observe, Timeout: c.Timeout, MaxAttempts: 3,
	})
	if err != nil {
		return nil, err
	}
	cc := &rest.ClientCredentials{
		Client: tc, ClientID: c.ClientID, Scope: c.GraphURL + "/.default",
		TokenURL: c.LoginURL + "/" + url.PathEscape(c.TenantID) + "/oauth2/v2.0/token",
	}
	if !c.ClientSecret.IsZero() {
		if cc.Secret, err = c.ClientSecret.Resolve(); err != nil {
			return nil, fmt.Errorf("graph %s: client_secret: %w", name, err)
		}
	} else {
		a, err := c.assertion()
		if err != nil {
			return nil, fmt.Errorf("graph %s: %w", name, err)
		}
		cc.Assertion = a
	}
	return rest.NewTokenCache(cc.Fetch, deps.Clock), nil
}

func (c Config) assertion() (*rest.Assertion, error) {
	keyPEM, err := c.PrivateKey.Resolve()
	if err != nil {
		return nil, fmt.Errorf("private_key: %w", err)
	}
	key, err := rest.ParsePrivateKey(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("private_key: %w", err)
	}
	if _, isRSA := key.(*rsa.PrivateKey); !isRSA {
		return nil, fmt.Errorf("private_key: Entra certificate credentials are RSA keys, got %T", key)
	}
	certPEM, err := c.Certificate.Resolve()
	if err != nil {
		return nil, fmt.Errorf("certificate: %w", err)
	}
	cert, err := rest.ParseCertificate(certPEM)
	if err != nil {
		return nil, fmt.Errorf("certificate: %w", err)
	}
	pub, isRSA := cert.PublicKey.(*rsa.PublicKey)
	if !isRSA || !pub.Equal(key.Public()) {
		return nil, fmt.Errorf("certificate: does not hold the public key of private_key")
	}
	a := &rest.Assertion{Key: key, Cert: cert, Alg: jose.PS256, Thumbprint: "x5t#S256", TTL: 5 * time.Minute}
	if c.AssertionAlg == string(jose.RS256) {
		a.Alg, a.Thumbprint = jose.RS256, "x5t"
	}
	return a, nil
}
