package proxy

import (
	"encoding/base64"
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
	// Encoding writes values beyond printable ASCII (headers.encoding);
	// zero means HeaderUTF8.
	Encoding HeaderEncoding
}

// stripCookies removes cookies whose name starts with one of prefixes
// from the Cookie header, keeping everything else byte for byte. It runs
// on every request that carries usher's session cookie, so it allocates
// only the one new header value.
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
		for rest := v; rest != ""; {
			part := rest
			if i := strings.IndexByte(rest, ';'); i >= 0 {
				part, rest = rest[:i], rest[i+1:]
			} else {
				rest = ""
			}
			part = strings.TrimSpace(part)
			name := part
			if i := strings.IndexByte(name, '='); i >= 0 {
				name = name[:i]
			}
			if part == "" || hasAnyPrefix(name, prefixes) {
				continue
			}
			if b.Len() == 0 {
				b.Grow(len(v))
			} else {
				b.WriteString("; ")
			}
			b.WriteString(part)
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
// Decision: a value is sent when it is valid UTF-8 without control
// characters (C0 including CR, LF, NUL and TAB, and DEL) and without
// leading or trailing white space, in the configured HeaderEncoding;
// otherwise it is not sent at all. Dropping rather than repairing keeps a
// username from ever arriving as a different but valid name (" admin"
// trimmed to "admin"), and a request without the header is anonymous,
// which fails closed.
//
// Groups are joined with ",". A group name that contains a comma or fails
// the rule above is left out, so "a,b" can never become the two groups a
// and b; HeaderNames.Problems reports such names so login can log them
// once.
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

// HeaderEncoding is how identity header values with characters beyond
// printable ASCII are written (headers.encoding). Values of printable
// ASCII go unchanged in every encoding, except where the encoding's own
// escape characters must be escaped too (see percent and rfc2047), so
// that decoding gives back exactly the value usher meant.
//
// Why there is a choice: HTTP/1.1 (RFC 9110 §5.5) leaves non-ASCII field
// bytes to the recipient, and the Servlet containers under Jira,
// Confluence and Bitbucket (Tomcat) decode every header byte as
// ISO-8859-1, so raw UTF-8 "Dávid" reaches a header authenticator as
// "DÃ¡vid". Atlassian's apps have no built-in header authenticator; the
// plugins that add one (Seraph authenticators in Jira and Confluence,
// http-authentication-handler modules in Bitbucket) read
// HttpServletRequest.getHeader, which gives the Latin-1 reading.
type HeaderEncoding string

const (
	// HeaderLatin1 sends each character as its ISO-8859-1 byte, which is
	// what getHeader decodes, so Latin-1 names (Dávid, Jürgen, José)
	// arrive right with no code on the app's side. A value with a
	// character beyond Latin-1 (Łukasz, Győző, 名前) cannot arrive right
	// and is left out. The config default.
	HeaderLatin1 HeaderEncoding = "latin1"
	// HeaderUTF8 sends raw UTF-8 bytes, for apps that read header bytes
	// as UTF-8 (or re-decode getHeader's Latin-1 string as UTF-8). The
	// zero HeaderEncoding means this too.
	HeaderUTF8 HeaderEncoding = "utf8"
	// HeaderPercent percent-encodes (RFC 3986) the UTF-8 bytes of every
	// character beyond ASCII, and "%" and "+". Every value must be decoded
	// (java.net.URLDecoder.decode(v, UTF_8) is right: "+" never appears
	// unencoded, so its form-decoding as a space never applies).
	HeaderPercent HeaderEncoding = "percent"
	// HeaderRFC2047 sends a value that is not plain ASCII, or that holds
	// "=?", as RFC 2047 encoded-words (=?UTF-8?B?...?=, several separated
	// by spaces for long values); decode with
	// javax.mail.internet.MimeUtility.decodeText (JavaMail or Jakarta
	// Mail). Plain ASCII values without "=?" arrive unchanged.
	HeaderRFC2047 HeaderEncoding = "rfc2047"
)

// HeaderEncodings lists the valid headers.encoding values.
var HeaderEncodings = []HeaderEncoding{HeaderLatin1, HeaderUTF8, HeaderPercent, HeaderRFC2047}

// encode returns v as written in the header, or false when v cannot be
// sent in e. v has passed headerValueOK. Plain values are returned as
// they are, without allocating.
func (e HeaderEncoding) encode(v string) (string, bool) {
	if e.plain(v) {
		return v, true
	}
	switch e {
	case HeaderLatin1:
		b := make([]byte, 0, len(v))
		for _, r := range v {
			if r > 0xff {
				return "", false
			}
			b = append(b, byte(r))
		}
		return string(b), true
	case HeaderPercent:
		const hex = "0123456789ABCDEF"
		var b strings.Builder
		b.Grow(len(v) * 2)
		for i := 0; i < len(v); i++ {
			if c := v[i]; c >= 0x80 || c == '%' || c == '+' {
				b.WriteByte('%')
				b.WriteByte(hex[c>>4])
				b.WriteByte(hex[c&15])
			} else {
				b.WriteByte(c)
			}
		}
		return b.String(), true
	case HeaderRFC2047:
		return encodedWords(v), true
	}
	return v, true // utf8
}

// plain reports whether v goes unchanged in e: printable ASCII without
// the encoding's own escapes. In utf8 every valid value is plain.
func (e HeaderEncoding) plain(v string) bool {
	switch e {
	case HeaderUTF8, "":
		return true
	case HeaderPercent:
		if strings.ContainsAny(v, "%+") {
			return false
		}
	case HeaderRFC2047:
		if strings.Contains(v, "=?") {
			return false
		}
	}
	for i := 0; i < len(v); i++ {
		if v[i] >= 0x80 {
			return false
		}
	}
	return true
}

// encodedWords writes v as RFC 2047 "B" encoded-words of at most 75
// characters (45 bytes of text each, cut between characters), separated
// by spaces, which decoders drop between adjacent encoded-words (RFC 2047
// §6.2).
func encodedWords(v string) string {
	const maxText = 45 // base64 of 45 bytes is 60 characters; 60 + 12 < 75
	var b strings.Builder
	for len(v) > 0 {
		n := len(v)
		if n > maxText {
			n = maxText
			for n > 0 && !utf8.RuneStart(v[n]) {
				n--
			}
		}
		if b.Len() > 0 {
			b.WriteByte(' ')
		}
		b.WriteString("=?UTF-8?B?")
		b.WriteString(base64.StdEncoding.EncodeToString([]byte(v[:n])))
		b.WriteString("?=")
		v = v[n:]
	}
	return b.String()
}

// fits reports whether v can be written in e at all.
func (e HeaderEncoding) fits(v string) bool {
	if e != HeaderLatin1 {
		return true
	}
	for _, r := range v {
		if r > 0xff {
			return false
		}
	}
	return true
}

// joinGroups returns the groups header value, encoded in e, and how many
// groups were left out. A group that does not fit e is left out alone.
func joinGroups(groups []string, e HeaderEncoding) (string, int) {
	ok := func(g string) bool { return groupOK(g) && e.fits(g) }
	n, dropped := 0, 0
	for _, g := range groups {
		if ok(g) {
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
		if !ok(g) {
			continue
		}
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		b.WriteString(g)
	}
	v, _ := e.encode(b.String())
	return v, dropped
}

// HeaderProblems lists the session fields that no encoding can send (see
// the rule above); HeaderNames.Problems adds those its encoding cannot.
func HeaderProblems(s *session.Session) []string {
	return HeaderNames{Encoding: HeaderUTF8}.Problems(s)
}

// Problems lists the session fields that a Forwarder with these names
// would leave out of the identity headers, for logging or refusing at
// login rather than on every request. Empty fields are fine.
func (h HeaderNames) Problems(s *session.Session) []string {
	var p []string
	for _, f := range []struct{ name, v string }{
		{"username", s.Username}, {"email", s.Email}, {"display name", s.DisplayName},
	} {
		switch {
		case f.v == "":
		case !headerValueOK(f.v):
			p = append(p, f.name+" "+strconv.Quote(f.v))
		case !h.Encoding.fits(f.v):
			p = append(p, f.name+" "+strconv.Quote(f.v)+" (not "+string(h.Encoding)+")")
		}
	}
	for _, g := range s.Groups {
		switch {
		case !groupOK(g):
			p = append(p, "group "+strconv.Quote(g))
		case !h.Encoding.fits(g):
			p = append(p, "group "+strconv.Quote(g)+" (not "+string(h.Encoding)+")")
		}
	}
	return p
}
