// Package oktatest is an in-memory Okta org for tests: the Management API
// calls a directory sync makes (/api/v1/users with its default, filter,
// search and q listings; /api/v1/groups; group members; a user's groups)
// and the org authorization server's token endpoint for service apps,
// behaving as /work/shared/reference/directories.md §3 describes: SSWS
// and Bearer auth, the default listing hiding DEPROVISIONED, filter
// strongly consistent and search served from an index that lags by a
// configurable time, Link paging with opaque cursors bound to their
// query, X-Rate-Limit-* headers on every answer with 429 E0000047 past
// the limit, Okta's error body, and injectable faults.
//
// A request the emulator does not understand fails the test.
package oktatest

import (
	"crypto"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"math/big"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
)

// Server is the emulator. Methods are safe for concurrent use.
type Server struct {
	tb    testing.TB
	clock clockwork.Clock
	// URL is the org URL once started.
	URL string
	hs  *httptest.Server

	mu        sync.Mutex
	apiTokens map[string]bool
	apps      map[string]*serviceApp
	bearers   map[string]bearer
	jtis      map[string]bool

	users    map[string]*user // including hard-deleted ones the search index still shows
	userIDs  []string
	groups   map[string]*group
	groupIDs []string
	dirty    bool

	searchLag   time.Duration
	rateLimit   int
	rateWindow  time.Duration
	windows     map[string]*window
	faults      []*Fault
	requests    map[string]int
	concurrency chan struct{}
}

type serviceApp struct {
	key    crypto.PublicKey
	kid    string
	scopes map[string]bool
}

type bearer struct {
	scopes map[string]bool
	expiry time.Time
}

type window struct {
	reset time.Time
	used  int
}

// snapshot is a user's state at one time: the search index serves the
// latest one older than the lag.
type snapshot struct {
	at                         time.Time
	status                     string
	profile                    map[string]any
	lastUpdated, statusChanged time.Time
	deleted                    bool
}

type user struct {
	id       string
	created  time.Time
	history  []snapshot // the last one is the current state
	memberOf map[string]bool
}

func (u *user) now() snapshot { return u.history[len(u.history)-1] }

type group struct {
	id, typ, name, description string
	created, lastUpdated       time.Time
	lastMembershipUpdated      time.Time
	members                    map[string]bool
}

// New makes an emulator. tb receives failures for requests the emulator
// does not understand (nil outside tests); clock nil means real time.
func New(tb testing.TB, clock clockwork.Clock) *Server {
	if clock == nil {
		clock = clockwork.NewRealClock()
	}
	return &Server{
		tb: tb, clock: clock,
		apiTokens: map[string]bool{}, apps: map[string]*serviceApp{}, bearers: map[string]bearer{}, jtis: map[string]bool{},
		users: map[string]*user{}, groups: map[string]*group{},
		rateLimit: 600, rateWindow: time.Minute, windows: map[string]*window{},
		requests: map[string]int{},
	}
}

// Start serves the emulator on loopback until the test ends.
func (s *Server) Start() *Server {
	s.hs = httptest.NewServer(s)
	s.URL = s.hs.URL
	if s.tb != nil {
		s.tb.Cleanup(s.hs.Close)
	}
	s.AddGroup(Group{Name: "Everyone", Type: "BUILT_IN"})
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

func (s *Server) lock(fn func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	fn()
}

func (s *Server) fail(format string, args ...any) {
	if s.tb != nil {
		s.tb.Helper()
		s.tb.Errorf("oktatest: "+format, args...)
	}
}

// --- knobs -------------------------------------------------------------

// AddAPIToken accepts "SSWS token".
func (s *Server) AddAPIToken(token string) { s.lock(func() { s.apiTokens[token] = true }) }

// AddServiceApp registers an OAuth 2.0 service app whose client
// assertions the key verifies (kid "" accepts any kid), granted scopes.
func (s *Server) AddServiceApp(clientID string, key crypto.PublicKey, kid string, scopes ...string) {
	s.lock(func() {
		s.apps[clientID] = &serviceApp{key: key, kid: kid, scopes: set(scopes...)}
	})
}

// RevokeTokens invalidates every access token issued so far.
func (s *Server) RevokeTokens() { s.lock(func() { clear(s.bearers) }) }

// SetSearchLag makes search see the org as it was d ago (reference §3.2:
// search is backed by an eventually consistent index).
func (s *Server) SetSearchLag(d time.Duration) { s.lock(func() { s.searchLag = d }) }

// SetRateLimit sets the requests allowed per endpoint family (users,
// groups, token) per window (default 600 a minute).
func (s *Server) SetRateLimit(n int, window time.Duration) {
	s.lock(func() { s.rateLimit, s.rateWindow = n, window })
}

// SetConcurrencyLimit makes requests beyond n in flight at once answer
// 429 with X-Rate-Limit-Limit 0 and Remaining 0 (Okta's concurrent limit).
func (s *Server) SetConcurrencyLimit(n int) {
	s.lock(func() { s.concurrency = make(chan struct{}, n) })
}

// Fault is an injected failure for requests matching Path (exact, or a
// prefix when it ends in "*") and Page (the nth page of a listing, 1
// being the first; any when 0).
type Fault struct {
	Path string
	Page int
	// Status answers with Okta's error body: 429 is E0000047 with
	// X-Rate-Limit-Reset Reset from now; 5xx E0000009.
	Status int
	Reset  time.Duration
	// Truncate answers 200 with the body cut short of its Content-Length.
	Truncate bool
	// Times is how many requests it hits; 0 means all.
	Times int
	hits  int
}

// Inject adds a fault.
func (s *Server) Inject(f Fault) { s.lock(func() { s.faults = append(s.faults, &f) }) }

// Requests counts requests by pattern ("GET /api/v1/users",
// "GET /api/v1/groups/{id}/users", ...), or all for "".
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

// --- directory -----------------------------------------------------------

// User is a user to add. Profile holds login, email, firstName,
// lastName, displayName and any custom attribute.
type User struct {
	// Status defaults to ACTIVE.
	Status  string
	Profile map[string]any
}

// Group is a group to add. Type defaults to OKTA_GROUP.
type Group struct {
	Name        string
	Description string
	Type        string
}

const idChars = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"

func newID(prefix string) string {
	b := make([]byte, 17)
	for i := range b {
		n, _ := rand.Int(rand.Reader, big.NewInt(int64(len(idChars))))
		b[i] = idChars[n.Int64()]
	}
	return prefix + string(b)
}

var statuses = set("STAGED", "PROVISIONED", "ACTIVE", "RECOVERY", "PASSWORD_EXPIRED", "LOCKED_OUT", "SUSPENDED", "DEPROVISIONED")

// AddUser adds a user and returns its id.
func (s *Server) AddUser(u User) string {
	if u.Status == "" {
		u.Status = "ACTIVE"
	}
	if !statuses[u.Status] {
		s.fail("AddUser: unknown status %q", u.Status)
	}
	now := s.clock.Now()
	id := newID("00u")
	s.lock(func() {
		s.users[id] = &user{id: id, created: now, memberOf: map[string]bool{}, history: []snapshot{{
			at: now, status: u.Status, profile: normalize(u.Profile), lastUpdated: now, statusChanged: now,
		}}}
		s.dirty = true
	})
	return id
}

func normalize(p map[string]any) map[string]any {
	b, _ := json.Marshal(p)
	var out map[string]any
	_ = json.Unmarshal(b, &out)
	if out == nil {
		out = map[string]any{}
	}
	return out
}

func (s *Server) change(id string, fn func(*snapshot)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	u := s.users[id]
	if u == nil || u.now().deleted {
		s.fail("no user %s", id)
		return
	}
	next := u.now()
	next.profile = normalize(next.profile)
	next.at = s.clock.Now()
	fn(&next)
	next.lastUpdated = next.at
	u.history = append(u.history, next)
}

// UpdateProfile sets profile attributes (nil removes one).
func (s *Server) UpdateProfile(id string, attrs map[string]any) {
	s.change(id, func(sn *snapshot) {
		for k, v := range normalize(attrs) {
			if v == nil {
				delete(sn.profile, k)
			} else {
				sn.profile[k] = v
			}
		}
	})
}

// SetStatus moves a user to a status (the lifecycle operations' result).
func (s *Server) SetStatus(id, status string) {
	if !statuses[status] {
		s.fail("SetStatus: unknown status %q", status)
	}
	s.change(id, func(sn *snapshot) {
		sn.status = status
		sn.statusChanged = s.clock.Now()
	})
}

// DeleteUser hard-deletes a user, which Okta allows only after
// deactivation: afterwards the user is gone (404).
func (s *Server) DeleteUser(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	u := s.users[id]
	if u == nil || u.now().status != "DEPROVISIONED" {
		s.fail("DeleteUser %s: only a DEPROVISIONED user can be deleted", id)
		return
	}
	next := u.now()
	next.at, next.deleted = s.clock.Now(), true
	u.history = append(u.history, next)
	for g := range u.memberOf {
		delete(s.groups[g].members, id)
		s.groups[g].lastMembershipUpdated = next.at
	}
}

// AddGroup adds a group and returns its id.
func (s *Server) AddGroup(g Group) string {
	if g.Type == "" {
		g.Type = "OKTA_GROUP"
	}
	now := s.clock.Now()
	id := newID("00g")
	s.lock(func() {
		s.groups[id] = &group{id: id, typ: g.Type, name: g.Name, description: g.Description,
			created: now, lastUpdated: now, lastMembershipUpdated: now, members: map[string]bool{}}
		s.dirty = true
	})
	return id
}

// AddMember adds a user to a group; it does not change the user's
// lastUpdated, only the group's lastMembershipUpdated.
func (s *Server) AddMember(groupID, userID string) {
	s.lock(func() {
		g, u := s.groups[groupID], s.users[userID]
		if g == nil || u == nil {
			s.fail("AddMember(%s, %s): no such group or user", groupID, userID)
			return
		}
		g.members[userID] = true
		u.memberOf[groupID] = true
		g.lastMembershipUpdated = s.clock.Now()
	})
}

// RemoveMember removes a user from a group.
func (s *Server) RemoveMember(groupID, userID string) {
	s.lock(func() {
		g, u := s.groups[groupID], s.users[userID]
		if g == nil || u == nil {
			s.fail("RemoveMember(%s, %s): no such group or user", groupID, userID)
			return
		}
		delete(g.members, userID)
		delete(u.memberOf, groupID)
		g.lastMembershipUpdated = s.clock.Now()
	})
}

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

// cursor is what an `after` value holds: opaque to clients, bound to the
// listing's query.
type cursor struct {
	Query string `json:"q"`
	After string `json:"a"`
	Page  int    `json:"p"`
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
	return c, json.Unmarshal(b, &c) == nil
}
