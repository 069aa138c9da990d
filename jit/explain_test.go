package jit

import (
	"encoding/json"
	"regexp"
	"testing"

	"github.com/usherhq/usher/providers"
)

// explainBefore is Explain as it was written before it was made cheaper:
// the audit entries it wrote must read the same.
func explainBefore(id providers.Identity, p *Profile) string {
	secret := regexp.MustCompile(`(?i)token|secret|password|assertion|nonce|at_hash|c_hash|^code$`)
	claims := make(map[string][]string, len(id.Claims))
	for k, v := range id.Claims {
		if secret.MatchString(k) {
			v = []string{"[redacted]"}
		}
		claims[k] = v
	}
	apps := make(map[string][]string, len(p.Apps))
	for name, ap := range p.Apps {
		gs := make([]string, len(ap.Groups))
		for i, g := range ap.Groups {
			gs[i] = g.Group
		}
		apps[name] = gs
	}
	b, err := json.Marshal(map[string]any{
		"claims": claims,
		"profile": map[string]any{
			"username": p.Username, "email": p.Email, "display_name": p.DisplayName,
			"attributes": p.Attributes, "idp_groups": p.IdPGroups, "apps": apps, "warnings": p.Warnings,
		},
	})
	if err != nil {
		return ""
	}
	return string(b)
}

func TestExplain(t *testing.T) {
	t.Parallel()
	full := &Profile{Username: "alice", Email: "alice@acme.test", DisplayName: "Alice <Archer> & co",
		Attributes: map[string]string{"dept": "R&D", "cost": "42"}, IdPGroups: []string{"eng", "team-a"},
		Warnings: []string{"dropped group x"},
		Apps:     map[string]*AppProfile{"jira": {Groups: grants("developers", "team-a")}, "confluence": {}}}
	tests := []struct {
		name string
		id   providers.Identity
		p    *Profile
		want string // a part of the result, besides matching the old one
	}{
		{"secrets redacted", providers.Identity{Claims: map[string][]string{
			"email": {"alice@acme.test"}, "access_TOKEN": {"t"}, "client_secret": {"s"}, "Password": {"p"},
			"saml_assertion": {"a"}, "nonce": {"n"}, "at_hash": {"h"}, "c_hash": {"h"}, "CODE": {"c"}, "code_of_conduct": {"ok"},
		}}, full, `"access_TOKEN":["[redacted]"]`},
		{"nothing to redact", providers.Identity{Claims: map[string][]string{"groups": {"eng"}, "sub": {"1"}}}, full, `"groups":["eng"]`},
		{"no claims, empty profile", providers.Identity{}, &Profile{}, `"claims":{}`},
	}
	for _, tt := range tests {
		got, want := Explain(tt.id, tt.p), explainBefore(tt.id, tt.p)
		if got != want {
			t.Errorf("%s:\n got %s\nwant %s", tt.name, got, want)
		}
		if !regexp.MustCompile(regexp.QuoteMeta(tt.want)).MatchString(got) {
			t.Errorf("%s: %s lacks %s", tt.name, got, tt.want)
		}
	}
	if id := tests[0].id; id.Claims["access_TOKEN"][0] != "t" {
		t.Error("Explain redacted the caller's claims in place")
	}
}
