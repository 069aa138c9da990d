package proxy

import (
	"errors"
	"net/url"
	"strings"
)

var errBadReturn = errors.New("return URL is not a path on this site")

// safeReturn validates where to send the browser after login. It accepts a
// same-origin relative path ("/browse/ABC-1?x=y"), or an absolute URL whose
// scheme is the public scheme and whose host is one of usher's own
// configured hosts. Everything an attacker could use to leave the site —
// scheme-relative "//evil", "/\evil", their percent-encoded and mixed-case
// spellings, userinfo, control characters — is refused rather than
// repaired, so that a crafted link fails loudly.
func safeReturn(raw, scheme string, hosts map[string]bool) (string, error) {
	if raw == "" {
		return "/", nil
	}
	if len(raw) > 2048 {
		return "", errBadReturn
	}
	for i := 0; i < len(raw); i++ {
		if c := raw[i]; c <= 0x20 || c == 0x7f || c == '\\' {
			return "", errBadReturn
		}
	}
	// Decode repeatedly so that "/%252F%252Fevil" cannot smuggle a "//"
	// past a single decode done later by a browser or the app.
	dec := raw
	for range 3 {
		d, err := url.PathUnescape(dec)
		if err != nil {
			return "", errBadReturn
		}
		if d == dec {
			break
		}
		dec = d
		if strings.ContainsAny(dec, "\\\x00\r\n\t") {
			return "", errBadReturn
		}
	}
	if strings.HasPrefix(raw, "/") {
		if strings.HasPrefix(dec, "//") || strings.HasPrefix(raw, "//") {
			return "", errBadReturn
		}
		u, err := url.Parse(raw)
		if err != nil || u.Scheme != "" || u.Host != "" || u.User != nil || u.Opaque != "" {
			return "", errBadReturn
		}
		return raw, nil
	}
	u, err := url.Parse(raw)
	if err != nil || u.User != nil || u.Opaque != "" || !strings.EqualFold(u.Scheme, scheme) {
		return "", errBadReturn
	}
	host := strings.ToLower(u.Host)
	if host == "" || !hosts[host] {
		return "", errBadReturn
	}
	u.Scheme = strings.ToLower(u.Scheme)
	u.Host = host
	return u.String(), nil
}
