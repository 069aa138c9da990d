package scim

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
)

const customURN = "urn:ietf:params:scim:schemas:extension:usher:2.0:User"

// An Entra create whose mapping sends the object ID in a custom
// extension attribute (Entra's attribute list editor: "urn:ietf:params:
// scim:schemas:extension:<name>:2.0:User:<attribute>", string only).
const entraCreateCustom = `{
  "schemas": [
    "urn:ietf:params:scim:schemas:core:2.0:User",
    "urn:ietf:params:scim:schemas:extension:usher:2.0:User"],
  "externalId": "alice",
  "userName": "alice@contoso.com",
  "active": true,
  "emails": [{"primary": true, "type": "work", "value": "alice@contoso.com"}],
  "name": {"formatted": "Alice Archer", "familyName": "Archer", "givenName": "Alice"},
  "urn:ietf:params:scim:schemas:extension:usher:2.0:User": {"objectId": "8c1f4f5e-53a4-4b39-9e7c-2f0f0f6a1b10"}
}`

func TestParseSubjectAttr(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ in, want, err string }{
		{"", "externalId", ""},
		{"EXTERNALID", "externalId", ""},
		{"username", "userName", ""},
		{"id", "id", ""},
		{"urn:ietf:params:scim:schemas:core:2.0:User:userName", "userName", ""},
		{enterpriseURN + ":employeeNumber", enterpriseURN + ":employeeNumber", ""},
		{strings.ToLower(enterpriseURN) + ":COSTCENTER", enterpriseURN + ":costCenter", ""},
		{customURN + ":objectId", customURN + ":objectId", ""},
		{"urn:okta:app:2.0:User:oktaId", "urn:okta:app:2.0:User:oktaId", ""},
		{"mail", "", "not externalId, userName, id or an extension attribute"},
		{"emails.value", "", "not externalId"},
		{enterpriseURN + ":manager", "", "string attributes are employeeNumber"},
		{customURN + ":object.id", "", "not an attribute name"},
		{customURN + ":", "", "not an attribute name"},
		{"urn::x:objectId", "", "not a schema URN"},
		{"urn:ex ample:objectId", "", "not a schema URN"},
		{"urn:ietf:params:scim:schemas:core:2.0:Group:displayName", "", "not a user extension schema"},
		{"urn:ietf:params:scim:api:messages:2.0:PatchOp:op", "", "not a user extension schema"},
	} {
		got, err := ParseSubjectAttr(tc.in)
		switch {
		case tc.err == "" && (err != nil || got != tc.want):
			t.Errorf("ParseSubjectAttr(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("ParseSubjectAttr(%q) = %q, %v; want an error with %q", tc.in, got, err, tc.err)
		}
	}
}

// Entra's OIDC sub is pairwise; with subject_claim: oid the login
// subject is the object ID, which Entra provisioning sends wherever its
// mapping puts it: here a custom extension attribute. The pushed person
// binds to the same (idp, subject) as the login.
func TestSubjectFromCustomExtension(t *testing.T) {
	t.Parallel()
	const oid = "8c1f4f5e-53a4-4b39-9e7c-2f0f0f6a1b10"
	e := newEnv(t, IdPConfig{ID: "entra", Token: tokenA, SubjectAttr: customURN + ":objectId", Automatic: true})

	// The IdP can see what usher keeps: its /Schemas lists the schema.
	r := e.must(http.StatusOK, tokenA, "GET", "/Schemas", "")
	if !strings.Contains(r.raw, customURN) || !strings.Contains(r.raw, `"objectId"`) {
		t.Errorf("/Schemas lacks %s:objectId: %s", customURN, r.raw)
	}
	e.must(http.StatusOK, tokenA, "GET", "/Schemas/"+customURN, "")
	r = e.must(http.StatusOK, tokenA, "GET", "/ResourceTypes/User", "")
	if !strings.Contains(r.raw, customURN) {
		t.Errorf("the User resource type does not list %s: %s", customURN, r.raw)
	}

	r = e.must(http.StatusCreated, tokenA, "POST", "/Users", entraCreateCustom)
	id := r.body["id"].(string)
	if !slices.Contains(anyStrings(r.body["schemas"]), customURN) {
		t.Errorf("schemas = %v, want %s listed", r.body["schemas"], customURN)
	}
	ext, _ := r.body[customURN].(map[string]any)
	wantField(t, ext, "objectId", oid)
	u, err := e.db.SCIMUser(context.Background(), "entra", id)
	if err != nil || u.Subject != oid {
		t.Fatalf("subject = %q (%v), want the object ID", u.Subject, err)
	}
	p := e.hooks.take("provision")
	if len(p) != 1 || p[0].subject != oid {
		t.Fatalf("provision = %+v", p)
	}
	for k, want := range map[string]string{customURN + ":objectId": oid, "objectId": oid, "externalId": "alice"} {
		if got := p[0].user.Claims[k]; len(got) != 1 || got[0] != want {
			t.Errorf("claim %s = %q, want %q", k, got, want)
		}
	}

	// PATCH by path into the schema works; the subject stays (re-keying
	// would orphan the app account), and deactivation names it.
	e.must(http.StatusOK, tokenA, "PATCH", "/Users/"+id, `{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
		"Operations":[{"op":"Replace","path":"`+customURN+`:objectId","value":"other"}]}`)
	e.must(http.StatusOK, tokenA, "PATCH", "/Users/"+id, entraDisable)
	if d := e.hooks.take("deprovision"); len(d) != 1 || d[0].subject != oid {
		t.Errorf("deprovision = %+v, want subject %s", d, oid)
	}

	// The attribute by its full path at the top level is the same thing.
	flat := strings.NewReplacer(`"urn:ietf:params:scim:schemas:extension:usher:2.0:User": {"objectId": "8c1f4f5e-53a4-4b39-9e7c-2f0f0f6a1b10"}`,
		`"urn:ietf:params:scim:schemas:extension:usher:2.0:User:objectId": "b0b"`, "alice", "bob").Replace(entraCreateCustom)
	id2 := e.must(http.StatusCreated, tokenA, "POST", "/Users", flat).body["id"].(string)
	if u, _ := e.db.SCIMUser(context.Background(), "entra", id2); u.Subject != "b0b" {
		t.Errorf("full-path attribute: subject = %q", u.Subject)
	}

	// Without it the create says which attribute and which setting.
	missing := strings.NewReplacer(`,
  "urn:ietf:params:scim:schemas:extension:usher:2.0:User": {"objectId": "8c1f4f5e-53a4-4b39-9e7c-2f0f0f6a1b10"}`, "", "alice", "carol").Replace(entraCreateCustom)
	r = e.do(tokenA, "POST", "/Users", missing)
	wantError(t, r, http.StatusBadRequest, "invalidValue")
	if d, _ := r.body["detail"].(string); !strings.Contains(d, customURN+":objectId is required") || !strings.Contains(d, "scim.subject") {
		t.Errorf("detail = %q", d)
	}
	// Not a string: refused by the schema.
	wantError(t, e.do(tokenA, "POST", "/Users", strings.NewReplacer(`"objectId": "8c1f4f5e-53a4-4b39-9e7c-2f0f0f6a1b10"`, `"objectId": 7`, "alice", "dave").Replace(entraCreateCustom)),
		http.StatusBadRequest, "invalidValue")
}

// Under the default subject (externalId), a create without externalId
// is refused with a detail that names externalId and scim.subject.
func TestMissingExternalIDSaysWhy(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	body := strings.Replace(oktaCreateUser, `"externalId": "00ujl29u0le5T6Aj10h7",`, "", 1)
	r := e.do(tokenB, "POST", "/Users", body)
	wantError(t, r, http.StatusBadRequest, "invalidValue")
	d, _ := r.body["detail"].(string)
	for _, want := range []string{"externalId is required", "scim.subject", "okta", "login subject"} {
		if !strings.Contains(d, want) {
			t.Errorf("detail %q lacks %q", d, want)
		}
	}
}

// Data under an extension schema usher does not serve is dropped, by
// POST, PUT and PATCH alike, and the log names it; the answer is the
// resource as usher keeps it, without that schema.
func TestUnservedExtensionDropped(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	const foreign = "urn:ietf:params:scim:schemas:extension:CustomExtensionName:2.0:User"
	body := strings.Replace(oktaCreateUser, `"active": true`, `"active": true, "`+foreign+`": {"CustomAttribute": "701984"}`, 1)
	r := e.must(http.StatusCreated, tokenB, "POST", "/Users", body)
	id := r.body["id"].(string)
	if strings.Contains(r.raw, foreign) || strings.Contains(r.raw, "701984") {
		t.Errorf("unserved extension kept: %s", r.raw)
	}
	if !strings.Contains(e.logs.String(), foreign) {
		t.Errorf("the drop is not logged:\n%s", e.logs.String())
	}
	patch := func(ops string) string {
		return `{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[` + ops + `]}`
	}
	for _, b := range []string{
		patch(`{"op":"replace","path":"urn:example:ext:color","value":"red"}`),
		patch(`{"op":"add","path":"` + foreign + `:CustomAttribute","value":"701984"}`),
		patch(`{"op":"replace","value":{"` + foreign + `":{"CustomAttribute":"701984"},"displayName":"Renamed"}}`),
		fmt.Sprintf(strings.Replace(oktaPutUser, `"active": true`, `"active": true, "`+foreign+`": {"CustomAttribute": "701984"}`, 1), id),
	} {
		r = e.must(http.StatusOK, tokenB, e.methodOf(b), "/Users/"+id, b)
		if strings.Contains(r.raw, "701984") || strings.Contains(r.raw, "red") {
			t.Errorf("unserved extension kept: %s", r.raw)
		}
	}
	if got := strings.Count(e.logs.String(), "dropped attributes"); got != 5 {
		t.Errorf("%d drops logged, want 5:\n%s", got, e.logs.String())
	}
	r = e.must(http.StatusOK, tokenB, "GET", "/Users/"+id, "")
	if schemas := anyStrings(r.body["schemas"]); len(schemas) != 1 {
		t.Errorf("schemas = %v", schemas)
	}
	// A group body's extension data is dropped the same way.
	e.must(http.StatusCreated, tokenB, "POST", "/Groups", strings.Replace(oktaCreateGroup, `"members": []`, `"members": [], "urn:example:group:2.0:Group": {"color": "red"}`, 1))
	if !strings.Contains(e.logs.String(), "urn:example:group:2.0:Group") {
		t.Errorf("group drop not logged")
	}
}

// methodOf tells a PATCH body from a PUT one in a table.
func (e *env) methodOf(body string) string {
	if strings.Contains(body, "PatchOp") {
		return "PATCH"
	}
	return "PUT"
}

// Core attributes by their full path count as the short ones.
func TestCoreAttributesByFullPath(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	body := `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],
		"urn:ietf:params:scim:schemas:core:2.0:User:userName": "full@okta.local",
		"urn:ietf:params:scim:schemas:core:2.0:User:externalId": "00ufull",
		"urn:ietf:params:scim:schemas:core:2.0:User:displayName": "Full Path"}`
	r := e.must(http.StatusCreated, tokenB, "POST", "/Users", body)
	wantField(t, r.body, "userName", "full@okta.local")
	wantField(t, r.body, "externalId", "00ufull")
	wantField(t, r.body, "displayName", "Full Path")
	if strings.Contains(e.logs.String(), "dropped") {
		t.Errorf("core attributes logged as dropped:\n%s", e.logs.String())
	}
}
