// Package slapdtest runs a real, throwaway OpenLDAP server (Debian's
// `slapd` package) for tests: a temporary config and database, loopback
// ports for ldap:// (with StartTLS) and ldaps:// under a certificate from a
// CA it makes, the memberof (or dynlist), refint and ppolicy overlays, a
// size-limited reader account, and helpers to seed one subtree per test.
//
// A package shares one server through NewShared, started by the first
// test that asks: a slapd start costs a fraction of a second, a seeded
// subtree a few milliseconds. When slapd is not installed the tests that
// need it skip, or fail when the CI environment variable is set, so a CI
// run without slapd cannot pass by testing nothing. The setup follows
// directories.md §6.7. What it shares with sambatest (the process, the
// administrator connection, LDIF, certificates) is in
// directory/ldap/internal/ldaptest.
package slapdtest

import (
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"text/template"
	"time"

	goldap "github.com/go-ldap/ldap/v3"

	"github.com/usherhq/usher/directory/ldap/internal/ldaptest"
)

// The tree's fixed names.
const (
	Suffix = "dc=example,dc=test"
	RootDN = "cn=admin," + Suffix
	RootPW = "secret"
	// ReaderDN is the account a connector under test binds as: paged
	// searches are unlimited, unpaged ones stop at ReaderUnpagedLimit
	// entries with sizeLimitExceeded, like a real directory's sync
	// account.
	ReaderDN = "cn=reader," + Suffix
	ReaderPW = "reader-secret"
	// LimitedDN may read at most LimitedTotal entries in one search,
	// paged or not: its searches end in sizeLimitExceeded (the
	// `size.prtotal` limit of §6.2).
	LimitedDN = "cn=limited," + Suffix
	LimitedPW = "limited-secret"

	ReaderUnpagedLimit = 50
	LimitedTotal       = 5
)

// Options shape a server.
type Options struct {
	// Dynlist computes memberOf with slapo-dynlist, transitively through
	// nested groups, instead of the memberof overlay (direct groups only).
	Dynlist bool
}

// Server is one running slapd. Its Client (Admin, Seed, Modify, Delete,
// Entry) works as the rootdn; Delete makes refint remove the entry from
// groups.
type Server struct {
	// URL is ldap://127.0.0.1:port; StartTLS works on it.
	URL string
	// LDAPSURL is ldaps://127.0.0.1:port.
	LDAPSURL string
	// CAFile holds the PEM certificate of the CA that signed the server's
	// certificate (for 127.0.0.1 and localhost).
	CAFile string
	// StartTime is how long the start took, to the first accepted
	// connection.
	StartTime time.Duration

	*ldaptest.Client
	dir  string
	proc *ldaptest.Process
}

// ErrNotInstalled means slapd is not on this machine.
var ErrNotInstalled = fmt.Errorf("slapdtest: slapd is not installed (apt-get install slapd ldap-utils): %w", ldaptest.ErrUnavailable)

// NewShared prepares one server for a test package (see ldaptest.Shared).
func NewShared(opts Options) *ldaptest.Shared[*Server] {
	return ldaptest.NewShared(func() (*Server, error) {
		s, err := Start(opts)
		if err == nil && testing.Verbose() {
			fmt.Fprintf(os.Stderr, "slapdtest: slapd started in %v at %s\n", s.StartTime.Round(time.Millisecond), s.URL)
		}
		return s, err
	})
}

// Start runs a slapd with an empty tree (the suffix entry and the reader
// accounts) and waits until it accepts connections.
func Start(opts Options) (*Server, error) {
	bin, err := ldaptest.LookPath("slapd")
	if err != nil {
		return nil, ErrNotInstalled
	}
	// A port freePorts found can be taken by someone else before slapd
	// binds it; a new pair of ports then does.
	for attempt := 1; ; attempt++ {
		dir, err := os.MkdirTemp("", "slapdtest-")
		if err != nil {
			return nil, fmt.Errorf("slapdtest: %w", err)
		}
		s := &Server{dir: dir}
		s.Client = ldaptest.NewClient("slapdtest", s.dial, nil)
		err = s.start(bin, opts)
		if err == nil {
			return s, nil
		}
		s.Stop()
		if attempt == 3 || !errors.Is(err, ldaptest.ErrExited) {
			return nil, err
		}
	}
}

func (s *Server) start(bin string, opts Options) error {
	begin := time.Now()
	if err := os.Mkdir(filepath.Join(s.dir, "db"), 0o700); err != nil {
		return fmt.Errorf("slapdtest: %w", err)
	}
	if err := ldaptest.WriteCerts(s.dir); err != nil {
		return err
	}
	s.CAFile = filepath.Join(s.dir, "ca.pem")
	var conf bytes.Buffer
	if err := confTemplate.Execute(&conf, map[string]any{
		"Dir": s.dir, "Suffix": Suffix, "RootDN": RootDN, "RootPW": RootPW,
		"ReaderDN": ReaderDN, "LimitedDN": LimitedDN, "Dynlist": opts.Dynlist,
		"ReaderUnpaged": ReaderUnpagedLimit, "Limited": LimitedTotal,
	}); err != nil {
		return fmt.Errorf("slapdtest: config: %w", err)
	}
	confFile := filepath.Join(s.dir, "slapd.conf")
	if err := os.WriteFile(confFile, conf.Bytes(), 0o600); err != nil {
		return fmt.Errorf("slapdtest: %w", err)
	}
	ports, err := freePorts(2)
	if err != nil {
		return err
	}
	addr := fmt.Sprintf("127.0.0.1:%d", ports[0])
	s.URL = "ldap://" + addr
	s.LDAPSURL = fmt.Sprintf("ldaps://127.0.0.1:%d", ports[1])
	// -d 0 keeps slapd in the foreground, so the process we started is
	// the server and Stop can end it.
	s.proc, err = ldaptest.Start(exec.Command(bin, "-f", confFile, "-h", s.URL+"/ "+s.LDAPSURL+"/", "-d", "0"))
	if err != nil {
		return fmt.Errorf("slapdtest: start slapd: %w", err)
	}
	err = s.proc.Await(time.Now().Add(10*time.Second), "listening (port taken?)", func() bool {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	if err != nil {
		return fmt.Errorf("slapdtest: slapd: %w", err)
	}
	s.StartTime = time.Since(begin)
	return s.Add(fmt.Sprintf(`
dn: %[1]s
objectClass: dcObject
objectClass: organization
dc: example
o: Example

dn: %[2]s
objectClass: organizationalRole
objectClass: simpleSecurityObject
cn: reader
userPassword: %[3]s

dn: %[4]s
objectClass: organizationalRole
objectClass: simpleSecurityObject
cn: limited
userPassword: %[5]s
`, Suffix, ReaderDN, ReaderPW, LimitedDN, LimitedPW))
}

// dial connects as the rootdn.
func (s *Server) dial() (*goldap.Conn, error) {
	c, err := goldap.DialURL(s.URL, goldap.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}))
	if err != nil {
		return nil, err
	}
	c.SetTimeout(10 * time.Second)
	if err := c.Bind(RootDN, RootPW); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// Stop ends the server and removes its files.
func (s *Server) Stop() {
	s.Client.Close()
	if s.proc != nil {
		s.proc.Stop(5 * time.Second)
	}
	os.RemoveAll(s.dir)
}

// TLSConfig trusts the server's CA.
func (s *Server) TLSConfig() *tls.Config { return ldaptest.TLSConfig(s.CAFile) }

// Subtree creates an organizational unit for t under the suffix, named
// after the test and a number, with ou=people and ou=groups below it,
// and returns its DN.
func (s *Server) Subtree(t testing.TB) string {
	t.Helper()
	name, _ := s.SubtreeName(t)
	base := "ou=" + goldap.EscapeDN(name) + "," + Suffix
	s.Seed(t, fmt.Sprintf(`
dn: %[1]s
objectClass: organizationalUnit
ou: %[2]s

dn: ou=people,%[1]s
objectClass: organizationalUnit
ou: people

dn: ou=groups,%[1]s
objectClass: organizationalUnit
ou: groups
`, base, name))
	return base
}

var confTemplate = template.Must(template.New("slapd.conf").Parse(`
include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
include /etc/ldap/schema/nis.schema
{{- if .Dynlist}}
include /etc/ldap/schema/dyngroup.schema
{{- end}}
modulepath /usr/lib/ldap
moduleload back_mdb
{{- if .Dynlist}}
moduleload dynlist
{{- else}}
moduleload memberof
{{- end}}
moduleload refint
moduleload ppolicy
pidfile  {{.Dir}}/slapd.pid
argsfile {{.Dir}}/slapd.args
TLSCACertificateFile  {{.Dir}}/ca.pem
TLSCertificateFile    {{.Dir}}/server.pem
TLSCertificateKeyFile {{.Dir}}/server.key

database  mdb
maxsize   104857600
suffix    "{{.Suffix}}"
rootdn    "{{.RootDN}}"
rootpw    {{.RootPW}}
directory {{.Dir}}/db
index objectClass eq
index uid,mail,cn eq
index entryUUID eq
index member eq
limits dn.exact="{{.ReaderDN}}" size.soft={{.ReaderUnpaged}} size.hard={{.ReaderUnpaged}} size.pr=unlimited size.prtotal=unlimited
limits dn.exact="{{.LimitedDN}}" size.soft={{.Limited}} size.hard={{.Limited}} size.prtotal={{.Limited}}
access to attrs=userPassword by self write by anonymous auth by * none
access to * by * read
{{- if .Dynlist}}
overlay dynlist
dynlist-attrset groupOfURLs memberURL member+memberOf@groupOfNames*
{{- else}}
overlay memberof
memberof-group-oc    groupOfNames
memberof-member-ad   member
memberof-memberof-ad memberOf
memberof-refint      TRUE
{{- end}}
overlay refint
refint_attributes member
overlay ppolicy
`))

// freePorts asks the kernel for n unused loopback ports. Another process
// can take one before slapd binds it: Start then tries new ones.
func freePorts(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("slapdtest: free port: %w", err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}
