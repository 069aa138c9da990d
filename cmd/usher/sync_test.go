package main

import (
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
	for _, tc := range []struct {
		cfg  string
		args []string
		code int
		want string
	}{
		{goodConfig, nil, 1, "has no directories"},
		{withDir, []string{"--directory", "nope"}, 2, `no directory named "nope"`},
		{withDir, []string{"--subject", "x", "--dry-run"}, 2, "takes neither --dry-run nor --delta"},
		{withDir, []string{"extra"}, 2, "unexpected argument"},
	} {
		args := append([]string{"sync", "--config", writeConfig(t, tc.cfg)}, tc.args...)
		code, stdout, stderr := runCLI(t, args...)
		if code != tc.code || !strings.Contains(stderr, tc.want) {
			t.Errorf("usher %v: exit %d (want %d)\n%s\n%s", tc.args, code, tc.code, stdout, stderr)
		}
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
