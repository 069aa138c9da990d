package google

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/usherhq/usher/directory"
	"github.com/usherhq/usher/directory/rest"
)

// Person looks a person up by subject; see directory.Connector. It costs
// one call for the user (by id or primaryEmail) plus one groups.list per
// group the person reaches, walking up the nesting.
func (c *Connector) Person(ctx context.Context, subject string) (*directory.Person, error) {
	budget := rest.NewBudget(c.cfg.MaxWait / 20)
	fail := func(err error) (*directory.Person, error) {
		return nil, fmt.Errorf("google %s: person %q: %w", c.name, subject, err)
	}
	u, err := c.findUser(ctx, subject, budget)
	if err != nil {
		return fail(err)
	}
	p := c.person(u)
	groups, err := c.groupsOf(ctx, p.ID, budget)
	if err != nil {
		return fail(err)
	}
	inScope := len(c.cfg.Groups) == 0
	for _, g := range groups {
		p.Groups = append(p.Groups, c.label(g))
		p.GroupIDs = append(p.GroupIDs, g.ID)
		inScope = inScope || slices.ContainsFunc(c.cfg.Groups, g.matches)
	}
	p.GroupsComplete = true
	p.OutOfScope = !inScope || !c.inOrgUnits(u, nil)
	return &p, nil
}

// findUser reads one user by subject. users.get takes an id, a primary
// e-mail or an alias (reference §4.3): the answer is checked against the
// attribute asked for, so that an alias cannot stand in for a primary
// address, nor an e-mail for an id.
func (c *Connector) findUser(ctx context.Context, subject string, budget *rest.Budget) (map[string]any, error) {
	switch a := c.cfg.SubjectAttribute; {
	case subject == "":
		return nil, directory.ErrNotFound
	case a == "id" && !isDigits(subject):
		return nil, directory.ErrNotFound // users.get would take it for an e-mail
	case a == "primaryEmail" && (!strings.Contains(subject, "@") || strings.ContainsAny(subject, "/?#")):
		return nil, directory.ErrNotFound
	case a == "id" || a == "primaryEmail":
		q := c.usersQuery()
		q.Set("fields", c.userFields)
		var u map[string]any
		_, err := c.api.GetJSON(ctx, "user", c.url("/users/"+url.PathEscape(subject), q), nil, budget, &u)
		if rest.StatusOf(err) == http.StatusNotFound {
			return nil, fmt.Errorf("%w: %w", directory.ErrNotFound, err)
		}
		if err != nil {
			return nil, c.explain(err)
		}
		if v := c.subject.values(u); len(v) == 0 || (a == "id" && v[0] != subject) || (a == "primaryEmail" && !strings.EqualFold(v[0], subject)) {
			return nil, directory.ErrNotFound
		}
		return u, nil
	}
	return c.searchUser(ctx, subject, budget)
}

// searchUser finds the user whose external ID or custom field equals
// subject. The search index answers first (one call); it lags by up to
// 36 hours (reference §4.2), so when it finds nobody the complete
// listing is read before the answer is "not found": a person created or
// changed since the index last caught up must not read as gone. That
// costs U/500 calls, only for subjects the index does not know.
func (c *Connector) searchUser(ctx context.Context, subject string, budget *rest.Budget) (map[string]any, error) {
	var found []map[string]any
	keep := func(p list[map[string]any]) error {
		for _, u := range p.Users {
			if slices.Contains(c.subject.values(u), subject) {
				found = append(found, u)
			}
		}
		return nil
	}
	if clause := c.searchClause(subject); clause != "" {
		q := c.usersQuery()
		q.Set("customer", c.cfg.Customer)
		q.Set("query", clause)
		q.Set("maxResults", strconv.Itoa(maxUserPage))
		if err := eachPage(ctx, c, "search", "/users", q, budget, keep); err != nil {
			return nil, err
		}
	}
	if len(found) == 0 {
		q := c.usersQuery()
		q.Set("customer", c.cfg.Customer)
		q.Set("maxResults", strconv.Itoa(maxUserPage))
		if err := eachPage(ctx, c, "users", "/users", q, budget, keep); err != nil {
			return nil, err
		}
	}
	switch len(found) {
	case 0:
		return nil, directory.ErrNotFound
	case 1:
		return found[0], nil
	}
	ids := make([]string, 0, len(found))
	for _, u := range found {
		id, _ := u["id"].(string)
		if !slices.Contains(ids, id) {
			ids = append(ids, id)
		}
	}
	if len(ids) == 1 { // the index found them, the listing too
		return found[0], nil
	}
	return nil, fmt.Errorf("%d users have %s %q; the subject attribute must be unique", len(ids), c.cfg.SubjectAttribute, subject)
}

// searchClause is the users.list query for the subject, "" when the
// value cannot be put in one safely (the listing then decides). The
// syntax (reference §4.2): externalId=1001 matches an external ID of
// any type (the type is checked on the answer), Schema.field=value a
// custom field. [U] How a quote inside a quoted value is escaped is
// not documented in the reference, so such values skip the index.
func (c *Connector) searchClause(subject string) string {
	if strings.ContainsAny(subject, `'\`) {
		return ""
	}
	if c.subject.extType != "" {
		return "externalId='" + subject + "'"
	}
	return c.subject.schema + "." + c.subject.field + "='" + subject + "'"
}

// groupsOf is every group the user belongs to, through nesting: the
// user's own groups (groups.list by userKey, which lists direct
// memberships [U]), then each group's parents the same way, with the
// group's e-mail as userKey ([U] the reference does not say userKey
// takes a group; GAM's group tree relies on it). Each group comes once,
// cycles included.
func (c *Connector) groupsOf(ctx context.Context, userID string, budget *rest.Budget) ([]group, error) {
	var out []group
	seen := map[string]bool{}
	queue := []string{userID}
	for len(queue) > 0 {
		key := queue[0]
		queue = queue[1:]
		q := url.Values{"userKey": {key}, "maxResults": {c.groupPage()}, "fields": {"nextPageToken,groups(id,email,name,aliases)"}}
		err := eachPage(ctx, c, "user groups", "/groups", q, budget, func(p list[group]) error {
			for _, g := range p.Groups {
				if g.ID == "" || seen[g.ID] {
					continue
				}
				seen[g.ID] = true
				out = append(out, g)
				queue = append(queue, g.Email)
			}
			return nil
		})
		if rest.StatusOf(err) == http.StatusNotFound && key == userID {
			return nil, fmt.Errorf("%w: %w", directory.ErrNotFound, err) // deleted since it was read
		}
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

func isDigits(s string) bool {
	for _, r := range s {
		if r < '0' || r > '9' {
			return false
		}
	}
	return s != ""
}
