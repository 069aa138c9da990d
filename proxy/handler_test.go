package proxy

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"sync/atomic"
	"testing"
	"time"

	"github.com/usherhq/usher/config"
	"github.com/usherhq/usher/jit"
	"github.com/usherhq/usher/providers"
	"github.com/usherhq/usher/session"
)

func TestSafeReturn(t *testing.T) {
	hosts := map[string]bool{"sso.example.com": true, "jira.example.com": true}
	for _, tc := range []struct {
		in, want string
		ok       bool
	}{
		{"", "/", true},
		{"/", "/", true},
		{"/browse/ABC-1?x=1#top", "/browse/ABC-1?x=1#top", true},
		{"/a%20b", "/a%20b", true},
		{"https://jira.example.com/browse/X", "https://jira.example.com/browse/X", true},
		{"HTTPS://JIRA.example.com/x", "https://jira.example.com/x", true},
		{"//evil.example", "", false},
		{"///evil.example", "", false},
		{"/\\evil.example", "", false},
		{"\\\\evil.example", "", false},
		{"/%2F%2Fevil.example", "", false},
		{"/%2f/evil.example", "", false},
		{"/%5Cevil.example", "", false},
		{"/%255C%255Cevil.example", "", false},
		{"/%252F%252Fevil.example", "", false},
		{"https://evil.example/", "", false},
		{"http://jira.example.com/", "", false}, // scheme downgrade
		{"https://jira.example.com@evil.example/", "", false},
		{"https://user@jira.example.com/", "", false},
		{"javascript:alert(1)", "", false},
		{"data:text/html,x", "", false},
		{"relative/path", "", false},
		{"/x\r\nLocation: https://evil.example", "", false},
		{"/x\x00", "", false},
		{" /x", "", false},
		{"/%", "", false},
	} {
		got, err := safeReturn(tc.in, "https", hosts)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("safeReturn(%q) = %q, %v; want %q, ok=%v", tc.in, got, err, tc.want, tc.ok)
		}
	}
}

func TestStripCookies(t *testing.T) {
	prefixes := []string{"__Host-usher_session", "__Host-usher_flow_"}
	for _, tc := range []struct {
		in   []string
		want []string
	}{
		{nil, nil},
		{[]string{"JSESSIONID=1"}, []string{"JSESSIONID=1"}},
		{[]string{"__Host-usher_session=abc"}, nil},
		{[]string{"a=1; __Host-usher_session=abc; b=2"}, []string{"a=1; b=2"}},
		{[]string{"__Host-usher_flow_X=1;__Host-usher_session=2", "seraph=3"}, []string{"seraph=3"}},
		{[]string{"usher_session=not-ours-when-secure"}, []string{"usher_session=not-ours-when-secure"}},
	} {
		h := http.Header{}
		if tc.in != nil {
			h["Cookie"] = append([]string(nil), tc.in...)
		}
		stripCookies(h, prefixes)
		got := h["Cookie"]
		if len(got) != len(tc.want) {
			t.Errorf("stripCookies(%q) = %q, want %q", tc.in, got, tc.want)
			continue
		}
		for i := range got {
			if got[i] != tc.want[i] {
				t.Errorf("stripCookies(%q) = %q, want %q", tc.in, got, tc.want)
			}
		}
	}
}

func TestMatchRoutes(t *testing.T) {
	h := &Handler{apps: []App{
		{Name: "jira-api", Route: config.Route{Host: "jira.example.com", PathPrefix: "/rest"}},
		{Name: "jira", Route: config.Route{Host: "jira.example.com"}},
		{Name: "wiki", Route: config.Route{PathPrefix: "/wiki"}},
		{Name: "root", Route: config.Route{PathPrefix: "/"}},
	}}
	for _, tc := range []struct{ host, path, want string }{
		{"jira.example.com", "/rest/api/2/myself", "jira-api"},
		{"JIRA.example.com:443", "/browse/X", "jira"},
		{"jira.example.com", "/restful", "jira"},
		{"other.example.com", "/wiki", "wiki"},
		{"other.example.com", "/wiki/x", "wiki"},
		{"other.example.com", "/wikipedia", "root"},
	} {
		r := httptest.NewRequest("GET", "http://"+tc.host+tc.path, nil)
		a := h.match(r)
		if a == nil || a.Name != tc.want {
			t.Errorf("match(%s%s) = %v, want %s", tc.host, tc.path, a, tc.want)
		}
	}
	// An app people reach directly (provider only) has no route and is
	// never routed to, though an empty route would match everything.
	direct := &Handler{apps: []App{{Name: "jira-sso", Direct: true}}}
	if a := direct.match(httptest.NewRequest("GET", "http://sso.example.com/x", nil)); a != nil {
		t.Errorf("a direct app was routed to: %v", a.Name)
	}
}

// countingLifecycle admits nobody but counts calls to the lifecycle and
// the audit log, which are what reach the database: the hot path must
// make none.
type countingLifecycle struct {
	calls atomic.Int64
}

func (c *countingLifecycle) Admit(context.Context, providers.Identity, jit.Cause) (*jit.Admission, error) {
	c.calls.Add(1)
	return nil, &jit.AdmitError{Kind: jit.StoreUnavailable}
}

func (c *countingLifecycle) Record(context.Context, ...jit.Entry) error {
	c.calls.Add(1)
	return nil
}

// benchSession is the benchmarks' codec and the session cookie of a
// person with four groups, sealed by it.
func benchSession(b *testing.B) (*session.Codec, *http.Cookie) {
	b.Helper()
	codec, err := session.NewCodec([][]byte{[]byte("0123456789abcdef0123456789abcdef")}, session.Options{
		Name: "usher_session", Secure: true, Idle: 8 * time.Hour, Absolute: 24 * time.Hour,
		Revoker: session.NewRevocations(24*time.Hour, nil),
	})
	if err != nil {
		b.Fatal(err)
	}
	s := codec.NewSession()
	s.IdP, s.Subject, s.Username, s.Email, s.DisplayName = "okta", "00u123", "alice", "alice@example.com", "Alice Archer"
	s.Groups = []string{"jira-users", "jira-developers", "confluence-users", "team-platform"}
	rec := httptest.NewRecorder()
	if err := codec.Save(rec, s); err != nil {
		b.Fatal(err)
	}
	return codec, rec.Result().Cookies()[0]
}

// browserHeaders are a browser's usual request headers, with the session
// cookie beside one of the app's own.
func browserHeaders(h http.Header, cookie *http.Cookie) {
	h.Set("User-Agent", "Mozilla/5.0")
	h.Set("Accept", "text/html,application/xhtml+xml")
	h.Set("Accept-Language", "en-GB,en;q=0.9")
	h.Set("Cookie", cookie.Name+"="+cookie.Value+"; JSESSIONID=1234")
}

// BenchmarkProxy compares a request with a valid session through usher's
// whole public handler (route match, session cookie decryption and
// checks, header stripping and injection) with a bare ReverseProxy, over
// real loopback HTTP. The store counts calls; the hot path must make none.
func BenchmarkProxy(b *testing.B) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "upstream ok")
	}))
	defer up.Close()
	u, _ := url.Parse(up.URL)
	transport := SharedTransport()
	defer transport.CloseIdleConnections()

	codec, cookie := benchSession(b)

	st := &countingLifecycle{}
	public, _ := url.Parse("https://sso.example.com")
	names := testNames
	names.CookiePrefixes = []string{codec.CookieName(), codec.PrefixedName(FlowCookiePrefix)}
	h := New(Options{
		PublicURL: public, Codec: codec, Lifecycle: st, Audit: st, IdPs: benchIdPs,
		Apps: []App{{Name: "jira", Route: config.Route{PathPrefix: "/"}, Forwarder: NewForwarder(u, names, transport, nil)}},
	})
	bare := &httputil.ReverseProxy{
		Rewrite:    func(pr *httputil.ProxyRequest) { pr.SetURL(u); pr.SetXForwarded() },
		Transport:  transport,
		BufferPool: bufferPool{},
	}
	for _, bc := range []struct {
		name string
		h    http.Handler
	}{{"bare", bare}, {"usher", h}} {
		b.Run(bc.name, func(b *testing.B) {
			front := httptest.NewServer(bc.h)
			defer front.Close()
			client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
			req, _ := http.NewRequest("GET", front.URL+"/browse/X-1", nil)
			browserHeaders(req.Header, cookie)
			b.ReportAllocs()
			for b.Loop() {
				resp, err := client.Do(req)
				if err != nil {
					b.Fatal(err)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					b.Fatal(resp.Status)
				}
			}
		})
	}
	if n := st.calls.Load(); n != 0 {
		b.Fatalf("hot path made %d lifecycle or audit calls", n)
	}
}

func TestHasDotSegment(t *testing.T) {
	for p, want := range map[string]bool{
		"/": false, "/jira/browse/X-1": false, "/a..b/c": false, "/.well-known/x": false,
		"/status/../secure": true, "/..": true, "/a/.": true, "/./a": true, "/a//../b": true,
		"/status/..;/secure/admin": true, "/status/..;jsessionid=1/x": true, "/status/.;x/y": true, "/a;b/c": false,
	} {
		if got := hasDotSegment(p); got != want {
			t.Errorf("hasDotSegment(%q) = %v, want %v", p, got, want)
		}
	}
}

// cannedTransport answers every request with the same small response,
// without a network, so BenchmarkHotPath sees only usher's own work.
type cannedTransport struct{ body []byte }

func (c cannedTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	return &http.Response{
		StatusCode: 200, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header:        http.Header{"Content-Type": {"text/html"}, "Content-Length": {"11"}},
		ContentLength: int64(len(c.body)), Body: io.NopCloser(bytes.NewReader(c.body)), Request: r,
	}, nil
}

// benchIdPs configure the IdP the benchmarks' sessions come from: a
// session of an IdP no longer configured is sent to the login.
var benchIdPs = []IdP{{Provider: &stubIdP{typ: "oidc", id: providers.Identity{IdP: "okta"}}, Name: "Okta"}}

type nullWriter struct {
	h      http.Header
	status int
}

func (w *nullWriter) Header() http.Header         { return w.h }
func (w *nullWriter) Write(b []byte) (int, error) { return len(b), nil }
func (w *nullWriter) WriteHeader(code int)        { w.status = code }

// BenchmarkHotPath is a request with a valid session through usher's
// public handler, with the upstream round trip replaced by a canned
// answer: routing, session, header work, ReverseProxy, metrics. Its
// allocs/op are usher's (and ReverseProxy's) alone; the lifecycle and
// audit log count calls and the hot path must make none.
func BenchmarkHotPath(b *testing.B) {
	codec, cookie := benchSession(b)
	st := &countingLifecycle{}
	names := testNames
	names.CookiePrefixes = []string{codec.CookieName(), codec.PrefixedName(FlowCookiePrefix)}
	u, _ := url.Parse("http://jira.internal:8080")
	public, _ := url.Parse("https://sso.example.com")
	h := New(Options{
		PublicURL: public, Codec: codec, Lifecycle: st, Audit: st, IdPs: benchIdPs,
		Apps: []App{{Name: "jira", Route: config.Route{PathPrefix: "/"}, Forwarder: NewForwarder(u, names, cannedTransport{[]byte("upstream ok")}, nil)}},
	})
	req := httptest.NewRequest("GET", "https://jira.example.com/browse/X-1", nil)
	browserHeaders(req.Header, cookie)
	hdr := req.Header
	w := &nullWriter{h: http.Header{}}
	b.ReportAllocs()
	for b.Loop() {
		req.Header = hdr.Clone() // the server hands every request a fresh header
		clear(w.h)
		w.status = 0
		h.ServeHTTP(w, req)
		if w.status != 0 && w.status != http.StatusOK {
			b.Fatalf("hot path answered %d, want the upstream's 200", w.status)
		}
	}
	if n := st.calls.Load(); n != 0 {
		b.Fatalf("hot path made %d lifecycle or audit calls", n)
	}
}
