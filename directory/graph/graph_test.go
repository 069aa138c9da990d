package graph_test

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jonboulle/clockwork"

	"github.com/usherhq/usher/config"
	"github.com/usherhq/usher/directory"
	"github.com/usherhq/usher/directory/directorytest"
	"github.com/usherhq/usher/directory/graph"
	"github.com/usherhq/usher/directory/graph/graphtest"
	"github.com/usherhq/usher/directory/rest"
)

var t0 = time.Date(2025, 3, 1, 9, 0, 0, 0, time.UTC)

const tokenPath = "POST /{tenant}/oauth2/v2.0/token"

// env is an emulator, a fake clock and a way to open connectors on them.
type env struct {
	t     *testing.T
	srv   *graphtest.Server
	clock *clockwork.FakeClock
	calls *directorytest.Calls
}

func newEnv(t *testing.T) *env {
	t.Helper()
	clock := clockwork.NewFakeClockAt(t0)
	srv := graphtest.New(t, clock).Start()
	srv.AddSecretApp("app", "s3cret")
	return &env{t: t, srv: srv, clock: clock, calls: &directorytest.Calls{}}
}

func (e *env) config(mod func(*graph.Config)) *graph.Config {
	c := &graph.Config{TenantID: e.srv.Tenant, ClientID: "app", ClientSecret: config.SecretValue("s3cret"),
		LoginURL: e.srv.URL, GraphURL: e.srv.URL}
	if mod != nil {
		mod(c)
	}
	return c
}

func (e *env) open(mod func(*graph.Config)) *graph.Connector {
	e.t.Helper()
	c := e.config(mod)
	if errs := c.Validate(); len(errs) > 0 {
		e.t.Fatalf("Validate: %v", errs)
	}
	deps := directorytest.Deps(e.t, e.clock, e.calls)
	deps.Client = e.srv.Client()
	conn, err := c.Open("entra", "entra-idp", deps)
	if err != nil {
		e.t.Fatal(err)
	}
	return conn.(*graph.Connector)
}

// pull runs a Pull on the fake clock and returns the people by username.
func (e *env) pull(conn *graph.Connector) (map[string]directory.Person, time.Duration, error) {
	e.t.Helper()
	got := map[string]directory.Person{}
	waited, err := directorytest.Drive(e.t, e.clock, func(ctx context.Context) error {
		return conn.Pull(ctx, func(p directory.Page) error {
			for _, q := range p.People {
				got[strings.TrimSuffix(q.Username, "@contoso.test")] = q
			}
			return nil
		})
	})
	return got, waited, err
}

func (e *env) user(name string, enabled bool, props map[string]any) string {
	return e.srv.AddUser(graphtest.User{UserPrincipalName: name + "@contoso.test", Mail: name + "@contoso.test",
		DisplayName: name, AccountEnabled: enabled, Props: props})
}

func (e *env) group(name string, members ...string) string {
	id := e.srv.AddGroup(graphtest.Group{DisplayName: name, SecurityEnabled: true})
	for _, m := range members {
		e.srv.AddMember(id, m)
	}
	return id
}

func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

func sorted(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	good := func() graph.Config {
		return graph.Config{TenantID: "contoso.onmicrosoft.com", ClientID: "app", ClientSecret: config.SecretValue("x")}
	}
	tests := []struct {
		name   string
		mod    func(*graph.Config)
		fields []string
	}{
		{"minimal", func(*graph.Config) {}, nil},
		{"missing ids", func(c *graph.Config) { c.TenantID, c.ClientID = "", "" }, []string{"tenant_id", "client_id"}},
		{"no credential", func(c *graph.Config) { c.ClientSecret = config.Secret{} }, []string{"client_secret"}},
		{"both credentials", func(c *graph.Config) {
			c.PrivateKey, c.Certificate = config.SecretValue("k"), config.SecretValue("c")
		}, []string{"client_secret"}},
		{"key without certificate", func(c *graph.Config) {
			c.ClientSecret, c.PrivateKey = config.Secret{}, config.SecretValue("k")
		}, []string{"certificate"}},
		{"certificate alone", func(c *graph.Config) { c.Certificate = config.SecretValue("c") }, []string{"certificate"}},
		{"bad alg", func(c *graph.Config) { c.AssertionAlg = "HS256" }, []string{"assertion_alg"}},
		{"plain http", func(c *graph.Config) { c.GraphURL = "http://graph.microsoft.com" }, []string{"graph_url"}},
		{"loopback http", func(c *graph.Config) { c.GraphURL, c.LoginURL = "http://127.0.0.1:9", "http://localhost:9" }, nil},
		{"url with path", func(c *graph.Config) { c.LoginURL = "https://login.microsoftonline.com/tenant" }, []string{"login_url"}},
		{"subject", func(c *graph.Config) { c.SubjectAttribute = "department" }, []string{"subject_attribute"}},
		{"groups", func(c *graph.Config) { c.Groups = []string{"a", "", "a"} }, []string{"groups[1]", "groups[2]"}},
		{"advanced filters", func(c *graph.Config) {
			c.UserFilter, c.GroupFilter = "userType ne 'Guest'", "endswith(displayName,'-jira')"
		}, []string{"user_filter", "group_filter"}},
		{"not", func(c *graph.Config) { c.UserFilter = "not(accountEnabled eq true)" }, []string{"user_filter"}},
		{"words inside strings are fine", func(c *graph.Config) {
			c.UserFilter = "department eq 'not ne endswith' and startswith(jobTitle,'it''s')"
		}, nil},
		{"unterminated", func(c *graph.Config) { c.UserFilter = "department eq 'x" }, []string{"user_filter"}},
		{"query option", func(c *graph.Config) { c.UserFilter = "$count=true" }, []string{"user_filter"}},
		{"attributes", func(c *graph.Config) { c.Attributes = []string{"department", "bad name", "1x"} }, []string{"attributes[1]", "attributes[2]"}},
		{"limits", func(c *graph.Config) {
			c.PageSize, c.Concurrency, c.Timeout, c.MaxWait = 1000, 17, -1, -1
		}, []string{"page_size", "concurrency", "timeout", "max_wait"}},
	}
	for _, tt := range tests {
		c := good()
		tt.mod(&c)
		var fields []string
		for _, err := range c.Validate() {
			var fe *config.FieldError
			if !errors.As(err, &fe) {
				t.Errorf("%s: %v is not a *config.FieldError", tt.name, err)
				continue
			}
			fields = append(fields, fe.Field)
		}
		if !slices.Equal(sorted(fields), sorted(tt.fields)) {
			t.Errorf("%s: errors on %q, want %q", tt.name, fields, tt.fields)
		}
	}
}

func newCert(t *testing.T) (keyPEM, certPEM string, cert *x509.Certificate) {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "usher"},
		NotBefore: t0.Add(-time.Hour), NotAfter: t0.Add(365 * 24 * time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ = x509.ParseCertificate(der)
	return string(pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)})),
		string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})), cert
}

func TestCertificateCredential(t *testing.T) {
	t.Parallel()
	keyPEM, certPEM, cert := newCert(t)
	otherKey, otherCert, _ := newCert(t)
	for _, alg := range []string{"", "PS256", "RS256"} {
		e := newEnv(t)
		e.srv.AddCertApp("cert-app", cert)
		e.user("ada", true, nil)
		conn := e.open(func(c *graph.Config) {
			c.ClientID, c.ClientSecret = "cert-app", config.Secret{}
			c.PrivateKey, c.Certificate, c.AssertionAlg = config.SecretValue(keyPEM), config.SecretValue(certPEM), alg
		})
		got, _, err := e.pull(conn)
		if err != nil || len(got) != 1 {
			t.Errorf("alg %q: Pull = %v, %d people", alg, err, len(got))
		}
	}

	// A key whose certificate Entra does not know: the token endpoint's
	// refusal comes through, and the pull is incomplete.
	e := newEnv(t)
	e.srv.AddCertApp("cert-app", cert)
	conn := e.open(func(c *graph.Config) {
		c.ClientID, c.ClientSecret = "cert-app", config.Secret{}
		c.PrivateKey, c.Certificate = config.SecretValue(otherKey), config.SecretValue(otherCert)
	})
	_, _, err := e.pull(conn)
	var oe *rest.OAuthError
	if !errors.As(err, &oe) || oe.Code != "invalid_client" || !errors.Is(err, directory.ErrIncomplete) {
		t.Errorf("Pull with an unknown certificate = %v, want invalid_client wrapping ErrIncomplete", err)
	}

	// A certificate that does not match the key is refused at Open.
	c := e.config(func(c *graph.Config) {
		c.ClientSecret = config.Secret{}
		c.PrivateKey, c.Certificate = config.SecretValue(keyPEM), config.SecretValue(otherCert)
	})
	if _, err := c.Open("entra", "idp", directory.Deps{}); err == nil || !strings.Contains(err.Error(), "public key") {
		t.Errorf("Open(mismatched certificate) = %v", err)
	}
}

func TestSecretRefused(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	conn := e.open(func(c *graph.Config) { c.ClientSecret = config.SecretValue("wrong") })
	_, _, err := e.pull(conn)
	var oe *rest.OAuthError
	if !errors.As(err, &oe) || oe.Code != "invalid_client" || !strings.Contains(oe.Description, "AADSTS7000215") {
		t.Errorf("Pull = %v, want the AADSTS7000215 refusal", err)
	}
	if n := e.srv.Requests(tokenPath); n != 1 {
		t.Errorf("%d token requests, want 1: a refused secret is not retried", n)
	}
}

func TestTokenCachedRenewedAndRefreshed(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.user("ada", true, nil)
	conn := e.open(nil)
	for range 2 {
		if _, _, err := e.pull(conn); err != nil {
			t.Fatal(err)
		}
	}
	if n := e.srv.Requests(tokenPath); n != 1 {
		t.Errorf("%d token requests for two pulls, want 1 (cached)", n)
	}
	e.clock.Advance(55 * time.Minute) // 4m59s left of 3599s: renew
	if _, _, err := e.pull(conn); err != nil {
		t.Fatal(err)
	}
	if n := e.srv.Requests(tokenPath); n != 2 {
		t.Errorf("%d token requests, want a renewal before expiry", n)
	}
	// A token Graph stops accepting: one refresh and retry, no failure.
	e.srv.RevokeTokens()
	if _, _, err := e.pull(conn); err != nil {
		t.Fatalf("Pull after revocation: %v", err)
	}
	if n := e.srv.Requests(tokenPath); n != 3 {
		t.Errorf("%d token requests, want one refresh after the 401", n)
	}
}

func TestErrorEnvelope(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.srv.DenyApp("app")
	conn := e.open(nil)
	_, _, err := e.pull(conn)
	var ae *graph.APIError
	if !errors.As(err, &ae) || ae.Code != "Authorization_RequestDenied" || ae.Status != 403 || ae.RequestID == "" {
		t.Fatalf("Pull = %v, want the Authorization_RequestDenied envelope decoded", err)
	}
	if !strings.Contains(err.Error(), "Insufficient privileges") {
		t.Errorf("error %q does not carry Graph's message", err)
	}
	if n := e.srv.Requests("GET /v1.0/groups"); n != 1 {
		t.Errorf("a 403 was retried (%d calls)", n)
	}
}

func TestScopeByUserFilter(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.user("ada", true, map[string]any{"userType": "Member"})
	guest := e.user("bob", true, map[string]any{"userType": "Guest"})
	conn := e.open(func(c *graph.Config) { c.UserFilter = "userType eq 'Member'" })
	got, _, err := e.pull(conn)
	if err != nil {
		t.Fatal(err)
	}
	if k := keys(got); !slices.Equal(k, []string{"ada"}) {
		t.Errorf("pulled %q, want [ada]", k)
	}
	p, err := conn.Person(context.Background(), guest)
	if err != nil || !p.OutOfScope {
		t.Errorf("Person(guest) = %+v, %v; want OutOfScope", p, err)
	}
}

func TestGroupFilterAndScopeGroups(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ada, bob, cy := e.user("ada", true, nil), e.user("bob", true, nil), e.user("cy", true, nil)
	jira := e.group("jira-users", ada, bob)
	e.group("jira-admins", ada)
	staff := e.group("staff", ada, cy)
	e.group("other", ada, bob, cy)

	// The scope group is outside the group filter: it decides scope but
	// is not reported.
	conn := e.open(func(c *graph.Config) {
		c.GroupFilter = "startswith(displayName,'jira-')"
		c.Groups = []string{staff}
	})
	got, _, err := e.pull(conn)
	if err != nil {
		t.Fatal(err)
	}
	if k := keys(got); !slices.Equal(k, []string{"ada", "cy"}) {
		t.Errorf("pulled %q, want [ada cy]", k)
	}
	if g := sorted(got["ada"].Groups); !slices.Equal(g, []string{"jira-admins", "jira-users"}) {
		t.Errorf("ada's groups %q, want only the filtered ones", g)
	}
	if len(got["cy"].Groups) != 0 || !got["cy"].GroupsComplete {
		t.Errorf("cy = %+v, want no groups, complete", got["cy"])
	}
	p, err := conn.Person(context.Background(), bob)
	if err != nil || !p.OutOfScope || !slices.Equal(p.Groups, []string{"jira-users"}) || p.GroupIDs[0] != jira {
		t.Errorf("Person(bob) = %+v, %v", p, err)
	}

	// Scope by display name.
	conn = e.open(func(c *graph.Config) { c.Groups = []string{"jira-users"} })
	got, _, err = e.pull(conn)
	if err != nil || !slices.Equal(keys(got), []string{"ada", "bob"}) {
		t.Errorf("pull scoped by name = %q, %v", keys(got), err)
	}
}

func TestMissingScopeGroupFailsThePull(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.user("ada", true, nil)
	e.group("dup")
	e.group("dup")
	for _, g := range []string{"no-such-group", uuid.NewString(), "dup"} {
		conn := e.open(func(c *graph.Config) { c.Groups = []string{g} })
		got, _, err := e.pull(conn)
		if !errors.Is(err, directory.ErrIncomplete) || len(got) != 0 {
			t.Errorf("scope %q: Pull = %v with %d people, want ErrIncomplete before listing anyone", g, err, len(got))
		}
	}
}

func TestAttributesAndLeaveDate(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.user("past", true, map[string]any{"employeeLeaveDateTime": t0.Add(-time.Hour).Format(time.RFC3339), "department": "R&D",
		"onPremisesExtensionAttributes": map[string]any{"extensionAttribute1": "x1", "extensionAttribute2": nil},
		"otherMails":                    []string{"a@x", "b@x"}})
	e.user("future", true, map[string]any{"employeeLeaveDateTime": t0.Add(24 * time.Hour).Format(time.RFC3339)})
	e.user("off", false, nil)
	conn := e.open(func(c *graph.Config) {
		c.LeaveDate = true
		c.Attributes = []string{"department", "onPremisesExtensionAttributes", "otherMails"}
	})
	got, _, err := e.pull(conn)
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]directory.Status{"past": directory.Disabled, "future": directory.Active, "off": directory.Disabled} {
		if got[name].Status != want {
			t.Errorf("%s: Status %v, want %v", name, got[name].Status, want)
		}
	}
	a := got["past"].Attributes
	if !slices.Equal(a["department"], []string{"R&D"}) || !slices.Equal(a["onPremisesExtensionAttributes/extensionAttribute1"], []string{"x1"}) ||
		!slices.Equal(a["otherMails"], []string{"a@x", "b@x"}) || len(a) != 3 {
		t.Errorf("attributes = %v", a)
	}
}

func TestSubjectAttributes(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ada := e.user("ada", true, map[string]any{"onPremisesSamAccountName": "alovelace"})
	e.user("twin1", true, map[string]any{"onPremisesSamAccountName": "twin"})
	e.user("twin2", true, map[string]any{"onPremisesSamAccountName": "twin"})
	ctx := context.Background()
	tests := []struct {
		attr, subject string
		wantErr       error
	}{
		{"id", ada, nil},
		{"id", "not-a-guid", directory.ErrNotFound},
		{"id", uuid.NewString(), directory.ErrNotFound},
		{"userPrincipalName", "ADA@contoso.test", nil},
		{"userPrincipalName", "nobody@contoso.test", directory.ErrNotFound},
		{"mail", "ada@contoso.test", nil},
		{"onPremisesSamAccountName", "alovelace", nil},
		{"onPremisesSamAccountName", "o'brien", directory.ErrNotFound},
		{"onPremisesSamAccountName", "twin", errors.New("ambiguous")},
	}
	for _, tt := range tests {
		conn := e.open(func(c *graph.Config) { c.SubjectAttribute = tt.attr })
		p, err := conn.Person(ctx, tt.subject)
		switch {
		case tt.wantErr == nil && (err != nil || p.ID != ada):
			t.Errorf("%s %q: Person = %+v, %v; want ada", tt.attr, tt.subject, p, err)
		case tt.wantErr == directory.ErrNotFound && !errors.Is(err, directory.ErrNotFound):
			t.Errorf("%s %q: Person = %v, want ErrNotFound", tt.attr, tt.subject, err)
		case tt.wantErr != nil && tt.wantErr != directory.ErrNotFound && (err == nil || errors.Is(err, directory.ErrNotFound)):
			t.Errorf("%s %q: Person = %v, want an ambiguity error", tt.attr, tt.subject, err)
		}
		if err == nil && tt.attr == "onPremisesSamAccountName" && p.Subject != "alovelace" {
			t.Errorf("Subject = %q, want the sAMAccountName", p.Subject)
		}
	}
}

func TestThrottling(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		status     int
		retryAfter func(now time.Time) string
		min, max   time.Duration
	}{
		{"429 seconds", 429, func(time.Time) string { return "30" }, 30 * time.Second, 31 * time.Second},
		{"503 http date", 503, func(now time.Time) string { return now.Add(45 * time.Second).Format(http.TimeFormat) }, 45 * time.Second, 46 * time.Second},
		{"504 no hint", 504, func(time.Time) string { return "" }, time.Second, 30 * time.Second},
		{"429 no hint", 429, func(time.Time) string { return "" }, time.Second, 30 * time.Second},
	}
	for _, tt := range tests {
		e := newEnv(t)
		for i := range 3 {
			e.user(fmt.Sprintf("u%d", i), true, nil)
		}
		e.srv.Inject(graphtest.Fault{Path: "/v1.0/users", Page: 2, Status: tt.status, RetryAfter: tt.retryAfter(e.clock.Now()), Times: 1})
		conn := e.open(func(c *graph.Config) { c.PageSize = 2 })
		got, waited, err := e.pull(conn)
		if err != nil || len(got) != 3 {
			t.Errorf("%s: Pull = %v with %d people", tt.name, err, len(got))
		}
		if waited < tt.min || waited > tt.max {
			t.Errorf("%s: waited %s, want %s to %s", tt.name, waited, tt.min, tt.max)
		}
	}
}

func TestThrottlingCappedByMaxWait(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.user("ada", true, nil)
	e.srv.Inject(graphtest.Fault{Path: "/v1.0/users", Status: 429, RetryAfter: "50"})
	conn := e.open(func(c *graph.Config) { c.MaxWait = 2 * time.Minute })
	_, waited, err := e.pull(conn)
	if !errors.Is(err, directory.ErrIncomplete) {
		t.Fatalf("Pull = %v, want ErrIncomplete once the wait budget is spent", err)
	}
	var re *rest.Error
	if !errors.As(err, &re) || !re.Throttled {
		t.Errorf("Pull = %v, want a throttled *rest.Error", err)
	}
	if waited > 2*time.Minute {
		t.Errorf("waited %s, more than max_wait", waited)
	}
}

// delta runs one Delta on the fake clock; people by username (Deleted
// ones by ID).
func (e *env) delta(conn *graph.Connector, token string) (map[string]directory.Person, string, error) {
	e.t.Helper()
	got := map[string]directory.Person{}
	var next string
	_, err := directorytest.Drive(e.t, e.clock, func(ctx context.Context) error {
		var err error
		next, err = conn.Delta(ctx, token, func(p directory.Page) error {
			for _, q := range p.People {
				key := strings.TrimSuffix(q.Username, "@contoso.test")
				if q.Status == directory.Deleted {
					key = q.ID
				}
				got[key] = q
			}
			return nil
		})
		return err
	})
	return got, next, err
}

func TestDeltaExpiry(t *testing.T) {
	t.Parallel()
	for _, how := range []string{"syncStateNotFound", "resyncRequired", "gone"} {
		e := newEnv(t)
		e.srv.SetExpiredAs(how)
		conn := e.open(nil)
		_, tok, err := e.delta(conn, "")
		if err != nil {
			t.Fatal(err)
		}
		e.srv.ExpireDeltaTokens()
		if _, _, err := e.delta(conn, tok); !errors.Is(err, directory.ErrDeltaExpired) {
			t.Errorf("%s: Delta = %v, want ErrDeltaExpired", how, err)
		}
	}

	// Seven days pass.
	e := newEnv(t)
	conn := e.open(nil)
	_, tok, _ := e.delta(conn, "")
	e.clock.Advance(7*24*time.Hour + time.Minute)
	if _, _, err := e.delta(conn, tok); !errors.Is(err, directory.ErrDeltaExpired) {
		t.Errorf("Delta after 7 days = %v, want ErrDeltaExpired", err)
	}

	// Tokens that are not ours, or from another configuration.
	_, tok, _ = e.delta(conn, "")
	other := e.open(func(c *graph.Config) { c.Attributes = []string{"department"} })
	for name, tk := range map[string]string{"garbage": "nonsense", "corrupt": "graph1.!!!", "other config": tok} {
		if _, _, err := e.delta(other, tk); !errors.Is(err, directory.ErrDeltaExpired) {
			t.Errorf("%s token: Delta = %v, want ErrDeltaExpired", name, err)
		}
	}
}

func TestDeltaChanges(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.srv.SetDeltaPageSize(2, 2) // small pages, members@delta split
	e.srv.SetDeltaEmptyFirstPage(true)
	ada, bob, cy, dee := e.user("ada", true, nil), e.user("bob", true, nil), e.user("cy", true, nil), e.user("dee", true, nil)
	staff := e.group("staff", ada, bob, cy)
	contractors := e.group("contractors", dee)
	big := e.group("big")
	conn := e.open(func(c *graph.Config) { c.Groups = []string{"staff"} })
	_, tok, err := e.delta(conn, "")
	if err != nil {
		t.Fatal(err)
	}

	e.srv.HardDeleteUser(bob)
	e.srv.SoftDeleteUser(cy)
	e.srv.RestoreUser(cy)
	e.srv.AddMember(staff, contractors) // dee joins the scope through nesting
	e.srv.RemoveMember(staff, ada)      // ada leaves the scope
	var many []string
	for i := range 5 {
		id := e.user(fmt.Sprintf("m%d", i), true, nil)
		many = append(many, id)
		e.srv.AddMember(big, id) // members@delta spread over pages
	}
	got, tok2, err := e.delta(conn, tok)
	if err != nil {
		t.Fatal(err)
	}
	if p := got[bob]; p.Status != directory.Deleted || p.Subject != bob {
		t.Errorf("hard-deleted bob = %+v, want Deleted with the id as subject", p)
	}
	if p := got["cy"]; p.Status != directory.Active || p.OutOfScope || !slices.Equal(p.Groups, []string{"staff"}) {
		t.Errorf("restored cy = %+v, want active, in scope, in staff", p)
	}
	if p := got["dee"]; p.OutOfScope || !slices.Equal(sorted(p.Groups), []string{"contractors", "staff"}) {
		t.Errorf("dee = %+v, want in scope through nesting", p)
	}
	if p, ok := got["ada"]; !ok || !p.OutOfScope {
		t.Errorf("ada = %+v, want reported OutOfScope", p)
	}
	for i := range 5 {
		if p, ok := got[fmt.Sprintf("m%d", i)]; !ok || !p.OutOfScope || !slices.Equal(p.Groups, []string{"big"}) {
			t.Errorf("m%d = %+v, want reported (out of scope, in big)", i, p)
		}
	}

	// Nothing changed: nothing reported, a token handed on.
	got, tok3, err := e.delta(conn, tok2)
	if err != nil || len(got) != 0 || tok3 == "" {
		t.Errorf("empty delta = %d people, %q, %v", len(got), tok3, err)
	}
}

// TestDeltaHundredChanges measures the calls a delta of 100 changes
// costs in a directory of 2,000 people and 100 groups.
func TestDeltaHundredChanges(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	var users, groups []string
	for i := range 2000 {
		users = append(users, e.user(fmt.Sprintf("u%04d", i), true, nil))
	}
	for g := range 100 {
		groups = append(groups, e.group(fmt.Sprintf("g%03d", g), users[g*20:g*20+20]...))
	}
	conn := e.open(nil)
	_, tok, err := e.delta(conn, "")
	if err != nil {
		t.Fatal(err)
	}
	for i := range 100 {
		switch i % 4 {
		case 0:
			e.srv.UpdateUser(users[i*7], map[string]any{"displayName": "renamed"})
		case 1:
			e.srv.UpdateUser(users[i*7], map[string]any{"accountEnabled": false})
		case 2:
			e.srv.AddMember(groups[i%100], users[1000+i])
		case 3:
			e.srv.SoftDeleteUser(users[i*7])
		}
	}
	before := e.srv.Requests("")
	got, _, err := e.delta(conn, tok)
	if err != nil {
		t.Fatal(err)
	}
	calls := e.srv.Requests("") - before
	t.Logf("delta of 100 changes: %d people reported in %d calls", len(got), calls)
	if len(got) != 100 {
		t.Errorf("%d people reported, want 100", len(got))
	}
	// 2 delta rounds, 75 re-reads in 5 chunks of 15, 75 memberships.
	if calls > 2+5+75+2 {
		t.Errorf("%d calls for 100 changes", calls)
	}
}

func TestMemberGroups(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ada := e.user("ada", true, nil)
	inner := e.group("inner", ada)
	outer := e.srv.AddGroup(graphtest.Group{DisplayName: "outer", Props: map[string]any{
		"onPremisesSamAccountName": "OUTER", "onPremisesSecurityIdentifier": "S-1-5-21-1"}})
	e.srv.AddMember(outer, inner)
	e.group("unrelated")
	conn := e.open(nil)
	ctx := context.Background()
	got, err := conn.MemberGroups(ctx, ada)
	if err != nil {
		t.Fatal(err)
	}
	slices.SortFunc(got, func(a, b graph.Group) int { return strings.Compare(a.DisplayName, b.DisplayName) })
	want := []graph.Group{
		{ID: inner, DisplayName: "inner", SecurityEnabled: true},
		{ID: outer, DisplayName: "outer", OnPremisesSamAccountName: "OUTER", OnPremisesSecurityIdentifier: "S-1-5-21-1"},
	}
	if !slices.Equal(got, want) {
		t.Errorf("MemberGroups = %+v, want %+v", got, want)
	}
	before := e.srv.Requests("")
	if _, err := conn.MemberGroups(ctx, "../../groups"); !errors.Is(err, directory.ErrNotFound) {
		t.Errorf("MemberGroups(not an id) = %v, want ErrNotFound", err)
	}
	if e.srv.Requests("") != before {
		t.Error("MemberGroups sent a request for a malformed id")
	}
	if _, err := conn.MemberGroups(ctx, uuid.NewString()); !errors.Is(err, directory.ErrNotFound) {
		t.Errorf("MemberGroups(unknown) = %v, want ErrNotFound", err)
	}
}
