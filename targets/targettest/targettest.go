// Package targettest owns the contract every targets.Target adapter
// must meet, run against the atlassiantest emulators: user life cycle,
// idempotent group changes, precise not-found errors, paging, optional
// capabilities, call counts where usher promises few calls, the shared
// client's resilience (rate limits, 5xx bursts, outages, cancellation)
// and, where an organization manages some accounts and not others
// (Atlassian Cloud), the managed / unmanaged split.
package targettest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/usherhq/usher/targets"
	"github.com/usherhq/usher/targets/atlassiantest"
)

// Opener builds a fresh emulator and an adapter talking to it. deps
// carries the suite's logger and recording Sleep; the opener sets
// deps.Upstream (Serve helps) and passes deps to Config.Open.
type Opener func(t *testing.T, deps targets.Deps) (targets.Target, *atlassiantest.Server)

// Emulator is what the suite needs of an emulator: a view of its users
// and groups by usher username, call counters and fault knobs. An
// *atlassiantest.Server is one; CloudView makes one of a Cloud.
type Emulator interface {
	Kind() atlassiantest.Kind
	// User returns the user usher knows by name, as the app holds it.
	User(name string) (atlassiantest.User, bool)
	// AddUser seeds a user that usher knows by u.Name.
	AddUser(u atlassiantest.User)
	Groups() []string
	GroupMembers(group string) []string
	Calls() map[string]int
	ResetCalls()
	Reads() int
	Writes() int
	RateLimit(n int, retryAfter time.Duration)
	FailNext(n, status int)
	SetDown(down bool)
	SetHangUp(hangUp bool)
	SetLatency(d time.Duration)
}

// ManagedSplit is implemented by emulators of organizations that manage
// some accounts (verified domains) and not others.
type ManagedSplit interface {
	// UnmanagedDomain is an e-mail domain the organization has not
	// verified.
	UnmanagedDomain() string
	// AddAccount seeds an account usher has not bound and returns its
	// key (Cloud: accountId).
	AddAccount(displayName, email string) string
	// AccountState reports the account of key: whether the account may
	// log in at all, and whether its access to the site is on.
	AccountState(key string) (account, access bool)
}

// EmulatorOpener is Opener for any Emulator.
type EmulatorOpener func(t *testing.T, deps targets.Deps) (targets.Target, Emulator)

var _ Emulator = (*atlassiantest.Server)(nil)

// Serve starts srv on a loopback listener for the test's lifetime and
// returns its URL.
func Serve(t *testing.T, srv *atlassiantest.Server) *url.URL {
	t.Helper()
	hs := httptest.NewServer(srv)
	t.Cleanup(hs.Close)
	u, err := url.Parse(hs.URL)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// sleeps records the waits the client asked for and returns at once, so
// the resilience tests take no wall-clock time.
type sleeps struct {
	mu sync.Mutex
	d  []time.Duration
}

func (s *sleeps) sleep(ctx context.Context, d time.Duration) error {
	s.mu.Lock()
	s.d = append(s.d, d)
	s.mu.Unlock()
	return ctx.Err()
}

func (s *sleeps) waits() []time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.d)
}

// lossy is a transport that can lose the answer to the next POST after
// the app has applied it: the case where a retried create must not
// apply twice. With suffix set, only a POST to a path ending so counts
// (Cloud's create is the invite, after a search that is also a POST).
type lossy struct {
	base   http.RoundTripper
	armed  atomic.Bool
	suffix string
}

func (l *lossy) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Method != http.MethodPost || !strings.HasSuffix(r.URL.Path, l.suffix) || !l.armed.CompareAndSwap(true, false) {
		return l.base.RoundTrip(r)
	}
	res, err := l.base.RoundTrip(r)
	if err != nil {
		return nil, err
	}
	res.Body.Close()
	return nil, errors.New("connection reset by peer (injected: answer lost)")
}

type env struct {
	dir    targets.Target
	srv    Emulator
	sleeps *sleeps
	lossy  *lossy
}

// createCall is the call that creates a user, where it is not simply
// the one POST CreateUser makes.
var createCall = map[atlassiantest.Kind]string{
	atlassiantest.CloudSite: "POST /admin/v2/orgs/{orgId}/users/invite",
}

// createCallOf is srv's own word on its create call, else the kind's.
func createCallOf(srv Emulator) string {
	if cc, ok := srv.(interface{ CreateCall() string }); ok {
		return cc.CreateCall()
	}
	return createCall[srv.Kind()]
}

func setup(t *testing.T, open EmulatorOpener) env {
	t.Helper()
	sl := &sleeps{}
	lt := &lossy{base: http.DefaultTransport}
	deps := targets.Deps{
		HTTP:  &http.Client{Transport: lt},
		Log:   slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug})),
		Sleep: sl.sleep,
	}
	dir, srv := open(t, deps)
	if c := createCallOf(srv); c != "" {
		_, path, _ := strings.Cut(c, " ")
		lt.suffix = path[strings.LastIndexByte(path, '/'):]
	}
	return env{dir: dir, srv: srv, sleeps: sl, lossy: lt}
}

// Run runs the contract against fresh emulators from open.
func Run(t *testing.T, open Opener) {
	RunWith(t, func(t *testing.T, deps targets.Deps) (targets.Target, Emulator) { return open(t, deps) })
}

// RunWith runs the contract against any Emulator.
func RunWith(t *testing.T, open EmulatorOpener) {
	tests := []struct {
		name string
		fn   func(t *testing.T, e env)
	}{
		{"Users", testUsers},
		{"Active", testActive},
		{"Groups", testGroups},
		{"ListUsers", testList},
		{"Attributes", testAttributes},
		{"Rename", testRename},
		{"Delete", testDelete},
		{"Seat", testSeat},
		{"ManagedSplit", testManagedSplit},
		{"CreateAnswerLost", testCreateAnswerLost},
		{"RateLimited", testRateLimited},
		{"RetryAfterTooLong", testRetryAfterCap},
		{"ServerErrorBurst", testBurst},
		{"Outage", testOutage},
		{"HangUp", testHangUp},
		{"Cancel", testCancel},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.fn(t, setup(t, open))
		})
	}
}

func newUser(name string) targets.NewUser {
	return targets.NewUser{Name: name, DisplayName: "User " + strings.ToUpper(name[:1]) + name[1:], Email: name + "@example.com"}
}

func mustCreate(t *testing.T, e env, name string) *targets.User {
	t.Helper()
	u, err := e.dir.CreateUser(t.Context(), newUser(name))
	if err != nil {
		t.Fatalf("CreateUser(%s): %v", name, err)
	}
	return u
}

func wantIs(t *testing.T, what string, err, target error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("%s: got %v, want %v", what, err, target)
	}
	var te *targets.Error
	if !errors.As(err, &te) {
		t.Fatalf("%s: %v is not a *targets.Error", what, err)
	}
}

func ok(t *testing.T, what string, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

func serverUser(t *testing.T, e env, name string) atlassiantest.User {
	t.Helper()
	u, found := e.srv.User(name)
	if !found {
		t.Fatalf("emulator has no user %q", name)
	}
	return u
}

func testUsers(t *testing.T, e env) {
	ctx := t.Context()
	created := mustCreate(t, e, "alice")
	if !strings.EqualFold(created.Name, "alice") || !created.Active {
		t.Errorf("CreateUser = %+v, want name alice, active", created)
	}
	su := serverUser(t, e, "alice")
	if su.DisplayName != "User Alice" || su.Email != "alice@example.com" || !su.Active {
		t.Errorf("emulator user = %+v", su)
	}

	e.srv.ResetCalls()
	got, err := e.dir.GetUser(ctx, "ALICE")
	ok(t, "GetUser(ALICE)", err)
	if !strings.EqualFold(got.Name, "alice") || got.DisplayName != "User Alice" || !got.Active {
		t.Errorf("GetUser = %+v", got)
	}
	if got.Email != "" && got.Email != "alice@example.com" {
		t.Errorf("GetUser email = %q", got.Email)
	}
	if got.EmailUnknown && got.Email != "" {
		t.Errorf("GetUser reports e-mail %q and says it is unknown", got.Email)
	}
	if got.Key == "" {
		t.Errorf("GetUser key is empty")
	}
	if w, r := e.srv.Writes(), e.srv.Reads(); w != 0 || r != getUserReads[e.srv.Kind()] {
		t.Errorf("GetUser made %d reads, %d writes; want %d, 0", r, w, getUserReads[e.srv.Kind()])
	}

	_, err = e.dir.CreateUser(ctx, newUser("alice"))
	wantIs(t, "CreateUser(existing)", err, targets.ErrExists)
	_, err = e.dir.GetUser(ctx, "nobody")
	wantIs(t, "GetUser(nobody)", err, targets.ErrNotFound)

	name, mail := "Alice Liddell", "alice@wonder.example"
	ok(t, "UpdateUser", e.dir.UpdateUser(ctx, "alice", targets.Update{DisplayName: &name, Email: &mail}))
	su = serverUser(t, e, "alice")
	if su.DisplayName != name || su.Email != mail {
		t.Errorf("after UpdateUser: %q %q", su.DisplayName, su.Email)
	}
	name2 := "Alice P. Liddell"
	ok(t, "UpdateUser(name only)", e.dir.UpdateUser(ctx, "alice", targets.Update{DisplayName: &name2}))
	su = serverUser(t, e, "alice")
	if su.DisplayName != name2 || su.Email != mail {
		t.Errorf("after name-only UpdateUser: %q %q, want e-mail kept", su.DisplayName, su.Email)
	}
	e.srv.ResetCalls()
	ok(t, "UpdateUser(nothing)", e.dir.UpdateUser(ctx, "alice", targets.Update{}))
	if n := e.srv.Reads() + e.srv.Writes(); n != 0 {
		t.Errorf("empty UpdateUser made %d calls", n)
	}
	wantIs(t, "UpdateUser(nobody)", e.dir.UpdateUser(ctx, "nobody", targets.Update{DisplayName: &name}), targets.ErrNotFound)
}

// getUserReads is what GetUser costs an active user: one read, except
// on Bitbucket, where the licence lives in the groups (§5.5).
var getUserReads = map[atlassiantest.Kind]int{
	atlassiantest.Jira: 1, atlassiantest.Confluence: 1, atlassiantest.Crowd: 1, atlassiantest.Bitbucket: 2,
	atlassiantest.CloudSite: 1,
}

// seated is the emulator's view of "active" for the kind: Bitbucket has
// no active switch, usher deactivates there by taking the licence.
func seated(t *testing.T, e env, name string) bool {
	su := serverUser(t, e, name)
	if e.srv.Kind() == atlassiantest.Bitbucket {
		return su.Licensed
	}
	return su.Active
}

func testActive(t *testing.T, e env) {
	ctx := t.Context()
	mustCreate(t, e, "bob")

	e.srv.ResetCalls()
	ok(t, "SetActive(true) on active user", e.dir.SetActive(ctx, "bob", true))
	if w := e.srv.Writes(); w != 0 {
		t.Errorf("SetActive(true) on an active user made %d writes, want 0", w)
	}

	ok(t, "SetActive(false)", e.dir.SetActive(ctx, "bob", false))
	if seated(t, e, "bob") {
		t.Errorf("emulator: bob still active/licensed after SetActive(false)")
	}
	u, err := e.dir.GetUser(ctx, "bob")
	ok(t, "GetUser", err)
	if u.Active {
		t.Errorf("GetUser after SetActive(false): Active = true")
	}
	e.srv.ResetCalls()
	ok(t, "SetActive(false) again", e.dir.SetActive(ctx, "bob", false))
	if w := e.srv.Writes(); w != 0 {
		t.Errorf("SetActive(false) on an inactive user made %d writes, want 0", w)
	}

	ok(t, "SetActive(true)", e.dir.SetActive(ctx, "bob", true))
	if !seated(t, e, "bob") {
		t.Errorf("emulator: bob not active/licensed after SetActive(true)")
	}
	u, err = e.dir.GetUser(ctx, "BOB")
	ok(t, "GetUser", err)
	if !u.Active {
		t.Errorf("GetUser after SetActive(true): Active = false")
	}
	wantIs(t, "SetActive(nobody)", e.dir.SetActive(ctx, "nobody", false), targets.ErrNotFound)
}

func testGroups(t *testing.T, e env) {
	ctx := t.Context()
	mustCreate(t, e, "carol")
	ok(t, "CreateGroup", e.dir.CreateGroup(ctx, "devs"))
	ok(t, "CreateGroup again", e.dir.CreateGroup(ctx, "devs"))
	if !slices.Contains(e.srv.Groups(), "devs") {
		t.Fatalf("emulator groups %v lack devs", e.srv.Groups())
	}

	e.srv.ResetCalls()
	ok(t, "AddToGroup", e.dir.AddToGroup(ctx, "carol", "devs"))
	if w, r := e.srv.Writes(), e.srv.Reads(); w != 1 || r != 0 {
		t.Errorf("AddToGroup made %d writes, %d reads; want 1, 0", w, r)
	}
	ok(t, "AddToGroup again", e.dir.AddToGroup(ctx, "carol", "devs"))
	if m := e.srv.GroupMembers("devs"); len(m) != 1 || !strings.EqualFold(m[0], "carol") {
		t.Errorf("devs members = %v", m)
	}
	gs, err := e.dir.UserGroups(ctx, "carol")
	ok(t, "UserGroups", err)
	if !containsFold(gs, "devs") {
		t.Errorf("UserGroups = %v, want devs", gs)
	}

	wantIs(t, "AddToGroup(nobody)", e.dir.AddToGroup(ctx, "nobody", "devs"), targets.ErrNotFound)
	wantIs(t, "AddToGroup(no group)", e.dir.AddToGroup(ctx, "carol", "no-such-group"), targets.ErrGroupNotFound)
	_, err = e.dir.UserGroups(ctx, "nobody")
	wantIs(t, "UserGroups(nobody)", err, targets.ErrNotFound)

	ok(t, "RemoveFromGroup", e.dir.RemoveFromGroup(ctx, "carol", "devs"))
	if m := e.srv.GroupMembers("devs"); len(m) != 0 {
		t.Errorf("devs members after remove = %v", m)
	}
	ok(t, "RemoveFromGroup(non-member)", e.dir.RemoveFromGroup(ctx, "carol", "devs"))
	gs, err = e.dir.UserGroups(ctx, "carol")
	ok(t, "UserGroups", err)
	if containsFold(gs, "devs") {
		t.Errorf("UserGroups after remove = %v", gs)
	}
}

func containsFold(list []string, s string) bool {
	return slices.ContainsFunc(list, func(v string) bool { return strings.EqualFold(v, s) })
}

func testList(t *testing.T, e env) {
	ctx := t.Context()
	var want []string
	for i := range 11 {
		name := fmt.Sprintf("user%02d", i)
		e.srv.AddUser(atlassiantest.User{Name: name, DisplayName: "User " + name, Email: name + "@example.com", Active: i%4 != 0})
		want = append(want, name)
	}
	seen := map[string]int{}
	cursor, pages := "", 0
	for {
		p, err := e.dir.ListUsers(ctx, cursor, 3)
		ok(t, "ListUsers", err)
		pages++
		if len(p.Users) > 3 {
			t.Errorf("page of %d users for limit 3", len(p.Users))
		}
		for _, u := range p.Users {
			seen[strings.ToLower(u.Name)]++
			if strings.HasPrefix(u.Name, "user") && u.DisplayName != "User "+u.Name {
				t.Errorf("listed %+v", u)
			}
		}
		if p.Next == "" {
			break
		}
		if pages > 50 {
			t.Fatalf("ListUsers did not end after %d pages", pages)
		}
		cursor = p.Next
	}
	if pages < 4 {
		t.Errorf("%d pages for 11+ users at limit 3", pages)
	}
	for name, n := range seen {
		if n != 1 {
			t.Errorf("%s listed %d times", name, n)
		}
	}
	for _, name := range want {
		if seen[name] != 1 {
			t.Errorf("%s not listed", name)
		}
	}
}

func testAttributes(t *testing.T, e env) {
	as, isSetter := e.dir.(targets.AttributeSetter)
	if !isSetter {
		t.Skip("adapter has no attributes")
	}
	ctx := t.Context()
	mustCreate(t, e, "dave")
	ok(t, "SetAttributes", as.SetAttributes(ctx, "dave", map[string]string{"usher.idp": "okta", "usher.subject": "00u1 x/y"}))
	ok(t, "SetAttributes(partial)", as.SetAttributes(ctx, "dave", map[string]string{"usher.idp": "entra"}))
	got, err := as.Attributes(ctx, "dave", []string{"usher.idp", "usher.subject", "usher.absent"})
	ok(t, "Attributes", err)
	want := map[string]string{"usher.idp": "entra", "usher.subject": "00u1 x/y"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("Attributes = %v, want %v", got, want)
	}
	if v := serverUser(t, e, "dave").Attributes["usher.subject"]; v != "00u1 x/y" {
		t.Errorf("emulator attribute = %q", v)
	}
	wantIs(t, "SetAttributes(nobody)", as.SetAttributes(ctx, "nobody", map[string]string{"a": "b"}), targets.ErrNotFound)
	_, err = as.Attributes(ctx, "nobody", []string{"a"})
	wantIs(t, "Attributes(nobody)", err, targets.ErrNotFound)
}

func testRename(t *testing.T, e env) {
	r, isRenamer := e.dir.(targets.Renamer)
	if !isRenamer {
		t.Skip("adapter cannot rename")
	}
	ctx := t.Context()
	mustCreate(t, e, "erin")
	mustCreate(t, e, "frank")
	before := serverUser(t, e, "erin")
	ok(t, "Rename", r.Rename(ctx, "erin", "erin2"))
	after, err := e.dir.GetUser(ctx, "erin2")
	ok(t, "GetUser(new name)", err)
	if !strings.EqualFold(after.Name, "erin2") {
		t.Errorf("renamed user = %+v", after)
	}
	if k := serverUser(t, e, "erin2").Key; k != before.Key {
		t.Errorf("key changed on rename: %q → %q", before.Key, k)
	}
	_, err = e.dir.GetUser(ctx, "erin")
	wantIs(t, "GetUser(old name)", err, targets.ErrNotFound)
	wantIs(t, "Rename(to taken)", r.Rename(ctx, "erin2", "frank"), targets.ErrExists)
	wantIs(t, "Rename(nobody)", r.Rename(ctx, "nobody", "nobody2"), targets.ErrNotFound)
}

func testDelete(t *testing.T, e env) {
	d, isDeleter := e.dir.(targets.Deleter)
	if !isDeleter {
		t.Skip("adapter cannot delete")
	}
	ctx := t.Context()
	mustCreate(t, e, "gina")
	ok(t, "DeleteUser", d.DeleteUser(ctx, "gina"))
	if _, found := e.srv.User("gina"); found {
		t.Errorf("emulator still has gina")
	}
	wantIs(t, "DeleteUser(nobody)", d.DeleteUser(ctx, "nobody"), targets.ErrNotFound)
}

// groupPermissions is implemented by emulators of apps whose global
// permissions can go to any group (Bitbucket).
type groupPermissions interface {
	SetGroupPermission(group, perm string)
}

// testSeat: for apps whose seat comes through groups, Seat names every
// seat-granting group and which of them SetActive(false) takes away;
// the others, and the seat, stay until their membership goes.
func testSeat(t *testing.T, e env) {
	sh, isHolder := e.dir.(targets.SeatHolder)
	gp, canGrant := e.srv.(groupPermissions)
	if !isHolder || !canGrant {
		t.Skip("adapter has no seat groups")
	}
	ctx := t.Context()
	gp.SetGroupPermission("builders", "LICENSED_USER")
	mustCreate(t, e, "pia")
	ok(t, "AddToGroup(builders)", e.dir.AddToGroup(ctx, "pia", "builders"))

	seat, err := sh.Seat(ctx, "pia")
	ok(t, "Seat", err)
	if !containsFold(seat.Groups, "builders") || containsFold(seat.Released, "builders") || len(seat.Released) == 0 {
		t.Errorf("Seat = %+v, want builders among the groups, not released, and the default licence group released", seat)
	}

	ok(t, "SetActive(false)", e.dir.SetActive(ctx, "pia", false))
	if !seated(t, e, "pia") {
		t.Error("SetActive(false) took away a seat-granting group outside the licence groups")
	}
	if u, err := e.dir.GetUser(ctx, "pia"); err != nil || !u.Active {
		t.Errorf("GetUser = %+v, %v; want active through builders", u, err)
	}
	seat, err = sh.Seat(ctx, "pia")
	ok(t, "Seat", err)
	if !slices.EqualFunc(seat.Groups, []string{"builders"}, strings.EqualFold) || len(seat.Released) != 0 || seat.Direct != "" {
		t.Errorf("Seat after SetActive(false) = %+v, want builders only", seat)
	}

	ok(t, "RemoveFromGroup(builders)", e.dir.RemoveFromGroup(ctx, "pia", "builders"))
	if seated(t, e, "pia") {
		t.Error("still seated in no seat-granting group")
	}
	if u, err := e.dir.GetUser(ctx, "pia"); err != nil || u.Active {
		t.Errorf("GetUser = %+v, %v; want inactive", u, err)
	}
	seat, err = sh.Seat(ctx, "pia")
	ok(t, "Seat", err)
	if len(seat.Groups)+len(seat.Released) != 0 || seat.Direct != "" {
		t.Errorf("Seat of an unseated user = %+v", seat)
	}
	_, err = sh.Seat(ctx, "nobody")
	wantIs(t, "Seat(nobody)", err, targets.ErrNotFound)
}

func testCreateAnswerLost(t *testing.T, e env) {
	e.lossy.armed.Store(true)
	u, err := e.dir.CreateUser(t.Context(), newUser("olga"))
	ok(t, "CreateUser whose first answer was lost", err)
	if !strings.EqualFold(u.Name, "olga") {
		t.Errorf("CreateUser = %+v", u)
	}
	n := e.srv.Calls()
	if c := createCallOf(e.srv); c != "" && n[c] != 2 {
		t.Errorf("calls = %v, want %s sent twice", n, c)
	} else if c == "" && countPrefix(n, "POST") != 2 {
		t.Errorf("calls = %v, want the create sent twice", n)
	}
	if w := e.sleeps.waits(); len(w) != 1 {
		t.Errorf("waits = %v, want one backoff", w)
	}
	serverUser(t, e, "olga")
}

func countPrefix(calls map[string]int, prefix string) int {
	n := 0
	for k, v := range calls {
		if strings.HasPrefix(k, prefix+" ") {
			n += v
		}
	}
	return n
}

func testRateLimited(t *testing.T, e env) {
	mustCreate(t, e, "hank")
	e.srv.RateLimit(1, 3*time.Second)
	_, err := e.dir.GetUser(t.Context(), "hank")
	ok(t, "GetUser through a 429", err)
	w := e.sleeps.waits()
	if len(w) != 1 || w[0] != 3*time.Second {
		t.Errorf("waits = %v, want [3s] (the Retry-After)", w)
	}
}

func testRetryAfterCap(t *testing.T, e env) {
	mustCreate(t, e, "ivan")
	e.srv.RateLimit(1, 10*time.Minute)
	_, err := e.dir.GetUser(t.Context(), "ivan")
	var te *targets.Error
	if !errors.As(err, &te) || !te.Temporary || te.Status != 429 {
		t.Fatalf("GetUser with a 10m Retry-After = %v, want a Temporary 429 *targets.Error", err)
	}
	if w := e.sleeps.waits(); len(w) != 0 {
		t.Errorf("waited %v beyond the cap", w)
	}
}

func testBurst(t *testing.T, e env) {
	mustCreate(t, e, "judy")
	ok(t, "CreateGroup", e.dir.CreateGroup(t.Context(), "qa"))
	e.srv.FailNext(3, 503)
	_, err := e.dir.GetUser(t.Context(), "judy")
	ok(t, "GetUser through three 503s", err)
	e.srv.FailNext(2, 500)
	ok(t, "AddToGroup through two 500s", e.dir.AddToGroup(t.Context(), "judy", "qa"))
	if m := e.srv.GroupMembers("qa"); len(m) != 1 {
		t.Errorf("qa members = %v, want judy once", m)
	}
	w := e.sleeps.waits()
	if len(w) != 5 {
		t.Errorf("waits = %v, want 5 backoffs", w)
	}
	for _, d := range w {
		if d < 0 || d > 10*time.Second {
			t.Errorf("backoff %s outside [0, 10s]", d)
		}
	}
}

func wantTemporary(t *testing.T, what string, err error, app, user string) {
	t.Helper()
	var te *targets.Error
	if !errors.As(err, &te) {
		t.Fatalf("%s: %v is not a *targets.Error", what, err)
	}
	if !te.Temporary || te.App != app || te.User != user || te.Op == "" || !targets.IsTemporary(err) {
		t.Errorf("%s: %#v, want Temporary, app %q, user %q, an op", what, te, app, user)
	}
	if msg := err.Error(); !strings.Contains(msg, app) || !strings.Contains(msg, user) {
		t.Errorf("%s: message %q does not name app and user", what, msg)
	}
}

func testOutage(t *testing.T, e env) {
	ctx := t.Context()
	mustCreate(t, e, "kim")
	e.srv.SetDown(true)
	_, err := e.dir.GetUser(ctx, "kim")
	wantTemporary(t, "GetUser during outage", err, e.dir.App(), "kim")
	if targets.StatusOf(err) != 503 {
		t.Errorf("status = %d, want 503", targets.StatusOf(err))
	}
	_, err = e.dir.CreateUser(ctx, newUser("lena"))
	wantTemporary(t, "CreateUser during outage", err, e.dir.App(), "lena")
	err = e.dir.AddToGroup(ctx, "kim", "devs")
	wantTemporary(t, "AddToGroup during outage", err, e.dir.App(), "kim")
	e.srv.SetDown(false)
	_, err = e.dir.GetUser(ctx, "kim")
	ok(t, "GetUser after outage", err)
}

func testHangUp(t *testing.T, e env) {
	mustCreate(t, e, "mia")
	e.srv.SetHangUp(true)
	_, err := e.dir.GetUser(t.Context(), "mia")
	wantTemporary(t, "GetUser from a dead app", err, e.dir.App(), "mia")
	if targets.StatusOf(err) != 0 {
		t.Errorf("status = %d, want 0 (no answer)", targets.StatusOf(err))
	}
	e.srv.SetHangUp(false)
}

func testCancel(t *testing.T, e env) {
	mustCreate(t, e, "nina")
	e.srv.SetLatency(time.Hour)
	e.srv.ResetCalls()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	start := time.Now()
	go func() {
		_, err := e.dir.GetUser(ctx, "nina")
		done <- err
	}()
	// Cancel once the call is in flight (the emulator counts it before
	// its latency), so this tests an aborted request, not a refused one.
	for e.srv.Reads() == 0 {
		time.Sleep(time.Millisecond)
	}
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("GetUser after cancel = %v, want context.Canceled", err)
		}
		if targets.IsTemporary(err) {
			t.Errorf("a cancelled call is not Temporary: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("GetUser ignored cancellation")
	}
	// Not a timing assertion: an hour of latency would show as a hang,
	// this only reports a gross regression with a clear message.
	if d := time.Since(start); d > 20*time.Second {
		t.Errorf("cancellation took %s", d)
	}
	e.srv.SetLatency(0)
}
