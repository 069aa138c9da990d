// Package sambatest runs a real Active Directory domain controller for
// tests: Debian's Samba AD DC, which answers objectGUID,
// userAccountControl, accountExpires, the in-chain matching rule, range
// retrieval, uSNChanged, invocationId and tombstones like Windows does.
//
// Samba only listens on the fixed ports 389 and 636, so it runs in a
// network namespace of its own (unshare -n, which needs root), and Server
// bridges loopback ports of the test's namespace into it. Its certificate
// is one that Go accepts, from a CA the test trusts. Provisioning a domain
// takes several seconds, so the provisioned domain is kept in the
// system's temporary directory, per Samba version, and copied for every
// server; a start then takes a few seconds.
//
// A package shares one server through Shared, started on first use so
// that the package's other tests need not wait. When Samba (or root) is
// missing the tests that need it skip, or fail when CI is set.
package sambatest

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
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
	"time"
	"unicode/utf16"

	goldap "github.com/go-ldap/ldap/v3"
	"golang.org/x/sys/unix"

	"github.com/usherhq/usher/directory/ldap/slapdtest"
)

// The domain's fixed names.
const (
	Realm   = "EXAMPLE.TEST"
	Domain  = "EXAMPLE"
	BaseDN  = "DC=example,DC=test"
	AdminDN = "CN=Administrator,CN=Users," + BaseDN
	AdminPW = "Usher-Test-Passw0rd!"
	// UserPassword is what Seed gives every user with a "password:" line.
	UserPassword = "Usher-User-Passw0rd!"
)

// Server is one running Samba DC.
type Server struct {
	// URL is ldaps://127.0.0.1:port; StartTLSURL is ldap://127.0.0.1:port
	// (Samba refuses simple binds there until StartTLS).
	URL         string
	StartTLSURL string
	// CAFile holds the PEM certificate of the CA that signed Samba's.
	CAFile string
	// ProvisionTime is how long provisioning took (0 when a kept domain
	// was copied); StartTime how long Samba took to accept connections.
	ProvisionTime, StartTime time.Duration

	dir    string
	cmd    *exec.Cmd
	exited chan struct{}
	out    *lockedBuffer
	ns     *os.File
	nsFD   int // ns's descriptor, read once: File.Fd races with Close
	stdin  io.WriteCloser
	lns    []net.Listener
	conns  sync.WaitGroup

	mu       sync.Mutex
	admin    *goldap.Conn
	subtrees atomic.Int64
}

// ErrNotAvailable means this machine cannot run the server.
var ErrNotAvailable = errors.New("sambatest: Samba AD DC is not available")

func need() error {
	for _, b := range []string{"samba", "samba-tool", "unshare", "ip"} {
		if _, err := lookPath(b); err != nil {
			return fmt.Errorf("%w: %s not found (apt-get install samba-ad-dc samba-ad-provision iproute2)", ErrNotAvailable, b)
		}
	}
	if os.Geteuid() != 0 {
		return fmt.Errorf("%w: a network namespace needs root", ErrNotAvailable)
	}
	if _, err := os.Stat("/usr/share/samba/setup/ad-schema"); err != nil {
		return fmt.Errorf("%w: no AD schema (apt-get install samba-ad-provision)", ErrNotAvailable)
	}
	return nil
}

func lookPath(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, d := range []string{"/usr/sbin", "/sbin", "/usr/bin"} {
		if _, err := os.Stat(filepath.Join(d, name)); err == nil {
			return filepath.Join(d, name), nil
		}
	}
	return "", fmt.Errorf("%s not found", name)
}

// Start provisions (or copies) a domain and runs Samba on it.
func Start() (*Server, error) {
	if err := need(); err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "sambatest-")
	if err != nil {
		return nil, fmt.Errorf("sambatest: %w", err)
	}
	s := &Server{dir: dir, exited: make(chan struct{}), out: &lockedBuffer{}}
	if err := s.start(); err != nil {
		s.Stop()
		return nil, err
	}
	return s, nil
}

func (s *Server) start() error {
	tmpl, took, err := template()
	if err != nil {
		return err
	}
	s.ProvisionTime = took
	begin := time.Now()
	if out, err := exec.Command("cp", "-a", tmpl+"/.", s.dir).CombinedOutput(); err != nil {
		return fmt.Errorf("sambatest: copy the provisioned domain: %v: %s", err, out)
	}
	tlsDir := filepath.Join(s.dir, "private", "usher-tls")
	if err := os.MkdirAll(tlsDir, 0o700); err != nil {
		return fmt.Errorf("sambatest: %w", err)
	}
	if err := slapdtest.WriteCerts(tlsDir, "dc1.example.test"); err != nil {
		return err
	}
	s.CAFile = filepath.Join(tlsDir, "ca.pem")
	conf := filepath.Join(s.dir, "etc", "smb.conf")
	if err := os.WriteFile(conf, []byte(smbConf(s.dir, tlsDir)), 0o600); err != nil {
		return fmt.Errorf("sambatest: %w", err)
	}
	samba, _ := lookPath("samba")
	unshare, _ := lookPath("unshare")
	ip, _ := lookPath("ip")
	// unshare execs sh, which execs samba: one process, whose network
	// namespace is new and holds only loopback.
	s.cmd = exec.Command(unshare, "-n", "sh", "-c",
		`"$1" link set lo up && exec "$2" -i -s "$3" --debug-stdout -d 0`, "sh", ip, samba, conf)
	s.cmd.Stdout, s.cmd.Stderr = s.out, s.out
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	// samba -i ends when its standard input closes: kept open here, it
	// closes with the test binary.
	if s.stdin, err = s.cmd.StdinPipe(); err != nil {
		return fmt.Errorf("sambatest: %w", err)
	}
	if err := slapdtest.StartProcess(s.cmd); err != nil {
		return fmt.Errorf("sambatest: start samba: %w", err)
	}
	go func() { s.cmd.Wait(); close(s.exited) }()

	own, _ := os.Readlink("/proc/self/ns/net")
	nsPath := fmt.Sprintf("/proc/%d/ns/net", s.cmd.Process.Pid)
	deadline := time.Now().Add(60 * time.Second)
	wait := func(what string) error {
		select {
		case <-s.exited:
			return fmt.Errorf("sambatest: samba exited while %s: %s", what, s.out.String())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("sambatest: samba not ready within 60s (%s): %s", what, s.out.String())
		}
		return nil
	}
	for {
		if l, err := os.Readlink(nsPath); err == nil && l != own {
			break
		}
		if err := wait("entering its namespace"); err != nil {
			return err
		}
	}
	if s.ns, err = os.Open(nsPath); err != nil {
		return fmt.Errorf("sambatest: %w", err)
	}
	s.nsFD = int(s.ns.Fd())
	ldapsURL, err := s.bridge(636)
	if err != nil {
		return err
	}
	ldapURL, err := s.bridge(389)
	if err != nil {
		return err
	}
	s.URL, s.StartTLSURL = "ldaps://"+ldapsURL, "ldap://"+ldapURL
	for {
		c, err := s.dial()
		if err == nil {
			c.Close()
			break
		}
		if err := wait("starting"); err != nil {
			return err
		}
	}
	s.StartTime = time.Since(begin)
	return nil
}

func smbConf(dir, tlsDir string) string {
	// Only the LDAP service: no file sharing, KDC, DNS or replication.
	return fmt.Sprintf(`[global]
	netbios name = DC1
	realm = %[3]s
	workgroup = %[4]s
	server role = active directory domain controller
	server services = ldap
	interfaces = lo
	bind interfaces only = yes
	private dir = %[1]s/private
	lock directory = %[1]s
	state directory = %[1]s/state
	cache directory = %[1]s/cache
	binddns dir = %[1]s/bind-dns
	pid directory = %[1]s
	log file = %[1]s/log.%%m
	tls enabled = yes
	tls certfile = %[2]s/server.pem
	tls keyfile = %[2]s/server.key
	tls cafile =
`, dir, tlsDir, Realm, Domain)
}

// template returns a provisioned domain kept per Samba version,
// provisioning it first when there is none.
func template() (string, time.Duration, error) {
	samba, _ := lookPath("samba")
	v, err := exec.Command(samba, "-V").Output()
	if err != nil {
		return "", 0, fmt.Errorf("sambatest: samba -V: %w", err)
	}
	version := strings.NewReplacer(" ", "_", "/", "_").Replace(strings.TrimSpace(string(v)))
	dir := filepath.Join(os.TempDir(), "usher-sambatest-"+version)
	if _, err := os.Stat(filepath.Join(dir, "private", "sam.ldb")); err == nil {
		return dir, 0, nil
	}
	begin := time.Now()
	tmp, err := os.MkdirTemp(os.TempDir(), "usher-sambatest-provision-")
	if err != nil {
		return "", 0, fmt.Errorf("sambatest: %w", err)
	}
	defer os.RemoveAll(tmp)
	tool, _ := lookPath("samba-tool")
	cmd := exec.Command(tool, "domain", "provision", "--realm="+Realm, "--domain="+Domain,
		"--server-role=dc", "--dns-backend=NONE", "--adminpass="+AdminPW, "--host-name=dc1",
		"--targetdir="+tmp, "--option=interfaces=lo", "--option=bind interfaces only=yes")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", 0, fmt.Errorf("sambatest: samba-tool domain provision: %v: %s", err, lastLines(out, 10))
	}
	// Another test binary may have provisioned meanwhile: the first
	// rename wins, and either copy is good.
	if err := os.Rename(tmp, dir); err != nil {
		if _, serr := os.Stat(filepath.Join(dir, "private", "sam.ldb")); serr != nil {
			return "", 0, fmt.Errorf("sambatest: keep the provisioned domain: %w", err)
		}
	}
	return dir, time.Since(begin), nil
}

func lastLines(b []byte, n int) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// bridge listens on a loopback port here and forwards each connection to
// port inside Samba's namespace; it returns host:port.
func (s *Server) bridge(port int) (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("sambatest: %w", err)
	}
	s.lns = append(s.lns, ln)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.conns.Add(1)
			go func() {
				defer s.conns.Done()
				defer c.Close()
				up, err := s.dialInNS(port)
				if err != nil {
					return
				}
				defer up.Close()
				done := make(chan struct{})
				go func() { io.Copy(up, c); up.(*net.TCPConn).CloseWrite(); close(done) }()
				io.Copy(c, up)
				c.(*net.TCPConn).CloseWrite()
				<-done
			}()
		}
	}()
	return ln.Addr().String(), nil
}

// dialInNS connects to 127.0.0.1:port in Samba's namespace. A socket
// belongs to the namespace of the thread that made it, so the dial runs
// on a locked thread that enters the namespace and then goes back; a
// thread that cannot go back stays locked and ends with its goroutine.
func (s *Server) dialInNS(port int) (net.Conn, error) {
	type result struct {
		c   net.Conn
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		if err := unix.Setns(s.nsFD, unix.CLONE_NEWNET); err != nil {
			ch <- result{nil, fmt.Errorf("sambatest: setns: %w", err)}
			return
		}
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), 10*time.Second)
		ch <- result{c, err}
		if unix.Setns(hostNS.fd, unix.CLONE_NEWNET) == nil {
			if l, err := os.Readlink("/proc/thread-self/ns/net"); err == nil && l == hostNS.link {
				runtime.UnlockOSThread()
			}
		}
	}()
	r := <-ch
	return r.c, r.err
}

// hostNS is the test binary's own network namespace, opened before any
// thread leaves it and kept open (and referenced: an unreferenced
// os.File is closed by its finalizer, and its descriptor number reused)
// for the life of the process.
var hostNS = func() (ns struct {
	f    *os.File
	fd   int
	link string
}) {
	ns.fd = -1
	if f, err := os.Open("/proc/self/ns/net"); err == nil {
		ns.f, ns.fd = f, int(f.Fd())
		ns.link, _ = os.Readlink("/proc/self/ns/net")
	}
	return ns
}()

// dial opens an LDAPS connection bound as Administrator.
func (s *Server) dial() (*goldap.Conn, error) {
	c, err := goldap.DialURL(s.URL, goldap.DialWithTLSConfig(s.TLSConfig()),
		goldap.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}))
	if err != nil {
		return nil, err
	}
	c.SetTimeout(30 * time.Second)
	if err := c.Bind(AdminDN, AdminPW); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// TLSConfig trusts Samba's certificate.
func (s *Server) TLSConfig() *tls.Config {
	pool := x509.NewCertPool()
	if b, err := os.ReadFile(s.CAFile); err == nil {
		pool.AppendCertsFromPEM(b)
	}
	return &tls.Config{RootCAs: pool, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12}
}

// Stop ends Samba and removes its files.
func (s *Server) Stop() {
	s.mu.Lock()
	if s.admin != nil {
		s.admin.Close()
		s.admin = nil
	}
	s.mu.Unlock()
	for _, ln := range s.lns {
		ln.Close()
	}
	if s.cmd != nil && s.cmd.Process != nil {
		s.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-s.exited:
		case <-time.After(10 * time.Second):
			s.cmd.Process.Kill()
			<-s.exited
		}
	}
	if s.ns != nil {
		// Samba is gone: bridged connections end, and no new ones come
		// (the listeners are closed).
		s.conns.Wait()
		s.ns.Close()
	}
	os.RemoveAll(s.dir)
}

// Admin returns a shared connection bound as Administrator.
func (s *Server) Admin() (*goldap.Conn, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.admin != nil && !s.admin.IsClosing() {
		return s.admin, nil
	}
	c, err := s.dial()
	if err != nil {
		return nil, fmt.Errorf("sambatest: bind as Administrator: %w", err)
	}
	s.admin = c
	return c, nil
}

// Subtree creates OU=<test name>-<n> under the domain with OU=People and
// OU=Groups below it and returns its DN, plus a suffix to make
// sAMAccountNames (unique in the whole domain) unique to this subtree.
func (s *Server) Subtree(t testing.TB) (base, suffix string) {
	t.Helper()
	n := s.subtrees.Add(1)
	name := fmt.Sprintf("%s-%d", strings.NewReplacer("/", "-", " ", "_").Replace(t.Name()), n)
	base = "OU=" + goldap.EscapeDN(name) + "," + BaseDN
	s.Seed(t, fmt.Sprintf(`
dn: %[1]s
objectClass: organizationalUnit

dn: OU=People,%[1]s
objectClass: organizationalUnit

dn: OU=Groups,%[1]s
objectClass: organizationalUnit
`, base))
	return base, fmt.Sprintf("%d", n)
}

// Seed adds entries written in slapdtest's LDIF subset. A "password:"
// line sets unicodePwd to UserPassword (any value given is ignored), so
// that the account can be enabled.
func (s *Server) Seed(t testing.TB, ldif string) {
	t.Helper()
	c, err := s.Admin()
	if err != nil {
		t.Fatal(err)
	}
	recs, err := slapdtest.ParseLDIF(ldif)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		req := goldap.NewAddRequest(r.DN, nil)
		for _, a := range r.Attrs {
			if strings.EqualFold(a.Name, "password") {
				req.Attribute("unicodePwd", []string{unicodePwd(UserPassword)})
				continue
			}
			req.Attribute(a.Name, a.Values)
		}
		if err := c.Add(req); err != nil {
			t.Fatalf("sambatest: add %s: %v", r.DN, err)
		}
	}
}

// Modify replaces attribute values of dn.
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
		t.Fatalf("sambatest: modify %s: %v", dn, err)
	}
}

// Delete removes dn; AD keeps a tombstone.
func (s *Server) Delete(t testing.TB, dn string) {
	t.Helper()
	c, err := s.Admin()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Del(goldap.NewDelRequest(dn, nil)); err != nil {
		t.Fatalf("sambatest: delete %s: %v", dn, err)
	}
}

// Entry reads one entry as Administrator.
func (s *Server) Entry(t testing.TB, dn string, attrs ...string) *goldap.Entry {
	t.Helper()
	c, err := s.Admin()
	if err != nil {
		t.Fatal(err)
	}
	res, err := c.Search(goldap.NewSearchRequest(dn, goldap.ScopeBaseObject, goldap.NeverDerefAliases,
		0, 30, false, "(objectClass=*)", attrs, nil))
	if err != nil || len(res.Entries) != 1 {
		t.Fatalf("sambatest: read %s: %v", dn, err)
	}
	return res.Entries[0]
}

// unicodePwd encodes a password as AD takes it: quoted, UTF-16LE.
func unicodePwd(pw string) string {
	u := utf16.Encode([]rune(`"` + pw + `"`))
	b := make([]byte, 2*len(u))
	for i, r := range u {
		binary.LittleEndian.PutUint16(b[2*i:], r)
	}
	return string(b)
}

// Shared is one server for a test package, started by the first test that
// asks, and stopped by Stop.
type Shared struct {
	once sync.Once
	srv  *Server
	err  error
}

// Stop stops the server if one started; TestMain calls it after m.Run.
func (sh *Shared) Stop() {
	if sh.srv != nil {
		sh.srv.Stop()
	}
}

// Server starts the server on first use and returns it, or skips t (fails
// it when CI is set) when it cannot run here.
func (sh *Shared) Server(t testing.TB) *Server {
	t.Helper()
	sh.once.Do(func() {
		sh.srv, sh.err = Start()
		if sh.err == nil {
			fmt.Fprintf(os.Stderr, "sambatest: provisioned in %v, started in %v\n",
				sh.srv.ProvisionTime.Round(time.Millisecond), sh.srv.StartTime.Round(time.Millisecond))
		}
	})
	if sh.srv != nil {
		return sh.srv
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("%v (CI is set, so this fails instead of skipping)", sh.err)
	}
	t.Skipf("%v; skipping (set CI to fail instead)", sh.err)
	return nil
}

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
	return lastLines(l.b.Bytes(), 20)
}
