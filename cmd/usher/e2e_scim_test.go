package main

import (
	"io"
	"net/http"
	"strings"
	"testing"
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
