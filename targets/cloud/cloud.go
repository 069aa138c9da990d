// Package cloud owns the Atlassian Cloud adapter: targets.Target over a
// Jira / Confluence Cloud site's organization, without Atlassian Guard.
// It uses the Organizations REST API and the user-management API (org
// API key) and, optionally, the site's Jira REST API (an admin's e-mail
// and API token). Section numbers (§2x) refer to
// shared/reference/atlassian-sso-and-cloud.md, part B.
//
// Cloud addresses people by accountId only (§22). usher's usernames are
// usher's own: the adapter keeps username → accountId in the durable
// targets.Accounts store, finds an existing person by exact e-mail
// through the Organizations API, invites people who are missing, and
// never guesses from display names. Cloud logins do not pass through
// usher, so this target is driven by SCIM pushes, directory sync and
// sweeps.
package cloud

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/usherhq/usher/targets"
)

// Target is one Cloud site's organization directory.
type Target struct {
	app      string
	org      *targets.Client // api.atlassian.com, Bearer org API key
	site     *targets.Client // the site, Basic e-mail:token; nil when not configured
	accounts targets.Accounts
	log      *slog.Logger
	now      func() time.Time

	orgID, dirID string
	invite       string
	mode         string
	access       []Access
	products     []string
	ttl          time.Duration

	mu     sync.Mutex
	groups map[string]groupInfo // by lower-cased name
}

var (
	_ targets.Config      = (*Config)(nil)
	_ targets.Target      = (*Target)(nil)
	_ targets.Renamer     = (*Target)(nil)
	_ targets.Deleter     = (*Target)(nil)
	_ targets.Deactivator = (*Target)(nil)
)

// App is the configured app name.
func (t *Target) App() string { return t.app }

func esc(s string) string { return url.PathEscape(s) }

func (t *Target) v1() string  { return "/admin/v1/orgs/" + esc(t.orgID) }
func (t *Target) v2() string  { return "/admin/v2/orgs/" + esc(t.orgID) }
func (t *Target) dir() string { return t.v2() + "/directories/" + esc(t.dirID) }

func (t *Target) logger() *slog.Logger {
	if t.log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return t.log
}

// refuse is a refusal usher decides on without an app call, shaped like
// one that came back from the app.
func (t *Target) refuse(op, user string, err error) *targets.Error {
	return &targets.Error{App: t.app, Op: op, User: user, Err: err}
}

// orgUser is a user of the Organizations API v2 (§26.3).
type orgUser struct {
	AccountID        string `json:"accountId"`
	Status           string `json:"status"`
	AccountStatus    string `json:"accountStatus"`
	MembershipStatus string `json:"membershipStatus"`
	Name             string `json:"name"`
	Email            string `json:"email"`
	ClaimStatus      string `json:"claimStatus"`
	Groups           []struct {
		ID   string `json:"id"`
		Name string `json:"name"`
	} `json:"groups"`
}

func (u *orgUser) managed() bool { return u.ClaimStatus == "managed" }

// inDirectory is false once the person was removed from the directory
// (a managed account stays visible then, §26.4).
func (u *orgUser) inDirectory() bool { return u.MembershipStatus != "no_membership" }

// active is usher's "active": the account may log in and its directory
// access is not suspended.
func (u *orgUser) active() bool { return u.AccountStatus == "active" && u.MembershipStatus == "active" }

// state says in words why a user is not active, for the audit.
func (u *orgUser) state() string {
	var s []string
	if u.AccountStatus != "active" {
		s = append(s, "account "+u.AccountStatus)
	}
	if u.MembershipStatus != "active" {
		s = append(s, "directory access "+u.MembershipStatus)
	}
	return strings.Join(s, ", ")
}

func (u *orgUser) claim() string {
	if u.managed() {
		return "managed"
	}
	return "unmanaged"
}

func (u *orgUser) user(username string) *targets.User {
	return &targets.User{
		Name: username, Key: u.AccountID, DisplayName: u.Name, Email: u.Email,
		EmailUnknown: u.Email == "", Active: u.active(),
		// Only the organization's own (managed) accounts can be edited
		// through the user-management API (§27).
		ProfileReadOnly: !u.managed(),
	}
}

// accountID resolves username through the account store; ErrNotFound
// (as a *targets.Error) when usher never bound one.
func (t *Target) accountID(ctx context.Context, op, username string) (string, error) {
	id, err := t.accounts.AccountID(ctx, t.app, username)
	switch {
	case errors.Is(err, targets.ErrNotFound):
		return "", t.refuse(op, username, targets.ErrNotFound)
	case err != nil:
		return "", t.refuse(op, username, fmt.Errorf("read accountId: %w", err))
	}
	return id, nil
}

// read gets the person's account from the directory (one call);
// ErrNotFound when unbound, unknown, or removed from the directory.
func (t *Target) read(ctx context.Context, op, username string) (*orgUser, error) {
	id, err := t.accountID(ctx, op, username)
	if err != nil {
		return nil, err
	}
	u, err := t.getAccount(ctx, op, username, id)
	if err != nil {
		return nil, err
	}
	if !u.inDirectory() {
		return nil, t.refuse(op, username, fmt.Errorf("%w: account %s is no longer in directory %s", targets.ErrNotFound, id, t.dirID))
	}
	return u, nil
}

func (t *Target) getAccount(ctx context.Context, op, username, id string) (*orgUser, error) {
	var out struct {
		Data orgUser `json:"data"`
	}
	_, err := t.org.Do(ctx, targets.Request{Op: op, User: username, Method: http.MethodGet,
		Path: t.dir() + "/users/" + esc(id), Out: &out})
	if err != nil {
		return nil, t.classify(err, callUser)
	}
	if out.Data.AccountID == "" {
		out.Data.AccountID = id
	}
	return &out.Data, nil
}

// GetUser reads the person's account by its stored accountId (one call);
// it never looks people up by name.
func (t *Target) GetUser(ctx context.Context, username string) (*targets.User, error) {
	u, err := t.read(ctx, "get user", username)
	if err != nil {
		return nil, err
	}
	return u.user(username), nil
}

// searchUsers runs one page of POST …/users/search (§26.3).
func (t *Target) searchUsers(ctx context.Context, op, username string, body map[string]any) ([]orgUser, string, error) {
	return search[orgUser](ctx, t, op, username, "/users/search", body)
}

// search runs one page of a directory's POST …/users/search or
// …/groups/search (§26.3, §26.5): the body is the search, or {cursor}
// for a next page; the answer is {data, links.next}.
func search[T any](ctx context.Context, t *Target, op, username, path string, body map[string]any) ([]T, string, error) {
	var out struct {
		Data  []T `json:"data"`
		Links struct {
			Next string `json:"next"`
		} `json:"links"`
	}
	_, err := t.org.Do(ctx, targets.Request{Op: op, User: username, Method: http.MethodPost,
		Path: t.dir() + path, Body: body, Out: &out, Idempotent: true})
	if err != nil {
		return nil, "", t.classify(err, callSearch)
	}
	return out.Data, out.Links.Next, nil
}

// byEmail finds the account with exactly this address through the
// Organizations API, the only reliable e-mail → accountId lookup (Jira
// may hide addresses, §22, §30); nil when there is none.
func (t *Target) byEmail(ctx context.Context, op, username, email string) (*orgUser, error) {
	users, _, err := t.searchUsers(ctx, op, username, map[string]any{"emails": []string{email}, "limit": 10})
	if err != nil {
		return nil, err
	}
	for i := range users {
		if strings.EqualFold(users[i].Email, email) {
			return &users[i], nil
		}
	}
	return nil, nil
}

// ErrAccountTaken: the account found for a person's e-mail is bound to
// another usher username already.
var ErrAccountTaken = errors.New("the Atlassian account is bound to another usher user")

// CreateUser binds the person to an Atlassian account: an existing one
// found by exact e-mail (User.Adopted), else a new one by invitation,
// granting the configured product access either way. Atlassian sends
// new people an invitation to set up their account; until then their
// name is Atlassian's, and the display name is set here for managed
// accounts only. ErrExists when the username is bound to an account
// that is still in the directory.
//
// Adopting an account found by e-mail is what the Organizations API
// recipe does (§30); the lead is adding a per-IdP adoption policy, which
// callers apply from User.Adopted.
func (t *Target) CreateUser(ctx context.Context, nu targets.NewUser) (*targets.User, error) {
	const op = "create user"
	if id, err := t.accounts.AccountID(ctx, t.app, nu.Name); err == nil {
		u, err := t.getAccount(ctx, op, nu.Name, id)
		switch {
		case err == nil && u.inDirectory():
			return nil, t.refuse(op, nu.Name, fmt.Errorf("%w: bound to account %s", targets.ErrExists, id))
		case err != nil && !errors.Is(err, targets.ErrNotFound):
			return nil, err
		}
		// The bound account left the directory: find or invite again.
	} else if !errors.Is(err, targets.ErrNotFound) {
		return nil, t.refuse(op, nu.Name, fmt.Errorf("read accountId: %w", err))
	}
	if nu.Email == "" {
		return nil, t.refuse(op, nu.Name, errors.New("no e-mail address: Atlassian Cloud finds and invites people by e-mail only"))
	}
	found, err := t.byEmail(ctx, op, nu.Name, nu.Email)
	if err != nil {
		return nil, err
	}
	var id string
	adopted := found != nil
	switch {
	case found != nil && nu.NoAdopt:
		return nil, t.refuse(op, nu.Name, fmt.Errorf("%w: account %s has the e-mail %s (the IdP's adoption policy is never)", targets.ErrNotAdopted, found.AccountID, nu.Email))
	case found != nil:
		id = found.AccountID
		if other, err := t.accounts.Username(ctx, t.app, id); err == nil && !strings.EqualFold(other, nu.Name) {
			return nil, t.refuse(op, nu.Name, fmt.Errorf("%w: account %s (%s) belongs to usher user %q", ErrAccountTaken, id, nu.Email, other))
		} else if err != nil && !errors.Is(err, targets.ErrNotFound) {
			return nil, t.refuse(op, nu.Name, fmt.Errorf("read username of %s: %w", id, err))
		}
		if found.inDirectory() {
			err = t.grantAccess(ctx, op, nu.Name, id, nu.Email)
		} else {
			// Removed from the directory earlier: an invite brings the
			// same account back (§26.4).
			_, err = t.inviteUser(ctx, op, nu.Name, nu.Email)
		}
	default:
		id, err = t.inviteUser(ctx, op, nu.Name, nu.Email)
	}
	if err != nil {
		return nil, err
	}
	// A crash between the invite and this write is mended by the next
	// run: the e-mail search finds the account and adopts it.
	if err := t.accounts.PutAccountID(ctx, t.app, nu.Name, id); err != nil {
		return nil, t.refuse(op, nu.Name, fmt.Errorf("store accountId %s: %w", id, err))
	}
	u, err := t.getAccount(ctx, op, nu.Name, id)
	if err != nil {
		return nil, err
	}
	if u.managed() && nu.DisplayName != "" && u.Name != nu.DisplayName {
		// Only a managed account's profile is the organization's to set.
		// A failure here leaves the name to the next update, where it is
		// reported, rather than undoing the invite.
		if err := t.setProfile(ctx, "set display name", nu.Name, id, nu.DisplayName); err != nil {
			t.logger().Warn("cloud: could not set the new account's display name", "app", t.app, "username", nu.Name, "err", err)
		} else {
			u.Name = nu.DisplayName
		}
	}
	out := u.user(nu.Name)
	out.Adopted = adopted
	return out, nil
}

// inviteUser gives a person an account in the directory with the
// configured access: the Organizations API invite (§26.3) or Jira's
// create user (§24). An invite whose answer was lost is sent again; the
// second one finds the account the first made.
func (t *Target) inviteUser(ctx context.Context, op, username, email string) (string, error) {
	if t.invite == InviteSite {
		return t.siteCreate(ctx, op, username, email)
	}
	rules := make([]map[string]string, 0, len(t.access))
	for _, a := range t.access {
		rules = append(rules, map[string]string{"resource": a.Resource, "role": a.Role})
	}
	var out struct {
		Data []struct {
			ID    string `json:"id"`
			Email string `json:"email"`
		} `json:"data"`
	}
	_, err := t.org.Do(ctx, targets.Request{Op: "invite user", User: username, Method: http.MethodPost,
		Path: t.v2() + "/users/invite", Out: &out,
		Body: map[string]any{"emails": []string{email}, "permissionRules": rules, "sendNotification": true}})
	if err != nil {
		return "", t.classify(err, callInvite)
	}
	for _, d := range out.Data {
		if strings.EqualFold(d.Email, email) && d.ID != "" {
			return d.ID, nil
		}
	}
	if len(out.Data) == 1 && out.Data[0].ID != "" {
		return out.Data[0].ID, nil
	}
	return "", t.refuse("invite user", username, errors.New("the invite answered no accountId"))
}

// siteCreate is Jira Cloud's POST /rest/api/3/user (§24): it invites a
// new address and grants the products to an existing account.
func (t *Target) siteCreate(ctx context.Context, op, username, email string) (string, error) {
	if t.site == nil {
		return "", t.refuse(op, username, errors.New("invite: site needs email and api_token"))
	}
	var out struct {
		AccountID string `json:"accountId"`
	}
	_, err := t.site.Do(ctx, targets.Request{Op: "invite user", User: username, Method: http.MethodPost,
		Path: "/rest/api/3/user", Out: &out,
		Body: map[string]any{"emailAddress": email, "products": t.products}})
	if err != nil {
		return "", t.classifySite(err)
	}
	if out.AccountID == "" {
		return "", t.refuse(op, username, errors.New("Jira's create user answered no accountId"))
	}
	return out.AccountID, nil
}

// grantAccess gives an adopted account the configured product access.
// Assigning a role the person holds already is taken as a no-op [U].
func (t *Target) grantAccess(ctx context.Context, op, username, id, email string) error {
	if t.invite == InviteSite {
		_, err := t.siteCreate(ctx, op, username, email)
		return err
	}
	for _, a := range t.access {
		_, err := t.org.Do(ctx, targets.Request{Op: "grant access " + a.Role, User: username, Method: http.MethodPost,
			Path: t.v1() + "/users/" + esc(id) + "/roles/assign", Idempotent: true,
			Body: map[string]string{"role": a.Role, "resource": a.Resource}})
		if err != nil {
			return t.classify(err, callUser)
		}
	}
	return nil
}

// setProfile sets a managed account's display name (§27).
func (t *Target) setProfile(ctx context.Context, op, username, id, name string) error {
	_, err := t.org.Do(ctx, targets.Request{Op: op, User: username, Method: http.MethodPatch,
		Path: "/users/" + esc(id) + "/manage/profile", Body: map[string]string{"name": name}})
	return t.classify(err, callManage)
}

// UpdateUser changes a managed account's display name and e-mail
// through the user-management API (§27); a new address must be on a
// verified domain, and Atlassian then ends all the person's sessions.
// An unmanaged account's profile is its person's: ErrUnmanaged.
func (t *Target) UpdateUser(ctx context.Context, username string, up targets.Update) error {
	if up.DisplayName == nil && up.Email == nil {
		return nil
	}
	u, err := t.read(ctx, "update user", username)
	if err != nil {
		return err
	}
	if !u.managed() {
		return t.refuse("update user", username, fmt.Errorf("%w: %s is outside the verified domains; its name and e-mail are its owner's", targets.ErrUnmanaged, u.AccountID))
	}
	if up.DisplayName != nil {
		if err := t.setProfile(ctx, "update user", username, u.AccountID, *up.DisplayName); err != nil {
			return err
		}
	}
	if up.Email != nil {
		_, err := t.org.Do(ctx, targets.Request{Op: "update e-mail", User: username, Method: http.MethodPut,
			Path: "/users/" + esc(u.AccountID) + "/manage/email", Body: map[string]string{"email": *up.Email}})
		if err != nil {
			return t.classify(err, callManage)
		}
	}
	return nil
}

// SetActive(false) is Deactivate. SetActive(true) undoes whichever of
// the two is in force: it restores suspended directory access and
// re-enables a deactivated managed account.
func (t *Target) SetActive(ctx context.Context, username string, active bool) error {
	if !active {
		_, err := t.Deactivate(ctx, username)
		return err
	}
	u, err := t.read(ctx, "activate user", username)
	if err != nil || u.active() {
		return err
	}
	if u.AccountStatus != "active" {
		if !u.managed() {
			return t.refuse("activate user", username, fmt.Errorf("%w: account %s is %s, and only its owner or Atlassian can change that", targets.ErrUnmanaged, u.AccountID, u.AccountStatus))
		}
		if err := t.lifecycle(ctx, "enable account", username, u.AccountID, "enable"); err != nil {
			return err
		}
	}
	if u.MembershipStatus == "suspended" {
		if err := t.post(ctx, "restore access", username, t.dir()+"/users/"+esc(u.AccountID)+"/restore"); err != nil {
			return err
		}
	}
	return nil
}

// Deactivate takes the person's access away as the configured mode says
// and reports which it did. Writes nothing when they are inactive
// already. Cloud sessions are Atlassian's: usher cannot end them; a
// suspension stops product access and a deactivation stops Atlassian
// logins, each as Atlassian enforces it.
func (t *Target) Deactivate(ctx context.Context, username string) (targets.Deactivation, error) {
	u, err := t.read(ctx, "deactivate user", username)
	if err != nil {
		return targets.Deactivation{}, err
	}
	id := u.AccountID
	// An unmanaged account stays usable elsewhere, so in deactivate mode
	// its managed groups go too, also when a retry finds it suspended.
	cutOff := t.mode == ModeDeactivate && !u.managed()
	if !u.active() {
		return targets.Deactivation{Done: fmt.Sprintf("%s account %s already inactive (%s); nothing changed", u.claim(), id, u.state()),
			RemoveManagedGroups: cutOff}, nil
	}
	switch {
	case t.mode == ModeDeactivate && u.managed():
		if err := t.lifecycle(ctx, "deactivate account", username, id, "disable"); err != nil {
			return targets.Deactivation{}, err
		}
		return targets.Deactivation{Changed: true, Done: fmt.Sprintf("deactivated managed account %s: no Atlassian login until reactivated", id)}, nil
	case cutOff:
		if err := t.post(ctx, "suspend access", username, t.dir()+"/users/"+esc(id)+"/suspend"); err != nil {
			return targets.Deactivation{}, err
		}
		return targets.Deactivation{
			Changed:             true,
			Done:                fmt.Sprintf("unmanaged account %s (outside the verified domains) cannot be deactivated by the organization: suspended its access in the directory and removing the groups usher manages; the Atlassian account itself stays usable", id),
			RemoveManagedGroups: true,
		}, nil
	}
	if err := t.post(ctx, "suspend access", username, t.dir()+"/users/"+esc(id)+"/suspend"); err != nil {
		return targets.Deactivation{}, err
	}
	return targets.Deactivation{Changed: true, Done: fmt.Sprintf("suspended directory access of %s account %s (roles and groups kept, not billed)", u.claim(), id)}, nil
}

func (t *Target) post(ctx context.Context, op, username, path string) error {
	_, err := t.org.Do(ctx, targets.Request{Op: op, User: username, Method: http.MethodPost, Path: path, Idempotent: true})
	return t.classify(err, callUser)
}

// lifecycle calls the user-management API's lifecycle action (§27).
func (t *Target) lifecycle(ctx context.Context, op, username, id, action string) error {
	_, err := t.org.Do(ctx, targets.Request{Op: op, User: username, Method: http.MethodPost, Idempotent: true,
		Path: "/users/" + esc(id) + "/manage/lifecycle/" + action})
	return t.classify(err, callManage)
}

// UserGroups lists the person's groups in the directory: one search with
// the groups expanded (§26.3).
func (t *Target) UserGroups(ctx context.Context, username string) ([]string, error) {
	const op = "list groups"
	id, err := t.accountID(ctx, op, username)
	if err != nil {
		return nil, err
	}
	users, _, err := t.searchUsers(ctx, op, username, map[string]any{"accountIds": []string{id}, "expand": []string{"groups"}, "limit": 1})
	if err != nil {
		return nil, err
	}
	for _, u := range users {
		if u.AccountID != id || !u.inDirectory() {
			continue
		}
		out := make([]string, 0, len(u.Groups))
		for _, g := range u.Groups {
			out = append(out, g.Name)
		}
		return out, nil
	}
	return nil, t.refuse(op, username, fmt.Errorf("%w: account %s is not in directory %s", targets.ErrNotFound, id, t.dirID))
}

// ListUsers pages through the directory's people (§26.3 search, opaque
// cursors). Name is the usher username bound to the account, "" for
// people usher never bound; Key is the accountId.
func (t *Target) ListUsers(ctx context.Context, cursor string, limit int) (targets.Page, error) {
	if limit <= 0 {
		limit = 100
	}
	body := map[string]any{"limit": limit}
	if cursor != "" {
		// With a cursor the other fields are ignored (§26).
		body = map[string]any{"cursor": cursor}
	}
	users, next, err := t.searchUsers(ctx, "list users", "", body)
	if err != nil {
		return targets.Page{}, err
	}
	p := targets.Page{Users: make([]targets.User, 0, len(users)), Next: next}
	for i := range users {
		if !users[i].inDirectory() {
			continue
		}
		name, err := t.accounts.Username(ctx, t.app, users[i].AccountID)
		if err != nil && !errors.Is(err, targets.ErrNotFound) {
			return targets.Page{}, t.refuse("list users", "", fmt.Errorf("read username of %s: %w", users[i].AccountID, err))
		}
		p.Users = append(p.Users, *users[i].user(name))
	}
	return p, nil
}

// Rename moves the username's binding: the Atlassian account and its
// accountId stay, only usher's name for it changes. No app call.
func (t *Target) Rename(ctx context.Context, from, to string) error {
	op := "rename user to " + to
	id, err := t.accountID(ctx, op, from)
	if err != nil {
		return err
	}
	if other, err := t.accounts.AccountID(ctx, t.app, to); err == nil && other != id {
		return t.refuse(op, from, fmt.Errorf("%w: %s is bound to account %s", targets.ErrExists, to, other))
	} else if err != nil && !errors.Is(err, targets.ErrNotFound) {
		return t.refuse(op, from, err)
	}
	if err := t.accounts.PutAccountID(ctx, t.app, to, id); err != nil {
		return t.refuse(op, from, err)
	}
	if strings.EqualFold(from, to) {
		return nil
	}
	if err := t.accounts.DeleteAccountID(ctx, t.app, from); err != nil {
		return t.refuse(op, from, err)
	}
	return nil
}

// DeleteUser removes the person from the directory (§26.4): their roles
// and groups go and only a new invite brings them back. The Atlassian
// account itself is not deleted (that is the owner's or, for a managed
// account, an org admin's decision). The binding is forgotten.
func (t *Target) DeleteUser(ctx context.Context, username string) error {
	const op = "delete user"
	id, err := t.accountID(ctx, op, username)
	if err != nil {
		return err
	}
	_, err = t.org.Do(ctx, targets.Request{Op: op, User: username, Method: http.MethodDelete, Path: t.dir() + "/users/" + esc(id)})
	if err = t.classify(err, callUser); err != nil {
		return err
	}
	if err := t.accounts.DeleteAccountID(ctx, t.app, username); err != nil {
		return t.refuse(op, username, fmt.Errorf("forget accountId %s: %w", id, err))
	}
	return nil
}
