package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/usherhq/usher/config"
	"github.com/usherhq/usher/providers/oidc/oidctest"
	"github.com/usherhq/usher/providers/saml/samltest"
	"github.com/usherhq/usher/targets/atlassiantest"
)

// env is a running usher with two real OIDC IdPs and a recording upstream.
type env struct {
	t        *testing.T
	m        *Main
	url      string
	idps     map[string]*oidctest.IdP
	saml     *samltest.IdP
	upstream *recorder
	apps     map[string]*atlassiantest.Server
	cfg      *config.Config
	cfgPath  string
	urlA     string
}

// replica starts another usher on the same config (and so the same
// store and session keys), as a second replica behind a load balancer
// would run, and returns its base URL.
func (e *env) replica(t *testing.T) (*Main, string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	m := &Main{Config: e.cfg, Log: slog.New(slog.NewTextHandler(io.Discard, nil)), NoWorker: true, RevocationPoll: 500 * time.Millisecond,
		KeyRotateEvery: e.m.KeyRotateEvery, KeyPrepublish: e.m.KeyPrepublish, KeyRefresh: e.m.KeyRefresh}
	m.Listen(ln)
	if err := m.Open(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m, "http://" + ln.Addr().String()
}

// recorder is an upstream app that remembers the headers of each request.
type recorder struct {
	mu   sync.Mutex
	last http.Header
	srv  *httptest.Server
}

func (r *recorder) lastHeader() http.Header {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.last
}

func newRecorder(t *testing.T) *recorder {
	rec := &recorder{}
	rec.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec.mu.Lock()
		rec.last = r.Header.Clone()
		rec.mu.Unlock()
		fmt.Fprintf(w, "app saw %s at %s", r.Header.Get("X-Remote-User"), r.URL.RequestURI())
	}))
	t.Cleanup(rec.srv.Close)
	return rec
}

var testUsers = map[string][]oidctest.User{
	"acme": {
		{Subject: "00u-alice", Username: "alice", Password: "pw-alice", Email: "alice@acme.test", Name: "Alice Archer", Groups: []string{"engineering", "jira-users"}},
		{Subject: "00u-mallory", Username: "bob", Password: "pw-mallory", Email: "mallory@acme.test", Name: "Mallory"},
	},
	"globex": {
		{Subject: "a6f3-bob", Username: "bob", Password: "pw-bob", Email: "bob@globex.test", Name: "Bob Baker", Groups: []string{"sales"}},
	},
}

// startEnv runs usher with OIDC IdPs "acme" (acme.test) and "globex"
// (globex.test).
func startEnv(t *testing.T) *env { return startEnvWith(t, envOptions{}) }

type envOptions struct {
	// SAML adds a SAML IdP "corp" (corp.test) from crewjam's samlidp.
	SAML bool
	// Apps adds emulated Jira, Confluence, Bitbucket and Crowd with
	// provisioning, routed at /jira, /wiki, /bitbucket and /crowd.
	Apps bool
	// Mapping is the YAML body of every IdP's mapping block (indented
	// by six spaces).
	Mapping string
	// SCIM lets acme push users with bearer token "scim-acme" (and globex
	// with "scim-globex"), applied to the apps at once.
	SCIM bool
	// SCIMBrake is acme's scim.brake block, in flow style.
	SCIMBrake string
	// SCIMNotAutomatic leaves creates and updates to logins (automatic:
	// false); deactivations still apply.
	SCIMNotAutomatic bool
	// Extra is appended to the config file (top-level YAML).
	Extra string
	// ExtraApps is appended to the apps list (entries indented by two).
	ExtraApps string
	// DSN switches the store to this PostgreSQL database.
	DSN string
	// AdminSSOGroup lets members of this IdP group into the admin pages.
	AdminSSOGroup string
	// MoreApps is appended to the apps list (YAML list items).
	MoreApps string
	// Tune adjusts the Main before it opens.
	Tune func(*Main)
	// Upstream replaces the recording upstream of app "app" (the load
	// test's upstream runs in its own process).
	Upstream string
	// Server is added to the server block (keys indented by two spaces).
	Server string
}

func startEnvWith(t *testing.T, o envOptions) *env {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	public := "http://" + ln.Addr().String()
	e := &env{t: t, url: public, idps: map[string]*oidctest.IdP{}, upstream: newRecorder(t)}
	var idps strings.Builder
	for _, id := range []string{"acme", "globex"} {
		idp, err := oidctest.Start(oidctest.Options{
			Name:  id,
			Users: testUsers[id],
			Clients: []oidctest.Client{{
				ID: "usher-" + id, Secret: "s3cret-" + id,
				RedirectURIs:           []string{public + "/usher/oidc/" + id + "/callback"},
				PostLogoutRedirectURIs: []string{public + "/usher/logged-out"},
			}},
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { idp.Close() })
		e.idps[id] = idp
		fmt.Fprintf(&idps, "  - id: %s\n    name: %s IdP\n    type: oidc\n    domains: [%s.test]\n    config:\n      issuer: %s\n      client_id: usher-%s\n      client_secret: {value: s3cret-%s}\n",
			id, id, id, idp.Issuer(), id, id)
		if o.Mapping != "" {
			fmt.Fprintf(&idps, "    mapping:\n%s", o.Mapping)
		}
		if o.SCIM {
			brake := ""
			if o.SCIMBrake != "" && id == "acme" {
				brake = ", brake: " + o.SCIMBrake
			}
			fmt.Fprintf(&idps, "    scim: {token: {value: scim-%s}, automatic: %t%s}\n", id, !o.SCIMNotAutomatic, brake)
		}
	}
	upstream := e.upstream.srv.URL
	if o.Upstream != "" {
		upstream = o.Upstream
	}
	dir := t.TempDir()
	if o.SAML {
		e.saml = startSAMLIdP(t, dir, &idps)
	}
	var apps string
	if o.Apps {
		apps = e.startApps(t)
	}
	apps += o.ExtraApps + o.MoreApps
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	storeYAML := ""
	if o.DSN != "" {
		storeYAML = fmt.Sprintf("store:\n  driver: postgres\n  dsn: {value: %q}\n", o.DSN)
	}
	adminYAML := "admin:\n  listen: 127.0.0.1:0\n  token: {value: admin-token}\n"
	if o.AdminSSOGroup != "" {
		adminYAML += "  sso_group: " + o.AdminSSOGroup + "\n  sso_idp: acme\n"
	}
	cfgText := storeYAML + adminYAML + fmt.Sprintf(`server:
  public_url: %s
  data_dir: %s
%ssession:
  keys: [%s]
apps:
  - name: app
    kind: generic
    upstream: %s
    route: {path_prefix: /}
    pass_through:
      authorization: true
      paths: [/status]
%sidps:
%s%s`, public, dir, o.Server, hex.EncodeToString(key), upstream, apps, idps.String(), o.Extra)
	path := filepath.Join(dir, "usher.yaml")
	e.cfgPath = path
	if err := os.WriteFile(path, []byte(cfgText), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := loadConfig(path)
	if err != nil {
		t.Fatalf("config: %v\n%s", err, cfgText)
	}
	e.cfg = cfg
	e.m = &Main{Config: cfg, Log: slog.New(slog.NewTextHandler(io.Discard, nil)), NoWorker: true}
	if o.Tune != nil {
		o.Tune(e.m)
	}
	e.m.Listen(ln)
	if err := e.m.Open(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.m.Close() })
	e.urlA = e.url
	if e.saml != nil {
		registerSP(t, e.saml, e.url+"/usher/saml/corp/metadata")
	}
	return e
}

// settle writes what usher batches (a sign-in's audit record, last-login
// times), as its background loops would within a second.
func (e *env) settle() {
	e.m.audit.Flush(context.Background())
	e.m.logins.Flush(context.Background())
}

// browser is a client with a cookie jar that does not follow redirects,
// so each hop can be checked.
func (e *env) browser() *http.Client {
	jar, _ := cookiejar.New(nil)
	return &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

func (e *env) get(c *http.Client, u string, hdr ...string) *http.Response {
	e.t.Helper()
	req, err := http.NewRequest("GET", u, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	req.Header.Set("Accept", "text/html")
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Add(hdr[i], hdr[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	resp.Body = io.NopCloser(strings.NewReader(string(body)))
	return resp
}

func bodyOf(resp *http.Response) string {
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

func wantStatus(t *testing.T, resp *http.Response, code int) {
	t.Helper()
	if resp.StatusCode != code {
		t.Fatalf("%s %s: status %d, want %d\n%s", resp.Request.Method, resp.Request.URL, resp.StatusCode, code, bodyOf(resp))
	}
}

// login runs a whole login from an unauthenticated page visit and returns
// the response of the final page, as the upstream served it.
func (e *env) login(c *http.Client, page, idp, username, password string) *http.Response {
	e.t.Helper()
	resp := e.get(c, e.url+page)
	wantStatus(e.t, resp, http.StatusFound)
	loginURL := resp.Header.Get("Location")
	if !strings.HasPrefix(loginURL, e.url+"/usher/login?") {
		e.t.Fatalf("redirected to %q, want the login page", loginURL)
	}
	resp = e.get(c, loginURL+"&idp="+idp)
	wantStatus(e.t, resp, http.StatusFound)
	return e.finish(c, resp.Header.Get("Location"), idp, username, password)
}

// finish logs in at the IdP's authorization URL and follows the callback.
func (e *env) finish(c *http.Client, authURL, idp, username, password string) *http.Response {
	e.t.Helper()
	if !strings.HasPrefix(authURL, e.idps[idp].Issuer()) {
		e.t.Fatalf("login went to %q, want IdP %s", authURL, idp)
	}
	cb, err := e.idps[idp].Login(c, authURL, username, password)
	if err != nil {
		e.t.Fatalf("IdP login: %v", err)
	}
	resp := e.get(c, cb)
	wantStatus(e.t, resp, http.StatusFound)
	return e.get(c, e.url+resp.Header.Get("Location"))
}

func TestLoginReachesUpstreamWithIdentity(t *testing.T) {
	t.Parallel()
	e := startEnv(t)
	c := e.browser()
	resp := e.login(c, "/browse/ABC-1?focus=1", "acme", "alice", "pw-alice")
	wantStatus(t, resp, http.StatusOK)
	if got := bodyOf(resp); got != "app saw alice at /browse/ABC-1?focus=1" {
		t.Fatalf("upstream answered %q", got)
	}
	h := e.upstream.lastHeader()
	for k, want := range map[string]string{
		"X-Remote-User":   "alice",
		"X-Remote-Email":  "alice@acme.test",
		"X-Remote-Name":   "Alice Archer",
		"X-Remote-Groups": "engineering,jira-users",
	} {
		if got := h.Values(k); len(got) != 1 || got[0] != want {
			t.Errorf("upstream header %s = %q, want [%q]", k, got, want)
		}
	}

	// usher's own cookies never reach the app.
	if ck := h.Get("Cookie"); strings.Contains(ck, "usher") {
		t.Errorf("upstream saw usher's cookies: %q", ck)
	}

	// The session now carries the user; spoofed headers are replaced.
	resp = e.get(c, e.url+"/x", "X-Remote-User", "admin", "x_remote_user", "admin", "Connection", "X-Remote-User")
	wantStatus(t, resp, http.StatusOK)
	if got := e.upstream.lastHeader().Values("X-Remote-User"); len(got) != 1 || got[0] != "alice" {
		t.Fatalf("spoofed request: upstream saw X-Remote-User %q", got)
	}
}

func TestChooserAndDiscovery(t *testing.T) {
	t.Parallel()
	e := startEnv(t)
	c := e.browser()
	resp := e.get(c, e.url+"/usher/login?rd=/wiki")
	wantStatus(t, resp, http.StatusOK)
	body := bodyOf(resp)
	for _, want := range []string{"acme IdP", "globex IdP", `name="email"`} {
		if !strings.Contains(body, want) {
			t.Errorf("chooser lacks %q", want)
		}
	}

	// Home-realm discovery sends bob@globex.test to globex, keeping rd.
	resp, err := c.PostForm(e.url+"/usher/login", url.Values{"email": {"Bob@Globex.TEST"}, "rd": {"/wiki"}})
	if err != nil {
		t.Fatal(err)
	}
	wantStatus(t, resp, http.StatusFound)
	resp = e.finish(c, resp.Header.Get("Location"), "globex", "bob", "pw-bob")
	wantStatus(t, resp, http.StatusOK)
	if got := bodyOf(resp); got != "app saw bob at /wiki" {
		t.Fatalf("upstream answered %q", got)
	}

	// An unknown domain stays on the chooser with a message.
	resp, err = c.PostForm(e.url+"/usher/login", url.Values{"email": {"eve@initech.test"}})
	if err != nil {
		t.Fatal(err)
	}
	wantStatus(t, resp, http.StatusBadRequest)
	if body := bodyOf(resp); !strings.Contains(body, "No sign-in option is set up for initech.test") {
		t.Fatalf("unknown domain page: %s", body)
	}
}

func TestUnauthenticatedRequests(t *testing.T) {
	t.Parallel()
	e := startEnv(t)
	c := e.browser()
	for _, tc := range []struct {
		name   string
		method string
		hdr    []string
		want   int
	}{
		{"browser navigation", "GET", []string{"Accept", "text/html", "Sec-Fetch-Mode", "navigate"}, http.StatusFound},
		{"xhr", "GET", []string{"Accept", "text/html", "X-Requested-With", "XMLHttpRequest"}, http.StatusUnauthorized},
		{"fetch", "GET", []string{"Accept", "text/html", "Sec-Fetch-Mode", "cors"}, http.StatusUnauthorized},
		{"rest client", "GET", []string{"Accept", "application/json"}, http.StatusUnauthorized},
		{"post", "POST", []string{"Accept", "text/html"}, http.StatusUnauthorized},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(tc.method, e.url+"/rest/api/2/myself", nil)
			for i := 0; i < len(tc.hdr); i += 2 {
				req.Header.Set(tc.hdr[i], tc.hdr[i+1])
			}
			resp, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tc.want {
				t.Fatalf("status %d, want %d", resp.StatusCode, tc.want)
			}
		})
	}

	// Pass-through traffic reaches the app with identity headers stripped.
	for _, hdr := range [][]string{
		{"Authorization", "Basic YWRtaW46YWRtaW4=", "X-Remote-User", "admin"},
		{"Authorization", "Bearer pat-123", "x-remote-user", "admin"},
	} {
		resp := e.get(c, e.url+"/rest/api/2/myself", hdr...)
		wantStatus(t, resp, http.StatusOK)
		if got := e.upstream.lastHeader().Values("X-Remote-User"); len(got) != 0 {
			t.Fatalf("pass-through kept X-Remote-User %q", got)
		}
	}
	resp := e.get(c, e.url+"/status", "X-Remote-User", "admin")
	wantStatus(t, resp, http.StatusOK)
	if got := e.upstream.lastHeader().Values("X-Remote-User"); len(got) != 0 {
		t.Fatalf("pass-through path kept X-Remote-User %q", got)
	}
	// A pass-through prefix cannot be used to reach other paths.
	for _, p := range []string{"/status/../secure/admin", "/status/%2e%2e/secure/admin", "/status/./x", "/status/..;/secure/admin", "/status/%2e%2e%3b/secure/admin"} {
		req, _ := http.NewRequest("GET", e.url+p, nil)
		req.URL.Opaque = "//" + req.URL.Host + p // send the path as written
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("GET %s: status %d, want 400", p, resp.StatusCode)
		}
	}
}

func TestCallbackRefusals(t *testing.T) {
	t.Parallel()
	e := startEnv(t)

	// A login finished at globex, answered at acme's callback.
	c := e.browser()
	resp := e.get(c, e.url+"/usher/login?idp=globex&rd=/")
	wantStatus(t, resp, http.StatusFound)
	cb, err := e.idps["globex"].Login(c, resp.Header.Get("Location"), "bob", "pw-bob")
	if err != nil {
		t.Fatal(err)
	}
	swapped := strings.Replace(cb, "/usher/oidc/globex/", "/usher/oidc/acme/", 1)
	resp = e.get(c, swapped)
	wantStatus(t, resp, http.StatusForbidden)

	// The genuine callback, twice: the second (a replay) is refused.
	c = e.browser()
	resp = e.get(c, e.url+"/usher/login?idp=acme&rd=/")
	cb, err = e.idps["acme"].Login(c, resp.Header.Get("Location"), "alice", "pw-alice")
	if err != nil {
		t.Fatal(err)
	}
	resp = e.get(c, cb)
	wantStatus(t, resp, http.StatusFound)
	resp = e.get(c, cb)
	wantStatus(t, resp, http.StatusForbidden)

	// A callback without any flow (no cookie, made-up state).
	resp = e.get(e.browser(), e.url+"/usher/oidc/acme/callback?code=abc&state=AAAAAAAAAAAAAAAAAAAAAA")
	wantStatus(t, resp, http.StatusForbidden)
	if body := bodyOf(resp); !strings.Contains(body, "Request ID") {
		t.Fatalf("refusal page lacks a request ID: %s", body)
	}
}

func TestUsernameCollisionAcrossIdPs(t *testing.T) {
	t.Parallel()
	e := startEnv(t)
	resp := e.login(e.browser(), "/", "globex", "bob", "pw-bob")
	wantStatus(t, resp, http.StatusOK)

	// acme's "bob" is a different person (subject 00u-mallory): refused.
	c := e.browser()
	resp = e.get(c, e.url+"/usher/login?idp=acme&rd=/")
	cb, err := e.idps["acme"].Login(c, resp.Header.Get("Location"), "bob", "pw-mallory")
	if err != nil {
		t.Fatal(err)
	}
	resp = e.get(c, cb)
	wantStatus(t, resp, http.StatusForbidden)
	if body := bodyOf(resp); !strings.Contains(body, "already belongs to another account") {
		t.Fatalf("collision page: %s", body)
	}
}

func TestOpenRedirectRefused(t *testing.T) {
	t.Parallel()
	e := startEnv(t)
	for _, rd := range []string{
		"//evil.example", "/\\evil.example", "https://evil.example/", "/%2F%2Fevil.example",
		"/%5Cevil.example", "/%252F%252Fevil.example", "HTTPS://evil.example", "//EVIL.example/x",
		"javascript:alert(1)", "\t//evil.example", "/ /evil", "http://" + strings.TrimPrefix(e.url, "http://") + "@evil.example/",
	} {
		resp := e.get(e.browser(), e.url+"/usher/login?idp=acme&rd="+url.QueryEscape(rd))
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("rd=%q: status %d, want 400 (Location %q)", rd, resp.StatusCode, resp.Header.Get("Location"))
		}
	}
	for _, rd := range []string{"/", "/browse/X-1?a=b#c", e.url + "/wiki"} {
		resp := e.get(e.browser(), e.url+"/usher/login?idp=acme&rd="+url.QueryEscape(rd))
		if resp.StatusCode != http.StatusFound {
			t.Errorf("rd=%q: status %d, want 302", rd, resp.StatusCode)
		}
	}
}

func TestLogout(t *testing.T) {
	t.Parallel()
	e := startEnv(t)
	c := e.browser()
	wantStatus(t, e.login(c, "/", "acme", "alice", "pw-alice"), http.StatusOK)

	// GET shows a form; a POST without the CSRF token is refused.
	resp := e.get(c, e.url+"/usher/logout")
	wantStatus(t, resp, http.StatusOK)
	body := bodyOf(resp)
	i := strings.Index(body, `name="csrf" value="`)
	if i < 0 {
		t.Fatalf("logout page has no CSRF token: %s", body)
	}
	token := body[i+len(`name="csrf" value="`):]
	token = token[:strings.IndexByte(token, '"')]
	resp, err := c.PostForm(e.url+"/usher/logout", url.Values{"csrf": {"forged"}})
	if err != nil {
		t.Fatal(err)
	}
	wantStatus(t, resp, http.StatusForbidden)
	wantStatus(t, e.get(c, e.url+"/still-in"), http.StatusOK)

	// The real form logs out and goes to the IdP's end_session endpoint.
	old := c.Jar.Cookies(mustURL(e.url))
	resp, err = c.PostForm(e.url+"/usher/logout", url.Values{"csrf": {token}})
	if err != nil {
		t.Fatal(err)
	}
	wantStatus(t, resp, http.StatusSeeOther)
	if loc := resp.Header.Get("Location"); !strings.HasPrefix(loc, e.idps["acme"].Issuer()) {
		t.Fatalf("logout went to %q, want the IdP's end_session endpoint", loc)
	}
	wantStatus(t, e.get(c, e.url+"/after"), http.StatusFound)

	// The old cookie, replayed, no longer works either: it was revoked.
	c2 := e.browser()
	c2.Jar.SetCookies(mustURL(e.url), old)
	wantStatus(t, e.get(c2, e.url+"/after"), http.StatusFound)
}

func mustURL(s string) *url.URL {
	u, err := url.Parse(s)
	if err != nil {
		panic(err)
	}
	return u
}

func TestAbandonedLoginsDoNotPileUpCookies(t *testing.T) {
	t.Parallel()
	e := startEnv(t)
	c := e.browser()
	for range 12 {
		wantStatus(t, e.get(c, e.url+"/usher/login?idp=acme&rd=/"), http.StatusFound)
	}
	n := 0
	for _, ck := range c.Jar.Cookies(mustURL(e.url)) {
		if strings.HasPrefix(ck.Name, "usher_flow_") {
			n++
		}
	}
	if n > 4 {
		t.Fatalf("%d flow cookies after 12 abandoned logins, want at most 4", n)
	}
	// The latest login still completes.
	resp := e.get(c, e.url+"/usher/login?idp=acme&rd=/x")
	cb, err := e.idps["acme"].Login(c, resp.Header.Get("Location"), "alice", "pw-alice")
	if err != nil {
		t.Fatal(err)
	}
	wantStatus(t, e.get(c, cb), http.StatusFound)
}

// TestAdminThroughSSO: members of the admin group reach the admin pages
// with their usher session; others are refused.
func TestAdminThroughSSO(t *testing.T) {
	t.Parallel()
	e := startEnvWith(t, envOptions{AdminSSOGroup: "engineering"})
	admin := "http://" + e.m.AdminAddr() + "/admin/"
	c := e.browser()
	wantStatus(t, e.login(c, "/", "acme", "alice", "pw-alice"), http.StatusOK)
	resp := e.get(c, admin)
	wantStatus(t, resp, http.StatusOK)
	if body := bodyOf(resp); !strings.Contains(body, "alice") {
		t.Fatalf("admin overview for alice: %.300s", body)
	}
	c2 := e.browser()
	wantStatus(t, e.login(c2, "/", "globex", "bob", "pw-bob"), http.StatusOK)
	wantStatus(t, e.get(c2, admin), http.StatusForbidden)
	if resp := e.get(e.browser(), admin); resp.StatusCode != http.StatusSeeOther && resp.StatusCode != http.StatusFound {
		t.Fatalf("anonymous admin request: %d, want a redirect to the login page", resp.StatusCode)
	}
}
