package okta_test

import (
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/usherhq/usher/config"
	"github.com/usherhq/usher/directory"
	"github.com/usherhq/usher/directory/directorytest"
	"github.com/usherhq/usher/directory/okta"
	"github.com/usherhq/usher/directory/okta/oktatest"
)

func TestContract(t *testing.T) {
	directorytest.Run(t, func(t *testing.T, clock *clockwork.FakeClock) directorytest.Backend {
		srv := oktatest.New(t, clock).Start()
		srv.AddAPIToken("tok")
		return &backend{srv: srv, users: map[string]string{}, groups: map[string]string{}}
	})
}

// backend seeds the Okta emulator for the contract suite: Disabled is
// DEPROVISIONED (so the second listing pass is exercised), Inactive is
// LOCKED_OUT, the scope is membership of the scope group, the subject is
// the Okta id (Okta's OIDC sub), logins are e-mail addresses.
type backend struct {
	srv    *oktatest.Server
	users  map[string]string
	groups map[string]string
}

func (b *backend) Caps() directorytest.Caps {
	return directorytest.Caps{
		Inactive: true, Delta: true,
		Throttle: true, FailPage: true, Truncate: true,
	}
}

var statusOf = map[directory.Status]string{
	directory.Active: "ACTIVE", directory.Inactive: "LOCKED_OUT", directory.Disabled: "DEPROVISIONED",
}

func (b *backend) Seed(t *testing.T, f directorytest.Fixture) directorytest.Seeded {
	for _, g := range f.Groups {
		if len(g.Subgroups) > 0 {
			t.Fatal("Okta groups do not nest")
		}
		b.groups[g.Name] = b.srv.AddGroup(oktatest.Group{Name: g.Name})
	}
	s := directorytest.Seeded{People: map[string]directorytest.Want{}, Groups: b.groups, Unknown: "00u0000000000nobody"}
	for _, p := range f.People {
		s.People[p.Key] = b.Create(t, p)
	}
	return s
}

func (b *backend) Open(t *testing.T, deps directory.Deps) directory.Connector {
	deps.Client = b.srv.Client()
	cfg := &okta.Config{OrgURL: b.srv.URL, APIToken: config.SecretValue("tok"), Groups: []string{"staff"}, PageSize: 2}
	conn, err := cfg.Open("okta", "okta-idp", deps)
	if err != nil {
		t.Fatal(err)
	}
	return conn
}

func (b *backend) Create(t *testing.T, p directorytest.Person) directorytest.Want {
	id := b.srv.AddUser(oktatest.User{Status: statusOf[p.Status], Profile: map[string]any{
		"login": p.Email, "email": p.Email, "firstName": p.GivenName, "lastName": p.FamilyName, "displayName": p.DisplayName,
	}})
	b.users[p.Key] = id
	for _, g := range p.Groups {
		b.srv.AddMember(b.groups[g], id)
	}
	return directorytest.Want{ID: id, Subject: id, Username: p.Email}
}

func (b *backend) Rename(t *testing.T, key, name string) {
	b.srv.UpdateProfile(b.users[key], map[string]any{"displayName": name})
}

func (b *backend) SetStatus(t *testing.T, key string, s directory.Status) {
	st := statusOf[s]
	if s == directory.Disabled {
		st = "SUSPENDED" // the other disabled state
	}
	b.srv.SetStatus(b.users[key], st)
}

func (b *backend) Delete(t *testing.T, key string) {
	b.srv.SetStatus(b.users[key], "DEPROVISIONED")
	b.srv.DeleteUser(b.users[key])
}

func (b *backend) Throttle(t *testing.T, wait time.Duration) {
	b.srv.Inject(oktatest.Fault{Path: "/api/v1/users", Page: 2, Status: 429, Reset: wait, Times: 1})
}

func (b *backend) FailPage(t *testing.T) {
	b.srv.Inject(oktatest.Fault{Path: "/api/v1/users", Page: 2, Status: 503})
}

func (b *backend) Truncate(t *testing.T) {
	b.srv.Inject(oktatest.Fault{Path: "/api/v1/users", Page: 2, Truncate: true})
}

func (b *backend) ExpireDelta(t *testing.T) { t.Fatal("Okta delta tokens do not expire") }
