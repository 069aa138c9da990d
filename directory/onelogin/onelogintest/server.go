// Package onelogintest is an in-memory OneLogin account for tests: the
// OAuth 2.0 token endpoint (client credentials with HTTP Basic and a
// JSON body) and the API calls a directory sync makes (GET /api/2/users
// with its filters and cursor paging, GET /api/2/users/{id},
// GET /api/2/roles, GET /api/2/roles/{id}/users, GET /api/1/groups),
// behaving as /work/shared/reference/directories.md §5 describes: the
// v2 bare-array bodies with paging headers (Current-Page, Page-Items,
// Total-Count, Total-Pages, Before-Cursor, After-Cursor, Link), limit at
// most 100, opaque cursors bound to their query, updated_since, the
// state and status codes, the v1 envelope of /api/1 and of errors,
// X-RateLimit-* on every answer with a reset counted in seconds, 429
// past the account's hourly limit, and injectable faults.
//
// Where the reference marks a behaviour unverified, the emulator picks
// one and says so ([U] in the code): the 429 body, the v2 not-found
// shape, the v1 paging keys, which credential scope reads roles and
// groups, and that assigning a role does not change a user's updated_at.
//
// A request the emulator does not understand fails the test.
package onelogintest

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
)

// Credential scopes, as the admin UI names them (reference §5.1).
const (
	ReadUsers   = "Read users"
	ManageUsers = "Manage users"
	ReadAll     = "Read all"
	ManageAll   = "Manage all"
)

// Server is the emulator. Methods are safe for concurrent use.
type Server struct {
	tb    testing.TB
	clock clockwork.Clock
	// URL is the account's API base URL once started.
	URL string
	hs  *httptest.Server

	mu      sync.Mutex
	clients map[string]*client
	tokens  map[string]issued

	nextID   int64
	users    map[int64]*user
	userIDs  []int64
	roles    map[int64]*role
	groups   map[int64]*group
	dirty    bool
	hourly   int
	noRoles  bool
	lag      time.Duration
	window   time.Time
	used     int
	faults   []*Fault
	requests map[string]int
}

type client struct {
	secret, scope string
}

type issued struct {
	scope  string
	expiry time.Time
}

// User is a user to add or the state to give one. Unset Status and
// State mean 1 (active, approved).
type User struct {
	Username, Email, Firstname, Lastname string
	Title, Department, Company           string
	ExternalID, Samaccountname           string
	Userprincipalname                    string
	State, Status                        int
	// GroupID is the user's one group, 0 for none.
	GroupID int64
	// RoleIDs are the user's roles.
	RoleIDs          []int64
	CustomAttributes map[string]string
}

type user struct {
	id                   int64
	u                    User
	createdAt, updatedAt time.Time
}

type role struct {
	id   int64
	name string
}

type group struct {
	id              int64
	name, reference string
}

// New makes an emulator. tb receives failures for requests the emulator
// does not understand; it may be nil outside tests. clock nil means
// real time.
func New(tb testing.TB, clock clockwork.Clock) *Server {
	if clock == nil {
		clock = clockwork.NewRealClock()
	}
	return &Server{
		tb: tb, clock: clock, clients: map[string]*client{}, tokens: map[string]issued{},
		nextID: 100000, users: map[int64]*user{}, roles: map[int64]*role{}, groups: map[int64]*group{},
		hourly: 5000, requests: map[string]int{},
	}
}

// Start serves the emulator on loopback until the test ends (or Close).
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

func (s *Server) lock(fn func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	fn()
}

func (s *Server) fail(format string, args ...any) {
	if s.tb != nil {
		s.tb.Helper()
		s.tb.Errorf("onelogintest: "+format, args...)
	}
}

// AddCredential registers an API credential pair with its scope
// (ReadUsers, ReadAll, ...).
func (s *Server) AddCredential(id, secret, scope string) {
	s.lock(func() { s.clients[id] = &client{secret: secret, scope: scope} })
}

// RevokeTokens invalidates every access token issued so far.
func (s *Server) RevokeTokens() { s.lock(func() { clear(s.tokens) }) }

// SetHourlyLimit sets the calls the account may make per hour (default
// 5,000, reference §5.4); the window starts at the first call.
func (s *Server) SetHourlyLimit(n int) { s.lock(func() { s.hourly = n }) }

// SetOmitRoleIDs leaves role_ids out of user records. [U] The
// reference shows role_ids in the v2 list body; this knob models a list
// that does not carry them, which a connector must not read as "no
// roles".
func (s *Server) SetOmitRoleIDs(omit bool) { s.lock(func() { s.noRoles = omit }) }

// SetChangeLag makes a user changed less than d ago invisible to
// listings filtered by updated_since or updated_until. [U] OneLogin
// documents no such lag; the knob models a change that is stamped
// before it can be read (a write still committing, a lagging replica),
// which is what a delta's overlap guards against.
func (s *Server) SetChangeLag(d time.Duration) { s.lock(func() { s.lag = d }) }

// Fault is an injected failure for requests matching Path (exact, or a
// prefix when it ends in "*") and Page (the nth page of a listing, 1
// being the first; any when 0).
type Fault struct {
	Path string
	Page int
	// Status answers with the v1 error envelope; a 429 carries
	// X-RateLimit-Remaining 0 and X-RateLimit-Reset Reset.
	Status int
	Reset  time.Duration
	// Truncate answers 200 with the body cut short of its
	// Content-Length.
	Truncate bool
	// Times is how many requests it hits; 0 means all.
	Times int
	hits  int
}

// Inject adds a fault.
func (s *Server) Inject(f Fault) { s.lock(func() { s.faults = append(s.faults, &f) }) }

// Requests counts requests by pattern ("GET /api/2/users",
// "GET /api/2/users/{id}", "POST /auth/oauth2/v2/token", ...), or all
// for "".
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

func (s *Server) id() int64 {
	s.nextID += 7
	return s.nextID
}

// AddRole adds a role and returns its id.
func (s *Server) AddRole(name string) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	id := s.id()
	s.roles[id] = &role{id: id, name: name}
	return id
}

// AddGroup adds a group and returns its id.
func (s *Server) AddGroup(name string) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	id := s.id()
	s.groups[id] = &group{id: id, name: name}
	return id
}

func normalize(u User) User {
	if u.State == 0 && u.Status == 0 {
		u.State, u.Status = 1, 1
	}
	u.RoleIDs = slices.Clone(u.RoleIDs)
	if u.CustomAttributes != nil {
		m := make(map[string]string, len(u.CustomAttributes))
		for k, v := range u.CustomAttributes {
			m[k] = v
		}
		u.CustomAttributes = m
	}
	return u
}

// AddUser adds a user and returns its id.
func (s *Server) AddUser(u User) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	id := s.id()
	now := s.clock.Now()
	s.users[id] = &user{id: id, u: normalize(u), createdAt: now, updatedAt: now}
	s.dirty = true
	return id
}

// UpdateUser changes a user's attributes, state or status; updated_at
// moves on.
func (s *Server) UpdateUser(id int64, fn func(*User)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	u := s.users[id]
	if u == nil {
		s.fail("UpdateUser: no user %d", id)
		return
	}
	next := normalize(u.u)
	fn(&next)
	u.u = next
	u.updatedAt = s.clock.Now()
}

// SetRoles replaces a user's roles. [U] Whether a role assignment moves
// the user's updated_at is not documented; the emulator leaves it, the
// cautious assumption for a delta.
func (s *Server) SetRoles(id int64, roles ...int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	u := s.users[id]
	if u == nil {
		s.fail("SetRoles: no user %d", id)
		return
	}
	u.u.RoleIDs = slices.Clone(roles)
}

// DeleteUser deletes a user: gone from lists, 404 by id.
func (s *Server) DeleteUser(id int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.users[id] == nil {
		s.fail("DeleteUser: no user %d", id)
	}
	delete(s.users, id)
	s.dirty = true
}

func (s *Server) sortedUsers() []int64 {
	if s.dirty {
		s.userIDs = s.userIDs[:0]
		for id := range s.users {
			s.userIDs = append(s.userIDs, id)
		}
		slices.Sort(s.userIDs)
		s.dirty = false
	}
	return s.userIDs
}

// cursor is what a Before-Cursor/After-Cursor holds: opaque to clients,
// bound to the listing's query.
type cursor struct {
	Query string `json:"q"`
	After int64  `json:"a"`
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
	return c, json.Unmarshal(b, &c) == nil && c.Page > 1
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }
