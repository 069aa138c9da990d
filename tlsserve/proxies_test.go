package tlsserve

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
)

// seen is what the handler behind TrustProxies observed.
type seen struct {
	RemoteAddr, Host, Scheme string
	Forwarded                map[string][]string
}

func recorder() (http.Handler, *seen) {
	s := &seen{}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		*s = seen{RemoteAddr: r.RemoteAddr, Host: r.Host, Scheme: Scheme(r), Forwarded: map[string][]string{}}
		for k, v := range r.Header {
			n := strings.ReplaceAll(strings.ToLower(k), "_", "-")
			if slices.Contains(forwardedHeaders, n) {
				s.Forwarded[k] = v
			}
		}
		json.NewEncoder(w).Encode(s)
	}), s
}

func doRequest(h http.Handler, method, host, target, remote string, hdr ...string) *httptest.ResponseRecorder {
	r := httptest.NewRequest(method, target, nil)
	r.Host = host
	r.RemoteAddr = remote
	for i := 0; i+1 < len(hdr); i += 2 {
		r.Header[hdr[i]] = append(r.Header[hdr[i]], hdr[i+1])
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, r)
	return rec
}

func TestTrustProxies(t *testing.T) {
	next, got := recorder()
	h, err := TrustProxies([]string{"10.0.0.0/8", "192.0.2.7", "2001:db8::/32"}, next)
	if err != nil {
		t.Fatal(err)
	}
	forged := []string{
		"X-Forwarded-For", "203.0.113.9",
		"X-Forwarded-Proto", "https",
		"X-Forwarded-Host", "jira.example.com",
		"Forwarded", "for=203.0.113.9",
		"X-Real-Ip", "203.0.113.9",
		"X_forwarded_for", "203.0.113.9",
	}
	for _, c := range []struct {
		name       string
		remote     string
		hdr        []string
		wantRemote string
		wantHost   string
		wantScheme string
	}{
		{"untrusted client: headers ignored", "198.51.100.1:5555", forged,
			"198.51.100.1:5555", "usher.internal", "http"},
		{"trusted proxy", "10.1.2.3:4444", forged,
			"203.0.113.9:0", "jira.example.com", "https"},
		{"single trusted address", "192.0.2.7:1", forged,
			"203.0.113.9:0", "jira.example.com", "https"},
		{"IPv6 proxy", "[2001:db8::5]:443", forged,
			"203.0.113.9:0", "jira.example.com", "https"},
		{"IPv4-mapped proxy", "[::ffff:10.0.0.1]:1", forged,
			"203.0.113.9:0", "jira.example.com", "https"},
		{"neighbour of a single address is not trusted", "192.0.2.8:1", forged,
			"192.0.2.8:1", "usher.internal", "http"},
		// The client prepended a fake address; the proxy appended the
		// real one. The rightmost untrusted entry wins.
		{"client forges a chain", "10.0.0.1:1", []string{
			"X-Forwarded-For", "1.2.3.4, 203.0.113.9", "X-Forwarded-For", "10.9.9.9"},
			"203.0.113.9:0", "usher.internal", "http"},
		{"all hops trusted", "10.0.0.1:1", []string{"X-Forwarded-For", "10.0.0.2"},
			"10.0.0.2:0", "usher.internal", "http"},
		{"garbage hop stops the walk", "10.0.0.1:1", []string{"X-Forwarded-For", "203.0.113.9, junk"},
			"10.0.0.1:0", "usher.internal", "http"},
		{"odd proto and host ignored", "10.0.0.1:1", []string{
			"X-Forwarded-Proto", "javascript", "X-Forwarded-Host", "evil.example/path"},
			"10.0.0.1:0", "usher.internal", "http"},
		{"no headers from proxy", "10.0.0.1:1", nil,
			"10.0.0.1:0", "usher.internal", "http"},
		// The client sent its own host and proto; the proxy appended the
		// real ones. The rightmost values win.
		{"client prepends host and proto", "10.0.0.1:1", []string{
			"X-Forwarded-Host", "evil.example, jira.example.com", "X-Forwarded-Proto", "http, https"},
			"10.0.0.1:0", "jira.example.com", "https"},
	} {
		t.Run(c.name, func(t *testing.T) {
			doRequest(h, "GET", "usher.internal", "/x", c.remote, c.hdr...)
			if got.RemoteAddr != c.wantRemote || got.Host != c.wantHost || got.Scheme != c.wantScheme {
				t.Errorf("saw remote %q host %q scheme %q; want %q %q %q",
					got.RemoteAddr, got.Host, got.Scheme, c.wantRemote, c.wantHost, c.wantScheme)
			}
			if len(got.Forwarded) != 0 {
				t.Errorf("forwarding headers reached the app: %v", got.Forwarded)
			}
		})
	}
}

// TestTrustProxiesOverTCP runs the middleware in a real server: the
// loopback client is trusted in one configuration and not in the other.
func TestTrustProxiesOverTCP(t *testing.T) {
	for _, c := range []struct {
		cidrs      []string
		wantScheme string
		wantHost   bool
	}{
		{[]string{"127.0.0.0/8", "::1"}, "https", true},
		{[]string{"10.0.0.0/8"}, "http", false},
		{nil, "http", false},
	} {
		next, _ := recorder()
		h, err := TrustProxies(c.cidrs, next)
		if err != nil {
			t.Fatal(err)
		}
		srv := httptest.NewServer(h)
		req, _ := http.NewRequest("GET", srv.URL, nil)
		req.Header.Set("X-Forwarded-For", "203.0.113.9")
		req.Header.Set("X-Forwarded-Proto", "https")
		req.Header.Set("X-Forwarded-Host", "wiki.example.com")
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var s seen
		err = json.NewDecoder(resp.Body).Decode(&s)
		resp.Body.Close()
		srv.Close()
		if err != nil {
			t.Fatal(err)
		}
		if s.Scheme != c.wantScheme || (s.Host == "wiki.example.com") != c.wantHost ||
			(s.RemoteAddr == "203.0.113.9:0") != c.wantHost || len(s.Forwarded) != 0 {
			t.Errorf("trusting %v: saw %+v", c.cidrs, s)
		}
	}
}

func TestTrustProxiesBadCIDR(t *testing.T) {
	if _, err := TrustProxies([]string{"10.0.0.0/99"}, http.NotFoundHandler()); err == nil {
		t.Fatal("accepted a bad CIDR")
	}
}
