// Package graphtest is an in-memory Microsoft Graph (Entra ID) for tests:
// the v2.0 client-credentials token endpoint and the v1.0 users, groups,
// membership and delta endpoints a directory sync uses, behaving as
// /work/shared/reference/directories.md §2 describes: $select projection
// with the default property set, $top limits, opaque $skiptoken paging
// bound to its query, a $filter subset with the advanced-query gate
// (ConsistencyLevel: eventual + $count=true) and its eventual
// consistency, directoryObject collections with @odata.type, delta
// queries (nextLink/deltaLink, $deltatoken=latest, changed properties
// only, @removed with both reasons, members@delta split across pages,
// token expiry as syncStateNotFound or 410 Gone), the Graph and OAuth
// error envelopes, and injectable faults: throttling with or without
// Retry-After, outages, bodies cut short.
//
// A request the emulator does not understand (an unknown path, query
// option or property) fails the test: an emulator that quietly answers
// something would let a connector pass against behaviour Graph does not
// have.
package graphtest

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jonboulle/clockwork"
)

// Server is the emulator. Create it with New; serve it with Start (or
// mount it as an http.Handler). Methods are safe for concurrent use.
type Server struct {
	tb    testing.TB
	clock clockwork.Clock

	// URL is the base URL once started (http://127.0.0.1:port): the login
	// endpoint and the Graph endpoint are both served from it.
	URL string
	// Tenant is the tenant ID the token endpoint answers for.
	Tenant string
	hs     *httptest.Server

	mu sync.Mutex
	// Knobs; set them before requests or under no concurrent traffic.
	tokenLifetime time.Duration
	deltaPage     int // objects per delta page
	membersPage   int // members@delta entries per group object per page
	advancedLag   time.Duration
	expiredAs     string // "syncStateNotFound", "resyncRequired" or "gone"
	emptyFirst    bool   // first page of each delta round is empty

	apps   map[string]*app
	tokens map[string]issued
	jtis   map[string]bool

	seq      int64
	users    map[string]*object
	groups   map[string]*object
	removed  []removal // hard deletes, for deltas
	minSeq   int64     // delta and skip tokens below are expired
	userIDs  []string  // sorted, rebuilt when dirty
	groupIDs []string
	dirty    bool

	faults   []*Fault
	requests map[string]int // "METHOD path-pattern" → count
}

// object is a user or a group.
type object struct {
	id    string
	props map[string]any
	// propSeq is the change sequence of each property's last change.
	propSeq map[string]int64
	seq     int64 // last change of any property or of the deleted flag
	created time.Time
	// Users: soft-deleted (restorable) and when.
	deleted   bool
	deletedAt time.Time
	// Groups: direct members (id → "user" / "group") and their change
	// log for members@delta.
	members    map[string]string
	memberLog  []memberChange
	memberOf   map[string]bool // groups this object is a direct member of
	isGroup    bool
	securityOn bool
}

type memberChange struct {
	id, kind string
	removed  bool
	seq      int64
}

type removal struct {
	id      string
	isGroup bool
	seq     int64
}

type app struct {
	secret string
	cert   *certKey
	denied bool
}

type issued struct {
	client string
	expiry time.Time
}

// New makes an emulator for one tenant. tb receives failures for
// requests the emulator does not understand; it may be nil outside
// tests (the benchmark's separate process), where such requests are only
// answered 400. clock nil means real time.
func New(tb testing.TB, clock clockwork.Clock) *Server {
	if clock == nil {
		clock = clockwork.NewRealClock()
	}
	return &Server{
		tb: tb, clock: clock,
		Tenant:        "72f988bf-86f1-41af-91ab-2d7cd011db47",
		tokenLifetime: 3599 * time.Second,
		deltaPage:     100,
		membersPage:   50,
		expiredAs:     "syncStateNotFound",
		apps:          map[string]*app{},
		tokens:        map[string]issued{},
		jtis:          map[string]bool{},
		users:         map[string]*object{},
		groups:        map[string]*object{},
		requests:      map[string]int{},
	}
}

// Start serves the emulator on a loopback port until the test ends (or
// Close).
func (s *Server) Start() *Server {
	s.hs = httptest.NewServer(s)
	s.URL = s.hs.URL
	if s.tb != nil {
		s.tb.Cleanup(s.hs.Close)
	}
	return s
}

// Close stops a started server.
func (s *Server) Close() {
	if s.hs != nil {
		s.hs.Close()
	}
}

// Client is an HTTP client for the started server.
func (s *Server) Client() *http.Client { return s.hs.Client() }

// --- knobs -------------------------------------------------------------

// SetTokenLifetime sets expires_in of issued tokens (default 3599s).
func (s *Server) SetTokenLifetime(d time.Duration) { s.lock(func() { s.tokenLifetime = d }) }

// SetDeltaPageSize sets how many objects a delta page holds (default
// 100), and how many members@delta entries one group object carries on
// a page before the group continues on the next (default 50).
func (s *Server) SetDeltaPageSize(objects, members int) {
	s.lock(func() { s.deltaPage, s.membersPage = objects, members })
}

// SetAdvancedLag makes advanced queries (ConsistencyLevel: eventual)
// eventually consistent: users created less than d ago are not yet
// visible to them, users deleted less than d ago still are.
func (s *Server) SetAdvancedLag(d time.Duration) { s.lock(func() { s.advancedLag = d }) }

// SetExpiredAs chooses how an expired delta token is answered:
// "syncStateNotFound" or "resyncRequired" (400 with that code), or
// "gone" (410 with a Location of a fresh initial delta).
func (s *Server) SetExpiredAs(how string) { s.lock(func() { s.expiredAs = how }) }

// ExpireDeltaTokens makes every delta and skip token issued so far
// expired, as if their 7 days had passed.
func (s *Server) ExpireDeltaTokens() {
	s.lock(func() {
		s.seq++
		s.minSeq = s.seq
	})
}

// RevokeTokens makes every access token issued so far invalid (the next
// call gets 401 InvalidAuthenticationToken).
func (s *Server) RevokeTokens() { s.lock(func() { clear(s.tokens) }) }

// Fault is an injected failure. It hits requests matching Method (any
// when empty), Path (exact, or a prefix when it ends in "*") and Page
// (the nth page of a listing, 1 being the first; any when 0).
type Fault struct {
	Method string
	Path   string
	Page   int
	// Status and Code make an error answer in the Graph envelope (Code
	// defaults by status); RetryAfter sets that header when not empty.
	Status     int
	Code       string
	RetryAfter string
	// Truncate answers 200 with the real body cut in half, short of its
	// Content-Length, instead of an error.
	Truncate bool
	// Times is how many matching requests it hits; 0 means all.
	Times int
	hits  int
}

// Inject adds a fault.
func (s *Server) Inject(f Fault) { s.lock(func() { s.faults = append(s.faults, &f) }) }

// ClearFaults removes every fault.
func (s *Server) ClearFaults() { s.lock(func() { s.faults = nil }) }

// Requests is how many requests matched the path pattern so far
// ("GET /v1.0/users", "GET /v1.0/groups/{id}/transitiveMembers", ...),
// or all requests for "".
func (s *Server) Requests(pattern string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if pattern == "" {
		n := 0
		for _, v := range s.requests {
			n += v
		}
		return n
	}
	return s.requests[pattern]
}

func (s *Server) lock(fn func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	fn()
}

// --- apps ----------------------------------------------------------------

// AddSecretApp registers an app that authenticates with a client secret.
func (s *Server) AddSecretApp(clientID, secret string) {
	s.lock(func() { s.apps[clientID] = &app{secret: secret} })
}

// DenyApp makes every Graph call of the app answer 403
// Authorization_RequestDenied (no admin consent).
func (s *Server) DenyApp(clientID string) {
	s.lock(func() { s.apps[clientID].denied = true })
}

// --- directory -----------------------------------------------------------

// User is a user to add. Props are any further properties under their
// Graph names (onPremisesSamAccountName, department,
// employeeLeaveDateTime, extension_..., onPremisesExtensionAttributes).
type User struct {
	ID                string // a new GUID when empty
	UserPrincipalName string
	Mail              string
	DisplayName       string
	GivenName         string
	Surname           string
	AccountEnabled    bool
	Props             map[string]any
}

// Group is a group to add.
type Group struct {
	ID              string
	DisplayName     string
	SecurityEnabled bool
	Props           map[string]any
}

func (s *Server) next() int64 {
	s.seq++
	return s.seq
}

func newObject(id string, props map[string]any, seq int64, now time.Time) *object {
	o := &object{id: id, props: map[string]any{"id": id}, propSeq: map[string]int64{"id": seq}, seq: seq, created: now, memberOf: map[string]bool{}}
	for k, v := range props {
		o.props[k] = normalize(v)
		o.propSeq[k] = seq
	}
	return o
}

// normalize turns values into their JSON-decoded form, so that filters
// and projections see what a client would.
func normalize(v any) any {
	switch v.(type) {
	case nil, string, bool, float64:
		return v
	}
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("graphtest: property value %T: %v", v, err))
	}
	var out any
	_ = json.Unmarshal(b, &out)
	return out
}

// AddUser adds a user and returns its id.
func (s *Server) AddUser(u User) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if u.ID == "" {
		u.ID = uuid.NewString()
	}
	props := map[string]any{
		"userPrincipalName": u.UserPrincipalName, "displayName": u.DisplayName,
		"givenName": nilIfEmpty(u.GivenName), "surname": nilIfEmpty(u.Surname),
		"mail": nilIfEmpty(u.Mail), "accountEnabled": u.AccountEnabled,
		"userType": "Member", "createdDateTime": s.clock.Now().UTC().Format(time.RFC3339),
	}
	for k, v := range u.Props {
		props[k] = v
	}
	s.users[u.ID] = newObject(u.ID, props, s.next(), s.clock.Now())
	s.dirty = true
	return u.ID
}

func nilIfEmpty(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// UpdateUser sets properties of a user (nil values clear them).
func (s *Server) UpdateUser(id string, props map[string]any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	u := s.mustUser(id)
	seq := s.next()
	for k, v := range props {
		u.props[k] = normalize(v)
		u.propSeq[k] = seq
	}
	u.seq = seq
}

// SoftDeleteUser moves a user to deleted items: gone from /users and
// from memberships, @removed "changed" in deltas, restorable.
func (s *Server) SoftDeleteUser(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	u := s.mustUser(id)
	seq := s.next()
	u.deleted, u.deletedAt, u.seq = true, s.clock.Now(), seq
	for g := range u.memberOf {
		s.groups[g].memberLog = append(s.groups[g].memberLog, memberChange{id: id, kind: "user", removed: true, seq: seq})
	}
}

// RestoreUser brings a soft-deleted user back, with their memberships;
// deltas show them again without annotation.
func (s *Server) RestoreUser(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	u := s.mustUser(id)
	seq := s.next()
	u.deleted, u.seq = false, seq
	for k := range u.propSeq {
		u.propSeq[k] = seq
	}
	for g := range u.memberOf {
		s.groups[g].memberLog = append(s.groups[g].memberLog, memberChange{id: id, kind: "user", seq: seq})
	}
}

// HardDeleteUser deletes a user for good: @removed "deleted" in deltas.
func (s *Server) HardDeleteUser(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	u := s.mustUser(id)
	seq := s.next()
	for g := range u.memberOf {
		grp := s.groups[g]
		delete(grp.members, id)
		if !u.deleted {
			grp.memberLog = append(grp.memberLog, memberChange{id: id, kind: "user", removed: true, seq: seq})
		}
	}
	delete(s.users, id)
	s.removed = append(s.removed, removal{id: id, seq: seq})
	s.dirty = true
}

// AddGroup adds a group and returns its id.
func (s *Server) AddGroup(g Group) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if g.ID == "" {
		g.ID = uuid.NewString()
	}
	props := map[string]any{
		"displayName": g.DisplayName, "securityEnabled": g.SecurityEnabled,
		"mailEnabled": false, "groupTypes": []any{}, "mailNickname": strings.ReplaceAll(g.DisplayName, " ", ""),
		"createdDateTime": s.clock.Now().UTC().Format(time.RFC3339),
	}
	for k, v := range g.Props {
		props[k] = v
	}
	o := newObject(g.ID, props, s.next(), s.clock.Now())
	o.isGroup, o.members, o.securityOn = true, map[string]string{}, g.SecurityEnabled
	s.groups[g.ID] = o
	s.dirty = true
	return g.ID
}

// UpdateGroup sets properties of a group (a rename: displayName).
func (s *Server) UpdateGroup(id string, props map[string]any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	g := s.mustGroup(id)
	seq := s.next()
	for k, v := range props {
		g.props[k] = normalize(v)
		g.propSeq[k] = seq
	}
	g.seq = seq
}

// DeleteGroup deletes a group: gone from listings and from its parents'
// members, @removed in group deltas.
func (s *Server) DeleteGroup(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	g := s.mustGroup(id)
	seq := s.next()
	for m := range g.members {
		if o := s.obj(m); o != nil {
			delete(o.memberOf, id)
		}
	}
	for p := range g.memberOf {
		delete(s.groups[p].members, id)
		s.groups[p].memberLog = append(s.groups[p].memberLog, memberChange{id: id, kind: "group", removed: true, seq: seq})
	}
	delete(s.groups, id)
	s.removed = append(s.removed, removal{id: id, isGroup: true, seq: seq})
	s.dirty = true
}

// AddMember makes a user or a group a direct member of a group.
func (s *Server) AddMember(groupID, memberID string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	g := s.mustGroup(groupID)
	m := s.obj(memberID)
	if m == nil {
		s.fail("AddMember: no object %s", memberID)
		return
	}
	kind := "user"
	if m.isGroup {
		kind = "group"
	}
	g.members[memberID] = kind
	m.memberOf[groupID] = true
	g.memberLog = append(g.memberLog, memberChange{id: memberID, kind: kind, seq: s.next()})
}

// RemoveMember removes a direct member from a group.
func (s *Server) RemoveMember(groupID, memberID string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	g := s.mustGroup(groupID)
	kind := g.members[memberID]
	delete(g.members, memberID)
	if m := s.obj(memberID); m != nil {
		delete(m.memberOf, groupID)
	}
	g.memberLog = append(g.memberLog, memberChange{id: memberID, kind: kind, removed: true, seq: s.next()})
}

func (s *Server) obj(id string) *object {
	if u := s.users[id]; u != nil {
		return u
	}
	return s.groups[id]
}

func (s *Server) mustUser(id string) *object {
	u := s.users[id]
	if u == nil {
		s.fail("no user %s", id)
		return &object{props: map[string]any{}, propSeq: map[string]int64{}, memberOf: map[string]bool{}}
	}
	return u
}

func (s *Server) mustGroup(id string) *object {
	g := s.groups[id]
	if g == nil {
		s.fail("no group %s", id)
		return &object{props: map[string]any{}, propSeq: map[string]int64{}, members: map[string]string{}, memberOf: map[string]bool{}}
	}
	return g
}

func (s *Server) fail(format string, args ...any) {
	if s.tb != nil {
		s.tb.Helper()
		s.tb.Errorf("graphtest: "+format, args...)
	}
}

// sorted returns the user and group IDs in order, rebuilding them after
// changes. Paging walks these, so a skip token is "after this id".
func (s *Server) sorted() ([]string, []string) {
	if s.dirty {
		s.userIDs = s.userIDs[:0]
		for id := range s.users {
			s.userIDs = append(s.userIDs, id)
		}
		slices.Sort(s.userIDs)
		s.groupIDs = s.groupIDs[:0]
		for id := range s.groups {
			s.groupIDs = append(s.groupIDs, id)
		}
		slices.Sort(s.groupIDs)
		s.dirty = false
	}
	return s.userIDs, s.groupIDs
}

// after is the position of the first id greater than cursor.
func after(ids []string, cursor string) int {
	if cursor == "" {
		return 0
	}
	i := sort.SearchStrings(ids, cursor)
	if i < len(ids) && ids[i] == cursor {
		i++
	}
	return i
}

// visible reports whether a user shows in listings; advanced queries see
// the directory as it was advancedLag ago.
func (s *Server) visible(u *object, advanced bool) bool {
	if !advanced || s.advancedLag == 0 {
		return !u.deleted
	}
	horizon := s.clock.Now().Add(-s.advancedLag)
	if u.created.After(horizon) {
		return false
	}
	return !u.deleted || u.deletedAt.After(horizon)
}

// transitiveUsers is every user reached from group g through nesting.
func (s *Server) transitiveMembers(g *object) (users, groups []string) {
	seenU, seenG := map[string]bool{}, map[string]bool{g.id: true}
	stack := []*object{g}
	for len(stack) > 0 {
		cur := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		for m, kind := range cur.members {
			if kind == "group" {
				if !seenG[m] {
					seenG[m] = true
					groups = append(groups, m)
					stack = append(stack, s.groups[m])
				}
				continue
			}
			if u := s.users[m]; u != nil && !u.deleted && !seenU[m] {
				seenU[m] = true
				users = append(users, m)
			}
		}
	}
	slices.Sort(users)
	slices.Sort(groups)
	return users, groups
}

// transitiveMemberOf is every group an object reaches upwards.
func (s *Server) transitiveMemberOf(o *object) []string {
	seen := map[string]bool{}
	var out []string
	stack := []*object{o}
	for len(stack) > 0 {
		cur := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		for g := range cur.memberOf {
			if !seen[g] {
				seen[g] = true
				out = append(out, g)
				stack = append(stack, s.groups[g])
			}
		}
	}
	slices.Sort(out)
	return out
}

// --- opaque tokens -------------------------------------------------------

// cursor is what a $skiptoken or $deltatoken holds. Clients must treat
// them as opaque; the emulator encodes them so that a token replayed
// with another query is caught.
type cursor struct {
	Query string `json:"q"`           // the listing's query, bound to the token
	After string `json:"a,omitempty"` // last id served
	Chunk int    `json:"c,omitempty"` // members@delta slice of that group already served
	Page  int    `json:"p"`           // the page this token fetches
	Since int64  `json:"s,omitempty"` // delta: changes after this sequence (-1: initial round)
	Upto  int64  `json:"u,omitempty"` // delta: the round's snapshot sequence
	Sel   string `json:"sel,omitempty"`
	Kind  string `json:"k,omitempty"` // delta: "users" or "groups"
	At    int64  `json:"t,omitempty"` // delta: issue time (unix)
}

func encodeCursor(c cursor) string {
	b, _ := json.Marshal(c)
	return base64.RawURLEncoding.EncodeToString(b)
}

func decodeCursor(s string) (cursor, bool) {
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return cursor{}, false
	}
	var c cursor
	if json.Unmarshal(b, &c) != nil {
		return cursor{}, false
	}
	return c, true
}
