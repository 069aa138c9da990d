// Package bitbucket owns the Bitbucket Data Center / Server adapter:
// targets.Target over Bitbucket's REST API (/rest/api/1.0, admin
// endpoints). Bitbucket has no REST deactivation, so "inactive" here
// means "holds no seat": in no group that grants LICENSED_USER or a
// higher global permission (the configured licence groups, and any group
// Bitbucket's global permissions name) and without a direct global
// permission. Section numbers (§5.x) refer to
// shared/reference/atlassian-rest.md.
package bitbucket

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/usherhq/usher/config"
	"github.com/usherhq/usher/targets"
)

// Config is the `directory:` block of a Bitbucket app.
type Config struct {
	targets.Conn `yaml:",inline"`
	// LicenceGroups are the groups that grant LICENSED_USER. Deactivation
	// removes the user from all of them; reactivation adds the first one
	// back.
	LicenceGroups []string `yaml:"licence_groups"`
}

// errToken refuses a personal access token. Bitbucket documents that a
// token cannot "perform changes on behalf of a user (e.g. ... update user
// account details)" (§2.2); the reference leaves open whether an admin's
// token reaches /admin/users and /admin/groups (§11.2), and running the
// adapter against it (issue #14) found them refused. Every call usher
// makes is an admin call, so a token can never work: say so at check
// time, not at the first login.
var errToken = &config.FieldError{Field: "token", Msg: "Bitbucket refuses personal access tokens on the admin endpoints usher needs " +
	"(/rest/api/1.0/admin/users, /admin/groups, /admin/permissions); set username and password of an account with the ADMIN " +
	"global permission instead (if basic authentication is blocked, add that account to the allowlist's allowed-users)"}

// Validate checks the block; errors are *config.FieldError.
func (c *Config) Validate() []error {
	var errs []error
	if c.Token.IsZero() {
		errs = c.Conn.Validate()
	} else {
		// The credential kind is wrong, so the usual password/token
		// advice would mislead; check the rest of the block.
		errs = append(errs, errToken)
		errs = append(errs, targets.ValidateURL("url", c.URL)...)
		errs = append(errs, targets.ValidateLimits(c.Concurrency, c.Timeout)...)
	}
	if len(c.LicenceGroups) == 0 {
		errs = append(errs, &config.FieldError{Field: "licence_groups", Msg: "required: the groups that grant LICENSED_USER (for example stash-users)"})
	}
	for i, g := range c.LicenceGroups {
		if strings.TrimSpace(g) == "" {
			errs = append(errs, &config.FieldError{Field: fmt.Sprintf("licence_groups[%d]", i), Msg: "empty group name"})
		}
	}
	return errs
}

// Open builds the adapter.
// PrivilegedGroups: Bitbucket grants ADMIN and SYS_ADMIN through global permissions on
// any group (reference §5.5), so it has no fixed admin group; these are
// the common names. Installations list their own under
// provisioning.privileged_groups.
func (c *Config) PrivilegedGroups() []string {
	return []string{"sys-admins", "stash-admins"}
}

func (c *Config) Open(app string, deps targets.Deps) (targets.Target, error) {
	if len(c.LicenceGroups) == 0 {
		return nil, fmt.Errorf("%s: no licence_groups", app)
	}
	if !c.Token.IsZero() {
		return nil, fmt.Errorf("%s: %w", app, errToken)
	}
	cl, err := c.Conn.Client(app, deps)
	if err != nil {
		return nil, err
	}
	now := deps.Now
	if now == nil {
		now = time.Now
	}
	return &Directory{c: cl, licence: c.LicenceGroups, now: now}, nil
}

// Directory is a Bitbucket user directory.
type Directory struct {
	c       *targets.Client
	licence []string
	now     func() time.Time

	// seatGroups caches Bitbucket's global permissions of groups: every
	// group listed there grants a seat. Admins change them rarely, and a
	// sweep would otherwise read them once per person.
	mu        sync.Mutex
	seatAt    time.Time
	seatCache map[string]bool // lower-cased group name
}

// seatTTL is how long the global permissions of groups are reused.
const seatTTL = 30 * time.Second

var (
	_ targets.Config     = (*Config)(nil)
	_ targets.Target     = (*Directory)(nil)
	_ targets.Renamer    = (*Directory)(nil)
	_ targets.Deleter    = (*Directory)(nil)
	_ targets.SeatHolder = (*Directory)(nil)
)

const api = "/rest/api/1.0"

// App is the configured app name.
func (d *Directory) App() string { return d.c.App() }

// bbUser is the detailed user of /admin/users (§5.2).
type bbUser struct {
	Name         string            `json:"name"`
	EmailAddress string            `json:"emailAddress"`
	ID           int64             `json:"id"`
	DisplayName  string            `json:"displayName"`
	Active       bool              `json:"active"`
	Slug         string            `json:"slug"`
	LastAuth     targets.Timestamp `json:"lastAuthenticationTimestamp"`
}

func (u *bbUser) user() targets.User {
	key := ""
	if u.ID != 0 {
		key = strconv.FormatInt(u.ID, 10)
	}
	return targets.User{Name: u.Name, Key: key, DisplayName: u.DisplayName, Email: u.EmailAddress,
		Active: u.Active, LastLogin: u.LastAuth.Time}
}

// page is Bitbucket's paging envelope (§5.7).
type page[T any] struct {
	Values        []T  `json:"values"`
	IsLastPage    bool `json:"isLastPage"`
	NextPageStart *int `json:"nextPageStart"`
}

func (p *page[T]) next(start int) (int, bool) {
	if p.IsLastPage || len(p.Values) == 0 {
		return 0, false
	}
	if p.NextPageStart != nil {
		return *p.NextPageStart, true
	}
	return start + len(p.Values), true
}

// find looks the user up by name. /users/{slug} needs the slug, which may
// differ from the name (§5.2), so this filters /admin/users (a substring
// match) and picks the exact name; that also gives the detailed user with
// last authentication.
func (d *Directory) find(ctx context.Context, op, username string) (*bbUser, error) {
	for start := 0; ; {
		var p page[bbUser]
		_, err := d.c.Do(ctx, targets.Request{Op: op, User: username, Method: http.MethodGet, Path: api + "/admin/users",
			Query: url.Values{"filter": {username}, "start": {strconv.Itoa(start)}, "limit": {"100"}}, Out: &p})
		if err != nil {
			return nil, err
		}
		for i := range p.Values {
			if strings.EqualFold(p.Values[i].Name, username) {
				return &p.Values[i], nil
			}
		}
		n, ok := p.next(start)
		if !ok {
			return nil, &targets.Error{App: d.App(), Op: op, User: username, Status: http.StatusNotFound, Err: targets.ErrNotFound}
		}
		start = n
	}
}

// groups pages /admin/users/more-members?context= (the user's groups).
func (d *Directory) groups(ctx context.Context, op, username string) ([]string, error) {
	var out []string
	for start := 0; ; {
		var p page[struct {
			Name string `json:"name"`
		}]
		_, err := d.c.Do(ctx, targets.Request{Op: op, User: username, Method: http.MethodGet, Path: api + "/admin/users/more-members",
			Query: url.Values{"context": {username}, "start": {strconv.Itoa(start)}, "limit": {"500"}}, Out: &p})
		if err != nil {
			if targets.StatusOf(err) == http.StatusNotFound {
				return nil, targets.Reclassify(err, targets.ErrNotFound)
			}
			return nil, err
		}
		for _, g := range p.Values {
			out = append(out, g.Name)
		}
		n, ok := p.next(start)
		if !ok {
			return out, nil
		}
		start = n
	}
}

// licensedBy returns those of groups that are configured licence groups.
func (d *Directory) licensedBy(groups []string) []string {
	var out []string
	for _, g := range groups {
		for _, lg := range d.licence {
			if strings.EqualFold(g, lg) {
				out = append(out, g)
				break
			}
		}
	}
	return out
}

// seatGrantingGroups returns those of groups that grant a seat: the
// configured licence groups and every group holding a global permission
// (LICENSED_USER, PROJECT_CREATE, ADMIN or SYS_ADMIN, each of which
// includes the licence, §5.5).
func (d *Directory) seatGrantingGroups(ctx context.Context, op, username string, groups []string) ([]string, error) {
	perms, err := d.groupPermissions(ctx, op, username)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, g := range groups {
		if perms[strings.ToLower(g)] || len(d.licensedBy([]string{g})) > 0 {
			out = append(out, g)
		}
	}
	return out, nil
}

// groupPermissions pages GET /admin/permissions/groups (the groups
// holding a global permission, each with its highest one), reusing an
// answer younger than seatTTL. Two callers that miss together both
// read; the answer is the same.
func (d *Directory) groupPermissions(ctx context.Context, op, username string) (map[string]bool, error) {
	d.mu.Lock()
	if d.seatCache != nil && d.now().Sub(d.seatAt) < seatTTL {
		m := d.seatCache
		d.mu.Unlock()
		return m, nil
	}
	d.mu.Unlock()
	m := map[string]bool{}
	for start := 0; ; {
		var p page[struct {
			Group struct {
				Name string `json:"name"`
			} `json:"group"`
			Permission string `json:"permission"`
		}]
		_, err := d.c.Do(ctx, targets.Request{Op: op, User: username, Method: http.MethodGet, Path: api + "/admin/permissions/groups",
			Query: url.Values{"start": {strconv.Itoa(start)}, "limit": {"500"}}, Out: &p})
		if err != nil {
			return nil, err
		}
		for _, v := range p.Values {
			if v.Permission != "" {
				m[strings.ToLower(v.Group.Name)] = true
			}
		}
		n, ok := p.next(start)
		if !ok {
			break
		}
		start = n
	}
	d.mu.Lock()
	d.seatCache, d.seatAt = m, d.now()
	d.mu.Unlock()
	return m, nil
}

// directPermission is the global permission granted to the user by
// name (LICENSED_USER or higher), "" when none. GET
// /admin/permissions/users lists users holding one; filter narrows it by
// a substring of the name, so the exact name is picked from the pages.
func (d *Directory) directPermission(ctx context.Context, op, username string) (string, error) {
	for start := 0; ; {
		var p page[struct {
			User       bbUser `json:"user"`
			Permission string `json:"permission"`
		}]
		_, err := d.c.Do(ctx, targets.Request{Op: op, User: username, Method: http.MethodGet, Path: api + "/admin/permissions/users",
			Query: url.Values{"filter": {username}, "start": {strconv.Itoa(start)}, "limit": {"100"}}, Out: &p})
		if err != nil {
			return "", err
		}
		for _, v := range p.Values {
			if strings.EqualFold(v.User.Name, username) {
				return v.Permission, nil
			}
		}
		n, ok := p.next(start)
		if !ok {
			return "", nil
		}
		start = n
	}
}

// GetUser finds the user and reads their groups (two calls); for a user
// in no licence group it also reads which groups grant a seat (cached)
// and their direct permission. Active is the directory's flag and
// holding a seat.
func (d *Directory) GetUser(ctx context.Context, username string) (*targets.User, error) {
	bu, err := d.find(ctx, "get user", username)
	if err != nil {
		return nil, err
	}
	u := bu.user()
	if !u.Active {
		return &u, nil
	}
	gs, err := d.groups(ctx, "get user", bu.Name)
	if err != nil {
		return nil, err
	}
	if len(d.licensedBy(gs)) == 0 {
		u.Active, err = d.seatedOtherwise(ctx, "get user", bu.Name, gs)
		if err != nil {
			return nil, err
		}
	}
	return &u, nil
}

// seatedOtherwise reports whether a user in none of the licence groups
// holds a seat through another group or a direct permission.
func (d *Directory) seatedOtherwise(ctx context.Context, op, username string, groups []string) (bool, error) {
	seat, err := d.seatGrantingGroups(ctx, op, username, groups)
	if err != nil || len(seat) > 0 {
		return len(seat) > 0, err
	}
	perm, err := d.directPermission(ctx, op, username)
	return perm != "", err
}

// Seat reads what gives the user a seat (§5.5): their groups, the groups
// that grant one (cached), and their direct permission.
func (d *Directory) Seat(ctx context.Context, username string) (targets.Seat, error) {
	const op = "read seat"
	gs, err := d.UserGroups(ctx, username)
	if err != nil {
		return targets.Seat{}, err
	}
	seat, err := d.seatGrantingGroups(ctx, op, username, gs)
	if err != nil {
		return targets.Seat{}, err
	}
	perm, err := d.directPermission(ctx, op, username)
	if err != nil {
		return targets.Seat{}, err
	}
	return targets.Seat{Groups: seat, Released: d.licensedBy(seat), Direct: perm}, nil
}

// CreateUser posts /admin/users with query parameters only (§5.3) and a
// random password; the new user joins Bitbucket's default group. The
// answer is 204 without a body, so Key is left empty rather than spending
// a read.
func (d *Directory) CreateUser(ctx context.Context, nu targets.NewUser) (*targets.User, error) {
	pw := nu.Password
	if pw == "" {
		var err error
		if pw, err = targets.RandomPassword(); err != nil {
			return nil, err
		}
	}
	q := url.Values{"name": {nu.Name}, "password": {pw}, "displayName": {nu.DisplayName},
		"emailAddress": {nu.Email}, "addToDefaultGroup": {"true"}}
	res, err := d.c.Do(ctx, targets.Request{Op: "create user", User: nu.Name, Method: http.MethodPost, Path: api + "/admin/users", Query: q})
	if err != nil {
		if targets.StatusOf(err) != http.StatusConflict {
			return nil, err
		}
		if res.Resent {
			return d.GetUser(ctx, nu.Name)
		}
		return nil, targets.Reclassify(err, targets.ErrExists)
	}
	return &targets.User{Name: nu.Name, DisplayName: nu.DisplayName, Email: nu.Email, Active: true}, nil
}

// UpdateUser puts {"name","displayName","email"} to /admin/users (§5.4;
// note "email", not "emailAddress").
func (d *Directory) UpdateUser(ctx context.Context, username string, up targets.Update) error {
	if up.DisplayName == nil && up.Email == nil {
		return nil
	}
	body := map[string]any{"name": username}
	if up.DisplayName != nil {
		body["displayName"] = *up.DisplayName
	}
	if up.Email != nil {
		body["email"] = *up.Email
	}
	_, err := d.c.Do(ctx, targets.Request{Op: "update user", User: username, Method: http.MethodPut, Path: api + "/admin/users", Body: body})
	if targets.StatusOf(err) == http.StatusNotFound {
		return targets.Reclassify(err, targets.ErrNotFound)
	}
	return err
}

// SetActive frees or restores the seat (§5.5), writing only what
// differs. false: leave every licence group the user is in, then, if the
// user holds a direct global permission, revoke it (DELETE
// /admin/permissions/users revokes all of them; there is no
// per-permission revoke). Other groups that grant a seat are not
// touched: whether usher may take those memberships away depends on who
// gave them, which only the caller knows (targets.SeatHolder). true: if
// the user holds no seat at all, join the first licence group.
func (d *Directory) SetActive(ctx context.Context, username string, active bool) error {
	op := "deactivate user"
	if active {
		op = "activate user"
	}
	gs, err := d.groups(ctx, op, username)
	if err != nil {
		return err
	}
	if len(gs) == 0 {
		// more-members may answer 200 for unknown users.
		if _, err := d.find(ctx, op, username); err != nil {
			return err
		}
	}
	held := d.licensedBy(gs)
	if active && len(held) > 0 {
		return nil
	}
	if active {
		seated, err := d.seatedOtherwise(ctx, op, username, gs)
		if err != nil || seated {
			return err
		}
		return d.AddToGroup(ctx, username, d.licence[0])
	}
	for _, g := range held {
		if err := d.RemoveFromGroup(ctx, username, g); err != nil {
			return err
		}
	}
	perm, err := d.directPermission(ctx, op, username)
	if err != nil || perm == "" {
		return err
	}
	_, err = d.c.Do(ctx, targets.Request{Op: op, User: username, Method: http.MethodDelete, Path: api + "/admin/permissions/users",
		Query: url.Values{"name": {username}}})
	if targets.StatusOf(err) == http.StatusNotFound {
		return targets.Reclassify(err, targets.ErrNotFound)
	}
	return err
}

// UserGroups pages /admin/users/more-members. An empty answer is
// confirmed with one lookup, in case unknown users answer 200.
func (d *Directory) UserGroups(ctx context.Context, username string) ([]string, error) {
	gs, err := d.groups(ctx, "list groups", username)
	if err != nil {
		return nil, err
	}
	if len(gs) == 0 {
		if _, err := d.find(ctx, "list groups", username); err != nil {
			return nil, err
		}
	}
	return gs, nil
}

// AddToGroup posts /admin/users/add-groups (§5.6). Its 404 means the user
// or the group is missing; one lookup of the user tells which.
func (d *Directory) AddToGroup(ctx context.Context, username, group string) error {
	op := "add to group " + group
	_, err := d.c.Do(ctx, targets.Request{Op: op, User: username, Method: http.MethodPost, Path: api + "/admin/users/add-groups",
		Body: map[string]any{"user": username, "groups": []string{group}}, Idempotent: true})
	if targets.StatusOf(err) != http.StatusNotFound {
		return err
	}
	if _, ferr := d.find(ctx, op, username); errors.Is(ferr, targets.ErrNotFound) {
		return targets.Reclassify(err, targets.ErrNotFound)
	} else if ferr != nil {
		return err
	}
	return targets.Reclassify(err, targets.ErrGroupNotFound)
}

// RemoveFromGroup posts /admin/users/remove-group with context = user and
// itemName = group (§5.6, BSERV-13706); a 404 means not a member.
func (d *Directory) RemoveFromGroup(ctx context.Context, username, group string) error {
	_, err := d.c.Do(ctx, targets.Request{Op: "remove from group " + group, User: username, Method: http.MethodPost,
		Path: api + "/admin/users/remove-group", Body: map[string]string{"context": username, "itemName": group}, Idempotent: true})
	if targets.StatusOf(err) == http.StatusNotFound {
		return nil
	}
	return err
}

// CreateGroup posts /admin/groups?name= (§5.6); 409 means it exists.
func (d *Directory) CreateGroup(ctx context.Context, group string) error {
	_, err := d.c.Do(ctx, targets.Request{Op: "create group " + group, Method: http.MethodPost, Path: api + "/admin/groups",
		Query: url.Values{"name": {group}}, Idempotent: true})
	if targets.StatusOf(err) == http.StatusConflict {
		return nil
	}
	return err
}

// ListUsers pages /admin/users (§5.8). Active is the directory's flag
// only: licence state would cost a call per user; GetUser has it.
func (d *Directory) ListUsers(ctx context.Context, cursor string, limit int) (targets.Page, error) {
	if limit <= 0 {
		limit = 1000
	}
	start := 0
	if cursor != "" {
		n, err := strconv.Atoi(cursor)
		if err != nil || n < 0 {
			return targets.Page{}, fmt.Errorf("%s: list users: bad cursor %q", d.App(), cursor)
		}
		start = n
	}
	var p page[bbUser]
	_, err := d.c.Do(ctx, targets.Request{Op: "list users", Method: http.MethodGet, Path: api + "/admin/users",
		Query: url.Values{"start": {strconv.Itoa(start)}, "limit": {strconv.Itoa(limit)}}, Out: &p})
	if err != nil {
		return targets.Page{}, err
	}
	out := targets.Page{Users: make([]targets.User, 0, len(p.Values))}
	for i := range p.Values {
		out.Users = append(out.Users, p.Values[i].user())
	}
	if n, ok := p.next(start); ok {
		out.Next = strconv.Itoa(n)
	}
	return out, nil
}

// Rename posts /admin/users/rename. The body is undocumented in the
// reference (§5.1 [U]); this sends Bitbucket's UserRename shape
// {"name", "newName"}.
func (d *Directory) Rename(ctx context.Context, from, to string) error {
	_, err := d.c.Do(ctx, targets.Request{Op: "rename user to " + to, User: from, Method: http.MethodPost, Path: api + "/admin/users/rename",
		Body: map[string]string{"name": from, "newName": to}})
	switch targets.StatusOf(err) {
	case http.StatusNotFound:
		return targets.Reclassify(err, targets.ErrNotFound)
	case http.StatusConflict:
		return targets.Reclassify(err, targets.ErrExists)
	}
	return err
}

// DeleteUser calls DELETE /admin/users?name= (§5.1).
func (d *Directory) DeleteUser(ctx context.Context, username string) error {
	_, err := d.c.Do(ctx, targets.Request{Op: "delete user", User: username, Method: http.MethodDelete, Path: api + "/admin/users",
		Query: url.Values{"name": {username}}})
	if targets.StatusOf(err) == http.StatusNotFound {
		return targets.Reclassify(err, targets.ErrNotFound)
	}
	return err
}
