package onelogin_test

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/usherhq/usher/config"
	"github.com/usherhq/usher/directory"
	"github.com/usherhq/usher/directory/directorytest"
	"github.com/usherhq/usher/directory/onelogin"
	"github.com/usherhq/usher/directory/onelogin/onelogintest"
)

func TestContract(t *testing.T) {
	directorytest.Run(t, func(t *testing.T, clock *clockwork.FakeClock) directorytest.Backend {
		srv := onelogintest.New(t, clock).Start()
		srv.AddCredential("usher", "s3cret", onelogintest.ReadAll)
		return &backend{srv: srv, users: map[string]int64{}, roles: map[string]int64{}}
	})
}

// backend seeds the OneLogin emulator for the contract suite: the
// fixture's groups are roles (OneLogin has no nesting, and roles are
// what a person holds many of), Disabled is status 2 (suspended),
// Inactive status 3 (locked), the scope is holding the scope role, the
// subject is the user id.
type backend struct {
	srv   *onelogintest.Server
	users map[string]int64
	roles map[string]int64
}

func (b *backend) Caps() directorytest.Caps {
	return directorytest.Caps{Inactive: true, Delta: true, Throttle: true, FailPage: true, Truncate: true}
}

var statusOf = map[directory.Status]int{directory.Active: 1, directory.Disabled: 2, directory.Inactive: 3}

func (b *backend) Seed(t *testing.T, f directorytest.Fixture) directorytest.Seeded {
	for _, g := range f.Groups {
		if len(g.Subgroups) > 0 {
			t.Fatal("OneLogin roles do not nest")
		}
		b.roles[g.Name] = b.srv.AddRole(g.Name)
	}
	s := directorytest.Seeded{People: map[string]directorytest.Want{}, Groups: map[string]string{}, Unknown: "99999999"}
	for name, id := range b.roles {
		s.Groups[name] = "role:" + strconv.FormatInt(id, 10)
	}
	for _, p := range f.People {
		s.People[p.Key] = b.Create(t, p)
	}
	return s
}

func (b *backend) Open(t *testing.T, deps directory.Deps) directory.Connector {
	deps.Client = b.srv.Client()
	cfg := &onelogin.Config{BaseURL: b.srv.URL, ClientID: "usher", ClientSecret: config.SecretValue("s3cret"),
		Roles: []string{"staff"}, PageSize: 2}
	if errs := cfg.Validate(); len(errs) > 0 {
		t.Fatalf("Validate: %v", errs)
	}
	conn, err := cfg.Open("onelogin", "onelogin-idp", deps)
	if err != nil {
		t.Fatal(err)
	}
	return conn
}

func (b *backend) Create(t *testing.T, p directorytest.Person) directorytest.Want {
	if p.DisplayName != p.GivenName+" "+p.FamilyName {
		t.Fatalf("OneLogin keeps no display name; %q is not %q %q", p.DisplayName, p.GivenName, p.FamilyName)
	}
	var roles []int64
	for _, g := range p.Groups {
		roles = append(roles, b.roles[g])
	}
	id := b.srv.AddUser(onelogintest.User{Username: p.Username, Email: p.Email, Firstname: p.GivenName, Lastname: p.FamilyName,
		State: 1, Status: statusOf[p.Status], RoleIDs: roles})
	b.users[p.Key] = id
	sid := strconv.FormatInt(id, 10)
	return directorytest.Want{ID: sid, Subject: sid, Username: p.Username}
}

func (b *backend) Rename(t *testing.T, key, name string) {
	first, last, _ := strings.Cut(name, " ")
	b.srv.UpdateUser(b.users[key], func(u *onelogintest.User) { u.Firstname, u.Lastname = first, last })
}

func (b *backend) SetStatus(t *testing.T, key string, s directory.Status) {
	b.srv.UpdateUser(b.users[key], func(u *onelogintest.User) { u.Status = statusOf[s] })
}

func (b *backend) Delete(t *testing.T, key string) { b.srv.DeleteUser(b.users[key]) }

func (b *backend) Throttle(t *testing.T, wait time.Duration) {
	b.srv.Inject(onelogintest.Fault{Path: "/api/2/users", Page: 2, Status: 429, Reset: wait, Times: 1})
}

func (b *backend) FailPage(t *testing.T) {
	b.srv.Inject(onelogintest.Fault{Path: "/api/2/users", Page: 2, Status: 503})
}

func (b *backend) Truncate(t *testing.T) {
	b.srv.Inject(onelogintest.Fault{Path: "/api/2/users", Page: 2, Truncate: true})
}

func (b *backend) ExpireDelta(t *testing.T) { t.Fatal("OneLogin delta tokens do not expire") }
