package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/usherhq/usher/directory/graph/graphtest"
	"github.com/usherhq/usher/providers/oidc/oidctest"
	"github.com/usherhq/usher/store"
)

// entra is acme's people in an emulated Entra ID (Microsoft Graph): the
// subject is employeeId (what acme's logins carry as sub), the username
// onPremisesSamAccountName, the scope the staff group.
type entra struct {
	srv    *graphtest.Server
	groups map[string]string // name → id
	users  map[string]string // name → id
}

func startEntra(t *testing.T) *entra {
	t.Helper()
	srv := graphtest.New(t, nil).Start()
	srv.AddSecretApp("usher-app", "graph-secret")
	x := &entra{srv: srv, groups: map[string]string{}, users: map[string]string{}}
	for _, g := range []string{"staff", "engineering", "support"} {
		x.groups[g] = srv.AddGroup(graphtest.Group{DisplayName: g, SecurityEnabled: true})
	}
	return x
}

func (x *entra) add(name, display string, groups ...string) {
	id := x.srv.AddUser(graphtest.User{
		UserPrincipalName: name + "@acme.test", Mail: name + "@acme.test", DisplayName: display, AccountEnabled: true,
		Props: map[string]any{"employeeId": "00u-" + name, "onPremisesSamAccountName": name, "department": "dept-" + name},
	})
	x.users[name] = id
	for _, g := range groups {
		x.srv.AddMember(x.groups[g], id)
	}
}

func (x *entra) config(sweepShare string) string {
	return fmt.Sprintf(`directories:
  - name: entra
    type: graph
    idp: acme
    automatic: true
    group_values: names
    claims: {preferred_username: onPremisesSamAccountName}
    config:
      tenant_id: %s
      client_id: usher-app
      client_secret: {value: graph-secret}
      login_url: %s
      graph_url: %s
      subject_attribute: employeeId
      groups: [staff]
      attributes: [onPremisesSamAccountName, department]
      page_size: 2
      max_wait: 1ms
sweeps:
  - name: entra-leavers
    idps: [acme]
    sources: {directory: entra}
    max_share: %s
`, x.srv.Tenant, x.srv.URL, x.srv.URL, sweepShare)
}

// TestDirectorySyncEndToEnd: people created in Entra exist in the apps
// with their mapped groups before they ever log in; one moved out of a
// synced group loses exactly the managed membership; one disabled is
// deactivated by the next sweep, and comes back when enabled again; one
// deleted while the pull fails is not touched, under every fault the
// emulator has; group overage at login is resolved through Graph.
func TestDirectorySyncEndToEnd(t *testing.T) {
	t.Parallel()
	x := startEntra(t)
	x.add("alice", "Alice Archer", "staff", "engineering")
	x.add("zoe", "Zoe Zimmer", "staff", "engineering")
	x.add("yann", "Yann Young", "staff", "support")
	x.add("walt", "Walt Wood", "staff")
	x.add("vera", "Vera Vogel", "staff")
	x.add("olga", "Olga Orr", "staff", "engineering")
	x.add("otto", "Otto Outside") // not in staff: out of scope
	e := startEnvWith(t, envOptions{Apps: true, Mapping: jitMapping, Extra: x.config("0.5")})
	ctx := context.Background()
	inScope := []string{"alice", "olga", "vera", "walt", "yann", "zoe"}

	// usher check names the directory and its schedule.
	if code, out, errOut := runCLI(t, "check", "--config", e.cfgPath); code != 0 || !strings.Contains(out, "entra  graph  idp acme  by hand only") {
		t.Fatalf("check: exit %d\n%s\n%s", code, out, errOut)
	}

	// A dry run says who would be created and changes nothing.
	code, out, errOut := runCLI(t, "sync", "--config", e.cfgPath, "--dry-run", "--json")
	if code != 0 {
		t.Fatalf("sync --dry-run: exit %d: %s", code, errOut)
	}
	var dry struct {
		DryRun   bool `json:"dry_run"`
		Complete bool
		People   int
		Created  int
	}
	if err := json.Unmarshal([]byte(out), &dry); err != nil || !dry.DryRun || !dry.Complete || dry.People != 6 || dry.Created != 6 {
		t.Fatalf("dry run %+v (%v):\n%s", dry, err, out)
	}
	for _, s := range e.apps {
		if _, ok := s.User("zoe"); ok {
			t.Fatalf("%s: the dry run created zoe", s.Kind())
		}
	}

	// The sync: everyone in scope exists in every app, with the mapped
	// groups, before any login.
	code, out, errOut = runCLI(t, "sync", "--config", e.cfgPath)
	if code != 0 || !strings.Contains(out, "created 6") {
		t.Fatalf("sync: exit %d\n%s\n%s", code, out, errOut)
	}
	for name, want := range map[string]map[string][]string{
		"zoe":  {"jira": {"jira-developers", "jira-software-users", "usher-users"}, "bitbucket": {"developers", "stash-users", "usher-users"}},
		"yann": {"jira": {"jira-software-users", "support-team", "usher-users"}, "bitbucket": {"stash-users", "support-team", "usher-users"}},
	} {
		for app, groups := range want {
			if got := groupsOf(t, e.apps[app], name); !slices.Equal(got, groups) {
				t.Errorf("%s in %s: %v, want %v", name, app, got, groups)
			}
		}
	}
	if u, ok := e.apps["jira"].User("zoe"); !ok || !u.Active || u.DisplayName != "Zoe Zimmer" || u.Email != "zoe@acme.test" {
		t.Errorf("zoe in jira: %+v", u)
	}
	if _, ok := e.apps["jira"].User("otto"); ok {
		t.Error("otto, outside the scope, was created")
	}
	if b, err := e.m.store.Binding(ctx, "acme", "00u-zoe"); err != nil || !b.LastLogin.IsZero() {
		t.Errorf("zoe's binding %+v, %v: want bound, never logged in", b, err)
	}

	// zoe leaves engineering; an admin had given her a group by hand.
	if err := e.m.gen.Load().dirs["jira"].AddToGroup(ctx, "zoe", "hand-picked"); err != nil {
		t.Fatal(err)
	}
	x.srv.RemoveMember(x.groups["engineering"], x.users["zoe"])
	e.resetCalls()
	if code, out, errOut := runCLI(t, "sync", "--config", e.cfgPath, "--delta"); code != 0 || !strings.Contains(out, "delta sync") || !strings.Contains(out, "updated 1") {
		t.Fatalf("delta sync: exit %d\n%s\n%s", code, out, errOut)
	}
	if got, want := groupsOf(t, e.apps["jira"], "zoe"), []string{"hand-picked", "jira-software-users", "usher-users"}; !slices.Equal(got, want) {
		t.Errorf("zoe in jira after leaving engineering: %v, want %v", got, want)
	}
	if got := groupsOf(t, e.apps["bitbucket"], "zoe"); slices.Contains(got, "developers") {
		t.Errorf("zoe in bitbucket kept developers: %v", got)
	}

	// alice logs in for the first time: the account the sync made is hers.
	wantStatus(t, e.login(e.browser(), "/jira/", "acme", "alice", "pw-alice"), http.StatusOK)
	e.settle()
	if b, err := e.m.store.Binding(ctx, "acme", "00u-alice"); err != nil || b.Username != "alice" || b.LastLogin.IsZero() {
		t.Errorf("alice after her login: %+v %v", b, err)
	}

	// Group overage at login: olga's token says her groups did not fit;
	// Graph says she is in engineering.
	e.idps["acme"].SetUser(oidctest.User{Subject: "00u-olga", Username: "olga", Password: "pw-olga", Email: "olga@acme.test", Name: "Olga Orr",
		Claims: map[string]any{"oid": x.users["olga"], "_claim_names": map[string]any{"groups": "src1"},
			"_claim_sources": map[string]any{"src1": map[string]any{"endpoint": "https://graph.windows.net/t/users/x/getMemberObjects"}}}})
	if err := e.m.gen.Load().dirs["jira"].RemoveFromGroup(ctx, "olga", "jira-developers"); err != nil {
		t.Fatal(err)
	}
	wantStatus(t, e.login(e.browser(), "/jira/", "acme", "olga", "pw-olga"), http.StatusOK)
	if got := groupsOf(t, e.apps["jira"], "olga"); !slices.Contains(got, "jira-developers") {
		t.Errorf("olga after an overage login: %v, want jira-developers through Graph", got)
	}
	x.srv.RemoveMember(x.groups["engineering"], x.users["olga"])
	wantStatus(t, e.login(e.browser(), "/jira/", "acme", "olga", "pw-olga"), http.StatusOK)
	if got := groupsOf(t, e.apps["jira"], "olga"); slices.Contains(got, "jira-developers") {
		t.Errorf("olga left engineering, yet an overage login kept jira-developers: %v (overage must not mean add-only)", got)
	}

	// walt is disabled in Entra; vera is deleted while every pull fails.
	x.srv.UpdateUser(x.users["walt"], map[string]any{"accountEnabled": false})
	x.srv.HardDeleteUser(x.users["vera"])
	for _, f := range []graphtest.Fault{
		{Method: "GET", Path: "/v1.0/users", Page: 2, Status: http.StatusTooManyRequests, RetryAfter: "3600"}, // throttled to a stop
		{Method: "GET", Path: "/v1.0/users", Page: 2, Status: http.StatusServiceUnavailable},                  // a failing page
		{Method: "GET", Path: "/v1.0/users", Page: 2, Truncate: true},                                         // a truncated listing
		{Method: "GET", Path: "/v1.0/groups/*", Status: http.StatusGatewayTimeout},                            // memberships unreadable
	} {
		x.srv.Inject(f)
		code, out, errOut := runCLI(t, "sweep", "--config", e.cfgPath)
		x.srv.ClearFaults()
		if code == 0 || !strings.Contains(out, "BLOCKED") || !strings.Contains(out, "did not complete") {
			t.Errorf("sweep under fault %+v: exit %d, want blocked\n%s\n%s", f, code, out, errOut)
		}
		e.wantActive(t, inScope...)
	}
	// An expired delta token only makes the sync pull in full; a sync
	// never takes access away.
	x.srv.ExpireDeltaTokens()
	if code, out, errOut := runCLI(t, "sync", "--config", e.cfgPath, "--delta"); code != 0 || !strings.Contains(out, "full sync") || !strings.Contains(out, "leavers 1") {
		t.Errorf("sync after the token expired: exit %d\n%s\n%s", code, out, errOut)
	}
	e.wantActive(t, inScope...)

	// The dry run of the sweep, then the sweep: walt (disabled) and vera
	// (missing from a complete pull) go, in the directory's name.
	code, out, _ = runCLI(t, "sweep", "--config", e.cfgPath, "--dry-run")
	if code != 0 || !strings.Contains(out, "walt") || !strings.Contains(out, "vera") || !strings.Contains(out, "disabled in the directory") ||
		!strings.Contains(out, "missing from a complete pull") {
		t.Fatalf("sweep dry run: exit %d\n%s", code, out)
	}
	e.wantActive(t, inScope...)
	if code, out, errOut := runCLI(t, "sweep", "--config", e.cfgPath); code != 0 {
		t.Fatalf("sweep: exit %d\n%s\n%s", code, out, errOut)
	}
	e.wantActive(t, "alice", "olga", "yann", "zoe")
	e.wantInactive(t, "walt", "vera")
	st, err := e.m.store.AppState(ctx, "jira", "walt")
	if err != nil || st.DeprovisionedSource != "directory" || st.DeprovisionedActor != "entra" {
		t.Errorf("walt's removal: %+v %v, want the directory's", st, err)
	}

	// walt is enabled again: the directory's own sync brings him back,
	// through the running usher's admin API ("sync everyone now").
	x.srv.UpdateUser(x.users["walt"], map[string]any{"accountEnabled": true})
	e.adminPost(t, "/admin/api/directories/entra/sync", http.StatusAccepted)
	e.waitDirectoryRuns(t, "entra", 4)
	e.wantActive(t, "walt")
	e.wantInactive(t, "vera")
	evs, err := e.m.store.Audit(ctx, store.AuditFilter{Action: "app.reinstate", Limit: 100})
	if err != nil || len(evs) == 0 || evs[0].Actor != "directory:entra" || evs[0].Username != "walt" {
		t.Errorf("reinstatement audit %+v %v", evs, err)
	}

	// "Sync this person now" through the API.
	body := e.adminPost(t, "/admin/api/users/acme/00u-yann/directory-sync", http.StatusOK)
	if !strings.Contains(body, `"outcome": "unchanged"`) && !strings.Contains(body, `"outcome": "updated"`) {
		t.Errorf("person sync: %s", body)
	}

	// Metrics count the runs, the changes and the API calls.
	metrics := e.adminGet(t, "/metrics")
	for _, want := range []string{
		`usher_directory_sync_runs_total{directory="entra",kind="full",result="ok"}`,
		`usher_directory_calls_total{directory="entra",op="users",result="ok"}`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}

func (e *env) wantActive(t *testing.T, names ...string) {
	t.Helper()
	for _, name := range names {
		for app, s := range e.apps {
			u, ok := s.User(name)
			if !ok || !u.Active || app == "bitbucket" && !slices.Contains(u.Groups, "stash-users") {
				t.Errorf("%s in %s: %+v (exists %v), want active", name, app, u, ok)
			}
		}
	}
}

func (e *env) wantInactive(t *testing.T, names ...string) {
	t.Helper()
	for _, name := range names {
		for app, s := range e.apps {
			u, ok := s.User(name)
			if !ok {
				t.Errorf("%s in %s: gone", name, app)
				continue
			}
			// Bitbucket frees the seat instead of deactivating.
			if app == "bitbucket" && slices.Contains(u.Groups, "stash-users") || app != "bitbucket" && u.Active {
				t.Errorf("%s in %s: %+v, want deactivated", name, app, u)
			}
		}
	}
}

func (e *env) adminDo(t *testing.T, method, path string) (int, string) {
	t.Helper()
	return e.adminSend(t, method, path, nil)
}

func (e *env) adminPost(t *testing.T, path string, want int) string {
	t.Helper()
	code, body := e.adminDo(t, "POST", path)
	if code != want {
		t.Fatalf("POST %s: %d, want %d\n%s", path, code, want, body)
	}
	return body
}

func (e *env) adminGet(t *testing.T, path string) string {
	t.Helper()
	code, body := e.adminDo(t, "GET", path)
	if code != http.StatusOK {
		t.Fatalf("GET %s: %d\n%s", path, code, body)
	}
	return body
}

// waitDirectoryRuns waits until the directory has recorded n runs.
func (e *env) waitDirectoryRuns(t *testing.T, name string, n int) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		var out struct {
			Directories []struct {
				Name string
				Runs []struct{ Run int64 }
			}
		}
		if err := json.Unmarshal([]byte(e.adminGet(t, "/admin/api/directories")), &out); err != nil {
			t.Fatal(err)
		}
		for _, d := range out.Directories {
			if d.Name == name && len(d.Runs) >= n {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("directory %s did not record %d runs: %+v", name, n, out)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
