package onelogintest_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/usherhq/usher/directory/onelogin/onelogintest"
)

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

type fixture struct {
	t     *testing.T
	srv   *onelogintest.Server
	clock *clockwork.FakeClock
}

func newFixture(t *testing.T) *fixture {
	clock := clockwork.NewFakeClockAt(time.Date(2025, 3, 1, 9, 0, 0, 0, time.UTC))
	srv := onelogintest.New(t, clock).Start()
	srv.AddCredential("id", "secret", onelogintest.ReadAll)
	return &fixture{t: t, srv: srv, clock: clock}
}

func (f *fixture) grant(id, secret, ctype, body string) (int, map[string]any) {
	f.t.Helper()
	req, _ := http.NewRequest("POST", f.srv.URL+"/auth/oauth2/v2/token", strings.NewReader(body))
	req.SetBasicAuth(id, secret)
	req.Header.Set("Content-Type", ctype)
	res, err := f.srv.Client().Do(req)
	if err != nil {
		f.t.Fatal(err)
	}
	defer res.Body.Close()
	var out map[string]any
	json.NewDecoder(res.Body).Decode(&out)
	return res.StatusCode, out
}

func (f *fixture) token() string {
	f.t.Helper()
	status, body := f.grant("id", "secret", "application/json", `{"grant_type":"client_credentials"}`)
	if status != 200 {
		f.t.Fatalf("token: %d %v", status, body)
	}
	return body["access_token"].(string)
}

func (f *fixture) get(auth, path string) (*http.Response, any) {
	f.t.Helper()
	if !strings.HasPrefix(path, "http") {
		path = f.srv.URL + path
	}
	req, _ := http.NewRequest("GET", path, nil)
	req.Header.Set("Authorization", auth)
	res, err := f.srv.Client().Do(req)
	if err != nil {
		f.t.Fatal(err)
	}
	defer res.Body.Close()
	var buf bytes.Buffer
	buf.ReadFrom(res.Body)
	var body any
	json.Unmarshal(buf.Bytes(), &body)
	return res, body
}

func TestToken(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	status, body := f.grant("id", "secret", "application/json", `{"grant_type":"client_credentials"}`)
	if status != 200 || body["expires_in"] != float64(36000) || body["token_type"] != "bearer" {
		t.Fatalf("grant: %d %v", status, body)
	}
	for name, tt := range map[string]struct {
		id, secret, ctype, body string
		status                  int
	}{
		"wrong secret": {"id", "nope", "application/json", `{"grant_type":"client_credentials"}`, 401},
		"form body":    {"id", "secret", "application/x-www-form-urlencoded", "grant_type=client_credentials", 400},
		"wrong grant":  {"id", "secret", "application/json", `{"grant_type":"password"}`, 400},
	} {
		status, body := f.grant(tt.id, tt.secret, tt.ctype, tt.body)
		st, _ := body["status"].(map[string]any)
		if status != tt.status || st["error"] != true || st["code"] != float64(tt.status) {
			t.Errorf("%s: %d %v, want %d in the v1 envelope", name, status, body, tt.status)
		}
	}
}

func TestUsersPaging(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	for i := range 5 {
		f.srv.AddUser(onelogintest.User{Username: fmt.Sprintf("u%d", i), Email: fmt.Sprintf("u%d@x.test", i)})
	}
	tok := f.token()
	// Both Authorization styles of the docs.
	for _, auth := range []string{"Bearer " + tok, "bearer:" + tok} {
		if res, _ := f.get(auth, "/api/2/users"); res.StatusCode != 200 {
			t.Errorf("%q: %d", auth[:7], res.StatusCode)
		}
	}
	auth := "Bearer " + tok
	seen := 0
	q := url.Values{"limit": {"2"}}
	for page := 1; ; page++ {
		res, body := f.get(auth, "/api/2/users?"+q.Encode())
		users := body.([]any)
		seen += len(users)
		h := res.Header
		if h.Get("Current-Page") != strconv.Itoa(page) || h.Get("Total-Count") != "5" || h.Get("Total-Pages") != "3" ||
			h.Get("Page-Items") != strconv.Itoa(len(users)) {
			t.Errorf("page %d headers %v", page, h)
		}
		if page > 1 && h.Get("Before-Cursor") == "" {
			t.Errorf("page %d has no Before-Cursor", page)
		}
		for _, k := range []string{"X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset"} {
			if h.Get(k) == "" {
				t.Errorf("no %s", k)
			}
		}
		next := h.Get("After-Cursor")
		if next == "" {
			break
		}
		// A cursor is bound to its query.
		if res, _ := f.get(auth, "/api/2/users?limit=3&cursor="+url.QueryEscape(next)); res.StatusCode != 400 {
			t.Errorf("cursor replayed with another query: %d", res.StatusCode)
		}
		q.Set("cursor", next)
	}
	if seen != 5 {
		t.Errorf("%d users over the pages, want 5", seen)
	}
	_, body := f.get(auth, "/api/2/users?limit=1000")
	if n := len(body.([]any)); n != 5 {
		t.Errorf("limit above 100: %d users", n)
	}
	_, body = f.get(auth, "/api/2/users?email="+url.QueryEscape("U1@*"))
	if n := len(body.([]any)); n != 1 {
		t.Errorf("wildcard filter: %d users", n)
	}
	res, body := f.get(auth, "/api/2/users/1")
	if m, _ := body.(map[string]any); res.StatusCode != 404 || m["name"] != "NotFoundError" {
		t.Errorf("unknown user: %d %v", res.StatusCode, body)
	}
}

func TestUpdatedSince(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	a := f.srv.AddUser(onelogintest.User{Username: "a"})
	f.srv.AddUser(onelogintest.User{Username: "b"})
	f.clock.Advance(time.Hour)
	mark := f.clock.Now()
	f.srv.UpdateUser(a, func(u *onelogintest.User) { u.Status = 2 })
	tok := f.token()
	_, body := f.get("Bearer "+tok, "/api/2/users?updated_since="+url.QueryEscape(mark.Format(time.RFC3339)))
	users := body.([]any)
	if len(users) != 1 || users[0].(map[string]any)["status"] != float64(2) {
		t.Errorf("updated_since: %v", users)
	}
}

func TestRolesGroupsAndLimits(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	r := f.srv.AddRole("Jira")
	for i := range 51 {
		f.srv.AddGroup(fmt.Sprintf("g%02d", i))
	}
	f.srv.AddUser(onelogintest.User{Username: "a", RoleIDs: []int64{r}})
	auth := "Bearer " + f.token()
	_, body := f.get(auth, "/api/2/roles")
	if roles := body.([]any); len(roles) != 1 || roles[0].(map[string]any)["name"] != "Jira" {
		t.Errorf("roles: %v", roles)
	}
	_, body = f.get(auth, fmt.Sprintf("/api/2/roles/%d/users", r))
	if users := body.([]any); len(users) != 1 {
		t.Errorf("role users: %v", users)
	}
	_, body = f.get(auth, "/api/1/groups")
	env := body.(map[string]any)
	pag := env["pagination"].(map[string]any)
	if len(env["data"].([]any)) != 50 || pag["next_link"] == nil || env["status"].(map[string]any)["type"] != "success" {
		t.Fatalf("groups page 1: %v", env)
	}
	_, body = f.get(auth, pag["next_link"].(string))
	if n := len(body.(map[string]any)["data"].([]any)); n != 1 {
		t.Errorf("groups page 2: %d", n)
	}

	// A Read users credential reads users, not roles.
	f.srv.AddCredential("narrow", "s", onelogintest.ReadUsers)
	status, tb := f.grant("narrow", "s", "application/json", `{"grant_type":"client_credentials"}`)
	if status != 200 {
		t.Fatal(tb)
	}
	if res, _ := f.get("Bearer "+tb["access_token"].(string), "/api/2/roles"); res.StatusCode != 403 {
		t.Errorf("roles with Read users: %d", res.StatusCode)
	}

	// The hourly limit: Remaining counts down, then 429.
	f.srv.SetHourlyLimit(2)
	f.clock.Advance(time.Hour)
	res, _ := f.get(auth, "/api/2/users")
	if res.Header.Get("X-RateLimit-Remaining") != "1" || res.Header.Get("X-RateLimit-Reset") != "3600" {
		t.Errorf("first call of the window: %v", res.Header)
	}
	f.clock.Advance(10 * time.Minute)
	f.get(auth, "/api/2/users")
	res, body = f.get(auth, "/api/2/users")
	if res.StatusCode != 429 || res.Header.Get("X-RateLimit-Reset") != "3000" {
		t.Errorf("over the limit: %d %v %v", res.StatusCode, res.Header, body)
	}
}

func TestNotUnderstood(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	rec := &recorder{TB: t}
	srv := onelogintest.New(rec, f.clock).Start()
	srv.AddCredential("id", "secret", onelogintest.ReadAll)
	g := &fixture{t: t, srv: srv, clock: f.clock}
	auth := "Bearer " + g.token()
	g.get(auth, "/api/2/users?sort=%2Bfirstname")
	g.get(auth, "/api/2/apps")
	if len(rec.errs) != 2 {
		t.Errorf("not-understood requests reported: %q", rec.errs)
	}
}
