package appsso_test

import (
	"context"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/usherhq/usher/targets/atlassiantest"
)

// TestAtlassianClientSignsIn drives the emulated Jira's built-in OIDC
// client through the provider, as a person would: a page visit, the app's
// redirect to usher, usher's login (no session yet), the code back to the
// app's callback, the back-channel exchange with Basic authentication of a
// client ID and secret that need form-encoding, the ID token checks
// (signature, iss, aud, nonce), the username from ${preferred_username},
// and the app's own session afterwards.
func TestAtlassianClientSignsIn(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOptions{})
	b := h.browser("alice")

	resp, body, hops := follow(t, b, h.jiraSrv.URL+"/browse/ABC-1?focus=1")
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, "you are alice") {
		t.Fatalf("final page %d after %v:\n%s\napp errors: %v", resp.StatusCode, hops, body, h.jira.SSOErrors())
	}
	if got := resp.Request.URL.RequestURI(); got != "/browse/ABC-1?focus=1" {
		t.Errorf("landed on %s, want the page first asked for", got)
	}
	wantHops := []string{"/browse/ABC-1", "/plugins/servlet/external-login/1", "/usher/op/authorize", "/usher/login", "/usher/op/continue", "/plugins/servlet/oidc/callback", "/browse/ABC-1"}
	if len(hops) != len(wantHops) {
		t.Fatalf("hops %v, want paths %v", hops, wantHops)
	}
	for i, hop := range hops {
		if u, _ := url.Parse(hop); u.Path != wantHops[i] {
			t.Errorf("hop %d = %s, want path %s", i, hop, wantHops[i])
		}
	}
	// The authorization request is the Atlassian client's (§6).
	az, _ := url.Parse(hops[2])
	q := az.Query()
	if q.Get("scope") != "openid profile email" || q.Get("response_type") != "code" || len(q.Get("state")) != 43 || len(q.Get("nonce")) != 43 || q.Has("code_challenge") {
		t.Errorf("authorization request %s", az.RawQuery)
	}
	if !strings.Contains(az.RawQuery, "scope=openid+profile+email") {
		t.Errorf("scope not serialised with '+': %s", az.RawQuery)
	}
	// The code comes back as query parameters with the state echoed (§8).
	cb, _ := url.Parse(hops[5])
	if cb.Query().Get("code") == "" || cb.Query().Get("state") != q.Get("state") {
		t.Errorf("callback %s: want code and the state %s", cb.RawQuery, q.Get("state"))
	}
	if u, _ := h.jira.User("alice"); u.LastLogin.IsZero() {
		t.Error("the app recorded no login")
	}

	// The app's own session now carries the person: no usher round trip.
	resp, body, hops = follow(t, b, h.jiraSrv.URL+"/secure/Dashboard.jspa")
	if resp.StatusCode != http.StatusOK || len(hops) != 1 || !strings.Contains(body, "you are alice") {
		t.Fatalf("second visit %d via %v", resp.StatusCode, hops)
	}

	// Product logout ends only the product session (§16): the next visit
	// signs in again silently, through the usher session, without a login.
	logins := h.logins.Load()
	get(t, b, h.jiraSrv.URL+"/secure/Logout!default.jspa")
	resp, _, hops = follow(t, b, h.jiraSrv.URL+"/")
	if resp.StatusCode != http.StatusOK || h.logins.Load() != logins {
		t.Fatalf("after product logout: %d via %v, %d usher logins (want none)", resp.StatusCode, hops, h.logins.Load()-logins)
	}
	if len(hops) != 5 {
		t.Errorf("silent re-login took %d hops %v, want 5 (page, external-login, authorize, callback, page)", len(hops), hops)
	}
}

// TestAtlassianClientRefusals: what the emulated client sees when usher
// refuses, and the app-side failures usher's configuration avoids.
func TestAtlassianClientRefusals(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOptions{})

	// bob's usher session does not include jira: usher's refusal page,
	// never a code, and the app sees nothing.
	resp, body, hops := follow(t, h.browser("bob"), h.jiraSrv.URL+"/")
	if resp.StatusCode != http.StatusForbidden || !strings.Contains(body, "not allowed to use jira") {
		t.Fatalf("bob: %d via %v\n%s", resp.StatusCode, hops, body)
	}
	for _, hop := range hops {
		if strings.Contains(hop, "code=") {
			t.Fatalf("a code was issued to bob: %v", hops)
		}
	}

	// dave is signed in at usher but not licensed in Jira: the app refuses
	// after the exchange (§12) — usher provisions licences, not the app.
	resp, _, _ = follow(t, h.browser("dave"), h.jiraSrv.URL+"/")
	if errs := h.jira.SSOErrors(); resp.StatusCode != http.StatusBadRequest || len(errs) == 0 || !strings.Contains(errs[len(errs)-1], "user dave, but the user is not permitted to log in") {
		t.Fatalf("dave: %d, app errors %v", resp.StatusCode, errs)
	}

	// The callback replayed: the state is single-use on the app side (§7).
	b := h.browser("alice")
	var cb string
	_, _, hops = follow(t, b, h.jiraSrv.URL+"/")
	for _, hop := range hops {
		if strings.Contains(hop, "/oidc/callback?") {
			cb = hop
		}
	}
	resp, _ = get(t, b, cb)
	if errs := h.jira.SSOErrors(); resp.StatusCode != http.StatusBadRequest || !strings.Contains(errs[len(errs)-1], "Unknown state in response") {
		t.Fatalf("replayed callback: %d, %v", resp.StatusCode, errs)
	}
}

// TestAtlassianDiscovery: the discovery document has what the client
// dereferences, an issuer configured with a trailing slash is retried
// without it (§5), and with a wrong secret the exchange fails as the KB
// describes (§18).
func TestAtlassianDiscovery(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOptions{})
	ctx := context.Background()

	cfg := h.jiraSSO
	cfg.IssuerURL += "/"
	if err := h.jira.EnableSSO(ctx, cfg); err != nil {
		t.Fatalf("issuer with a trailing slash: %v", err)
	}
	resp, body, _ := follow(t, h.browser("alice"), h.jiraSrv.URL+"/")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("sign-in after the stripped-issuer discovery: %d %s %v", resp.StatusCode, body, h.jira.SSOErrors())
	}

	cfg = h.jiraSSO
	cfg.IssuerURL = h.op.Issuer() + "/other"
	if err := h.jira.EnableSSO(ctx, cfg); err == nil {
		t.Fatal("discovery accepted an issuer usher does not serve")
	}

	cfg = h.jiraSSO
	cfg.ClientSecret = "wrong"
	if err := h.jira.EnableSSO(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	resp, _, _ = follow(t, h.browser("alice"), h.jiraSrv.URL+"/")
	errs := h.jira.SSOErrors()
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(errs[len(errs)-1], `Exchanging authorization tokens failed. Error: {"error":"invalid_client"`) {
		t.Fatalf("wrong secret: %d %v", resp.StatusCode, errs)
	}
}

// TestAtlassianJITOverwritesGroups shows why the app's own JIT must stay
// off when usher provisions: on every login it makes the person's groups
// exactly the token's groups claim, removing the groups usher granted
// (§13). Without a groups claim, JIT fails the login instead.
func TestAtlassianJITOverwritesGroups(t *testing.T) {
	t.Parallel()
	for _, withClaim := range []bool{false, true} {
		h := newHarness(t, harnessOptions{JiraGroups: withClaim})
		cfg := h.jiraSSO
		cfg.JIT = &atlassiantest.SSOJIT{DisplayName: "${name}", Email: "${email}", Groups: "groups", AdditionalScopes: []string{"groups"}}
		if err := h.jira.EnableSSO(context.Background(), cfg); err != nil {
			t.Fatal(err)
		}
		before, _ := h.jira.User("alice")
		resp, _, _ := follow(t, h.browser("alice"), h.jiraSrv.URL+"/")
		after, _ := h.jira.User("alice")
		errs := h.jira.SSOErrors()
		if !withClaim {
			if resp.StatusCode != http.StatusBadRequest || !strings.Contains(errs[len(errs)-1], "Received no groups claim") {
				t.Fatalf("JIT without a groups claim: %d %v", resp.StatusCode, errs)
			}
			if !slices.Equal(before.Groups, after.Groups) {
				t.Fatalf("groups changed by a failed JIT login: %v → %v", before.Groups, after.Groups)
			}
			continue
		}
		// The claim carries the IdP's groups ("engineering"): JIT replaced
		// the app groups usher had granted, licence group included, so the
		// app then refuses the person it just "provisioned".
		if !slices.Equal(after.Groups, []string{"engineering"}) {
			t.Fatalf("groups after a JIT login: %v (before %v), want exactly the claim", after.Groups, before.Groups)
		}
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(errs[len(errs)-1], "not permitted to log in") {
			t.Fatalf("JIT login: %d %v", resp.StatusCode, errs)
		}
	}
}
