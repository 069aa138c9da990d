package scim

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"
)

// A token of one IdP neither sees nor changes the other's users and groups.
func TestTokenIsolation(t *testing.T) {
	e := newEnv(t)
	a := e.must(http.StatusCreated, tokenA, "POST", "/Users", entraCreateUser).body["id"].(string)
	ga := e.must(http.StatusCreated, tokenA, "POST", "/Groups", entraCreateGroup).body["id"].(string)
	e.must(http.StatusOK, tokenA, "PATCH", "/Groups/"+ga, fmt.Sprintf(entraAddMembers, a))
	e.hooks.take("")

	for _, tc := range []struct{ method, path, body string }{
		{"GET", "/Users/" + a, ""},
		{"PUT", "/Users/" + a, entraCreateUser},
		{"PATCH", "/Users/" + a, entraDisable},
		{"DELETE", "/Users/" + a, ""},
		{"GET", "/Groups/" + ga, ""},
		{"PATCH", "/Groups/" + ga, fmt.Sprintf(entraRemoveMemberFilter, a)},
		{"DELETE", "/Groups/" + ga, ""},
	} {
		wantError(t, e.do(tokenB, tc.method, tc.path, tc.body), http.StatusNotFound, "")
	}
	for _, path := range []string{
		"/Users",
		"/Users?filter=" + url.QueryEscape(`userName eq "Test_User_ab6490ee-1e48-479e-a20b-2d77186b5dd1"`),
		"/Users?filter=" + url.QueryEscape(`id eq "`+a+`"`),
		"/Groups",
		"/Groups?filter=" + url.QueryEscape(`displayName eq "displayName"`),
	} {
		wantField(t, e.must(http.StatusOK, tokenB, "GET", path, "").body, "totalResults", 0.0)
	}
	if calls := e.hooks.take(""); len(calls) != 0 {
		t.Errorf("hooks called for a foreign IdP: %+v", calls)
	}

	// The same userName, externalId and group name in the other IdP are
	// another person and another group.
	b := e.must(http.StatusCreated, tokenB, "POST", "/Users", entraCreateUser).body["id"].(string)
	e.must(http.StatusCreated, tokenB, "POST", "/Groups", entraCreateGroup)
	// B cannot make A's user a member of its group.
	gb := e.must(http.StatusCreated, tokenB, "POST", "/Groups", strings.NewReplacer(`"displayName": "displayName"`, `"displayName": "b"`, "8aa1a0c0", "8bb").Replace(entraCreateGroup)).body["id"].(string)
	wantError(t, e.do(tokenB, "PATCH", "/Groups/"+gb, fmt.Sprintf(entraAddMembers, a)), http.StatusBadRequest, "invalidValue")

	e.must(http.StatusOK, tokenB, "PATCH", "/Users/"+b, entraDisable)
	d := e.hooks.take("deprovision")
	if len(d) != 1 || d[0].idp != "okta" {
		t.Fatalf("deprovision = %+v", d)
	}
	r := e.must(http.StatusOK, tokenA, "GET", "/Users/"+a, "")
	wantField(t, r.body, "active", true)
	r = e.must(http.StatusOK, tokenA, "GET", "/Groups/"+ga, "")
	if got := memberIDs(r.body); len(got) != 1 || got[0] != a {
		t.Errorf("A's group members = %v", got)
	}
}

func TestPaging(t *testing.T) {
	e := newEnv(t)
	for i := range 5 {
		body := fmt.Sprintf(`{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"u%d","externalId":"x%d"}`, i, i)
		e.must(http.StatusCreated, tokenA, "POST", "/Users", body)
	}
	e.must(http.StatusCreated, tokenB, "POST", "/Users", oktaCreateUser)
	seen := map[string]bool{}
	for _, tc := range []struct {
		query       string
		start, want int
	}{
		{"?startIndex=1&count=2", 1, 2},
		{"?startIndex=3&count=2", 3, 2},
		{"?startIndex=5&count=2", 5, 1},
		{"?startIndex=9&count=2", 9, 0},
		{"?count=0", 1, 0},
		{"?startIndex=0&count=-3", 1, 0},
		{"", 1, 5},
		{"?count=1000", 1, 5},
	} {
		r := e.must(http.StatusOK, tokenA, "GET", "/Users"+tc.query, "")
		wantField(t, r.body, "totalResults", 5.0)
		wantField(t, r.body, "startIndex", float64(tc.start))
		wantField(t, r.body, "itemsPerPage", float64(tc.want))
		res, _ := r.body["Resources"].([]any)
		if len(res) != tc.want {
			t.Errorf("%s: %d resources, want %d", tc.query, len(res), tc.want)
		}
		if tc.query == "?startIndex=1&count=2" || tc.query == "?startIndex=3&count=2" || tc.query == "?startIndex=5&count=2" {
			for _, u := range res {
				seen[get(u, "id").(string)] = true
			}
		}
	}
	if len(seen) != 5 {
		t.Errorf("pages covered %d distinct users, want 5", len(seen))
	}
	// A filter pages too, and or joins lookups.
	f := "/Users?count=1&filter=" + url.QueryEscape(`userName eq "u1" or externalId eq "x2" or userName eq "U1"`)
	r := e.must(http.StatusOK, tokenA, "GET", f, "")
	wantField(t, r.body, "totalResults", 2.0)
	wantField(t, r.body, "itemsPerPage", 1.0)
	f = "/Users?filter=" + url.QueryEscape(`userName eq "u1" and externalId eq "x1"`)
	wantField(t, e.must(http.StatusOK, tokenA, "GET", f, "").body, "totalResults", 1.0)
	f = "/Users?filter=" + url.QueryEscape(`userName eq "u1" and externalId eq "x2"`)
	wantField(t, e.must(http.StatusOK, tokenA, "GET", f, "").body, "totalResults", 0.0)
}

// A hook failure after the state was stored is logged; the IdP sees
// success, and the state is the new one.
func TestHookFailureAfterStore(t *testing.T) {
	e := newEnv(t)
	id := e.must(http.StatusCreated, tokenA, "POST", "/Users", entraCreateUser).body["id"].(string)
	e.hooks.fail = errors.New("jira is down")
	e.must(http.StatusOK, tokenA, "PATCH", "/Users/"+id, entraDisable)
	if d := e.hooks.take("deprovision"); len(d) != 1 {
		t.Fatalf("deprovision = %+v", d)
	}
	wantField(t, e.must(http.StatusOK, tokenA, "GET", "/Users/"+id, "").body, "active", false)
	e.must(http.StatusNoContent, tokenA, "DELETE", "/Users/"+id, "")
	wantError(t, e.do(tokenA, "GET", "/Users/"+id, ""), http.StatusNotFound, "")
}

// When nothing could be stored the IdP gets 503 with Retry-After and
// repeats the request; a deactivation still reaches the apps at once.
func TestStoreFailure(t *testing.T) {
	e := newEnv(t)
	id := e.must(http.StatusCreated, tokenA, "POST", "/Users", entraCreateUser).body["id"].(string)
	e.hooks.take("")
	e.st.failPut = true
	r := e.do(tokenA, "PATCH", "/Users/"+id, entraDisable)
	wantError(t, r, http.StatusServiceUnavailable, "")
	if r.header.Get("Retry-After") == "" {
		t.Error("503 without Retry-After")
	}
	if strings.Contains(r.raw, "database is locked") {
		t.Errorf("store error shown to the IdP: %s", r.raw)
	}
	if d := e.hooks.take("deprovision"); len(d) != 1 || d[0].reason != ReasonDeactivated {
		t.Errorf("deprovision = %+v", d)
	}
	// Updates of an active user provision nothing when not stored.
	r = e.do(tokenA, "PATCH", "/Users/"+id, entraPatchSingle)
	wantError(t, r, http.StatusServiceUnavailable, "")
	if p := e.hooks.take("provision"); len(p) != 0 {
		t.Errorf("provision without a stored change: %+v", p)
	}
	e.st.failPut = false
	wantField(t, e.must(http.StatusOK, tokenA, "GET", "/Users/"+id, "").body, "active", true)
	// The retry stores it and deprovisions again (the hook is idempotent).
	e.must(http.StatusOK, tokenA, "PATCH", "/Users/"+id, entraDisable)
	if d := e.hooks.take("deprovision"); len(d) != 1 {
		t.Errorf("deprovision on retry = %+v", d)
	}

	// A closed database fails reads as well: 503, not 500.
	e.db.Close()
	wantError(t, e.do(tokenA, "GET", "/Users/"+id, ""), http.StatusServiceUnavailable, "")
}

func TestNotAutomatic(t *testing.T) {
	e := newEnv(t, IdPConfig{ID: "entra", Token: tokenA})
	id := e.must(http.StatusCreated, tokenA, "POST", "/Users", entraCreateUser).body["id"].(string)
	e.must(http.StatusOK, tokenA, "PATCH", "/Users/"+id, entraPatchMulti)
	if p := e.hooks.take("provision"); len(p) != 0 {
		t.Errorf("provision without Automatic: %+v", p)
	}
	e.must(http.StatusOK, tokenA, "PATCH", "/Users/"+id, entraDisable)
	if d := e.hooks.take("deprovision"); len(d) != 1 {
		t.Errorf("deprovision happens regardless of Automatic: %+v", d)
	}
	// Created inactive: may already have an app account from a login.
	body := strings.NewReplacer(`"active": true`, `"active": false`, "Test_User_ab6490ee", "inactive", "0a21f0f2", "inact").Replace(entraCreateUser)
	e.must(http.StatusCreated, tokenA, "POST", "/Users", body)
	if d := e.hooks.take("deprovision"); len(d) != 1 {
		t.Errorf("created inactive: deprovision = %+v", d)
	}
}

func TestSubjectAttr(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct{ attr, want string }{
		{"", "0a21f0f2-8d2a-4f8e-bf98-7363c4aed4ef"},
		{"userName", "Test_User_ab6490ee-1e48-479e-a20b-2d77186b5dd1"},
		{"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber", "701984"},
		{"id", ""},
	} {
		t.Run(tc.attr, func(t *testing.T) {
			e := newEnv(t, IdPConfig{ID: "entra", Token: tokenA, SubjectAttr: tc.attr, Automatic: true})
			body := strings.Replace(entraCreateUser, `"roles": []`,
				`"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {"employeeNumber": "701984", "department": "Sales", "manager": {"value": "m1"}}`, 1)
			id := e.must(http.StatusCreated, tokenA, "POST", "/Users", body).body["id"].(string)
			want := tc.want
			if want == "" {
				want = id
			}
			u, err := e.db.SCIMUser(ctx, "entra", id)
			if err != nil || u.Subject != want {
				t.Fatalf("subject = %q (%v), want %q", u.Subject, err, want)
			}
			// A changed subject attribute does not re-key the person.
			e.must(http.StatusOK, tokenA, "PATCH", "/Users/"+id, entraPatchSingle)
			e.must(http.StatusOK, tokenA, "PATCH", "/Users/"+id, entraDisable)
			if d := e.hooks.take("deprovision"); len(d) != 1 || d[0].subject != want {
				t.Errorf("deprovision = %+v, want subject %q", d, want)
			}
		})
	}
}

func TestDiscoveryAndMounting(t *testing.T) {
	e := newEnv(t)
	r := e.must(http.StatusOK, tokenA, "GET", "/ServiceProviderConfig", "")
	wantField(t, r.body, "patch.supported", true)
	wantField(t, r.body, "filter.supported", true)
	wantField(t, r.body, "authenticationSchemes.0.type", "oauthbearertoken")
	r = e.must(http.StatusOK, tokenA, "GET", "/ResourceTypes", "")
	wantField(t, r.body, "totalResults", 2.0)
	r = e.must(http.StatusOK, tokenA, "GET", "/Schemas", "")
	if !strings.Contains(r.raw, enterpriseURN) {
		t.Errorf("schemas lack the enterprise extension")
	}
	e.must(http.StatusOK, tokenA, "GET", "/Schemas/urn:ietf:params:scim:schemas:core:2.0:User", "")

	// Mounted with the prefix stripped, and with a configured base URL.
	h, err := New(Config{IdPs: []IdPConfig{{ID: "entra", Token: tokenA}}, Store: e.db, Hooks: e.hooks,
		BaseURL: "https://jira.example.com/scim/v2/", Now: func() time.Time { return testNow }})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(http.StripPrefix("/scim/v2", h))
	defer srv.Close()
	req, _ := http.NewRequest("POST", srv.URL+"/scim/v2/Users/", strings.NewReader(entraCreateUser))
	req.Header.Set("Authorization", "Bearer "+tokenA)
	res, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusCreated || !strings.HasPrefix(res.Header.Get("Location"), "https://jira.example.com/scim/v2/Users/") {
		t.Errorf("stripped mount: %d, Location %q", res.StatusCode, res.Header.Get("Location"))
	}
}
