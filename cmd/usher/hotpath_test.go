package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/usherhq/usher/store"
)

// TestValidSessionTouchesNoStore: a request with a valid session reads
// only memory (DESIGN.md, "Hot path"). usher's store is wrapped with one
// that notes every call and where it came from; the login makes calls
// (so the wrapper is in the path), then proxied requests of every kind,
// a session cookie refresh, an authorization at usher's OpenID Provider
// and its userinfo make none. The token endpoint makes exactly one: the
// code's single use, recorded for every replica.
func TestValidSessionTouchesNoStore(t *testing.T) {
	t.Parallel()
	var st *countingStore
	var skew atomic.Int64 // moves usher's clock, to make the session cookie due for a refresh
	jira, yaml := startSSOJira(t)
	e := startEnvWith(t, envOptions{Apps: true, Mapping: jitMapping, MoreApps: yaml, Tune: func(m *Main) {
		m.WrapStore = func(s store.Store) store.Store { st = &countingStore{s: s}; return st }
		m.Now = func() time.Time { return time.Now().Add(time.Duration(skew.Load())) }
	}})
	c := e.browser()

	st.reset()
	wantStatus(t, e.login(c, "/jira/", "acme", "alice", "pw-alice"), http.StatusOK)
	e.settle()
	if n := len(st.onRequests()); n == 0 {
		t.Fatal("the login made no store call the wrapper saw: it is not in the store's path")
	}

	since := e.m.Now()
	st.reset()
	const n = 10
	for i := range n {
		for _, r := range []struct {
			method, path string
			hdr          []string
		}{
			{"GET", "/x?i=" + fmt.Sprint(i), []string{"Accept", "text/html"}},
			{"HEAD", "/x", nil},
			{"POST", "/x", []string{"Content-Type", "text/plain"}},
			{"GET", "/rest/api/x", []string{"X-Requested-With", "XMLHttpRequest"}},
			{"GET", "/jira/", []string{"Accept", "text/html"}},
			{"GET", "/wiki/", nil},
		} {
			if code := e.do(c, r.method, e.url+r.path, "body", r.hdr...); code != http.StatusOK {
				t.Fatalf("%s %s: %d", r.method, r.path, code)
			}
		}
	}
	// A minute later the cookie is re-sealed with a new Seen, and the new
	// value opens once before it is cached.
	skew.Add(int64(2 * time.Minute))
	resp := e.get(c, e.url+"/x")
	wantStatus(t, resp, http.StatusOK)
	if !slices.ContainsFunc(resp.Cookies(), func(ck *http.Cookie) bool { return ck.Name == e.m.gen.Load().codec.CookieName() }) {
		t.Fatalf("no refreshed session cookie after two minutes: %v", resp.Cookies())
	}
	for range n {
		if code := e.do(c, "GET", e.url+"/x", ""); code != http.StatusOK {
			t.Fatalf("after the refresh: %d", code)
		}
	}
	code := e.authorizeCode(c, jira.url)
	e.settle() // what a request queued for the batch writers is written now, and counted
	st.none(t, since, "proxied requests, a cookie refresh and an authorization with a valid session")

	since = e.m.Now()
	st.reset()
	access := e.redeem(jira.url, code)
	if got := st.methods(since); !slices.Equal(got, []string{"SeenOnce"}) {
		t.Errorf("the token endpoint called the store for %v, want [SeenOnce] (the code's single use)", got)
	}

	since = e.m.Now()
	st.reset()
	for range n {
		req, _ := http.NewRequest("GET", e.url+"/usher/op/userinfo", nil)
		req.Header.Set("Authorization", "Bearer "+access)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		wantStatus(t, resp, http.StatusOK)
	}
	e.settle()
	st.none(t, since, "userinfo")
}

// do sends one request with the client's cookies and returns the status.
func (e *env) do(c *http.Client, method, u, body string, hdr ...string) int {
	e.t.Helper()
	req, err := http.NewRequest(method, u, strings.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	if method == "GET" || method == "HEAD" {
		req.Body, req.ContentLength = nil, 0
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// ssoCallback is the emulated Jira's registered redirect URI.
func ssoCallback(jiraURL string) string { return jiraURL + "/plugins/servlet/oidc/callback" }

// authorizeCode asks usher's OpenID Provider for a code for client
// jira-sso, as a person with a session.
func (e *env) authorizeCode(c *http.Client, jiraURL string) string {
	e.t.Helper()
	q := url.Values{"client_id": {"jira-sso"}, "redirect_uri": {ssoCallback(jiraURL)}, "response_type": {"code"},
		"scope": {"openid profile email"}, "state": {"s"}, "nonce": {"n"}}
	resp := e.get(c, e.url+"/usher/op/authorize?"+q.Encode())
	loc, _ := url.Parse(resp.Header.Get("Location"))
	if loc == nil || loc.Query().Get("code") == "" {
		e.t.Fatalf("authorize: %d %v", resp.StatusCode, loc)
	}
	return loc.Query().Get("code")
}

// redeem exchanges a code at the token endpoint as jira-sso and returns
// the access token.
func (e *env) redeem(jiraURL, code string) string {
	e.t.Helper()
	form := url.Values{"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {ssoCallback(jiraURL)}}
	req, _ := http.NewRequest(http.MethodPost, e.url+"/usher/op/token", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(url.QueryEscape("jira-sso"), url.QueryEscape("sso secret/1"))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&tok); err != nil || resp.StatusCode != http.StatusOK || tok.AccessToken == "" {
		e.t.Fatalf("token: %d %v", resp.StatusCode, err)
	}
	return tok.AccessToken
}

// countingStore is a store.Store that notes each call with the stack of
// the goroutine that made it, so a test can tell a request's calls from
// those of usher's periodic background loops.
type countingStore struct {
	s     store.Store
	mu    sync.Mutex
	calls []storeCall
}

var _ store.Store = (*countingStore)(nil)

type storeCall struct {
	method string
	stack  string
	// stamps are the times of the audit events or login times a batch
	// write carries: a batch of work done before a test's window is not
	// the window's.
	stamps []time.Time
}

// background names usher's periodic loops: the replica heartbeat, the
// queue and brake gauges, the revocation poll and the OpenID Provider's
// signing-key refresh. Their calls come on a timer, not from a request.
var background = []string{
	"main.(*Main).heartbeat(",
	"main.(*Main).gauges(",
	"session.(*Shared).Run(",
	"appsso.(*Provider).Run(",
}

func (c *countingStore) call(method string, stamps ...time.Time) store.Store {
	buf := make([]byte, 32<<10)
	buf = buf[:runtime.Stack(buf, false)]
	c.mu.Lock()
	c.calls = append(c.calls, storeCall{method: method, stack: string(buf), stamps: stamps})
	c.mu.Unlock()
	return c.s
}

func (c *countingStore) reset() {
	c.mu.Lock()
	c.calls = nil
	c.mu.Unlock()
}

func (c *countingStore) snapshot() []storeCall {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.calls)
}

// onRequests are the calls made while serving a request.
func (c *countingStore) onRequests() []storeCall {
	var out []storeCall
	for _, sc := range c.snapshot() {
		if strings.Contains(sc.stack, "net/http.(*conn).serve(") {
			out = append(out, sc)
		}
	}
	return out
}

// since are the calls not made by a periodic loop, leaving out batch
// writes of work done only before since.
func (c *countingStore) since(since time.Time) []storeCall {
	var out []storeCall
	for _, sc := range c.snapshot() {
		if slices.ContainsFunc(background, func(f string) bool { return strings.Contains(sc.stack, f) }) {
			continue
		}
		if len(sc.stamps) > 0 && !slices.ContainsFunc(sc.stamps, func(t time.Time) bool { return !t.Before(since) }) {
			continue
		}
		out = append(out, sc)
	}
	return out
}

func (c *countingStore) methods(since time.Time) []string {
	var out []string
	for _, sc := range c.since(since) {
		out = append(out, sc.method)
	}
	return out
}

// none fails t with each call's stack when anything but a periodic loop
// called the store since.
func (c *countingStore) none(t *testing.T, since time.Time, what string) {
	t.Helper()
	calls := c.since(since)
	for _, sc := range calls {
		t.Logf("store.%s called from:\n%s", sc.method, sc.stack)
	}
	if len(calls) > 0 {
		t.Fatalf("%s called the store %d times (%v); want none", what, len(calls), c.methods(since))
	}
}

// Every method of store.Store, noted, then passed on.

func (c *countingStore) AccessExpiries(ctx context.Context, a1 string, a2 []string) (map[string]time.Time, error) {
	return c.call("AccessExpiries").AccessExpiries(ctx, a1, a2)
}
func (c *countingStore) AccessExpiry(ctx context.Context, a1 string, a2 string) (time.Time, error) {
	return c.call("AccessExpiry").AccessExpiry(ctx, a1, a2)
}
func (c *countingStore) AddManaged(ctx context.Context, a1 ...store.Membership) error {
	return c.call("AddManaged").AddManaged(ctx, a1...)
}
func (c *countingStore) AddSweepItems(ctx context.Context, a1 int64, a2 []store.SweepItem) error {
	return c.call("AddSweepItems").AddSweepItems(ctx, a1, a2)
}
func (c *countingStore) AppState(ctx context.Context, a1 string, a2 string) (store.AppState, error) {
	return c.call("AppState").AppState(ctx, a1, a2)
}
func (c *countingStore) AppStates(ctx context.Context, a1 string, a2 string, a3 int) ([]store.AppState, error) {
	return c.call("AppStates").AppStates(ctx, a1, a2, a3)
}
func (c *countingStore) AppStatesOf(ctx context.Context, a1 string, a2 []string) ([]store.AppState, error) {
	return c.call("AppStatesOf").AppStatesOf(ctx, a1, a2)
}
func (c *countingStore) Append(ctx context.Context, a1 ...store.Event) error {
	stamps := make([]time.Time, len(a1))
	for i, ev := range a1 {
		stamps[i] = ev.Time
	}
	return c.call("Append", stamps...).Append(ctx, a1...)
}
func (c *countingStore) Audit(ctx context.Context, a1 store.AuditFilter) ([]store.Event, error) {
	return c.call("Audit").Audit(ctx, a1)
}
func (c *countingStore) Bind(ctx context.Context, a1 store.Binding) (store.Binding, error) {
	return c.call("Bind").Bind(ctx, a1)
}
func (c *countingStore) Binding(ctx context.Context, a1 string, a2 string) (store.Binding, error) {
	return c.call("Binding").Binding(ctx, a1, a2)
}
func (c *countingStore) BindingByUsername(ctx context.Context, a1 string) (store.Binding, error) {
	return c.call("BindingByUsername").BindingByUsername(ctx, a1)
}
func (c *countingStore) Bindings(ctx context.Context, a1 string, a2 int) ([]store.Binding, error) {
	return c.call("Bindings").Bindings(ctx, a1, a2)
}
func (c *countingStore) Blob(ctx context.Context, a1 string) ([]byte, time.Time, error) {
	return c.call("Blob").Blob(ctx, a1)
}
func (c *countingStore) BlobKeys(ctx context.Context, a1 string, a2 bool) ([]string, error) {
	return c.call("BlobKeys").BlobKeys(ctx, a1, a2)
}
func (c *countingStore) Brake(ctx context.Context, a1 store.BrakeCheck) (store.BrakeResult, error) {
	return c.call("Brake").Brake(ctx, a1)
}
func (c *countingStore) Claim(ctx context.Context, a1 string, a2 time.Time, a3 int, a4 time.Duration) ([]store.Job, error) {
	return c.call("Claim").Claim(ctx, a1, a2, a3, a4)
}
func (c *countingStore) Close() error { return c.call("Close").Close() }
func (c *countingStore) Complete(ctx context.Context, a1 int64, a2 string) error {
	return c.call("Complete").Complete(ctx, a1, a2)
}
func (c *countingStore) DeleteBlob(ctx context.Context, a1 string) error {
	return c.call("DeleteBlob").DeleteBlob(ctx, a1)
}
func (c *countingStore) DeleteHold(ctx context.Context, a1 string, a2 string) error {
	return c.call("DeleteHold").DeleteHold(ctx, a1, a2)
}
func (c *countingStore) DeleteSCIMGroup(ctx context.Context, a1 string, a2 string) error {
	return c.call("DeleteSCIMGroup").DeleteSCIMGroup(ctx, a1, a2)
}
func (c *countingStore) DeleteSCIMUser(ctx context.Context, a1 string, a2 string) error {
	return c.call("DeleteSCIMUser").DeleteSCIMUser(ctx, a1, a2)
}
func (c *countingStore) Enqueue(ctx context.Context, a1 store.Job) (int64, error) {
	return c.call("Enqueue").Enqueue(ctx, a1)
}
func (c *countingStore) FindSCIMGroup(ctx context.Context, a1 string, a2 string, a3 string) (store.SCIMGroup, error) {
	return c.call("FindSCIMGroup").FindSCIMGroup(ctx, a1, a2, a3)
}
func (c *countingStore) FindSCIMUser(ctx context.Context, a1 string, a2 string, a3 string) (store.SCIMUser, error) {
	return c.call("FindSCIMUser").FindSCIMUser(ctx, a1, a2, a3)
}
func (c *countingStore) FinishSweep(ctx context.Context, a1 store.SweepRun) error {
	return c.call("FinishSweep").FinishSweep(ctx, a1)
}
func (c *countingStore) ForgetSweepItems(ctx context.Context, a1 string, a2 int64) error {
	return c.call("ForgetSweepItems").ForgetSweepItems(ctx, a1, a2)
}
func (c *countingStore) Hold(ctx context.Context, a1 string, a2 string) (store.Hold, error) {
	return c.call("Hold").Hold(ctx, a1, a2)
}
func (c *countingStore) HoldCounts(ctx context.Context) (map[string]int, error) {
	return c.call("HoldCounts").HoldCounts(ctx)
}
func (c *countingStore) Holds(ctx context.Context, a1 string, a2 int, a3 int) ([]store.Hold, int, error) {
	return c.call("Holds").Holds(ctx, a1, a2, a3)
}
func (c *countingStore) Intend(ctx context.Context, a1 store.Job, a2 string, a3 time.Duration) (int64, error) {
	return c.call("Intend").Intend(ctx, a1, a2, a3)
}
func (c *countingStore) Lease(ctx context.Context, a1 string, a2 string, a3 time.Duration) (bool, error) {
	return c.call("Lease").Lease(ctx, a1, a2, a3)
}
func (c *countingStore) Managed(ctx context.Context, a1 string, a2 string) ([]store.Membership, error) {
	return c.call("Managed").Managed(ctx, a1, a2)
}
func (c *countingStore) MarkSwept(ctx context.Context, a1 int64, a2 string) error {
	return c.call("MarkSwept").MarkSwept(ctx, a1, a2)
}
func (c *countingStore) Ping(ctx context.Context) error { return c.call("Ping").Ping(ctx) }
func (c *countingStore) Profile(ctx context.Context, a1 string, a2 string) ([]byte, time.Time, error) {
	return c.call("Profile").Profile(ctx, a1, a2)
}
func (c *countingStore) PutAppState(ctx context.Context, a1 store.AppState) error {
	return c.call("PutAppState").PutAppState(ctx, a1)
}
func (c *countingStore) PutBlob(ctx context.Context, a1 string, a2 []byte) error {
	return c.call("PutBlob").PutBlob(ctx, a1, a2)
}
func (c *countingStore) PutProfile(ctx context.Context, a1 string, a2 string, a3 []byte, a4 time.Time) error {
	return c.call("PutProfile").PutProfile(ctx, a1, a2, a3, a4)
}
func (c *countingStore) PutSCIMGroup(ctx context.Context, a1 store.SCIMGroup) error {
	return c.call("PutSCIMGroup").PutSCIMGroup(ctx, a1)
}
func (c *countingStore) PutSCIMUser(ctx context.Context, a1 store.SCIMUser) error {
	return c.call("PutSCIMUser").PutSCIMUser(ctx, a1)
}
func (c *countingStore) Queue(ctx context.Context) (store.QueueStats, error) {
	return c.call("Queue").Queue(ctx)
}
func (c *countingStore) RecordLogin(ctx context.Context, a1 string, a2 string, a3 time.Time) error {
	return c.call("RecordLogin").RecordLogin(ctx, a1, a2, a3)
}
func (c *countingStore) RecordLogins(ctx context.Context, a1 ...store.Login) error {
	stamps := make([]time.Time, len(a1))
	for i, l := range a1 {
		stamps[i] = l.At
	}
	return c.call("RecordLogins", stamps...).RecordLogins(ctx, a1...)
}
func (c *countingStore) RecordSync(ctx context.Context, a1 store.AppState) error {
	return c.call("RecordSync").RecordSync(ctx, a1)
}
func (c *countingStore) Recorded(ctx context.Context, a1 string, a2 string, a3 string, a4 ...string) (store.Recorded, error) {
	return c.call("Recorded").Recorded(ctx, a1, a2, a3, a4...)
}
func (c *countingStore) ReleaseLease(ctx context.Context, a1 string, a2 string) error {
	return c.call("ReleaseLease").ReleaseLease(ctx, a1, a2)
}
func (c *countingStore) RemoveManaged(ctx context.Context, a1 string, a2 string, a3 ...string) error {
	return c.call("RemoveManaged").RemoveManaged(ctx, a1, a2, a3...)
}
func (c *countingStore) Retry(ctx context.Context, a1 int64, a2 string, a3 time.Time, a4 string) error {
	return c.call("Retry").Retry(ctx, a1, a2, a3, a4)
}
func (c *countingStore) Revocations(ctx context.Context, a1 int64) ([]store.Revocation, error) {
	return c.call("Revocations").Revocations(ctx, a1)
}
func (c *countingStore) Revoke(ctx context.Context, a1 store.Revocation) (int64, error) {
	return c.call("Revoke").Revoke(ctx, a1)
}
func (c *countingStore) SCIMGroup(ctx context.Context, a1 string, a2 string) (store.SCIMGroup, error) {
	return c.call("SCIMGroup").SCIMGroup(ctx, a1, a2)
}
func (c *countingStore) SCIMGroups(ctx context.Context, a1 string, a2 int, a3 int) ([]store.SCIMGroup, int, error) {
	return c.call("SCIMGroups").SCIMGroups(ctx, a1, a2, a3)
}
func (c *countingStore) SCIMUser(ctx context.Context, a1 string, a2 string) (store.SCIMUser, error) {
	return c.call("SCIMUser").SCIMUser(ctx, a1, a2)
}
func (c *countingStore) SCIMUserGroups(ctx context.Context, a1 string, a2 string) ([]string, error) {
	return c.call("SCIMUserGroups").SCIMUserGroups(ctx, a1, a2)
}
func (c *countingStore) SCIMUsers(ctx context.Context, a1 string, a2 int, a3 int) ([]store.SCIMUser, int, error) {
	return c.call("SCIMUsers").SCIMUsers(ctx, a1, a2, a3)
}
func (c *countingStore) SCIMUsersOf(ctx context.Context, a1 string, a2 string, a3 []string) ([]store.SCIMUser, error) {
	return c.call("SCIMUsersOf").SCIMUsersOf(ctx, a1, a2, a3)
}
func (c *countingStore) SeenOnce(ctx context.Context, a1 string, a2 time.Time) (bool, error) {
	return c.call("SeenOnce").SeenOnce(ctx, a1, a2)
}
func (c *countingStore) SetAccessExpiry(ctx context.Context, a1 string, a2 string, a3 time.Time) error {
	return c.call("SetAccessExpiry").SetAccessExpiry(ctx, a1, a2, a3)
}
func (c *countingStore) StartSweep(ctx context.Context, a1 store.SweepRun) (int64, error) {
	return c.call("StartSweep").StartSweep(ctx, a1)
}
func (c *countingStore) SweepItems(ctx context.Context, a1 int64, a2 store.SweepItemFilter) ([]store.SweepItem, error) {
	return c.call("SweepItems").SweepItems(ctx, a1, a2)
}
func (c *countingStore) SweepRuns(ctx context.Context, a1 int) ([]store.SweepRun, error) {
	return c.call("SweepRuns").SweepRuns(ctx, a1)
}
func (c *countingStore) Swept(ctx context.Context, a1 int64) (map[string]bool, error) {
	return c.call("Swept").Swept(ctx, a1)
}
func (c *countingStore) UnfinishedSweep(ctx context.Context, a1 string) (store.SweepRun, error) {
	return c.call("UnfinishedSweep").UnfinishedSweep(ctx, a1)
}
func (c *countingStore) UpdateSweep(ctx context.Context, a1 store.SweepRun) error {
	return c.call("UpdateSweep").UpdateSweep(ctx, a1)
}
func (c *countingStore) WaitingApps(ctx context.Context, a1 time.Time) ([]string, error) {
	return c.call("WaitingApps").WaitingApps(ctx, a1)
}
func (c *countingStore) Wake(ctx context.Context, a1 string, a2 time.Time) (int, error) {
	return c.call("Wake").Wake(ctx, a1, a2)
}
