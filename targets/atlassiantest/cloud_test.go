package atlassiantest

import (
	"net/http/httptest"
	"testing"
	"time"
)

// Tests of the Cloud emulator against the reference's checklist (§31 of
// atlassian-sso-and-cloud.md), at the HTTP level.

const (
	cloudKey   = "org-key"
	cloudEmail = "admin@acme.test"
	cloudToken = "classic-token"
	dirPath    = "/admin/v2/orgs/org-1/directories/dir-1"
	orgPath    = "/admin/v2/orgs/org-1"
)

type cloudEnv struct {
	c         *Cloud
	api, site *env
}

func newCloudEnv(t *testing.T, mod func(*CloudOptions)) *cloudEnv {
	t.Helper()
	opts := CloudOptions{
		OrgKey: cloudKey, SiteEmail: cloudEmail, SiteToken: cloudToken,
		VerifiedDomains: []string{"acme.test"}, Now: func() time.Time { return fixedNow },
	}
	if mod != nil {
		mod(&opts)
	}
	c := NewCloud(opts)
	api := httptest.NewServer(c.OrgAPI())
	t.Cleanup(api.Close)
	site := httptest.NewServer(c.Site())
	t.Cleanup(site.Close)
	return &cloudEnv{c: c,
		api:  &env{t: t, url: api.URL, auth: bearer(cloudKey)},
		site: &env{t: t, url: site.URL, auth: basic(cloudEmail, cloudToken)},
	}
}

func wantCode(t *testing.T, what string, r resp, status int, code string) {
	t.Helper()
	if r.status != status {
		t.Fatalf("%s: status %d, want %d: %s", what, r.status, status, r)
	}
	if code != "" {
		if got := field(r.json(t), "errors.0.code"); got != code {
			t.Fatalf("%s: code %v, want %s: %s", what, got, code, r)
		}
	}
}

func (e *cloudEnv) invite(t *testing.T, email string) string {
	t.Helper()
	r := e.api.do("POST", orgPath+"/users/invite", map[string]any{"emails": []string{email},
		"permissionRules": []map[string]string{{"resource": e.c.ProductResource("jira-software"), "role": "atlassian/user"}}})
	wantCode(t, "invite "+email, r, 200, "")
	id, _ := field(r.json(t), "data.0.id").(string)
	if id == "" {
		t.Fatalf("invite answered no id: %s", r)
	}
	return id
}

func (e *cloudEnv) user(t *testing.T, id string) any {
	t.Helper()
	r := e.api.do("GET", dirPath+"/users/"+id, nil)
	wantCode(t, "get "+id, r, 200, "")
	return r.json(t)
}

func TestCloudAuthRealms(t *testing.T) {
	t.Parallel()
	e := newCloudEnv(t, nil)
	search := dirPath + "/users/search"
	wantCode(t, "org key", e.api.do("POST", search, map[string]any{}), 200, "")
	wantCode(t, "no credential", e.api.doAs(nil, "POST", search, map[string]any{}), 401, "ADMIN-UAM-401-1")
	wantCode(t, "site token on the org API", e.api.doAs(basic(cloudEmail, cloudToken), "POST", search, map[string]any{}), 401, "ADMIN-UAM-401-1")
	r := e.site.doAs(bearer(cloudKey), "GET", "/rest/api/3/user?accountId=x", nil)
	wantCode(t, "org key on the site", r, 401, "")
	if got := field(r.json(t), "errorMessages.#"); got != 1 {
		t.Errorf("site 401 is not Jira's envelope: %s", r)
	}
	wantCode(t, "site token on the site", e.site.do("GET", "/rest/api/3/user?accountId=x", nil), 404, "")

	s := newCloudEnv(t, func(o *CloudOptions) { o.OrgKeyScoped, o.SiteTokenScoped = true, true })
	id := s.invite(t, "ann@acme.test")
	wantCode(t, "scoped key, Organizations API", s.api.do("GET", dirPath+"/users/"+id, nil), 200, "")
	wantCode(t, "scoped key, user-management API", s.api.do("GET", "/users/"+id+"/manage/profile", nil), 403, "ADMIN-UAM-403-1")
	wantCode(t, "scoped token on the site URL", s.site.do("GET", "/rest/api/3/user?accountId="+id, nil), 401, "")
}

func TestCloudAccountsAndEmails(t *testing.T) {
	t.Parallel()
	e := newCloudEnv(t, nil)
	hidden := e.c.AddAccount(CloudAccount{Name: "Hidden", Email: "Hid@acme.test", EmailHidden: true})

	// Jira hides the address; the Organizations API shows it to admins
	// and finds it exactly, whatever the case [U for case].
	u := e.site.do("GET", "/rest/api/3/user?accountId="+hidden, nil).json(t)
	if _, shown := u.(map[string]any)["emailAddress"]; shown {
		t.Errorf("Jira showed a hidden address: %v", u)
	}
	r := e.api.do("POST", dirPath+"/users/search", map[string]any{"emails": []string{"hid@ACME.test"}})
	if field(r.json(t), "data.#") != 1 || field(r.json(t), "data.0.accountId") != hidden || field(r.json(t), "data.0.email") != "Hid@acme.test" {
		t.Errorf("search by e-mail: %s", r)
	}
	r = e.api.do("POST", dirPath+"/users/search", map[string]any{"emails": []string{"hid"}})
	if field(r.json(t), "data.#") != 0 {
		t.Errorf("e-mail search is not exact: %s", r)
	}
	wantCode(t, "emails with searchTerm", e.api.do("POST", dirPath+"/users/search",
		map[string]any{"emails": []string{"a@b.c"}, "searchTerm": "a"}), 400, "ADMIN-UAM-400-1")
	// Addressing is by accountId only: a name or an address is no key.
	wantCode(t, "get by e-mail", e.api.do("GET", dirPath+"/users/Hid@acme.test", nil), 404, "ADMIN-UAM-404-1")
	// The directory wildcard reads every directory the key may manage.
	wantCode(t, "wildcard directory", e.api.do("GET", orgPath+"/directories/-/users/"+hidden, nil), 200, "")
	wantCode(t, "unknown directory", e.api.do("GET", orgPath+"/directories/dir-9/users/"+hidden, nil), 404, "ADMIN-UAM-404-1")
	wantCode(t, "unknown org", e.api.do("GET", "/admin/v2/orgs/org-9/directories/-/users/"+hidden, nil), 404, "ADMIN-UAM-404-2")
}

func TestCloudInvite(t *testing.T) {
	t.Parallel()
	e := newCloudEnv(t, nil)
	managed := e.invite(t, "new@acme.test")
	u := e.user(t, managed)
	for path, want := range map[string]any{
		"data.name": "new", "data.accountStatus": "active", "data.membershipStatus": "active",
		"data.status": "active", "data.managementSource": "invited", "data.claimStatus": "managed",
	} {
		if got := field(u, path); got != want {
			t.Errorf("invited user %s = %v, want %v", path, got, want)
		}
	}
	if again := e.invite(t, "NEW@acme.test"); again != managed {
		t.Errorf("a second invite made account %s, want %s", again, managed)
	}
	outsider := e.invite(t, "out@other.test")
	if got := field(e.user(t, outsider), "data.claimStatus"); got != "unmanaged" {
		t.Errorf("claimStatus of another domain = %v", got)
	}
	wantCode(t, "bad role", e.api.do("POST", orgPath+"/users/invite", map[string]any{"emails": []string{"x@acme.test"},
		"permissionRules": []map[string]string{{"resource": "jira", "role": "atlassian/user"}}}), 400, "ADMIN-UAM-400-3")

	unpaid := newCloudEnv(t, func(o *CloudOptions) { o.NoPaidSubscription = true })
	wantCode(t, "unpaid org", unpaid.api.do("POST", orgPath+"/users/invite", map[string]any{"emails": []string{"x@acme.test"}}), 402, "ADMIN-UAM-402-1")

	// Jira's create user (§24).
	wantCode(t, "no products", e.site.do("POST", "/rest/api/3/user", map[string]any{"emailAddress": "j@acme.test"}), 400, "")
	r := e.site.do("POST", "/rest/api/3/user", map[string]any{"emailAddress": "new@acme.test", "products": []string{}})
	if r.status != 201 || field(r.json(t), "accountId") != managed {
		t.Errorf("create of a user with Jira access: %d %s", r.status, r)
	}
	bare := e.c.AddAccount(CloudAccount{Email: "bare@acme.test"})
	wantCode(t, "existing user, no access, no products", e.site.do("POST", "/rest/api/3/user",
		map[string]any{"emailAddress": "bare@acme.test", "products": []string{}}), 400, "")
	r = e.site.do("POST", "/rest/api/3/user", map[string]any{"emailAddress": "bare@acme.test", "products": []string{"jira-software"}})
	if r.status != 201 || field(r.json(t), "accountId") != bare {
		t.Errorf("grant products to an existing user: %d %s", r.status, r)
	}
}

func TestCloudCursorPaging(t *testing.T) {
	t.Parallel()
	e := newCloudEnv(t, nil)
	for _, n := range []string{"a", "b", "c", "d", "e"} {
		e.c.AddAccount(CloudAccount{Email: n + "@acme.test"})
	}
	seen := map[any]bool{}
	body := map[string]any{"limit": 2}
	var cursors []any
	for range 10 {
		r := e.api.do("POST", dirPath+"/users/search", body)
		v := r.json(t)
		for i := range field(v, "data.#").(int) {
			seen[field(v, "data."+itoa(i)+".accountId")] = true
		}
		next := field(v, "links.next")
		if next == nil {
			break
		}
		cursors = append(cursors, next)
		// With a cursor the other filters are ignored (§26).
		body = map[string]any{"cursor": next, "emails": []string{"nobody@acme.test"}}
	}
	if len(seen) != 5 || len(cursors) != 2 {
		t.Fatalf("paged %d users with cursors %v", len(seen), cursors)
	}
	first := e.api.do("POST", dirPath+"/users/search", map[string]any{"cursor": cursors[0]}).String()
	if again := e.api.do("POST", dirPath+"/users/search", map[string]any{"cursor": cursors[0]}).String(); again != first {
		t.Errorf("a reused cursor gave another page")
	}
	wantCode(t, "bad cursor", e.api.do("POST", dirPath+"/users/search", map[string]any{"cursor": "not-a-cursor"}), 400, "ADMIN-UAM-400-1")
}

func TestCloudGroupsSyncedAndLicence(t *testing.T) {
	t.Parallel()
	res := "ari:cloud:jira-software::site/site-1"
	e := newCloudEnv(t, func(o *CloudOptions) { o.Seats = map[string]int{res: 1} })
	synced := e.c.AddGroup(CloudGroup{Name: "okta-eng", Synced: true})
	access := e.c.AddGroup(CloudGroup{Name: "jira-users", Grants: []CloudRole{{Resource: res, Role: "atlassian/user"}}})
	ann := e.c.AddAccount(CloudAccount{Email: "ann@acme.test", Groups: []string{"okta-eng"}})
	bob := e.c.AddAccount(CloudAccount{Email: "bob@acme.test"})

	r := e.api.do("POST", dirPath+"/groups/search", map[string]any{"groupNames": []string{"OKTA-ENG"}})
	if field(r.json(t), "data.0.id") != synced || field(r.json(t), "data.0.externalSynced") != true || field(r.json(t), "data.0.managedBy") != "external" {
		t.Errorf("synced group search: %s", r)
	}
	wantCode(t, "add to synced", e.api.do("POST", dirPath+"/groups/"+synced+"/memberships", map[string]string{"accountId": bob}), 400, "ADMIN-UAM-400-1")
	wantCode(t, "remove from synced", e.api.do("DELETE", dirPath+"/groups/"+synced+"/memberships/"+ann, nil), 400, "ADMIN-UAM-400-1")
	wantCode(t, "delete synced", e.api.do("DELETE", dirPath+"/groups/"+synced, nil), 400, "ADMIN-UAM-400-1")
	wantCode(t, "unknown group", e.api.do("POST", dirPath+"/groups/nope/memberships", map[string]string{"accountId": bob}), 404, "ADMIN-UAM-404-3")

	wantCode(t, "first seat", e.api.do("POST", dirPath+"/groups/"+access+"/memberships", map[string]string{"accountId": ann}), 204, "")
	wantCode(t, "again", e.api.do("POST", dirPath+"/groups/"+access+"/memberships", map[string]string{"accountId": ann}), 204, "")
	wantCode(t, "second seat", e.api.do("POST", dirPath+"/groups/"+access+"/memberships", map[string]string{"accountId": bob}), 409, "ADMIN-UAM-409-3")
	// A suspended person is not billed, so their seat is free.
	wantCode(t, "suspend ann", e.api.do("POST", dirPath+"/users/"+ann+"/suspend", nil), 204, "")
	wantCode(t, "seat freed", e.api.do("POST", dirPath+"/groups/"+access+"/memberships", map[string]string{"accountId": bob}), 204, "")
	wantCode(t, "restore over the limit", e.api.do("POST", dirPath+"/users/"+ann+"/restore", nil), 409, "ADMIN-UAM-409-3")
	wantCode(t, "remove non-member", e.api.do("DELETE", dirPath+"/groups/"+access+"/memberships/nobody", nil), 404, "ADMIN-UAM-404-1")
	wantCode(t, "create taken name", e.api.do("POST", dirPath+"/groups", map[string]string{"name": "Jira-Users"}), 409, "ADMIN-UAM-409-2")
	wantCode(t, "create in the wildcard directory", e.api.do("POST", orgPath+"/directories/-/groups", map[string]string{"name": "x"}), 400, "")
}

// TestCloudStateMachine walks suspend / restore / remove (directory
// level, any account) and disable / enable / delete (account level,
// managed accounts only), §22, §26.4, §27.
func TestCloudStateMachine(t *testing.T) {
	t.Parallel()
	e := newCloudEnv(t, nil)
	e.c.AddGroup(CloudGroup{Name: "devs"})
	m := e.c.AddAccount(CloudAccount{Email: "m@acme.test", Groups: []string{"devs"}})
	u := e.c.AddAccount(CloudAccount{Email: "u@other.test", Groups: []string{"devs"}})
	status := func(id string) [3]any {
		v := e.user(t, id)
		return [3]any{field(v, "data.status"), field(v, "data.accountStatus"), field(v, "data.membershipStatus")}
	}
	steps := []struct {
		method, path string
		code         int
		id           string
		want         [3]any
	}{
		{"POST", dirPath + "/users/" + m + "/suspend", 204, m, [3]any{"suspended", "active", "suspended"}},
		{"POST", dirPath + "/users/" + m + "/restore", 204, m, [3]any{"active", "active", "active"}},
		{"POST", "/users/" + m + "/manage/lifecycle/disable", 204, m, [3]any{"deactivated", "inactive", "active"}},
		{"POST", "/users/" + m + "/manage/lifecycle/enable", 204, m, [3]any{"active", "active", "active"}},
		{"POST", "/users/" + m + "/manage/lifecycle/delete", 204, m, [3]any{"for_deletion", "inactive", "active"}},
		{"POST", "/users/" + m + "/manage/lifecycle/enable", 400, m, [3]any{"for_deletion", "inactive", "active"}},
		{"POST", "/users/" + m + "/manage/lifecycle/cancel-delete", 204, m, [3]any{"deactivated", "inactive", "active"}},
		{"POST", "/users/" + m + "/manage/lifecycle/enable", 204, m, [3]any{"active", "active", "active"}},
		{"POST", "/users/" + u + "/manage/lifecycle/disable", 403, u, [3]any{"active", "active", "active"}},
		{"POST", dirPath + "/users/" + u + "/suspend", 204, u, [3]any{"suspended", "active", "suspended"}},
		{"DELETE", dirPath + "/users/" + m, 204, m, [3]any{"not_invited", "active", "no_membership"}},
	}
	for _, s := range steps {
		r := e.api.do(s.method, s.path, nil)
		if r.status != s.code {
			t.Fatalf("%s %s: %d, want %d: %s", s.method, s.path, r.status, s.code, r)
		}
		if got := status(s.id); got != s.want {
			t.Fatalf("after %s %s: %v, want %v", s.method, s.path, got, s.want)
		}
	}
	// Removal takes groups and roles; the managed account stays visible,
	// the unmanaged one does not.
	if a, _ := e.c.Account(m); len(a.Groups) != 0 {
		t.Errorf("removed account keeps groups %v", a.Groups)
	}
	if a, _ := e.c.Account(u); len(a.Groups) != 1 {
		t.Errorf("suspended account lost its groups: %v", a.Groups)
	}
	wantCode(t, "remove unmanaged", e.api.do("DELETE", dirPath+"/users/"+u, nil), 204, "")
	wantCode(t, "get removed unmanaged", e.api.do("GET", dirPath+"/users/"+u, nil), 404, "ADMIN-UAM-404-1")
	wantCode(t, "add removed to group", e.api.do("POST", dirPath+"/groups/"+mustGroup(t, e.c, "devs")+"/memberships", map[string]string{"accountId": m}), 400, "ADMIN-UAM-400-1")
}

func mustGroup(t *testing.T, c *Cloud, name string) string {
	t.Helper()
	g, ok := c.Group(name)
	if !ok {
		t.Fatalf("no group %s", name)
	}
	return g.ID
}

func TestCloudFaults(t *testing.T) {
	t.Parallel()
	e := newCloudEnv(t, nil)
	e.c.RateLimit(1, 1500*time.Millisecond)
	r := e.site.do("GET", "/rest/api/3/user?accountId=x", nil)
	if r.status != 429 || r.header.Get("Retry-After") != "2" || r.header.Get("X-RateLimit-Reset") == "" || r.header.Get("RateLimit-Reason") == "" {
		t.Errorf("site 429: %d %v", r.status, r.header)
	}
	e.c.RateLimit(1, time.Second)
	r = e.api.do("POST", dirPath+"/users/search", map[string]any{})
	if r.status != 429 || r.header.Get("Retry-After") != "1" || field(r.json(t), "errors.0.status") != "429" {
		t.Errorf("org 429: %d %v %s", r.status, r.header, r)
	}
	e.c.SetDown(true)
	r = e.api.do("POST", dirPath+"/users/search", map[string]any{})
	if r.status != 503 || r.header.Get("Retry-After") == "" {
		t.Errorf("outage: %d %v", r.status, r.header)
	}
	e.c.SetDown(false)
	e.c.ResetCalls()
	e.api.do("POST", dirPath+"/users/search", map[string]any{})
	e.api.do("POST", dirPath+"/groups", map[string]string{"name": "g"})
	if e.c.Reads() != 1 || e.c.Writes() != 1 {
		t.Errorf("a search counts as a read, a create as a write: %d reads, %d writes", e.c.Reads(), e.c.Writes())
	}
}
