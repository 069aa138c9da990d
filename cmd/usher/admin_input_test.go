package main

import (
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// adminSend sends a request to the admin listener with the bearer token,
// form (when not nil) as its body, and returns the status and the body.
func (e *env) adminSend(t *testing.T, method, path string, form url.Values) (int, string) {
	t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequest(method, "http://"+e.m.AdminAddr()+path, body)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer admin-token")
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// A caller's mistake at the admin API of a real usher (its actions, the
// lifecycle and the store behind them) is a 4xx that says what is wrong,
// never a 5xx: the wiring maps the lifecycle's and the store's refusals
// as the admin package expects them.
func TestAdminAPIRefusesCallerMistakes(t *testing.T) {
	t.Parallel()
	x := startEntra(t)
	x.add("alice", "Alice Archer", "staff")
	e := startEnvWith(t, envOptions{Apps: true, Mapping: jitMapping, SCIM: true, SCIMBrake: "{max_count: 3}", Extra: x.config("0.5")})
	// alice, synced from the directory, owns the username alice.
	e.adminPost(t, "/admin/api/users/acme/00u-alice/directory-sync", http.StatusOK)
	link := func(idp, subject, username string) url.Values {
		return url.Values{"idp": {idp}, "subject": {subject}, "username": {username}}
	}
	tests := []struct {
		name   string
		path   string
		form   url.Values
		status int
		msg    string
	}{
		{"sync of an unknown subject", "/admin/api/users/acme/00u-nobody/sync", nil, 404, "not found"},
		{"sync of an unknown IdP", "/admin/api/users/nope/00u-alice/sync", nil, 404, "not found"},
		{"sync of a NUL subject", "/admin/api/users/acme/a%00b/sync", nil, 400, "control character"},
		{"sync of invalid UTF-8", "/admin/api/users/acme/a%FFb/sync", nil, 400, "not valid UTF-8"},
		{"reinstate of an unknown subject", "/admin/api/users/acme/00u-nobody/reinstate", nil, 404, "no identity is bound"},
		{"directory sync of someone not in it", "/admin/api/users/acme/00u-nobody/directory-sync", nil, 404, "does not know this person"},
		{"directory sync of a quote", "/admin/api/users/acme/a'b/directory-sync", nil, 404, "does not know this person"},
		{"directory sync of an IdP without one", "/admin/api/users/globex/x/directory-sync", nil, 404, "has no directory"},
		{"release of nobody held", "/admin/api/holds/acme/00u-nobody/release", nil, 404, "no removal of this person is held"},
		{"drop of nobody held", "/admin/api/holds/acme/00u-nobody/drop", nil, 404, "no removal of this person is held"},
		{"release of a NUL subject", "/admin/api/holds/acme/a%00b/release", nil, 400, "control character"},
		{"release-all of an unknown IdP", "/admin/api/holds/nope/release-all", nil, 404, "no IdP"},
		{"link of an unknown IdP", "/admin/api/link", link("nope", "x", "alice"), 400, "no identity provider"},
		{"link of invalid UTF-8", "/admin/api/link", link("acme", "x\xff", "alice"), 400, "not valid UTF-8"},
		{"link to a taken username", "/admin/api/link", link("acme", "00u-other", "alice"), 409, "acme/00u-alice owns that username"},
		{"sweep of an unknown policy", "/admin/api/sweeps/nope/run?dry_run=true", nil, 404, "No sweep policy"},
		{"dry run of an unknown directory", "/admin/api/directories/nope/dry-run", nil, 404, "No directory"},
	}
	for _, tt := range tests {
		code, body := e.adminSend(t, "POST", tt.path, tt.form)
		if code != tt.status || !strings.Contains(body, tt.msg) || !strings.Contains(body, `"error"`) {
			t.Errorf("%s: POST %s: %d %s\nwant %d with an error saying %q", tt.name, tt.path, code, body, tt.status, tt.msg)
		}
	}
}
