package appsso_test

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/usherhq/usher/appsso"
	"github.com/usherhq/usher/session"
)

const (
	appA = "https://a.example.test/cb"
	appB = "https://b.example.test/cb"
	pub  = "https://pub.example.test/cb"
)

func refusalHarness(t *testing.T) *harness {
	return newHarness(t, harnessOptions{NoJira: true, Clients: []appsso.Client{
		{ID: "a", Secret: "secret-a", App: "wiki", RedirectURIs: []string{appA}},
		{ID: "b", Secret: "secret-b", App: "wiki", RedirectURIs: []string{appB}},
		{ID: "pub", Public: true, App: "wiki", RedirectURIs: []string{pub}},
	}})
}

// codeFor runs the authorization request q for bob (who may use wiki)
// and returns the code.
func (h *harness) codeFor(t *testing.T, q url.Values) string {
	t.Helper()
	if !q.Has("state") {
		q.Set("state", "st-"+randomID())
	}
	if !q.Has("response_type") {
		q.Set("response_type", "code")
	}
	if !q.Has("scope") {
		q.Set("scope", "openid profile")
	}
	return authorizeCode(t, h.browser("bob"), h.authorizeURL(q), q.Get("redirect_uri"), q.Get("state"))
}

func redeem(code, redirect string) url.Values {
	return url.Values{"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {redirect}}
}

func TestAuthorizeRefusals(t *testing.T) {
	t.Parallel()
	h := refusalHarness(t)
	for _, tc := range []struct {
		name, client, redirect string
		want                   string
	}{
		{"unknown client", "nobody", appA, "Unknown application"},
		{"missing client", "", appA, "Unknown application"},
		{"unregistered redirect", "a", "https://evil.example.test/cb", "Unregistered return address"},
		{"redirect of another client", "a", appB, "Unregistered return address"},
		{"prefix of the redirect", "a", "https://a.example.test/c", "Unregistered return address"},
		{"redirect extended", "a", appA + "/more", "Unregistered return address"},
		{"redirect with a trailing slash", "a", appA + "/", "Unregistered return address"},
		{"host case variant", "a", "https://A.example.test/cb", "Unregistered return address"},
		{"path case variant", "a", "https://a.example.test/CB", "Unregistered return address"},
		{"extra query", "a", appA + "?x=1", "Unregistered return address"},
		{"fragment", "a", appA + "#frag", "Unregistered return address"},
		{"missing redirect", "a", "", "Unregistered return address"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			q := url.Values{"client_id": {tc.client}, "redirect_uri": {tc.redirect}, "response_type": {"code"}, "scope": {"openid"}, "state": {"s"}}
			resp, body := get(t, h.browser("bob"), h.authorizeURL(q))
			if resp.StatusCode != http.StatusBadRequest || resp.Header.Get("Location") != "" || !strings.Contains(body, tc.want) {
				t.Fatalf("status %d, Location %q, want 400 %q and no redirect:\n%s", resp.StatusCode, resp.Header.Get("Location"), tc.want, body)
			}
		})
	}

	// Errors in an otherwise valid request go back to the redirect URI,
	// with the state.
	for _, tc := range []struct {
		name  string
		q     url.Values
		error string
	}{
		{"implicit flow", url.Values{"client_id": {"a"}, "redirect_uri": {appA}, "response_type": {"id_token"}, "scope": {"openid"}}, "unsupported_response_type"},
		{"no scope", url.Values{"client_id": {"a"}, "redirect_uri": {appA}, "response_type": {"code"}}, "invalid_request"},
		{"public client without PKCE", url.Values{"client_id": {"pub"}, "redirect_uri": {pub}, "response_type": {"code"}, "scope": {"openid"}}, "invalid_request"},
		{"unknown PKCE method", url.Values{"client_id": {"a"}, "redirect_uri": {appA}, "response_type": {"code"}, "scope": {"openid"}, "code_challenge": {"x"}, "code_challenge_method": {"S512"}}, "invalid_request"},
		{"request object", url.Values{"client_id": {"a"}, "redirect_uri": {appA}, "response_type": {"code"}, "scope": {"openid"}, "request": {"eyJ.x.y"}}, "request_not_supported"},
		{"state too long", url.Values{"client_id": {"a"}, "redirect_uri": {appA}, "response_type": {"code"}, "scope": {"openid"}, "nonce": {strings.Repeat("n", 600)}}, "invalid_request"},
		{"prompt=none without a session", url.Values{"client_id": {"a"}, "redirect_uri": {appA}, "response_type": {"code"}, "scope": {"openid"}, "prompt": {"none"}}, "login_required"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.q.Set("state", "the-state")
			resp, body := get(t, h.browser(""), h.authorizeURL(tc.q))
			loc, _ := url.Parse(resp.Header.Get("Location"))
			if resp.StatusCode != http.StatusFound || loc == nil || !strings.HasPrefix(loc.String(), tc.q.Get("redirect_uri")+"?") ||
				loc.Query().Get("error") != tc.error || loc.Query().Get("state") != "the-state" || loc.Query().Has("code") {
				t.Fatalf("status %d Location %v, want error=%s&state back at the client\n%s", resp.StatusCode, loc, tc.error, body)
			}
		})
	}

	// A person whose session does not include the app: refusal page.
	q := url.Values{"client_id": {"a"}, "redirect_uri": {appA}, "response_type": {"code"}, "scope": {"openid"}, "state": {"s"}}
	h.person("carol", &session.Session{IdP: "acme", Subject: "00u-carol", Username: "carol", Apps: []string{"jira"}})
	resp, body := get(t, h.browser("carol"), h.authorizeURL(q))
	if resp.StatusCode == http.StatusFound {
		resp, body, _ = follow(t, h.browser("carol"), h.authorizeURL(q))
	}
	if resp.StatusCode != http.StatusForbidden || !strings.Contains(body, "not allowed to use wiki") {
		t.Fatalf("carol without wiki: %d\n%s", resp.StatusCode, body)
	}
	// prompt=none with a session but no access: still never a code.
	q.Set("prompt", "none")
	b := h.browser("carol")
	follow(t, b, h.authorizeURL(url.Values{"client_id": {"a"}, "redirect_uri": {appA}, "response_type": {"code"}, "scope": {"openid"}, "state": {"x"}}))
	resp, _ = get(t, b, h.authorizeURL(q))
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("prompt=none without access: %d %s", resp.StatusCode, resp.Header.Get("Location"))
	}
}

func TestTokenRefusals(t *testing.T) {
	t.Parallel()
	h := refusalHarness(t)
	code := func() string { return h.codeFor(t, url.Values{"client_id": {"a"}, "redirect_uri": {appA}}) }
	for _, tc := range []struct {
		name   string
		form   url.Values
		basic  []string
		status int
		error  string
	}{
		{"wrong secret", redeem(code(), appA), []string{"a", "secret-b"}, 401, "invalid_client"},
		{"missing secret", redeem(code(), appA), []string{"a", ""}, 401, "invalid_client"},
		{"no client authentication", redeem(code(), appA), nil, 401, "invalid_client"},
		{"unknown client", redeem(code(), appA), []string{"nobody", "secret-a"}, 401, "invalid_client"},
		{"code of client a redeemed by client b", redeem(code(), appA), []string{"b", "secret-b"}, 400, "invalid_grant"},
		{"code of client a with b's redirect", redeem(code(), appB), []string{"b", "secret-b"}, 400, "invalid_grant"},
		{"other redirect URI", redeem(code(), appA+"?x"), []string{"a", "secret-a"}, 400, "invalid_grant"},
		{"forged code", redeem("eyJmYWtlIjoiY29kZSJ9", appA), []string{"a", "secret-a"}, 400, "invalid_grant"},
		{"refresh grant", url.Values{"grant_type": {"refresh_token"}, "refresh_token": {"x"}}, []string{"a", "secret-a"}, 400, "unsupported_grant_type"},
		{"client credentials", url.Values{"grant_type": {"client_credentials"}}, []string{"a", "secret-a"}, 400, "unsupported_grant_type"},
		{"no grant type", url.Values{"code": {"x"}}, []string{"a", "secret-a"}, 400, "invalid_request"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, body := h.tokenRequest(tc.form, tc.basic)
			if status != tc.status || body["error"] != tc.error || body["id_token"] != nil {
				t.Fatalf("status %d body %v, want %d %s", status, body, tc.status, tc.error)
			}
		})
	}
	// client_secret_post works as well as Basic.
	form := redeem(code(), appA)
	form.Set("client_id", "a")
	form.Set("client_secret", "secret-a")
	if status, body := h.tokenRequest(form, nil); status != 200 || body["id_token"] == nil {
		t.Fatalf("client_secret_post: %d %v", status, body)
	}
	// A code that failed client authentication is still good for its
	// client: refusals do not burn it (only a successful redemption does).
	c := code()
	h.tokenRequest(redeem(c, appA), []string{"a", "wrong"})
	if status, body := h.tokenRequest(redeem(c, appA), []string{"a", "secret-a"}); status != 200 {
		t.Fatalf("code after a refused attempt: %d %v", status, body)
	}
}

// TestCodeReplay: a code redeems once; the second redemption is refused
// and the access token issued from the first stops working (OAuth
// security BCP), also on a replica that learns it from the store.
func TestCodeReplay(t *testing.T) {
	t.Parallel()
	h := refusalHarness(t)
	c := h.codeFor(t, url.Values{"client_id": {"a"}, "redirect_uri": {appA}})
	status, first := h.tokenRequest(redeem(c, appA), []string{"a", "secret-a"})
	if status != 200 {
		t.Fatalf("first redemption: %d %v", status, first)
	}
	at, _ := first["access_token"].(string)
	if status, ui := h.userinfo(at); status != 200 || ui["preferred_username"] != "bob" {
		t.Fatalf("userinfo before the replay: %d %v", status, ui)
	}
	status, second := h.tokenRequest(redeem(c, appA), []string{"a", "secret-a"})
	if status != 400 || second["error"] != "invalid_grant" || second["access_token"] != nil {
		t.Fatalf("second redemption: %d %v", status, second)
	}
	if status, ui := h.userinfo(at); status == 200 {
		t.Fatalf("userinfo with a token of a replayed code: %d %v", status, ui)
	}
	// Another replica reads the revocation from the store.
	other := session.NewRevocations(24*time.Hour, h.clock.Now)
	sh := &session.Shared{Local: other, Store: h.store, Absolute: 24 * time.Hour, Now: h.clock.Now}
	if err := sh.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	if other.Len() == 0 {
		t.Fatal("the replay's revocation did not reach the store")
	}
}

func TestCodeExpires(t *testing.T) {
	t.Parallel()
	h := refusalHarness(t)
	c := h.codeFor(t, url.Values{"client_id": {"a"}, "redirect_uri": {appA}})
	h.clock.Advance(61 * time.Second)
	if status, body := h.tokenRequest(redeem(c, appA), []string{"a", "secret-a"}); status != 400 || body["error"] != "invalid_grant" {
		t.Fatalf("expired code: %d %v", status, body)
	}
}

func TestPKCE(t *testing.T) {
	t.Parallel()
	h := refusalHarness(t)
	verifier := "a-verifier-of-at-least-43-characters-0123456789"
	sum := sha256.Sum256([]byte(verifier))
	challenge := base64.RawURLEncoding.EncodeToString(sum[:])
	for _, tc := range []struct {
		name, client, redirect, verifier string
		basic                            []string
		status                           int
		error                            string
	}{
		{"right verifier", "a", appA, verifier, []string{"a", "secret-a"}, 200, ""},
		{"wrong verifier", "a", appA, verifier + "x", []string{"a", "secret-a"}, 400, "invalid_grant"},
		{"missing verifier", "a", appA, "", []string{"a", "secret-a"}, 400, "invalid_request"},
		{"public client", "pub", pub, verifier, nil, 200, ""},
		{"public client, wrong verifier", "pub", pub, "nope-" + verifier, nil, 400, "invalid_grant"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := h.codeFor(t, url.Values{"client_id": {tc.client}, "redirect_uri": {tc.redirect}, "code_challenge": {challenge}, "code_challenge_method": {"S256"}})
			form := redeem(c, tc.redirect)
			if tc.verifier != "" {
				form.Set("code_verifier", tc.verifier)
			}
			if tc.basic == nil {
				form.Set("client_id", tc.client)
			}
			status, body := h.tokenRequest(form, tc.basic)
			if status != tc.status || (tc.error != "" && body["error"] != tc.error) {
				t.Fatalf("status %d %v, want %d %s", status, body, tc.status, tc.error)
			}
		})
	}
	// A verifier without a challenge is refused too.
	c := h.codeFor(t, url.Values{"client_id": {"a"}, "redirect_uri": {appA}})
	form := redeem(c, appA)
	form.Set("code_verifier", verifier)
	if status, body := h.tokenRequest(form, []string{"a", "secret-a"}); status != 400 {
		t.Fatalf("verifier without challenge: %d %v", status, body)
	}
}

// TestRevokedSession: a person whose usher sessions were revoked
// (deprovisioning revokes by identity) is sent to usher's login, never
// given a code, and the access tokens they already hold stop working.
func TestRevokedSession(t *testing.T) {
	t.Parallel()
	h := refusalHarness(t)
	b := h.browser("bob")
	q := url.Values{"client_id": {"a"}, "redirect_uri": {appA}, "response_type": {"code"}, "scope": {"openid"}, "state": {"s"}}
	c := authorizeCode(t, b, h.authorizeURL(q), appA, "s")
	_, tok := h.tokenRequest(redeem(c, appA), []string{"a", "secret-a"})
	at, _ := tok["access_token"].(string)

	h.clock.Advance(time.Second)
	if err := h.shared.RevokeIdentity(context.Background(), "globex", "a6f3-bob"); err != nil {
		t.Fatal(err)
	}
	logins := h.logins.Load()
	resp, _ := get(t, b, h.authorizeURL(q))
	if loc := resp.Header.Get("Location"); !strings.Contains(loc, "/usher/login?") || strings.Contains(loc, "code=") {
		t.Fatalf("revoked session: %d Location %q, want usher's login", resp.StatusCode, loc)
	}
	_ = logins
	if status, ui := h.userinfo(at); status == 200 {
		t.Fatalf("userinfo for a revoked person: %v", ui)
	}
}

// TestPromptLoginAndMaxAge: prompt=login sends a person with a session
// through usher's login once, and a login made during the flow counts.
func TestPromptLoginAndMaxAge(t *testing.T) {
	t.Parallel()
	h := refusalHarness(t)
	b := h.browser("bob")
	q := url.Values{"client_id": {"a"}, "redirect_uri": {appA}, "response_type": {"code"}, "scope": {"openid"}, "state": {"s"}}
	authorizeCode(t, b, h.authorizeURL(q), appA, "s")
	h.clock.Advance(time.Minute)
	before := h.logins.Load()
	q.Set("prompt", "login")
	authorizeCode(t, b, h.authorizeURL(q), appA, "s")
	if n := h.logins.Load() - before; n != 1 {
		t.Fatalf("prompt=login went through usher's login %d times, want 1", n)
	}
	q.Del("prompt")
	q.Set("max_age", "3600")
	before = h.logins.Load()
	authorizeCode(t, b, h.authorizeURL(q), appA, "s")
	if n := h.logins.Load() - before; n != 0 {
		t.Fatalf("max_age=3600 with a fresh session went to the login %d times", n)
	}
}

// TestContinueIsNotARedirector: the continue endpoint takes only what
// usher sealed, and usher's login is handed only a path on usher.
func TestContinueIsNotARedirector(t *testing.T) {
	t.Parallel()
	h := refusalHarness(t)
	for _, id := range []string{"", "https://evil.example.test/", "eyJjIjoiYSIsInIiOiJodHRwczovL2V2aWwifQ"} {
		resp, _ := get(t, h.browser("bob"), h.op.Issuer()+"/continue?id="+url.QueryEscape(id))
		if resp.StatusCode != http.StatusBadRequest || resp.Header.Get("Location") != "" {
			t.Fatalf("continue?id=%q: %d %q", id, resp.StatusCode, resp.Header.Get("Location"))
		}
	}
	q := url.Values{"client_id": {"a"}, "redirect_uri": {appA}, "response_type": {"code"}, "scope": {"openid"}, "state": {"s"}}
	resp, _ := get(t, h.browser(""), h.authorizeURL(q))
	loc, _ := url.Parse(resp.Header.Get("Location"))
	if rd := loc.Query().Get("rd"); loc.Path != "/usher/login" || !strings.HasPrefix(rd, "/usher/op/continue?id=") || strings.Contains(rd, "//") {
		t.Fatalf("login redirect %v", loc)
	}
	// A browser that comes back without a session is not looped.
	resp, body := get(t, h.browser(""), h.srv.URL+loc.Query().Get("rd"))
	if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(body, "Sign-in did not complete") {
		t.Fatalf("continue without a session: %d\n%s", resp.StatusCode, body)
	}
}
