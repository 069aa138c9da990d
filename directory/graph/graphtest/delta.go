package graphtest

import (
	"net/http"
	"slices"
	"strings"
	"time"
)

// deltaLifetime is how long Graph keeps delta state for directory
// objects (reference §2.6).
const deltaLifetime = 7 * 24 * time.Hour

// SetDeltaEmptyFirstPage makes the first page of every delta round empty
// but with a nextLink, which Graph is allowed to do (reference §2.6).
func (s *Server) SetDeltaEmptyFirstPage(on bool) { s.lock(func() { s.emptyFirst = on }) }

// deltaItem is one object (or one members@delta slice of a group) in a
// delta round, in paging order.
type deltaItem struct {
	id    string
	chunk int
	body  map[string]any
}

func (s *Server) delta(req *request, groups bool) reply {
	kind := "users"
	props := userProps
	if groups {
		kind = "groups"
		props = set(append(keys(groupProps), "members")...)
	}
	var c cursor
	switch tok, skip := req.q.Get("$deltatoken"), req.q.Get("$skiptoken"); {
	case tok == "latest":
		if rep, good := s.checkOptions(req, "$select", "$deltatoken"); !good {
			return rep
		}
		sel, rep, good := s.selection(req, true, props)
		if !good {
			return rep
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		link := cursor{Query: kind, Sel: strings.Join(sel, ","), Since: s.seq, At: s.clock.Now().Unix()}
		return ok(map[string]any{
			"@odata.context":   s.URL + "/v1.0/$metadata#" + kind,
			"value":            []any{},
			"@odata.deltaLink": s.URL + "/v1.0/" + kind + "/delta?$deltatoken=" + encodeCursor(link),
		})
	case tok != "" || skip != "":
		// Later requests carry only the token: the options are baked in.
		if rep, good := s.checkOptions(req, "$deltatoken", "$skiptoken"); !good {
			return rep
		}
		raw := tok + skip
		var good bool
		c, good = decodeCursor(raw)
		if !good || c.Query != kind || (tok != "" && skip != "") {
			return graphError(http.StatusBadRequest, "Request_BadRequest", "Invalid delta or skip token.")
		}
		if tok != "" { // a deltaLink starts a new round of changes
			c = cursor{Query: kind, Sel: c.Sel, Since: c.Since, At: c.At, Page: 1}
		}
	default:
		if rep, good := s.checkOptions(req, "$select", "$filter"); !good {
			return rep
		}
		sel, rep, good := s.selection(req, true, props)
		if !good {
			return rep
		}
		if f := req.q.Get("$filter"); f != "" {
			p, err := parseFilter(f)
			if err != nil || slices.ContainsFunc(p.props, func(n string) bool { return n != "id" }) {
				return graphError(http.StatusBadRequest, "Request_UnsupportedQuery", "Delta queries support $filter on id only.")
			}
			return s.notUnderstood(req.r, "the emulator does not model filtered delta rounds")
		}
		c = cursor{Query: kind, Sel: strings.Join(sel, ","), Since: -1, Page: 1, At: s.clock.Now().Unix()}
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.clock.Now()
	if c.Upto == 0 {
		c.Upto = s.seq // the round's snapshot
	}
	issued := c.Since
	if c.Since < 0 {
		issued = c.Upto
	}
	if issued < s.minSeq || now.Sub(time.Unix(c.At, 0)) > deltaLifetime {
		return s.expired(kind, c.Sel)
	}
	var sel []string
	if c.Sel != "" {
		sel = strings.Split(c.Sel, ",")
	}
	body := map[string]any{"@odata.context": s.URL + "/v1.0/$metadata#" + kind}
	if s.emptyFirst && c.Page == 1 {
		next := c
		next.Page = 2
		body["value"] = []any{}
		body["@odata.nextLink"] = s.URL + "/v1.0/" + kind + "/delta?$skiptoken=" + encodeCursor(next)
		return ok(body)
	}
	var items []deltaItem
	if groups {
		items = s.groupDeltaItems(c.Since, sel)
	} else {
		items = s.userDeltaItems(c.Since, sel)
	}
	start := 0
	if c.After != "" {
		start = len(items)
		for i, it := range items {
			if it.id > c.After || (it.id == c.After && it.chunk > c.Chunk) {
				start = i
				break
			}
		}
	}
	end := min(start+s.deltaPage, len(items))
	value := make([]any, 0, end-start)
	for _, it := range items[start:end] {
		value = append(value, it.body)
	}
	body["value"] = value
	if end < len(items) {
		next := c
		next.After, next.Chunk, next.Page = items[end-1].id, items[end-1].chunk, c.Page+1
		body["@odata.nextLink"] = s.URL + "/v1.0/" + kind + "/delta?$skiptoken=" + encodeCursor(next)
	} else {
		link := cursor{Query: kind, Sel: c.Sel, Since: c.Upto, At: now.Unix()}
		body["@odata.deltaLink"] = s.URL + "/v1.0/" + kind + "/delta?$deltatoken=" + encodeCursor(link)
	}
	return ok(body)
}

func keys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

// expired answers a delta token past its life, as configured.
func (s *Server) expired(kind, sel string) reply {
	if s.expiredAs == "gone" {
		rep := graphError(http.StatusGone, "resyncRequired", "The delta token has expired; start a new delta round.")
		loc := s.URL + "/v1.0/" + kind + "/delta"
		if sel != "" {
			loc += "?$select=" + sel
		}
		rep.header = http.Header{"Location": {loc}}
		return rep
	}
	return graphError(http.StatusBadRequest, s.expiredAs, "The sync state could not be found; the delta token has expired.")
}

// userDeltaItems is a round's users: every user in the initial round
// (since < 0), else those changed after since with only the changed
// selected properties, soft-deleted ones as @removed "changed" and hard
// deletions as @removed "deleted".
func (s *Server) userDeltaItems(since int64, sel []string) []deltaItem {
	var items []deltaItem
	for id, u := range s.users {
		switch {
		case since < 0:
			if !u.deleted {
				items = append(items, deltaItem{id: id, body: project(u, sel, false)})
			}
		case u.seq <= since:
		case u.deleted:
			items = append(items, deltaItem{id: id, body: removed(id, "changed")})
		default:
			items = append(items, deltaItem{id: id, body: changedProps(u, sel, since)})
		}
	}
	if since >= 0 {
		for _, r := range s.removed {
			if !r.isGroup && r.seq > since {
				items = append(items, deltaItem{id: r.id, body: removed(r.id, "deleted")})
			}
		}
	}
	sortItems(items)
	return items
}

func removed(id, reason string) map[string]any {
	return map[string]any{"id": id, "@removed": map[string]any{"reason": reason}}
}

// changedProps is the object with the selected properties changed after
// since (Graph promises at least those).
func changedProps(o *object, sel []string, since int64) map[string]any {
	full := project(o, sel, false)
	out := map[string]any{"id": o.id}
	for k, v := range full {
		if o.propSeq[k] > since {
			out[k] = v
		}
	}
	return out
}

func (s *Server) groupDeltaItems(since int64, sel []string) []deltaItem {
	withMembers := slices.Contains(sel, "members")
	var props []string
	for _, p := range sel {
		if p != "members" {
			props = append(props, p)
		}
	}
	if sel == nil {
		props = nil
	} else if len(props) == 0 {
		props = []string{"id"}
	}
	var items []deltaItem
	for id, g := range s.groups {
		var body map[string]any
		var members []any
		if since < 0 {
			body = project(g, props, false)
			if withMembers {
				ms := make([]string, 0, len(g.members))
				for m := range g.members {
					if u := s.users[m]; u == nil || !u.deleted {
						ms = append(ms, m)
					}
				}
				slices.Sort(ms)
				for _, m := range ms {
					members = append(members, memberRef(m, g.members[m], false))
				}
			}
		} else {
			changed := g.seq > since
			if withMembers {
				last := map[string]memberChange{}
				for _, mc := range g.memberLog {
					if mc.seq > since {
						last[mc.id] = mc
					}
				}
				ids := make([]string, 0, len(last))
				for m := range last {
					ids = append(ids, m)
				}
				slices.Sort(ids)
				for _, m := range ids {
					members = append(members, memberRef(m, last[m].kind, last[m].removed))
				}
			}
			if !changed && len(members) == 0 {
				continue
			}
			body = changedProps(g, props, since)
		}
		if !withMembers {
			items = append(items, deltaItem{id: id, body: body})
			continue
		}
		// A group with many member changes is repeated on consecutive
		// pages, each with a slice of members@delta (reference §2.6).
		for chunk := 0; chunk == 0 || chunk*s.membersPage < len(members); chunk++ {
			b := body
			if chunk > 0 {
				b = map[string]any{"id": id}
			}
			lo := chunk * s.membersPage
			hi := min(lo+s.membersPage, len(members))
			if lo < hi {
				b = cloneMap(b)
				b["members@delta"] = members[lo:hi]
			}
			items = append(items, deltaItem{id: id, chunk: chunk, body: b})
		}
	}
	if since >= 0 {
		for _, r := range s.removed {
			if r.isGroup && r.seq > since {
				items = append(items, deltaItem{id: r.id, body: removed(r.id, "deleted")})
			}
		}
	}
	sortItems(items)
	return items
}

func memberRef(id, kind string, gone bool) map[string]any {
	m := map[string]any{"@odata.type": "#microsoft.graph." + kind, "id": id}
	if gone {
		m["@removed"] = map[string]any{"reason": "deleted"}
	}
	return m
}

func cloneMap(m map[string]any) map[string]any {
	out := make(map[string]any, len(m)+1)
	for k, v := range m {
		out[k] = v
	}
	return out
}

func sortItems(items []deltaItem) {
	slices.SortFunc(items, func(a, b deltaItem) int {
		if c := strings.Compare(a.id, b.id); c != 0 {
			return c
		}
		return a.chunk - b.chunk
	})
}
