package main

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/cookiejar"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/usherhq/usher/providers/oidc/oidctest"
)

// switchedIdP is an oidctest IdP on a fixed address that the test can
// take down: down, it drops every connection unanswered, as a host that
// is down or cut off would.
type switchedIdP struct {
	*oidctest.IdP
	down atomic.Bool
}

func startSwitchedIdP(t *testing.T, opts oidctest.Options) *switchedIdP {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	opts.Issuer = "http://" + ln.Addr().String()
	idp, err := oidctest.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	s := &switchedIdP{IdP: idp}
	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s.down.Load() {
			if conn, _, err := http.NewResponseController(w).Hijack(); err == nil {
				conn.Close()
			}
			return
		}
		idp.ServeHTTP(w, r)
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close() })
	return s
}

// TestIdPUnreachable: one IdP that does not answer neither stops usher
// from starting nor a reload. Without a stored copy it is unavailable:
// /readyz and the chooser say so and the other IdP works. Once it has
// answered, its copy in the store carries the next start or reload
// through an outage.
func TestIdPUnreachable(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	public := "http://" + ln.Addr().String()
	client := func(id string) oidctest.Client {
		return oidctest.Client{ID: "usher-" + id, Secret: "s3cret-" + id, RedirectURIs: []string{public + "/usher/oidc/" + id + "/callback"}}
	}
	acme := startSwitchedIdP(t, oidctest.Options{Name: "acme", Users: testUsers["acme"], Clients: []oidctest.Client{client("acme")}})
	globex, err := oidctest.Start(oidctest.Options{Name: "globex", Users: testUsers["globex"], Clients: []oidctest.Client{client("globex")}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { globex.Close() })
	upstream := newRecorder(t)

	text := fmt.Sprintf(`admin:
  listen: 127.0.0.1:0
server:
  public_url: %s
  data_dir: %s
session:
  keys: [%s]
apps:
  - name: app
    kind: generic
    upstream: %s
    route: {path_prefix: /}
idps:
  - id: acme
    name: acme IdP
    type: oidc
    domains: [acme.test]
    config: {issuer: %s, client_id: usher-acme, client_secret: {value: s3cret-acme}}
  - id: globex
    name: globex IdP
    type: oidc
    domains: [globex.test]
    config: {issuer: %s, client_id: usher-globex, client_secret: {value: s3cret-globex}}
`, public, dir, hex.EncodeToString(make([]byte, 32)), upstream.srv.URL, acme.Issuer(), globex.Issuer())
	path := filepath.Join(dir, "usher.yaml")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := loadConfig(path)
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	logs := &syncBuffer{}
	m := &Main{Config: cfg, ConfigPath: path, Log: slog.New(slog.NewTextHandler(logs, nil)), NoWorker: true,
		Client: &http.Client{Timeout: 5 * time.Second}}
	m.Listen(ln)

	browser := func() *http.Client {
		jar, _ := cookiejar.New(nil)
		return &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	}
	get := func(c *http.Client, u string) *http.Response {
		t.Helper()
		resp, err := c.Get(u)
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	readyz := func() (int, map[string]string) {
		t.Helper()
		resp := get(http.DefaultClient, "http://"+m.AdminAddr()+"/readyz")
		var body struct {
			Checks map[string]string `json:"checks"`
		}
		if err := json.Unmarshal([]byte(bodyOf(resp)), &body); err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, body.Checks
	}
	login := func(idp *oidctest.IdP, id, user, password string) {
		t.Helper()
		c := browser()
		resp := get(c, public+"/usher/login?idp="+id+"&rd=/home")
		wantStatus(t, resp, http.StatusFound)
		cb, err := idp.Login(c, resp.Header.Get("Location"), user, password)
		if err != nil {
			t.Fatalf("%s login: %v", id, err)
		}
		resp = get(c, cb)
		wantStatus(t, resp, http.StatusFound)
		resp = get(c, public+resp.Header.Get("Location"))
		wantStatus(t, resp, http.StatusOK)
		if got, want := bodyOf(resp), "app saw "+user+" at /home"; got != want {
			t.Fatalf("upstream answered %q, want %q", got, want)
		}
	}

	// A cold start with acme down and nothing stored.
	acme.down.Store(true)
	if err := m.Open(ctx); err != nil {
		t.Fatalf("Open with one IdP down: %v", err)
	}
	t.Cleanup(func() { m.Close() })
	if out := logs.String(); !strings.Contains(out, "level=ERROR") || !strings.Contains(out, "idp=acme") || strings.Contains(out, "could not read the stored copy") {
		t.Fatalf("the log should name acme as unavailable, and find no copy without failing to read one:\n%s", out)
	}

	code, checks := readyz()
	t.Logf("/readyz with acme down: %d %q", code, checks)
	// One IdP down: degraded, still serving (200), with acme named.
	if code != http.StatusOK || checks["store"] != "ok" || checks["idp:globex"] != "ok" ||
		!strings.HasPrefix(checks["idp:acme"], "acme IdP is unavailable: its discovery document could not be fetched") {
		t.Fatalf("/readyz with acme down: %d %v", code, checks)
	}
	resp := get(browser(), public+"/usher/login?rd=/home")
	wantStatus(t, resp, http.StatusOK)
	if body := bodyOf(resp); strings.Contains(body, "idp=acme") || !strings.Contains(body, "(unavailable right now)") || !strings.Contains(body, "idp=globex") {
		t.Fatalf("chooser with acme down:\n%s", body)
	}
	resp = get(browser(), public+"/usher/login?idp=acme&rd=/home")
	wantStatus(t, resp, http.StatusServiceUnavailable)
	if body := bodyOf(resp); !strings.Contains(body, "acme IdP is unavailable") {
		t.Fatalf("login at acme while down:\n%s", body)
	}
	login(globex, "globex", "bob", "pw-bob")

	// acme answers again: a reload (or the provider's own retry) loads it.
	acme.down.Store(false)
	if err := m.Reload(ctx); err != nil {
		t.Fatalf("reload: %v", err)
	}
	if code, checks := readyz(); code != http.StatusOK {
		t.Fatalf("/readyz with every IdP up: %d %v", code, checks)
	}
	login(acme.IdP, "acme", "alice", "pw-alice")

	// acme down again: the reload opens it from the copy in the store.
	acme.down.Store(true)
	if err := m.Reload(ctx); err != nil {
		t.Fatalf("reload with acme down after it once answered: %v", err)
	}
	out := logs.String()
	if !strings.Contains(out, "using the stored copy") || !strings.Contains(out, "idp=acme") || !strings.Contains(out, "age=") {
		t.Fatalf("the log does not say the stored copy is used, for which IdP, how old:\n%s", out)
	}
	resp = get(browser(), public+"/usher/login?idp=acme&rd=/home")
	wantStatus(t, resp, http.StatusFound)
	if loc := resp.Header.Get("Location"); !strings.HasPrefix(loc, acme.Issuer()+"/") {
		t.Fatalf("login at acme from the stored copy went to %q", loc)
	}
	code, checks = readyz()
	t.Logf("/readyz with acme down on its stored copy: %d %q", code, checks)
	if code != http.StatusOK || checks["idp:globex"] != "ok" || !strings.Contains(checks["idp:acme"], "signing keys could not be fetched") {
		t.Fatalf("/readyz with acme down on its stored copy: %d %v", code, checks)
	}
	login(globex, "globex", "bob", "pw-bob")
}
