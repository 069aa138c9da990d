package jit

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"github.com/usherhq/usher/config"
	"github.com/usherhq/usher/providers"
	"github.com/usherhq/usher/targets/atlassiantest"
)

// logLines captures JSON log lines; safe for concurrent writers.
type logLines struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logLines) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// withMsg returns the lines whose message starts with msg.
func (l *logLines) withMsg(t *testing.T, msg string) []map[string]any {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []map[string]any
	for line := range strings.Lines(l.b.String()) {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		if s, _ := m["msg"].(string); strings.HasPrefix(s, msg) {
			out = append(out, m)
		}
	}
	return out
}

// logTo makes the fixture's lifecycle log to a capture.
func (f *fixture) logTo() *logLines {
	l := &logLines{}
	f.l.Log = slog.New(slog.NewJSONHandler(l, nil))
	f.r = f.l.rec()
	return l
}

// A change that waits in the retry queue is logged, for additions and
// removals alike, naming the app and the person.
func TestQueuedChangesAreLogged(t *testing.T) {
	f := newFixture(t, atlassiantest.Jira, atlassiantest.Confluence)
	f.withMapping(t, ProvisionOnLogin)
	logs := f.logTo()
	f.srv["jira"].SetDown(true)
	if _, err := f.l.Admit(t.Context(), person("s1", "alice"), SCIMPush("okta", "active")); err != nil {
		t.Fatalf("Admit: %v", err)
	}
	lines := logs.withMsg(t, "app unreachable: change queued for retry")
	if len(lines) != 1 || lines[0]["level"] != "WARN" || lines[0]["app"] != "jira" || lines[0]["username"] != "alice" ||
		lines[0]["idp"] != "okta" || lines[0]["subject"] != "s1" || lines[0]["err"] == nil {
		t.Fatalf("queue log lines %v", lines)
	}

	f.srv["jira"].SetDown(false)
	f.srv["confluence"].SetDown(true)
	if _, err := f.l.Remove(t.Context(), Removal{IdP: "okta", Subject: "s1"}, scimOff); err != nil {
		t.Fatalf("Remove: %v", err)
	}
	lines = logs.withMsg(t, "removal queued for retry")
	if len(lines) != 1 || lines[0]["level"] != "WARN" || lines[0]["app"] != "confluence" || lines[0]["username"] != "alice" ||
		lines[0]["action"] != "deactivate" || lines[0]["cause"] == "" {
		t.Fatalf("removal queue log lines %v", lines)
	}
}

// An IdP whose people come without an e-mail address (a SAML IdP with
// the default mapping, which reads "email") is warned about once, not at
// every login, however many logins race.
func TestNoEmailWarnedOncePerIdP(t *testing.T) {
	f := newFixture(t)
	logs := f.logTo()
	for _, idp := range []string{"corp", "okta"} {
		mp, err := Compile(config.Mapping{}.WithDefaults(claimsOf["saml"]), Scope{IdP: idp, Claims: claimsOf["saml"]})
		if err != nil {
			t.Fatal(err)
		}
		f.l.Mappers[idp] = mp
	}
	saml := func(idp, subject string, claims map[string][]string) providers.Identity {
		c := map[string][]string{"nameid": {subject}, "displayName": {"Someone"}}
		for k, v := range claims {
			c[k] = v
		}
		return providers.Identity{IdP: idp, Subject: subject, Claims: c}
	}
	if _, err := f.l.Admit(t.Context(), saml("okta", "ann", map[string][]string{"email": {"ann@acme.test"}}), LoginVia("okta")); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			subject := string(rune('a'+i)) + "-user"
			if _, err := f.l.Admit(t.Context(), saml("corp", subject, map[string][]string{
				"http://schemas.xmlsoap.org/ws/2005/05/identity/claims/emailaddress": {subject + "@corp.test"},
			}), LoginVia("corp")); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	lines := logs.withMsg(t, "identity provider sent no e-mail address")
	if len(lines) != 1 || lines[0]["level"] != "WARN" || lines[0]["idp"] != "corp" || lines[0]["mapping_email"] != "claim email" ||
		!strings.Contains(lines[0]["hint"].(string), "emailaddress") {
		t.Fatalf("want one warning about corp, got %v", lines)
	}
}
