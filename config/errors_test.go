package config

import (
	"errors"
	"strings"
	"testing"
)

type wantErr struct {
	path      string
	line, col int // 0 skips the check
	msg       string
}

func checkErrors(t *testing.T, err error, want []wantErr) {
	t.Helper()
	var es Errors
	if !errors.As(err, &es) {
		t.Fatalf("error = %v (%T), want Errors", err, err)
	}
	if len(es) != len(want) {
		t.Errorf("got %d errors, want %d:\n%v", len(es), len(want), err)
	}
	for i := 0; i < len(es) && i < len(want); i++ {
		g, w := es[i], want[i]
		if g.Path != w.path || (w.line != 0 && g.Line != w.line) || (w.col != 0 && g.Column != w.col) || !strings.Contains(g.Msg, w.msg) {
			t.Errorf("error %d = %s:%d:%d %s: %s\n          want %s:%d:%d %s: ...%s...", i, g.File, g.Line, g.Column, g.Path, g.Msg, "usher.yaml", w.line, w.col, w.path, w.msg)
		}
		if g.File != "usher.yaml" {
			t.Errorf("error %d file = %q", i, g.File)
		}
	}
}

// parseCase is a file and every error Parse must report for it.
type parseCase struct {
	name string
	src  string
	want []wantErr
}

func runParseCases(t *testing.T, tests []parseCase) {
	t.Helper()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := Parse("usher.yaml", []byte(tt.src))
			checkErrors(t, err, tt.want)
		})
	}
}

func TestParseErrors(t *testing.T) {
	t.Parallel()
	runParseCases(t, []parseCase{{
		name: "unknown top-level key",
		src:  base + "listen: \":8080\"\n",
		want: []wantErr{{"listen", 13, 1, "unknown key"}},
	}, {
		name: "unknown nested key with suggestion",
		src:  strings.Replace(base, "server:\n", "server:\n  listn: \":9090\"\n", 1),
		want: []wantErr{{"server.listn", 2, 3, `unknown key (did you mean "listen"?)`}},
	}, {
		name: "unknown key in a list item",
		src:  strings.Replace(base, "    route: {host: jira.example.com}\n", "    route: {host: jira.example.com}\n    upstrem: http://x\n", 1),
		want: []wantErr{{"apps[0].upstrem", 10, 5, `did you mean "upstream"?`}},
	}, {
		name: "pass-through of every path",
		src:  strings.Replace(base, "    route: {host: jira.example.com}\n", "    route: {host: jira.example.com}\n    pass_through: {paths: [/]}\n", 1),
		want: []wantErr{{"apps[0].pass_through.paths[0]", 10, 28, "would let every request past sign-in"}},
	}, {
		name: "unknown key in a flow mapping",
		src:  strings.Replace(base, "{host: jira.example.com}", "{host: jira.example.com, prefix: /x}", 1),
		want: []wantErr{{"apps[0].route.prefix", 9, 37, "unknown key"}},
	}, {
		name: "several problems at once",
		src: `server:
  public_url: https://sso.example.com/path
  listen: "8080"
session:
  keys: []
  idle_timeout: 48h
store:
  driver: postgres
apps:
  - name: Jira
    kind: jura
    upstream: jira:8080
    route: {path_prefix: jira}
idps:
  - id: Okta
    type: oauth
    domains: [Example.com]
    extra: 1
`,
		want: []wantErr{
			{"server.public_url", 2, 3, "scheme and host only"},
			{"server.listen", 3, 3, "want host:port"},
			{"session.keys", 5, 3, "at least one key"},
			{"session.idle_timeout", 6, 3, "longer than absolute_timeout"},
			{"store.dsn", 7, 1, "required for driver postgres"},
			{"apps[0].name", 10, 5, "want lowercase"},
			{"apps[0].kind", 11, 5, "want one of"},
			{"apps[0].upstream", 12, 5, "absolute http or https URL"},
			{"apps[0].route.path_prefix", 13, 13, "must start with /"},
			{"idps[0].id", 15, 5, "want 1-32 lowercase"},
			{"idps[0].domains[0]", 17, 15, "lowercase DNS name"},
			{"idps[0].extra", 18, 5, "unknown key"},
		},
	}, {
		name: "scim brake out of range",
		src:  base + "    scim:\n      token: {value: t}\n      brake: {max_count: -1, max_share: 1.5, window: 30s, held_sessions: drop}\n",
		want: []wantErr{
			{"idps[0].scim.brake.max_count", 15, 15, "must not be negative"},
			{"idps[0].scim.brake.max_share", 15, 30, "between 0 and 1"},
			{"idps[0].scim.brake.window", 15, 46, "want at least 1m0s, got 30s"},
			{"idps[0].scim.brake.held_sessions", 15, 59, `want revoke or keep, got "drop"`},
		},
	}, {
		name: "scim brake without a limit",
		src:  base + "    scim:\n      token: {value: t}\n      brake:\n        window: 2h\n",
		want: []wantErr{{"idps[0].scim.brake", 15, 7, "set max_count, max_share or both"}},
	}, {
		name: "client limits out of range",
		src:  strings.Replace(base, "server:\n", "server:\n  body_read_timeout: 10ms\n  body_min_rate: -5\n  max_conns_per_client: -1\n", 1),
		want: []wantErr{
			{"server.body_read_timeout", 2, 3, "want at least 1s"},
			{"server.body_min_rate", 3, 3, "at least 1"},
			{"server.max_conns_per_client", 4, 3, "want at least 1"},
		},
	}, {
		name: "unknown header encoding",
		src:  strings.Replace(base, "apps:\n", "headers:\n  encoding: utf-16\napps:\n", 1),
		want: []wantErr{{"headers.encoding", 6, 3, "want latin1, utf8, percent or rfc2047"}},
	}, {
		name: "bad duration",
		src:  strings.Replace(base, "  keys: [{env: K}]\n", "  keys: [{env: K}]\n  idle_timeout: 8 hours\n", 1),
		want: []wantErr{{"session.idle_timeout", 5, 17, `want a duration such as 90s, 10m or 8h, got "8 hours"`}},
	}, {
		name: "duration without unit",
		src:  strings.Replace(base, "  keys: [{env: K}]\n", "  keys: [{env: K}]\n  flow_timeout: 600\n", 1),
		want: []wantErr{{"session.flow_timeout", 5, 17, "want a duration such as 90s, 10m or 8h, got a number"}},
	}, {
		name: "string where a list is wanted",
		src:  base + "    domains: example.com\n",
		want: []wantErr{{"idps[0].domains", 13, 14, "want a list, got a string"}},
	}, {
		name: "string where a mapping is wanted, no follow-up noise",
		src:  strings.Replace(base, "server:\n  public_url: https://sso.example.com\n", "server: https://sso.example.com\n", 1),
		want: []wantErr{{"server", 1, 9, "want a mapping, got a string"}},
	}, {
		name: "not a boolean",
		src:  strings.Replace(base, "    route: {host: jira.example.com}\n", "    route: {host: jira.example.com}\n    pass_through: {authorization: maybe}\n", 1),
		want: []wantErr{{"apps[0].pass_through.authorization", 10, 35, "want true or false"}},
	}, {
		name: "list where a string is wanted",
		src:  strings.Replace(base, "kind: jira", "kind: [jira]", 1),
		want: []wantErr{{"apps[0].kind", 7, 11, "want a string, got a list"}},
	}, {
		name: "secret with no source",
		src:  strings.Replace(base, "keys: [{env: K}]", "keys: [{}]", 1),
		want: []wantErr{{"session.keys[0]", 4, 10, "secret needs one of value, env or file"}},
	}, {
		name: "secret with two sources",
		src:  strings.Replace(base, "keys: [{env: K}]", "keys: [{env: K, file: /k}]", 1),
		want: []wantErr{{"session.keys[0]", 4, 10, "only one of value, env or file, got env and file"}},
	}, {
		name: "secret with unknown source",
		src:  strings.Replace(base, "keys: [{env: K}]", "keys: [{enf: K}]", 1),
		want: []wantErr{{"session.keys[0].enf", 4, 11, `did you mean "env"?`}},
	}, {
		name: "secret env that is not a variable name",
		src:  strings.Replace(base, "keys: [{env: K}]", "keys: [{env: $K}]", 1),
		want: []wantErr{{"session.keys[0].env", 4, 16, "want an environment variable name"}},
	}, {
		name: "unset variable",
		src:  strings.Replace(base, "public_url: https://sso.example.com", "public_url: ${USHER_TEST_UNSET}", 1),
		want: []wantErr{{"server.public_url", 2, 15, "environment variable USHER_TEST_UNSET is not set"}},
	}, {
		name: "malformed variable",
		src:  strings.Replace(base, "public_url: https://sso.example.com", `public_url: "${ URL }"`, 1),
		want: []wantErr{{"server.public_url", 2, 15, `write "$${" for a literal`}},
	}, {
		name: "unset variable inside an IdP block",
		src:  base + "    config:\n      client_secret: ${USHER_TEST_UNSET}\n",
		want: []wantErr{{"idps[0].config.client_secret", 14, 22, "USHER_TEST_UNSET is not set"}},
	}, {
		name: "duplicate app names and routes",
		src: `server: {public_url: https://sso.example.com}
session: {keys: [{env: K}]}
apps:
  - name: jira
    kind: jira
    upstream: http://jira:8080
    route: {host: jira.example.com, path_prefix: /a}
  - name: jira
    kind: confluence
    upstream: http://wiki:8090
    route: {host: jira.example.com, path_prefix: /a/}
idps: [{id: okta, type: oidc}]
`,
		want: []wantErr{
			{"apps[1].name", 8, 5, `duplicate app name "jira" (also apps[0])`},
			{"apps[1].route", 11, 5, "same route as apps[0]"},
		},
	}, {
		name: "domain claimed by two IdPs",
		src: base + `    domains: [example.com]
  - id: entra
    type: oidc
    domains: [example.org, example.com]
  - id: okta
    type: saml
`,
		want: []wantErr{
			{"idps[1].domains[1]", 16, 28, "domain example.com is already claimed by idps[0] (okta)"},
			{"idps[2].id", 17, 5, `duplicate IdP id "okta"`},
		},
	}, {
		name: "no IdP, no key, no public URL",
		src:  "apps: []\n",
		want: []wantErr{
			{"server.public_url", 1, 1, "required"},
			{"session.keys", 1, 1, "at least one key"},
			{"idps", 1, 1, "at least one identity provider"},
		},
	}, {
		name: "empty file",
		src:  "",
		want: []wantErr{
			{"server.public_url", 0, 0, "required"},
			{"session.keys", 0, 0, "at least one key"},
			{"idps", 0, 0, "at least one identity provider"},
		},
	}, {
		name: "negative store timeout",
		src:  base + "store:\n  timeout: -1s\n",
		want: []wantErr{{"store.timeout", 14, 3, "must not be negative"}},
	}, {
		name: "sqlite with dsn",
		src:  base + "store:\n  dsn: postgres://x\n",
		want: []wantErr{{"store.dsn", 14, 3, "only for driver postgres"}},
	}, {
		name: "headers clash and bad names",
		src:  base + "headers:\n  email: x-remote-user\n  groups: \"X Groups\"\n  shared_secret: {header: X-Remote-Name}\n",
		want: []wantErr{
			{"headers.email", 14, 3, "also used by headers.username"},
			{"headers.groups", 15, 3, "want an HTTP header name"},
			{"headers.shared_secret.value", 16, 3, "required"},
			{"headers.shared_secret.header", 16, 19, "also used by headers.display_name"},
		},
	}, {
		name: "route without host or prefix",
		src:  strings.Replace(base, "{host: jira.example.com}", "{}", 1),
		want: []wantErr{{"apps[0].route", 9, 5, "needs host, path_prefix or both"}},
	}, {
		name: "cloud app with upstream, route and pass-through but no api",
		src: strings.Replace(base, "idps:\n", `  - name: cloud
    kind: cloud
    upstream: https://acme.atlassian.net
    route: {path_prefix: /cloud}
    pass_through: {authorization: true}
idps:
`, 1),
		want: []wantErr{
			{"apps[1].api", 10, 5, "required"},
			{"apps[1].upstream", 12, 5, "remove it: Atlassian Cloud logins do not pass through usher"},
			{"apps[1].route", 13, 5, "remove it"},
			{"apps[1].pass_through", 14, 5, "remove it"},
		},
	}, {
		name: "directory entries",
		src: base + `directories:
  - {name: corp, type: graph, idp: okta, every: 15m, config: {tenant_id: x}}
  - name: Corp Dir
    type: ldap
    idp: nope
    schedule: "0 * * * *"
    every: 30s
    full_every: 10s
    group_values: guids
    concurrency: 100
    claims: {nameid: ""}
  - {name: corp, idp: okta, config: {x: 1}}
`,
		want: []wantErr{
			{"directories[1].name", 15, 5, "want 1-32 lowercase letters"},
			{"directories[1].config", 15, 5, "required: the ldap connector's settings"},
			{"directories[1].idp", 17, 5, `no identity provider "nope"`},
			{"directories[1].every", 19, 5, "set schedule or every, not both"},
			{"directories[1].full_every", 20, 5, "at least 1m"},
			{"directories[1].group_values", 21, 5, "want names or ids"},
			{"directories[1].concurrency", 22, 5, "want 1 to 64"},
			{"directories[1].claims.nameid", 23, 14, "name a field"},
			{"directories[2].type", 24, 5, "required"},
			{"directories[2].name", 24, 6, `duplicate directory name "corp"`},
		},
	}, {
		name: "root is a list",
		src:  "- a\n",
		want: []wantErr{{"", 1, 1, "want a mapping of settings (server, session, apps, idps, ...), got a list"}},
	}, {
		name: "syntax error",
		src:  "server:\n  public_url: [x\n",
		want: []wantErr{{"", 2, 0, "not found"}},
	}, {
		name: "duplicate key",
		src:  base + "server: {}\n",
		want: []wantErr{{"", 13, 1, "already defined"}},
	}, {
		name: "two documents",
		src:  base + "---\nidps: []\n",
		want: []wantErr{{"", 0, 0, "one YAML document"}},
	}})
}

// The settings this file's blocks gained with adoption, the SCIM brake,
// the provisioning deadline and the retry queue refuse what they cannot
// use, each at its own key and line.
func TestNewSettingsErrors(t *testing.T) {
	t.Parallel()
	runParseCases(t, []parseCase{{
		name: "unknown adoption policy",
		src:  base + "    adoption: sometimes\n",
		want: []wantErr{{"idps[0].adoption", 13, 5, `want never, verified_email or always, got "sometimes"`}},
	}, {
		name: "adoption is not a list",
		src:  base + "    adoption: [never]\n",
		want: []wantErr{{"idps[0].adoption", 13, 15, "want a string, got a list"}},
	}, {
		name: "scim brake share not a number",
		src:  base + "    scim:\n      token: {value: t}\n      brake: {max_share: .nan}\n",
		want: []wantErr{{"idps[0].scim.brake.max_share", 15, 26, "want a finite number, got NaN"}},
	}, {
		name: "scim brake share as a percentage",
		src:  base + "    scim:\n      token: {value: t}\n      brake: {max_share: 10%}\n",
		want: []wantErr{{"idps[0].scim.brake.max_share", 15, 26, `want a number, got "10%"`}},
	}, {
		name: "scim brake unknown key",
		src:  base + "    scim:\n      token: {value: t}\n      brake: {max_count: 5, windw: 1h}\n",
		want: []wantErr{{"idps[0].scim.brake.windw", 15, 29, `did you mean "window"?`}},
	}, {
		name: "scim brake without a token",
		src:  base + "    scim:\n      brake: {max_count: 5}\n",
		want: []wantErr{{"idps[0].scim.token", 13, 5, "required"}},
	}, {
		name: "provisioning deadline over 10m",
		src:  base + "provisioning:\n  deadline: 11m\n",
		want: []wantErr{{"provisioning.deadline", 14, 3, "want between 0 and 10m"}},
	}, {
		name: "negative provisioning deadline",
		src:  base + "provisioning:\n  deadline: -1s\n",
		want: []wantErr{{"provisioning.deadline", 14, 3, "got -1s"}},
	}, {
		name: "retry queue out of range",
		src:  base + "provisioning:\n  retry:\n    interval: 10ms\n    min_backoff: 2h\n    probe_every: -1s\n",
		want: []wantErr{
			{"provisioning.retry.max_backoff", 14, 3, "1h0m0s is shorter than min_backoff 2h0m0s"},
			{"provisioning.retry.interval", 15, 5, "want at least 100ms, got 10ms"},
			{"provisioning.retry.probe_every", 17, 5, "must not be negative"},
		},
	}, {
		name: "negative retry backoff",
		src:  base + "provisioning:\n  retry: {min_backoff: -1s}\n",
		want: []wantErr{{"provisioning.retry.min_backoff", 14, 11, "must not be negative"}},
	}, {
		name: "retry unknown key",
		src:  base + "provisioning:\n  retry: {backoff: 1s}\n",
		want: []wantErr{{"provisioning.retry.backoff", 14, 11, "unknown key"}},
	}, {
		name: "negative store connections",
		src:  base + "store:\n  driver: postgres\n  dsn: {value: x}\n  max_conns: -1\n",
		want: []wantErr{{"store.max_conns", 16, 3, "must not be negative"}},
	}, {
		name: "store timeout without a unit",
		src:  base + "store:\n  timeout: 5\n",
		want: []wantErr{{"store.timeout", 14, 12, "want a duration"}},
	}, {
		name: "data_dir not a string",
		src:  strings.Replace(base, "server:\n", "server:\n  data_dir: [a]\n", 1),
		want: []wantErr{{"server.data_dir", 2, 13, "want a string, got a list"}},
	}})
}

func TestErrorFormat(t *testing.T) {
	tests := []struct {
		e    Error
		want string
	}{
		{Error{File: "usher.yaml", Path: "idps[1].config.issuer", Line: 12, Column: 5, Msg: "required"}, "usher.yaml:12:5: idps[1].config.issuer: required"},
		{Error{File: "usher.yaml", Path: "idps", Msg: "at least one"}, "usher.yaml: idps: at least one"},
		{Error{Path: "apps[0].name", Msg: "required"}, "apps[0].name: required"},
		{Error{File: "u.yaml", Line: 3, Column: 1, Msg: "syntax"}, "u.yaml:3:1: syntax"},
	}
	for _, tt := range tests {
		if got := tt.e.Error(); got != tt.want {
			t.Errorf("Error() = %q, want %q", got, tt.want)
		}
	}
	es := Errors{tests[0].e, tests[1].e}
	if got, want := es.Error(), tests[0].want+"\n"+tests[1].want; got != want {
		t.Errorf("Errors.Error() = %q, want %q", got, want)
	}
	if Errors(nil).Err() != nil {
		t.Errorf("empty Errors.Err() is not nil")
	}
}

func TestPathOf(t *testing.T) {
	c := mustParse(t, base)
	tests := []struct {
		path      string
		line, col int
	}{
		{"server.public_url", 2, 3},
		{"apps[0].route.host", 9, 13},
		{"apps[0]", 6, 5},                // the entry's first key
		{"idps[0].config.issuer", 11, 5}, // absent: the IdP entry
		{"nothing.here", 1, 1},
	}
	for _, tt := range tests {
		if line, col := c.PathOf(tt.path); line != tt.line || col != tt.col {
			t.Errorf("PathOf(%q) = %d:%d, want %d:%d", tt.path, line, col, tt.line, tt.col)
		}
	}
	if got := c.ErrorAt("apps[0].upstream", "unreachable").Error(); got != "usher.yaml:8:5: apps[0].upstream: unreachable" {
		t.Errorf("ErrorAt = %q", got)
	}
}
