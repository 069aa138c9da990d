// Package confluence owns the Confluence Data Center / Server adapter:
// targets.Target over Confluence's REST API (/rest/api) using the admin
// user API of 8.4+. Section numbers (§4.x) refer to
// shared/reference/atlassian-rest.md.
package confluence

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/usherhq/usher/targets"
)

// Config is the `directory:` block of a Confluence app.
type Config struct {
	targets.Conn `yaml:",inline"`
}

// Validate checks the block; errors are *config.FieldError.
func (c *Config) Validate() []error { return c.Conn.Validate() }

// PrivilegedGroups: Confluence's administrators and system administrators.
func (c *Config) PrivilegedGroups() []string {
	return []string{"confluence-administrators", "system-administrators"}
}

// HidesEmails: Confluence's user resource carries no e-mail address
// (reference §4.3), so an account usher did not create cannot be matched
// to a verified e-mail.
func (c *Config) HidesEmails() bool { return true }

// Open builds the adapter.
func (c *Config) Open(app string, deps targets.Deps) (targets.Target, error) {
	cl, err := c.Conn.Client(app, deps)
	if err != nil {
		return nil, err
	}
	return &Directory{c: cl}, nil
}

// Directory is a Confluence user directory.
type Directory struct{ c *targets.Client }

var (
	_ targets.Config  = (*Config)(nil)
	_ targets.Target  = (*Directory)(nil)
	_ targets.Deleter = (*Directory)(nil)
)

const api = "/rest/api"

// App is the configured app name.
func (d *Directory) App() string { return d.c.App() }

type person struct {
	Username    string `json:"username"`
	UserKey     string `json:"userKey"`
	DisplayName string `json:"displayName"`
	// Status needs expand=status: "Active" or "Deactivated" (§4.3).
	Status string `json:"status"`
	// Email is not part of the documented user representation (§4.3 [U]);
	// it is read when a version sends it.
	Email     string            `json:"email"`
	LastLogin targets.Timestamp `json:"lastLogin"`
}

func (p *person) user() targets.User {
	return targets.User{
		Name: p.Username, Key: p.UserKey, DisplayName: p.DisplayName, Email: p.Email, EmailUnknown: p.Email == "",
		Active: !strings.EqualFold(p.Status, "Deactivated"), LastLogin: p.LastLogin.Time,
	}
}

// page is Confluence's paging envelope (§4.8).
type page[T any] struct {
	Results []T `json:"results"`
	Start   int `json:"start"`
	Limit   int `json:"limit"`
	Size    int `json:"size"`
	Links   struct {
		Next string `json:"next"`
	} `json:"_links"`
}

// more applies §4.8's stop rule: no _links.next, or a short page. The
// server may cap limit below the request, so its own limit counts.
func (p *page[T]) more(asked int) bool {
	limit := p.Limit
	if limit <= 0 {
		limit = asked
	}
	return p.Links.Next != "" && len(p.Results) > 0 && len(p.Results) >= limit
}

func (d *Directory) get(ctx context.Context, op, username string) (*person, error) {
	var p person
	_, err := d.c.Do(ctx, targets.Request{Op: op, User: username, Method: http.MethodGet, Path: api + "/user",
		Query: url.Values{"username": {username}, "expand": {"status"}}, Out: &p})
	if err != nil {
		if targets.StatusOf(err) == http.StatusNotFound {
			return nil, targets.Reclassify(err, targets.ErrNotFound)
		}
		return nil, err
	}
	return &p, nil
}

// GetUser reads GET /user?username=&expand=status (one call). Email is
// empty, and EmailUnknown set, unless the server sends one; usher then
// sends the e-mail on UpdateUser whenever it differs from the one usher
// last applied (jit's reconcile), since PUT /admin/user/{username}
// accepts it (§4.5).
func (d *Directory) GetUser(ctx context.Context, username string) (*targets.User, error) {
	p, err := d.get(ctx, "get user", username)
	if err != nil {
		return nil, err
	}
	u := p.user()
	return &u, nil
}

// CreateUser posts /admin/user (8.4+, §4.4) with a password (random when
// none is given) and notifyViaEmail false. Confluence usernames are lower
// case; matching is case-insensitive, so the name is lowered here rather
// than failing validation.
func (d *Directory) CreateUser(ctx context.Context, nu targets.NewUser) (*targets.User, error) {
	name := strings.ToLower(nu.Name)
	pw := nu.Password
	if pw == "" {
		var err error
		if pw, err = targets.RandomPassword(); err != nil {
			return nil, err
		}
	}
	var out struct {
		UserKey string `json:"userKey"`
	}
	res, err := d.c.Do(ctx, targets.Request{Op: "create user", User: name, Method: http.MethodPost, Path: api + "/admin/user",
		Body: map[string]any{"userName": name, "fullName": nu.DisplayName, "email": nu.Email, "password": pw, "notifyViaEmail": false},
		Out:  &out})
	if err != nil {
		if targets.StatusOf(err) != http.StatusConflict {
			return nil, err
		}
		if res.Resent {
			return d.GetUser(ctx, name)
		}
		return nil, targets.Reclassify(err, targets.ErrExists)
	}
	return &targets.User{Name: name, Key: out.UserKey, DisplayName: nu.DisplayName, Email: nu.Email, Active: true}, nil
}

// UpdateUser sends the changed fields to PUT /admin/user/{username}
// (§4.5). Whether the server accepts a body without both fields is [U];
// usher sends only what changed so it never blanks the other one.
func (d *Directory) UpdateUser(ctx context.Context, username string, up targets.Update) error {
	body := map[string]any{}
	if up.DisplayName != nil {
		body["fullName"] = *up.DisplayName
	}
	if up.Email != nil {
		body["email"] = *up.Email
	}
	if len(body) == 0 {
		return nil
	}
	_, err := d.c.Do(ctx, targets.Request{Op: "update user", User: username, Method: http.MethodPut,
		Path: api + "/admin/user/" + url.PathEscape(username), Body: body})
	if targets.StatusOf(err) == http.StatusNotFound {
		return targets.Reclassify(err, targets.ErrNotFound)
	}
	return err
}

// SetActive reads the status and calls disable/enable (§4.6) only when it
// differs; the endpoints are idempotent, the read saves a write per login.
func (d *Directory) SetActive(ctx context.Context, username string, active bool) error {
	p, err := d.get(ctx, "set active", username)
	if err != nil {
		return err
	}
	if p.user().Active == active {
		return nil
	}
	op, verb := "deactivate user", "disable"
	if active {
		op, verb = "activate user", "enable"
	}
	_, err = d.c.Do(ctx, targets.Request{Op: op, User: username, Method: http.MethodPut,
		Path: api + "/admin/user/" + url.PathEscape(username) + "/" + verb})
	if targets.StatusOf(err) == http.StatusNotFound {
		return targets.Reclassify(err, targets.ErrNotFound)
	}
	return err
}

// UserGroups pages GET /user/memberof. An empty answer is confirmed with
// one user read, in case the server answers 200 for unknown users.
func (d *Directory) UserGroups(ctx context.Context, username string) ([]string, error) {
	var out []string
	const limit = 200
	for start := 0; ; {
		var p page[struct {
			Name string `json:"name"`
		}]
		_, err := d.c.Do(ctx, targets.Request{Op: "list groups", User: username, Method: http.MethodGet, Path: api + "/user/memberof",
			Query: url.Values{"username": {username}, "start": {strconv.Itoa(start)}, "limit": {strconv.Itoa(limit)}}, Out: &p})
		if err != nil {
			if targets.StatusOf(err) == http.StatusNotFound {
				return nil, targets.Reclassify(err, targets.ErrNotFound)
			}
			return nil, err
		}
		for _, g := range p.Results {
			out = append(out, g.Name)
		}
		if !p.more(limit) {
			break
		}
		start += len(p.Results)
	}
	if len(out) == 0 {
		if _, err := d.get(ctx, "list groups", username); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// AddToGroup calls PUT /user/{u}/group/{g} (204, idempotent, §4.7). Which
// entity a 404 means is undocumented, so one user read decides.
func (d *Directory) AddToGroup(ctx context.Context, username, group string) error {
	op := "add to group " + group
	_, err := d.c.Do(ctx, targets.Request{Op: op, User: username, Method: http.MethodPut, Path: membership(username, group)})
	if targets.StatusOf(err) != http.StatusNotFound {
		return err
	}
	if _, gerr := d.get(ctx, op, username); errors.Is(gerr, targets.ErrNotFound) {
		return targets.Reclassify(err, targets.ErrNotFound)
	} else if gerr != nil {
		return err
	}
	return targets.Reclassify(err, targets.ErrGroupNotFound)
}

// RemoveFromGroup calls DELETE /user/{u}/group/{g} (204, idempotent); a
// 404 also means the user is not a member.
func (d *Directory) RemoveFromGroup(ctx context.Context, username, group string) error {
	_, err := d.c.Do(ctx, targets.Request{Op: "remove from group " + group, User: username, Method: http.MethodDelete, Path: membership(username, group)})
	if targets.StatusOf(err) == http.StatusNotFound {
		return nil
	}
	return err
}

func membership(username, group string) string {
	return api + "/user/" + url.PathEscape(username) + "/group/" + url.PathEscape(group)
}

// CreateGroup posts /admin/group; 409 (exists, §4.7) is success.
func (d *Directory) CreateGroup(ctx context.Context, group string) error {
	_, err := d.c.Do(ctx, targets.Request{Op: "create group " + group, Method: http.MethodPost, Path: api + "/admin/group",
		Body: map[string]string{"name": group, "type": "group"}, Idempotent: true})
	if targets.StatusOf(err) == http.StatusConflict {
		return nil
	}
	return err
}

// ListUsers pages GET /user/list (8.4+, §4.9): every registered user,
// disabled ones included, with status. The cursor is the start offset.
func (d *Directory) ListUsers(ctx context.Context, cursor string, limit int) (targets.Page, error) {
	if limit <= 0 {
		limit = 200
	}
	start := 0
	if cursor != "" {
		n, err := strconv.Atoi(cursor)
		if err != nil || n < 0 {
			return targets.Page{}, fmt.Errorf("%s: list users: bad cursor %q", d.App(), cursor)
		}
		start = n
	}
	var p page[person]
	_, err := d.c.Do(ctx, targets.Request{Op: "list users", Method: http.MethodGet, Path: api + "/user/list",
		Query: url.Values{"start": {strconv.Itoa(start)}, "limit": {strconv.Itoa(limit)}, "expand": {"status"}}, Out: &p})
	if err != nil {
		return targets.Page{}, err
	}
	out := targets.Page{Users: make([]targets.User, 0, len(p.Results))}
	for i := range p.Results {
		out.Users = append(out.Users, p.Results[i].user())
	}
	if p.more(limit) {
		out.Next = strconv.Itoa(start + len(p.Results))
	}
	return out, nil
}

// DeleteUser calls DELETE /admin/user/{username}; Confluence answers 202
// and removes the user in a long-running task (§4.6), so the user may be
// readable for a while after this returns.
func (d *Directory) DeleteUser(ctx context.Context, username string) error {
	_, err := d.c.Do(ctx, targets.Request{Op: "delete user", User: username, Method: http.MethodDelete,
		Path: api + "/admin/user/" + url.PathEscape(username)})
	if targets.StatusOf(err) == http.StatusNotFound {
		return targets.Reclassify(err, targets.ErrNotFound)
	}
	return err
}
