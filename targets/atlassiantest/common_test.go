package atlassiantest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Test helpers: a real HTTP server per test, JSON in and out, and a
// dotted-path reader ("errors.username", "values.0.name") for asserting
// on the documented fields.

const (
	adminUser = "admin"
	adminPass = "admin-secret"
	patToken  = "pat-123"
	crowdApp  = "usher"
	crowdPass = "app-secret"
)

var fixedNow = time.Date(2025, 3, 4, 5, 6, 7, 0, time.UTC)

type env struct {
	t    *testing.T
	s    *Server
	url  string
	auth func(*http.Request)
}

func newEnv(t testing.TB, kind Kind, mod func(*Options)) *env {
	opts := Options{
		AdminUser: adminUser, AdminPassword: adminPass, Token: patToken,
		CrowdApp: crowdApp, CrowdAppPassword: crowdPass,
		Now: func() time.Time { return fixedNow },
	}
	if mod != nil {
		mod(&opts)
	}
	s := New(kind, opts)
	ts := httptest.NewServer(s)
	t.Cleanup(ts.Close)
	e := &env{s: s, url: ts.URL}
	if tt, ok := t.(*testing.T); ok {
		e.t = tt
	}
	e.auth = func(r *http.Request) { r.SetBasicAuth(adminUser, adminPass) }
	if kind == Crowd {
		e.auth = func(r *http.Request) { r.SetBasicAuth(crowdApp, crowdPass) }
	}
	return e
}

type resp struct {
	status int
	header http.Header
	body   []byte
}

// do sends body as JSON (json.RawMessage verbatim; nil sends none).
func (e *env) do(method, path string, body any) resp {
	e.t.Helper()
	return e.doAs(e.auth, method, path, body)
}

func (e *env) doAs(auth func(*http.Request), method, path string, body any) resp {
	e.t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			e.t.Fatalf("marshal: %v", err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, e.url+path, rd)
	if err != nil {
		e.t.Fatalf("request: %v", err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	if auth != nil {
		auth(req)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return resp{res.StatusCode, res.Header, b}
}

// String keeps failure output short.
func (r resp) String() string {
	if len(r.body) > 300 {
		return string(r.body[:300]) + "…"
	}
	return string(r.body)
}

func (r resp) json(t *testing.T) any {
	t.Helper()
	if len(r.body) == 0 {
		return nil
	}
	var v any
	if err := json.Unmarshal(r.body, &v); err != nil {
		t.Fatalf("decode %q: %v", r.body, err)
	}
	return v
}

// field reads a dotted path; "#" gives an array's or object's length.
func field(v any, path string) any {
	if path == "" {
		return v
	}
	for _, p := range strings.Split(path, ".") {
		switch x := v.(type) {
		case map[string]any:
			if p == "#" {
				return len(x)
			}
			v = x[p]
		case []any:
			if p == "#" {
				return len(x)
			}
			i, err := strconv.Atoi(p)
			if err != nil || i >= len(x) {
				return nil
			}
			v = x[i]
		default:
			return nil
		}
	}
	return v
}

// step is one request of a stateful table and what must come back.
type step struct {
	name   string
	method string
	path   string
	body   any
	status int
	want   map[string]any // dotted path → value (compared printed)
}

func runSteps(t *testing.T, e *env, steps []step) {
	t.Helper()
	for _, st := range steps {
		r := e.do(st.method, st.path, st.body)
		if r.status != st.status {
			t.Fatalf("%s: %s %s = %d, want %d; body %s", st.name, st.method, st.path, r.status, st.status, r)
		}
		if len(st.want) == 0 {
			continue
		}
		v := r.json(t)
		for p, want := range st.want {
			if got := field(v, p); fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("%s: %s = %v, want %v; body %s", st.name, p, got, want, r)
			}
		}
	}
}

func basic(u, p string) func(*http.Request) {
	return func(r *http.Request) { r.SetBasicAuth(u, p) }
}

func bearer(tok string) func(*http.Request) {
	return func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+tok) }
}

// getPath is one read endpoint per product, for the cross-product tests.
var getPath = map[Kind]string{
	Jira:       "/rest/api/2/user?username=fred",
	Confluence: "/rest/api/user?username=fred",
	Bitbucket:  "/rest/api/1.0/users/fred",
	Crowd:      "/rest/usermanagement/1/user?username=fred",
}

// errorField is a field every error body of the product has.
var errorField = map[Kind]string{
	Jira: "errorMessages", Confluence: "statusCode", Bitbucket: "errors.0.exceptionName", Crowd: "reason",
}

var kinds = []Kind{Jira, Confluence, Bitbucket, Crowd}

func seedFred(o *Options) {
	o.Users = append(o.Users, User{Name: "fred", DisplayName: "Fred Flint", Email: "fred@example.com", Active: true, Password: "fred-pw", Groups: []string{"devs"}})
}

func TestAuthentication(t *testing.T) {
	tests := []struct {
		kind    Kind
		name    string
		auth    func(*http.Request)
		status  int
		seraph  bool // X-Seraph-LoginReason: AUTHENTICATED_FAILED
		noChall bool // no WWW-Authenticate
	}{
		{Jira, "admin basic", basic(adminUser, adminPass), 200, false, true},
		{Jira, "bearer pat", bearer(patToken), 200, false, true},
		{Jira, "pat as basic password", basic(adminUser, patToken), 401, true, true},
		{Jira, "wrong password", basic(adminUser, "nope"), 401, true, true},
		{Jira, "anonymous", nil, 401, false, true},
		{Jira, "wrong token", bearer("nope"), 401, true, true},
		{Jira, "directory user", basic("fred", "fred-pw"), 200, false, true},
		{Confluence, "admin basic", basic(adminUser, adminPass), 200, false, true},
		{Confluence, "bearer pat", bearer(patToken), 200, false, true},
		{Confluence, "wrong password", basic(adminUser, "nope"), 401, true, true},
		{Bitbucket, "admin basic", basic(adminUser, adminPass), 200, false, true},
		{Bitbucket, "pat as basic password", basic(adminUser, patToken), 200, false, true},
		{Bitbucket, "bearer pat", bearer(patToken), 200, false, true},
		{Bitbucket, "wrong password", basic(adminUser, "nope"), 401, false, true},
		{Crowd, "application", basic(crowdApp, crowdPass), 200, false, true},
		{Crowd, "admin user credentials", basic(adminUser, adminPass), 401, false, false},
		{Crowd, "wrong app password", basic(crowdApp, "nope"), 401, false, false},
	}
	for _, tt := range tests {
		t.Run(string(tt.kind)+"/"+tt.name, func(t *testing.T) {
			e := newEnv(t, tt.kind, seedFred)
			r := e.doAs(tt.auth, "GET", getPath[tt.kind], nil)
			if r.status != tt.status {
				t.Fatalf("status %d, want %d: %s", r.status, tt.status, r)
			}
			if got := r.header.Get("X-Seraph-LoginReason") == "AUTHENTICATED_FAILED"; got != tt.seraph {
				t.Errorf("X-Seraph-LoginReason = %q", r.header.Get("X-Seraph-LoginReason"))
			}
			if got := r.header.Get("WWW-Authenticate") == ""; got != tt.noChall {
				t.Errorf("WWW-Authenticate = %q", r.header.Get("WWW-Authenticate"))
			}
			if r.status != 200 && field(r.json(t), errorField[tt.kind]) == nil {
				t.Errorf("error body lacks %s: %s", errorField[tt.kind], r)
			}
		})
	}
}

// TestPersonalAccessTokenOnAdminEndpoints: a Jira or Confluence token
// acts with its user's full permissions; a Bitbucket token authenticates
// but is refused on the admin endpoints, as Basic with the token as the
// password and as Bearer alike (reference §2.2, issue #14).
func TestPersonalAccessTokenOnAdminEndpoints(t *testing.T) {
	tests := []struct {
		kind   Kind
		auth   func(*http.Request)
		method string
		path   string
		status int
	}{
		{Jira, bearer(patToken), "POST", "/rest/api/2/group", 201},
		{Confluence, bearer(patToken), "POST", "/rest/api/admin/group", 201},
		{Bitbucket, bearer(patToken), "POST", "/rest/api/1.0/admin/groups?name=x", 401},
		{Bitbucket, basic(adminUser, patToken), "POST", "/rest/api/1.0/admin/groups?name=x", 401},
		{Bitbucket, bearer(patToken), "GET", "/rest/api/1.0/admin/users", 401},
		{Bitbucket, bearer(patToken), "GET", "/rest/api/1.0/admin/permissions/groups", 401},
		{Bitbucket, basic(adminUser, adminPass), "POST", "/rest/api/1.0/admin/groups?name=x", 200},
	}
	for _, tt := range tests {
		t.Run(string(tt.kind)+" "+tt.method+" "+tt.path, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, tt.kind, seedFred)
			var body any
			if tt.method == "POST" && tt.kind != Bitbucket {
				body = map[string]string{"name": "x"}
			}
			r := e.doAs(tt.auth, tt.method, tt.path, body)
			if r.status != tt.status {
				t.Fatalf("status %d, want %d: %s", r.status, tt.status, r)
			}
			if r.status == 401 {
				if got := field(r.json(t), "errors.0.exceptionName"); got != "com.atlassian.bitbucket.AuthorisationException" {
					t.Errorf("exceptionName %v", got)
				}
				if containsFold(e.s.Groups(), "x") {
					t.Error("a refused token created a group")
				}
			}
		})
	}
}

// A directory user who is not an admin may read but not write: 403,
// except Bitbucket's 401 (reference §5).
func TestNonAdminRefused(t *testing.T) {
	writes := map[Kind]struct {
		method, path string
		body         any
		status       int
	}{
		Jira:       {"POST", "/rest/api/2/group", map[string]string{"name": "x"}, 403},
		Confluence: {"POST", "/rest/api/admin/group", map[string]string{"name": "x"}, 403},
		Bitbucket:  {"POST", "/rest/api/1.0/admin/groups?name=x", nil, 401},
	}
	for kind, w := range writes {
		t.Run(string(kind), func(t *testing.T) {
			e := newEnv(t, kind, seedFred)
			r := e.doAs(basic("fred", "fred-pw"), w.method, w.path, w.body)
			if r.status != w.status || field(r.json(t), errorField[kind]) == nil {
				t.Fatalf("got %d %s, want %d", r.status, r, w.status)
			}
			if e.s.Groups() != nil && containsFold(e.s.Groups(), "x") {
				t.Fatal("group created by a non-admin")
			}
			// An inactive user cannot authenticate at all.
			e.s.AddUser(User{Name: "fred", Active: false, Password: "fred-pw"})
			if r := e.doAs(basic("fred", "fred-pw"), "GET", getPath[kind], nil); r.status != 401 {
				t.Fatalf("inactive user: %d", r.status)
			}
		})
	}
}

func containsFold(list []string, s string) bool {
	for _, x := range list {
		if strings.EqualFold(x, s) {
			return true
		}
	}
	return false
}

func TestRateLimit(t *testing.T) {
	for _, kind := range kinds {
		t.Run(string(kind), func(t *testing.T) {
			e := newEnv(t, kind, seedFred)
			e.s.RateLimit(2, 1500*time.Millisecond)
			for i := range 2 {
				r := e.do("GET", getPath[kind], nil)
				if r.status != http.StatusTooManyRequests {
					t.Fatalf("call %d: %d", i, r.status)
				}
				for h, want := range map[string]string{
					"Retry-After": "2", "X-RateLimit-Remaining": "0", "X-RateLimit-Limit": "100",
					"X-RateLimit-Interval-Seconds": "1", "X-RateLimit-FillRate": "10",
				} {
					if got := r.header.Get(h); got != want {
						t.Errorf("%s = %q, want %q", h, got, want)
					}
				}
				if field(r.json(t), errorField[kind]) == nil {
					t.Errorf("429 body: %s", r)
				}
			}
			if r := e.do("GET", getPath[kind], nil); r.status != 200 {
				t.Fatalf("after the limit: %d %s", r.status, r)
			}
		})
	}
}

func TestFailNextAndDown(t *testing.T) {
	for _, kind := range kinds {
		t.Run(string(kind), func(t *testing.T) {
			e := newEnv(t, kind, seedFred)
			e.s.FailNext(2, http.StatusBadGateway)
			for range 2 {
				r := e.do("GET", getPath[kind], nil)
				if r.status != 502 || field(r.json(t), errorField[kind]) == nil {
					t.Fatalf("FailNext: %d %s", r.status, r)
				}
			}
			if r := e.do("GET", getPath[kind], nil); r.status != 200 {
				t.Fatalf("after FailNext: %d", r.status)
			}
			e.s.SetDown(true)
			for range 3 {
				if r := e.do("GET", getPath[kind], nil); r.status != 503 || field(r.json(t), errorField[kind]) == nil {
					t.Fatalf("down: %d %s", r.status, r)
				}
			}
			e.s.SetDown(false)
			if r := e.do("GET", getPath[kind], nil); r.status != 200 {
				t.Fatalf("back up: %d", r.status)
			}
		})
	}
}

func TestHangUpIsATransportError(t *testing.T) {
	e := newEnv(t, Jira, seedFred)
	e.s.SetHangUp(true)
	req, _ := http.NewRequest("GET", e.url+getPath[Jira], nil)
	req.SetBasicAuth(adminUser, adminPass)
	res, err := http.DefaultClient.Do(req)
	if err == nil {
		res.Body.Close()
		t.Fatalf("want a transport error, got HTTP %d", res.StatusCode)
	}
	e.s.SetHangUp(false)
	if r := e.do("GET", getPath[Jira], nil); r.status != 200 {
		t.Fatalf("after hang-up: %d", r.status)
	}
}

// Latency holds the answer back until the client gives up; no wall
// clock is asserted beyond the client's own deadline.
func TestLatencyHonoursClientDeadline(t *testing.T) {
	e := newEnv(t, Crowd, seedFred)
	e.s.SetLatency(time.Hour)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", e.url+getPath[Crowd], nil)
	req.SetBasicAuth(crowdApp, crowdPass)
	if res, err := http.DefaultClient.Do(req); err == nil {
		res.Body.Close()
		t.Fatalf("answered despite an hour of latency: %d", res.StatusCode)
	}
	e.s.SetLatency(0)
	if r := e.do("GET", getPath[Crowd], nil); r.status != 200 {
		t.Fatalf("%d", r.status)
	}
}

func TestCallCounting(t *testing.T) {
	e := newEnv(t, Jira, seedFred)
	e.do("GET", "/rest/api/2/user?username=fred", nil)
	e.do("GET", "/rest/api/latest/user?username=nobody", nil)
	e.do("POST", "/rest/api/2/group/user?groupname=devs", map[string]string{"name": "fred"})
	e.do("DELETE", "/rest/api/2/group/user?groupname=devs&username=fred", nil)
	e.doAs(nil, "GET", "/rest/api/2/user?username=fred", nil) // refused, still counted
	e.do("GET", "/rest/api/2/nope", nil)
	e.do("GET", "/", nil) // the identity page is not REST
	want := map[string]int{
		"GET /rest/api/2/user":          3,
		"POST /rest/api/2/group/user":   1,
		"DELETE /rest/api/2/group/user": 1,
		"GET (unknown)":                 1,
	}
	got := e.s.Calls()
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("Calls() = %v, want %v", got, want)
	}
	if e.s.Reads() != 4 || e.s.Writes() != 2 {
		t.Fatalf("reads %d writes %d", e.s.Reads(), e.s.Writes())
	}
	e.s.ResetCalls()
	if len(e.s.Calls()) != 0 || e.s.Reads()+e.s.Writes() != 0 {
		t.Fatal("ResetCalls left counts")
	}
}

func TestUnknownRESTPathIsProductShaped404(t *testing.T) {
	for _, kind := range kinds {
		e := newEnv(t, kind, nil)
		r := e.do("PUT", "/rest/api/1.0/admin/users/deactivate?name=fred", nil)
		if r.status != 404 || field(r.json(t), errorField[kind]) == nil {
			t.Errorf("%s: %d %s", kind, r.status, r)
		}
	}
}

func TestIdentityPage(t *testing.T) {
	e := newEnv(t, Confluence, func(o *Options) {
		seedFred(o)
		o.IdentityHeader = "X-Forwarded-User"
		o.Users = append(o.Users, User{Name: "gone", Active: false})
	})
	page := func(hdr map[string]string) resp {
		return e.doAs(func(r *http.Request) {
			for k, v := range hdr {
				r.Header.Set(k, v)
			}
		}, "GET", "/wiki/home", nil)
	}
	r := page(map[string]string{"X-Forwarded-User": "FRED", "X-Remote-Email": "fred@idp.example", "X-Remote-Groups": "devs,ops"})
	body := string(r.body)
	for _, want := range []string{"Confluence (emulated) — you are FRED", "fred@idp.example", "devs,ops", "Fred Flint", "active", "devs"} {
		if !strings.Contains(body, want) {
			t.Errorf("page lacks %q:\n%s", want, body)
		}
	}
	if r.status != 200 {
		t.Errorf("status %d", r.status)
	}
	if u, _ := e.s.User("fred"); !u.LastLogin.Equal(fixedNow) {
		t.Errorf("visit did not record a login: %v", u.LastLogin)
	}
	if r := page(map[string]string{"X-Forwarded-User": "gone"}); r.status != 403 || !strings.Contains(string(r.body), "deactivated") {
		t.Errorf("deactivated user: %d %s", r.status, r)
	}
	if r := page(map[string]string{"X-Forwarded-User": "<script>"}); r.status != 403 || strings.Contains(string(r.body), "<script>") {
		t.Errorf("unknown user: %d %s", r.status, r)
	}
	if r := page(nil); r.status != 401 || !strings.Contains(string(r.body), "not signed in") {
		t.Errorf("anonymous: %d %s", r.status, r)
	}
	if len(e.s.Calls()) != 0 {
		t.Errorf("page views counted as REST calls: %v", e.s.Calls())
	}
}

func TestIndexKeepsOrderAcrossChanges(t *testing.T) {
	x := newIndex()
	for _, k := range []string{"d", "b", "a"} {
		x.add(k)
	}
	if got := fmt.Sprint(x.keys()); got != "[a b d]" {
		t.Fatal(got)
	}
	x.add("c")
	x.remove("b")
	x.remove("d")
	x.add("d") // removed and added again: once only
	if got := fmt.Sprint(x.keys()); got != "[a c d]" {
		t.Fatal(got)
	}
	if i := x.after("a"); i != 1 {
		t.Fatal(i)
	}
}

// Concurrent writers and readers, meant for -race: every create and
// membership change must land exactly once.
func TestConcurrentUse(t *testing.T) {
	e := newEnv(t, Confluence, nil)
	e.s.AddGroup("team")
	var wg sync.WaitGroup
	const n = 40
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			name := fmt.Sprintf("user%02d", i)
			e.do("POST", "/rest/api/admin/user", map[string]any{"userName": name, "fullName": "U " + name, "email": name + "@x.org", "password": "pw", "notifyViaEmail": false})
			e.do("PUT", "/rest/api/user/"+name+"/group/team", nil)
			e.do("GET", "/rest/api/group/team/member?limit=5", nil)
			e.s.RateLimit(0, 0)
			_ = e.s.Calls()
		}()
	}
	wg.Wait()
	if got := len(e.s.GroupMembers("team")); got != n {
		t.Fatalf("team has %d members, want %d", got, n)
	}
	if got := e.s.Calls()["POST /rest/api/admin/user"]; got != n {
		t.Fatalf("counted %d creates", got)
	}
}

func seedMany(n int) func(*Options) {
	return func(o *Options) {
		o.Users = make([]User, n)
		for i := range n {
			o.Users[i] = User{Name: fmt.Sprintf("user%06d", i), DisplayName: "User", Email: "u@x.org", Active: true, Groups: []string{"jira-software-users"}}
		}
	}
}

// BenchmarkJiraGetUser is one GET /user round trip against a directory
// of 100,000 users.
func BenchmarkJiraGetUser(b *testing.B) {
	e := newEnv(b, Jira, seedMany(100_000))
	client := &http.Client{}
	b.ResetTimer()
	for i := range b.N {
		req, _ := http.NewRequest("GET", fmt.Sprintf("%s/rest/api/2/user?username=user%06d", e.url, i%100_000), nil)
		req.SetBasicAuth(adminUser, adminPass)
		res, err := client.Do(req)
		if err != nil || res.StatusCode != 200 {
			b.Fatalf("%v %v", err, res)
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
	}
}

// BenchmarkJiraGroupMemberPage reads one 50-user page of a
// 100,000-member group's active members, as a sweep does page by page.
func BenchmarkJiraGroupMemberPage(b *testing.B) {
	e := newEnv(b, Jira, seedMany(100_000))
	client := &http.Client{}
	b.ResetTimer()
	for i := range b.N {
		req, _ := http.NewRequest("GET", fmt.Sprintf("%s/rest/api/2/group/member?groupname=jira-software-users&startAt=%d", e.url, (i*50)%100_000), nil)
		req.SetBasicAuth(adminUser, adminPass)
		res, err := client.Do(req)
		if err != nil || res.StatusCode != 200 {
			b.Fatalf("%v %v", err, res)
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
	}
}
