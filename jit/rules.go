package jit

import (
	"errors"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/usherhq/usher/config"
	"github.com/usherhq/usher/providers"
)

// templateRefs walks a regexp replacement template the way regexp.Expand
// reads it: $name or ${name}, $$ for a literal $, and a $ that starts no
// valid reference copied as is. It calls lit for literal text and ref for
// each reference.
func templateRefs(t string, lit func(string), ref func(string)) {
	for {
		i := strings.IndexByte(t, '$')
		if i < 0 {
			lit(t)
			return
		}
		lit(t[:i])
		t = t[i:]
		if strings.HasPrefix(t, "$$") {
			lit("$")
			t = t[2:]
			continue
		}
		name, rest, ok := extractRef(t)
		if !ok {
			lit("$")
			t = t[1:]
			continue
		}
		ref(name)
		t = rest
	}
}

// extractRef mirrors regexp's extract: t starts with '$'.
func extractRef(t string) (name, rest string, ok bool) {
	if len(t) < 2 {
		return "", "", false
	}
	brace := false
	i := 1
	if t[1] == '{' {
		brace = true
		i = 2
	}
	j := i
	for j < len(t) {
		r, size := utf8.DecodeRuneInString(t[j:])
		if !unicode.IsLetter(r) && !unicode.IsDigit(r) && r != '_' {
			break
		}
		j += size
	}
	if j == i {
		return "", "", false
	}
	name = t[i:j]
	if brace {
		if j >= len(t) || t[j] != '}' {
			return "", "", false
		}
		j++
	}
	return name, t[j:], true
}

// badReference returns the first reference in t that names no group of re.
func badReference(t string, re *regexp.Regexp) string {
	bad := ""
	templateRefs(t, func(string) {}, func(name string) {
		if bad != "" {
			return
		}
		if n, err := strconv.Atoi(name); err == nil {
			if n < 0 || n > re.NumSubexp() {
				bad = "$" + name
			}
			return
		}
		if re.SubexpIndex(name) < 0 {
			bad = "$" + name
		}
	})
	return bad
}

// templatePattern turns a replacement template into an anchored,
// case-insensitive regexp source for the names it can produce; literal
// reports that it has no references (it produces one fixed name).
func templatePattern(t string) (pattern string, literal bool) {
	var b strings.Builder
	b.WriteString("(?i)^")
	literal = true
	templateRefs(t, func(s string) { b.WriteString(regexp.QuoteMeta(s)) }, func(string) {
		literal = false
		b.WriteString(".*")
	})
	b.WriteString("$")
	return b.String(), literal
}

// expandLiteral is the name a template without references produces.
func expandLiteral(t string) string {
	var b strings.Builder
	templateRefs(t, func(s string) { b.WriteString(s) }, func(string) {})
	return b.String()
}

// cleanGroup trims a group name and says why it cannot be used, if so. A
// name is never split: "a,b" is refused, not read as two groups.
func cleanGroup(s string) (string, string) {
	s = strings.TrimSpace(s)
	switch {
	case s == "." || s == "..":
		// Would become a path segment in app REST URLs.
		return s, fmt.Sprintf("group name %q is not a name", s)
	case s != "" && len(s) <= maxGroupName && isPlainASCII(s):
		return s, ""
	case s == "":
		return "", "empty group name"
	case !utf8.ValidString(s):
		return s, fmt.Sprintf("group name %q is not valid UTF-8", s)
	case len(s) > maxGroupName:
		return s, fmt.Sprintf("group name %q is longer than %d bytes", s, maxGroupName)
	case strings.ContainsAny(s, ",;"):
		return s, fmt.Sprintf("group name %q holds a separator (, or ;)", s)
	case strings.ContainsFunc(s, isBreaking):
		return s, fmt.Sprintf("group name %q holds a control character", s)
	}
	return s, ""
}

// isBreaking reports characters that end a line or field somewhere
// downstream (headers, logs, CSV): control characters and the Unicode
// line and paragraph separators.
func isBreaking(r rune) bool {
	return unicode.IsControl(r) || r == '\u2028' || r == '\u2029'
}

// valueRule is a compiled config.ValueRule.
type valueRule struct {
	claims     []string
	tmpl       []tmplPart
	fallback   []string
	transforms []transform
	def        string
}

type tmplPart struct {
	lit   string
	claim string // set for a placeholder
}

type transformKind int

const (
	tLower transformKind = iota
	tUpper
	tTrim
	tStripDomain
	tRegex
)

type transform struct {
	kind transformKind
	re   *regexp.Regexp
	repl string
}

func (c *compiler) valueRule(path string, r config.ValueRule) *valueRule {
	v := &valueRule{def: r.Default}
	var err error
	if v.claims, err = claimNames(r.Claim); err != nil {
		c.errorf(path+".claim", "%v", err)
	}
	if r.Template != "" {
		if len(v.claims) > 0 {
			c.errorf(path, "set claim or template, not both")
		}
		if v.tmpl, err = parseTemplate(r.Template); err != nil {
			c.errorf(path+".template", "%v", err)
		}
	}
	if v.fallback, err = claimNames(r.Fallback); err != nil {
		c.errorf(path+".fallback", "%v", err)
	}
	for i, t := range r.Transforms {
		tr, err := parseTransform(t)
		if err != nil {
			c.errorf(fmt.Sprintf("%s.transforms[%d]", path, i), "%v", err)
			continue
		}
		v.transforms = append(v.transforms, tr)
	}
	return v
}

// claimNames reads a claim name or a list of names, as the strict loader
// or a Go literal presents them.
func claimNames(v any) ([]string, error) {
	var out []string
	add := func(s string) error {
		if s = strings.TrimSpace(s); s == "" {
			return errors.New("empty claim name")
		}
		out = append(out, s)
		return nil
	}
	switch x := v.(type) {
	case nil:
		return nil, nil
	case string:
		if x == "" {
			return nil, nil
		}
		return out, add(x)
	case []string:
		for _, s := range x {
			if err := add(s); err != nil {
				return nil, err
			}
		}
	case []any:
		for _, e := range x {
			s, ok := e.(string)
			if !ok {
				return nil, fmt.Errorf("want claim names, got %T in the list", e)
			}
			if err := add(s); err != nil {
				return nil, err
			}
		}
	default:
		return nil, fmt.Errorf("want a claim name or a list of names, got %T", v)
	}
	return out, nil
}

func parseTransform(v any) (transform, error) {
	switch x := v.(type) {
	case string:
		switch x {
		case "lowercase":
			return transform{kind: tLower}, nil
		case "uppercase":
			return transform{kind: tUpper}, nil
		case "trim":
			return transform{kind: tTrim}, nil
		case "strip_domain":
			return transform{kind: tStripDomain}, nil
		}
		return transform{}, fmt.Errorf("unknown transform %q (want lowercase, uppercase, trim, strip_domain or {regex: ..., replace: ...})", x)
	case map[string]any:
		m := make(map[string]string, len(x))
		for k, e := range x {
			s, ok := e.(string)
			if !ok && e != nil {
				return transform{}, fmt.Errorf("%s: want a string, got %T", k, e)
			}
			m[k] = s
		}
		return regexTransform(m)
	case map[string]string:
		return regexTransform(x)
	}
	return transform{}, fmt.Errorf("want a transform name or {regex: ..., replace: ...}, got %T", v)
}

func regexTransform(m map[string]string) (transform, error) {
	for _, k := range slices.Sorted(maps.Keys(m)) {
		if k != "regex" && k != "replace" {
			return transform{}, fmt.Errorf("unknown key %q (want regex and replace)", k)
		}
	}
	src, ok := m["regex"]
	if !ok || src == "" {
		return transform{}, errors.New("regex: required")
	}
	re, err := regexp.Compile(src)
	if err != nil {
		return transform{}, fmt.Errorf("regex: %v", err)
	}
	if ref := badReference(m["replace"], re); ref != "" {
		return transform{}, fmt.Errorf("replace: %s names no group of the regex", ref)
	}
	return transform{kind: tRegex, re: re, repl: m["replace"]}, nil
}

// parseTemplate reads "{{given_name}} {{family_name}}". Claim names may
// hold anything but braces (SAML attribute names are URIs).
func parseTemplate(s string) ([]tmplPart, error) {
	var parts []tmplPart
	rest := s
	for rest != "" {
		i := strings.Index(rest, "{{")
		if i < 0 {
			parts = append(parts, tmplPart{lit: rest})
			break
		}
		if i > 0 {
			parts = append(parts, tmplPart{lit: rest[:i]})
		}
		j := strings.Index(rest[i+2:], "}}")
		if j < 0 {
			return nil, fmt.Errorf("unclosed {{ at offset %d", len(s)-len(rest)+i)
		}
		name := strings.TrimSpace(rest[i+2 : i+2+j])
		if name == "" {
			return nil, fmt.Errorf("empty placeholder at offset %d", len(s)-len(rest)+i)
		}
		if strings.ContainsAny(name, "{}") {
			return nil, fmt.Errorf("placeholder %q holds a brace", name)
		}
		parts = append(parts, tmplPart{claim: name})
		rest = rest[i+2+j+2:]
	}
	return parts, nil
}

// firstValue is a claim's first value that is not blank.
func firstValue(id *providers.Identity, claim string) string {
	for _, v := range id.Claims[claim] {
		if strings.TrimSpace(v) != "" {
			return v
		}
	}
	return ""
}

func blank(s string) bool { return strings.TrimSpace(s) == "" }

// source describes where the rule reads from, for messages.
func (v *valueRule) source() string {
	if v.tmpl != nil {
		return "template"
	}
	return "claim " + strings.Join(append(slices.Clip(v.claims), v.fallback...), ", ")
}

func (v *valueRule) eval(id *providers.Identity) string {
	var s string
	if v.tmpl != nil {
		var b strings.Builder
		for _, p := range v.tmpl {
			if p.claim == "" {
				b.WriteString(p.lit)
			} else {
				b.WriteString(firstValue(id, p.claim))
			}
		}
		s = strings.TrimSpace(b.String())
	} else {
		for _, c := range v.claims {
			if s = firstValue(id, c); s != "" {
				break
			}
		}
	}
	if s != "" {
		s = v.apply(s)
	}
	if blank(s) {
		s = ""
		for _, c := range v.fallback {
			if s = firstValue(id, c); s != "" {
				s = v.apply(s)
				break
			}
		}
	}
	if blank(s) {
		s = v.def
	}
	return s
}

func (v *valueRule) apply(s string) string {
	for _, t := range v.transforms {
		switch t.kind {
		case tLower:
			s = strings.ToLower(s)
		case tUpper:
			s = strings.ToUpper(s)
		case tTrim:
			s = strings.TrimSpace(s)
		case tStripDomain:
			s, _, _ = strings.Cut(s, "@")
		case tRegex:
			s = t.re.ReplaceAllString(s, t.repl)
		}
	}
	return s
}
