package scim

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// maxText bounds every string usher keys, maps or provisions (userName,
// externalId, names, e-mail addresses, group names, ids): 256 characters.
// The apps cap these fields at 255 (Jira's user name and display name,
// Crowd's e-mail address) and RFC 5321 an address at 254, so anything
// longer fails later in an app; refusing it here says so to the IdP.
const maxText = 256

// textProblem says what is wrong with a string usher would key, map or
// send to an app, or "" when nothing is. Such a string is one line of
// printable text: valid UTF-8 (encoding/json turns invalid bytes and
// lone surrogates into U+FFFD, so that character stands for them), no
// control character (C0 with CR, LF, TAB and ESC; DEL; C1) and no line
// or paragraph separator, at most maxText characters. PostgreSQL refuses
// a NUL in a text column outright; the others pass the store but break
// a header, a log line or an app's REST call later, so the IdP hears of
// them now, not usher's admin from an app's error.
func textProblem(s string) string {
	if !utf8.ValidString(s) || strings.ContainsRune(s, utf8.RuneError) {
		return "is not valid UTF-8"
	}
	if i := strings.IndexFunc(s, breaksLine); i >= 0 {
		r, _ := utf8.DecodeRuneInString(s[i:])
		return fmt.Sprintf("holds the control character %U at byte %d", r, i)
	}
	if n := utf8.RuneCountInString(s); n > maxText {
		return fmt.Sprintf("is %d characters long; usher takes at most %d", n, maxText)
	}
	return ""
}

// breaksLine is what jit's mapping drops from a claim: control
// characters and the Unicode line and paragraph separators.
func breaksLine(r rune) bool {
	return unicode.IsControl(r) || r == '\u2028' || r == '\u2029'
}

// checkText refuses a string that fails textProblem, naming it.
func checkText(name, s string) error {
	if p := textProblem(s); p != "" {
		return invalidValue("%s %s", name, p)
	}
	return nil
}

// checkID refuses a resource id from the URL that cannot be one of
// usher's (they are UUIDs): before a store sees it, so that a NUL is a
// 400 for the IdP and not a 503 from PostgreSQL that it retries forever.
func checkID(id string) error {
	return checkText("the resource id in the URL", id)
}

// checkStored refuses a NUL anywhere in a value usher stores as it came
// (addresses, phone numbers, ...): the only character of the free-text
// attributes that a store or a later reader cannot take. Line breaks
// stay: addresses[].formatted holds them by definition (RFC 7643
// §4.1.2).
func checkStored(path string, v any) error {
	switch t := v.(type) {
	case string:
		if strings.IndexByte(t, 0) >= 0 {
			return invalidValue("%s holds a NUL character (U+0000)", path)
		}
	case map[string]any:
		for k, sv := range t {
			if err := checkStored(joinPath(path, k), sv); err != nil {
				return err
			}
		}
	case []any:
		for i, e := range t {
			if err := checkStored(fmt.Sprintf("%s[%d]", path, i), e); err != nil {
				return err
			}
		}
	}
	return nil
}

func joinPath(path, k string) string {
	if path == "" {
		return k
	}
	return path + "." + k
}

// checkStoredResource is checkStored over a whole resource, naming an
// extension's attributes by their full path ("urn:...:User:costCenter").
func checkStoredResource(a attrs) error {
	for k, v := range a {
		m, isExt := v.(map[string]any)
		if !isExt || !strings.HasPrefix(strings.ToLower(k), "urn:") {
			if err := checkStored(k, v); err != nil {
				return err
			}
			continue
		}
		for sk, sv := range m {
			if err := checkStored(k+":"+sk, sv); err != nil {
				return err
			}
		}
	}
	return nil
}

// userTextAttrs are the single-valued strings of a user that usher keys,
// maps or provisions, by their path in the canonical resource.
var userTextAttrs = []string{
	"userName", "externalId", "displayName", "nickName", "title",
	"name.formatted", "name.familyName", "name.givenName", "name.middleName",
	"name.honorificPrefix", "name.honorificSuffix",
}

// enterpriseTextAttrs are the enterprise extension's strings.
var enterpriseTextAttrs = []string{"employeeNumber", "costCenter", "organization", "division", "department"}

// checkUserText checks a normalised user: the mapped strings as one line
// of text each, every other string for NUL. exts are the IdP's own
// extension schemas with their attributes.
func checkUserText(a attrs, exts []extSchema) error {
	for _, p := range userTextAttrs {
		if s, ok := lookupPath(a, p).(string); ok {
			if err := checkText(p, s); err != nil {
				return err
			}
		}
	}
	if list, ok := a["emails"].([]any); ok {
		for i, e := range list {
			em, _ := e.(map[string]any)
			if s, ok := em["value"].(string); ok {
				if err := checkText(fmt.Sprintf("emails[%d].value", i), s); err != nil {
					return err
				}
			}
		}
	}
	if ext := a.ext(); ext != nil {
		for _, n := range enterpriseTextAttrs {
			if s, ok := ext[n].(string); ok {
				if err := checkText(enterpriseURN+":"+n, s); err != nil {
					return err
				}
			}
		}
		if m, ok := ext["manager"].(map[string]any); ok {
			if s, ok := m["value"].(string); ok {
				if err := checkText(enterpriseURN+":manager.value", s); err != nil {
					return err
				}
			}
		}
	}
	for _, x := range exts {
		m, _ := a[x.urn].(map[string]any)
		for _, n := range x.attrs {
			if s, ok := m[n].(string); ok {
				if err := checkText(x.urn+":"+n, s); err != nil {
					return err
				}
			}
		}
	}
	return checkStoredResource(a)
}

// lookupPath reads "name.givenName" from a canonical resource.
func lookupPath(a attrs, p string) any {
	top, sub, nested := strings.Cut(p, ".")
	v := a[top]
	if !nested {
		return v
	}
	m, _ := v.(map[string]any)
	return m[sub]
}

// checkGroupText checks what usher stores of a group.
func checkGroupText(g group) error {
	if err := checkText("displayName", g.displayName); err != nil {
		return err
	}
	if err := checkText("externalId", g.externalID); err != nil {
		return err
	}
	for i, m := range g.members {
		if err := checkText(fmt.Sprintf("members[%d].value", i), m); err != nil {
			return err
		}
	}
	return nil
}
