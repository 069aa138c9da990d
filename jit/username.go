package jit

import (
	"errors"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"
)

// DefaultUsernameAllowed is the character set a username may hold after
// NFKC and lowercasing, unless provisioning.username_allowed says otherwise.
const DefaultUsernameAllowed = "a-z0-9._@+-"

// maxUsername bounds usernames; every Atlassian product accepts 255.
const maxUsername = 255

// NormalizeUsername applies usher's username rule: Unicode NFKC, then
// lowercase, then only the characters of allowed (written like the body of
// a regexp class: "a-z0-9._@+-"; "" means DefaultUsernameAllowed).
//
// Input that NFKC would change (full-width letters, the Kelvin sign,
// ligatures) is refused rather than folded, so that two different IdP
// values can never silently become one account; "Admin" and "admin" do
// become one name, and the store's binding refuses the second identity.
func NormalizeUsername(raw, allowed string) (string, error) {
	cs, err := parseAllowed(allowed)
	if err != nil {
		return "", fmt.Errorf("username_allowed: %w", err)
	}
	return cs.normalize(raw)
}

// charset is a compiled allowed set.
type charset struct {
	ascii  [utf8.RuneSelf]bool
	ranges [][2]rune // beyond ASCII
}

func (c *charset) has(r rune) bool {
	if r < utf8.RuneSelf {
		return r >= 0 && c.ascii[r]
	}
	for _, rg := range c.ranges {
		if r >= rg[0] && r <= rg[1] {
			return true
		}
	}
	return false
}

func (c *charset) add(lo, hi rune) {
	for r := lo; r <= hi && r < utf8.RuneSelf; r++ {
		c.ascii[r] = true
	}
	if hi >= utf8.RuneSelf {
		c.ranges = append(c.ranges, [2]rune{max(lo, utf8.RuneSelf), hi})
	}
}

// parseAllowed reads "a-z0-9._@+-": single characters and lo-hi ranges; a
// "-" first or last is literal. No escapes: the set is meant to be short
// and readable. White space and control characters are refused, since a
// username holding them could break headers or lookups.
func parseAllowed(spec string) (*charset, error) {
	if spec == "" {
		spec = DefaultUsernameAllowed
	}
	if !utf8.ValidString(spec) {
		return nil, errors.New("not valid UTF-8")
	}
	rs := []rune(spec)
	c := &charset{}
	for i := 0; i < len(rs); i++ {
		lo, hi := rs[i], rs[i]
		if i+2 < len(rs) && rs[i+1] == '-' {
			hi = rs[i+2]
			i += 2
			if hi < lo {
				return nil, fmt.Errorf("range %c-%c is reversed", lo, hi)
			}
		}
		for _, r := range []rune{lo, hi} {
			if unicode.IsSpace(r) || unicode.IsControl(r) || r == ',' || r == ';' {
				return nil, fmt.Errorf("%q may not be part of a username", r)
			}
		}
		c.add(lo, hi)
	}
	return c, nil
}

// normalize is NormalizeUsername with a compiled set. The messages match
// the rule as proxy applied it before jit owned it.
func (c *charset) normalize(raw string) (string, error) {
	if !utf8.ValidString(raw) {
		return "", errors.New("user name is not valid UTF-8")
	}
	n := norm.NFKC.String(raw)
	if n != raw {
		return "", fmt.Errorf("user name %q holds compatibility characters", raw)
	}
	u := strings.ToLower(n)
	if len(u) == 0 || len(u) > maxUsername {
		return "", fmt.Errorf("user name %q is empty or too long", raw)
	}
	if strings.Trim(u, ".") == "" {
		// "." and ".." would be path segments in app REST URLs.
		return "", fmt.Errorf("user name %q is not a name", raw)
	}
	// Go lowercases by simple case mapping, which folds some letters onto
	// ASCII ("İ" U+0130 becomes "i"), so "admİn" would pass as "admin".
	// Only letters that are the plain upper case of their lower case may
	// be lowered.
	for _, r := range n {
		if l := unicode.ToLower(r); l != r && unicode.ToUpper(l) != r {
			return "", fmt.Errorf("user name %q holds the character %q, which is not allowed", raw, r)
		}
	}
	for _, r := range u {
		if !c.has(r) {
			return "", fmt.Errorf("user name %q holds the character %q, which is not allowed", raw, r)
		}
	}
	// Lowercasing can leave a string NFKC would change again (only with
	// a non-ASCII allowed set); refuse it for the same reason as above.
	if !norm.NFKC.IsNormalString(u) {
		return "", fmt.Errorf("user name %q holds compatibility characters", raw)
	}
	return u, nil
}
