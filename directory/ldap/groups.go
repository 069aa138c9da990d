package ldap

import (
	"context"
	"fmt"
	"sort"
	"strings"

	goldap "github.com/go-ldap/ldap/v3"

	"github.com/usherhq/usher/directory"
)

// memberAttr holds a group's members as DNs (groupOfNames, AD group).
const memberAttr = "member"

// group is one group as people's group lists name it.
type group struct {
	key  string // normalised DN
	name string
	id   string
}

// groupOf reads a group entry. A group without an ID fails the listing,
// like a person without one: left out, its members would lose it.
func (c *Connector) groupOf(e *goldap.Entry) (group, error) {
	id, err := c.entryID(e)
	if err != nil {
		return group{}, fmt.Errorf("ldap %s: group %s: %w: %w", c.name, e.DN, err, directory.ErrIncomplete)
	}
	return group{key: normDN(e.DN), name: val(e, c.cfg.GroupNameAttribute), id: id}, nil
}

// groupGraph is every group under the group bases with its direct
// members, read once per pull: people's groups, nesting included, come
// from it without one query per person, and it reads the same on AD and
// on OpenLDAP with or without the memberof/dynlist overlays.
type groupGraph struct {
	groups []group
	// index finds a group by its normalised DN.
	index map[string]int32
	// in maps a normalised member DN (person or group) to the groups that
	// list it directly.
	in map[string][]int32
}

// add adds a group entry and the members it holds, once however many
// group bases list it. next is where AD's range retrieval goes on
// (rangeValues), or -1 when the entry held every member.
func (g *groupGraph) add(c *Connector, e *goldap.Entry) (idx int32, next int, err error) {
	gr, err := c.groupOf(e)
	if err != nil {
		return 0, -1, err
	}
	if _, dup := g.index[gr.key]; dup { // overlapping group bases
		return 0, -1, nil
	}
	members, next, err := rangeValues(e, memberAttr, 0)
	if err != nil {
		return 0, -1, fmt.Errorf("ldap %s: group %s: %w: %w", c.name, e.DN, err, directory.ErrIncomplete)
	}
	idx = int32(len(g.groups))
	g.groups = append(g.groups, gr)
	g.index[gr.key] = idx
	g.addMembers(idx, members)
	return idx, next, nil
}

// readGroups reads the graph: every group's member list in full (AD range
// retrieval included, §7.2 rule 7), or an error.
func (s *session) readGroups(ctx context.Context) (*groupGraph, error) {
	c := s.c
	g := &groupGraph{index: map[string]int32{}, in: map[string][]int32{}}
	type pending struct {
		idx  int32
		dn   string
		next int
	}
	var more []pending
	for _, base := range c.cfg.GroupBaseDNs {
		req := goldap.NewSearchRequest(base, goldap.ScopeWholeSubtree, goldap.NeverDerefAliases, 0, 0, false,
			c.cfg.GroupFilter, []string{c.cfg.GroupNameAttribute, c.idAttr(), memberAttr}, nil)
		err := s.paged(ctx, "groups", req, func(es []*goldap.Entry) error {
			for _, e := range es {
				idx, next, err := g.add(c, e)
				if err != nil {
					return err
				}
				if next >= 0 {
					// The rest after the paged search: its cookie is
					// only good for the next page request.
					more = append(more, pending{idx, e.DN, next})
				}
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	for _, p := range more {
		vals, err := s.moreValues(ctx, p.dn, memberAttr, p.next)
		if err != nil {
			return nil, err
		}
		g.addMembers(p.idx, vals)
	}
	return g, nil
}

func (g *groupGraph) addMembers(idx int32, members []string) {
	for _, m := range members {
		k := normDN(m)
		g.in[k] = append(g.in[k], idx)
	}
}

// closure returns the groups dn belongs to, directly or through nested
// groups, by name. Cycles (AD allows them) end where a group repeats.
func (g *groupGraph) closure(dn string) []group {
	var out []group
	seen := map[int32]bool{}
	queue := append([]int32(nil), g.in[normDN(dn)]...)
	for len(queue) > 0 {
		i := queue[0]
		queue = queue[1:]
		if seen[i] {
			continue
		}
		seen[i] = true
		out = append(out, g.groups[i])
		queue = append(queue, g.in[g.groups[i].key]...)
	}
	sortGroups(out)
	return out
}

func sortGroups(gs []group) {
	sort.Slice(gs, func(i, j int) bool {
		if gs[i].name != gs[j].name {
			return gs[i].name < gs[j].name
		}
		return gs[i].key < gs[j].key
	})
}

// groupsOf finds one person's groups, nesting included, without reading
// the whole graph: on AD one search with the in-chain matching rule
// (1.2.840.113556.1.4.1941, which OpenLDAP does not know and answers with
// nothing, §6.6); on OpenLDAP a walk up, one search per level, that needs
// no overlay.
func (s *session) groupsOf(ctx context.Context, dn string) ([]group, error) {
	c := s.c
	var out []group
	seen := map[string]bool{}
	collect := func(filter string) ([]string, error) {
		var found []string
		for _, base := range c.cfg.GroupBaseDNs {
			req := goldap.NewSearchRequest(base, goldap.ScopeWholeSubtree, goldap.NeverDerefAliases, 0, 0, false,
				filter, []string{c.cfg.GroupNameAttribute, c.idAttr()}, nil)
			err := s.paged(ctx, "groups", req, func(es []*goldap.Entry) error {
				for _, e := range es {
					gr, err := c.groupOf(e)
					if err != nil {
						return err
					}
					if seen[gr.key] {
						continue
					}
					seen[gr.key] = true
					out = append(out, gr)
					found = append(found, e.DN)
				}
				return nil
			})
			if goldap.IsErrorWithCode(err, goldap.LDAPResultNoSuchObject) {
				continue
			}
			if err != nil {
				return nil, err
			}
		}
		return found, nil
	}
	if c.ad {
		_, err := collect("(&" + c.cfg.GroupFilter + "(member:" + inChainRule + ":=" + goldap.EscapeFilter(dn) + "))")
		if err != nil {
			return nil, err
		}
		sortGroups(out)
		return out, nil
	}
	// Walk up level by level; a level's DNs go into ORs of bounded size.
	const chunk = 50
	frontier := []string{dn}
	for depth := 0; len(frontier) > 0; depth++ {
		if depth > 64 {
			return nil, fmt.Errorf("ldap %s: groups of %s nest deeper than 64 levels", c.name, dn)
		}
		var next []string
		for i := 0; i < len(frontier); i += chunk {
			var f strings.Builder
			f.WriteString("(&" + c.cfg.GroupFilter + "(|")
			for _, m := range frontier[i:min(i+chunk, len(frontier))] {
				f.WriteString("(" + memberAttr + "=" + goldap.EscapeFilter(m) + ")")
			}
			f.WriteString("))")
			found, err := collect(f.String())
			if err != nil {
				return nil, err
			}
			next = append(next, found...)
		}
		frontier = next
	}
	sortGroups(out)
	return out, nil
}

// inChainRule is AD's LDAP_MATCHING_RULE_IN_CHAIN: a filter on member or
// memberOf with it follows nested groups (§6.4).
const inChainRule = "1.2.840.113556.1.4.1941"

// normDN is a DN's comparison form: attribute types and values folded to
// lower case, spacing and escaping made canonical. Member values and
// entry DNs are written by different hands (and OpenLDAP keeps values as
// given), so they are only compared in this form.
func normDN(dn string) string {
	d, err := goldap.ParseDN(dn)
	if err != nil {
		return strings.ToLower(strings.TrimSpace(dn))
	}
	var b strings.Builder
	for i, rdn := range d.RDNs {
		if i > 0 {
			b.WriteByte(',')
		}
		for j, a := range rdn.Attributes {
			if j > 0 {
				b.WriteByte('+')
			}
			b.WriteString(strings.ToLower(a.Type))
			b.WriteByte('=')
			b.WriteString(goldap.EscapeDN(strings.ToLower(a.Value)))
		}
	}
	return b.String()
}
