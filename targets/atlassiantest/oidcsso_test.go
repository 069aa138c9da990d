package atlassiantest

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// fakeOP is a minimal OpenID Provider whose answers a test shapes, to
// check the emulated client's own rules (reference §5–§11, test plan §19).
type fakeOP struct {
	srv  *httptest.Server
	key  *ecdsa.PrivateKey
	mu   sync.Mutex
	disc map[string]any
	// claims builds the ID token's claims from the nonce the client sent.
	claims   func(nonce string) map[string]any
	userinfo map[string]any
	basic    [2]string // the Basic credentials last received, decoded
	nonce    string
}

func newFakeOP(t *testing.T) *fakeOP {
	f := &fakeOP{}
	f.key, _ = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.srv.Close)
	iss := f.srv.URL + "/op"
	f.disc = map[string]any{
		"issuer": iss, "authorization_endpoint": iss + "/authorize", "token_endpoint": iss + "/token",
		"userinfo_endpoint": iss + "/userinfo", "jwks_uri": iss + "/keys", "subject_types_supported": []string{"public"},
	}
	return f
}

func (f *fakeOP) serve(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	switch r.URL.Path {
	case "/op/.well-known/openid-configuration":
		_ = json.NewEncoder(w).Encode(f.disc)
	case "/op/token":
		u, p, _ := r.BasicAuth()
		f.basic[0], _ = url.QueryUnescape(u)
		f.basic[1], _ = url.QueryUnescape(p)
		sig, _ := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: f.key}, nil)
		b, _ := json.Marshal(f.claims(f.nonce))
		jws, _ := sig.Sign(b)
		tok, _ := jws.CompactSerialize()
		_ = json.NewEncoder(w).Encode(map[string]any{"access_token": "at", "token_type": "bearer", "id_token": tok})
	case "/op/userinfo":
		_ = json.NewEncoder(w).Encode(f.userinfo)
	default:
		http.NotFound(w, r)
	}
}

// login runs one SSO login and returns the callback's status and the
// emulator's last error ("" when none was added).
func (f *fakeOP) login(t *testing.T, s *Server, app string) (int, string) {
	t.Helper()
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.Get(app + "/plugins/servlet/external-login/1")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	az, _ := url.Parse(resp.Header.Get("Location"))
	f.mu.Lock()
	f.nonce = az.Query().Get("nonce")
	f.mu.Unlock()
	before := len(s.SSOErrors())
	resp, err = c.Get(app + "/plugins/servlet/oidc/callback?" + url.Values{"code": {"c"}, "state": {az.Query().Get("state")}}.Encode())
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if errs := s.SSOErrors(); len(errs) > before {
		return resp.StatusCode, errs[len(errs)-1]
	}
	return resp.StatusCode, ""
}

func TestSSOClientRules(t *testing.T) {
	t.Parallel()
	base := func(f *fakeOP, nonce string) map[string]any {
		now := time.Now().Unix()
		return map[string]any{"iss": f.disc["issuer"], "sub": "s-1", "aud": "jira id", "exp": now + 300, "iat": now, "nonce": nonce, "preferred_username": "alice"}
	}
	for _, tc := range []struct {
		name    string
		mod     func(c map[string]any)
		userExp string
		info    map[string]any
		want    string // "" = signed in
	}{
		{name: "valid", want: ""},
		{name: "issuer with a trailing slash", mod: func(c map[string]any) { c["iss"] = c["iss"].(string) + "/" }, want: "Unexpected JWT issuer"},
		{name: "no sub", mod: func(c map[string]any) { delete(c, "sub") }, want: "missing required claims: [sub]"},
		{name: "other audience", mod: func(c map[string]any) { c["aud"] = "other" }, want: "Unexpected JWT audience"},
		{name: "several audiences without azp", mod: func(c map[string]any) { c["aud"] = []string{"jira id", "other"} }, want: "azp) claim required"},
		{name: "several audiences, azp is the client", mod: func(c map[string]any) { c["aud"] = []string{"jira id", "other"}; c["azp"] = "jira id" }, want: ""},
		{name: "expired beyond the skew", mod: func(c map[string]any) { c["exp"] = time.Now().Add(-61 * time.Second).Unix() }, want: "Expired JWT"},
		{name: "expired within the skew", mod: func(c map[string]any) { c["exp"] = time.Now().Add(-50 * time.Second).Unix() }, want: ""},
		{name: "issued in the future", mod: func(c map[string]any) { c["iat"] = time.Now().Add(2 * time.Minute).Unix() }, want: "issue time ahead"},
		{name: "nonce of another login", mod: func(c map[string]any) { c["nonce"] = "replayed" }, want: "Unexpected JWT nonce"},
		{name: "no nonce", mod: func(c map[string]any) { delete(c, "nonce") }, want: "Missing JWT nonce"},
		{name: "numeric username claim", mod: func(c map[string]any) { c["preferred_username"] = 42 }, want: "not a string"},
		{name: "username from userinfo", mod: func(c map[string]any) { delete(c, "preferred_username") }, info: map[string]any{"preferred_username": "alice"}, want: ""},
		{name: "username nowhere", mod: func(c map[string]any) { delete(c, "preferred_username") }, info: map[string]any{"sub": "s-1"}, want: "Couldn't find claim representing username"},
		{name: "bare claim name is literal", userExp: "preferred_username", want: "user preferred_username, but the user does not exist"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newFakeOP(t)
			f.claims = func(nonce string) map[string]any {
				c := base(f, nonce)
				if tc.mod != nil {
					tc.mod(c)
				}
				return c
			}
			f.userinfo = tc.info
			s := New(Jira, Options{Users: []User{{Name: "alice", Active: true, Groups: []string{"jira-software-users"}}}})
			app := httptest.NewServer(s)
			t.Cleanup(app.Close)
			exp := "${preferred_username}"
			if tc.userExp != "" {
				exp = tc.userExp
			}
			if err := s.EnableSSO(context.Background(), SSO{BaseURL: app.URL, IssuerURL: f.disc["issuer"].(string), ClientID: "jira id", ClientSecret: "p@ss word", UsernameClaim: exp}); err != nil {
				t.Fatal(err)
			}
			status, msg := f.login(t, s, app.URL)
			if tc.want == "" {
				if status != http.StatusFound || msg != "" {
					t.Fatalf("status %d, error %q: want a sign-in", status, msg)
				}
				if f.basic != [2]string{"jira id", "p@ss word"} {
					t.Errorf("Basic credentials decoded to %q", f.basic)
				}
				return
			}
			if status != http.StatusBadRequest || !strings.Contains(msg, tc.want) {
				t.Fatalf("status %d, error %q: want 400 %q", status, msg, tc.want)
			}
		})
	}
}

func TestSSODiscoveryRules(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		mod    func(f *fakeOP)
		issuer func(f *fakeOP) string
		want   string
	}{
		{name: "no userinfo_endpoint", mod: func(f *fakeOP) { delete(f.disc, "userinfo_endpoint") }, want: "userinfo_endpoint"},
		{name: "no subject types", mod: func(f *fakeOP) { delete(f.disc, "subject_types_supported") }, want: "subject_types_supported"},
		{name: "issuer differs", mod: func(f *fakeOP) { f.disc["issuer"] = "https://elsewhere" }, want: "doesn't match"},
		{name: "configured with a trailing slash", issuer: func(f *fakeOP) string { return f.disc["issuer"].(string) + "/" }, want: ""},
		{name: "issuer with a query", issuer: func(f *fakeOP) string { return f.disc["issuer"].(string) + "?x=1" }, want: "query"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newFakeOP(t)
			iss := f.disc["issuer"].(string)
			if tc.issuer != nil {
				iss = tc.issuer(f)
			}
			if tc.mod != nil {
				tc.mod(f)
			}
			err := New(Jira, Options{}).EnableSSO(context.Background(), SSO{BaseURL: "https://jira.example.test", IssuerURL: iss, ClientID: "c"})
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("discovery: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("discovery error %v, want %q", err, tc.want)
			}
		})
	}
}

// TestSSOStateSingleUse: the callback needs the marker cookie and the
// cached state, once, within 300 s (§7).
func TestSSOStateSingleUse(t *testing.T) {
	t.Parallel()
	f := newFakeOP(t)
	f.claims = func(nonce string) map[string]any {
		now := time.Now().Unix()
		return map[string]any{"iss": f.disc["issuer"], "sub": "s", "aud": "c", "exp": now + 60, "iat": now, "nonce": nonce}
	}
	s := New(Jira, Options{Users: []User{{Name: "s", Active: true, Groups: []string{"jira-software-users"}}}})
	app := httptest.NewServer(s)
	t.Cleanup(app.Close)
	if err := s.EnableSSO(context.Background(), SSO{BaseURL: app.URL, IssuerURL: f.disc["issuer"].(string), ClientID: "c"}); err != nil {
		t.Fatal(err)
	}
	// Without the marker cookie (another browser): refused.
	noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, _ := noFollow.Get(app.URL + "/plugins/servlet/external-login/1")
	loc, _ := url.Parse(resp.Header.Get("Location"))
	resp, _ = noFollow.Get(app.URL + "/plugins/servlet/oidc/callback?code=c&state=" + loc.Query().Get("state"))
	if errs := s.SSOErrors(); resp.StatusCode != http.StatusBadRequest || !strings.Contains(errs[len(errs)-1], "Unknown state") {
		t.Fatalf("callback without the marker cookie: %d", resp.StatusCode)
	}
	// POST to the callback: GET only.
	resp, _ = http.Post(app.URL+"/plugins/servlet/oidc/callback", "application/x-www-form-urlencoded", strings.NewReader("code=c&state=x"))
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Fatalf("POST callback: %d", resp.StatusCode)
	}
	// The IdP's error is shown, not followed.
	resp, _ = noFollow.Get(app.URL + "/plugins/servlet/oidc/callback?error=access_denied&state=x")
	if errs := s.SSOErrors(); resp.StatusCode != http.StatusBadRequest || !strings.Contains(errs[len(errs)-1], `Error when fetching authorization response. Error: {"error":"access_denied"`) {
		t.Fatalf("error response: %d %v", resp.StatusCode, s.SSOErrors())
	}
	// Unknown IdP ids.
	for path, want := range map[string]int{"/plugins/servlet/external-login/2": 404, "/plugins/servlet/external-login/x": 400} {
		resp, _ = noFollow.Get(app.URL + path)
		if resp.StatusCode != want {
			t.Errorf("%s: %d, want %d", path, resp.StatusCode, want)
		}
	}
}
