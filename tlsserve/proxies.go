package tlsserve

import (
	"net"
	"net/http"
	"net/netip"
	"strings"
)

// forwardedHeaders are the client-controlled headers that claim where a
// request came from. Only X-Forwarded-For/Proto/Host are ever believed;
// Forwarded (RFC 7239) and X-Real-IP are always removed so nothing
// downstream reads a second, unchecked opinion.
var forwardedHeaders = []string{"x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "forwarded", "x-real-ip"}

// TrustProxies returns a middleware that believes forwarding headers only
// from the given proxies (CIDRs or single addresses).
//
// For a request whose RemoteAddr is a trusted proxy, the client is the
// rightmost X-Forwarded-For entry that is not itself a trusted proxy
// (so a client cannot forge its address by sending the header itself);
// r.RemoteAddr becomes that address with port 0. X-Forwarded-Proto
// ("http" or "https") sets r.URL.Scheme, X-Forwarded-Host sets r.Host.
// For every request, trusted or not, the forwarding headers are then
// removed in any spelling (X_Forwarded_For too), so downstream code reads
// the request fields, not the headers; Scheme tells the effective scheme.
func TrustProxies(cidrs []string, next http.Handler) (http.Handler, error) {
	var trusted []netip.Prefix
	for _, c := range cidrs {
		p, err := parsePrefix(c)
		if err != nil {
			return nil, err
		}
		trusted = append(trusted, p)
	}
	isTrusted := func(a netip.Addr) bool {
		for _, p := range trusted {
			if p.Contains(a) {
				return true
			}
		}
		return false
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if len(trusted) > 0 {
			if remote, ok := parseAddr(r.RemoteAddr); ok && isTrusted(remote) {
				r = applyForwarded(r, remote, isTrusted)
			}
		}
		stripForwarded(r.Header)
		next.ServeHTTP(w, r)
	}), nil
}

// applyForwarded returns a shallow copy of r with the client's address,
// scheme and host taken from the forwarding headers.
func applyForwarded(r *http.Request, remote netip.Addr, isTrusted func(netip.Addr) bool) *http.Request {
	r2 := new(http.Request)
	*r2 = *r
	u := *r.URL
	r2.URL = &u

	client := remote
	hops := splitList(r.Header.Values("X-Forwarded-For"))
	for i := len(hops) - 1; i >= 0 && isTrusted(client); i-- {
		a, ok := parseAddr(hops[i])
		if !ok {
			break // garbage from the far side of the last trusted proxy
		}
		client = a
	}
	r2.RemoteAddr = net.JoinHostPort(client.String(), "0")

	// The rightmost value is the one the nearest (trusted) proxy added;
	// values to its left may come from the client.
	if protos := splitList(r.Header.Values("X-Forwarded-Proto")); len(protos) > 0 {
		if p := strings.ToLower(protos[len(protos)-1]); p == "http" || p == "https" {
			r2.URL.Scheme = p
		}
	}
	if hosts := splitList(r.Header.Values("X-Forwarded-Host")); len(hosts) > 0 && validHost(hosts[len(hosts)-1]) {
		r2.Host = hosts[len(hosts)-1]
	}
	return r2
}

// Scheme is the scheme the client used: the one a trusted proxy reported
// through TrustProxies, else "https" for a TLS connection, else "http".
func Scheme(r *http.Request) string {
	if r.URL != nil && r.URL.Scheme != "" {
		return r.URL.Scheme
	}
	if r.TLS != nil {
		return "https"
	}
	return "http"
}

func stripForwarded(h http.Header) {
	for k := range h {
		n := strings.ReplaceAll(strings.ToLower(k), "_", "-")
		for _, f := range forwardedHeaders {
			if n == f {
				delete(h, k)
				break
			}
		}
	}
}

// parseAddr reads "ip", "ip:port" or "[ipv6]:port".
func parseAddr(s string) (netip.Addr, bool) {
	s = strings.TrimSpace(s)
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap.Addr().Unmap(), true
	}
	if a, err := netip.ParseAddr(strings.Trim(s, "[]")); err == nil {
		return a.Unmap(), true
	}
	return netip.Addr{}, false
}

func splitList(values []string) []string {
	var out []string
	for _, v := range values {
		for _, p := range strings.Split(v, ",") {
			if p = strings.TrimSpace(p); p != "" {
				out = append(out, p)
			}
		}
	}
	return out
}

// validHost accepts host or host:port without anything a URL or header
// could be bent with.
func validHost(h string) bool {
	if h == "" || len(h) > 255 {
		return false
	}
	for _, c := range h {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case c == '.', c == '-', c == ':', c == '[', c == ']', c == '_':
		default:
			return false
		}
	}
	return true
}
