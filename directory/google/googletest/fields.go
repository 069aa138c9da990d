package googletest

import (
	"fmt"
	"strings"
)

// selection is a parsed fields parameter (Google's partial response):
// each key maps to its sub-selection, nil for the whole value.
type selection map[string]selection

// parseFields reads "nextPageToken,users(id,name/givenName),kind".
func parseFields(s string) (selection, error) {
	p := &fieldParser{s: s}
	sel, err := p.list()
	if err != nil {
		return nil, err
	}
	if p.i != len(p.s) {
		return nil, fmt.Errorf("unexpected %q at %d", p.s[p.i], p.i)
	}
	return sel, nil
}

type fieldParser struct {
	s string
	i int
}

func (p *fieldParser) list() (selection, error) {
	out := selection{}
	for {
		if err := p.item(out); err != nil {
			return nil, err
		}
		if p.i < len(p.s) && p.s[p.i] == ',' {
			p.i++
			continue
		}
		return out, nil
	}
}

func (p *fieldParser) name() (string, error) {
	start := p.i
	for p.i < len(p.s) && !strings.ContainsRune(",/()", rune(p.s[p.i])) {
		p.i++
	}
	n := strings.TrimSpace(p.s[start:p.i])
	if n == "" {
		return "", fmt.Errorf("empty field name at %d", start)
	}
	return n, nil
}

func (p *fieldParser) item(into selection) error {
	n, err := p.name()
	if err != nil {
		return err
	}
	var sub selection
	switch {
	case p.i < len(p.s) && p.s[p.i] == '/':
		p.i++
		sub = selection{}
		if err := p.item(sub); err != nil {
			return err
		}
	case p.i < len(p.s) && p.s[p.i] == '(':
		p.i++
		if sub, err = p.list(); err != nil {
			return err
		}
		if p.i >= len(p.s) || p.s[p.i] != ')' {
			return fmt.Errorf("unclosed ( in fields")
		}
		p.i++
	}
	into.merge(n, sub)
	return nil
}

// merge adds n with sub; a whole selection absorbs any partial one.
func (s selection) merge(n string, sub selection) {
	prev, seen := s[n]
	switch {
	case !seen:
		s[n] = sub
	case prev == nil || sub == nil:
		s[n] = nil
	default:
		for k, v := range sub {
			prev.merge(k, v)
		}
	}
}

// apply keeps what sel selects of v (objects by key, arrays element by
// element).
func (sel selection) apply(v any) any {
	switch x := v.(type) {
	case map[string]any:
		out := map[string]any{}
		for k, sub := range sel {
			e, ok := x[k]
			if !ok {
				continue
			}
			if sub == nil {
				out[k] = e
			} else {
				out[k] = sub.apply(e)
			}
		}
		return out
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = sel.apply(e)
		}
		return out
	}
	return v
}
