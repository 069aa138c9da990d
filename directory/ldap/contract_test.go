package ldap

import (
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	goldap "github.com/go-ldap/ldap/v3"
	"github.com/jonboulle/clockwork"

	"github.com/usherhq/usher/config"
	"github.com/usherhq/usher/directory"
	"github.com/usherhq/usher/directory/directorytest"
	"github.com/usherhq/usher/directory/ldap/internal/ldaptest"
	"github.com/usherhq/usher/directory/ldap/sambatest"
	"github.com/usherhq/usher/directory/ldap/slapdtest"
)

// The contract against real servers: OpenLDAP (slapd) and Active
// Directory (Samba). Both scope by the fixture's group (nesting
// included: OpenLDAP checks it in usher, AD with the in-chain rule).

func TestContractOpenLDAP(t *testing.T) {
	directorytest.Run(t, func(t *testing.T, clock *clockwork.FakeClock) directorytest.Backend {
		srv := slapd.Server(t)
		b := &olBackend{srv: srv, base: srv.Subtree(t)}
		b.proxy = newTestProxy(t, srv.URL, "ou=people,"+b.base)
		b.tree = tree{srv.Client, b, "6f1c2a9e-4b3d-5a6c-8e7f-0102030405ff"}
		return b
	})
}

func TestContractActiveDirectory(t *testing.T) {
	directorytest.Run(t, func(t *testing.T, clock *clockwork.FakeClock) directorytest.Backend {
		srv := samba.Server(t)
		base, n := srv.Subtree(t)
		b := &adBackend{srv: srv, base: base, n: n}
		b.tree = tree{srv.Client, b, "nobody-" + n + "@example.test"}
		return b
	})
}

// tree is what both backends do alike on their server: seed the fixture,
// create, rename and delete people. flavor writes the entries.
type tree struct {
	admin   *ldaptest.Client
	flavor  treeFlavor
	unknown string // a subject nobody has
}

// treeFlavor is what differs between the backends' trees.
type treeFlavor interface {
	personDN(key string) string
	groupDN(name string) string
	// person is a person's entry; group a group's, listing members.
	person(p directorytest.Person) string
	group(name string, members []string) string
	// id reads an entry's ID as the connector reports it; want is what
	// the connector reports for the person with that ID.
	id(t *testing.T, dn string) string
	want(key, id string) directorytest.Want
}

func (tr tree) wantOf(t *testing.T, key string) directorytest.Want {
	return tr.flavor.want(key, tr.flavor.id(t, tr.flavor.personDN(key)))
}

// Seed writes the people, then the groups with their direct members
// (people by their Groups, subgroups by the group's Subgroups; the
// fixture lists subgroups first).
func (tr tree) Seed(t *testing.T, f directorytest.Fixture) directorytest.Seeded {
	members := map[string][]string{}
	for _, g := range f.Groups {
		for _, s := range g.Subgroups {
			members[g.Name] = append(members[g.Name], tr.flavor.groupDN(s))
		}
	}
	var ldif strings.Builder
	for _, p := range f.People {
		ldif.WriteString(tr.flavor.person(p) + "\n")
		for _, g := range p.Groups {
			members[g] = append(members[g], tr.flavor.personDN(p.Key))
		}
	}
	for _, g := range f.Groups {
		ldif.WriteString(tr.flavor.group(g.Name, members[g.Name]) + "\n")
	}
	tr.admin.Seed(t, ldif.String())
	s := directorytest.Seeded{People: map[string]directorytest.Want{}, Groups: map[string]string{}, Unknown: tr.unknown}
	for _, p := range f.People {
		s.People[p.Key] = tr.wantOf(t, p.Key)
	}
	for _, g := range f.Groups {
		s.Groups[g.Name] = tr.flavor.id(t, tr.flavor.groupDN(g.Name))
	}
	return s
}

func (tr tree) Create(t *testing.T, p directorytest.Person) directorytest.Want {
	tr.admin.Seed(t, tr.flavor.person(p))
	c, err := tr.admin.Admin()
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range p.Groups {
		req := goldap.NewModifyRequest(tr.flavor.groupDN(g), nil)
		req.Add(memberAttr, []string{tr.flavor.personDN(p.Key)})
		if err := c.Modify(req); err != nil {
			t.Fatal(err)
		}
	}
	return tr.wantOf(t, p.Key)
}

func (tr tree) Rename(t *testing.T, key, name string) {
	tr.admin.Modify(t, tr.flavor.personDN(key), map[string][]string{attrDisplayName: {name}})
}

func (tr tree) Delete(t *testing.T, key string) { tr.admin.Delete(t, tr.flavor.personDN(key)) }

// openContract opens the connector under test for the contract.
func openContract(t *testing.T, cfg *Config, name string, deps directory.Deps) directory.Connector {
	c, err := cfg.Open(name, "idp", deps)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.(*Connector).Close() })
	return c
}

// olBackend is a subtree of the shared slapd. Inactive is a ppolicy lock
// with a time; Disabled the permanent one. The connector talks to slapd
// through a testProxy, which injects the faults.
type olBackend struct {
	tree
	srv   *slapdtest.Server
	base  string
	proxy *testProxy
}

func (b *olBackend) Caps() directorytest.Caps {
	return directorytest.Caps{Nesting: true, Inactive: true, Delta: true, FailPage: true, Truncate: true}
}

func (b *olBackend) personDN(key string) string { return "uid=" + key + ",ou=people," + b.base }
func (b *olBackend) groupDN(name string) string { return "cn=" + name + ",ou=groups," + b.base }

func (b *olBackend) person(p directorytest.Person) string {
	var s strings.Builder
	fmt.Fprintf(&s, "dn: %s\nobjectClass: inetOrgPerson\nuid: %s\ncn: %s\nsn: %s\ngivenName: %s\ndisplayName: %s\nmail: %s\n",
		b.personDN(p.Key), p.Username, p.DisplayName, p.FamilyName, p.GivenName, p.DisplayName, p.Email)
	if lock := olLock(p.Status); lock != nil {
		fmt.Fprintf(&s, "pwdAccountLockedTime: %s\n", lock[0])
	}
	return s.String()
}

func (b *olBackend) group(name string, members []string) string {
	if len(members) == 0 { // groupOfNames needs a member
		members = []string{"cn=nobody," + b.base}
	}
	return fmt.Sprintf("dn: %s\nobjectClass: groupOfNames\ncn: %s\nmember: %s\n", b.groupDN(name), name, strings.Join(members, "\nmember: "))
}

func (b *olBackend) id(t *testing.T, dn string) string {
	return strings.ToLower(b.srv.Entry(t, dn, attrEntryUUID).GetAttributeValue(attrEntryUUID))
}

func (b *olBackend) want(key, id string) directorytest.Want {
	return directorytest.Want{ID: id, Subject: id, Username: key}
}

func olLock(s directory.Status) []string {
	switch s {
	case directory.Disabled:
		return []string{ppolicyPermanentLock}
	case directory.Inactive:
		return []string{"20250101000000Z"}
	}
	return nil
}

func (b *olBackend) Open(t *testing.T, deps directory.Deps) directory.Connector {
	return openContract(t, &Config{
		Flavor:       OpenLDAP,
		URL:          b.proxy.url(),
		BindDN:       slapdtest.ReaderDN,
		BindPassword: config.SecretValue(slapdtest.ReaderPW),
		PageSize:     2,
		BaseDNs:      []string{"ou=people," + b.base},
		GroupBaseDNs: []string{"ou=groups," + b.base},
		Groups:       []string{b.groupDN("staff")},
		Disabled:     &Disabled{PPolicy: true},
	}, "openldap", deps)
}

func (b *olBackend) SetStatus(t *testing.T, key string, s directory.Status) {
	b.srv.Modify(t, b.personDN(key), map[string][]string{attrPwdAccountLockedTime: olLock(s)})
}

func (b *olBackend) Throttle(t *testing.T, wait time.Duration) {
	t.Fatal("LDAP has no throttling with a wait")
}
func (b *olBackend) FailPage(t *testing.T)    { b.proxy.arm(goldap.LDAPResultUnavailable) }
func (b *olBackend) Truncate(t *testing.T)    { b.proxy.arm(goldap.LDAPResultSizeLimitExceeded) }
func (b *olBackend) ExpireDelta(t *testing.T) { t.Fatal("modifyTimestamp deltas do not expire") }

// adBackend is a subtree of the shared Samba DC. sAMAccountNames are
// unique in the whole domain, so they carry the subtree's number. AD has
// no settable temporary state (lockoutTime can only be cleared), and the
// fault knobs are the OpenLDAP backend's: the paging, retry and
// truncation code they test is the same for both flavours.
type adBackend struct {
	tree
	srv  *sambatest.Server
	base string
	n    string
}

func (b *adBackend) Caps() directorytest.Caps {
	return directorytest.Caps{Nesting: true, Delta: true, DeltaDeletes: true}
}

func (b *adBackend) personDN(key string) string { return "CN=" + key + ",OU=People," + b.base }
func (b *adBackend) groupDN(name string) string { return "CN=" + name + ",OU=Groups," + b.base }
func (b *adBackend) sam(key string) string      { return key + "-" + b.n }

func (b *adBackend) person(p directorytest.Person) string {
	return adUser(b.personDN(p.Key), b.sam(p.Key), p.Status, fmt.Sprintf("givenName: %s\nsn: %s\ndisplayName: %s\nmail: %s\n",
		p.GivenName, p.FamilyName, p.DisplayName, p.Email))
}

func (b *adBackend) group(name string, members []string) string {
	var s strings.Builder
	fmt.Fprintf(&s, "dn: %s\nobjectClass: group\nsAMAccountName: %s\n", b.groupDN(name), b.sam(name))
	for _, m := range members {
		fmt.Fprintf(&s, "member: %s\n", m)
	}
	return s.String()
}

func (b *adBackend) id(t *testing.T, dn string) string {
	id, err := guidString(b.srv.Entry(t, dn, attrObjectGUID).GetRawAttributeValue(attrObjectGUID))
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func (b *adBackend) want(key, id string) directorytest.Want {
	return directorytest.Want{ID: id, Subject: b.sam(key) + "@example.test", Username: b.sam(key)}
}

func (b *adBackend) Open(t *testing.T, deps directory.Deps) directory.Connector {
	return openContract(t, &Config{
		Flavor:           ActiveDirectory,
		URL:              b.srv.URL,
		CAFile:           b.srv.CAFile,
		BindDN:           sambatest.AdminDN,
		BindPassword:     config.SecretValue(sambatest.AdminPW),
		PageSize:         2,
		BaseDNs:          []string{"OU=People," + b.base},
		GroupBaseDNs:     []string{"OU=Groups," + b.base},
		Groups:           []string{b.groupDN("staff")},
		SubjectAttribute: "userPrincipalName",
	}, "ad", deps)
}

func (b *adBackend) SetStatus(t *testing.T, key string, s directory.Status) {
	if s == directory.Inactive {
		t.Fatal("AD backend cannot lock an account out")
	}
	b.srv.Modify(t, b.personDN(key), map[string][]string{attrUserAccountControl: {adUAC(s)}})
}

func (b *adBackend) Throttle(t *testing.T, _ time.Duration) { t.Fatal("not supported") }
func (b *adBackend) FailPage(t *testing.T)                  { t.Fatal("not supported") }
func (b *adBackend) Truncate(t *testing.T)                  { t.Fatal("not supported") }
func (b *adBackend) ExpireDelta(t *testing.T)               { t.Fatal("not supported") }

var _ io.Closer = (*Connector)(nil)
