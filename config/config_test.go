package config

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// base is a minimal valid file; cases below replace parts of it.
const base = `server:
  public_url: https://sso.example.com
session:
  keys: [{env: K}]
apps:
  - name: jira
    kind: jira
    upstream: http://jira:8080
    route: {host: jira.example.com}
idps:
  - id: okta
    type: oidc
`

func mustParse(t *testing.T, src string) *Config {
	t.Helper()
	c, err := Parse("usher.yaml", []byte(src))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	return c
}

func TestLoadFull(t *testing.T) {
	t.Setenv("USHER_DSN", "postgres://usher:pa$$word@db/usher")
	t.Setenv("OKTA_SECRET", "okta-client-secret")
	c, err := Load("testdata/full.yaml")
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if got, want := c.Server.PublicURL, "https://sso.example.com"; got != want {
		t.Errorf("public_url = %q, want %q", got, want)
	}
	if len(c.Session.Keys) != 2 || c.Session.Keys[0].Env() != "USHER_SESSION_KEY" || c.Session.Keys[1].File() != "/run/secrets/old-session-key" {
		t.Errorf("session keys not decoded as env and file references")
	}
	if c.Headers.SharedSecret == nil || c.Headers.SharedSecret.Value.Env() != "USHER_UPSTREAM_SECRET" || c.Headers.SharedSecret.Header != "X-Usher-Secret" {
		t.Errorf("shared_secret = %+v", c.Headers.SharedSecret)
	}
	dsn, err := c.Store.DSN.Resolve()
	if err != nil || dsn != "postgres://usher:pa$$word@db/usher" {
		t.Errorf("dsn = %q, %v; want the expanded value with its $ intact", dsn, err)
	}
	if c.Store.Path != "" {
		t.Errorf("store.path = %q for postgres, want empty", c.Store.Path)
	}
	a := c.Apps[0]
	if a.Route.Host != "jira.example.com" || !a.PassThrough.Authorization || strings.Join(a.PassThrough.Paths, ",") != "/status,/s/" {
		t.Errorf("app = %+v", a)
	}
	idp := c.IdPs[0]
	if idp.Name != "Okta" || idp.Mapping.Email.Claim != "email" || idp.Config.IsZero() || idp.Config.Path() != "idps[0].config" {
		t.Errorf("idp = %+v", idp)
	}
	var oc sampleOIDC
	if err := idp.Config.Decode(&oc); err != nil {
		t.Fatalf("Decode: %v", err)
	}
	if oc.Issuer != "https://example.okta.com" || oc.ClientID != "0oa123" {
		t.Errorf("oidc config = %+v", oc)
	}
	if s, err := oc.ClientSecret.Resolve(); err != nil || s != "okta-client-secret" {
		t.Errorf("client_secret resolves to %q, %v", s, err)
	}
}

func TestDefaults(t *testing.T) {
	c := mustParse(t, base+`  - id: adfs
    type: saml
`)
	checks := []struct{ name, got, want string }{
		{"server.listen", c.Server.Listen, ":8080"},
		{"server.data_dir", c.Server.DataDir, "./data"},
		{"session.cookie_name", c.Session.CookieName, "usher_session"},
		{"store.driver", c.Store.Driver, "sqlite"},
		{"store.path", c.Store.Path, "./data/usher.db"},
		{"headers.username", c.Headers.Username, "X-Remote-User"},
		{"headers.email", c.Headers.Email, "X-Remote-Email"},
		{"headers.display_name", c.Headers.DisplayName, "X-Remote-Name"},
		{"headers.groups", c.Headers.Groups, "X-Remote-Groups"},
		{"headers.encoding", c.Headers.Encoding, "latin1"},
		{"idps[0].name", c.IdPs[0].Name, "okta"},
		// The username and display name claims depend on the IdP type,
		// which cmd/usher knows (each provider declares its defaults).
		{"idps[0].mapping.username", fmt.Sprint(c.IdPs[0].Mapping.Username.Claim), "<nil>"},
		{"idps[1].mapping.email", fmt.Sprint(c.IdPs[1].Mapping.Email.Claim), "email"},
		{"idps[1].mapping.groups.claim", c.IdPs[1].Mapping.Groups.Claim, "groups"},
		{"provisioning.on_app_down", c.Provisioning.OnAppDown, "allow_known"},
	}
	for _, ch := range checks {
		if ch.got != ch.want {
			t.Errorf("%s = %q, want %q", ch.name, ch.got, ch.want)
		}
	}
	durs := []struct {
		name      string
		got, want time.Duration
	}{
		{"idle_timeout", c.Session.IdleTimeout, 8 * time.Hour},
		{"absolute_timeout", c.Session.AbsoluteTimeout, 24 * time.Hour},
		{"flow_timeout", c.Session.FlowTimeout, 10 * time.Minute},
		{"server.body_read_timeout", c.Server.BodyReadTimeout, time.Minute},
		{"store.timeout", c.Store.Timeout, 5 * time.Second},
	}
	for _, d := range durs {
		if d.got != d.want {
			t.Errorf("%s = %s, want %s", d.name, d.got, d.want)
		}
	}
	if c.Headers.SharedSecret != nil {
		t.Errorf("shared_secret defaulted into existence")
	}
	if c.Server.BodyMinRate != 1024 || c.Server.MaxConnsPerClient != 256 {
		t.Errorf("server.body_min_rate = %d, server.max_conns_per_client = %d; want 1024, 256", c.Server.BodyMinRate, c.Server.MaxConnsPerClient)
	}

	c = mustParse(t, strings.Replace(base, "server:\n", "server:\n  data_dir: /var/lib/usher/\n", 1))
	if c.Store.Path != "/var/lib/usher/usher.db" {
		t.Errorf("store.path = %q, want it under data_dir", c.Store.Path)
	}
}

// A SCIM brake gets its window and what it does to sessions by default;
// without a brake block there is no brake.
func TestSCIMBrakeDefaults(t *testing.T) {
	c := mustParse(t, base+"    scim:\n      token: {value: t}\n      brake: {max_share: 0.1}\n")
	b := c.IdPs[0].SCIM.Brake
	if b == nil || b.MaxShare != 0.1 || b.MaxCount != 0 || b.Window != time.Hour || b.HeldSessions != HeldSessionsRevoke {
		t.Fatalf("brake = %+v", b)
	}
	c = mustParse(t, base+"    scim:\n      token: {value: t}\n      brake: {max_count: 25, window: 15m, held_sessions: keep}\n")
	if b := c.IdPs[0].SCIM.Brake; b.MaxCount != 25 || b.Window != 15*time.Minute || b.HeldSessions != HeldSessionsKeep {
		t.Fatalf("brake = %+v", b)
	}
	c = mustParse(t, base+"    scim:\n      token: {value: t}\n")
	if c.IdPs[0].SCIM.Brake != nil {
		t.Fatal("a brake defaulted into existence")
	}
}

func TestDurations(t *testing.T) {
	c := mustParse(t, strings.Replace(base, "  keys: [{env: K}]\n", "  keys: [{env: K}]\n  idle_timeout: 90s\n  absolute_timeout: 8h\n  flow_timeout: 1h30m\n", 1))
	if c.Session.IdleTimeout != 90*time.Second || c.Session.AbsoluteTimeout != 8*time.Hour || c.Session.FlowTimeout != 90*time.Minute {
		t.Errorf("durations = %s %s %s", c.Session.IdleTimeout, c.Session.AbsoluteTimeout, c.Session.FlowTimeout)
	}
}

// A cloud app has an api block and nothing to proxy to.
func TestCloudAppNeedsNoUpstream(t *testing.T) {
	c := mustParse(t, strings.Replace(base, "idps:\n", "  - name: cloud\n    kind: cloud\n    api: {org_id: o}\nidps:\n", 1))
	if a := c.Apps[1]; a.Kind != "cloud" || a.Upstream != "" || a.API.IsZero() {
		t.Fatalf("cloud app = %+v", a)
	}
	if s := c.Summary(); !strings.Contains(s, "provisioning only") || strings.Contains(s, "-> cloud") {
		t.Errorf("summary routes a cloud app:\n%s", s)
	}
}
