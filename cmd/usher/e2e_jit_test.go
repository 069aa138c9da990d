package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/usherhq/usher/providers/oidc/oidctest"
	"github.com/usherhq/usher/targets"
	"github.com/usherhq/usher/targets/atlassiantest"
	"github.com/usherhq/usher/targets/jira"
)

// startApps runs the four emulated apps and returns their config entries.
func (e *env) startApps(t *testing.T) string {
	t.Helper()
	e.apps = map[string]*atlassiantest.Server{}
	var b strings.Builder
	for _, a := range []struct{ name, kind, prefix, api string }{
		{"jira", "jira", "/jira", "username: admin\n      password: admin-pw"},
		{"confluence", "confluence", "/wiki", "token: {value: conf-token}"},
		{"bitbucket", "bitbucket", "/bitbucket", "username: admin\n      password: admin-pw\n      licence_groups: [stash-users]"},
		{"crowd", "crowd", "/crowd", "application: usher\n      application_password: crowd-pw"},
	} {
		srv := atlassiantest.New(atlassiantest.Kind(a.kind), atlassiantest.Options{
			AdminUser: "admin", AdminPassword: "admin-pw", Token: "conf-token",
			CrowdApp: "usher", CrowdAppPassword: "crowd-pw",
			Users:  []atlassiantest.User{{Name: "localadmin", DisplayName: "Local Admin", Email: "root@local", Active: true}},
			Groups: []string{"jira-developers", "confluence-eng", "developers", "eng", "support-team", "team-platform", "usher-users", "hand-picked"},
		})
		hs := httptest.NewServer(srv)
		t.Cleanup(hs.Close)
		e.apps[a.name] = srv
		fmt.Fprintf(&b, "  - name: %s\n    kind: %s\n    upstream: %s\n    route: {path_prefix: %s}\n    api:\n      %s\n", a.name, a.kind, hs.URL, a.prefix, a.api)
	}
	return b.String()
}

// calls counts app calls across the emulators since the last reset.
func (e *env) calls() (reads, writes int) {
	for _, s := range e.apps {
		reads += s.Reads()
		writes += s.Writes()
	}
	return reads, writes
}

func (e *env) resetCalls() {
	for _, s := range e.apps {
		s.ResetCalls()
	}
}

const jitMapping = `      attributes:
        department: {claim: department}
      groups:
        map:
          - idp_group: engineering
            groups: {jira: [jira-developers], confluence: [confluence-eng], bitbucket: [developers], crowd: [eng]}
          - idp_group: support
            groups: {"*": [support-team]}
          - idp_group: admins
            groups: {jira: [jira-administrators]}
        rules:
          - match: "^team-(.+)$"
            groups: {"*": ["team-$1"]}
        defaults: {"*": [usher-users]}
`

func groupsOf(t *testing.T, s *atlassiantest.Server, user string) []string {
	t.Helper()
	u, ok := s.User(user)
	if !ok {
		t.Fatalf("%s has no user %s", s.Kind(), user)
	}
	g := append([]string(nil), u.Groups...)
	slices.Sort(g)
	return g
}

func hasAll(have []string, want ...string) bool {
	for _, w := range want {
		if !slices.Contains(have, w) {
			return false
		}
	}
	return true
}

func TestProvisioningOnLogin(t *testing.T) {
	t.Parallel()
	e := startEnvWith(t, envOptions{Apps: true, Mapping: jitMapping})
	alice := oidctest.User{
		Subject: "00u-alice", Username: "alice", Password: "pw-alice", Email: "alice@acme.test", Name: "Alice Archer",
		Groups: []string{"engineering", "team-platform", "jira-administrators"}, Claims: map[string]any{"department": "R&D"},
	}
	e.idps["acme"].SetUser(alice)

	wantStatus(t, e.login(e.browser(), "/jira/", "acme", "alice", "pw-alice"), http.StatusOK)
	appGroups := map[string][]string{
		"jira":       {"jira-developers", "team-platform", "usher-users"},
		"confluence": {"confluence-eng", "team-platform", "usher-users"},
		"bitbucket":  {"developers", "team-platform", "usher-users"},
		"crowd":      {"eng", "team-platform", "usher-users"},
	}
	for app, want := range appGroups {
		s := e.apps[app]
		u, ok := s.User("alice")
		if !ok || !u.Active || u.DisplayName != "Alice Archer" || u.Email != "alice@acme.test" {
			t.Fatalf("%s: alice = %+v, %v", app, u, ok)
		}
		if g := groupsOf(t, s, "alice"); !hasAll(g, want...) || slices.Contains(g, "jira-administrators") {
			t.Errorf("%s groups %q, want %q and never jira-administrators (an IdP group of the same name)", app, g, want)
		}
	}
	for _, app := range []string{"jira", "crowd"} {
		if u, _ := e.apps[app].User("alice"); u.Attributes["department"] != "R&D" {
			t.Errorf("%s: department attribute = %q", app, u.Attributes["department"])
		}
	}

	// An admin grants a group by hand; it must survive every later sync.
	jd := openJira(t, e)
	if err := jd.AddToGroup(context.Background(), "alice", "hand-picked"); err != nil {
		t.Fatal(err)
	}

	// Unchanged re-login: the fast path makes no app call at all.
	e.resetCalls()
	wantStatus(t, e.login(e.browser(), "/jira/", "acme", "alice", "pw-alice"), http.StatusOK)
	if r, w := e.calls(); r+w != 0 {
		t.Fatalf("unchanged re-login made %d reads and %d writes, want none", r, w)
	}

	// Moving from engineering to support: exactly the managed
	// memberships change; hand-picked and the app's default group stay.
	alice.Groups = []string{"support", "team-platform"}
	e.idps["acme"].SetUser(alice)
	e.resetCalls()
	wantStatus(t, e.login(e.browser(), "/jira/", "acme", "alice", "pw-alice"), http.StatusOK)
	g := groupsOf(t, e.apps["jira"], "alice")
	if !hasAll(g, "support-team", "team-platform", "usher-users", "hand-picked", "jira-software-users") || slices.Contains(g, "jira-developers") {
		t.Fatalf("jira groups after change: %q", g)
	}
	jr, jw := e.apps["jira"].Reads(), e.apps["jira"].Writes()
	t.Logf("one-group change in jira: %d reads, %d writes (%v)", jr, jw, e.apps["jira"].Calls())
	if jw != 2 || jr > 3 {
		t.Errorf("jira made %d reads and %d writes, want at most 3 reads (user, groups, properties) and 2 writes (add support-team, remove jira-developers): %v", jr, jw, e.apps["jira"].Calls())
	}
	r, w := e.calls()
	t.Logf("one-group change, all four apps: %d reads, %d writes", r, w)
}

func openJira(t *testing.T, e *env) targets.Target {
	t.Helper()
	for i, a := range e.cfg.Apps {
		if a.Name != "jira" {
			continue
		}
		tc, err := targetConfig(e.cfg, i)
		if err != nil {
			t.Fatal(err)
		}
		d, err := tc.(*jira.Config).Open("jira", targets.Deps{Upstream: mustParse(a.Upstream)})
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	t.Fatal("no jira app")
	return nil
}

func TestProvisioningWhenAppIsDown(t *testing.T) {
	t.Parallel()
	e := startEnvWith(t, envOptions{Apps: true, Mapping: jitMapping})
	ctx := context.Background()

	// A new person while Jira is down: the login fails with a clear page.
	e.apps["jira"].SetDown(true)
	c := e.browser()
	resp := e.get(c, e.url+"/usher/login?idp=acme&rd=/wiki/")
	cb, err := e.idps["acme"].Login(c, resp.Header.Get("Location"), "alice", "pw-alice")
	if err != nil {
		t.Fatal(err)
	}
	resp = e.get(c, cb)
	wantStatus(t, resp, http.StatusServiceUnavailable)
	if body := bodyOf(resp); !strings.Contains(body, "could not set up your account in jira") || !strings.Contains(body, "Request ID") {
		t.Fatalf("outage page: %s", body)
	}
	wantStatus(t, e.get(c, e.url+"/wiki/"), http.StatusFound) // no session was issued
	e.apps["jira"].SetDown(false)

	// Log in once with Jira up, so alice is known everywhere.
	wantStatus(t, e.login(e.browser(), "/wiki/", "acme", "alice", "pw-alice"), http.StatusOK)

	// Known person, Jira down, groups changed: the login proceeds and the
	// change waits in the queue.
	e.idps["acme"].SetUser(oidctest.User{Subject: "00u-alice", Username: "alice", Password: "pw-alice", Email: "alice@acme.test", Name: "Alice Archer", Groups: []string{"support"}})
	e.apps["jira"].SetDown(true)
	wantStatus(t, e.login(e.browser(), "/wiki/", "acme", "alice", "pw-alice"), http.StatusOK)
	if g := groupsOf(t, e.apps["confluence"], "alice"); !slices.Contains(g, "support-team") {
		t.Fatalf("confluence should have been provisioned at once: %q", g)
	}

	// usher restarts with the job still queued: nothing is lost.
	e.m.Close()
	m2 := &Main{Config: e.cfg, Log: slog.New(slog.NewTextHandler(io.Discard, nil)), NoWorker: true}
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	m2.Listen(ln)
	if err := m2.Open(ctx); err != nil {
		t.Fatal(err)
	}
	defer m2.Close()
	if n, err := m2.gen.Load().worker.Drain(ctx); err != nil || n != 0 {
		t.Fatalf("drain while jira is down: %d done, %v", n, err)
	}

	// Jira recovers; the job is due again after its backoff.
	e.apps["jira"].SetDown(false)
	m2.gen.Load().lifecycle.Now = func() time.Time { return time.Now().Add(2 * time.Hour) }
	if n, err := m2.gen.Load().worker.Drain(ctx); err != nil || n != 1 {
		t.Fatalf("drain after recovery: %d done, %v", n, err)
	}
	if g := groupsOf(t, e.apps["jira"], "alice"); !slices.Contains(g, "support-team") || slices.Contains(g, "jira-developers") {
		t.Fatalf("jira after recovery: %q", g)
	}
}

func TestSAMLLoginProvisions(t *testing.T) {
	t.Parallel()
	e := startEnvWith(t, envOptions{SAML: true, Apps: true, Mapping: jitMapping})
	c := e.browser()
	resp := e.get(c, e.url+"/usher/login?idp=corp&rd=/jira/")
	wantStatus(t, resp, http.StatusFound)
	resp = e.samlLogin(c, resp.Header.Get("Location"), "carol", "pw-carol")
	wantStatus(t, resp, http.StatusFound)
	for app, s := range e.apps {
		u, ok := s.User("carol")
		if !ok || !u.Active || u.Email != "carol@corp.test" || u.DisplayName != "Carol Chen" {
			t.Fatalf("%s: carol = %+v, %v", app, u, ok)
		}
		if g := groupsOf(t, s, "carol"); !hasAll(g, "usher-users", "support-staff") {
			t.Errorf("%s: carol's groups %q", app, g)
		}
	}
}

func TestAttributesAsHeaders(t *testing.T) {
	t.Parallel()
	e := startEnvWith(t, envOptions{Mapping: "      attributes:\n        department: {claim: department}\n", Extra: "headers:\n  attributes: {department: X-Remote-Department}\n"})
	e.idps["acme"].SetUser(oidctest.User{
		Subject: "00u-alice", Username: "alice", Password: "pw-alice", Email: "alice@acme.test", Name: "Alice Archer",
		Claims: map[string]any{"department": "R&D"},
	})
	c := e.browser()
	wantStatus(t, e.login(c, "/", "acme", "alice", "pw-alice"), http.StatusOK)
	resp := e.get(c, e.url+"/page", "X-Remote-Department", "Board", "x_remote_department", "Board")
	wantStatus(t, resp, http.StatusOK)
	if got := e.upstream.lastHeader().Values("X-Remote-Department"); len(got) != 1 || got[0] != "R&D" {
		t.Fatalf("upstream X-Remote-Department = %q, want [R&D]", got)
	}
	if got := e.upstream.lastHeader().Values("X_remote_department"); len(got) != 0 {
		t.Fatalf("a client spelling survived: %q", got)
	}
}

func TestAccessPolicyLimitsApps(t *testing.T) {
	t.Parallel()
	e := startEnvWith(t, envOptions{Apps: true, Mapping: "      access: {apps: [jira], require_groups: [engineering]}\n"})
	c := e.browser()
	wantStatus(t, e.login(c, "/jira/", "acme", "alice", "pw-alice"), http.StatusOK)
	resp := e.get(c, e.url+"/wiki/")
	wantStatus(t, resp, http.StatusForbidden)
	if body := bodyOf(resp); !strings.Contains(body, "not allowed to use confluence") {
		t.Fatalf("confluence page for a jira-only person: %s", body)
	}
	if _, ok := e.apps["confluence"].User("alice"); ok {
		t.Fatal("alice was provisioned into an app her IdP does not open")
	}
	// Someone outside the required group is refused at login with the reason.
	c2 := e.browser()
	resp = e.get(c2, e.url+"/usher/login?idp=acme&rd=/jira/")
	cb, err := e.idps["acme"].Login(c2, resp.Header.Get("Location"), "bob", "pw-mallory")
	if err != nil {
		t.Fatal(err)
	}
	resp = e.get(c2, cb)
	wantStatus(t, resp, http.StatusForbidden)
	if body := bodyOf(resp); !strings.Contains(body, "engineering") {
		t.Fatalf("refusal page does not name the reason: %s", body)
	}
}

// TestRefusedLoginLeavesNoForgottenAccount: a new person whose login is
// refused because one app is down gets no account anywhere when usher
// can tell before it starts (every app is read first); when the app
// fails only once provisioning has begun (it answers reads, refuses
// writes), the accounts the other apps made are kept and recorded rather
// than rolled back, and they stay usher's to take away although the
// person never had a session: a sweep plans them, with the Bitbucket seat
// it would free, and a SCIM deactivation removes them.
func TestRefusedLoginLeavesNoForgottenAccount(t *testing.T) {
	t.Parallel()
	e := startEnvWith(t, envOptions{Apps: true, Mapping: jitMapping, SCIM: true, Extra: sweepConfig})
	ctx := context.Background()
	login := func() {
		t.Helper()
		c := e.browser()
		resp := e.get(c, e.url+"/usher/login?idp=acme&rd=/wiki/")
		cb, err := e.idps["acme"].Login(c, resp.Header.Get("Location"), "alice", "pw-alice")
		if err != nil {
			t.Fatal(err)
		}
		wantStatus(t, e.get(c, cb), http.StatusServiceUnavailable)
	}
	e.apps["jira"].SetDown(true)
	login()
	for app, srv := range e.apps {
		if _, ok := srv.User("alice"); ok {
			t.Fatalf("%s has an account of a login refused before provisioning began", app)
		}
	}
	e.apps["jira"].SetDown(false)
	e.apps["jira"].SetReadOnly(true)
	login()
	e.apps["jira"].SetReadOnly(false)
	made := []string{"bitbucket", "confluence", "crowd"}
	for _, app := range made {
		if u, ok := e.apps[app].User("alice"); !ok || !u.Active || app == "bitbucket" && !u.Licensed {
			t.Fatalf("%s: alice = %+v, %v; want the account the refused login made", app, u, ok)
		}
	}
	if _, ok := e.apps["jira"].User("alice"); ok {
		t.Fatal("jira was down, yet has alice")
	}

	// A sweep sees her in the apps that have her account.
	if err := e.m.store.SetAccessExpiry(ctx, "acme", "00u-alice", time.Now().Add(-time.Hour)); err != nil {
		t.Fatal(err)
	}
	code, out, errOut := runCLI(t, "sweep", "--config", e.cfgPath, "--dry-run", "--json")
	if code != 0 {
		t.Fatalf("sweep --dry-run: exit %d: %s", code, errOut)
	}
	var doc struct {
		Runs []struct {
			Plan struct {
				Items []struct {
					Username, App string
					Seats         []string `json:"seats"`
				}
			}
		}
	}
	if err := json.Unmarshal([]byte(out), &doc); err != nil || len(doc.Runs) != 1 {
		t.Fatalf("dry run JSON (%v), want one run:\n%s", err, out)
	}
	res := doc.Runs[0]
	var planned []string
	for _, it := range res.Plan.Items {
		if it.Username != "alice" {
			continue
		}
		planned = append(planned, it.App)
		if it.App == "bitbucket" && !slices.Contains(it.Seats, "stash-users") {
			t.Errorf("bitbucket item frees seats %q, want stash-users", it.Seats)
		}
	}
	slices.Sort(planned)
	if !slices.Equal(planned, made) {
		t.Fatalf("the sweep plans alice in %q, want %q:\n%s", planned, made, out)
	}

	// The IdP says she is gone: every account the refused login made goes.
	code, body := e.scimDo("POST", "/Users", "scim-acme", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],
		"externalId":"00u-alice","userName":"alice","active":false,"emails":[{"primary":true,"value":"alice@acme.test"}]}`)
	if code != http.StatusCreated {
		t.Fatalf("SCIM create inactive: %d %s", code, body)
	}
	for _, app := range made {
		u, _ := e.apps[app].User("alice")
		if app == "bitbucket" && u.Licensed || app != "bitbucket" && u.Active {
			t.Errorf("%s: alice keeps access after the SCIM deactivation: %+v", app, u)
		}
	}
	if _, ok := e.apps["jira"].User("alice"); ok {
		t.Error("a deactivation created an account in jira")
	}
}

// TestEmailChangeReachesEveryApp: a new e-mail at the IdP reaches all
// four apps at the next login, Confluence included, whose user resource
// does not report e-mail; the login after that makes no app call.
func TestEmailChangeReachesEveryApp(t *testing.T) {
	t.Parallel()
	e := startEnvWith(t, envOptions{Apps: true, Mapping: jitMapping})
	alice := testUsers["acme"][0]
	wantStatus(t, e.login(e.browser(), "/jira/", "acme", "alice", "pw-alice"), http.StatusOK)
	alice.Email = "alice.archer@acme.test"
	e.idps["acme"].SetUser(alice)
	wantStatus(t, e.login(e.browser(), "/jira/", "acme", "alice", "pw-alice"), http.StatusOK)
	for app, s := range e.apps {
		if u, _ := s.User("alice"); u.Email != alice.Email {
			t.Errorf("%s: e-mail %q, want %q", app, u.Email, alice.Email)
		}
	}
	e.resetCalls()
	wantStatus(t, e.login(e.browser(), "/jira/", "acme", "alice", "pw-alice"), http.StatusOK)
	if r, w := e.calls(); r+w != 0 {
		t.Errorf("unchanged re-login made %d reads and %d writes, want none", r, w)
	}
}
