package atlassiantest

import (
	"fmt"
	"net/http"
	"regexp"
	"strings"
)

// The Crowd Query Language subset the emulator understands: terms
// `property=value` joined by `and`; a value may be quoted and may start
// and/or end with `*`. User properties: name, email, firstName,
// lastName, displayName, active; group properties: name, active.
// Anything else answers 400, so an adapter relying on more fails loudly.

type cqlTerm struct{ key, value string }

var cqlAnd = regexp.MustCompile(`(?i)\s+and\s+`)

func parseCQL(q string) ([]cqlTerm, error) {
	q = strings.TrimSpace(q)
	if q == "" {
		return nil, nil
	}
	var terms []cqlTerm
	for _, part := range cqlAnd.Split(q, -1) {
		k, v, ok := strings.Cut(part, "=")
		if !ok || strings.ContainsAny(k, "!<>") {
			return nil, fmt.Errorf("unsupported restriction %q", part)
		}
		v = strings.Trim(strings.TrimSpace(v), `"`)
		terms = append(terms, cqlTerm{key: strings.TrimSpace(k), value: lower(v)})
	}
	return terms, nil
}

func cqlMatch(value, pattern string) bool {
	value = lower(value)
	pre, suf := strings.HasPrefix(pattern, "*"), strings.HasSuffix(pattern, "*")
	p := strings.Trim(pattern, "*")
	switch {
	case pre && suf:
		return strings.Contains(value, p)
	case suf:
		return strings.HasPrefix(value, p)
	case pre:
		return strings.HasSuffix(value, p)
	}
	return value == p
}

func userProperty(u *user, key string) (string, bool) {
	switch key {
	case "name":
		return u.name, true
	case "email":
		return u.email, true
	case "firstName":
		return u.first, true
	case "lastName":
		return u.last, true
	case "displayName":
		return u.displayName, true
	case "active":
		return fmt.Sprint(u.active), true
	}
	return "", false
}

func groupProperty(g *group, key string) (string, bool) {
	switch key {
	case "name":
		return g.name, true
	case "active":
		return "true", true
	}
	return "", false
}

func matchAll[T any](v T, terms []cqlTerm, prop func(T, string) (string, bool)) (bool, error) {
	for _, t := range terms {
		val, ok := prop(v, t.key)
		if !ok {
			return false, fmt.Errorf("unsupported property %q", t.key)
		}
		if !cqlMatch(val, t.value) {
			return false, nil
		}
	}
	return true, nil
}

// crowdSearch is GET /search?entity-type=user|group&restriction=CQL.
// Results come in name order; there is no total, so clients page until
// a page is shorter than max-results.
func (s *Server) crowdSearch(w http.ResponseWriter, r *http.Request) {
	start, limit, ok := s.crowdPaging(w, r)
	if !ok {
		return
	}
	q := r.URL.Query()
	terms, err := parseCQL(q.Get("restriction"))
	if err != nil {
		s.fail(w, http.StatusBadRequest, "ILLEGAL_ARGUMENT", err.Error())
		return
	}
	expand := q.Get("expand")
	s.mu.Lock()
	defer s.mu.Unlock()
	out := []map[string]any{}
	n := 0
	switch q.Get("entity-type") {
	case "user":
		keys := s.userIdx.keys()
		if len(terms) == 0 {
			from, to := window(start, limit, len(keys))
			for _, k := range keys[from:to] {
				out = append(out, s.crowdUserRef(r, s.users[k], expand))
			}
			writeJSON(w, http.StatusOK, map[string]any{"expand": "user", "users": out})
			return
		}
		for _, k := range keys {
			if len(out) >= limit {
				break
			}
			ok, err := matchAll(s.users[k], terms, userProperty)
			if err != nil {
				s.fail(w, http.StatusBadRequest, "ILLEGAL_ARGUMENT", err.Error())
				return
			}
			if ok {
				if n >= start {
					out = append(out, s.crowdUserRef(r, s.users[k], expand))
				}
				n++
			}
		}
		writeJSON(w, http.StatusOK, map[string]any{"expand": "user", "users": out})
		return
	case "group":
		for _, k := range s.groupIdx.keys() {
			if len(out) >= limit {
				break
			}
			ok, err := matchAll(s.groups[k], terms, groupProperty)
			if err != nil {
				s.fail(w, http.StatusBadRequest, "ILLEGAL_ARGUMENT", err.Error())
				return
			}
			if ok {
				if n >= start {
					out = append(out, s.crowdGroupRef(r, s.groups[k], expand))
				}
				n++
			}
		}
		writeJSON(w, http.StatusOK, map[string]any{"expand": "group", "groups": out})
		return
	default:
		s.fail(w, http.StatusBadRequest, "ILLEGAL_ARGUMENT", "entity-type must be user or group")
	}
}
