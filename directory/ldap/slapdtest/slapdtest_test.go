package slapdtest

import (
	"os"
	"strings"
	"testing"

	goldap "github.com/go-ldap/ldap/v3"
)

var shared = NewShared(Options{})

func TestMain(m *testing.M) {
	code := m.Run()
	shared.Stop()
	os.Exit(code)
}

// TestServer checks the facts §6.7 reports for the memberof
// overlay, which the connector's tests build on.
func TestServer(t *testing.T) {
	s := shared.Server(t)
	base := s.Subtree(t)
	s.Seed(t, strings.ReplaceAll(`
dn: uid=alice,ou=people,BASE
objectClass: inetOrgPerson
uid: alice
cn: Alice Able
sn: Able

dn: cn=devs,ou=groups,BASE
objectClass: groupOfNames
cn: devs
member: uid=alice,ou=people,BASE

dn: cn=eng,ou=groups,BASE
objectClass: groupOfNames
cn: eng
member: cn=devs,ou=groups,BASE
`, "BASE", base))
	e := s.Entry(t, "uid=alice,ou=people,"+base, "memberOf", "entryUUID")
	if got := e.GetAttributeValues("memberOf"); len(got) != 1 || !strings.HasPrefix(got[0], "cn=devs") {
		t.Errorf("alice memberOf = %q, want only cn=devs (memberof is direct only)", got)
	}
	if e.GetAttributeValue("entryUUID") == "" {
		t.Error("no entryUUID")
	}
	t.Logf("slapd started in %v", s.StartTime)

	// The reader binds and pages.
	c, err := goldap.DialURL(s.LDAPSURL, goldap.DialWithTLSConfig(s.TLSConfig()))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Bind(ReaderDN, ReaderPW); err != nil {
		t.Fatal(err)
	}
	res, err := c.SearchWithPaging(goldap.NewSearchRequest(base, goldap.ScopeWholeSubtree, goldap.NeverDerefAliases,
		0, 0, false, "(objectClass=*)", []string{"dn"}, nil), 2)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Entries) != 6 {
		t.Errorf("got %d entries, want 6", len(res.Entries))
	}
}
