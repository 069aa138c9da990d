package scim

import (
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
)

func TestEntraUserLifecycle(t *testing.T) {
	e := newEnv(t)
	const subject = "0a21f0f2-8d2a-4f8e-bf98-7363c4aed4ef"

	r := e.must(http.StatusCreated, tokenA, "POST", "/Users", entraCreateUser)
	id, _ := r.body["id"].(string)
	if id == "" {
		t.Fatalf("no id in %s", r.raw)
	}
	if loc := r.header.Get("Location"); !strings.HasSuffix(loc, "/scim/v2/Users/"+id) {
		t.Errorf("Location = %q", loc)
	}
	wantField(t, r.body, "meta.resourceType", "User")
	wantField(t, r.body, "meta.version", `W/"1"`)
	wantField(t, r.body, "meta.created", "2026-03-01T12:00:00Z")
	wantField(t, r.body, "meta.location", r.header.Get("Location"))
	wantField(t, r.body, "externalId", subject)
	wantField(t, r.body, "active", true)
	if r.header.Get("ETag") != `W/"1"` {
		t.Errorf("ETag = %q", r.header.Get("ETag"))
	}
	if _, ok := r.body["roles"]; ok {
		t.Errorf("empty roles kept: %s", r.raw)
	}
	p := e.hooks.take("provision")
	if len(p) != 1 || p[0].subject != subject || p[0].idp != "entra" {
		t.Fatalf("provision calls = %+v", p)
	}
	u := p[0].user
	if u.Email != "Test_User_fd0ea19b-0777-472c-9f96-4f70d2226f2e@testuser.com" || u.GivenName != "givenName" ||
		u.FamilyName != "familyName" || u.DisplayName != "givenName familyName" || !u.Active {
		t.Errorf("provisioned user = %+v", u)
	}

	// Entra looks the user up before acting.
	q := "/Users?filter=" + url.QueryEscape(`userName eq "Test_User_ab6490ee-1e48-479e-a20b-2d77186b5dd1"`)
	l := e.must(http.StatusOK, tokenA, "GET", q, "")
	wantField(t, l.body, "totalResults", 1.0)
	wantField(t, l.body, "Resources.0.id", id)
	wantField(t, l.body, "schemas.0", "urn:ietf:params:scim:api:messages:2.0:ListResponse")

	r = e.must(http.StatusOK, tokenA, "PATCH", "/Users/"+id, entraPatchMulti)
	wantField(t, r.body, "emails.0.value", "updatedEmail@microsoft.com")
	wantField(t, r.body, "emails.0.primary", true)
	wantField(t, r.body, "name.familyName", "updatedFamilyName")
	wantField(t, r.body, "name.givenName", "givenName")
	wantField(t, r.body, "meta.version", `W/"2"`)
	r = e.must(http.StatusOK, tokenA, "PATCH", "/Users/"+id, entraPatchSingle)
	wantField(t, r.body, "userName", "5b50642d-79fc-4410-9e90-4c077cdd1a59@testuser.com")
	if p := e.hooks.take("provision"); len(p) != 2 || p[1].user.UserName != "5b50642d-79fc-4410-9e90-4c077cdd1a59@testuser.com" {
		t.Errorf("provision after updates = %+v", p)
	}

	r = e.must(http.StatusOK, tokenA, "PATCH", "/Users/"+id, entraPatchEnterprise)
	ext := "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
	doc, _ := r.body[ext].(map[string]any)
	wantField(t, doc, "department", "Sales")
	wantField(t, doc, "manager.value", "2819c223-7f76-453a-919d-413861904646")
	if !slices.Contains(anyStrings(r.body["schemas"]), ext) {
		t.Errorf("schemas = %v, want the enterprise extension listed", r.body["schemas"])
	}
	p = e.hooks.take("provision")
	if len(p) != 1 {
		t.Fatalf("provision calls = %d", len(p))
	}
	c := p[0].user.Claims
	for k, want := range map[string]string{
		"department":        "Sales",
		"manager":           "2819c223-7f76-453a-919d-413861904646",
		"employeeNumber":    "701984",
		ext + ":department": "Sales",
		"emails.work":       "updatedEmail@microsoft.com",
		"name.givenName":    "givenName",
		"externalId":        subject,
	} {
		if got := c[k]; len(got) != 1 || got[0] != want {
			t.Errorf("claim %s = %q, want %q", k, got, want)
		}
	}

	// Disable: the hook runs once, with the subject, before the answer.
	r = e.must(http.StatusOK, tokenA, "PATCH", "/Users/"+id, entraDisable)
	wantField(t, r.body, "active", false)
	d := e.hooks.take("deprovision")
	if len(d) != 1 || d[0].subject != subject || d[0].reason != ReasonDeactivated || d[0].idp != "entra" {
		t.Fatalf("deprovision calls = %+v", d)
	}
	// The same again, in the string form: no second deprovision.
	e.must(http.StatusOK, tokenA, "PATCH", "/Users/"+id, entraDisableString)
	if d := e.hooks.take("deprovision"); len(d) != 0 {
		t.Errorf("deprovision on an inactive user: %+v", d)
	}
	r = e.must(http.StatusOK, tokenA, "GET", "/Users/"+id, "")
	wantField(t, r.body, "active", false)

	r = e.must(http.StatusOK, tokenA, "PATCH", "/Users/"+id, entraEnableString)
	wantField(t, r.body, "active", true)
	if p := e.hooks.take("provision"); len(p) != 1 || !p[0].user.Active {
		t.Errorf("reactivation provision = %+v", p)
	}

	e.must(http.StatusNoContent, tokenA, "DELETE", "/Users/"+id, "")
	d = e.hooks.take("deprovision")
	if len(d) != 1 || d[0].subject != subject || d[0].reason != ReasonDeleted {
		t.Fatalf("deprovision on delete = %+v", d)
	}
	wantError(t, e.do(tokenA, "GET", "/Users/"+id, ""), http.StatusNotFound, "")
	wantError(t, e.do(tokenA, "DELETE", "/Users/"+id, ""), http.StatusNotFound, "")
	if d := e.hooks.take("deprovision"); len(d) != 0 {
		t.Errorf("deprovision on a second delete: %+v", d)
	}
}

func anyStrings(v any) []string {
	var out []string
	l, _ := v.([]any)
	for _, e := range l {
		s, _ := e.(string)
		out = append(out, s)
	}
	return out
}

func TestOktaUserLifecycle(t *testing.T) {
	e := newEnv(t)
	r := e.must(http.StatusCreated, tokenB, "POST", "/Users", oktaCreateUser)
	id := r.body["id"].(string)
	if strings.Contains(r.raw, "1mz050nq") || strings.Contains(r.raw, "password") {
		t.Errorf("password echoed: %s", r.raw)
	}
	wantField(t, r.body, "locale", "en-US")

	// Okta checks for the user before creating it: a second create is a
	// conflict, and so is another user with that userName in any case.
	wantError(t, e.do(tokenB, "POST", "/Users", oktaCreateUser), http.StatusConflict, "uniqueness")
	upper := strings.Replace(oktaCreateUser, `"test.user@okta.local",
  "name"`, `"TEST.USER@okta.local",
  "name"`, 1)
	upper = strings.Replace(upper, "00ujl29u0le5T6Aj10h7", "00other", 1)
	wantError(t, e.do(tokenB, "POST", "/Users", upper), http.StatusConflict, "uniqueness")

	r = e.must(http.StatusOK, tokenB, "PUT", "/Users/"+id, fmt.Sprintf(oktaPutUser, id))
	wantField(t, r.body, "name.middleName", "Excited")
	wantField(t, r.body, "emails.0.display", "test.user@okta.local")
	wantField(t, r.body, "externalId", nil) // a PUT replaces: Okta's PUT has none
	wantField(t, r.body, "meta.version", `W/"2"`)
	if p := e.hooks.take("provision"); len(p) != 2 || p[1].subject != "00ujl29u0le5T6Aj10h7" {
		t.Errorf("provision = %+v (the subject stays the one from create)", p)
	}

	e.must(http.StatusOK, tokenB, "PATCH", "/Users/"+id, oktaDeactivate)
	if d := e.hooks.take("deprovision"); len(d) != 1 || d[0].subject != "00ujl29u0le5T6Aj10h7" || d[0].idp != "okta" {
		t.Fatalf("deprovision = %+v", d)
	}
	// A PUT that says active again reactivates.
	e.must(http.StatusOK, tokenB, "PUT", "/Users/"+id, fmt.Sprintf(oktaPutUser, id))
	if p := e.hooks.take("provision"); len(p) != 1 {
		t.Errorf("reactivation by PUT: provision = %+v", p)
	}
	// Deactivation by PUT.
	e.must(http.StatusOK, tokenB, "PUT", "/Users/"+id, strings.Replace(fmt.Sprintf(oktaPutUser, id), `"active": true`, `"active": false`, 1))
	if d := e.hooks.take("deprovision"); len(d) != 1 {
		t.Errorf("deactivation by PUT: deprovision = %+v", d)
	}
}

func TestGroups(t *testing.T) {
	e := newEnv(t)
	u1 := e.must(http.StatusCreated, tokenB, "POST", "/Users", oktaCreateUser).body["id"].(string)
	other := strings.NewReplacer("test.user@okta.local", "other.user@okta.local", "00ujl29u0le5T6Aj10h7", "00other").Replace(oktaCreateUser)
	u2 := e.must(http.StatusCreated, tokenB, "POST", "/Users", other).body["id"].(string)
	e.hooks.take("")

	// Okta.
	g := e.must(http.StatusCreated, tokenB, "POST", "/Groups", oktaCreateGroup)
	gid := g.body["id"].(string)
	wantField(t, g.body, "meta.resourceType", "Group")
	e.must(http.StatusOK, tokenB, "PATCH", "/Groups/"+gid, fmt.Sprintf(entraAddMembers, u2))
	r := e.must(http.StatusOK, tokenB, "PATCH", "/Groups/"+gid, fmt.Sprintf(oktaGroupMembership, u1, u2))
	if got := memberIDs(r.body); !slices.Equal(got, sorted(u1, u2)) {
		t.Errorf("members = %v, want %v", got, sorted(u1, u2))
	}
	p := e.hooks.take("provision")
	if len(p) == 0 || !slices.Contains(p[len(p)-1].user.Groups, "Test SCIMv2") {
		t.Errorf("members not re-provisioned with the group: %+v", p)
	}
	r = e.must(http.StatusOK, tokenB, "PATCH", "/Groups/"+gid, fmt.Sprintf(oktaRenameGroup, gid))
	wantField(t, r.body, "displayName", "Test SCIMv2 renamed")
	if p := e.hooks.take("provision"); len(p) != 2 {
		t.Errorf("rename re-provisions both members, got %d calls", len(p))
	}

	// Entra: remove by value list, then by filter.
	e.must(http.StatusOK, tokenB, "PATCH", "/Groups/"+gid, fmt.Sprintf(entraRemoveMembers, u1))
	r = e.must(http.StatusOK, tokenB, "GET", "/Groups/"+gid, "")
	if got := memberIDs(r.body); !slices.Equal(got, []string{u2}) {
		t.Errorf("after remove: members = %v", got)
	}
	e.must(http.StatusOK, tokenB, "PATCH", "/Groups/"+gid, fmt.Sprintf(entraRemoveMemberFilter, u2))
	r = e.must(http.StatusOK, tokenB, "GET", "/Groups/"+gid, "")
	if got := memberIDs(r.body); len(got) != 0 {
		t.Errorf("after filter remove: members = %v", got)
	}
	// Removing somebody who is not a member is fine.
	e.must(http.StatusOK, tokenB, "PATCH", "/Groups/"+gid, fmt.Sprintf(entraRemoveMemberFilter, u2))

	eg := e.must(http.StatusCreated, tokenB, "POST", "/Groups", entraCreateGroup)
	wantField(t, eg.body, "externalId", "8aa1a0c0-c4c3-4bc0-b4a5-2ef676900159")
	wantError(t, e.do(tokenB, "POST", "/Groups", entraCreateGroup), http.StatusConflict, "uniqueness")
	q := "/Groups?excludedAttributes=members&filter=" + url.QueryEscape(`displayName eq "displayName"`)
	l := e.must(http.StatusOK, tokenB, "GET", q, "")
	wantField(t, l.body, "totalResults", 1.0)
	wantField(t, l.body, "Resources.0.id", eg.body["id"])
	if _, ok := get(l.body, "Resources.0").(map[string]any)["members"]; ok {
		t.Errorf("members not excluded: %s", l.raw)
	}
	e.must(http.StatusOK, tokenB, "PATCH", "/Groups/"+gid, fmt.Sprintf(entraAddMembers, u1))
	q = "/Groups?filter=" + url.QueryEscape(fmt.Sprintf(`id eq "%s" and members[value eq "%s"]`, gid, u1))
	wantField(t, e.must(http.StatusOK, tokenB, "GET", q, "").body, "totalResults", 1.0)
	q = "/Groups?filter=" + url.QueryEscape(fmt.Sprintf(`id eq "%s" and members[value eq "%s"]`, gid, u2))
	wantField(t, e.must(http.StatusOK, tokenB, "GET", q, "").body, "totalResults", 0.0)

	// A group member must be a user of the same IdP.
	wantError(t, e.do(tokenB, "PATCH", "/Groups/"+gid, fmt.Sprintf(entraAddMembers, "no-such-user")), http.StatusBadRequest, "invalidValue")

	e.hooks.take("")
	e.must(http.StatusNoContent, tokenB, "DELETE", "/Groups/"+gid, "")
	if p := e.hooks.take("provision"); len(p) != 1 || len(p[0].user.Groups) != 0 {
		t.Errorf("delete re-provisions the member without the group: %+v", p)
	}
	wantError(t, e.do(tokenB, "GET", "/Groups/"+gid, ""), http.StatusNotFound, "")
}

func memberIDs(doc map[string]any) []string {
	var ids []string
	l, _ := doc["members"].([]any)
	for _, m := range l {
		ids = append(ids, get(m, "value").(string))
	}
	slices.Sort(ids)
	return ids
}

func sorted(s ...string) []string {
	slices.Sort(s)
	return s
}

// Hooks that are an Activator hear of every user that becomes active:
// created active, or active again after a deactivation or delete,
// whether or not the IdP is Automatic; never of a user that stays active
// or arrives inactive.
func TestActivatedHook(t *testing.T) {
	for _, automatic := range []bool{true, false} {
		t.Run(fmt.Sprintf("automatic=%v", automatic), func(t *testing.T) {
			e := newEnv(t, IdPConfig{ID: "entra", Token: tokenA, Automatic: automatic})
			r := e.must(http.StatusCreated, tokenA, "POST", "/Users", entraCreateUser)
			id, subject := r.body["id"].(string), "entra/0a21f0f2-8d2a-4f8e-bf98-7363c4aed4ef"
			if got := e.act.takeActivated(); !slices.Equal(got, []string{subject}) {
				t.Fatalf("after create: %v", got)
			}
			e.must(http.StatusOK, tokenA, "PATCH", "/Users/"+id, entraPatchSingle)
			e.must(http.StatusOK, tokenA, "PATCH", "/Users/"+id, entraDisable)
			if got := e.act.takeActivated(); len(got) != 0 {
				t.Fatalf("an update and a deactivation activated: %v", got)
			}
			e.must(http.StatusOK, tokenA, "PATCH", "/Users/"+id, entraEnableString)
			if got := e.act.takeActivated(); !slices.Equal(got, []string{subject}) {
				t.Fatalf("after reactivation: %v", got)
			}
			e.must(http.StatusNoContent, tokenA, "DELETE", "/Users/"+id, "")
			inactive := strings.Replace(entraCreateUser, `"active": true`, `"active": false`, 1)
			e.must(http.StatusCreated, tokenA, "POST", "/Users", inactive)
			if got := e.act.takeActivated(); len(got) != 0 {
				t.Fatalf("a delete or an inactive create activated: %v", got)
			}
		})
	}
}
