package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"html/template"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/usherhq/usher/providers/oidc/oidctest"
	"github.com/usherhq/usher/targets/atlassiantest"
)

// demoUsers are the people of the two demo companies. Each company has its
// own IdP, so the chooser and e-mail discovery have something to choose.
//
// Acme is the company whose people the apps already know: its IdP may take
// existing accounts over (adoption: always). Globex's people are new to the
// apps and take over nobody's (adoption: never).
var demoIdPs = []struct {
	id, name, domain string
	// adoption is the YAML line of the IdP's adoption policy.
	adoption string
	users    []oidctest.User
}{
	{"acme", "Acme Okta (demo)", "acme.test", "    adoption: always\n", []oidctest.User{
		{Subject: "00u-alice", Username: "alice", Password: "alice", Email: "alice@acme.test", Name: "Alice Archer", Groups: []string{"engineering", "usher-admins"}},
		{Subject: "00u-carol", Username: "carol", Password: "carol", Email: "carol@acme.test", Name: "Carol Chen", Groups: []string{"support"}},
	}},
	{"globex", "Globex Entra ID (demo)", "globex.test", "    adoption: never\n", []oidctest.User{
		{Subject: "a6f3-bob", Username: "bob", Password: "bob", Email: "bob@globex.test", Name: "Bob Baker", Groups: []string{"sales"}},
	}},
}

// cmdDemo runs usher with everything it needs in one process: two demo
// OpenID Providers (real ones, on zitadel/oidc), a demo app that shows the
// identity headers it receives, and SQLite in a temp dir.
func cmdDemo(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("demo")
	port := fs.Int("port", 8080, "port for usher on 127.0.0.1")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))

	ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", *port))
	if err != nil {
		return fmt.Errorf("listen on 127.0.0.1:%d: %w (is something else running there? try --port)", *port, err)
	}
	public := "http://" + ln.Addr().String()

	apiPassword := randomHex(12)
	// An emulated Jira people reach directly, which signs them in with its
	// built-in OpenID Connect client through usher's OpenID Provider
	// (provider only: usher is not in its data path).
	ssoJira := atlassiantest.New(atlassiantest.Jira, atlassiantest.Options{
		AdminUser: "usher-admin", AdminPassword: apiPassword,
		Groups: []string{"jira-developers", "usher-users", "sales-team"},
		Users:  []atlassiantest.User{{Name: "localadmin", DisplayName: "Local Admin (made by hand)", Email: "admin@localhost", Active: true}},
	})
	ssoApp, err := startDemoApp(ssoJira)
	if err != nil {
		ln.Close()
		return err
	}
	defer ssoApp.Close()
	ssoSecret := randomHex(16)
	app, err := startDemoApp(whoami(ssoApp.URL + "/"))
	if err != nil {
		ln.Close()
		return err
	}
	defer app.Close()
	var appYAML strings.Builder
	for _, a := range []struct{ name, kind, prefix string }{{"jira", "jira", "/jira"}, {"confluence", "confluence", "/wiki"}} {
		emu, err := startDemoApp(atlassiantest.New(atlassiantest.Kind(a.kind), atlassiantest.Options{
			AdminUser: "usher-admin", AdminPassword: apiPassword,
			Groups: []string{"jira-developers", "confluence-eng", "usher-users", "sales-team"},
			Users:  []atlassiantest.User{{Name: "localadmin", DisplayName: "Local Admin (made by hand)", Email: "admin@localhost", Active: true}},
		}))
		if err != nil {
			ln.Close()
			return err
		}
		defer emu.Close()
		fmt.Fprintf(&appYAML, `  - name: %s
    kind: %s
    upstream: %s
    route: {path_prefix: %s}
    api: {username: usher-admin, password: %s}
`, a.name, a.kind, emu.URL, a.prefix, apiPassword)
	}
	fmt.Fprintf(&appYAML, `  - name: jira-sso
    kind: jira
    url: %s
    api: {username: usher-admin, password: %s}
    sso: {client_id: jira-sso, client_secret: %s}
`, ssoApp.URL, apiPassword, ssoSecret)
	adminLn, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", *port+1))
	if err != nil {
		ln.Close()
		return fmt.Errorf("admin listener on 127.0.0.1:%d: %w (try another --port)", *port+1, err)
	}
	adminToken := randomHex(16)

	var idpYAML strings.Builder
	for _, d := range demoIdPs {
		idp, err := oidctest.Start(oidctest.Options{
			Name:  d.name,
			Users: d.users,
			Clients: []oidctest.Client{{
				ID: "usher", Secret: "demo-secret",
				RedirectURIs:           []string{public + "/usher/oidc/" + d.id + "/callback"},
				PostLogoutRedirectURIs: []string{public + "/usher/logged-out"},
			}},
			Log: log,
		})
		if err != nil {
			ln.Close()
			return fmt.Errorf("start demo IdP %s: %w", d.id, err)
		}
		defer idp.Close()
		fmt.Fprintf(&idpYAML, `  - id: %s
    name: %q
    type: oidc
    domains: [%s]
%s    config:
      issuer: %s
      client_id: usher
      client_secret: demo-secret
    mapping:
      groups:
        map:
          - idp_group: engineering
            groups: {jira: [jira-developers], jira-sso: [jira-developers], confluence: [confluence-eng]}
          - idp_group: sales
            groups: {"*": [sales-team]}
        defaults: {"*": [usher-users]}
`, d.id, d.name, d.domain, d.adoption, idp.Issuer())
	}

	dir, err := os.MkdirTemp("", "usher-demo-")
	if err != nil {
		ln.Close()
		return err
	}
	defer os.RemoveAll(dir)
	yaml := fmt.Sprintf(`server:
  public_url: %s
  data_dir: %s
session:
  keys: [%s]
admin:
  listen: %s
  token: %s
  sso_group: usher-admins
  sso_idp: acme
log: {level: warn}
apps:
  - name: home
    kind: generic
    upstream: %s
    route: {path_prefix: /}
%sidps:
%ssweeps:
  - name: leavers
    idps: [acme, globex]
    sources: {inactive_days: 30, access_expiry: true}
    protected_users: [localadmin]
    max_share: 0.5
`, public, dir, randomHex(32), adminLn.Addr(), adminToken, app.URL, appYAML.String(), idpYAML.String())
	cfgPath := filepath.Join(dir, "usher.yaml")
	if err := os.WriteFile(cfgPath, []byte(yaml), 0o600); err != nil {
		ln.Close()
		return err
	}
	cfg, err := loadConfig(cfgPath)
	if err != nil {
		ln.Close()
		return fmt.Errorf("demo config: %w", err)
	}
	m := &Main{Config: cfg, ConfigPath: cfgPath, Log: log}
	m.Listen(ln)
	m.ListenAdmin(adminLn)
	if err := m.Open(ctx); err != nil {
		return err
	}
	defer m.Close()
	// The Jira admin's "Authentication methods" settings, as
	// docs/apps/atlassian-sso.md gives them.
	if err := ssoJira.EnableSSO(ctx, atlassiantest.SSO{
		BaseURL: ssoApp.URL, IssuerURL: public + "/usher/op", ClientID: "jira-sso", ClientSecret: ssoSecret,
		AdditionalScopes: []string{"profile", "email"}, UsernameClaim: "${preferred_username}",
	}); err != nil {
		return fmt.Errorf("demo: emulated Jira SSO: %w", err)
	}

	fmt.Fprintf(stdout, "usher demo is running.\n\n  Open %s/ in your browser.\n\n", public)
	fmt.Fprintf(stdout, "  Sign in with an e-mail address to pick the IdP, or choose one:\n")
	for _, d := range demoIdPs {
		for _, u := range d.users {
			fmt.Fprintf(stdout, "    %-24s password %-6s (%s)\n", u.Email, u.Password, d.name)
		}
	}
	fmt.Fprintf(stdout, "\n  Behind usher: a demo page at /, an emulated Jira at /jira/ and Confluence at /wiki/.\n")
	fmt.Fprintf(stdout, "  usher creates your account in both at sign-in, with groups mapped from the IdP.\n\n")
	fmt.Fprintf(stdout, "  Emulated Jira with its own SSO, reached directly (not through usher): %s/\n", ssoApp.URL)
	fmt.Fprintf(stdout, "  It signs you in through usher's OpenID Provider (issuer %s/usher/op), as Jira's built-in OIDC client does.\n\n", public)
	fmt.Fprintf(stdout, "  Admin page: http://%s/admin/ (token %s, or sign in as alice, an usher admin)\n", adminLn.Addr(), adminToken)
	if len(configWarnings(cfg)) > 0 {
		// Both demo IdPs use the default username claim, as most first
		// files do, so the demo shows the warning such a file gets.
		fmt.Fprintf(stdout, "\n  The config warning logged above is expected: both demo IdPs name people by preferred_username, so two bobs could meet.\n")
		fmt.Fprintf(stdout, "  A real file gives each IdP's usernames their own prefix (docs/config.md, \"Checking a file\").\n")
	}
	fmt.Fprintf(stdout, "\n  Config used: %s\n  Press Ctrl-C to stop.\n", cfgPath)
	return m.Wait(ctx)
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// whoami is the demo app: it shows the identity headers usher set.
// ssoJira is the address of the emulated Jira that signs in through
// usher's OpenID Provider.
func whoami(ssoJira string) http.Handler {
	page := template.Must(template.New("").Parse(`<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Demo app</title>
<style>body{font:16px/1.5 system-ui,sans-serif;max-width:44rem;margin:3rem auto;padding:0 1rem}td{padding:.2rem .8rem;border-bottom:1px solid #ddd;vertical-align:top}code{word-break:break-all}</style></head><body>
{{if .User}}<h1>Hello, {{.Name}}</h1><p>You reached the demo app through usher as <b>{{.User}}</b>.</p>{{else}}<h1>No identity</h1>{{end}}
<h2>Identity headers received</h2><table>{{range .Headers}}<tr><td><code>{{.K}}</code></td><td><code>{{.V}}</code></td></tr>{{end}}</table>
<p><a href="/jira/">Emulated Jira</a> · <a href="/wiki/">Emulated Confluence</a> · <a href="{{.SSOJira}}">Emulated Jira with its own SSO</a> · <a href="/usher/logout">Sign out</a></p></body></html>`))
	type kv struct{ K, V string }
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var hs []kv
		for k, vs := range r.Header {
			if strings.HasPrefix(k, "X-") {
				hs = append(hs, kv{k, strings.Join(vs, " | ")})
			}
		}
		sort.Slice(hs, func(i, j int) bool { return hs[i].K < hs[j].K })
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_ = page.Execute(w, map[string]any{"User": r.Header.Get("X-Remote-User"), "Name": r.Header.Get("X-Remote-Name"), "Headers": hs, "SSOJira": ssoJira})
	})
}

// demoServer serves a demo app on a loopback port.
type demoServer struct {
	URL string
	srv *http.Server
}

func startDemoApp(h http.Handler) (*demoServer, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("demo app: listen: %w", err)
	}
	s := &demoServer{URL: "http://" + ln.Addr().String(), srv: &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}}
	go s.srv.Serve(ln)
	return s, nil
}

func (s *demoServer) Close() { s.srv.Close() }
