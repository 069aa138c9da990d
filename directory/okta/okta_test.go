package okta_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/usherhq/usher/config"
	"github.com/usherhq/usher/directory"
	"github.com/usherhq/usher/directory/directorytest"
	"github.com/usherhq/usher/directory/okta"
	"github.com/usherhq/usher/directory/okta/oktatest"
	"github.com/usherhq/usher/directory/rest"
)

var t0 = time.Date(2025, 3, 1, 9, 0, 0, 0, time.UTC)

type env struct {
	t     *testing.T
	srv   *oktatest.Server
	clock *clockwork.FakeClock
	calls *directorytest.Calls
}

func newEnv(t *testing.T) *env {
	clock := clockwork.NewFakeClockAt(t0)
	srv := oktatest.New(t, clock).Start()
	srv.AddAPIToken("tok")
	return &env{t: t, srv: srv, clock: clock, calls: &directorytest.Calls{}}
}

func (e *env) open(mod func(*okta.Config)) *okta.Connector {
	e.t.Helper()
	c := &okta.Config{OrgURL: e.srv.URL, APIToken: config.SecretValue("tok")}
	if mod != nil {
		mod(c)
	}
	deps := directorytest.Deps(e.t, e.clock, e.calls)
	deps.Client = e.srv.Client()
	conn, err := c.Open("okta", "okta-idp", deps)
	if err != nil {
		e.t.Fatal(err)
	}
	return conn.(*okta.Connector)
}

func (e *env) user(login, status string, extra map[string]any) string {
	p := map[string]any{"login": login + "@example.test", "email": login + "@example.test", "firstName": login, "lastName": "X"}
	for k, v := range extra {
		p[k] = v
	}
	return e.srv.AddUser(oktatest.User{Status: status, Profile: p})
}

// pull returns the people by login's local part.
func (e *env) pull(conn *okta.Connector) (map[string]directory.Person, time.Duration, error) {
	e.t.Helper()
	got := map[string]directory.Person{}
	waited, err := directorytest.Drive(e.t, e.clock, func(ctx context.Context) error {
		return conn.Pull(ctx, func(p directory.Page) error {
			for _, q := range p.People {
				k := strings.TrimSuffix(q.Username, "@example.test")
				if _, dup := got[k]; dup {
					e.t.Errorf("%s listed twice", k)
				}
				got[k] = q
			}
			return nil
		})
	})
	return got, waited, err
}

func (e *env) delta(conn *okta.Connector, token string) (map[string]directory.Person, string, error) {
	e.t.Helper()
	got := map[string]directory.Person{}
	var next string
	_, err := directorytest.Drive(e.t, e.clock, func(ctx context.Context) error {
		var err error
		next, err = conn.Delta(ctx, token, func(p directory.Page) error {
			for _, q := range p.People {
				got[strings.TrimSuffix(q.Username, "@example.test")] = q
			}
			return nil
		})
		return err
	})
	return got, next, err
}

func sortedKeys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		c      okta.Config
		fields []string
	}{
		{"token", okta.Config{OrgURL: "https://example.okta.com", APIToken: config.SecretValue("t")}, nil},
		{"app", okta.Config{OrgURL: "https://example.okta.com", ClientID: "0oa1", PrivateKey: config.SecretValue("k"), KeyID: "k1"}, nil},
		{"nothing", okta.Config{}, []string{"org_url", "api_token"}},
		{"http", okta.Config{OrgURL: "http://example.okta.com", APIToken: config.SecretValue("t")}, []string{"org_url"}},
		{"path", okta.Config{OrgURL: "https://example.okta.com/api/v1", APIToken: config.SecretValue("t")}, []string{"org_url"}},
		{"both", okta.Config{OrgURL: "https://x.okta.com", APIToken: config.SecretValue("t"), ClientID: "c"}, []string{"api_token"}},
		{"app without key", okta.Config{OrgURL: "https://x.okta.com", ClientID: "c"}, []string{"private_key"}},
		{"key without app", okta.Config{OrgURL: "https://x.okta.com", PrivateKey: config.SecretValue("k")}, []string{"client_id"}},
		{"token extras", okta.Config{OrgURL: "https://x.okta.com", APIToken: config.SecretValue("t"), KeyID: "k", Scopes: []string{"okta.users.read"}},
			[]string{"key_id", "scopes"}},
		{"bad scope", okta.Config{OrgURL: "https://x.okta.com", ClientID: "c", PrivateKey: config.SecretValue("k"), Scopes: []string{"openid"}}, []string{"scopes[0]"}},
		{"names", okta.Config{OrgURL: "https://x.okta.com", APIToken: config.SecretValue("t"), SubjectAttribute: "profile.login",
			Attributes: []string{"ok", "no-dash"}, Groups: []string{"g", "g"}}, []string{"subject_attribute", "attributes[1]", "groups[1]"}},
		{"limits", okta.Config{OrgURL: "https://x.okta.com", APIToken: config.SecretValue("t"), PageSize: 201, Concurrency: 9,
			Timeout: -1, MaxWait: -1, DeltaOverlap: -1}, []string{"page_size", "concurrency", "timeout", "max_wait", "delta_overlap"}},
	}
	for _, tt := range tests {
		var fields []string
		for _, err := range tt.c.Validate() {
			var fe *config.FieldError
			if !errors.As(err, &fe) {
				t.Errorf("%s: %v is not a *config.FieldError", tt.name, err)
				continue
			}
			fields = append(fields, fe.Field)
		}
		slices.Sort(fields)
		want := slices.Clone(tt.fields)
		slices.Sort(want)
		if !slices.Equal(fields, want) {
			t.Errorf("%s: errors on %q, want %q", tt.name, fields, want)
		}
	}
}

func TestStatuses(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	want := map[string]directory.Status{
		"STAGED": directory.Inactive, "PROVISIONED": directory.Inactive, "ACTIVE": directory.Active,
		"RECOVERY": directory.Inactive, "PASSWORD_EXPIRED": directory.Inactive, "LOCKED_OUT": directory.Inactive,
		"SUSPENDED": directory.Disabled, "DEPROVISIONED": directory.Disabled,
	}
	for s := range want {
		e.user(strings.ToLower(s), s, nil)
	}
	got, _, err := e.pull(e.open(func(c *okta.Config) { c.PageSize = 3 }))
	if err != nil {
		t.Fatal(err)
	}
	for s, st := range want {
		p, ok := got[strings.ToLower(s)]
		if !ok {
			t.Errorf("%s user missing from the pull", s)
			continue
		}
		if p.Status != st {
			t.Errorf("%s: Status %v, want %v", s, p.Status, st)
		}
	}
	// Seven listed three a page, then the one DEPROVISIONED.
	if n := e.srv.Requests("GET /api/v1/users"); n != 3+1 {
		t.Errorf("%d user listing calls, want 4", n)
	}
}

func TestGroupsAndScope(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ada, bob, cy := e.user("ada", "ACTIVE", nil), e.user("bob", "ACTIVE", nil), e.user("cy", "DEPROVISIONED", nil)
	jira := e.srv.AddGroup(oktatest.Group{Name: "jira-users"})
	ad := e.srv.AddGroup(oktatest.Group{Name: "ad-staff", Type: "APP_GROUP"})
	e.srv.AddMember(jira, ada)
	e.srv.AddMember(jira, cy)
	e.srv.AddMember(ad, ada)
	e.srv.AddMember(ad, bob)

	got, _, err := e.pull(e.open(nil))
	if err != nil {
		t.Fatal(err)
	}
	if g := slices.Sorted(slices.Values(got["ada"].Groups)); !slices.Equal(g, []string{"ad-staff", "jira-users"}) {
		t.Errorf("ada's groups %q (Everyone must not appear)", g)
	}
	if n := e.srv.Requests("GET /api/v1/groups/{id}/users"); n != 2 {
		t.Errorf("%d member reads, want 2 (Everyone is not read)", n)
	}

	for _, scope := range []string{"jira-users", jira} {
		got, _, err = e.pull(e.open(func(c *okta.Config) { c.Groups = []string{scope} }))
		if err != nil || !slices.Equal(sortedKeys(got), []string{"ada", "cy"}) {
			t.Errorf("scope %s: %q, %v", scope, sortedKeys(got), err)
		}
	}
	p, err := e.open(func(c *okta.Config) { c.Groups = []string{"jira-users"} }).Person(context.Background(), bob)
	if err != nil || !p.OutOfScope || !slices.Equal(p.Groups, []string{"ad-staff"}) {
		t.Errorf("Person(bob) = %+v, %v", p, err)
	}
	for _, missing := range []string{"nope", "00g00000000000000000"} {
		_, _, err := e.pull(e.open(func(c *okta.Config) { c.Groups = []string{missing} }))
		if !errors.Is(err, directory.ErrIncomplete) {
			t.Errorf("scope %q: Pull = %v, want ErrIncomplete", missing, err)
		}
	}
}

func TestServiceApp(t *testing.T) {
	t.Parallel()
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ecDER, _ := x509.MarshalECPrivateKey(ecKey)
	keys := map[string]struct {
		pem string
		pub any
	}{
		"rsa": {string(pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(rsaKey)})), &rsaKey.PublicKey},
		"ec":  {string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: ecDER})), &ecKey.PublicKey},
	}
	for name, k := range keys {
		e := newEnv(t)
		e.srv.AddServiceApp("0oa-app", k.pub, "kid1", "okta.users.read", "okta.groups.read")
		e.user("ada", "ACTIVE", nil)
		conn := e.open(func(c *okta.Config) {
			c.APIToken, c.ClientID, c.PrivateKey, c.KeyID = config.Secret{}, "0oa-app", config.SecretValue(k.pem), "kid1"
		})
		for range 2 {
			if got, _, err := e.pull(conn); err != nil || len(got) != 1 {
				t.Fatalf("%s: Pull = %v, %d people", name, err, len(got))
			}
		}
		if n := e.srv.Requests("POST /oauth2/v1/token"); n != 1 {
			t.Errorf("%s: %d token requests for two pulls, want 1", name, n)
		}
		e.srv.RevokeTokens()
		if _, _, err := e.pull(conn); err != nil {
			t.Errorf("%s: Pull after revocation = %v, want one refresh", name, err)
		}
	}

	// A scope the app was not granted: the OAuth error comes through.
	e := newEnv(t)
	e.srv.AddServiceApp("0oa-app", &rsaKey.PublicKey, "", "okta.users.read")
	_, _, err := e.pull(e.open(func(c *okta.Config) {
		c.APIToken, c.ClientID, c.PrivateKey = config.Secret{}, "0oa-app", config.SecretValue(keys["rsa"].pem)
	}))
	var oe *rest.OAuthError
	if !errors.As(err, &oe) || oe.Code != "invalid_scope" {
		t.Errorf("Pull without okta.groups.read = %v, want invalid_scope", err)
	}
}

func TestErrorBody(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	_, _, err := e.pull(e.open(func(c *okta.Config) { c.APIToken = config.SecretValue("wrong") }))
	var ae *okta.APIError
	if !errors.As(err, &ae) || ae.Code != "E0000011" || ae.Status != 401 || ae.ID == "" {
		t.Fatalf("Pull = %v, want E0000011 decoded", err)
	}
	if n := e.srv.Requests(""); n != 1 {
		t.Errorf("%d requests: an SSWS 401 is final", n)
	}
}

func TestRateLimits(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	for i := range 6 {
		e.user(fmt.Sprintf("u%d", i), "ACTIVE", nil)
	}
	e.srv.SetRateLimit(2, time.Minute) // two users calls a minute
	got, waited, err := e.pull(e.open(func(c *okta.Config) { c.PageSize = 2 }))
	if err != nil || len(got) != 6 {
		t.Fatalf("Pull = %v, %d people", err, len(got))
	}
	// 3 + 1 users calls at 2 a minute: the client waits for the windows.
	if waited < time.Minute || waited > 3*time.Minute {
		t.Errorf("waited %s for the rate limit windows", waited)
	}
	if n := e.calls.Total("throttled"); n > 1 {
		t.Errorf("%d calls throttled: Remaining 0 should pace the client before Okta refuses", n)
	}

	// The concurrent-request limit answers 429 with Limit 0.
	e2 := newEnv(t)
	for i := range 4 {
		g := e2.srv.AddGroup(oktatest.Group{Name: fmt.Sprintf("g%d", i)})
		e2.srv.AddMember(g, e2.user(fmt.Sprintf("u%d", i), "ACTIVE", nil))
	}
	e2.srv.SetConcurrencyLimit(1)
	got, _, err = e2.pull(e2.open(func(c *okta.Config) { c.Concurrency = 4 }))
	if err != nil || len(got) != 4 {
		t.Errorf("Pull under a concurrency limit = %v, %d people", err, len(got))
	}
}

func TestPersonLookups(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ada := e.user("ada", "ACTIVE", map[string]any{"employeeNumber": "1001", "department": "R&D", "tags": []string{"a", "b"}})
	e.user("twin1", "ACTIVE", map[string]any{"employeeNumber": "7"})
	e.user("twin2", "ACTIVE", map[string]any{"employeeNumber": "7"})
	ctx := context.Background()
	tests := []struct {
		attr, subject string
		want          string // "ada", "notfound", "error"
	}{
		{"id", ada, "ada"},
		{"id", "ada@example.test", "notfound"}, // a login is not an id
		{"id", "00u0000000000nobody", "notfound"},
		{"login", "ADA@example.test", "ada"},
		{"login", ada, "notfound"}, // an id is not a login
		{"email", "ada@example.test", "ada"},
		{"email", `a"b@example.test`, "notfound"},
		{"employeeNumber", "1001", "ada"},
		{"employeeNumber", "7", "error"},
	}
	for _, tt := range tests {
		conn := e.open(func(c *okta.Config) { c.SubjectAttribute = tt.attr; c.Attributes = []string{"department", "tags"} })
		p, err := conn.Person(ctx, tt.subject)
		switch tt.want {
		case "ada":
			if err != nil || p.ID != ada || p.Subject != tt.subject && !strings.EqualFold(p.Subject, tt.subject) {
				t.Errorf("%s %q: %+v, %v", tt.attr, tt.subject, p, err)
			} else if !slices.Equal(p.Attributes["tags"], []string{"a", "b"}) || p.Attributes["department"][0] != "R&D" {
				t.Errorf("attributes %v", p.Attributes)
			}
		case "notfound":
			if !errors.Is(err, directory.ErrNotFound) {
				t.Errorf("%s %q: %v, want ErrNotFound", tt.attr, tt.subject, err)
			}
		default:
			if err == nil || errors.Is(err, directory.ErrNotFound) {
				t.Errorf("%s %q: %v, want an ambiguity error", tt.attr, tt.subject, err)
			}
		}
	}
}

// TestDeltaOverlapCoversSearchLag shows why deltas look back: a change
// the lagging search index has not taken in yet is caught by the next
// delta.
func TestDeltaOverlapCoversSearchLag(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.srv.SetSearchLag(2 * time.Minute)
	ada := e.user("ada", "ACTIVE", nil)
	e.clock.Advance(time.Hour)
	conn := e.open(func(c *okta.Config) { c.DeltaOverlap = 5 * time.Minute })
	_, tok, err := e.delta(conn, "")
	if err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(time.Minute)
	e.srv.SetStatus(ada, "SUSPENDED")
	e.clock.Advance(30 * time.Second) // the delta starts after the change, before the index has it
	got, tok, err := e.delta(conn, tok)
	if err != nil {
		t.Fatal(err)
	}
	if _, seen := got["ada"]; seen {
		t.Fatal("the search index saw the change before its lag; the test proves nothing")
	}
	e.clock.Advance(3 * time.Minute)
	got, _, err = e.delta(conn, tok)
	if err != nil {
		t.Fatal(err)
	}
	if p, ok := got["ada"]; !ok || p.Status != directory.Disabled {
		t.Errorf("second delta = %v; the overlap must catch the lagging change", got)
	}

	// Without overlap, the change would be lost.
	e2 := newEnv(t)
	e2.srv.SetSearchLag(2 * time.Minute)
	bob := e2.user("bob", "ACTIVE", nil)
	e2.clock.Advance(time.Hour)
	conn2 := e2.open(func(c *okta.Config) { c.DeltaOverlap = time.Nanosecond })
	_, tok2, _ := e2.delta(conn2, "")
	e2.clock.Advance(time.Minute)
	e2.srv.SetStatus(bob, "SUSPENDED")
	e2.clock.Advance(30 * time.Second)
	_, tok2, _ = e2.delta(conn2, tok2)
	e2.clock.Advance(3 * time.Minute)
	if got, _, _ := e2.delta(conn2, tok2); len(got) != 0 {
		t.Errorf("without overlap the lagging change was still seen: %v (the emulator's lag is not modelled)", got)
	}
}

func TestDeltaTokens(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	conn := e.open(nil)
	_, tok, err := e.delta(conn, "")
	if err != nil || !strings.HasPrefix(tok, "okta1.") {
		t.Fatalf("start token %q, %v", tok, err)
	}
	other := e.open(func(c *okta.Config) { c.Attributes = []string{"department"} })
	for name, tk := range map[string]string{"garbage": "x", "bad time": "okta1.yesterday.abc", "other config": tok} {
		if _, _, err := e.delta(other, tk); !errors.Is(err, directory.ErrDeltaExpired) {
			t.Errorf("%s: Delta = %v, want ErrDeltaExpired", name, err)
		}
	}
}
