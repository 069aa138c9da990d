package main

import (
	"context"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/usherhq/usher/providers/oidc/oidctest"
	"github.com/usherhq/usher/targets/atlassiantest"
)

// childEnv makes the test binary run usher itself (see TestMain), so a
// test can start a real usher process and kill it.
const childEnv = "USHER_TEST_CHILD"

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) == "1" {
		ctx, stop := signalContext()
		code := run(ctx, os.Args[len(os.Args)-3:], os.Stdout, os.Stderr)
		stop()
		os.Exit(code)
	}
	os.Exit(m.Run())
}

func signalContext() (context.Context, func()) {
	return signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
}

// startChild runs `usher serve --config path` as a process of its own.
func startChild(t *testing.T, path, logFile string) *exec.Cmd {
	t.Helper()
	log, err := os.OpenFile(logFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { log.Close() })
	cmd := exec.Command(os.Args[0], "-test.run=^$", "serve", "--config", path)
	cmd.Env = append(os.Environ(), childEnv+"=1")
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _, _ = cmd.Process.Wait() })
	return cmd
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func waitUp(t *testing.T, url, logFile string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if resp, err := http.Get(url); err == nil {
			resp.Body.Close()
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	b, _ := os.ReadFile(logFile)
	t.Fatalf("%s did not come up:\n%s", url, lastLines(string(b), 20))
}

// A process killed (SIGKILL) in the middle of a login's provisioning
// loses nothing: the change was recorded before the app calls, and the
// restarted process (a new replica name) finishes it as soon as the dead
// one's heartbeat has stopped, with the person's newest groups, not a
// mix of old and new.
func TestKilledMidProvisioningIsFinishedAfterRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("starts usher processes")
	}
	t.Parallel()
	dir := t.TempDir()
	addr := freeAddr(t)
	public := "http://" + addr

	jira := atlassiantest.New(atlassiantest.Jira, atlassiantest.Options{
		AdminUser: "admin", AdminPassword: "admin-pw",
		Groups: []string{"jira-developers", "team-red", "team-blue", "usher-users"},
	})
	js := httptest.NewServer(jira)
	t.Cleanup(js.Close)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "app") }))
	t.Cleanup(up.Close)

	idp, err := oidctest.Start(oidctest.Options{
		Name: "acme",
		Users: []oidctest.User{{Subject: "00u-alice", Username: "alice", Password: "pw", Email: "alice@acme.test",
			Name: "Alice Archer", Groups: []string{"engineering", "team-red"}}},
		Clients: []oidctest.Client{{ID: "usher-acme", Secret: "s3cret", RedirectURIs: []string{public + "/usher/oidc/acme/callback"}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { idp.Close() })

	cfg := fmt.Sprintf(`server:
  listen: %s
  public_url: %s
  data_dir: %s
admin: {listen: "off"}
session:
  keys: [{value: %s}]
provisioning:
  deadline: 30s
  retry: {interval: 300ms, probe_every: 1h}
apps:
  - name: jira
    kind: jira
    upstream: %s
    route: {path_prefix: /}
    api: {username: admin, password: {value: admin-pw}}
idps:
  - id: acme
    type: oidc
    config: {issuer: %s, client_id: usher-acme, client_secret: {value: s3cret}}
    mapping:
      groups:
        map: [{idp_group: engineering, groups: {jira: [jira-developers]}}]
        rules: [{match: "^team-(.+)$", groups: {jira: ["team-$1"]}}]
`, addr, public, dir, hex.EncodeToString(make([]byte, 32)), js.URL, idp.Issuer())
	path := filepath.Join(dir, "usher.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	logFile := filepath.Join(dir, "usher.log")
	noRedirect := func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

	login := func(timeout time.Duration) (*http.Response, error) {
		jar, _ := cookiejar.New(nil)
		c := &http.Client{Jar: jar, CheckRedirect: noRedirect, Timeout: timeout}
		resp, err := c.Get(public + "/usher/login?idp=acme&rd=/")
		if err != nil {
			return nil, err
		}
		resp.Body.Close()
		cb, err := idp.Login(c, resp.Header.Get("Location"), "alice", "pw")
		if err != nil {
			return nil, err
		}
		return c.Get(cb)
	}

	child := startChild(t, path, logFile)
	waitUp(t, public+"/usher/login", logFile)
	resp, err := login(30 * time.Second)
	if err != nil || resp.StatusCode != http.StatusFound {
		t.Fatalf("first login: %v %v", resp, err)
	}
	resp.Body.Close()
	if u, _ := jira.User("alice"); !slices.Contains(u.Groups, "team-red") {
		t.Fatalf("after the first login: %+v", u)
	}

	// alice moves to team-blue; the app is slow, and usher dies while it
	// is adding her to team-blue (before it takes team-red away).
	idp.SetUser(oidctest.User{Subject: "00u-alice", Username: "alice", Password: "pw", Email: "alice@acme.test",
		Name: "Alice Archer", Groups: []string{"engineering", "team-blue"}})
	jira.SetLatency(400 * time.Millisecond)
	jira.ResetCalls()
	done := make(chan struct{})
	go func() {
		defer close(done)
		if resp, err := login(20 * time.Second); err == nil {
			resp.Body.Close()
		}
	}()
	deadline := time.Now().Add(10 * time.Second)
	for jira.Calls()["POST /rest/api/2/group/user"] == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("usher never started changing alice's groups: %v", jira.Calls())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := child.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_, _ = child.Process.Wait()
	<-done
	jira.SetLatency(0)
	if u, _ := jira.User("alice"); !slices.Contains(u.Groups, "team-red") {
		t.Fatalf("the kill came too late to test anything: alice has %v", u.Groups)
	}

	// Restart: a new process, so a new replica name. The change is found
	// and finished, without anybody logging in again.
	startChild(t, path, logFile)
	waitUp(t, public+"/usher/login", logFile)
	deadline = time.Now().Add(20 * time.Second)
	for {
		u, _ := jira.User("alice")
		if slices.Contains(u.Groups, "team-blue") && !slices.Contains(u.Groups, "team-red") {
			break
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(logFile)
			t.Fatalf("20 s after the restart alice has %v, want team-blue and not team-red\n%s", u.Groups, lastLines(string(b), 30))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
