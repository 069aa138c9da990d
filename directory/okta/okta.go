// Package okta reads an Okta org's people and group memberships through
// the Okta Management API (/api/v1/users, /api/v1/groups), as a
// directory.Connector with deltas, authenticated by an SSWS API token or
// an OAuth 2.0 service app (private_key_jwt).
//
// A full pull is strongly consistent (reference §3.2, §7.2): it lists the
// groups (Okta and app groups; the built-in Everyone is skipped, as it
// would cost a read of every user for no mapping), reads each group's
// members into a person → groups index, then streams two listings of
// people: the default list (everyone but DEPROVISIONED) and filter=status
// eq "DEPROVISIONED", which the default hides. Okta groups do not nest.
package okta

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jonboulle/clockwork"
	"golang.org/x/sync/errgroup"

	"github.com/usherhq/usher/directory"
	"github.com/usherhq/usher/directory/rest"
)

// Connector is an Okta directory. It is safe for concurrent use.
type Connector struct {
	name, idp string
	cfg       Config
	api       *rest.Client
	clock     clockwork.Clock
	log       *slog.Logger
}

var (
	_ directory.Connector = (*Connector)(nil)
	_ directory.Deltaer   = (*Connector)(nil)
)

func newConnector(name, idp string, cfg Config, auth rest.Auth, deps directory.Deps) (*Connector, error) {
	org, _ := url.Parse(cfg.OrgURL)
	api, err := rest.New(rest.Config{
		Service: "okta " + name, Origin: org, HTTP: deps.Client, Clock: deps.Clock, Log: deps.Log,
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
	return c, nil
}

func (c *Connector) Name() string { return c.name }
func (c *Connector) IdP() string  { return c.idp }

// APIError is Okta's error body (reference §3.7). Only Code is stable.
type APIError struct {
	Status  int
	Code    string // E0000007, ...
	Summary string
	ID      string // errorId, for Okta support
	Causes  []string
}

func (e *APIError) Error() string {
	s := e.Code + ": " + e.Summary
	if len(e.Causes) > 0 {
		s += " (" + strings.Join(e.Causes, "; ") + ")"
	}
	if e.ID != "" {
		s += " [errorId " + e.ID + "]"
	}
	return s
}

func decodeError(status int, _ http.Header, body []byte) error {
	var b struct {
		Code    string `json:"errorCode"`
		Summary string `json:"errorSummary"`
		ID      string `json:"errorId"`
		Causes  []struct {
			Summary string `json:"errorSummary"`
		} `json:"errorCauses"`
	}
	if json.Unmarshal(body, &b) != nil || b.Code == "" {
		return &APIError{Status: status, Code: http.StatusText(status), Summary: rest.Snippet(body)}
	}
	e := &APIError{Status: status, Code: b.Code, Summary: b.Summary, ID: b.ID}
	for _, c := range b.Causes {
		e.Causes = append(e.Causes, c.Summary)
	}
	return e
}

// retry follows Okta's rate limiting (reference §3.6): a 429 waits until
// X-Rate-Limit-Reset, measured against the answer's own Date so that
// clock skew does not matter, plus up to a second of jitter so that
// parallel workers do not all return at once. 500 and 502-504 back off.
func retry(status int, h http.Header, now time.Time) (bool, time.Duration) {
	switch status {
	case http.StatusTooManyRequests:
		if d, ok := untilReset(h, now); ok {
			return true, d + time.Duration(rand.Int64N(int64(time.Second)))
		}
		d, _ := rest.RetryAfter(h, now)
		return true, d
	case http.StatusInternalServerError, http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return true, 0 // reads: repeating one is harmless
	}
	return false, 0
}

// pace holds further calls when a window is used up: Okta's answer to a
// client that keeps going is a 429.
func pace(h http.Header, now time.Time) time.Time {
	if h.Get("X-Rate-Limit-Remaining") != "0" {
		return time.Time{}
	}
	d, ok := untilReset(h, now)
	if !ok {
		return time.Time{}
	}
	return now.Add(d)
}

// untilReset is how long until X-Rate-Limit-Reset (epoch seconds), by
// the server's clock when it sent Date, else by ours.
func untilReset(h http.Header, now time.Time) (time.Duration, bool) {
	reset, err := strconv.ParseInt(h.Get("X-Rate-Limit-Reset"), 10, 64)
	if err != nil {
		return 0, false
	}
	serverNow := now
	if t, err := http.ParseTime(h.Get("Date")); err == nil {
		serverNow = t
	}
	d := time.Unix(reset, 0).Sub(serverNow)
	if d <= 0 {
		return time.Second, true // the window just turned: try again shortly
	}
	return min(d, time.Hour), true
}

// nextLink is the rel="next" target among the Link headers, which may be
// several headers or one comma-joined value (reference §3.5).
func nextLink(h http.Header) string {
	for _, v := range h.Values("Link") {
		for _, part := range splitLinks(v) {
			target, params, found := strings.Cut(part, ";")
			if !found {
				continue
			}
			for _, p := range strings.Split(params, ";") {
				k, val, _ := strings.Cut(strings.TrimSpace(p), "=")
				if strings.EqualFold(k, "rel") && slices.Contains(strings.Fields(strings.Trim(val, `"`)), "next") {
					return strings.TrimSpace(strings.Trim(strings.TrimSpace(target), "<>"))
				}
			}
		}
	}
	return ""
}

// splitLinks splits a Link value at the commas between links, not those
// inside <...>.
func splitLinks(v string) []string {
	var out []string
	depth, start := 0, 0
	for i, r := range v {
		switch r {
		case '<':
			depth++
		case '>':
			depth--
		case ',':
			if depth == 0 {
				out = append(out, v[start:i])
				start = i + 1
			}
		}
	}
	return append(out, v[start:])
}

// user is an Okta user, trimmed to what a sync reads.
type user struct {
	ID          string         `json:"id"`
	Status      string         `json:"status"`
	LastUpdated string         `json:"lastUpdated"`
	Profile     map[string]any `json:"profile"`
}

type oktaGroup struct {
	ID      string `json:"id"`
	Type    string `json:"type"`
	Profile struct {
		Name string `json:"name"`
	} `json:"profile"`
}

// each walks every page of a listing from first; fn gets each answer.
func (c *Connector) each(ctx context.Context, op, first string, budget *rest.Budget, fn func(res *rest.Response) error) error {
	link := first
	for page := 1; link != ""; page++ {
		res, err := c.api.Do(ctx, rest.Request{Op: op, URL: link, Budget: budget})
		if err != nil {
			return fmt.Errorf("%s page %d: %w", op, page, err)
		}
		if err := fn(res); err != nil {
			return err
		}
		link = nextLink(res.Header)
	}
	return nil
}

func (c *Connector) url(path string, q url.Values) string {
	u := c.cfg.OrgURL + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	return u
}

func limit(n int) url.Values { return url.Values{"limit": {strconv.Itoa(n)}} }

// status maps an Okta user status (reference §3.3, §7.1) as the
// directory package defines its states: only ACTIVE may sign in now;
// SUSPENDED and DEPROVISIONED are leavers; the rest are temporary or not
// yet begun (STAGED, PROVISIONED before activation, RECOVERY,
// PASSWORD_EXPIRED, LOCKED_OUT) and never leavers. An unknown or
// transient status (ACTIVATING) is treated the same way: never a
// leaver on a guess.
func status(s string) directory.Status {
	switch s {
	case "ACTIVE":
		return directory.Active
	case "SUSPENDED", "DEPROVISIONED":
		return directory.Disabled
	}
	return directory.Inactive
}

// person maps a user, groups left empty.
func (c *Connector) person(u user) directory.Person {
	str := func(k string) string { s, _ := u.Profile[k].(string); return s }
	p := directory.Person{
		ID: u.ID, Username: str("login"), Email: str("email"),
		GivenName: str("firstName"), FamilyName: str("lastName"), DisplayName: str("displayName"),
		Status: status(u.Status),
	}
	if p.DisplayName == "" {
		p.DisplayName = strings.TrimSpace(p.GivenName + " " + p.FamilyName)
	}
	switch c.cfg.SubjectAttribute {
	case "id":
		p.Subject = u.ID
	default:
		p.Subject = str(c.cfg.SubjectAttribute)
	}
	if len(c.cfg.Attributes) > 0 {
		p.Attributes = map[string][]string{}
		for _, a := range c.cfg.Attributes {
			switch v := u.Profile[a].(type) {
			case string:
				p.Attributes[a] = []string{v}
			case bool, float64:
				p.Attributes[a] = []string{fmt.Sprint(v)}
			case []any:
				for _, e := range v {
					if e != nil {
						p.Attributes[a] = append(p.Attributes[a], fmt.Sprint(e))
					}
				}
			}
		}
	}
	return p
}

// index maps user IDs to positions in groups.
type index struct {
	mu      sync.Mutex
	groups  []oktaGroup
	members map[string][]int32
}

// Pull lists the people in scope; see directory.Connector.
func (c *Connector) Pull(ctx context.Context, fn func(directory.Page) error) error {
	began := c.clock.Now()
	budget := rest.NewBudget(c.cfg.MaxWait)
	incomplete := func(err error) error {
		return fmt.Errorf("okta %s: pull: %w: %w", c.name, directory.ErrIncomplete, err)
	}
	scope, err := c.resolveScope(ctx, budget)
	if err != nil {
		return incomplete(err)
	}
	ix, err := c.buildIndex(ctx, scope, budget)
	if err != nil {
		return incomplete(err)
	}
	scopePos := map[int32]bool{}
	for i, g := range ix.groups {
		if scope[g.ID] {
			scopePos[int32(i)] = true
		}
	}
	// The default listing hides DEPROVISIONED; the second pass lists
	// them. A person deactivated between the passes shows in both: the
	// second sighting is dropped (seen), so they appear once, as of the
	// first pass; the next pull has them disabled.
	seen := map[string]struct{}{}
	listed := 0
	stop := errors.New("callback stopped the pull")
	var fnErr error
	emit := func(res *rest.Response) error {
		var users []user
		if err := json.Unmarshal(res.Body, &users); err != nil {
			return fmt.Errorf("decode users: %w", err)
		}
		page := directory.Page{People: make([]directory.Person, 0, len(users))}
		for _, u := range users {
			if _, dup := seen[u.ID]; dup || u.ID == "" {
				continue
			}
			seen[u.ID] = struct{}{}
			pos := ix.members[u.ID]
			if len(scope) > 0 && !slices.ContainsFunc(pos, func(p int32) bool { return scopePos[p] }) {
				continue
			}
			p := c.person(u)
			for _, gp := range pos {
				if g := ix.groups[gp]; !g.scopeOnly() {
					p.Groups = append(p.Groups, g.Profile.Name)
					p.GroupIDs = append(p.GroupIDs, g.ID)
				}
			}
			p.GroupsComplete = true
			page.People = append(page.People, p)
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
	}
	for _, q := range []url.Values{limit(c.cfg.PageSize), withLimit(url.Values{"filter": {`status eq "DEPROVISIONED"`}}, c.cfg.PageSize)} {
		err := c.each(ctx, "users", c.url("/api/v1/users", q), budget, emit)
		if fnErr != nil {
			return fnErr
		}
		if err != nil {
			return incomplete(err)
		}
	}
	c.log.LogAttrs(ctx, slog.LevelInfo, "okta pull complete", slog.String("directory", c.name),
		slog.Int("people", listed), slog.Int("groups", len(ix.groups)), slog.Duration("took", c.clock.Since(began)))
	return nil
}

func withLimit(q url.Values, n int) url.Values {
	q.Set("limit", strconv.Itoa(n))
	return q
}

// scopeOnly marks a group read for scope only: a BUILT_IN scope group.
func (g oktaGroup) scopeOnly() bool { return g.Type == "BUILT_IN" }

// listedTypes are the group types a pull reads: not BUILT_IN (Everyone).
const listedTypes = `type eq "OKTA_GROUP" or type eq "APP_GROUP"`

func (c *Connector) buildIndex(ctx context.Context, scope map[string]bool, budget *rest.Budget) (*index, error) {
	ix := &index{members: map[string][]int32{}}
	listed := map[string]bool{}
	err := c.each(ctx, "groups", c.url("/api/v1/groups", withLimit(url.Values{"filter": {listedTypes}}, c.cfg.PageSize)), budget,
		func(res *rest.Response) error {
			var gs []oktaGroup
			if err := json.Unmarshal(res.Body, &gs); err != nil {
				return fmt.Errorf("decode groups: %w", err)
			}
			for _, g := range gs {
				if g.ID != "" && !listed[g.ID] {
					listed[g.ID] = true
					ix.groups = append(ix.groups, g)
				}
			}
			return nil
		})
	if err != nil {
		return nil, err
	}
	for id := range scope {
		if !listed[id] {
			// Only a BUILT_IN group can be missing from the listing.
			ix.groups = append(ix.groups, oktaGroup{ID: id, Type: "BUILT_IN"})
		}
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(c.cfg.Concurrency)
	for i, grp := range ix.groups {
		if gctx.Err() != nil {
			break
		}
		g.Go(func() error {
			return c.each(gctx, "members", c.url("/api/v1/groups/"+url.PathEscape(grp.ID)+"/users", limit(c.cfg.PageSize)), budget,
				func(res *rest.Response) error {
					var us []struct {
						ID string `json:"id"`
					}
					if err := json.Unmarshal(res.Body, &us); err != nil {
						return fmt.Errorf("decode members of %s: %w", grp.ID, err)
					}
					ix.mu.Lock()
					defer ix.mu.Unlock()
					for _, u := range us {
						ix.members[u.ID] = append(ix.members[u.ID], int32(i))
					}
					return nil
				})
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	// A person repeated across pages of one group gets it once.
	for id, pos := range ix.members {
		if len(pos) > 1 {
			slices.Sort(pos)
			ix.members[id] = slices.Compact(pos)
		}
	}
	return ix, nil
}

var groupIDPattern = regexp.MustCompile(`^00g[0-9A-Za-z]{17}$`)

// resolveScope turns the configured scope groups into IDs; a group that
// does not exist, or a name that matches none or several, is an error.
func (c *Connector) resolveScope(ctx context.Context, budget *rest.Budget) (map[string]bool, error) {
	out := map[string]bool{}
	for _, g := range c.cfg.Groups {
		if groupIDPattern.MatchString(g) {
			var got oktaGroup
			_, err := c.api.GetJSON(ctx, "group", c.url("/api/v1/groups/"+g, nil), nil, budget, &got)
			if rest.StatusOf(err) == http.StatusNotFound {
				return nil, fmt.Errorf("scope group %s does not exist", g)
			}
			if err != nil {
				return nil, fmt.Errorf("scope group %s: %w", g, err)
			}
			out[got.ID] = true
			continue
		}
		// search on profile.name is eventually consistent; a group created
		// seconds ago may be missed, which fails the pull (safe), and
		// group names rarely change.
		var gs []oktaGroup
		_, err := c.api.GetJSON(ctx, "groups", c.url("/api/v1/groups", url.Values{"search": {"profile.name eq " + quote(g)}}), nil, budget, &gs)
		if err != nil {
			return nil, fmt.Errorf("scope group %q: %w", g, err)
		}
		var ids []string
		for _, x := range gs {
			if x.Profile.Name == g {
				ids = append(ids, x.ID)
			}
		}
		switch len(ids) {
		case 0:
			return nil, fmt.Errorf("scope group %q: no group has that name", g)
		case 1:
			out[ids[0]] = true
		default:
			return nil, fmt.Errorf("scope group %q: %d groups have that name; configure its ID", g, len(ids))
		}
	}
	return out, nil
}

// quote is a string literal of Okta's filter and search expressions.
func quote(s string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s) + `"`
}

// Person looks a person up by subject; see directory.Connector.
func (c *Connector) Person(ctx context.Context, subject string) (*directory.Person, error) {
	budget := rest.NewBudget(c.cfg.MaxWait / 20)
	fail := func(err error) (*directory.Person, error) {
		return nil, fmt.Errorf("okta %s: person %q: %w", c.name, subject, err)
	}
	u, err := c.findUser(ctx, subject, budget)
	if err != nil {
		return fail(err)
	}
	scope, err := c.resolveScope(ctx, budget)
	if err != nil {
		return fail(err)
	}
	p, err := c.complete(ctx, u, scope, budget)
	if err != nil {
		return fail(err)
	}
	return p, nil
}

// findUser reads one user by subject. GET /users/{x} takes an id or a
// login; the answer is checked against the attribute asked for, so that
// an id-shaped login cannot stand in for an id or the other way round.
func (c *Connector) findUser(ctx context.Context, subject string, budget *rest.Budget) (user, error) {
	var u user
	attr := c.cfg.SubjectAttribute
	if subject == "" || (attr == "id" && strings.ContainsAny(subject, "/?#")) {
		return u, directory.ErrNotFound
	}
	var q url.Values
	switch attr {
	case "id", "login":
		_, err := c.api.GetJSON(ctx, "user", c.url("/api/v1/users/"+url.PathEscape(subject), nil), nil, budget, &u)
		if rest.StatusOf(err) == http.StatusNotFound {
			return u, fmt.Errorf("%w: %w", directory.ErrNotFound, err)
		}
		if err != nil {
			return u, err
		}
		login, _ := u.Profile["login"].(string)
		if (attr == "id" && u.ID != subject) || (attr == "login" && !strings.EqualFold(login, subject)) {
			return u, directory.ErrNotFound
		}
		return u, nil
	case "email":
		// filter is strongly consistent and takes profile.email.
		q = url.Values{"filter": {"profile.email eq " + quote(subject)}}
	default:
		// Other attributes only through search: eventually consistent, so
		// a person changed seconds ago may not be found yet.
		q = url.Values{"search": {"profile." + attr + " eq " + quote(subject)}}
	}
	var us []user
	if _, err := c.api.GetJSON(ctx, "users", c.url("/api/v1/users", withLimit(q, 2)), nil, budget, &us); err != nil {
		return u, err
	}
	switch len(us) {
	case 0:
		return u, directory.ErrNotFound
	case 1:
		return us[0], nil
	}
	return u, fmt.Errorf("several users have %s %q; the subject attribute must be unique", attr, subject)
}

// complete adds the user's groups (one unpaged call) and the scope
// verdict.
func (c *Connector) complete(ctx context.Context, u user, scope map[string]bool, budget *rest.Budget) (*directory.Person, error) {
	p := c.person(u)
	var gs []oktaGroup
	_, err := c.api.GetJSON(ctx, "user groups", c.url("/api/v1/users/"+url.PathEscape(u.ID)+"/groups", nil), nil, budget, &gs)
	if err != nil {
		if rest.StatusOf(err) == http.StatusNotFound {
			return nil, fmt.Errorf("%w: %w", directory.ErrNotFound, err)
		}
		return nil, fmt.Errorf("groups of %s: %w", u.ID, err)
	}
	inScope := len(scope) == 0
	for _, g := range gs {
		inScope = inScope || scope[g.ID]
		if g.Type != "BUILT_IN" {
			p.Groups = append(p.Groups, g.Profile.Name)
			p.GroupIDs = append(p.GroupIDs, g.ID)
		}
	}
	p.GroupsComplete = true
	p.OutOfScope = !inScope
	return &p, nil
}
