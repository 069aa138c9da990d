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
// A package shares one server through NewShared, started on first use so
// that the package's other tests need not wait. When Samba (or root) is
// missing the tests that need it skip, or fail when CI is set. What it
// shares with slapdtest (the process, the administrator connection, LDIF,
// certificates) is in directory/ldap/internal/ldaptest.
package sambatest

import (
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf16"

	goldap "github.com/go-ldap/ldap/v3"
	"golang.org/x/sys/unix"

	"github.com/usherhq/usher/directory/ldap/internal/ldaptest"
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

// Server is one running Samba DC. Its Client (Admin, Seed, Modify,
// Delete, Entry) works as Administrator over LDAPS; Delete leaves a
// tombstone, as AD does. Seed's "password:" line sets unicodePwd to
// UserPassword (any value given is ignored), so that the account can be
// enabled.
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

	*ldaptest.Client
	dir   string
	proc  *ldaptest.Process
	ns    *os.File
	nsFD  int // ns's descriptor, read once: File.Fd races with Close
	stdin io.WriteCloser
	lns   []net.Listener
	conns sync.WaitGroup
}

// ErrNotAvailable means this machine cannot run the server.
var ErrNotAvailable = fmt.Errorf("sambatest: Samba AD DC: %w", ldaptest.ErrUnavailable)

func need() error {
	for _, b := range []string{"samba", "samba-tool", "unshare", "ip"} {
		if _, err := ldaptest.LookPath(b); err != nil {
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

// Start provisions (or copies) a domain and runs Samba on it.
func Start() (*Server, error) {
	if err := need(); err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "sambatest-")
	if err != nil {
		return nil, fmt.Errorf("sambatest: %w", err)
	}
	s := &Server{dir: dir}
	s.Client = ldaptest.NewClient("sambatest", s.dial, password)
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
	if err := ldaptest.WriteCerts(tlsDir, "dc1.example.test"); err != nil {
		return err
	}
	s.CAFile = filepath.Join(tlsDir, "ca.pem")
	conf := filepath.Join(s.dir, "etc", "smb.conf")
	if err := os.WriteFile(conf, []byte(smbConf(s.dir, tlsDir)), 0o600); err != nil {
		return fmt.Errorf("sambatest: %w", err)
	}
	samba, _ := ldaptest.LookPath("samba")
	unshare, _ := ldaptest.LookPath("unshare")
	ip, _ := ldaptest.LookPath("ip")
	// unshare execs sh, which execs samba: one process, whose network
	// namespace is new and holds only loopback.
	cmd := exec.Command(unshare, "-n", "sh", "-c",
		`"$1" link set lo up && exec "$2" -i -s "$3" --debug-stdout -d 0`, "sh", ip, samba, conf)
	// samba -i ends when its standard input closes: kept open here, it
	// closes with the test binary.
	if s.stdin, err = cmd.StdinPipe(); err != nil {
		return fmt.Errorf("sambatest: %w", err)
	}
	if s.proc, err = ldaptest.Start(cmd); err != nil {
		return fmt.Errorf("sambatest: start samba: %w", err)
	}

	own, _ := os.Readlink("/proc/self/ns/net")
	nsPath := fmt.Sprintf("/proc/%d/ns/net", s.proc.Pid())
	deadline := time.Now().Add(60 * time.Second)
	err = s.proc.Await(deadline, "entering its namespace", func() bool {
		l, err := os.Readlink(nsPath)
		return err == nil && l != own
	})
	if err != nil {
		return fmt.Errorf("sambatest: samba: %w", err)
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
	err = s.proc.Await(deadline, "starting", func() bool {
		c, err := s.dial()
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	if err != nil {
		return fmt.Errorf("sambatest: samba: %w", err)
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
	samba, _ := ldaptest.LookPath("samba")
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
	tool, _ := ldaptest.LookPath("samba-tool")
	cmd := exec.Command(tool, "domain", "provision", "--realm="+Realm, "--domain="+Domain,
		"--server-role=dc", "--dns-backend=NONE", "--adminpass="+AdminPW, "--host-name=dc1",
		"--targetdir="+tmp, "--option=interfaces=lo", "--option=bind interfaces only=yes")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", 0, fmt.Errorf("sambatest: samba-tool domain provision: %v: %s", err, ldaptest.LastLines(string(out), 10))
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
func (s *Server) TLSConfig() *tls.Config { return ldaptest.TLSConfig(s.CAFile) }

// Stop ends Samba and removes its files.
func (s *Server) Stop() {
	s.Client.Close()
	for _, ln := range s.lns {
		ln.Close()
	}
	if s.proc != nil {
		s.proc.Stop(10 * time.Second)
	}
	if s.ns != nil {
		// Samba is gone: bridged connections end, and no new ones come
		// (the listeners are closed).
		s.conns.Wait()
		s.ns.Close()
	}
	os.RemoveAll(s.dir)
}

// Subtree creates OU=<test name>-<n> under the domain with OU=People and
// OU=Groups below it and returns its DN, plus a suffix to make
// sAMAccountNames (unique in the whole domain) unique to this subtree.
func (s *Server) Subtree(t testing.TB) (base, suffix string) {
	t.Helper()
	name, n := s.SubtreeName(t)
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

// password turns Seed's "password:" line into unicodePwd.
func password(a ldaptest.Attr) ldaptest.Attr {
	if strings.EqualFold(a.Name, "password") {
		return ldaptest.Attr{Name: "unicodePwd", Values: []string{unicodePwd(UserPassword)}}
	}
	return a
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

// NewShared prepares one server for a test package (see
// ldaptest.Shared).
func NewShared() *ldaptest.Shared[*Server] {
	return ldaptest.NewShared(func() (*Server, error) {
		s, err := Start()
		if err == nil && testing.Verbose() {
			fmt.Fprintf(os.Stderr, "sambatest: provisioned in %v, started in %v\n",
				s.ProvisionTime.Round(time.Millisecond), s.StartTime.Round(time.Millisecond))
		}
		return s, err
	})
}
