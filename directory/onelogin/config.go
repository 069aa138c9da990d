package onelogin

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/usherhq/usher/config"
	"github.com/usherhq/usher/directory"
	"github.com/usherhq/usher/directory/rest"
)

// Config is a OneLogin directory's block:
//
//	base_url: https://example.onelogin.com   # or https://api.us.onelogin.com
//	client_id: 0f1e...
//	client_secret: {env: ONELOGIN_SECRET}
//	subject_attribute: id                    # or email, username, ...
//	roles: [Jira Users]                      # scope: people holding one of these roles
//	groups_from: [roles]                     # what a person's groups are
//	attributes: [department, custom_attributes.employee_id]
//
// The API credential (Administration → Developers → API Credentials)
// needs "Read all": "Read users" reads people but not roles or groups
// ([U] the reference names the scopes, not which endpoint needs which).
type Config struct {
	// BaseURL is the account's API host: https://<subdomain>.onelogin.com
	// or the regional https://api.us.onelogin.com /
	// https://api.eu.onelogin.com.
	BaseURL string `yaml:"base_url"`
	// ClientID and ClientSecret are the API credential pair.
	ClientID     string        `yaml:"client_id"`
	ClientSecret config.Secret `yaml:"client_secret"`
	// SubjectAttribute is what equals the login subject the IdP sends:
	// id (default; the sub of OneLogin's OIDC tokens [U]), email,
	// username, samaccountname, external_id (what SAML apps commonly
	// send as NameID), or custom_attributes.<shortname>.
	SubjectAttribute string `yaml:"subject_attribute"`
	// Roles limit the scope to people holding at least one of these
	// roles: role ids or names (a name must match exactly one role).
	Roles []string `yaml:"roles"`
	// Groups limit the scope to people whose one OneLogin group is one of
	// these: group ids or names. With Roles as well, a person must
	// satisfy both.
	Groups []string `yaml:"groups"`
	// GroupsFrom says what a person's groups are: roles (default; a
	// person holds many, and roles are what grants app access in
	// OneLogin), group (the person's one group, a policy container), or
	// both. Each is reported under its OneLogin name, with the ID
	// "role:<id>" or "group:<id>"; a role and a group of the same name
	// both appear, so a mapping by name matches either.
	GroupsFrom []string `yaml:"groups_from"`
	// Attributes are user fields to read into Person.Attributes: a field
	// of the user (department, title, company, samaccountname, ...) or
	// custom_attributes.<shortname>.
	Attributes []string `yaml:"attributes"`
	// PageSize is the limit of each listing, 1 to 100 (default 100).
	PageSize int `yaml:"page_size"`
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

const maxPageSize = 100 // reference §5.2, §7.3

// userFields are the fields of a v2 user usher may read as attributes
// (reference §5.2).
var userFields = []string{
	"username", "email", "firstname", "lastname", "title", "department", "company", "phone",
	"state", "status", "group_id", "role_ids", "directory_id", "external_id", "samaccountname",
	"userprincipalname", "distinguished_name", "member_of", "manager_user_id", "trusted_idp_id",
	"activated_at", "created_at", "updated_at", "last_login", "password_changed_at", "locked_until",
}

// subjectAttributes are those the users listing can filter on.
var subjectAttributes = []string{"id", "email", "username", "samaccountname", "external_id"}

func (c Config) withDefaults() Config {
	c.BaseURL = strings.TrimRight(c.BaseURL, "/")
	if c.SubjectAttribute == "" {
		c.SubjectAttribute = "id"
	}
	if len(c.GroupsFrom) == 0 {
		c.GroupsFrom = []string{"roles"}
	}
	if c.PageSize == 0 {
		c.PageSize = maxPageSize
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
	if c.BaseURL == "" {
		bad("base_url", "required (https://<subdomain>.onelogin.com)")
	} else if err := rest.CheckBaseURL(c.BaseURL); err != nil {
		bad("base_url", "%v", err)
	} else if u, _ := url.Parse(c.BaseURL); strings.Trim(u.Path, "/") != "" {
		bad("base_url", "want the host only (%s://%s), no path", u.Scheme, u.Host)
	}
	if c.ClientID == "" {
		bad("client_id", "required")
	}
	if c.ClientSecret.IsZero() {
		bad("client_secret", "required")
	}
	if a := c.SubjectAttribute; a != "" && !slices.Contains(subjectAttributes, a) && !isCustom(a) {
		bad("subject_attribute", "want one of %s or custom_attributes.<shortname>, got %q", strings.Join(subjectAttributes, ", "), a)
	}
	for _, list := range []struct {
		key  string
		vals []string
	}{{"roles", c.Roles}, {"groups", c.Groups}} {
		for i, v := range list.vals {
			key := fmt.Sprintf("%s[%d]", list.key, i)
			if strings.TrimSpace(v) == "" {
				bad(key, "empty")
			} else if slices.Index(list.vals, v) != i {
				bad(key, "%q is listed twice", v)
			}
		}
	}
	for i, g := range c.GroupsFrom {
		key := fmt.Sprintf("groups_from[%d]", i)
		if g != "roles" && g != "group" {
			bad(key, "want roles or group, got %q", g)
		} else if slices.Index(c.GroupsFrom, g) != i {
			bad(key, "%q is listed twice", g)
		}
	}
	for i, a := range c.Attributes {
		if !slices.Contains(userFields, a) && !isCustom(a) {
			bad(fmt.Sprintf("attributes[%d]", i), "%q is not a OneLogin user field or custom_attributes.<shortname>", a)
		}
	}
	if c.PageSize < 0 || c.PageSize > maxPageSize {
		bad("page_size", "must be between 1 and %d", maxPageSize)
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

// isCustom accepts custom_attributes.<shortname> (letters, digits,
// underscore).
func isCustom(s string) bool {
	name, ok := strings.CutPrefix(s, "custom_attributes.")
	if !ok || name == "" {
		return false
	}
	for _, r := range name {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_') {
			return false
		}
	}
	return true
}

// Open resolves the secret and builds the connector.
func (c *Config) Open(name, idp string, deps directory.Deps) (directory.Connector, error) {
	if errs := c.Validate(); len(errs) > 0 {
		return nil, fmt.Errorf("onelogin %s: %w", name, errs[0])
	}
	cfg := c.withDefaults()
	secret, err := cfg.ClientSecret.Resolve()
	if err != nil {
		return nil, fmt.Errorf("onelogin %s: client_secret: %w", name, err)
	}
	base, _ := url.Parse(cfg.BaseURL)
	tc, err := rest.New(rest.Config{
		Service: "onelogin " + name + " token", Origin: base, HTTP: deps.Client, Clock: deps.Clock,
		Log: deps.Log, Observe: deps.Observe, Timeout: cfg.Timeout, MaxAttempts: 3,
		Retry: retry, Pace: pace,
	})
	if err != nil {
		return nil, err
	}
	cc := &rest.ClientCredentials{
		Client: tc, TokenURL: cfg.BaseURL + "/auth/oauth2/v2/token", ClientID: cfg.ClientID, Secret: secret,
		BasicAuth: true, JSON: true, Decode: decodeError,
	}
	fetch := func(ctx context.Context) (rest.Token, error) {
		t, err := cc.Fetch(ctx)
		var ae *APIError
		if errors.As(err, &ae) && ae.Status == http.StatusUnauthorized {
			err = fmt.Errorf("%w (check client_id and client_secret: the API credential was refused)", err)
		}
		return t, err
	}
	return newConnector(name, idp, cfg, rest.NewTokenCache(fetch, deps.Clock), deps)
}
