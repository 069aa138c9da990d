package google_test

import (
	"strings"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/usherhq/usher/config"
	"github.com/usherhq/usher/directory"
	"github.com/usherhq/usher/directory/directorytest"
	"github.com/usherhq/usher/directory/google"
	"github.com/usherhq/usher/directory/google/googletest"
)

func TestContract(t *testing.T) {
	directorytest.Run(t, func(t *testing.T, clock *clockwork.FakeClock) directorytest.Backend {
		return newBackend(t, clock)
	})
}

// backend seeds the Google emulator for the contract suite: people are
// users with primaryEmail key@example.test, Disabled is suspended, the
// scope is membership of the scope group (through nesting), the subject
// is the user id (the sub of Google's OIDC tokens), groups are reported
// by name as the fixture names them.
type backend struct {
	srv    *googletest.Server
	key    []byte
	users  map[string]string // fixture key → user id
	groups map[string]string // group name → id
}

func newBackend(t *testing.T, clock clockwork.Clock) *backend {
	srv := googletest.New(t, clock).Start()
	key, clientID := srv.NewServiceAccount("usher-sync")
	srv.Delegate(clientID, googletest.ScopeUserReadonly, googletest.ScopeGroupReadonly)
	srv.AddUser(googletest.User{PrimaryEmail: "admin@example.test", IsAdmin: true, OrgUnitPath: "/IT"})
	return &backend{srv: srv, key: key, users: map[string]string{}, groups: map[string]string{}}
}

func (b *backend) Caps() directorytest.Caps {
	return directorytest.Caps{Nesting: true, Throttle: true, FailPage: true, Truncate: true}
}

func (b *backend) Seed(t *testing.T, f directorytest.Fixture) directorytest.Seeded {
	for _, g := range f.Groups {
		b.groups[g.Name] = b.srv.AddGroup(googletest.Group{Email: g.Name + "@example.test", Name: g.Name})
		for _, sub := range g.Subgroups {
			b.srv.AddMember(b.groups[g.Name], b.groups[sub])
		}
	}
	s := directorytest.Seeded{People: map[string]directorytest.Want{}, Groups: b.groups, Unknown: "100000000000000000000"}
	for _, p := range f.People {
		s.People[p.Key] = b.Create(t, p)
	}
	return s
}

func (b *backend) config() *google.Config {
	return &google.Config{
		ServiceAccountKey: config.SecretValue(string(b.key)), Admin: "admin@example.test",
		OAuthURL: b.srv.URL, APIURL: b.srv.URL, Groups: []string{"staff@example.test"},
		GroupNames: "name", PageSize: 2,
	}
}

func (b *backend) Open(t *testing.T, deps directory.Deps) directory.Connector {
	deps.Client = b.srv.Client()
	cfg := b.config()
	if errs := cfg.Validate(); len(errs) > 0 {
		t.Fatalf("Validate: %v", errs)
	}
	conn, err := cfg.Open("workspace", "google-idp", deps)
	if err != nil {
		t.Fatal(err)
	}
	return conn
}

func (b *backend) Create(t *testing.T, p directorytest.Person) directorytest.Want {
	if p.Status == directory.Inactive {
		t.Fatal("Google has no inactive state")
	}
	if p.DisplayName != p.GivenName+" "+p.FamilyName {
		t.Fatalf("Google derives the full name; %q is not %q %q", p.DisplayName, p.GivenName, p.FamilyName)
	}
	id := b.srv.AddUser(googletest.User{
		PrimaryEmail: p.Email, GivenName: p.GivenName, FamilyName: p.FamilyName,
		Suspended: p.Status == directory.Disabled, OrgUnitPath: "/Staff",
	})
	b.users[p.Key] = id
	for _, g := range p.Groups {
		b.srv.AddMember(b.groups[g], id)
	}
	return directorytest.Want{ID: id, Subject: id, Username: p.Email}
}

// Rename sets the name parts: Google's fullName is read-only, derived
// from them.
func (b *backend) Rename(t *testing.T, key, name string) {
	given, family, _ := strings.Cut(name, " ")
	b.srv.UpdateUser(b.users[key], func(u *googletest.User) { u.GivenName, u.FamilyName = given, family })
}

func (b *backend) SetStatus(t *testing.T, key string, s directory.Status) {
	b.srv.UpdateUser(b.users[key], func(u *googletest.User) { u.Suspended = s == directory.Disabled })
}

func (b *backend) Delete(t *testing.T, key string) { b.srv.DeleteUser(b.users[key]) }

const usersPath = "/admin/directory/v1/users"

// Throttle refuses the second page with Google's per-user quota error
// until wait has passed: Google sends no wait hint [U], so the
// connector's backoff must outlast the quota window.
func (b *backend) Throttle(t *testing.T, wait time.Duration) {
	b.srv.Inject(googletest.Fault{Path: usersPath, Page: 2, Status: 403, Reason: "userRateLimitExceeded", For: wait})
}

func (b *backend) FailPage(t *testing.T) {
	b.srv.Inject(googletest.Fault{Path: usersPath, Page: 2, Status: 503})
}

func (b *backend) Truncate(t *testing.T) {
	b.srv.Inject(googletest.Fault{Path: usersPath, Page: 2, Truncate: true})
}

func (b *backend) ExpireDelta(t *testing.T) { t.Fatal("Google has no delta") }
