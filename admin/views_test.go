package admin

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/usherhq/usher/dirsync"
	"github.com/usherhq/usher/store"
)

// seed stores what a few logins, syncs, a failed job and a blocked sweep
// leave behind.
func seed(t *testing.T, st store.Store) {
	t.Helper()
	ctx := context.Background()
	for _, b := range []store.Binding{
		{IdP: "okta", Subject: "sub-alice", Username: "alice"},
		{IdP: "okta", Subject: "00u-bob", Username: "bob"},
		{IdP: "entra", Subject: "abc/def", Username: "carol"},
	} {
		if _, err := st.Bind(ctx, b); err != nil {
			t.Fatalf("bind %s: %v", b.Username, err)
		}
	}
	login := func(email, secret string) string {
		d, _ := json.Marshal(map[string]any{
			"claims": map[string]any{
				"email": email, "groups": []string{"eng", "ops"}, "client_secret": secret,
				"nested": map[string]any{"access_token": "tok-" + secret, "dept": "R&D"},
			},
			"profile": map[string]any{"username": strings.Split(email, "@")[0], "email": email, "groups": []string{"jira-users"}},
		})
		return string(d)
	}
	evs := []store.Event{
		{Time: t0.Add(-3 * time.Hour), Action: "login.denied", IdP: "okta", Subject: "sub-alice", Outcome: "refused", Detail: "not in group jira-access"},
		{Time: t0.Add(-2 * time.Hour), Action: "login", IdP: "okta", Subject: "sub-alice", Username: "alice", Actor: "login", Outcome: "ok", Detail: login("alice@example.com", "s3cr3t-value")},
		{Time: t0.Add(-2 * time.Hour), Action: "user.create", IdP: "okta", Subject: "sub-alice", Username: "alice", App: "jira", Actor: "login", Outcome: "ok", Detail: "login: created user alice"},
		{Time: t0.Add(-2 * time.Hour), Action: "group.add", IdP: "okta", Subject: "sub-alice", Username: "alice", App: "confluence", Actor: "login", Outcome: "error", Detail: "login: add confluence-users: 503"},
		{Time: t0.Add(-time.Hour), Action: "login", IdP: "okta", Subject: "00u-bob", Username: "bob", Actor: "login", Outcome: "ok", Detail: login("robert@corp.example", "bobsecret")},
		{Time: t0.Add(-30 * time.Minute), Action: "login", IdP: "entra", Subject: "abc/def", Username: "carol", Actor: "login", Outcome: "ok", Detail: login("carol@example.com", "c")},
	}
	if err := st.Append(ctx, evs...); err != nil {
		t.Fatalf("append: %v", err)
	}
	if err := st.PutAppState(ctx, store.AppState{App: "jira", Username: "alice", IdP: "okta", Subject: "sub-alice", Hash: "h-4f2a", SyncedAt: t0.Add(-2 * time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if err := st.AddManaged(ctx, store.Membership{App: "jira", Username: "alice", Group: "jira-users", IdP: "okta", Rule: "map[0]", AddedAt: t0.Add(-2 * time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Enqueue(ctx, store.Job{Kind: "reconcile", App: "confluence", Key: "alice", Payload: []byte(`{}`), NotBefore: t0.Add(-time.Hour), CreatedAt: t0.Add(-time.Hour)}); err != nil {
		t.Fatal(err)
	}
	jobs, err := st.Claim(ctx, "w1", t0, 10, time.Minute)
	if err != nil || len(jobs) != 1 {
		t.Fatalf("claim: %v %v", jobs, err)
	}
	if err := st.Retry(ctx, jobs[0].ID, "w1", t0.Add(time.Minute), "confluence down: 503 Service Unavailable"); err != nil {
		t.Fatal(err)
	}
	id, err := st.StartSweep(ctx, store.SweepRun{Policy: "nightly", Started: t0.Add(-24 * time.Hour), Planned: 40})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.FinishSweep(ctx, store.SweepRun{ID: id, Planned: 40, State: "blocked", Reason: "40 of 50 managed users (80%) exceeds max 10%", Finished: t0.Add(-24 * time.Hour)}); err != nil {
		t.Fatal(err)
	}
}

func TestSearch(t *testing.T) {
	e := newEnv(t)
	seed(t, e.store)
	cookie := e.loginCookie()
	for _, tc := range []struct {
		q, want, notWant, match string
	}{
		{"alice", "sub-alice", "00u-bob", "username"},
		{"ALI", "sub-alice", "00u-bob", "username"},
		{"00u-b", "00u-bob", "sub-alice", "subject"},
		{"robert@corp", "00u-bob", "sub-alice", "email"},
		{"abc/def", "carol", "bob", "subject"},
	} {
		r := e.do("GET", "/admin/users?"+url.Values{"q": {tc.q}}.Encode(), nil, "Cookie", cookie)
		if r.status != http.StatusOK || !strings.Contains(r.body, tc.want) || strings.Contains(r.body, tc.notWant) {
			t.Errorf("search %q: %d, want %q and not %q in:\n%s", tc.q, r.status, tc.want, tc.notWant, r.body)
		}
		r = e.do("GET", "/admin/api/users?"+url.Values{"q": {tc.q}}.Encode(), nil, bearer(adminToken)...)
		var out struct{ Users []bindingJSON }
		if err := json.Unmarshal([]byte(r.body), &out); err != nil || len(out.Users) != 1 || out.Users[0].Match != tc.match {
			t.Errorf("API search %q: %v %+v, want one hit by %s", tc.q, err, out.Users, tc.match)
		}
	}
	if r := e.do("GET", "/admin/users?q=nobody-here", nil, "Cookie", cookie); !strings.Contains(r.body, "Nobody matches") {
		t.Errorf("empty search says nothing: %s", r.body)
	}
	if r := e.do("GET", "/admin/users", nil, "Cookie", cookie); !strings.Contains(r.body, "carol") || !strings.Contains(r.body, "bob") {
		t.Errorf("browsing lists nobody: %s", r.body)
	}
}

func TestTimeline(t *testing.T) {
	e := newEnv(t)
	seed(t, e.store)
	cookie := e.loginCookie()
	r := e.do("GET", "/admin/users/okta/sub-alice", nil, "Cookie", cookie)
	if r.status != http.StatusOK {
		t.Fatalf("timeline: %d %s", r.status, r.body)
	}
	for _, want := range []string{
		"Claims received", "Profile produced", "alice@example.com", "eng, ops", "jira-users", "R&amp;D",
		"created user alice", "add confluence-users: 503", "not in group jira-access", // the refusal before any binding
		"h-4f2a", "map[0]", "Sync now", "[redacted]", "accountId</span> <code>5b10ac8d82e05b22cc7d4ef5</code>",
	} {
		if !strings.Contains(r.body, want) {
			t.Errorf("timeline lacks %q", want)
		}
	}
	if strings.Contains(r.body, "Reinstate") {
		t.Error("Reinstate offered for a person nobody removed")
	}
	for _, secret := range []string{"s3cr3t-value", "tok-s3cr3t"} {
		if strings.Contains(r.body, secret) {
			t.Errorf("timeline shows secret %q", secret)
		}
	}
	if strings.Contains(r.body, "robert@corp") {
		t.Error("timeline shows another person's login")
	}
	// Newest first: the refusal three hours ago comes after the login.
	if strings.Index(r.body, "Claims received") > strings.Index(r.body, "not in group jira-access") {
		t.Error("timeline is not newest first")
	}

	r = e.do("GET", "/admin/api/users/okta/sub-alice", nil, bearer(adminToken)...)
	var tl timelineJSON
	if err := json.Unmarshal([]byte(r.body), &tl); err != nil {
		t.Fatalf("API timeline %q: %v", r.body, err)
	}
	var login *eventView
	for i := range tl.Events {
		if tl.Events[i].Action == "login" {
			login = &tl.Events[i]
		}
	}
	if login == nil || login.Claims["client_secret"] != redacted || login.Claims["email"] != "alice@example.com" ||
		login.Claims["nested"].(map[string]any)["access_token"] != redacted || login.Profile["username"] != "alice" {
		t.Errorf("API login event: %+v", login)
	}
	if len(tl.Apps) != 2 || tl.Apps[1].App != "jira" || tl.Apps[1].Hash != "h-4f2a" || len(tl.Apps[1].Managed) != 1 ||
		tl.Apps[0].AccountID != "5b10ac8d82e05b22cc7d4ef5" || tl.Apps[1].AccountID != "" {
		t.Errorf("API apps: %+v", tl.Apps)
	}

	// A subject with a slash has its own page.
	if r := e.do("GET", userURL("entra", "abc/def"), nil, "Cookie", cookie); r.status != http.StatusOK || !strings.Contains(r.body, "carol@example.com") {
		t.Errorf("timeline of abc/def: %d", r.status)
	}
	if r := e.do("GET", "/admin/users/okta/nobody", nil, "Cookie", cookie); r.status != http.StatusNotFound {
		t.Errorf("unknown identity: %d, want 404", r.status)
	}

	tok := csrfField.FindStringSubmatch(e.do("GET", "/admin/users/okta/sub-alice", nil, "Cookie", cookie).body)[1]
	r = e.do("POST", "/admin/users/okta/sub-alice/sync", url.Values{"csrf": {tok}}, "Cookie", cookie)
	if r.status != http.StatusOK || !strings.Contains(r.body, "jira: added alice to jira-users") {
		t.Errorf("sync now: %d, changes not shown", r.status)
	}
}

func TestAuditFiltersAndExport(t *testing.T) {
	e := newEnv(t)
	seed(t, e.store)
	cookie := e.loginCookie()
	for _, tc := range []struct {
		query    string
		want     []string
		notWants []string
	}{
		{"app=jira", []string{"created user alice"}, []string{"confluence-users", "carol"}},
		{"user=bob&action=login", []string{"robert@corp.example"}, []string{"alice@example.com"}},
		{"idp=entra", []string{"carol@example.com"}, []string{"robert@corp"}},
		{"since=" + t0.Add(-90*time.Minute).Format("2006-01-02T15:04") + "&until=" + t0.Add(-45*time.Minute).Format("2006-01-02T15:04"),
			[]string{"robert@corp"}, []string{"carol@example.com", "alice@example.com"}},
	} {
		r := e.do("GET", "/admin/audit?"+tc.query, nil, "Cookie", cookie)
		if r.status != http.StatusOK {
			t.Fatalf("audit %s: %d %s", tc.query, r.status, r.body)
		}
		for _, w := range tc.want {
			if !strings.Contains(r.body, w) {
				t.Errorf("audit %s lacks %q", tc.query, w)
			}
		}
		for _, w := range tc.notWants {
			if strings.Contains(r.body, w) {
				t.Errorf("audit %s shows %q", tc.query, w)
			}
		}
		if strings.Contains(r.body, "s3cr3t-value") || strings.Contains(r.body, "bobsecret") {
			t.Errorf("audit %s shows a secret", tc.query)
		}
	}
	if r := e.do("GET", "/admin/audit?since=yesterday", nil, "Cookie", cookie); r.status != http.StatusBadRequest {
		t.Errorf("bad since: %d, want 400", r.status)
	}

	r := e.do("GET", "/admin/audit.jsonl?idp=okta&action=login", nil, "Cookie", cookie)
	if r.status != http.StatusOK || !strings.HasPrefix(r.header.Get("Content-Type"), "application/x-ndjson") {
		t.Fatalf("export: %d %q", r.status, r.header.Get("Content-Type"))
	}
	lines := strings.Split(strings.TrimSpace(r.body), "\n")
	if len(lines) != 2 {
		t.Fatalf("export has %d lines, want the 2 okta logins:\n%s", len(lines), r.body)
	}
	for _, l := range lines {
		var ev eventView
		if err := json.Unmarshal([]byte(l), &ev); err != nil {
			t.Fatalf("line %q: %v", l, err)
		}
		if ev.IdP != "okta" || ev.Action != "login" || strings.Contains(ev.Detail, "s3cr3t") || strings.Contains(ev.Detail, "bobsecret") {
			t.Errorf("export line %+v", ev)
		}
	}
}

// The store pages only by time; an export must neither repeat nor drop
// events that share a millisecond, even more of them than a batch holds.
func TestExportPagesThroughSameMillisecond(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	const n = exportBatch + exportBatch/2 + 7
	evs := make([]store.Event, n)
	for i := range evs {
		at := t0
		if i >= exportBatch+exportBatch/2 {
			at = t0.Add(-time.Second) // a few older ones after the big block
		}
		evs[i] = store.Event{Time: at, Action: "bulk", Outcome: "ok"}
	}
	if err := e.store.Append(ctx, evs...); err != nil {
		t.Fatal(err)
	}
	r := e.do("GET", "/admin/audit.jsonl?action=bulk", nil, bearer(adminToken)...)
	sc := bufio.NewScanner(strings.NewReader(r.body))
	seen := map[int64]bool{}
	var last eventView
	for sc.Scan() {
		var ev eventView
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			t.Fatalf("line %q: %v", sc.Text(), err)
		}
		if seen[ev.ID] {
			t.Fatalf("event %d exported twice", ev.ID)
		}
		if len(seen) > 0 && (ev.Time.After(last.Time) || ev.Time.Equal(last.Time) && ev.ID > last.ID) {
			t.Fatalf("event %d after %d breaks newest-first order", ev.ID, last.ID)
		}
		seen[ev.ID], last = true, ev
	}
	if len(seen) != n {
		t.Fatalf("exported %d events, want %d", len(seen), n)
	}
	r = e.do("GET", "/admin/audit.jsonl?action=bulk&limit=1200", nil, bearer(adminToken)...)
	if got := strings.Count(r.body, "\n"); got != 1200 {
		t.Errorf("limit=1200 exported %d", got)
	}
}

func TestQueuePage(t *testing.T) {
	e := newEnv(t)
	seed(t, e.store)
	cookie := e.loginCookie()
	r := e.do("GET", "/admin/queue", nil, "Cookie", cookie)
	for _, want := range []string{"Jobs waiting<b>1</b>", "confluence down: 503 Service Unavailable", "1h00m ago"} {
		if !strings.Contains(r.body, want) {
			t.Errorf("queue page lacks %q:\n%s", want, r.body)
		}
	}
	r = e.do("GET", "/admin/api/queue", nil, bearer(adminToken)...)
	var q queueJSON
	if err := json.Unmarshal([]byte(r.body), &q); err != nil || q.Depth != 1 || len(q.LastErrors) != 1 || q.LastErrors[0].Attempts != 1 {
		t.Errorf("API queue: %v %+v", err, q)
	}
	if r := e.do("GET", "/admin/", nil, "Cookie", cookie); !strings.Contains(r.body, "Bound identities<b>3</b>") || !strings.Contains(r.body, "oldest 1h00m ago") {
		t.Errorf("overview lacks counts:\n%s", r.body)
	}
}

func TestSweepsPageAndPlan(t *testing.T) {
	e := newEnv(t)
	seed(t, e.store)
	cookie := e.loginCookie()
	r := e.do("GET", "/admin/sweeps", nil, "Cookie", cookie)
	for _, want := range []string{"nightly", "Plan (dry run)", "Run now", "Dry run now", "blocked by the safety valve", "exceeds max 10%"} {
		if !strings.Contains(r.body, want) {
			t.Errorf("sweeps page lacks %q", want)
		}
	}
	r = e.do("GET", "/admin/sweeps/nightly/plan", nil, "Cookie", cookie)
	for _, want := range []string{"nothing was changed", "bob", "deactivate", "SCIM: active=false", "Managed identities<b>300</b>",
		"Planned items<b>42</b>deactivate: 40 skip: 2", "and 41 more items, not listed: the first 1 are shown"} {
		if !strings.Contains(r.body, want) {
			t.Errorf("plan page lacks %q", want)
		}
	}
	if r := e.do("GET", "/admin/sweeps/other/plan", nil, "Cookie", cookie); r.status != http.StatusNotFound {
		t.Errorf("unknown policy plan: %d, want 404", r.status)
	}
	r = e.do("GET", "/admin/api/sweeps", nil, bearer(adminToken)...)
	var out struct {
		Policies []string
		Runs     []sweepRunJSON
	}
	if err := json.Unmarshal([]byte(r.body), &out); err != nil || len(out.Runs) != 1 || out.Runs[0].State != "blocked" || out.Policies[0] != "nightly" {
		t.Errorf("API sweeps: %v %+v", err, out)
	}
	r = e.do("GET", "/admin/api/sweeps/nightly/plan", nil, bearer(adminToken)...)
	var plan SweepPlan
	if err := json.Unmarshal([]byte(r.body), &plan); err != nil || len(plan.Items) != 1 || plan.Items[0].Username != "bob" ||
		plan.Omitted != 41 || plan.Counts["deactivate"] != 40 {
		t.Errorf("API plan: %v %s", err, r.body)
	}
}

func TestConfigPage(t *testing.T) {
	e := newEnv(t)
	r := e.do("GET", "/admin/config", nil, "Cookie", e.loginCookie())
	if !strings.Contains(r.body, "<pre>listen: :8080") || !strings.Contains(r.body, "&lt;b&gt;x&lt;/b&gt;") {
		t.Errorf("config page does not show the YAML escaped:\n%s", r.body)
	}
	r = e.do("GET", "/admin/api/config", nil, bearer(adminToken)...)
	var out map[string]string
	if err := json.Unmarshal([]byte(r.body), &out); err != nil || !strings.HasPrefix(out["config"], "listen: :8080") {
		t.Errorf("API config: %v %q", err, r.body)
	}
}

func TestDirectoriesPage(t *testing.T) {
	e := newEnv(t)
	seed(t, e.store)
	cookie := e.loginCookie()
	r := e.do("GET", "/admin/directories", nil, "Cookie", cookie)
	if r.status != http.StatusOK {
		t.Fatalf("directories: %d %s", r.status, r.body)
	}
	for _, want := range []string{
		"<h2>corp</h2>", "every 15m", "automatic", "full sync since", "600 of about 1200 people read",
		"incomplete: graph: users page 3: 503", "admin:root", ">1100<", "Sync everyone now", "Dry run",
		`action="/admin/directories/corp/sync"`,
	} {
		if !strings.Contains(r.body, want) {
			t.Errorf("directories page lacks %q", want)
		}
	}
	tok := e.csrfFrom("/admin/directories", cookie)
	r = e.do("POST", "/admin/directories/corp/dry-run", url.Values{"csrf": {tok}}, "Cookie", cookie)
	for _, want := range []string{"Dry run: nothing was changed", "sub-zoe", "not in staff", "would create<b>1</b>"} {
		if !strings.Contains(r.body, want) {
			t.Errorf("dry-run page lacks %q:\n%s", want, r.body)
		}
	}
	r = e.do("POST", "/admin/directories/corp/sync", url.Values{"csrf": {tok}}, "Cookie", cookie)
	if r.status != http.StatusOK || !strings.Contains(r.body, "A full sync of corp started") {
		t.Errorf("start: %d %s", r.status, r.body)
	}
	e.actions.mu.Lock()
	e.actions.busy = true
	e.actions.mu.Unlock()
	if r := e.do("POST", "/admin/directories/corp/sync", url.Values{"csrf": {tok}}, "Cookie", cookie); r.status != http.StatusConflict {
		t.Errorf("start while busy: %d, want 409", r.status)
	}
	if r := e.do("POST", "/admin/directories/nope/sync", url.Values{"csrf": {tok}}, "Cookie", cookie); r.status != http.StatusNotFound {
		t.Errorf("unknown directory: %d, want 404", r.status)
	}

	// The user page offers a directory sync for okta's people only.
	if r := e.do("GET", "/admin/users/okta/sub-alice", nil, "Cookie", cookie); !strings.Contains(r.body, "Sync from directory corp") {
		t.Error("alice's page offers no directory sync")
	}
	if r := e.do("GET", "/admin/users/entra/abc%2Fdef", nil, "Cookie", cookie); strings.Contains(r.body, "Sync from directory") {
		t.Error("carol's IdP has no directory, yet her page offers a sync")
	}
	r = e.do("POST", "/admin/users/okta/sub-alice/directory-sync", url.Values{"csrf": {tok}}, "Cookie", cookie)
	if !strings.Contains(r.body, "from directory corp: updated") || !strings.Contains(r.body, "jira: added to jira-developers") {
		t.Errorf("directory sync of alice: %d %s", r.status, r.body)
	}
	if r := e.do("POST", "/admin/users/entra/abc%2Fdef/directory-sync", url.Values{"csrf": {tok}}, "Cookie", cookie); r.status != http.StatusNotFound {
		t.Errorf("directory sync for an IdP without one: %d, want 404", r.status)
	}
}

func TestDirectoriesAPI(t *testing.T) {
	e := newEnv(t)
	r := e.do("GET", "/admin/api/directories", nil, bearer(adminToken)...)
	var out struct {
		Directories []struct {
			Name    string
			Running *dirsync.Progress
			Runs    []dirsync.Result
		}
	}
	if err := json.Unmarshal([]byte(r.body), &out); err != nil || len(out.Directories) != 1 || out.Directories[0].Running == nil ||
		len(out.Directories[0].Runs) != 2 || out.Directories[0].Runs[1].Created != 1100 {
		t.Fatalf("API directories: %d %v %s", r.status, err, r.body)
	}
	if r := e.do("POST", "/admin/api/directories/corp/sync", nil, bearer(adminToken)...); r.status != http.StatusAccepted {
		t.Errorf("API sync: %d %s", r.status, r.body)
	}
	r = e.do("POST", "/admin/api/directories/corp/dry-run", nil, bearer(adminToken)...)
	var res dirsync.Result
	if r.status != http.StatusOK || json.Unmarshal([]byte(r.body), &res) != nil || !res.DryRun || len(res.Items) != 2 {
		t.Errorf("API dry run: %d %s", r.status, r.body)
	}
	r = e.do("POST", "/admin/api/users/okta/sub-alice/directory-sync", nil, bearer(adminToken)...)
	var it dirsync.Item
	if r.status != http.StatusOK || json.Unmarshal([]byte(r.body), &it) != nil || it.Outcome != dirsync.OutcomeUpdated {
		t.Errorf("API person sync: %d %s", r.status, r.body)
	}
	want := []string{"start corp admin:token", "dry corp admin:token", "person okta sub-alice admin:token"}
	if got := e.actions.Calls(); !slices.Equal(got, want) {
		t.Errorf("calls %q, want %q", got, want)
	}
}

// A removed person's page says who removed them and offers Reinstate,
// which shows its result like Sync now.
func TestReinstateOffered(t *testing.T) {
	e := newEnv(t)
	seed(t, e.store)
	ctx := t.Context()
	st, err := e.store.AppState(ctx, "jira", "alice")
	if err != nil {
		t.Fatal(err)
	}
	st.Deprovisioned, st.DeprovisionedAt, st.DeprovisionedSource, st.DeprovisionedReason = true, t0, "sweep", "inactive 90 days"
	if err := e.store.PutAppState(ctx, st); err != nil {
		t.Fatal(err)
	}
	cookie := e.loginCookie()
	r := e.do("GET", "/admin/users/okta/sub-alice", nil, "Cookie", cookie)
	if !strings.Contains(r.body, "inactive 90 days") || !strings.Contains(r.body, `/admin/users/okta/sub-alice/reinstate"`) {
		t.Fatalf("removed person's page lacks the removal or Reinstate: %s", r.body)
	}
	tok := e.csrfFrom("/admin/users/okta/sub-alice", cookie)
	r = e.do("POST", "/admin/users/okta/sub-alice/reinstate", url.Values{"csrf": {tok}}, "Cookie", cookie)
	if r.status != http.StatusOK || !strings.Contains(r.body, "Reinstate result") || !strings.Contains(r.body, "jira: reactivated alice") {
		t.Errorf("reinstate: %d %s", r.status, r.body)
	}
	r = e.do("POST", "/admin/api/users/okta/sub-alice/reinstate", nil, bearer(adminToken)...)
	if r.status != http.StatusOK || !strings.Contains(r.body, `"jira: reactivated alice"`) {
		t.Errorf("API reinstate: %d %s", r.status, r.body)
	}
}
