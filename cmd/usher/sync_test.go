package main

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/usherhq/usher/dirsync"
)

func TestCheckDirectories(t *testing.T) {
	t.Setenv("USHER_TEST_KEY", strings.Repeat("k", 32))
	t.Setenv("OKTA_SECRET", "very-secret-value")
	bad := goodConfig + `directories:
  - name: corp
    type: graph
    idp: okta
    schedule: "every hour"
    config:
      tenant_id: contoso.example
      client_idd: x
  - name: ad
    type: activedirectory
    idp: okta
    config: {url: ldaps://dc}
  - name: okta-dir
    type: okta
    idp: okta
    config: {org_url: https://example.okta.com, api_token: {env: OKTA_TOKEN}}
sweeps:
  - name: leavers
    idps: [okta]
    sources: {directory: nope}
`
	code, stdout, stderr := runCLI(t, "check", "--config", writeConfig(t, bad))
	if code != 1 {
		t.Fatalf("exit %d, want 1; stdout %q stderr %q", code, stdout, stderr)
	}
	for _, want := range []string{
		"usher.yaml:22:5: directories[0].schedule: not a cron expression",
		"usher.yaml:25:7: directories[0].config.client_idd: unknown key",
		`usher.yaml:27:5: directories[1].type: want one of google, graph, ldap, okta, onelogin, scim, got "activedirectory"`,
		`sweeps[0].sources.directory: no directory "nope" is configured`,
	} {
		if !strings.Contains(stderr, want) {
			t.Errorf("check output lacks %q:\n%s", want, stderr)
		}
	}

	t.Setenv("OKTA_TOKEN", "t")
	good := goodConfig + `directories:
  - name: okta-dir
    type: okta
    idp: okta
    every: 15m
    automatic: true
    config: {org_url: https://example.okta.com, api_token: {env: OKTA_TOKEN}}
sweeps:
  - name: leavers
    idps: [okta]
    sources: {directory: okta-dir}
`
	code, stdout, stderr = runCLI(t, "check", "--config", writeConfig(t, good))
	if code != 0 || !strings.Contains(stdout, "okta-dir  okta  idp okta  every 15m, full every 24h  automatic") {
		t.Errorf("check: exit %d\n%s\n%s", code, stdout, stderr)
	}
}

// refusal is a command line usher refuses: its exit code and what it
// says on stderr.
type refusal struct {
	cfg  string
	args []string
	code int
	want string
}

// wantRefused runs usher cmd with each refusal's config and arguments.
// A usage error (exit code 2) says why once, then lists the command's
// flags. None of them may open the store in dataDir.
func wantRefused(t *testing.T, cmd, dataDir string, tests []refusal) {
	t.Helper()
	for _, tc := range tests {
		args := append([]string{cmd, "--config", writeConfig(t, tc.cfg)}, tc.args...)
		code, stdout, stderr := runCLI(t, args...)
		if code != tc.code || !strings.Contains(stderr, tc.want) {
			t.Errorf("usher %s %q: exit %d (want %d)\n%s\n%s", cmd, tc.args, code, tc.code, stdout, stderr)
		}
		if tc.code == 2 && (strings.Count(stderr, tc.want) != 1 || !strings.Contains(stderr, "flags of usher "+cmd+":\n  -config string")) {
			t.Errorf("usher %s %q: want the complaint once and the flags:\n%s", cmd, tc.args, stderr)
		}
	}
	if _, err := os.Stat(filepath.Join(dataDir, "usher.db")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a refused usher %s opened the store: %v", cmd, err)
	}
}

func TestSyncCommandRefusals(t *testing.T) {
	t.Setenv("USHER_TEST_KEY", strings.Repeat("k", 32))
	t.Setenv("OKTA_SECRET", "very-secret-value")
	dir := t.TempDir()
	withDir := strings.Replace(goodConfig, "server:\n", "server:\n  data_dir: "+dir+"\n", 1) + `directories:
  - name: okta-dir
    type: okta
    idp: okta
    config: {org_url: https://example.okta.com, api_token: {value: tok}}
`
	twoDirs := withDir + "  - name: other\n    type: okta\n    idp: okta\n    config: {org_url: https://other.okta.com, api_token: {value: tok}}\n"
	wantRefused(t, "sync", dir, []refusal{
		{goodConfig, nil, 1, "has no directories"},
		{withDir, []string{"--directory", "nope"}, 2, `no directory named "nope" (configured: okta-dir)`},
		{withDir, []string{"--subject", "x", "--dry-run"}, 2, "takes neither --dry-run nor --delta"},
		{withDir, []string{"extra"}, 2, "unexpected argument"},
		{withDir, []string{"--subject", "a\x00b"}, 2, "--subject holds a control character"},
		{withDir, []string{"--subject", "a\xffb"}, 2, "--subject is not valid UTF-8"},
		{withDir, []string{"--subject", strings.Repeat("s", 513)}, 2, "--subject is 513 bytes long"},
		{twoDirs, []string{"--subject", "x"}, 2, "--subject needs --directory when several directories are configured"},
		{withDir, []string{"--bogus"}, 2, "flag provided but not defined: -bogus"},
		{withDir, []string{"--dry-run=maybe"}, 2, `invalid boolean value "maybe" for -dry-run`},
		{withDir, []string{"--directory"}, 2, "flag needs an argument: -directory"},
	})
}

func TestSweepCommandRefusals(t *testing.T) {
	t.Setenv("USHER_TEST_KEY", strings.Repeat("k", 32))
	t.Setenv("OKTA_SECRET", "very-secret-value")
	dir := t.TempDir()
	withSweeps := strings.Replace(goodConfig, "server:\n", "server:\n  data_dir: "+dir+"\n", 1) + `sweeps:
  - {name: leavers, idps: [okta], sources: {inactive_days: 90}}
  - {name: expired, idps: [okta], sources: {access_expiry: true}}
`
	wantRefused(t, "sweep", dir, []refusal{
		{goodConfig, nil, 1, "has no sweeps"},
		{withSweeps, []string{"--policy", "nope"}, 2, `no sweep policy named "nope" (configured: leavers, expired)`},
		{withSweeps, []string{"extra"}, 2, `unexpected argument "extra"`},
		{withSweeps, []string{"--bogus"}, 2, "flag provided but not defined: -bogus"},
		{withSweeps, []string{"--dry-run=maybe"}, 2, `invalid boolean value "maybe" for -dry-run`},
		{withSweeps, []string{"--json=1x"}, 2, `invalid boolean value "1x" for -json`},
		{withSweeps, []string{"--policy"}, 2, "flag needs an argument: -policy"},
	})
	// Asked for, the flags are the answer, on stdout.
	code, stdout, _ := runCLI(t, "sweep", "-h")
	if code != 0 || !strings.Contains(stdout, "-policy string") {
		t.Errorf("sweep -h: exit %d\n%s", code, stdout)
	}
}

func TestRenderProgress(t *testing.T) {
	for _, tc := range []struct {
		p    dirsync.Progress
		want string
	}{
		{dirsync.Progress{Kind: "full", People: 420, Expected: 1000, Created: 3, Updated: 1},
			"corp full [############------------------]  42% 420/1000 people, 3 created, 1 updated, 0 failed"},
		{dirsync.Progress{Kind: "full", People: 1200, Expected: 1000},
			"corp full [##############################] 100% 1200/1000 people, 0 created, 0 updated, 0 failed"},
		{dirsync.Progress{Kind: "delta", People: 7, Failed: 2}, "corp delta: 7 people, 0 created, 0 updated, 2 failed"},
	} {
		if got := renderProgress("corp", tc.p); got != tc.want {
			t.Errorf("renderProgress(%+v)\n got %q\nwant %q", tc.p, got, tc.want)
		}
	}
}
