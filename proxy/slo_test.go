package proxy

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/beevik/etree"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/usherhq/usher/config"
	"github.com/usherhq/usher/jit"
	"github.com/usherhq/usher/metrics"
	"github.com/usherhq/usher/providers"
	"github.com/usherhq/usher/providers/saml"
	"github.com/usherhq/usher/providers/saml/samltest"
	"github.com/usherhq/usher/session"
	"github.com/usherhq/usher/store"
)

// eventStore keeps audit events; nothing else is called by the paths
// under test.
type eventStore struct {
	store.Store
	mu     sync.Mutex
	events []store.Event
}

func (s *eventStore) Append(_ context.Context, e ...store.Event) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.events = append(s.events, e...)
	return nil
}

func (s *eventStore) actions() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, e := range s.events {
		out = append(out, e.Action+":"+e.Actor+":"+e.Subject+":"+e.Outcome)
	}
	return out
}

// revoker records identity revocations.
type revoker struct {
	mu         sync.Mutex
	identities []string
}

func (r *revoker) RevokeSession(context.Context, *session.Session) error { return nil }
func (r *revoker) RevokeIdentity(_ context.Context, idp, subject string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.identities = append(r.identities, idp+"/"+subject)
	return nil
}

// sloEnv is usher's handler with one SAML IdP "corp" from samltest.
type sloEnv struct {
	t       *testing.T
	idp     *samltest.IdP
	p       *saml.Provider
	h       *Handler
	codec   *session.Codec
	st      *eventStore
	revoked *revoker
}

func newSLOEnv(t *testing.T, mod func(*saml.Config)) *sloEnv {
	t.Helper()
	idp, err := samltest.New(samltest.Options{Users: []samltest.User{{
		Name: "alice", Password: "wonderland", Email: "alice@example.com", CommonName: "Alice",
	}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(idp.Close)
	key, cert, err := samltest.NewKeyPair("usher sp", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, certPEM := samltest.PEM(key, cert)
	md, err := idp.Metadata()
	if err != nil {
		t.Fatal(err)
	}
	cfg := &saml.Config{MetadataXML: string(md), SPKey: config.SecretValue(keyPEM), SPCert: config.SecretValue(certPEM)}
	if mod != nil {
		mod(cfg)
	}
	public, _ := url.Parse("https://sso.example.com")
	p, err := cfg.OpenWith(context.Background(), "corp", providers.Deps{PublicURL: public}, saml.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	spMD, _, err := p.Metadata()
	if err != nil {
		t.Fatal(err)
	}
	if err := idp.AddServiceProvider("usher", spMD); err != nil {
		t.Fatal(err)
	}
	codec, err := session.NewCodec([][]byte{[]byte("0123456789abcdef0123456789abcdef")}, session.Options{
		Name: "usher_session", Secure: true, Idle: time.Hour, Absolute: 8 * time.Hour,
	})
	if err != nil {
		t.Fatal(err)
	}
	e := &sloEnv{t: t, idp: idp, p: p, codec: codec, st: &eventStore{}, revoked: &revoker{}}
	e.h = New(Options{
		PublicURL: public, Codec: codec, Audit: &jit.AuditLog{Store: e.st}, Sessions: e.revoked,
		IdPs: []IdP{{Provider: p, Name: "Corp"}},
		Log:  slog.New(slog.DiscardHandler),
	})
	return e
}

// login signs alice in at the IdP and at usher's provider, and returns the
// usher session cookie a real login would have set.
func (e *sloEnv) login(b *samltest.Browser) *http.Cookie {
	e.t.Helper()
	ch, err := e.p.Begin(context.Background(), "flow-1", "")
	if err != nil {
		e.t.Fatal(err)
	}
	acs, err := b.Login(context.Background(), e.idp, ch, "alice", "wonderland")
	if err != nil {
		e.t.Fatal(err)
	}
	res, err := e.p.Finish(context.Background(), acs, ch.State)
	if err != nil {
		e.t.Fatal(err)
	}
	s := e.codec.NewSession()
	s.IdP, s.Subject, s.Username, s.LogoutHint = res.Identity.IdP, res.Identity.Subject, "alice", res.Identity.LogoutHint
	rec := httptest.NewRecorder()
	if err := e.codec.Save(rec, s); err != nil {
		e.t.Fatal(err)
	}
	return rec.Result().Cookies()[0]
}

func (e *sloEnv) serve(r *http.Request, cookies ...*http.Cookie) *httptest.ResponseRecorder {
	for _, c := range cookies {
		r.AddCookie(c)
	}
	w := httptest.NewRecorder()
	e.h.ServeHTTP(w, r)
	return w
}

// cleared reports whether the response deletes the session cookie.
func (e *sloEnv) cleared(w *httptest.ResponseRecorder) bool {
	for _, c := range w.Result().Cookies() {
		if c.Name == e.codec.CookieName() && c.MaxAge < 0 {
			return true
		}
	}
	return false
}

// TestIdPInitiatedLogout: alice signs out at her IdP. The IdP sends the
// browser to usher with a signed LogoutRequest; usher ends her sessions
// on every replica, clears this browser's cookie, audits it, and sends the
// browser back with a signed LogoutResponse the IdP accepts.
func TestIdPInitiatedLogout(t *testing.T) {
	e := newSLOEnv(t, nil)
	b := samltest.NewBrowser()
	cookie := e.login(b)

	resp, err := b.Client.Get(e.idp.URL() + "/logout")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusFound {
		t.Fatalf("IdP logout: %s", resp.Status)
	}
	toUsher := resp.Header.Get("Location")
	w := e.serve(httptest.NewRequest(http.MethodGet, toUsher, nil), cookie)
	if w.Code != http.StatusFound || !strings.HasPrefix(w.Header().Get("Location"), e.idp.URL()+"/slo?SAMLResponse=") {
		t.Fatalf("usher answered %d %s: %s", w.Code, w.Header().Get("Location"), w.Body)
	}
	if got := strings.Join(e.revoked.identities, ","); got != "corp/alice@example.com" {
		t.Fatalf("revoked %q", got)
	}
	if !e.cleared(w) {
		t.Error("the browser's session cookie was not cleared")
	}
	if got := strings.Join(e.st.actions(), ","); got != "logout:login:alice@example.com:ok" {
		t.Errorf("audit = %q", got)
	}

	resp, err = b.Client.Get(w.Header().Get("Location"))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "You have been logged out") || strings.Contains(string(body), "could not be confirmed") {
		t.Fatalf("IdP after usher's answer: %s %s", resp.Status, body)
	}

	// The same request again is a replay: refused, nothing ended.
	e.revoked.identities = nil
	w = e.serve(httptest.NewRequest(http.MethodGet, toUsher, nil))
	if w.Code != http.StatusBadRequest || len(e.revoked.identities) != 0 {
		t.Fatalf("replay: %d, revoked %q", w.Code, e.revoked.identities)
	}
}

// TestLogoutRequestRefused: a LogoutRequest usher cannot verify ends
// nothing and clears nothing.
func TestLogoutRequestRefusedAtProxy(t *testing.T) {
	e := newSLOEnv(t, nil)
	cookie := e.login(samltest.NewBrowser())
	slo := "https://sso.example.com/usher/saml/corp/slo"
	lr := e.idp.LogoutRequestElement(e.idp.NewLogoutRequest(slo, "alice@example.com"))
	r, err := e.idp.RedirectRequest(slo, "SAMLRequest", lr, "", false) // unsigned
	if err != nil {
		t.Fatal(err)
	}
	w := e.serve(r, cookie)
	if w.Code != http.StatusBadRequest || e.cleared(w) || len(e.revoked.identities) != 0 {
		t.Fatalf("unsigned LogoutRequest: %d, cleared %v, revoked %q", w.Code, e.cleared(w), e.revoked.identities)
	}
}

// unsignedLogoutResponse is what SimpleSAMLphp sends back by default.
func unsignedLogoutResponse(t *testing.T, e *sloEnv) *http.Request {
	t.Helper()
	slo := "https://sso.example.com/usher/saml/corp/slo"
	el := etree.NewElement("samlp:LogoutResponse")
	el.CreateAttr("xmlns:samlp", "urn:oasis:names:tc:SAML:2.0:protocol")
	el.CreateAttr("xmlns:saml", "urn:oasis:names:tc:SAML:2.0:assertion")
	el.CreateAttr("ID", "id-lr-1")
	el.CreateAttr("Version", "2.0")
	el.CreateAttr("IssueInstant", time.Now().UTC().Format("2006-01-02T15:04:05Z"))
	el.CreateAttr("Destination", slo)
	el.CreateElement("saml:Issuer").SetText(e.idp.EntityID())
	el.CreateElement("samlp:Status").CreateElement("samlp:StatusCode").CreateAttr("Value", "urn:oasis:names:tc:SAML:2.0:status:Success")
	r, err := e.idp.RedirectRequest(slo, "SAMLResponse", el, "/usher/logged-out", false)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestUnsignedLogoutResponse: after usher's own logout (which cleared the
// cookie), an unsigned answer still shows the person they are signed out;
// a browser that still holds a session is told the sign-out was not
// confirmed, and nothing is cleared on the unverified answer's word.
func TestUnsignedLogoutResponseAtProxy(t *testing.T) {
	e := newSLOEnv(t, nil)
	w := e.serve(unsignedLogoutResponse(t, e))
	if w.Code != http.StatusOK || !strings.Contains(w.Body.String(), "You are signed out of usher") {
		t.Fatalf("after logout: %d %s", w.Code, w.Body)
	}

	cookie := e.login(samltest.NewBrowser())
	w = e.serve(unsignedLogoutResponse(t, e), cookie)
	if w.Code != http.StatusBadRequest || e.cleared(w) {
		t.Fatalf("with a live session: %d, cleared %v", w.Code, e.cleared(w))
	}
}

// TestTruncatedACSBody: a client that drops the connection mid-POST at the
// ACS gets a refusal (403, reason other), not an IdP error (502).
func TestTruncatedACSBody(t *testing.T) {
	e := newSLOEnv(t, nil)
	reg := prometheus.NewRegistry()
	e.h.opt.Metrics = metrics.New(reg)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	r := httptest.NewRequest(http.MethodPost, "https://sso.example.com/usher/saml/corp/acs", nil).WithContext(ctx)
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	r.Body = io.NopCloser(io.MultiReader(strings.NewReader("RelayState=x&SAMLResponse=PHNhbWxwOl"), errAfter{}))
	w := e.serve(r)
	if w.Code != http.StatusForbidden {
		t.Fatalf("cut-short ACS POST: %d, want 403", w.Code)
	}
	if got := strings.Join(e.st.actions(), ","); got != "login.refused:login::refused" {
		t.Errorf("audit = %q", got)
	}
	want := `
# HELP usher_logins_total Finished login attempts by IdP, outcome (ok, refused, denied, error) and reason.
# TYPE usher_logins_total counter
usher_logins_total{idp="corp",outcome="refused",reason="other"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "usher_logins_total"); err != nil {
		t.Fatal(err)
	}
}

type errAfter struct{}

func (errAfter) Read([]byte) (int, error) { return 0, io.ErrUnexpectedEOF }

// bigIdP is a provider whose callbacks may be large; Finish reports how
// much of the body it could read.
type bigIdP struct {
	limit int64
	read  int
	err   error
}

func (p *bigIdP) ID() string                    { return "okta" }
func (p *bigIdP) Type() string                  { return "oidc" }
func (p *bigIdP) FlowID(r *http.Request) string { return "" }
func (p *bigIdP) Begin(context.Context, string, string) (*providers.Challenge, error) {
	return nil, errors.New("not used")
}

func (p *bigIdP) MaxBodyBytes() int64 { return p.limit }
func (p *bigIdP) Finish(_ context.Context, r *http.Request, _ []byte) (*providers.Result, error) {
	b, err := io.ReadAll(r.Body)
	p.read, p.err = len(b), err
	return nil, providers.Refused(providers.ReasonOther, "test")
}

// TestCallbackBodyLimit: the callback body bound follows the provider's
// (a SAML max_response_bytes past 750 KiB needs more than 1 MiB of POST),
// and stays at 1 MiB for providers without one.
func TestCallbackBodyLimit(t *testing.T) {
	for _, tc := range []struct {
		name  string
		limit int64
		size  int
		ok    bool
	}{
		{"large provider bound", 4 << 20, 3 << 20, true},
		{"over the provider bound", 2 << 20, 3 << 20, false},
		{"default bound", 0, 1 << 20, true},
		{"over the default bound", 0, 2 << 20, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := &bigIdP{limit: tc.limit}
			h := New(Options{
				PublicURL: mustURL(t, "https://sso.example.com"),
				IdPs:      []IdP{{Provider: p, Name: "Big"}}, Log: slog.New(slog.DiscardHandler),
			})
			r := httptest.NewRequest(http.MethodPost, "https://sso.example.com/usher/oidc/okta/callback", bytes.NewReader(make([]byte, tc.size)))
			h.ServeHTTP(httptest.NewRecorder(), r)
			if ok := p.err == nil && p.read == tc.size; ok != tc.ok {
				t.Fatalf("read %d of %d bytes (err %v), want ok=%v", p.read, tc.size, p.err, tc.ok)
			}
		})
	}
}

func mustURL(t *testing.T, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func TestRefusalReason(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{providers.Refused(providers.ReasonIdPError, "IdP answered Responder/AuthnFailed: bad signature, expired password"), metrics.ReasonIdPError},
		{providers.Refused(providers.ReasonReplay, "assertion %q was already used", "x"), metrics.ReasonReplay},
		{providers.Refused(providers.ReasonOther, "request body cut short: unexpected EOF, state unknown"), metrics.ReasonOther},
	} {
		if got := refusalReason(tc.err); got != tc.want {
			t.Errorf("refusalReason(%v) = %q, want %q", tc.err, got, tc.want)
		}
	}
}
