// Package google reads a Google Workspace account's people and group
// memberships through the Admin SDK Directory API (users.list,
// groups.list, members.list), as a directory.Connector, authenticated
// as a service account with domain-wide delegation acting as an admin
// (the JWT bearer grant, reference §4.1).
//
// A full pull costs about G/200 + G + U/500 calls for G groups and U
// users: it lists the groups, reads each group's members with
// includeDerivedMembership=true (Google flattens the nesting, reference
// §4.3) into a person → groups index of small integers, then streams the
// users, filtering the scope (organizational units, groups) on the
// client. Every listing is the plain, strongly consistent one: the
// users query parameter, which Google serves from a search index that
// lags by up to 36 hours (§4.2), is refused by Validate, so that a
// complete pull means a complete scope. A pull is not a snapshot:
// memberships are read before users, so a change during the pull shows
// at the next one.
//
// There is no delta: the Directory API has no change listing for users
// or groups (reference §1; its push channels need a public endpoint and
// renewal, which usher does not run), so this connector implements no
// directory.Deltaer and the sync runs full pulls.
//
// Quota errors (403 userRateLimitExceeded or quotaExceeded, 429) and
// outages (5xx) are retried with exponential backoff and jitter through
// directory/rest; other 403s are final (reference §4.4, §7.5).
package google

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
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

// Connector is a Google Workspace directory. It is safe for concurrent
// use.
type Connector struct {
	name, idp string
	cfg       Config
	api       *rest.Client
	clock     clockwork.Clock
	log       *slog.Logger

	subject path
	attrs   []path
	// userQuery holds projection, customFieldMask and fields for every
	// user read; userFields is the users(...) part of fields.
	userQuery  url.Values
	userFields string
}

var _ directory.Connector = (*Connector)(nil)

func newConnector(name, idp string, cfg Config, auth rest.Auth, deps directory.Deps) (*Connector, error) {
	apiURL, _ := url.Parse(cfg.APIURL)
	api, err := rest.New(rest.Config{
		Service: "google " + name, Origin: apiURL, HTTP: deps.Client, Clock: deps.Clock, Log: deps.Log,
		Observe: deps.Observe, Auth: auth, Timeout: cfg.Timeout, MaxWait: cfg.MaxWait / 20,
		// Google's per-minute quota can refuse calls for up to a minute:
		// attempts backing off 1, 2, 4 ... 30 seconds cover it.
		MaxAttempts: 10, BackoffMax: 30 * time.Second,
		Judge: judge, Decode: decodeError,
	})
	if err != nil {
		return nil, err
	}
	c := &Connector{name: name, idp: idp, cfg: cfg, api: api, clock: api.Clock(), log: deps.Log}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	c.subject, _ = parseSubject(cfg.SubjectAttribute)
	for _, a := range cfg.Attributes {
		p, _ := parsePath(a) // Validate checked them
		c.attrs = append(c.attrs, p)
	}
	// Only the fields a sync reads, and custom schemas only when a path
	// names one: user resources are large.
	fields := []string{"id", "primaryEmail", "name", "suspended", "archived", "orgUnitPath"}
	var schemas []string
	for _, p := range append([]path{c.subject}, c.attrs...) {
		fields = append(fields, p.top)
		if p.schema != "" {
			schemas = append(schemas, p.schema)
		}
	}
	slices.Sort(schemas)
	schemas = slices.Compact(schemas)
	var uniq []string
	for _, f := range fields {
		if !slices.Contains(uniq, f) {
			uniq = append(uniq, f)
		}
	}
	c.userFields = strings.Join(uniq, ",")
	c.userQuery = url.Values{"projection": {"basic"}}
	if len(schemas) > 0 {
		c.userQuery = url.Values{"projection": {"custom"}, "customFieldMask": {strings.Join(schemas, ",")}}
	}
	return c, nil
}

func (c *Connector) Name() string { return c.name }
func (c *Connector) IdP() string  { return c.idp }

// APIError is Google's error envelope (reference §4.4). Branch on
// Reason (errors[0].reason): it tells a quota 403 from a permission 403.
type APIError struct {
	Status  int
	Reason  string // userRateLimitExceeded, notFound, forbidden, ...
	Domain  string // usageLimits, global
	Message string
	// GRPCStatus is the envelope's status (PERMISSION_DENIED, ...), when
	// present.
	GRPCStatus string
}

func (e *APIError) Error() string {
	s := e.Reason
	if s == "" {
		s = e.GRPCStatus
	}
	if e.Message != "" {
		s += ": " + e.Message
	}
	return s
}

func decodeError(status int, _ http.Header, body []byte) error {
	return parseError(status, body)
}

func parseError(status int, body []byte) *APIError {
	var env struct {
		Error struct {
			Code    int    `json:"code"`
			Message string `json:"message"`
			Status  string `json:"status"`
			Errors  []struct {
				Reason  string `json:"reason"`
				Domain  string `json:"domain"`
				Message string `json:"message"`
			} `json:"errors"`
		} `json:"error"`
	}
	if json.Unmarshal(body, &env) != nil || (env.Error.Message == "" && len(env.Error.Errors) == 0) {
		return &APIError{Status: status, Reason: http.StatusText(status), Message: rest.Snippet(body)}
	}
	e := &APIError{Status: status, Message: env.Error.Message, GRPCStatus: env.Error.Status}
	if len(env.Error.Errors) > 0 {
		e.Reason, e.Domain = env.Error.Errors[0].Reason, env.Error.Errors[0].Domain
	}
	return e
}

// reasonOf is the Google error reason of a failed call, "" when none.
func reasonOf(err error) string {
	var e *APIError
	if errors.As(err, &e) {
		return e.Reason
	}
	return ""
}

// judge follows reference §4.4 and §7.5: quota 403s (reasons
// userRateLimitExceeded, quotaExceeded, rateLimitExceeded) and 429 are
// throttles, 5xx outages; both back off exponentially with jitter (the
// client's backoff), or wait a Retry-After where Google sends one [U
// whether it does]. Any other 403 (permissions) is final.
func judge(status int, h http.Header, body []byte, now time.Time) (retry, throttled bool, wait time.Duration) {
	wait, _ = rest.RetryAfter(h, now)
	switch status {
	case http.StatusTooManyRequests:
		return true, true, wait
	case http.StatusForbidden:
		switch parseError(status, body).Reason {
		case "userRateLimitExceeded", "quotaExceeded", "rateLimitExceeded":
			return true, true, wait
		}
	case http.StatusInternalServerError, http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return true, false, wait
	}
	return false, false, 0
}

// explainToken adds what to fix to the token endpoint's refusals
// (reference §4.1).
func explainToken(err error, clientID, admin string) error {
	var oe *rest.OAuthError
	if !errors.As(err, &oe) {
		return err
	}
	switch {
	case oe.Code == "unauthorized_client":
		return fmt.Errorf("%w (domain-wide delegation does not authorize client ID %s for %s: Admin console → Security → API controls → Domain-wide delegation)",
			err, clientID, strings.Join(scopes, ", "))
	case oe.Code == "invalid_grant" && strings.Contains(oe.Description, "email or User ID"):
		return fmt.Errorf("%w (admin %q is not a user of the account)", err, admin)
	case oe.Code == "invalid_grant":
		return fmt.Errorf("%w (the signed grant was refused: a deleted or disabled key, or this machine's clock is off)", err)
	}
	return err
}

// explain adds what to fix to an API refusal that is about setup.
func (c *Connector) explain(err error) error {
	var e *APIError
	if !errors.As(err, &e) || e.Status != http.StatusForbidden {
		return err
	}
	switch e.Reason {
	case "forbidden":
		// [U] The reference gives this answer for a sub that is not an
		// admin without marking its exact shape verified.
		return fmt.Errorf("%w (does %s hold an admin role that may read users and groups?)", err, c.cfg.Admin)
	case "insufficientPermissions":
		return fmt.Errorf("%w (the token lacks a scope; domain-wide delegation must grant %s)", err, strings.Join(scopes, ", "))
	}
	return err
}

func (c *Connector) url(path string, q url.Values) string {
	u := c.cfg.APIURL + "/admin/directory/v1" + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	return u
}

// list is one page of a Google listing.
type list[T any] struct {
	Users         []T    `json:"users"`
	Groups        []T    `json:"groups"`
	Members       []T    `json:"members"`
	NextPageToken string `json:"nextPageToken"`
}

// eachPage walks every page of a listing: q is the first page's query,
// repeated with pageToken (reference §4.2).
func eachPage[T any](ctx context.Context, c *Connector, op, path string, q url.Values, budget *rest.Budget, fn func(page list[T]) error) error {
	token := ""
	for n := 1; ; n++ {
		if token != "" {
			q.Set("pageToken", token)
		}
		var page list[T]
		if _, err := c.api.GetJSON(ctx, op, c.url(path, q), nil, budget, &page); err != nil {
			return fmt.Errorf("%s page %d: %w", op, n, c.explain(err))
		}
		if err := fn(page); err != nil {
			return err
		}
		if page.NextPageToken == "" {
			return nil
		}
		if page.NextPageToken == token {
			return fmt.Errorf("%s page %d: the same nextPageToken again", op, n)
		}
		token = page.NextPageToken
	}
}

// group is a group as the index keeps it.
type group struct {
	ID      string   `json:"id"`
	Email   string   `json:"email"`
	Name    string   `json:"name"`
	Aliases []string `json:"aliases"`
}

// label is what a person's Groups call the group.
func (c *Connector) label(g group) string {
	if c.cfg.GroupNames == "name" {
		return g.Name
	}
	return g.Email
}

// matches reports whether a configured scope key names the group.
func (g group) matches(key string) bool {
	return key == g.ID || strings.EqualFold(key, g.Email) ||
		slices.ContainsFunc(g.Aliases, func(a string) bool { return strings.EqualFold(a, key) })
}

type member struct {
	ID   string `json:"id"`
	Type string `json:"type"`
}

// index maps user IDs to the positions of their groups.
type index struct {
	mu      sync.Mutex
	groups  []group
	scope   map[int32]bool
	members map[string][]int32
}

func (c *Connector) groupPage() string { return strconv.Itoa(min(c.cfg.PageSize, maxGroupPage)) }

// buildIndex lists the groups, resolves the scope groups among them and
// reads every group's members, nesting flattened by Google.
func (c *Connector) buildIndex(ctx context.Context, budget *rest.Budget) (*index, error) {
	ix := &index{members: map[string][]int32{}, scope: map[int32]bool{}}
	seen := map[string]bool{}
	q := url.Values{"customer": {c.cfg.Customer}, "maxResults": {c.groupPage()}, "fields": {"nextPageToken,groups(id,email,name,aliases)"}}
	err := eachPage(ctx, c, "groups", "/groups", q, budget, func(p list[group]) error {
		for _, g := range p.Groups {
			if g.ID != "" && !seen[g.ID] {
				seen[g.ID] = true
				ix.groups = append(ix.groups, g)
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if len(ix.groups) > 1<<31-1 {
		return nil, errors.New("too many groups")
	}
	for _, key := range c.cfg.Groups {
		i := slices.IndexFunc(ix.groups, func(g group) bool { return g.matches(key) })
		if i < 0 {
			// Silently empty, a scope group would put everyone out of
			// scope.
			return nil, fmt.Errorf("scope group %q: the account has no such group", key)
		}
		ix.scope[int32(i)] = true
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(c.cfg.Concurrency)
	for i, grp := range ix.groups {
		if gctx.Err() != nil {
			break
		}
		g.Go(func() error {
			q := url.Values{"includeDerivedMembership": {"true"}, "maxResults": {c.groupPage()}, "fields": {"nextPageToken,members(id,type)"}}
			return eachPage(gctx, c, "members", "/groups/"+url.PathEscape(grp.ID)+"/members", q, budget, func(p list[member]) error {
				ix.mu.Lock()
				defer ix.mu.Unlock()
				for _, m := range p.Members {
					// Derived listings carry the nested groups too, and a
					// CUSTOMER member ("everyone in the account"), which
					// usher does not expand: a lookup could not tell it
					// (groups.list by userKey does not list it [U]), and
					// pulls and lookups must agree.
					if m.Type == "USER" && m.ID != "" {
						ix.members[m.ID] = append(ix.members[m.ID], int32(i))
					}
				}
				return nil
			})
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	// A user listed twice in one group (direct and through a subgroup,
	// or across pages) gets it once.
	for id, pos := range ix.members {
		if len(pos) > 1 {
			slices.Sort(pos)
			ix.members[id] = slices.Compact(pos)
		}
	}
	return ix, nil
}

// Pull lists the people in scope; see directory.Connector.
func (c *Connector) Pull(ctx context.Context, fn func(directory.Page) error) error {
	began := c.clock.Now()
	budget := rest.NewBudget(c.cfg.MaxWait)
	incomplete := func(err error) error {
		return fmt.Errorf("google %s: pull: %w: %w", c.name, directory.ErrIncomplete, err)
	}
	ix, err := c.buildIndex(ctx, budget)
	if err != nil {
		return incomplete(err)
	}
	listed, pages := 0, 0
	// An organizational unit that holds nobody is likely misspelt: the
	// Directory API cannot tell without a further scope, so say so.
	ouSeen := make([]bool, len(c.cfg.OrgUnits))
	stop := errors.New("callback stopped the pull")
	var fnErr error
	q := c.usersQuery()
	q.Set("customer", c.cfg.Customer)
	q.Set("maxResults", strconv.Itoa(c.cfg.PageSize))
	err = eachPage(ctx, c, "users", "/users", q, budget, func(p list[map[string]any]) error {
		pages++
		page := directory.Page{People: make([]directory.Person, 0, len(p.Users))}
		for _, u := range p.Users {
			id, _ := u["id"].(string)
			pos := ix.members[id]
			if !c.inOrgUnits(u, ouSeen) {
				continue
			}
			if len(ix.scope) > 0 && !slices.ContainsFunc(pos, func(p int32) bool { return ix.scope[p] }) {
				continue
			}
			person := c.person(u)
			for _, gp := range pos {
				person.Groups = append(person.Groups, c.label(ix.groups[gp]))
				person.GroupIDs = append(person.GroupIDs, ix.groups[gp].ID)
			}
			person.GroupsComplete = true
			page.People = append(page.People, person)
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
	for i, seen := range ouSeen {
		if !seen {
			c.log.LogAttrs(ctx, slog.LevelWarn, "google org unit holds nobody; is it misspelt?",
				slog.String("directory", c.name), slog.String("org_unit", c.cfg.OrgUnits[i]))
		}
	}
	c.log.LogAttrs(ctx, slog.LevelInfo, "google pull complete", slog.String("directory", c.name),
		slog.Int("people", listed), slog.Int("groups", len(ix.groups)), slog.Int("user_pages", pages),
		slog.Duration("took", c.clock.Since(began)))
	return nil
}

// usersQuery is a fresh copy of the projection and fields of a users
// listing.
func (c *Connector) usersQuery() url.Values {
	q := url.Values{}
	for k, v := range c.userQuery {
		q[k] = slices.Clone(v)
	}
	q.Set("fields", "nextPageToken,users("+c.userFields+")")
	return q
}

// inOrgUnits reports whether the user is in a configured unit or below
// (always, when none is configured), and marks in seen (when not nil)
// every configured unit that holds them. [U] Organizational unit paths
// are compared without regard to case: a narrower match would turn
// people into leavers.
func (c *Connector) inOrgUnits(u map[string]any, seen []bool) bool {
	if len(c.cfg.OrgUnits) == 0 {
		return true
	}
	path, _ := u["orgUnitPath"].(string)
	path = strings.ToLower(path)
	in := false
	for i, ou := range c.cfg.OrgUnits {
		ou = strings.ToLower(strings.TrimSuffix(ou, "/"))
		if ou == "" || path == ou || strings.HasPrefix(path, ou+"/") {
			in = true
			if seen != nil {
				seen[i] = true
			}
		}
	}
	return in
}

// person maps a user resource, groups left empty. suspended or archived
// is Disabled (reference §4.2, §7.1; [U] that an archived user cannot
// sign in); Google has no temporary state.
func (c *Connector) person(u map[string]any) directory.Person {
	str := func(k string) string { s, _ := u[k].(string); return s }
	name, _ := u["name"].(map[string]any)
	nstr := func(k string) string { s, _ := name[k].(string); return s }
	p := directory.Person{
		ID: str("id"), Username: str("primaryEmail"), Email: str("primaryEmail"),
		GivenName: nstr("givenName"), FamilyName: nstr("familyName"), DisplayName: nstr("fullName"),
	}
	if p.DisplayName == "" {
		p.DisplayName = strings.TrimSpace(p.GivenName + " " + p.FamilyName)
	}
	suspended, _ := u["suspended"].(bool)
	archived, _ := u["archived"].(bool)
	if suspended || archived {
		p.Status = directory.Disabled
	}
	if v := c.subject.values(u); len(v) > 0 {
		p.Subject = v[0]
	}
	if len(c.attrs) > 0 {
		p.Attributes = map[string][]string{}
		for _, a := range c.attrs {
			if v := a.values(u); len(v) > 0 {
				p.Attributes[a.raw] = v
			}
		}
	}
	return p
}
