package google

import (
	"context"
	"crypto/rsa"
	"encoding/json"
	"fmt"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/usherhq/usher/config"
	"github.com/usherhq/usher/directory"
	"github.com/usherhq/usher/directory/rest"
)

// Config is a Google Workspace directory's block:
//
//	service_account_key: {file: /etc/usher/google-sa.json}
//	admin: usher-sync@example.com          # the admin the service account acts as
//	subject_attribute: id                  # Google's OIDC sub; or primaryEmail for SAML
//	org_units: [/Staff]                    # scope: these units and below
//	groups: [jira-users@example.com]       # scope: members, through nesting
//	attributes: [orgUnitPath, organizations.department, externalIds.organization]
//
// Setup: create a service account and a JSON key for it; in the Admin
// console (Security → API controls → Domain-wide delegation) authorize
// its client ID for the scopes
// https://www.googleapis.com/auth/admin.directory.user.readonly and
// https://www.googleapis.com/auth/admin.directory.group.readonly; name
// an admin whose role may read users and groups as admin.
type Config struct {
	// ServiceAccountKey is the service account's JSON key file, as
	// Google issues it (client_email, private_key, private_key_id).
	ServiceAccountKey config.Secret `yaml:"service_account_key"`
	// Admin is the e-mail of the administrator the service account
	// impersonates (the assertion's sub): the Directory API answers
	// only admins.
	Admin string `yaml:"admin"`
	// Customer is my_customer (default: the admin's own account, every
	// domain of it) or a customer ID (C01abc234).
	Customer string `yaml:"customer"`
	// OAuthURL and APIURL default to https://oauth2.googleapis.com and
	// https://admin.googleapis.com; tests point them at an emulator.
	// The token endpoint is OAuthURL + /token. The key file's own
	// token_uri is ignored: the configuration, not a secret's content,
	// decides where usher sends a signed grant.
	OAuthURL string `yaml:"oauth_url"`
	APIURL   string `yaml:"api_url"`
	// SubjectAttribute is what equals the login subject the IdP sends:
	// id (default; the sub of Google's own OIDC tokens [U]: the reference
	// does not say so, Google's sign-in documents call sub the account's
	// unique ID), primaryEmail
	// (the usual NameID of a Google SAML app), externalIds.<type> (the
	// value of the user's external ID of that type, or of that
	// customType for custom ones) or customSchemas.<schema>.<field>.
	SubjectAttribute string `yaml:"subject_attribute"`
	// OrgUnits limit the scope to people in these organizational units
	// or below them: paths such as /Staff/Engineering.
	OrgUnits []string `yaml:"org_units"`
	// Groups limit the scope to members of at least one of these groups,
	// through nesting: group e-mail addresses (or aliases) or ids. With
	// OrgUnits as well, a person must satisfy both.
	Groups []string `yaml:"groups"`
	// Query is not supported and refused: see Validate.
	Query string `yaml:"query"`
	// GroupNames is what a person's groups are called: email (default)
	// or name (the display name). The default departs from the display
	// names other directories report on purpose: a Google group's name
	// need not be unique, and where users may create groups, anyone
	// could make one named like a privileged group; an address is
	// unique and taken only once.
	GroupNames string `yaml:"group_names"`
	// Attributes are user fields to read into Person.Attributes, by
	// path: a field (orgUnitPath, isAdmin, aliases), a field of the
	// entries of a list or object (organizations.department,
	// name.fullName), externalIds.<type>, or
	// customSchemas.<schema>.<field>.
	Attributes []string `yaml:"attributes"`
	// PageSize is maxResults of the users listing, 1 to 500 (default
	// 500); group and member listings use it up to their maximum, 200.
	PageSize int `yaml:"page_size"`
	// Concurrency is how many member listings run at once (default 4).
	Concurrency int `yaml:"concurrency"`
	// Timeout bounds one attempt of one call (default 30s).
	Timeout time.Duration `yaml:"timeout"`
	// MaxWait caps the time one pull spends waiting on quota errors and
	// backoff in all (default 10m); a lookup gets a twentieth of it.
	MaxWait time.Duration `yaml:"max_wait"`
}

var _ directory.Config = (*Config)(nil)

const (
	defaultOAuthURL = "https://oauth2.googleapis.com"
	defaultAPIURL   = "https://admin.googleapis.com"
	maxUserPage     = 500 // users.list maxResults (reference §4.2)
	maxGroupPage    = 200 // groups.list and members.list (reference §4.3)
	maxConcurrency  = 16
)

// scopes are the read-only Directory API scopes a sync needs
// (reference §4.1): users; groups and their members.
var scopes = []string{
	"https://www.googleapis.com/auth/admin.directory.user.readonly",
	"https://www.googleapis.com/auth/admin.directory.group.readonly",
}

// withDefaults is the one place defaults are applied.
func (c Config) withDefaults() Config {
	if c.Customer == "" {
		c.Customer = "my_customer"
	}
	if c.OAuthURL == "" {
		c.OAuthURL = defaultOAuthURL
	}
	if c.APIURL == "" {
		c.APIURL = defaultAPIURL
	}
	c.OAuthURL = strings.TrimRight(c.OAuthURL, "/")
	c.APIURL = strings.TrimRight(c.APIURL, "/")
	if c.SubjectAttribute == "" {
		c.SubjectAttribute = "id"
	}
	if c.GroupNames == "" {
		c.GroupNames = "email"
	}
	if c.PageSize == 0 {
		c.PageSize = maxUserPage
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

var (
	customerPattern = regexp.MustCompile(`^C[0-9A-Za-z]+$`)
	namePattern     = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
)

// Validate reports every problem as a *config.FieldError.
func (c *Config) Validate() []error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, config.FieldErrorf(key, format, args...))
	}
	if c.ServiceAccountKey.IsZero() {
		bad("service_account_key", "required (the service account's JSON key file)")
	}
	if c.Admin == "" {
		bad("admin", "required: the e-mail of the administrator the service account acts as")
	} else if !isEmail(c.Admin) {
		bad("admin", "%q is not an e-mail address", c.Admin)
	}
	if c.Customer != "" && c.Customer != "my_customer" && !customerPattern.MatchString(c.Customer) {
		bad("customer", "want my_customer or a customer ID such as C01abc234, got %q", c.Customer)
	}
	for key, u := range map[string]string{"oauth_url": c.OAuthURL, "api_url": c.APIURL} {
		if u == "" {
			continue
		}
		if err := rest.CheckBaseURL(u); err != nil {
			bad(key, "%v", err)
		} else if p, _ := url.Parse(u); strings.Trim(p.Path, "/") != "" {
			bad(key, "want the host only (%s://%s), no path", p.Scheme, p.Host)
		}
	}
	if a := c.SubjectAttribute; a != "" {
		if _, err := parseSubject(a); err != nil {
			bad("subject_attribute", "%v", err)
		}
	}
	for i, ou := range c.OrgUnits {
		key := fmt.Sprintf("org_units[%d]", i)
		switch {
		case !strings.HasPrefix(ou, "/"):
			bad(key, "%q is not an organizational unit path (/Staff/Engineering)", ou)
		case ou != "/" && (strings.HasSuffix(ou, "/") || strings.Contains(ou, "//")):
			bad(key, "%q has an empty path segment", ou)
		case slices.IndexFunc(c.OrgUnits, func(o string) bool { return strings.EqualFold(o, ou) }) != i:
			bad(key, "%q is listed twice", ou)
		}
	}
	for i, g := range c.Groups {
		key := fmt.Sprintf("groups[%d]", i)
		switch {
		case strings.TrimSpace(g) == "" || strings.ContainsAny(g, " /?#"):
			bad(key, "%q is not a group e-mail or id", g)
		case strings.Contains(g, "@") && !isEmail(g):
			bad(key, "%q is not an e-mail address", g)
		case slices.IndexFunc(c.Groups, func(o string) bool { return strings.EqualFold(o, g) }) != i:
			bad(key, "%q is listed twice", g)
		}
	}
	if c.Query != "" {
		// Reference §4.2, §7.2: users.list answers a query from a search
		// index that takes up to 36 hours to catch up. A pull through it
		// can miss a person who changed since, and a person missing from
		// a pull is taken for a leaver.
		bad("query", "not supported: Google answers users.list queries from a search index that lags by up to 36 hours, "+
			"so a pull through a query is not a complete listing and could make leavers of people it merely missed; "+
			"scope with org_units and groups, which usher applies to the complete listing")
	}
	if g := c.GroupNames; g != "" && g != "email" && g != "name" {
		bad("group_names", "want email or name, got %q", g)
	}
	for i, a := range c.Attributes {
		if _, err := parsePath(a); err != nil {
			bad(fmt.Sprintf("attributes[%d]", i), "%v", err)
		}
	}
	if c.PageSize < 0 || c.PageSize > maxUserPage {
		bad("page_size", "must be between 1 and %d", maxUserPage)
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

func isEmail(s string) bool {
	local, domain, ok := strings.Cut(s, "@")
	return ok && local != "" && strings.Contains(domain, ".") && !strings.ContainsAny(s, " /?#\t") && !strings.Contains(domain, "@")
}

// serviceAccountKey is the part of a JSON key file usher reads.
type serviceAccountKey struct {
	Type         string `json:"type"`
	ClientEmail  string `json:"client_email"`
	ClientID     string `json:"client_id"`
	PrivateKeyID string `json:"private_key_id"`
	PrivateKey   string `json:"private_key"`
}

func parseKeyFile(text string) (serviceAccountKey, *rsa.PrivateKey, error) {
	var k serviceAccountKey
	if err := json.Unmarshal([]byte(text), &k); err != nil {
		return k, nil, fmt.Errorf("not a JSON key file: %w", err)
	}
	if k.Type != "service_account" {
		return k, nil, fmt.Errorf("the key file is of type %q, want a service_account key", k.Type)
	}
	if k.ClientEmail == "" || k.PrivateKey == "" {
		return k, nil, fmt.Errorf("the key file has no client_email or private_key")
	}
	key, err := rest.ParsePrivateKey(k.PrivateKey)
	if err != nil {
		return k, nil, fmt.Errorf("private_key: %w", err)
	}
	rk, ok := key.(*rsa.PrivateKey)
	if !ok {
		return k, nil, fmt.Errorf("private_key: Google service account keys are RSA, got %T", key)
	}
	return k, rk, nil
}

// Open resolves the key and builds the connector.
func (c *Config) Open(name, idp string, deps directory.Deps) (directory.Connector, error) {
	if errs := c.Validate(); len(errs) > 0 {
		return nil, fmt.Errorf("google %s: %w", name, errs[0])
	}
	cfg := c.withDefaults()
	text, err := cfg.ServiceAccountKey.Resolve()
	if err != nil {
		return nil, fmt.Errorf("google %s: service_account_key: %w", name, err)
	}
	sa, key, err := parseKeyFile(text)
	if err != nil {
		return nil, fmt.Errorf("google %s: service_account_key: %w", name, err)
	}
	oauth, _ := url.Parse(cfg.OAuthURL)
	tc, err := rest.New(rest.Config{
		Service: "google " + name + " token", Origin: oauth, HTTP: deps.Client, Clock: deps.Clock,
		Log: deps.Log, Observe: deps.Observe, Timeout: cfg.Timeout, MaxAttempts: 3,
	})
	if err != nil {
		return nil, err
	}
	grant := &rest.JWTBearer{
		Client: tc, TokenURL: cfg.OAuthURL + "/token", Issuer: sa.ClientEmail,
		// [U] Google documents iss, sub, scope, aud, iat and exp; the
		// assertion also carries nbf and jti, which RFC 7523 allows and
		// which Google is not known to refuse. The lifetime stays far
		// under Google's hour: the grant is used at once.
		Assertion: &rest.Assertion{
			Key: key, Alg: jose.RS256, KeyID: sa.PrivateKeyID, Subject: cfg.Admin, TTL: 10 * time.Minute,
			Claims: map[string]any{"scope": strings.Join(scopes, " ")},
		},
	}
	fetch := func(ctx context.Context) (rest.Token, error) {
		t, err := grant.Fetch(ctx)
		return t, explainToken(err, sa.ClientID, cfg.Admin)
	}
	return newConnector(name, idp, cfg, rest.NewTokenCache(fetch, deps.Clock), deps)
}
