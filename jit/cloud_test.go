package jit

import (
	"context"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/usherhq/usher/config"
	"github.com/usherhq/usher/store"
	"github.com/usherhq/usher/targets"
	"github.com/usherhq/usher/targets/atlassiantest"
	"github.com/usherhq/usher/targets/cloud"
	"github.com/usherhq/usher/targets/targettest"
)

// cloudFixture adds an Atlassian Cloud app "cloud" to a fixture.
func cloudFixture(t *testing.T, mode string) (*fixture, *atlassiantest.Cloud) {
	t.Helper()
	f := newFixture(t)
	c := atlassiantest.NewCloud(atlassiantest.CloudOptions{
		OrgKey: "k", VerifiedDomains: []string{"acme.test"},
		Groups: []atlassiantest.CloudGroup{{Name: "developers"}, {Name: "support"}, {Name: "okta-eng", Synced: true}},
	})
	api := httptest.NewServer(c.OrgAPI())
	t.Cleanup(api.Close)
	cfg := &cloud.Config{
		Site: "https://acme.atlassian.net", APIURL: api.URL, OrgID: c.OrgID(), DirectoryID: c.DirectoryID(),
		OrgKey: config.SecretValue("k"), Deactivate: mode,
		Access: []cloud.Access{{Resource: c.ProductResource("jira-software"), Role: "atlassian/user"}},
	}
	d, err := cfg.Open("cloud", targets.Deps{Accounts: targettest.NewAccounts(),
		Sleep: func(ctx context.Context, _ time.Duration) error { return ctx.Err() }})
	if err != nil {
		t.Fatal(err)
	}
	f.dir["cloud"] = d
	return f, c
}

func cloudEvents(t *testing.T, f *fixture, action Action) []store.Event {
	t.Helper()
	evs, err := f.st.Audit(t.Context(), store.AuditFilter{App: "cloud", Action: string(action)})
	if err != nil {
		t.Fatal(err)
	}
	return evs
}

// TestCloudReadOnlyGroupIsLeftAlone: a group the org's IdP sync owns is
// skipped with an audit entry saying why; the other groups still apply.
func TestCloudReadOnlyGroupIsLeftAlone(t *testing.T) {
	f, c := cloudFixture(t, cloud.ModeSuspend)
	d := alice("cloud", "okta-eng", "developers")
	o := f.apply(t, d, false)
	a, _ := c.AccountByEmail("alice@acme.test")
	if !slices.Equal(a.Groups, []string{"developers"}) {
		t.Errorf("groups %v, want developers only", a.Groups)
	}
	if got := f.managed(t, "cloud", "alice"); !slices.Equal(got, []string{"developers"}) {
		t.Errorf("managed %v, want developers only", got)
	}
	evs := cloudEvents(t, f, ActGroupAdd)
	var skipped []store.Event
	for _, e := range evs {
		if e.Outcome == "skipped" {
			skipped = append(skipped, e)
		}
	}
	if len(skipped) != 1 || !strings.Contains(skipped[0].Detail, "okta-eng") || !strings.Contains(skipped[0].Detail, "IdP sync") {
		t.Errorf("audit %+v, want one skipped okta-eng saying why", evs)
	}
	if !slices.Contains(o.Changes, "added to developers (map[0])") {
		t.Errorf("changes %v", o.Changes)
	}
}

// TestCloudUnmanagedProfileIsReported: an unmanaged account's name is
// its person's; the difference is audited, not written, and the rest of
// the reconcile runs.
func TestCloudUnmanagedProfileIsReported(t *testing.T) {
	f, c := cloudFixture(t, cloud.ModeSuspend)
	c.AddAccount(atlassiantest.CloudAccount{Name: "alice", Email: "alice@elsewhere.test"})
	d := alice("cloud", "developers")
	d.Email = "alice@elsewhere.test"
	o := f.apply(t, d, false)
	if len(o.Changes) == 0 || !strings.Contains(o.Changes[0], "adopted the existing account") {
		t.Errorf("changes %v, want the adoption first", o.Changes)
	}
	evs := cloudEvents(t, f, ActAppUpdate)
	if len(evs) != 1 || evs[0].Outcome != "skipped" || !strings.Contains(evs[0].Detail, "Alice Archer") {
		t.Errorf("audit %+v, want one skipped update naming the display name", evs)
	}
	if a, _ := c.AccountByEmail("alice@elsewhere.test"); a.Name != "alice" || !slices.Equal(a.Groups, []string{"developers"}) {
		t.Errorf("account %+v", a)
	}
}

// TestCloudDeactivateUnmanaged: with deactivate mode, a managed account
// is deactivated, an unmanaged one suspended and stripped of the groups
// usher manages (not the others); the audit says which happened.
func TestCloudDeactivateUnmanaged(t *testing.T) {
	f, c := cloudFixture(t, cloud.ModeDeactivate)
	ctx := t.Context()
	c.AddAccount(atlassiantest.CloudAccount{Email: "alice@elsewhere.test", Groups: []string{"support"}})
	d := alice("cloud", "developers")
	d.Email = "alice@elsewhere.test"
	f.apply(t, d, false)
	f.bind(t, "sub-alice", "alice")
	if _, err := f.l.Remove(ctx, Removal{IdP: "okta", Subject: "sub-alice"}, scimOff); err != nil {
		t.Fatal(err)
	}
	a, _ := c.AccountByEmail("alice@elsewhere.test")
	if a.AccountStatus != "active" || a.MembershipStatus != "suspended" || !slices.Equal(a.Groups, []string{"support"}) {
		t.Errorf("unmanaged after deactivation: %+v, want suspended, keeping only the hand-given support", a)
	}
	if got := f.managed(t, "cloud", "alice"); len(got) != 0 {
		t.Errorf("still managing %v", got)
	}
	evs := cloudEvents(t, f, ActDeactivate)
	if len(evs) != 1 || !strings.Contains(evs[0].Detail, "unmanaged account") || !strings.Contains(evs[0].Detail, a.AccountID) {
		t.Errorf("audit %+v, want the unmanaged case with the accountId", evs)
	}
	if evs := cloudEvents(t, f, ActGroupRemove); len(evs) != 1 || evs[0].Outcome != "ok" {
		t.Errorf("group removal audit %+v", evs)
	}

	// A managed colleague is deactivated at the account level.
	bob := Desired{App: "cloud", IdP: "okta", Subject: "sub-bob", Username: "bob", Email: "bob@acme.test",
		DisplayName: "Bob", Groups: grants("developers"), Sync: SyncFull, Hash: "h", Cause: SCIMPush("okta", "")}
	f.apply(t, bob, false)
	f.bind(t, "sub-bob", "bob")
	if _, err := f.l.Remove(ctx, Removal{IdP: "okta", Subject: "sub-bob"}, BySweep("leavers", 1, "inactive 90 days")); err != nil {
		t.Fatal(err)
	}
	b, _ := c.AccountByEmail("bob@acme.test")
	if b.AccountStatus != "inactive" || !slices.Equal(b.Groups, []string{"developers"}) {
		t.Errorf("managed after deactivation: %+v, want deactivated, groups kept", b)
	}
	if evs := cloudEvents(t, f, ActDeactivate); len(evs) != 2 || !strings.Contains(evs[0].Detail, "deactivated managed account "+b.AccountID) {
		t.Errorf("audit %+v, want the sweep's deactivation of the managed account", evs)
	}
}

// TestCloudRemovalRetryFinishesGroups: a removal that finds the
// unmanaged account suspended already (an earlier attempt's suspension
// landed, its group step did not) still takes the groups away.
func TestCloudRemovalRetryFinishesGroups(t *testing.T) {
	f, c := cloudFixture(t, cloud.ModeDeactivate)
	ctx := t.Context()
	d := alice("cloud", "developers")
	d.Email = "alice@elsewhere.test"
	f.apply(t, d, false)
	f.bind(t, "sub-alice", "alice")
	a, _ := c.AccountByEmail("alice@elsewhere.test")
	c.AddAccount(atlassiantest.CloudAccount{AccountID: a.AccountID, Name: a.Name, Email: a.Email,
		MembershipStatus: "suspended", Groups: a.Groups, Roles: a.Roles})
	outs, err := f.l.Remove(ctx, Removal{IdP: "okta", Subject: "sub-alice"}, scimOff)
	if err != nil || len(outs) != 1 || !outs[0].Changed {
		t.Fatalf("Remove = %+v, %v", outs, err)
	}
	if a, _ := c.AccountByEmail("alice@elsewhere.test"); len(a.Groups) != 0 {
		t.Errorf("groups %v left on an unmanaged account", a.Groups)
	}
	if evs := cloudEvents(t, f, ActDeactivate); len(evs) != 0 {
		t.Errorf("audit %+v: nothing was deactivated now", evs)
	}
}
