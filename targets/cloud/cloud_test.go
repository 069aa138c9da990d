package cloud_test

import (
	"net/http/httptest"
	"testing"

	"github.com/usherhq/usher/config"
	"github.com/usherhq/usher/targets"
	"github.com/usherhq/usher/targets/atlassiantest"
	"github.com/usherhq/usher/targets/cloud"
	"github.com/usherhq/usher/targets/targettest"
)

const (
	orgKey    = "org-key-unscoped"
	siteEmail = "admin@example.com"
	siteToken = "classic-token"
	// unmanagedDomain is not verified by the emulated org.
	unmanagedDomain = "elsewhere.example"
)

// fixture is an emulated organization and the config of an adapter
// pointed at it.
type fixture struct {
	cloud    *atlassiantest.Cloud
	cfg      *cloud.Config
	accounts *targettest.Accounts
}

func newFixture(t *testing.T, mod func(*atlassiantest.CloudOptions), cmod func(*cloud.Config)) *fixture {
	t.Helper()
	opts := atlassiantest.CloudOptions{
		OrgKey: orgKey, SiteEmail: siteEmail, SiteToken: siteToken,
		VerifiedDomains: []string{"example.com", "wonder.example"},
	}
	if mod != nil {
		mod(&opts)
	}
	c := atlassiantest.NewCloud(opts)
	api := httptest.NewServer(c.OrgAPI())
	t.Cleanup(api.Close)
	site := httptest.NewServer(c.Site())
	t.Cleanup(site.Close)
	cfg := &cloud.Config{
		Site: site.URL, APIURL: api.URL, OrgID: c.OrgID(), DirectoryID: c.DirectoryID(),
		OrgKey: config.SecretValue(orgKey), Email: siteEmail, APIToken: config.SecretValue(siteToken),
		Access: []cloud.Access{{Resource: c.ProductResource("jira-software"), Role: "atlassian/user"}},
	}
	if cmod != nil {
		cmod(cfg)
	}
	return &fixture{cloud: c, cfg: cfg, accounts: targettest.NewAccounts()}
}

func (f *fixture) open(t *testing.T, deps targets.Deps) targets.Target {
	t.Helper()
	if errs := f.cfg.Validate(); len(errs) > 0 {
		t.Fatalf("Validate: %v", errs)
	}
	deps.Accounts = f.accounts
	dir, err := f.cfg.Open("cloud", deps)
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestContract(t *testing.T) {
	for _, mode := range []string{cloud.ModeSuspend, cloud.ModeDeactivate} {
		for _, invite := range []string{cloud.InviteOrg, cloud.InviteSite} {
			t.Run(mode+"/"+invite, func(t *testing.T) {
				targettest.RunWith(t, func(t *testing.T, deps targets.Deps) (targets.Target, targettest.Emulator) {
					f := newFixture(t, nil, func(c *cloud.Config) {
						c.Deactivate, c.Invite = mode, invite
						if invite == cloud.InviteSite {
							c.Access, c.Products = nil, []string{"jira-software"}
						}
					})
					dir := f.open(t, deps)
					view := targettest.CloudViewOptions{App: "cloud", UnmanagedDomain: unmanagedDomain}
					if invite == cloud.InviteSite {
						view.CreateCall = "POST /rest/api/3/user"
					}
					return dir, targettest.CloudView(f.cloud, f.accounts, view)
				})
			})
		}
	}
}
