package jit

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/usherhq/usher/store"
	"github.com/usherhq/usher/targets/atlassiantest"
)

// brakeFixture is a fixture whose okta IdP has people s0..s<n-1>
// (user0..), each signed in (so provisioned in jira) and pushed over
// SCIM (so counted as the IdP's people), and the given brake.
func brakeFixture(t *testing.T, n int, br *Brake) *fixture {
	t.Helper()
	f := newFixture(t, atlassiantest.Jira)
	f.withMapping(t, "")
	if br != nil {
		f.l.Brakes = map[string]Brake{"okta": *br}
	}
	for i := range n {
		sub, name := fmt.Sprintf("s%d", i), fmt.Sprintf("user%d", i)
		if _, err := f.l.Admit(t.Context(), person(sub, name, "Engineering"), LoginVia("okta")); err != nil {
			t.Fatal(err)
		}
		if err := f.st.PutSCIMUser(t.Context(), store.SCIMUser{IdP: "okta", ID: "id-" + sub, UserName: name, Subject: sub,
			Active: true, Resource: []byte("{}"), Created: f.clock.Now(), Updated: f.clock.Now()}); err != nil {
			t.Fatal(err)
		}
	}
	return f
}

// push removes okta person sub as a SCIM deactivation would.
func (f *fixture) push(t *testing.T, sub string) []RemoveOutcome {
	t.Helper()
	outs, err := f.l.Remove(t.Context(), Removal{IdP: "okta", Subject: sub}, SCIMPush("okta", "scim: deactivated"))
	if err != nil {
		t.Fatalf("SCIM removal of %s: %v", sub, err)
	}
	return outs
}

// deactivated lists the people of s0..s<n-1> whose jira account is
// inactive and whose removal is recorded.
func (f *fixture) deactivated(t *testing.T, n int) []string {
	t.Helper()
	var out []string
	for i := range n {
		name := fmt.Sprintf("user%d", i)
		u, st := f.user(t, "jira", name), f.state(t, "jira", name)
		if u.Active == st.Deprovisioned {
			t.Errorf("%s: active %v but deprovisioned %v", name, u.Active, st.Deprovisioned)
		}
		if !u.Active {
			out = append(out, fmt.Sprintf("s%d", i))
		}
	}
	return out
}

func (f *fixture) held(t *testing.T) []string {
	t.Helper()
	hs, _, err := f.st.Holds(t.Context(), "okta", 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, h := range hs {
		out = append(out, h.Subject)
	}
	slices.Sort(out)
	return out
}

func subs(names ...string) []string { return names }

func TestSCIMBrake(t *testing.T) {
	count3 := &Brake{MaxCount: 3, Window: time.Hour}
	tests := []struct {
		name   string
		people int
		brake  *Brake
		// pushes are SCIM removals in order; "+90m" moves the clock.
		pushes []string
		// then runs after the pushes (an admin's release or drop, the IdP
		// changing its mind).
		then            func(t *testing.T, f *fixture)
		wantDeactivated []string
		wantHeld        []string
		wantRevoked     []string
		check           func(t *testing.T, f *fixture)
	}{
		{
			name: "no brake", people: 5, pushes: subs("s0", "s1", "s2", "s3", "s4"),
			wantDeactivated: subs("s0", "s1", "s2", "s3", "s4"),
			wantRevoked:     subs("s0", "s1", "s2", "s3", "s4"),
		},
		{
			name: "under the count", people: 5, brake: count3, pushes: subs("s0", "s1", "s2"),
			wantDeactivated: subs("s0", "s1", "s2"), wantRevoked: subs("s0", "s1", "s2"),
		},
		{
			name: "over the count", people: 6, brake: count3, pushes: subs("s0", "s1", "s2", "s3", "s4"),
			wantDeactivated: subs("s0", "s1", "s2"), wantHeld: subs("s3", "s4"),
			// Held people's sessions end too (held_sessions: revoke).
			wantRevoked: subs("s0", "s1", "s2", "s3", "s4"),
			check: func(t *testing.T, f *fixture) {
				h, err := f.st.Hold(t.Context(), "okta", "s4")
				if err != nil {
					t.Fatal(err)
				}
				if h.Username != "user4" || h.Removed != 3 || h.Holds != 1 || h.People != 6 || h.Limit != 3 || h.Window != time.Hour ||
					!h.SessionsRevoked || h.Reason != "scim: deactivated" {
					t.Errorf("hold %+v", h)
				}
				evs := f.events(t, ActHeld)
				if len(evs) != 2 || evs[0].Outcome != string(ResultHeld) || evs[0].Actor != "scim" ||
					!strings.Contains(evs[0].Detail, "3 removals and 1 held within 1h0m0s reach its limit of 3 for 6 people") {
					t.Errorf("held audit %+v", evs)
				}
				if len(f.events(t, ActDeprovision)) != 3 {
					t.Errorf("deprovision audit %+v", f.events(t, ActDeprovision))
				}
			},
		},
		{
			name: "over the share", people: 10, brake: &Brake{MaxShare: 0.2, Window: time.Hour}, pushes: subs("s0", "s1", "s2", "s3"),
			wantDeactivated: subs("s0", "s1"), wantHeld: subs("s2", "s3"), wantRevoked: subs("s0", "s1", "s2", "s3"),
		},
		{
			name: "the lower of count and share", people: 10, brake: &Brake{MaxCount: 1, MaxShare: 0.5, Window: time.Hour},
			pushes: subs("s0", "s1"), wantDeactivated: subs("s0"), wantHeld: subs("s1"), wantRevoked: subs("s0", "s1"),
		},
		{
			name: "removals leave the window, holds stay", people: 8, brake: &Brake{MaxCount: 2, Window: time.Hour},
			// s0, s1 pass; s2 held. An hour later the window has 0
			// removals and 1 hold: s3 passes, s4 is held.
			pushes:          subs("s0", "s1", "s2", "+61m", "s3", "s4"),
			wantDeactivated: subs("s0", "s1", "s3"), wantHeld: subs("s2", "s4"), wantRevoked: subs("s0", "s1", "s2", "s3", "s4"),
		},
		{
			name: "a person is held once", people: 6, brake: count3, pushes: subs("s0", "s1", "s2", "s3", "s3"),
			wantDeactivated: subs("s0", "s1", "s2"), wantHeld: subs("s3"), wantRevoked: subs("s0", "s1", "s2", "s3"),
			check: func(t *testing.T, f *fixture) {
				if evs := f.events(t, ActHeld); len(evs) != 1 {
					t.Errorf("held audit %+v", evs)
				}
			},
		},
		{
			name: "a removal that changes nothing passes uncounted", people: 6, brake: count3,
			// s0's second push (a delete after the deactivation) and
			// sweep-removed s5 change nothing: neither counts or is held.
			pushes:          subs("s0", "s0", "s1", "s5", "s2", "s3"),
			wantDeactivated: subs("s0", "s1", "s2", "s5"), wantHeld: subs("s3"),
			wantRevoked: subs("s5", "s0", "s0", "s1", "s5", "s2", "s3"),
		},
		{
			name: "sessions kept", people: 6, brake: &Brake{MaxCount: 1, Window: time.Hour, KeepSessions: true},
			pushes: subs("s0", "s1", "s2"), wantDeactivated: subs("s0"), wantHeld: subs("s1", "s2"), wantRevoked: subs("s0"),
			check: func(t *testing.T, f *fixture) {
				if h, err := f.st.Hold(t.Context(), "okta", "s1"); err != nil || h.SessionsRevoked {
					t.Errorf("hold %+v, %v", h, err)
				}
				if evs := f.events(t, ActHeld); len(evs) != 2 || !strings.Contains(evs[0].Detail, "sessions kept") {
					t.Errorf("held audit %+v", evs)
				}
			},
		},
		{
			name: "held person pushed active again", people: 6, brake: count3, pushes: subs("s0", "s1", "s2", "s3", "s4"),
			then: func(t *testing.T, f *fixture) {
				// What the SCIM hook does when the IdP says active again.
				if err := f.l.DropHold(t.Context(), "okta", "s3", SCIMPush("okta", "active")); err != nil {
					t.Fatal(err)
				}
				if err := f.l.DropHold(t.Context(), "okta", "s0", SCIMPush("okta", "active")); !errors.Is(err, ErrNotHeld) {
					t.Errorf("DropHold of a person not held = %v, want ErrNotHeld", err)
				}
			},
			wantDeactivated: subs("s0", "s1", "s2"), wantHeld: subs("s4"), wantRevoked: subs("s0", "s1", "s2", "s3", "s4"),
			check: func(t *testing.T, f *fixture) {
				evs := f.events(t, ActHoldDropped)
				if len(evs) != 1 || evs[0].Actor != "scim" || evs[0].Subject != "s3" || !strings.Contains(evs[0].Detail, "active again") {
					t.Errorf("dropped audit %+v", evs)
				}
			},
		},
		{
			name: "release", people: 6, brake: count3, pushes: subs("s0", "s1", "s2", "s3", "s4"),
			then: func(t *testing.T, f *fixture) {
				outs, err := f.l.Release(t.Context(), "okta", "s3", ByAdmin("ada", ""))
				if err != nil || len(outs) != 1 || !outs[0].Changed || outs[0].Held {
					t.Fatalf("Release = %+v, %v", outs, err)
				}
				if _, err := f.l.Release(t.Context(), "okta", "s3", ByAdmin("ada", "")); !errors.Is(err, ErrNotHeld) {
					t.Errorf("second Release = %v, want ErrNotHeld", err)
				}
			},
			wantDeactivated: subs("s0", "s1", "s2", "s3"), wantHeld: subs("s4"),
			// Released s3's sessions end again, as with any removal.
			wantRevoked: subs("s0", "s1", "s2", "s3", "s3", "s4"),
			check: func(t *testing.T, f *fixture) {
				// The removal is the IdP's: its "active" brings s3 back.
				if st := f.state(t, "jira", "user3"); st.DeprovisionedSource != "scim" {
					t.Errorf("released removal recorded as %q, want scim", st.DeprovisionedSource)
				}
				evs := f.events(t, ActHoldReleased)
				if len(evs) != 1 || evs[0].Actor != "admin:ada" || evs[0].Username != "user3" {
					t.Errorf("released audit %+v", evs)
				}
				if _, err := f.l.Admit(t.Context(), person("s3", "user3", "Engineering"), SCIMPush("okta", "active")); err != nil {
					t.Fatal(err)
				}
				if !f.user(t, "jira", "user3").Active {
					t.Error("the IdP's active push did not reinstate a released removal")
				}
			},
		},
		{
			name: "drop", people: 6, brake: count3, pushes: subs("s0", "s1", "s2", "s3", "s4"),
			then: func(t *testing.T, f *fixture) {
				if err := f.l.DropHold(t.Context(), "okta", "s3", ByAdmin("ada", "")); err != nil {
					t.Fatal(err)
				}
			},
			wantDeactivated: subs("s0", "s1", "s2"), wantHeld: subs("s4"), wantRevoked: subs("s0", "s1", "s2", "s3", "s4"),
			check: func(t *testing.T, f *fixture) {
				evs := f.events(t, ActHoldDropped)
				if len(evs) != 1 || evs[0].Actor != "admin:ada" || !strings.Contains(evs[0].Detail, "the IdP still says inactive") {
					t.Errorf("dropped audit %+v", evs)
				}
				// The IdP still says inactive: its next push is weighed
				// again, and held while the brake is full.
				if outs := f.push(t, "s3"); !outs[0].Held {
					t.Errorf("next push after a drop: %+v", outs)
				}
			},
		},
		{
			name: "release and drop all", people: 8, brake: &Brake{MaxCount: 2, Window: time.Hour},
			pushes: subs("s0", "s1", "s2", "s3", "s4", "s5", "s6"),
			then: func(t *testing.T, f *fixture) {
				if n, err := f.l.DropHolds(t.Context(), "okta", ByAdmin("ada", "")); err != nil || n != 5 {
					t.Fatalf("DropHolds = %d, %v", n, err)
				}
				// Half an hour later the IdP pushes two of them again
				// (the window is full): released all at once.
				f.clock.Advance(30 * time.Minute)
				f.push(t, "s2")
				f.push(t, "s3")
				if n, err := f.l.ReleaseHolds(t.Context(), "okta", ByAdmin("ada", "")); err != nil || n != 2 {
					t.Fatalf("ReleaseHolds = %d, %v", n, err)
				}
			},
			wantDeactivated: subs("s0", "s1", "s2", "s3"),
			wantRevoked:     subs("s0", "s1", "s2", "s3", "s4", "s5", "s6", "s2", "s3", "s2", "s3"),
			check: func(t *testing.T, f *fixture) {
				if n := len(f.events(t, ActHoldDropped)); n != 5 {
					t.Errorf("%d dropped entries, want 5", n)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := brakeFixture(t, tt.people, tt.brake)
			// A sweep removed s5 before: nothing left to take.
			if slices.Contains(tt.pushes, "s5") && strings.Contains(tt.name, "changes nothing") {
				if _, err := f.l.Remove(t.Context(), Removal{IdP: "okta", Subject: "s5"}, BySweep("leavers", 1, "inactive")); err != nil {
					t.Fatal(err)
				}
			}
			for _, p := range tt.pushes {
				if d, ok := strings.CutPrefix(p, "+"); ok {
					dur, err := time.ParseDuration(d)
					if err != nil {
						t.Fatal(err)
					}
					f.clock.Advance(dur)
					continue
				}
				outs := f.push(t, p)
				held := slices.ContainsFunc(outs, func(o RemoveOutcome) bool { return o.Held })
				if held != f.isHeld(t, p) {
					t.Errorf("push of %s: outcomes %+v, but held in the store: %v", p, outs, !held)
				}
			}
			if tt.then != nil {
				tt.then(t, f)
			}
			if got := f.deactivated(t, tt.people); !slices.Equal(got, sorted(tt.wantDeactivated)) {
				t.Errorf("deactivated %v, want %v", got, tt.wantDeactivated)
			}
			if got := f.held(t); !slices.Equal(got, sorted(tt.wantHeld)) {
				t.Errorf("held %v, want %v", got, tt.wantHeld)
			}
			var wantRevoked []string
			for _, s := range tt.wantRevoked {
				wantRevoked = append(wantRevoked, "okta/"+s)
			}
			// Releasing all runs a few at once: compare as sets with counts.
			if got := sorted(f.sessions.revoked()); !slices.Equal(got, sorted(wantRevoked)) {
				t.Errorf("revoked %v, want %v", got, wantRevoked)
			}
			if tt.check != nil {
				tt.check(t, f)
			}
		})
	}
}

func (f *fixture) isHeld(t *testing.T, sub string) bool {
	t.Helper()
	_, err := f.st.Hold(t.Context(), "okta", sub)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		t.Fatal(err)
	}
	return err == nil
}

func sorted(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}

func TestBrakeLimit(t *testing.T) {
	tests := []struct {
		b      Brake
		people int
		want   int
	}{
		{Brake{MaxCount: 25}, 1000, 25},
		{Brake{MaxShare: 0.1}, 1000, 100},
		{Brake{MaxShare: 0.1}, 9, 0}, // fewer than ten people: no removal passes
		{Brake{MaxShare: 0.29}, 100, 29},
		{Brake{MaxCount: 25, MaxShare: 0.1}, 100, 10},
		{Brake{MaxCount: 5, MaxShare: 0.1}, 100, 5},
		{Brake{MaxShare: 1}, 7, 7},
	}
	for _, tt := range tests {
		if got := tt.b.Limit(tt.people); got != tt.want {
			t.Errorf("%s with %d people: limit %d, want %d", tt.b, tt.people, got, tt.want)
		}
	}
}
