package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/usherhq/usher/jit"
	"github.com/usherhq/usher/store"
)

// A burst of SCIM deactivations past acme's brake (3 within an hour):
// every push is answered as usual, three people are deactivated in every
// app, the rest are held and listed on the admin page; an admin releases
// one and drops another, and the IdP pushing the last one active again
// withdraws its hold.
func TestSCIMBrakeHoldsABurst(t *testing.T) {
	t.Parallel()
	e := startEnvWith(t, envOptions{Apps: true, Mapping: jitMapping, SCIM: true, SCIMBrake: "{max_count: 3, window: 1h}"})
	const people = 6
	ids := map[string]string{} // username → SCIM id
	var names []string
	for i := range people {
		name := fmt.Sprintf("p%d", i)
		names = append(names, name)
		ids[name] = scimID(t, e.scimOK("POST", "/Users", scimUser("00u-"+name, name, name+"@acme.test"), http.StatusCreated))
	}
	e.wantActive(t, names...)

	// The burst: every PATCH at once, as a misassigned group in the IdP
	// sends them.
	var wg sync.WaitGroup
	codes := make([]int, people)
	for i, name := range names {
		wg.Add(1)
		go func() {
			defer wg.Done()
			codes[i], _ = e.scimDo("PATCH", "/Users/"+ids[name], "scim-acme", `{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
				"Operations":[{"op":"Replace","path":"active","value":"False"}]}`)
		}()
	}
	wg.Wait()
	for i, c := range codes {
		if c != http.StatusOK {
			t.Errorf("PATCH of %s: %d, want 200 whether held or not", names[i], c)
		}
	}
	var removed, held []string
	for _, name := range names {
		if u, _ := e.apps["jira"].User(name); u.Active {
			held = append(held, name)
		} else {
			removed = append(removed, name)
		}
	}
	if len(removed) != 3 || len(held) != 3 {
		t.Fatalf("removed %v and held %v; want 3 and 3", removed, held)
	}
	e.wantInactive(t, removed...)
	e.wantActive(t, held...)

	// The admin page lists them, with the brake's numbers.
	page := e.adminGet(t, "/admin/holds/acme")
	for _, name := range held {
		if !strings.Contains(page, ">"+name+"</a>") {
			t.Errorf("held %s not on the admin page", name)
		}
	}
	if !strings.Contains(page, "3 removed and") || !strings.Contains(page, "limit 3 of 6 people") || !strings.Contains(page, "scim: deactivated") {
		t.Errorf("admin page lacks the brake's numbers:\n%s", page)
	}
	if over := e.adminGet(t, "/admin/"); !strings.Contains(over, "holding 3") || !strings.Contains(over, "verified_email") {
		t.Errorf("overview lacks acme's brake state or adoption policy")
	}
	if api := holdSubjects(t, e); !slices.Equal(api, subjectsOf(held)) {
		t.Errorf("API holds %v, want %v", api, subjectsOf(held))
	}

	// Release the first: deactivated everywhere, as the IdP asked.
	body := e.adminPost(t, "/admin/api/holds/acme/00u-"+held[0]+"/release", http.StatusOK)
	if !strings.Contains(body, `"status": "released"`) || !strings.Contains(body, "jira: removed") {
		t.Errorf("release: %s", body)
	}
	e.wantInactive(t, held[0])
	// Drop the second: stays active.
	e.adminPost(t, "/admin/api/holds/acme/00u-"+held[1]+"/drop", http.StatusOK)
	e.wantActive(t, held[1])
	if code, body := e.adminDo(t, "POST", "/admin/api/holds/acme/00u-"+held[1]+"/drop"); code != http.StatusNotFound {
		t.Errorf("second drop: %d %s", code, body)
	}
	// The IdP changes its mind about the third.
	e.scimOK("PATCH", "/Users/"+ids[held[2]], `{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
		"Operations":[{"op":"replace","value":{"active":true}}]}`, http.StatusOK)
	e.wantActive(t, held[2])
	if api := holdSubjects(t, e); len(api) != 0 {
		t.Errorf("holds left: %v", api)
	}

	// The audit log tells the story; the metrics count the holds.
	for action, n := range map[jit.Action]int{jit.ActHeld: 3, jit.ActHoldReleased: 1, jit.ActHoldDropped: 2} {
		evs, err := e.m.store.Audit(t.Context(), store.AuditFilter{Action: string(action)})
		if err != nil || len(evs) != n {
			t.Errorf("%s: %d entries (%v), want %d", action, len(evs), err, n)
		}
	}
	if m := e.adminGet(t, "/metrics"); !strings.Contains(m, `usher_scim_brake_held_total{idp="acme"} 3`) {
		t.Errorf("metrics lack the held count")
	}
}

func subjectsOf(names []string) []string {
	var out []string
	for _, n := range names {
		out = append(out, "00u-"+n)
	}
	slices.Sort(out)
	return out
}

// holdSubjects lists acme's held subjects through the admin API.
func holdSubjects(t *testing.T, e *env) []string {
	t.Helper()
	var out struct {
		Holds []struct{ Subject string } `json:"holds"`
	}
	if err := json.Unmarshal([]byte(e.adminGet(t, "/admin/api/holds/acme")), &out); err != nil {
		t.Fatal(err)
	}
	var subs []string
	for _, h := range out.Holds {
		subs = append(subs, h.Subject)
	}
	slices.Sort(subs)
	return subs
}
