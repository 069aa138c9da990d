package main

import (
	"bytes"
	"context"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/usherhq/usher/store/sqlite"
)

func runCLI(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = run(context.Background(), args, &out, &errb)
	return code, out.String(), errb.String()
}

func writeConfig(t *testing.T, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "usher.yaml")
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

const goodConfig = `server:
  public_url: https://sso.example.com
session:
  keys: [{env: USHER_TEST_KEY}]
apps:
  - name: jira
    kind: jira
    upstream: http://jira.internal:8080
    route: {host: sso.example.com}
idps:
  - id: okta
    type: oidc
    domains: [example.com]
    config:
      issuer: https://example.okta.com
      client_id: abc
      client_secret: {env: OKTA_SECRET}
`

func TestCheckReportsEveryProblemWithLine(t *testing.T) {
	bad := `server:
  public_url: https://sso.example.com
  listn: ":8080"
session:
  keys: [{env: USHER_TEST_KEY}]
apps:
  - name: jira
    kind: jirra
    upstream: http://jira.internal:8080
    route: {host: sso.example.com}
idps:
  - id: okta
    type: oidc
    config:
      issuer: https://example.okta.com
      client_idd: abc
  - id: corp
    type: saml
    config:
      metadata_url: https://idp.example.com/md
      metadata_file: /etc/md.xml
  - id: other
    type: oauth
`
	code, stdout, stderr := runCLI(t, "check", "--config", writeConfig(t, bad))
	if code != 1 {
		t.Fatalf("exit %d, want 1; stdout %q stderr %q", code, stdout, stderr)
	}
	for _, want := range []string{
		"usher.yaml:3:3: server.listn",
		"usher.yaml:8:5: apps[0].kind",
		"idps[0].config.client_idd",
		"idps[1].config: exactly one of metadata_url",
		"idps[1].config.sp_key: required",
		// The types come from the provider packages wired in.
		`usher.yaml:23:5: idps[2].type: want one of oidc, saml, got "oauth"`,
	} {
		if !strings.Contains(stderr, want) {
			t.Errorf("check output lacks %q:\n%s", want, stderr)
		}
	}
}

func TestCheckSummarisesAGoodFile(t *testing.T) {
	t.Setenv("USHER_TEST_KEY", strings.Repeat("k", 32))
	t.Setenv("OKTA_SECRET", "very-secret-value")
	code, stdout, stderr := runCLI(t, "check", "--config", writeConfig(t, goodConfig))
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	for _, want := range []string{"ok", "jira", "okta", "example.com"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("summary lacks %q:\n%s", want, stdout)
		}
	}
	if strings.Contains(stdout+stderr, "very-secret-value") {
		t.Fatal("check printed a secret")
	}
}

// Two IdPs that can make the same usernames are worth a warning, unless
// a prefix keeps them apart.
func TestCheckWarnsOfOverlappingUsernames(t *testing.T) {
	t.Setenv("USHER_TEST_KEY", strings.Repeat("k", 32))
	t.Setenv("OKTA_SECRET", "s")
	partner := `  - id: partner
    type: oidc
    adoption: never
    config:
      issuer: https://partner.example.com
      client_id: abc
      client_secret: {env: OKTA_SECRET}
`
	code, stdout, stderr := runCLI(t, "check", "--config", writeConfig(t, goodConfig+partner))
	if code != 0 || !strings.Contains(stdout, "warnings:") || !strings.Contains(stdout, "idps okta and partner may give two people the same username") ||
		!strings.Contains(stdout, "okta: verified_email, partner: never") {
		t.Fatalf("exit %d, stdout:\n%s\nstderr: %s", code, stdout, stderr)
	}
	prefixed := strings.Replace(partner, "    adoption: never\n", "    mapping:\n      username: {template: \"ext-{{preferred_username}}\"}\n", 1)
	code, stdout, _ = runCLI(t, "check", "--config", writeConfig(t, goodConfig+prefixed))
	if code != 0 || !strings.Contains(stdout, "may give two people the same username") {
		t.Fatalf("a prefix on one side only still overlaps with a plain claim: exit %d\n%s", code, stdout)
	}
	both := strings.Replace(goodConfig, "    domains: [example.com]\n", "    domains: [example.com]\n    mapping:\n      username: {template: \"int-{{preferred_username}}\"}\n", 1)
	code, stdout, _ = runCLI(t, "check", "--config", writeConfig(t, both+prefixed))
	if code != 0 || strings.Contains(stdout, "warnings:") {
		t.Fatalf("disjoint prefixes still warned: exit %d\n%s", code, stdout)
	}
}

// Confluence does not tell an account's e-mail: an IdP that adopts by
// verified e-mail can never take its existing accounts over, which check
// says before everyone is refused at their first sign-in.
func TestCheckWarnsOfAdoptionInConfluence(t *testing.T) {
	t.Setenv("USHER_TEST_KEY", strings.Repeat("k", 32))
	t.Setenv("OKTA_SECRET", "s")
	wiki := strings.Replace(goodConfig, "idps:\n", `  - name: wiki
    kind: confluence
    upstream: http://wiki.internal:8090
    route: {path_prefix: /wiki}
    api: {username: usher, password: {value: pw}}
idps:
`, 1)
	code, stdout, stderr := runCLI(t, "check", "--config", writeConfig(t, wiki))
	if code != 0 || !strings.Contains(stdout, "app wiki does not tell usher the e-mail") || !strings.Contains(stdout, "idps okta (adoption: verified_email)") {
		t.Fatalf("exit %d, stdout:\n%s\nstderr: %s", code, stdout, stderr)
	}
	always := strings.Replace(wiki, "    domains: [example.com]\n", "    domains: [example.com]\n    adoption: always\n", 1)
	if code, stdout, _ = runCLI(t, "check", "--config", writeConfig(t, always)); code != 0 || strings.Contains(stdout, "warnings:") {
		t.Fatalf("adoption: always still warned: exit %d\n%s", code, stdout)
	}
}

func TestCommandLine(t *testing.T) {
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{nil, 2, "usage"},
		{[]string{"frobnicate"}, 2, "unknown command"},
		{[]string{"version"}, 0, "usher"},
		{[]string{"check", "--config", "/nonexistent/usher.yaml"}, 1, "nonexistent"},
		{[]string{"check", "--bogus"}, 2, "bogus"},
		{[]string{"saml"}, 2, "keygen"},
		{[]string{"saml", "keygen", "--days", "0"}, 2, "days"},
	} {
		code, stdout, stderr := runCLI(t, tc.args...)
		if code != tc.code || !strings.Contains(stdout+stderr, tc.want) {
			t.Errorf("usher %q: exit %d (want %d), output %q lacks %q", tc.args, code, tc.code, stdout+stderr, tc.want)
		}
	}
}

func TestSAMLKeygenWritesFilesOnce(t *testing.T) {
	dir := t.TempDir()
	key, cert := filepath.Join(dir, "sp.key"), filepath.Join(dir, "sp.crt")
	if code, _, stderr := runCLI(t, "saml", "keygen", "--cn", "sso.example.com", "--key", key, "--cert", cert); code != 0 {
		t.Fatalf("keygen: %s", stderr)
	}
	k, _ := os.ReadFile(key)
	c, _ := os.ReadFile(cert)
	if !bytes.Contains(k, []byte("PRIVATE KEY")) || !bytes.Contains(c, []byte("CERTIFICATE")) {
		t.Fatalf("keygen wrote %q / %q", k[:min(len(k), 40)], c[:min(len(c), 40)])
	}
	if st, _ := os.Stat(key); st.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %v, want 0600", st.Mode().Perm())
	}
	if code, _, stderr := runCLI(t, "saml", "keygen", "--key", key, "--cert", cert); code == 0 || !strings.Contains(stderr, "exists") {
		t.Fatalf("second keygen over the same files: exit %d, %s", code, stderr)
	}
}

func TestMigrateCommand(t *testing.T) {
	dir := t.TempDir()
	db := filepath.Join(dir, "usher.db")
	cfg := strings.Replace(goodConfig, "server:\n", "store:\n  path: "+db+"\n  migrate: manual\nserver:\n", 1)
	path := writeConfig(t, cfg)
	if _, err := sqlite.Open(context.Background(), db, sqlite.Options{NoMigrate: true}); err == nil || !strings.Contains(err.Error(), "migrate") {
		t.Fatalf("opening an unmigrated store with migrate: manual: %v, want advice to run usher migrate", err)
	}
	code, stdout, stderr := runCLI(t, "migrate", "--config", path)
	if code != 0 || !strings.Contains(stdout, "up to date") {
		t.Fatalf("migrate: exit %d: %s %s", code, stdout, stderr)
	}
	s, err := sqlite.Open(context.Background(), db, sqlite.Options{NoMigrate: true})
	if err != nil {
		t.Fatalf("open after migrate: %v", err)
	}
	s.Close()
	if code, _, stderr := runCLI(t, "migrate", "--config", path); code != 0 {
		t.Fatalf("second migrate: %s", stderr)
	}
}

func TestCheckRefusesHostsTheSessionCannotReach(t *testing.T) {
	t.Setenv("USHER_TEST_KEY", strings.Repeat("k", 32))
	t.Setenv("OKTA_SECRET", "s")
	cfg := strings.Replace(goodConfig, "route: {host: sso.example.com}", "route: {host: jira.example.com}", 1)
	code, _, stderr := runCLI(t, "check", "--config", writeConfig(t, cfg))
	if code != 1 || !strings.Contains(stderr, "apps[0].route.host: host jira.example.com differs") {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	cfg = strings.Replace(cfg, "session:\n", "session:\n  cookie_domain: example.com\n", 1)
	if code, _, stderr := runCLI(t, "check", "--config", writeConfig(t, cfg)); code != 0 {
		t.Fatalf("with cookie_domain: exit %d: %s", code, stderr)
	}
}

func TestCheckSweepReferences(t *testing.T) {
	t.Setenv("USHER_TEST_KEY", strings.Repeat("k", 32))
	cfg := goodConfig + `sweeps:
  - name: leavers
    idps: [okta, entra]
    apps: [jira, wiki]
    sources: {inactive_days: 90}
  - name: leavers
    idps: [okta]
    sources: {access_expiry: true}
provisioning:
  on_app_down: denny
`
	code, _, stderr := runCLI(t, "check", "--config", writeConfig(t, cfg))
	for _, want := range []string{
		`sweeps[0].idps[1]: no identity provider "entra"`,
		`sweeps[0].apps[1]: no app "wiki"`,
		`sweeps[1].name: "leavers" is also the name of sweeps[0]`,
		`provisioning.on_app_down: want allow_known or deny`,
	} {
		if code != 1 || !strings.Contains(stderr, want) {
			t.Errorf("exit %d, output lacks %q:\n%s", code, want, stderr)
		}
	}
}

func TestCheckRefusesNaNValve(t *testing.T) {
	for _, v := range []string{".nan", ".inf", `"NaN"`} {
		cfg := goodConfig + "sweeps:\n  - name: leavers\n    idps: [okta]\n    sources: {inactive_days: 90}\n    max_share: " + v + "\n"
		code, _, stderr := runCLI(t, "check", "--config", writeConfig(t, cfg))
		if code != 1 || !strings.Contains(stderr, "max_share") {
			t.Errorf("max_share %s: exit %d: %s", v, code, stderr)
		}
	}
}

// A secret check names the setting and line of every secret that cannot
// be read, never a value; serve refuses the same file the same way, and
// --no-secrets checks a file away from its environment.
func TestCheckNamesUnreadableSecrets(t *testing.T) {
	t.Setenv("USHER_TEST_KEY", strings.Repeat("k", 32))
	t.Setenv("OKTA_SECRET", "")
	dir := t.TempDir()
	token := filepath.Join(dir, "admin-token")
	if err := os.WriteFile(token, []byte("very-secret-value\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := goodConfig + "admin:\n  token: {file: " + token + "}\nstore:\n  driver: postgres\n  dsn: {file: " + filepath.Join(dir, "no-dsn") + "}\n"
	path := writeConfig(t, cfg)
	for _, cmd := range []string{"check", "serve"} {
		code, stdout, stderr := runCLI(t, cmd, "--config", path)
		if code != 1 {
			t.Fatalf("%s: exit %d, want 1\n%s%s", cmd, code, stdout, stderr)
		}
		for _, want := range []string{
			"usher.yaml:17:22: idps[0].config.client_secret: environment variable OKTA_SECRET is not set or empty",
			"usher.yaml:22:8: store.dsn: file " + filepath.Join(dir, "no-dsn") + ": no such file or directory",
		} {
			if !strings.Contains(stderr, want) {
				t.Errorf("%s output lacks %q:\n%s", cmd, want, stderr)
			}
		}
		if strings.Contains(stdout+stderr, "very-secret-value") || strings.Contains(stderr, "admin.token") {
			t.Errorf("%s reported the readable admin token:\n%s", cmd, stderr)
		}
	}
	code, stdout, stderr := runCLI(t, "check", "--no-secrets", "--config", path)
	if code != 0 || !strings.Contains(stdout, "ok (secrets not read: --no-secrets)") {
		t.Fatalf("check --no-secrets: exit %d\n%s%s", code, stdout, stderr)
	}
}

// The summary says which IdPs accept SCIM pushes, with their subject
// attribute, and when each sweep runs.
func TestCheckSummarisesSCIMAndSweeps(t *testing.T) {
	t.Setenv("USHER_TEST_KEY", strings.Repeat("k", 32))
	t.Setenv("OKTA_SECRET", "s")
	t.Setenv("OKTA_SCIM", "t")
	cfg := strings.Replace(goodConfig, "    domains: [example.com]\n",
		"    domains: [example.com]\n    scim: {token: {env: OKTA_SCIM}, subject: userName, automatic: true}\n", 1) + `  - id: partner
    type: oidc
    config:
      issuer: https://partner.example.com
      client_id: abc
sweeps:
  - name: leavers
    schedule: "0 3 * * *"
    idps: [okta]
    sources: {scim: true}
  - name: idle
    every: 24h
    idps: [okta, partner]
    sources: {inactive_days: 90}
    action: remove_managed_groups
    dry_run: true
  - name: by-hand
    idps: [partner]
    sources: {access_expiry: true}
`
	code, stdout, stderr := runCLI(t, "check", "--config", writeConfig(t, cfg))
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	for _, re := range []string{
		`okta +oidc .*SCIM push, subject userName, automatic\n`,
		`partner +oidc .*no SCIM push\n`,
		`sweeps \(3\):\n`,
		`leavers +cron "0 3 \* \* \*" +idps okta +deactivate\n`,
		`idle +every 24h +idps okta, partner +remove_managed_groups \(dry run\)\n`,
		`by-hand +by hand only +idps partner +deactivate\n`,
	} {
		if !regexp.MustCompile(re).MatchString(stdout) {
			t.Errorf("summary lacks %s:\n%s", re, stdout)
		}
	}
}

// A missing data_dir is created, for usher's user only; a file in its
// place, or a directory usher cannot write to, is refused naming the
// setting rather than with SQLite's "unable to open database file".
func TestDataDirIsCreatedOrRefused(t *testing.T) {
	dir := t.TempDir()
	withDataDir := func(d string) string {
		return writeConfig(t, strings.Replace(goodConfig, "server:\n", "server:\n  data_dir: "+d+"\n", 1))
	}
	data := filepath.Join(dir, "var", "usher")
	if code, stdout, stderr := runCLI(t, "migrate", "--config", withDataDir(data)); code != 0 {
		t.Fatalf("migrate into a missing data_dir: exit %d\n%s%s", code, stdout, stderr)
	}
	st, err := os.Stat(data)
	if err != nil || st.Mode().Perm() != 0o700 {
		t.Fatalf("data_dir %v, %v; want a directory with mode 0700", st, err)
	}
	if _, err := os.Stat(filepath.Join(data, "usher.db")); err != nil {
		t.Fatalf("no store in the new data_dir: %v", err)
	}

	file := filepath.Join(dir, "a-file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	code, _, stderr := runCLI(t, "migrate", "--config", withDataDir(file))
	if want := "server.data_dir: " + file + " exists and is not a directory"; code != 1 || !strings.Contains(stderr, want) {
		t.Errorf("data_dir is a file: exit %d, %q lacks %q", code, stderr, want)
	}

	if os.Geteuid() == 0 {
		return // root writes anywhere
	}
	locked := filepath.Join(dir, "locked")
	if err := os.Mkdir(locked, 0o500); err != nil {
		t.Fatal(err)
	}
	code, _, stderr = runCLI(t, "migrate", "--config", withDataDir(locked))
	if want := "server.data_dir: " + locked + " is not writable"; code != 1 || !strings.Contains(stderr, want) {
		t.Errorf("read-only data_dir: exit %d, %q lacks %q", code, stderr, want)
	}
}

// serve creates the data_dir too, right after check said ok.
func TestServeCreatesDataDir(t *testing.T) {
	t.Parallel()
	data := filepath.Join(t.TempDir(), "new", "data")
	e := startEnvWith(t, envOptions{Tune: func(m *Main) {
		m.Config.Server.DataDir = data
		m.Config.Store.Path = filepath.Join(data, "usher.db")
	}})
	if st, err := os.Stat(data); err != nil || st.Mode().Perm() != 0o700 {
		t.Fatalf("data_dir %v, %v; want it created with mode 0700", st, err)
	}
	wantStatus(t, e.login(e.browser(), "/", "acme", "alice", "pw-alice"), http.StatusOK)
}

// An error from a part usher opens at start names that part once:
// "session: key 1: ...", not "session: session: key 1: ...".
func TestServeNamesTheFailingPartOnce(t *testing.T) {
	t.Setenv("USHER_TEST_KEY", "short")
	t.Setenv("OKTA_SECRET", "s")
	cfg := strings.Replace(goodConfig, "server:\n", "server:\n  data_dir: "+t.TempDir()+"\n", 1)
	code, _, stderr := runCLI(t, "serve", "--config", writeConfig(t, cfg))
	if code != 1 || !strings.HasPrefix(stderr, "usher serve: session: key 1: ") || strings.Count(stderr, "session") != 1 {
		t.Fatalf("exit %d: %q", code, stderr)
	}
}

// The blocks cmd/usher decodes with a type's own struct (an IdP's
// config, an app's api, a directory's config) and the settings it checks
// itself (scim.subject) refuse bad values at their own key and line.
func TestCheckRefusesTypedBlocksWithLine(t *testing.T) {
	t.Setenv("USHER_TEST_KEY", strings.Repeat("k", 32))
	t.Setenv("OKTA_SECRET", "s")
	cloudApp := "  - name: cloud\n    kind: cloud\n    api:\n      site: https://acme.atlassian.net\n      org_id: o\n      directory_id: d\n      org_key: {value: k}\n      access: [{resource: \"ari:cloud:jira-software::site/1\", role: atlassian/user}]\n"
	for _, tc := range []struct {
		name string
		old  string // replaced in goodConfig by new
		new  string
		want string
	}{
		{"oidc subject_claim", "      client_id: abc\n", "      client_id: abc\n      subject_claim: nonce\n",
			`usher.yaml:17:7: idps[0].config.subject_claim: "nonce" describes the token, not the person`},
		{"oidc email_verified", "      client_id: abc\n", "      client_id: abc\n      email_verified: trust\n",
			`usher.yaml:17:7: idps[0].config.email_verified: "trust" is neither`},
		{"scim subject", "    domains: [example.com]\n", "    domains: [example.com]\n    scim: {token: {value: t}, subject: emails}\n",
			`usher.yaml:14:31: idps[0].scim.subject: subject attribute "emails" is not externalId`},
		{"cloud api unknown key", "idps:\n", cloudApp + "      invte: site\nidps:\n",
			`usher.yaml:18:7: apps[1].api.invte: unknown key (did you mean "invite"?)`},
		{"cloud api bad role", "idps:\n", strings.Replace(cloudApp, "atlassian/user", "admin", 1) + "idps:\n",
			`usher.yaml:17:62: apps[1].api.access[0].role: want one of atlassian/user`},
		{"api on a generic app", "idps:\n", "  - {name: web, kind: generic, upstream: http://web, route: {host: web.sso.example.com}, api: {x: 1}}\nidps:\n",
			"apps[1].api: apps of kind \"generic\" cannot be provisioned"},
		{"directory unknown type", "", "directories:\n  - {name: corp, type: azure, idp: okta, config: {x: 1}}\n",
			`usher.yaml:19:18: directories[0].type: want one of google, graph, ldap, okta, onelogin, scim, got "azure"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := goodConfig + tc.new
			if tc.old != "" {
				cfg = strings.Replace(goodConfig, tc.old, tc.new, 1)
			}
			code, _, stderr := runCLI(t, "check", "--config", writeConfig(t, cfg))
			if code != 1 || !strings.Contains(stderr, tc.want) {
				t.Errorf("exit %d, want 1 with %q:\n%s", code, tc.want, stderr)
			}
		})
	}
}
