package oidc

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/usherhq/usher/config"
	"github.com/usherhq/usher/providers"
	"github.com/usherhq/usher/providers/oidc/oidctest"
)

const (
	clientID     = "usher"
	clientSecret = "s3cret"
	publicURL    = "https://sso.example.com"
)

func callbackURL(id string) string { return publicURL + "/usher/oidc/" + id + "/callback" }

var alice = oidctest.User{
	Subject:  "sub-alice",
	Username: "alice",
	Password: "wonderland",
	Email:    "alice@example.com",
	Name:     "Alice Liddell",
	Groups:   []string{"jira-users", "confluence-admins"},
	Claims: map[string]any{
		"realm_access":    map[string]any{"roles": []string{"dev", "ops"}},
		"org":             map[string]any{"unit": map[string]any{"code": "R&D"}},
		"employee_number": 4711,
	},
}

// startIdP runs an oidctest IdP knowing alice and a client registered for
// the callbacks of IdP ids a and b.
func startIdP(t testing.TB, issParam bool) *oidctest.IdP {
	t.Helper()
	idp, err := oidctest.Start(oidctest.Options{
		Users: []oidctest.User{alice},
		Clients: []oidctest.Client{{
			ID:                     clientID,
			Secret:                 clientSecret,
			RedirectURIs:           []string{callbackURL("a"), callbackURL("b")},
			PostLogoutRedirectURIs: []string{publicURL + "/"},
		}},
		IssParameter: issParam,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { idp.Close() })
	return idp
}

func openProvider(t testing.TB, id string, idp *oidctest.IdP, mod func(*Config)) *Provider {
	t.Helper()
	c := &Config{Issuer: idp.Issuer(), ClientID: clientID, ClientSecret: config.SecretValue(clientSecret)}
	if mod != nil {
		mod(c)
	}
	pu, _ := url.Parse(publicURL)
	p, err := c.Open(context.Background(), id, providers.Deps{PublicURL: pu, Client: &http.Client{Timeout: 10 * time.Second}})
	if err != nil {
		t.Fatal(err)
	}
	return p.(*Provider)
}

// browse begins a flow and logs alice in through the IdP's login form,
// returning the flow state and the callback URL the IdP redirected to.
func browse(t testing.TB, p *Provider, idp *oidctest.IdP, flowID string) ([]byte, string) {
	t.Helper()
	ch, err := p.Begin(context.Background(), flowID, "")
	if err != nil {
		t.Fatal(err)
	}
	jar, _ := cookiejar.New(nil)
	cb, err := idp.Login(&http.Client{Jar: jar}, ch.URL, alice.Username, alice.Password)
	if err != nil {
		t.Fatal(err)
	}
	return ch.State, cb
}

func finish(p *Provider, callback string, state []byte) (*providers.Result, error) {
	return p.Finish(context.Background(), httptest.NewRequest(http.MethodGet, callback, nil), state)
}

func withParam(t testing.TB, raw, key, value string) string {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	if value == "" {
		q.Del(key)
	} else {
		q.Set(key, value)
	}
	u.RawQuery = q.Encode()
	return u.String()
}

func editState(t testing.TB, state []byte, edit func(*flowState)) []byte {
	t.Helper()
	var st flowState
	if err := json.Unmarshal(state, &st); err != nil {
		t.Fatal(err)
	}
	edit(&st)
	b, _ := json.Marshal(st)
	return b
}

func wantRefused(t testing.TB, err error, reason string) {
	t.Helper()
	if err == nil {
		t.Fatalf("login accepted, want refusal (%s)", reason)
	}
	if !errors.Is(err, providers.ErrRefused) {
		t.Fatalf("err = %v, want an ErrRefused", err)
	}
	if !strings.Contains(err.Error(), reason) {
		t.Fatalf("err = %v, want reason containing %q", err, reason)
	}
	t.Logf("refused: %v", err)
}

func TestLoginFlow(t *testing.T) {
	idp := startIdP(t, false)
	p := openProvider(t, "a", idp, nil)

	ch, err := p.Begin(context.Background(), "flow-1", "alice@example.com")
	if err != nil {
		t.Fatal(err)
	}
	au, _ := url.Parse(ch.URL)
	q := au.Query()
	for k, want := range map[string]string{
		"state": "flow-1", "code_challenge_method": "S256", "login_hint": "alice@example.com",
		"client_id": clientID, "redirect_uri": callbackURL("a"), "response_type": "code",
	} {
		if got := q.Get(k); got != want {
			t.Errorf("auth URL %s = %q, want %q", k, got, want)
		}
	}
	if q.Get("nonce") == "" || q.Get("code_challenge") == "" {
		t.Errorf("auth URL lacks nonce or code_challenge: %s", ch.URL)
	}
	if strings.Contains(ch.URL, "pkce") || strings.Contains(string(ch.State), q.Get("code_challenge")) {
		t.Errorf("challenge leaks state internals")
	}

	jar, _ := cookiejar.New(nil)
	cb, err := idp.Login(&http.Client{Jar: jar}, ch.URL, "alice", alice.Password)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(cb, callbackURL("a")+"?") {
		t.Fatalf("callback = %s", cb)
	}
	r := httptest.NewRequest(http.MethodGet, cb, nil)
	if got := p.FlowID(r); got != "flow-1" {
		t.Fatalf("FlowID = %q", got)
	}
	res, err := p.Finish(context.Background(), r, ch.State)
	if err != nil {
		t.Fatal(err)
	}
	id := res.Identity
	if id.IdP != "a" || id.Subject != alice.Subject {
		t.Fatalf("identity = %s/%s", id.IdP, id.Subject)
	}
	for k, want := range map[string][]string{
		"groups":             alice.Groups,
		"realm_access.roles": {"dev", "ops"},
		"org.unit.code":      {"R&D"},
		"employee_number":    {"4711"},
		"email":              {alice.Email},
		"email_verified":     {"true"},
		"preferred_username": {"alice"},
		"name":               {alice.Name},
		"iss":                {idp.Issuer()},
	} {
		if got := id.Claims[k]; !slices.Equal(got, want) {
			t.Errorf("claim %s = %q, want %q", k, got, want)
		}
	}
	for _, k := range []string{"nonce", "at_hash", "c_hash"} {
		if _, ok := id.Claims[k]; ok {
			t.Errorf("claim %s should be dropped", k)
		}
	}
	if res.ReturnTo != "" {
		t.Errorf("ReturnTo = %q", res.ReturnTo)
	}
}

func TestLoginFlowUserinfo(t *testing.T) {
	idp := startIdP(t, false)
	p := openProvider(t, "a", idp, func(c *Config) { c.UseUserinfo = true })
	state, cb := browse(t, p, idp, "flow-ui")
	res, err := finish(p, cb, state)
	if err != nil {
		t.Fatal(err)
	}
	if res.Identity.Subject != alice.Subject || !slices.Equal(res.Identity.Claims["groups"], alice.Groups) {
		t.Fatalf("identity = %+v", res.Identity)
	}
}

// TestFormPost reads the authorization response from a POST body, as with
// response_mode=form_post.
func TestFormPost(t *testing.T) {
	idp := startIdP(t, false)
	p := openProvider(t, "a", idp, nil)
	state, cb := browse(t, p, idp, "flow-post")
	u, _ := url.Parse(cb)
	r := httptest.NewRequest(http.MethodPost, callbackURL("a"), strings.NewReader(u.RawQuery))
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if got := p.FlowID(r); got != "flow-post" {
		t.Fatalf("FlowID = %q", got)
	}
	if _, err := p.Finish(context.Background(), r, state); err != nil {
		t.Fatal(err)
	}
}

func TestIssParameter(t *testing.T) {
	idp := startIdP(t, true)
	p := openProvider(t, "a", idp, nil)
	if !p.requireIss {
		t.Fatal("discovery flag authorization_response_iss_parameter_supported not picked up")
	}
	state, cb := browse(t, p, idp, "flow-iss")
	if got := mustParse(t, cb).Query().Get("iss"); got != idp.Issuer() {
		t.Fatalf("callback iss = %q", got)
	}
	_, err := finish(p, withParam(t, cb, "iss", ""), state)
	wantRefused(t, err, "lacks the iss parameter")
	if _, err := finish(p, cb, state); err != nil {
		t.Fatal(err)
	}
}

func mustParse(t testing.TB, raw string) *url.URL {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func TestFinishRefusals(t *testing.T) {
	idp := startIdP(t, false)
	p := openProvider(t, "a", idp, nil)

	tests := []struct {
		name   string
		edit   func(t *testing.T, state []byte, cb string) ([]byte, string)
		reason string
	}{
		{"no flow cookie", func(t *testing.T, _ []byte, cb string) ([]byte, string) {
			return nil, cb
		}, "without a login flow"},
		{"garbage flow state", func(t *testing.T, _ []byte, cb string) ([]byte, string) {
			return []byte("not json"), cb
		}, "unreadable flow state"},
		{"missing state parameter", func(t *testing.T, st []byte, cb string) ([]byte, string) {
			return st, withParam(t, cb, "state", "")
		}, "no state parameter"},
		{"wrong state parameter", func(t *testing.T, st []byte, cb string) ([]byte, string) {
			return st, withParam(t, cb, "state", "flow-other")
		}, "does not belong to this login flow"},
		{"flow started for another IdP", func(t *testing.T, st []byte, cb string) ([]byte, string) {
			return editState(t, st, func(s *flowState) { s.IdP = "b" }), cb
		}, `started for IdP "b"`},
		{"wrong nonce", func(t *testing.T, st []byte, cb string) ([]byte, string) {
			return editState(t, st, func(s *flowState) { s.Nonce = "another-nonce" }), cb
		}, "nonce does not match"},
		{"wrong PKCE verifier", func(t *testing.T, st []byte, cb string) ([]byte, string) {
			return editState(t, st, func(s *flowState) { s.Verifier = strings.Repeat("x", 43) }), cb
		}, "rejected the code"},
		{"iss parameter of another issuer", func(t *testing.T, st []byte, cb string) ([]byte, string) {
			return st, withParam(t, cb, "iss", "https://evil.example.com")
		}, "from issuer \"https://evil.example.com\""},
		{"IdP error response", func(t *testing.T, st []byte, cb string) ([]byte, string) {
			u := mustParse(t, callbackURL("a"))
			u.RawQuery = url.Values{"state": {mustParse(t, cb).Query().Get("state")}, "error": {"access_denied"}, "error_description": {"user cancelled"}}.Encode()
			return st, u.String()
		}, "IdP answered access_denied: user cancelled"},
		{"no code", func(t *testing.T, st []byte, cb string) ([]byte, string) {
			return st, withParam(t, cb, "code", "")
		}, "no code"},
	}
	// The reason each refusal is counted under.
	why := map[string]providers.Reason{
		"no flow cookie": providers.ReasonState, "garbage flow state": providers.ReasonState,
		"missing state parameter": providers.ReasonState, "wrong state parameter": providers.ReasonState,
		"flow started for another IdP": providers.ReasonState, "wrong nonce": providers.ReasonState,
		"wrong PKCE verifier": providers.ReasonReplay, "iss parameter of another issuer": providers.ReasonAudience,
		"IdP error response": providers.ReasonIdPError, "no code": providers.ReasonOther,
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			state, cb := browse(t, p, idp, "flow-"+string(rune('a'+i)))
			state, cb = tt.edit(t, state, cb)
			res, err := finish(p, cb, state)
			if res != nil {
				t.Fatalf("got identity %+v", res.Identity)
			}
			wantRefused(t, err, tt.reason)
			if got, want := providers.ReasonOf(err), why[tt.name]; got != want {
				t.Fatalf("reason = %q, want %q", got, want)
			}
		})
	}
}

func TestStateFromAnotherFlow(t *testing.T) {
	idp := startIdP(t, false)
	p := openProvider(t, "a", idp, nil)
	state1, _ := browse(t, p, idp, "flow-1")
	_, cb2 := browse(t, p, idp, "flow-2")
	_, err := finish(p, cb2, state1)
	wantRefused(t, err, "does not belong to this login flow")
}

func TestReplayedCode(t *testing.T) {
	idp := startIdP(t, false)
	p := openProvider(t, "a", idp, nil)
	state, cb := browse(t, p, idp, "flow-replay")
	if _, err := finish(p, cb, state); err != nil {
		t.Fatal(err)
	}
	res, err := finish(p, cb, state)
	if res != nil {
		t.Fatal("replayed code yielded an identity")
	}
	wantRefused(t, err, "invalid_grant")
}

// TestCodeFromAnotherIdP presents IdP B's authorization response at IdP A's
// callback (a mix-up): A's token endpoint does not know B's code, and a
// flow begun at B is not A's.
func TestCodeFromAnotherIdP(t *testing.T) {
	idpA, idpB := startIdP(t, false), startIdP(t, false)
	a := openProvider(t, "a", idpA, nil)
	b := openProvider(t, "b", idpB, nil)

	stateB, cbB := browse(t, b, idpB, "flow-x")
	chA, err := a.Begin(context.Background(), "flow-x", "")
	if err != nil {
		t.Fatal(err)
	}
	cbAtA := strings.Replace(cbB, callbackURL("b"), callbackURL("a"), 1)

	_, err = finish(a, cbAtA, chA.State)
	wantRefused(t, err, "rejected the code")
	_, err = finish(a, cbAtA, stateB)
	wantRefused(t, err, `started for IdP "b"`)

	// With RFC 9207 the response names its issuer and is refused before
	// any code exchange.
	idpC := startIdP(t, true)
	c := openProvider(t, "b", idpC, nil)
	_, cbC := browse(t, c, idpC, "flow-y")
	chA, _ = a.Begin(context.Background(), "flow-y", "")
	_, err = finish(a, strings.Replace(cbC, callbackURL("b"), callbackURL("a"), 1), chA.State)
	wantRefused(t, err, "from issuer")
}

// TestIdPErrorResponse gets a real error response: prompt=none cannot
// succeed at an IdP without a session.
func TestIdPErrorResponse(t *testing.T) {
	idp := startIdP(t, false)
	p := openProvider(t, "a", idp, func(c *Config) { c.ExtraAuthParams = map[string]string{"prompt": "none"} })
	state, cb := browse(t, p, idp, "flow-none")
	_, err := finish(p, cb, state)
	wantRefused(t, err, "IdP answered login_required")
}

// TestWrongClientSecret is a technical failure (misconfiguration), not a
// refusal of the person.
func TestWrongClientSecret(t *testing.T) {
	idp := startIdP(t, false)
	p := openProvider(t, "a", idp, func(c *Config) { c.ClientSecret = config.SecretValue("not-the-secret-42") })
	state, cb := browse(t, p, idp, "flow-secret")
	_, err := finish(p, cb, state)
	if err == nil || errors.Is(err, providers.ErrRefused) {
		t.Fatalf("err = %v, want a technical error", err)
	}
	if strings.Contains(err.Error(), "not-the-secret-42") {
		t.Fatalf("error leaks a secret: %v", err)
	}
}

var testNow = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func validClaims(idp *oidctest.IdP) map[string]any {
	return map[string]any{
		"iss":   idp.Issuer(),
		"sub":   "sub-alice",
		"aud":   clientID,
		"iat":   testNow.Unix(),
		"exp":   testNow.Add(5 * time.Minute).Unix(),
		"nonce": "n-1",
	}
}

func unsignedJWT(header string, claims map[string]any) string {
	b, _ := json.Marshal(claims)
	enc := base64.RawURLEncoding
	return enc.EncodeToString([]byte(header)) + "." + enc.EncodeToString(b)
}

func TestVerifyIDToken(t *testing.T) {
	idp, other := startIdP(t, false), startIdP(t, false)
	p := openProvider(t, "a", idp, func(c *Config) { c.Now = func() time.Time { return testNow } })

	sign := func(t *testing.T, signer *oidctest.IdP, edit func(map[string]any)) string {
		c := validClaims(idp)
		if edit != nil {
			edit(c)
		}
		tok, err := signer.SignIDToken(c)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	der, err := x509.MarshalPKIXPublicKey(idp.PublicKey())
	if err != nil {
		t.Fatal(err)
	}
	pemKey := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	hs256 := func(secret []byte) string {
		s := unsignedJWT(`{"alg":"HS256","typ":"JWT"}`, validClaims(idp))
		m := hmac.New(sha256.New, secret)
		m.Write([]byte(s))
		return s + "." + base64.RawURLEncoding.EncodeToString(m.Sum(nil))
	}

	tests := []struct {
		name   string
		token  func(t *testing.T) string
		reason string // "" = accepted
	}{
		{"valid", func(t *testing.T) string { return sign(t, idp, nil) }, ""},
		{"expired within skew", func(t *testing.T) string {
			return sign(t, idp, func(c map[string]any) { c["exp"] = testNow.Add(-30 * time.Second).Unix() })
		}, ""},
		{"several audiences with azp", func(t *testing.T) string {
			return sign(t, idp, func(c map[string]any) { c["aud"] = []string{clientID, "other"}; c["azp"] = clientID })
		}, ""},
		{"expired", func(t *testing.T) string {
			return sign(t, idp, func(c map[string]any) { c["exp"] = testNow.Add(-10 * time.Minute).Unix() })
		}, "expired"},
		{"wrong audience", func(t *testing.T) string {
			return sign(t, idp, func(c map[string]any) { c["aud"] = "someone-else" })
		}, "expected audience"},
		{"several audiences without azp", func(t *testing.T) string {
			return sign(t, idp, func(c map[string]any) { c["aud"] = []string{clientID, "other"} })
		}, "no authorized party"},
		{"azp of another client", func(t *testing.T) string {
			return sign(t, idp, func(c map[string]any) { c["azp"] = "other" })
		}, "authorized party"},
		{"another issuer", func(t *testing.T) string {
			return sign(t, idp, func(c map[string]any) { c["iss"] = other.Issuer() })
		}, "different provider"},
		{"wrong nonce", func(t *testing.T) string {
			return sign(t, idp, func(c map[string]any) { c["nonce"] = "n-2" })
		}, "nonce does not match"},
		{"no nonce", func(t *testing.T) string {
			return sign(t, idp, func(c map[string]any) { delete(c, "nonce") })
		}, "nonce does not match"},
		{"signed by another IdP's key", func(t *testing.T) string { return sign(t, other, nil) }, "signature"},
		{"tampered payload", func(t *testing.T) string {
			parts := strings.Split(sign(t, idp, nil), ".")
			c := validClaims(idp)
			c["sub"] = "sub-mallory"
			b, _ := json.Marshal(c)
			parts[1] = base64.RawURLEncoding.EncodeToString(b)
			return strings.Join(parts, ".")
		}, "signature"},
		{"alg none", func(t *testing.T) string {
			return unsignedJWT(`{"alg":"none","typ":"JWT"}`, validClaims(idp)) + "."
		}, `"none", which is not allowed`},
		{"HS256 keyed with the public key PEM", func(t *testing.T) string { return hs256(pemKey) }, `"HS256", which is not allowed`},
		{"HS256 keyed with the public key DER", func(t *testing.T) string { return hs256(der) }, `"HS256", which is not allowed`},
		{"not a JWT", func(t *testing.T) string { return "garbage" }, "malformed ID token"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			raw := tt.token(t)
			idt, _, err := p.verifyIDToken(context.Background(), raw, "n-1")
			if tt.reason == "" {
				if err != nil {
					t.Fatal(err)
				}
				if idt.Subject != "sub-alice" {
					t.Fatalf("subject = %q", idt.Subject)
				}
				return
			}
			wantRefused(t, err, tt.reason)
		})
	}

	// Beneath our own alg check, go-oidc's verifier is restricted to the
	// allowed algorithms too.
	for _, raw := range []string{hs256(pemKey), unsignedJWT(`{"alg":"none"}`, validClaims(idp)) + "."} {
		if _, err := p.verifier.Verify(context.Background(), raw); err == nil {
			t.Errorf("verifier accepted %s", raw)
		}
	}
}

func TestLogoutURL(t *testing.T) {
	idp := startIdP(t, false)
	p := openProvider(t, "a", idp, nil)
	raw, err := p.LogoutURL(context.Background(), providers.Identity{}, publicURL+"/")
	if err != nil {
		t.Fatal(err)
	}
	u := mustParse(t, raw)
	if !strings.HasPrefix(raw, idp.Issuer()+"/end_session?") || u.Query().Get("client_id") != clientID ||
		u.Query().Get("post_logout_redirect_uri") != publicURL+"/" || u.Query().Has("id_token_hint") {
		t.Fatalf("logout URL = %s", raw)
	}
	// The IdP accepts it and sends the browser back.
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.Get(raw)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if loc := resp.Header.Get("Location"); resp.StatusCode != http.StatusFound || loc != publicURL+"/" {
		t.Fatalf("end_session: %s, Location %q", resp.Status, loc)
	}

	p.endSession = ""
	if raw, err := p.LogoutURL(context.Background(), providers.Identity{}, publicURL+"/"); raw != "" || err != nil {
		t.Fatalf("without end_session_endpoint: %q, %v", raw, err)
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name string
		c    Config
		want []string
	}{
		{"minimal", Config{Issuer: "https://idp.example.com", ClientID: "x"}, nil},
		{"loopback http", Config{Issuer: "http://127.0.0.1:9000", ClientID: "x"}, nil},
		{"empty", Config{}, []string{"issuer: required", "client_id: required"}},
		{"plain http", Config{Issuer: "http://idp.example.com", ClientID: "x"}, []string{"issuer: \"http://idp.example.com\" must use https"}},
		{"no openid scope", Config{Issuer: "https://i.example", ClientID: "x", Scopes: []string{"email"}}, []string{`scopes: must include "openid"`}},
		{"symmetric alg", Config{Issuer: "https://i.example", ClientID: "x", AllowedAlgs: []string{"RS256", "HS256"}}, []string{`"HS256" is never allowed`}},
		{"alg none", Config{Issuer: "https://i.example", ClientID: "x", AllowedAlgs: []string{"none"}}, []string{`"none" is never allowed`}},
		{"unknown alg", Config{Issuer: "https://i.example", ClientID: "x", AllowedAlgs: []string{"XS1"}}, []string{"unknown algorithm"}},
		{"reserved param", Config{Issuer: "https://i.example", ClientID: "x", ExtraAuthParams: map[string]string{"nonce": "1", "prompt": "login"}}, []string{"extra_auth_params.nonce"}},
		{"bad redirect", Config{Issuer: "https://i.example", ClientID: "x", RedirectURL: "/relative"}, []string{"redirect_url"}},
		{"skew", Config{Issuer: "https://i.example", ClientID: "x", Skew: time.Hour}, []string{"skew"}},
		{"subject claim", Config{Issuer: "https://i.example", ClientID: "x", SubjectClaim: "oid", EmailVerified: "assume"}, nil},
		{"protocol subject claim", Config{Issuer: "https://i.example", ClientID: "x", SubjectClaim: "nonce"}, []string{"subject_claim"}},
		{"email_verified", Config{Issuer: "https://i.example", ClientID: "x", EmailVerified: "trust"}, []string{"email_verified"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			errs := tt.c.Validate()
			if len(errs) != len(tt.want) {
				t.Fatalf("errors = %v, want %d", errs, len(tt.want))
			}
			var all string
			for _, e := range errs {
				var fe *config.FieldError
				if !errors.As(e, &fe) {
					t.Errorf("%v is not a FieldError", e)
				}
				all += e.Error() + "\n"
			}
			for _, w := range tt.want {
				if !strings.Contains(all, w) {
					t.Errorf("errors %q lack %q", all, w)
				}
			}
		})
	}
}

func TestFlatten(t *testing.T) {
	var claims map[string]any
	dec := json.NewDecoder(strings.NewReader(`{"s":"x","n":1700000000,"f":1.5,"b":false,"nil":null,
		"list":["a",1,true],"nested":{"a":{"b":["c","d"]},"e":"f"},"objs":[{"k":"1"},{"k":"2"}],"nonce":"drop",
		"_claim_names":{"groups":"src1","other":"src2"},"_claim_sources":{"src1":{"endpoint":"https://graph.windows.net/x/getMemberObjects"}}}`))
	dec.UseNumber()
	if err := dec.Decode(&claims); err != nil {
		t.Fatal(err)
	}
	got := flatten(claims)
	want := map[string][]string{
		"s": {"x"}, "n": {"1700000000"}, "f": {"1.5"}, "b": {"false"},
		"list": {"a", "1", "true"}, "nested.a.b": {"c", "d"}, "nested.e": {"f"}, "objs.k": {"1", "2"},
		"_claim_names.groups": {"src1"}, // the group overage marker, and nothing else of the distributed claims
	}
	if len(got) != len(want) {
		t.Fatalf("flatten = %v", got)
	}
	for k, w := range want {
		if !slices.Equal(got[k], w) {
			t.Errorf("%s = %q, want %q", k, got[k], w)
		}
	}
}

func TestOpenDiscoveryFailure(t *testing.T) {
	idp := startIdP(t, false)
	issuer := idp.Issuer()
	idp.Close()
	c := &Config{Issuer: issuer, ClientID: clientID}
	pu, _ := url.Parse(publicURL)
	_, err := c.Open(context.Background(), "a", providers.Deps{PublicURL: pu})
	if err == nil || errors.Is(err, providers.ErrRefused) || !strings.Contains(err.Error(), "oidc a: discovery") {
		t.Fatalf("err = %v", err)
	}
}

// BenchmarkVerifyIDToken measures ID token verification alone (RS256,
// RSA-2048, keys cached), to compare with SAML ACS verification.
func BenchmarkVerifyIDToken(b *testing.B) {
	idp := startIdP(b, false)
	p := openProvider(b, "a", idp, func(c *Config) { c.Now = func() time.Time { return testNow } })
	raw, err := idp.SignIDToken(validClaims(idp))
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	if _, _, err := p.verifyIDToken(ctx, raw, "n-1"); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := p.verifyIDToken(ctx, raw, "n-1"); err != nil {
			b.Fatal(err)
		}
	}
}

// TestDecodeConfig decodes the block the way cmd/usher does: strictly,
// through the config package.
func TestDecodeConfig(t *testing.T) {
	parse := func(block string) (*Config, error) {
		cfg, err := config.Parse("usher.yaml", []byte(`server: {public_url: https://sso.example.com}
session: {keys: ["0123456789abcdef0123456789abcdef"]}
apps: [{name: jira, kind: jira, upstream: "http://jira:8080", route: {host: jira.example.com}}]
idps:
  - id: okta
    type: oidc
    config:
`+block))
		if err != nil {
			return nil, err
		}
		var c Config
		return &c, cfg.IdPs[0].Config.Decode(&c)
	}
	c, err := parse(`      issuer: https://example.okta.com
      client_id: 0oa123
      client_secret: {value: sesame}
      scopes: [openid, groups]
      use_userinfo: true
      extra_auth_params: {prompt: login}
      allowed_algs: [ES256]
      skew: 30s
`)
	if err != nil {
		t.Fatal(err)
	}
	s, err := c.ClientSecret.Resolve()
	if err != nil || s != "sesame" || c.Issuer != "https://example.okta.com" || c.ClientID != "0oa123" ||
		!c.UseUserinfo || c.Skew != 30*time.Second || c.ExtraAuthParams["prompt"] != "login" ||
		!slices.Equal(c.Scopes, []string{"openid", "groups"}) || !slices.Equal(c.AllowedAlgs, []string{"ES256"}) {
		t.Fatalf("decoded %+v (secret %q, %v)", c, s, err)
	}
	if errs := c.Validate(); len(errs) > 0 {
		t.Fatal(errs)
	}
	if _, err := parse("      issuer: https://example.okta.com\n      client_idd: x\n"); err == nil || !strings.Contains(err.Error(), "client_idd") {
		t.Fatalf("unknown key: err = %v", err)
	}
}
