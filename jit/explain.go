package jit

import (
	"encoding/json"
	"strings"

	"github.com/usherhq/usher/providers"
)

// secretClaim reports whether a claim's values must not reach the audit
// log: tokens, secrets, one-time values (names containing token, secret,
// password, assertion, nonce, at_hash or c_hash, or the name code; any
// case).
func secretClaim(name string) bool {
	n := strings.ToLower(name)
	if n == "code" {
		return true
	}
	for _, s := range [...]string{"token", "secret", "password", "assertion", "nonce", "at_hash", "c_hash"} {
		if strings.Contains(n, s) {
			return true
		}
	}
	return false
}

// explanation is Explain's JSON. Its fields are in the order of their
// names, as the maps of an earlier version printed them, so that entries
// already in audit logs and new ones read alike.
type explanation struct {
	Claims  map[string][]string `json:"claims"`
	Profile struct {
		Apps        map[string][]string `json:"apps"`
		Attributes  map[string]string   `json:"attributes"`
		DisplayName string              `json:"display_name"`
		Email       string              `json:"email"`
		IdPGroups   []string            `json:"idp_groups"`
		Username    string              `json:"username"`
		Warnings    []string            `json:"warnings"`
	} `json:"profile"`
}

// Explain is the audit record of a login or SCIM push: the claims
// received (secrets redacted) and the profile the mapping produced, as
// JSON, so an admin can see why a person got what they got.
func Explain(id providers.Identity, p *Profile) string {
	var e explanation
	e.Claims = id.Claims
	for k := range id.Claims {
		if secretClaim(k) {
			// Copy only when there is something to redact.
			e.Claims = make(map[string][]string, len(id.Claims))
			for k, v := range id.Claims {
				if secretClaim(k) {
					v = []string{"[redacted]"}
				}
				e.Claims[k] = v
			}
			break
		}
	}
	if e.Claims == nil {
		e.Claims = map[string][]string{}
	}
	e.Profile.Apps = make(map[string][]string, len(p.Apps))
	for name, ap := range p.Apps {
		gs := make([]string, len(ap.Groups))
		for i, g := range ap.Groups {
			gs[i] = g.Group
		}
		e.Profile.Apps[name] = gs
	}
	e.Profile.Attributes, e.Profile.DisplayName, e.Profile.Email = p.Attributes, p.DisplayName, p.Email
	e.Profile.IdPGroups, e.Profile.Username, e.Profile.Warnings = p.IdPGroups, p.Username, p.Warnings
	b, err := json.Marshal(&e)
	if err != nil {
		return ""
	}
	return string(b)
}
