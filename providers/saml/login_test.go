package saml

import (
	"context"
	"net/url"
	"slices"
	"testing"

	"github.com/usherhq/usher/providers/saml/samltest"
)

// TestLoginEndToEnd walks a real exchange with samlidp: Begin, the IdP's
// SSO endpoint and login form, its auto-POST to the ACS, Finish.
func TestLoginEndToEnd(t *testing.T) {
	for _, tc := range []struct {
		name string
		mod  func(*Config)
	}{
		{"redirect", nil},
		{"redirect signed", func(c *Config) { c.SignRequests = true }},
		{"post signed", func(c *Config) { c.Binding = "post"; c.SignRequests = true }},
		{"post", func(c *Config) { c.Binding = "post" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, tc.mod)
			ch, _ := e.begin("flow-1")
			if (ch.Form != nil) != (e.p.cfg.Binding == "post") {
				t.Fatalf("challenge form %v for binding %s", ch.Form, e.p.cfg.Binding)
			}
			acs, err := samltest.NewBrowser().Login(context.Background(), e.idp, ch, "alice", "wonderland")
			if err != nil {
				t.Fatal(err)
			}
			if acs.URL.String() != e.p.ACSURL() {
				t.Fatalf("IdP posted to %s, want %s", acs.URL, e.p.ACSURL())
			}
			if got := e.p.FlowID(acs); got != "flow-1" {
				t.Fatalf("FlowID = %q", got)
			}
			res, err := e.p.Finish(context.Background(), acs, ch.State)
			wantAccepted(t, res, err, "alice@example.com")
			id := res.Identity
			if id.IdP != "okta" || res.ReturnTo != "" {
				t.Fatalf("IdP %q ReturnTo %q", id.IdP, res.ReturnTo)
			}
			for k, want := range map[string][]string{
				"mail":                              {"alice@example.com"},
				"urn:oid:0.9.2342.19200300.100.1.3": {"alice@example.com"},
				"uid":                               {"alice"},
				"givenName":                         {"Alice"},
				"eduPersonAffiliation":              {"jira-users", "confluence-users"},
				"urn:oid:1.3.6.1.4.1.5923.1.1.1.1":  {"jira-users", "confluence-users"},
				ClaimNameID:                         {"alice@example.com"},
				ClaimNameIDFormat:                   {"urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress"},
			} {
				if !slices.Equal(id.Claims[k], want) {
					t.Errorf("claim %s = %q, want %q", k, id.Claims[k], want)
				}
			}
			if id.Claim(ClaimSessionIndex) == "" {
				t.Error("no session_index claim")
			}
			h, err := decodeLogoutHint(id.LogoutHint)
			if err != nil || h.NameID != "alice@example.com" || h.SessionIndex != id.Claim(ClaimSessionIndex) {
				t.Fatalf("logout hint %q: %+v %v", id.LogoutHint, h, err)
			}
			if len(id.LogoutHint) > 120 {
				t.Errorf("logout hint is %d bytes, want it short", len(id.LogoutHint))
			}

			// The same POST again is a replay.
			again := samltest.PostRequest(acs.URL.String(), acs.PostForm)
			_, err = e.p.Finish(context.Background(), again, ch.State)
			wantRefused(t, err, "already used")
		})
	}
}

func TestIdPInitiated(t *testing.T) {
	for _, tc := range []struct {
		name  string
		allow bool
	}{{"off", false}, {"on", true}} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, func(c *Config) {
				c.AllowIdPInitiated = tc.allow
				c.IdPInitiatedPath = "/secure/Dashboard.jspa"
			})
			// RelayState pointing off-site must never become the landing page.
			if err := e.idp.AddShortcut("jira", e.p.EntityID(), "https://evil.example/"); err != nil {
				t.Fatal(err)
			}
			acs, err := samltest.NewBrowser().IdPInitiated(context.Background(), e.idp, "jira", "alice", "wonderland")
			if err != nil {
				t.Fatal(err)
			}
			if got := e.p.FlowID(acs); got != "https://evil.example/" {
				t.Fatalf("FlowID = %q, want the raw RelayState", got)
			}
			res, err := e.p.Finish(context.Background(), acs, nil)
			if !tc.allow {
				wantRefused(t, err, "allow_idp_initiated is off")
				return
			}
			wantAccepted(t, res, err, "alice@example.com")
			if res.ReturnTo != "/secure/Dashboard.jspa" {
				t.Fatalf("ReturnTo = %q", res.ReturnTo)
			}
		})
	}
}

// TestSPInitiatedResponseWithoutFlow: a response to a request usher made
// cannot be used as an IdP-initiated one when the flow cookie is missing.
func TestSPInitiatedResponseWithoutFlow(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.AllowIdPInitiated = true })
	ch, _ := e.begin("flow-1")
	acs, err := samltest.NewBrowser().Login(context.Background(), e.idp, ch, "alice", "wonderland")
	if err != nil {
		t.Fatal(err)
	}
	_, err = e.p.Finish(context.Background(), acs, nil)
	wantRefused(t, err, "InResponseTo")
}

func TestRelayStateIsOpaque(t *testing.T) {
	e := newEnv(t, nil)
	const evil = "https://evil.example/"
	ch, err := e.p.Begin(context.Background(), evil, "")
	if err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(ch.URL)
	if err != nil {
		t.Fatal(err)
	}
	if u.Query().Get("RelayState") != evil {
		t.Fatalf("RelayState not carried verbatim: %s", ch.URL)
	}
	acs, err := samltest.NewBrowser().Login(context.Background(), e.idp, ch, "alice", "wonderland")
	if err != nil {
		t.Fatal(err)
	}
	if got := e.p.FlowID(acs); got != evil {
		t.Fatalf("FlowID = %q", got)
	}
	res, err := e.p.Finish(context.Background(), acs, ch.State)
	wantAccepted(t, res, err, "alice@example.com")
	if res.ReturnTo != "" {
		t.Fatalf("ReturnTo = %q; an SP-initiated login has none", res.ReturnTo)
	}
}

func TestRelayStateMustMatchFlow(t *testing.T) {
	e := newEnv(t, nil)
	ch, _ := e.begin("flow-1")
	acs, err := samltest.NewBrowser().Login(context.Background(), e.idp, ch, "alice", "wonderland")
	if err != nil {
		t.Fatal(err)
	}
	if err := acs.ParseForm(); err != nil {
		t.Fatal(err)
	}
	acs.PostForm.Set("RelayState", "flow-2")
	_, err = e.p.Finish(context.Background(), samltest.PostRequest(acs.URL.String(), acs.PostForm), ch.State)
	wantRefused(t, err, "RelayState does not match")
}
