package graph

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/usherhq/usher/directory"
	"github.com/usherhq/usher/directory/rest"
)

// Group is one group of a user, as MemberGroups returns it.
type Group struct {
	ID              string
	DisplayName     string
	SecurityEnabled bool
	// OnPremisesSamAccountName and OnPremisesSecurityIdentifier are set
	// for groups synced from AD: tokens can be configured to carry these
	// instead of object IDs.
	OnPremisesSamAccountName     string
	OnPremisesSecurityIdentifier string
}

// MemberGroups is every group the user belongs to, through nesting
// (transitiveMemberOf, groups only: directory roles and administrative
// units are dropped). It resolves the login-time group overage: when an
// Entra token carries _claim_names.groups, hasgroups, or the SAML
// groups.link attribute instead of the groups (reference §2.9), call it
// with the token's oid; never call the URL the token embeds. The caller
// applies whatever filter the token would have (security groups only,
// groups assigned to the app). ErrNotFound when the user does not
// exist.
func (c *Connector) MemberGroups(ctx context.Context, userID string) ([]Group, error) {
	if !isGUID(userID) {
		return nil, fmt.Errorf("graph %s: member groups of %q: not an object ID: %w", c.name, userID, directory.ErrNotFound)
	}
	budget := rest.NewBudget(c.lookupWait())
	var out []Group
	err := c.memberOf(ctx, userID, "id,displayName,securityEnabled,onPremisesSamAccountName,onPremisesSecurityIdentifier", budget,
		func(g map[string]any) {
			str := func(k string) string { s, _ := g[k].(string); return s }
			sec, _ := g["securityEnabled"].(bool)
			out = append(out, Group{
				ID: str("id"), DisplayName: str("displayName"), SecurityEnabled: sec,
				OnPremisesSamAccountName: str("onPremisesSamAccountName"), OnPremisesSecurityIdentifier: str("onPremisesSecurityIdentifier"),
			})
		})
	if err != nil {
		return nil, fmt.Errorf("graph %s: member groups of %s: %w", c.name, userID, err)
	}
	return out, nil
}

// lookupWait is the wait budget of a lookup: a login may be waiting.
func (c *Connector) lookupWait() time.Duration { return c.cfg.MaxWait / 20 }

// memberOf walks the user's transitiveMemberOf, calling fn per group.
// The cast segment (/microsoft.graph.group) is avoided on purpose: the
// reference marks casts as advanced-query territory on some lists, and
// filtering @odata.type here costs nothing.
func (c *Connector) memberOf(ctx context.Context, userID, sel string, budget *rest.Budget, fn func(map[string]any)) error {
	err := c.each(ctx, "memberof", c.url("/users/"+url.PathEscape(userID)+"/transitiveMemberOf", "$select", sel, "$top", itoa(c.cfg.PageSize)), budget,
		func(_ int, items []map[string]any) error {
			for _, g := range items {
				if t, _ := g["@odata.type"].(string); t == "#microsoft.graph.group" {
					fn(g)
				}
			}
			return nil
		})
	if rest.StatusOf(err) == http.StatusNotFound {
		return fmt.Errorf("%w: %w", directory.ErrNotFound, err)
	}
	return err
}

// Person looks a person up by subject; see directory.Connector.
func (c *Connector) Person(ctx context.Context, subject string) (*directory.Person, error) {
	budget := rest.NewBudget(c.lookupWait())
	fail := func(err error) (*directory.Person, error) {
		return nil, fmt.Errorf("graph %s: person %q: %w", c.name, subject, err)
	}
	u, err := c.findUser(ctx, subject, budget)
	if err != nil {
		return fail(err)
	}
	scope, err := c.resolveScope(ctx, budget)
	if err != nil {
		return fail(err)
	}
	universe, err := c.groupUniverse(ctx, budget)
	if err != nil {
		return fail(err)
	}
	p, err := c.complete(ctx, u, scope, universe, budget)
	if err != nil {
		return fail(err)
	}
	if p.OutOfScope || c.cfg.UserFilter == "" {
		return p, nil
	}
	in, err := c.matchUserFilter(ctx, []string{p.ID}, budget)
	if err != nil {
		return fail(err)
	}
	p.OutOfScope = !in[p.ID]
	return p, nil
}

// findUser reads one user by subject: by path for the id and the UPN
// (Graph takes either as the key), by an eq filter otherwise.
func (c *Connector) findUser(ctx context.Context, subject string, budget *rest.Budget) (map[string]any, error) {
	switch attr := c.cfg.SubjectAttribute; {
	case subject == "":
		return nil, directory.ErrNotFound
	case attr == "id" && !isGUID(subject):
		return nil, directory.ErrNotFound
	case attr == "id" || attr == "userPrincipalName":
		if attr == "userPrincipalName" && !strings.Contains(subject, "@") {
			return nil, directory.ErrNotFound // else Graph would read it as an id
		}
		var u map[string]any
		_, err := c.api.GetJSON(ctx, "user", c.url("/users/"+url.PathEscape(subject), "$select", c.userSelect), nil, budget, &u)
		if rest.StatusOf(err) == http.StatusNotFound {
			return nil, fmt.Errorf("%w: %w", directory.ErrNotFound, err)
		}
		return u, err
	default:
		var col collection
		_, err := c.api.GetJSON(ctx, "users", c.url("/users", "$select", c.userSelect, "$filter", attr+" eq "+quote(subject)), nil, budget, &col)
		if err != nil {
			return nil, err
		}
		switch len(col.Value) {
		case 0:
			return nil, directory.ErrNotFound
		case 1:
			return col.Value[0], nil
		}
		return nil, fmt.Errorf("%d users have %s %q; the subject attribute must be unique", len(col.Value), attr, subject)
	}
}

// groupUniverse is the set of group IDs the group filter admits, nil
// when there is no filter (every group counts).
func (c *Connector) groupUniverse(ctx context.Context, budget *rest.Budget) (map[string]bool, error) {
	if c.cfg.GroupFilter == "" {
		return nil, nil
	}
	out := map[string]bool{}
	err := c.each(ctx, "groups", c.url("/groups", "$select", "id", "$top", itoa(c.cfg.PageSize), "$filter", c.cfg.GroupFilter), budget,
		func(_ int, items []map[string]any) error {
			for _, g := range items {
				if id, _ := g["id"].(string); id != "" {
					out[id] = true
				}
			}
			return nil
		})
	return out, err
}

// complete turns a user object into a Person with all their groups (in
// the universe) and the group-scope verdict.
func (c *Connector) complete(ctx context.Context, u map[string]any, scope, universe map[string]bool, budget *rest.Budget) (*directory.Person, error) {
	p := c.person(u, c.clock.Now())
	inScope := len(scope) == 0
	err := c.memberOf(ctx, p.ID, "id,displayName", budget, func(g map[string]any) {
		id, _ := g["id"].(string)
		name, _ := g["displayName"].(string)
		inScope = inScope || scope[id]
		if universe == nil || universe[id] {
			p.Groups = append(p.Groups, name)
			p.GroupIDs = append(p.GroupIDs, id)
		}
	})
	if err != nil {
		return nil, err
	}
	p.GroupsComplete = true
	p.OutOfScope = !inScope
	return &p, nil
}

// matchUserFilter reports which of ids the user filter admits, reading
// them 15 at a time (the `in` limit).
func (c *Connector) matchUserFilter(ctx context.Context, ids []string, budget *rest.Budget) (map[string]bool, error) {
	out := map[string]bool{}
	for chunk := range slices.Chunk(ids, maxIn) {
		f := "(" + c.cfg.UserFilter + ") and " + idIn(chunk)
		err := c.each(ctx, "users", c.url("/users", "$select", "id", "$filter", f), budget, func(_ int, items []map[string]any) error {
			for _, u := range items {
				if id, _ := u["id"].(string); id != "" {
					out[id] = true
				}
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

// maxIn is how many values one `in` holds. [U] Graph documents 15 for
// some filters; staying under it everywhere is safe.
const maxIn = 15

func idIn(ids []string) string {
	q := make([]string, len(ids))
	for i, id := range ids {
		q[i] = quote(id)
	}
	return "id in (" + strings.Join(q, ",") + ")"
}
