package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/usherhq/usher/config"
	"github.com/usherhq/usher/jit"
	"github.com/usherhq/usher/providers"
	"github.com/usherhq/usher/scim"
)

// scimDo sends one SCIM request with an IdP's bearer token.
func (e *env) scimDo(method, path, token, body string) (int, string) {
	e.t.Helper()
	req, err := http.NewRequest(method, e.url+"/scim/v2"+path, strings.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/scim+json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func scimID(t *testing.T, body string) string {
	t.Helper()
	i := strings.Index(body, `"id":"`)
	if i < 0 {
		t.Fatalf("no id in %s", body)
	}
	rest := body[i+6:]
	return rest[:strings.IndexByte(rest, '"')]
}

func TestSCIMProvisionsAndDeprovisions(t *testing.T) {
	t.Parallel()
	e := startEnvWith(t, envOptions{Apps: true, Mapping: jitMapping, SCIM: true})

	// Entra creates a person before their first login (its documented
	// POST shape); with automatic provisioning the apps follow at once.
	code, body := e.scimDo("POST", "/Users", "scim-acme", `{
		"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User","urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"],
		"externalId": "00u-bobby",
		"userName": "bobby@acme.test",
		"active": true,
		"displayName": "Bobby Tables",
		"emails": [{"primary": true, "type": "work", "value": "bobby@acme.test"}],
		"name": {"formatted": "Bobby Tables", "familyName": "Tables", "givenName": "Bobby"},
		"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {"department": "Finance"}
	}`)
	if code != http.StatusCreated {
		t.Fatalf("SCIM create: %d %s", code, body)
	}
	bobby := scimID(t, body)
	for app, s := range e.apps {
		if u, ok := s.User("bobby@acme.test"); !ok || !u.Active || u.DisplayName != "Bobby Tables" {
			t.Fatalf("%s after SCIM create: %+v %v", app, u, ok)
		}
	}

	// Another IdP's token sees nothing of acme's people.
	if code, body := e.scimDo("GET", "/Users/"+bobby, "scim-globex", ""); code != http.StatusNotFound {
		t.Fatalf("globex read acme's user: %d %s", code, body)
	}

	// alice logs in through OIDC; the IdP also knows her over SCIM.
	c := e.browser()
	wantStatus(t, e.login(c, "/jira/", "acme", "alice", "pw-alice"), http.StatusOK)
	code, body = e.scimDo("POST", "/Users", "scim-acme", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],
		"externalId":"00u-alice","userName":"alice","active":true,"emails":[{"primary":true,"value":"alice@acme.test"}],
		"displayName":"Alice Archer"}`)
	if code != http.StatusCreated {
		t.Fatalf("SCIM create alice: %d %s", code, body)
	}
	alice := scimID(t, body)

	// Entra deactivates with the string "False": alice is deactivated in
	// every app and her existing session cookie stops working at once.
	code, body = e.scimDo("PATCH", "/Users/"+alice, "scim-acme", `{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
		"Operations":[{"op":"Replace","path":"active","value":"False"}]}`)
	if code != http.StatusOK {
		t.Fatalf("SCIM deactivate: %d %s", code, body)
	}
	for app, s := range e.apps {
		if u, _ := s.User("alice"); u.Active && app != "bitbucket" {
			t.Errorf("%s: alice still active after SCIM deactivation", app)
		}
	}
	if g := groupsOf(t, e.apps["bitbucket"], "alice"); strings.Contains(strings.Join(g, ","), "stash-users") {
		t.Errorf("bitbucket: alice keeps her licence group: %q", g)
	}
	resp := e.get(c, e.url+"/jira/")
	wantStatus(t, resp, http.StatusFound)

	// A new login does not bring her back while the IdP says she is gone.
	c2 := e.browser()
	resp = e.get(c2, e.url+"/usher/login?idp=acme&rd=/jira/")
	cb, err := e.idps["acme"].Login(c2, resp.Header.Get("Location"), "alice", "pw-alice")
	if err != nil {
		t.Fatal(err)
	}
	resp = e.get(c2, cb)
	wantStatus(t, resp, http.StatusForbidden)
	if body := bodyOf(resp); !strings.Contains(body, "Access removed") {
		t.Fatalf("login of a deprovisioned person: %s", body)
	}
	if u, _ := e.apps["jira"].User("alice"); u.Active {
		t.Fatal("a login reactivated a deprovisioned person")
	}

	// Okta deletes bobby: deactivated everywhere.
	if code, body := e.scimDo("DELETE", "/Users/"+bobby, "scim-acme", ""); code != http.StatusNoContent {
		t.Fatalf("SCIM delete: %d %s", code, body)
	}
	if u, _ := e.apps["jira"].User("bobby@acme.test"); u.Active {
		t.Fatal("bobby still active after SCIM delete")
	}

	// Okta reactivates alice (boolean form): she is reinstated.
	code, body = e.scimDo("PATCH", "/Users/"+alice, "scim-acme", `{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
		"Operations":[{"op":"replace","value":{"active":true}}]}`)
	if code != http.StatusOK {
		t.Fatalf("SCIM reactivate: %d %s", code, body)
	}
	if u, _ := e.apps["jira"].User("alice"); !u.Active {
		t.Fatal("alice not reactivated after SCIM active=true")
	}
}

// Without automatic, pushes create nobody, but a deactivation applies
// and "active" again undoes it; it does not undo an admin's removal.
func TestSCIMActiveAgainWithoutAutomatic(t *testing.T) {
	t.Parallel()
	e := startEnvWith(t, envOptions{Apps: true, Mapping: jitMapping, SCIM: true, SCIMNotAutomatic: true})
	patch := func(id string, active bool) {
		t.Helper()
		code, body := e.scimDo("PATCH", "/Users/"+id, "scim-acme", fmt.Sprintf(`{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
			"Operations":[{"op":"replace","path":"active","value":%t}]}`, active))
		if code != http.StatusOK {
			t.Fatalf("SCIM active=%t: %d %s", active, code, body)
		}
	}
	create := func(ext, userName string) string {
		t.Helper()
		code, body := e.scimDo("POST", "/Users", "scim-acme", fmt.Sprintf(`{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],
			"externalId":%q,"userName":%q,"active":true,"emails":[{"primary":true,"value":"%s@acme.test"}],"displayName":"x"}`, ext, userName, userName))
		if code != http.StatusCreated {
			t.Fatalf("SCIM create %s: %d %s", userName, code, body)
		}
		return scimID(t, body)
	}
	bobby := create("00u-bobby", "bobby")
	if _, ok := e.apps["jira"].User("bobby"); ok {
		t.Fatal("a push without automatic created an account")
	}

	wantStatus(t, e.login(e.browser(), "/jira/", "acme", "alice", "pw-alice"), http.StatusOK)
	alice := create("00u-alice", "alice")
	patch(alice, false)
	if u, _ := e.apps["jira"].User("alice"); u.Active {
		t.Fatal("alice still active after a deactivation without automatic")
	}
	patch(alice, true)
	if u, _ := e.apps["jira"].User("alice"); !u.Active {
		t.Fatal("alice not reactivated by active=true without automatic")
	}
	patch(bobby, false) // never signed in: nothing to remove, nothing to undo
	patch(bobby, true)

	// An admin's removal stands whatever SCIM says.
	if _, err := e.m.gen.Load().lifecycle.Remove(t.Context(), jit.Removal{IdP: "acme", Subject: "00u-alice"}, jit.ByAdmin("ada", "left")); err != nil {
		t.Fatal(err)
	}
	patch(alice, false)
	patch(alice, true)
	if u, _ := e.apps["jira"].User("alice"); u.Active {
		t.Fatal("SCIM active=true undid an admin's removal")
	}
}

// A pushed person feeds every IdP type's default mapping: the OIDC
// claims, and for SAML the NameID (userName) and displayName, which falls
// back to the name parts when the IdP pushes no displayName.
func TestSCIMClaimsFeedDefaultMappings(t *testing.T) {
	t.Parallel()
	// What the scim package hands over for Okta's create without
	// displayName: DisplayName is its fallback from the name parts.
	u := scim.User{
		IdP: "x", ID: "id1", Subject: "00u-erin", UserName: "erin@acme.test",
		DisplayName: "Erin Example", GivenName: "Erin", FamilyName: "Example", Email: "erin@acme.test", Active: true,
		Claims: map[string][]string{
			"userName": {"erin@acme.test"}, "name.givenName": {"Erin"}, "name.familyName": {"Example"},
			"emails": {"erin@acme.test"}, "emails.work": {"erin@acme.test"}, "externalId": {"00u-erin"},
		},
	}
	for typ, newConfig := range providerTypes {
		t.Run(typ, func(t *testing.T) {
			m, err := jit.Compile(config.Mapping{}, jit.Scope{IdP: "x", Claims: newConfig().ClaimDefaults(), Apps: []string{"jira"}})
			if err != nil {
				t.Fatal(err)
			}
			p, err := m.Map(providers.Identity{IdP: "x", Subject: u.Subject, Claims: scimClaims(u)})
			if err != nil {
				t.Fatalf("the default %s mapping refuses a pushed person: %v", typ, err)
			}
			if p.Username != "erin@acme.test" || p.DisplayName != "Erin Example" || p.Email != "erin@acme.test" {
				t.Errorf("profile = username %q, display name %q, e-mail %q", p.Username, p.DisplayName, p.Email)
			}
		})
	}
	// What the IdP sent wins over a fallback.
	u.Claims["displayName"] = []string{"Erin E."}
	if got := scimClaims(u)["displayName"]; len(got) != 1 || got[0] != "Erin E." {
		t.Errorf("displayName = %q", got)
	}
}

// People pushed without displayName get one from their name parts in
// every app. One pushed without an e-mail address is stored (the IdP
// sees 201: the SCIM record is the IdP's truth, and its deactivation
// must find it later), while the apps refuse the account: that failure
// is audited and shows on the person's admin timeline.
func TestSCIMPushWithoutDisplayNameOrEmail(t *testing.T) {
	t.Parallel()
	e := startEnvWith(t, envOptions{Apps: true, Mapping: jitMapping, SCIM: true})
	code, body := e.scimDo("POST", "/Users", "scim-acme", `{
		"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
		"externalId": "00u-erin", "userName": "erin", "active": true,
		"name": {"givenName": "Erin", "familyName": "Example"},
		"emails": [{"primary": true, "type": "work", "value": "erin@acme.test"}]
	}`)
	if code != http.StatusCreated {
		t.Fatalf("SCIM create: %d %s", code, body)
	}
	for app, s := range e.apps {
		if u, ok := s.User("erin"); !ok || u.DisplayName != "Erin Example" {
			t.Errorf("%s: erin = %+v, %v; want display name from the name parts", app, u, ok)
		}
	}

	code, body = e.scimDo("POST", "/Users", "scim-acme", `{
		"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
		"externalId": "00u-frank", "userName": "frank", "active": true, "displayName": "Frank"
	}`)
	if code != http.StatusCreated {
		t.Fatalf("SCIM create without e-mail: %d %s", code, body)
	}
	frank := scimID(t, body)
	if code, _ := e.scimDo("GET", "/Users/"+frank, "scim-acme", ""); code != http.StatusOK {
		t.Fatalf("frank not stored: %d", code)
	}
	if _, ok := e.apps["jira"].User("frank"); ok {
		t.Fatal("jira created an account without an e-mail address")
	}
	resp, body := e.adminCall("GET", "/admin/api/users/acme/00u-frank", "admin-token")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("admin timeline of frank: %d %s", resp.StatusCode, body)
	}
	var tl struct {
		Events []struct{ Action, Outcome, Detail, Actor string }
	}
	if err := json.Unmarshal([]byte(body), &tl); err != nil {
		t.Fatal(err)
	}
	found := false
	for _, ev := range tl.Events {
		if ev.Action == "scim.refused" && ev.Outcome == "error" && ev.Actor == "scim" && strings.Contains(ev.Detail, "jira") {
			found = true
		}
	}
	if !found {
		t.Errorf("no scim.refused error naming jira on frank's timeline: %s", body)
	}
	// The admin page shows the same.
	resp, page := e.adminCall("GET", "/admin/users/acme/00u-frank", "admin-token")
	if resp.StatusCode != http.StatusOK || !strings.Contains(page, "scim.refused") {
		t.Errorf("admin user page (%d) lacks the refusal", resp.StatusCode)
	}
}

// usher check takes what the SCIM server takes as scim.subject, and
// refuses the rest at the setting's line.
func TestCheckSCIMSubject(t *testing.T) {
	t.Parallel()
	idp := func(subject string) string {
		return docsPrelude + `idps:
  - id: entra
    type: oidc
    config: {issuer: https://login.example.com, client_id: c, client_secret: {value: s}, subject_claim: oid}
    scim:
      token: {value: t0123456789}
      subject: ` + subject + "\n"
	}
	for _, ok := range []string{"externalId", "userName", "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department",
		"urn:ietf:params:scim:schemas:extension:usher:2.0:User:objectId"} {
		if code, stdout, stderr := runCLI(t, "check", "--config", writeConfig(t, idp(ok))); code != 0 {
			t.Errorf("check refuses scim.subject %s: %s%s", ok, stdout, stderr)
		}
	}
	for _, bad := range []string{"mail", "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager", "urn:x:y:object.id"} {
		code, _, stderr := runCLI(t, "check", "--config", writeConfig(t, idp(bad)))
		if code == 0 || !strings.Contains(stderr, "idps[0].scim.subject") {
			t.Errorf("check accepts scim.subject %s (exit %d): %s", bad, code, stderr)
		}
	}
}
