package saml

import (
	"bytes"
	"compress/flate"
	"context"
	"encoding/base64"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/usherhq/usher/providers"
	"github.com/usherhq/usher/providers/saml/samltest"
)

func TestLogoutURL(t *testing.T) {
	p := openStatic(t, nil)
	hint, err := encodeLogoutHint(logoutHint{NameID: "alice@example.com", Format: nameIDFormats["emailAddress"], SessionIndex: "s-1"})
	if err != nil {
		t.Fatal(err)
	}
	id := providers.Identity{IdP: "okta", Subject: "alice@example.com", LogoutHint: hint}
	for _, tc := range []struct{ returnTo, relay string }{
		{"https://usher.example/after?x=1", "/after?x=1"},
		{"https://evil.example/", ""},
		{"//evil.example/", ""},
		{"/local", "/local"},
		{"", ""},
	} {
		t.Run(tc.returnTo, func(t *testing.T) {
			s, err := p.LogoutURL(context.Background(), id, tc.returnTo)
			if err != nil {
				t.Fatal(err)
			}
			u, err := url.Parse(s)
			if err != nil {
				t.Fatal(err)
			}
			q := u.Query()
			if u.Host != "idp.example" || u.Path != "/slo" {
				t.Fatalf("logout URL %s", s)
			}
			if q.Get("RelayState") != tc.relay {
				t.Errorf("RelayState = %q, want %q", q.Get("RelayState"), tc.relay)
			}
			if q.Get("Signature") == "" || q.Get("SigAlg") == "" {
				t.Errorf("LogoutRequest not signed: %s", s)
			}
			deflated, err := base64.StdEncoding.DecodeString(q.Get("SAMLRequest"))
			if err != nil {
				t.Fatal(err)
			}
			x, err := io.ReadAll(flate.NewReader(bytes.NewReader(deflated)))
			if err != nil {
				t.Fatal(err)
			}
			for _, want := range []string{">alice@example.com</saml:NameID>", "emailAddress", ">s-1</samlp:SessionIndex>", `Destination="https://idp.example/slo"`} {
				if !strings.Contains(string(x), want) {
					t.Errorf("LogoutRequest lacks %s: %s", want, x)
				}
			}
		})
	}
}

func TestLogoutURLWithoutSLO(t *testing.T) {
	p := openStatic(t, func(c *Config) {
		c.MetadataXML = strings.Replace(c.MetadataXML, "SingleLogoutService", "Ignored", -1)
	})
	s, err := p.LogoutURL(context.Background(), providers.Identity{LogoutHint: `["a","",""]`}, "/")
	if err != nil || s != "" {
		t.Fatalf("LogoutURL = %q, %v; want none", s, err)
	}
}

// TestSingleLogoutEndToEnd: log in at samlidp, send its SLO our
// LogoutRequest, take its LogoutResponse back to HandleLogoutResponse.
func TestSingleLogoutEndToEnd(t *testing.T) {
	e := newEnv(t, nil)
	b := samltest.NewBrowser()
	ch, _ := e.begin("flow-1")
	acs, err := b.Login(context.Background(), e.idp, ch, "alice", "wonderland")
	if err != nil {
		t.Fatal(err)
	}
	res, err := e.p.Finish(context.Background(), acs, ch.State)
	wantAccepted(t, res, err, "alice@example.com")

	logout, err := e.p.LogoutURL(context.Background(), res.Identity, "https://usher.example/bye")
	if err != nil {
		t.Fatal(err)
	}
	resp, err := b.Client.Get(logout)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var back *http.Request
	switch {
	case resp.StatusCode == http.StatusFound || resp.StatusCode == http.StatusSeeOther:
		back = httptestRequest(http.MethodGet, resp.Header.Get("Location"), nil)
	case resp.StatusCode == http.StatusOK:
		form, err := samltestForm(body)
		if err != nil {
			t.Fatalf("IdP answered %s", body)
		}
		back = samltest.PostRequest(form.action, form.values)
	default:
		t.Fatalf("IdP SLO: %s %s", resp.Status, body)
	}
	if !strings.HasPrefix(back.URL.String(), "https://usher.example/usher/saml/okta/slo") {
		t.Fatalf("LogoutResponse goes to %s", back.URL)
	}
	if got := e.p.FlowID(back); got != "/bye" {
		t.Errorf("RelayState = %q", got)
	}
	if err := e.p.HandleLogoutResponse(back); err != nil {
		t.Fatal(err)
	}

	// Tampered: a LogoutResponse for another SP's SLO endpoint.
	q := back.URL.Query()
	if q.Get("SAMLResponse") != "" {
		q.Set("Signature", "AAAA")
		bad := httptestRequest(http.MethodGet, "https://usher.example/usher/saml/okta/slo?"+q.Encode(), nil)
		err := e.p.HandleLogoutResponse(bad)
		wantRefused(t, err, "")
	}
}
