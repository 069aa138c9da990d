package scim

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/usherhq/usher/store"
	"github.com/usherhq/usher/store/postgres"
	"github.com/usherhq/usher/store/postgres/pgtest"
)

// userWith is a valid Okta-shaped create whose attribute at key holds the
// raw JSON value v (already quoted), with a userName and externalId of
// its own.
func userWith(n int, key, v string) string {
	doc := map[string]string{
		"userName":    fmt.Sprintf(`"text%d@okta.local"`, n),
		"externalId":  fmt.Sprintf(`"00text%d"`, n),
		"displayName": `"Text User"`,
		"name":        `{"givenName": "Text", "familyName": "User"}`,
		"emails":      fmt.Sprintf(`[{"primary": true, "value": "text%d@okta.local", "type": "work"}]`, n),
	}
	switch key {
	case "name.givenName":
		doc["name"] = `{"givenName": ` + v + `, "familyName": "User"}`
	case "emails":
		doc["emails"] = `[{"primary": true, "value": ` + v + `, "type": "work"}]`
	case "department":
		doc[enterpriseURN] = `{"department": ` + v + `}`
	case "addresses":
		doc["addresses"] = `[{"type": "work", "formatted": ` + v + `}]`
	default:
		doc[key] = v
	}
	var b strings.Builder
	b.WriteString(`{"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"]`)
	for k, v := range doc {
		fmt.Fprintf(&b, ", %q: %s", k, v)
	}
	b.WriteString("}")
	return b.String()
}

// textCases are values usher must refuse in a mapped attribute, as JSON.
var textCases = []struct{ name, json, detail string }{
	{"NUL", `"a\u0000b"`, "U+0000"},
	{"LF", `"alice\nmallory"`, "U+000A"},
	{"CR", `"alice\rx"`, "U+000D"},
	{"TAB", `"alice\tx"`, "U+0009"},
	{"ESC", `"alice\u001b[31m"`, "U+001B"},
	{"DEL", `"alice\u007f"`, "U+007F"},
	{"C1 NEL", `"alice\u0085"`, "U+0085"},
	{"line separator", `"alice\u2028x"`, "U+2028"},
	{"invalid UTF-8 byte", "\"alice\xffx\"", "UTF-8"},
	{"lone surrogate", `"alice\ud800x"`, "UTF-8"},
	{"too long", `"` + strings.Repeat("a", maxText+1) + `"`, "characters long"},
}

func TestTextAtTheDoor(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	n := 0
	for _, key := range []string{"userName", "externalId", "displayName", "name.givenName", "emails", "department", "title"} {
		for _, tc := range textCases {
			n++
			t.Run(key+"/"+tc.name, func(t *testing.T) {
				r := e.do(tokenB, "POST", "/Users", userWith(n, key, tc.json))
				wantError(t, r, http.StatusBadRequest, "invalidValue")
				detail, _ := r.body["detail"].(string)
				if !strings.Contains(detail, tc.detail) || !strings.Contains(detail, strings.TrimPrefix(key, "name.")) {
					t.Errorf("detail %q does not name %s and %q", detail, key, tc.detail)
				}
			})
		}
	}
	if calls := e.hooks.take(""); len(calls) != 0 {
		t.Errorf("refused pushes reached the hooks: %+v", calls)
	}
	wantField(t, e.must(http.StatusOK, tokenB, "GET", "/Users", "").body, "totalResults", 0.0)

	// At the bound, in characters, not bytes: accepted. Free text keeps
	// its line breaks (addresses[].formatted has them by definition) but
	// not a NUL.
	e.must(http.StatusCreated, tokenB, "POST", "/Users", userWith(1000, "userName", `"`+strings.Repeat("é", maxText)+`"`))
	e.must(http.StatusCreated, tokenB, "POST", "/Users", userWith(1001, "addresses", `"100 Universal City Plaza\nHollywood, CA 91608 USA"`))
	r := e.do(tokenB, "POST", "/Users", userWith(1002, "addresses", `"a\u0000b"`))
	wantError(t, r, http.StatusBadRequest, "invalidValue")
	if d, _ := r.body["detail"].(string); !strings.Contains(d, "addresses[0].formatted") {
		t.Errorf("detail %q does not name addresses[0].formatted", d)
	}

	// The same rules hold for PUT and PATCH, for groups, and for ids.
	id := e.must(http.StatusCreated, tokenB, "POST", "/Users", oktaCreateUser).body["id"].(string)
	gid := e.must(http.StatusCreated, tokenB, "POST", "/Groups", oktaCreateGroup).body["id"].(string)
	patch := func(ops string) string {
		return `{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[` + ops + `]}`
	}
	for _, tc := range []struct{ name, method, path, body, detail string }{
		{"PUT userName", "PUT", "/Users/" + id, strings.Replace(fmt.Sprintf(oktaPutUser, id), `"userName": "test.user@okta.local"`, `"userName": "test.user@okta.local\r\nX-Remote-User: admin"`, 1), "userName"},
		{"PATCH userName", "PATCH", "/Users/" + id, patch(`{"op":"replace","path":"userName","value":"a\u0000"}`), "userName"},
		{"PATCH no-path displayName", "PATCH", "/Users/" + id, patch(`{"op":"replace","value":{"displayName":"x\u001b"}}`), "displayName"},
		{"PATCH email by filter", "PATCH", "/Users/" + id, patch(`{"op":"replace","path":"emails[type eq \"work\"].value","value":"a\nb@x"}`), "emails[0].value"},
		{"PATCH enterprise", "PATCH", "/Users/" + id, patch(`{"op":"add","path":"` + enterpriseURN + `:employeeNumber","value":"7\u0000"}`), "employeeNumber"},
		{"group displayName", "POST", "/Groups", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:Group"],"displayName":"jira-users\njira-administrators"}`, "displayName"},
		{"group externalId", "POST", "/Groups", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:Group"],"displayName":"g","externalId":"x\u0000"}`, "externalId"},
		{"group rename", "PATCH", "/Groups/" + gid, patch(`{"op":"replace","path":"displayName","value":"x\u007f"}`), "displayName"},
		{"member value", "PATCH", "/Groups/" + gid, patch(`{"op":"add","path":"members","value":[{"value":"a\u0000b"}]}`), "members[0].value"},
		{"user id in URL", "GET", "/Users/" + url.PathEscape("a\x00b"), "", "id in the URL"},
		{"group id in URL", "DELETE", "/Groups/" + url.PathEscape("a\nb"), "", "id in the URL"},
		{"long id in URL", "PATCH", "/Users/" + strings.Repeat("a", maxText+1), patch(`{"op":"replace","path":"active","value":false}`), "id in the URL"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := e.do(tokenB, tc.method, tc.path, tc.body)
			wantError(t, r, http.StatusBadRequest, "invalidValue")
			if d, _ := r.body["detail"].(string); !strings.Contains(d, tc.detail) {
				t.Errorf("detail %q does not name %q", d, tc.detail)
			}
		})
	}
	wantField(t, e.must(http.StatusOK, tokenB, "GET", "/Users/"+id, "").body, "meta.version", `W/"1"`)
	wantField(t, e.must(http.StatusOK, tokenB, "GET", "/Groups/"+gid, "").body, "meta.version", `W/"1"`)

	// A filter on a value no resource can hold finds none; it is not an
	// error, and the IdP's create that follows says what is wrong. Raw
	// control characters do not even parse.
	q := "/Users?filter=" + url.QueryEscape(`userName eq "a\u0000b" or externalId eq "x\ny"`)
	wantField(t, e.must(http.StatusOK, tokenB, "GET", q, "").body, "totalResults", 0.0)
	wantError(t, e.do(tokenB, "GET", "/Users?filter="+url.QueryEscape("userName eq \"a\x00b\""), ""), http.StatusBadRequest, "invalidFilter")
}

// On PostgreSQL a NUL used to reach a text column: the database refused
// it, usher called that temporary and answered 503 with Retry-After, and
// the IdP retried forever. Now it is a 400 before the store is asked.
func TestNULIsNotAnOutageOnPostgres(t *testing.T) {
	t.Parallel()
	db, err := postgres.Open(context.Background(), pgtest.DSN(t), postgres.Options{})
	if err != nil {
		t.Fatal(err)
	}
	e := newEnvOn(t, db)
	id := e.must(http.StatusCreated, tokenA, "POST", "/Users", entraCreateUser).body["id"].(string)
	gid := e.must(http.StatusCreated, tokenA, "POST", "/Groups", entraCreateGroup).body["id"].(string)
	nul := strings.Replace(entraCreateUser, `"userName": "Test_User_`, `"userName": "Test\u0000User_`, 1)
	nul = strings.Replace(nul, "0a21f0f2", "nul", 1)
	for _, tc := range []struct{ name, method, path, body string }{
		{"create", "POST", "/Users", nul},
		{"externalId", "POST", "/Users", strings.Replace(entraCreateUser, `"externalId": "0a21f0f2`, `"externalId": "\u00000a21f0f2`, 1)},
		{"replace", "PUT", "/Users/" + id, nul},
		{"id", "GET", "/Users/" + url.PathEscape("x\x00"), ""},
		{"member", "PATCH", "/Groups/" + gid, fmt.Sprintf(entraAddMembers, `a\u0000b`)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := e.do(tokenA, tc.method, tc.path, tc.body)
			wantError(t, r, http.StatusBadRequest, "invalidValue")
			if r.header.Get("Retry-After") != "" {
				t.Errorf("Retry-After on a refusal: the IdP would retry it forever")
			}
		})
	}
	q := "/Users?filter=" + url.QueryEscape(`userName eq "Test\u0000User" or externalId eq "a\u0000"`)
	wantField(t, e.must(http.StatusOK, tokenA, "GET", q, "").body, "totalResults", 0.0)
}

// A push that deactivates somebody still takes their access away when
// usher refuses it for the text of another attribute: the refusal goes
// to the IdP, the deactivation to the apps.
func TestRefusedPushStillDeactivates(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	id := e.must(http.StatusCreated, tokenB, "POST", "/Users", oktaCreateUser).body["id"].(string)
	e.hooks.take("")

	// Okta's PUT with active false and a tab in a name.
	put := strings.NewReplacer(`"active": true`, `"active": false`, `"givenName": "Another"`, `"givenName": "Another\t"`).Replace(fmt.Sprintf(oktaPutUser, id))
	wantError(t, e.do(tokenB, "PUT", "/Users/"+id, put), http.StatusBadRequest, "invalidValue")
	if d := e.hooks.take("deprovision"); len(d) != 1 || d[0].subject != "00ujl29u0le5T6Aj10h7" || d[0].reason != ReasonDeactivated {
		t.Fatalf("deprovision = %+v", d)
	}
	// An update that leaves the person active deprovisions nobody.
	wantError(t, e.do(tokenB, "PUT", "/Users/"+id, strings.Replace(fmt.Sprintf(oktaPutUser, id), `"givenName": "Another"`, `"givenName": "Another\t"`, 1)), http.StatusBadRequest, "invalidValue")
	if d := e.hooks.take(""); len(d) != 0 {
		t.Fatalf("hooks on a refused update: %+v", d)
	}

	// A record stored before these checks, with a line break in its
	// display name: Entra's disable is refused for it, and applies.
	legacy := store.SCIMUser{IdP: "entra", ID: "legacy-1", UserName: "legacy@contoso.com", Subject: "legacy-subject", Active: true,
		Resource: []byte(`{"userName":"legacy@contoso.com","displayName":"Legacy\nUser","active":true}`), Created: testNow, Updated: testNow}
	if err := e.db.PutSCIMUser(t.Context(), legacy); err != nil {
		t.Fatal(err)
	}
	wantError(t, e.do(tokenA, "PATCH", "/Users/legacy-1", entraDisable), http.StatusBadRequest, "invalidValue")
	if d := e.hooks.take("deprovision"); len(d) != 1 || d[0].subject != "legacy-subject" {
		t.Fatalf("deprovision of the legacy record = %+v", d)
	}
	// The IdP's fix goes through, and the disable with it.
	e.must(http.StatusOK, tokenA, "PATCH", "/Users/legacy-1", `{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
		"Operations":[{"op":"Replace","path":"displayName","value":"Legacy User"},{"op":"Replace","path":"active","value":false}]}`)
	if d := e.hooks.take("deprovision"); len(d) != 1 {
		t.Errorf("deprovision once the record is stored = %+v (idempotent, so again)", d)
	}

	// Created inactive with a bad title: the person may have app accounts
	// from their logins, so the deactivation applies.
	created := strings.NewReplacer(`"active": true`, `"active": false, "title": "x\u001b"`, "test.user", "other.user", "00ujl29u0le5T6Aj10h7", "00other").Replace(oktaCreateUser)
	wantError(t, e.do(tokenB, "POST", "/Users", created), http.StatusBadRequest, "invalidValue")
	if d := e.hooks.take("deprovision"); len(d) != 1 || d[0].subject != "00other" {
		t.Fatalf("deprovision on a refused inactive create = %+v", d)
	}
}
