package atlassiantest

import (
	"encoding/json"
	"slices"
	"sort"
	"strings"
	"time"
)

// index is a set of lower-cased names with a sorted view for paging.
// Additions go to a pending list and removals only drop the set entry, so
// writes stay O(1); the sorted view is rebuilt (merge, not a full sort)
// the first time a read needs it. A sweep over 100,000 users therefore
// sorts once, not once per page. Guarded by Server.mu.
type index struct {
	set     map[string]struct{}
	sorted  []string
	pending []string
	stale   bool
}

func newIndex() *index { return &index{set: map[string]struct{}{}} }

func (x *index) has(k string) bool { _, ok := x.set[k]; return ok }
func (x *index) len() int          { return len(x.set) }

func (x *index) add(k string) bool {
	if x.has(k) {
		return false
	}
	x.set[k] = struct{}{}
	x.pending = append(x.pending, k)
	return true
}

func (x *index) remove(k string) bool {
	if !x.has(k) {
		return false
	}
	delete(x.set, k)
	x.stale = true
	return true
}

// keys returns the sorted names. The slice is shared: callers must not
// modify it and must not keep it past the lock.
func (x *index) keys() []string {
	if len(x.pending) == 0 && !x.stale {
		return x.sorted
	}
	slices.Sort(x.pending)
	merged := make([]string, 0, len(x.set))
	i, j := 0, 0
	for i < len(x.sorted) || j < len(x.pending) {
		var k string
		switch {
		case j == len(x.pending) || (i < len(x.sorted) && x.sorted[i] <= x.pending[j]):
			k = x.sorted[i]
			i++
		default:
			k = x.pending[j]
			j++
		}
		// A name removed and added again can sit in both lists.
		if !x.has(k) || (len(merged) > 0 && merged[len(merged)-1] == k) {
			continue
		}
		merged = append(merged, k)
	}
	x.sorted, x.pending, x.stale = merged, nil, false
	return x.sorted
}

// after returns the position of the first key greater than k.
func (x *index) after(k string) int {
	keys := x.keys()
	return sort.Search(len(keys), func(i int) bool { return keys[i] > k })
}

type user struct {
	name        string // as the product stores it; matched lower-cased
	key         string // Jira key, Confluence userKey, Crowd key
	id          int    // Bitbucket numeric id
	slug        string // Bitbucket URL slug
	first, last string // Crowd first-name / last-name
	displayName string
	email       string
	active      bool
	password    string
	groups      map[string]struct{} // lower-cased group names
	lastLogin   time.Time
	// props are Jira user properties (JSON values); attrs are Crowd user
	// attributes (multi-valued). Each product uses one of them.
	props map[string]json.RawMessage
	attrs map[string][]string
	// perm is the Bitbucket global permission granted to the user directly.
	perm string
}

type group struct {
	name    string
	members *index // lower-cased user names
	perm    string // Bitbucket global permission granted through the group
}

func lower(s string) string { return strings.ToLower(s) }

// slugify derives a Bitbucket slug; it differs from the name whenever the
// name has characters that are not URL-safe, as on a real instance.
func slugify(name string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(name) {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '.', r == '-':
			b.WriteRune(r)
		default:
			b.WriteByte('_')
		}
	}
	return b.String()
}

// splitName gives Crowd's first-name / last-name for a display name.
func splitName(display string) (string, string) {
	first, last, ok := strings.Cut(strings.TrimSpace(display), " ")
	if !ok {
		return "", first
	}
	return first, strings.TrimSpace(last)
}

// The methods below hold no lock: callers hold Server.mu.

func (s *Server) lookup(name string) *user { return s.users[lower(name)] }

func (s *Server) lookupKey(key string) *user {
	if n, ok := s.byKey[key]; ok {
		return s.users[n]
	}
	return nil
}

func (s *Server) lookupSlug(slug string) *user {
	if n, ok := s.bySlug[lower(slug)]; ok {
		return s.users[n]
	}
	return nil
}

func (s *Server) group(name string) *group { return s.groups[lower(name)] }

func (s *Server) ensureGroup(name string) *group {
	if g := s.group(name); g != nil {
		return g
	}
	g := &group{name: name, members: newIndex()}
	s.groups[lower(name)] = g
	s.groupIdx.add(lower(name))
	return g
}

// insert adds u (whose name must be free), filling the product's
// identifiers when the caller left them empty.
func (s *Server) insert(u *user) {
	s.nextID++
	u.id = s.nextID
	if u.key == "" {
		u.key = s.newKey(u.id)
	}
	u.slug = slugify(u.name)
	if u.groups == nil {
		u.groups = map[string]struct{}{}
	}
	if u.props == nil {
		u.props = map[string]json.RawMessage{}
	}
	if u.attrs == nil {
		u.attrs = map[string][]string{}
	}
	k := lower(u.name)
	s.users[k] = u
	s.byKey[u.key] = k
	s.bySlug[u.slug] = k
	s.userIdx.add(k)
}

func (s *Server) newKey(id int) string {
	switch s.kind {
	case Jira:
		return "JIRAUSER" + itoa(10000+id)
	case Confluence:
		return "4028d676" + pad(id, 24)
	case Crowd:
		return "98305:" + pad(id, 32)
	}
	return ""
}

func (s *Server) deleteUser(u *user) {
	k := lower(u.name)
	for g := range u.groups {
		s.groups[g].members.remove(k)
	}
	delete(s.users, k)
	delete(s.byKey, u.key)
	delete(s.bySlug, u.slug)
	s.userIdx.remove(k)
}

// rename keeps the key (Jira, Confluence, Crowd) and id (Bitbucket)
// stable; the Bitbucket slug follows the new name.
func (s *Server) rename(u *user, to string) {
	old := lower(u.name)
	s.userIdx.remove(old)
	delete(s.users, old)
	delete(s.bySlug, u.slug)
	u.name = to
	u.slug = slugify(to)
	k := lower(to)
	s.users[k] = u
	s.byKey[u.key] = k
	s.bySlug[u.slug] = k
	s.userIdx.add(k)
	for g := range u.groups {
		m := s.groups[g].members
		m.remove(old)
		m.add(k)
	}
}

func (s *Server) join(u *user, g *group) bool {
	if !g.members.add(lower(u.name)) {
		return false
	}
	u.groups[lower(g.name)] = struct{}{}
	return true
}

func (s *Server) leave(u *user, g *group) bool {
	if !g.members.remove(lower(u.name)) {
		return false
	}
	delete(u.groups, lower(g.name))
	return true
}

// groupNames lists u's groups by their stored names, sorted.
func (s *Server) groupNames(u *user) []string {
	out := make([]string, 0, len(u.groups))
	for g := range u.groups {
		out = append(out, s.groups[g].name)
	}
	slices.SortFunc(out, func(a, b string) int { return strings.Compare(lower(a), lower(b)) })
	return out
}

// licensed reports whether u takes a seat. Bitbucket: LICENSED_USER (or
// higher) held directly or through a group, for any user the directory
// reports (its "active" flag is the source directory's). Elsewhere: an
// active user in one of the licence groups.
func (s *Server) licensed(u *user) bool {
	if s.kind == Bitbucket {
		if u.perm != "" {
			return true
		}
		for g := range u.groups {
			if s.groups[g].perm != "" {
				return true
			}
		}
		return false
	}
	if !u.active {
		return false
	}
	for _, lg := range s.licenceGroups {
		if _, ok := u.groups[lower(lg)]; ok {
			return true
		}
	}
	return false
}

// seatsLeft reports whether one more user may take a seat. The count is
// a scan, done only when Options.Seats limits the licence.
func (s *Server) seatsLeft() bool {
	if s.opts.Seats <= 0 {
		return true
	}
	n := 0
	for _, u := range s.users {
		if s.licensed(u) {
			n++
		}
	}
	return n < s.opts.Seats
}

// grantsLicence reports whether joining g would make u take a seat.
func (s *Server) grantsLicence(u *user, g *group) bool {
	if s.licensed(u) {
		return false
	}
	if s.kind == Bitbucket {
		return g.perm != ""
	}
	return u.active && slices.ContainsFunc(s.licenceGroups, func(lg string) bool { return lower(lg) == lower(g.name) })
}

// memoized returns build's result, reusing it while the directory is
// unchanged: paging a filtered or re-ordered list of 100,000 users then
// costs one scan per sweep, not one per page. Callers hold mu.
func (s *Server) memoized(key string, build func() []string) []string {
	if g := s.gen.Load(); g != s.memoGen || s.memo == nil {
		s.memo, s.memoGen = map[string][]string{}, g
	}
	if v, ok := s.memo[key]; ok {
		return v
	}
	v := build()
	s.memo[key] = v
	return v
}

// window clamps start/limit to n items.
func window(start, limit, n int) (int, int) {
	if start < 0 {
		start = 0
	}
	if start > n {
		start = n
	}
	end := start + limit
	if limit < 0 || end > n {
		end = n
	}
	return start, end
}
