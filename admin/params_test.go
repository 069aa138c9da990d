package admin

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// A caller's mistake is a 4xx that says what is wrong, on the pages and
// in the API alike, and reaches no action: never a 5xx, never a 502 as
// if an app had failed.
func TestCallerMistakesRefused(t *testing.T) {
	long := strings.Repeat("s", maxField+1)
	link := func(idp, subject, username string) url.Values {
		return url.Values{"idp": {idp}, "subject": {subject}, "username": {username}}
	}
	tests := []struct {
		name   string
		method string
		path   string // under /admin/api; the page twin is the same path under /admin
		form   url.Values
		status int
		msg    string
		// calls are the actions the request may reach (a refusal after
		// the action said no); nil: none.
		calls []string
	}{
		{"sync of a NUL subject", "POST", "/users/okta/a%00b/sync", nil, 400, "the subject in the URL holds a control character", nil},
		{"sync of invalid UTF-8", "POST", "/users/okta/a%FFb/sync", nil, 400, "the subject in the URL is not valid UTF-8", nil},
		{"sync of an over-long subject", "POST", "/users/okta/" + long + "/sync", nil, 400, "bytes long; at most 512", nil},
		{"sync of a NUL IdP", "POST", "/users/ok%00ta/sub-alice/sync", nil, 400, "the IdP in the URL holds a control character", nil},
		{"reinstate of a NUL subject", "POST", "/users/okta/a%00b/reinstate", nil, 400, "the subject in the URL", nil},
		{"directory sync of a NUL subject", "POST", "/users/okta/a%00b/directory-sync", nil, 400, "the subject in the URL", nil},
		{"directory sync of an IdP without one", "POST", "/users/corp/x/directory-sync", nil, 404, "has no directory", nil},
		{"release of a NUL subject", "POST", "/holds/okta/a%00b/release", nil, 400, "the subject in the URL", nil},
		{"drop of an over-long subject", "POST", "/holds/okta/" + long + "/drop", nil, 400, "at most 512", nil},
		{"release of nobody held", "POST", "/holds/okta/nobody/release", nil, 404, "not found", []string{"release okta nobody admin:token"}},
		{"release-all of an unknown IdP", "POST", "/holds/nope/release-all", nil, 404, "no IdP", nil},
		{"drop-all of an unknown IdP", "POST", "/holds/nope/drop-all", nil, 404, "no IdP", nil},
		{"link without a form", "POST", "/link", url.Values{}, 400, "idp is required", nil},
		{"link without a subject", "POST", "/link", link("okta", " ", "alice"), 400, "subject is required", nil},
		{"link of an unknown IdP", "POST", "/link", link("nope", "x", "alice"), 400, "no identity provider", nil},
		{"link of a NUL username", "POST", "/link", link("okta", "x", "al\x00ice"), 400, "username holds a control character", nil},
		{"link of invalid UTF-8", "POST", "/link", link("okta", "x\xff", "alice"), 400, "subject is not valid UTF-8", nil},
		{"link of an over-long username", "POST", "/link", link("okta", "x", long), 400, "username is 513 bytes long", nil},
		{"link to a taken username", "POST", "/link", link("okta", "x", "taken"), 409, "owns that username", []string{"link okta x taken admin:token"}},
		{"sweep of an unknown policy", "POST", "/sweeps/nope/run?dry_run=true", nil, 404, "No sweep policy", nil},
		{"sweep without dry_run", "POST", "/sweeps/nightly/run", nil, 400, "dry_run must be true or false", nil},
		{"sweep with dry_run=maybe", "POST", "/sweeps/nightly/run?dry_run=maybe", nil, 400, "not &#34;maybe&#34;|not \\\"maybe\\\"", nil},
		{"sync of an unknown directory", "POST", "/directories/nope/sync", nil, 404, "No directory", nil},
		{"dry run of an unknown directory", "POST", "/directories/nope/dry-run", nil, 404, "No directory", nil},
		{"user of a NUL subject", "GET", "/users/okta/a%00b", nil, 400, "the subject in the URL", nil},
		{"search for a NUL", "GET", "/users?q=a%00b", nil, 400, "the search holds a control character", nil},
		{"audit of a NUL user", "GET", "/audit?user=a%00b", nil, 400, "user holds a control character", nil},
		{"holds with a limit in words", "GET", "/holds/okta?limit=ten", nil, 400, "limit: want a whole number of at least 1", nil},
		{"holds from a negative offset", "GET", "/holds/okta?offset=-1", nil, 400, "offset: want a whole number of at least 0", nil},
		{"holds of an unknown IdP", "GET", "/holds/nope", nil, 404, "no IdP", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			seed(t, e.store)
			cookie := e.loginCookie()
			tok := e.csrfFrom("/admin/", cookie)
			for _, api := range []bool{true, false} {
				path, hdr, form := "/admin"+tt.path, []string{"Cookie", cookie}, cloneForm(tt.form)
				if api {
					path, hdr = "/admin/api"+tt.path, bearer(adminToken)
				} else if tt.method == "POST" {
					if form == nil {
						form = url.Values{}
					}
					form.Set("csrf", tok)
				}
				r := e.do(tt.method, path, form, hdr...)
				if r.status != tt.status || !containsAny(r.body, tt.msg) {
					t.Errorf("%s %s: %d %s\nwant %d saying %q", tt.method, path, r.status, r.body, tt.status, tt.msg)
				}
				if api && !strings.Contains(r.header.Get("Content-Type"), "json") {
					t.Errorf("%s %s: Content-Type %q, want JSON", tt.method, path, r.header.Get("Content-Type"))
				}
			}
			var want []string
			for _, c := range tt.calls {
				want = append(want, c, c) // once for the API, once for the page
			}
			if got := e.actions.Calls(); strings.Join(got, "\n") != strings.Join(want, "\n") {
				t.Errorf("calls %q, want %q", got, want)
			}
		})
	}
}

// containsAny reports whether s holds one of the |-separated wants.
func containsAny(s, wants string) bool {
	for _, w := range strings.Split(wants, "|") {
		if strings.Contains(s, w) {
			return true
		}
	}
	return false
}

// A link the store cannot take is usher's failure, not a conflict the
// admin could resolve.
func TestLinkFailureIsNotAConflict(t *testing.T) {
	e := newEnv(t)
	r := e.do("POST", "/admin/api/link", url.Values{"idp": {"okta"}, "subject": {"x"}, "username": {"broken"}}, bearer(adminToken)...)
	if r.status != http.StatusInternalServerError || !strings.Contains(r.body, "database is locked") {
		t.Errorf("link with the store failing: %d %s, want 500 with the cause", r.status, r.body)
	}
}
