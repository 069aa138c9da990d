package config

import (
	"flag"
	"fmt"
	"os"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite golden files in testdata/")

// TestRedactedGolden pins the effective-config dump of testdata/full.yaml.
// Regenerate with: go test ./config -run Golden -update
func TestRedactedGolden(t *testing.T) {
	t.Setenv("USHER_DSN", "postgres://usher:secret@db/usher")
	c, err := Load("testdata/full.yaml")
	if err != nil {
		t.Fatal(err)
	}
	got, err := c.Redacted()
	if err != nil {
		t.Fatal(err)
	}
	const golden = "testdata/full.redacted.yaml"
	if *update {
		if err := os.WriteFile(golden, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if string(got) != string(want) {
		t.Errorf("Redacted() differs from %s (run with -update to accept):\n%s", golden, got)
	}
	if strings.Contains(string(got), "usher:secret") {
		t.Errorf("dump shows the DSN")
	}
}

func TestSummary(t *testing.T) {
	c := mustParse(t, `server: {public_url: https://sso.example.com}
session: {keys: [{env: K}]}
apps:
  - {name: wiki, kind: confluence, upstream: "http://wiki:8090", route: {path_prefix: /wiki}}
  - {name: git, kind: bitbucket, upstream: "http://git:7990", route: {host: sso.example.com, path_prefix: /git}}
  - {name: jira, kind: jira, upstream: "http://jira:8080", route: {host: jira.example.com}}
  - {name: bb, kind: bitbucket, url: "https://bb.example.com/", sso: {client_id: bb, client_secret: {env: S}}}
  - {name: jsm, kind: jira, upstream: "http://jsm:8080", route: {host: jsm.example.com}, url: "https://jsm.example.com", sso: {client_id: jsm, client_secret: {env: S}, signing_alg: ES256}}
idps:
  - {id: okta, name: Okta, type: oidc, domains: [example.com, example.org]}
  - {id: adfs, type: saml}
directories:
  - {name: entra, type: graph, idp: okta, every: 15m, automatic: true, config: {tenant_id: x}}
  - {name: corp-ad, type: ldap, idp: adfs, schedule: "0 * * * *", full_every: 168h, config: {url: ldaps://dc}}
  - {name: manual, type: scim, idp: okta, config: {url: https://x}}
`)
	got := c.Summary()
	for _, want := range []string{
		"public URL https://sso.example.com, listening on :8080, store sqlite",
		"wiki  confluence  proxy + header    http://wiki:8090        path /wiki",
		"bb    bitbucket   provider only     https://bb.example.com  (reached directly)",
		"jsm   jira        proxy + provider  http://jsm:8080         host jsm.example.com",
		"OpenID Provider: issuer https://sso.example.com/usher/op",
		"bb   client bb   RS256  redirect https://bb.example.com/plugins/servlet/oidc/callback",
		"jsm  client jsm  ES256  redirect https://jsm.example.com/plugins/servlet/oidc/callback",
		"okta  oidc  \"Okta\"  domains example.com, example.org",
		"adfs  saml  \"adfs\"  no domains",
		"directories (3):",
		"entra    graph  idp okta  every 15m, full every 24h",
		"automatic: creates people before their first login",
		"corp-ad  ldap   idp adfs  cron 0 * * * *, full every 168h",
		"manual   scim   idp okta  by hand only",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("Summary lacks %q:\n%s", want, got)
		}
	}
	// Routes in match order: host+prefix, host, prefix.
	i, j, k := strings.Index(got, "sso.example.com/git"), strings.Index(got, "jira.example.com/"), strings.Index(got, "*/wiki")
	if !(i >= 0 && i < j && j < k) {
		t.Errorf("routes not in match order:\n%s", got)
	}
}

func TestAnchorsAndMergeKeys(t *testing.T) {
	c := mustParse(t, `server: {public_url: https://sso.example.com}
session: {keys: [{env: K}]}
apps:
  - &jira
    name: jira
    kind: jira
    upstream: http://jira:8080
    route: {host: jira.example.com}
    pass_through: &pt {authorization: true, paths: [/status]}
  - <<: *jira
    name: jira-staging
    route: {host: jira-staging.example.com}
idps:
  - id: okta
    type: oidc
    config: &okta
      issuer: https://okta.example.com
      client_secret: {env: OKTA}
  - id: okta2
    type: oidc
    config:
      <<: *okta
      client_idd: x
`)
	if len(c.Apps) != 2 || c.Apps[1].Kind != "jira" || c.Apps[1].Upstream != "http://jira:8080" || c.Apps[1].Route.Host != "jira-staging.example.com" || !c.Apps[1].PassThrough.Authorization {
		t.Errorf("merged app = %+v", c.Apps[1])
	}
	var oc sampleOIDC
	if err := c.IdPs[0].Config.Decode(&oc); err != nil || oc.ClientSecret.Env() != "OKTA" {
		t.Errorf("anchored block: %+v, %v", oc, err)
	}
	err := c.IdPs[1].Config.Decode(&oc)
	checkErrors(t, err, []wantErr{{"idps[1].config.client_idd", 23, 7, "unknown key"}})
}

func TestAliasBomb(t *testing.T) {
	// 10^6 values once aliases are expanded; only an IdP block can hold
	// free-form data, and it is expanded only when decoded or dumped.
	c := mustParse(t, `server: {public_url: https://sso.example.com}
session: {keys: [{env: K}]}
idps:
  - id: x
    type: oidc
    config:
      a: &a [x, x, x, x, x, x, x, x, x, x]
      b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]
      c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]
      d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]
      e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]
      f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]
`)
	var m map[string]any
	if err := c.IdPs[0].Config.Decode(&m); err == nil || !strings.Contains(err.Error(), "document too large") {
		t.Errorf("Decode of an alias bomb: %v", err)
	}
	var typed struct{ A, B, C, D, E, F [][][][][][]string }
	if err := c.IdPs[0].Config.Decode(&typed); err == nil {
		t.Errorf("typed Decode of an alias bomb succeeded")
	}
	if _, err := c.Redacted(); err != nil {
		t.Errorf("Redacted: %v", err)
	}

	// Merge keys over merge keys: each level merges the previous one three
	// times, 3^40 if expanded naively.
	var b strings.Builder
	b.WriteString("server: {public_url: https://sso.example.com}\nsession: {keys: [{env: K}]}\nidps:\n  - id: x\n    type: oidc\n    config:\n      x0: &x0 {k: v}\n")
	for i := 1; i < 40; i++ {
		fmt.Fprintf(&b, "      x%d: &x%d {<<: [*x%d, *x%d, *x%d]}\n", i, i, i-1, i-1, i-1)
	}
	c = mustParse(t, b.String())
	if err := c.IdPs[0].Config.Decode(&m); err != nil || fmt.Sprint(m["x39"]) != "map[k:v]" {
		t.Errorf("merge chain: %v, %v", m["x39"], err)
	}
}

func FuzzParse(f *testing.F) {
	full, err := os.ReadFile("testdata/full.yaml")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(full)
	f.Add([]byte(base))
	f.Add([]byte("a: &a [*a]\n"))
	f.Add([]byte("idps: [{config: {<<: [*x]}}]"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse("fuzz.yaml", data)
		if err == nil {
			if _, err := c.Redacted(); err != nil {
				t.Errorf("Redacted of a valid config: %v", err)
			}
			_ = c.Summary()
		}
	})
}
