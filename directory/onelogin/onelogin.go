// Package onelogin reads a OneLogin account's people through the
// OneLogin API (v2 users and roles, v1 groups), as a
// directory.Connector with deltas, authenticated by an API credential
// pair (OAuth 2.0 client credentials with HTTP Basic, reference §5.1).
//
// OneLogin has no nested groups. A person holds many roles (role_ids)
// and at most one group (group_id, a policy container); which of the two
// a person's Groups report is configured (GroupsFrom, roles by default),
// each under its OneLogin name. A full pull costs U/100 + R/100 (+ G/50)
// calls: it lists the roles (and groups) for their names, then streams
// the users, whose records carry their role_ids and group_id, so no
// per-person or per-role reads are needed. The scope (roles, groups) is
// applied to that complete listing on the client.
//
// Account states (reference §5.2, §7.1): status 1 is Active; status 2
// (suspended) and state 2 or 3 (rejected, unlicensed) are Disabled,
// leavers; everything else (unactivated, locked, password expired or
// pending, awaiting a reset, security questions, an unapproved state)
// is Inactive: temporary, never a leaver.
//
// Rate limits: every answer carries X-RateLimit-Limit, -Remaining and
// -Reset, the reset counted in seconds from now (not an epoch,
// reference §5.4). A 429 waits that long; a used-up window pauses the
// client before OneLogin has to refuse.
package onelogin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/usherhq/usher/directory"
	"github.com/usherhq/usher/directory/rest"
)

// Connector is a OneLogin directory. It is safe for concurrent use.
type Connector struct {
	name, idp string
	cfg       Config
	api       *rest.Client
	clock     clockwork.Clock
	log       *slog.Logger
	// needRoles and needGroups say which name listings a read needs.
	needRoles, needGroups bool
	// keepRaw: attributes or the subject need fields beyond user's.
	keepRaw bool
}

var (
	_ directory.Connector = (*Connector)(nil)
	_ directory.Deltaer   = (*Connector)(nil)
)

func newConnector(name, idp string, cfg Config, auth rest.Auth, deps directory.Deps) (*Connector, error) {
	base, _ := url.Parse(cfg.BaseURL)
	api, err := rest.New(rest.Config{
		Service: "onelogin " + name, Origin: base, HTTP: deps.Client, Clock: deps.Clock, Log: deps.Log,
		Observe: deps.Observe, Auth: auth, Timeout: cfg.Timeout, MaxWait: cfg.MaxWait / 20,
		Retry: retry, Pace: pace, Decode: decodeError,
	})
	if err != nil {
		return nil, err
	}
	c := &Connector{name: name, idp: idp, cfg: cfg, api: api, clock: api.Clock(), log: deps.Log}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	c.needRoles = len(cfg.Roles) > 0 || slices.Contains(cfg.GroupsFrom, "roles")
	c.needGroups = len(cfg.Groups) > 0 || slices.Contains(cfg.GroupsFrom, "group")
	c.keepRaw = len(cfg.Attributes) > 0 || cfg.SubjectAttribute == "samaccountname" || cfg.SubjectAttribute == "external_id"
	return c, nil
}

func (c *Connector) Name() string { return c.name }
func (c *Connector) IdP() string  { return c.idp }

// APIError is a OneLogin error body, in any of the shapes the reference
// lists (§5.4): the v1 and auth envelope
// {"status":{"error","code","type","message"}}, the SDK's flat
// {"code","type","message"} and v2's {"statusCode","name","message"}.
type APIError struct {
	Status  int
	Code    int
	Type    string // Unauthorized, NotFoundError, ...
	Message string
}

func (e *APIError) Error() string {
	if e.Message == "" {
		return e.Type
	}
	return e.Type + ": " + e.Message
}

func decodeError(status int, _ http.Header, body []byte) error {
	var b struct {
		Status *struct {
			Code    int    `json:"code"`
			Type    string `json:"type"`
			Message string `json:"message"`
		} `json:"status"`
		StatusCode int    `json:"statusCode"`
		Name       string `json:"name"`
		Code       int    `json:"code"`
		Type       string `json:"type"`
		Message    string `json:"message"`
	}
	if json.Unmarshal(body, &b) != nil {
		return &APIError{Status: status, Code: status, Type: http.StatusText(status), Message: rest.Snippet(body)}
	}
	switch {
	case b.Status != nil && (b.Status.Type != "" || b.Status.Message != ""):
		return &APIError{Status: status, Code: b.Status.Code, Type: b.Status.Type, Message: b.Status.Message}
	case b.Name != "" || b.StatusCode != 0:
		return &APIError{Status: status, Code: b.StatusCode, Type: b.Name, Message: b.Message}
	case b.Type != "" || b.Message != "":
		return &APIError{Status: status, Code: b.Code, Type: b.Type, Message: b.Message}
	}
	return &APIError{Status: status, Code: status, Type: http.StatusText(status), Message: rest.Snippet(body)}
}

// retry follows reference §5.4 and §7.5 ([U] that an exhausted limit
// answers 429 at all; X-RateLimit-Remaining 0 pauses the client first
// anyway, see pace): a 429 waits X-RateLimit-Reset
// seconds (plus up to a second of jitter, so that workers do not return
// at once), else Retry-After, else backoff; 500 and 502-504 back off
// (reads: repeating one is harmless). Other answers are final.
func retry(status int, h http.Header, now time.Time) (bool, time.Duration) {
	switch status {
	case http.StatusTooManyRequests:
		if d, ok := resetIn(h); ok {
			return true, d + time.Duration(rand.Int64N(int64(time.Second)))
		}
		d, _ := rest.RetryAfter(h, now)
		return true, d
	case http.StatusInternalServerError, http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return true, 0
	}
	return false, 0
}

// pace holds further calls when the window is used up.
func pace(h http.Header, now time.Time) time.Time {
	if h.Get("X-RateLimit-Remaining") != "0" {
		return time.Time{}
	}
	d, ok := resetIn(h)
	if !ok {
		return time.Time{}
	}
	return now.Add(d)
}

// resetIn reads X-RateLimit-Reset: seconds until the window resets.
func resetIn(h http.Header) (time.Duration, bool) {
	n, err := strconv.ParseInt(strings.TrimSpace(h.Get("X-RateLimit-Reset")), 10, 64)
	if err != nil || n < 0 {
		return 0, false
	}
	if n == 0 {
		return time.Second, true // the window is turning: try again shortly
	}
	return min(time.Duration(n)*time.Second, time.Hour), true
}

// explain adds what to fix to a refusal that is about setup.
func (c *Connector) explain(err error) error {
	switch rest.StatusOf(err) {
	case http.StatusUnauthorized:
		return fmt.Errorf("%w (check client_id and client_secret: the API credential was refused)", err)
	case http.StatusForbidden:
		return fmt.Errorf("%w (the API credential's scope does not cover this read; a sync needs \"Read all\")", err)
	}
	return err
}

func (c *Connector) url(path string, q url.Values) string {
	u := c.cfg.BaseURL + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	return u
}

// each walks every page of a v2 listing: the first page with q, then q
// with cursor = the After-Cursor header, until there is none (reference
// §5.4).
func (c *Connector) each(ctx context.Context, op, path string, q url.Values, budget *rest.Budget, fn func(res *rest.Response) error) error {
	for page := 1; ; page++ {
		res, err := c.api.Do(ctx, rest.Request{Op: op, URL: c.url(path, q), Budget: budget})
		if err != nil {
			return fmt.Errorf("%s page %d: %w", op, page, c.explain(err))
		}
		if err := fn(res); err != nil {
			return err
		}
		next := res.Header.Get("After-Cursor")
		if next == "" {
			return nil
		}
		if next == q.Get("cursor") {
			return fmt.Errorf("%s page %d: the same After-Cursor again", op, page)
		}
		q.Set("cursor", next)
	}
}

// user is a v2 user, trimmed to what a sync reads. Pointers tell null or
// absent from zero.
type user struct {
	ID               int64          `json:"id"`
	Username         *string        `json:"username"`
	Email            *string        `json:"email"`
	Firstname        *string        `json:"firstname"`
	Lastname         *string        `json:"lastname"`
	State            *int           `json:"state"`
	Status           *int           `json:"status"`
	GroupID          *int64         `json:"group_id"`
	RoleIDs          *[]int64       `json:"role_ids"`
	CustomAttributes map[string]any `json:"custom_attributes"`
	// raw is the whole record, kept only when the configuration reads
	// fields beyond these.
	raw map[string]any
}

func deref(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}

// decodeUsers reads a page of users (a bare array, reference §5.2).
func (c *Connector) decodeUsers(body []byte) ([]user, error) {
	var raws []json.RawMessage
	if err := rest.DecodeJSON(body, &raws); err != nil {
		return nil, fmt.Errorf("users: %w", err)
	}
	out := make([]user, len(raws))
	for i, r := range raws {
		if err := c.decodeUser(r, &out[i]); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func (c *Connector) decodeUser(r []byte, u *user) error {
	if err := json.Unmarshal(r, u); err != nil {
		return fmt.Errorf("decode user: %w", err)
	}
	if u.ID == 0 {
		return errors.New("decode user: a user without an id")
	}
	if c.keepRaw {
		if err := json.Unmarshal(r, &u.raw); err != nil {
			return fmt.Errorf("decode user: %w", err)
		}
	}
	return nil
}

// status maps state and status (reference §5.2, §7.1; see the package
// comment). [U] Treating state 2 (rejected) and 3 (unlicensed) as
// leavers is the reference's recommended policy, not OneLogin's word.
func status(u user) directory.Status {
	state, st := 1, 0
	if u.State != nil {
		state = *u.State
	}
	if u.Status != nil {
		st = *u.Status
	}
	switch {
	case state == 2 || state == 3 || st == 2:
		return directory.Disabled
	case state == 1 && st == 1:
		return directory.Active
	}
	return directory.Inactive
}

// names are the role and group names a read needs, by id.
type names struct {
	roles, groups map[int64]string
	// scopeRoles and scopeGroups are the configured scope, resolved.
	scopeRoles, scopeGroups map[int64]bool
}

// loadNames lists the roles and groups the configuration needs and
// resolves the scope. A scope entry that names no role or group (or,
// by name, several) is an error: silently empty, it would put everyone
// out of scope.
func (c *Connector) loadNames(ctx context.Context, budget *rest.Budget) (*names, error) {
	n := &names{roles: map[int64]string{}, groups: map[int64]string{}, scopeRoles: map[int64]bool{}, scopeGroups: map[int64]bool{}}
	if c.needRoles {
		q := url.Values{"limit": {strconv.Itoa(c.cfg.PageSize)}}
		err := c.each(ctx, "roles", "/api/2/roles", q, budget, func(res *rest.Response) error {
			var rs []struct {
				ID   int64  `json:"id"`
				Name string `json:"name"`
			}
			if err := rest.DecodeJSON(res.Body, &rs); err != nil {
				return fmt.Errorf("roles: %w", err)
			}
			for _, r := range rs {
				n.roles[r.ID] = r.Name
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
		if err := resolve("role", c.cfg.Roles, n.roles, n.scopeRoles); err != nil {
			return nil, err
		}
	}
	if c.needGroups {
		if err := c.listGroups(ctx, budget, n.groups); err != nil {
			return nil, err
		}
		if err := resolve("group", c.cfg.Groups, n.groups, n.scopeGroups); err != nil {
			return nil, err
		}
	}
	return n, nil
}

// listGroups reads the v1 groups, following pagination.next_link
// (reference §5.3; [U] the pagination keys).
func (c *Connector) listGroups(ctx context.Context, budget *rest.Budget, into map[int64]string) error {
	link := c.url("/api/1/groups", nil)
	for page := 1; link != ""; page++ {
		var env struct {
			Pagination struct {
				AfterCursor *string `json:"after_cursor"`
				NextLink    *string `json:"next_link"`
			} `json:"pagination"`
			Data []struct {
				ID   int64  `json:"id"`
				Name string `json:"name"`
			} `json:"data"`
		}
		if _, err := c.api.GetJSON(ctx, "groups", link, nil, budget, &env); err != nil {
			return fmt.Errorf("groups page %d: %w", page, c.explain(err))
		}
		for _, g := range env.Data {
			into[g.ID] = g.Name
		}
		next := ""
		switch {
		case env.Pagination.NextLink != nil && *env.Pagination.NextLink != "":
			next = *env.Pagination.NextLink
		case env.Pagination.AfterCursor != nil && *env.Pagination.AfterCursor != "":
			next = c.url("/api/1/groups", url.Values{"after_cursor": {*env.Pagination.AfterCursor}})
		}
		if next == link {
			return fmt.Errorf("groups page %d: the same next link again", page)
		}
		link = next
	}
	return nil
}

func resolve(kind string, keys []string, byID map[int64]string, into map[int64]bool) error {
	for _, k := range keys {
		if id, err := strconv.ParseInt(k, 10, 64); err == nil {
			if _, ok := byID[id]; !ok {
				return fmt.Errorf("scope %s %s does not exist", kind, k)
			}
			into[id] = true
			continue
		}
		var ids []int64
		for id, name := range byID {
			if name == k {
				ids = append(ids, id)
			}
		}
		switch len(ids) {
		case 0:
			return fmt.Errorf("scope %s %q: no %s has that name", kind, k, kind)
		case 1:
			into[ids[0]] = true
		default:
			return fmt.Errorf("scope %s %q: %d %ss have that name; configure its id", kind, k, len(ids), kind)
		}
	}
	return nil
}

// person maps a user with their groups and the scope verdict.
func (c *Connector) person(u user, n *names) (directory.Person, error) {
	id := strconv.FormatInt(u.ID, 10)
	p := directory.Person{
		ID: id, Username: deref(u.Username), Email: deref(u.Email),
		GivenName: deref(u.Firstname), FamilyName: deref(u.Lastname), Status: status(u),
	}
	// OneLogin keeps no display name of its own.
	p.DisplayName = strings.TrimSpace(p.GivenName + " " + p.FamilyName)
	switch a := c.cfg.SubjectAttribute; {
	case a == "id":
		p.Subject = id
	case strings.HasPrefix(a, "custom_attributes."):
		p.Subject = scalar(u.CustomAttributes[strings.TrimPrefix(a, "custom_attributes.")])
	default:
		p.Subject = c.field(u, a)
	}
	// [U] The reference shows role_ids in the v2 users list (its example
	// and the SDK's User model); no page says every listing and lookup
	// carries it. Without it, fail rather than guess.
	if c.needRoles && u.RoleIDs == nil {
		// Without role_ids the person's roles are unknown: calling them
		// roleless would drop their groups or put them out of scope.
		return p, fmt.Errorf("user %d: the answer carries no role_ids", u.ID)
	}
	inRoles := len(n.scopeRoles) == 0
	if u.RoleIDs != nil {
		for _, r := range *u.RoleIDs {
			name, ok := n.roles[r]
			if c.needRoles && !ok {
				return p, fmt.Errorf("user %d holds role %d, which the roles listing did not have", u.ID, r)
			}
			inRoles = inRoles || n.scopeRoles[r]
			if slices.Contains(c.cfg.GroupsFrom, "roles") {
				p.Groups = append(p.Groups, name)
				p.GroupIDs = append(p.GroupIDs, "role:"+strconv.FormatInt(r, 10))
			}
		}
	}
	inGroups := len(n.scopeGroups) == 0
	if u.GroupID != nil && *u.GroupID != 0 {
		g := *u.GroupID
		name, ok := n.groups[g]
		if c.needGroups && !ok {
			return p, fmt.Errorf("user %d is in group %d, which the groups listing did not have", u.ID, g)
		}
		inGroups = inGroups || n.scopeGroups[g]
		if slices.Contains(c.cfg.GroupsFrom, "group") {
			p.Groups = append(p.Groups, name)
			p.GroupIDs = append(p.GroupIDs, "group:"+strconv.FormatInt(g, 10))
		}
	}
	p.GroupsComplete = true
	p.OutOfScope = !inRoles || !inGroups
	if len(c.cfg.Attributes) > 0 {
		p.Attributes = map[string][]string{}
		for _, a := range c.cfg.Attributes {
			var v any
			if name, ok := strings.CutPrefix(a, "custom_attributes."); ok {
				v = u.CustomAttributes[name]
			} else {
				v = u.raw[a]
			}
			if vals := scalars(v); len(vals) > 0 {
				p.Attributes[a] = vals
			}
		}
	}
	return p, nil
}

// field is a top-level string field of the user.
func (c *Connector) field(u user, name string) string {
	switch name {
	case "email":
		return deref(u.Email)
	case "username":
		return deref(u.Username)
	}
	if u.raw != nil {
		return scalar(u.raw[name])
	}
	return ""
}

func scalar(v any) string {
	if s := scalars(v); len(s) == 1 {
		return s[0]
	}
	return ""
}

func scalars(v any) []string {
	switch x := v.(type) {
	case string:
		return []string{x}
	case bool:
		return []string{strconv.FormatBool(x)}
	case float64:
		return []string{strconv.FormatFloat(x, 'f', -1, 64)}
	case []any:
		var out []string
		for _, e := range x {
			out = append(out, scalars(e)...)
		}
		return out
	}
	return nil
}

// Pull lists the people in scope; see directory.Connector.
func (c *Connector) Pull(ctx context.Context, fn func(directory.Page) error) error {
	began := c.clock.Now()
	budget := rest.NewBudget(c.cfg.MaxWait)
	incomplete := func(err error) error {
		return fmt.Errorf("onelogin %s: pull: %w: %w", c.name, directory.ErrIncomplete, err)
	}
	n, err := c.loadNames(ctx, budget)
	if err != nil {
		return incomplete(err)
	}
	listed := 0
	var fnErr error
	stop := errors.New("callback stopped the pull")
	err = c.each(ctx, "users", "/api/2/users", url.Values{"limit": {strconv.Itoa(c.cfg.PageSize)}}, budget, func(res *rest.Response) error {
		users, err := c.decodeUsers(res.Body)
		if err != nil {
			return err
		}
		page := directory.Page{People: make([]directory.Person, 0, len(users))}
		for _, u := range users {
			p, err := c.person(u, n)
			if err != nil {
				return err
			}
			if !p.OutOfScope {
				page.People = append(page.People, p)
			}
		}
		if len(page.People) == 0 {
			return nil
		}
		listed += len(page.People)
		if err := fn(page); err != nil {
			fnErr = err
			return stop
		}
		return nil
	})
	if fnErr != nil {
		return fnErr
	}
	if err != nil {
		return incomplete(err)
	}
	c.log.LogAttrs(ctx, slog.LevelInfo, "onelogin pull complete", slog.String("directory", c.name),
		slog.Int("people", listed), slog.Int("roles", len(n.roles)), slog.Int("groups", len(n.groups)),
		slog.Duration("took", c.clock.Since(began)))
	return nil
}

// Person looks a person up by subject; see directory.Connector. By id it
// reads the user; by another attribute it filters the users listing on
// it (reference §5.2) and keeps only exact matches, since the filter
// takes * as a wildcard.
func (c *Connector) Person(ctx context.Context, subject string) (*directory.Person, error) {
	budget := rest.NewBudget(c.cfg.MaxWait / 20)
	fail := func(err error) (*directory.Person, error) {
		return nil, fmt.Errorf("onelogin %s: person %q: %w", c.name, subject, err)
	}
	u, err := c.findUser(ctx, subject, budget)
	if err != nil {
		return fail(err)
	}
	n, err := c.loadNames(ctx, budget)
	if err != nil {
		return fail(err)
	}
	p, err := c.person(u, n)
	if err != nil {
		return fail(err)
	}
	return &p, nil
}

func (c *Connector) findUser(ctx context.Context, subject string, budget *rest.Budget) (user, error) {
	var u user
	attr := c.cfg.SubjectAttribute
	if subject == "" {
		return u, directory.ErrNotFound
	}
	if attr == "id" {
		if _, err := strconv.ParseInt(subject, 10, 64); err != nil {
			return u, directory.ErrNotFound
		}
		res, err := c.api.Do(ctx, rest.Request{Op: "user", URL: c.url("/api/2/users/"+subject, nil), Budget: budget})
		if rest.StatusOf(err) == http.StatusNotFound {
			return u, fmt.Errorf("%w: %w", directory.ErrNotFound, err)
		}
		if err != nil {
			return u, c.explain(err)
		}
		return u, c.decodeUser(res.Body, &u)
	}
	q := url.Values{attr: {subject}, "limit": {strconv.Itoa(maxPageSize)}}
	var found []user
	err := c.each(ctx, "users", "/api/2/users", q, budget, func(res *rest.Response) error {
		users, err := c.decodeUsers(res.Body)
		if err != nil {
			return err
		}
		for _, x := range users {
			var v string
			if name, ok := strings.CutPrefix(attr, "custom_attributes."); ok {
				v = scalar(x.CustomAttributes[name])
			} else {
				v = c.field(x, attr)
			}
			// [U] Whether OneLogin compares e-mails and usernames without
			// regard to case is not documented; e-mail addresses are.
			if v == subject || ((attr == "email" || attr == "username") && strings.EqualFold(v, subject)) {
				found = append(found, x)
			}
		}
		return nil
	})
	if err != nil {
		return u, err
	}
	switch len(found) {
	case 0:
		return u, directory.ErrNotFound
	case 1:
		return found[0], nil
	}
	return u, fmt.Errorf("%d users have %s %q; the subject attribute must be unique", len(found), attr, subject)
}
