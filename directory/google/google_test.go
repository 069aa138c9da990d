package google_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
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
	"github.com/usherhq/usher/directory/google"
	"github.com/usherhq/usher/directory/google/googletest"
	"github.com/usherhq/usher/directory/rest"
)

var t0 = time.Date(2025, 3, 1, 9, 0, 0, 0, time.UTC)

type env struct {
	t        *testing.T
	srv      *googletest.Server
	clock    *clockwork.FakeClock
	calls    *directorytest.Calls
	key      []byte
	clientID string
}

const admin = "admin@example.test"

func newEnv(t *testing.T) *env {
	clock := clockwork.NewFakeClockAt(t0)
	srv := googletest.New(t, clock).Start()
	key, clientID := srv.NewServiceAccount("usher-sync")
	srv.Delegate(clientID, googletest.ScopeUserReadonly, googletest.ScopeGroupReadonly)
	srv.AddUser(googletest.User{PrimaryEmail: admin, IsAdmin: true, OrgUnitPath: "/IT"})
	return &env{t: t, srv: srv, clock: clock, calls: &directorytest.Calls{}, key: key, clientID: clientID}
}

func (e *env) config(mod func(*google.Config)) *google.Config {
	c := &google.Config{ServiceAccountKey: config.SecretValue(string(e.key)), Admin: admin, OAuthURL: e.srv.URL, APIURL: e.srv.URL}
	if mod != nil {
		mod(c)
	}
	return c
}

func (e *env) open(mod func(*google.Config)) *google.Connector {
	e.t.Helper()
	deps := directorytest.Deps(e.t, e.clock, e.calls)
	deps.Client = e.srv.Client()
	conn, err := e.config(mod).Open("workspace", "google-idp", deps)
	if err != nil {
		e.t.Fatal(err)
	}
	return conn.(*google.Connector)
}

func (e *env) user(local string, mod func(*googletest.User)) string {
	u := googletest.User{PrimaryEmail: local + "@example.test", GivenName: local, FamilyName: "X", OrgUnitPath: "/Staff"}
	if mod != nil {
		mod(&u)
	}
	return e.srv.AddUser(u)
}

func (e *env) group(name string, members ...string) string {
	id := e.srv.AddGroup(googletest.Group{Email: name + "@example.test", Name: strings.ToUpper(name)})
	for _, m := range members {
		e.srv.AddMember(id, m)
	}
	return id
}

// pull returns the people by the local part of their address.
func (e *env) pull(conn *google.Connector) (map[string]directory.Person, time.Duration, error) {
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
	delete(got, "admin")
	return got, waited, err
}

func (e *env) person(conn *google.Connector, subject string) (*directory.Person, error) {
	e.t.Helper()
	var p *directory.Person
	_, err := directorytest.Drive(e.t, e.clock, func(ctx context.Context) error {
		var err error
		p, err = conn.Person(ctx, subject)
		return err
	})
	return p, err
}

func keys[V any](m map[string]V) []string {
	var out []string
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
	key := config.SecretValue("{}")
	ok := func(mod func(*google.Config)) google.Config {
		c := google.Config{ServiceAccountKey: key, Admin: "admin@example.com"}
		mod(&c)
		return c
	}
	tests := []struct {
		name   string
		c      google.Config
		fields []string
	}{
		{"minimal", ok(func(*google.Config) {}), nil},
		{"full", ok(func(c *google.Config) {
			c.Customer, c.OAuthURL, c.APIURL = "C01abc234", "http://127.0.0.1:9", "https://admin.googleapis.com/"
			c.SubjectAttribute, c.OrgUnits, c.Groups = "externalIds.organization", []string{"/", "/Staff/Eng"}, []string{"jira@example.com", "03x8tuzt3hqdv5v"}
			c.GroupNames, c.Attributes = "name", []string{"orgUnitPath", "organizations.department", "customSchemas.HR.leaveDate", "externalIds.login id"}
			c.PageSize, c.Concurrency, c.Timeout, c.MaxWait = 500, 16, time.Second, time.Minute
		}), nil},
		{"nothing", google.Config{}, []string{"service_account_key", "admin"}},
		{"admin", ok(func(c *google.Config) { c.Admin = "admin" }), []string{"admin"}},
		{"customer", ok(func(c *google.Config) { c.Customer = "example.com" }), []string{"customer"}},
		{"urls", ok(func(c *google.Config) {
			c.OAuthURL, c.APIURL = "http://oauth2.googleapis.com", "https://admin.googleapis.com/admin/directory/v1"
		}),
			[]string{"oauth_url", "api_url"}},
		{"subjects", ok(func(c *google.Config) { c.SubjectAttribute = "mail" }), []string{"subject_attribute"}},
		{"subject path", ok(func(c *google.Config) { c.SubjectAttribute = "organizations.department" }), []string{"subject_attribute"}},
		{"org units", ok(func(c *google.Config) { c.OrgUnits = []string{"Staff", "/Staff/", "/a//b", "/x", "/X"} }),
			[]string{"org_units[0]", "org_units[1]", "org_units[2]", "org_units[4]"}},
		{"groups", ok(func(c *google.Config) { c.Groups = []string{"", "a b", "x@y", "g@example.com", "G@example.com"} }),
			[]string{"groups[0]", "groups[1]", "groups[2]", "groups[4]"}},
		{"query", ok(func(c *google.Config) { c.Query = "isSuspended=false" }), []string{"query"}},
		{"group names", ok(func(c *google.Config) { c.GroupNames = "id" }), []string{"group_names"}},
		{"attributes", ok(func(c *google.Config) {
			c.Attributes = []string{"ok", "a..b", "externalIds", "customSchemas.HR", "bad-name"}
		}), []string{"attributes[1]", "attributes[2]", "attributes[3]", "attributes[4]"}},
		{"limits", ok(func(c *google.Config) { c.PageSize, c.Concurrency, c.Timeout, c.MaxWait = 501, 17, -1, -1 }),
			[]string{"page_size", "concurrency", "timeout", "max_wait"}},
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
			if fe.Field == "query" && !strings.Contains(fe.Msg, "36 hours") {
				t.Errorf("query refusal does not say why: %s", fe.Msg)
			}
		}
		if !slices.Equal(sorted(fields), sorted(tt.fields)) {
			t.Errorf("%s: errors on %q, want %q", tt.name, fields, tt.fields)
		}
	}
}

func TestOpenRefusesBadKeys(t *testing.T) {
	t.Parallel()
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _ := x509.MarshalPKCS8PrivateKey(ec)
	ecPEM := string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
	keyFile := func(typ, pk string) string {
		b, _ := json.Marshal(map[string]string{"type": typ, "client_email": "a@b.iam.gserviceaccount.com", "private_key": pk})
		return string(b)
	}
	for name, text := range map[string]string{
		"not json":       "-----BEGIN PRIVATE KEY-----",
		"user creds":     keyFile("authorized_user", ecPEM),
		"no key":         keyFile("service_account", ""),
		"ec key":         keyFile("service_account", ecPEM),
		"garbage in pem": keyFile("service_account", "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"),
	} {
		c := &google.Config{ServiceAccountKey: config.SecretValue(text), Admin: admin}
		if _, err := c.Open("w", "g", directory.Deps{}); err == nil || !strings.Contains(err.Error(), "service_account_key") {
			t.Errorf("%s: Open = %v, want a service_account_key error", name, err)
		}
	}
}

func TestAuthFailures(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		setup func(e *env)
		mod   func(c *google.Config)
		want  string // in the error
		check func(t *testing.T, err error)
	}{
		{"delegation missing", func(e *env) { e.srv.Delegate(e.clientID, googletest.ScopeUserReadonly) }, nil,
			"domain-wide delegation does not authorize client ID",
			func(t *testing.T, err error) {
				var oe *rest.OAuthError
				if !errors.As(err, &oe) || oe.Code != "unauthorized_client" {
					t.Errorf("want unauthorized_client, got %v", err)
				}
			}},
		{"unknown admin", nil, func(c *google.Config) { c.Admin = "ghost@example.test" }, `admin "ghost@example.test" is not a user`, nil},
		{"not an admin", func(e *env) { e.user("bob", nil) }, func(c *google.Config) { c.Admin = "bob@example.test" },
			"may read users and groups",
			func(t *testing.T, err error) {
				var ae *google.APIError
				if !errors.As(err, &ae) || ae.Status != 403 || ae.Reason != "forbidden" {
					t.Errorf("want a 403 forbidden APIError, got %v", err)
				}
			}},
		{"other key", func(e *env) { e.key, _ = e.srv.NewServiceAccount("other") }, nil, "domain-wide delegation", nil},
	}
	for _, tt := range tests {
		e := newEnv(t)
		if tt.setup != nil {
			tt.setup(e)
		}
		_, _, err := e.pull(e.open(tt.mod))
		if !errors.Is(err, directory.ErrIncomplete) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: Pull = %v, want ErrIncomplete saying %q", tt.name, err, tt.want)
		}
		if tt.check != nil {
			tt.check(t, err)
		}
		// Refusals are final: no retry loop.
		if n := e.srv.Requests(""); n > 2 {
			t.Errorf("%s: %d requests for a refusal", tt.name, n)
		}
	}
}

func TestTokenCached(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.user("ada", nil)
	e.group("eng", e.user("bob", nil))
	conn := e.open(nil)
	for range 2 {
		if got, _, err := e.pull(conn); err != nil || len(got) != 2 {
			t.Fatalf("Pull = %v, %v", keys(got), err)
		}
	}
	if n := e.srv.Requests("POST /token"); n != 1 {
		t.Errorf("%d token requests for two pulls, want 1", n)
	}
	e.srv.RevokeTokens()
	if _, _, err := e.pull(conn); err != nil {
		t.Fatalf("Pull after revocation: %v", err)
	}
	if n := e.srv.Requests("POST /token"); n != 2 {
		t.Errorf("%d token requests after a revocation, want one more", n)
	}
	e.clock.Advance(time.Hour)
	if _, _, err := e.pull(conn); err != nil {
		t.Fatal(err)
	}
	if n := e.srv.Requests("POST /token"); n != 3 {
		t.Errorf("%d token requests an hour on, want a renewal", n)
	}
}

func TestStatusesAndAttributes(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.user("ada", func(u *googletest.User) {
		u.Aliases = []string{"a.lovelace@example.test"}
		u.ExternalIDs = []googletest.ExternalID{{Type: "organization", Value: "1001"}, {Type: "custom", CustomType: "badge", Value: "B7"}}
		u.CustomSchemas = map[string]map[string]any{
			"HR":    {"leaveDate": "2025-03-31", "cost": 12.5, "tags": []any{map[string]any{"type": "work", "value": "x"}, map[string]any{"type": "work", "value": "y"}}},
			"Other": {"secret": "not asked for"},
		}
		u.Extra = map[string]any{"organizations": []any{map[string]any{"department": "R&D", "primary": true}, map[string]any{"department": "Ops"}}}
	})
	e.user("sus", func(u *googletest.User) { u.Suspended = true })
	e.user("arc", func(u *googletest.User) { u.Archived = true })
	gone := e.user("gone", nil)
	e.srv.DeleteUser(gone)
	conn := e.open(func(c *google.Config) {
		c.Attributes = []string{"orgUnitPath", "aliases", "organizations.department", "externalIds.organization", "externalIds.badge",
			"customSchemas.HR.leaveDate", "customSchemas.HR.cost", "customSchemas.HR.tags", "isAdmin", "customSchemas.Nope.x"}
		c.PageSize = 1
	})
	got, _, err := e.pull(conn)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(keys(got), []string{"ada", "arc", "sus"}) {
		t.Fatalf("pulled %q (a deleted user must not be listed)", keys(got))
	}
	for k, want := range map[string]directory.Status{"ada": directory.Active, "sus": directory.Disabled, "arc": directory.Disabled} {
		if got[k].Status != want {
			t.Errorf("%s: Status %v, want %v", k, got[k].Status, want)
		}
	}
	a := got["ada"].Attributes
	want := map[string][]string{
		"orgUnitPath": {"/Staff"}, "aliases": {"a.lovelace@example.test"}, "organizations.department": {"R&D", "Ops"},
		"externalIds.organization": {"1001"}, "externalIds.badge": {"B7"}, "customSchemas.HR.leaveDate": {"2025-03-31"},
		"customSchemas.HR.cost": {"12.5"}, "customSchemas.HR.tags": {"x", "y"}, "isAdmin": {"false"},
	}
	for k, v := range want {
		if !slices.Equal(a[k], v) {
			t.Errorf("attribute %s = %q, want %q", k, a[k], v)
		}
	}
	if len(a) != len(want) {
		t.Errorf("attributes %v, want exactly %v", a, want)
	}
	if p := got["ada"]; p.DisplayName != "ada X" || p.GivenName != "ada" || p.FamilyName != "X" || p.Email != "ada@example.test" {
		t.Errorf("ada = %+v", p)
	}
}

func TestGroupsNestingAndNames(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ada, bob := e.user("ada", nil), e.user("bob", nil)
	platform := e.group("platform", ada)
	eng := e.group("eng", platform, bob)
	staff := e.group("staff", eng)
	// A cycle and an everyone-group.
	loopA := e.group("loopa", bob)
	loopB := e.group("loopb", loopA)
	e.srv.AddMember(loopA, loopB)
	e.group("everyone", googletest.CustomerID)

	wantAda := []string{"eng@example.test", "platform@example.test", "staff@example.test"}
	wantBob := []string{"eng@example.test", "loopa@example.test", "loopb@example.test", "staff@example.test"}
	conn := e.open(func(c *google.Config) { c.PageSize = 2 })
	got, _, err := e.pull(conn)
	if err != nil {
		t.Fatal(err)
	}
	if g := sorted(got["ada"].Groups); !slices.Equal(g, wantAda) {
		t.Errorf("pull: ada's groups %q, want %q", g, wantAda)
	}
	if g := sorted(got["bob"].Groups); !slices.Equal(g, wantBob) {
		t.Errorf("pull: bob's groups %q, want %q", g, wantBob)
	}
	for _, id := range []string{ada, bob} {
		p, err := e.person(conn, id)
		if err != nil {
			t.Fatal(err)
		}
		want := wantAda
		if id == bob {
			want = wantBob
		}
		if g := sorted(p.Groups); !slices.Equal(g, want) {
			t.Errorf("Person(%s): groups %q, want %q (pull and lookup must agree)", p.Username, g, want)
		}
		if len(p.GroupIDs) != len(p.Groups) || !p.GroupsComplete {
			t.Errorf("Person(%s): %d ids for %d groups, complete %v", p.Username, len(p.GroupIDs), len(p.Groups), p.GroupsComplete)
		}
	}
	i := slices.Index(got["ada"].Groups, "staff@example.test")
	if i < 0 || got["ada"].GroupIDs[i] != staff {
		t.Errorf("GroupIDs %q do not line up with Groups %q", got["ada"].GroupIDs, got["ada"].Groups)
	}

	byName := e.open(func(c *google.Config) { c.GroupNames = "name" })
	p, err := e.person(byName, ada)
	if err != nil || !slices.Equal(sorted(p.Groups), []string{"ENG", "PLATFORM", "STAFF"}) {
		t.Errorf("group_names name: %v, %v", p, err)
	}
	_ = eng
}

func TestScope(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ada := e.user("ada", func(u *googletest.User) { u.OrgUnitPath = "/Staff/Eng" })
	bob := e.user("bob", func(u *googletest.User) { u.OrgUnitPath = "/Staffing" })
	cy := e.user("cy", func(u *googletest.User) { u.OrgUnitPath = "/staff" })
	dee := e.user("dee", func(u *googletest.User) { u.OrgUnitPath = "/Contractors" })
	jira := e.srv.AddGroup(googletest.Group{Email: "jira@example.test", Name: "Jira", Aliases: []string{"jira-users@example.test"}})
	inner := e.group("inner", ada)
	e.srv.AddMember(jira, inner)
	e.srv.AddMember(jira, dee)
	e.srv.AddMember(jira, bob)

	tests := []struct {
		name string
		mod  func(c *google.Config)
		want []string
	}{
		{"everyone", nil, []string{"ada", "bob", "cy", "dee"}},
		{"org unit and below, any case", func(c *google.Config) { c.OrgUnits = []string{"/Staff"} }, []string{"ada", "cy"}},
		{"root", func(c *google.Config) { c.OrgUnits = []string{"/"} }, []string{"ada", "bob", "cy", "dee"}},
		{"group by e-mail, nested", func(c *google.Config) { c.Groups = []string{"JIRA@example.test"} }, []string{"ada", "bob", "dee"}},
		{"group by alias", func(c *google.Config) { c.Groups = []string{"jira-users@example.test"} }, []string{"ada", "bob", "dee"}},
		{"group by id", func(c *google.Config) { c.Groups = []string{inner} }, []string{"ada"}},
		{"both", func(c *google.Config) {
			c.Groups, c.OrgUnits = []string{"jira@example.test"}, []string{"/Staff", "/Contractors"}
		}, []string{"ada", "dee"}},
	}
	for _, tt := range tests {
		conn := e.open(tt.mod)
		got, _, err := e.pull(conn)
		if err != nil || !slices.Equal(keys(got), tt.want) {
			t.Errorf("%s: pulled %q, %v; want %q", tt.name, keys(got), err, tt.want)
		}
		for _, id := range []string{ada, bob, cy, dee} {
			p, err := e.person(conn, id)
			if err != nil {
				t.Fatalf("%s: Person: %v", tt.name, err)
			}
			local := strings.TrimSuffix(p.Username, "@example.test")
			if in := slices.Contains(tt.want, local); p.OutOfScope == in {
				t.Errorf("%s: Person(%s).OutOfScope = %v, want %v", tt.name, local, p.OutOfScope, !in)
			}
		}
	}

	_, _, err := e.pull(e.open(func(c *google.Config) { c.Groups = []string{"nope@example.test"} }))
	if !errors.Is(err, directory.ErrIncomplete) || !strings.Contains(err.Error(), "no such group") {
		t.Errorf("a missing scope group: Pull = %v, want ErrIncomplete", err)
	}
	_ = cy
}

func TestEmptyAccount(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	got, _, err := e.pull(e.open(nil))
	if err != nil || len(got) != 0 {
		t.Errorf("Pull of an account with only its admin = %v, %v", keys(got), err)
	}
}

func TestPersonLookups(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ada := e.user("ada", func(u *googletest.User) {
		u.Aliases = []string{"lovelace@example.test"}
		u.ExternalIDs = []googletest.ExternalID{{Type: "organization", Value: "1001"}, {Type: "account", Value: "1001-acc"}}
		u.CustomSchemas = map[string]map[string]any{"SSO": {"nameId": "ada.l"}}
	})
	e.user("twin1", func(u *googletest.User) { u.ExternalIDs = []googletest.ExternalID{{Type: "organization", Value: "7"}} })
	e.user("twin2", func(u *googletest.User) { u.ExternalIDs = []googletest.ExternalID{{Type: "organization", Value: "7"}} })
	e.user("other", func(u *googletest.User) { u.ExternalIDs = []googletest.ExternalID{{Type: "account", Value: "1001"}} })
	gone := e.user("gone", nil)
	e.srv.DeleteUser(gone)
	tests := []struct {
		attr, subject string
		want          string // "ada", "notfound", "error"
	}{
		{"id", ada, "ada"},
		{"id", "ada@example.test", "notfound"}, // an e-mail is not an id
		{"id", "100000000000000000000", "notfound"},
		{"id", gone, "notfound"},
		{"primaryEmail", "ADA@example.test", "ada"},
		{"primaryEmail", "lovelace@example.test", "notfound"}, // an alias is not the primary address
		{"primaryEmail", ada, "notfound"},
		{"externalIds.organization", "1001", "ada"}, // "other" has 1001 as another type
		{"externalIds.account", "1001-acc", "ada"},
		{"externalIds.organization", "7", "error"},
		{"externalIds.organization", "nobody", "notfound"},
		{"externalIds.organization", "it's", "notfound"},
		{"customSchemas.SSO.nameId", "ada.l", "ada"},
	}
	for _, tt := range tests {
		conn := e.open(func(c *google.Config) { c.SubjectAttribute = tt.attr })
		p, err := e.person(conn, tt.subject)
		switch tt.want {
		case "ada":
			if err != nil || p.ID != ada || !strings.EqualFold(p.Subject, tt.subject) {
				t.Errorf("%s %q: %+v, %v", tt.attr, tt.subject, p, err)
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

// TestSearchLagFallsBackToListing shows why a lookup by external ID
// does not trust the search index's silence: a person the lagging index
// has not taken in yet is still found, through the complete listing.
func TestSearchLagFallsBackToListing(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.srv.SetIndexLag(36 * time.Hour)
	e.clock.Advance(48 * time.Hour)
	old := e.user("old", func(u *googletest.User) { u.ExternalIDs = []googletest.ExternalID{{Type: "organization", Value: "1"}} })
	e.clock.Advance(37 * time.Hour)
	fresh := e.user("fresh", func(u *googletest.User) { u.ExternalIDs = []googletest.ExternalID{{Type: "organization", Value: "2"}} })
	conn := e.open(func(c *google.Config) { c.SubjectAttribute = "externalIds.organization" })

	before := e.srv.Requests("GET /admin/directory/v1/users")
	p, err := e.person(conn, "1")
	if err != nil || p.ID != old {
		t.Fatalf("Person(1) = %v, %v", p, err)
	}
	if n := e.srv.Requests("GET /admin/directory/v1/users") - before; n != 1 {
		t.Errorf("an indexed person took %d listing calls, want the one search", n)
	}
	p, err = e.person(conn, "2")
	if err != nil || p.ID != fresh {
		t.Fatalf("Person(2), not yet in the index = %v, %v; want found through the listing", p, err)
	}
}

func TestQuotaWaitedOut(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	for i := range 8 {
		e.user(fmt.Sprintf("u%d", i), nil)
	}
	e.srv.SetQuota(3) // three calls a minute per user
	got, waited, err := e.pull(e.open(func(c *google.Config) { c.PageSize = 2 }))
	if err != nil || len(got) != 8 {
		t.Fatalf("Pull under a 3/min quota = %v, %d people", err, len(got))
	}
	// 1 groups + 5 users pages at 3 a minute: at least one window turn.
	if waited < time.Minute {
		t.Errorf("waited %s; the quota window is a minute", waited)
	}
	if n := e.calls.Total("throttled"); n == 0 {
		t.Errorf("no call reported throttled (%s)", e.calls)
	}

	// 429 and the concurrent-request limit (403 quotaExceeded).
	e2 := newEnv(t)
	for i := range 4 {
		e2.group(fmt.Sprintf("g%d", i), e2.user(fmt.Sprintf("u%d", i), nil))
	}
	e2.srv.SetConcurrencyLimit(1)
	e2.srv.Inject(googletest.Fault{Path: "/admin/directory/v1/groups", Status: 429, Times: 2})
	got, _, err = e2.pull(e2.open(func(c *google.Config) { c.Concurrency = 4 }))
	if err != nil || len(got) != 4 {
		t.Errorf("Pull under 429s and a concurrency limit = %v, %d people", err, len(got))
	}
	if n := e2.calls.Total("throttled"); n < 2 {
		t.Errorf("%d calls reported throttled, want at least the two 429s (%s)", n, e2.calls)
	}
}

func TestFailures(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		fault   googletest.Fault
		maxWait time.Duration
		calls   int // members calls expected, 0 for any
	}{
		// A member page that keeps failing: retried up to the attempt
		// cap (ten), then incomplete. The budget outlasts nine jittered
		// waits of at most 30s each, so the cap, not chance, ends it.
		{"members outage", googletest.Fault{Path: "/admin/directory/v1/groups/*", Status: 503}, 5 * time.Minute, 10},
		// A permission 403 is final, not retried.
		{"members forbidden", googletest.Fault{Path: "/admin/directory/v1/groups/*", Status: 403, Reason: "forbidden"}, 2 * time.Minute, 1},
		// A budget too small for Google's minute-long quota window.
		{"quota beyond the budget", googletest.Fault{Path: "/admin/directory/v1/users", Status: 403, Reason: "quotaExceeded", For: time.Hour}, 2 * time.Minute, 0},
	}
	for _, tt := range tests {
		e := newEnv(t)
		e.group("g", e.user("ada", nil))
		e.srv.Inject(tt.fault)
		_, waited, err := e.pull(e.open(func(c *google.Config) { c.MaxWait = tt.maxWait }))
		if !errors.Is(err, directory.ErrIncomplete) {
			t.Errorf("%s: Pull = %v, want ErrIncomplete", tt.name, err)
		}
		if n := e.srv.Requests("GET /admin/directory/v1/groups/{key}/members"); tt.calls > 0 && n != tt.calls {
			t.Errorf("%s: %d member calls, want %d", tt.name, n, tt.calls)
		}
		if waited > tt.maxWait+time.Minute {
			t.Errorf("%s: waited %s, beyond the %s budget", tt.name, waited, tt.maxWait)
		}
		t.Logf("%s: %v", tt.name, err)
	}
}
