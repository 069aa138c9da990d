package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/usherhq/usher/dirsync"
	"github.com/usherhq/usher/session"
	"github.com/usherhq/usher/store"
	"github.com/usherhq/usher/store/sqlite"
)

const (
	adminToken = "correct-horse-battery-staple-admin"
	adminGroup = "usher-admins"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// fakeActions records every call; the admin package only decides when to
// call, so what the calls do is not its business.
type fakeActions struct {
	mu    sync.Mutex
	calls []string
	busy  bool // StartSync says a sync is running
}

func (f *fakeActions) record(format string, args ...any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, fmt.Sprintf(format, args...))
}

func (f *fakeActions) Calls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.calls)
}

func (f *fakeActions) SyncUser(ctx context.Context, idp, subject, actor string) ([]string, error) {
	f.record("sync %s %s %s", idp, subject, actor)
	return []string{"jira: added alice to jira-users"}, nil
}

func (f *fakeActions) Reinstate(ctx context.Context, idp, subject, actor string) ([]string, error) {
	f.record("reinstate %s %s %s", idp, subject, actor)
	return []string{"jira: reactivated alice"}, nil
}

// testPlan is a large plan: it lists its first item of 42.
func testPlan(policy string) *SweepPlan {
	return &SweepPlan{Policy: policy, Managed: 300, Items: []SweepItem{
		{IdP: "okta", Subject: "00u-bob", Username: "bob", App: "jira", Reason: "SCIM: active=false", Action: "deactivate"},
	}, Omitted: 41, Counts: map[string]int{"deactivate": 40, "skip": 2}}
}

func (f *fakeActions) PlanSweep(ctx context.Context, policy string) (*SweepPlan, error) {
	f.record("plan %s", policy)
	return testPlan(policy), nil
}

func (f *fakeActions) RunSweep(ctx context.Context, policy string, dryRun bool, actor string) (*SweepPlan, error) {
	f.record("run %s dry=%t %s", policy, dryRun, actor)
	p := testPlan(policy)
	if !dryRun {
		p.Applied, p.Items[0].Outcome = 1, "ok"
	}
	return p, nil
}

func (f *fakeActions) Policies() []string { return []string{"nightly"} }

func (f *fakeActions) Link(ctx context.Context, idp, subject, username, actor string) error {
	f.record("link %s %s %s %s", idp, subject, username, actor)
	switch username {
	case "taken":
		return fmt.Errorf("okta/00u-x owns that username: %w", store.ErrUsernameTaken)
	case "broken":
		return errors.New("bind: database is locked")
	}
	return nil
}

func (f *fakeActions) Reload(ctx context.Context, actor string) error {
	f.record("reload %s", actor)
	return nil
}

// The fake's directories: okta's "corp", with two runs and one running.
func (f *fakeActions) Directories() []Directory {
	return []Directory{{Name: "corp", Type: "graph", IdP: "okta", Schedule: "every 15m", Automatic: true}}
}

func (f *fakeActions) DirectoryRuns(ctx context.Context, name string) ([]dirsync.Result, *dirsync.Progress, error) {
	return []dirsync.Result{
			{Run: 2, Directory: "corp", Kind: "delta", By: "schedule", Complete: false, Error: "graph: users page 3: 503", People: 4, Updated: 1},
			{Run: 1, Directory: "corp", Kind: "full", By: "admin:root", Complete: true, People: 1200, Groups: 40, Created: 1100},
		},
		&dirsync.Progress{Kind: "full", Started: t0, People: 600, Expected: 1200, Created: 3}, nil
}

func (f *fakeActions) StartSync(ctx context.Context, name, actor string) error {
	f.record("start %s %s", name, actor)
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.busy {
		return dirsync.ErrBusy
	}
	return nil
}

func (f *fakeActions) DryRunSync(ctx context.Context, name, actor string) (*dirsync.Result, error) {
	f.record("dry %s %s", name, actor)
	return &dirsync.Result{Directory: name, IdP: "okta", Kind: "full", DryRun: true, Complete: true, People: 3, Created: 1, Unchanged: 1, Denied: 1,
		Items: []dirsync.Item{{Subject: "sub-zoe", Username: "zoe", Outcome: dirsync.OutcomeCreated, Apps: []string{"jira"}},
			{Subject: "sub-x", Username: "x", Outcome: dirsync.OutcomeDenied, Detail: "not in staff"}}}, nil
}

func (f *fakeActions) DirectoryOf(idp string) string {
	if idp == "okta" {
		return "corp"
	}
	return ""
}

func (f *fakeActions) SyncPerson(ctx context.Context, idp, subject, actor string) (*dirsync.Item, error) {
	f.record("person %s %s %s", idp, subject, actor)
	return &dirsync.Item{Subject: subject, Username: "alice", Outcome: dirsync.OutcomeUpdated, Changes: []string{"jira: added to jira-developers"}}, nil
}

func (f *fakeActions) Release(ctx context.Context, idp, subject, actor string) ([]string, error) {
	f.record("release %s %s %s", idp, subject, actor)
	if subject == "nobody" {
		return nil, fmt.Errorf("release %s/%s: %w", idp, subject, store.ErrNotFound)
	}
	return []string{"jira: deactivated"}, nil
}

func (f *fakeActions) Drop(ctx context.Context, idp, subject, actor string) error {
	f.record("drop %s %s %s", idp, subject, actor)
	if subject == "nobody" {
		return fmt.Errorf("drop %s/%s: %w", idp, subject, store.ErrNotFound)
	}
	return nil
}

func (f *fakeActions) ReleaseAll(ctx context.Context, idp, actor string) (int, error) {
	f.record("release-all %s %s", idp, actor)
	return 2, nil
}

func (f *fakeActions) DropAll(ctx context.Context, idp, actor string) (int, error) {
	f.record("drop-all %s %s", idp, actor)
	return 2, nil
}

// testIdPs are the configured IdPs the pages show: okta with a brake,
// entra pushing without one, corp without SCIM.
var testIdPs = []IdP{
	{ID: "okta", Name: "Okta", Type: "oidc", Adoption: "verified_email", SCIM: true, Automatic: true,
		Brake: &Brake{MaxCount: 25, MaxShare: 0.1, Window: time.Hour, HeldSessions: "revoke"}},
	{ID: "entra", Name: "entra", Type: "oidc", Adoption: "never", SCIM: true},
	{ID: "corp", Name: "corp", Type: "saml", Adoption: "always"},
}

type env struct {
	t       *testing.T
	srv     *httptest.Server
	store   store.Store
	codec   *session.Codec
	actions *fakeActions
	ready   []Check
}

func newEnv(t *testing.T) *env {
	t.Helper()
	ctx := context.Background()
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "usher.db"), sqlite.Options{})
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(func() { st.Close() })
	now := func() time.Time { return t0 }
	codec, err := session.NewCodec([][]byte{[]byte("0123456789abcdef0123456789abcdef-admin-test")},
		session.Options{Name: "usher_session", Idle: time.Hour, Absolute: 8 * time.Hour, Now: now})
	if err != nil {
		t.Fatalf("codec: %v", err)
	}
	e := &env{t: t, store: st, codec: codec, actions: &fakeActions{}}
	e.ready = []Check{{Name: "store"}}
	h := New(Options{
		Store: st, Actions: e.actions, Directories: e.actions, Holds: e.actions, IdPs: testIdPs, Token: adminToken, Codec: codec,
		SSO:    &SSO{IdP: "okta", Group: adminGroup, LoginURL: "https://sso.example.com/usher/login?rd=/"},
		Config: func() ([]byte, error) { return []byte("listen: :8080\nsecret: <redacted>\nnote: \"<b>x</b>\"\n"), nil },
		Ready:  func(ctx context.Context) []Check { return e.ready },
		Metrics: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, "usher_logins_total 7\n")
		}),
		// The app "confluence" stands in for an Atlassian Cloud site here.
		AccountID: func(_ context.Context, app, username string) string {
			if app == "confluence" && username == "alice" {
				return "5b10ac8d82e05b22cc7d4ef5"
			}
			return ""
		},
		Now: now,
	})
	e.srv = httptest.NewServer(h)
	t.Cleanup(e.srv.Close)
	return e
}

type resp struct {
	status int
	header http.Header
	body   string
}

// do sends a request without following redirects. hdr holds header
// name/value pairs; a non-nil form makes it a form POST body.
func (e *env) do(method, path string, form url.Values, hdr ...string) resp {
	e.t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequest(method, e.srv.URL+path, body)
	if err != nil {
		e.t.Fatal(err)
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Add(hdr[i], hdr[i+1])
	}
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	res, err := c.Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return resp{status: res.StatusCode, header: res.Header, body: string(b)}
}

func bearer(tok string) []string { return []string{"Authorization", "Bearer " + tok} }

// loginCookie signs in through the token form and returns the Cookie
// header value it earned.
func (e *env) loginCookie() string {
	e.t.Helper()
	r := e.do("POST", "/admin/login", url.Values{"token": {adminToken}, "rd": {"/admin/audit"}})
	if r.status != http.StatusSeeOther || r.header.Get("Location") != "/admin/audit" {
		e.t.Fatalf("login: %d to %q, want 303 to /admin/audit", r.status, r.header.Get("Location"))
	}
	for _, sc := range r.header.Values("Set-Cookie") {
		if strings.HasPrefix(sc, CookieName+"=") {
			if !strings.Contains(sc, "HttpOnly") || !strings.Contains(sc, "SameSite=Strict") {
				e.t.Errorf("admin cookie %q lacks HttpOnly or SameSite=Strict", sc)
			}
			return strings.SplitN(sc, ";", 2)[0]
		}
	}
	e.t.Fatalf("login set no admin cookie: %q", r.header.Values("Set-Cookie"))
	return ""
}

// ssoCookie returns the Cookie header of an usher session for username
// with groups, as the public listener would have set it.
func (e *env) ssoCookie(username string, groups ...string) string {
	e.t.Helper()
	s := e.codec.NewSession()
	s.IdP, s.Subject, s.Username, s.Groups = "okta", "sub-"+username, username, groups
	rec := httptest.NewRecorder()
	if err := e.codec.Save(rec, s); err != nil {
		e.t.Fatal(err)
	}
	return strings.SplitN(rec.Header().Get("Set-Cookie"), ";", 2)[0]
}

var csrfField = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

// csrfFrom reads the CSRF token a page rendered for cookie.
func (e *env) csrfFrom(path, cookie string) string {
	e.t.Helper()
	r := e.do("GET", path, nil, "Cookie", cookie)
	m := csrfField.FindStringSubmatch(r.body)
	if r.status != http.StatusOK || m == nil {
		e.t.Fatalf("GET %s: %d, no csrf field in %q", path, r.status, r.body)
	}
	return m[1]
}

func TestHealthz(t *testing.T) {
	e := newEnv(t)
	r := e.do("GET", "/healthz", nil)
	if r.status != http.StatusOK || !strings.Contains(r.body, `"status": "ok"`) {
		t.Fatalf("healthz: %d %s", r.status, r.body)
	}
}

func TestReadyz(t *testing.T) {
	e := newEnv(t)
	if r := e.do("GET", "/readyz", nil); r.status != http.StatusOK {
		t.Fatalf("readyz with every check ok: %d %s", r.status, r.body)
	}
	e.ready = []Check{{Name: "store"}, {Name: "idp:okta", Err: errors.New("metadata not loaded: dial tcp: refused")}}
	r := e.do("GET", "/readyz", nil)
	var body readyBody
	if err := json.Unmarshal([]byte(r.body), &body); err != nil {
		t.Fatalf("readyz body %q: %v", r.body, err)
	}
	if r.status != http.StatusOK || body.Status != "degraded" ||
		body.Checks["store"] != "ok" || !strings.Contains(body.Checks["idp:okta"], "metadata not loaded") {
		t.Fatalf("readyz with a failing IdP: %d %+v (want degraded, still serving)", r.status, body)
	}
	// A critical check failing takes the replica out.
	e.ready = []Check{{Name: "store", Err: errors.New("did not answer within 2s"), Critical: true}, {Name: "idp:okta"}}
	r = e.do("GET", "/readyz", nil)
	if err := json.Unmarshal([]byte(r.body), &body); err != nil {
		t.Fatalf("readyz body %q: %v", r.body, err)
	}
	if r.status != http.StatusServiceUnavailable || body.Status != "unavailable" || !strings.Contains(body.Checks["store"], "did not answer") {
		t.Fatalf("readyz with the store down: %d %+v", r.status, body)
	}
}

func TestUnauthenticatedRefused(t *testing.T) {
	e := newEnv(t)
	for _, p := range []string{"/admin/", "/admin/users?q=alice", "/admin/users/okta/sub-alice", "/admin/audit",
		"/admin/audit.jsonl", "/admin/sweeps", "/admin/sweeps/nightly/plan", "/admin/queue", "/admin/config"} {
		r := e.do("GET", p, nil)
		loc, _ := url.Parse(r.header.Get("Location"))
		if r.status != http.StatusSeeOther || loc == nil || loc.Path != "/admin/login" || loc.Query().Get("rd") != p {
			t.Errorf("GET %s: %d to %q, want 303 to the login page returning to it", p, r.status, r.header.Get("Location"))
		}
	}
	for _, p := range []string{"/admin/reload", "/admin/users/okta/sub-alice/sync", "/admin/users/okta/sub-alice/reinstate", "/admin/sweeps/nightly/run"} {
		if r := e.do("POST", p, url.Values{"dry_run": {"false"}}); r.status != http.StatusSeeOther {
			t.Errorf("POST %s: %d, want 303 to the login page", p, r.status)
		}
	}
	for _, p := range []string{"/admin/api/users?q=a", "/admin/api/audit", "/admin/api/queue", "/admin/api/config", "/admin/api/sweeps"} {
		r := e.do("GET", p, nil)
		if r.status != http.StatusUnauthorized || !strings.HasPrefix(r.header.Get("WWW-Authenticate"), "Bearer") ||
			!strings.Contains(r.header.Get("Content-Type"), "json") {
			t.Errorf("GET %s: %d %q, want 401 JSON with a Bearer challenge", p, r.status, r.header.Get("WWW-Authenticate"))
		}
	}
	// A browser session is no key to the API: it is bearer-only.
	if r := e.do("GET", "/admin/api/queue", nil, "Cookie", e.loginCookie()); r.status != http.StatusUnauthorized {
		t.Errorf("API with the admin cookie: %d, want 401", r.status)
	}
	if r := e.do("GET", "/metrics", nil); r.status != http.StatusUnauthorized {
		t.Errorf("metrics without token: %d, want 401", r.status)
	}
	if r := e.do("GET", "/metrics", nil, bearer(adminToken)...); r.status != http.StatusOK || !strings.Contains(r.body, "usher_logins_total") {
		t.Errorf("metrics with token: %d %q", r.status, r.body)
	}
	if len(e.actions.Calls()) != 0 {
		t.Errorf("unauthenticated requests called actions: %q", e.actions.Calls())
	}
}

func TestWrongToken(t *testing.T) {
	e := newEnv(t)
	for _, tc := range []struct {
		name string
		hdr  []string
		want int
	}{
		{"wrong bearer on API", bearer("nope"), http.StatusUnauthorized},
		{"prefix of the token", bearer(adminToken[:10]), http.StatusUnauthorized},
		{"basic scheme", []string{"Authorization", "Basic " + adminToken}, http.StatusUnauthorized},
		{"right bearer", bearer(adminToken), http.StatusOK},
	} {
		if r := e.do("GET", "/admin/api/queue", nil, tc.hdr...); r.status != tc.want {
			t.Errorf("%s: %d, want %d", tc.name, r.status, tc.want)
		}
	}
	if r := e.do("GET", "/admin/", nil, bearer("nope")...); r.status != http.StatusUnauthorized {
		t.Errorf("wrong bearer on a page: %d, want 401", r.status)
	}
	r := e.do("POST", "/admin/login", url.Values{"token": {"nope"}})
	if r.status != http.StatusUnauthorized || len(r.header.Values("Set-Cookie")) != 0 {
		t.Errorf("login with a wrong token: %d, cookies %q", r.status, r.header.Values("Set-Cookie"))
	}
	// A forged cookie opens nothing.
	if r := e.do("GET", "/admin/", nil, "Cookie", CookieName+"=forged"); r.status != http.StatusSeeOther {
		t.Errorf("forged admin cookie: %d, want 303 to login", r.status)
	}
	// After login, the cookie is enough for the pages.
	if r := e.do("GET", "/admin/", nil, "Cookie", e.loginCookie()); r.status != http.StatusOK || !strings.Contains(r.body, "admin:token") {
		t.Errorf("overview with the admin cookie: %d", r.status)
	}
}

func TestLoginKeepsReturnOnAdminPages(t *testing.T) {
	e := newEnv(t)
	for _, rd := range []string{"https://evil.example/", "//evil.example/admin", "/\\evil.example", "/usher/logout"} {
		r := e.do("POST", "/admin/login", url.Values{"token": {adminToken}, "rd": {rd}})
		if r.status != http.StatusSeeOther || r.header.Get("Location") != "/admin/" {
			t.Errorf("rd %q: %d to %q, want /admin/", rd, r.status, r.header.Get("Location"))
		}
	}
	r := e.do("GET", "/admin/login", nil)
	if r.status != http.StatusOK || !strings.Contains(r.body, `name="token"`) || !strings.Contains(r.body, "https://sso.example.com/usher/login") ||
		!strings.Contains(r.body, "separate port") {
		t.Errorf("login page: %d, want the token form and the SSO link with the port note: %s", r.status, r.body)
	}
}

func TestSSO(t *testing.T) {
	e := newEnv(t)
	r := e.do("GET", "/admin/", nil, "Cookie", e.ssoCookie("mallory", "engineering"))
	if r.status != http.StatusForbidden || !strings.Contains(r.body, adminGroup) {
		t.Errorf("session without the admin group: %d, want 403 naming the group", r.status)
	}
	cookie := e.ssoCookie("ada", "engineering", adminGroup)
	if r := e.do("GET", "/admin/", nil, "Cookie", cookie); r.status != http.StatusOK || !strings.Contains(r.body, "admin:ada") {
		t.Errorf("session with the admin group: %d", r.status)
	}
	tok := e.csrfFrom("/admin/config", cookie)
	if r := e.do("POST", "/admin/reload", url.Values{"csrf": {tok}}, "Cookie", cookie); r.status != http.StatusOK {
		t.Fatalf("reload as SSO admin: %d %s", r.status, r.body)
	}
	if got := e.actions.Calls(); !slices.Equal(got, []string{"reload admin:ada"}) {
		t.Errorf("calls %q, want one reload by admin:ada", got)
	}
	// The admin group counts only from the configured IdP.
	partner := e.codec.NewSession()
	partner.IdP, partner.Subject, partner.Username, partner.Groups = "partner-idp", "p-1", "eve", []string{adminGroup}
	rec := httptest.NewRecorder()
	if err := e.codec.Save(rec, partner); err != nil {
		t.Fatal(err)
	}
	pc := rec.Result().Cookies()[0]
	if r := e.do("GET", "/admin/", nil, "Cookie", pc.Name+"="+pc.Value); r.status != http.StatusForbidden {
		t.Errorf("admin group from another IdP: %d, want 403", r.status)
	}
	// The token of one admin's session is not another's.
	other := e.ssoCookie("grace", adminGroup)
	if r := e.do("POST", "/admin/reload", url.Values{"csrf": {tok}}, "Cookie", other); r.status != http.StatusForbidden {
		t.Errorf("another session's CSRF token: %d, want 403", r.status)
	}
}

func TestCSRF(t *testing.T) {
	for _, tc := range []struct {
		path string
		form url.Values
		call string
	}{
		{"/admin/reload", url.Values{}, "reload admin:token"},
		{"/admin/users/okta/sub-alice/sync", url.Values{}, "sync okta sub-alice admin:token"},
		{"/admin/users/okta/sub-alice/reinstate", url.Values{}, "reinstate okta sub-alice admin:token"},
		{"/admin/sweeps/nightly/run", url.Values{"dry_run": {"false"}}, "run nightly dry=false admin:token"},
		{"/admin/sweeps/nightly/run", url.Values{"dry_run": {"true"}}, "run nightly dry=true admin:token"},
		{"/admin/link", url.Values{"idp": {"okta"}, "subject": {"00u-x"}, "username": {"localadmin"}}, "link okta 00u-x localadmin admin:token"},
		{"/admin/directories/corp/sync", url.Values{}, "start corp admin:token"},
		{"/admin/directories/corp/dry-run", url.Values{}, "dry corp admin:token"},
		{"/admin/users/okta/sub-alice/directory-sync", url.Values{}, "person okta sub-alice admin:token"},
		{"/admin/holds/okta/sub-alice/release", url.Values{}, "release okta sub-alice admin:token"},
		{"/admin/holds/okta/sub-alice/drop", url.Values{}, "drop okta sub-alice admin:token"},
		{"/admin/holds/okta/release-all", url.Values{}, "release-all okta admin:token"},
		{"/admin/holds/okta/drop-all", url.Values{}, "drop-all okta admin:token"},
	} {
		t.Run(tc.path+" "+tc.form.Get("dry_run"), func(t *testing.T) {
			e := newEnv(t)
			seed(t, e.store)
			cookie := e.loginCookie()
			tok := e.csrfFrom("/admin/", cookie)
			// A token with its first character changed (never to itself).
			flip := "x"
			if tok[0] == 'x' {
				flip = "y"
			}
			for _, bad := range []string{"", flip + tok[1:], e.codec.CSRFToken(&session.Session{ID: "someone-else"})} {
				f := cloneForm(tc.form)
				if bad != "" {
					f.Set("csrf", bad)
				}
				if r := e.do("POST", tc.path, f, "Cookie", cookie); r.status != http.StatusForbidden {
					t.Errorf("csrf %q: %d, want 403", bad, r.status)
				}
			}
			if got := e.actions.Calls(); len(got) != 0 {
				t.Fatalf("refused POSTs called %q", got)
			}
			f := cloneForm(tc.form)
			f.Set("csrf", tok)
			if r := e.do("POST", tc.path, f, "Cookie", cookie); r.status != http.StatusOK && r.status != http.StatusSeeOther {
				t.Fatalf("with the right token: %d %s", r.status, r.body)
			}
			if got := e.actions.Calls(); !slices.Equal(got, []string{tc.call}) {
				t.Errorf("calls %q, want exactly %q", got, tc.call)
			}
		})
	}
}

func cloneForm(v url.Values) url.Values {
	out := url.Values{}
	for k, vs := range v {
		out[k] = slices.Clone(vs)
	}
	return out
}

func TestGetOnActionsChangesNothing(t *testing.T) {
	e := newEnv(t)
	seed(t, e.store)
	cookie := e.loginCookie()
	for _, p := range []string{"/admin/reload", "/admin/users/okta/sub-alice/sync", "/admin/users/okta/sub-alice/reinstate", "/admin/sweeps/nightly/run?dry_run=false", "/admin/logout",
		"/admin/directories/corp/sync", "/admin/directories/corp/dry-run", "/admin/users/okta/sub-alice/directory-sync",
		"/admin/holds/okta/sub-alice/release", "/admin/holds/okta/sub-alice/drop", "/admin/holds/okta/release-all", "/admin/holds/okta/drop-all"} {
		if r := e.do("GET", p, nil, "Cookie", cookie); r.status != http.StatusMethodNotAllowed {
			t.Errorf("GET %s: %d, want 405", p, r.status)
		}
	}
	for _, p := range []string{"/admin/api/reload", "/admin/api/users/okta/sub-alice/sync", "/admin/api/users/okta/sub-alice/reinstate", "/admin/api/sweeps/nightly/run?dry_run=false",
		"/admin/api/directories/corp/sync", "/admin/api/directories/corp/dry-run", "/admin/api/users/okta/sub-alice/directory-sync",
		"/admin/api/holds/okta/sub-alice/release", "/admin/api/holds/okta/sub-alice/drop", "/admin/api/holds/okta/release-all", "/admin/api/holds/okta/drop-all"} {
		if r := e.do("GET", p, nil, bearer(adminToken)...); r.status != http.StatusMethodNotAllowed {
			t.Errorf("GET %s: %d, want 405", p, r.status)
		}
	}
	// Viewing a plan computes it and nothing else; so does the
	// directories page.
	if r := e.do("GET", "/admin/sweeps/nightly/plan", nil, "Cookie", cookie); r.status != http.StatusOK {
		t.Errorf("plan: %d", r.status)
	}
	if r := e.do("GET", "/admin/directories", nil, "Cookie", cookie); r.status != http.StatusOK {
		t.Errorf("directories: %d", r.status)
	}
	if got := e.actions.Calls(); !slices.Equal(got, []string{"plan nightly"}) {
		t.Errorf("GETs called %q, want only the read-only plan", got)
	}
}

func TestAPIActionsWithBearer(t *testing.T) {
	e := newEnv(t)
	seed(t, e.store)
	r := e.do("POST", "/admin/api/sweeps/nightly/run?dry_run=true", nil, bearer(adminToken)...)
	var plan SweepPlan
	if r.status != http.StatusOK || json.Unmarshal([]byte(r.body), &plan) != nil || plan.Policy != "nightly" || len(plan.Items) != 1 {
		t.Fatalf("API dry run: %d %s", r.status, r.body)
	}
	if r := e.do("POST", "/admin/api/sweeps/nightly/run", nil, bearer(adminToken)...); r.status != http.StatusBadRequest {
		t.Errorf("run without dry_run: %d, want 400 (a real run must be asked for)", r.status)
	}
	if r := e.do("POST", "/admin/api/sweeps/nope/run?dry_run=true", nil, bearer(adminToken)...); r.status != http.StatusNotFound {
		t.Errorf("unknown policy: %d, want 404", r.status)
	}
	r = e.do("POST", "/admin/api/users/okta/sub-alice/sync", nil, bearer(adminToken)...)
	if r.status != http.StatusOK || !strings.Contains(r.body, "added alice to jira-users") {
		t.Errorf("API sync: %d %s", r.status, r.body)
	}
	if r := e.do("POST", "/admin/api/reload", nil, bearer(adminToken)...); r.status != http.StatusOK {
		t.Errorf("API reload: %d", r.status)
	}
	want := []string{"run nightly dry=true admin:token", "sync okta sub-alice admin:token", "reload admin:token"}
	if got := e.actions.Calls(); !slices.Equal(got, want) {
		t.Errorf("calls %q, want %q", got, want)
	}
}

func TestSecurityHeaders(t *testing.T) {
	e := newEnv(t)
	for _, p := range []string{"/admin/login", "/healthz"} {
		h := e.do("GET", p, nil).header
		if csp := h.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") || !strings.Contains(csp, "frame-ancestors 'none'") ||
			!strings.Contains(csp, "style-src 'unsafe-inline'") {
			t.Errorf("%s: CSP %q", p, csp)
		}
		if h.Get("Cache-Control") != "no-store" || h.Get("X-Frame-Options") != "DENY" {
			t.Errorf("%s: Cache-Control %q, X-Frame-Options %q", p, h.Get("Cache-Control"), h.Get("X-Frame-Options"))
		}
	}
}

// An admin links an identity to an existing account: the form and the
// API refuse incomplete or odd input and say when the username is taken.
func TestLink(t *testing.T) {
	e := newEnv(t)
	seed(t, e.store)
	cookie := e.loginCookie()
	tok := e.csrfFrom("/admin/users", cookie)
	form := func(idp, subject, username string) url.Values {
		return url.Values{"csrf": {tok}, "idp": {idp}, "subject": {subject}, "username": {username}}
	}
	r := e.do("POST", "/admin/link", form("okta", "00u-x", "localadmin"), "Cookie", cookie)
	if r.status != http.StatusSeeOther || r.header.Get("Location") != "/admin/users/okta/00u-x" {
		t.Fatalf("link: %d %q", r.status, r.header.Get("Location"))
	}
	for _, bad := range []url.Values{form("", "00u-x", "a"), form("okta", "", "a"), form("okta", "x", ""), form("okta", "x\x00y", "a"), form("okta", "x", strings.Repeat("a", 600))} {
		if r := e.do("POST", "/admin/link", bad, "Cookie", cookie); r.status != http.StatusBadRequest {
			t.Errorf("link %v: %d, want 400", bad, r.status)
		}
	}
	if r := e.do("POST", "/admin/link", form("okta", "00u-y", "taken"), "Cookie", cookie); r.status != http.StatusConflict || !strings.Contains(r.body, "owns that username") {
		t.Errorf("taken: %d %s", r.status, r.body)
	}
	api := url.Values{"idp": {"okta"}, "subject": {"00u-z"}, "username": {"bob"}}
	if r := e.do("POST", "/admin/api/link", api, bearer(adminToken)...); r.status != http.StatusOK || !strings.Contains(r.body, `"linked"`) {
		t.Errorf("API link: %d %s", r.status, r.body)
	}
	want := []string{"link okta 00u-x localadmin admin:token", "link okta 00u-y taken admin:token", "link okta 00u-z bob admin:token"}
	if got := e.actions.Calls(); !slices.Equal(got, want) {
		t.Errorf("calls %q, want %q", got, want)
	}
}
