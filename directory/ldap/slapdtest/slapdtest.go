// Package slapdtest runs a real, throwaway OpenLDAP server (Debian's
// `slapd` package) for tests: a temporary config and database, loopback
// ports for ldap:// (with StartTLS) and ldaps:// under a certificate from a
// CA it makes, the memberof (or dynlist), refint and ppolicy overlays, a
// size-limited reader account, and helpers to seed one subtree per test.
//
// A package shares one server through Shared, started in TestMain: a slapd
// start costs a fraction of a second, a seeded subtree a few milliseconds.
// When slapd is not installed the tests that need it skip, or fail when the
// CI environment variable is set, so a CI run without slapd cannot pass by
// testing nothing. The setup follows directories.md §6.7.
package slapdtest

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"text/template"
	"time"

	goldap "github.com/go-ldap/ldap/v3"
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

// Server is one running slapd.
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

	dir    string
	cmd    *exec.Cmd
	exited chan struct{}
	stderr *lockedBuffer
	mu     sync.Mutex
	admin  *goldap.Conn

	subtrees atomic.Int64
}

// ErrNotInstalled means slapd is not on this machine.
var ErrNotInstalled = errors.New("slapdtest: slapd is not installed (apt-get install slapd ldap-utils)")

// find returns the slapd binary; Debian puts it in /usr/sbin, which is not
// always on a test's PATH.
func find() (string, error) {
	if p, err := exec.LookPath("slapd"); err == nil {
		return p, nil
	}
	if _, err := os.Stat("/usr/sbin/slapd"); err == nil {
		return "/usr/sbin/slapd", nil
	}
	return "", ErrNotInstalled
}

// Start runs a slapd with an empty tree (the suffix entry and the reader
// accounts) and waits until it accepts connections.
func Start(opts Options) (*Server, error) {
	bin, err := find()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "slapdtest-")
	if err != nil {
		return nil, fmt.Errorf("slapdtest: %w", err)
	}
	// A port freePorts found can be taken by someone else before slapd
	// binds it; a new pair of ports then does.
	for attempt := 1; ; attempt++ {
		s := &Server{dir: dir, exited: make(chan struct{}), stderr: &lockedBuffer{}}
		err := s.start(bin, opts)
		if err == nil {
			return s, nil
		}
		s.Stop()
		if attempt == 3 || !errors.Is(err, errExited) {
			return nil, err
		}
		if dir, err = os.MkdirTemp("", "slapdtest-"); err != nil {
			return nil, fmt.Errorf("slapdtest: %w", err)
		}
	}
}

var errExited = errors.New("slapd exited at start")

func (s *Server) start(bin string, opts Options) error {
	begin := time.Now()
	if err := os.Mkdir(filepath.Join(s.dir, "db"), 0o700); err != nil {
		return fmt.Errorf("slapdtest: %w", err)
	}
	if err := WriteCerts(s.dir); err != nil {
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
	s.URL = fmt.Sprintf("ldap://127.0.0.1:%d", ports[0])
	s.LDAPSURL = fmt.Sprintf("ldaps://127.0.0.1:%d", ports[1])
	// -d 0 keeps slapd in the foreground, so the process we started is
	// the server and Stop can end it; Pdeathsig ends it with the test
	// binary even when that dies without cleanup.
	s.cmd = exec.Command(bin, "-f", confFile, "-h", s.URL+"/ "+s.LDAPSURL+"/", "-d", "0")
	s.cmd.Stdout = s.stderr
	s.cmd.Stderr = s.stderr
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := StartProcess(s.cmd); err != nil {
		return fmt.Errorf("slapdtest: start slapd: %w", err)
	}
	go func() { s.cmd.Wait(); close(s.exited) }()

	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", ports[0]), time.Second)
		if err == nil {
			c.Close()
			break
		}
		select {
		case <-s.exited:
			return fmt.Errorf("slapdtest: %w (port taken?): %s", errExited, s.stderr.String())
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("slapdtest: slapd did not listen within 10s: %s", s.stderr.String())
		}
	}
	s.StartTime = time.Since(begin)
	return s.addAll(fmt.Sprintf(`
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

// Stop ends the server and removes its files.
func (s *Server) Stop() {
	s.mu.Lock()
	if s.admin != nil {
		s.admin.Close()
		s.admin = nil
	}
	s.mu.Unlock()
	if s.cmd != nil && s.cmd.Process != nil {
		s.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-s.exited:
		case <-time.After(5 * time.Second):
			s.cmd.Process.Kill()
			<-s.exited
		}
	}
	os.RemoveAll(s.dir)
}

// Admin returns a connection bound as the rootdn, shared by the callers
// (go-ldap connections are safe for concurrent use).
func (s *Server) Admin() (*goldap.Conn, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.admin != nil && !s.admin.IsClosing() {
		return s.admin, nil
	}
	c, err := goldap.DialURL(s.URL, goldap.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}))
	if err != nil {
		return nil, fmt.Errorf("slapdtest: dial: %w", err)
	}
	c.SetTimeout(10 * time.Second)
	if err := c.Bind(RootDN, RootPW); err != nil {
		c.Close()
		return nil, fmt.Errorf("slapdtest: bind as rootdn: %w", err)
	}
	s.admin = c
	return c, nil
}

// Subtree creates an organizational unit for t under the suffix, named
// after the test, with ou=people and ou=groups below it, and returns its
// DN (the name ends in a number). Tests that seed their own subtree do not see each other's entries
// and can run in parallel on one server.
func (s *Server) Subtree(t testing.TB) string {
	t.Helper()
	// The counter keeps -count=N and same-named subtests apart.
	name := fmt.Sprintf("%s-%d", strings.NewReplacer("/", "-", " ", "_").Replace(t.Name()), s.subtrees.Add(1))
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

// Seed adds the entries of ldif, a small LDIF subset: records separated by
// blank lines, "dn:" first, one "attribute: value" per line (no base64 or
// continuation lines), "#" comments. Entries are added in order, so
// parents come first and groups after their members.
func (s *Server) Seed(t testing.TB, ldif string) {
	t.Helper()
	if err := s.addAll(ldif); err != nil {
		t.Fatal(err)
	}
}

func (s *Server) addAll(ldif string) error {
	c, err := s.Admin()
	if err != nil {
		return err
	}
	recs, err := ParseLDIF(ldif)
	if err != nil {
		return err
	}
	for _, r := range recs {
		req := goldap.NewAddRequest(r.DN, nil)
		for _, a := range r.Attrs {
			req.Attribute(a.Name, a.Values)
		}
		if err := c.Add(req); err != nil {
			return fmt.Errorf("slapdtest: add %s: %w", r.DN, err)
		}
	}
	return nil
}

// Modify replaces attribute values of dn (no values deletes the
// attribute).
func (s *Server) Modify(t testing.TB, dn string, replace map[string][]string) {
	t.Helper()
	c, err := s.Admin()
	if err != nil {
		t.Fatal(err)
	}
	req := goldap.NewModifyRequest(dn, nil)
	for k, v := range replace {
		req.Replace(k, v)
	}
	if err := c.Modify(req); err != nil {
		t.Fatalf("slapdtest: modify %s: %v", dn, err)
	}
}

// Delete removes dn (refint then removes it from groups).
func (s *Server) Delete(t testing.TB, dn string) {
	t.Helper()
	c, err := s.Admin()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Del(goldap.NewDelRequest(dn, nil)); err != nil {
		t.Fatalf("slapdtest: delete %s: %v", dn, err)
	}
}

// Entry reads one entry as the rootdn with the given attributes ("+" for
// operational ones).
func (s *Server) Entry(t testing.TB, dn string, attrs ...string) *goldap.Entry {
	t.Helper()
	c, err := s.Admin()
	if err != nil {
		t.Fatal(err)
	}
	res, err := c.Search(goldap.NewSearchRequest(dn, goldap.ScopeBaseObject, goldap.NeverDerefAliases,
		0, 10, false, "(objectClass=*)", attrs, nil))
	if err != nil || len(res.Entries) != 1 {
		t.Fatalf("slapdtest: read %s: %v", dn, err)
	}
	return res.Entries[0]
}

// TLSConfig trusts the server's CA.
func (s *Server) TLSConfig() *tls.Config {
	pemData, err := os.ReadFile(s.CAFile)
	if err != nil {
		return &tls.Config{MinVersion: tls.VersionTLS12}
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pemData)
	return &tls.Config{RootCAs: pool, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12}
}

// Record is one LDIF entry.
type Record struct {
	DN    string
	Attrs []Attr
}

// Attr is one attribute with its values, in LDIF order.
type Attr struct {
	Name   string
	Values []string
}

// ParseLDIF reads the LDIF subset Seed takes.
func ParseLDIF(ldif string) ([]Record, error) {
	var out []Record
	var cur *Record
	for i, line := range strings.Split(ldif, "\n") {
		line = strings.TrimRight(line, "\r")
		trimmed := strings.TrimSpace(line)
		if trimmed == "" {
			cur = nil
			continue
		}
		if strings.HasPrefix(trimmed, "#") {
			continue
		}
		name, value, ok := strings.Cut(trimmed, ":")
		if !ok {
			return nil, fmt.Errorf("slapdtest: ldif line %d: want \"attribute: value\", got %q", i+1, line)
		}
		value = strings.TrimSpace(value)
		if cur == nil {
			if !strings.EqualFold(name, "dn") {
				return nil, fmt.Errorf("slapdtest: ldif line %d: a record starts with dn:", i+1)
			}
			out = append(out, Record{DN: value})
			cur = &out[len(out)-1]
			continue
		}
		j := len(cur.Attrs) - 1
		for j >= 0 && !strings.EqualFold(cur.Attrs[j].Name, name) {
			j--
		}
		if j < 0 {
			cur.Attrs = append(cur.Attrs, Attr{Name: name})
			j = len(cur.Attrs) - 1
		}
		cur.Attrs[j].Values = append(cur.Attrs[j].Values, value)
	}
	return out, nil
}

// Shared is one server for a test package: TestMain calls Main, the tests
// call Server.
//
//	var slapd = slapdtest.NewShared(slapdtest.Options{})
//	func TestMain(m *testing.M) { os.Exit(slapd.Main(m)) }
type Shared struct {
	opts Options
	srv  *Server
	err  error
}

// NewShared prepares a server that Main starts.
func NewShared(opts Options) *Shared { return &Shared{opts: opts} }

// Main starts the server, runs the tests and stops it. A server that
// cannot start is not an error here: the tests that need it skip (or fail
// under CI) with the reason.
func (sh *Shared) Main(m *testing.M) int {
	if !flag.Parsed() {
		flag.Parse() // for testing.Verbose
	}
	sh.srv, sh.err = Start(sh.opts)
	if sh.err == nil && testing.Verbose() {
		fmt.Fprintf(os.Stderr, "slapdtest: slapd started in %v at %s\n", sh.srv.StartTime.Round(time.Millisecond), sh.srv.URL)
	}
	code := m.Run()
	if sh.srv != nil {
		sh.srv.Stop()
	}
	return code
}

// Server returns the shared server, or skips t (fails it when CI is set)
// when there is none.
func (sh *Shared) Server(t testing.TB) *Server {
	t.Helper()
	if sh.srv != nil {
		return sh.srv
	}
	err := sh.err
	if err == nil {
		err = errors.New("slapdtest: Shared.Main was not called from TestMain")
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("%v (CI is set, so this fails instead of skipping)", err)
	}
	t.Skipf("%v; skipping (set CI to fail instead)", err)
	return nil
}

// Running reports whether the shared server started, for tests that
// want to say why they skipped.
func (sh *Shared) Running() bool { return sh.srv != nil }

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

// WriteCerts makes a CA and a server certificate for 127.0.0.1,
// localhost and the extra DNS names, valid for a day, in dir: ca.pem,
// server.pem and server.key (PKCS #8).
func WriteCerts(dir string, names ...string) error {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("slapdtest: %w", err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "slapdtest CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return fmt.Errorf("slapdtest: %w", err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("slapdtest: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "127.0.0.1"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(24 * time.Hour),
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		DNSNames:     append([]string{"localhost"}, names...),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return fmt.Errorf("slapdtest: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return fmt.Errorf("slapdtest: %w", err)
	}
	files := map[string][]byte{
		"ca.pem":     pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}),
		"server.pem": pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		"server.key": pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
	}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			return fmt.Errorf("slapdtest: %w", err)
		}
	}
	return nil
}

// freePorts asks the kernel for n unused loopback ports. Another process
// could take one before slapd binds it; a start then fails with that
// reason, which is rare enough on a test machine.
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

// StartProcess starts cmd from an OS thread that lives as long as the
// test binary. Pdeathsig, which ends a server with the test binary even
// when the binary dies without cleanup, fires when the *thread* that
// started the child ends, and Go ends threads (those of goroutines that
// exit while locked to their thread): a child started from an ordinary
// goroutine can be killed at any moment.
func StartProcess(cmd *exec.Cmd) error {
	spawnOnce.Do(func() {
		spawn = make(chan spawnReq)
		go func() {
			runtime.LockOSThread() // never unlocked: this thread stays
			for r := range spawn {
				r.done <- r.cmd.Start()
			}
		}()
	})
	done := make(chan error, 1)
	spawn <- spawnReq{cmd, done}
	return <-done
}

type spawnReq struct {
	cmd  *exec.Cmd
	done chan error
}

var (
	spawnOnce sync.Once
	spawn     chan spawnReq
)

// lockedBuffer collects slapd's output for error messages.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.b.Len() > 1<<16 {
		return len(p), nil
	}
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.TrimSpace(l.b.String())
}
