package googletest

import (
	"fmt"
	"slices"
	"strings"
)

// parseQuery reads the subset of the users.list query syntax the
// emulator serves (reference §4.2): space-separated clauses, all of
// which must hold:
//
//	email=ada@example.test   email:ada*   givenName:Ad*   familyName=Lovelace
//	isSuspended=true   isArchived=false   isAdmin=true
//	orgUnitPath='/Engineering'   (that unit and below [U])
//	externalId=1001            (any entry's value)
//	HR.leaveDate='2025-03-31'  (a custom schema field)
//
// Values may be single-quoted. Anything else is an error the caller
// reports as not understood.
func parseQuery(q string) (func(User) bool, error) {
	clauses, err := splitClauses(q)
	if err != nil {
		return nil, err
	}
	var preds []func(User) bool
	for _, c := range clauses {
		i := strings.IndexAny(c, "=:")
		if i <= 0 {
			return nil, fmt.Errorf("clause %q has no = or :", c)
		}
		field, op, val := c[:i], c[i], unquote(c[i+1:])
		p, err := clause(field, op, val)
		if err != nil {
			return nil, err
		}
		preds = append(preds, p)
	}
	return func(u User) bool {
		for _, p := range preds {
			if !p(u) {
				return false
			}
		}
		return true
	}, nil
}

func clause(field string, op byte, val string) (func(User) bool, error) {
	text := func(get func(User) string) (func(User) bool, error) {
		if op == '=' {
			return func(u User) bool { return strings.EqualFold(get(u), val) }, nil
		}
		prefix, ok := strings.CutSuffix(val, "*")
		if !ok {
			return nil, fmt.Errorf("%s:%s: the emulator serves only prefix searches (value*)", field, val)
		}
		return func(u User) bool { return strings.HasPrefix(strings.ToLower(get(u)), strings.ToLower(prefix)) }, nil
	}
	boolean := func(get func(User) bool) (func(User) bool, error) {
		if op != '=' || (val != "true" && val != "false") {
			return nil, fmt.Errorf("%s wants =true or =false", field)
		}
		return func(u User) bool { return get(u) == (val == "true") }, nil
	}
	switch field {
	case "email":
		return text(func(u User) string { return u.PrimaryEmail })
	case "givenName":
		return text(func(u User) string { return u.GivenName })
	case "familyName":
		return text(func(u User) string { return u.FamilyName })
	case "isSuspended":
		return boolean(func(u User) bool { return u.Suspended })
	case "isArchived":
		return boolean(func(u User) bool { return u.Archived })
	case "isAdmin":
		return boolean(func(u User) bool { return u.IsAdmin })
	case "orgUnitPath":
		if op != '=' {
			return nil, fmt.Errorf("orgUnitPath wants =")
		}
		return func(u User) bool { return underOU(u.OrgUnitPath, val) }, nil
	case "externalId":
		if op != '=' {
			return nil, fmt.Errorf("externalId wants =")
		}
		return func(u User) bool {
			return slices.ContainsFunc(u.ExternalIDs, func(e ExternalID) bool { return e.Value == val })
		}, nil
	}
	schema, name, ok := strings.Cut(field, ".")
	if !ok || op != '=' || schema == "" || name == "" {
		return nil, fmt.Errorf("field %q is not served by the emulator", field)
	}
	return func(u User) bool {
		v, present := u.CustomSchemas[schema][name]
		if !present {
			return false
		}
		if list, isList := v.([]any); isList {
			// A multi-valued field: [{"type": ..., "value": ...}, ...].
			return slices.ContainsFunc(list, func(e any) bool {
				m, _ := e.(map[string]any)
				return fmt.Sprint(m["value"]) == val
			})
		}
		return fmt.Sprint(v) == val
	}, nil
}

// underOU reports whether path is ou or below it (case-insensitive).
func underOU(path, ou string) bool {
	path, ou = strings.ToLower(path), strings.ToLower(strings.TrimSuffix(ou, "/"))
	return ou == "" || path == ou || strings.HasPrefix(path, ou+"/")
}

// splitClauses splits at spaces outside single quotes.
func splitClauses(q string) ([]string, error) {
	var out []string
	var cur strings.Builder
	quoted := false
	for _, r := range q {
		switch {
		case r == '\'':
			quoted = !quoted
			cur.WriteRune(r)
		case r == ' ' && !quoted:
			if cur.Len() > 0 {
				out = append(out, cur.String())
				cur.Reset()
			}
		default:
			cur.WriteRune(r)
		}
	}
	if quoted {
		return nil, fmt.Errorf("unterminated quote")
	}
	if cur.Len() > 0 {
		out = append(out, cur.String())
	}
	return out, nil
}

func unquote(v string) string {
	if len(v) >= 2 && v[0] == '\'' && v[len(v)-1] == '\'' {
		return v[1 : len(v)-1]
	}
	return v
}
