package main

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"
)

const sweepConfig = `sweeps:
  - name: expired
    idps: [acme]
    sources: {access_expiry: true}
    protected_users: [localadmin]
    max_share: 1
`

func TestSweepCommandDeactivatesAndEndsSessions(t *testing.T) {
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
	var res struct {
		DryRun  bool `json:"dry_run"`
		Planned int
		Plan    struct {
			Items []struct{ Username, App, Action string }
		}
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("dry run JSON: %v\n%s", err, out)
	}
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
