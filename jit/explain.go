package jit

import (
	"encoding/json"
	"regexp"

	"github.com/usherhq/usher/providers"
)

// secretClaim matches claim names whose values must not reach the audit
// log: tokens, secrets, one-time values.
var secretClaim = regexp.MustCompile(`(?i)token|secret|password|assertion|nonce|at_hash|c_hash|^code$`)

// Explain is the audit record of a login or SCIM push: the claims
// received (secrets redacted) and the profile the mapping produced, as
// JSON, so an admin can see why a person got what they got.
func Explain(id providers.Identity, p *Profile) string {
	claims := make(map[string][]string, len(id.Claims))
	for k, v := range id.Claims {
		if secretClaim.MatchString(k) {
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
