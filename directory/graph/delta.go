package graph

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"github.com/usherhq/usher/directory"
	"github.com/usherhq/usher/directory/rest"
)

// Delta follows two Graph delta queries (reference §2.6): /users/delta
// for people whose properties changed or who were deleted, and
// /groups/delta (members selected) for membership changes, including a
// group joining or leaving another group, whose transitive members are
// then all affected. Every affected person is re-read in full (15 per
// call) with their transitive groups (one call each), so a delta person
// has GroupsComplete and an exact scope verdict: 100 changed people cost
// about 2 + 7 + 100 calls.
//
// Not seen by a delta, and corrected by the next full pull: a group's
// rename (Graph's delta objects may carry displayName whether or not it
// changed, so a rename cannot be told apart without reading every
// member), and the former members of a deleted group (Graph does not say
// who they were). GroupIDs, which mappings should prefer, never change.
//
// The token is both deltaLinks plus a hash of the configuration that
// shaped them (selected properties, filters, scope): a changed
// configuration makes old tokens expire rather than silently track the
// wrong properties.
func (c *Connector) Delta(ctx context.Context, token string, fn func(directory.Page) error) (string, error) {
	budget := rest.NewBudget(c.cfg.MaxWait)
	fail := func(err error) (string, error) {
		return "", fmt.Errorf("graph %s: delta: %w", c.name, err)
	}
	if token == "" {
		users, err := c.latest(ctx, "/users/delta", c.userSelect, budget)
		if err != nil {
			return fail(err)
		}
		groups, err := c.latest(ctx, "/groups/delta", "id,displayName,members", budget)
		if err != nil {
			return fail(err)
		}
		return c.encodeToken(users, groups), nil
	}
	t, err := c.decodeToken(token)
	if err != nil {
		return fail(err)
	}

	// changed: id → removed. A later item for the same id wins (Graph
	// replays objects, and a restore follows a removal).
	changed := map[string]bool{}
	nextUsers, err := c.follow(ctx, t.Users, budget, func(item map[string]any) {
		if id, _ := item["id"].(string); id != "" {
			_, gone := item["@removed"]
			changed[id] = gone
		}
	})
	if err != nil {
		return fail(err)
	}
	affected := map[string]bool{}
	var nested []string // groups that joined or left a group
	deletedGroups := 0
	nextGroups, err := c.follow(ctx, t.Groups, budget, func(item map[string]any) {
		if _, gone := item["@removed"]; gone {
			deletedGroups++
			return
		}
		ms, _ := item["members@delta"].([]any)
		for _, m := range ms {
			mm, _ := m.(map[string]any)
			id, _ := mm["id"].(string)
			switch mm["@odata.type"] {
			case "#microsoft.graph.user":
				affected[id] = true
			case "#microsoft.graph.group":
				nested = append(nested, id)
			}
		}
	})
	if err != nil {
		return fail(err)
	}
	if deletedGroups > 0 {
		c.log.LogAttrs(ctx, slog.LevelInfo, "graph delta: groups deleted; their former members are corrected by the next full pull",
			slog.String("directory", c.name), slog.Int("groups", deletedGroups))
	}
	slices.Sort(nested)
	for _, g := range slices.Compact(nested) {
		err := c.each(ctx, "members", c.url("/groups/"+url.PathEscape(g)+"/transitiveMembers", "$select", "id", "$top", itoa(c.cfg.PageSize)), budget,
			func(_ int, items []map[string]any) error {
				for _, m := range items {
					if m["@odata.type"] == "#microsoft.graph.user" {
						id, _ := m["id"].(string)
						affected[id] = true
					}
				}
				if len(affected) > maxDeltaPeople {
					return errTooMany
				}
				return nil
			})
		switch {
		case rest.StatusOf(err) == http.StatusNotFound:
			// Deleted since: its members' loss shows at the next pull.
		case err == errTooMany:
			return fail(fmt.Errorf("%w: more than %d people affected; a full pull is cheaper", directory.ErrDeltaExpired, maxDeltaPeople))
		case err != nil:
			return fail(err)
		}
	}

	var deleted []directory.Person
	var reread []string
	for id, gone := range changed {
		if gone {
			p := directory.Person{ID: id, Status: directory.Deleted}
			if c.cfg.SubjectAttribute == "id" {
				p.Subject = id
			}
			deleted = append(deleted, p)
			continue
		}
		reread = append(reread, id)
	}
	for id := range affected {
		if _, seen := changed[id]; !seen && id != "" {
			reread = append(reread, id)
		}
	}
	if len(reread) > maxDeltaPeople {
		return fail(fmt.Errorf("%w: %d people changed; a full pull is cheaper", directory.ErrDeltaExpired, len(reread)))
	}
	slices.Sort(reread)
	slices.SortFunc(deleted, func(a, b directory.Person) int { return strings.Compare(a.ID, b.ID) })
	people, err := c.reread(ctx, reread, budget)
	if err != nil {
		return fail(err)
	}
	all := append(deleted, people...)
	for page := range slices.Chunk(all, deltaPage) {
		if err := fn(directory.Page{People: page}); err != nil {
			return "", err
		}
	}
	return c.encodeToken(nextUsers, nextGroups), nil
}

const (
	// maxDeltaPeople bounds the people one delta re-reads; past it Delta
	// answers ErrDeltaExpired and the caller pulls.
	maxDeltaPeople = 5000
	deltaPage      = 100
)

var errTooMany = fmt.Errorf("too many people affected")

// reread reads the given people in full, with groups and scope. People
// no longer there are skipped: the next delta reports their removal.
func (c *Connector) reread(ctx context.Context, ids []string, budget *rest.Budget) ([]directory.Person, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	scope, err := c.resolveScope(ctx, budget)
	if err != nil {
		return nil, err
	}
	universe, err := c.groupUniverse(ctx, budget)
	if err != nil {
		return nil, err
	}
	var users []map[string]any
	for chunk := range slices.Chunk(ids, maxIn) {
		err := c.each(ctx, "users", c.url("/users", "$select", c.userSelect, "$filter", idIn(chunk)), budget,
			func(_ int, items []map[string]any) error {
				users = append(users, items...)
				return nil
			})
		if err != nil {
			return nil, err
		}
	}
	inFilter := map[string]bool{}
	if c.cfg.UserFilter != "" {
		found := make([]string, 0, len(users))
		for _, u := range users {
			id, _ := u["id"].(string)
			found = append(found, id)
		}
		if inFilter, err = c.matchUserFilter(ctx, found, budget); err != nil {
			return nil, err
		}
	}
	out := make([]directory.Person, len(users))
	err = parallel(ctx, c.cfg.Concurrency, len(users), func(ctx context.Context, i int) error {
		p, err := c.complete(ctx, users[i], scope, universe, budget)
		if err != nil {
			id, _ := users[i]["id"].(string)
			return fmt.Errorf("groups of %s: %w", id, err)
		}
		if c.cfg.UserFilter != "" && !inFilter[p.ID] {
			p.OutOfScope = true
		}
		out[i] = *p
		return nil
	})
	if err != nil {
		return nil, err
	}
	slices.SortFunc(out, func(a, b directory.Person) int { return strings.Compare(a.ID, b.ID) })
	return out, nil
}

// latest asks for a starting deltaLink without data ($deltatoken=latest).
func (c *Connector) latest(ctx context.Context, path, sel string, budget *rest.Budget) (string, error) {
	return c.follow(ctx, c.url(path, "$select", sel, "$deltatoken", "latest"), budget, func(map[string]any) {})
}

// follow walks a delta round from link to its deltaLink.
func (c *Connector) follow(ctx context.Context, link string, budget *rest.Budget, fn func(map[string]any)) (string, error) {
	if !strings.HasPrefix(link, c.cfg.GraphURL+"/v1.0/") {
		return "", fmt.Errorf("%w: the token's link is not on %s", directory.ErrDeltaExpired, c.cfg.GraphURL)
	}
	for page := 1; ; page++ {
		var col collection
		if _, err := c.api.GetJSON(ctx, "delta", link, nil, budget, &col); err != nil {
			if expired(err) {
				return "", fmt.Errorf("%w: %w", directory.ErrDeltaExpired, err)
			}
			return "", fmt.Errorf("delta page %d: %w", page, err)
		}
		for _, item := range col.Value {
			fn(item)
		}
		switch {
		case col.NextLink != "":
			link = col.NextLink
		case col.DeltaLink != "":
			return col.DeltaLink, nil
		default:
			return "", fmt.Errorf("delta page %d has neither @odata.nextLink nor @odata.deltaLink", page)
		}
	}
}

// expired recognises Graph's "start over" answers: 410 Gone (with a
// Location the caller does not need: a full pull starts over anyway) and
// the sync-state codes.
func expired(err error) bool {
	if rest.StatusOf(err) == http.StatusGone {
		return true
	}
	switch codeOf(err) {
	case "syncStateNotFound", "resyncRequired", "syncStateInvalid":
		return true
	}
	return false
}

type deltaToken struct {
	Users  string `json:"u"`
	Groups string `json:"g"`
	Config string `json:"c"`
}

const tokenPrefix = "graph1."

func (c *Connector) configHash() string {
	h := sha256.New()
	for _, s := range []string{c.cfg.GraphURL, c.userSelect, c.cfg.UserFilter, c.cfg.GroupFilter,
		c.cfg.SubjectAttribute, strings.Join(c.cfg.Groups, "\x00"), fmt.Sprint(c.cfg.LeaveDate)} {
		h.Write([]byte(s))
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil)[:8])
}

func (c *Connector) encodeToken(users, groups string) string {
	b, _ := json.Marshal(deltaToken{Users: users, Groups: groups, Config: c.configHash()})
	return tokenPrefix + base64.RawURLEncoding.EncodeToString(b)
}

func (c *Connector) decodeToken(s string) (deltaToken, error) {
	var t deltaToken
	raw, found := strings.CutPrefix(s, tokenPrefix)
	if !found {
		return t, fmt.Errorf("%w: not a graph delta token", directory.ErrDeltaExpired)
	}
	b, err := base64.RawURLEncoding.DecodeString(raw)
	if err != nil || json.Unmarshal(b, &t) != nil || t.Users == "" || t.Groups == "" {
		return t, fmt.Errorf("%w: malformed graph delta token", directory.ErrDeltaExpired)
	}
	if t.Config != c.configHash() {
		return t, fmt.Errorf("%w: the directory's configuration changed since the token", directory.ErrDeltaExpired)
	}
	return t, nil
}
