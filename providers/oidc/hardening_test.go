package oidc

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/usherhq/usher/providers"
	"github.com/usherhq/usher/providers/oidc/oidctest"
)

// fakeIssuer serves discovery and a JWKS it controls: padded, slowed down
// or with keys added, to test what usher reads from an IdP and how long it
// waits. It signs ID tokens with any of its keys.
type fakeIssuer struct {
	srv *httptest.Server

	mu             sync.Mutex
	keys           map[string]*rsa.PrivateKey // by kid
	published      []string                   // kids in the JWKS
	jwksPadding    int
	discoveryPad   int
	jwksBlock      chan struct{} // when set, JWKS requests wait on it
	jwksRequests   int
	discoveryBytes int
	// down makes the issuer drop every connection unanswered, as a host
	// that is down or unreachable would.
	down              bool
	discoveryRequests int
}

func (f *fakeIssuer) setDown(down bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.down = down
}

func (f *fakeIssuer) counts() (discovery, jwks int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.discoveryRequests, f.jwksRequests
}

func newFakeIssuer(t testing.TB) *fakeIssuer {
	t.Helper()
	f := &fakeIssuer{keys: map[string]*rsa.PrivateKey{}}
	f.addKey(t, "k1", true)
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(func() {
		f.mu.Lock()
		if f.jwksBlock != nil {
			close(f.jwksBlock)
			f.jwksBlock = nil
		}
		f.mu.Unlock()
		f.srv.Close()
	})
	return f
}

func (f *fakeIssuer) issuer() string { return f.srv.URL }

func (f *fakeIssuer) addKey(t testing.TB, kid string, publish bool) {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.keys[kid] = k
	if publish {
		f.published = append(f.published, kid)
	}
}

func (f *fakeIssuer) serve(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	if r.URL.Path == "/.well-known/openid-configuration" {
		f.discoveryRequests++
	}
	if f.down {
		f.mu.Unlock()
		if conn, _, err := http.NewResponseController(w).Hijack(); err == nil {
			conn.Close()
		}
		return
	}
	switch r.URL.Path {
	case "/.well-known/openid-configuration":
		doc := map[string]any{
			"issuer":                                f.issuer(),
			"authorization_endpoint":                f.issuer() + "/authorize",
			"token_endpoint":                        f.issuer() + "/token",
			"jwks_uri":                              f.issuer() + "/jwks",
			"id_token_signing_alg_values_supported": []string{"RS256"},
		}
		if f.discoveryPad > 0 {
			doc["x_padding"] = strings.Repeat("p", f.discoveryPad)
		}
		f.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(doc)
	case "/jwks":
		f.jwksRequests++ // counted only while up
		block := f.jwksBlock
		var set jose.JSONWebKeySet
		for _, kid := range f.published {
			set.Keys = append(set.Keys, jose.JSONWebKey{Key: &f.keys[kid].PublicKey, KeyID: kid, Algorithm: "RS256", Use: "sig"})
		}
		pad := f.jwksPadding
		f.mu.Unlock()
		if block != nil {
			select {
			case <-block:
			case <-r.Context().Done():
				return
			}
		}
		b, _ := json.Marshal(set)
		if pad > 0 {
			b = append(b[:len(b)-1], []byte(`,"x_padding":"`+strings.Repeat("p", pad)+`"}`)...)
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(b)
	default:
		f.mu.Unlock()
		http.NotFound(w, r)
	}
}

func (f *fakeIssuer) sign(t testing.TB, kid string, claims map[string]any) string {
	t.Helper()
	f.mu.Lock()
	k := f.keys[kid]
	f.mu.Unlock()
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: &jose.JSONWebKey{Key: k, KeyID: kid}},
		(&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(claims)
	obj, err := signer.Sign(b)
	if err != nil {
		t.Fatal(err)
	}
	s, err := obj.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func (f *fakeIssuer) claims() map[string]any {
	return map[string]any{
		"iss": f.issuer(), "sub": "sub-alice", "aud": clientID, "nonce": "n-1",
		"iat": testNow.Unix(), "exp": testNow.Add(5 * time.Minute).Unix(),
	}
}

func (f *fakeIssuer) open(t testing.TB, client *http.Client) (*Provider, error) {
	t.Helper()
	c := &Config{Issuer: f.issuer(), ClientID: clientID, Now: func() time.Time { return testNow }}
	pu, _ := url.Parse(publicURL)
	p, err := c.Open(context.Background(), "a", providers.Deps{PublicURL: pu, Client: client})
	if err != nil {
		return nil, err
	}
	return p.(*Provider), nil
}

// TestIssuedInTheFuture: an ID token is refused when its iat lies beyond
// the clock skew, however far ahead, and accepted within it.
func TestIssuedInTheFuture(t *testing.T) {
	t.Parallel()
	f := newFakeIssuer(t)
	p, err := f.open(t, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		iat  time.Time
		nbf  time.Time
		ok   bool
	}{
		{"now", testNow, time.Time{}, true},
		{"within skew", testNow.Add(defaultSkew), time.Time{}, true},
		{"beyond skew", testNow.Add(defaultSkew + time.Second), time.Time{}, false},
		{"a day ahead", testNow.Add(24 * time.Hour), time.Time{}, false},
		{"nbf a day ahead", testNow, testNow.Add(24 * time.Hour), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := f.claims()
			c["iat"] = tc.iat.Unix()
			c["exp"] = tc.iat.Add(time.Hour).Unix()
			if !tc.nbf.IsZero() {
				c["nbf"] = tc.nbf.Unix()
			}
			_, _, err := p.verifyIDToken(context.Background(), f.sign(t, "k1", c), "n-1")
			if tc.ok {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			wantRefused(t, err, "")
			if got := providers.ReasonOf(err); got != providers.ReasonExpired {
				t.Fatalf("reason = %q, want expired", got)
			}
		})
	}
}

// TestBoundedDiscovery: a discovery document past 256 KiB is not read.
func TestBoundedDiscovery(t *testing.T) {
	t.Parallel()
	f := newFakeIssuer(t)
	f.discoveryPad = maxDiscoveryBytes
	p, err := f.open(t, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if err := p.Available(); !errors.Is(err, providers.ErrUnavailable) || !strings.Contains(err.Error(), "larger than") {
		t.Fatalf("Open with a %d-byte discovery document: Available() = %v", maxDiscoveryBytes, err)
	}
	f.mu.Lock()
	f.discoveryPad = 200 << 10
	f.mu.Unlock()
	if _, err := f.open(t, nil); err != nil {
		t.Fatalf("200 KiB discovery document: %v", err)
	}
}

// TestBoundedJWKS: a 5 MiB JWKS is refused as a technical failure, not
// read whole and used.
func TestBoundedJWKS(t *testing.T) {
	t.Parallel()
	f := newFakeIssuer(t)
	f.jwksPadding = 5 << 20
	p, err := f.open(t, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = p.verifyIDToken(context.Background(), f.sign(t, "k1", f.claims()), "n-1")
	if err == nil || errors.Is(err, providers.ErrRefused) || !strings.Contains(err.Error(), "larger than") {
		t.Fatalf("err = %v, want a technical error naming the bound", err)
	}

	f.mu.Lock()
	f.jwksPadding = 900 << 10 // large, but within the bound
	f.mu.Unlock()
	if _, _, err := p.verifyIDToken(context.Background(), f.sign(t, "k1", f.claims()), "n-1"); err != nil {
		t.Fatalf("900 KiB JWKS: %v", err)
	}
}

// TestSlowJWKS: when a token names a key usher has not cached and the JWKS
// endpoint hangs, the login gives up after the key fetch timeout (here
// the IdP client has no timeout at all), and tokens signed with cached
// keys still verify meanwhile.
func TestSlowJWKS(t *testing.T) {
	t.Parallel()
	f := newFakeIssuer(t)
	p, err := f.open(t, &http.Client{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, _, err := p.verifyIDToken(ctx, f.sign(t, "k1", f.claims()), "n-1"); err != nil {
		t.Fatal(err) // caches k1
	}
	f.addKey(t, "k2", true)
	f.mu.Lock()
	f.jwksBlock = make(chan struct{})
	f.mu.Unlock()

	type result struct {
		err error
		d   time.Duration
	}
	done := make(chan result, 1)
	go func() {
		start := time.Now()
		_, _, err := p.verifyIDToken(ctx, f.sign(t, "k2", f.claims()), "n-1")
		done <- result{err, time.Since(start)}
	}()
	select {
	case r := <-done:
		if r.err == nil || errors.Is(r.err, providers.ErrRefused) {
			t.Fatalf("unknown key with a hung JWKS: err = %v, want a technical error", r.err)
		}
		t.Logf("gave up after %s: %v", r.d.Round(time.Millisecond), r.err)
	case <-time.After(30 * time.Second):
		t.Fatal("login still waiting for the JWKS after 30s")
	}

	// A cached key needs no fetch, so the hung endpoint does not matter.
	if _, _, err := p.verifyIDToken(ctx, f.sign(t, "k1", f.claims()), "n-1"); err != nil {
		t.Fatalf("cached key while the JWKS hangs: %v", err)
	}
}

// TestRefusalReasons checks that each ID token refusal says its reason.
func TestRefusalReasons(t *testing.T) {
	t.Parallel()
	f := newFakeIssuer(t)
	p, err := f.open(t, nil)
	if err != nil {
		t.Fatal(err)
	}
	f.addKey(t, "unpublished", false)
	for _, tc := range []struct {
		name string
		kid  string
		edit func(map[string]any)
		want providers.Reason
	}{
		{"expired", "k1", func(c map[string]any) { c["exp"] = testNow.Add(-time.Hour).Unix() }, providers.ReasonExpired},
		{"wrong audience", "k1", func(c map[string]any) { c["aud"] = "other" }, providers.ReasonAudience},
		{"another issuer", "k1", func(c map[string]any) { c["iss"] = "https://evil.example" }, providers.ReasonAudience},
		{"azp of another client", "k1", func(c map[string]any) { c["azp"] = "other" }, providers.ReasonAudience},
		{"wrong nonce", "k1", func(c map[string]any) { c["nonce"] = "n-2" }, providers.ReasonState},
		{"unknown key", "unpublished", nil, providers.ReasonSignature},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := f.claims()
			if tc.edit != nil {
				tc.edit(c)
			}
			_, _, err := p.verifyIDToken(context.Background(), f.sign(t, tc.kid, c), "n-1")
			wantRefused(t, err, "")
			if got := providers.ReasonOf(err); got != tc.want {
				t.Fatalf("reason = %q, want %q (%v)", got, tc.want, err)
			}
		})
	}
}

// login runs a whole code flow at idp for user and finishes it at p.
func login(t *testing.T, p *Provider, idp *oidctest.IdP, user oidctest.User) (*providers.Result, error) {
	t.Helper()
	ch, err := p.Begin(context.Background(), "flow-"+user.Username, "")
	if err != nil {
		t.Fatal(err)
	}
	jar, _ := cookiejar.New(nil)
	cb, err := idp.Login(&http.Client{Jar: jar}, ch.URL, user.Username, user.Password)
	if err != nil {
		t.Fatal(err)
	}
	return finish(p, cb, ch.State)
}

// TestSubjectClaim: subject_claim names the claim that is the subject
// (Entra's oid), and a token without it is refused.
func TestSubjectClaim(t *testing.T) {
	t.Parallel()
	withOID := oidctest.User{Subject: "pairwise-1", Username: "olga", Password: "pw", Email: "olga@example.com",
		Claims: map[string]any{"oid": "00000000-0000-0000-0000-0000000000aa"}}
	noOID := oidctest.User{Subject: "pairwise-2", Username: "nina", Password: "pw", Email: "nina@example.com"}
	idp := startIdP(t, false)
	idp.SetUser(withOID)
	idp.SetUser(noOID)

	p := openProvider(t, "a", idp, func(c *Config) { c.SubjectClaim = "oid" })
	res, err := login(t, p, idp, withOID)
	if err != nil {
		t.Fatal(err)
	}
	if res.Identity.Subject != "00000000-0000-0000-0000-0000000000aa" {
		t.Fatalf("subject = %q, want the oid", res.Identity.Subject)
	}
	if got := res.Identity.Claim("sub"); got != "pairwise-1" {
		t.Errorf("sub claim = %q, want it kept", got)
	}
	_, err = login(t, p, idp, noOID)
	wantRefused(t, err, `no "oid" claim`)

	// Default: sub.
	p = openProvider(t, "b", idp, nil)
	res, err = login(t, p, idp, withOID)
	if err != nil || res.Identity.Subject != "pairwise-1" {
		t.Fatalf("default subject: %v, %v", res, err)
	}
}

// TestEmailVerified: an address the IdP does not vouch for never leaves
// as the email claim; it stays visible as unverified_email.
func TestEmailVerified(t *testing.T) {
	t.Parallel()
	idp := startIdP(t, false)
	users := map[oidctest.Verification]oidctest.User{}
	for v, name := range map[oidctest.Verification]string{
		oidctest.Verified: "vera", oidctest.Unverified: "mallory", oidctest.NoVerificationClaim: "enid",
	} {
		u := oidctest.User{Subject: "sub-" + name, Username: name, Password: "pw", Email: "alice@example.com", EmailVerified: v}
		idp.SetUser(u)
		users[v] = u
	}
	for _, tc := range []struct {
		name     string
		mode     string
		userinfo bool
		user     oidctest.Verification
		verified bool
	}{
		{"verified", "", false, oidctest.Verified, true},
		{"false", "", false, oidctest.Unverified, false},
		{"false via userinfo", "", true, oidctest.Unverified, false},
		{"no claim", "", false, oidctest.NoVerificationClaim, false},
		{"no claim, assume", EmailVerifiedAssume, false, oidctest.NoVerificationClaim, true},
		{"false, assume", EmailVerifiedAssume, false, oidctest.Unverified, false},
		{"verified, claim", EmailVerifiedClaim, true, oidctest.Verified, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := openProvider(t, "a", idp, func(c *Config) { c.EmailVerified, c.UseUserinfo = tc.mode, tc.userinfo })
			res, err := login(t, p, idp, users[tc.user])
			if err != nil {
				t.Fatal(err)
			}
			email, unverified := res.Identity.Claims["email"], res.Identity.Claims[ClaimUnverifiedEmail]
			want := []string{"alice@example.com"}
			if tc.verified && (!slices.Equal(email, want) || unverified != nil) {
				t.Fatalf("email = %q, unverified_email = %q; want the address as email", email, unverified)
			}
			if !tc.verified && (email != nil || !slices.Equal(unverified, want)) {
				t.Fatalf("email = %q, unverified_email = %q; want it only as unverified_email", email, unverified)
			}
		})
	}
}

func TestCheckEmail(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		verified any
		assume   bool
		keep     bool
	}{
		{true, false, true}, {"true", false, true}, {false, false, false}, {"false", false, false},
		{nil, false, false}, {nil, true, true}, {false, true, false}, {"yes", true, false}, {1, false, false},
	} {
		claims := map[string]any{"email": "a@example.com"}
		if tc.verified != nil {
			claims["email_verified"] = tc.verified
		}
		(&Provider{assumeEmail: tc.assume}).checkEmail(claims)
		_, kept := claims["email"]
		if kept != tc.keep || kept == (claims[ClaimUnverifiedEmail] != nil) {
			t.Errorf("email_verified %#v, assume %v: claims %v, want kept=%v", tc.verified, tc.assume, claims, tc.keep)
		}
	}
}

// TestBrowserGone: when the browser drops the connection while usher
// redeems the code, the failure is the client's, not the IdP's.
func TestBrowserGone(t *testing.T) {
	t.Parallel()
	idp := startIdP(t, false)
	p := openProvider(t, "a", idp, nil)
	state, cb := browse(t, p, idp, "flow-gone")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := p.Finish(ctx, httptest.NewRequest(http.MethodGet, cb, nil).WithContext(ctx), state)
	wantRefused(t, err, "browser went away")
	if got := providers.ReasonOf(err); got != providers.ReasonOther {
		t.Fatalf("reason = %q", got)
	}
}
