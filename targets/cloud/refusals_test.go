package cloud_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/usherhq/usher/config"
	"github.com/usherhq/usher/targets"
	"github.com/usherhq/usher/targets/atlassiantest"
	"github.com/usherhq/usher/targets/cloud"
)

func noSleep(ctx context.Context, _ time.Duration) error { return ctx.Err() }

// bind seeds an account and binds it to username, as an earlier
// provisioning would have.
func (f *fixture) bind(t *testing.T, username string, a atlassiantest.CloudAccount) string {
	t.Helper()
	id := f.cloud.AddAccount(a)
	if err := f.accounts.PutAccountID(context.Background(), "cloud", username, id); err != nil {
		t.Fatal(err)
	}
	return id
}

// wantRefusal checks err is the typed refusal, still a *targets.Error
// with the HTTP status, not worth retrying, with words an admin can act on.
func wantRefusal(t *testing.T, what string, err, kind error, status int, words string) {
	t.Helper()
	var te *targets.Error
	switch {
	case !errors.Is(err, kind):
		t.Fatalf("%s: got %v, want %v", what, err, kind)
	case !errors.As(err, &te):
		t.Fatalf("%s: %v is not a *targets.Error", what, err)
	case te.Status != status || targets.IsTemporary(err):
		t.Errorf("%s: status %d temporary %v, want %d and not temporary", what, te.Status, targets.IsTemporary(err), status)
	case !strings.Contains(err.Error(), words):
		t.Errorf("%s: message %q lacks %q", what, err, words)
	}
}

// TestRefusals drives every refusal the reference lists for the Cloud
// APIs through the adapter and checks each ends as a typed, readable
// error rather than a partial success.
func TestRefusals(t *testing.T) {
	t.Parallel()
	seat := func(f *fixture) string { return f.cloud.ProductResource("jira-software") }
	tests := []struct {
		name   string
		opts   func(*atlassiantest.CloudOptions)
		cfg    func(*cloud.Config)
		act    func(t *testing.T, f *fixture, dir targets.Target) error
		kind   error
		status int
		words  string
		// writes is how many changing calls the refused action may make.
		writes int
	}{
		{name: "site token on the Organizations API (wrong realm)",
			cfg: func(c *cloud.Config) { c.OrgKey = config.SecretValue(siteToken) },
			act: func(t *testing.T, f *fixture, dir targets.Target) error {
				f.bind(t, "ann", atlassiantest.CloudAccount{Email: "ann@example.com"})
				_, err := dir.GetUser(t.Context(), "ann")
				return err
			}, kind: cloud.ErrOrgKeyRefused, status: 401, words: "org_key"},
		{name: "org key on the site (wrong realm)",
			cfg: func(c *cloud.Config) {
				c.Invite, c.Access, c.Products, c.APIToken = cloud.InviteSite, nil, []string{"jira-software"}, config.SecretValue(orgKey)
			},
			act: func(t *testing.T, f *fixture, dir targets.Target) error {
				_, err := dir.CreateUser(t.Context(), targets.NewUser{Name: "bo", Email: "bo@example.com"})
				return err
			}, kind: cloud.ErrSiteTokenRefused, status: 401, words: "api_token", writes: 1},
		{name: "scoped API token on the site URL",
			opts: func(o *atlassiantest.CloudOptions) { o.SiteTokenScoped = true },
			cfg: func(c *cloud.Config) {
				c.Invite, c.Access, c.Products = cloud.InviteSite, nil, []string{"jira-software"}
			},
			act: func(t *testing.T, f *fixture, dir targets.Target) error {
				_, err := dir.CreateUser(t.Context(), targets.NewUser{Name: "bo", Email: "bo@example.com"})
				return err
			}, kind: cloud.ErrSiteTokenRefused, status: 401, words: "unscoped", writes: 1},
		{name: "scoped org key on the user-management API",
			opts: func(o *atlassiantest.CloudOptions) { o.OrgKeyScoped = true },
			act: func(t *testing.T, f *fixture, dir targets.Target) error {
				f.bind(t, "cy", atlassiantest.CloudAccount{Email: "cy@example.com"})
				name := "Cy Young"
				return dir.UpdateUser(t.Context(), "cy", targets.Update{DisplayName: &name})
			}, kind: cloud.ErrManageRefused, status: 403, words: "without scopes", writes: 1},
		{name: "scoped org key deactivating a managed account",
			opts: func(o *atlassiantest.CloudOptions) { o.OrgKeyScoped = true },
			cfg:  func(c *cloud.Config) { c.Deactivate = cloud.ModeDeactivate },
			act: func(t *testing.T, f *fixture, dir targets.Target) error {
				f.bind(t, "cy", atlassiantest.CloudAccount{Email: "cy@example.com"})
				return dir.SetActive(t.Context(), "cy", false)
			}, kind: cloud.ErrManageRefused, status: 403, words: "without scopes", writes: 1},
		{name: "licence limit on invite",
			act: func(t *testing.T, f *fixture, dir targets.Target) error {
				f.cloud.SetSeats(seat(f), 1)
				f.cloud.AddAccount(atlassiantest.CloudAccount{Email: "seated@example.com", Roles: []atlassiantest.CloudRole{{Resource: seat(f), Role: "atlassian/user"}}})
				_, err := dir.CreateUser(t.Context(), targets.NewUser{Name: "dee", Email: "dee@example.com"})
				return err
			}, kind: cloud.ErrLicenceLimit, status: 409, words: "licence limit reached", writes: 1},
		{name: "licence limit through a product access group",
			act: func(t *testing.T, f *fixture, dir targets.Target) error {
				f.cloud.SetSeats(seat(f), 1)
				f.cloud.AddGroup(atlassiantest.CloudGroup{Name: "jira-software-users", Grants: []atlassiantest.CloudRole{{Resource: seat(f), Role: "atlassian/user"}}})
				f.cloud.AddAccount(atlassiantest.CloudAccount{Email: "seated@example.com", Groups: []string{"jira-software-users"}})
				f.bind(t, "eve", atlassiantest.CloudAccount{Email: "eve@example.com"})
				return dir.AddToGroup(t.Context(), "eve", "jira-software-users")
			}, kind: cloud.ErrLicenceLimit, status: 409, words: "licence limit reached", writes: 1},
		{name: "licence limit on restoring access",
			act: func(t *testing.T, f *fixture, dir targets.Target) error {
				f.cloud.SetSeats(seat(f), 1)
				f.cloud.AddAccount(atlassiantest.CloudAccount{Email: "seated@example.com", Roles: []atlassiantest.CloudRole{{Resource: seat(f), Role: "atlassian/user"}}})
				f.bind(t, "fay", atlassiantest.CloudAccount{Email: "fay@example.com", MembershipStatus: "suspended",
					Roles: []atlassiantest.CloudRole{{Resource: seat(f), Role: "atlassian/user"}}})
				return dir.SetActive(t.Context(), "fay", true)
			}, kind: cloud.ErrLicenceLimit, status: 409, words: "licence limit reached", writes: 1},
		{name: "invite without a paid subscription",
			opts: func(o *atlassiantest.CloudOptions) { o.NoPaidSubscription = true },
			act: func(t *testing.T, f *fixture, dir targets.Target) error {
				_, err := dir.CreateUser(t.Context(), targets.NewUser{Name: "gus", Email: "gus@example.com"})
				return err
			}, kind: cloud.ErrPaymentRequired, status: 402, words: "invite: site", writes: 1},
		{name: "wrong org_id",
			cfg: func(c *cloud.Config) { c.OrgID = "org-typo" },
			act: func(t *testing.T, f *fixture, dir targets.Target) error {
				_, err := dir.ListUsers(t.Context(), "", 10)
				return err
			}, kind: cloud.ErrOrgNotFound, status: 404, words: "org_id"},
		{name: "synced group, add",
			act: func(t *testing.T, f *fixture, dir targets.Target) error {
				f.cloud.AddGroup(atlassiantest.CloudGroup{Name: "okta-engineering", Synced: true})
				f.bind(t, "hal", atlassiantest.CloudAccount{Email: "hal@example.com"})
				return dir.AddToGroup(t.Context(), "hal", "okta-engineering")
			}, kind: cloud.ErrGroupSynced, words: "managed by the org's IdP sync"},
		{name: "synced group, remove",
			act: func(t *testing.T, f *fixture, dir targets.Target) error {
				f.cloud.AddGroup(atlassiantest.CloudGroup{Name: "okta-engineering", Synced: true})
				f.bind(t, "hal", atlassiantest.CloudAccount{Email: "hal@example.com", Groups: []string{"okta-engineering"}})
				return dir.RemoveFromGroup(t.Context(), "hal", "okta-engineering")
			}, kind: cloud.ErrGroupSynced, words: "managed by the org's IdP sync"},
		{name: "group taken over by the IdP sync after it was cached",
			act: func(t *testing.T, f *fixture, dir targets.Target) error {
				gid := f.cloud.AddGroup(atlassiantest.CloudGroup{Name: "eng"})
				f.bind(t, "ida", atlassiantest.CloudAccount{Email: "ida@example.com"})
				if err := dir.AddToGroup(t.Context(), "ida", "eng"); err != nil {
					t.Fatal(err)
				}
				f.cloud.AddGroup(atlassiantest.CloudGroup{ID: gid, Name: "eng", Synced: true})
				f.cloud.ResetCalls()
				return dir.AddToGroup(t.Context(), "ida", "eng")
			}, kind: cloud.ErrGroupSynced, words: "IdP sync", writes: 1},
		{name: "unmanaged account's profile",
			act: func(t *testing.T, f *fixture, dir targets.Target) error {
				f.bind(t, "jo", atlassiantest.CloudAccount{Email: "jo@" + unmanagedDomain})
				mail := "jo@example.com"
				return dir.UpdateUser(t.Context(), "jo", targets.Update{Email: &mail})
			}, kind: targets.ErrUnmanaged, words: "its owner's"},
		{name: "unmanaged account deactivated by its owner",
			act: func(t *testing.T, f *fixture, dir targets.Target) error {
				f.bind(t, "kai", atlassiantest.CloudAccount{Email: "kai@" + unmanagedDomain, AccountStatus: "inactive"})
				return dir.SetActive(t.Context(), "kai", true)
			}, kind: targets.ErrUnmanaged, words: "only its owner or Atlassian"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, tc.opts, tc.cfg)
			dir := f.open(t, targets.Deps{Sleep: noSleep})
			f.cloud.ResetCalls()
			err := tc.act(t, f, dir)
			wantRefusal(t, tc.name, err, tc.kind, tc.status, tc.words)
			if errors.Is(tc.kind, cloud.ErrGroupSynced) && !errors.Is(err, targets.ErrGroupReadOnly) {
				t.Errorf("a synced-group refusal is not targets.ErrGroupReadOnly: %v", err)
			}
			if w := f.cloud.Writes(); w > tc.writes {
				t.Errorf("the refused action made %d writes (%v), want at most %d", w, f.cloud.Calls(), tc.writes)
			}
		})
	}
}

// TestDeactivationModes checks what each mode does to managed and
// unmanaged accounts, and what it reports.
func TestDeactivationModes(t *testing.T) {
	t.Parallel()
	tests := []struct {
		mode, email       string
		account, access   bool // after deactivation
		removeGroups      bool
		words             string
		calls             string
		reactivationCalls string
	}{
		{cloud.ModeSuspend, "m@example.com", true, false, false, "suspended directory access of managed account",
			"POST /admin/v2/orgs/{orgId}/directories/{directoryId}/users/{accountId}/suspend", "POST /admin/v2/orgs/{orgId}/directories/{directoryId}/users/{accountId}/restore"},
		{cloud.ModeSuspend, "u@" + unmanagedDomain, true, false, false, "suspended directory access of unmanaged account",
			"POST /admin/v2/orgs/{orgId}/directories/{directoryId}/users/{accountId}/suspend", "POST /admin/v2/orgs/{orgId}/directories/{directoryId}/users/{accountId}/restore"},
		{cloud.ModeDeactivate, "m@example.com", false, true, false, "deactivated managed account",
			"POST /users/{accountId}/manage/lifecycle/{action}", "POST /users/{accountId}/manage/lifecycle/{action}"},
		{cloud.ModeDeactivate, "u@" + unmanagedDomain, true, false, true, "cannot be deactivated by the organization",
			"POST /admin/v2/orgs/{orgId}/directories/{directoryId}/users/{accountId}/suspend", "POST /admin/v2/orgs/{orgId}/directories/{directoryId}/users/{accountId}/restore"},
	}
	for _, tc := range tests {
		t.Run(tc.mode+"/"+tc.email, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, nil, func(c *cloud.Config) { c.Deactivate = tc.mode })
			dir := f.open(t, targets.Deps{})
			id := f.bind(t, "pat", atlassiantest.CloudAccount{Email: tc.email})
			f.cloud.ResetCalls()
			d, err := dir.(targets.Deactivator).Deactivate(t.Context(), "pat")
			if err != nil {
				t.Fatal(err)
			}
			a, _ := f.cloud.Account(id)
			if got := [2]bool{a.AccountStatus == "active", a.MembershipStatus == "active"}; got != [2]bool{tc.account, tc.access} {
				t.Errorf("account, access = %v, want %v, %v (%+v)", got, tc.account, tc.access, a)
			}
			if d.RemoveManagedGroups != tc.removeGroups || !strings.Contains(d.Done, tc.words) || !strings.Contains(d.Done, id) {
				t.Errorf("Deactivation = %+v, want RemoveManagedGroups %v and %q with the accountId", d, tc.removeGroups, tc.words)
			}
			if n := f.cloud.Calls()[tc.calls]; n != 1 || f.cloud.Writes() != 1 {
				t.Errorf("calls = %v, want one %s", f.cloud.Calls(), tc.calls)
			}
			if !d.Changed {
				t.Errorf("Deactivation %+v says nothing changed", d)
			}
			again, err := dir.(targets.Deactivator).Deactivate(t.Context(), "pat")
			if err != nil || again.Changed || !strings.Contains(again.Done, "already inactive") || again.RemoveManagedGroups != tc.removeGroups {
				t.Errorf("second Deactivate = %+v, %v", again, err)
			}
			f.cloud.ResetCalls()
			if err := dir.SetActive(t.Context(), "pat", true); err != nil {
				t.Fatal(err)
			}
			if a, _ := f.cloud.Account(id); a.AccountStatus != "active" || a.MembershipStatus != "active" {
				t.Errorf("after SetActive(true): %+v", a)
			}
			if n := f.cloud.Calls()[tc.reactivationCalls]; n != 1 {
				t.Errorf("reactivation calls = %v, want one %s", f.cloud.Calls(), tc.reactivationCalls)
			}
		})
	}
}

// TestAdoption covers finding people that exist: by exact e-mail even
// when Jira hides the address, bringing back a managed account removed
// from the directory, and granting the configured access.
func TestAdoption(t *testing.T) {
	t.Parallel()
	f := newFixture(t, nil, nil)
	dir := f.open(t, targets.Deps{})
	ctx := t.Context()
	res := f.cloud.ProductResource("jira-software")

	hidden := f.cloud.AddAccount(atlassiantest.CloudAccount{Name: "Hidden Hana", Email: "hana@example.com", EmailHidden: true})
	u, err := dir.CreateUser(ctx, targets.NewUser{Name: "hana", DisplayName: "Hana H", Email: "hana@example.com"})
	if err != nil || !u.Adopted || u.Key != hidden {
		t.Fatalf("CreateUser(hidden e-mail) = %+v, %v; want account %s adopted", u, err, hidden)
	}
	if a, _ := f.cloud.Account(hidden); !slices.Contains(a.Roles, atlassiantest.CloudRole{Resource: res, Role: "atlassian/user"}) {
		t.Errorf("adopted account lacks the configured access: %+v", a)
	}
	if n := f.cloud.Calls()["POST /admin/v2/orgs/{orgId}/users/invite"]; n != 0 {
		t.Errorf("an existing account was invited (%d)", n)
	}

	gone := f.cloud.AddAccount(atlassiantest.CloudAccount{Email: "gil@example.com", MembershipStatus: "no_membership"})
	u, err = dir.CreateUser(ctx, targets.NewUser{Name: "gil", Email: "gil@example.com"})
	if err != nil || !u.Adopted || u.Key != gone {
		t.Fatalf("CreateUser(removed managed account) = %+v, %v", u, err)
	}
	if a, _ := f.cloud.Account(gone); a.MembershipStatus != "active" {
		t.Errorf("removed account not back in the directory: %+v", a)
	}

	// Usher's own record wins over a new lookup: GetUser never searches.
	f.cloud.ResetCalls()
	if _, err := dir.GetUser(ctx, "gil"); err != nil {
		t.Fatal(err)
	}
	for call := range f.cloud.Calls() {
		if strings.Contains(call, "search") {
			t.Errorf("GetUser searched: %v", f.cloud.Calls())
		}
	}

	// Removal from the directory (sweep action delete) forgets the binding.
	if err := dir.(targets.Deleter).DeleteUser(ctx, "gil"); err != nil {
		t.Fatal(err)
	}
	if _, err := dir.GetUser(ctx, "gil"); !errors.Is(err, targets.ErrNotFound) {
		t.Errorf("GetUser after DeleteUser = %v", err)
	}
	if a, ok := f.cloud.Account(gone); !ok || a.MembershipStatus != "no_membership" {
		t.Errorf("DeleteUser: %+v %v, want the managed account kept, out of the directory", a, ok)
	}
}

// TestGroupCache checks names resolve to ids once per TTL.
func TestGroupCache(t *testing.T) {
	t.Parallel()
	clock := clockwork.NewFakeClock()
	f := newFixture(t, nil, func(c *cloud.Config) { c.GroupCacheTTL = time.Minute })
	dir := f.open(t, targets.Deps{Now: clock.Now})
	f.cloud.AddGroup(atlassiantest.CloudGroup{Name: "devs"})
	f.bind(t, "lu", atlassiantest.CloudAccount{Email: "lu@example.com"})
	searches := func() int {
		return f.cloud.Calls()["POST /admin/v2/orgs/{orgId}/directories/{directoryId}/groups/search"]
	}
	ctx := t.Context()
	for range 3 {
		if err := dir.AddToGroup(ctx, "lu", "DEVS"); err != nil {
			t.Fatal(err)
		}
	}
	if n := searches(); n != 1 {
		t.Errorf("%d group searches for three adds within the TTL, want 1", n)
	}
	clock.Advance(2 * time.Minute)
	if err := dir.RemoveFromGroup(ctx, "lu", "devs"); err != nil {
		t.Fatal(err)
	}
	if n := searches(); n != 2 {
		t.Errorf("%d group searches after the TTL, want 2", n)
	}
	if g, _ := f.cloud.Group("devs"); len(g.Members) != 0 {
		t.Errorf("devs members = %v", g.Members)
	}
	// A group deleted and made again under the same name gets a new id:
	// the stale one is noticed and resolved again.
	f.cloud.AddGroup(atlassiantest.CloudGroup{Name: "devs"})
	if err := dir.AddToGroup(ctx, "lu", "devs"); err != nil {
		t.Fatalf("AddToGroup after the group was remade: %v", err)
	}
	if g, _ := f.cloud.Group("devs"); len(g.Members) != 1 {
		t.Errorf("devs members = %v", g.Members)
	}
}

// TestListUsersNames shows bound people by username and others by
// accountId only.
func TestListUsersNames(t *testing.T) {
	t.Parallel()
	f := newFixture(t, nil, nil)
	dir := f.open(t, targets.Deps{})
	bound := f.bind(t, "mo", atlassiantest.CloudAccount{Email: "mo@example.com"})
	other := f.cloud.AddAccount(atlassiantest.CloudAccount{Email: "stranger@example.com"})
	p, err := dir.ListUsers(t.Context(), "", 10)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, u := range p.Users {
		got[u.Key] = u.Name
	}
	if got[bound] != "mo" || got[other] != "" || len(got) != 2 {
		t.Errorf("listed %v", got)
	}
}

func TestValidate(t *testing.T) {
	t.Parallel()
	valid := func() *cloud.Config {
		return &cloud.Config{
			Site: "https://acme.atlassian.net", OrgID: "o1", DirectoryID: "d1", OrgKey: config.SecretValue("k"),
			Access: []cloud.Access{{Resource: "ari:cloud:jira-software::site/1", Role: "atlassian/user"}},
		}
	}
	tests := []struct {
		name  string
		mod   func(*cloud.Config)
		field string
	}{
		{"valid", func(*cloud.Config) {}, ""},
		{"no site", func(c *cloud.Config) { c.Site = "" }, "site"},
		{"site not a URL", func(c *cloud.Config) { c.Site = "acme.atlassian.net" }, "site"},
		{"no org", func(c *cloud.Config) { c.OrgID = "" }, "org_id"},
		{"directory wildcard", func(c *cloud.Config) { c.DirectoryID = "-" }, "directory_id"},
		{"no key", func(c *cloud.Config) { c.OrgKey = config.Secret{} }, "org_key"},
		{"email without token", func(c *cloud.Config) { c.Email = "a@b.c" }, "api_token"},
		{"token without email", func(c *cloud.Config) { c.APIToken = config.SecretValue("t") }, "email"},
		{"org invite without access", func(c *cloud.Config) { c.Access = nil }, "access"},
		{"products with org invite", func(c *cloud.Config) { c.Products = []string{"jira-software"} }, "products"},
		{"site invite without credentials", func(c *cloud.Config) { c.Invite, c.Products = "site", []string{"jira-software"} }, "email"},
		{"site invite without products", func(c *cloud.Config) {
			c.Invite, c.Email, c.APIToken = "site", "a@b.c", config.SecretValue("t")
		}, "products"},
		{"site invite", func(c *cloud.Config) {
			c.Invite, c.Email, c.APIToken, c.Products = "site", "a@b.c", config.SecretValue("t"), []string{"jira-software"}
		}, ""},
		{"bad invite", func(c *cloud.Config) { c.Invite = "scim" }, "invite"},
		{"bad resource", func(c *cloud.Config) { c.Access[0].Resource = "jira" }, "access[0].resource"},
		{"bad role", func(c *cloud.Config) { c.Access[0].Role = "user" }, "access[0].role"},
		{"bad product", func(c *cloud.Config) {
			c.Invite, c.Email, c.APIToken, c.Products = "site", "a@b.c", config.SecretValue("t"), []string{"jira"}
		}, "products[0]"},
		{"bad mode", func(c *cloud.Config) { c.Deactivate = "delete" }, "deactivate"},
		{"bad api url", func(c *cloud.Config) { c.APIURL = "api.atlassian.com" }, "api_url"},
		{"negative ttl", func(c *cloud.Config) { c.GroupCacheTTL = -time.Second }, "group_cache_ttl"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := valid()
			tc.mod(c)
			errs := c.Validate()
			var fields []string
			for _, e := range errs {
				var fe *config.FieldError
				if !errors.As(e, &fe) {
					t.Fatalf("%v is not a *config.FieldError", e)
				}
				fields = append(fields, fe.Field)
			}
			switch {
			case tc.field == "" && len(errs) > 0:
				t.Errorf("errors %v on a valid block", errs)
			case tc.field != "" && !slices.Contains(fields, tc.field):
				t.Errorf("errors on %v (%v), want one on %s", fields, errs, tc.field)
			}
		})
	}
}

func TestPrivilegedGroups(t *testing.T) {
	t.Parallel()
	var zero cloud.Config
	c := cloud.Config{Site: "https://Acme.atlassian.net"}
	for _, g := range []string{"org-admins", "site-admins"} {
		if !slices.Contains(zero.PrivilegedGroups(), g) {
			t.Errorf("kind-level list lacks %s", g)
		}
	}
	for _, g := range []string{"jira-admins-acme", "confluence-admins-acme", "site-admins"} {
		if !slices.Contains(c.PrivilegedGroups(), g) {
			t.Errorf("%v lacks %s", c.PrivilegedGroups(), g)
		}
	}
}

func TestOpenNeedsAccountStore(t *testing.T) {
	t.Parallel()
	f := newFixture(t, nil, nil)
	if _, err := f.cfg.Open("cloud", targets.Deps{}); err == nil || !strings.Contains(err.Error(), "account store") {
		t.Errorf("Open without Accounts = %v", err)
	}
}
