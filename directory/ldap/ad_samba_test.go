package ldap

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/usherhq/usher/config"
	"github.com/usherhq/usher/directory"
	"github.com/usherhq/usher/directory/ldap/sambatest"
)

// adPeople is the AD tree's people: alice in devs, which is nested in
// eng; bob in eng; carol disabled; erin expired (accountExpires 2001);
// frank in no group; dave outside the base. Their sAMAccountNames carry
// the subtree's number, for they are unique in the whole domain.
var adPeople = []struct {
	cn, ou, name string
	status       directory.Status
	extra        string
}{
	{"Alice Able", "People", "alice", directory.Active,
		"givenName: Alice\nsn: Able\ndisplayName: Alice A.\nmail: alice-N@example.test\ndepartment: R&D\n"},
	{"Bob Baker", "People", "bob", directory.Active, ""},
	{"Carol Cole", "People", "carol", directory.Disabled, ""},
	{"Erin Eve", "People", "erin", directory.Active, "accountExpires: 126227808000000000\n"},
	{"Frank Fox", "People", "frank", directory.Active, ""},
	{"Dave Dunn", "Others", "dave", directory.Active, ""},
}

// adGroups are its groups, after the people they list.
const adGroups = `
dn: CN=devs-N,OU=Groups,BASE
objectClass: group
sAMAccountName: devs-N
member: CN=Alice Able,OU=People,BASE

dn: CN=eng-N,OU=Groups,BASE
objectClass: group
sAMAccountName: eng-N
member: CN=devs-N,OU=Groups,BASE
member: CN=Bob Baker,OU=People,BASE
`

// adUser is a user entry: enabled unless status is Disabled, with a
// password (Samba will not enable an account without one) and the
// userPrincipalName sam@example.test; extra lines follow.
func adUser(dn, sam string, status directory.Status, extra string) string {
	return fmt.Sprintf("dn: %s\nobjectClass: user\nsAMAccountName: %s\nuserPrincipalName: %s@example.test\n"+
		"password: x\nuserAccountControl: %s\n%s", dn, sam, sam, adUAC(status), extra)
}

// adUAC is the userAccountControl of a normal account, disabled or not.
func adUAC(s directory.Status) string {
	if s == directory.Disabled {
		return "514"
	}
	return "512"
}

func adSeeded(t *testing.T) (*sambatest.Server, string, string) {
	t.Helper()
	srv := samba.Server(t)
	base, n := srv.Subtree(t)
	ldif := "dn: OU=Others,BASE\nobjectClass: organizationalUnit\n\n"
	for _, p := range adPeople {
		ldif += adUser("CN="+p.cn+",OU="+p.ou+",BASE", p.name+"-N", p.status, p.extra) + "\n"
	}
	srv.Seed(t, strings.NewReplacer("BASE", base, "-N", "-"+n).Replace(ldif+adGroups))
	return srv, base, n
}

func adConfig(srv *sambatest.Server, base string) *Config {
	return &Config{
		Flavor:       ActiveDirectory,
		URL:          srv.URL,
		CAFile:       srv.CAFile,
		BindDN:       sambatest.AdminDN,
		BindPassword: config.SecretValue(sambatest.AdminPW),
		PageSize:     2,
		BaseDNs:      []string{"OU=People," + base},
		GroupBaseDNs: []string{"OU=Groups," + base},
		Attributes:   []string{"department"},
	}
}

// byPrefix keys people by their username without the -N suffix.
func byPrefix(got map[string]directory.Person) map[string]directory.Person {
	out := map[string]directory.Person{}
	for k, v := range got {
		name, _, _ := strings.Cut(k, "-")
		out[name] = v
	}
	return out
}

func TestADPull(t *testing.T) {
	t.Parallel()
	srv, base, n := adSeeded(t)
	c := open(t, adConfig(srv, base))
	got := byPrefix(pull(t, c, 2))
	if want := []string{"alice", "bob", "carol", "erin", "frank"}; !slices.Equal(keys(got), want) {
		t.Fatalf("people = %v, want %v", keys(got), want)
	}
	alice := got["alice"]
	// The standard GUID string is what AD's <GUID=...> DN syntax takes:
	// an independent check of the byte order.
	if e := srv.Entry(t, "<GUID="+alice.ID+">", "sAMAccountName"); e.GetAttributeValue("sAMAccountName") != "alice-"+n {
		t.Errorf("<GUID=%s> is %q, not alice", alice.ID, e.GetAttributeValue("sAMAccountName"))
	}
	if alice.Subject != alice.ID || alice.Username != "alice-"+n || alice.DisplayName != "Alice A." ||
		alice.GivenName != "Alice" || alice.FamilyName != "Able" || alice.Email != "alice-"+n+"@example.test" {
		t.Errorf("alice = %+v", alice)
	}
	if !slices.Equal(alice.Attributes["department"], []string{"R&D"}) {
		t.Errorf("alice attributes = %v", alice.Attributes)
	}
	for name, want := range map[string][]string{"alice": {"devs-" + n, "eng-" + n}, "bob": {"eng-" + n}, "frank": nil} {
		if p := got[name]; !slices.Equal(p.Groups, want) || len(p.GroupIDs) != len(want) {
			t.Errorf("%s groups = %v %v, want %v", name, p.Groups, p.GroupIDs, want)
		}
	}
	for name, want := range map[string]directory.Status{
		"alice": directory.Active, "carol": directory.Disabled, "erin": directory.Disabled, "frank": directory.Active,
	} {
		if got[name].Status != want {
			t.Errorf("%s status = %v, want %v", name, got[name].Status, want)
		}
	}
}

func TestADScopeInChain(t *testing.T) {
	t.Parallel()
	srv, base, n := adSeeded(t)
	cfg := adConfig(srv, base)
	cfg.Groups = []string{"CN=eng-" + n + ",OU=Groups," + base}
	got := byPrefix(pull(t, open(t, cfg), 2))
	if want := []string{"alice", "bob"}; !slices.Equal(keys(got), want) {
		t.Errorf("people in eng (nested) = %v, want %v", keys(got), want)
	}

	cfg.SubjectAttribute = "userPrincipalName"
	c := open(t, cfg)
	ctx := context.Background()
	for _, tt := range []struct {
		who string
		out bool
	}{{"alice", false}, {"frank", true}, {"dave", true}} {
		p, err := c.Person(ctx, tt.who+"-"+n+"@EXAMPLE.test")
		if err != nil || p.OutOfScope != tt.out || !strings.HasPrefix(p.Username, tt.who) {
			t.Errorf("Person(%s) = %+v, %v; want out of scope %v", tt.who, p, err, tt.out)
		}
		if tt.who == "alice" && !slices.Equal(p.Groups, []string{"devs-" + n, "eng-" + n}) {
			t.Errorf("alice's groups by the in-chain rule = %v", p.Groups)
		}
	}
	if _, err := c.Person(ctx, "nobody@example.test"); !errors.Is(err, directory.ErrNotFound) {
		t.Errorf("Person(nobody) = %v, want ErrNotFound", err)
	}
	// By objectGUID: the string form turns back into the raw bytes.
	cfg.SubjectAttribute = ""
	c2 := open(t, cfg)
	alice, err := c.Person(ctx, "alice-"+n+"@example.test")
	if err != nil {
		t.Fatal(err)
	}
	p, err := c2.Person(ctx, strings.ToUpper(alice.ID))
	if err != nil || p.ID != alice.ID {
		t.Errorf("Person(alice's GUID) = %+v, %v", p, err)
	}
}

func TestADRangeRetrieval(t *testing.T) {
	t.Parallel()
	srv, base, n := adSeeded(t)
	c := open(t, adConfig(srv, base))
	err := c.run(context.Background(), func(s *session) error {
		// Ask for member;range=1-* of eng (two members): AD answers
		// member;range=1-* with the second, the last chunk.
		rest, err := s.moreValues(context.Background(), "CN=eng-"+n+",OU=Groups,"+base, "member", 1)
		if err != nil {
			return err
		}
		if len(rest) != 1 {
			t.Errorf("member;range=1-* = %v, want one value", rest)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestADDelta(t *testing.T) {
	t.Parallel()
	srv, base, n := adSeeded(t)
	c := open(t, adConfig(srv, base))
	ctx := context.Background()
	tok, err := c.Delta(ctx, "", func(directory.Page) error { t.Error("a starting delta listed people"); return nil })
	if err != nil || !strings.HasPrefix(tok, "ad1:") {
		t.Fatalf("Delta(\"\") = %q, %v", tok, err)
	}
	srv.Modify(t, "CN=Bob Baker,OU=People,"+base, map[string][]string{"title": {"Boss"}})
	srv.Delete(t, "CN=Frank Fox,OU=People,"+base)
	var changed []directory.Person
	next, err := c.Delta(ctx, tok, func(p directory.Page) error { changed = append(changed, p.People...); return nil })
	if err != nil {
		t.Fatal(err)
	}
	var saw []string
	for _, p := range changed {
		saw = append(saw, p.Username+"/"+p.Status.String())
	}
	slices.Sort(saw)
	if want := []string{"bob-" + n + "/active", "frank-" + n + "/deleted"}; !slices.Equal(saw, want) {
		t.Errorf("delta = %v, want %v", saw, want)
	}
	if next == tok {
		t.Errorf("token did not move: %s", next)
	}
	// Another DC database (a restore, another DC) voids the token.
	parts := strings.Split(next, ":")
	parts[2] = "00000000-0000-0000-0000-000000000000"
	if _, err := c.Delta(ctx, strings.Join(parts, ":"), func(directory.Page) error { return nil }); !errors.Is(err, directory.ErrDeltaExpired) {
		t.Errorf("Delta with another invocationId = %v, want ErrDeltaExpired", err)
	}
}
