package jit

import "strings"

// usernameAffixes are the literal prefix and suffix every username the
// rule produces is sure to carry (lower-cased, as usernames are), or ""
// where nothing is sure: a plain claim, a fallback, a default or a
// regular-expression transform can make any name.
func (v *valueRule) usernameAffixes() (prefix, suffix string) {
	if v == nil || len(v.tmpl) == 0 || len(v.fallback) > 0 || v.def != "" {
		return "", ""
	}
	first, last := v.tmpl[0], v.tmpl[len(v.tmpl)-1]
	if first.claim == "" {
		prefix = strings.TrimLeft(first.lit, " \t")
	}
	if last.claim == "" && len(v.tmpl) > 1 {
		suffix = strings.TrimRight(last.lit, " \t")
	}
	for _, t := range v.transforms {
		switch t.kind {
		case tRegex:
			return "", ""
		case tStripDomain:
			suffix = "" // whatever followed the @ is gone
			if strings.Contains(prefix, "@") {
				prefix = ""
			}
		}
	}
	return strings.ToLower(prefix), strings.ToLower(suffix)
}

// UsernamesMayOverlap reports whether two IdPs' mappings can give two
// people the same username: unless one mapping's usernames always start
// (or end) with text the other's never can, they may. usher refuses the
// second person (the username is bound to the first), and an IdP whose
// adoption policy allows it could take over an app account the other's
// person was meant to have; `usher check` warns about such pairs.
func UsernamesMayOverlap(a, b *Mapper) bool {
	ap, as := a.username.usernameAffixes()
	bp, bs := b.username.usernameAffixes()
	disjoint := func(x, y string, cmp func(string, string) bool) bool {
		return x != "" && y != "" && !cmp(x, y) && !cmp(y, x)
	}
	return !disjoint(ap, bp, strings.HasPrefix) && !disjoint(as, bs, strings.HasSuffix)
}
