package ldaptest

import (
	"fmt"
	"strings"
)

// Record is one LDIF entry.
type Record struct {
	DN    string
	Attrs []Attr
}

// Attr is one attribute with its values, in LDIF order.
type Attr struct {
	Name   string
	Values []string
}

// ParseLDIF reads the LDIF subset the harnesses seed with: records
// separated by blank lines, "dn:" first, one "attribute: value" per line
// (base64 "::", URL ":<" and continuation lines are refused, not read as
// text), "#" comments. Repeated attributes (in any case) gather their
// values in one Attr.
func ParseLDIF(ldif string) ([]Record, error) {
	var out []Record
	var cur *Record
	for i, line := range strings.Split(ldif, "\n") {
		line = strings.TrimRight(line, "\r")
		trimmed := strings.TrimSpace(line)
		if trimmed == "" {
			cur = nil
			continue
		}
		if strings.HasPrefix(trimmed, "#") {
			continue
		}
		if strings.HasPrefix(line, " ") {
			return nil, fmt.Errorf("ldif line %d: continuation lines are not supported", i+1)
		}
		name, value, ok := strings.Cut(trimmed, ":")
		if !ok {
			return nil, fmt.Errorf("ldif line %d: want \"attribute: value\", got %q", i+1, line)
		}
		if strings.HasPrefix(value, ":") || strings.HasPrefix(value, "<") {
			return nil, fmt.Errorf("ldif line %d: base64 and URL values are not supported", i+1)
		}
		value = strings.TrimSpace(value)
		if cur == nil {
			if !strings.EqualFold(name, "dn") {
				return nil, fmt.Errorf("ldif line %d: a record starts with dn:", i+1)
			}
			out = append(out, Record{DN: value})
			cur = &out[len(out)-1]
			continue
		}
		j := len(cur.Attrs) - 1
		for j >= 0 && !strings.EqualFold(cur.Attrs[j].Name, name) {
			j--
		}
		if j < 0 {
			cur.Attrs = append(cur.Attrs, Attr{Name: name})
			j = len(cur.Attrs) - 1
		}
		cur.Attrs[j].Values = append(cur.Attrs[j].Values, value)
	}
	return out, nil
}
