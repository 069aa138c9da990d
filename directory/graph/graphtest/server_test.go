package graphtest_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/usherhq/usher/directory/graph/graphtest"
)

// recorder is a testing.TB that keeps the emulator's "not understood"
// failures instead of failing the test, for the tests that provoke them.
type recorder struct {
	testing.TB
	mu   sync.Mutex
	errs []string
}

func (r *recorder) Errorf(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.errs = append(r.errs, fmt.Sprintf(format, args...))
}

func (r *recorder) Helper() {}

type client struct {
	t     *testing.T
	srv   *graphtest.Server
	token string
}

func start(t *testing.T, tb testing.TB) (*client, *clockwork.FakeClock) {
	clock := clockwork.NewFakeClockAt(time.Date(2025, 3, 1, 9, 0, 0, 0, time.UTC))
	srv := graphtest.New(tb, clock).Start()
	t.Cleanup(srv.Close)
	srv.AddSecretApp("app", "s3cret")
	c := &client{t: t, srv: srv}
	status, body := c.post("/"+srv.Tenant+"/oauth2/v2.0/token", url.Values{
		"grant_type": {"client_credentials"}, "client_id": {"app"}, "client_secret": {"s3cret"},
		"scope": {srv.URL + "/.default"},
	})
	if status != 200 {
		t.Fatalf("token: %d %v", status, body)
	}
	c.token = body["access_token"].(string)
	return c, clock
}

func (c *client) post(path string, form url.Values) (int, map[string]any) {
	res, err := c.srv.Client().PostForm(c.srv.URL+path, form)
	if err != nil {
		c.t.Fatal(err)
	}
	defer res.Body.Close()
	var out map[string]any
	json.NewDecoder(res.Body).Decode(&out)
	return res.StatusCode, out
}

func (c *client) get(rawURL string, hdr ...string) (int, map[string]any, string) {
	c.t.Helper()
	if !strings.HasPrefix(rawURL, "http") {
		rawURL = c.srv.URL + rawURL
	}
	req, _ := http.NewRequest("GET", rawURL, nil)
	req.Header.Set("Authorization", "Bearer "+c.token)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	res, err := c.srv.Client().Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	var out map[string]any
	json.Unmarshal(b, &out)
	return res.StatusCode, out, string(b)
}

func code(body map[string]any) string {
	e, _ := body["error"].(map[string]any)
	s, _ := e["code"].(string)
	return s
}

func TestListingRules(t *testing.T) {
	t.Parallel()
	c, _ := start(t, t)
	for i := range 5 {
		c.srv.AddUser(graphtest.User{UserPrincipalName: fmt.Sprintf("u%d@x.test", i), DisplayName: fmt.Sprintf("U%d", i),
			AccountEnabled: i != 3, Props: map[string]any{"department": "R&D"}})
	}

	// Without $select, the default set: no accountEnabled, no department.
	_, body, _ := c.get("/v1.0/users")
	first := body["value"].([]any)[0].(map[string]any)
	if _, has := first["accountEnabled"]; has {
		t.Error("accountEnabled returned without $select")
	}
	if _, has := first["jobTitle"]; !has {
		t.Error("default property jobTitle missing (null expected)")
	}

	for _, top := range []string{"0", "1000", "x"} {
		if status, body, _ := c.get("/v1.0/users?$top=" + top); status != 400 || !strings.Contains(fmt.Sprint(body), "between 1 and 999") {
			t.Errorf("$top=%s: %d %v", top, status, body)
		}
	}
	if status, body, _ := c.get("/v1.0/users?$select=skills"); status != 501 || code(body) != "NotImplemented" {
		t.Errorf("$select=skills on a collection: %d %v", status, body)
	}
	if status, body, _ := c.get("/v1.0/users?$select=nonsense"); status != 400 || code(body) != "Request_BadRequest" {
		t.Errorf("$select=nonsense: %d %v", status, body)
	}

	// Paging: 5 users, 2 a page, opaque tokens bound to the query.
	var seen []string
	link := "/v1.0/users?$select=id,accountEnabled&$top=2"
	pages := 0
	for link != "" {
		status, body, _ := c.get(link)
		if status != 200 {
			t.Fatalf("page %d: %d %v", pages, status, body)
		}
		for _, v := range body["value"].([]any) {
			seen = append(seen, v.(map[string]any)["id"].(string))
		}
		link, _ = body["@odata.nextLink"].(string)
		if pages == 0 {
			// The same token with another $select is refused.
			other := strings.Replace(link, "accountEnabled", "mail", 1)
			if status, _, _ := c.get(other); status != 400 {
				t.Errorf("skip token replayed with another query: %d", status)
			}
		}
		pages++
	}
	if len(seen) != 5 || pages != 3 {
		t.Errorf("paged %d users in %d pages", len(seen), pages)
	}

	// Filters: the default ones work; ne needs the advanced headers.
	_, body, _ = c.get("/v1.0/users?$filter=" + url.QueryEscape("accountEnabled eq false"))
	if n := len(body["value"].([]any)); n != 1 {
		t.Errorf("accountEnabled eq false: %d users", n)
	}
	_, body, _ = c.get("/v1.0/users?$filter=" + url.QueryEscape("startswith(userPrincipalName,'U1') or userPrincipalName in ('u2@x.test')"))
	if n := len(body["value"].([]any)); n != 2 {
		t.Errorf("startswith/in: %d users", n)
	}
	ne := "/v1.0/users?$filter=" + url.QueryEscape("accountEnabled ne true")
	if status, body, _ := c.get(ne); status != 400 || code(body) != "Request_UnsupportedQuery" {
		t.Errorf("ne without advanced query: %d %v", status, body)
	}
	if status, body, _ := c.get(ne+"&$count=true", "ConsistencyLevel", "eventual"); status != 200 || body["@odata.count"] != float64(1) {
		t.Errorf("ne with advanced query: %d %v", status, body)
	}
	if status, body, _ := c.get("/v1.0/users/$count"); status != 400 || !strings.Contains(fmt.Sprint(body), "$count is not currently supported") {
		t.Errorf("$count without the header: %d %v", status, body)
	}
	if status, _, text := c.get("/v1.0/users/$count", "ConsistencyLevel", "eventual"); status != 200 || text != "5" {
		t.Errorf("$count: %d %q", status, text)
	}
	if status, body, _ := c.get(`/v1.0/users?$search="displayName:U1"`); status != 400 || code(body) != "Request_UnsupportedQuery" {
		t.Errorf("$search without the header: %d %v", status, body)
	}
	_, body, _ = c.get("/v1.0/users?$count=true") // ignored without the header
	if _, has := body["@odata.count"]; has {
		t.Error("@odata.count without ConsistencyLevel")
	}
}

func TestAdvancedQueriesLag(t *testing.T) {
	t.Parallel()
	c, clock := start(t, t)
	c.srv.SetAdvancedLag(time.Minute)
	c.srv.AddUser(graphtest.User{UserPrincipalName: "new@x.test", AccountEnabled: true})
	_, body, _ := c.get("/v1.0/users")
	if n := len(body["value"].([]any)); n != 1 {
		t.Errorf("default query sees %d users, want the new one", n)
	}
	adv := "/v1.0/users?$count=true&$filter=" + url.QueryEscape("userPrincipalName ne 'x'")
	_, body, _ = c.get(adv, "ConsistencyLevel", "eventual")
	if n := len(body["value"].([]any)); n != 0 {
		t.Errorf("advanced query sees %d users before the lag, want 0", n)
	}
	clock.Advance(2 * time.Minute)
	_, body, _ = c.get(adv, "ConsistencyLevel", "eventual")
	if n := len(body["value"].([]any)); n != 1 {
		t.Errorf("advanced query sees %d users after the lag, want 1", n)
	}
}

func TestTokenEndpointRefusals(t *testing.T) {
	t.Parallel()
	c, clock := start(t, t)
	base := url.Values{"grant_type": {"client_credentials"}, "client_id": {"app"}, "client_secret": {"s3cret"}, "scope": {c.srv.URL + "/.default"}}
	tests := []struct {
		name   string
		path   string
		mod    func(url.Values)
		status int
		code   string
	}{
		{"wrong tenant", "/other/oauth2/v2.0/token", nil, 400, "invalid_request"},
		{"grant", "", func(v url.Values) { v.Set("grant_type", "password") }, 400, "unsupported_grant_type"},
		{"scope", "", func(v url.Values) { v.Set("scope", "User.Read.All") }, 400, "invalid_scope"},
		{"unknown app", "", func(v url.Values) { v.Set("client_id", "nope") }, 400, "unauthorized_client"},
		{"secret", "", func(v url.Values) { v.Set("client_secret", "wrong") }, 401, "invalid_client"},
	}
	for _, tt := range tests {
		form := url.Values{}
		for k, v := range base {
			form[k] = v
		}
		if tt.mod != nil {
			tt.mod(form)
		}
		path := tt.path
		if path == "" {
			path = "/" + c.srv.Tenant + "/oauth2/v2.0/token"
		}
		status, body := c.post(path, form)
		desc, _ := body["error_description"].(string)
		if status != tt.status || body["error"] != tt.code || !strings.HasPrefix(desc, "AADSTS") || body["error_codes"] == nil {
			t.Errorf("%s: %d %v", tt.name, status, body)
		}
	}

	// Tokens expire with the clock; Graph answers 401 in its own shape.
	clock.Advance(time.Hour)
	if status, body, _ := c.get("/v1.0/users"); status != 401 || code(body) != "InvalidAuthenticationToken" {
		t.Errorf("expired token: %d %v", status, body)
	}
}

func TestDeltaRounds(t *testing.T) {
	t.Parallel()
	c, _ := start(t, t)
	c.srv.SetDeltaPageSize(2, 50)
	var ids []string
	for i := range 3 {
		ids = append(ids, c.srv.AddUser(graphtest.User{UserPrincipalName: fmt.Sprintf("u%d@x.test", i), DisplayName: "U", AccountEnabled: true}))
	}
	round := func(link string) (items []map[string]any, deltaLink string) {
		for link != "" {
			status, body, _ := c.get(link)
			if status != 200 {
				t.Fatalf("%s: %d %v", link, status, body)
			}
			for _, v := range body["value"].([]any) {
				items = append(items, v.(map[string]any))
			}
			link, _ = body["@odata.nextLink"].(string)
			deltaLink, _ = body["@odata.deltaLink"].(string)
			if link != "" && deltaLink != "" {
				t.Fatal("a page with both nextLink and deltaLink")
			}
		}
		return items, deltaLink
	}
	items, dl := round("/v1.0/users/delta?$select=displayName,accountEnabled")
	if len(items) != 3 || dl == "" {
		t.Fatalf("initial round: %d items, deltaLink %q", len(items), dl)
	}
	_, latest := round("/v1.0/users/delta?$select=displayName&$deltatoken=latest")
	if latest == "" {
		t.Fatal("no deltaLink for $deltatoken=latest")
	}

	c.srv.UpdateUser(ids[0], map[string]any{"accountEnabled": false})
	c.srv.SoftDeleteUser(ids[1])
	c.srv.HardDeleteUser(ids[2])
	items, _ = round(dl)
	byID := map[string]map[string]any{}
	for _, it := range items {
		byID[it["id"].(string)] = it
	}
	if it := byID[ids[0]]; it["accountEnabled"] != false || it["displayName"] != nil {
		t.Errorf("changed user = %v, want only the changed property", it)
	}
	for i, reason := range map[int]string{1: "changed", 2: "deleted"} {
		if r, _ := byID[ids[i]]["@removed"].(map[string]any); r["reason"] != reason {
			t.Errorf("user %d = %v, want @removed %s", i, byID[ids[i]], reason)
		}
	}
	// The starting token only sees what changed after it.
	items, _ = round(latest)
	if len(items) != 3 {
		t.Errorf("latest token: %d changes, want 3", len(items))
	}
	// Options may not be added to a deltaLink.
	rec := &recorder{TB: t}
	c2, _ := start(t, rec)
	_, dl2 := func() ([]map[string]any, string) {
		_, body, _ := c2.get("/v1.0/users/delta?$deltatoken=latest")
		return nil, body["@odata.deltaLink"].(string)
	}()
	if status, _, _ := c2.get(dl2 + "&$top=5"); status != 400 || len(rec.errs) != 1 {
		t.Errorf("deltaLink with $top: %d, emulator failures %q", status, rec.errs)
	}
}

func TestNotUnderstoodFailsTheTest(t *testing.T) {
	t.Parallel()
	rec := &recorder{TB: t}
	c, _ := start(t, rec)
	for _, path := range []string{"/v1.0/users?$orderby=displayName", "/v1.0/applications", "/beta/users", "/v1.0/users?$expand=manager"} {
		rec.errs = nil
		if status, _, _ := c.get(path); status != 400 || len(rec.errs) != 1 {
			t.Errorf("%s: %d, failures %q", path, status, rec.errs)
		}
	}
}

func TestFaults(t *testing.T) {
	t.Parallel()
	c, _ := start(t, t)
	for i := range 3 {
		c.srv.AddUser(graphtest.User{UserPrincipalName: fmt.Sprintf("u%d@x.test", i)})
	}
	c.srv.Inject(graphtest.Fault{Path: "/v1.0/users", Page: 2, Status: 429, RetryAfter: "7", Times: 1})
	_, body, _ := c.get("/v1.0/users?$top=2")
	next := body["@odata.nextLink"].(string)
	req, _ := http.NewRequest("GET", next, nil)
	req.Header.Set("Authorization", "Bearer "+c.token)
	res, _ := c.srv.Client().Do(req)
	res.Body.Close()
	if res.StatusCode != 429 || res.Header.Get("Retry-After") != "7" {
		t.Errorf("throttled page: %d Retry-After %q", res.StatusCode, res.Header.Get("Retry-After"))
	}
	if status, _, _ := c.get(next); status != 200 {
		t.Errorf("second try: %d, want the fault spent", status)
	}
	if n := c.srv.Requests("GET /v1.0/users"); n != 3 {
		t.Errorf("Requests = %d, want 3", n)
	}
}
