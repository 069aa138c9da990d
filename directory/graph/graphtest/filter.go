package graphtest

import (
	"fmt"
	"strconv"
	"strings"
	"unicode"
)

// The $filter subset Graph serves on users and groups (reference §2.2,
// §2.3, §2.10): eq, ne, ge, le, gt, lt, in, startswith, endswith, not,
// and, or, parentheses; string, boolean, null and number literals;
// property paths with '/'. ne, not and endswith are advanced queries:
// Graph refuses them without ConsistencyLevel: eventual and $count=true.
// String comparisons ignore case, as Graph's do on the directory
// properties a sync filters on.

// maxIn is the most values an `in` list may hold. [U] Graph documents a
// limit of 15 for some filters; the emulator enforces it everywhere so
// that clients chunk.
const maxIn = 15

type filter interface {
	eval(get func(string) (any, bool)) bool
}

type (
	orF  struct{ a, b filter }
	andF struct{ a, b filter }
	notF struct{ a filter }
	cmpF struct {
		prop, op string
		val      any
	}
	inF struct {
		prop string
		vals []any
	}
	funcF struct{ name, prop, arg string }
)

func (f orF) eval(g func(string) (any, bool)) bool  { return f.a.eval(g) || f.b.eval(g) }
func (f andF) eval(g func(string) (any, bool)) bool { return f.a.eval(g) && f.b.eval(g) }
func (f notF) eval(g func(string) (any, bool)) bool { return !f.a.eval(g) }

func (f cmpF) eval(g func(string) (any, bool)) bool {
	v, _ := g(f.prop)
	c, ok := compare(v, f.val)
	switch f.op {
	case "eq":
		return ok && c == 0
	case "ne":
		return !ok || c != 0
	case "gt":
		return ok && c > 0
	case "ge":
		return ok && c >= 0
	case "lt":
		return ok && c < 0
	case "le":
		return ok && c <= 0
	}
	return false
}

func (f inF) eval(g func(string) (any, bool)) bool {
	v, _ := g(f.prop)
	for _, w := range f.vals {
		if c, ok := compare(v, w); ok && c == 0 {
			return true
		}
	}
	return false
}

func (f funcF) eval(g func(string) (any, bool)) bool {
	v, _ := g(f.prop)
	s, ok := v.(string)
	if !ok {
		return false
	}
	s, arg := strings.ToLower(s), strings.ToLower(f.arg)
	if f.name == "startswith" {
		return strings.HasPrefix(s, arg)
	}
	return strings.HasSuffix(s, arg)
}

// compare orders v against w; ok is false when they cannot be compared
// (a null against a value, different types).
func compare(v, w any) (int, bool) {
	if v == nil || w == nil {
		if v == nil && w == nil {
			return 0, true
		}
		return 0, false
	}
	switch a := v.(type) {
	case string:
		b, ok := w.(string)
		if !ok {
			return 0, false
		}
		return strings.Compare(strings.ToLower(a), strings.ToLower(b)), true
	case bool:
		b, ok := w.(bool)
		if !ok {
			return 0, false
		}
		switch {
		case a == b:
			return 0, true
		case !a:
			return -1, true
		}
		return 1, true
	case float64:
		b, ok := w.(float64)
		if !ok {
			return 0, false
		}
		switch {
		case a < b:
			return -1, true
		case a > b:
			return 1, true
		}
		return 0, true
	}
	return 0, false
}

// parsed is a parsed $filter and whether it needs advanced query
// parameters.
type parsed struct {
	f        filter
	advanced bool
	props    []string
}

func parseFilter(s string) (parsed, error) {
	p := &parser{toks: nil}
	if err := p.lex(s); err != nil {
		return parsed{}, err
	}
	f, err := p.or()
	if err != nil {
		return parsed{}, err
	}
	if p.i != len(p.toks) {
		return parsed{}, fmt.Errorf("unexpected %q", p.toks[p.i].text)
	}
	return parsed{f: f, advanced: p.advanced, props: p.props}, nil
}

type tok struct {
	kind byte // 'i' identifier/keyword, 's' string, 'n' number, '(' ')' ','
	text string
}

type parser struct {
	toks     []tok
	i        int
	advanced bool
	props    []string
}

func (p *parser) lex(s string) error {
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == ' ':
			i++
		case c == '(' || c == ')' || c == ',':
			p.toks = append(p.toks, tok{kind: c, text: string(c)})
			i++
		case c == '\'':
			var b strings.Builder
			i++
			for {
				if i >= len(s) {
					return fmt.Errorf("unterminated string literal")
				}
				if s[i] == '\'' {
					if i+1 < len(s) && s[i+1] == '\'' {
						b.WriteByte('\'')
						i += 2
						continue
					}
					i++
					break
				}
				b.WriteByte(s[i])
				i++
			}
			p.toks = append(p.toks, tok{kind: 's', text: b.String()})
		case c == '-' || (c >= '0' && c <= '9'):
			j := i + 1
			for j < len(s) && (s[j] == '.' || (s[j] >= '0' && s[j] <= '9')) {
				j++
			}
			p.toks = append(p.toks, tok{kind: 'n', text: s[i:j]})
			i = j
		case unicode.IsLetter(rune(c)) || c == '_':
			j := i + 1
			for j < len(s) && (unicode.IsLetter(rune(s[j])) || unicode.IsDigit(rune(s[j])) || s[j] == '_' || s[j] == '/') {
				j++
			}
			p.toks = append(p.toks, tok{kind: 'i', text: s[i:j]})
			i = j
		default:
			return fmt.Errorf("unexpected character %q", c)
		}
	}
	return nil
}

func (p *parser) peek() tok {
	if p.i < len(p.toks) {
		return p.toks[p.i]
	}
	return tok{}
}

func (p *parser) next() tok {
	t := p.peek()
	p.i++
	return t
}

func (p *parser) keyword(k string) bool {
	t := p.peek()
	if t.kind == 'i' && strings.EqualFold(t.text, k) {
		p.i++
		return true
	}
	return false
}

func (p *parser) expect(kind byte) error {
	if t := p.next(); t.kind != kind {
		return fmt.Errorf("expected %q, got %q", kind, t.text)
	}
	return nil
}

func (p *parser) or() (filter, error) {
	a, err := p.and()
	if err != nil {
		return nil, err
	}
	for p.keyword("or") {
		b, err := p.and()
		if err != nil {
			return nil, err
		}
		a = orF{a, b}
	}
	return a, nil
}

func (p *parser) and() (filter, error) {
	a, err := p.unary()
	if err != nil {
		return nil, err
	}
	for p.keyword("and") {
		b, err := p.unary()
		if err != nil {
			return nil, err
		}
		a = andF{a, b}
	}
	return a, nil
}

func (p *parser) unary() (filter, error) {
	if p.keyword("not") {
		p.advanced = true
		a, err := p.unary()
		if err != nil {
			return nil, err
		}
		return notF{a}, nil
	}
	if p.peek().kind == '(' {
		p.i++
		a, err := p.or()
		if err != nil {
			return nil, err
		}
		return a, p.expect(')')
	}
	t := p.next()
	if t.kind != 'i' {
		return nil, fmt.Errorf("expected a property or function, got %q", t.text)
	}
	if name := strings.ToLower(t.text); name == "startswith" || name == "endswith" {
		if name == "endswith" {
			p.advanced = true
		}
		if err := p.expect('('); err != nil {
			return nil, err
		}
		prop := p.next()
		if prop.kind != 'i' {
			return nil, fmt.Errorf("%s: expected a property", name)
		}
		p.props = append(p.props, prop.text)
		if err := p.expect(','); err != nil {
			return nil, err
		}
		arg := p.next()
		if arg.kind != 's' {
			return nil, fmt.Errorf("%s: expected a string", name)
		}
		return funcF{name: name, prop: prop.text, arg: arg.text}, p.expect(')')
	}
	p.props = append(p.props, t.text)
	op := p.next()
	if op.kind != 'i' {
		return nil, fmt.Errorf("expected an operator after %s", t.text)
	}
	switch o := strings.ToLower(op.text); o {
	case "eq", "ne", "gt", "ge", "lt", "le":
		if o == "ne" {
			p.advanced = true
		}
		v, err := p.value()
		if err != nil {
			return nil, err
		}
		return cmpF{prop: t.text, op: o, val: v}, nil
	case "in":
		if err := p.expect('('); err != nil {
			return nil, err
		}
		var vals []any
		for {
			v, err := p.value()
			if err != nil {
				return nil, err
			}
			vals = append(vals, v)
			if p.peek().kind == ',' {
				p.i++
				continue
			}
			break
		}
		if len(vals) > maxIn {
			return nil, fmt.Errorf("too many values in an 'in' list (%d > %d)", len(vals), maxIn)
		}
		return inF{prop: t.text, vals: vals}, p.expect(')')
	}
	return nil, fmt.Errorf("unsupported operator %q", op.text)
}

func (p *parser) value() (any, error) {
	t := p.next()
	switch t.kind {
	case 's':
		return t.text, nil
	case 'n':
		return strconv.ParseFloat(t.text, 64)
	case 'i':
		switch strings.ToLower(t.text) {
		case "true":
			return true, nil
		case "false":
			return false, nil
		case "null":
			return nil, nil
		}
	}
	return nil, fmt.Errorf("expected a literal, got %q", t.text)
}
