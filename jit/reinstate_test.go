package jit

import (
	"errors"
	"testing"

	"github.com/usherhq/usher/targets/atlassiantest"
)

// Reinstate withdraws only the removals of the source asking, except an
// admin's, which withdraws any; a source with nothing to withdraw makes
// no app call.
func TestReinstate(t *testing.T) {
	tests := []struct {
		name       string
		removedBy  Cause // zero: never removed
		reinstate  Cause
		wantActive bool
		wantErr    error
		wantCalls  bool
	}{
		{name: "SCIM undoes SCIM", removedBy: scimOff, reinstate: SCIMPush("okta", "active again"), wantActive: true, wantCalls: true},
		{name: "SCIM does not undo a sweep", removedBy: BySweep("leavers", 1, "inactive"), reinstate: SCIMPush("okta", "active again")},
		{name: "SCIM does not undo an admin", removedBy: ByAdmin("ada", "left"), reinstate: SCIMPush("okta", "active again")},
		{name: "admin undoes a sweep", removedBy: BySweep("leavers", 1, "inactive"), reinstate: ByAdmin("ada", "back from leave"), wantActive: true, wantCalls: true},
		{name: "admin undoes a directory", removedBy: ByDirectory("corp", 3, "leaver"), reinstate: ByAdmin("ada", "rehired"), wantActive: true, wantCalls: true},
		{name: "directory undoes only its own", removedBy: ByDirectory("corp", 3, "leaver"), reinstate: ByDirectory("other", 4, "active")},
		{name: "SCIM with nothing removed asks no app", reinstate: SCIMPush("okta", "active again"), wantActive: true},
		{name: "admin with nothing removed re-applies", reinstate: ByAdmin("ada", "reinstate"), wantActive: true, wantCalls: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, atlassiantest.Jira, atlassiantest.Confluence)
			f.withMapping(t, "")
			if _, err := f.l.Admit(t.Context(), person("s1", "alice", "Engineering"), LoginVia("okta")); err != nil {
				t.Fatal(err)
			}
			if tt.removedBy.Source != "" {
				if _, err := f.l.Remove(t.Context(), Removal{IdP: "okta", Subject: "s1"}, tt.removedBy); err != nil {
					t.Fatal(err)
				}
			}
			f.resetCalls()
			if _, err := f.l.Reinstate(t.Context(), "okta", "s1", tt.reinstate); !errors.Is(err, tt.wantErr) {
				t.Fatalf("Reinstate: %v, want %v", err, tt.wantErr)
			}
			for _, app := range []string{"jira", "confluence"} {
				if got := f.user(t, app, "alice").Active; got != tt.wantActive {
					t.Errorf("%s: active %v, want %v", app, got, tt.wantActive)
				}
				if got := f.state(t, app, "alice").Deprovisioned; got == tt.wantActive {
					t.Errorf("%s: deprovisioned mark %v with the account active %v", app, got, tt.wantActive)
				}
				calls := f.srv[app].Reads()+f.srv[app].Writes() > 0
				if calls != tt.wantCalls {
					t.Errorf("%s: app called %v, want %v", app, calls, tt.wantCalls)
				}
			}
			if n := len(f.events(t, ActReinstate)); tt.removedBy.Source != "" && tt.wantActive != (n == 2) {
				t.Errorf("%d reinstatements audited, want one per app if reinstated", n)
			}
		})
	}
	t.Run("nobody bound", func(t *testing.T) {
		t.Parallel()
		f := newFixture(t, atlassiantest.Jira)
		f.withMapping(t, "")
		if _, err := f.l.Reinstate(t.Context(), "okta", "s9", ByAdmin("ada", "")); !errors.Is(err, ErrUnbound) {
			t.Fatalf("Reinstate of an unknown identity: %v, want ErrUnbound", err)
		}
	})
}

// ActiveAgain undoes SCIM's removal at once, unless an admission follows
// (automatic), which does it in one pass with the new profile.
func TestActiveAgain(t *testing.T) {
	for _, admitting := range []bool{false, true} {
		t.Run(map[bool]string{false: "not automatic", true: "automatic"}[admitting], func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, atlassiantest.Jira)
			f.withMapping(t, "")
			if _, err := f.l.Admit(t.Context(), person("s1", "alice"), LoginVia("okta")); err != nil {
				t.Fatal(err)
			}
			if _, err := f.l.Remove(t.Context(), Removal{IdP: "okta", Subject: "s1"}, scimOff); err != nil {
				t.Fatal(err)
			}
			if err := f.l.ActiveAgain(t.Context(), "okta", "s1", SCIMPush("okta", "active again"), admitting); err != nil {
				t.Fatal(err)
			}
			if got := f.user(t, "jira", "alice").Active; got == admitting {
				t.Errorf("active %v after ActiveAgain(admitting=%v)", got, admitting)
			}
			if err := f.l.ActiveAgain(t.Context(), "okta", "s9", SCIMPush("okta", "active again"), admitting); err != nil {
				t.Errorf("a person never bound: %v, want nothing to undo", err)
			}
		})
	}
}
