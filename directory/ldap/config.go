package ldap

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"math"
	"net"
	"net/url"
	"os"
	"regexp"
	"strings"
	"time"

	goldap "github.com/go-ldap/ldap/v3"

	"github.com/usherhq/usher/config"
	"github.com/usherhq/usher/directory"
)

// Flavors.
const (
	ActiveDirectory = "active_directory"
	OpenLDAP        = "openldap"
)

// Config is an `ldap` directory's block.
//
//	flavor: active_directory
//	url: ldaps://dc1.corp.example.com
//	ca_file: /etc/usher/corp-ca.pem
//	bind_dn: CN=usher-sync,OU=Service,DC=corp,DC=example,DC=com
//	bind_password: {env: USHER_LDAP_PASSWORD}
//	base_dns: [OU=Staff,DC=corp,DC=example,DC=com]
//	groups: [CN=Atlassian Users,OU=Groups,DC=corp,DC=example,DC=com]
//	subject_attribute: userPrincipalName
type Config struct {
	// Flavor is active_directory or openldap. Required: it decides the ID
	// attribute, the disabled signal, nesting and the delta.
	Flavor string `yaml:"flavor"`
	// URL is ldaps://host[:636], or ldap://host[:389] with start_tls.
	// Plain ldap:// without TLS is refused unless the host is a loopback
	// address or insecure_plaintext is set.
	URL string `yaml:"url"`
	// StartTLS upgrades an ldap:// connection before binding.
	StartTLS bool `yaml:"start_tls"`
	// CAFile is a PEM bundle of the CAs that may sign the server's
	// certificate; default the system's roots. Refused without TLS, like
	// TLSServerName.
	CAFile string `yaml:"ca_file"`
	// TLSServerName is the name checked against the certificate; default
	// the URL's host.
	TLSServerName string `yaml:"tls_server_name"`
	// InsecurePlaintext allows ldap:// without TLS to a host that is not
	// loopback: the bind password then crosses the network in clear. Open
	// logs a warning every time.
	InsecurePlaintext bool `yaml:"insecure_plaintext"`
	// BindDN and BindPassword are the sync account (simple bind). AD
	// also takes user@domain as BindDN; OpenLDAP wants a DN. A read-only account suffices; on
	// OpenLDAP give it `limits ... size.prtotal=unlimited`.
	BindDN       string        `yaml:"bind_dn"`
	BindPassword config.Secret `yaml:"bind_password"`
	// Timeout bounds each operation: dial, TLS, bind, one page of a
	// search. Default 30s.
	Timeout time.Duration `yaml:"timeout"`
	// Retries is how many times one pull reconnects after a dropped
	// connection or a busy/unavailable server before giving up. A paged
	// search restarts from its first page each time (the cookie belongs
	// to the dead connection). Default 3.
	Retries *int `yaml:"retries"`
	// PageSize is the RFC 2696 page size, at most 2147483647. Default
	// 500 (OpenLDAP's default size limit; AD caps pages at its own
	// MaxPageSize, 1000).
	PageSize int `yaml:"page_size"`

	// BaseDNs are where people are searched (subtree). Required.
	BaseDNs []string `yaml:"base_dns"`
	// UserFilter selects people. Default
	// (&(objectCategory=person)(objectClass=user)) on AD and
	// (objectClass=inetOrgPerson) on OpenLDAP.
	UserFilter string `yaml:"user_filter"`
	// Groups limits the scope to members of any of these group DNs,
	// through nested groups.
	Groups []string `yaml:"groups"`
	// GroupBaseDNs are where groups are read for people's group lists
	// and nesting; default base_dns.
	GroupBaseDNs []string `yaml:"group_base_dns"`
	// GroupFilter selects groups. Default (objectClass=group) on AD and
	// (objectClass=groupOfNames) on OpenLDAP.
	GroupFilter string `yaml:"group_filter"`
	// GroupNameAttribute is the group name people's groups are listed by;
	// default cn.
	GroupNameAttribute string `yaml:"group_name_attribute"`

	// SubjectAttribute holds the value the IdP sends as the login subject
	// (userPrincipalName, mail, sAMAccountName, uid, ...). Default the ID
	// attribute (objectGUID, in its standard string form, or entryUUID).
	SubjectAttribute string `yaml:"subject_attribute"`
	// UsernameAttribute is the login name; default sAMAccountName on AD,
	// uid on OpenLDAP.
	UsernameAttribute string `yaml:"username_attribute"`
	// Attributes are further attributes to read into Person.Attributes
	// (department, title, employeeID, ...).
	Attributes []string `yaml:"attributes"`

	// Disabled says which OpenLDAP accounts are off (OpenLDAP has no
	// standard flag). AD needs none: it reads userAccountControl and
	// accountExpires.
	Disabled *Disabled `yaml:"disabled"`
	// ClockSkew is how far back an OpenLDAP delta starts before usher's
	// clock, to cover the server's clock being behind; default 5m.
	// OpenLDAP only.
	ClockSkew time.Duration `yaml:"clock_skew"`
}

// Disabled is OpenLDAP's disabled signal. Any rule that matches makes the
// person Disabled; at least one rule is required.
type Disabled struct {
	// Attribute and Values: the person is disabled when Attribute holds
	// one of Values (compared case-insensitively), e.g. nsAccountLock:
	// [TRUE] or employeeStatus: [terminated].
	Attribute string   `yaml:"attribute"`
	Values    []string `yaml:"values"`
	// PPolicy reads pwdAccountLockedTime: 000001010000Z (locked until an
	// administrator unlocks, per ppolicy) is Disabled; any other value is
	// a temporary lockout, Inactive.
	PPolicy bool `yaml:"ppolicy"`
	// Group is the DN of a group whose members (through nesting) are
	// disabled.
	Group string `yaml:"group"`
}

const (
	defaultTimeout   = 30 * time.Second
	defaultRetries   = 3
	defaultPageSize  = 500
	maxPageSize      = math.MaxInt32
	defaultClockSkew = 5 * time.Minute
)

var attrName = regexp.MustCompile(`^([A-Za-z][A-Za-z0-9-]*|[0-9]+(\.[0-9]+)+)$`)

// Validate reports every problem with the block, per key.
func (c *Config) Validate() []error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, config.FieldErrorf(field, format, args...))
	}
	switch c.Flavor {
	case ActiveDirectory, OpenLDAP:
	case "":
		bad("flavor", "required: active_directory or openldap")
	default:
		bad("flavor", "want active_directory or openldap, not %q", c.Flavor)
	}

	if c.URL == "" {
		bad("url", "required")
	} else if u, err := url.Parse(c.URL); err != nil || (u.Scheme != "ldap" && u.Scheme != "ldaps") || u.Hostname() == "" {
		bad("url", "want ldaps://host[:port] or ldap://host[:port]")
	} else if (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		bad("url", "want only scheme, host and port; the base DNs go in base_dns")
	} else {
		tls := u.Scheme == "ldaps" || c.StartTLS
		switch {
		case u.Scheme == "ldaps" && c.StartTLS:
			bad("start_tls", "ldaps:// is already TLS; drop start_tls or use ldap://")
		case c.InsecurePlaintext && tls:
			bad("insecure_plaintext", "has no effect with TLS; remove it")
		case !tls && !c.InsecurePlaintext && !isLoopback(u.Hostname()):
			bad("url", "ldap:// without start_tls sends the bind password in clear; use ldaps://, start_tls: true, or insecure_plaintext: true")
		}
		if !tls && c.CAFile != "" {
			bad("ca_file", "has no effect without TLS (ldaps:// or start_tls: true); remove it")
		}
		if !tls && c.TLSServerName != "" {
			bad("tls_server_name", "has no effect without TLS (ldaps:// or start_tls: true); remove it")
		}
	}
	if c.CAFile != "" {
		if _, err := loadCAs(c.CAFile); err != nil {
			bad("ca_file", "%v", err)
		}
	}
	if c.BindDN == "" {
		bad("bind_dn", "required (anonymous binds are refused)")
	} else if _, err := goldap.ParseDN(c.BindDN); err != nil && c.Flavor == OpenLDAP {
		bad("bind_dn", "not a DN: %q (only Active Directory also takes user@domain)", c.BindDN)
	}
	if c.BindPassword.IsZero() {
		bad("bind_password", "required: an empty password is an unauthenticated bind that \"succeeds\"")
	}
	if c.Timeout < 0 {
		bad("timeout", "must not be negative")
	}
	if c.Retries != nil && *c.Retries < 0 {
		bad("retries", "must not be negative")
	}
	if c.PageSize < 0 || c.PageSize > maxPageSize {
		// RFC 2696's size is an LDAP INTEGER; beyond it the value
		// would wrap, and a size of 0 asks the server for no entries.
		bad("page_size", "want 0 (the default) to %d", maxPageSize)
	}
	if c.ClockSkew < 0 {
		bad("clock_skew", "must not be negative")
	} else if c.ClockSkew != 0 && c.Flavor == ActiveDirectory {
		bad("clock_skew", "only for openldap: Active Directory's delta counts USNs, not time")
	}
	if len(c.BaseDNs) == 0 {
		bad("base_dns", "name at least one base DN")
	}
	dns := func(field string, list []string) {
		for i, dn := range list {
			if _, err := goldap.ParseDN(dn); err != nil || dn == "" {
				bad(fmt.Sprintf("%s[%d]", field, i), "not a DN: %q", dn)
			}
		}
	}
	dns("base_dns", c.BaseDNs)
	dns("group_base_dns", c.GroupBaseDNs)
	dns("groups", c.Groups)
	for _, f := range []struct{ key, v string }{{"user_filter", c.UserFilter}, {"group_filter", c.GroupFilter}} {
		if f.v == "" {
			continue
		}
		if _, err := goldap.CompileFilter(f.v); err != nil {
			bad(f.key, "not an LDAP filter: %v", err)
		}
	}
	for _, a := range []struct{ key, v string }{
		{"subject_attribute", c.SubjectAttribute}, {"username_attribute", c.UsernameAttribute},
		{"group_name_attribute", c.GroupNameAttribute},
	} {
		if a.v != "" && !attrName.MatchString(a.v) {
			bad(a.key, "not an attribute name: %q", a.v)
		}
	}
	for i, a := range c.Attributes {
		if !attrName.MatchString(a) {
			bad(fmt.Sprintf("attributes[%d]", i), "not an attribute name: %q", a)
		}
	}
	if d := c.Disabled; d != nil {
		if c.Flavor == ActiveDirectory {
			bad("disabled", "only for openldap: Active Directory's own userAccountControl and accountExpires decide")
		}
		if d.Attribute == "" && !d.PPolicy && d.Group == "" {
			bad("disabled", "set attribute and values, ppolicy, or group")
		}
		if d.Attribute != "" && !attrName.MatchString(d.Attribute) {
			bad("disabled.attribute", "not an attribute name: %q", d.Attribute)
		}
		if (d.Attribute == "") != (len(d.Values) == 0) {
			bad("disabled.values", "attribute and values go together")
		}
		if d.Group != "" {
			if _, err := goldap.ParseDN(d.Group); err != nil {
				bad("disabled.group", "not a DN: %q", d.Group)
			}
		}
	}
	return errs
}

// isLoopback reports whether host is a loopback address or localhost.
func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func loadCAs(file string) (*x509.CertPool, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("%s holds no PEM certificate", file)
	}
	return pool, nil
}

// withDefaults fills the defaults of c's flavor.
func (c Config) withDefaults() Config {
	if c.Timeout == 0 {
		c.Timeout = defaultTimeout
	}
	if c.Retries == nil {
		n := defaultRetries
		c.Retries = &n
	}
	if c.PageSize == 0 {
		c.PageSize = defaultPageSize
	}
	if c.ClockSkew == 0 {
		c.ClockSkew = defaultClockSkew
	}
	if len(c.GroupBaseDNs) == 0 {
		c.GroupBaseDNs = c.BaseDNs
	}
	if c.GroupNameAttribute == "" {
		c.GroupNameAttribute = "cn"
	}
	ad := c.Flavor == ActiveDirectory
	pick := func(v *string, adv, olv string) {
		switch {
		case *v != "":
		case ad:
			*v = adv
		default:
			*v = olv
		}
	}
	pick(&c.UserFilter, "(&(objectCategory=person)(objectClass=user))", "(objectClass=inetOrgPerson)")
	pick(&c.GroupFilter, "(objectClass=group)", "(objectClass=groupOfNames)")
	pick(&c.UsernameAttribute, "sAMAccountName", "uid")
	pick(&c.SubjectAttribute, attrObjectGUID, attrEntryUUID)
	return c
}

// scopeHash names the scope a delta token belongs to: a token from a
// different scope (filters, bases, groups) cannot say what changed in
// this one.
func (c Config) scopeHash() string {
	h := sha256.New()
	for _, s := range [][]string{{c.Flavor, c.UserFilter, c.SubjectAttribute}, c.BaseDNs, c.Groups} {
		for _, v := range s {
			fmt.Fprintf(h, "%d:%s;", len(v), strings.ToLower(v))
		}
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil)[:6])
}

// Open returns the connector. It does not connect: the first Pull or
// Person does, and every later one reconnects when it must.
func (c *Config) Open(name, idp string, deps directory.Deps) (directory.Connector, error) {
	if errs := c.Validate(); len(errs) > 0 {
		return nil, fmt.Errorf("ldap %s: %w", name, errs[0])
	}
	cfg := c.withDefaults()
	u, _ := url.Parse(cfg.URL)
	tc := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: u.Hostname()}
	if cfg.TLSServerName != "" {
		tc.ServerName = cfg.TLSServerName
	}
	if cfg.CAFile != "" {
		pool, err := loadCAs(cfg.CAFile)
		if err != nil {
			return nil, fmt.Errorf("ldap %s: ca_file: %w", name, err)
		}
		tc.RootCAs = pool
	}
	conn := newConnector(name, idp, cfg, u, tc, deps)
	if cfg.InsecurePlaintext {
		conn.log.Warn("ldap: insecure_plaintext is set: the bind password and every person's data cross the network unencrypted",
			"directory", name, "url", cfg.URL)
	}
	return conn, nil
}

var _ directory.Config = (*Config)(nil)
