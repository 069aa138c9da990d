package rest_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/jonboulle/clockwork"

	"github.com/usherhq/usher/directory/rest"
)

var t0 = time.Date(2025, 3, 1, 9, 0, 0, 0, time.UTC)

func TestRetryAfter(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"", 0, false},
		{"7", 7 * time.Second, true},
		{" 12 ", 12 * time.Second, true},
		{"0", 0, false},
		{"-3", 0, false},
		{"999999999", time.Hour, true},
		{t0.Add(90 * time.Second).Format(http.TimeFormat), 90 * time.Second, true},
		{t0.Add(-time.Minute).Format(http.TimeFormat), 0, false},
		{"soon", 0, false},
	}
	for _, tt := range tests {
		h := http.Header{}
		if tt.in != "" {
			h.Set("Retry-After", tt.in)
		}
		got, ok := rest.RetryAfter(h, t0)
		if got != tt.want || ok != tt.ok {
			t.Errorf("RetryAfter(%q) = %s, %v; want %s, %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
}

func TestCheckBaseURL(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in string
		ok bool
	}{
		{"https://graph.microsoft.com", true},
		{"https://example.okta.com/", true},
		{"http://127.0.0.1:8080", true},
		{"http://[::1]:8080", true},
		{"http://localhost:1", true},
		{"http://graph.microsoft.com", false},
		{"ftp://x", false},
		{"graph.microsoft.com", false},
		{"https://x/?a=b", false},
		{"https://user:pw@x/", false},
	}
	for _, tt := range tests {
		if err := rest.CheckBaseURL(tt.in); (err == nil) != tt.ok {
			t.Errorf("CheckBaseURL(%q) = %v, want ok=%v", tt.in, err, tt.ok)
		}
	}
}

// driveClock advances clock a second at a time whenever something waits
// on it, until stop is closed; it returns the fake time advanced.
func driveClock(clock *clockwork.FakeClock, stop <-chan struct{}) <-chan time.Duration {
	out := make(chan time.Duration, 1)
	go func() {
		var total time.Duration
		for {
			ctx, cancel := context.WithCancel(context.Background())
			w := make(chan error, 1)
			go func() { w <- clock.BlockUntilContext(ctx, 1) }()
			select {
			case <-stop:
				cancel()
				out <- total
				return
			case <-w:
				cancel()
				clock.Advance(time.Second)
				total += time.Second
			}
		}
	}()
	return out
}

type observed struct {
	mu sync.Mutex
	n  map[string]int
}

func (o *observed) Observe(op, result string, _ time.Duration) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.n == nil {
		o.n = map[string]int{}
	}
	o.n[result]++
}

func (o *observed) get(result string) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.n[result]
}

func newClient(t *testing.T, srv *httptest.Server, clock clockwork.Clock, mod func(*rest.Config)) (*rest.Client, *observed) {
	t.Helper()
	u, _ := url.Parse(srv.URL)
	obs := &observed{}
	cfg := rest.Config{Service: "test", Origin: u, HTTP: srv.Client(), Clock: clock, Observe: obs.Observe, Timeout: 5 * time.Second}
	if mod != nil {
		mod(&cfg)
	}
	c, err := rest.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c, obs
}

func TestDoRetriesThrottlingWithHint(t *testing.T) {
	t.Parallel()
	clock := clockwork.NewFakeClockAt(t0)
	var n atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch n.Add(1) {
		case 1:
			w.Header().Set("Retry-After", "5")
			w.WriteHeader(429)
		case 2:
			w.Header().Set("Retry-After", clock.Now().Add(10*time.Second).Format(http.TimeFormat))
			w.WriteHeader(503)
		default:
			fmt.Fprint(w, `{"ok":true}`)
		}
	}))
	defer srv.Close()
	c, obs := newClient(t, srv, clock, nil)
	stop := make(chan struct{})
	waited := driveClock(clock, stop)
	var out struct{ OK bool }
	_, err := c.GetJSON(context.Background(), "thing", srv.URL+"/x", nil, nil, &out)
	close(stop)
	w := <-waited
	if err != nil || !out.OK {
		t.Fatalf("GetJSON = %v, %+v", err, out)
	}
	if w < 15*time.Second || w > 17*time.Second {
		t.Errorf("waited %s on the clock, want the 5s + 10s the server asked for", w)
	}
	if obs.get("throttled") != 1 || obs.get("error") != 1 || obs.get("ok") != 1 {
		t.Errorf("observed %v, want one each of throttled, error, ok", obs.n)
	}
}

func TestDoBudgetCapsWaiting(t *testing.T) {
	t.Parallel()
	clock := clockwork.NewFakeClockAt(t0)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Retry-After", "40")
		w.WriteHeader(429)
	}))
	defer srv.Close()
	c, _ := newClient(t, srv, clock, nil)
	stop := make(chan struct{})
	waited := driveClock(clock, stop)
	_, err := c.Do(context.Background(), rest.Request{Op: "x", URL: srv.URL, Budget: rest.NewBudget(time.Minute)})
	close(stop)
	w := <-waited
	var re *rest.Error
	if !errors.As(err, &re) || !re.Throttled || re.Status != 429 {
		t.Fatalf("Do = %v, want a throttled *rest.Error", err)
	}
	if w != 40*time.Second {
		t.Errorf("waited %s, want 40s (one wait fits the 1m budget, a second does not)", w)
	}
}

func TestDoDoesNotRetryClientErrors(t *testing.T) {
	t.Parallel()
	var n atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		w.WriteHeader(403)
		fmt.Fprint(w, `{"error":"denied"}`)
	}))
	defer srv.Close()
	c, _ := newClient(t, srv, nil, nil)
	_, err := c.Do(context.Background(), rest.Request{Op: "x", URL: srv.URL})
	if rest.StatusOf(err) != 403 || n.Load() != 1 {
		t.Errorf("Do = %v after %d calls, want one 403", err, n.Load())
	}
}

func TestDoRetriesTruncatedBody(t *testing.T) {
	t.Parallel()
	clock := clockwork.NewFakeClockAt(t0)
	var n atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1) == 1 {
			w.Header().Set("Content-Length", "100")
			fmt.Fprint(w, `{"ok":`)
			return // the server closes the connection short of 100 bytes
		}
		fmt.Fprint(w, `{"ok":true}`)
	}))
	defer srv.Close()
	c, _ := newClient(t, srv, clock, nil)
	stop := make(chan struct{})
	waited := driveClock(clock, stop)
	var out struct{ OK bool }
	_, err := c.GetJSON(context.Background(), "x", srv.URL, nil, nil, &out)
	close(stop)
	<-waited
	if err != nil || !out.OK || n.Load() != 2 {
		t.Errorf("GetJSON = %v, %+v after %d calls; want success on the second", err, out, n.Load())
	}
}

func TestDoRefusesLargeBodies(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, `{"value":"`+string(make([]byte, 2000))+`"}`)
	}))
	defer srv.Close()
	c, _ := newClient(t, srv, nil, func(c *rest.Config) { c.MaxBody = 1000 })
	_, err := c.Do(context.Background(), rest.Request{Op: "x", URL: srv.URL})
	if err == nil {
		t.Fatal("a body over MaxBody was accepted")
	}
}

func TestDoPinsOrigin(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t.Errorf("request reached the server: %s", r.URL)
	}))
	defer srv.Close()
	c, _ := newClient(t, srv, nil, nil)
	for _, u := range []string{"https://evil.example/steal", "http://127.0.0.2:1/x", "https" + srv.URL[4:]} {
		if _, err := c.Do(context.Background(), rest.Request{Op: "x", URL: u}); err == nil {
			t.Errorf("Do(%s) = nil, want a refusal", u)
		}
	}
}

func TestDoRefreshesOnceOn401(t *testing.T) {
	t.Parallel()
	var issued, calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		if r.Header.Get("Authorization") != "Bearer tok2" {
			w.WriteHeader(401)
			return
		}
		fmt.Fprint(w, `{}`)
	}))
	defer srv.Close()
	cache := rest.NewTokenCache(func(context.Context) (rest.Token, error) {
		n := issued.Add(1)
		return rest.Token{AccessToken: "tok" + strconv.Itoa(int(n)), Expiry: time.Now().Add(time.Hour)}, nil
	}, nil)
	c, _ := newClient(t, srv, nil, func(c *rest.Config) { c.Auth = cache })
	if _, err := c.Do(context.Background(), rest.Request{Op: "x", URL: srv.URL}); err != nil {
		t.Fatalf("Do = %v, want success after one refresh", err)
	}
	if issued.Load() != 2 || calls.Load() != 2 {
		t.Errorf("%d tokens, %d calls; want 2 and 2", issued.Load(), calls.Load())
	}
	// A server that refuses every token gets one refresh, not a loop.
	calls.Store(0)
	srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		w.WriteHeader(401)
	})
	_, err := c.Do(context.Background(), rest.Request{Op: "x", URL: srv.URL})
	if rest.StatusOf(err) != 401 || calls.Load() != 2 {
		t.Errorf("Do = %v after %d calls, want 401 after 2", err, calls.Load())
	}
}

func TestTokenCacheRenewsBeforeExpiry(t *testing.T) {
	t.Parallel()
	clock := clockwork.NewFakeClockAt(t0)
	var fetches atomic.Int32
	cache := rest.NewTokenCache(func(context.Context) (rest.Token, error) {
		fetches.Add(1)
		return rest.Token{AccessToken: "t", Expiry: clock.Now().Add(time.Hour)}, nil
	}, clock)
	ctx := context.Background()
	var wg sync.WaitGroup
	for range 10 {
		wg.Go(func() {
			if _, err := cache.Token(ctx); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if fetches.Load() != 1 {
		t.Fatalf("%d fetches for 10 concurrent callers, want 1", fetches.Load())
	}
	clock.Advance(54 * time.Minute)
	cache.Token(ctx)
	if fetches.Load() != 1 {
		t.Errorf("token renewed 6 minutes before expiry, want at 5")
	}
	clock.Advance(2 * time.Minute)
	cache.Token(ctx)
	if fetches.Load() != 2 {
		t.Errorf("token not renewed 4 minutes before expiry")
	}
}

func TestClientCredentials(t *testing.T) {
	t.Parallel()
	key, _ := rsa.GenerateKey(rand.Reader, 2048)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "usher"}, NotBefore: t0.Add(-time.Hour), NotAfter: t0.Add(time.Hour)}
	der, _ := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	cert, _ := x509.ParseCertificate(der)
	clock := clockwork.NewFakeClockAt(t0)

	var got map[string]string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.ParseForm()
		got = map[string]string{}
		for k := range r.PostForm {
			got[k] = r.PostForm.Get(k)
		}
		if u, p, ok := r.BasicAuth(); ok {
			got["basic"] = u + ":" + p
		}
		if got["client_secret"] == "wrong" {
			w.WriteHeader(401)
			fmt.Fprint(w, `{"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret provided.","error_codes":[7000215]}`)
			return
		}
		fmt.Fprint(w, `{"token_type":"Bearer","expires_in":"3599","access_token":"abc"}`)
	}))
	defer srv.Close()
	tc, _ := newClient(t, srv, clock, nil)
	tokenURL := srv.URL + "/tenant/oauth2/v2.0/token"

	cc := &rest.ClientCredentials{Client: tc, TokenURL: tokenURL, ClientID: "app", Secret: "s3cret", Scope: "https://graph.microsoft.com/.default"}
	tok, err := cc.Fetch(context.Background())
	if err != nil || tok.AccessToken != "abc" || !tok.Expiry.Equal(t0.Add(3599*time.Second)) {
		t.Fatalf("Fetch = %+v, %v", tok, err)
	}
	if got["grant_type"] != "client_credentials" || got["client_secret"] != "s3cret" || got["scope"] != "https://graph.microsoft.com/.default" {
		t.Errorf("secret form = %v", got)
	}

	cc.Secret = "wrong"
	_, err = cc.Fetch(context.Background())
	var oe *rest.OAuthError
	if !errors.As(err, &oe) || oe.Code != "invalid_client" {
		t.Errorf("Fetch(wrong secret) = %v, want an *OAuthError invalid_client", err)
	}

	cc.Secret, cc.BasicAuth = "a:b&c", true
	if _, err := cc.Fetch(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got["basic"] != "app:a%3Ab%26c" || got["client_secret"] != "" {
		t.Errorf("basic form = %v", got)
	}

	cc.BasicAuth = false
	cc.Assertion = &rest.Assertion{Key: key, Alg: jose.PS256, Cert: cert, Thumbprint: "x5t#S256"}
	if _, err := cc.Fetch(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got["client_assertion_type"] != "urn:ietf:params:oauth:client-assertion-type:jwt-bearer" || got["client_secret"] != "" || got["client_id"] != "app" {
		t.Errorf("assertion form = %v", got)
	}
	tokJWT, err := jwt.ParseSigned(got["client_assertion"], []jose.SignatureAlgorithm{jose.PS256})
	if err != nil {
		t.Fatal(err)
	}
	var claims jwt.Claims
	if err := tokJWT.Claims(&key.PublicKey, &claims); err != nil {
		t.Fatalf("assertion signature: %v", err)
	}
	if err := claims.ValidateWithLeeway(jwt.Expected{Issuer: "app", Subject: "app", AnyAudience: jwt.Audience{tokenURL}, Time: t0}, 0); err != nil {
		t.Errorf("assertion claims: %v", err)
	}
	if claims.ID == "" || claims.Expiry.Time().Sub(t0) != 5*time.Minute {
		t.Errorf("assertion jti %q, exp %s", claims.ID, claims.Expiry.Time())
	}
	sum := sha256.Sum256(cert.Raw)
	if h := tokJWT.Headers[0].ExtraHeaders["x5t#S256"]; h != base64.RawURLEncoding.EncodeToString(sum[:]) {
		t.Errorf("x5t#S256 header = %v", h)
	}
}

func TestParsePrivateKey(t *testing.T) {
	t.Parallel()
	rk, _ := rsa.GenerateKey(rand.Reader, 2048)
	ek, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	p8, _ := x509.MarshalPKCS8PrivateKey(ek)
	sec1, _ := x509.MarshalECPrivateKey(ek)
	for name, text := range map[string]string{
		"pkcs1": string(pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(rk)})),
		"pkcs8": "junk\n" + string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: p8})),
		"sec1":  string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: sec1})),
	} {
		k, err := rest.ParsePrivateKey(text)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if _, err := rest.DefaultAlg(k); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	for name, text := range map[string]string{
		"empty":     "",
		"cert only": "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
		"encrypted": "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n",
		"garbage":   "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
	} {
		if _, err := rest.ParsePrivateKey(text); err == nil {
			t.Errorf("%s: parsed", name)
		}
	}
}

func TestDoJudgeReadsTheBody(t *testing.T) {
	t.Parallel()
	clock := clockwork.NewFakeClockAt(t0)
	var n atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch n.Add(1) {
		case 1:
			w.WriteHeader(403)
			fmt.Fprint(w, `{"reason":"slow down"}`)
		case 2:
			w.WriteHeader(403)
			fmt.Fprint(w, `{"reason":"forbidden"}`)
		default:
			fmt.Fprint(w, `{}`)
		}
	}))
	defer srv.Close()
	judge := func(status int, _ http.Header, body []byte, _ time.Time) (bool, bool, time.Duration) {
		if status == 403 && strings.Contains(string(body), "slow down") {
			return true, true, 3 * time.Second
		}
		return false, false, 0
	}
	c, obs := newClient(t, srv, clock, func(c *rest.Config) { c.Judge = judge })
	stop := make(chan struct{})
	waited := driveClock(clock, stop)
	_, err := c.Do(context.Background(), rest.Request{Op: "x", URL: srv.URL})
	close(stop)
	w := <-waited
	// The quota 403 is waited out and counted as a throttle; the other
	// 403 is final.
	if rest.StatusOf(err) != 403 || n.Load() != 2 {
		t.Fatalf("Do = %v after %d calls, want the second (plain) 403", err, n.Load())
	}
	if w != 3*time.Second {
		t.Errorf("waited %s, want the 3s the judge read", w)
	}
	if obs.get("throttled") != 1 || obs.get("error") != 1 {
		t.Errorf("observed %v, want one throttled and one error", obs.n)
	}
}

func TestClientCredentialsJSON(t *testing.T) {
	t.Parallel()
	var got map[string]string
	var ctype, basic string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctype = r.Header.Get("Content-Type")
		u, p, _ := r.BasicAuth()
		basic = u + ":" + p
		got = nil
		json.NewDecoder(r.Body).Decode(&got)
		if p == "wrong" {
			w.WriteHeader(401)
			fmt.Fprint(w, `{"status":{"error":true,"code":401,"type":"Unauthorized","message":"Authentication Failure"}}`)
			return
		}
		fmt.Fprint(w, `{"access_token":"abc","token_type":"bearer","expires_in":36000}`)
	}))
	defer srv.Close()
	clock := clockwork.NewFakeClockAt(t0)
	tc, _ := newClient(t, srv, clock, nil)
	envelope := errors.New("decoded by the service")
	cc := &rest.ClientCredentials{Client: tc, TokenURL: srv.URL + "/auth/oauth2/v2/token", ClientID: "id", Secret: "s3cret",
		BasicAuth: true, JSON: true, Decode: func(int, http.Header, []byte) error { return envelope }}
	tok, err := cc.Fetch(context.Background())
	if err != nil || tok.AccessToken != "abc" || !tok.Expiry.Equal(t0.Add(10*time.Hour)) {
		t.Fatalf("Fetch = %+v, %v", tok, err)
	}
	if ctype != "application/json" || basic != "id:s3cret" || len(got) != 1 || got["grant_type"] != "client_credentials" {
		t.Errorf("request: %s, basic %q, body %v", ctype, basic, got)
	}
	cc.Secret = "wrong"
	if _, err := cc.Fetch(context.Background()); !errors.Is(err, envelope) {
		t.Errorf("Fetch(wrong) = %v, want the service's decoding", err)
	}
}

func TestJWTBearer(t *testing.T) {
	t.Parallel()
	key, _ := rsa.GenerateKey(rand.Reader, 2048)
	var form url.Values
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.ParseForm()
		form = r.PostForm
		if _, _, ok := r.BasicAuth(); ok {
			t.Error("a JWT bearer grant carries no client authentication")
		}
		fmt.Fprint(w, `{"access_token":"ya29.x","expires_in":3599,"token_type":"Bearer"}`)
	}))
	defer srv.Close()
	clock := clockwork.NewFakeClockAt(t0)
	tc, _ := newClient(t, srv, clock, nil)
	jb := &rest.JWTBearer{Client: tc, TokenURL: srv.URL + "/token", Issuer: "sync@project.iam.gserviceaccount.com",
		Assertion: &rest.Assertion{Key: key, Alg: jose.RS256, KeyID: "k1", Subject: "admin@example.com", TTL: 10 * time.Minute,
			Claims: map[string]any{"scope": "a b"}}}
	tok, err := jb.Fetch(context.Background())
	if err != nil || tok.AccessToken != "ya29.x" || !tok.Expiry.Equal(t0.Add(3599*time.Second)) {
		t.Fatalf("Fetch = %+v, %v", tok, err)
	}
	if form.Get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer" || len(form) != 2 {
		t.Errorf("form = %v", form)
	}
	a, err := jwt.ParseSigned(form.Get("assertion"), []jose.SignatureAlgorithm{jose.RS256})
	if err != nil {
		t.Fatal(err)
	}
	var claims jwt.Claims
	var extra struct {
		Scope string `json:"scope"`
	}
	if err := a.Claims(&key.PublicKey, &claims, &extra); err != nil {
		t.Fatal(err)
	}
	if err := claims.ValidateWithLeeway(jwt.Expected{Issuer: jb.Issuer, Subject: "admin@example.com", AnyAudience: jwt.Audience{jb.TokenURL}, Time: t0}, 0); err != nil {
		t.Errorf("claims: %v", err)
	}
	if extra.Scope != "a b" || a.Headers[0].KeyID != "k1" || claims.Expiry.Time().Sub(claims.IssuedAt.Time()) != 10*time.Minute {
		t.Errorf("scope %q, kid %q, lifetime %s", extra.Scope, a.Headers[0].KeyID, claims.Expiry.Time().Sub(claims.IssuedAt.Time()))
	}
}
