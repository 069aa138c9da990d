package ldap

import (
	"errors"
	"math"
	"path/filepath"
	"strings"
	"testing"
	"time"

	goldap "github.com/go-ldap/ldap/v3"

	"github.com/usherhq/usher/config"
	"github.com/usherhq/usher/directory"
	"github.com/usherhq/usher/directory/ldap/internal/ldaptest"
)

func TestGUID(t *testing.T) {
	t.Parallel()
	// Storage order of the GUID 6f1c2a9e-4b3d-5a6c-8e7f-0102030405ff:
	// the first three fields little-endian, the rest as is.
	raw := []byte{0x9e, 0x2a, 0x1c, 0x6f, 0x3d, 0x4b, 0x6c, 0x5a, 0x8e, 0x7f, 0x01, 0x02, 0x03, 0x04, 0x05, 0xff}
	const want = "6f1c2a9e-4b3d-5a6c-8e7f-0102030405ff"
	got, err := guidString(raw)
	if err != nil || got != want {
		t.Fatalf("guidString = %q, %v; want %q", got, err, want)
	}
	for _, s := range []string{want, strings.ToUpper(want), "{" + want + "}"} {
		b, err := guidBytes(s)
		if err != nil || string(b) != string(raw) {
			t.Errorf("guidBytes(%q) = %x, %v; want %x", s, b, err, raw)
		}
	}
	for _, bad := range []string{"", "6f1c2a9e", "6f1c2a9e-4b3d-5a6c-8e7f-0102030405fg", strings.Repeat("0", 31) + "-", "alice@example.test"} {
		if _, err := guidBytes(bad); err == nil {
			t.Errorf("guidBytes(%q) accepted", bad)
		}
	}
	if _, err := guidString(raw[:15]); err == nil {
		t.Error("guidString of 15 bytes accepted")
	}
	if got := escapeBytes([]byte{0x00, 0x2a, 0xff}); got != `\00\2a\ff` {
		t.Errorf("escapeBytes = %q", got)
	}
}

func TestFileTime(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   string
		want time.Time
		ok   bool
		err  bool
	}{
		{"0", time.Time{}, false, false},
		{"9223372036854775807", time.Time{}, false, false},
		{"116444736000000000", time.Unix(0, 0).UTC(), true, false},
		{"133444736001234567", time.Unix(1700000000, 123456700).UTC(), true, false},
		{"x", time.Time{}, false, true},
	}
	for _, tt := range tests {
		got, ok, err := fileTime(tt.in)
		if !got.Equal(tt.want) || ok != tt.ok || (err != nil) != tt.err {
			t.Errorf("fileTime(%q) = %v, %v, %v; want %v, %v, err %v", tt.in, got, ok, err, tt.want, tt.ok, tt.err)
		}
	}
}

func TestADStatus(t *testing.T) {
	t.Parallel()
	now := time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC)
	past := "133000000000000000"   // 2022
	future := "134500000000000000" // 2027
	tests := []struct {
		name  string
		attrs map[string][]string
		want  directory.Status
	}{
		{"normal", map[string][]string{"userAccountControl": {"512"}}, directory.Active},
		{"disabled", map[string][]string{"userAccountControl": {"514"}}, directory.Disabled},
		{"disabled, odd spelling", map[string][]string{"USERACCOUNTCONTROL": {"66050"}}, directory.Disabled},
		{"expired", map[string][]string{"userAccountControl": {"512"}, "accountExpires": {past}}, directory.Disabled},
		{"expires later", map[string][]string{"userAccountControl": {"512"}, "accountExpires": {future}}, directory.Active},
		{"never expires", map[string][]string{"userAccountControl": {"512"}, "accountExpires": {"9223372036854775807"}}, directory.Active},
		// The LOCKOUT bit of userAccountControl is not kept current;
		// only the computed attribute's counts, and a lockout is no leaver.
		{"stale lockout bit", map[string][]string{"userAccountControl": {"528"}}, directory.Active},
		{"locked out", map[string][]string{"userAccountControl": {"512"}, "msDS-User-Account-Control-Computed": {"16"}}, directory.Inactive},
		{"password expired", map[string][]string{"userAccountControl": {"512"}, "msDS-User-Account-Control-Computed": {"8388608"}}, directory.Inactive},
		{"disabled and locked", map[string][]string{"userAccountControl": {"514"}, "msDS-User-Account-Control-Computed": {"16"}}, directory.Disabled},
		{"unreadable", map[string][]string{"userAccountControl": {"x"}, "accountExpires": {"y"}}, directory.Active},
	}
	for _, tt := range tests {
		if got := adStatus(goldap.NewEntry("cn=x", tt.attrs), now); got != tt.want {
			t.Errorf("%s: adStatus = %v, want %v", tt.name, got, tt.want)
		}
	}
}

func TestRangeValues(t *testing.T) {
	t.Parallel()
	entry := func(attrs ...*goldap.EntryAttribute) *goldap.Entry {
		return &goldap.Entry{DN: "cn=g", Attributes: attrs}
	}
	a := func(name string, vals ...string) *goldap.EntryAttribute {
		return &goldap.EntryAttribute{Name: name, Values: vals}
	}
	tests := []struct {
		name  string
		e     *goldap.Entry
		from  int
		vals  int
		next  int
		isErr bool
	}{
		{"plain", entry(a("member", "a", "b")), 0, 2, -1, false},
		{"absent", entry(a("cn", "g")), 0, 0, -1, false},
		// AD: the plain attribute empty, the first chunk ranged.
		{"first chunk", entry(a("member"), a("member;range=0-1499", make([]string, 1500)...)), 0, 1500, 1500, false},
		{"middle chunk", entry(a("Member;Range=1500-2999", make([]string, 1500)...)), 1500, 1500, 3000, false},
		{"last chunk", entry(a("member;range=3000-*", "x")), 3000, 1, -1, false},
		{"other options", entry(a("member;binary;range=0-1", "x", "y")), 0, 2, 2, false},
		{"other attribute", entry(a("memberOf;range=0-1", "x", "y")), 0, 0, -1, false},
		{"bad range", entry(a("member;range=5-2", "x")), 5, 0, 0, true},
		{"bad low", entry(a("member;range=x-2", "x")), 0, 0, 0, true},
		// A chunk that skips values (or goes back) would lose members.
		{"gap", entry(a("member;range=1500-*", "x")), 0, 0, 0, true},
		{"gap before the end", entry(a("member;range=3000-4499", "x")), 1500, 0, 0, true},
		{"overlap", entry(a("member;range=1000-*", "x")), 1500, 0, 0, true},
	}
	for _, tt := range tests {
		vals, next, err := rangeValues(tt.e, "member", tt.from)
		if len(vals) != tt.vals || next != tt.next || (err != nil) != tt.isErr {
			t.Errorf("%s: %d values, next %d, err %v; want %d, %d, err %v", tt.name, len(vals), next, err, tt.vals, tt.next, tt.isErr)
		}
	}
}

func TestFilters(t *testing.T) {
	t.Parallel()
	cfg := &Config{Flavor: ActiveDirectory, URL: "ldaps://dc1", BindDN: "x", BindPassword: config.SecretValue("p"),
		BaseDNs: []string{"DC=corp"}, Groups: []string{`CN=R\2cD (all)*,OU=G,DC=corp`}}
	c := newConnector("d", "i", cfg.withDefaults(), nil, nil, directory.Deps{})
	want := `(&(&(objectCategory=person)(objectClass=user))(|(memberOf:1.2.840.113556.1.4.1941:=CN=R\5c2cD \28all\29\2a,OU=G,DC=corp)))`
	if c.serverScope != want {
		t.Errorf("AD scope filter =\n %s\nwant\n %s", c.serverScope, want)
	}
	if _, err := goldap.CompileFilter(c.serverScope); err != nil {
		t.Errorf("scope filter does not compile: %v", err)
	}
	for subject, want := range map[string]string{
		"6f1c2a9e-4b3d-5a6c-8e7f-0102030405ff": `(objectGUID=\9e\2a\1c\6f\3d\4b\6c\5a\8e\7f\01\02\03\04\05\ff)`,
	} {
		if got, err := c.subjectFilter(subject); err != nil || got != want {
			t.Errorf("subjectFilter(%q) = %q, %v; want %q", subject, got, err, want)
		}
	}
	if _, err := c.subjectFilter("not-a-guid"); err == nil {
		t.Error("a subject that is no GUID made a filter")
	}
	cfg.SubjectAttribute = "userPrincipalName"
	c = newConnector("d", "i", cfg.withDefaults(), nil, nil, directory.Deps{})
	if got, _ := c.subjectFilter("*)(|(cn=*"); got != `(userPrincipalName=\2a\29\28|\28cn=\2a)` {
		t.Errorf("subject filter not escaped: %s", got)
	}
	// OpenLDAP checks groups in usher: its server filter is the user
	// filter alone (the in-chain rule would silently match nobody).
	cfg.Flavor = OpenLDAP
	cfg.SubjectAttribute = ""
	c = newConnector("d", "i", cfg.withDefaults(), nil, nil, directory.Deps{})
	if c.serverScope != "(objectClass=inetOrgPerson)" {
		t.Errorf("OpenLDAP scope filter = %s", c.serverScope)
	}
}

func TestTokens(t *testing.T) {
	t.Parallel()
	tok := adToken{scope: "abc", invocation: "6f1c2a9e-4b3d-5a6c-8e7f-0102030405ff", usn: 12345}
	got, err := parseADToken(tok.String())
	if err != nil || got != tok {
		t.Errorf("AD token round trip = %+v, %v", got, err)
	}
	for _, bad := range []string{"", "ad1:a:b", "ad1:a:b:-1", "ad1:a:b:x", "ol1:a:20250101000000Z"} {
		if _, err := parseADToken(bad); err == nil {
			t.Errorf("parseADToken(%q) accepted", bad)
		}
	}
	ol := olToken{scope: "abc", since: time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)}
	if got, err := parseOLToken(ol.String()); err != nil || got != ol {
		t.Errorf("OpenLDAP token round trip = %+v, %v", got, err)
	}
	if ts, err := parseGeneralizedTime("20250102030405.123Z"); err != nil || !ts.Equal(ol.since) {
		t.Errorf("fractional GeneralizedTime = %v, %v", ts, err)
	}
}

func TestOLStatus(t *testing.T) {
	t.Parallel()
	leavers := group{key: normDN("cn=leavers,ou=g,dc=x")}
	tests := []struct {
		name   string
		rule   *Disabled
		attrs  map[string][]string
		groups []group
		want   directory.Status
	}{
		{"no rule", nil, map[string][]string{"pwdAccountLockedTime": {ppolicyPermanentLock}}, nil, directory.Active},
		{"attribute", &Disabled{Attribute: "employeeStatus", Values: []string{"terminated"}},
			map[string][]string{"employeeStatus": {"Terminated"}}, nil, directory.Disabled},
		{"attribute other value", &Disabled{Attribute: "employeeStatus", Values: []string{"terminated"}},
			map[string][]string{"employeeStatus": {"active"}}, nil, directory.Active},
		{"permanent lock", &Disabled{PPolicy: true}, map[string][]string{"pwdAccountLockedTime": {"000001010000Z"}}, nil, directory.Disabled},
		{"temporary lock", &Disabled{PPolicy: true}, map[string][]string{"pwdAccountLockedTime": {"20250101000000Z"}}, nil, directory.Inactive},
		{"group", &Disabled{Group: "CN=Leavers,OU=G,DC=X"}, nil, []group{leavers}, directory.Disabled},
		{"group and lock", &Disabled{Group: "cn=leavers,ou=g,dc=x", PPolicy: true},
			map[string][]string{"pwdAccountLockedTime": {"20250101000000Z"}}, []group{leavers}, directory.Disabled},
	}
	for _, tt := range tests {
		cfg := Config{Flavor: OpenLDAP, Disabled: tt.rule}
		c := newConnector("d", "i", cfg.withDefaults(), nil, nil, directory.Deps{})
		if got := c.olStatus(goldap.NewEntry("uid=x", tt.attrs), tt.groups); got != tt.want {
			t.Errorf("%s: %v, want %v", tt.name, got, tt.want)
		}
	}
}

func TestNormDN(t *testing.T) {
	t.Parallel()
	if a, b := normDN("UID=Bob, OU=People,DC=Example"), normDN("uid=bob,ou=people,dc=example"); a != b {
		t.Errorf("%q != %q", a, b)
	}
	if a, b := normDN(`cn=a\,b,dc=x`), normDN(`cn=a\2cb,dc=x`); a != b {
		t.Errorf("escapes: %q != %q", a, b)
	}
	if normDN("cn=a,dc=x") == normDN("cn=a+sn=b,dc=x") {
		t.Error("multi-valued RDN folded into a single one")
	}
}

func TestValidate(t *testing.T) {
	t.Parallel()
	valid := func() *Config {
		return &Config{Flavor: OpenLDAP, URL: "ldaps://ldap.example.com", BindDN: "cn=sync,dc=x",
			BindPassword: config.SecretValue("p"), BaseDNs: []string{"ou=people,dc=x"}}
	}
	neg := -1
	certs := t.TempDir()
	if err := ldaptest.WriteCerts(certs); err != nil {
		t.Fatal(err)
	}
	ca := filepath.Join(certs, "ca.pem")
	tests := []struct {
		name  string
		edit  func(*Config)
		field string
	}{
		{"valid", func(*Config) {}, ""},
		{"valid ad", func(c *Config) { c.Flavor = ActiveDirectory; c.Groups = []string{"CN=G,DC=x"} }, ""},
		{"starttls", func(c *Config) { c.URL = "ldap://ldap.example.com:389"; c.StartTLS = true }, ""},
		{"loopback plain", func(c *Config) { c.URL = "ldap://127.0.0.1:3890" }, ""},
		{"localhost plain", func(c *Config) { c.URL = "ldap://localhost" }, ""},
		{"insecure plain", func(c *Config) { c.URL = "ldap://ldap.example.com"; c.InsecurePlaintext = true }, ""},
		{"no flavor", func(c *Config) { c.Flavor = "" }, "flavor"},
		{"bad flavor", func(c *Config) { c.Flavor = "novell" }, "flavor"},
		{"no url", func(c *Config) { c.URL = "" }, "url"},
		{"http url", func(c *Config) { c.URL = "https://ldap.example.com" }, "url"},
		{"url with dn", func(c *Config) { c.URL = "ldaps://ldap.example.com/dc=x" }, "url"},
		{"plain remote", func(c *Config) { c.URL = "ldap://ldap.example.com" }, "url"},
		{"ldaps and starttls", func(c *Config) { c.StartTLS = true }, "start_tls"},
		{"insecure with tls", func(c *Config) { c.InsecurePlaintext = true }, "insecure_plaintext"},
		{"missing ca file", func(c *Config) { c.CAFile = "/nonexistent/ca.pem" }, "ca_file"},
		{"no bind dn", func(c *Config) { c.BindDN = "" }, "bind_dn"},
		{"no password", func(c *Config) { c.BindPassword = config.Secret{} }, "bind_password"},
		{"negative timeout", func(c *Config) { c.Timeout = -time.Second }, "timeout"},
		{"negative retries", func(c *Config) { c.Retries = &neg }, "retries"},
		{"negative page", func(c *Config) { c.PageSize = -1 }, "page_size"},
		{"largest page", func(c *Config) { c.PageSize = math.MaxInt32 }, ""},
		// 2^32 would wrap to 0, a request for no entries: a pull of
		// nobody that looks complete.
		{"page that wraps", func(c *Config) { c.PageSize = 1 << 32 }, "page_size"},
		{"page past the INTEGER", func(c *Config) { c.PageSize = math.MaxInt32 + 1 }, "page_size"},
		{"negative skew", func(c *Config) { c.ClockSkew = -time.Second }, "clock_skew"},
		{"skew on ad", func(c *Config) { c.Flavor = ActiveDirectory; c.ClockSkew = time.Minute }, "clock_skew"},
		{"skew on openldap", func(c *Config) { c.ClockSkew = time.Minute }, ""},
		{"url with fragment", func(c *Config) { c.URL = "ldaps://ldap.example.com#x" }, "url"},
		{"ca file", func(c *Config) { c.CAFile = ca }, ""},
		{"ca file without tls", func(c *Config) { c.URL = "ldap://127.0.0.1"; c.CAFile = ca }, "ca_file"},
		{"server name without tls", func(c *Config) { c.URL = "ldap://127.0.0.1"; c.TLSServerName = "ldap" }, "tls_server_name"},
		{"server name with starttls", func(c *Config) {
			c.URL, c.StartTLS, c.TLSServerName = "ldap://10.0.0.1", true, "ldap.example.com"
		}, ""},
		{"bind dn not a dn", func(c *Config) { c.BindDN = "sync@example.com" }, "bind_dn"},
		{"ad bind as upn", func(c *Config) { c.Flavor = ActiveDirectory; c.BindDN = "sync@example.com" }, ""},
		{"no base", func(c *Config) { c.BaseDNs = nil }, "base_dns"},
		{"bad base", func(c *Config) { c.BaseDNs = []string{"ou=people,,"} }, "base_dns[0]"},
		{"empty base", func(c *Config) { c.BaseDNs = []string{""} }, "base_dns[0]"},
		{"bad group", func(c *Config) { c.Groups = []string{"ok=1", "nope"} }, "groups[1]"},
		{"bad group base", func(c *Config) { c.GroupBaseDNs = []string{"x"} }, "group_base_dns[0]"},
		{"bad filter", func(c *Config) { c.UserFilter = "(objectClass=person" }, "user_filter"},
		{"bad group filter", func(c *Config) { c.GroupFilter = "objectClass=group" }, "group_filter"},
		{"bad subject attribute", func(c *Config) { c.SubjectAttribute = "mail)(x" }, "subject_attribute"},
		{"bad username attribute", func(c *Config) { c.UsernameAttribute = "u id" }, "username_attribute"},
		{"bad group name attribute", func(c *Config) { c.GroupNameAttribute = "*" }, "group_name_attribute"},
		{"bad extra attribute", func(c *Config) { c.Attributes = []string{"title", "a b"} }, "attributes[1]"},
		{"disabled on ad", func(c *Config) { c.Flavor = ActiveDirectory; c.Disabled = &Disabled{PPolicy: true} }, "disabled"},
		{"empty disabled", func(c *Config) { c.Disabled = &Disabled{} }, "disabled"},
		{"attribute without values", func(c *Config) { c.Disabled = &Disabled{Attribute: "x"} }, "disabled.values"},
		{"values without attribute", func(c *Config) { c.Disabled = &Disabled{PPolicy: true, Values: []string{"x"}} }, "disabled.values"},
		{"bad disabled attribute", func(c *Config) { c.Disabled = &Disabled{Attribute: "(x)", Values: []string{"y"}} }, "disabled.attribute"},
		{"bad disabled group", func(c *Config) { c.Disabled = &Disabled{Group: "nope"} }, "disabled.group"},
	}
	for _, tt := range tests {
		cfg := valid()
		tt.edit(cfg)
		errs := cfg.Validate()
		if tt.field == "" {
			if len(errs) > 0 {
				t.Errorf("%s: %v", tt.name, errs)
			}
			continue
		}
		found := false
		for _, err := range errs {
			var fe *config.FieldError
			if errors.As(err, &fe) && fe.Field == tt.field {
				found = true
			}
		}
		if !found {
			t.Errorf("%s: errors %v, want one for %s", tt.name, errs, tt.field)
		}
		if _, err := cfg.Open("d", "i", directory.Deps{}); err == nil {
			t.Errorf("%s: Open accepted an invalid config", tt.name)
		}
	}
}

// TestMalformedEntries: an entry the connector cannot read (no ID, an ID
// of the wrong size, a member range that makes no sense) fails the
// listing as incomplete; it is never dropped, where a person would look
// like a leaver and a group's members would lose it.
func TestMalformedEntries(t *testing.T) {
	t.Parallel()
	connector := func(flavor string) *Connector {
		cfg := Config{Flavor: flavor, BaseDNs: []string{"dc=x"}}
		return newConnector("d", "i", cfg.withDefaults(), nil, nil, directory.Deps{})
	}
	ol, ad := connector(OpenLDAP), connector(ActiveDirectory)
	uuid := map[string][]string{"entryUUID": {"6F1C2A9E-4B3D-5A6C-8E7F-0102030405FF"}, "cn": {"g"}}
	people := []struct {
		name string
		c    *Connector
		e    *goldap.Entry
	}{
		{"no entryUUID", ol, goldap.NewEntry("uid=x,dc=x", map[string][]string{"uid": {"x"}})},
		{"no objectGUID", ad, goldap.NewEntry("CN=x,DC=x", map[string][]string{"sAMAccountName": {"x"}})},
		{"short objectGUID", ad, goldap.NewEntry("CN=x,DC=x", map[string][]string{"objectGUID": {"0123456789abcde"}})},
	}
	for _, tt := range people {
		if _, err := tt.c.person(tt.e, nil, time.Now()); !errors.Is(err, directory.ErrIncomplete) {
			t.Errorf("person with %s: %v, want ErrIncomplete", tt.name, err)
		}
		if _, _, err := (&groupGraph{index: map[string]int32{}, in: map[string][]int32{}}).add(tt.c, tt.e); !errors.Is(err, directory.ErrIncomplete) {
			t.Errorf("group with %s: %v, want ErrIncomplete", tt.name, err)
		}
	}

	g := &groupGraph{index: map[string]int32{}, in: map[string][]int32{}}
	bad := &goldap.Entry{DN: "cn=g,dc=x", Attributes: []*goldap.EntryAttribute{
		{Name: "entryUUID", Values: uuid["entryUUID"]}, {Name: "member;range=9-3", Values: []string{"uid=a,dc=x"}}}}
	if _, _, err := g.add(ol, bad); !errors.Is(err, directory.ErrIncomplete) || len(g.groups) != 0 {
		t.Errorf("group with a backwards member range: %v (%d groups), want ErrIncomplete and no group", err, len(g.groups))
	}
	// The same group twice (overlapping bases) is read once.
	good := goldap.NewEntry("cn=g,dc=x", map[string][]string{"entryUUID": uuid["entryUUID"], "cn": {"g"}, "member": {"uid=a,dc=x"}})
	for range 2 {
		if _, next, err := g.add(ol, good); err != nil || next != -1 {
			t.Fatalf("add = %d, %v", next, err)
		}
	}
	if got := g.closure("UID=A,DC=X"); len(g.groups) != 1 || len(got) != 1 || got[0].id != "6f1c2a9e-4b3d-5a6c-8e7f-0102030405ff" {
		t.Errorf("after adding g twice: %d groups, a's groups %+v", len(g.groups), got)
	}
}

// TestTombstone: a deleted user's subject is its GUID when the subject
// attribute is objectGUID, however the configuration spells it, and
// empty when the attribute is gone with the deletion.
func TestTombstone(t *testing.T) {
	t.Parallel()
	raw := string([]byte{0x9e, 0x2a, 0x1c, 0x6f, 0x3d, 0x4b, 0x6c, 0x5a, 0x8e, 0x7f, 0x01, 0x02, 0x03, 0x04, 0x05, 0xff})
	const guid = "6f1c2a9e-4b3d-5a6c-8e7f-0102030405ff"
	e := goldap.NewEntry("CN=x\\0ADEL:"+guid+",CN=Deleted Objects,DC=x", map[string][]string{
		"objectGUID": {raw}, "sAMAccountName": {"x-1"}, "isDeleted": {"TRUE"}})
	for _, tt := range []struct{ attr, want string }{
		{"", guid}, {"objectGUID", guid}, {"objectguid", guid}, {"OBJECTGUID", guid}, {"userPrincipalName", ""},
	} {
		cfg := Config{Flavor: ActiveDirectory, SubjectAttribute: tt.attr}
		c := newConnector("d", "i", cfg.withDefaults(), nil, nil, directory.Deps{})
		p, err := c.tombstone(e)
		if err != nil || p.ID != guid || p.Subject != tt.want || p.Username != "x-1" || p.Status != directory.Deleted {
			t.Errorf("subject_attribute %q: tombstone = %+v, %v; want subject %q", tt.attr, p, err, tt.want)
		}
	}
	cfg := Config{Flavor: ActiveDirectory}
	c := newConnector("d", "i", cfg.withDefaults(), nil, nil, directory.Deps{})
	if _, err := c.tombstone(goldap.NewEntry("CN=y,DC=x", map[string][]string{"sAMAccountName": {"y"}})); err == nil {
		t.Error("a tombstone without objectGUID was read")
	}
}

// TestBackoff: reconnects wait 0, 1s, 2s, ... 30s, and keep waiting 30s
// however many retries are configured (a plain shift overflowed past
// retry 35 into a negative wait, which is no wait: a tight reconnect
// loop against a struggling server).
func TestBackoff(t *testing.T) {
	t.Parallel()
	for retry, want := range map[int]time.Duration{
		0: 0, 1: 0, 2: time.Second, 3: 2 * time.Second, 6: 16 * time.Second, 7: 30 * time.Second,
		35: 30 * time.Second, 36: 30 * time.Second, 66: 30 * time.Second, 1 << 20: 30 * time.Second,
	} {
		if got := backoff(retry); got != want {
			t.Errorf("backoff(%d) = %v, want %v", retry, got, want)
		}
	}
}
