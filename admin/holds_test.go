package admin

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/usherhq/usher/store"
)

// seedHolds holds removals of okta's alice and bob (a brake of limit 0
// holds everything) and one of "gone", an IdP no longer configured.
func seedHolds(t *testing.T, st store.Store) {
	t.Helper()
	for i, h := range []struct{ idp, subject, username string }{
		{"okta", "sub-alice", "alice"}, {"okta", "00u-bob", "bob"}, {"gone", "x1", "xavier"},
	} {
		at := t0.Add(time.Duration(i-10) * time.Minute)
		_, err := st.Brake(context.Background(), store.BrakeCheck{IdP: h.idp, Subject: h.subject, At: at, Since: at.Add(-time.Hour),
			Hold: store.Hold{Username: h.username, Reason: "scim: deactivated", People: 40, Window: time.Hour, SessionsRevoked: h.idp == "okta"}})
		if err != nil {
			t.Fatal(err)
		}
	}
}

func TestHoldsPages(t *testing.T) {
	e := newEnv(t)
	seed(t, e.store)
	cookie := e.loginCookie()

	// Before anything is held: the overview says each IdP's adoption
	// policy and brake state.
	r := e.do("GET", "/admin/", nil, "Cookie", cookie)
	for _, want := range []string{"<td>okta", "verified_email", "armed", "holds removals past 25 or 10% of the people within 1h0m0s",
		"<td>entra", "never", "<td>corp", "always", "push, automatic", "Held removals<b>0</b>"} {
		if !strings.Contains(r.body, want) {
			t.Errorf("overview lacks %q", want)
		}
	}
	if strings.Count(r.body, ">off<") != 2 {
		t.Errorf("overview: want entra and corp off\n%s", r.body)
	}

	seedHolds(t, e.store)
	r = e.do("GET", "/admin/", nil, "Cookie", cookie)
	for _, want := range []string{`<a href="/admin/holds/okta">holding 2</a>`, `<a href="/admin/holds/gone">holding 1</a>`, "gone (no longer configured)", `Held removals<b class="err">3</b>`} {
		if !strings.Contains(r.body, want) {
			t.Errorf("overview with holds lacks %q", want)
		}
	}
	r = e.do("GET", "/admin/holds", nil, "Cookie", cookie)
	if r.status != http.StatusOK || !strings.Contains(r.body, "holding 2") || !strings.Contains(r.body, "<b>Drop</b> withdraws it") {
		t.Errorf("holds page: %d\n%s", r.status, r.body)
	}
	r = e.do("GET", "/admin/holds/okta", nil, "Cookie", cookie)
	for _, want := range []string{`href="/admin/users/okta/sub-alice">alice</a>`, "bob", "scim: deactivated",
		"0 removed and 1 held within 1h0m0s; limit 0 of 40 people", "revoked",
		`action="/admin/holds/okta/sub-alice/release"`, `action="/admin/holds/okta/00u-bob/drop"`, "Release all 2", "Drop all 2",
		"Showing 2 of 2"} {
		if !strings.Contains(r.body, want) {
			t.Errorf("okta's holds lack %q", want)
		}
	}
	if strings.Index(r.body, "sub-alice") > strings.Index(r.body, "00u-bob") {
		t.Error("holds not listed oldest first")
	}
	if r := e.do("GET", "/admin/holds/nope", nil, "Cookie", cookie); r.status != http.StatusNotFound {
		t.Errorf("holds of an unknown IdP: %d", r.status)
	}
	if r := e.do("GET", "/admin/holds/entra", nil, "Cookie", cookie); r.status != http.StatusOK || !strings.Contains(r.body, "Nothing is held") {
		t.Errorf("holds of entra: %d %s", r.status, r.body)
	}
	if got := e.actions.Calls(); len(got) != 0 {
		t.Errorf("GETs called %q", got)
	}

	// Release and drop from the page (with the page's CSRF token).
	tok := e.csrfFrom("/admin/holds/okta", cookie)
	r = e.do("POST", "/admin/holds/okta/sub-alice/release", url.Values{"csrf": {tok}}, "Cookie", cookie)
	if r.status != http.StatusOK || !strings.Contains(r.body, "Released: the removal of okta/sub-alice happened") {
		t.Errorf("release: %d %s", r.status, r.body)
	}
	r = e.do("POST", "/admin/holds/okta/00u-bob/drop", url.Values{"csrf": {tok}}, "Cookie", cookie)
	if r.status != http.StatusOK || !strings.Contains(r.body, "keeps their access") || !strings.Contains(r.body, "The IdP still says inactive") {
		t.Errorf("drop: %d %s", r.status, r.body)
	}
	r = e.do("POST", "/admin/holds/okta/nobody/release", url.Values{"csrf": {tok}}, "Cookie", cookie)
	if r.status != http.StatusNotFound {
		t.Errorf("release of nobody held: %d %s", r.status, r.body)
	}
	want := []string{"release okta sub-alice admin:token", "drop okta 00u-bob admin:token", "release okta nobody admin:token"}
	if got := e.actions.Calls(); !slices.Equal(got, want) {
		t.Errorf("calls %q, want %q", got, want)
	}
}

func TestHoldsAPI(t *testing.T) {
	e := newEnv(t)
	seed(t, e.store)
	seedHolds(t, e.store)
	auth := bearer(adminToken)

	r := e.do("GET", "/admin/api/holds", nil, auth...)
	var over struct {
		IdPs []struct {
			ID       string `json:"id"`
			Adoption string `json:"adoption"`
			State    string `json:"state"`
			Holds    int    `json:"holds"`
			Brake    *struct {
				MaxCount     int     `json:"max_count"`
				MaxShare     float64 `json:"max_share"`
				Window       string  `json:"window"`
				HeldSessions string  `json:"held_sessions"`
			} `json:"brake"`
		} `json:"idps"`
	}
	if err := json.Unmarshal([]byte(r.body), &over); err != nil || r.status != http.StatusOK || len(over.IdPs) != 4 {
		t.Fatalf("GET holds: %d %s (%v)", r.status, r.body, err)
	}
	okta := over.IdPs[0]
	if okta.ID != "okta" || okta.State != "holding 2" || okta.Holds != 2 || okta.Brake == nil || okta.Brake.MaxCount != 25 ||
		okta.Brake.MaxShare != 0.1 || okta.Brake.Window != "1h0m0s" || okta.Brake.HeldSessions != "revoke" {
		t.Errorf("okta = %+v", okta)
	}
	if e := over.IdPs[1]; e.ID != "entra" || e.State != "off" || e.Brake != nil || e.Adoption != "never" {
		t.Errorf("entra = %+v", e)
	}
	if g := over.IdPs[3]; g.ID != "gone" || g.Holds != 1 {
		t.Errorf("gone = %+v", g)
	}

	r = e.do("GET", "/admin/api/holds/okta?limit=1", nil, auth...)
	var page struct {
		Total int `json:"total"`
		Next  int `json:"next"`
		Holds []struct {
			Subject, Username, Reason, Window string
			Removed                           int  `json:"removed_in_window"`
			Held                              int  `json:"held_before"`
			People                            int  `json:"people"`
			Limit                             int  `json:"limit"`
			Revoked                           bool `json:"sessions_revoked"`
		} `json:"holds"`
	}
	if err := json.Unmarshal([]byte(r.body), &page); err != nil || page.Total != 2 || page.Next != 1 || len(page.Holds) != 1 {
		t.Fatalf("GET okta's holds: %d %s (%v)", r.status, r.body, err)
	}
	if h := page.Holds[0]; h.Subject != "sub-alice" || h.Username != "alice" || h.Reason != "scim: deactivated" || h.Window != "1h0m0s" ||
		h.Held != 0 || h.People != 40 || h.Limit != 0 || !h.Revoked {
		t.Errorf("hold = %+v", h)
	}

	r = e.do("POST", "/admin/api/holds/okta/sub-alice/release", nil, auth...)
	if r.status != http.StatusOK || !strings.Contains(r.body, `"status": "released"`) || !strings.Contains(r.body, "jira: deactivated") {
		t.Errorf("API release: %d %s", r.status, r.body)
	}
	r = e.do("POST", "/admin/api/holds/okta/00u-bob/drop", nil, auth...)
	if r.status != http.StatusOK || !strings.Contains(r.body, `"status": "dropped"`) || !strings.Contains(r.body, `"subject": "00u-bob"`) {
		t.Errorf("API drop: %d %s", r.status, r.body)
	}
	r = e.do("POST", "/admin/api/holds/okta/drop-all", nil, auth...)
	if r.status != http.StatusOK || !strings.Contains(r.body, `"dropped": 2`) {
		t.Errorf("API drop-all: %d %s", r.status, r.body)
	}
	r = e.do("POST", "/admin/api/holds/okta/release-all", nil, auth...)
	if r.status != http.StatusOK || !strings.Contains(r.body, `"released": 2`) {
		t.Errorf("API release-all: %d %s", r.status, r.body)
	}
	if r := e.do("POST", "/admin/api/holds/okta/nobody/drop", nil, auth...); r.status != http.StatusNotFound || !strings.Contains(r.body, "error") {
		t.Errorf("API drop of nobody held: %d %s", r.status, r.body)
	}
	want := []string{"release okta sub-alice admin:token", "drop okta 00u-bob admin:token", "drop-all okta admin:token", "release-all okta admin:token", "drop okta nobody admin:token"}
	if got := e.actions.Calls(); !slices.Equal(got, want) {
		t.Errorf("calls %q, want %q", got, want)
	}
}
