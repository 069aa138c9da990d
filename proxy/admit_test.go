package proxy

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/usherhq/usher/config"
	"github.com/usherhq/usher/jit"
	"github.com/usherhq/usher/metrics"
	"github.com/usherhq/usher/providers"
	"github.com/usherhq/usher/session"
)

// Every kind of refused admission has its page, status and metric reason
// here, in the one place that maps them.
func TestRefusalFor(t *testing.T) {
	for _, tc := range []struct {
		err     *jit.AdmitError
		status  int
		outcome string
		reason  string
		says    string
	}{
		{&jit.AdmitError{Kind: jit.Denied, Reason: "you are not in Staff"}, 403, metrics.OutcomeDenied, metrics.ReasonPolicy, "not in Staff"},
		{&jit.AdmitError{Kind: jit.Unmatched}, 403, metrics.OutcomeRefused, metrics.ReasonOther, "could not be matched"},
		{&jit.AdmitError{Kind: jit.UsernameTaken, Username: "alice"}, 403, metrics.OutcomeRefused, metrics.ReasonUsernameTaken, "alice already belongs"},
		{&jit.AdmitError{Kind: jit.AdoptionRefused, Username: "alice", Apps: []string{"jira"}}, 403, metrics.OutcomeRefused, metrics.ReasonUsernameTaken, "already exists in jira"},
		{&jit.AdmitError{Kind: jit.AccessRemoved}, 403, metrics.OutcomeDenied, metrics.ReasonPolicy, "has been removed"},
		{&jit.AdmitError{Kind: jit.ProvisioningFailed, Apps: []string{"jira", "wiki"}}, 503, metrics.OutcomeError, metrics.ReasonProvisioning, "in jira, wiki"},
		{&jit.AdmitError{Kind: jit.StoreUnavailable}, 503, metrics.OutcomeError, metrics.ReasonStore, "database"},
		{nil, 500, metrics.OutcomeError, metrics.ReasonOther, "could not complete"},
		{&jit.AdmitError{Kind: 99}, 500, metrics.OutcomeError, metrics.ReasonOther, "could not complete"},
	} {
		rf := refusalFor(tc.err)
		if rf.status != tc.status || rf.outcome != tc.outcome || rf.reason != tc.reason || !strings.Contains(rf.message, tc.says) {
			t.Errorf("refusalFor(%v) = %+v; want %d %s/%s saying %q", tc.err, rf, tc.status, tc.outcome, tc.reason, tc.says)
		}
	}
}

// stubIdP finishes every callback with its identity.
type stubIdP struct {
	typ string
	id  providers.Identity
}

func (p *stubIdP) ID() string   { return p.id.IdP }
func (p *stubIdP) Type() string { return p.typ }
func (p *stubIdP) Begin(_ context.Context, flowID, _ string) (*providers.Challenge, error) {
	return &providers.Challenge{URL: "https://idp.example/authorize?state=" + flowID, State: []byte(flowID)}, nil
}
func (p *stubIdP) FlowID(r *http.Request) string { return r.URL.Query().Get("state") }
func (p *stubIdP) Finish(context.Context, *http.Request, []byte) (*providers.Result, error) {
	return &providers.Result{Identity: p.id}, nil
}

// admitAll admits everyone with the profile it is given.
type admitAll struct {
	a   *jit.Admission
	err error
}

func (l *admitAll) Admit(context.Context, providers.Identity, jit.Cause) (*jit.Admission, error) {
	return l.a, l.err
}

func testHandler(t *testing.T, lc Lifecycle, idp providers.Provider) *Handler {
	t.Helper()
	codec, err := session.NewCodec([][]byte{[]byte("0123456789abcdef0123456789abcdef")}, session.Options{Name: "usher_session", Idle: time.Hour, Absolute: 8 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	public, _ := url.Parse("http://usher.test")
	return New(Options{PublicURL: public, Codec: codec, Lifecycle: lc, IdPs: []IdP{{Provider: idp, Name: "Okta"}},
		Apps: []App{{Name: "jira", Route: config.Route{PathPrefix: "/"}}}})
}

// login runs a whole login through h and returns the callback's answer.
func loginThrough(t *testing.T, h http.Handler) *httptest.ResponseRecorder {
	t.Helper()
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest("GET", "http://usher.test/usher/login?idp=okta", nil))
	loc, _ := url.Parse(w.Header().Get("Location"))
	r := httptest.NewRequest("GET", "http://usher.test/usher/oidc/okta/callback?state="+loc.Query().Get("state"), nil)
	for _, c := range w.Result().Cookies() {
		r.AddCookie(c)
	}
	w = httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

// A person with more IdP groups than a cookie holds still gets in; the
// apps get no groups header.
func TestEstablishWithTooManyGroups(t *testing.T) {
	groups := make([]string, 2000)
	for i := range groups {
		groups[i] = "a-rather-long-group-name-" + strings.Repeat("x", 20) + string(rune('a'+i%26))
	}
	p := &jit.Profile{IdP: "okta", Subject: "s1", Username: "alice", Email: "alice@example.com", IdPGroups: groups}
	idp := &stubIdP{typ: "oidc", id: providers.Identity{IdP: "okta", Subject: "s1"}}
	h := testHandler(t, &admitAll{a: &jit.Admission{Profile: p}}, idp)
	w := loginThrough(t, h)
	if w.Code != http.StatusFound {
		t.Fatalf("callback: %d %s", w.Code, w.Body)
	}
	var cookie *http.Cookie
	for _, c := range w.Result().Cookies() {
		if c.Name == "usher_session" && c.Value != "" {
			cookie = c
		}
	}
	if cookie == nil {
		t.Fatal("no session cookie")
	}
	r := httptest.NewRequest("GET", "http://usher.test/", nil)
	r.AddCookie(cookie)
	s, _, err := h.opt.Codec.Load(r)
	if err != nil || s.Username != "alice" || len(s.Groups) != 0 {
		t.Fatalf("session %+v, %v: want alice without groups", s, err)
	}
}

// A refused admission answers with its page; the session is not set.
func TestEstablishRefused(t *testing.T) {
	idp := &stubIdP{typ: "oidc", id: providers.Identity{IdP: "okta", Subject: "s1"}}
	h := testHandler(t, &admitAll{err: &jit.AdmitError{Kind: jit.ProvisioningFailed, Apps: []string{"jira"}, Err: errors.New("jira: HTTP 503")}}, idp)
	w := loginThrough(t, h)
	if w.Code != http.StatusServiceUnavailable || !strings.Contains(w.Body.String(), "in jira") || w.Header().Get("Retry-After") == "" {
		t.Fatalf("callback: %d %q", w.Code, w.Body)
	}
	for _, c := range w.Result().Cookies() {
		if c.Name == "usher_session" && c.Value != "" {
			t.Fatal("a refused login got a session")
		}
	}
}

// The provider endpoints answer only under the provider's own type.
func TestProviderEndpointsMatchTheType(t *testing.T) {
	idp := &stubIdP{typ: "oidc", id: providers.Identity{IdP: "okta", Subject: "s1"}}
	h := testHandler(t, &admitAll{}, idp)
	for _, path := range []string{
		"/usher/saml/okta/callback", // another type's path
		"/usher/oidc/nobody/callback",
		"/usher/oidc/okta/metadata", // no metadata for this provider
		"/usher/oidc/okta/slo",
	} {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest("GET", "http://usher.test"+path, nil))
		if w.Code != http.StatusNotFound {
			t.Errorf("GET %s = %d, want 404", path, w.Code)
		}
	}
}

// A deprovisioned person's login is refused and logged at Info with who
// it was: a decision working as meant, not a warning.
func TestEstablishAccessRemovedIsLogged(t *testing.T) {
	idp := &stubIdP{typ: "oidc", id: providers.Identity{IdP: "okta", Subject: "s1"}}
	h := testHandler(t, &admitAll{err: &jit.AdmitError{Kind: jit.AccessRemoved, Username: "alice", Apps: []string{"jira"}}}, idp)
	var buf bytes.Buffer
	h.log = slog.New(slog.NewJSONHandler(&buf, nil))
	w := loginThrough(t, h)
	if w.Code != http.StatusForbidden || !strings.Contains(w.Body.String(), "has been removed") {
		t.Fatalf("callback: %d %q", w.Code, w.Body)
	}
	var lines []map[string]any
	for line := range strings.Lines(buf.String()) {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatal(err)
		}
		if m["level"] != "DEBUG" {
			lines = append(lines, m)
		}
	}
	if len(lines) != 1 {
		t.Fatalf("want one log line, got %d:\n%s", len(lines), buf.String())
	}
	if l := lines[0]; l["level"] != "INFO" || l["idp"] != "okta" || l["subject"] != "s1" || l["username"] != "alice" || l["request_id"] == "" {
		t.Errorf("log line %v", l)
	}
}
