package scim

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	"github.com/usherhq/usher/store"
)

// toUser builds what the hooks see from a stored user and its attributes.
func toUser(idp string, u store.SCIMUser, a attrs, groups []string) User {
	claims := map[string][]string{}
	core := maps.Clone(map[string]any(a))
	exts := map[string]map[string]any{}
	for k, v := range a {
		if m, ok := v.(map[string]any); ok && strings.HasPrefix(k, "urn:") {
			exts[k] = m
			delete(core, k)
		}
	}
	flatten(claims, "", core)
	// Extension attributes under their full path
	// ("urn:...:enterprise:2.0:User:department") and their bare name
	// ("department", "manager"), as mappings for OIDC and SAML IdPs use
	// them; a bare name never hides a core attribute's.
	for _, urn := range slices.Sorted(maps.Keys(exts)) {
		ext := exts[urn]
		flatten(claims, urn+":", ext)
		for k, v := range ext {
			if m, ok := v.(map[string]any); ok {
				v = m["value"]
			}
			if _, taken := core[k]; taken {
				continue
			}
			if vs := scalars(v); len(vs) > 0 {
				claims[k] = vs
			}
		}
	}
	claims["id"] = []string{u.ID}
	claims["active"] = []string{strconv.FormatBool(u.Active)}
	if len(groups) > 0 {
		claims["groups"] = slices.Clone(groups)
	}
	name, _ := a["name"].(map[string]any)
	given, _ := name["givenName"].(string)
	family, _ := name["familyName"].(string)
	display := a.str("displayName")
	if display == "" {
		display, _ = name["formatted"].(string)
	}
	if display == "" {
		display = strings.TrimSpace(given + " " + family)
	}
	var email string
	if e := claims["emails"]; len(e) > 0 {
		email = e[0]
	}
	return User{
		IdP: idp, ID: u.ID, Subject: u.Subject, UserName: u.UserName,
		DisplayName: display, GivenName: given, FamilyName: family, Email: email,
		Active: u.Active, Groups: slices.Clone(groups), Claims: claims,
	}
}

// flatten writes nested attributes under dotted keys. A multi-valued
// complex attribute ("emails") becomes the list of its values, primary
// first, plus one key per type ("emails.work").
func flatten(out map[string][]string, prefix string, m map[string]any) {
	for k, v := range m {
		key := prefix + k
		switch t := v.(type) {
		case map[string]any:
			flatten(out, key+".", t)
		case []any:
			var primary, rest []string
			for _, e := range t {
				em, ok := e.(map[string]any)
				if !ok {
					rest = append(rest, scalars(e)...)
					continue
				}
				val := scalars(em["value"])
				if len(val) == 0 {
					continue
				}
				if p, _ := em["primary"].(bool); p {
					primary = append(primary, val...)
				} else {
					rest = append(rest, val...)
				}
				if typ, _ := em["type"].(string); typ != "" {
					out[key+"."+typ] = append(out[key+"."+typ], val...)
				}
			}
			if all := append(primary, rest...); len(all) > 0 {
				out[key] = all
			}
		default:
			if vs := scalars(v); len(vs) > 0 {
				out[key] = vs
			}
		}
	}
}

func scalars(v any) []string {
	switch t := v.(type) {
	case string:
		if t != "" {
			return []string{t}
		}
	case bool:
		return []string{strconv.FormatBool(t)}
	case json.Number:
		return []string{t.String()}
	case float64, int64, int:
		return []string{fmt.Sprint(t)}
	}
	return nil
}
