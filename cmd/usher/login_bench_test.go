package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
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

// fixedIdP vouches for whoever it is told to: the protocol exchanges have
// their own benchmarks (providers/oidc, providers/saml); this one measures
// what usher does with a verified identity.
type fixedIdP struct{ id providers.Identity }

func (p *fixedIdP) ID() string   { return "okta" }
func (p *fixedIdP) Type() string { return "oidc" }
func (p *fixedIdP) Begin(_ context.Context, flowID, _ string) (*providers.Challenge, error) {
	return &providers.Challenge{URL: "https://idp.example/authorize?state=" + flowID, State: []byte(flowID)}, nil
}
func (p *fixedIdP) FlowID(r *http.Request) string { return r.URL.Query().Get("state") }
func (p *fixedIdP) Finish(_ context.Context, r *http.Request, state []byte) (*providers.Result, error) {
	if string(state) != r.URL.Query().Get("state") {
		return nil, providers.Refused(providers.ReasonState, "state")
	}
	return &providers.Result{Identity: p.id}, nil
}

// BenchmarkLogin measures whole logins through usher's handler (start,
// callback, mapping, binding, provisioning into emulated Jira and
// Confluence over loopback HTTP, audit, session) on SQLite and on
// PostgreSQL: "unchanged" hits the fast path (no app call), "one-change"
// moves one group each time (reads plus one add and one remove per app).
func BenchmarkLogin(b *testing.B) {
	for _, backend := range []string{"sqlite", "postgres"} {
		for _, mode := range []string{"unchanged", "one-change"} {
			b.Run(backend+"/"+mode, func(b *testing.B) {
				st := openBenchStore(b, backend)
				h, idp := loginHandler(b, st)
				groups := [][]string{{"engineering", "team-a"}, {"engineering", "team-b"}}
				idp.id.Claims["groups"] = groups[0]
				login(b, h) // first login creates the user
				b.ReportAllocs()
				b.ResetTimer()
				for i := 0; b.Loop(); i++ {
					if mode == "one-change" {
						idp.id.Claims["groups"] = groups[(i+1)%2]
					}
					login(b, h)
				}
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "logins/s")
			})
		}
	}
}

func openBenchStore(b *testing.B, backend string) store.Store {
	ctx := context.Background()
	var st store.Store
	var err error
	if backend == "sqlite" {
		st, err = sqlite.Open(ctx, b.TempDir()+"/usher.db", sqlite.Options{})
	} else {
		st, err = postgres.Open(ctx, pgtest.DSN(b), postgres.Options{})
	}
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { st.Close() })
	return st
}

func loginHandler(b *testing.B, st store.Store) (*proxy.Handler, *fixedIdP) {
	dirs := map[string]targets.Target{}
	for _, k := range []atlassiantest.Kind{"jira", "confluence"} {
		emu := httptest.NewServer(atlassiantest.New(k, atlassiantest.Options{
			AdminUser: "admin", AdminPassword: "pw", Groups: []string{"jira-developers", "team-a", "team-b", "usher-users"},
		}))
		b.Cleanup(emu.Close)
		u, _ := url.Parse(emu.URL)
		conn := targets.Conn{Username: "admin", Password: config.SecretValue("pw")}
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
	idp := &fixedIdP{id: providers.Identity{IdP: "okta", Subject: "00u-alice", Claims: map[string][]string{
		"preferred_username": {"alice"}, "email": {"alice@example.com"}, "name": {"Alice Archer"},
	}}}
	log := slog.New(slog.DiscardHandler)
	audit := &jit.AuditLog{Store: st, Log: log}
	lc := &jit.Lifecycle{Mappers: map[string]*jit.Mapper{"okta": mapper}, Apps: dirs, Store: st, Audit: audit,
		FastPath: time.Hour, Log: log, QueueWhenDown: true}
	public, _ := url.Parse("http://usher.test")
	h := proxy.New(proxy.Options{
		PublicURL: public, Codec: codec, Lifecycle: lc, Audit: audit,
		IdPs: []proxy.IdP{{Provider: idp, Name: "Okta", Mapper: mapper}},
		Apps: []proxy.App{{Name: "jira", Route: config.Route{PathPrefix: "/"}}, {Name: "confluence", Route: config.Route{PathPrefix: "/wiki"}}},
		Log:  log,
	})
	return h, idp
}

// login runs GET /usher/login?idp=okta then the callback with its flow
// cookie, and checks a session cookie came back.
func login(b *testing.B, h http.Handler) {
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest("GET", "http://usher.test/usher/login?idp=okta&rd=/", nil))
	if w.Code != http.StatusFound {
		b.Fatalf("login start: %d %s", w.Code, w.Body)
	}
	loc, _ := url.Parse(w.Header().Get("Location"))
	r := httptest.NewRequest("GET", "http://usher.test/usher/oidc/okta/callback?state="+loc.Query().Get("state"), nil)
	for _, c := range w.Result().Cookies() {
		r.AddCookie(c)
	}
	w = httptest.NewRecorder()
	h.ServeHTTP(w, r)
	if w.Code != http.StatusFound {
		body, _ := io.ReadAll(w.Body)
		b.Fatalf("callback: %d %s", w.Code, body)
	}
	if len(w.Result().Cookies()) == 0 {
		b.Fatal(fmt.Errorf("no session cookie"))
	}
}
