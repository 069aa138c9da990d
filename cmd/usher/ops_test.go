package main

// Operational tests: what an operator watches and does to a running
// usher — metrics moving, config reloads, a database outage, a graceful
// stop.

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/usherhq/usher/providers/oidc/oidctest"
	"github.com/usherhq/usher/store/postgres/pgtest"
)

// adminCall sends a request to the admin listener, with the bearer token
// when token is not empty, and returns the response with its body read.
func (e *env) adminCall(method, path, token string) (*http.Response, string) {
	e.t.Helper()
	req, err := http.NewRequest(method, "http://"+e.m.AdminAddr()+path, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	return resp, string(body)
}

// scrape reads /metrics the way Prometheus does.
func (e *env) scrape() map[string]*dto.MetricFamily {
	e.t.Helper()
	resp, body := e.adminCall("GET", "/metrics", "admin-token")
	if resp.StatusCode != http.StatusOK {
		e.t.Fatalf("/metrics: status %d: %s", resp.StatusCode, body)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		e.t.Fatalf("/metrics is not in the text format: %v\n%s", err, body)
	}
	return fams
}

// sample sums the series of name whose labels include want; absent
// series count as 0, as Prometheus' increase() treats a new series.
func sample(fams map[string]*dto.MetricFamily, name string, want map[string]string) float64 {
	f := fams[name]
	if f == nil {
		return 0
	}
	var sum float64
next:
	for _, m := range f.GetMetric() {
		have := map[string]string{}
		for _, l := range m.GetLabel() {
			have[l.GetName()] = l.GetValue()
		}
		for k, v := range want {
			if have[k] != v {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			sum += m.GetCounter().GetValue()
		case m.Gauge != nil:
			sum += m.GetGauge().GetValue()
		case m.Untyped != nil:
			sum += m.GetUntyped().GetValue()
		}
	}
	return sum
}

type series struct {
	name   string
	labels map[string]string
}

func (s series) String() string { return fmt.Sprintf("%s%v", s.name, s.labels) }

// wantIncrease fails for every series that did not grow from before to
// after.
func wantIncrease(t *testing.T, step string, before, after map[string]*dto.MetricFamily, ss ...series) {
	t.Helper()
	for _, s := range ss {
		b, a := sample(before, s.name, s.labels), sample(after, s.name, s.labels)
		if a <= b {
			t.Errorf("%s: %s went from %v to %v, want an increase", step, s, b, a)
		} else {
			t.Logf("%s: %s %v -> %v", step, s, b, a)
		}
	}
}

func TestMetricsMoveAfterLoginFailureAndSweep(t *testing.T) {
	t.Parallel()
	e := startEnvWith(t, envOptions{Apps: true, Mapping: jitMapping, Extra: sweepConfig})
	ctx := context.Background()

	// Metrics are for Prometheus and admins only.
	for _, tok := range []string{"", "wrong-token"} {
		resp, body := e.adminCall("GET", "/metrics", tok)
		if resp.StatusCode != http.StatusUnauthorized || strings.Contains(body, "usher_") {
			t.Fatalf("/metrics with token %q: status %d, want 401 without any metric\n%s", tok, resp.StatusCode, body)
		}
	}
	for _, probe := range []string{"/healthz", "/readyz"} {
		if resp, body := e.adminCall("GET", probe, ""); resp.StatusCode != http.StatusOK {
			t.Fatalf("%s: status %d: %s", probe, resp.StatusCode, body)
		}
	}

	// A successful login with provisioning.
	before := e.scrape()
	wantStatus(t, e.login(e.browser(), "/jira/", "acme", "alice", "pw-alice"), http.StatusOK)
	after := e.scrape()
	wantIncrease(t, "login", before, after,
		series{"usher_logins_total", map[string]string{"idp": "acme", "outcome": "ok", "reason": "none"}},
		series{"usher_requests_total", map[string]string{"app": "jira"}},
		series{"usher_app_calls_total", map[string]string{"app": "jira", "result": "ok"}},
	)

	// A new person while Jira is down: the login fails in provisioning.
	e.apps["jira"].SetDown(true)
	before = after
	c := e.browser()
	resp := e.get(c, e.url+"/usher/login?idp=globex&rd=/jira/")
	wantStatus(t, resp, http.StatusFound)
	cb, err := e.idps["globex"].Login(c, resp.Header.Get("Location"), "bob", "pw-bob")
	if err != nil {
		t.Fatal(err)
	}
	wantStatus(t, e.get(c, cb), http.StatusServiceUnavailable)
	e.apps["jira"].SetDown(false)
	after = e.scrape()
	wantIncrease(t, "provisioning failure", before, after,
		series{"usher_logins_total", map[string]string{"idp": "globex", "outcome": "error", "reason": "provisioning"}},
		series{"usher_app_calls_total", map[string]string{"app": "jira", "result": "error"}},
	)
	if b, a := sample(before, "usher_logins_total", map[string]string{"outcome": "ok"}), sample(after, "usher_logins_total", map[string]string{"outcome": "ok"}); a != b {
		t.Errorf("the failed login counted as ok: %v -> %v", b, a)
	}

	// A sweep run through the admin API ends alice's access and session.
	if err := e.m.store.SetAccessExpiry(ctx, "acme", "00u-alice", time.Now().Add(-24*time.Hour)); err != nil {
		t.Fatal(err)
	}
	before = after
	resp, body := e.adminCall("POST", "/admin/api/sweeps/expired/run?dry_run=false", "admin-token")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("sweep run: status %d: %s", resp.StatusCode, body)
	}
	after = e.scrape()
	wantIncrease(t, "sweep", before, after,
		series{"usher_sweep_runs_total", map[string]string{"policy": "expired"}},
		series{"usher_sweep_applied", map[string]string{"policy": "expired"}},
		series{"usher_sweep_last_run_timestamp_seconds", map[string]string{"policy": "expired"}},
		series{"usher_session_revocations_total", map[string]string{"source": "sweep"}},
		series{"usher_app_calls_total", map[string]string{"app": "jira", "result": "ok"}},
	)
	if got := sample(after, "usher_sweep_blocked_total", map[string]string{"policy": "expired"}); got != 0 {
		t.Errorf("usher_sweep_blocked_total = %v, want 0", got)
	}
	if _, ok := after["usher_sweep_blocked_total"]; !ok {
		t.Error("usher_sweep_blocked_total is missing after a run; increase() alerts would miss the first block")
	}
}

// reloadMapping maps the IdP group engineering to one Jira group.
const reloadMapping = `      groups:
        map:
          - idp_group: engineering
            groups: {jira: [jira-developers]}
`

// syncBuffer is a log destination the server's goroutines and the test
// can share.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestReloadAppliesNewMappingAndKeepsOldOnError(t *testing.T) {
	t.Parallel()
	e := startEnvWith(t, envOptions{Apps: true, Mapping: reloadMapping})
	ctx := context.Background()
	jira := e.apps["jira"]

	before := e.browser()
	wantStatus(t, e.login(before, "/jira/", "acme", "alice", "pw-alice"), http.StatusOK)
	if g := groupsOf(t, jira, "alice"); !slices.Contains(g, "jira-developers") {
		t.Fatalf("jira groups before reload: %q", g)
	}

	good, err := os.ReadFile(e.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	const oldLine, newLine = "groups: {jira: [jira-developers]}", "groups: {jira: [eng-platform]}"
	if !bytes.Contains(good, []byte(oldLine)) {
		t.Fatalf("config lacks %q", oldLine)
	}
	good = bytes.ReplaceAll(good, []byte(oldLine), []byte(newLine))
	if err := os.WriteFile(e.cfgPath, good, 0o600); err != nil {
		t.Fatal(err)
	}
	jira.AddGroup("eng-platform")
	e.enableReload()

	// Reload without the token is refused and changes nothing.
	if resp, body := e.adminCall("POST", "/admin/api/reload", ""); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("reload without token: status %d: %s", resp.StatusCode, body)
	}
	if resp, body := e.adminCall("POST", "/admin/api/reload", "admin-token"); resp.StatusCode != http.StatusOK {
		t.Fatalf("reload: status %d: %s", resp.StatusCode, body)
	}

	// The new mapping changes the profile hash, so the fast path cannot
	// skip it: the managed group moves.
	wantStatus(t, e.login(e.browser(), "/jira/", "acme", "alice", "pw-alice"), http.StatusOK)
	if g := groupsOf(t, jira, "alice"); !slices.Contains(g, "eng-platform") || slices.Contains(g, "jira-developers") {
		t.Fatalf("jira groups after reload: %q, want eng-platform and no jira-developers", g)
	}
	// A session issued before the reload still works.
	wantStatus(t, e.get(before, e.url+"/jira/"), http.StatusOK)

	// Broken files are refused with the problem named; the running
	// config keeps serving.
	broken := []struct {
		name, text, want string
	}{
		{"unknown key", string(good) + "bogus_setting: 1\n", "bogus_setting"},
		// The position of the unclosed bracket names the problem.
		{"invalid YAML", string(good) + "sessions: [unclosed\n", fmt.Sprintf("usher.yaml:%d:", bytes.Count(good, []byte("\n"))+1)},
		{"unknown key in a mapping", strings.Replace(string(good), newLine, newLine+"\n            bogus_grant: x", 1), "bogus_grant"},
	}
	for _, b := range broken {
		t.Run(b.name, func(t *testing.T) {
			if err := os.WriteFile(e.cfgPath, []byte(b.text), 0o600); err != nil {
				t.Fatal(err)
			}
			resp, body := e.adminCall("POST", "/admin/api/reload", "admin-token")
			if resp.StatusCode < 400 || !strings.Contains(strings.ToLower(body), strings.ToLower(b.want)) {
				t.Fatalf("reload of a broken file: status %d, want an error naming %q:\n%s", resp.StatusCode, b.want, body)
			}
			t.Logf("reload answered %d: %s", resp.StatusCode, strings.TrimSpace(body))
		})
	}

	// The old config still serves: a new engineer gets eng-platform, and
	// the session from before both reloads still works.
	e.idps["acme"].SetUser(oidctest.User{Subject: "00u-carl", Username: "carl", Password: "pw-carl", Email: "carl@acme.test", Name: "Carl Cole", Groups: []string{"engineering"}})
	wantStatus(t, e.login(e.browser(), "/jira/", "acme", "carl", "pw-carl"), http.StatusOK)
	if g := groupsOf(t, jira, "carl"); !slices.Contains(g, "eng-platform") || slices.Contains(g, "jira-developers") {
		t.Fatalf("jira groups of carl after failed reloads: %q, want eng-platform", g)
	}
	wantStatus(t, e.get(before, e.url+"/jira/"), http.StatusOK)

	// What SIGHUP runs: the error comes back and the log says why. No
	// request reads e.m.Log from here on, so swapping it is race-free.
	logs := &syncBuffer{}
	e.m.Log = slog.New(slog.NewTextHandler(logs, nil))
	for _, b := range broken[:2] {
		if err := os.WriteFile(e.cfgPath, []byte(b.text), 0o600); err != nil {
			t.Fatal(err)
		}
		err := e.m.Reload(ctx)
		if err == nil || !strings.Contains(strings.ToLower(err.Error()), strings.ToLower(b.want)) {
			t.Fatalf("%s: Reload = %v, want an error naming %q", b.name, err, b.want)
		}
	}
	out := logs.String()
	if !strings.Contains(out, "level=ERROR") || !strings.Contains(out, "bogus_setting") || !strings.Contains(out, "running config stays") {
		t.Fatalf("the log does not say why the reload was refused:\n%s", out)
	}
}

// enableReload points Reload at the env's config file. reloadMu orders
// the write before the reads of reloads served on other goroutines.
func (e *env) enableReload() {
	e.m.reloadMu.Lock()
	defer e.m.reloadMu.Unlock()
	e.m.ConfigPath = e.cfgPath
}

// forwarder is a TCP proxy to PostgreSQL that a test can cut and restore,
// as a network partition or a database restart would.
type forwarder struct {
	t      *testing.T
	target string
	addr   string

	mu    sync.Mutex
	ln    net.Listener
	conns map[net.Conn]bool
	wg    sync.WaitGroup
}

func startForwarder(t *testing.T, target string) *forwarder {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &forwarder{t: t, target: target, addr: ln.Addr().String(), conns: map[net.Conn]bool{}}
	f.serve(ln)
	t.Cleanup(func() {
		f.cut()
		f.wg.Wait()
	})
	return f
}

func (f *forwarder) serve(ln net.Listener) {
	f.mu.Lock()
	f.ln = ln
	f.mu.Unlock()
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			f.wg.Add(1)
			go func() {
				defer f.wg.Done()
				f.pipe(c)
			}()
		}
	}()
}

func (f *forwarder) track(cs ...net.Conn) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.ln == nil { // cut while dialling
		return false
	}
	for _, c := range cs {
		f.conns[c] = true
	}
	return true
}

func (f *forwarder) pipe(c net.Conn) {
	defer c.Close()
	up, err := net.DialTimeout("tcp", f.target, 5*time.Second)
	if err != nil {
		return
	}
	defer up.Close()
	if !f.track(c, up) {
		return
	}
	done := make(chan struct{}, 2)
	go func() { _, _ = io.Copy(up, c); done <- struct{}{} }()
	go func() { _, _ = io.Copy(c, up); done <- struct{}{} }()
	<-done
	c.Close()
	up.Close()
	<-done
	f.mu.Lock()
	delete(f.conns, c)
	delete(f.conns, up)
	f.mu.Unlock()
}

// cut closes every open connection and stops listening, so new
// connections are refused.
func (f *forwarder) cut() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.ln != nil {
		f.ln.Close()
		f.ln = nil
	}
	for c := range f.conns {
		c.Close()
	}
	clear(f.conns)
}

// restore listens again on the same address.
func (f *forwarder) restore() {
	f.t.Helper()
	ln, err := net.Listen("tcp", f.addr)
	if err != nil {
		f.t.Fatalf("forwarder: listen again on %s: %v", f.addr, err)
	}
	f.serve(ln)
}

// closedAddr is a loopback address nothing listens on.
func closedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func TestDatabaseUnreachable(t *testing.T) {
	t.Parallel()
	dsn := pgtest.DSN(t) // skips without PostgreSQL
	ctx := context.Background()

	t.Run("at start", func(t *testing.T) {
		dead := closedAddr(t)
		dir := t.TempDir()
		text := fmt.Sprintf(`store:
  driver: postgres
  dsn: {value: "postgres://postgres@%s/test?sslmode=disable"}
admin:
  listen: 127.0.0.1:0
  token: {value: admin-token}
server:
  public_url: http://usher.test
  data_dir: %s
session:
  keys: [%s]
apps:
  - name: app
    kind: generic
    upstream: http://%s
    route: {path_prefix: /}
idps:
  - id: acme
    name: acme IdP
    type: oidc
    domains: [acme.test]
    config:
      issuer: http://%s
      client_id: usher-acme
      client_secret: {value: s3cret}
`, dead, dir, hex.EncodeToString(make([]byte, 32)), dead, dead)
		path := dir + "/usher.yaml"
		if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		cfg, err := loadConfig(path)
		if err != nil {
			t.Fatalf("config: %v", err)
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		aln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		m := &Main{Config: cfg, ConfigPath: path, Log: slog.New(slog.DiscardHandler), NoWorker: true}
		m.Listen(ln)
		m.ListenAdmin(aln)
		start := time.Now()
		err = m.Open(ctx)
		took := time.Since(start)
		if err == nil {
			m.Close()
			t.Fatal("Open succeeded without a database")
		}
		t.Logf("Open failed after %v: %v", took.Round(time.Millisecond), err)
		if took > 10*time.Second {
			t.Errorf("Open took %v to give up on a closed port, want under 10 s", took)
		}
		if msg := err.Error(); !strings.Contains(msg, "unreachable") || !strings.Contains(msg, dead) {
			t.Errorf("error %q should say the database is unreachable and name %s", msg, dead)
		}
		for _, a := range []string{ln.Addr().String(), aln.Addr().String()} {
			if c, err := net.DialTimeout("tcp", a, time.Second); err == nil {
				c.Close()
				t.Errorf("%s still accepts connections after the failed Open", a)
			}
		}
	})

	t.Run("during operation", func(t *testing.T) {
		u, err := url.Parse(dsn)
		if err != nil {
			t.Fatal(err)
		}
		fwd := startForwarder(t, u.Host)
		u.Host = fwd.addr
		e := startEnvWith(t, envOptions{DSN: u.String()})

		alice := e.browser()
		wantStatus(t, e.login(alice, "/", "acme", "alice", "pw-alice"), http.StatusOK)

		fwd.cut()

		// The hot path needs no database: alice keeps working.
		resp := e.get(alice, e.url+"/during-outage")
		wantStatus(t, resp, http.StatusOK)
		if got := bodyOf(resp); got != "app saw alice at /during-outage" {
			t.Fatalf("upstream answered %q", got)
		}

		// A new login cannot be recorded: a clear 503, quickly.
		c := e.browser()
		resp = e.get(c, e.url+"/usher/login?idp=globex&rd=/")
		wantStatus(t, resp, http.StatusFound)
		cb, err := e.idps["globex"].Login(c, resp.Header.Get("Location"), "bob", "pw-bob")
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		resp = e.get(c, cb)
		took := time.Since(start)
		body := bodyOf(resp)
		t.Logf("login callback during the outage answered %d after %v", resp.StatusCode, took.Round(time.Millisecond))
		wantStatus(t, resp, http.StatusServiceUnavailable)
		if !strings.Contains(body, "Request ID") || strings.Contains(body, "goroutine") || strings.Contains(body, "panic") || strings.Contains(body, "pgx") || strings.Contains(body, "127.0.0.1") {
			t.Fatalf("outage page should be short with a request ID, no internals:\n%s", body)
		}
		if took > 10*time.Second {
			t.Errorf("the failed login took %v, want well under the 10 s a browser waits patiently", took)
		}
		wantStatus(t, e.get(c, e.url+"/"), http.StatusFound) // no session was issued

		// Readiness says what is wrong, so a load balancer can tell.
		r, rb := e.adminCall("GET", "/readyz", "")
		if r.StatusCode != http.StatusServiceUnavailable || !strings.Contains(rb, "store") {
			t.Errorf("/readyz during the outage: %d %s", r.StatusCode, rb)
		}

		// The database is back: the pool reconnects and logins work. A
		// pooled connection cut less than a second after its last use is
		// handed out without pgxpool's liveness ping, so each such
		// connection can fail one more login with the same clean 503; the
		// outage here lasts milliseconds, so allow one try per pooled
		// connection before the login must work.
		fwd.restore()
		var failed int
		for {
			c := e.browser()
			resp := e.get(c, e.url+"/usher/login?idp=globex&rd=/")
			wantStatus(t, resp, http.StatusFound)
			cb, err := e.idps["globex"].Login(c, resp.Header.Get("Location"), "bob", "pw-bob")
			if err != nil {
				t.Fatal(err)
			}
			resp = e.get(c, cb)
			if resp.StatusCode == http.StatusFound {
				wantStatus(t, e.get(c, e.url+resp.Header.Get("Location")), http.StatusOK)
				break
			}
			wantStatus(t, resp, http.StatusServiceUnavailable)
			if failed++; failed > 10 { // the pool's MaxConns
				t.Fatalf("%d logins failed after the database came back", failed)
			}
		}
		t.Logf("after the restore, %d login(s) failed on connections cut before the outage", failed)
		if r, rb := e.adminCall("GET", "/readyz", ""); r.StatusCode != http.StatusOK {
			t.Errorf("/readyz after the outage: %d %s", r.StatusCode, rb)
		}
		wantStatus(t, e.get(alice, e.url+"/after"), http.StatusOK)
	})
}

func TestGracefulShutdown(t *testing.T) {
	t.Parallel()
	e := startEnv(t)
	ctx := context.Background()

	// An upstream whose /status answers only when the test says so.
	started, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		once.Do(func() { close(started) })
		<-release
		io.WriteString(w, "slow answer")
	}))
	var releaseOnce sync.Once
	free := func() { releaseOnce.Do(func() { close(release) }) }
	t.Cleanup(slow.Close)
	t.Cleanup(free) // runs before slow.Close, which waits for handlers

	text, err := os.ReadFile(e.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	text = bytes.Replace(text, []byte(e.upstream.srv.URL), []byte(slow.URL), 1)
	if err := os.WriteFile(e.cfgPath, text, 0o600); err != nil {
		t.Fatal(err)
	}
	e.enableReload()
	if err := e.m.Reload(ctx); err != nil {
		t.Fatal(err)
	}

	// /status passes through without a login.
	type answer struct {
		code int
		body string
		err  error
	}
	inflight := make(chan answer, 1)
	go func() {
		resp, err := http.Get(e.url + "/status")
		if err != nil {
			inflight <- answer{err: err}
			return
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		inflight <- answer{resp.StatusCode, string(b), err}
	}()
	select {
	case <-started:
	case a := <-inflight:
		t.Fatalf("request finished before the upstream was released: %+v", a)
	}

	stop, cancel := context.WithCancel(ctx)
	cancel()
	waited := make(chan error, 1)
	go func() { waited <- e.m.Wait(stop) }()

	// Shutdown closes the listeners first: new connections are refused
	// while the request in flight is still being served.
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", e.m.Addr(), time.Second)
		if err != nil {
			break
		}
		c.Close()
		if time.Now().After(deadline) {
			t.Fatal("the public listener still accepts connections 5 s after shutdown began")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if c, err := net.DialTimeout("tcp", e.m.AdminAddr(), time.Second); err == nil {
		c.Close()
		t.Error("the admin listener still accepts connections after shutdown began")
	}
	select {
	case err := <-waited:
		t.Fatalf("Wait returned (%v) while a request was in flight", err)
	case a := <-inflight:
		t.Fatalf("the in-flight request ended before its upstream answered: %+v", a)
	default:
	}

	free()
	a := <-inflight
	if a.err != nil || a.code != http.StatusOK || a.body != "slow answer" {
		t.Fatalf("in-flight request across shutdown: %d %q %v, want 200 \"slow answer\"", a.code, a.body, a.err)
	}
	if err := <-waited; err != nil && !errors.Is(err, http.ErrServerClosed) {
		t.Fatalf("Wait: %v", err)
	}
	if _, err := http.Get(e.url + "/status"); err == nil {
		t.Fatal("a request after shutdown was served")
	}
}

// A reload reaches live sessions: closing an app to an IdP refuses its
// sessions there at once, and removing an IdP sends its people back to
// the login, both without a database call on the request path.
func TestReloadReachesLiveSessions(t *testing.T) {
	t.Parallel()
	e := startEnv(t)
	ctx := context.Background()
	alice, bob := e.browser(), e.browser()
	wantStatus(t, e.login(alice, "/one", "acme", "alice", "pw-alice"), http.StatusOK)
	wantStatus(t, e.login(bob, "/one", "globex", "bob", "pw-bob"), http.StatusOK)

	text, err := os.ReadFile(e.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	e.enableReload()
	rewrite := func(old, new string) {
		t.Helper()
		if !bytes.Contains(text, []byte(old)) {
			t.Fatalf("config lacks %q", old)
		}
		text = bytes.Replace(text, []byte(old), []byte(new), 1)
		if err := os.WriteFile(e.cfgPath, text, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := e.m.Reload(ctx); err != nil {
			t.Fatal(err)
		}
	}

	// acme's people may now enter only "other": alice's session, issued
	// when every app was open, is refused at "app" at once.
	rewrite("  - name: app\n", "  - name: other\n    kind: generic\n    upstream: http://127.0.0.1:1\n    route: {path_prefix: /other}\n  - name: app\n")
	rewrite("  - id: acme\n    name: acme IdP\n", "  - id: acme\n    name: acme IdP\n    mapping:\n      access: {apps: [other]}\n")
	wantStatus(t, e.get(alice, e.url+"/two"), http.StatusForbidden)
	wantStatus(t, e.get(bob, e.url+"/two"), http.StatusOK)

	// globex is gone: bob's session sends him back to the login.
	i := bytes.Index(text, []byte("  - id: globex\n"))
	if i < 0 {
		t.Fatal("no globex block")
	}
	text = text[:i]
	if err := os.WriteFile(e.cfgPath, text, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := e.m.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	resp := e.get(bob, e.url+"/three")
	wantStatus(t, resp, http.StatusFound)
	if loc := resp.Header.Get("Location"); !strings.Contains(loc, "/usher/login") {
		t.Fatalf("bob's session after globex was removed went to %q, want the login", loc)
	}
}

// A logout during a database outage is not undone: the replica that
// signed the person out refuses the cookie at once and says the others
// may not know yet; the revocation survives a restart of that replica
// during the outage, and reaches the other replica when the database is
// back.
func TestLogoutDuringDatabaseOutage(t *testing.T) {
	t.Parallel()
	dsn := pgtest.DSN(t)
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	fwd := startForwarder(t, u.Host)
	u.Host = fwd.addr
	e := startEnvWith(t, envOptions{DSN: u.String()})
	b, urlB := e.replica(t)
	_ = b

	alice := e.browser()
	wantStatus(t, e.login(alice, "/", "acme", "alice", "pw-alice"), http.StatusOK)
	copied := alice.Jar.Cookies(mustURL(e.url))
	onB := e.browser()
	onB.Jar.SetCookies(mustURL(urlB), copied)
	wantStatus(t, e.get(onB, urlB+"/before"), http.StatusOK)

	resp := e.get(alice, e.url+"/usher/logout")
	body := bodyOf(resp)
	i := strings.Index(body, `name="csrf" value="`)
	if i < 0 {
		t.Fatalf("logout page has no CSRF token: %s", body)
	}
	token := body[i+len(`name="csrf" value="`):]
	token = token[:strings.IndexByte(token, '"')]

	fwd.cut()
	start := time.Now()
	resp, err = alice.PostForm(e.url+"/usher/logout", url.Values{"csrf": {token}})
	if err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	body = bodyOf(resp)
	wantStatus(t, resp, http.StatusOK)
	if !strings.Contains(body, "signed out of usher on this server") || !strings.Contains(body, "other servers") {
		t.Fatalf("the logout page does not say the other replicas may not know yet:\n%s", body)
	}
	if took > 10*time.Second {
		t.Errorf("logout took %v during the outage", took)
	}
	replay := func(base string) *http.Response {
		c := e.browser()
		c.Jar.SetCookies(mustURL(base), copied)
		return e.get(c, base+"/after")
	}
	wantStatus(t, replay(e.url), http.StatusFound) // this replica refuses it at once

	// Replica A restarts while the database is still away: the logout is
	// not forgotten.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a2 := &Main{Config: e.cfg, Log: slog.New(slog.NewTextHandler(io.Discard, nil)), NoWorker: true, RevocationPoll: 200 * time.Millisecond}
	a2.Listen(ln)
	// The store is unreachable, so a cold start cannot open it; the
	// spool file is what carries the revocation over. Read it as the
	// restarted replica would, before the database is back.
	spool := filepath.Join(e.cfg.Server.DataDir, "revocations.pending")
	if _, err := os.Stat(spool); err != nil {
		t.Fatalf("no pending revocation kept on disk: %v", err)
	}
	e.m.Close()

	fwd.restore()
	if err := a2.Open(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a2.Close() })
	urlA2 := "http://" + ln.Addr().String()
	wantStatus(t, replay(urlA2), http.StatusFound)

	// Within a few polls, replica B refuses the copied cookie too.
	deadline := time.Now().Add(15 * time.Second)
	for replay(urlB).StatusCode != http.StatusFound {
		if time.Now().After(deadline) {
			t.Fatal("replica B still accepts the signed-out cookie 15 s after the database came back")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if _, err := os.Stat(spool); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the spool file stays after the revocation reached the store: %v", err)
	}
}
