package oidctest_test

import (
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/usherhq/usher/providers/oidc/oidctest"
)

const redirect = "https://rp.example.com/callback"

func authURL(idp *oidctest.IdP, hint string) string {
	q := url.Values{
		"client_id": {"rp"}, "redirect_uri": {redirect}, "response_type": {"code"},
		"scope": {"openid email"}, "state": {"st"}, "nonce": {"n"},
		// RFC 7636 appendix B example pair.
		"code_challenge": {"E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"}, "code_challenge_method": {"S256"},
	}
	if hint != "" {
		q.Set("login_hint", hint)
	}
	return idp.Issuer() + "/authorize?" + q.Encode()
}

func TestLoginPage(t *testing.T) {
	idp, err := oidctest.Start(oidctest.Options{
		Name:    "Demo IdP",
		Users:   []oidctest.User{{Subject: "s1", Username: "bob", Password: "pw", Email: "bob@example.com"}},
		Clients: []oidctest.Client{{ID: "rp", Secret: "x", RedirectURIs: []string{redirect}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer idp.Close()

	// A browser lands on the IdP's own form, the login hint filled in.
	resp, err := http.Get(authURL(idp, "bob@example.com"))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `value="bob@example.com"`) ||
		!strings.Contains(string(body), "Demo IdP") || !strings.Contains(resp.Request.URL.Path, "/login") {
		t.Fatalf("login page: %s at %s\n%s", resp.Status, resp.Request.URL, body)
	}

	if _, err := idp.Login(nil, authURL(idp, ""), "bob", "wrong"); err == nil {
		t.Fatal("wrong password logged in")
	}
	cb, err := idp.Login(nil, authURL(idp, ""), "bob@example.com", "pw")
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(cb)
	if !strings.HasPrefix(cb, redirect+"?") || u.Query().Get("code") == "" || u.Query().Get("state") != "st" || u.Query().Has("iss") {
		t.Fatalf("callback = %s", cb)
	}
}

func TestNewRequiresIssuer(t *testing.T) {
	for _, iss := range []string{"", "relative", "http://127.0.0.1:1/path"} {
		if _, err := oidctest.New(oidctest.Options{Issuer: iss}); err == nil {
			t.Errorf("New(%q) succeeded", iss)
		}
	}
}
