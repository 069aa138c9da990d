package oktatest

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Okta's filter and search expressions (reference §3.2, §3.4):
// attr op "value" with eq, sw, co, gt, ge, lt, le and pr, joined by and /
// or with parentheses; no ne, no not. filter admits only a few
// attributes and eq (plus ranges on dates), and compares strings
// exactly; search admits any attribute and ignores case.

type expr interface {
	eval(get func(string) (any, bool)) bool
}

type (
	orE  struct{ a, b expr }
	andE struct{ a, b expr }
	cmpE struct {
		attr, op string
		val      any
		fold     bool
	}
)

func (e orE) eval(g func(string) (any, bool)) bool  { return e.a.eval(g) || e.b.eval(g) }
func (e andE) eval(g func(string) (any, bool)) bool { return e.a.eval(g) && e.b.eval(g) }

func (e cmpE) eval(g func(string) (any, bool)) bool {
	v, present := g(e.attr)
	if e.op == "pr" {
		return present && v != nil
	}
	switch x := v.(type) {
	case string:
		w, ok := e.val.(string)
		if !ok {
			return false
		}
		if t1, err := time.Parse(time.RFC3339Nano, x); err == nil {
			if t2, err := time.Parse(time.RFC3339Nano, w); err == nil {
				return order(e.op, t1.Compare(t2))
			}
		}
		if e.fold {
			x, w = strings.ToLower(x), strings.ToLower(w)
		}
		switch e.op {
		case "sw":
			return strings.HasPrefix(x, w)
		case "co":
			return strings.Contains(x, w)
		}
		return order(e.op, strings.Compare(x, w))
	case bool:
		w, ok := e.val.(bool)
		return ok && e.op == "eq" && x == w
	case float64:
		w, ok := e.val.(float64)
		if !ok {
			return false
		}
		switch {
		case x < w:
			return order(e.op, -1)
		case x > w:
			return order(e.op, 1)
		}
		return order(e.op, 0)
	}
	return false
}

func order(op string, c int) bool {
	switch op {
	case "eq":
		return c == 0
	case "gt":
		return c > 0
	case "ge":
		return c >= 0
	case "lt":
		return c < 0
	case "le":
		return c <= 0
	}
	return false
}

// grammar says which attributes and operators an expression may use.
type grammar struct {
	attrs    map[string]bool // nil: any
	ranges   map[string]bool // attributes that take gt/ge/lt/le
	search   bool            // sw, co, pr allowed; case-insensitive
	anyRange bool
}

var (
	userFilter = grammar{
		attrs:  set("status", "lastUpdated", "id", "profile.login", "profile.email", "profile.firstName", "profile.lastName"),
		ranges: set("lastUpdated"),
	}
	userSearch  = grammar{search: true, anyRange: true}
	groupFilter = grammar{
		attrs:  set("id", "type", "lastUpdated", "lastMembershipUpdated"),
		ranges: set("lastUpdated", "lastMembershipUpdated"),
	}
	groupSearch = grammar{search: true, anyRange: true}
)

func set(names ...string) map[string]bool {
	m := map[string]bool{}
	for _, n := range names {
		m[n] = true
	}
	return m
}

func parseExpr(s string, g grammar) (expr, error) {
	p := &eparser{g: g}
	if err := p.lex(s); err != nil {
		return nil, err
	}
	e, err := p.or()
	if err != nil {
		return nil, err
	}
	if p.i != len(p.toks) {
		return nil, fmt.Errorf("unexpected %q", p.toks[p.i])
	}
	return e, nil
}

type eparser struct {
	g    grammar
	toks []string // words, quoted strings keep their quotes, parentheses
	i    int
}

func (p *eparser) lex(s string) error {
	for i := 0; i < len(s); {
		switch c := s[i]; {
		case c == ' ':
			i++
		case c == '(' || c == ')':
			p.toks = append(p.toks, string(c))
			i++
		case c == '"':
			var b strings.Builder
			b.WriteByte('"')
			i++
			for {
				if i >= len(s) {
					return fmt.Errorf("unterminated string")
				}
				if s[i] == '\\' && i+1 < len(s) {
					b.WriteByte(s[i+1])
					i += 2
					continue
				}
				if s[i] == '"' {
					i++
					break
				}
				b.WriteByte(s[i])
				i++
			}
			p.toks = append(p.toks, b.String())
		default:
			j := i
			for j < len(s) && s[j] != ' ' && s[j] != '(' && s[j] != ')' {
				j++
			}
			p.toks = append(p.toks, s[i:j])
			i = j
		}
	}
	return nil
}

func (p *eparser) next() string {
	if p.i >= len(p.toks) {
		return ""
	}
	t := p.toks[p.i]
	p.i++
	return t
}

func (p *eparser) peekWord(w string) bool {
	if p.i < len(p.toks) && strings.EqualFold(p.toks[p.i], w) {
		p.i++
		return true
	}
	return false
}

func (p *eparser) or() (expr, error) {
	a, err := p.and()
	if err != nil {
		return nil, err
	}
	for p.peekWord("or") {
		b, err := p.and()
		if err != nil {
			return nil, err
		}
		a = orE{a, b}
	}
	return a, nil
}

func (p *eparser) and() (expr, error) {
	a, err := p.primary()
	if err != nil {
		return nil, err
	}
	for p.peekWord("and") {
		b, err := p.primary()
		if err != nil {
			return nil, err
		}
		a = andE{a, b}
	}
	return a, nil
}

func (p *eparser) primary() (expr, error) {
	if p.i < len(p.toks) && p.toks[p.i] == "(" {
		p.i++
		e, err := p.or()
		if err != nil {
			return nil, err
		}
		if p.next() != ")" {
			return nil, fmt.Errorf("missing )")
		}
		return e, nil
	}
	attr := p.next()
	if attr == "" || strings.HasPrefix(attr, `"`) {
		return nil, fmt.Errorf("expected an attribute")
	}
	if p.g.attrs != nil && !p.g.attrs[attr] {
		return nil, fmt.Errorf("attribute %s cannot be filtered on", attr)
	}
	op := strings.ToLower(p.next())
	switch op {
	case "eq":
	case "gt", "ge", "lt", "le":
		if !p.g.anyRange && !p.g.ranges[attr] {
			return nil, fmt.Errorf("%s does not take %s", attr, op)
		}
	case "sw", "co", "pr":
		if !p.g.search {
			return nil, fmt.Errorf("%s is a search operator", op)
		}
		if op == "pr" {
			return cmpE{attr: attr, op: op}, nil
		}
	default:
		return nil, fmt.Errorf("unsupported operator %q", op)
	}
	raw := p.next()
	var val any
	switch {
	case strings.HasPrefix(raw, `"`):
		val = raw[1:]
	case raw == "true" || raw == "false":
		val = raw == "true"
	default:
		f, err := strconv.ParseFloat(raw, 64)
		if err != nil {
			return nil, fmt.Errorf("bad value %q", raw)
		}
		val = f
	}
	return cmpE{attr: attr, op: op, val: val, fold: p.g.search}, nil
}
