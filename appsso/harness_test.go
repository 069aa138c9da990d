package appsso_test

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/usherhq/usher/appsso"
	"github.com/usherhq/usher/session"
	"github.com/usherhq/usher/store"
	"github.com/usherhq/usher/store/sqlite"
	"github.com/usherhq/usher/targets/atlassiantest"
)

// harness is usher's public listener reduced to what the provider needs:
// the provider under /usher/op/ and a stand-in for /usher/login that
// signs in whoever the browser's "login-as" cookie names (the real login,
// with IdPs, mapping and provisioning, is tested end to end in
// cmd/usher).
type harness struct {
	t       testing.TB
	clock   *clockwork.FakeClock
	store   store.Store
	codec   *session.Codec
	revoked *session.Revocations
	shared  *session.Shared
	secret  []byte
	op      *appsso.Provider
	srv     *httptest.Server
	people  map[string]*session.Session // login-as name → session template
	logins  atomic.Int32                // visits to /usher/login
	lastRD  atomic.Value                // the rd the login was given
	mu      sync.Mutex
	clients []appsso.Client
	opOpts  func(*appsso.Options)
	jira    *atlassiantest.Server
	jiraSrv *httptest.Server
	jiraSSO atlassiantest.SSO
}

const (
	// A client ID and secret with characters Basic authentication must
	// form-encode (reference §9): the Atlassian client encodes them.
	jiraClientID = "jira dc/1"
	jiraSecret   = "s3cr:et+/%"
)

type harnessOptions struct {
	// Store, when set, is used instead of a fresh SQLite file (replicas).
	Store   store.Store
	Secret  []byte
	Clients []appsso.Client
	Options func(*appsso.Options)
	NoJira  bool
	// JiraGroups registers the Jira client with the groups claim.
	JiraGroups bool
}

func newHarness(t testing.TB, o harnessOptions) *harness {
	t.Helper()
	h := &harness{t: t, clock: clockwork.NewFakeClockAt(time.Now()), people: map[string]*session.Session{}, secret: o.Secret}
	if h.secret == nil {
		h.secret = make([]byte, 32)
		_, _ = rand.Read(h.secret)
	}
	h.store = o.Store
	if h.store == nil {
		s, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "usher.db"), sqlite.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		h.store = s
	}
	h.revoked = session.NewRevocations(24*time.Hour, h.clock.Now)
	h.shared = &session.Shared{Local: h.revoked, Store: h.store, Absolute: 24 * time.Hour, Now: h.clock.Now}
	var err error
	h.codec, err = session.NewCodec([][]byte{h.secret}, session.Options{Name: "usher_session", Idle: 8 * time.Hour, Absolute: 24 * time.Hour, Now: h.clock.Now, Revoker: h.revoked})
	if err != nil {
		t.Fatal(err)
	}
	h.srv = httptest.NewUnstartedServer(nil)
	h.srv.Start()
	t.Cleanup(h.srv.Close)

	h.clients = o.Clients
	if !o.NoJira {
		h.jira = atlassiantest.New(atlassiantest.Jira, atlassiantest.Options{
			Now: h.clock.Now,
			Users: []atlassiantest.User{
				{Name: "alice", DisplayName: "Alice Archer", Email: "alice@acme.test", Active: true, Groups: []string{"jira-software-users", "jira-developers"}},
				{Name: "dave", DisplayName: "Dave Unlicensed", Email: "dave@acme.test", Active: true},
			},
		})
		h.jiraSrv = httptest.NewServer(h.jira)
		t.Cleanup(h.jiraSrv.Close)
		h.clients = append(h.clients, appsso.Client{
			ID: jiraClientID, Secret: jiraSecret, App: "jira", Groups: o.JiraGroups,
			RedirectURIs: []string{h.jiraSrv.URL + "/plugins/servlet/oidc/callback"},
		})
	}
	h.opOpts = o.Options
	h.op = h.newProvider()
	h.srv.Config.Handler = h.mux()
	h.person("alice", &session.Session{IdP: "acme", Subject: "00u-alice", Username: "alice", Email: "alice@acme.test", DisplayName: "Alice Archer", Groups: []string{"engineering"}})
	h.person("bob", &session.Session{IdP: "globex", Subject: "a6f3-bob", Username: "bob", Email: "bob@globex.test", DisplayName: "Bob Baker", Apps: []string{"wiki"}})
	h.person("dave", &session.Session{IdP: "acme", Subject: "00u-dave", Username: "dave", Email: "dave@acme.test", DisplayName: "Dave Unlicensed"})
	if h.jira != nil {
		h.jiraSSO = atlassiantest.SSO{
			BaseURL: h.jiraSrv.URL, IssuerURL: h.op.Issuer(), ClientID: jiraClientID, ClientSecret: jiraSecret,
			AdditionalScopes: []string{"profile", "email"}, UsernameClaim: "${preferred_username}", VerifySignature: true,
		}
		if err := h.jira.EnableSSO(context.Background(), h.jiraSSO); err != nil {
			t.Fatal(err)
		}
	}
	return h
}

func (h *harness) newProvider() *appsso.Provider {
	h.t.Helper()
	u, _ := url.Parse(h.srv.URL)
	opt := appsso.Options{
		PublicURL: u, Clients: h.clients, Sessions: h.codec, Secrets: [][]byte{h.secret}, Store: h.store,
		Revoker: h.revoked, Revocations: h.shared, Owner: "replica-" + h.srv.URL,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Now: h.clock.Now,
	}
	if h.opOpts != nil {
		h.opOpts(&opt)
	}
	p, err := appsso.New(context.Background(), opt)
	if err != nil {
		h.t.Fatal(err)
	}
	return p
}

func (h *harness) mux() http.Handler {
	m := http.NewServeMux()
	m.Handle(appsso.Path+"/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { h.op.ServeHTTP(w, r) }))
	m.HandleFunc("GET /usher/login", func(w http.ResponseWriter, r *http.Request) {
		h.logins.Add(1)
		rd := r.URL.Query().Get("rd")
		h.lastRD.Store(rd)
		c, err := r.Cookie("login-as")
		h.mu.Lock()
		tmpl := h.people[cookieValue(c, err)]
		h.mu.Unlock()
		if tmpl == nil {
			http.Error(w, "the IdP refused", http.StatusForbidden)
			return
		}
		s := *tmpl
		s.ID = randomID()
		s.Created, s.Seen = h.clock.Now(), h.clock.Now()
		if err := h.codec.Save(w, &s); err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		if !strings.HasPrefix(rd, appsso.Path+"/continue?") {
			http.Error(w, "unexpected return address "+rd, http.StatusBadRequest)
			return
		}
		http.Redirect(w, r, rd, http.StatusFound)
	})
	return m
}

func cookieValue(c *http.Cookie, err error) string {
	if err != nil {
		return ""
	}
	return c.Value
}

func randomID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

func (h *harness) person(name string, s *session.Session) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.people[name] = s
}

// browser is a cookie jar that follows no redirects: each hop is checked.
// as names who usher's stand-in login signs in ("" for nobody).
func (h *harness) browser(as string) *http.Client {
	jar, _ := cookiejar.New(nil)
	if as != "" {
		u, _ := url.Parse(h.srv.URL)
		jar.SetCookies(u, []*http.Cookie{{Name: "login-as", Value: as, Path: "/"}})
	}
	return &http.Client{Jar: jar, Timeout: 10 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

// get fetches u as a browser navigation and returns the response with
// its body read.
func get(t *testing.T, c *http.Client, u string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", "text/html")
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

// follow follows redirects from u until a page answers, and returns it
// with the URLs visited.
func follow(t *testing.T, c *http.Client, u string) (*http.Response, string, []string) {
	t.Helper()
	var hops []string
	for range 20 {
		hops = append(hops, u)
		resp, body := get(t, c, u)
		loc := resp.Header.Get("Location")
		if resp.StatusCode/100 != 3 || loc == "" {
			return resp, body, hops
		}
		next, err := resp.Request.URL.Parse(loc)
		if err != nil {
			t.Fatal(err)
		}
		u = next.String()
	}
	t.Fatalf("redirect loop: %v", hops)
	return nil, "", nil
}

// authorizeURL builds an authorization request for client.
func (h *harness) authorizeURL(q url.Values) string {
	return h.op.Issuer() + "/authorize?" + q.Encode()
}

// tokenRequest redeems a code with client_secret_basic (id and secret
// form-encoded) unless basic is nil.
func (h *harness) tokenRequest(form url.Values, basic []string) (int, map[string]any) {
	h.t.Helper()
	req, _ := http.NewRequest(http.MethodPost, h.op.Issuer()+"/token", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if basic != nil {
		req.SetBasicAuth(url.QueryEscape(basic[0]), url.QueryEscape(basic[1]))
	}
	return h.send(req)
}

// userinfo calls the userinfo endpoint with an access token.
func (h *harness) userinfo(token string) (int, map[string]any) {
	h.t.Helper()
	req, _ := http.NewRequest(http.MethodGet, h.op.Issuer()+"/userinfo", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	return h.send(req)
}

// send sends req and returns the status and the JSON object answered.
func (h *harness) send(req *http.Request) (int, map[string]any) {
	h.t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	var m map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&m)
	return resp.StatusCode, m
}

func jsonDecode(r io.Reader, v any) error { return json.NewDecoder(r).Decode(v) }

// sameJSON compares a decoded JSON list with strings.
func sameJSON(got any, want []string) bool {
	l, ok := got.([]any)
	if !ok || len(l) != len(want) {
		return false
	}
	for i := range l {
		if l[i] != want[i] {
			return false
		}
	}
	return true
}

// TestMain keeps the op package's own log lines (it logs every refused
// request to the default logger) out of the test output.
func TestMain(m *testing.M) {
	slog.SetDefault(slog.New(slog.NewTextHandler(io.Discard, nil)))
	os.Exit(m.Run())
}
