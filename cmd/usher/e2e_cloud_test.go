package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/usherhq/usher/targets/atlassiantest"
)

// The Atlassian Cloud target end to end, seen from outside: SCIM
// requests in, the emulated Cloud organization's state and usher's
// audit log out. Nobody logs in: Cloud logins do not pass through usher.

const cloudOrgKey = "org-key-1"

// cloudMapping grants Cloud groups from IdP groups. okta-eng is a group
// the org's IdP sync owns in Cloud; the rule could name site-admins,
// which usher never grants through a rule.
const cloudMapping = `      groups:
        map:
          - idp_group: engineering
            groups: {jira: [jira-developers], cloud: [cloud-devs]}
          - idp_group: support
            groups: {cloud: [cloud-support]}
          - idp_group: okta-synced
            groups: {cloud: [okta-eng]}
        rules:
          - match: "^cloud-(.+)$"
            groups: {cloud: ["$1"]}
        defaults: {"*": [usher-users]}
`

// startCloud runs an emulated Cloud organization (api.atlassian.com and
// the site on two listeners) and returns it with its apps entry.
func startCloud(t *testing.T) (*atlassiantest.Cloud, string) {
	t.Helper()
	c := atlassiantest.NewCloud(atlassiantest.CloudOptions{
		OrgKey: cloudOrgKey, SiteEmail: "admin@acme.test", SiteToken: "site-token",
		VerifiedDomains: []string{"acme.test"},
		Groups: []atlassiantest.CloudGroup{
			{Name: "cloud-devs"}, {Name: "cloud-support"}, {Name: "usher-users"}, {Name: "hand-picked"},
			{Name: "site-admins"}, {Name: "okta-eng", Synced: true},
		},
	})
	api := httptest.NewServer(c.OrgAPI())
	t.Cleanup(api.Close)
	site := httptest.NewServer(c.Site())
	t.Cleanup(site.Close)
	entry := fmt.Sprintf(`  - name: cloud
    kind: cloud
    api:
      site: %s
      api_url: %s
      org_id: %s
      directory_id: %s
      org_key: {value: %s}
      email: admin@acme.test
      api_token: {value: site-token}
      access: [{resource: %q, role: atlassian/user}]
`, site.URL, api.URL, c.OrgID(), c.DirectoryID(), cloudOrgKey, c.ProductResource("jira-software"))
	return c, entry
}

// auditOf reads the app's audit events, newest first, through the admin API.
func (e *env) auditOf(app string) []struct{ Action, Username, Outcome, Detail string } {
	e.t.Helper()
	resp, body := e.adminCall("GET", "/admin/api/audit?app="+app+"&limit=500", "admin-token")
	if resp.StatusCode != http.StatusOK {
		e.t.Fatalf("audit: %d %s", resp.StatusCode, body)
	}
	var out struct {
		Events []struct{ Action, Username, Outcome, Detail string }
	}
	if err := json.Unmarshal([]byte(body), &out); err != nil {
		e.t.Fatalf("audit JSON: %v", err)
	}
	return out.Events
}

// wantAudit finds an event of user with action and outcome whose detail
// holds every word.
func (e *env) wantAudit(app, user, action, outcome string, words ...string) string {
	e.t.Helper()
	evs := e.auditOf(app)
	for _, ev := range evs {
		if ev.Username != user || ev.Action != action || ev.Outcome != outcome {
			continue
		}
		ok := true
		for _, w := range words {
			ok = ok && strings.Contains(ev.Detail, w)
		}
		if ok {
			return ev.Detail
		}
	}
	e.t.Fatalf("no %s %s event for %s in %s with %q; audit:\n%+v", action, outcome, user, app, words, evs)
	return ""
}

func cloudGroups(t *testing.T, c *atlassiantest.Cloud, email string) []string {
	t.Helper()
	a, ok := c.AccountByEmail(email)
	if !ok {
		t.Fatalf("Cloud has no account for %s", email)
	}
	return a.Groups
}

func scimUser(ext, name, email string) string {
	return fmt.Sprintf(`{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"externalId":%q,"userName":%q,"active":true,
		"displayName":%q,"emails":[{"primary":true,"value":%q}]}`, ext, name, strings.ToUpper(name[:1])+name[1:]+" Example", email)
}

func scimGroup(name string, members ...string) string {
	var ms []string
	for _, m := range members {
		ms = append(ms, fmt.Sprintf(`{"value":%q}`, m))
	}
	return fmt.Sprintf(`{"schemas":["urn:ietf:params:scim:schemas:core:2.0:Group"],"displayName":%q,"members":[%s]}`, name, strings.Join(ms, ","))
}

func (e *env) scimOK(method, path, body string, codes ...int) string {
	e.t.Helper()
	code, out := e.scimDo(method, path, "scim-acme", body)
	if !slices.Contains(codes, code) {
		e.t.Fatalf("SCIM %s %s: %d %s", method, path, code, out)
	}
	return out
}

func TestCloudProvisionedBySCIM(t *testing.T) {
	t.Parallel()
	c, entry := startCloud(t)
	e := startEnvWith(t, envOptions{Apps: true, Mapping: cloudMapping, SCIM: true, ExtraApps: entry, Extra: sweepConfig})

	// The IdP pushes cara, then her groups; nobody logs in.
	cara := scimID(t, e.scimOK("POST", "/Users", scimUser("00u-cara", "cara", "cara@acme.test"), http.StatusCreated))
	eng := scimID(t, e.scimOK("POST", "/Groups", scimGroup("engineering", cara), http.StatusCreated))
	e.scimOK("POST", "/Groups", scimGroup("okta-synced", cara), http.StatusCreated)
	e.scimOK("POST", "/Groups", scimGroup("cloud-site-admins", cara), http.StatusCreated)

	acct, ok := c.AccountByEmail("cara@acme.test")
	if !ok || acct.AccountStatus != "active" || acct.MembershipStatus != "active" || !acct.Managed {
		t.Fatalf("cara in Cloud: %+v %v", acct, ok)
	}
	if want := (atlassiantest.CloudRole{Resource: c.ProductResource("jira-software"), Role: "atlassian/user"}); !slices.Contains(acct.Roles, want) {
		t.Errorf("cara lacks the configured product access: %+v", acct.Roles)
	}
	if acct.Name != "Cara Example" {
		t.Errorf("managed account's name %q, want the IdP's", acct.Name)
	}
	// Mapped groups only: not the group the org's IdP sync owns, and not
	// site-admins, which a rule may never grant.
	if got := cloudGroups(t, c, "cara@acme.test"); !slices.Equal(got, []string{"cloud-devs", "usher-users"}) {
		t.Fatalf("cara's Cloud groups = %v", got)
	}
	if got := groupsOf(t, e.apps["jira"], "cara"); !slices.Contains(got, "jira-developers") || !slices.Contains(got, "usher-users") {
		t.Errorf("cara's Jira DC groups = %v", got)
	}
	e.wantAudit("cloud", "cara", "app.group.add", "skipped", "okta-eng", "IdP sync")
	e.wantAudit("cloud", "cara", "app.create", "ok", "created cara")

	// The admin page shows her accountId.
	resp, body := e.adminCall("GET", "/admin/users/acme/00u-cara", "admin-token")
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, acct.AccountID) {
		t.Errorf("admin user page (%d) lacks accountId %s", resp.StatusCode, acct.AccountID)
	}

	// A group change adds and removes exactly the memberships usher
	// manages; one an admin gave by hand stays.
	c.AddAccount(atlassiantest.CloudAccount{AccountID: acct.AccountID, Name: acct.Name, Email: acct.Email,
		Roles: acct.Roles, Groups: append(acct.Groups, "hand-picked")})
	e.scimOK("PATCH", "/Groups/"+eng, `{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
		"Operations":[{"op":"remove","path":"members[value eq \"`+cara+`\"]"}]}`, http.StatusOK, http.StatusNoContent)
	e.scimOK("POST", "/Groups", scimGroup("support", cara), http.StatusCreated)
	if got := cloudGroups(t, c, "cara@acme.test"); !slices.Equal(got, []string{"cloud-support", "hand-picked", "usher-users"}) {
		t.Fatalf("cara's Cloud groups after the change = %v", got)
	}
	e.wantAudit("cloud", "cara", "app.group.remove", "ok", "removed from cloud-devs")

	// A second person for the sweep, and a SCIM deactivation of cara,
	// which suspends her in the directory and says so.
	e.scimOK("POST", "/Users", scimUser("00u-dan", "dan", "dan@acme.test"), http.StatusCreated)
	e.scimOK("PATCH", "/Users/"+cara, `{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
		"Operations":[{"op":"replace","path":"active","value":false}]}`, http.StatusOK)
	if a, _ := c.AccountByEmail("cara@acme.test"); a.MembershipStatus != "suspended" || a.AccountStatus != "active" {
		t.Fatalf("cara after SCIM deactivation: %+v", a)
	}
	e.wantAudit("cloud", "cara", "app.deactivate", "ok", "suspended directory access of managed account", acct.AccountID)

	// The sweep's dry run plans Cloud beside the Data Center apps.
	if err := e.m.store.SetAccessExpiry(t.Context(), "acme", "00u-dan", time.Now().Add(-time.Hour)); err != nil {
		t.Fatal(err)
	}
	code, out, errOut := runCLI(t, "sweep", "--config", e.cfgPath, "--dry-run", "--json")
	if code != 0 {
		t.Fatalf("sweep --dry-run: exit %d: %s", code, errOut)
	}
	var doc struct {
		Runs []struct {
			DryRun bool `json:"dry_run"`
			Plan   struct {
				Items []struct{ Username, App, Action string }
			}
		}
	}
	if err := json.Unmarshal([]byte(out), &doc); err != nil || len(doc.Runs) != 1 {
		t.Fatalf("dry run JSON (%v), want one run:\n%s", err, out)
	}
	res := doc.Runs[0]
	planned := map[string]string{}
	for _, it := range res.Plan.Items {
		if it.Username == "dan" {
			planned[it.App] = it.Action
		}
	}
	if !res.DryRun || planned["cloud"] != "deactivate" || planned["jira"] != "deactivate" || planned["confluence"] == "" {
		t.Fatalf("dry-run plan for dan: %v\n%s", planned, out)
	}
	if a, _ := c.AccountByEmail("dan@acme.test"); a.MembershipStatus != "active" {
		t.Fatal("the dry run changed Cloud")
	}

	// The sweep itself suspends dan in Cloud and deactivates him in Jira.
	if code, out, errOut := runCLI(t, "sweep", "--config", e.cfgPath); code != 0 {
		t.Fatalf("sweep: exit %d\n%s\n%s", code, out, errOut)
	}
	dan, _ := c.AccountByEmail("dan@acme.test")
	if dan.MembershipStatus != "suspended" {
		t.Errorf("dan in Cloud after the sweep: %+v", dan)
	}
	if u, _ := e.apps["jira"].User("dan"); u.Active {
		t.Error("dan still active in Jira DC after the sweep")
	}
	e.wantAudit("cloud", "dan", "app.deactivate", "ok", "suspended directory access of managed account", dan.AccountID)
}

// TestCloudRefusalsAreAudited drives the Cloud APIs' refusals from the
// reference through SCIM pushes and checks each ends as a clear audit
// entry, while the other apps still get their changes.
func TestCloudRefusalsAreAudited(t *testing.T) {
	t.Parallel()
	c, entry := startCloud(t)
	e := startEnvWith(t, envOptions{Apps: true, Mapping: cloudMapping, SCIM: true, ExtraApps: entry})
	dan := scimID(t, e.scimOK("POST", "/Users", scimUser("00u-dan", "dan", "dan@acme.test"), http.StatusCreated))
	rename := func(name string) {
		t.Helper()
		e.scimOK("PATCH", "/Users/"+dan, `{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
			"Operations":[{"op":"replace","path":"displayName","value":"`+name+`"}]}`, http.StatusOK)
	}

	// 401: the org key was revoked (or a site token put in its place).
	c.SetOrgKey("rotated", false)
	rename("Dan One")
	e.wantAudit("cloud", "dan", "app.read", "error", "HTTP 401", "org_key")
	if u, _ := e.apps["jira"].User("dan"); u.DisplayName != "Dan One" {
		t.Errorf("Jira DC did not get the change while Cloud refused: %+v", u)
	}

	// 403: a key created with scopes cannot use the user-management API.
	c.SetOrgKey(cloudOrgKey, true)
	rename("Dan Two")
	e.wantAudit("cloud", "dan", "app.update", "error", "HTTP 403", "without scopes")
	if a, _ := c.AccountByEmail("dan@acme.test"); a.Name == "Dan Two" {
		t.Errorf("the name changed despite the refusal")
	}
	c.SetOrgKey(cloudOrgKey, false)

	// 409: the licence limit.
	c.SetSeats(c.ProductResource("jira-software"), 1)
	e.scimOK("POST", "/Users", scimUser("00u-eli", "eli", "eli@acme.test"), http.StatusCreated)
	e.wantAudit("cloud", "eli", "app.create", "error", "HTTP 409", "licence limit reached")
	if _, ok := c.AccountByEmail("eli@acme.test"); ok {
		t.Error("eli has an account beyond the licence limit")
	}
	if _, ok := e.apps["jira"].User("eli"); !ok {
		t.Error("Jira DC did not get eli while Cloud refused")
	}

	// A group the org's IdP sync owns is left alone, with the reason.
	e.scimOK("POST", "/Groups", scimGroup("okta-synced", dan), http.StatusCreated)
	e.wantAudit("cloud", "dan", "app.group.add", "skipped", "okta-eng", "managed by the org's IdP sync")
	if g, _ := c.Group("okta-eng"); len(g.Members) != 0 {
		t.Errorf("the synced group changed: %v", g.Members)
	}
}

func TestCheckCloudApp(t *testing.T) {
	t.Setenv("USHER_TEST_KEY", strings.Repeat("k", 32))
	t.Setenv("OKTA_SECRET", "very-secret-value")
	t.Setenv("ATLASSIAN_ORG_KEY", "org-key")
	cloudApp := `  - name: cloud
    kind: cloud
    api:
      site: https://acme.atlassian.net
      org_id: 5a3b
      directory_id: 9c1d
      org_key: {env: ATLASSIAN_ORG_KEY}
      access: [{resource: "ari:cloud:jira-software::site/1", role: atlassian/user}]
idps:
`
	good := strings.Replace(goodConfig, "idps:\n", cloudApp, 1)
	code, stdout, stderr := runCLI(t, "check", "--config", writeConfig(t, good))
	if code != 0 || !strings.Contains(stdout, "provisioning only") {
		t.Fatalf("check of a good cloud app: exit %d\n%s%s", code, stdout, stderr)
	}

	// A route, a broken api block, and a rule that would make people
	// admins of this very site.
	bad := strings.Replace(good, "    kind: cloud\n", "    kind: cloud\n    route: {path_prefix: /cloud}\n", 1)
	bad = strings.Replace(bad, "      org_key: {env: ATLASSIAN_ORG_KEY}\n", "      invite: site\n", 1)
	bad += `    mapping:
      groups:
        rules:
          - match: "^admins$"
            groups: {cloud: [jira-admins-acme]}
`
	code, _, stderr = runCLI(t, "check", "--config", writeConfig(t, bad))
	if code != 1 {
		t.Fatalf("check of a bad cloud app: exit %d\n%s", code, stderr)
	}
	for _, want := range []string{
		"apps[1].route: remove it: Atlassian Cloud logins do not pass through usher",
		"apps[1].api.org_key: required",
		"apps[1].api.products: invite: site needs the products",
		"apps[1].api.email: invite: site needs",
		`"jira-admins-acme" is a privileged group in cloud`,
	} {
		if !strings.Contains(stderr, want) {
			t.Errorf("check output lacks %q:\n%s", want, stderr)
		}
	}
}
