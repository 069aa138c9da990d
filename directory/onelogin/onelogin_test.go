package onelogin_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/usherhq/usher/config"
	"github.com/usherhq/usher/directory"
	"github.com/usherhq/usher/directory/directorytest"
	"github.com/usherhq/usher/directory/onelogin"
	"github.com/usherhq/usher/directory/onelogin/onelogintest"
)

var t0 = time.Date(2025, 3, 1, 9, 0, 0, 0, time.UTC)

type env struct {
	t     *testing.T
	srv   *onelogintest.Server
	clock *clockwork.FakeClock
	calls *directorytest.Calls
}

func newEnv(t *testing.T) *env {
	clock := clockwork.NewFakeClockAt(t0)
	srv := onelogintest.New(t, clock).Start()
	srv.AddCredential("usher", "s3cret", onelogintest.ReadAll)
	return &env{t: t, srv: srv, clock: clock, calls: &directorytest.Calls{}}
}

func (e *env) open(mod func(*onelogin.Config)) *onelogin.Connector {
	e.t.Helper()
	c := &onelogin.Config{BaseURL: e.srv.URL, ClientID: "usher", ClientSecret: config.SecretValue("s3cret")}
	if mod != nil {
		mod(c)
	}
	deps := directorytest.Deps(e.t, e.clock, e.calls)
	deps.Client = e.srv.Client()
	conn, err := c.Open("onelogin", "onelogin-idp", deps)
	if err != nil {
		e.t.Fatal(err)
	}
	return conn.(*onelogin.Connector)
}

func (e *env) user(name string, mod func(*onelogintest.User)) int64 {
	u := onelogintest.User{Username: name, Email: name + "@example.test", Firstname: name, Lastname: "X"}
	if mod != nil {
		mod(&u)
	}
	return e.srv.AddUser(u)
}

// pull returns the people by username.
func (e *env) pull(conn *onelogin.Connector) (map[string]directory.Person, time.Duration, error) {
	e.t.Helper()
	got := map[string]directory.Person{}
	waited, err := directorytest.Drive(e.t, e.clock, func(ctx context.Context) error {
		return conn.Pull(ctx, func(p directory.Page) error {
			for _, q := range p.People {
				if _, dup := got[q.Username]; dup {
					e.t.Errorf("%s listed twice", q.Username)
				}
				got[q.Username] = q
			}
			return nil
		})
	})
	return got, waited, err
}

func (e *env) delta(conn *onelogin.Connector, token string) (map[string]directory.Person, string, error) {
	e.t.Helper()
	got := map[string]directory.Person{}
	var next string
	_, err := directorytest.Drive(e.t, e.clock, func(ctx context.Context) error {
		var err error
		next, err = conn.Delta(ctx, token, func(p directory.Page) error {
			for _, q := range p.People {
				got[q.Username] = q
			}
			return nil
		})
		return err
	})
	return got, next, err
}

func (e *env) person(conn *onelogin.Connector, subject string) (*directory.Person, error) {
	e.t.Helper()
	var p *directory.Person
	_, err := directorytest.Drive(e.t, e.clock, func(ctx context.Context) error {
		var err error
		p, err = conn.Person(ctx, subject)
		return err
	})
	return p, err
}

func keys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

func sorted(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}

func id(n int64) string { return strconv.FormatInt(n, 10) }

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	secret := config.SecretValue("s")
	tests := []struct {
		name   string
		c      onelogin.Config
		fields []string
	}{
		{"minimal", onelogin.Config{BaseURL: "https://x.onelogin.com", ClientID: "c", ClientSecret: secret}, nil},
		{"full", onelogin.Config{BaseURL: "http://127.0.0.1:8080/", ClientID: "c", ClientSecret: secret,
			SubjectAttribute: "custom_attributes.employee_id", Roles: []string{"Jira", "123"}, Groups: []string{"Staff"},
			GroupsFrom: []string{"group", "roles"}, Attributes: []string{"department", "custom_attributes.x", "role_ids"},
			PageSize: 100, Timeout: time.Second, MaxWait: time.Minute, DeltaOverlap: time.Minute}, nil},
		{"nothing", onelogin.Config{}, []string{"base_url", "client_id", "client_secret"}},
		{"http", onelogin.Config{BaseURL: "http://x.onelogin.com", ClientID: "c", ClientSecret: secret}, []string{"base_url"}},
		{"path", onelogin.Config{BaseURL: "https://x.onelogin.com/api/2", ClientID: "c", ClientSecret: secret}, []string{"base_url"}},
		{"subject", onelogin.Config{BaseURL: "https://x.onelogin.com", ClientID: "c", ClientSecret: secret, SubjectAttribute: "userprincipalname"},
			[]string{"subject_attribute"}},
		{"lists", onelogin.Config{BaseURL: "https://x.onelogin.com", ClientID: "c", ClientSecret: secret,
			Roles: []string{"a", "a", " "}, Groups: []string{""}, GroupsFrom: []string{"roles", "roles", "apps"},
			Attributes: []string{"nope", "custom_attributes.", "custom_attributes.a-b"}},
			[]string{"roles[1]", "roles[2]", "groups[0]", "groups_from[1]", "groups_from[2]", "attributes[0]", "attributes[1]", "attributes[2]"}},
		{"limits", onelogin.Config{BaseURL: "https://x.onelogin.com", ClientID: "c", ClientSecret: secret, PageSize: 101, Timeout: -1,
			MaxWait: -1, DeltaOverlap: -1}, []string{"page_size", "timeout", "max_wait", "delta_overlap"}},
	}
	for _, tt := range tests {
		var fields []string
		for _, err := range tt.c.Validate() {
			var fe *config.FieldError
			if !errors.As(err, &fe) {
				t.Errorf("%s: %v is not a *config.FieldError", tt.name, err)
				continue
			}
			fields = append(fields, fe.Field)
		}
		if !slices.Equal(sorted(fields), sorted(tt.fields)) {
			t.Errorf("%s: errors on %q, want %q", tt.name, fields, tt.fields)
		}
	}
}

func TestAuthFailures(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.user("ada", nil)
	_, _, err := e.pull(e.open(func(c *onelogin.Config) { c.ClientSecret = config.SecretValue("wrong") }))
	var ae *onelogin.APIError
	if !errors.Is(err, directory.ErrIncomplete) || !errors.As(err, &ae) || ae.Status != 401 || ae.Type != "Unauthorized" ||
		!strings.Contains(err.Error(), "client_secret") {
		t.Errorf("wrong secret: Pull = %v, want a 401 that says to check the credential", err)
	}
	if n := e.srv.Requests(""); n != 1 {
		t.Errorf("%d requests: a refused credential is final", n)
	}

	e2 := newEnv(t)
	e2.srv.AddCredential("narrow", "s", onelogintest.ReadUsers)
	_, _, err = e2.pull(e2.open(func(c *onelogin.Config) { c.ClientID, c.ClientSecret = "narrow", config.SecretValue("s") }))
	if !errors.As(err, &ae) || ae.Status != 403 || !strings.Contains(err.Error(), "Read all") {
		t.Errorf("a Read users credential: Pull = %v, want a 403 that names the scope needed", err)
	}
}

func TestTokenCached(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.user("ada", nil)
	conn := e.open(nil)
	for range 2 {
		if got, _, err := e.pull(conn); err != nil || len(got) != 1 {
			t.Fatalf("Pull = %v, %v", keys(got), err)
		}
	}
	if n := e.srv.Requests("POST /auth/oauth2/v2/token"); n != 1 {
		t.Errorf("%d token requests for two pulls, want 1", n)
	}
	e.clock.Advance(9 * time.Hour)
	e.pull(conn)
	if n := e.srv.Requests("POST /auth/oauth2/v2/token"); n != 1 {
		t.Errorf("token renewed after 9 of its 10 hours")
	}
	e.clock.Advance(56 * time.Minute)
	e.pull(conn)
	if n := e.srv.Requests("POST /auth/oauth2/v2/token"); n != 2 {
		t.Errorf("token not renewed 4 minutes before it expires")
	}
	e.srv.RevokeTokens()
	if _, _, err := e.pull(conn); err != nil {
		t.Errorf("Pull after revocation = %v, want one refresh", err)
	}
}

func TestStatuses(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	tests := []struct {
		state, status int
		want          directory.Status
	}{
		{1, 1, directory.Active},
		{1, 2, directory.Disabled},
		{1, 0, directory.Inactive},
		{1, 3, directory.Inactive}, // locked: not a leaver
		{1, 4, directory.Inactive},
		{1, 5, directory.Inactive},
		{1, 7, directory.Inactive},
		{1, 8, directory.Inactive},
		{0, 1, directory.Inactive}, // unapproved
		{2, 1, directory.Disabled}, // rejected
		{3, 1, directory.Disabled}, // unlicensed
	}
	for _, tt := range tests {
		e.user(fmt.Sprintf("s%d-%d", tt.state, tt.status), func(u *onelogintest.User) { u.State, u.Status = tt.state, tt.status })
	}
	got, _, err := e.pull(e.open(func(c *onelogin.Config) { c.PageSize = 3 }))
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range tests {
		k := fmt.Sprintf("s%d-%d", tt.state, tt.status)
		if got[k].Status != tt.want {
			t.Errorf("state %d status %d: %v, want %v", tt.state, tt.status, got[k].Status, tt.want)
		}
	}
}

func TestGroupsAndScope(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	jira, conf := e.srv.AddRole("Jira Users"), e.srv.AddRole("Confluence Users")
	twinA, twinB := e.srv.AddRole("Twin"), e.srv.AddRole("Twin")
	staff, ext := e.srv.AddGroup("Staff"), e.srv.AddGroup("Externals")
	for i := range 60 { // more than one v1 page of groups
		e.srv.AddGroup(fmt.Sprintf("filler-%02d", i))
	}
	ada := e.user("ada", func(u *onelogintest.User) { u.RoleIDs, u.GroupID = []int64{jira, conf}, staff })
	bob := e.user("bob", func(u *onelogintest.User) { u.RoleIDs, u.GroupID = []int64{conf}, ext })
	cy := e.user("cy", nil)
	_ = twinB

	got, _, err := e.pull(e.open(func(c *onelogin.Config) { c.GroupsFrom = []string{"roles", "group"} }))
	if err != nil {
		t.Fatal(err)
	}
	if g := sorted(got["ada"].Groups); !slices.Equal(g, []string{"Confluence Users", "Jira Users", "Staff"}) {
		t.Errorf("ada's groups %q", g)
	}
	if ids := sorted(got["ada"].GroupIDs); !slices.Equal(ids, sorted([]string{"role:" + id(jira), "role:" + id(conf), "group:" + id(staff)})) {
		t.Errorf("ada's group ids %q", ids)
	}
	if p := got["cy"]; len(p.Groups) != 0 || !p.GroupsComplete {
		t.Errorf("cy: %+v", p)
	}
	got, _, _ = e.pull(e.open(nil))
	if g := sorted(got["bob"].Groups); !slices.Equal(g, []string{"Confluence Users"}) {
		t.Errorf("groups_from default: bob's groups %q, want roles only", g)
	}

	tests := []struct {
		name string
		mod  func(c *onelogin.Config)
		want []string
	}{
		{"role by name", func(c *onelogin.Config) { c.Roles = []string{"Jira Users"} }, []string{"ada"}},
		{"role by id", func(c *onelogin.Config) { c.Roles = []string{id(conf)} }, []string{"ada", "bob"}},
		{"group", func(c *onelogin.Config) { c.Groups = []string{"Externals"} }, []string{"bob"}},
		{"both", func(c *onelogin.Config) { c.Roles, c.Groups = []string{"Confluence Users"}, []string{id(staff)} }, []string{"ada"}},
	}
	for _, tt := range tests {
		conn := e.open(tt.mod)
		got, _, err := e.pull(conn)
		if err != nil || !slices.Equal(keys(got), tt.want) {
			t.Errorf("%s: pulled %q, %v; want %q", tt.name, keys(got), err, tt.want)
		}
		for name, uid := range map[string]int64{"ada": ada, "bob": bob, "cy": cy} {
			p, err := e.person(conn, id(uid))
			if err != nil {
				t.Fatalf("%s: Person(%s): %v", tt.name, name, err)
			}
			if in := slices.Contains(tt.want, name); p.OutOfScope == in {
				t.Errorf("%s: Person(%s).OutOfScope = %v", tt.name, name, p.OutOfScope)
			}
		}
	}
	for _, bad := range [][]string{{"Twin"}, {"Nope"}, {"424242"}} {
		_, _, err := e.pull(e.open(func(c *onelogin.Config) { c.Roles = bad }))
		if !errors.Is(err, directory.ErrIncomplete) {
			t.Errorf("scope %q: Pull = %v, want ErrIncomplete", bad, err)
		}
	}
	_ = twinA
}

// TestRoleIDsRequired: a listing that does not carry role_ids must not
// read as "nobody holds a role": that would empty every person's groups
// and put everyone out of a role scope.
func TestRoleIDsRequired(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	r := e.srv.AddRole("Jira")
	e.user("ada", func(u *onelogintest.User) { u.RoleIDs = []int64{r} })
	e.srv.SetOmitRoleIDs(true)
	if _, _, err := e.pull(e.open(nil)); !errors.Is(err, directory.ErrIncomplete) || !strings.Contains(err.Error(), "role_ids") {
		t.Errorf("Pull without role_ids = %v, want ErrIncomplete", err)
	}
	got, _, err := e.pull(e.open(func(c *onelogin.Config) { c.GroupsFrom = []string{"group"} }))
	if err != nil || len(got) != 1 {
		t.Errorf("groups from the group only: Pull = %v, %v (role_ids are not needed)", keys(got), err)
	}
}

func TestAttributes(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	r := e.srv.AddRole("R")
	e.user("ada", func(u *onelogintest.User) {
		u.Department, u.Title, u.RoleIDs = "R&D", "Engineer", []int64{r}
		u.CustomAttributes = map[string]string{"employee_id": "1001"}
	})
	got, _, err := e.pull(e.open(func(c *onelogin.Config) {
		c.Attributes = []string{"department", "title", "company", "role_ids", "custom_attributes.employee_id", "custom_attributes.none"}
	}))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][]string{"department": {"R&D"}, "title": {"Engineer"}, "role_ids": {id(r)}, "custom_attributes.employee_id": {"1001"}}
	a := got["ada"].Attributes
	if len(a) != len(want) {
		t.Errorf("attributes %v, want %v", a, want)
	}
	for k, v := range want {
		if !slices.Equal(a[k], v) {
			t.Errorf("%s = %q, want %q", k, a[k], v)
		}
	}
	if p := got["ada"]; p.DisplayName != "ada X" || p.Email != "ada@example.test" {
		t.Errorf("ada = %+v", p)
	}
}

func TestPersonLookups(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ada := e.user("ada", func(u *onelogintest.User) {
		u.Samaccountname, u.ExternalID = "alovelace", "ext-1"
		u.CustomAttributes = map[string]string{"employee_id": "1001"}
	})
	e.user("ab", nil)
	e.user("a*", nil)
	e.user("twin1", func(u *onelogintest.User) { u.CustomAttributes = map[string]string{"employee_id": "7"} })
	e.user("twin2", func(u *onelogintest.User) { u.CustomAttributes = map[string]string{"employee_id": "7"} })
	gone := e.user("gone", nil)
	e.srv.DeleteUser(gone)
	tests := []struct {
		attr, subject string
		want          string // a username, "notfound" or "error"
	}{
		{"id", id(ada), "ada"},
		{"id", "ada", "notfound"},
		{"id", id(gone), "notfound"},
		{"email", "ADA@example.test", "ada"},
		{"username", "ada", "ada"},
		{"username", "a*", "a*"}, // a wildcard in the subject matches itself only
		{"username", "a?", "notfound"},
		{"samaccountname", "alovelace", "ada"},
		{"external_id", "ext-1", "ada"},
		{"custom_attributes.employee_id", "1001", "ada"},
		{"custom_attributes.employee_id", "7", "error"},
		{"email", "nobody@example.test", "notfound"},
	}
	for _, tt := range tests {
		conn := e.open(func(c *onelogin.Config) { c.SubjectAttribute = tt.attr })
		p, err := e.person(conn, tt.subject)
		switch tt.want {
		case "notfound":
			if !errors.Is(err, directory.ErrNotFound) {
				t.Errorf("%s %q: %v, want ErrNotFound", tt.attr, tt.subject, err)
			}
		case "error":
			if err == nil || errors.Is(err, directory.ErrNotFound) {
				t.Errorf("%s %q: %v, want an ambiguity error", tt.attr, tt.subject, err)
			}
		default:
			if err != nil || p.Username != tt.want || !strings.EqualFold(p.Subject, tt.subject) {
				t.Errorf("%s %q: %+v, %v; want %s", tt.attr, tt.subject, p, err, tt.want)
			}
		}
	}
}

func TestRateLimits(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	for i := range 6 {
		e.user(fmt.Sprintf("u%d", i), nil)
	}
	e.srv.SetHourlyLimit(3)
	// 1 roles + 3 users calls at 3 an hour: the client pauses until the
	// window resets (Remaining 0), instead of being refused.
	got, waited, err := e.pull(e.open(func(c *onelogin.Config) { c.PageSize = 2; c.MaxWait = 2 * time.Hour }))
	if err != nil || len(got) != 6 {
		t.Fatalf("Pull = %v, %d people", err, len(got))
	}
	if waited < 59*time.Minute || waited > 62*time.Minute {
		t.Errorf("waited %s for the hourly window", waited)
	}
	if n := e.calls.Total("throttled"); n != 0 {
		t.Errorf("%d calls throttled: Remaining 0 should pace the client before OneLogin refuses", n)
	}
	// The default budget does not wait an hour: incomplete, said so.
	e.calls.Reset()
	_, waited, err = e.pull(e.open(func(c *onelogin.Config) { c.PageSize = 2 }))
	if !errors.Is(err, directory.ErrIncomplete) || waited > 11*time.Minute {
		t.Errorf("Pull beyond the budget = %v after %s, want ErrIncomplete within the 10m budget", err, waited)
	}

	// A 429 waits X-RateLimit-Reset seconds and is counted.
	e2 := newEnv(t)
	e2.user("ada", nil)
	e2.srv.Inject(onelogintest.Fault{Path: "/api/2/users", Status: 429, Reset: 30 * time.Second, Times: 2})
	_, waited, err = e2.pull(e2.open(nil))
	if err != nil || waited < time.Minute || e2.calls.Total("throttled") != 2 {
		t.Errorf("two 429s: Pull = %v after %s, throttled %d (%s)", err, waited, e2.calls.Total("throttled"), e2.calls)
	}
}

func TestFailingPages(t *testing.T) {
	t.Parallel()
	for _, path := range []string{"/api/2/roles", "/api/2/users"} {
		e := newEnv(t)
		e.user("ada", nil)
		e.srv.Inject(onelogintest.Fault{Path: path, Status: 500})
		_, _, err := e.pull(e.open(nil))
		if !errors.Is(err, directory.ErrIncomplete) {
			t.Errorf("%s failing: Pull = %v, want ErrIncomplete", path, err)
		}
		if n := e.srv.Requests("GET " + path); n != 6 {
			t.Errorf("%s failing: %d attempts, want 6", path, n)
		}
	}
}

// TestDeltaOverlapCoversLateChanges shows why deltas look back: a change
// stamped before the mark but readable only after it is caught by the
// next delta.
func TestDeltaOverlapCoversLateChanges(t *testing.T) {
	t.Parallel()
	run := func(overlap time.Duration) bool {
		e := newEnv(t)
		e.srv.SetChangeLag(2 * time.Minute)
		ada := e.user("ada", nil)
		e.clock.Advance(time.Hour)
		conn := e.open(func(c *onelogin.Config) { c.DeltaOverlap = overlap })
		_, tok, err := e.delta(conn, "")
		if err != nil {
			t.Fatal(err)
		}
		e.clock.Advance(time.Minute)
		e.srv.UpdateUser(ada, func(u *onelogintest.User) { u.Status = 2 })
		e.clock.Advance(30 * time.Second) // the delta runs after the change, before it is readable
		got, tok, err := e.delta(conn, tok)
		if err != nil {
			t.Fatal(err)
		}
		if _, seen := got["ada"]; seen {
			t.Fatal("the change was readable before its lag; the test proves nothing")
		}
		e.clock.Advance(3 * time.Minute)
		got, _, err = e.delta(conn, tok)
		if err != nil {
			t.Fatal(err)
		}
		p, seen := got["ada"]
		return seen && p.Status == directory.Disabled
	}
	if !run(5 * time.Minute) {
		t.Error("with a 5m overlap the late change was lost")
	}
	if run(time.Nanosecond) {
		t.Error("without overlap the late change was still seen: the emulator's lag is not modelled")
	}
}

func TestDeltaTokens(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	conn := e.open(nil)
	_, tok, err := e.delta(conn, "")
	if err != nil || !strings.HasPrefix(tok, "onelogin1.") {
		t.Fatalf("start token %q, %v", tok, err)
	}
	other := e.open(func(c *onelogin.Config) { c.Roles = []string{"x"} })
	for name, tk := range map[string]string{"garbage": "x", "bad time": "onelogin1.yesterday.abc", "other config": tok} {
		if _, _, err := e.delta(other, tk); !errors.Is(err, directory.ErrDeltaExpired) {
			t.Errorf("%s: Delta = %v, want ErrDeltaExpired", name, err)
		}
	}
}
