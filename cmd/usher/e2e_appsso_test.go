package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/usherhq/usher/jit"
	"github.com/usherhq/usher/store"
	"github.com/usherhq/usher/store/postgres/pgtest"
	"github.com/usherhq/usher/targets/atlassiantest"
)

// ssoJira is an emulated Jira that people reach directly (not through
// usher's proxy) and that signs them in with its built-in OIDC client
// through usher's OpenID Provider: the "provider only" mode.
type ssoJira struct {
	srv *atlassiantest.Server
	url string
}

func startSSOJira(t *testing.T) (*ssoJira, string) {
	t.Helper()
	srv := atlassiantest.New(atlassiantest.Jira, atlassiantest.Options{
		AdminUser: "admin", AdminPassword: "admin-pw",
		Groups: []string{"jira-developers", "usher-users", "support-team"},
	})
	hs := httptest.NewServer(srv)
	t.Cleanup(hs.Close)
	yaml := fmt.Sprintf(`  - name: jira-sso
    kind: jira
    url: %s
    api: {username: admin, password: admin-pw}
    sso:
      client_id: jira-sso
      client_secret: {value: "sso secret/1"}
`, hs.URL)
	return &ssoJira{srv: srv, url: hs.URL}, yaml
}

// enable configures the app's "Authentication methods" as
// docs/apps/atlassian-sso.md says.
func (j *ssoJira) enable(t *testing.T, issuer string) {
	t.Helper()
	if err := j.srv.EnableSSO(context.Background(), atlassiantest.SSO{
		BaseURL: j.url, IssuerURL: issuer, ClientID: "jira-sso", ClientSecret: "sso secret/1",
		AdditionalScopes: []string{"profile", "email"}, UsernameClaim: "${preferred_username}",
	}); err != nil {
		t.Fatal(err)
	}
}

// ssoLogin visits page on the app and follows every hop: the app's
// redirect to usher, usher's login (IdP chooser → idp), the IdP, and back.
// It returns the final answer and the URLs visited.
func (e *env) ssoLogin(c *http.Client, page, idp, username, password string) (*http.Response, []string) {
	e.t.Helper()
	u := page
	var hops []string
	for range 20 {
		hops = append(hops, u)
		if strings.HasPrefix(u, e.idps[idp].Issuer()) {
			cb, err := e.idps[idp].Login(c, u, username, password)
			if err != nil {
				e.t.Fatalf("IdP login: %v", err)
			}
			u = cb
			continue
		}
		if strings.HasPrefix(u, e.url+"/usher/login?") && !strings.Contains(u, "idp=") {
			u += "&idp=" + idp // the chooser's choice
		}
		resp := e.get(c, u)
		loc := resp.Header.Get("Location")
		if resp.StatusCode/100 != 3 || loc == "" {
			return resp, hops
		}
		next, _ := resp.Request.URL.Parse(loc)
		u = next.String()
	}
	e.t.Fatalf("redirect loop: %v", hops)
	return nil, nil
}

// TestProviderOnlyApp: an app reached directly signs people in through
// usher's OpenID Provider; the first visit goes through the IdP, admits
// and provisions the person into the app (as any login does) before the
// code is issued; the usher session then serves the proxied apps too.
func TestProviderOnlyApp(t *testing.T) {
	t.Parallel()
	jira, yaml := startSSOJira(t)
	e := startEnvWith(t, envOptions{Apps: true, Mapping: jitMapping, MoreApps: yaml})
	jira.enable(t, e.url+"/usher/op")

	c := e.browser()
	resp, hops := e.ssoLogin(c, jira.url+"/browse/ABC-1", "acme", "alice", "pw-alice")
	if resp.StatusCode != http.StatusOK || !strings.Contains(bodyOf(resp), "you are alice") {
		t.Fatalf("final %d via %v\napp errors %v", resp.StatusCode, hops, jira.srv.SSOErrors())
	}
	u, ok := jira.srv.User("alice")
	if !ok || !u.Active || u.Email != "alice@acme.test" || !slices.Contains(u.Groups, "usher-users") {
		t.Fatalf("alice in the app: %+v (usher provisions before the code)", u)
	}
	// Admitted as at any login: audited once, with the login's reason.
	e.settle()
	evs, err := e.m.store.Audit(context.Background(), store.AuditFilter{IdP: "acme", Action: "login"})
	if err != nil || len(evs) != 1 {
		t.Fatalf("login audit: %v %v", evs, err)
	}

	// The same usher session reaches the proxied Jira without the IdP.
	resp = e.get(c, e.url+"/jira/")
	wantStatus(t, resp, http.StatusOK)

	// Modes in usher check.
	if sum := e.cfg.Summary(); !strings.Contains(sum, "jira-sso    jira        provider only") || !strings.Contains(sum, "OpenID Provider: issuer "+e.url+"/usher/op") {
		t.Errorf("summary:\n%s", sum)
	}
}

// TestProviderRefusesWithoutAccess: a person whose IdP does not give
// access to the app is admitted to the others but gets usher's refusal
// page for this one, never a code, and is not provisioned into it.
func TestProviderRefusesWithoutAccess(t *testing.T) {
	t.Parallel()
	jira, yaml := startSSOJira(t)
	e := startEnvWith(t, envOptions{Apps: true, Mapping: jitMapping + "      access:\n        apps: [app, jira]\n", MoreApps: yaml})
	jira.enable(t, e.url+"/usher/op")
	resp, hops := e.ssoLogin(e.browser(), jira.url+"/", "acme", "alice", "pw-alice")
	if resp.StatusCode != http.StatusForbidden || !strings.Contains(bodyOf(resp), "not allowed to use jira-sso") {
		t.Fatalf("final %d via %v", resp.StatusCode, hops)
	}
	for _, h := range hops {
		if strings.Contains(h, "/plugins/servlet/oidc/callback?") {
			t.Fatalf("a code was issued: %v", hops)
		}
	}
	if _, ok := jira.srv.User("alice"); ok {
		t.Fatal("alice was provisioned into an app she may not use")
	}
	evs, _ := e.m.store.Audit(context.Background(), store.AuditFilter{Action: string(jit.ActLoginRefused), App: "jira-sso"})
	if len(evs) != 1 || evs[0].App != "jira-sso" {
		t.Fatalf("refusal audit: %+v", evs)
	}
}

// TestProviderDeprovisioned: after deprovisioning the app account is
// deactivated (the app then refuses the person's existing product
// session), and a new sign-in through the app never gets a code.
func TestProviderDeprovisioned(t *testing.T) {
	t.Parallel()
	jira, yaml := startSSOJira(t)
	e := startEnvWith(t, envOptions{Apps: true, Mapping: jitMapping, MoreApps: yaml})
	jira.enable(t, e.url+"/usher/op")
	c := e.browser()
	resp, _ := e.ssoLogin(c, jira.url+"/", "acme", "alice", "pw-alice")
	wantStatus(t, resp, http.StatusOK)

	if _, err := e.m.gen.Load().lifecycle.Remove(context.Background(), jit.Removal{IdP: "acme", Subject: "00u-alice"}, jit.ByAdmin("test", "left")); err != nil {
		t.Fatal(err)
	}
	if u, _ := jira.srv.User("alice"); u.Active {
		t.Fatal("app account still active after deprovisioning")
	}
	// The app's own session lives on (no logout reaches it), but the app
	// refuses the deactivated account.
	resp = e.get(c, jira.url+"/")
	wantStatus(t, resp, http.StatusForbidden)

	// Signing in again: usher's session was revoked, so the IdP is asked;
	// the login refuses the deprovisioned person; no code.
	e.get(c, jira.url+"/secure/Logout!default.jspa")
	resp, hops := e.ssoLogin(c, jira.url+"/", "acme", "alice", "pw-alice")
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("deprovisioned sign-in: %d via %v", resp.StatusCode, hops)
	}
	for _, h := range hops {
		if strings.Contains(h, "/plugins/servlet/oidc/callback?") {
			t.Fatalf("a code was issued to a deprovisioned person: %v", hops)
		}
	}
}

// TestProviderPromptNone: prompt=none without a session answers
// login_required at the redirect URI.
func TestProviderPromptNone(t *testing.T) {
	t.Parallel()
	jira, yaml := startSSOJira(t)
	e := startEnvWith(t, envOptions{MoreApps: yaml})
	q := url.Values{"client_id": {"jira-sso"}, "redirect_uri": {jira.url + "/plugins/servlet/oidc/callback"}, "response_type": {"code"},
		"scope": {"openid"}, "state": {"st"}, "prompt": {"none"}}
	resp := e.get(e.browser(), e.url+"/usher/op/authorize?"+q.Encode())
	loc, _ := url.Parse(resp.Header.Get("Location"))
	if resp.StatusCode != http.StatusFound || loc.Query().Get("error") != "login_required" || loc.Query().Get("state") != "st" {
		t.Fatalf("%d %v", resp.StatusCode, loc)
	}
}

// TestProviderAcrossReplicas: on PostgreSQL, a code issued by one replica
// is redeemed at the other, once; signing keys are shared and a rotation
// made by one replica is published and used by both.
func TestProviderAcrossReplicas(t *testing.T) {
	t.Parallel()
	dsn := pgtest.DSN(t) // skips without PostgreSQL
	jira, yaml := startSSOJira(t)
	e := startEnvWith(t, envOptions{Apps: true, Mapping: jitMapping, MoreApps: yaml, DSN: dsn, Tune: func(m *Main) {
		m.KeyRotateEvery, m.KeyPrepublish, m.KeyRefresh = 4*time.Second, 1500*time.Millisecond, 250*time.Millisecond
	}})
	_, urlB := e.replica(t)
	jira.enable(t, e.url+"/usher/op")
	c := e.browser()
	resp, _ := e.ssoLogin(c, jira.url+"/", "acme", "alice", "pw-alice")
	wantStatus(t, resp, http.StatusOK)

	redirect := jira.url + "/plugins/servlet/oidc/callback"
	codeFrom := func(base string) string {
		t.Helper()
		q := url.Values{"client_id": {"jira-sso"}, "redirect_uri": {redirect}, "response_type": {"code"}, "scope": {"openid profile"}, "state": {"s"}, "nonce": {"n"}}
		resp := e.get(c, base+"/usher/op/authorize?"+q.Encode())
		loc, _ := url.Parse(resp.Header.Get("Location"))
		if loc == nil || loc.Query().Get("code") == "" {
			t.Fatalf("authorize at %s: %d %v", base, resp.StatusCode, loc)
		}
		return loc.Query().Get("code")
	}
	redeemAt := func(base, code string) (int, map[string]any) {
		t.Helper()
		form := url.Values{"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {redirect}}
		req, _ := http.NewRequest(http.MethodPost, base+"/usher/op/token", strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.SetBasicAuth(url.QueryEscape("jira-sso"), url.QueryEscape("sso secret/1"))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var m map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&m)
		return resp.StatusCode, m
	}
	kidOf := func(tok map[string]any) string {
		raw, _ := tok["id_token"].(string)
		h, _, _ := strings.Cut(raw, ".")
		var hdr struct{ Kid string }
		b, _ := base64.RawURLEncoding.DecodeString(h)
		_ = json.Unmarshal(b, &hdr)
		return hdr.Kid
	}
	jwks := func(base string) []string {
		resp, err := http.Get(base + "/usher/op/keys")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var set struct{ Keys []struct{ Kid string } }
		_ = json.NewDecoder(resp.Body).Decode(&set)
		var kids []string
		for _, k := range set.Keys {
			kids = append(kids, k.Kid)
		}
		slices.Sort(kids)
		return kids
	}

	// Issued on A, redeemed on B; B's access token works on A; the code
	// is spent on both.
	code := codeFrom(e.url)
	status, tok := redeemAt(urlB, code)
	if status != http.StatusOK {
		t.Fatalf("redeem on B: %d %v", status, tok)
	}
	if status, again := redeemAt(e.url, code); status != http.StatusBadRequest || again["error"] != "invalid_grant" {
		t.Fatalf("the same code on A: %d %v", status, again)
	}
	first := kidOf(tok)
	if a, b := jwks(e.url), jwks(urlB); !slices.Equal(a, b) || !slices.Contains(a, first) {
		t.Fatalf("JWKS A %v B %v, signed with %s", a, b, first)
	}

	// Rotation: within a few seconds both replicas sign with one new key,
	// and both still publish the old one.
	deadline := time.Now().Add(20 * time.Second)
	for {
		_, ta := redeemAt(e.url, codeFrom(e.url))
		_, tb := redeemAt(urlB, codeFrom(urlB))
		ka, kb := kidOf(ta), kidOf(tb)
		if ka != first && ka == kb {
			a, b := jwks(e.url), jwks(urlB)
			if !slices.Equal(a, b) || !slices.Contains(a, first) || !slices.Contains(a, ka) {
				t.Fatalf("after rotation: JWKS A %v B %v, old %s new %s", a, b, first, ka)
			}
			t.Logf("rotated from %s to %s on both replicas", first, ka)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no shared rotation: A signs with %s, B with %s (first %s)", ka, kb, first)
		}
		time.Sleep(300 * time.Millisecond)
	}
}
