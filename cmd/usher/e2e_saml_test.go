package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/usherhq/usher/providers"
	"github.com/usherhq/usher/providers/saml/samltest"
)

// startSAMLIdP starts a samlidp-based IdP with user "carol" and appends
// its usher config (IdP "corp", domain corp.test) to idps.
func startSAMLIdP(t *testing.T, dir string, idps *strings.Builder) *samltest.IdP {
	t.Helper()
	idp, err := samltest.New(samltest.Options{Users: []samltest.User{{
		Name: "carol", Password: "pw-carol", Email: "carol@corp.test", CommonName: "Carol Chen",
		GivenName: "Carol", Surname: "Chen", Groups: []string{"Support", "Staff"},
	}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(idp.Close)
	key, cert, err := samltest.NewKeyPair("usher sp", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, certPEM := samltest.PEM(key, cert)
	keyFile, certFile := filepath.Join(dir, "sp.key"), filepath.Join(dir, "sp.crt")
	if err := os.WriteFile(keyFile, []byte(keyPEM), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(certFile, []byte(certPEM), 0o644); err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(idps, `  - id: corp
    name: Corp SAML
    type: saml
    domains: [corp.test]
    mapping:
      username: {claim: uid}
      email: {claim: mail}
      display_name: {claim: cn}
      groups:
        claim: eduPersonAffiliation
        map:
          - idp_group: Support
            groups: {"*": [support-staff]}
        defaults: {"*": [usher-users]}
    config:
      metadata_url: %s
      sp_key: {file: %s}
      sp_cert: {file: %s}
`, idp.MetadataURL(), keyFile, certFile)
	return idp
}

// registerSP gives the IdP usher's SP metadata, as an admin would.
func registerSP(t *testing.T, idp *samltest.IdP, metadataURL string) {
	t.Helper()
	resp, err := http.Get(metadataURL)
	if err != nil {
		t.Fatal(err)
	}
	md, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("SP metadata: %s\n%s", resp.Status, md)
	}
	if err := idp.AddServiceProvider("usher", md); err != nil {
		t.Fatal(err)
	}
}

// samlLogin follows usher's redirect to the SAML IdP, signs in there, and
// posts the IdP's answer to usher's ACS with the browser's cookies.
func (e *env) samlLogin(c *http.Client, idpRedirect, user, password string) *http.Response {
	e.t.Helper()
	if !strings.HasPrefix(idpRedirect, e.saml.URL()) {
		e.t.Fatalf("login went to %q, want the SAML IdP", idpRedirect)
	}
	acs, err := e.samlAnswer(idpRedirect, user, password)
	if err != nil {
		e.t.Fatal(err)
	}
	resp, err := c.PostForm(acs.URL.String(), acs.PostForm)
	if err != nil {
		e.t.Fatal(err)
	}
	return resp
}

// samlAnswer runs the IdP side and returns the ACS POST it produced.
func (e *env) samlAnswer(idpRedirect, user, password string) (*http.Request, error) {
	b := samltest.NewBrowser()
	req, err := b.Login(context.Background(), e.saml, &providers.Challenge{URL: idpRedirect}, user, password)
	if err != nil {
		return nil, err
	}
	if err := req.ParseForm(); err != nil {
		return nil, err
	}
	return req, nil
}

func TestSAMLLoginReachesUpstream(t *testing.T) {
	t.Parallel()
	e := startEnvWith(t, envOptions{SAML: true})
	c := e.browser()
	resp := e.get(c, e.url+"/wiki/spaces/X")
	wantStatus(t, resp, http.StatusFound)

	// Discovery by e-mail domain picks the SAML IdP among three.
	resp, err := c.PostForm(e.url+"/usher/login", url.Values{"email": {"carol@corp.test"}, "rd": {"/wiki/spaces/X"}})
	if err != nil {
		t.Fatal(err)
	}
	wantStatus(t, resp, http.StatusFound)
	resp = e.samlLogin(c, resp.Header.Get("Location"), "carol", "pw-carol")
	wantStatus(t, resp, http.StatusFound)
	if loc := resp.Header.Get("Location"); loc != "/wiki/spaces/X" {
		t.Fatalf("after ACS went to %q", loc)
	}
	resp = e.get(c, e.url+"/wiki/spaces/X")
	wantStatus(t, resp, http.StatusOK)
	h := e.upstream.lastHeader()
	for k, want := range map[string]string{
		"X-Remote-User": "carol", "X-Remote-Email": "carol@corp.test",
		"X-Remote-Name": "Carol Chen", "X-Remote-Groups": "Staff,Support",
	} {
		if got := h.Get(k); got != want {
			t.Errorf("upstream %s = %q, want %q", k, got, want)
		}
	}

	// The chooser lists SAML and OIDC IdPs together; OIDC still works.
	resp = e.get(e.browser(), e.url+"/usher/login")
	body := bodyOf(resp)
	for _, want := range []string{"Corp SAML", "acme IdP", "globex IdP"} {
		if !strings.Contains(body, want) {
			t.Errorf("chooser lacks %q", want)
		}
	}
	wantStatus(t, e.login(e.browser(), "/", "acme", "alice", "pw-alice"), http.StatusOK)
}

func TestSAMLRefusals(t *testing.T) {
	t.Parallel()
	e := startEnvWith(t, envOptions{SAML: true})

	// The same assertion posted twice, even with a copy of the flow
	// cookie (a stolen one), is a replay.
	c := e.browser()
	resp := e.get(c, e.url+"/usher/login?idp=corp&rd=/")
	wantStatus(t, resp, http.StatusFound)
	acs, err := e.samlAnswer(resp.Header.Get("Location"), "carol", "pw-carol")
	if err != nil {
		t.Fatal(err)
	}
	c2 := e.browser()
	c2.Jar.SetCookies(mustURL(e.url), c.Jar.Cookies(mustURL(e.url)))
	resp, err = c.PostForm(acs.URL.String(), acs.PostForm)
	if err != nil {
		t.Fatal(err)
	}
	wantStatus(t, resp, http.StatusFound)
	resp, err = c2.PostForm(acs.URL.String(), acs.PostForm)
	if err != nil {
		t.Fatal(err)
	}
	wantStatus(t, resp, http.StatusForbidden)
	if body := bodyOf(resp); !strings.Contains(body, "Request ID") {
		t.Fatalf("replay page: %s", body)
	}

	// Without the flow cookie, an SP-initiated answer is refused too.
	resp, err = e.browser().PostForm(acs.URL.String(), acs.PostForm)
	if err != nil {
		t.Fatal(err)
	}
	wantStatus(t, resp, http.StatusForbidden)

	// A cross-site link to the single-logout return address does not sign
	// people out: only a valid LogoutResponse does.
	resp = e.get(c, e.url+"/usher/saml/corp/slo?SAMLResponse=bogus")
	wantStatus(t, resp, http.StatusBadRequest)
	wantStatus(t, e.get(c, e.url+"/still-signed-in"), http.StatusOK)

	// An answer for corp posted to another IdP's endpoint is not a SAML ACS.
	resp, err = e.browser().PostForm(e.url+"/usher/saml/acme/acs", acs.PostForm)
	if err != nil {
		t.Fatal(err)
	}
	wantStatus(t, resp, http.StatusNotFound)

	// An oversized POST is refused without a crash.
	big := url.Values{"SAMLResponse": {strings.Repeat("A", 2<<20)}, "RelayState": {"x"}}
	resp, err = e.browser().PostForm(e.url+"/usher/saml/corp/acs", big)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusForbidden && resp.StatusCode != http.StatusRequestEntityTooLarge && resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("oversized POST: status %d", resp.StatusCode)
	}
}

// TestSAMLIdPInitiatedLogout: carol signs in to usher through the SAML IdP
// and then signs out at the IdP. The IdP sends her browser to usher's SLO
// endpoint with a signed LogoutRequest; usher ends her sessions in every
// browser (a copy of the cookie stops working too), answers, and the IdP
// accepts the answer and reports everyone signed out.
func TestSAMLIdPInitiatedLogout(t *testing.T) {
	t.Parallel()
	e := startEnvWith(t, envOptions{SAML: true})
	c := e.browser()
	resp := e.get(c, e.url+"/usher/login?idp=corp&rd=/x")
	wantStatus(t, resp, http.StatusFound)
	idpBrowser := samltest.NewBrowser()
	acs, err := idpBrowser.Login(context.Background(), e.saml, &providers.Challenge{URL: resp.Header.Get("Location")}, "carol", "pw-carol")
	if err != nil {
		t.Fatal(err)
	}
	if err := acs.ParseForm(); err != nil {
		t.Fatal(err)
	}
	resp, err = c.PostForm(acs.URL.String(), acs.PostForm)
	if err != nil {
		t.Fatal(err)
	}
	wantStatus(t, resp, http.StatusFound)
	wantStatus(t, e.get(c, e.url+"/x"), http.StatusOK)
	other := e.browser() // the same session, copied to another browser
	other.Jar.SetCookies(mustURL(e.url), c.Jar.Cookies(mustURL(e.url)))

	resp, err = idpBrowser.Client.Get(e.saml.URL() + "/logout")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	wantStatus(t, resp, http.StatusFound)
	toUsher := resp.Header.Get("Location")
	if !strings.HasPrefix(toUsher, e.url+"/usher/saml/corp/slo?SAMLRequest=") {
		t.Fatalf("IdP sent the logout request to %s", toUsher)
	}
	resp = e.get(c, toUsher)
	wantStatus(t, resp, http.StatusFound)
	back := resp.Header.Get("Location")
	if !strings.HasPrefix(back, e.saml.URL()+"/slo?SAMLResponse=") {
		t.Fatalf("usher answered to %s", back)
	}
	resp, err = idpBrowser.Client.Get(back)
	if err != nil {
		t.Fatal(err)
	}
	body := bodyOf(resp)
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, "You have been logged out") || strings.Contains(body, "could not be confirmed") {
		t.Fatalf("IdP after usher's answer: %s %s", resp.Status, body)
	}

	for name, b := range map[string]*http.Client{"same browser": c, "copied cookie": other} {
		if resp := e.get(b, e.url+"/x"); resp.StatusCode != http.StatusFound || !strings.Contains(resp.Header.Get("Location"), "/usher/login") {
			t.Errorf("%s after IdP logout: %d %s, want a redirect to the login", name, resp.StatusCode, resp.Header.Get("Location"))
		}
	}
}
