package appsso_test

import (
	"context"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"

	"github.com/usherhq/usher/appsso"
)

// TestRelyingPartyLibrary signs in with coreos/go-oidc and x/oauth2 as a
// plain relying party, a library usher's provider does not use: discovery,
// the code flow with PKCE and a nonce, the exchange with
// client_secret_basic and with client_secret_post, ID token verification
// against the JWKS, and userinfo.
func TestRelyingPartyLibrary(t *testing.T) {
	t.Parallel()
	const redirect = "https://rp.example.test/callback"
	h := newHarness(t, harnessOptions{NoJira: true, Clients: []appsso.Client{
		{ID: "rp", Secret: "rp-secret", App: "wiki", RedirectURIs: []string{redirect}, Groups: true},
		{ID: "rp-es", Secret: "rp-secret", App: "wiki", RedirectURIs: []string{redirect}, SigningAlg: "ES256"},
	}})
	for _, tc := range []struct {
		client string
		style  oauth2.AuthStyle
		alg    string
	}{{"rp", oauth2.AuthStyleInHeader, "RS256"}, {"rp", oauth2.AuthStyleInParams, "RS256"}, {"rp-es", oauth2.AuthStyleInHeader, "ES256"}} {
		t.Run(tc.client+"/"+tc.alg, func(t *testing.T) {
			ctx := context.Background()
			provider, err := oidc.NewProvider(ctx, h.op.Issuer())
			if err != nil {
				t.Fatalf("discovery: %v", err)
			}
			ep := provider.Endpoint()
			ep.AuthStyle = tc.style
			conf := oauth2.Config{ClientID: tc.client, ClientSecret: "rp-secret", Endpoint: ep, RedirectURL: redirect,
				Scopes: []string{oidc.ScopeOpenID, "profile", "email", "groups"}}
			verifier := oauth2.GenerateVerifier()
			state, nonce := randomID(), randomID()
			code := authorizeCode(t, h.browser("bob"), conf.AuthCodeURL(state, oidc.Nonce(nonce), oauth2.S256ChallengeOption(verifier)), redirect, state)

			tok, err := conf.Exchange(ctx, code, oauth2.VerifierOption(verifier))
			if err != nil {
				t.Fatalf("exchange: %v", err)
			}
			raw, _ := tok.Extra("id_token").(string)
			idt, err := provider.Verifier(&oidc.Config{ClientID: tc.client, SupportedSigningAlgs: []string{tc.alg}, Now: h.clock.Now}).Verify(ctx, raw)
			if err != nil {
				t.Fatalf("verify ID token: %v", err)
			}
			var claims struct {
				Nonce, PreferredUsername, Email, Name string
				EmailVerified                         bool     `json:"email_verified"`
				Groups                                []string `json:"groups"`
			}
			if err := idt.Claims(&claims); err != nil {
				t.Fatal(err)
			}
			if idt.Nonce != nonce || idt.Issuer != h.op.Issuer() || claims.Email != "bob@globex.test" || !claims.EmailVerified {
				t.Errorf("ID token: nonce %q iss %q claims %+v", idt.Nonce, idt.Issuer, claims)
			}
			ui, err := provider.UserInfo(ctx, oauth2.StaticTokenSource(tok))
			if err != nil {
				t.Fatalf("userinfo: %v", err)
			}
			var uc map[string]any
			_ = ui.Claims(&uc)
			if ui.Subject != idt.Subject || uc["preferred_username"] != "bob" || uc["name"] != "Bob Baker" {
				t.Errorf("userinfo %v, ID token sub %s", uc, idt.Subject)
			}
			if tc.client == "rp" && (uc["groups"] == nil) {
				t.Errorf("userinfo lacks groups for a client registered with them: %v", uc)
			}
			if tc.client == "rp-es" && uc["groups"] != nil {
				t.Errorf("userinfo has groups for a client registered without them: %v", uc)
			}
		})
	}
}

// authorizeCode follows the browser from an authorization URL to the
// redirect URI and returns the code, after checking the state came back.
func authorizeCode(t *testing.T, b *http.Client, authURL, redirect, state string) string {
	t.Helper()
	u := authURL
	for range 10 {
		resp, body := get(t, b, u)
		loc := resp.Header.Get("Location")
		if loc == "" {
			t.Fatalf("no redirect from %s: %d\n%s", u, resp.StatusCode, body)
		}
		next, _ := resp.Request.URL.Parse(loc)
		if strings.HasPrefix(next.String(), redirect) {
			q := next.Query()
			if q.Get("state") != state || q.Get("code") == "" {
				t.Fatalf("redirect %s: want a code and state %s", next, state)
			}
			return q.Get("code")
		}
		u = next.String()
	}
	t.Fatalf("never came back to %s", redirect)
	return ""
}

// TestDiscoveryDocument: the issuer is exact and every endpoint the
// Atlassian client and go-oidc read is there (reference §5).
func TestDiscoveryDocument(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOptions{})
	resp, err := http.Get(h.op.Issuer() + "/.well-known/openid-configuration")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var doc map[string]any
	if err := jsonDecode(resp.Body, &doc); err != nil {
		t.Fatal(err)
	}
	if doc["issuer"] != h.srv.URL+"/usher/op" || strings.HasSuffix(h.op.Issuer(), "/") {
		t.Errorf("issuer %v", doc["issuer"])
	}
	for _, k := range []string{"authorization_endpoint", "token_endpoint", "userinfo_endpoint", "jwks_uri"} {
		if s, _ := doc[k].(string); !strings.HasPrefix(s, h.op.Issuer()+"/") {
			t.Errorf("%s = %v", k, doc[k])
		}
	}
	if got := doc["response_types_supported"]; !sameJSON(got, []string{"code"}) {
		t.Errorf("response_types_supported %v", got)
	}
	if got := doc["grant_types_supported"]; !sameJSON(got, []string{"authorization_code"}) {
		t.Errorf("grant_types_supported %v", got)
	}
	methods, _ := doc["token_endpoint_auth_methods_supported"].([]any)
	if !slices.Contains(methods, any("client_secret_basic")) || !slices.Contains(methods, any("client_secret_post")) {
		t.Errorf("token_endpoint_auth_methods_supported %v", methods)
	}
	if got := doc["subject_types_supported"]; !sameJSON(got, []string{"public"}) {
		t.Errorf("subject_types_supported %v", got)
	}
	for _, gone := range []string{"introspection_endpoint", "revocation_endpoint", "end_session_endpoint", "device_authorization_endpoint"} {
		if _, ok := doc[gone]; ok {
			t.Errorf("discovery names %s, which is not served", gone)
		}
	}
	_ = url.Values{}
}
