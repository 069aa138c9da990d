// Package googletest is an in-memory Google Workspace for tests: the
// OAuth 2.0 token endpoint a service account with domain-wide delegation
// calls (the JWT bearer grant) and the Admin SDK Directory API calls a
// directory sync makes (users.list, users.get, groups.list with and
// without userKey, members.list with includeDerivedMembership,
// members.hasMember), behaving as /work/shared/reference/directories.md
// §4 describes: customer=my_customer, maxResults limits (400 above),
// opaque nextPageToken/pageToken paging bound to the query, projection
// with customFieldMask, the fields partial response, showDeleted, a
// query subset served from a search index that lags by a configurable
// time, the per-user quota answered as 403 userRateLimitExceeded, the
// concurrent-request limit as 403 quotaExceeded, Google's error
// envelope with errors[].reason, and injectable faults.
//
// Where the reference marks a behaviour unverified, the emulator picks
// one and says so: the exact error messages, the token endpoint's
// invalid_grant texts, groups.list with userKey listing direct
// memberships only (and accepting a group's e-mail, as GAM's group tree
// relies on), derived membership listing every nested entry once.
//
// A request the emulator does not understand fails the test.
package googletest

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
)

// Scopes of the Directory API (reference §4.1).
const (
	ScopeUserReadonly        = "https://www.googleapis.com/auth/admin.directory.user.readonly"
	ScopeUser                = "https://www.googleapis.com/auth/admin.directory.user"
	ScopeGroupReadonly       = "https://www.googleapis.com/auth/admin.directory.group.readonly"
	ScopeGroup               = "https://www.googleapis.com/auth/admin.directory.group"
	ScopeGroupMemberReadonly = "https://www.googleapis.com/auth/admin.directory.group.member.readonly"
)

// CustomerID is the emulated account's customer ID (what my_customer
// stands for).
const CustomerID = "C01abc234"

// Server is the emulator. Methods are safe for concurrent use.
type Server struct {
	tb    testing.TB
	clock clockwork.Clock
	// URL serves both the token endpoint (URL + "/token") and the API
	// (URL + "/admin/directory/v1/...") once started.
	URL string
	hs  *httptest.Server

	mu            sync.Mutex
	accounts      map[string]*serviceAccount // by client_email
	delegations   map[string]map[string]bool // client_id → scopes granted
	tokens        map[string]issued
	tokenLifetime time.Duration

	users    map[string]*user
	userIDs  []string // sorted, rebuilt when dirty
	groups   map[string]*group
	groupIDs []string
	dirty    bool

	indexLag    time.Duration
	quota       int // queries per minute per impersonated user
	windows     map[string]*window
	concurrency chan struct{}
	faults      []*Fault
	requests    map[string]int
}

type serviceAccount struct {
	email, clientID, keyID string
	key                    *rsa.PublicKey
}

type issued struct {
	sub    string
	scopes map[string]bool
	expiry time.Time
}

type window struct {
	start time.Time
	used  int
}

// User is a user to add or the state to give one. Extra holds further
// fields under their API names (organizations, phones, relations, ...).
type User struct {
	PrimaryEmail     string
	GivenName        string
	FamilyName       string
	Suspended        bool
	SuspensionReason string // ADMIN when empty and Suspended
	Archived         bool
	// OrgUnitPath defaults to "/".
	OrgUnitPath string
	IsAdmin     bool
	Aliases     []string
	ExternalIDs []ExternalID
	// CustomSchemas: schema → field → value.
	CustomSchemas map[string]map[string]any
	Extra         map[string]any
}

// ExternalID is one entry of a user's externalIds.
type ExternalID struct {
	Type       string // account, custom, customer, login_id, network, organization
	CustomType string // with Type custom
	Value      string
}

// snapshot is a user's state from one time on: the search index serves
// the latest one older than the lag.
type snapshot struct {
	at      time.Time
	u       User
	deleted bool
}

type user struct {
	id       string
	created  time.Time
	history  []snapshot // the last is the current state
	memberOf map[string]bool
}

func (u *user) now() snapshot { return u.history[len(u.history)-1] }

// Group is a group to add.
type Group struct {
	Email       string
	Name        string
	Description string
	Aliases     []string
}

type group struct {
	id string
	Group
	// members: member id → USER, GROUP or CUSTOMER.
	members  map[string]string
	memberOf map[string]bool
}

// New makes an emulator. tb receives failures for requests the emulator
// does not understand; it may be nil outside tests (a benchmark's
// emulator process). clock nil means real time.
func New(tb testing.TB, clock clockwork.Clock) *Server {
	if clock == nil {
		clock = clockwork.NewRealClock()
	}
	return &Server{
		tb: tb, clock: clock,
		accounts: map[string]*serviceAccount{}, delegations: map[string]map[string]bool{},
		tokens: map[string]issued{}, tokenLifetime: 3599 * time.Second,
		users: map[string]*user{}, groups: map[string]*group{},
		quota: 2400, windows: map[string]*window{}, requests: map[string]int{},
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
		s.tb.Errorf("googletest: "+format, args...)
	}
}

// --- service accounts ----------------------------------------------------

// NewServiceAccount creates a service account with a fresh RSA key and
// returns its JSON key file, shaped as Google's (type, project_id,
// private_key_id, private_key, client_email, client_id, token_uri).
func (s *Server) NewServiceAccount(name string) (keyJSON []byte, clientID string) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		s.fail("NewServiceAccount: %v", err)
		return nil, ""
	}
	der, _ := x509.MarshalPKCS8PrivateKey(key)
	kid := randomHex(20)
	n, _ := rand.Int(rand.Reader, big.NewInt(1e15))
	clientID = fmt.Sprintf("1%020d", n)
	sa := &serviceAccount{email: name + "@usher-test.iam.gserviceaccount.com", clientID: clientID, keyID: kid, key: &key.PublicKey}
	s.lock(func() { s.accounts[sa.email] = sa })
	keyJSON, _ = json.MarshalIndent(map[string]string{
		"type": "service_account", "project_id": "usher-test", "private_key_id": kid,
		"private_key":  string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})),
		"client_email": sa.email, "client_id": clientID,
		"auth_uri":  "https://accounts.google.com/o/oauth2/auth",
		"token_uri": "https://oauth2.googleapis.com/token",
	}, "", "  ")
	return keyJSON, clientID
}

// Delegate grants the service account's client ID these scopes by
// domain-wide delegation (Admin console → Security → API controls),
// replacing any earlier grant.
func (s *Server) Delegate(clientID string, scopes ...string) {
	s.lock(func() { s.delegations[clientID] = set(scopes...) })
}

// SetTokenLifetime sets expires_in of issued tokens (default 3599s).
func (s *Server) SetTokenLifetime(d time.Duration) { s.lock(func() { s.tokenLifetime = d }) }

// RevokeTokens invalidates every access token issued so far.
func (s *Server) RevokeTokens() { s.lock(func() { clear(s.tokens) }) }

// --- knobs -------------------------------------------------------------

// SetIndexLag makes query see users as they were d ago (reference §4.2:
// most updates within an hour, up to 36 hours).
func (s *Server) SetIndexLag(d time.Duration) { s.lock(func() { s.indexLag = d }) }

// SetQuota sets the queries allowed per minute per impersonated user
// (default 2,400, reference §4.4); beyond it calls answer 403
// userRateLimitExceeded until the minute is over.
func (s *Server) SetQuota(perMinute int) { s.lock(func() { s.quota = perMinute }) }

// SetConcurrencyLimit makes requests beyond n in flight at once answer
// 403 quotaExceeded.
func (s *Server) SetConcurrencyLimit(n int) {
	s.lock(func() { s.concurrency = make(chan struct{}, n) })
}

// Fault is an injected failure for requests matching Path (exact, or a
// prefix when it ends in "*") and Page (the nth page of a listing, 1
// being the first; any when 0).
type Fault struct {
	Path string
	Page int
	// Status and Reason make an error answer in Google's envelope
	// (Reason defaults by status: 403 userRateLimitExceeded, 429
	// rateLimitExceeded, 5xx backendError).
	Status int
	Reason string
	// For keeps answering so until this long after the fault first hit
	// (a quota window), whatever Times says.
	For time.Duration
	// Truncate answers 200 with the real body cut short of its
	// Content-Length.
	Truncate bool
	// Times is how many requests it hits; 0 means all.
	Times int
	hits  int
	first time.Time
}

// Inject adds a fault.
func (s *Server) Inject(f Fault) { s.lock(func() { s.faults = append(s.faults, &f) }) }

// Requests counts requests by pattern ("GET /admin/directory/v1/users",
// "GET /admin/directory/v1/groups/{key}/members", "POST /token", ...),
// or all for "".
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

func randomHex(n int) string {
	b := make([]byte, (n+1)/2)
	rand.Read(b)
	return fmt.Sprintf("%x", b)[:n]
}

// newUserID is a 21-digit numeric id, as Google's.
func newUserID() string {
	n, _ := rand.Int(rand.Reader, new(big.Int).Exp(big.NewInt(10), big.NewInt(20), nil))
	return fmt.Sprintf("1%020d", n)
}

const groupIDChars = "0123456789abcdefghijklmnopqrstuvwxyz"

// newGroupID is a 15-character id starting 0, as Google's group ids.
func newGroupID() string {
	b := make([]byte, 15)
	b[0] = '0'
	for i := 1; i < len(b); i++ {
		n, _ := rand.Int(rand.Reader, big.NewInt(int64(len(groupIDChars))))
		b[i] = groupIDChars[n.Int64()]
	}
	return string(b)
}

func (u User) normalized() User {
	if u.OrgUnitPath == "" {
		u.OrgUnitPath = "/"
	}
	if u.Suspended && u.SuspensionReason == "" {
		u.SuspensionReason = "ADMIN"
	}
	if !u.Suspended {
		u.SuspensionReason = ""
	}
	u.Aliases = slices.Clone(u.Aliases)
	u.ExternalIDs = slices.Clone(u.ExternalIDs)
	if u.CustomSchemas != nil {
		cs := make(map[string]map[string]any, len(u.CustomSchemas))
		for k, v := range u.CustomSchemas {
			cs[k] = normalize(v).(map[string]any)
		}
		u.CustomSchemas = cs
	}
	if u.Extra != nil {
		u.Extra = normalize(u.Extra).(map[string]any)
	}
	return u
}

// normalize is v as JSON decodes it.
func normalize(v any) any {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("googletest: value %T: %v", v, err))
	}
	var out any
	_ = json.Unmarshal(b, &out)
	return out
}

// AddUser adds a user and returns its id.
func (s *Server) AddUser(u User) string {
	id := newUserID()
	now := s.clock.Now()
	s.lock(func() {
		if s.keyTaken(u.PrimaryEmail) {
			s.fail("AddUser: %s is taken", u.PrimaryEmail)
		}
		s.users[id] = &user{id: id, created: now, memberOf: map[string]bool{},
			history: []snapshot{{at: now, u: u.normalized()}}}
		s.dirty = true
	})
	return id
}

// UpdateUser changes a user: fn gets the current state to modify.
func (s *Server) UpdateUser(id string, fn func(*User)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	u := s.users[id]
	if u == nil || u.now().deleted {
		s.fail("UpdateUser: no user %s", id)
		return
	}
	next := u.now().u.normalized()
	fn(&next)
	u.history = append(u.history, snapshot{at: s.clock.Now(), u: next.normalized()})
}

// DeleteUser deletes a user: gone from lists and lookups, listed with
// showDeleted=true and deletionTime, removed from every group.
func (s *Server) DeleteUser(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	u := s.users[id]
	if u == nil || u.now().deleted {
		s.fail("DeleteUser: no user %s", id)
		return
	}
	u.history = append(u.history, snapshot{at: s.clock.Now(), u: u.now().u, deleted: true})
	for g := range u.memberOf {
		delete(s.groups[g].members, id)
	}
	u.memberOf = map[string]bool{}
}

// AddGroup adds a group and returns its id.
func (s *Server) AddGroup(g Group) string {
	id := newGroupID()
	s.lock(func() {
		if s.keyTaken(g.Email) {
			s.fail("AddGroup: %s is taken", g.Email)
		}
		s.groups[id] = &group{id: id, Group: g, members: map[string]string{}, memberOf: map[string]bool{}}
		s.dirty = true
	})
	return id
}

// AddMember makes a user or a group (by id) a direct member of a group;
// memberID CustomerID adds "everyone in the account" (type CUSTOMER).
func (s *Server) AddMember(groupID, memberID string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	g := s.groups[groupID]
	if g == nil {
		s.fail("AddMember: no group %s", groupID)
		return
	}
	switch {
	case memberID == CustomerID:
		g.members[memberID] = "CUSTOMER"
	case s.users[memberID] != nil && !s.users[memberID].now().deleted:
		g.members[memberID] = "USER"
		s.users[memberID].memberOf[groupID] = true
	case s.groups[memberID] != nil && memberID != groupID:
		g.members[memberID] = "GROUP"
		s.groups[memberID].memberOf[groupID] = true
	default:
		s.fail("AddMember(%s, %s): no such member", groupID, memberID)
	}
}

// RemoveMember removes a direct member.
func (s *Server) RemoveMember(groupID, memberID string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	g := s.groups[groupID]
	if g == nil {
		s.fail("RemoveMember: no group %s", groupID)
		return
	}
	delete(g.members, memberID)
	if u := s.users[memberID]; u != nil {
		delete(u.memberOf, groupID)
	}
	if sub := s.groups[memberID]; sub != nil {
		delete(sub.memberOf, groupID)
	}
}

// keyTaken: an e-mail is unique across users, groups and aliases.
func (s *Server) keyTaken(email string) bool {
	return s.findUser(email) != nil || s.findGroup(email) != nil
}

// findUser resolves a userKey: id, primary e-mail or alias (e-mails are
// case-insensitive). Deleted users are not found.
func (s *Server) findUser(key string) *user {
	if u := s.users[key]; u != nil {
		if u.now().deleted {
			return nil
		}
		return u
	}
	if !strings.Contains(key, "@") {
		return nil
	}
	for _, u := range s.users {
		sn := u.now()
		if sn.deleted {
			continue
		}
		if strings.EqualFold(sn.u.PrimaryEmail, key) || slices.ContainsFunc(sn.u.Aliases, func(a string) bool { return strings.EqualFold(a, key) }) {
			return u
		}
	}
	return nil
}

// findGroup resolves a groupKey: id, e-mail or alias.
func (s *Server) findGroup(key string) *group {
	if g := s.groups[key]; g != nil {
		return g
	}
	if !strings.Contains(key, "@") {
		return nil
	}
	for _, g := range s.groups {
		if strings.EqualFold(g.Email, key) || slices.ContainsFunc(g.Aliases, func(a string) bool { return strings.EqualFold(a, key) }) {
			return g
		}
	}
	return nil
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

// cursor is what a pageToken holds: opaque to clients, bound to the
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
	return c, json.Unmarshal(b, &c) == nil && c.Page > 1
}

func set(names ...string) map[string]bool {
	m := make(map[string]bool, len(names))
	for _, n := range names {
		m[n] = true
	}
	return m
}
