package scim

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	"github.com/elimity-com/scim/schema"
	filter "github.com/scim2/filter-parser/v2"
)

// patchOp is one PATCH operation (RFC 7644 §3.5.2), op lower-cased:
// Entra sends "Replace" and "Add".
type patchOp struct {
	op    string
	path  string
	value any
}

func parsePatch(raw []byte) ([]patchOp, error) {
	var body struct {
		Schemas    []string
		Operations []struct {
			Op    string
			Path  string
			Value json.RawMessage
		}
	}
	d := json.NewDecoder(bytes.NewReader(raw))
	if err := d.Decode(&body); err != nil {
		return nil, invalidSyntax("the body is not a PatchOp JSON object")
	}
	found := false
	for _, s := range body.Schemas {
		found = found || strings.EqualFold(s, patchOpURN)
	}
	if !found {
		return nil, invalidSyntax("schemas must list %s", patchOpURN)
	}
	if len(body.Operations) == 0 {
		return nil, invalidValue("Operations must hold at least one operation")
	}
	ops := make([]patchOp, 0, len(body.Operations))
	for i, o := range body.Operations {
		op := strings.ToLower(strings.TrimSpace(o.Op))
		if op != "add" && op != "remove" && op != "replace" {
			return nil, invalidValue("Operations[%d]: op %q is not add, remove or replace", i, o.Op)
		}
		var v any
		if len(o.Value) > 0 {
			vd := json.NewDecoder(bytes.NewReader(o.Value))
			vd.UseNumber()
			if err := vd.Decode(&v); err != nil {
				return nil, invalidSyntax("Operations[%d]: bad value", i)
			}
		}
		if o.Path == "" && op == "remove" {
			return nil, noTarget("Operations[%d]: remove needs a path", i)
		}
		ops = append(ops, patchOp{op: op, path: strings.TrimSpace(o.Path), value: v})
	}
	return ops, nil
}

// applyUserOp applies one operation to a user resource of IdP d in
// place. Values are checked afterwards, when the whole resource is
// validated again. What lands under an extension schema usher does not
// serve for d is appended to dropped, not applied (see normalizeUser).
func (s *server) applyUserOp(d *idp, doc map[string]any, op patchOp, dropped *[]string) error {
	if op.path != "" {
		return s.applyUserPath(d, doc, op.op, op.path, op.value, dropped)
	}
	obj, ok := op.value.(map[string]any)
	if !ok {
		return invalidValue("an operation without a path needs an object value")
	}
	for k, v := range obj {
		switch {
		case strings.EqualFold(k, "id"), strings.EqualFold(k, "schemas"), strings.EqualFold(k, "meta"):
			// Okta repeats the id; the others are not the IdP's to set.
		case strings.EqualFold(k, enterpriseURN) || d.extension(k) != nil:
			ext, ok := v.(map[string]any)
			if !ok {
				return invalidValue("%s must be an object", k)
			}
			for ek, ev := range ext {
				if err := s.applyUserPath(d, doc, op.op, k+":"+ek, ev, dropped); err != nil {
					return err
				}
			}
		default:
			// An attribute, or an extension's by its full path;
			// applyUserPath drops what lies under a schema not served.
			if err := s.applyUserPath(d, doc, op.op, k, v, dropped); err != nil {
				return err
			}
		}
	}
	return nil
}

func (s *server) applyUserPath(d *idp, doc map[string]any, op, rawPath string, value any, dropped *[]string) error {
	if err := checkFilterSize(rawPath); err != nil {
		return err
	}
	p, err := filter.ParsePath([]byte(rawPath))
	if err != nil {
		return invalidPath("cannot parse path %q", rawPath)
	}
	ap := p.AttributePath
	container, ref := doc, s.userRes
	switch uri := ap.URI(); {
	case uri == "" || strings.EqualFold(uri, schema.UserSchema):
		if strings.EqualFold(ap.AttributeName, "externalId") && ap.SubAttribute == nil && p.ValueExpression == nil {
			return setSimple(doc, "externalId", op, value)
		}
	case strings.EqualFold(uri, enterpriseURN):
		container, ref = extObject(doc, enterpriseURN), s.enterRes
	case d.extension(uri) != nil:
		x := d.extension(uri)
		container, ref = extObject(doc, x.urn), x.res
	default:
		*dropped = append(*dropped, rawPath)
		return nil
	}
	attr, ok := ref.Attributes.ContainsAttribute(ap.AttributeName)
	if !ok {
		return invalidPath("unknown attribute in path %q", rawPath)
	}
	if attr.Mutability() == "readOnly" {
		return mutability("%s is read-only", attr.Name())
	}
	key := attr.Name()
	if p.ValueExpression != nil {
		if !attr.MultiValued() || !attr.HasSubAttributes() {
			return invalidPath("%s is not a multi-valued complex attribute", key)
		}
		sub := ""
		if p.SubAttribute != nil {
			sa, ok := attr.SubAttributes().ContainsAttribute(*p.SubAttribute)
			if !ok {
				return invalidPath("unknown sub-attribute in path %q", rawPath)
			}
			sub = sa.Name()
		}
		return applyFiltered(container, attr, key, p.ValueExpression, sub, op, value)
	}
	if ap.SubAttribute != nil {
		sa, ok := attr.SubAttributes().ContainsAttribute(*ap.SubAttribute)
		if !ok || attr.MultiValued() {
			return invalidPath("unknown or ambiguous sub-attribute in path %q", rawPath)
		}
		m, _ := container[key].(map[string]any)
		if m == nil {
			m = map[string]any{}
		}
		if err := setSimple(m, sa.Name(), op, value); err != nil {
			return err
		}
		container[key] = m
		return nil
	}
	switch {
	case op == "remove":
		delete(container, key)
	case attr.MultiValued():
		vals := canonList(attr, value)
		if op == "add" {
			vals = mergeValues(canonList(attr, container[key]), vals)
		}
		container[key] = vals
	case attr.HasSubAttributes():
		// Replacing or adding a complex attribute sets the sub-attributes
		// given and leaves the others (RFC 7644 §3.5.2.3). A bare string
		// for one is taken as its value (Entra's manager).
		v := value
		if str, ok := v.(string); ok {
			v = map[string]any{"value": str}
		}
		nv, ok := canon(attr, v).(map[string]any)
		if !ok {
			return invalidValue("%s must be an object", key)
		}
		old, _ := container[key].(map[string]any)
		if old == nil {
			old = map[string]any{}
		}
		for k, sv := range nv {
			old[k] = sv
		}
		container[key] = old
	default:
		container[key] = value
	}
	return nil
}

// extObject returns the object of extension urn in doc, made if absent.
func extObject(doc map[string]any, urn string) map[string]any {
	ext, _ := doc[urn].(map[string]any)
	if ext == nil {
		ext = map[string]any{}
		doc[urn] = ext
	}
	return ext
}

func setSimple(m map[string]any, key, op string, value any) error {
	if op == "remove" {
		delete(m, key)
		return nil
	}
	if _, ok := value.(map[string]any); ok {
		return invalidValue("%s takes a single value, not an object", key)
	}
	m[key] = value
	return nil
}

// applyFiltered handles "emails[type eq \"work\"].value" and
// "members[value eq \"id\"]": it changes the elements the filter selects.
// An add or replace that selects nothing creates the element when the
// filter is a plain eq (Entra replaces a work email the user lacks).
func applyFiltered(container map[string]any, attr schema.CoreAttribute, key string, expr filter.Expression, sub, op string, value any) error {
	list := canonList(attr, container[key])
	var out []any
	hit := false
	for _, e := range list {
		em, _ := e.(map[string]any)
		if em == nil || !matchElem(expr, em) {
			out = append(out, e)
			continue
		}
		hit = true
		switch {
		case op == "remove" && sub == "":
			continue // drop the element
		case op == "remove":
			delete(em, sub)
		case sub != "":
			em[sub] = value
		default:
			nv, ok := canon(attr, value).(map[string]any)
			if !ok {
				return invalidValue("%s elements are objects", key)
			}
			for k, v := range nv {
				em[k] = v
			}
		}
		out = append(out, em)
	}
	if !hit && op != "remove" {
		em, ok := eqAttrs(expr)
		if !ok {
			return noTarget("the filter in %s selects no value", key)
		}
		em = canon(attr, em).(map[string]any)
		if sub != "" {
			em[sub] = value
		} else if nv, ok := canon(attr, value).(map[string]any); ok {
			for k, v := range nv {
				em[k] = v
			}
		}
		out = append(out, em)
	}
	container[key] = out
	return nil
}

// canonList returns a multi-valued attribute as a list of canonical
// elements; a single object is taken as a one-element list.
func canonList(attr schema.CoreAttribute, v any) []any {
	switch t := v.(type) {
	case nil:
		return nil
	case []any:
		out := make([]any, 0, len(t))
		for _, e := range t {
			out = append(out, canon(attr, e))
		}
		return out
	}
	return []any{canon(attr, v)}
}

// canon renames an object's keys to the sub-attribute names of attr, so a
// merge never holds "givenName" and "GivenName" side by side; unknown
// keys go.
func canon(attr schema.CoreAttribute, v any) any {
	m, ok := v.(map[string]any)
	if !ok || !attr.HasSubAttributes() {
		return v
	}
	out := map[string]any{}
	for k, sv := range m {
		if sa, ok := attr.SubAttributes().ContainsAttribute(k); ok {
			out[sa.Name()] = sv
		}
	}
	return out
}

// mergeValues appends add to have, skipping elements whose "value" is
// already there.
func mergeValues(have, add []any) []any {
	seen := map[string]bool{}
	for _, e := range have {
		seen[elemValue(e)] = true
	}
	for _, e := range add {
		if k := elemValue(e); k == "" || !seen[k] {
			have = append(have, e)
			seen[k] = true
		}
	}
	return have
}

func elemValue(e any) string {
	if m, ok := e.(map[string]any); ok {
		e = m["value"]
	}
	if e == nil {
		return ""
	}
	return fmt.Sprint(e)
}

// matchElem evaluates a value filter on one element of a multi-valued
// attribute. Strings compare case-insensitively, as the core schema's
// sub-attributes mostly are.
func matchElem(e filter.Expression, elem map[string]any) bool {
	switch t := e.(type) {
	case *filter.LogicalExpression:
		if t.Operator == filter.AND {
			return matchElem(t.Left, elem) && matchElem(t.Right, elem)
		}
		return matchElem(t.Left, elem) || matchElem(t.Right, elem)
	case *filter.NotExpression:
		return !matchElem(t.Expression, elem)
	case *filter.AttributeExpression:
		got := lookupFold(elem, t.AttributePath.AttributeName)
		if t.Operator == filter.PR {
			return got != nil && got != ""
		}
		g, w := scalarString(got), scalarString(t.CompareValue)
		switch t.Operator {
		case filter.EQ:
			return got != nil && strings.EqualFold(g, w)
		case filter.NE:
			return !strings.EqualFold(g, w)
		case filter.CO:
			return strings.Contains(strings.ToLower(g), strings.ToLower(w))
		case filter.SW:
			return strings.HasPrefix(strings.ToLower(g), strings.ToLower(w))
		case filter.EW:
			return strings.HasSuffix(strings.ToLower(g), strings.ToLower(w))
		}
	}
	return false
}

func scalarString(v any) string {
	switch t := v.(type) {
	case nil:
		return ""
	case string:
		return t
	case bool:
		return strconv.FormatBool(t)
	}
	return fmt.Sprint(v)
}

// eqAttrs turns `type eq "work"` (or an and of such) into the element it
// describes.
func eqAttrs(e filter.Expression) (map[string]any, bool) {
	switch t := e.(type) {
	case *filter.AttributeExpression:
		if t.Operator != filter.EQ || t.AttributePath.SubAttribute != nil {
			return nil, false
		}
		return map[string]any{t.AttributePath.AttributeName: t.CompareValue}, true
	case *filter.LogicalExpression:
		if t.Operator != filter.AND {
			return nil, false
		}
		l, ok := eqAttrs(t.Left)
		if !ok {
			return nil, false
		}
		r, ok := eqAttrs(t.Right)
		for k, v := range r {
			l[k] = v
		}
		return l, ok
	}
	return nil, false
}

// coerce turns booleans sent as strings ("True", "false") into booleans,
// through nested and multi-valued attributes: Entra sends PATCH
// active as "False" (Microsoft's "Known issues ... SCIM 2.0 protocol
// compliance" page). Other strings are left for validation to refuse.
func coerce(m map[string]any, attrs schema.Attributes) {
	for k, v := range m {
		attr, ok := attrs.ContainsAttribute(k)
		if !ok {
			continue
		}
		switch t := v.(type) {
		case string:
			if attr.AttributeType() == "boolean" {
				switch t = strings.TrimSpace(t); {
				case strings.EqualFold(t, "true"):
					m[k] = true
				case strings.EqualFold(t, "false"):
					m[k] = false
				}
			}
		case map[string]any:
			coerce(t, attr.SubAttributes())
		case []any:
			for _, e := range t {
				if em, ok := e.(map[string]any); ok {
					coerce(em, attr.SubAttributes())
				}
			}
		}
	}
}
