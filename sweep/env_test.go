package sweep

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/usherhq/usher/config"
	"github.com/usherhq/usher/jit"
	"github.com/usherhq/usher/store"
	"github.com/usherhq/usher/store/sqlite"
	"github.com/usherhq/usher/targets"
	"github.com/usherhq/usher/targets/atlassiantest"
	"github.com/usherhq/usher/targets/jira"
)

// The SQLite store is what the sweeper runs on in production.
var _ Store = (*sqlite.Store)(nil)

// t0 is the fixed clock of every test.
var t0 = time.Date(2025, 6, 1, 3, 0, 0, 0, time.UTC)

const putUser = "PUT /rest/api/2/user"

// person is one fixture user.
type person struct {
	name      string
	groups    []string
	lastLogin time.Time // zero: never logged in
	created   time.Time // zero: t0 - 10 days
	scim      string    // "active", "inactive", "" = no pushed SCIM user
	attrs     map[string]any
	expiry    time.Time
	local     bool // made by hand in the app: no binding, no app state
	managed   []string
}

func sub(name string) string { return "sub-" + name }

// env is a real SQLite store and the real Jira adapter over the emulator.
type env struct {
	st   *sqlite.Store
	srv  *atlassiantest.Server
	apps map[string]targets.Target

	mu      sync.Mutex
	revoked []string
	// onRevoke runs inside RevokeIdentity (after recording), when set.
	onRevoke func(n int)
}

func newEnv(t testing.TB, people []person) *env {
	t.Helper()
	return newEnvIn(t, t.TempDir(), people)
}

// newEnvIn keeps the database in dir.
func newEnvIn(t testing.TB, dir string, people []person) *env {
	t.Helper()
	ctx := context.Background()
	st, err := sqlite.Open(ctx, filepath.Join(dir, "usher.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	srv := newJiraEmulator()
	hs := httptest.NewServer(srv)
	t.Cleanup(hs.Close)
	e := &env{st: st, srv: srv, apps: map[string]targets.Target{"jira": openJira(t, hs.URL, hs.Client())}}
	e.add(t, people...)
	srv.ResetCalls()
	return e
}

// newJiraEmulator is the emulated Jira every test sweeps.
func newJiraEmulator() *atlassiantest.Server {
	return atlassiantest.New(atlassiantest.Jira, atlassiantest.Options{
		AdminUser: "sysadmin", AdminPassword: "pw",
		Groups: []string{"jira-administrators", "service-accounts", "jira-devs", "jira-hand"},
	})
}

// openJira is the real Jira adapter over the emulator at base.
func openJira(t testing.TB, base string, client *http.Client) targets.Target {
	t.Helper()
	u, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	cfg := &jira.Config{Conn: targets.Conn{Username: "sysadmin", Password: config.SecretValue("pw"), Concurrency: 16}}
	jd, err := cfg.Open("jira", targets.Deps{Upstream: u, HTTP: client})
	if err != nil {
		t.Fatal(err)
	}
	return jd
}

func (e *env) add(t testing.TB, people ...person) {
	t.Helper()
	for _, p := range people {
		e.srv.AddUser(appUser(p))
		seed(t, e.st, p)
	}
}

// appUser is p as the emulator holds it.
func appUser(p person) atlassiantest.User {
	return atlassiantest.User{Name: p.name, DisplayName: p.name, Email: p.name + "@example.com",
		Active: true, Groups: append([]string{"jira-software-users"}, p.groups...)}
}

// seed records in st what usher knows of p: binding, login, app state,
// pushed SCIM user, expiry and managed groups.
func seed(t testing.TB, st *sqlite.Store, p person) {
	t.Helper()
	if p.local {
		return
	}
	ctx := context.Background()
	created := p.created
	if created.IsZero() {
		created = t0.Add(-10 * 24 * time.Hour)
	}
	must(t, bind(ctx, st, p.name, created))
	if !p.lastLogin.IsZero() {
		must(t, st.RecordLogin(ctx, "okta", sub(p.name), p.lastLogin))
	}
	must(t, st.PutAppState(ctx, store.AppState{App: "jira", Username: p.name, IdP: "okta", Subject: sub(p.name),
		Hash: "h", SyncedAt: created}))
	if p.scim != "" {
		res := map[string]any{"userName": p.name, "active": p.scim == "active"}
		for k, v := range p.attrs {
			res[k] = v
		}
		raw, _ := json.Marshal(res)
		must(t, st.PutSCIMUser(ctx, store.SCIMUser{IdP: "okta", ID: "id-" + p.name, ExternalID: "ext-" + p.name,
			UserName: p.name, Subject: sub(p.name), Active: p.scim == "active", Resource: raw}))
	}
	if !p.expiry.IsZero() {
		must(t, st.SetAccessExpiry(ctx, "okta", sub(p.name), p.expiry))
	}
	for _, g := range p.managed {
		must(t, st.AddManaged(ctx, store.Membership{App: "jira", Username: p.name, Group: g, IdP: "okta", Rule: "map[0]"}))
	}
}

func bind(ctx context.Context, st *sqlite.Store, name string, created time.Time) error {
	_, err := st.Bind(ctx, store.Binding{IdP: "okta", Subject: sub(name), Username: name, CreatedAt: created})
	return err
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// RevokeIdentity stands in for the session layer.
func (e *env) RevokeIdentity(_ context.Context, idp, subject string) error {
	e.mu.Lock()
	e.revoked = append(e.revoked, idp+"/"+subject)
	n := len(e.revoked)
	hook := e.onRevoke
	e.mu.Unlock()
	if hook != nil {
		hook(n)
	}
	return nil
}

func (e *env) deps() Deps {
	now := func() time.Time { return t0 }
	log := slog.New(slog.DiscardHandler)
	lc := &jit.Lifecycle{Apps: e.apps, Store: e.st, Sessions: e, Audit: &jit.AuditLog{Store: e.st, Log: log, Now: now}, Now: now, Log: log}
	return Deps{Store: e.st, Apps: e.apps, Remover: lc, Now: now, Log: log, Owner: "test", Lease: time.Minute}
}

func (e *env) sweeper(t testing.TB, p Policy, deps ...Deps) *Sweeper {
	t.Helper()
	d := e.deps()
	if len(deps) > 0 {
		d = deps[0]
	}
	s, err := New(p, d)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func (e *env) active(t testing.TB, name string) bool {
	t.Helper()
	u, ok := e.srv.User(name)
	if !ok {
		t.Fatalf("user %s is gone from the emulator", name)
	}
	return u.Active
}

func (e *env) audit(t testing.TB) []store.Event {
	t.Helper()
	evs, err := e.st.Audit(context.Background(), store.AuditFilter{Limit: 10000})
	must(t, err)
	var out []store.Event
	for _, ev := range evs {
		// One entry per app change; the lifecycle's per-person
		// "deprovision" entries are not counted.
		if ev.Actor == "sweep:leavers" && ev.Action != string(jit.ActDeprovision) {
			out = append(out, ev)
		}
	}
	return out
}

func (e *env) lastRun(t testing.TB) store.SweepRun {
	t.Helper()
	runs, err := e.st.SweepRuns(context.Background(), 1)
	must(t, err)
	if len(runs) == 0 {
		t.Fatal("no sweep run recorded")
	}
	return runs[0]
}

func policy() Policy {
	return Policy{
		Name: "leavers", IdPs: []string{"okta"},
		Sources:         Sources{SCIM: true, InactiveDays: 90, EndDateClaim: "contractEndDate", AccessExpiry: true},
		ProtectedUsers:  []string{"admin", "svc-*"},
		ProtectedGroups: []string{"jira-administrators", "service-accounts"},
		MaxShare:        1,
	}
}

// logBuffer captures log output for assertions.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// scimServer is a SCIM service provider serving users from a list, with
// knobs for the ways a pull goes wrong.
type scimServer struct {
	users  []map[string]any
	status int // non-zero: answer every request with it
	// total overrides totalResults (a truncated listing); serve caps how
	// many users are ever served; perPage overrides itemsPerPage.
	total, serve, perPage int
	token                 string
}

func (s *scimServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/scim/v2/Users" || r.Header.Get("Authorization") != "Bearer "+s.token {
		http.Error(w, "unexpected request", http.StatusTeapot)
		return
	}
	if s.status != 0 {
		http.Error(w, `{"detail":"boom"}`, s.status)
		return
	}
	start, err1 := strconv.Atoi(r.URL.Query().Get("startIndex"))
	count, err2 := strconv.Atoi(r.URL.Query().Get("count"))
	if err := errors.Join(err1, err2); err != nil || start < 1 {
		http.Error(w, "bad paging", http.StatusBadRequest)
		return
	}
	avail := len(s.users)
	if s.serve > 0 {
		avail = min(avail, s.serve)
	}
	lo := min(start-1, avail)
	hi := min(lo+count, avail)
	total := len(s.users)
	if s.total > 0 {
		total = s.total
	}
	per := hi - lo
	if s.perPage > 0 {
		per = s.perPage
	}
	w.Header().Set("Content-Type", "application/scim+json")
	json.NewEncoder(w).Encode(map[string]any{
		"schemas":      []string{"urn:ietf:params:scim:api:messages:2.0:ListResponse"},
		"totalResults": total, "startIndex": start, "itemsPerPage": per,
		"Resources": s.users[lo:hi],
	})
}

func scimUsers(names ...string) []map[string]any {
	var out []map[string]any
	for _, n := range names {
		out = append(out, map[string]any{"id": "dir-" + n, "externalId": sub(n), "userName": n + "@example.com", "active": true})
	}
	return out
}
