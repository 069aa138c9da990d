package cloud

import (
	"fmt"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/usherhq/usher/config"
	"github.com/usherhq/usher/targets"
)

// Config is the `api:` block of an app of kind cloud.
type Config struct {
	// Site is the Cloud site's URL, https://acme.atlassian.net. Its host
	// names the site's admin groups; with Email and APIToken it is where
	// `invite: site` sends Jira's create-user call.
	Site string `yaml:"site"`
	// OrgID and DirectoryID name the organization and the directory
	// people are invited to and groups live in (GET
	// /admin/v2/orgs/{orgId}/directories lists them).
	OrgID       string `yaml:"org_id"`
	DirectoryID string `yaml:"directory_id"`
	// OrgKey is the organization API key (admin.atlassian.com → Settings
	// → API keys), created without scopes: the user-management API
	// refuses a scoped key (§23).
	OrgKey config.Secret `yaml:"org_key"`
	// Email and APIToken are a site admin's Atlassian account and its
	// classic (unscoped) API token, for the site's REST API. Required by
	// `invite: site`, unused otherwise.
	Email    string        `yaml:"email"`
	APIToken config.Secret `yaml:"api_token"`
	// Invite is how a missing person gets an account: "org" (default),
	// the Organizations API invite, which needs a paid subscription and
	// grants Access; or "site", Jira's POST /rest/api/3/user, which
	// grants Products.
	Invite string `yaml:"invite"`
	// Access are the app roles an invite grants and an adopted account is
	// given ({resource: ari:cloud:jira-software::site/<cloudId>, role:
	// atlassian/user}). Required with invite: org.
	Access []Access `yaml:"access"`
	// Products are Jira's product keys for invite: site (jira-software,
	// jira-servicedesk, jira-core, jira-product-discovery).
	Products []string `yaml:"products"`
	// Deactivate is what deactivating a person means: "suspend" (default)
	// suspends their access in the directory, for managed and unmanaged
	// accounts alike (roles and groups kept, not billed); "deactivate"
	// deactivates a managed account (no Atlassian login at all) and, for
	// an unmanaged account, which the organization cannot deactivate,
	// suspends its access and removes the memberships usher manages.
	Deactivate string `yaml:"deactivate"`
	// APIURL is the Organizations API host (default
	// https://api.atlassian.com).
	APIURL string `yaml:"api_url"`
	// GroupCacheTTL is how long a group's name → id resolution is kept
	// (default 5m).
	GroupCacheTTL time.Duration `yaml:"group_cache_ttl"`
	// Concurrency caps requests in flight per host (default 8); Timeout
	// bounds one attempt of one call (default 15s).
	Concurrency int           `yaml:"concurrency"`
	Timeout     time.Duration `yaml:"timeout"`
}

// Access is one app role on one resource (§26.3 permissionRules).
type Access struct {
	Resource string `yaml:"resource"`
	Role     string `yaml:"role"`
}

const (
	InviteOrg  = "org"
	InviteSite = "site"

	ModeSuspend    = "suspend"
	ModeDeactivate = "deactivate"

	defaultAPIURL   = "https://api.atlassian.com"
	defaultGroupTTL = 5 * time.Minute
)

// roles are the Organizations API's role ids (§22).
var roles = []string{
	"atlassian/user", "atlassian/admin", "atlassian/guest", "atlassian/customer",
	"atlassian/user-access-admin", "atlassian/contributor", "atlassian/basic",
	"atlassian/stakeholder", "atlassian/org-admin", "atlassian/site-admin",
	"atlassian/ai-access", "atlassian/viewer",
}

// products are Jira Cloud's product keys for POST /rest/api/3/user (§24).
var products = []string{"jira-core", "jira-servicedesk", "jira-product-discovery", "jira-software"}

func fieldErr(field, format string, args ...any) error {
	return &config.FieldError{Field: field, Msg: fmt.Sprintf(format, args...)}
}

// Validate checks the block; errors are *config.FieldError.
func (c *Config) Validate() []error {
	var errs []error
	if c.Site == "" {
		errs = append(errs, fieldErr("site", "required: the site's URL, https://<site>.atlassian.net"))
	} else {
		errs = append(errs, targets.ValidateURL("site", c.Site)...)
	}
	for field, v := range map[string]string{"org_id": c.OrgID, "directory_id": c.DirectoryID} {
		switch {
		case v == "":
			errs = append(errs, fieldErr(field, "required (GET /admin/v2/orgs/{orgId}/directories lists the directories)"))
		case strings.ContainsAny(v, "/?#") || v == "-" && field == "directory_id":
			errs = append(errs, fieldErr(field, "want the id itself, got %q", v))
		}
	}
	if c.OrgKey.IsZero() {
		errs = append(errs, fieldErr("org_key", "required: an organization API key created without scopes"))
	}
	siteCreds := c.Email != "" || !c.APIToken.IsZero()
	switch {
	case c.Email != "" && c.APIToken.IsZero():
		errs = append(errs, fieldErr("api_token", "required with email"))
	case c.Email == "" && !c.APIToken.IsZero():
		errs = append(errs, fieldErr("email", "required with api_token: the admin account the token belongs to"))
	}
	switch c.Invite {
	case "", InviteOrg:
		if len(c.Access) == 0 {
			errs = append(errs, fieldErr("access", "invite: org needs at least one role to grant (resource and role)"))
		}
		if len(c.Products) > 0 {
			errs = append(errs, fieldErr("products", "only used with invite: site; with invite: org list roles under access"))
		}
	case InviteSite:
		if !siteCreds {
			errs = append(errs, fieldErr("email", "invite: site needs a site admin's email and api_token"))
		}
		if len(c.Products) == 0 {
			errs = append(errs, fieldErr("products", "invite: site needs the products to grant (%s)", strings.Join(products, ", ")))
		}
	default:
		errs = append(errs, fieldErr("invite", "want org or site, got %q", c.Invite))
	}
	for i, a := range c.Access {
		if !strings.HasPrefix(a.Resource, "ari:cloud:") {
			errs = append(errs, fieldErr(fmt.Sprintf("access[%d].resource", i), "want a resource ARI such as ari:cloud:jira-software::site/<cloudId>, got %q", a.Resource))
		}
		if !slices.Contains(roles, a.Role) {
			errs = append(errs, fieldErr(fmt.Sprintf("access[%d].role", i), "want one of %s, got %q", strings.Join(roles, ", "), a.Role))
		}
	}
	for i, p := range c.Products {
		if !slices.Contains(products, p) {
			errs = append(errs, fieldErr(fmt.Sprintf("products[%d]", i), "want one of %s, got %q", strings.Join(products, ", "), p))
		}
	}
	switch c.Deactivate {
	case "", ModeSuspend, ModeDeactivate:
	default:
		errs = append(errs, fieldErr("deactivate", "want suspend or deactivate, got %q", c.Deactivate))
	}
	errs = append(errs, targets.ValidateURL("api_url", c.APIURL)...)
	if c.GroupCacheTTL < 0 {
		errs = append(errs, fieldErr("group_cache_ttl", "must not be negative"))
	}
	return append(errs, targets.ValidateLimits(c.Concurrency, c.Timeout)...)
}

// PrivilegedGroups are Cloud's administrator groups: the organization's
// and site's, the legacy product admin groups, and, when the site is
// configured, the per-site product admin groups named after it. The
// names follow Atlassian's default groups; the reference does not list
// them [U] (only org-admins, §26.5).
func (c *Config) PrivilegedGroups() []string {
	out := []string{
		"org-admins", "site-admins", "administrators", "system-administrators",
		"jira-administrators", "confluence-administrators", "atlassian-addons-admin",
	}
	if site := c.siteName(); site != "" {
		for _, p := range []string{"jira-admins-", "confluence-admins-", "jira-servicemanagement-admins-", "bitbucket-admins-"} {
			out = append(out, p+site)
		}
	}
	return out
}

// siteName is the site's subdomain: "acme" for https://acme.atlassian.net.
func (c *Config) siteName() string {
	u, err := url.Parse(c.Site)
	if err != nil || u.Hostname() == "" {
		return ""
	}
	name, _, _ := strings.Cut(u.Hostname(), ".")
	return strings.ToLower(name)
}

// Open builds the adapter: one REST client per host, each with its own
// credential (§23).
func (c *Config) Open(app string, deps targets.Deps) (targets.Target, error) {
	if deps.Accounts == nil {
		return nil, fmt.Errorf("%s: the cloud target needs an account store (accountIds by username)", app)
	}
	key, err := c.OrgKey.Resolve()
	if err != nil {
		return nil, fmt.Errorf("%s: org_key: %w", app, err)
	}
	apiURL := c.APIURL
	if apiURL == "" {
		apiURL = defaultAPIURL
	}
	org, err := targets.OpenClient(app, apiURL, targets.Auth{Token: key}, c.Concurrency, c.Timeout, deps)
	if err != nil {
		return nil, err
	}
	t := &Target{
		app: app, org: org, accounts: deps.Accounts, log: deps.Log, now: deps.Now,
		orgID: c.OrgID, dirID: c.DirectoryID, invite: c.Invite, mode: c.Deactivate,
		access: c.Access, products: c.Products, ttl: c.GroupCacheTTL,
		groups: map[string]groupInfo{},
	}
	if c.Email != "" {
		tok, err := c.APIToken.Resolve()
		if err != nil {
			return nil, fmt.Errorf("%s: api_token: %w", app, err)
		}
		if t.site, err = targets.OpenClient(app, c.Site, targets.Auth{Username: c.Email, Password: tok}, c.Concurrency, c.Timeout, deps); err != nil {
			return nil, err
		}
	}
	if t.invite == "" {
		t.invite = InviteOrg
	}
	if t.mode == "" {
		t.mode = ModeSuspend
	}
	if t.ttl == 0 {
		t.ttl = defaultGroupTTL
	}
	if t.now == nil {
		t.now = time.Now
	}
	return t, nil
}
