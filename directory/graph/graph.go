// Package graph reads Microsoft Entra ID through Microsoft Graph: the
// people of a tenant (or of some groups, or of an OData filter), their
// accountEnabled state and their transitive group memberships, as a
// directory.Connector with deltas. It also resolves one user's groups
// for the login-time group overage (MemberGroups).
//
// A full pull costs about G/999 + G + U/999 calls for G groups and U
// users: it lists the groups, reads each group's transitiveMembers (ids
// only) into a compact person → groups index, then streams the users.
// Graph flattens the nesting server-side, so usher needs no cycle or
// depth logic, and one call per group (plus one per 999 members) is far
// cheaper than one transitiveMemberOf per person: 5,000 groups and
// 100,000 people take about 5,100 + 100 calls, where per-person reads
// would take 100,000. The index holds small integers per person, not
// names, so it stays a few megabytes; user pages are never held.
//
// Everything the pull relies on is strongly consistent: no advanced
// queries (ConsistencyLevel: eventual), no $search, no $count.
package graph

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/usherhq/usher/directory"
	"github.com/usherhq/usher/directory/rest"
)

// Connector is a Graph directory. It is safe for concurrent use.
type Connector struct {
	name, idp string
	cfg       Config
	api       *rest.Client
	clock     clockwork.Clock
	log       *slog.Logger
	// userSelect is the $select of every user read.
	userSelect string
}

var (
	_ directory.Connector = (*Connector)(nil)
	_ directory.Deltaer   = (*Connector)(nil)
)

func newConnector(name, idp string, cfg Config, auth rest.Auth, deps directory.Deps) (*Connector, error) {
	graphURL, _ := url.Parse(cfg.GraphURL)
	api, err := rest.New(rest.Config{
		Service: "graph " + name, Origin: graphURL, HTTP: deps.Client, Clock: deps.Clock, Log: deps.Log,
		Observe: deps.Observe, Auth: auth, Timeout: cfg.Timeout, MaxWait: cfg.MaxWait / 20,
		Decode: decodeError,
	})
	if err != nil {
		return nil, err
	}
	c := &Connector{name: name, idp: idp, cfg: cfg, api: api, clock: api.Clock(), log: deps.Log}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	sel := []string{"id", "userPrincipalName", "mail", "displayName", "givenName", "surname", "accountEnabled", cfg.SubjectAttribute}
	if cfg.LeaveDate {
		sel = append(sel, "employeeLeaveDateTime")
	}
	sel = append(sel, cfg.Attributes...)
	var uniq []string
	for _, s := range sel {
		if !slices.Contains(uniq, s) {
			uniq = append(uniq, s)
		}
	}
	c.userSelect = strings.Join(uniq, ",")
	return c, nil
}

func (c *Connector) Name() string { return c.name }
func (c *Connector) IdP() string  { return c.idp }

// APIError is Graph's error envelope (reference §2.8). Branch on Code
// (and InnerCode), never on Message.
type APIError struct {
	Status    int
	Code      string
	InnerCode string
	Message   string
	RequestID string
}

func (e *APIError) Error() string {
	s := e.Code
	if e.InnerCode != "" {
		s += "/" + e.InnerCode
	}
	if e.Message != "" {
		s += ": " + e.Message
	}
	if e.RequestID != "" {
		s += " (request-id " + e.RequestID + ")"
	}
	return s
}

func decodeError(status int, h http.Header, body []byte) error {
	var env struct {
		Error struct {
			Code       string `json:"code"`
			Message    string `json:"message"`
			InnerError struct {
				Code      string `json:"code"`
				RequestID string `json:"request-id"`
			} `json:"innerError"`
		} `json:"error"`
	}
	if json.Unmarshal(body, &env) != nil || env.Error.Code == "" {
		return &APIError{Status: status, Code: http.StatusText(status), Message: rest.Snippet(body), RequestID: h.Get("request-id")}
	}
	id := env.Error.InnerError.RequestID
	if id == "" {
		id = h.Get("request-id")
	}
	return &APIError{Status: status, Code: env.Error.Code, InnerCode: env.Error.InnerError.Code, Message: env.Error.Message, RequestID: id}
}

// codeOf is the Graph error code of a failed call, "" when none.
func codeOf(err error) string {
	var e *APIError
	if errors.As(err, &e) {
		return e.Code
	}
	return ""
}

// collection is one page of a Graph collection.
type collection struct {
	Value     []map[string]any `json:"value"`
	NextLink  string           `json:"@odata.nextLink"`
	DeltaLink string           `json:"@odata.deltaLink"`
}

// url builds an API URL from a path and options, keeping OData's $
// literal (Graph accepts both forms; literal reads better in logs).
func (c *Connector) url(path string, opts ...string) string {
	u := c.cfg.GraphURL + "/v1.0" + path
	for i := 0; i+1 < len(opts); i += 2 {
		if opts[i+1] == "" {
			continue
		}
		sep := "&"
		if !strings.Contains(u, "?") {
			sep = "?"
		}
		u += sep + opts[i] + "=" + url.QueryEscape(opts[i+1])
	}
	return u
}

// each walks every page of a collection from first, calling fn per page.
// Errors name the op and page.
func (c *Connector) each(ctx context.Context, op, first string, budget *rest.Budget, fn func(page int, items []map[string]any) error) error {
	link := first
	for page := 1; link != ""; page++ {
		var col collection
		if _, err := c.api.GetJSON(ctx, op, link, nil, budget, &col); err != nil {
			return fmt.Errorf("%s page %d: %w", op, page, err)
		}
		if err := fn(page, col.Value); err != nil {
			return err
		}
		link = col.NextLink
	}
	return nil
}

// group is a group as the index keeps it.
type group struct{ id, name string }

// index maps person IDs to the positions of their groups in groups.
// Positions at or past reported belong to scope groups that the group
// filter excludes: they decide scope but are not reported.
type index struct {
	mu       sync.Mutex
	groups   []group
	reported int
	members  map[string][]int32
}

func (ix *index) add(pos int32, ids []string) {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	for _, id := range ids {
		ix.members[id] = append(ix.members[id], pos)
	}
}

// Pull lists the people in scope; see directory.Connector.
func (c *Connector) Pull(ctx context.Context, fn func(directory.Page) error) error {
	began := c.clock.Now()
	budget := rest.NewBudget(c.cfg.MaxWait)
	incomplete := func(err error) error {
		return fmt.Errorf("graph %s: pull: %w: %w", c.name, directory.ErrIncomplete, err)
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
		if scope[g.id] {
			scopePos[int32(i)] = true
		}
	}
	now := c.clock.Now()
	listed, pages := 0, 0
	stop := errors.New("callback stopped the pull")
	var fnErr error
	err = c.each(ctx, "users", c.url("/users", "$select", c.userSelect, "$top", itoa(c.cfg.PageSize), "$filter", c.cfg.UserFilter), budget,
		func(_ int, items []map[string]any) error {
			pages++
			page := directory.Page{People: make([]directory.Person, 0, len(items))}
			for _, u := range items {
				id, _ := u["id"].(string)
				pos := ix.members[id]
				if len(scope) > 0 && !slices.ContainsFunc(pos, func(p int32) bool { return scopePos[p] }) {
					continue
				}
				p := c.person(u, now)
				for _, gp := range pos {
					if int(gp) < ix.reported {
						p.Groups = append(p.Groups, ix.groups[gp].name)
						p.GroupIDs = append(p.GroupIDs, ix.groups[gp].id)
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
		})
	if fnErr != nil {
		return fnErr
	}
	if err != nil {
		return incomplete(err)
	}
	c.log.LogAttrs(ctx, slog.LevelInfo, "graph pull complete", slog.String("directory", c.name),
		slog.Int("people", listed), slog.Int("groups", ix.reported), slog.Int("user_pages", pages),
		slog.Duration("took", c.clock.Since(began)))
	return nil
}

// buildIndex lists the groups (filtered), adds the scope groups the
// filter leaves out, and reads every one's transitive user members.
func (c *Connector) buildIndex(ctx context.Context, scope map[string]bool, budget *rest.Budget) (*index, error) {
	ix := &index{members: map[string][]int32{}}
	listed := map[string]bool{}
	err := c.each(ctx, "groups", c.url("/groups", "$select", "id,displayName", "$top", itoa(c.cfg.PageSize), "$filter", c.cfg.GroupFilter), budget,
		func(_ int, items []map[string]any) error {
			for _, g := range items {
				id, _ := g["id"].(string)
				name, _ := g["displayName"].(string)
				if id == "" || listed[id] {
					continue // Graph may repeat an object across pages
				}
				listed[id] = true
				ix.groups = append(ix.groups, group{id: id, name: name})
			}
			return nil
		})
	if err != nil {
		return nil, err
	}
	ix.reported = len(ix.groups)
	for id := range scope {
		if !listed[id] {
			ix.groups = append(ix.groups, group{id: id})
		}
	}
	if len(ix.groups) > 1<<31-1 {
		return nil, fmt.Errorf("too many groups")
	}
	err = parallel(ctx, c.cfg.Concurrency, len(ix.groups), func(ctx context.Context, i int) error {
		g := ix.groups[i]
		return c.each(ctx, "members", c.url("/groups/"+url.PathEscape(g.id)+"/transitiveMembers", "$select", "id", "$top", itoa(c.cfg.PageSize)), budget,
			func(_ int, items []map[string]any) error {
				ids := make([]string, 0, len(items))
				for _, m := range items {
					// Groups, devices, service principals and contacts
					// come along; only users are people.
					if t, _ := m["@odata.type"].(string); t != "#microsoft.graph.user" {
						continue
					}
					if id, _ := m["id"].(string); id != "" {
						ids = append(ids, id)
					}
				}
				ix.add(int32(i), ids)
				return nil
			})
	})
	if err != nil {
		return nil, err
	}
	// A user listed twice in one group (pages may repeat) must not get
	// the group twice.
	for id, pos := range ix.members {
		if len(pos) > 1 {
			slices.Sort(pos)
			ix.members[id] = slices.Compact(pos)
		}
	}
	return ix, nil
}

// parallel runs fn for 0..n-1 on at most workers goroutines and returns
// the first error, cancelling the rest.
func parallel(ctx context.Context, workers, n int, fn func(ctx context.Context, i int) error) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	next := make(chan int)
	var wg sync.WaitGroup
	for range min(workers, n) {
		wg.Go(func() {
			for i := range next {
				if err := fn(ctx, i); err != nil {
					cancel(err)
				}
			}
		})
	}
feed:
	for i := range n {
		select {
		case next <- i:
		case <-ctx.Done():
			break feed
		}
	}
	close(next)
	wg.Wait()
	if err := context.Cause(ctx); err != nil {
		return err
	}
	return nil
}

// resolveScope turns the configured scope groups into IDs. A scope group
// that does not exist (or a name that matches no group or several) is an
// error: silently empty, it would put everyone out of scope.
func (c *Connector) resolveScope(ctx context.Context, budget *rest.Budget) (map[string]bool, error) {
	out := map[string]bool{}
	for _, g := range c.cfg.Groups {
		if isGUID(g) {
			var got struct {
				ID string `json:"id"`
			}
			_, err := c.api.GetJSON(ctx, "group", c.url("/groups/"+g, "$select", "id"), nil, budget, &got)
			if err != nil {
				if rest.StatusOf(err) == http.StatusNotFound {
					return nil, fmt.Errorf("scope group %s does not exist", g)
				}
				return nil, fmt.Errorf("scope group %s: %w", g, err)
			}
			out[got.ID] = true
			continue
		}
		var col collection
		_, err := c.api.GetJSON(ctx, "groups", c.url("/groups", "$select", "id,displayName", "$filter", "displayName eq "+quote(g)), nil, budget, &col)
		if err != nil {
			return nil, fmt.Errorf("scope group %q: %w", g, err)
		}
		switch len(col.Value) {
		case 0:
			return nil, fmt.Errorf("scope group %q: no group has that display name", g)
		case 1:
			id, _ := col.Value[0]["id"].(string)
			out[id] = true
		default:
			return nil, fmt.Errorf("scope group %q: %d groups have that display name; configure its object ID", g, len(col.Value))
		}
	}
	return out, nil
}

// person maps a user object (with the connector's $select) to a Person,
// groups left empty.
func (c *Connector) person(u map[string]any, now time.Time) directory.Person {
	str := func(k string) string { s, _ := u[k].(string); return s }
	p := directory.Person{
		ID:          str("id"),
		Username:    str("userPrincipalName"),
		Email:       str("mail"),
		DisplayName: str("displayName"),
		GivenName:   str("givenName"),
		FamilyName:  str("surname"),
		Subject:     str(c.cfg.SubjectAttribute),
	}
	switch enabled, known := u["accountEnabled"].(bool); {
	case known && enabled:
		p.Status = directory.Active
	case known:
		p.Status = directory.Disabled
	default:
		// Selected but null: Graph did not say. Neither active nor a
		// leaver.
		p.Status = directory.Inactive
	}
	if c.cfg.LeaveDate && p.Status == directory.Active {
		// A past leave date is a leaver; a future one is only scheduled.
		if t, err := time.Parse(time.RFC3339, str("employeeLeaveDateTime")); err == nil && !t.After(now) {
			p.Status = directory.Disabled
		}
	}
	if len(c.cfg.Attributes) > 0 {
		p.Attributes = map[string][]string{}
		for _, a := range c.cfg.Attributes {
			flatten(p.Attributes, a, u[a])
		}
	}
	return p
}

// flatten stores a property as strings: scalars as one value, arrays as
// several, objects (onPremisesExtensionAttributes) under name/key.
func flatten(out map[string][]string, name string, v any) {
	switch x := v.(type) {
	case nil:
	case string:
		out[name] = append(out[name], x)
	case bool, float64:
		out[name] = append(out[name], fmt.Sprint(x))
	case []any:
		for _, e := range x {
			flatten(out, name, e)
		}
	case map[string]any:
		for k, e := range x {
			flatten(out, name+"/"+k, e)
		}
	}
}

func itoa(n int) string { return fmt.Sprint(n) }

// quote is an OData string literal.
func quote(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

func isGUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i, r := range s {
		switch i {
		case 8, 13, 18, 23:
			if r != '-' {
				return false
			}
		default:
			if !strings.ContainsRune("0123456789abcdefABCDEF", r) {
				return false
			}
		}
	}
	return true
}
