package scim

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/usherhq/usher/store"
)

func TestBadInput(t *testing.T) {
	e := newEnv(t)
	id := e.must(http.StatusCreated, tokenA, "POST", "/Users", entraCreateUser).body["id"].(string)
	gid := e.must(http.StatusCreated, tokenA, "POST", "/Groups", entraCreateGroup).body["id"].(string)
	patch := func(ops string) string {
		return `{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[` + ops + `]}`
	}
	filter := func(f string) string { return "/Users?filter=" + url.QueryEscape(f) }
	big := `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"x","displayName":"` + strings.Repeat("a", 70<<10) + `"}`
	for _, tc := range []struct {
		name, method, path, body string
		status                   int
		scimType                 string
	}{
		{"malformed JSON", "POST", "/Users", `{"schemas": [`, 400, "invalidSyntax"},
		{"not an object", "POST", "/Users", `["a"]`, 400, "invalidSyntax"},
		{"missing schemas", "POST", "/Users", `{"userName":"a","externalId":"a"}`, 400, "invalidSyntax"},
		{"group schema for a user", "POST", "/Users", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:Group"],"userName":"a","externalId":"a"}`, 400, "invalidSyntax"},
		{"missing userName", "POST", "/Users", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"externalId":"a"}`, 400, "invalidValue"},
		{"empty userName", "POST", "/Users", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":" ","externalId":"a"}`, 400, "invalidValue"},
		{"missing subject", "POST", "/Users", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"nosubject"}`, 400, "invalidValue"},
		{"active not boolean", "POST", "/Users", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"b","externalId":"b","active":"maybe"}`, 400, "invalidValue"},
		{"emails not a list of objects", "POST", "/Users", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"c","externalId":"c","emails":[1]}`, 400, "invalidValue"},
		{"oversized body", "POST", "/Users", big, 413, ""},
		{"group without displayName", "POST", "/Groups", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:Group"]}`, 400, "invalidValue"},
		{"group malformed JSON", "POST", "/Groups", `{"displayName":`, 400, "invalidSyntax"},
		{"group not an object", "POST", "/Groups", `"g"`, 400, "invalidSyntax"},
		{"user schema for a group", "POST", "/Groups", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"displayName":"g"}`, 400, "invalidSyntax"},
		{"group members not a list", "POST", "/Groups", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:Group"],"displayName":"g","members":{"value":"x"}}`, 400, "invalidValue"},
		{"oversized group", "POST", "/Groups", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:Group"],"displayName":"` + strings.Repeat("a", 2<<20) + `"}`, 413, ""},
		{"oversized patch", "PATCH", "/Users/" + id, patch(`{"op":"replace","path":"displayName","value":"` + strings.Repeat("a", 2<<20) + `"}`), 413, ""},
		{"oversized put", "PUT", "/Users/" + id, strings.Replace(entraCreateUser, `"userName"`, `"title":"`+strings.Repeat("a", 2<<20)+`","userName"`, 1), 413, ""},
		{"trailing data", "POST", "/Users", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"t","externalId":"t"} {}`, 400, "invalidSyntax"},
		{"filter syntax", "GET", filter(`userName eq "x`), "", 400, "invalidFilter"},
		{"filter operator", "GET", filter(`userName sw "x"`), "", 400, "invalidFilter"},
		{"filter attribute", "GET", filter(`displayName eq "x"`), "", 400, "invalidFilter"},
		{"filter not", "GET", filter(`not (userName eq "x")`), "", 400, "invalidFilter"},
		{"filter value path", "GET", filter(`emails[type eq "work"]`), "", 400, "invalidFilter"},
		{"filter number", "GET", filter(`userName eq 5`), "", 400, "invalidFilter"},
		{"group filter", "GET", "/Groups?filter=" + url.QueryEscape(`members[value eq "x"]`), "", 400, "invalidFilter"},
		{"bad count", "GET", "/Users?count=ten", "", 400, "invalidValue"},
		{"patch unknown attribute", "PATCH", "/Users/" + id, patch(`{"op":"replace","path":"shoeSize","value":"44"}`), 400, "invalidPath"},
		{"patch unparsable path", "PATCH", "/Users/" + id, patch(`{"op":"replace","path":"emails[type eq","value":"x"}`), 400, "invalidPath"},
		{"patch unknown sub-attribute", "PATCH", "/Users/" + id, patch(`{"op":"replace","path":"name.nickname","value":"x"}`), 400, "invalidPath"},
		{"patch bad op", "PATCH", "/Users/" + id, patch(`{"op":"move","path":"userName","value":"x"}`), 400, "invalidValue"},
		{"patch no operations", "PATCH", "/Users/" + id, patch(``), 400, "invalidValue"},
		{"patch without PatchOp schema", "PATCH", "/Users/" + id, `{"Operations":[{"op":"replace","path":"userName","value":"x"}]}`, 400, "invalidSyntax"},
		{"patch malformed", "PATCH", "/Users/" + id, `{"Operations":`, 400, "invalidSyntax"},
		{"patch remove without path", "PATCH", "/Users/" + id, patch(`{"op":"remove"}`), 400, "noTarget"},
		{"patch no path, not an object", "PATCH", "/Users/" + id, patch(`{"op":"replace","value":"x"}`), 400, "invalidValue"},
		{"patch active to nonsense", "PATCH", "/Users/" + id, patch(`{"op":"replace","path":"active","value":"perhaps"}`), 400, "invalidValue"},
		{"patch remove userName", "PATCH", "/Users/" + id, patch(`{"op":"remove","path":"userName"}`), 400, "invalidValue"},
		{"patch read-only", "PATCH", "/Users/" + id, patch(`{"op":"replace","path":"groups","value":[]}`), 400, "mutability"},
		{"patch group unknown attribute", "PATCH", "/Groups/" + gid, patch(`{"op":"replace","path":"owner","value":"x"}`), 400, "invalidPath"},
		{"patch group remove displayName", "PATCH", "/Groups/" + gid, patch(`{"op":"remove","path":"displayName"}`), 400, "mutability"},
		{"patch group bad op", "PATCH", "/Groups/" + gid, patch(`{"op":"copy","path":"members","value":[]}`), 400, "invalidValue"},
		{"patch group without PatchOp schema", "PATCH", "/Groups/" + gid, `{"Operations":[{"op":"add","path":"members","value":[]}]}`, 400, "invalidSyntax"},
		{"patch group members not objects", "PATCH", "/Groups/" + gid, patch(`{"op":"add","path":"members","value":["x"]}`), 400, "invalidValue"},
		{"patch operations not a list", "PATCH", "/Users/" + id, `{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":{"op":"remove"}}`, 400, "invalidSyntax"},
		{"patch op not a string", "PATCH", "/Users/" + id, patch(`{"op":1,"path":"active","value":false}`), 400, "invalidSyntax"},
		{"unknown user", "GET", "/Users/nobody", "", 404, ""},
		{"patch unknown user", "PATCH", "/Users/nobody", patch(`{"op":"replace","path":"active","value":false}`), 404, ""},
		{"put unknown user", "PUT", "/Users/nobody", entraCreateUser, 404, ""},
		{"unknown group", "GET", "/Groups/nobody", "", 404, ""},
		{"put unknown group", "PUT", "/Groups/nobody", entraCreateGroup, 404, ""},
		{"patch unknown group", "PATCH", "/Groups/nobody", patch(`{"op":"add","path":"members","value":[]}`), 404, ""},
		{"delete unknown user", "DELETE", "/Users/nobody", "", 404, ""},
		{"unknown endpoint", "GET", "/Widgets", "", 404, ""},
		{"bulk", "POST", "/Bulk", `{}`, 501, ""},
		{"method", "DELETE", "/Users", "", 405, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wantError(t, e.do(tokenA, tc.method, tc.path, tc.body), tc.status, tc.scimType)
		})
	}
	// Nothing above changed the user.
	r := e.must(http.StatusOK, tokenA, "GET", "/Users/"+id, "")
	wantField(t, r.body, "meta.version", `W/"1"`)
}

func TestContentTypeTolerated(t *testing.T) {
	e := newEnv(t)
	for i, ct := range []string{"application/json", "application/scim+json; charset=utf-8", "text/plain", ""} {
		body := strings.NewReplacer("Test_User_ab6490ee", fmt.Sprint("ct", i), "0a21f0f2", fmt.Sprint("ct", i)).Replace(entraCreateUser)
		req, _ := http.NewRequest("POST", e.srv.URL+"/scim/v2/Users", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+tokenA)
		if ct != "" {
			req.Header.Set("Content-Type", ct)
		}
		res, err := e.srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != http.StatusCreated {
			t.Errorf("Content-Type %q: status %d", ct, res.StatusCode)
		}
		if got := res.Header.Get("Content-Type"); got != "application/scim+json" {
			t.Errorf("response Content-Type = %q", got)
		}
	}
}

func TestAuth(t *testing.T) {
	e := newEnv(t)
	for _, tc := range []struct{ name, header string }{
		{"none", ""},
		{"wrong token", "Bearer nope"},
		{"prefix of a token", "Bearer " + tokenA[:10]},
		{"basic", "Basic " + tokenA},
		{"bare token", tokenA},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, path := range []string{"/Users", "/ServiceProviderConfig"} {
				req, _ := http.NewRequest("GET", e.srv.URL+"/scim/v2"+path, nil)
				if tc.header != "" {
					req.Header.Set("Authorization", tc.header)
				}
				res, err := e.srv.Client().Do(req)
				if err != nil {
					t.Fatal(err)
				}
				res.Body.Close()
				if res.StatusCode != http.StatusUnauthorized || !strings.HasPrefix(res.Header.Get("WWW-Authenticate"), "Bearer") {
					t.Errorf("%s: status %d, WWW-Authenticate %q", path, res.StatusCode, res.Header.Get("WWW-Authenticate"))
				}
			}
		})
	}
	wantError(t, e.do("", "GET", "/Users", ""), http.StatusUnauthorized, "")
	// The scheme is case-insensitive.
	req, _ := http.NewRequest("GET", e.srv.URL+"/scim/v2/Users", nil)
	req.Header.Set("Authorization", "bearer "+tokenA)
	res, err := e.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusOK {
		t.Errorf("lower-case bearer: %d", res.StatusCode)
	}
}

func TestNewRefusesBadConfig(t *testing.T) {
	e := newEnv(t)
	for name, idps := range map[string][]IdPConfig{
		"no token":       {{ID: "a"}},
		"shared token":   {{ID: "a", Token: "t"}, {ID: "b", Token: "t"}},
		"duplicate id":   {{ID: "a", Token: "t"}, {ID: "a", Token: "u"}},
		"unknown attr":   {{ID: "a", Token: "t", SubjectAttr: "mail"}},
		"empty idp name": {{Token: "t"}},
	} {
		if _, err := New(Config{IdPs: idps, Store: e.db, Hooks: e.hooks}); err == nil {
			t.Errorf("%s: New accepted %+v", name, idps)
		}
	}
	if _, err := New(Config{Store: e.db}); err == nil {
		t.Error("New accepted nil hooks")
	}
}

func TestFilterBounds(t *testing.T) {
	deep := strings.Repeat("(", 5000) + `userName eq "a"` + strings.Repeat(")", 5000)
	long := `userName eq "` + strings.Repeat("a", 5000) + `"`
	for _, f := range []string{deep, long} {
		err := checkFilterSize(f)
		var ae *apiError
		if !errors.As(err, &ae) {
			t.Fatalf("filter of %d bytes: %v, want an invalidFilter error", len(f), err)
		}
	}
	if err := checkFilterSize(`userName eq "alice" and (externalId eq "x")`); err != nil {
		t.Fatal(err)
	}
}

// What the store refuses as invalid is the IdP's mistake (400), what it
// cannot reach is temporary (503 with Retry-After).
func TestStoreErrMapping(t *testing.T) {
	for _, tc := range []struct {
		err      error
		status   int
		scimType string
		retry    bool
	}{
		{fmt.Errorf("sqlite: put: %w", store.ErrInvalid), 400, "invalidValue", false},
		{fmt.Errorf("postgres: put: %w", store.ErrUnavailable), 503, "", true},
		{fmt.Errorf("put: %w", store.ErrConflict), 409, "uniqueness", false},
		{fmt.Errorf("get: %w", store.ErrNotFound), 404, "", false},
	} {
		e := storeErr(tc.err, "User", "u1")
		if e.doc.Status != tc.status || string(e.doc.ScimType) != tc.scimType || e.retry != tc.retry || !errors.Is(e.cause, tc.err) {
			t.Errorf("storeErr(%v) = %d %q retry %v", tc.err, e.doc.Status, e.doc.ScimType, e.retry)
		}
	}
}
