// Package crowd owns the Crowd adapter: targets.Target over Crowd's
// usermanagement REST API (/rest/usermanagement/1), authenticated as a
// Crowd application, with user attributes and rename. Jira acting as a
// Crowd server serves the same API (§3.12). Section numbers (§6.x) refer
// to shared/reference/atlassian-rest.md.
package crowd

import (
	"context"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/usherhq/usher/config"
	"github.com/usherhq/usher/targets"
)

// Config is the `directory:` block of a Crowd app. Crowd authenticates
// applications, not users (§6.1), so there is no username or token.
type Config struct {
	// URL is the Crowd base URL including its context path (usually
	// https://crowd.example.com/crowd); default the app's upstream.
	URL                 string        `yaml:"url"`
	Application         string        `yaml:"application"`
	ApplicationPassword config.Secret `yaml:"application_password"`
	Concurrency         int           `yaml:"concurrency"`
	Timeout             time.Duration `yaml:"timeout"`
}

// Validate checks the block; errors are *config.FieldError.
func (c *Config) Validate() []error {
	errs := targets.ValidateURL("url", c.URL)
	if c.Application == "" {
		errs = append(errs, &config.FieldError{Field: "application", Msg: "required: the Crowd application name"})
	}
	if c.ApplicationPassword.IsZero() {
		errs = append(errs, &config.FieldError{Field: "application_password", Msg: "required"})
	}
	return append(errs, targets.ValidateLimits(c.Concurrency, c.Timeout)...)
}

// Open builds the adapter.
// PrivilegedGroups: Crowd's administrators.
func (c *Config) PrivilegedGroups() []string {
	return []string{"crowd-administrators"}
}

func (c *Config) Open(app string, deps targets.Deps) (targets.Target, error) {
	pw, err := c.ApplicationPassword.Resolve()
	if err != nil {
		return nil, fmt.Errorf("%s: application_password: %w", app, err)
	}
	cl, err := targets.OpenClient(app, c.URL, targets.Auth{Username: c.Application, Password: pw}, c.Concurrency, c.Timeout, deps)
	if err != nil {
		return nil, err
	}
	return &Directory{c: cl}, nil
}

// Directory is a Crowd user directory.
type Directory struct{ c *targets.Client }

var (
	_ targets.Config          = (*Config)(nil)
	_ targets.Target          = (*Directory)(nil)
	_ targets.AttributeSetter = (*Directory)(nil)
	_ targets.Renamer         = (*Directory)(nil)
	_ targets.Deleter         = (*Directory)(nil)
)

const api = "/rest/usermanagement/1"

// lastAuthenticated is the attribute Crowd keeps the last login in, epoch
// milliseconds (§6.6 [U name]).
const lastAuthenticated = "lastAuthenticated"

// App is the configured app name.
func (d *Directory) App() string { return d.c.App() }

type attribute struct {
	Name   string   `json:"name"`
	Values []string `json:"values"`
}

type attributes struct {
	Attributes []attribute `json:"attributes"`
}

type crowdUser struct {
	Name        string     `json:"name"`
	Key         string     `json:"key"`
	FirstName   string     `json:"first-name"`
	LastName    string     `json:"last-name"`
	DisplayName string     `json:"display-name"`
	Email       string     `json:"email"`
	Active      bool       `json:"active"`
	Attributes  attributes `json:"attributes"`
}

func (u *crowdUser) user() targets.User {
	out := targets.User{Name: u.Name, Key: u.Key, DisplayName: u.DisplayName, Email: u.Email, Active: u.Active}
	for _, a := range u.Attributes.Attributes {
		if a.Name == lastAuthenticated && len(a.Values) > 0 {
			var ts targets.Timestamp
			if ts.UnmarshalJSON([]byte(a.Values[0])) == nil {
				out.LastLogin = ts.Time
			}
		}
	}
	return out
}

func notFound(err error) error {
	if targets.StatusOf(err) == http.StatusNotFound {
		return targets.Reclassify(err, targets.ErrNotFound)
	}
	return err
}

// GetUser reads GET /user?username=&expand=attributes (one call; the
// attributes carry the last login).
func (d *Directory) GetUser(ctx context.Context, username string) (*targets.User, error) {
	var cu crowdUser
	_, err := d.c.Do(ctx, targets.Request{Op: "get user", User: username, Method: http.MethodGet, Path: api + "/user",
		Query: url.Values{"username": {username}, "expand": {"attributes"}}, Out: &cu})
	if err != nil {
		return nil, notFound(err)
	}
	u := cu.user()
	return &u, nil
}

// splitName derives Crowd's first and last names from a display name:
// the last word is the last name.
func splitName(display string) (first, last string) {
	display = strings.TrimSpace(display)
	i := strings.LastIndexByte(display, ' ')
	if i < 0 {
		return display, display
	}
	return strings.TrimSpace(display[:i]), display[i+1:]
}

// CreateUser posts /user (§6.3) with a random password. Crowd answers 400
// both for "exists" and for invalid input (INVALID_USER), so a 400 is
// confirmed with one read of the user.
func (d *Directory) CreateUser(ctx context.Context, nu targets.NewUser) (*targets.User, error) {
	pw := nu.Password
	if pw == "" {
		var err error
		if pw, err = targets.RandomPassword(); err != nil {
			return nil, err
		}
	}
	first, last := splitName(nu.DisplayName)
	body := map[string]any{
		"name": nu.Name, "first-name": first, "last-name": last, "display-name": nu.DisplayName,
		"email": nu.Email, "active": true, "password": map[string]string{"value": pw},
	}
	var cu crowdUser
	res, err := d.c.Do(ctx, targets.Request{Op: "create user", User: nu.Name, Method: http.MethodPost, Path: api + "/user", Body: body, Out: &cu})
	if err == nil {
		// The 201 may carry the user; when it does not, what was sent is
		// what Crowd stored, so no read is spent.
		if cu.Name == "" {
			cu = crowdUser{Name: nu.Name, DisplayName: nu.DisplayName, Email: nu.Email, Active: true}
		}
		u := cu.user()
		return &u, nil
	}
	if st := targets.StatusOf(err); st != http.StatusBadRequest && st != http.StatusConflict {
		return nil, err
	}
	u, gerr := d.GetUser(ctx, nu.Name)
	switch {
	case gerr != nil:
		return nil, err
	case res.Resent:
		return u, nil
	}
	return nil, targets.Reclassify(err, targets.ErrExists)
}

// readUser is the read half of read-modify-write: the user as a generic
// object, so fields usher does not model survive the PUT (§6.3: PUT
// replaces the whole user).
func (d *Directory) readUser(ctx context.Context, op, username string) (map[string]any, error) {
	var m map[string]any
	_, err := d.c.Do(ctx, targets.Request{Op: op, User: username, Method: http.MethodGet, Path: api + "/user",
		Query: url.Values{"username": {username}}, Out: &m})
	if err != nil {
		return nil, notFound(err)
	}
	// Responses show password and attributes only as links; sending them
	// back would ask Crowd to change them.
	delete(m, "password")
	delete(m, "attributes")
	delete(m, "expand")
	return m, nil
}

func (d *Directory) writeUser(ctx context.Context, op, username string, m map[string]any) error {
	_, err := d.c.Do(ctx, targets.Request{Op: op, User: username, Method: http.MethodPut, Path: api + "/user",
		Query: url.Values{"username": {username}}, Body: m})
	return notFound(err)
}

// UpdateUser is a read-modify-write of the full user (two calls); a
// display-name change also sets first and last name.
func (d *Directory) UpdateUser(ctx context.Context, username string, up targets.Update) error {
	if up.DisplayName == nil && up.Email == nil {
		return nil
	}
	m, err := d.readUser(ctx, "update user", username)
	if err != nil {
		return err
	}
	if up.DisplayName != nil {
		m["display-name"] = *up.DisplayName
		m["first-name"], m["last-name"] = splitName(*up.DisplayName)
	}
	if up.Email != nil {
		m["email"] = *up.Email
	}
	return d.writeUser(ctx, "update user", username, m)
}

// SetActive flips the active flag by read-modify-write (the KB route,
// §6.3), writing only when it differs.
func (d *Directory) SetActive(ctx context.Context, username string, active bool) error {
	op := "deactivate user"
	if active {
		op = "activate user"
	}
	m, err := d.readUser(ctx, op, username)
	if err != nil {
		return err
	}
	if cur, ok := m["active"].(bool); ok && cur == active {
		return nil
	}
	m["active"] = active
	return d.writeUser(ctx, op, username, m)
}

// groupList decodes a membership list under "groups" or the singular
// "group" the Crowd 6 reference shows (§6.6).
type groupList struct {
	Groups []struct {
		Name string `json:"name"`
	} `json:"groups"`
	Group []struct {
		Name string `json:"name"`
	} `json:"group"`
}

func (l *groupList) names() []string {
	var out []string
	for _, g := range append(l.Groups, l.Group...) {
		out = append(out, g.Name)
	}
	return out
}

// UserGroups pages GET /user/group/direct. Crowd 2.8 answered 200 with an
// empty list for unknown users (CWD-4433), so an empty answer is
// confirmed with one read.
func (d *Directory) UserGroups(ctx context.Context, username string) ([]string, error) {
	var out []string
	const pageSize = 1000
	for start := 0; ; {
		var l groupList
		_, err := d.c.Do(ctx, targets.Request{Op: "list groups", User: username, Method: http.MethodGet, Path: api + "/user/group/direct",
			Query: url.Values{"username": {username}, "start-index": {strconv.Itoa(start)}, "max-results": {strconv.Itoa(pageSize)}}, Out: &l})
		if err != nil {
			return nil, notFound(err)
		}
		names := l.names()
		out = append(out, names...)
		if len(names) < pageSize {
			break
		}
		start += len(names)
	}
	if len(out) == 0 {
		if _, err := d.GetUser(ctx, username); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// AddToGroup posts /user/group/direct. Crowd tells the cases apart by
// status (§6.4): 400 group missing, 404 user missing, 409 already a
// member.
func (d *Directory) AddToGroup(ctx context.Context, username, group string) error {
	_, err := d.c.Do(ctx, targets.Request{Op: "add to group " + group, User: username, Method: http.MethodPost, Path: api + "/user/group/direct",
		Query: url.Values{"username": {username}}, Body: map[string]string{"name": group}, Idempotent: true})
	switch targets.StatusOf(err) {
	case http.StatusConflict:
		return nil
	case http.StatusBadRequest:
		return targets.Reclassify(err, targets.ErrGroupNotFound)
	case http.StatusNotFound:
		return targets.Reclassify(err, targets.ErrNotFound)
	}
	return err
}

// RemoveFromGroup deletes /user/group/direct; a 404 (no such membership,
// user or group) means not a member.
func (d *Directory) RemoveFromGroup(ctx context.Context, username, group string) error {
	_, err := d.c.Do(ctx, targets.Request{Op: "remove from group " + group, User: username, Method: http.MethodDelete, Path: api + "/user/group/direct",
		Query: url.Values{"username": {username}, "groupname": {group}}})
	if targets.StatusOf(err) == http.StatusNotFound {
		return nil
	}
	return err
}

// CreateGroup posts /group (§6.5). Crowd's 400 covers both "exists" and
// "invalid", so it is confirmed by reading the group.
func (d *Directory) CreateGroup(ctx context.Context, group string) error {
	op := "create group " + group
	_, err := d.c.Do(ctx, targets.Request{Op: op, Method: http.MethodPost, Path: api + "/group",
		Body: map[string]any{"name": group, "type": "GROUP", "active": true}, Idempotent: true})
	if st := targets.StatusOf(err); err == nil || (st != http.StatusBadRequest && st != http.StatusConflict) {
		return err
	}
	if _, gerr := d.c.Do(ctx, targets.Request{Op: op, Method: http.MethodGet, Path: api + "/group",
		Query: url.Values{"groupname": {group}}}); gerr == nil {
		return nil
	}
	return err
}

// ListUsers pages GET /search?entity-type=user&expand=user (§6.6); the
// cursor is the start index. Crowd gives no total, so a full page means
// "ask again".
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
	var l struct {
		Users []crowdUser `json:"users"`
		User  []crowdUser `json:"user"`
	}
	_, err := d.c.Do(ctx, targets.Request{Op: "list users", Method: http.MethodGet, Path: api + "/search",
		Query: url.Values{"entity-type": {"user"}, "expand": {"user"}, "start-index": {strconv.Itoa(start)}, "max-results": {strconv.Itoa(limit)}},
		Out:   &l})
	if err != nil {
		return targets.Page{}, err
	}
	all := append(l.Users, l.User...)
	p := targets.Page{Users: make([]targets.User, 0, len(all))}
	for i := range all {
		p.Users = append(p.Users, all[i].user())
	}
	if len(all) >= limit {
		p.Next = strconv.Itoa(start + len(all))
	}
	return p, nil
}

// SetAttributes stores the attributes with one POST /user/attribute
// (Crowd's documented verb; clients disagree, §6.3 [U], so a 405 is
// retried once with PUT). Other attributes are left alone.
func (d *Directory) SetAttributes(ctx context.Context, username string, attrs map[string]string) error {
	if len(attrs) == 0 {
		return nil
	}
	var body attributes
	for _, k := range slices.Sorted(maps.Keys(attrs)) {
		body.Attributes = append(body.Attributes, attribute{Name: k, Values: []string{attrs[k]}})
	}
	req := targets.Request{Op: "set attributes", User: username, Method: http.MethodPost, Path: api + "/user/attribute",
		Query: url.Values{"username": {username}}, Body: body, Idempotent: true}
	_, err := d.c.Do(ctx, req)
	if targets.StatusOf(err) == http.StatusMethodNotAllowed {
		req.Method = http.MethodPut
		_, err = d.c.Do(ctx, req)
	}
	return notFound(err)
}

// Attributes reads GET /user/attribute (one call) and keeps the named
// ones (first value).
func (d *Directory) Attributes(ctx context.Context, username string, names []string) (map[string]string, error) {
	var body attributes
	_, err := d.c.Do(ctx, targets.Request{Op: "get attributes", User: username, Method: http.MethodGet, Path: api + "/user/attribute",
		Query: url.Values{"username": {username}}, Out: &body})
	if err != nil {
		return nil, notFound(err)
	}
	out := map[string]string{}
	for _, a := range body.Attributes {
		if slices.Contains(names, a.Name) && len(a.Values) > 0 {
			out[a.Name] = a.Values[0]
		}
	}
	return out, nil
}

// Rename posts /user/rename?username= {"new-name": to}, Crowd's rename
// resource (not in the reference; Crowd 2.8+). A 400 whose target name
// is taken is ErrExists.
func (d *Directory) Rename(ctx context.Context, from, to string) error {
	op := "rename user to " + to
	_, err := d.c.Do(ctx, targets.Request{Op: op, User: from, Method: http.MethodPost, Path: api + "/user/rename",
		Query: url.Values{"username": {from}}, Body: map[string]string{"new-name": to}})
	switch targets.StatusOf(err) {
	case http.StatusNotFound:
		return targets.Reclassify(err, targets.ErrNotFound)
	case http.StatusBadRequest, http.StatusConflict:
		if _, gerr := d.GetUser(ctx, to); gerr == nil {
			return targets.Reclassify(err, targets.ErrExists)
		}
	}
	return err
}

// DeleteUser calls DELETE /user?username= (§6.3).
func (d *Directory) DeleteUser(ctx context.Context, username string) error {
	_, err := d.c.Do(ctx, targets.Request{Op: "delete user", User: username, Method: http.MethodDelete, Path: api + "/user",
		Query: url.Values{"username": {username}}})
	return notFound(err)
}
