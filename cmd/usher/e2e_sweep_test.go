package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/usherhq/usher/sweep"
)

const sweepConfig = `sweeps:
  - name: expired
    idps: [acme]
    sources: {access_expiry: true}
    protected_users: [localadmin]
    max_share: 1
`

func TestSweepCommandDeactivatesAndEndsSessions(t *testing.T) {
	t.Parallel()
	e := startEnvWith(t, envOptions{Apps: true, Mapping: jitMapping, Extra: sweepConfig})
	ctx := context.Background()
	alice := e.browser()
	wantStatus(t, e.login(alice, "/jira/", "acme", "alice", "pw-alice"), http.StatusOK)
	wantStatus(t, e.login(e.browser(), "/jira/", "globex", "bob", "pw-bob"), http.StatusOK)

	// An admin set alice's access to end yesterday.
	if err := e.m.store.SetAccessExpiry(ctx, "acme", "00u-alice", time.Now().Add(-24*time.Hour)); err != nil {
		t.Fatal(err)
	}

	// The dry run lists alice in every app and changes nothing.
	code, out, errOut := runCLI(t, "sweep", "--config", e.cfgPath, "--dry-run", "--json")
	if code != 0 {
		t.Fatalf("sweep --dry-run: exit %d: %s", code, errOut)
	}
	var doc struct {
		Runs []struct {
			DryRun  bool `json:"dry_run"`
			Planned int
			Plan    struct {
				Items []struct{ Username, App, Action string }
			}
		}
	}
	if err := json.Unmarshal([]byte(out), &doc); err != nil || len(doc.Runs) != 1 {
		t.Fatalf("dry run JSON (%v), want one run:\n%s", err, out)
	}
	res := doc.Runs[0]
	if !res.DryRun || res.Planned != 4 {
		t.Fatalf("dry run planned %d (dry=%v), want alice in 4 apps:\n%s", res.Planned, res.DryRun, out)
	}
	if u, _ := e.apps["jira"].User("alice"); !u.Active {
		t.Fatal("the dry run deactivated alice")
	}
	code, out, _ = runCLI(t, "sweep", "--config", e.cfgPath, "--dry-run")
	if code != 0 || !strings.Contains(out, "alice") || !strings.Contains(out, "dry run") {
		t.Fatalf("dry-run table (exit %d):\n%s", code, out)
	}

	// The real sweep, from another process's worth of usher: alice is
	// deactivated, bob (another IdP) untouched, and alice's session on
	// the running usher is refused within its revocation poll.
	if code, out, errOut := runCLI(t, "sweep", "--config", e.cfgPath); code != 0 {
		t.Fatalf("sweep: exit %d\n%s\n%s", code, out, errOut)
	}
	for app, s := range e.apps {
		if u, _ := s.User("alice"); u.Active && app != "bitbucket" {
			t.Errorf("%s: alice still active", app)
		}
		if u, _ := s.User("bob"); !u.Active {
			t.Errorf("%s: bob was deactivated", app)
		}
		if u, _ := s.User("localadmin"); !u.Active {
			t.Errorf("%s: the local admin was deactivated", app)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		resp := e.get(alice, e.url+"/jira/")
		if resp.StatusCode == http.StatusFound {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("alice's session still works 5 s after the sweep: %d", resp.StatusCode)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// `usher sweep --json` prints one JSON document for all the policies it
// ran; a failed sweep names itself once in its error, and its JSON log
// lines carry the "sweep" key once.
func TestSweepCommandJSONAndNames(t *testing.T) {
	t.Parallel()
	e := startEnvWith(t, envOptions{Apps: true, Mapping: jitMapping, Extra: `log: {format: json}
sweeps:
  - name: expired
    idps: [acme]
    sources: {access_expiry: true}
    max_share: 1
  - name: idle
    idps: [acme, globex]
    sources: {inactive_days: 90}
    max_share: 1
  - name: strict
    idps: [acme]
    sources: {access_expiry: true}
`})
	wantStatus(t, e.login(e.browser(), "/jira/", "acme", "alice", "pw-alice"), http.StatusOK)
	if err := e.m.store.SetAccessExpiry(context.Background(), "acme", "00u-alice", time.Now().Add(-time.Hour)); err != nil {
		t.Fatal(err)
	}

	type run struct {
		Policy  string
		DryRun  bool `json:"dry_run"`
		Planned int
		Blocked bool
		Error   string
	}
	var doc struct{ Runs []run }
	code, out, errOut := runCLI(t, "sweep", "--config", e.cfgPath, "--dry-run", "--json")
	if code != 0 {
		t.Fatalf("sweep --dry-run --json: exit %d: %s", code, errOut)
	}
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		t.Fatalf("not one JSON document: %v\n%s", err, out)
	}
	var got []string
	for _, r := range doc.Runs {
		got = append(got, fmt.Sprintf("%s dry=%v planned=%d blocked=%v", r.Policy, r.DryRun, r.Planned, r.Blocked))
	}
	if want := "expired dry=true planned=4 blocked=false|idle dry=true planned=0 blocked=false|strict dry=true planned=4 blocked=true"; strings.Join(got, "|") != want {
		t.Fatalf("runs %q, want %q\n%s", got, want, out)
	}

	// The safety valve refuses the strict policy: an error, and a log line.
	code, out, errOut = runCLI(t, "sweep", "--config", e.cfgPath, "--policy", "strict", "--json")
	if code != 1 {
		t.Fatalf("blocked sweep: exit %d, want 1\n%s%s", code, out, errOut)
	}
	doc.Runs = nil
	if err := json.Unmarshal([]byte(out), &doc); err != nil || len(doc.Runs) != 1 || !doc.Runs[0].Blocked || doc.Runs[0].Error == "" {
		t.Fatalf("blocked sweep JSON (%v):\n%s", err, out)
	}
	if n := strings.Count(doc.Runs[0].Error, "strict"); n != 1 {
		t.Errorf("the run's error names the sweep %d times: %q", n, doc.Runs[0].Error)
	}
	var cmdErr, logLine string
	for line := range strings.Lines(errOut) {
		switch {
		case strings.HasPrefix(line, "usher sweep: "):
			cmdErr = line
		case strings.Contains(line, `"msg":"sweep blocked by safety valve"`):
			logLine = line
		}
	}
	if !strings.HasPrefix(cmdErr, "usher sweep: sweep strict: ") || strings.Count(cmdErr, "strict") != 1 {
		t.Errorf("command error %q, want the sweep named once", cmdErr)
	}
	if strings.Count(logLine, `"sweep":`) != 1 || !strings.Contains(logLine, `"sweep":"strict"`) {
		t.Errorf("log line %q, want one \"sweep\" key", logLine)
	}
}

// A large plan reaches the admin page with its exact counts and how many
// items it does not list.
func TestPlanViewOfALargePlan(t *testing.T) {
	p := &sweep.Plan{Policy: "leavers", Action: sweep.Deactivate, Managed: 9000, Planned: 4000, Skips: 2, Omitted: 4001,
		Items: []sweep.Item{{IdP: "okta", Subject: "s", Username: "bob", App: "jira", Action: sweep.Deactivate}}}
	res := &sweep.Result{Applied: 3999, Failed: 1, Items: []sweep.Outcome{{Item: p.Items[0], Outcome: "applied"}}, Omitted: 3999}
	v := planView(p, res)
	if v.Managed != 9000 || v.Omitted != 4001 || v.Total() != 4002 || v.Counts["deactivate"] != 4000 || v.Counts["skip"] != 2 ||
		v.Applied != 3999 || v.Failed != 1 || len(v.Items) != 1 || v.Items[0].Outcome != "applied" {
		t.Errorf("view %+v", v)
	}
}
