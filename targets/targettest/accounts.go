package targettest

import (
	"context"
	"strings"
	"sync"
	"testing"

	"github.com/usherhq/usher/targets"
	"github.com/usherhq/usher/targets/atlassiantest"
)

// Accounts is an in-memory targets.Accounts for tests.
type Accounts struct {
	mu     sync.Mutex
	byUser map[string]string // app NUL lower(username) → id
	byID   map[string]string // app NUL id → username
}

// NewAccounts returns an empty store.
func NewAccounts() *Accounts {
	return &Accounts{byUser: map[string]string{}, byID: map[string]string{}}
}

var _ targets.Accounts = (*Accounts)(nil)

func ukey(app, username string) string { return app + "\x00" + strings.ToLower(username) }

// AccountID implements targets.Accounts.
func (a *Accounts) AccountID(_ context.Context, app, username string) (string, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	id, ok := a.byUser[ukey(app, username)]
	if !ok {
		return "", targets.ErrNotFound
	}
	return id, nil
}

// Username implements targets.Accounts.
func (a *Accounts) Username(_ context.Context, app, id string) (string, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	u, ok := a.byID[app+"\x00"+id]
	if !ok {
		return "", targets.ErrNotFound
	}
	return u, nil
}

// PutAccountID implements targets.Accounts.
func (a *Accounts) PutAccountID(_ context.Context, app, username, id string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if old, ok := a.byUser[ukey(app, username)]; ok {
		delete(a.byID, app+"\x00"+old)
	}
	if old, ok := a.byID[app+"\x00"+id]; ok {
		delete(a.byUser, ukey(app, old))
	}
	a.byUser[ukey(app, username)] = id
	a.byID[app+"\x00"+id] = username
	return nil
}

// DeleteAccountID implements targets.Accounts.
func (a *Accounts) DeleteAccountID(_ context.Context, app, username string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if id, ok := a.byUser[ukey(app, username)]; ok {
		delete(a.byUser, ukey(app, username))
		if strings.EqualFold(a.byID[app+"\x00"+id], username) {
			delete(a.byID, app+"\x00"+id)
		}
	}
	return nil
}

// CloudViewOptions describe the adapter a CloudView is seen through.
type CloudViewOptions struct {
	// App is the app name the adapter stores accountIds under.
	App string
	// UnmanagedDomain is an e-mail domain the emulated org has not
	// verified.
	UnmanagedDomain string
	// CreateCall is the "METHOD pattern" of the call that makes an
	// account ("POST /rest/api/3/user" when inviting through the site);
	// default the Organizations API invite.
	CreateCall string
}

// CloudView shows a Cloud emulator the way the suite sees apps: users by
// usher username, through the same account store the adapter uses.
func CloudView(c *atlassiantest.Cloud, accounts targets.Accounts, o CloudViewOptions) Emulator {
	if o.CreateCall == "" {
		o.CreateCall = createCall[atlassiantest.CloudSite]
	}
	return &cloudView{Cloud: c, accounts: accounts, app: o.App, unmanaged: o.UnmanagedDomain, create: o.CreateCall}
}

type cloudView struct {
	*atlassiantest.Cloud
	accounts  targets.Accounts
	app       string
	unmanaged string
	create    string
}

func (v *cloudView) CreateCall() string { return v.create }

var _ ManagedSplit = (*cloudView)(nil)

func (v *cloudView) Kind() atlassiantest.Kind { return atlassiantest.CloudSite }

func (v *cloudView) User(name string) (atlassiantest.User, bool) {
	id, err := v.accounts.AccountID(context.Background(), v.app, name)
	if err != nil {
		return atlassiantest.User{}, false
	}
	a, ok := v.Account(id)
	if !ok || a.MembershipStatus == "no_membership" {
		return atlassiantest.User{}, false
	}
	return atlassiantest.User{
		Name: name, Key: id, DisplayName: a.Name, Email: a.Email, Groups: a.Groups,
		Active:   a.AccountStatus == "active" && a.MembershipStatus == "active",
		Licensed: a.MembershipStatus == "active",
	}, true
}

func (v *cloudView) AddUser(u atlassiantest.User) {
	ms := "active"
	if !u.Active {
		ms = "suspended"
	}
	for _, g := range u.Groups {
		if _, ok := v.Group(g); !ok {
			v.AddGroup(atlassiantest.CloudGroup{Name: g})
		}
	}
	id := v.Cloud.AddAccount(atlassiantest.CloudAccount{Name: u.DisplayName, Email: u.Email, MembershipStatus: ms, Groups: u.Groups})
	_ = v.accounts.PutAccountID(context.Background(), v.app, u.Name, id)
}

func (v *cloudView) Groups() []string { return v.GroupNames() }

func (v *cloudView) GroupMembers(group string) []string {
	g, ok := v.Group(group)
	if !ok {
		return nil
	}
	out := []string{}
	for _, id := range g.Members {
		name, err := v.accounts.Username(context.Background(), v.app, id)
		if err != nil {
			name = id // a member usher never bound
		}
		out = append(out, name)
	}
	return out
}

func (v *cloudView) UnmanagedDomain() string { return v.unmanaged }

func (v *cloudView) AddAccount(displayName, email string) string {
	return v.Cloud.AddAccount(atlassiantest.CloudAccount{Name: displayName, Email: email})
}

func (v *cloudView) AccountState(key string) (bool, bool) {
	a, ok := v.Account(key)
	return ok && a.AccountStatus == "active", ok && a.MembershipStatus == "active"
}

// testManagedSplit checks what an adapter may and may not do to an
// account the organization does not manage, that the two kinds are told
// apart where it matters (profile, deactivation report), and that an
// existing account is found by exact e-mail, never by name.
func testManagedSplit(t *testing.T, e env) {
	ms, split := e.srv.(ManagedSplit)
	if !split {
		t.Skip("every account is the organization's")
	}
	ctx := t.Context()
	uma, err := e.dir.CreateUser(ctx, targets.NewUser{Name: "uma", DisplayName: "Uma Outside", Email: "uma@" + ms.UnmanagedDomain()})
	ok(t, "CreateUser(unmanaged)", err)
	if !uma.ProfileReadOnly || uma.Adopted {
		t.Errorf("unmanaged CreateUser = %+v, want ProfileReadOnly, not Adopted", uma)
	}
	mx := mustCreate(t, e, "max")
	if mx.ProfileReadOnly {
		t.Errorf("managed CreateUser = %+v, want a writable profile", mx)
	}

	name := "Someone Else"
	e.srv.ResetCalls()
	wantIs(t, "UpdateUser(unmanaged)", e.dir.UpdateUser(ctx, "uma", targets.Update{DisplayName: &name}), targets.ErrUnmanaged)
	if w := e.srv.Writes(); w != 0 {
		t.Errorf("refused UpdateUser made %d writes", w)
	}
	ok(t, "UpdateUser(managed)", e.dir.UpdateUser(ctx, "max", targets.Update{DisplayName: &name}))
	if u := serverUser(t, e, "max"); u.DisplayName != name {
		t.Errorf("managed display name = %q, want %q", u.DisplayName, name)
	}

	dv, reports := e.dir.(targets.Deactivator)
	var done []string
	for _, who := range []*targets.User{uma, mx} {
		if reports {
			d, err := dv.Deactivate(ctx, who.Name)
			ok(t, "Deactivate("+who.Name+")", err)
			if d.Done == "" || !d.Changed {
				t.Errorf("Deactivate(%s) = %+v, want a change and words for it", who.Name, d)
			}
			if d.RemoveManagedGroups && !who.ProfileReadOnly {
				t.Errorf("Deactivate(%s) of a managed account asked to remove groups: %+v", who.Name, d)
			}
			done = append(done, d.Done)
		} else {
			ok(t, "SetActive(false)", e.dir.SetActive(ctx, who.Name, false))
		}
		account, access := ms.AccountState(who.Key)
		if account && access {
			t.Errorf("%s: account and access both still on after deactivation", who.Name)
		}
		if who.ProfileReadOnly && !account {
			t.Errorf("%s: an unmanaged account was deactivated at the account level", who.Name)
		}
		if u, err := e.dir.GetUser(ctx, who.Name); err != nil || u.Active {
			t.Errorf("GetUser(%s) after deactivation = %+v, %v", who.Name, u, err)
		}
		e.srv.ResetCalls()
		ok(t, "SetActive(false) again", e.dir.SetActive(ctx, who.Name, false))
		if w := e.srv.Writes(); w != 0 {
			t.Errorf("second deactivation of %s made %d writes", who.Name, w)
		}
		ok(t, "SetActive(true)", e.dir.SetActive(ctx, who.Name, true))
		if account, access := ms.AccountState(who.Key); !account || !access {
			t.Errorf("%s after SetActive(true): account %v, access %v", who.Name, account, access)
		}
	}
	if len(done) == 2 && done[0] == done[1] {
		t.Errorf("managed and unmanaged deactivations read alike: %q", done[0])
	}

	// An account that exists is found by its exact e-mail (in any case)
	// and adopted, whatever its name says.
	annID := ms.AddAccount("Ann Existing", "ann@example.com")
	ann, err := e.dir.CreateUser(ctx, targets.NewUser{Name: "ann", DisplayName: "Ann Existing", Email: "ANN@example.com"})
	ok(t, "CreateUser(existing account)", err)
	if !ann.Adopted || ann.Key != annID {
		t.Errorf("CreateUser over an existing account = %+v, want Adopted with key %s", ann, annID)
	}
	// Never from a display name: the same name on another address is
	// someone else.
	beaID := ms.AddAccount("Bea Bee", "bea.other@example.com")
	bea, err := e.dir.CreateUser(ctx, targets.NewUser{Name: "bea", DisplayName: "Bea Bee", Email: "bea@example.com"})
	ok(t, "CreateUser(same name, other e-mail)", err)
	if bea.Adopted || bea.Key == beaID {
		t.Errorf("CreateUser took an account by its display name: %+v", bea)
	}
	// One account, one usher user.
	if _, err := e.dir.CreateUser(ctx, targets.NewUser{Name: "ann2", DisplayName: "Ann", Email: "ann@example.com"}); err == nil {
		t.Errorf("a second username was bound to ann's account")
	}
}
