// Package jira owns the Jira Data Center / Server adapter: targets.Target
// over Jira's REST API v2 (/rest/api/2), with user properties as
// attributes, rename and delete. Section numbers (§3.x) refer to
// shared/reference/atlassian-rest.md.
package jira

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/usherhq/usher/targets"
)

// Config is the `directory:` block of a Jira app.
type Config struct {
	targets.Conn `yaml:",inline"`
	// ApplicationKeys are granted on create (e.g. ["jira-software"]); empty
	// means Jira's default application access.
	ApplicationKeys []string `yaml:"application_keys"`
}

// Validate checks the block; errors are *config.FieldError.
func (c *Config) Validate() []error { return c.Conn.Validate() }

// Open builds the adapter.
// PrivilegedGroups: Jira's administrators and system administrators (reference §2).
func (c *Config) PrivilegedGroups() []string {
	return []string{"jira-administrators", "jira-system-administrators"}
}

func (c *Config) Open(app string, deps targets.Deps) (targets.Target, error) {
	cl, err := c.Conn.Client(app, deps)
	if err != nil {
		return nil, err
	}
	return &Directory{c: cl, appKeys: c.ApplicationKeys}, nil
}

// Directory is a Jira user directory.
type Directory struct {
	c       *targets.Client
	appKeys []string
	// listMode remembers which user listing the server has (§3.10):
	// 0 unknown, 1 /user/list (10.3+), 2 /user/search.
	listMode atomic.Int32
}

var (
	_ targets.Config          = (*Config)(nil)
	_ targets.Target          = (*Directory)(nil)
	_ targets.AttributeSetter = (*Directory)(nil)
	_ targets.Renamer         = (*Directory)(nil)
	_ targets.Deleter         = (*Directory)(nil)
)

const api = "/rest/api/2"

// App is the configured app name.
func (d *Directory) App() string { return d.c.App() }

type jiraUser struct {
	Key           string            `json:"key"`
	Name          string            `json:"name"`
	EmailAddress  string            `json:"emailAddress"`
	DisplayName   string            `json:"displayName"`
	Active        *bool             `json:"active"`
	LastLoginTime targets.Timestamp `json:"lastLoginTime"`
	Groups        struct {
		Items []struct {
			Name string `json:"name"`
		} `json:"items"`
	} `json:"groups"`
}

func (u *jiraUser) user() *targets.User {
	return &targets.User{
		Name: u.Name, Key: u.Key, DisplayName: u.DisplayName, Email: u.EmailAddress,
		// A create response omits active; new users are active.
		Active:    u.Active == nil || *u.Active,
		LastLogin: u.LastLoginTime.Time,
	}
}

func (u *jiraUser) groupNames() []string {
	out := make([]string, 0, len(u.Groups.Items))
	for _, g := range u.Groups.Items {
		out = append(out, g.Name)
	}
	return out
}

// get reads a user (with groups when asked); 404 → ErrNotFound.
func (d *Directory) get(ctx context.Context, op, username string, groups bool) (*jiraUser, error) {
	q := url.Values{"username": {username}}
	if groups {
		q.Set("expand", "groups")
	}
	var u jiraUser
	_, err := d.c.Do(ctx, targets.Request{Op: op, User: username, Method: http.MethodGet, Path: api + "/user", Query: q, Out: &u})
	if err != nil {
		if targets.StatusOf(err) == http.StatusNotFound {
			return nil, targets.Reclassify(err, targets.ErrNotFound)
		}
		return nil, err
	}
	return &u, nil
}

// GetUser reads GET /user?username= (one call).
func (d *Directory) GetUser(ctx context.Context, username string) (*targets.User, error) {
	u, err := d.get(ctx, "get user", username, false)
	if err != nil {
		return nil, err
	}
	return u.user(), nil
}

// CreateUser posts the documented body (§3.4): no password (Jira generates
// a random one), no e-mail notification.
func (d *Directory) CreateUser(ctx context.Context, nu targets.NewUser) (*targets.User, error) {
	body := map[string]any{
		"name": nu.Name, "emailAddress": nu.Email, "displayName": nu.DisplayName,
		"notification": "false",
	}
	if nu.Password != "" {
		body["password"] = nu.Password
	}
	if len(d.appKeys) > 0 {
		body["applicationKeys"] = d.appKeys
	}
	var u jiraUser
	res, err := d.c.Do(ctx, targets.Request{Op: "create user", User: nu.Name, Method: http.MethodPost, Path: api + "/user", Body: body, Out: &u})
	if err != nil {
		if !duplicate(err) {
			return nil, err
		}
		if res.Resent {
			// Our own earlier attempt got through (see targets.Response).
			return d.GetUser(ctx, nu.Name)
		}
		return nil, targets.Reclassify(err, targets.ErrExists)
	}
	if u.Name == "" {
		u.Name = nu.Name
	}
	return u.user(), nil
}

// duplicate recognises Jira's "username taken" answer: 400 with
// errors.username (§3.4), the text pycontribs/jira matches.
func duplicate(err error) bool {
	if targets.StatusOf(err) != http.StatusBadRequest {
		return false
	}
	e := targets.APIErrorOf(err)
	return e != nil && (e.Fields["username"] != "" || e.Mentions("already exists"))
}

// UpdateUser sends only the changed fields in one PUT (§3.5).
func (d *Directory) UpdateUser(ctx context.Context, username string, up targets.Update) error {
	body := map[string]any{}
	if up.DisplayName != nil {
		body["displayName"] = *up.DisplayName
	}
	if up.Email != nil {
		body["emailAddress"] = *up.Email
	}
	if len(body) == 0 {
		return nil
	}
	return d.put(ctx, "update user", username, body)
}

func (d *Directory) put(ctx context.Context, op, username string, body map[string]any) error {
	_, err := d.c.Do(ctx, targets.Request{Op: op, User: username, Method: http.MethodPut, Path: api + "/user",
		Query: url.Values{"username": {username}}, Body: body})
	switch {
	case err == nil:
		return nil
	case targets.StatusOf(err) == http.StatusNotFound:
		return targets.Reclassify(err, targets.ErrNotFound)
	case duplicate(err):
		return targets.Reclassify(err, targets.ErrExists)
	}
	return err
}

// SetActive reads the user and writes {"active": bool} (Jira 8.3+, §3.6)
// only when the state differs.
func (d *Directory) SetActive(ctx context.Context, username string, active bool) error {
	u, err := d.get(ctx, "set active", username, false)
	if err != nil {
		return err
	}
	if u.Active != nil && *u.Active == active {
		return nil
	}
	// An answer without "active" (a proxy's page, an old Jira) tells
	// nothing: write the wanted state rather than assume it holds.
	op := "deactivate user"
	if active {
		op = "activate user"
	}
	return d.put(ctx, op, username, map[string]any{"active": active})
}

// UserGroups reads GET /user?expand=groups (there is no /user/groups on
// DC, §3.9).
func (d *Directory) UserGroups(ctx context.Context, username string) ([]string, error) {
	u, err := d.get(ctx, "list groups", username, true)
	if err != nil {
		return nil, err
	}
	return u.groupNames(), nil
}

// AddToGroup posts to /group/user. Jira's answers for "already a member"
// (400) and for a missing user or group (404) are not documented for DC
// (§3.9, §11.1), so on any 400/404 one follow-up read of the user's groups
// decides: user missing → ErrNotFound, already a member → nil, otherwise
// a 404 means the group is missing.
func (d *Directory) AddToGroup(ctx context.Context, username, group string) error {
	op := "add to group " + group
	_, err := d.c.Do(ctx, targets.Request{Op: op, User: username, Method: http.MethodPost, Path: api + "/group/user",
		Query: url.Values{"groupname": {group}}, Body: map[string]string{"name": username}, Idempotent: true})
	if err == nil {
		return nil
	}
	st := targets.StatusOf(err)
	if st != http.StatusBadRequest && st != http.StatusNotFound {
		return err
	}
	if e := targets.APIErrorOf(err); st == http.StatusBadRequest && e != nil && e.Mentions("already a member") {
		return nil // the Cloud wording, which DC is believed to share; saves the read
	}
	u, gerr := d.get(ctx, op, username, true)
	switch {
	case errors.Is(gerr, targets.ErrNotFound):
		return targets.Reclassify(err, targets.ErrNotFound)
	case gerr != nil:
		return err
	case hasFold(u.groupNames(), group):
		return nil
	case st == http.StatusNotFound:
		return targets.Reclassify(err, targets.ErrGroupNotFound)
	}
	return err
}

// RemoveFromGroup deletes /group/user. A 404 (no such user, group or
// membership) already means "not a member"; a 400 is checked with one
// read, since DC's wording for non-members is undocumented.
func (d *Directory) RemoveFromGroup(ctx context.Context, username, group string) error {
	op := "remove from group " + group
	_, err := d.c.Do(ctx, targets.Request{Op: op, User: username, Method: http.MethodDelete, Path: api + "/group/user",
		Query: url.Values{"groupname": {group}, "username": {username}}})
	switch st := targets.StatusOf(err); {
	case err == nil, st == http.StatusNotFound:
		return nil
	case st == http.StatusBadRequest:
		u, gerr := d.get(ctx, op, username, true)
		if errors.Is(gerr, targets.ErrNotFound) || (gerr == nil && !hasFold(u.groupNames(), group)) {
			return nil
		}
	}
	return err
}

// CreateGroup posts /group. The duplicate answer is undocumented for DC
// (§3.9: 400 [U]), so a 400/409 is confirmed by reading the group's
// members (200 → it exists).
func (d *Directory) CreateGroup(ctx context.Context, group string) error {
	op := "create group " + group
	_, err := d.c.Do(ctx, targets.Request{Op: op, Method: http.MethodPost, Path: api + "/group",
		Body: map[string]string{"name": group}, Idempotent: true})
	if st := targets.StatusOf(err); err == nil || (st != http.StatusBadRequest && st != http.StatusConflict) {
		return err
	}
	if _, gerr := d.c.Do(ctx, targets.Request{Op: op, Method: http.MethodGet, Path: api + "/group/member",
		Query: url.Values{"groupname": {group}, "maxResults": {"1"}}}); gerr == nil {
		return nil
	}
	return err
}

// ListUsers follows §3.10: the /user/list cursor stream on Jira 10.3+,
// and on older Jira (where that path is 404) /user/search?username=. with
// active and inactive users. The search window is capped by the server
// (100 on the newest docs, 1000 on older ones), which bounds how far that
// fallback can page.
func (d *Directory) ListUsers(ctx context.Context, cursor string, limit int) (targets.Page, error) {
	if limit <= 0 {
		limit = 100
	}
	mode := d.listMode.Load()
	switch {
	case strings.HasPrefix(cursor, "s:"):
		mode = 2
	case strings.HasPrefix(cursor, "c:"):
		mode = 1
	}
	if mode != 2 {
		p, err := d.listStream(ctx, strings.TrimPrefix(cursor, "c:"), limit)
		if err == nil || targets.StatusOf(err) != http.StatusNotFound || mode == 1 {
			if err == nil {
				d.listMode.Store(1)
			}
			return p, err
		}
		d.listMode.Store(2)
	}
	start := 0
	if c := strings.TrimPrefix(cursor, "s:"); cursor != "" && c != "" {
		n, err := strconv.Atoi(c)
		if err != nil || n < 0 {
			return targets.Page{}, fmt.Errorf("%s: list users: bad cursor %q", d.App(), cursor)
		}
		start = n
	}
	var users []jiraUser
	_, err := d.c.Do(ctx, targets.Request{Op: "list users", Method: http.MethodGet, Path: api + "/user/search",
		Query: url.Values{"username": {"."}, "includeActive": {"true"}, "includeInactive": {"true"},
			"startAt": {strconv.Itoa(start)}, "maxResults": {strconv.Itoa(limit)}}, Out: &users})
	if err != nil {
		return targets.Page{}, err
	}
	p := targets.Page{Users: make([]targets.User, 0, len(users))}
	for i := range users {
		p.Users = append(p.Users, *users[i].user())
	}
	if len(users) >= limit {
		p.Next = "s:" + strconv.Itoa(start+len(users))
	}
	return p, nil
}

func (d *Directory) listStream(ctx context.Context, cursor string, limit int) (targets.Page, error) {
	q := url.Values{"maxResults": {strconv.Itoa(limit)}}
	if cursor != "" {
		q.Set("cursor", cursor)
	}
	var page struct {
		NextCursor string     `json:"nextCursor"`
		IsLast     bool       `json:"isLast"`
		Values     []jiraUser `json:"values"`
	}
	if _, err := d.c.Do(ctx, targets.Request{Op: "list users", Method: http.MethodGet, Path: api + "/user/list", Query: q, Out: &page}); err != nil {
		return targets.Page{}, err
	}
	p := targets.Page{Users: make([]targets.User, 0, len(page.Values))}
	for i := range page.Values {
		p.Users = append(p.Users, *page.Values[i].user())
	}
	if !page.IsLast && page.NextCursor != "" {
		p.Next = "c:" + page.NextCursor
	}
	return p, nil
}

// SetAttributes writes each attribute as a user property holding a JSON
// string: PUT /user/properties/{key}?username= (one call per attribute).
func (d *Directory) SetAttributes(ctx context.Context, username string, attrs map[string]string) error {
	for _, k := range slices.Sorted(maps.Keys(attrs)) {
		_, err := d.c.Do(ctx, targets.Request{Op: "set attribute " + k, User: username, Method: http.MethodPut,
			Path: api + "/user/properties/" + url.PathEscape(k), Query: url.Values{"username": {username}}, Body: attrs[k]})
		if err != nil {
			if targets.StatusOf(err) == http.StatusNotFound {
				return targets.Reclassify(err, targets.ErrNotFound)
			}
			return err
		}
	}
	return nil
}

// Attributes reads the named user properties. A 404 is "no such
// property" unless the user is missing, which one read decides the
// first time a 404 comes back.
func (d *Directory) Attributes(ctx context.Context, username string, names []string) (map[string]string, error) {
	out := map[string]string{}
	checked := false
	for _, k := range names {
		var prop struct {
			Value json.RawMessage `json:"value"`
		}
		_, err := d.c.Do(ctx, targets.Request{Op: "get attribute " + k, User: username, Method: http.MethodGet,
			Path: api + "/user/properties/" + url.PathEscape(k), Query: url.Values{"username": {username}}, Out: &prop})
		if err != nil {
			if targets.StatusOf(err) != http.StatusNotFound {
				return nil, err
			}
			if !checked {
				if _, err := d.get(ctx, "get attributes", username, false); err != nil {
					return nil, err
				}
				checked = true
			}
			continue
		}
		// usher writes JSON strings; anything else is shown as JSON text.
		var v string
		switch {
		case len(prop.Value) == 0 || string(prop.Value) == "null":
		case json.Unmarshal(prop.Value, &v) == nil:
			out[k] = v
		default:
			out[k] = string(prop.Value)
		}
	}
	return out, nil
}

// Rename sends {"name": to} (§3.5); the key stays.
func (d *Directory) Rename(ctx context.Context, from, to string) error {
	return d.put(ctx, "rename user to "+to, from, map[string]any{"name": to})
}

// DeleteUser deletes the user (§3.7).
func (d *Directory) DeleteUser(ctx context.Context, username string) error {
	_, err := d.c.Do(ctx, targets.Request{Op: "delete user", User: username, Method: http.MethodDelete, Path: api + "/user",
		Query: url.Values{"username": {username}}})
	if targets.StatusOf(err) == http.StatusNotFound {
		return targets.Reclassify(err, targets.ErrNotFound)
	}
	return err
}

func hasFold(list []string, s string) bool {
	for _, v := range list {
		if strings.EqualFold(v, s) {
			return true
		}
	}
	return false
}
