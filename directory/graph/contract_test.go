package graph_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jonboulle/clockwork"

	"github.com/usherhq/usher/config"
	"github.com/usherhq/usher/directory"
	"github.com/usherhq/usher/directory/directorytest"
	"github.com/usherhq/usher/directory/graph"
	"github.com/usherhq/usher/directory/graph/graphtest"
)

func TestContract(t *testing.T) {
	directorytest.Run(t, func(t *testing.T, clock *clockwork.FakeClock) directorytest.Backend {
		return newBackend(t, clock)
	})
}

// backend seeds the Graph emulator for the contract suite: people are
// users (UPN key@contoso.test), Disabled is accountEnabled=false, the
// scope is group membership of the fixture's scope group, the subject is
// the object id (the token's oid).
type backend struct {
	srv    *graphtest.Server
	users  map[string]string // fixture key → user id
	groups map[string]string // group name → id
}

func newBackend(t *testing.T, clock clockwork.Clock) *backend {
	srv := graphtest.New(t, clock).Start()
	srv.AddSecretApp("usher-app", "s3cret")
	srv.SetDeltaPageSize(2, 2)
	return &backend{srv: srv, users: map[string]string{}, groups: map[string]string{}}
}

func (b *backend) Caps() directorytest.Caps {
	return directorytest.Caps{
		Nesting: true, Delta: true, DeltaDeletes: true,
		Throttle: true, FailPage: true, Truncate: true, ExpireDelta: true,
	}
}

func (b *backend) Seed(t *testing.T, f directorytest.Fixture) directorytest.Seeded {
	for _, g := range f.Groups {
		b.groups[g.Name] = b.srv.AddGroup(graphtest.Group{DisplayName: g.Name, SecurityEnabled: true})
		for _, sub := range g.Subgroups {
			b.srv.AddMember(b.groups[g.Name], b.groups[sub])
		}
	}
	s := directorytest.Seeded{People: map[string]directorytest.Want{}, Groups: b.groups, Unknown: uuid.NewString()}
	for _, p := range f.People {
		s.People[p.Key] = b.Create(t, p)
	}
	return s
}

func (b *backend) config() *graph.Config {
	return &graph.Config{
		TenantID: b.srv.Tenant, ClientID: "usher-app", ClientSecret: config.SecretValue("s3cret"),
		LoginURL: b.srv.URL, GraphURL: b.srv.URL, Groups: []string{"staff"}, PageSize: 2,
	}
}

func (b *backend) Open(t *testing.T, deps directory.Deps) directory.Connector {
	deps.Client = b.srv.Client()
	cfg := b.config()
	if errs := cfg.Validate(); len(errs) > 0 {
		t.Fatalf("Validate: %v", errs)
	}
	conn, err := cfg.Open("entra", "entra-idp", deps)
	if err != nil {
		t.Fatal(err)
	}
	return conn
}

func (b *backend) Create(t *testing.T, p directorytest.Person) directorytest.Want {
	if p.Status == directory.Inactive {
		t.Fatal("Graph has no inactive state")
	}
	upn := p.Username + "@contoso.test"
	id := b.srv.AddUser(graphtest.User{
		UserPrincipalName: upn, Mail: p.Email, DisplayName: p.DisplayName,
		GivenName: p.GivenName, Surname: p.FamilyName, AccountEnabled: p.Status == directory.Active,
	})
	b.users[p.Key] = id
	for _, g := range p.Groups {
		b.srv.AddMember(b.groups[g], id)
	}
	return directorytest.Want{ID: id, Subject: id, Username: upn}
}

func (b *backend) Rename(t *testing.T, key, name string) {
	b.srv.UpdateUser(b.users[key], map[string]any{"displayName": name})
}

func (b *backend) SetStatus(t *testing.T, key string, s directory.Status) {
	b.srv.UpdateUser(b.users[key], map[string]any{"accountEnabled": s == directory.Active})
}

func (b *backend) Delete(t *testing.T, key string) { b.srv.SoftDeleteUser(b.users[key]) }

func (b *backend) Throttle(t *testing.T, wait time.Duration) {
	b.srv.Inject(graphtest.Fault{Method: "GET", Path: "/v1.0/users", Page: 2, Status: 429,
		RetryAfter: fmt.Sprint(int(wait / time.Second)), Times: 1})
}

func (b *backend) FailPage(t *testing.T) {
	b.srv.Inject(graphtest.Fault{Method: "GET", Path: "/v1.0/users", Page: 2, Status: 503})
}

func (b *backend) Truncate(t *testing.T) {
	b.srv.Inject(graphtest.Fault{Method: "GET", Path: "/v1.0/users", Page: 2, Truncate: true})
}

func (b *backend) ExpireDelta(t *testing.T) { b.srv.ExpireDeltaTokens() }
