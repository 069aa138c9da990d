package google

import (
	"fmt"
	"strconv"
	"strings"
)

// path is a configured user field: a subject attribute or an attribute.
type path struct {
	raw string
	// top is the user resource's top-level field, for the fields
	// parameter.
	top string
	// segs are the segments of a plain path (organizations.department).
	segs []string
	// extType is set for externalIds.<type>.
	extType string
	// schema and field are set for customSchemas.<schema>.<field>.
	schema, field string
}

// parsePath reads an attribute path (see Config.Attributes).
func parsePath(s string) (path, error) {
	p := path{raw: s}
	segs := strings.Split(s, ".")
	for _, seg := range segs {
		if seg == "" {
			return p, fmt.Errorf("%q has an empty path segment", s)
		}
	}
	p.top = segs[0]
	switch segs[0] {
	case "externalIds":
		if len(segs) != 2 {
			return p, fmt.Errorf("%q: want externalIds.<type> (organization, account, login_id, ... or a custom type)", s)
		}
		p.extType = segs[1]
		return p, nil
	case "customSchemas":
		if len(segs) != 3 || !namePattern.MatchString(segs[1]) || !namePattern.MatchString(segs[2]) {
			return p, fmt.Errorf("%q: want customSchemas.<schema>.<field>", s)
		}
		p.schema, p.field = segs[1], segs[2]
		return p, nil
	}
	for _, seg := range segs {
		if !namePattern.MatchString(seg) {
			return p, fmt.Errorf("%q is not a user field path (orgUnitPath, organizations.department, ...)", s)
		}
	}
	p.segs = segs
	return p, nil
}

// parseSubject reads a subject attribute: id, primaryEmail, an external
// ID or a custom schema field.
func parseSubject(s string) (path, error) {
	switch s {
	case "id", "primaryEmail":
		return path{raw: s, top: s, segs: []string{s}}, nil
	}
	p, err := parsePath(s)
	if err != nil || (p.extType == "" && p.schema == "") {
		return p, fmt.Errorf("want id, primaryEmail, externalIds.<type> or customSchemas.<schema>.<field>, got %q", s)
	}
	return p, nil
}

// values reads the path's values from a user resource, as strings.
func (p path) values(u map[string]any) []string {
	var out []string
	switch {
	case p.extType != "":
		ids, _ := u["externalIds"].([]any)
		for _, e := range ids {
			m, _ := e.(map[string]any)
			typ, _ := m["type"].(string)
			custom, _ := m["customType"].(string)
			if typ == p.extType || (typ == "custom" && custom == p.extType) {
				out = appendScalar(out, m["value"])
			}
		}
	case p.schema != "":
		cs, _ := u["customSchemas"].(map[string]any)
		schema, _ := cs[p.schema].(map[string]any)
		switch v := schema[p.field].(type) {
		case []any:
			// A multi-valued field: [{"type": "work", "value": ...}, ...].
			for _, e := range v {
				m, _ := e.(map[string]any)
				out = appendScalar(out, m["value"])
			}
		default:
			out = appendScalar(out, v)
		}
	default:
		out = walk(out, u, p.segs)
	}
	return out
}

// walk follows segs through objects, fanning out over arrays, and keeps
// the scalars it ends on.
func walk(out []string, v any, segs []string) []string {
	if arr, ok := v.([]any); ok {
		for _, e := range arr {
			out = walk(out, e, segs)
		}
		return out
	}
	if len(segs) == 0 {
		return appendScalar(out, v)
	}
	m, ok := v.(map[string]any)
	if !ok {
		return out
	}
	return walk(out, m[segs[0]], segs[1:])
}

func appendScalar(out []string, v any) []string {
	switch x := v.(type) {
	case string:
		return append(out, x)
	case bool:
		return append(out, strconv.FormatBool(x))
	case float64:
		return append(out, strconv.FormatFloat(x, 'f', -1, 64))
	}
	return out
}
