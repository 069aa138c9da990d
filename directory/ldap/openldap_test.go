package ldap

import (
	"context"
	"errors"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/usherhq/usher/config"
	"github.com/usherhq/usher/directory"
	"github.com/usherhq/usher/directory/ldap/internal/ldaptest"
	"github.com/usherhq/usher/directory/ldap/sambatest"
	"github.com/usherhq/usher/directory/ldap/slapdtest"
)

// One server of each kind for the package, started by the first test
// that asks.
var (
	slapd = slapdtest.NewShared(slapdtest.Options{})
	samba = sambatest.NewShared()
)

func TestMain(m *testing.M) {
	code := m.Run()
	slapd.Stop()
	samba.Stop()
	os.Exit(code)
}

// seedTree is the tree most tests read: under ou=people alice (devs, which
// is nested in eng), bob (eng), carol (devs, permanently locked by
// ppolicy), erin (temporarily locked), frank (no group); dave lives in
// ou=others, outside the base; zed is in the "leavers" group.
const seedTree = `
dn: ou=others,BASE
objectClass: organizationalUnit
ou: others

dn: uid=alice,ou=people,BASE
objectClass: inetOrgPerson
uid: alice
cn: Alice Able
sn: Able
givenName: Alice
displayName: Alice A.
mail: alice@example.test
departmentNumber: 42

dn: uid=bob,ou=people,BASE
objectClass: inetOrgPerson
uid: bob
cn: Bob Baker
sn: Baker
mail: bob@example.test

dn: uid=carol,ou=people,BASE
objectClass: inetOrgPerson
uid: carol
cn: Carol Cole
sn: Cole
pwdAccountLockedTime: 000001010000Z

dn: uid=erin,ou=people,BASE
objectClass: inetOrgPerson
uid: erin
cn: Erin Eve
sn: Eve
pwdAccountLockedTime: 20240101000000Z

dn: uid=frank,ou=people,BASE
objectClass: inetOrgPerson
uid: frank
cn: Frank Fox
sn: Fox

dn: uid=zed,ou=people,BASE
objectClass: inetOrgPerson
uid: zed
cn: Zed Zee
sn: Zee

dn: uid=dave,ou=others,BASE
objectClass: inetOrgPerson
uid: dave
cn: Dave Dunn
sn: Dunn

dn: cn=devs,ou=groups,BASE
objectClass: groupOfNames
cn: devs
member: uid=alice,ou=people,BASE
member: uid=carol,ou=people,BASE

dn: cn=eng,ou=groups,BASE
objectClass: groupOfNames
cn: eng
member: cn=devs,ou=groups,BASE
member: UID=Bob, OU=People,BASE

dn: cn=leavers,ou=groups,BASE
objectClass: groupOfNames
cn: leavers
member: uid=zed,ou=people,BASE
`

// seeded starts a subtree for t with seedTree and returns the server and
// the subtree's DN.
func seeded(t *testing.T) (*slapdtest.Server, string) {
	t.Helper()
	srv := slapd.Server(t)
	base := srv.Subtree(t)
	srv.Seed(t, strings.ReplaceAll(seedTree, "BASE", base))
	return srv, base
}

// olConfig reads base as the size-limited reader over StartTLS, two
// people a page.
func olConfig(srv *slapdtest.Server, base string) *Config {
	return &Config{
		Flavor:       OpenLDAP,
		URL:          srv.URL,
		StartTLS:     true,
		CAFile:       srv.CAFile,
		BindDN:       slapdtest.ReaderDN,
		BindPassword: config.SecretValue(slapdtest.ReaderPW),
		PageSize:     2,
		BaseDNs:      []string{"ou=people," + base},
		GroupBaseDNs: []string{"ou=groups," + base},
		Disabled:     &Disabled{PPolicy: true, Group: "cn=leavers,ou=groups," + base},
		Attributes:   []string{"departmentNumber"},
	}
}

func open(t *testing.T, cfg *Config) *Connector {
	t.Helper()
	c, err := cfg.Open("corp", "idp1", directory.Deps{})
	if err != nil {
		t.Fatal(err)
	}
	conn := c.(*Connector)
	t.Cleanup(func() { conn.Close() })
	return conn
}

// pull collects a complete pull, checking that nobody comes twice and no
// page is larger than the page size.
func pull(t *testing.T, c directory.Connector, pageSize int) map[string]directory.Person {
	t.Helper()
	got, err := tryPull(c, pageSize)
	if err != nil {
		t.Fatalf("Pull: %v", err)
	}
	return got
}

func tryPull(c directory.Connector, pageSize int) (map[string]directory.Person, error) {
	got := map[string]directory.Person{}
	var err error
	perr := c.Pull(context.Background(), func(p directory.Page) error {
		if pageSize > 0 && len(p.People) > pageSize {
			err = errors.Join(err, errors.New("page larger than the page size"))
		}
		for _, q := range p.People {
			if _, dup := got[q.Username]; dup {
				err = errors.Join(err, errors.New("person delivered twice: "+q.Username))
			}
			got[q.Username] = q
		}
		return nil
	})
	return got, errors.Join(perr, err)
}

func keys[M ~map[string]V, V any](m M) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

func TestPullOpenLDAP(t *testing.T) {
	t.Parallel()
	srv, base := seeded(t)
	c := open(t, olConfig(srv, base))
	got := pull(t, c, 2)

	if want := []string{"alice", "bob", "carol", "erin", "frank", "zed"}; !slices.Equal(keys(got), want) {
		t.Fatalf("people = %v, want %v", keys(got), want)
	}
	alice := got["alice"]
	uuid := strings.ToLower(srv.Entry(t, "uid=alice,ou=people,"+base, "entryUUID").GetAttributeValue("entryUUID"))
	if alice.ID != uuid || alice.Subject != uuid {
		t.Errorf("alice ID, Subject = %q, %q; want entryUUID %q for both", alice.ID, alice.Subject, uuid)
	}
	if alice.Email != "alice@example.test" || alice.DisplayName != "Alice A." || alice.GivenName != "Alice" || alice.FamilyName != "Able" {
		t.Errorf("alice profile = %+v", alice)
	}
	if !slices.Equal(alice.Attributes["departmentNumber"], []string{"42"}) {
		t.Errorf("alice attributes = %v", alice.Attributes)
	}
	// Nesting: devs is in eng. Bob's member value is written in another
	// case and spacing than his DN.
	for name, want := range map[string][]string{"alice": {"devs", "eng"}, "bob": {"eng"}, "frank": nil} {
		p := got[name]
		if !slices.Equal(p.Groups, want) || len(p.GroupIDs) != len(want) || !p.GroupsComplete {
			t.Errorf("%s groups = %v (ids %v, complete %v), want %v", name, p.Groups, p.GroupIDs, p.GroupsComplete, want)
		}
	}
	devsID := strings.ToLower(srv.Entry(t, "cn=devs,ou=groups,"+base, "entryUUID").GetAttributeValue("entryUUID"))
	if alice.GroupIDs[0] != devsID {
		t.Errorf("alice's first group id = %q, want devs' entryUUID %q", alice.GroupIDs[0], devsID)
	}
	for name, want := range map[string]directory.Status{
		"alice": directory.Active, "carol": directory.Disabled, "erin": directory.Inactive, "zed": directory.Disabled,
	} {
		if got[name].Status != want {
			t.Errorf("%s status = %v, want %v", name, got[name].Status, want)
		}
	}
	if c.Name() != "corp" || c.IdP() != "idp1" {
		t.Errorf("Name, IdP = %q, %q", c.Name(), c.IdP())
	}
}

func TestPullScope(t *testing.T) {
	t.Parallel()
	srv, base := seeded(t)
	tests := []struct {
		name string
		edit func(*Config)
		want []string
	}{
		// carol is in devs, nested in eng: the walk finds her although
		// the memberof overlay only records direct groups.
		{"nested group", func(c *Config) { c.Groups = []string{"cn=eng,ou=groups," + base} }, []string{"alice", "bob", "carol"}},
		{"direct group", func(c *Config) { c.Groups = []string{"CN=Devs,OU=Groups," + base} }, []string{"alice", "carol"}},
		{"two groups", func(c *Config) {
			c.Groups = []string{"cn=devs,ou=groups," + base, "cn=leavers,ou=groups," + base}
		}, []string{"alice", "carol", "zed"}},
		{"filter", func(c *Config) { c.UserFilter = "(&(objectClass=inetOrgPerson)(mail=*))" }, []string{"alice", "bob"}},
		{"two bases", func(c *Config) { c.BaseDNs = append(c.BaseDNs, "ou=others,"+base) },
			[]string{"alice", "bob", "carol", "dave", "erin", "frank", "zed"}},
		{"overlapping bases", func(c *Config) { c.BaseDNs = append(c.BaseDNs, base) },
			[]string{"alice", "bob", "carol", "dave", "erin", "frank", "zed"}},
		{"subject uid", func(c *Config) { c.SubjectAttribute = "uid"; c.PageSize = 500 },
			[]string{"alice", "bob", "carol", "erin", "frank", "zed"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg := olConfig(srv, base)
			tt.edit(cfg)
			got := pull(t, open(t, cfg), cfg.PageSize)
			if !slices.Equal(keys(got), tt.want) {
				t.Errorf("people = %v, want %v", keys(got), tt.want)
			}
			if cfg.SubjectAttribute == "uid" && got["bob"].Subject != "bob" {
				t.Errorf("bob's subject = %q, want bob", got["bob"].Subject)
			}
		})
	}
}

func TestPullDynlist(t *testing.T) {
	// A second server with memberOf computed by dynlist: the connector
	// reads member lists, so it sees the same groups either way.
	t.Parallel()
	srv, err := slapdtest.Start(slapdtest.Options{Dynlist: true})
	if err != nil {
		ldaptest.SkipUnavailable(t, err)
	}
	t.Cleanup(srv.Stop)
	base := srv.Subtree(t)
	srv.Seed(t, strings.ReplaceAll(seedTree, "BASE", base))
	if mo := srv.Entry(t, "uid=alice,ou=people,"+base, "memberOf").GetAttributeValues("memberOf"); len(mo) != 2 {
		t.Errorf("dynlist memberOf of alice = %v, want devs and eng", mo)
	}
	cfg := olConfig(srv, base)
	cfg.Groups = []string{"cn=eng,ou=groups," + base}
	got := pull(t, open(t, cfg), 2)
	if !slices.Equal(keys(got), []string{"alice", "bob", "carol"}) || !slices.Equal(got["alice"].Groups, []string{"devs", "eng"}) {
		t.Errorf("people = %v, alice's groups %v", keys(got), got["alice"].Groups)
	}
}

func TestPullSizeLimitIsIncomplete(t *testing.T) {
	t.Parallel()
	srv, base := seeded(t)
	tests := []struct {
		name     string
		dn, pw   string
		pageSize int
	}{
		// size.prtotal stops the paged search after 5 entries.
		{"paged total", slapdtest.LimitedDN, slapdtest.LimitedPW, 2},
		// A page larger than the hard limit ends in sizeLimitExceeded
		// on the first page.
		{"one big page", slapdtest.LimitedDN, slapdtest.LimitedPW, 100},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg := olConfig(srv, base)
			cfg.BindDN, cfg.BindPassword, cfg.PageSize = tt.dn, config.SecretValue(tt.pw), tt.pageSize
			cfg.BaseDNs = []string{base} // 6 people + 1 in others + OUs and groups
			cfg.UserFilter = "(objectClass=*)"
			_, err := tryPull(open(t, cfg), 0)
			if !errors.Is(err, directory.ErrIncomplete) {
				t.Fatalf("Pull = %v, want ErrIncomplete", err)
			}
		})
	}
}

func TestPullLDAPS(t *testing.T) {
	t.Parallel()
	srv, base := seeded(t)
	cfg := olConfig(srv, base)
	cfg.URL, cfg.StartTLS = srv.LDAPSURL, false
	if got := pull(t, open(t, cfg), 2); len(got) != 6 {
		t.Errorf("got %d people over LDAPS, want 6", len(got))
	}
}

func TestConnectRefusals(t *testing.T) {
	t.Parallel()
	srv, base := seeded(t)
	tests := []struct {
		name string
		edit func(*Config)
		want string
	}{
		{"unknown CA over LDAPS", func(c *Config) { c.URL, c.StartTLS, c.CAFile = srv.LDAPSURL, false, "" }, "certificate"},
		{"unknown CA over StartTLS", func(c *Config) { c.CAFile = "" }, "certificate"},
		{"wrong name", func(c *Config) { c.TLSServerName = "ldap.example.com" }, "certificate"},
		{"bad password", func(c *Config) { c.BindPassword = config.SecretValue("nope") }, "Invalid Credentials"},
		{"missing base", func(c *Config) { c.BaseDNs = []string{"ou=nowhere," + base} }, "No Such Object"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg := olConfig(srv, base)
			cfg.Retries = new(int)
			tt.edit(cfg)
			_, err := tryPull(open(t, cfg), 0)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Pull = %v, want an error about %q", err, tt.want)
			}
		})
	}
}

// TestTimeout: a server that accepts and never answers fails the
// operation after the timeout instead of hanging.
func TestTimeout(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var held []net.Conn
	var mu sync.Mutex
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range held {
			c.Close()
		}
		mu.Unlock()
	})
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			held = append(held, c)
			mu.Unlock()
		}
	}()
	for _, startTLS := range []bool{false, true} {
		cfg := &Config{Flavor: OpenLDAP, URL: "ldap://" + ln.Addr().String(), StartTLS: startTLS, BindDN: "cn=x",
			BindPassword: config.SecretValue("p"), BaseDNs: []string{"dc=x"}, Timeout: 200 * time.Millisecond, Retries: new(int)}
		begin := time.Now()
		_, err := tryPull(open(t, cfg), 0)
		if err == nil || time.Since(begin) > 10*time.Second {
			t.Errorf("start_tls %v: Pull = %v after %v, want a timeout error", startTLS, err, time.Since(begin))
		}
	}
}

func TestPullCallbackErrorAsIs(t *testing.T) {
	t.Parallel()
	srv, base := seeded(t)
	c := open(t, olConfig(srv, base))
	stop := errors.New("stop here")
	pages := 0
	err := c.Pull(context.Background(), func(directory.Page) error { pages++; return stop })
	if err != stop || pages != 1 {
		t.Fatalf("Pull = %v after %d pages, want the callback's own error after 1", err, pages)
	}
	// The connection is still good for the next call.
	if got := pull(t, c, 2); len(got) != 6 {
		t.Errorf("next pull got %d people", len(got))
	}
}

func TestPullCancelled(t *testing.T) {
	t.Parallel()
	srv, base := seeded(t)
	c := open(t, olConfig(srv, base))
	ctx, cancel := context.WithCancel(context.Background())
	err := c.Pull(ctx, func(directory.Page) error { cancel(); return nil })
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Pull = %v, want context.Canceled", err)
	}
}

func TestPullReconnectsAndStartsOver(t *testing.T) {
	t.Parallel()
	srv, base := seeded(t)
	px := newTestProxy(t, srv.URL, "")
	cfg := olConfig(srv, base)
	cfg.URL, cfg.StartTLS, cfg.CAFile = px.url(), false, "" // loopback: plain is allowed
	c := open(t, cfg)

	got := map[string]int{}
	pages := 0
	err := c.Pull(context.Background(), func(p directory.Page) error {
		pages++
		for _, q := range p.People {
			got[q.Username]++
		}
		if pages == 1 {
			px.drop(false) // the next page's request meets a dead connection
		}
		return nil
	})
	if err != nil {
		t.Fatalf("Pull: %v", err)
	}
	if len(got) != 6 {
		t.Errorf("got %v, want 6 people", got)
	}
	for name, n := range got {
		if n != 1 {
			t.Errorf("%s delivered %d times", name, n)
		}
	}
	if dials := px.connections(); dials != 2 {
		t.Errorf("%d connections, want 2 (one reconnect)", dials)
	}
}

func TestPullGivesUpIncomplete(t *testing.T) {
	t.Parallel()
	srv, base := seeded(t)
	px := newTestProxy(t, srv.URL, "")
	cfg := olConfig(srv, base)
	cfg.URL, cfg.StartTLS, cfg.CAFile = px.url(), false, ""
	one := 1
	cfg.Retries = &one // the first retry is immediate: no wait in the test
	c := open(t, cfg)
	err := c.Pull(context.Background(), func(directory.Page) error { px.drop(true); return nil })
	if !errors.Is(err, directory.ErrIncomplete) {
		t.Fatalf("Pull = %v, want ErrIncomplete", err)
	}
}

func TestPerson(t *testing.T) {
	t.Parallel()
	srv, base := seeded(t)
	cfg := olConfig(srv, base)
	cfg.SubjectAttribute = "mail"
	cfg.Groups = []string{"cn=eng,ou=groups," + base}
	// dave's mail is unique on the server: he is looked up outside the
	// base, where other tests' daves live too.
	daveMail := "dave@" + strings.TrimPrefix(strings.Split(base, ",")[0], "ou=") + ".test"
	srv.Modify(t, "uid=dave,ou=others,"+base, map[string][]string{"mail": {daveMail}})
	srv.Modify(t, "uid=frank,ou=people,"+base, map[string][]string{"mail": {"frank@example.test"}})
	c := open(t, cfg)
	ctx := context.Background()

	tests := []struct {
		subject    string
		username   string
		outOfScope bool
		groups     []string
		status     directory.Status
	}{
		{"alice@example.test", "alice", false, []string{"devs", "eng"}, directory.Active},
		{"ALICE@example.test", "alice", false, []string{"devs", "eng"}, directory.Active}, // mail matches case-insensitively
		{"bob@example.test", "bob", false, []string{"eng"}, directory.Active},
		{daveMail, "dave", true, nil, directory.Active},              // outside the base
		{"frank@example.test", "frank", true, nil, directory.Active}, // not in the group
	}
	for _, tt := range tests {
		p, err := c.Person(ctx, tt.subject)
		if err != nil {
			t.Errorf("Person(%q): %v", tt.subject, err)
			continue
		}
		if p.Username != tt.username || p.OutOfScope != tt.outOfScope || !slices.Equal(p.Groups, tt.groups) || p.Status != tt.status {
			t.Errorf("Person(%q) = %s out=%v groups=%v %v, want %s out=%v groups=%v %v", tt.subject,
				p.Username, p.OutOfScope, p.Groups, p.Status, tt.username, tt.outOfScope, tt.groups, tt.status)
		}
	}
	for _, s := range []string{"nobody@example.test", "*", "alice@example.test)(uid=*", "*)(|(mail=*", ""} {
		if _, err := c.Person(ctx, s); !errors.Is(err, directory.ErrNotFound) {
			t.Errorf("Person(%q) = %v, want ErrNotFound", s, err)
		}
	}

	// By entryUUID, the default subject; the disabled group is found
	// through the walk up.
	cfg2 := olConfig(srv, base)
	c2 := open(t, cfg2)
	zed := strings.ToUpper(srv.Entry(t, "uid=zed,ou=people,"+base, "entryUUID").GetAttributeValue("entryUUID"))
	p, err := c2.Person(ctx, zed)
	if err != nil || p.Username != "zed" || p.Status != directory.Disabled || p.OutOfScope {
		t.Errorf("Person(zed's entryUUID) = %+v, %v; want zed, disabled, in scope", p, err)
	}

	if _, err := c2.Person(ctx, "not-a-uuid"); !errors.Is(err, directory.ErrNotFound) {
		t.Errorf("Person(not-a-uuid) = %v, want ErrNotFound", err)
	}

	// Two people with one subject: refused, not a guess.
	srv.Modify(t, "uid=bob,ou=people,"+base, map[string][]string{"mail": {"alice@example.test"}})
	if _, err := c.Person(ctx, "alice@example.test"); err == nil || errors.Is(err, directory.ErrNotFound) {
		t.Errorf("Person with an ambiguous subject = %v, want an error", err)
	}
}

func TestDeltaOpenLDAP(t *testing.T) {
	t.Parallel()
	srv, base := seeded(t)
	cfg := olConfig(srv, base)
	c := open(t, cfg)
	ctx := context.Background()

	start, err := c.Delta(ctx, "", func(directory.Page) error { t.Error("a starting delta listed people"); return nil })
	if err != nil || !strings.HasPrefix(start, "ol1:") {
		t.Fatalf("Delta(\"\") = %q, %v", start, err)
	}
	// The starting token is clock_skew back: the seed shows.
	var first []string
	next, err := c.Delta(ctx, start, func(p directory.Page) error {
		for _, q := range p.People {
			first = append(first, q.Username)
		}
		return nil
	})
	if err != nil || len(first) != 6 {
		t.Fatalf("Delta(start) = %v, %v; want the 6 people just seeded", first, err)
	}

	// Move to the next whole second (modifyTimestamp has seconds), then
	// change bob: a delta from after the seed lists only him.
	seedTime, _ := parseGeneralizedTime(srv.Entry(t, "uid=alice,ou=people,"+base, "modifyTimestamp").GetAttributeValue("modifyTimestamp"))
	time.Sleep(time.Until(seedTime.Add(time.Second)) + 50*time.Millisecond)
	srv.Modify(t, "uid=bob,ou=people,"+base, map[string][]string{"title": {"Boss"}})
	after := olToken{scope: c.scope, since: seedTime.Add(time.Second)}.String()
	var changed []directory.Person
	next2, err := c.Delta(ctx, after, func(p directory.Page) error { changed = append(changed, p.People...); return nil })
	if err != nil || len(changed) != 1 || changed[0].Username != "bob" || !slices.Equal(changed[0].Groups, []string{"eng"}) {
		t.Fatalf("Delta(after seed) = %+v, %v; want bob with his groups", changed, err)
	}
	if next2 < after || next <= start {
		t.Errorf("tokens did not advance: %q -> %q, %q -> %q", start, next, after, next2)
	}

	for _, bad := range []string{"garbage", "ad1:x:y:1", "ol1:" + c.scope + ":notatime"} {
		if _, err := c.Delta(ctx, bad, func(directory.Page) error { return nil }); !errors.Is(err, directory.ErrDeltaExpired) {
			t.Errorf("Delta(%q) = %v, want ErrDeltaExpired", bad, err)
		}
	}
	// A token from another scope is void.
	cfg.Groups = []string{"cn=eng,ou=groups," + base}
	if _, err := open(t, cfg).Delta(ctx, next, func(directory.Page) error { return nil }); !errors.Is(err, directory.ErrDeltaExpired) {
		t.Errorf("Delta with another scope's token = %v, want ErrDeltaExpired", err)
	}
}

func TestConcurrentUse(t *testing.T) {
	t.Parallel()
	srv, base := seeded(t)
	cfg := olConfig(srv, base)
	cfg.SubjectAttribute = "uid"
	c := open(t, cfg)
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if i%2 == 0 {
				_, err := tryPull(c, 2)
				errs <- err
				return
			}
			_, err := c.Person(context.Background(), "alice")
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
}
