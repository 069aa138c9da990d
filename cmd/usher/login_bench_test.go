package main

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/usherhq/usher/config"
	"github.com/usherhq/usher/jit"
	"github.com/usherhq/usher/providers"
	"github.com/usherhq/usher/providers/oidc"
	"github.com/usherhq/usher/proxy"
	"github.com/usherhq/usher/session"
	"github.com/usherhq/usher/store"
	"github.com/usherhq/usher/store/postgres"
	"github.com/usherhq/usher/store/postgres/pgtest"
	"github.com/usherhq/usher/store/sqlite"
	"github.com/usherhq/usher/targets"
	"github.com/usherhq/usher/targets/atlassiantest"
	"github.com/usherhq/usher/targets/confluence"
	"github.com/usherhq/usher/targets/jira"
)

// benchIdP vouches for whoever the callback names: the protocol exchanges
// have their own benchmarks (providers/oidc, providers/saml); these
// measure what usher does with a verified identity. The callback's "who"
// is the person (subject, username and e-mail derive from it) and
// "groups" their IdP groups, comma-separated.
type benchIdP struct{}

func (benchIdP) ID() string   { return "okta" }
func (benchIdP) Type() string { return "oidc" }
func (benchIdP) Begin(_ context.Context, flowID, _ string) (*providers.Challenge, error) {
	return &providers.Challenge{URL: "https://idp.example/authorize?state=" + flowID, State: []byte(flowID)}, nil
}
func (benchIdP) FlowID(r *http.Request) string { return r.URL.Query().Get("state") }
func (benchIdP) Finish(_ context.Context, r *http.Request, state []byte) (*providers.Result, error) {
	q := r.URL.Query()
	if string(state) != q.Get("state") {
		return nil, providers.Refused(providers.ReasonState, "state")
	}
	who := q.Get("who")
	return &providers.Result{Identity: providers.Identity{IdP: "okta", Subject: "00u-" + who, Claims: map[string][]string{
		"preferred_username": {who}, "email": {who + "@example.com"}, "name": {"Person " + who},
		"groups": strings.Split(q.Get("groups"), ","),
	}}}, nil
}

// groupSets are the IdP groups a one-change login alternates between:
// each switch moves one group (team-a ↔ team-b) in both apps, which is one
// add and one remove per app.
var groupSets = [2]string{"engineering,team-a", "engineering,team-b"}

// loginParallelism is how many logins run at once per GOMAXPROCS in
// BenchmarkLogin: logins wait on the disk and the apps, so the two cores
// of a small host keep many in flight.
const loginParallelism = 8

// BenchmarkLogin measures whole logins through usher's handler (start,
// callback, mapping, binding, provisioning into emulated Jira and
// Confluence over loopback HTTP, audit, session), wired as `usher serve`
// wires them: last-login times coalesced, a sign-in's own audit record
// batched, each app change recorded as an intent first. Logins run in
// parallel (loginParallelism × GOMAXPROCS at once):
//
//   - backend: sqlite, postgres
//   - mode: "unchanged" hits the fast path (no app call); "stale" is an
//     unchanged profile applied longer ago than the fast path allows
//     (provisioning.fast_path; a person's first login of the day), which
//     reads each app and changes nothing; "one-change" moves one group
//     each time (reads plus one add and one remove per app)
//   - who: "people" gives every parallel client a person of its own (the
//     per-person lock never serialises them); "one-person" is everybody
//     logging in as the same person at once
//
// logins/s is the figure the targets name; on a machine shared
// with other work it moves with that work, so cpu-µs/login (this
// process's CPU time per login: usher, the emulated apps and the
// harness, not PostgreSQL's server) is the figure to compare runs by.
// Run with
//
//	go test ./cmd/usher -run '^$' -bench BenchmarkLogin -benchtime 3s
func BenchmarkLogin(b *testing.B) {
	for _, backend := range []string{"sqlite", "postgres"} {
		for _, mode := range []string{"unchanged", "stale", "one-change"} {
			for _, who := range []string{"people", "one-person"} {
				b.Run(backend+"/"+mode+"/"+who, func(b *testing.B) {
					opts := loginEnvOptions{}
					if mode == "stale" {
						opts.FastPath = time.Nanosecond
					}
					env := newLoginEnv(b, backend, opts)
					clients := loginParallelism * runtime.GOMAXPROCS(0)
					people := clients
					if who == "one-person" {
						people = 1
					}
					names := env.people(b, people, groupSets[0])
					var next, flips atomic.Int64
					b.SetParallelism(loginParallelism)
					b.ReportAllocs()
					b.ResetTimer()
					cpu := selfCPU()
					b.RunParallel(func(pb *testing.PB) {
						me := names[int(next.Add(1)-1)%len(names)]
						mine := 0 // this client's logins, for its person's groups
						for pb.Next() {
							groups := groupSets[0]
							switch {
							case mode != "one-change":
							case who == "one-person":
								groups = groupSets[flips.Add(1)%2]
							default:
								mine++
								groups = groupSets[mine%2]
							}
							if err := env.login(me, groups); err != nil {
								b.Error(err)
								return
							}
						}
					})
					b.StopTimer()
					b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "logins/s")
					b.ReportMetric(float64((selfCPU()-cpu).Microseconds())/float64(b.N), "cpu-µs/login")
				})
			}
		}
	}
}

// loginEnv is usher's login path over a store and two emulated apps, as
// `usher serve` wires it, with its background writers running.
type loginEnv struct {
	h    http.Handler
	emus []*atlassiantest.Server
	lc   *jit.Lifecycle
}

type loginEnvOptions struct {
	// Concurrency caps requests in flight per app (the targets' default
	// when 0).
	Concurrency int
	// PGConns caps PostgreSQL's pool (store.max_conns; its default when
	// 0).
	PGConns int32
	// FastPath is provisioning.fast_path; an hour when 0.
	FastPath time.Duration
}

func newLoginEnv(b testing.TB, backend string, opts loginEnvOptions) *loginEnv {
	st := openBenchStore(b, backend, opts.PGConns)
	env := &loginEnv{}
	dirs := map[string]targets.Target{}
	for _, k := range []atlassiantest.Kind{"jira", "confluence"} {
		emu := atlassiantest.New(k, atlassiantest.Options{
			AdminUser: "admin", AdminPassword: "pw", Groups: []string{"jira-developers", "team-a", "team-b", "usher-users"},
		})
		env.emus = append(env.emus, emu)
		srv := httptest.NewServer(emu)
		b.Cleanup(srv.Close)
		u, _ := url.Parse(srv.URL)
		conn := targets.Conn{Username: "admin", Password: config.SecretValue("pw"), Concurrency: opts.Concurrency}
		var tc targets.Config = &jira.Config{Conn: conn}
		if k == "confluence" {
			tc = &confluence.Config{Conn: conn}
		}
		d, err := tc.Open(string(k), targets.Deps{Upstream: u})
		if err != nil {
			b.Fatal(err)
		}
		dirs[string(k)] = d
	}
	var m config.Mapping
	m.Groups.Map = []config.GroupMap{{IdPGroup: "engineering", Groups: config.AppGroups{"jira": {"jira-developers"}}}}
	m.Groups.Rules = []config.GroupRule{{Match: "^team-(.+)$", Groups: config.AppGroups{"*": {"team-$1"}}}}
	m.Groups.Defaults = config.AppGroups{"*": {"usher-users"}}
	mapper, err := jit.Compile(m, jit.Scope{IdP: "okta", Claims: new(oidc.Config).ClaimDefaults(), Apps: []string{"jira", "confluence"}, Privileged: privilegedGroups(&config.Config{})})
	if err != nil {
		b.Fatal(err)
	}
	codec, err := session.NewCodec([][]byte{[]byte("0123456789abcdef0123456789abcdef")}, session.Options{Name: "usher_session", Idle: time.Hour, Absolute: 8 * time.Hour})
	if err != nil {
		b.Fatal(err)
	}
	log := slog.New(slog.DiscardHandler)
	audit := &jit.AuditLog{Store: st, Log: log}
	logins := &jit.LoginTimes{Store: st, Log: log}
	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { audit.Run(ctx) })
	wg.Go(func() { logins.Run(ctx) })
	b.Cleanup(func() { stop(); wg.Wait() })
	env.lc = &jit.Lifecycle{Mappers: map[string]*jit.Mapper{"okta": mapper}, Apps: dirs, Store: st, Audit: audit, Logins: logins,
		Owner: "bench", FastPath: cmp.Or(opts.FastPath, time.Hour), Deadline: 5 * time.Second, Log: log, QueueWhenDown: true, CreateGroups: true}
	public, _ := url.Parse("http://usher.test")
	env.h = proxy.New(proxy.Options{
		PublicURL: public, Codec: codec, Lifecycle: env.lc, Audit: audit,
		IdPs: []proxy.IdP{{Provider: benchIdP{}, Name: "Okta", Mapper: mapper}},
		Apps: []proxy.App{{Name: "jira", Route: config.Route{PathPrefix: "/"}}, {Name: "confluence", Route: config.Route{PathPrefix: "/wiki"}}},
		Log:  log,
	})
	return env
}

// people logs n people in for the first time (which creates them in both
// apps), a few at a time, and returns their names.
func (e *loginEnv) people(b testing.TB, n int, groups string) []string {
	names := make([]string, n)
	errs := make(chan error, n)
	sem := make(chan struct{}, 8)
	var wg sync.WaitGroup
	for i := range names {
		names[i] = fmt.Sprintf("user%03d", i)
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			if err := e.login(names[i], groups); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
	return names
}

// login runs GET /usher/login?idp=okta then the callback with its flow
// cookie, as who with groups, and checks a session cookie came back.
func (e *loginEnv) login(who, groups string) error {
	w := httptest.NewRecorder()
	e.h.ServeHTTP(w, httptest.NewRequest("GET", "http://usher.test/usher/login?idp=okta&rd=/", nil))
	if w.Code != http.StatusFound {
		return fmt.Errorf("login start: %d %s", w.Code, w.Body)
	}
	loc, _ := url.Parse(w.Header().Get("Location"))
	q := url.Values{"state": {loc.Query().Get("state")}, "who": {who}, "groups": {groups}}
	r := httptest.NewRequest("GET", "http://usher.test/usher/oidc/okta/callback?"+q.Encode(), nil)
	for _, c := range w.Result().Cookies() {
		r.AddCookie(c)
	}
	w = httptest.NewRecorder()
	e.h.ServeHTTP(w, r)
	if w.Code != http.StatusFound {
		body, _ := io.ReadAll(w.Body)
		return fmt.Errorf("callback for %s: %d %s", who, w.Code, body)
	}
	for _, c := range w.Result().Cookies() {
		if strings.HasSuffix(c.Name, "usher_session") && c.Value != "" {
			return nil
		}
	}
	return fmt.Errorf("callback for %s: no session cookie", who)
}

func openBenchStore(b testing.TB, backend string, pgConns int32) store.Store {
	ctx := context.Background()
	var st store.Store
	var err error
	if backend == "sqlite" {
		st, err = sqlite.Open(ctx, b.TempDir()+"/usher.db", sqlite.Options{})
	} else {
		st, err = postgres.Open(ctx, pgtest.DSN(b), postgres.Options{MaxConns: pgConns})
	}
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { st.Close() })
	return st
}
