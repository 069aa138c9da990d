package proxy

import (
	"net/http"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/usherhq/usher/session"
)

// HeaderNames are the trusted identity headers (from config.Headers). An
// empty name means that header is not sent.
type HeaderNames struct {
	Username, Email, DisplayName, Groups string
	// Strip names further headers removed from every client request.
	Strip []string
	// SecretHeader and SecretValue, when both set, are sent on every
	// forwarded request, with or without a session, so the app can tell
	// the request came through usher.
	SecretHeader, SecretValue string
	// Attributes maps custom attribute names to the headers that carry
	// them (headers.attributes).
	Attributes map[string]string
	// CookiePrefixes name usher's own cookies (session, login flows). They
	// are removed from the Cookie header: the app has no use for them, and
	// an app that logs or echoes cookies should never hold a session.
	CookiePrefixes []string
}

// stripCookies removes cookies whose name starts with one of prefixes
// from the Cookie header, keeping everything else byte for byte.
func stripCookies(h http.Header, prefixes []string) {
	vs := h["Cookie"]
	if len(vs) == 0 || len(prefixes) == 0 {
		return
	}
	kept := vs[:0]
	for _, v := range vs {
		if !mentionsAny(v, prefixes) {
			kept = append(kept, v)
			continue
		}
		var b strings.Builder
		for _, part := range strings.Split(v, ";") {
			name := strings.TrimSpace(part)
			if i := strings.IndexByte(name, '='); i >= 0 {
				name = name[:i]
			}
			if hasAnyPrefix(name, prefixes) {
				continue
			}
			if b.Len() > 0 {
				b.WriteString("; ")
			}
			b.WriteString(strings.TrimSpace(part))
		}
		if b.Len() > 0 {
			kept = append(kept, b.String())
		}
	}
	if len(kept) == 0 {
		delete(h, "Cookie")
		return
	}
	h["Cookie"] = kept
}

func mentionsAny(s string, subs []string) bool {
	for _, p := range subs {
		if strings.Contains(s, p) {
			return true
		}
	}
	return false
}

func hasAnyPrefix(s string, prefixes []string) bool {
	for _, p := range prefixes {
		if strings.HasPrefix(s, p) {
			return true
		}
	}
	return false
}

// alwaysStripped are headers usher computes itself. ReverseProxy drops
// their canonical spelling; these catch the other spellings.
var alwaysStripped = []string{"Forwarded", "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto", "X-Request-Id"}

// protectedSet holds header names in normal form: lower case, with '_'
// read as '-'. Servers and frameworks differ in how they fold case and
// underscores (CGI-style stacks turn X-Remote-User into X_REMOTE_USER and
// back), so any client header whose normal form matches is removed.
type protectedSet []string

func newProtectedSet(h HeaderNames) protectedSet {
	var set protectedSet
	add := func(name string) {
		name = normalHeader(strings.TrimSpace(name))
		if name != "" && !contains(set, name) {
			set = append(set, name)
		}
	}
	for _, n := range []string{h.Username, h.Email, h.DisplayName, h.Groups, h.SecretHeader} {
		add(n)
	}
	for _, n := range h.Attributes {
		add(n)
	}
	for _, n := range h.Strip {
		add(n)
	}
	for _, n := range alwaysStripped {
		add(n)
	}
	return set
}

func contains(set []string, s string) bool {
	for _, v := range set {
		if v == s {
			return true
		}
	}
	return false
}

func normalHeader(name string) string {
	b := []byte(name)
	for i, c := range b {
		b[i] = normalByte(c)
	}
	return string(b)
}

func normalByte(c byte) byte {
	switch {
	case 'A' <= c && c <= 'Z':
		return c + 'a' - 'A'
	case c == '_':
		return '-'
	}
	return c
}

// matches reports whether key is a spelling of a protected name, without
// allocating: it runs for every header of every request.
func (p protectedSet) matches(key string) bool {
next:
	for _, name := range p {
		if len(name) != len(key) {
			continue
		}
		for i := 0; i < len(key); i++ {
			if normalByte(key[i]) != name[i] {
				continue next
			}
		}
		return true
	}
	return false
}

// strip deletes every protected header from h (deleting while ranging over
// a map is allowed).
func (p protectedSet) strip(h http.Header) {
	for k := range h {
		if p.matches(k) {
			delete(h, k)
		}
	}
}

// Identity header values.
//
// Decision: a value is sent unchanged when it is valid UTF-8 without
// control characters (C0 including CR, LF, NUL and TAB, and DEL) and
// without leading or trailing white space; otherwise it is not sent at
// all. Non-ASCII text (Jürgen) goes as raw UTF-8 bytes, which HTTP allows
// as field content; the app's header authenticator must read it as UTF-8.
// Dropping rather than escaping keeps a username from ever arriving as a
// different but valid name (" admin" trimmed to "admin", "a%0Ab" decoded),
// and a request without the header is anonymous, which fails closed.
//
// Groups are joined with ",". A group name that contains a comma or fails
// the rule above is left out, so "a,b" can never become the two groups a
// and b; HeaderProblems reports such names so login can log them once.
func headerValueOK(v string) bool {
	if v == "" || !utf8.ValidString(v) {
		return false
	}
	for i := 0; i < len(v); i++ {
		if c := v[i]; c < 0x20 || c == 0x7f {
			return false
		}
	}
	return v[0] != ' ' && v[len(v)-1] != ' '
}

func groupOK(g string) bool { return headerValueOK(g) && !strings.Contains(g, ",") }

// joinGroups returns the groups header value and how many groups were left
// out.
func joinGroups(groups []string) (string, int) {
	n, dropped := 0, 0
	for _, g := range groups {
		if groupOK(g) {
			n += len(g) + 1
		} else {
			dropped++
		}
	}
	if n == 0 {
		return "", dropped
	}
	var b strings.Builder
	b.Grow(n - 1)
	for _, g := range groups {
		if !groupOK(g) {
			continue
		}
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		b.WriteString(g)
	}
	return b.String(), dropped
}

// HeaderProblems lists the session fields that the Forwarder would leave
// out of the identity headers (see the rule above), for logging or
// refusing at login rather than on every request. Empty fields are fine.
func HeaderProblems(s *session.Session) []string {
	var p []string
	for _, f := range []struct{ name, v string }{
		{"username", s.Username}, {"email", s.Email}, {"display name", s.DisplayName},
	} {
		if f.v != "" && !headerValueOK(f.v) {
			p = append(p, f.name+" "+strconv.Quote(f.v))
		}
	}
	for _, g := range s.Groups {
		if !groupOK(g) {
			p = append(p, "group "+strconv.Quote(g))
		}
	}
	return p
}
