package config

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/goccy/go-yaml"
)

const leak = "hunter2-do-not-print"

// secretsConfig holds the same secret in every place a Secret can be.
func secretsConfig(t *testing.T) *Config {
	t.Helper()
	t.Setenv("USHER_TEST_LEAK", leak)
	return mustParse(t, `server: {public_url: https://sso.example.com}
session:
  keys: ["`+leak+`", {value: "`+leak+`"}]
store: {driver: postgres, dsn: "postgres://u:${USHER_TEST_LEAK}@db/x"}
headers:
  shared_secret: {value: `+leak+`}
apps: []
idps:
  - id: okta
    type: oidc
    config:
      client_secret: `+leak+`
      signing_key: {value: `+leak+`}
      nested: {password: `+leak+`, api_token: [`+leak+`]}
      inline: {value: `+leak+`}
      issuer: https://issuer.example.com
      kept_ref: {env: OKTA_SECRET}
`)
}

func TestSecretNeverPrinted(t *testing.T) {
	c := secretsConfig(t)
	s := c.Session.Keys[0]
	if v, err := s.Resolve(); err != nil || v != leak {
		t.Fatalf("fixture: Resolve = %q, %v", v, err)
	}
	var outputs []string
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%d"} {
		outputs = append(outputs,
			fmt.Sprintf(verb, s),
			fmt.Sprintf(verb, &s),
			fmt.Sprintf(verb, c.Store),
			fmt.Sprintf(verb, c.Session),
			fmt.Sprintf(verb, *c.Headers.SharedSecret),
			fmt.Sprintf(verb, *c),
		)
	}
	if got := fmt.Sprint(s); got != "[redacted]" {
		t.Errorf("Sprint(secret) = %q", got)
	}
	if got := fmt.Sprint(Secret{}); got != "" {
		t.Errorf("Sprint(zero secret) = %q", got)
	}

	var jsonLog, textLog bytes.Buffer
	for _, h := range []slog.Handler{slog.NewJSONHandler(&jsonLog, nil), slog.NewTextHandler(&textLog, nil)} {
		l := slog.New(h)
		l.Info("opening", "key", s, "store", c.Store, "session", c.Session, "idp", c.IdPs[0])
	}
	outputs = append(outputs, jsonLog.String(), textLog.String())

	for _, v := range []any{s, c.Store, c.Session, c.IdPs[0], c.IdPs[0].Config} {
		j, err := json.Marshal(v)
		if err != nil {
			t.Fatalf("json.Marshal(%T): %v", v, err)
		}
		y, err := yaml.Marshal(v)
		if err != nil {
			t.Fatalf("yaml.Marshal(%T): %v", v, err)
		}
		outputs = append(outputs, string(j), string(y))
	}
	red, err := c.Redacted()
	if err != nil {
		t.Fatalf("Redacted: %v", err)
	}
	outputs = append(outputs, string(red), c.Summary())

	for i, out := range outputs {
		if strings.Contains(out, leak) || strings.Contains(out, fmt.Sprintf("%x", leak)) {
			t.Errorf("output %d shows the secret: %s", i, out)
		}
	}
	if !strings.Contains(jsonLog.String(), `"key":"[redacted]"`) {
		t.Errorf("JSON log = %s", jsonLog.String())
	}
	for _, want := range []string{"env: OKTA_SECRET", "issuer: https://issuer.example.com", "dsn: '[redacted]'"} {
		if !strings.Contains(string(red), want) && !strings.Contains(string(red), strings.ReplaceAll(want, "'", `"`)) {
			t.Errorf("Redacted() lacks %q:\n%s", want, red)
		}
	}
}

func TestSecretResolve(t *testing.T) {
	dir := t.TempDir()
	withNewline := filepath.Join(dir, "key")
	if err := os.WriteFile(withNewline, []byte(leak+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("USHER_TEST_SECRET", leak)
	t.Setenv("USHER_TEST_EMPTY", "")

	tests := []struct {
		name    string
		s       Secret
		want    string
		wantErr string // substring; the error must never hold the value
	}{
		{"value", SecretValue(leak), leak, ""},
		{"env", SecretEnv("USHER_TEST_SECRET"), leak, ""},
		{"env unset", SecretEnv("USHER_TEST_NOT_SET"), "", "USHER_TEST_NOT_SET is not set or empty"},
		{"env empty", SecretEnv("USHER_TEST_EMPTY"), "", "USHER_TEST_EMPTY is not set or empty"},
		{"file, trailing newline trimmed", SecretFile(withNewline), leak, ""},
		{"file missing", SecretFile(filepath.Join(dir, "missing")), "", filepath.Join(dir, "missing")},
		{"file empty", SecretFile(empty), "", "file " + empty + " is empty"},
		{"zero", Secret{}, "", "not set"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.s.Resolve()
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Resolve error = %v, want %q", err, tt.wantErr)
				}
				if strings.Contains(err.Error(), leak) {
					t.Fatalf("error shows the secret: %v", err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("Resolve = %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

func TestSecretFromFileConfig(t *testing.T) {
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "session-key")
	if err := os.WriteFile(keyFile, []byte("k1\r\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c := mustParse(t, strings.Replace(base, "keys: [{env: K}]", "keys: [{file: "+keyFile+"}]", 1))
	if got, err := c.Session.Keys[0].Resolve(); err != nil || got != "k1" {
		t.Errorf("Resolve = %q, %v", got, err)
	}
}

// CheckSecrets names every secret that cannot be read with its path and
// line, including those of a Raw block once decoded, and never a value.
func TestCheckSecrets(t *testing.T) {
	dir := t.TempDir()
	readable := filepath.Join(dir, "readable")
	if err := os.WriteFile(readable, []byte(leak+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("K", leak)
	t.Setenv("USHER_TEST_EMPTY", "")
	c := mustParse(t, base+`    config:
      issuer: https://idp.example.com
      client_secret: {env: USHER_TEST_UNSET}
admin:
  token: {file: `+filepath.Join(dir, "missing")+`}
store:
  driver: postgres
  dsn: {env: USHER_TEST_EMPTY}
headers:
  shared_secret: {value: {file: `+readable+`}}
`)
	// Before the IdP block is decoded, only the common schema's count.
	var got []string
	for _, e := range c.CheckSecrets() {
		got = append(got, e.Error())
	}
	want := []string{
		"usher.yaml:17:10: admin.token: file " + filepath.Join(dir, "missing") + ": no such file or directory",
		"usher.yaml:20:8: store.dsn: environment variable USHER_TEST_EMPTY is not set or empty",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("CheckSecrets before decoding the IdP block:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	var oidc sampleOIDC
	for range 2 { // decoded twice, reported once
		if err := c.IdPs[0].Config.Decode(&oidc); err != nil {
			t.Fatal(err)
		}
	}
	errs := c.CheckSecrets()
	if len(errs) != 3 {
		t.Fatalf("CheckSecrets = %v, want 3 problems", errs)
	}
	if e := errs[0]; e.Path != "idps[0].config.client_secret" || e.Line != 15 ||
		e.Msg != "environment variable USHER_TEST_UNSET is not set or empty" {
		t.Errorf("first problem = %+v", e)
	}
	if strings.Contains(errs.Error(), leak) {
		t.Fatalf("CheckSecrets shows a value: %v", errs)
	}
}
