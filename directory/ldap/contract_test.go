package ldap

import (
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	ber "github.com/go-asn1-ber/asn1-ber"
	goldap "github.com/go-ldap/ldap/v3"
	"github.com/jonboulle/clockwork"

	"github.com/usherhq/usher/config"
	"github.com/usherhq/usher/directory"
	"github.com/usherhq/usher/directory/directorytest"
	"github.com/usherhq/usher/directory/ldap/sambatest"
	"github.com/usherhq/usher/directory/ldap/slapdtest"
)

// The contract against real servers: OpenLDAP (slapd) and Active
// Directory (Samba). Both scope by the fixture's group (nesting
// included: OpenLDAP checks it in usher, AD with the in-chain rule).

func TestContractOpenLDAP(t *testing.T) {
	directorytest.Run(t, func(t *testing.T, clock *clockwork.FakeClock) directorytest.Backend {
		srv := slapd.Server(t)
		base := srv.Subtree(t)
		return &olBackend{t: t, srv: srv, base: base, proxy: newFaultProxy(t, srv.URL, "ou=people,"+base)}
	})
}

func TestContractActiveDirectory(t *testing.T) {
	directorytest.Run(t, func(t *testing.T, clock *clockwork.FakeClock) directorytest.Backend {
		srv := samba.Server(t)
		base, n := srv.Subtree(t)
		return &adBackend{srv: srv, base: base, n: n}
	})
}

// groupMembers works out each fixture group's direct members: people
// by their Groups, subgroups by the group's Subgroups.
func groupMembers(f directorytest.Fixture, personDN func(directorytest.Person) string, groupDN func(string) string) map[string][]string {
	m := map[string][]string{}
	for _, g := range f.Groups {
		for _, s := range g.Subgroups {
			m[g.Name] = append(m[g.Name], groupDN(s))
		}
	}
	for _, p := range f.People {
		for _, g := range p.Groups {
			m[g] = append(m[g], personDN(p))
		}
	}
	return m
}

// olBackend is a subtree of the shared slapd. Inactive is a ppolicy lock
// with a time; Disabled the permanent one. The connector talks to slapd
// through faultProxy, plain LDAP on loopback.
type olBackend struct {
	t     *testing.T
	srv   *slapdtest.Server
	base  string
	proxy *faultProxy
}

func (b *olBackend) Caps() directorytest.Caps {
	return directorytest.Caps{Nesting: true, Inactive: true, Delta: true, FailPage: true, Truncate: true}
}

func (b *olBackend) personDN(key string) string { return "uid=" + key + ",ou=people," + b.base }
func (b *olBackend) groupDN(name string) string { return "cn=" + name + ",ou=groups," + b.base }

func (b *olBackend) ldif(p directorytest.Person) string {
	var s strings.Builder
	fmt.Fprintf(&s, "dn: %s\nobjectClass: inetOrgPerson\nuid: %s\ncn: %s\nsn: %s\ngivenName: %s\ndisplayName: %s\nmail: %s\n",
		b.personDN(p.Key), p.Username, p.DisplayName, p.FamilyName, p.GivenName, p.DisplayName, p.Email)
	if lock := olLock(p.Status); lock != nil {
		fmt.Fprintf(&s, "pwdAccountLockedTime: %s\n", lock[0])
	}
	return s.String()
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

func (b *olBackend) want(t *testing.T, key string) directorytest.Want {
	id := strings.ToLower(b.srv.Entry(t, b.personDN(key), "entryUUID").GetAttributeValue("entryUUID"))
	return directorytest.Want{ID: id, Subject: id, Username: key}
}

func (b *olBackend) Seed(t *testing.T, f directorytest.Fixture) directorytest.Seeded {
	var ldif strings.Builder
	for _, p := range f.People {
		ldif.WriteString(b.ldif(p) + "\n")
	}
	members := groupMembers(f, func(p directorytest.Person) string { return b.personDN(p.Key) }, b.groupDN)
	for _, g := range f.Groups { // subgroups come first
		fmt.Fprintf(&ldif, "dn: %s\nobjectClass: groupOfNames\ncn: %s\n", b.groupDN(g.Name), g.Name)
		if len(members[g.Name]) == 0 { // groupOfNames needs a member
			members[g.Name] = []string{"cn=nobody," + b.base}
		}
		for _, m := range members[g.Name] {
			fmt.Fprintf(&ldif, "member: %s\n", m)
		}
		ldif.WriteString("\n")
	}
	b.srv.Seed(t, ldif.String())
	s := directorytest.Seeded{People: map[string]directorytest.Want{}, Groups: map[string]string{},
		Unknown: "6f1c2a9e-4b3d-5a6c-8e7f-0102030405ff"}
	for _, p := range f.People {
		s.People[p.Key] = b.want(t, p.Key)
	}
	for _, g := range f.Groups {
		s.Groups[g.Name] = strings.ToLower(b.srv.Entry(t, b.groupDN(g.Name), "entryUUID").GetAttributeValue("entryUUID"))
	}
	return s
}

func (b *olBackend) Open(t *testing.T, deps directory.Deps) directory.Connector {
	cfg := &Config{
		Flavor:       OpenLDAP,
		URL:          b.proxy.url(),
		BindDN:       slapdtest.ReaderDN,
		BindPassword: config.SecretValue(slapdtest.ReaderPW),
		PageSize:     2,
		BaseDNs:      []string{"ou=people," + b.base},
		GroupBaseDNs: []string{"ou=groups," + b.base},
		Groups:       []string{b.groupDN("staff")},
		Disabled:     &Disabled{PPolicy: true},
	}
	c, err := cfg.Open("openldap", "idp", deps)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.(*Connector).Close() })
	return c
}

func (b *olBackend) Create(t *testing.T, p directorytest.Person) directorytest.Want {
	b.srv.Seed(t, b.ldif(p))
	c, err := b.srv.Admin()
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range p.Groups {
		req := goldap.NewModifyRequest(b.groupDN(g), nil)
		req.Add("member", []string{b.personDN(p.Key)})
		if err := c.Modify(req); err != nil {
			t.Fatal(err)
		}
	}
	return b.want(t, p.Key)
}

func (b *olBackend) Rename(t *testing.T, key, name string) {
	b.srv.Modify(t, b.personDN(key), map[string][]string{"displayName": {name}})
}

func (b *olBackend) SetStatus(t *testing.T, key string, s directory.Status) {
	b.srv.Modify(t, b.personDN(key), map[string][]string{"pwdAccountLockedTime": olLock(s)})
}

func (b *olBackend) Delete(t *testing.T, key string) { b.srv.Delete(t, b.personDN(key)) }

func (b *olBackend) Throttle(t *testing.T, wait time.Duration) {
	t.Fatal("LDAP has no throttling with a wait")
}
func (b *olBackend) FailPage(t *testing.T)    { b.proxy.arm(goldap.LDAPResultUnavailable) }
func (b *olBackend) Truncate(t *testing.T)    { b.proxy.arm(goldap.LDAPResultSizeLimitExceeded) }
func (b *olBackend) ExpireDelta(t *testing.T) { t.Fatal("modifyTimestamp deltas do not expire") }

// faultProxy forwards LDAP to slapd and, when armed, answers every
// request for a later page of the people search (a search under
// peopleBase with a paging cookie) with the armed result code instead of
// passing it on, the way a busy or limited server would.
type faultProxy struct {
	ln         net.Listener
	target     string
	peopleBase string
	mu         sync.Mutex
	code       uint16
}

func newFaultProxy(t *testing.T, target, peopleBase string) *faultProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &faultProxy{ln: ln, target: strings.TrimPrefix(target, "ldap://"), peopleBase: peopleBase}
	var conns sync.WaitGroup
	t.Cleanup(func() { ln.Close(); conns.Wait() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns.Add(1)
			go func() { defer conns.Done(); p.serve(c) }()
		}
	}()
	return p
}

func (p *faultProxy) url() string { return "ldap://" + p.ln.Addr().String() }

func (p *faultProxy) arm(code uint16) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.code = code
}

func (p *faultProxy) serve(c net.Conn) {
	defer c.Close()
	up, err := net.Dial("tcp", p.target)
	if err != nil {
		return
	}
	defer up.Close()
	var wmu sync.Mutex // client writes: slapd's answers and ours
	go func() {
		buf := make([]byte, 32<<10)
		for {
			n, err := up.Read(buf)
			if n > 0 {
				wmu.Lock()
				c.Write(buf[:n])
				wmu.Unlock()
			}
			if err != nil {
				c.Close()
				return
			}
		}
	}()
	for {
		pkt, err := ber.ReadPacket(c)
		if err != nil {
			return
		}
		if code, id, ok := p.fault(pkt); ok {
			wmu.Lock()
			c.Write(searchDone(id, code).Bytes())
			wmu.Unlock()
			continue
		}
		if _, err := up.Write(pkt.Bytes()); err != nil {
			return
		}
	}
}

// fault reports whether pkt is a later page of the people search while
// the proxy is armed.
func (p *faultProxy) fault(pkt *ber.Packet) (uint16, int64, bool) {
	p.mu.Lock()
	code := p.code
	p.mu.Unlock()
	if code == 0 || len(pkt.Children) < 3 || pkt.Children[1].Tag != goldap.ApplicationSearchRequest {
		return 0, 0, false
	}
	req := pkt.Children[1]
	if len(req.Children) == 0 || !strings.EqualFold(fmt.Sprint(req.Children[0].Value), p.peopleBase) {
		return 0, 0, false
	}
	for _, child := range pkt.Children[2].Children {
		ctl, err := goldap.DecodeControl(child)
		if err != nil {
			continue
		}
		if pg, ok := ctl.(*goldap.ControlPaging); ok && len(pg.Cookie) > 0 && pg.PagingSize > 0 {
			id, _ := pkt.Children[0].Value.(int64)
			return code, id, true
		}
	}
	return 0, 0, false
}

func searchDone(id int64, code uint16) *ber.Packet {
	p := ber.Encode(ber.ClassUniversal, ber.TypeConstructed, ber.TagSequence, nil, "LDAP Response")
	p.AppendChild(ber.NewInteger(ber.ClassUniversal, ber.TypePrimitive, ber.TagInteger, id, "MessageID"))
	done := ber.Encode(ber.ClassApplication, ber.TypeConstructed, goldap.ApplicationSearchResultDone, nil, "Search Result Done")
	done.AppendChild(ber.NewInteger(ber.ClassUniversal, ber.TypePrimitive, ber.TagEnumerated, int64(code), "resultCode"))
	done.AppendChild(ber.NewString(ber.ClassUniversal, ber.TypePrimitive, ber.TagOctetString, "", "matchedDN"))
	done.AppendChild(ber.NewString(ber.ClassUniversal, ber.TypePrimitive, ber.TagOctetString, "injected by the test", "diagnosticMessage"))
	p.AppendChild(done)
	return p
}

// adBackend is a subtree of the shared Samba DC. sAMAccountNames are
// unique in the whole domain, so they carry the subtree's number. AD has
// no settable temporary state (lockoutTime can only be cleared), and the
// fault knobs are the OpenLDAP backend's: the paging, retry and
// truncation code they test is the same for both flavours.
type adBackend struct {
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

func (b *adBackend) ldif(p directorytest.Person) string {
	return adUser(b.personDN(p.Key), b.sam(p.Key), p.Status, fmt.Sprintf("givenName: %s\nsn: %s\ndisplayName: %s\nmail: %s\n",
		p.GivenName, p.FamilyName, p.DisplayName, p.Email))
}

func (b *adBackend) want(t *testing.T, key string) directorytest.Want {
	id, err := guidString(b.srv.Entry(t, b.personDN(key), "objectGUID").GetRawAttributeValue("objectGUID"))
	if err != nil {
		t.Fatal(err)
	}
	return directorytest.Want{ID: id, Subject: b.sam(key) + "@example.test", Username: b.sam(key)}
}

func (b *adBackend) Seed(t *testing.T, f directorytest.Fixture) directorytest.Seeded {
	var ldif strings.Builder
	for _, p := range f.People {
		ldif.WriteString(b.ldif(p) + "\n")
	}
	members := groupMembers(f, func(p directorytest.Person) string { return b.personDN(p.Key) }, b.groupDN)
	for _, g := range f.Groups {
		fmt.Fprintf(&ldif, "dn: %s\nobjectClass: group\nsAMAccountName: %s\n", b.groupDN(g.Name), b.sam(g.Name))
		for _, m := range members[g.Name] {
			fmt.Fprintf(&ldif, "member: %s\n", m)
		}
		ldif.WriteString("\n")
	}
	b.srv.Seed(t, ldif.String())
	s := directorytest.Seeded{People: map[string]directorytest.Want{}, Groups: map[string]string{},
		Unknown: "nobody-" + b.n + "@example.test"}
	for _, p := range f.People {
		s.People[p.Key] = b.want(t, p.Key)
	}
	for _, g := range f.Groups {
		id, err := guidString(b.srv.Entry(t, b.groupDN(g.Name), "objectGUID").GetRawAttributeValue("objectGUID"))
		if err != nil {
			t.Fatal(err)
		}
		s.Groups[g.Name] = id
	}
	return s
}

func (b *adBackend) Open(t *testing.T, deps directory.Deps) directory.Connector {
	cfg := &Config{
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
	}
	c, err := cfg.Open("ad", "idp", deps)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.(*Connector).Close() })
	return c
}

func (b *adBackend) Create(t *testing.T, p directorytest.Person) directorytest.Want {
	b.srv.Seed(t, b.ldif(p))
	c, err := b.srv.Admin()
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range p.Groups {
		req := goldap.NewModifyRequest(b.groupDN(g), nil)
		req.Add("member", []string{b.personDN(p.Key)})
		if err := c.Modify(req); err != nil {
			t.Fatal(err)
		}
	}
	return b.want(t, p.Key)
}

func (b *adBackend) Rename(t *testing.T, key, name string) {
	b.srv.Modify(t, b.personDN(key), map[string][]string{"displayName": {name}})
}

func (b *adBackend) SetStatus(t *testing.T, key string, s directory.Status) {
	if s == directory.Inactive {
		t.Fatal("AD backend cannot lock an account out")
	}
	b.srv.Modify(t, b.personDN(key), map[string][]string{"userAccountControl": {adUAC(s)}})
}

func (b *adBackend) Delete(t *testing.T, key string) { b.srv.Delete(t, b.personDN(key)) }

func (b *adBackend) Throttle(t *testing.T, _ time.Duration) { t.Fatal("not supported") }
func (b *adBackend) FailPage(t *testing.T)                  { t.Fatal("not supported") }
func (b *adBackend) Truncate(t *testing.T)                  { t.Fatal("not supported") }
func (b *adBackend) ExpireDelta(t *testing.T)               { t.Fatal("not supported") }

var _ io.Closer = (*Connector)(nil)
