// Package atlassiantest owns an in-memory emulator of the user and group
// REST APIs of Jira, Confluence, Bitbucket and Crowd (Data Center /
// Server), built to the facts in shared/reference/atlassian-rest.md:
// paths, parameters, JSON field names, status codes, each product's error
// envelope and paging style, and the idempotency quirks. Adapters in
// targets/* are tested against it, and `usher demo` puts it behind the
// proxy, where its non-REST pages show who the identity header says the
// visitor is.
//
// A Server is an http.Handler without a listener of its own; wrap it in
// httptest.NewServer or any http.Server. All methods are safe for
// concurrent use, including the fault knobs while requests are served.
package atlassiantest

import (
	"io"
	"log/slog"
	"maps"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Kind picks the product the Server emulates.
type Kind string

const (
	Jira       Kind = "jira"
	Confluence Kind = "confluence"
	Bitbucket  Kind = "bitbucket"
	Crowd      Kind = "crowd"
)

// Options configures a Server. Zero values give a usable server that
// nobody can authenticate against.
type Options struct {
	// AdminUser and AdminPassword are the Basic credentials of the global
	// administrator (Jira, Confluence, Bitbucket). The admin is not a
	// directory user.
	AdminUser, AdminPassword string
	// Token is the administrator's personal access token, accepted as
	// "Authorization: Bearer" (and, for Bitbucket only, as the Basic
	// password). Bitbucket refuses it on the admin endpoints (401).
	// Empty disables token auth.
	Token string
	// CrowdApp and CrowdAppPassword are the Crowd application credentials
	// (Crowd authenticates applications, not users).
	CrowdApp, CrowdAppPassword string
	// IdentityHeader names the trusted header the demo page reads;
	// default X-Remote-User.
	IdentityHeader string
	// LicenceGroups are the groups that grant a seat: Jira application
	// access, Confluence "can use", Bitbucket LICENSED_USER. Defaults:
	// jira-software-users, confluence-users, stash-users; none for Crowd.
	// They are created at start.
	LicenceGroups []string
	// DefaultGroup receives users created through the REST API (Jira
	// default application access, Confluence default group, Bitbucket
	// addToDefaultGroup). Defaults to the first licence group; "-" means
	// none. Crowd has none.
	DefaultGroup string
	// Seats caps licensed users (0 = unlimited): Confluence create
	// answers 402 and Bitbucket 403 when a new seat would exceed it.
	Seats int
	Now   func() time.Time
	Log   *slog.Logger
	// Users and Groups seed the directory. Groups named by users are
	// created as needed.
	Users  []User
	Groups []string
}

// User is a directory user as the tests see it.
type User struct {
	Name string
	// Key is the Jira key, Confluence userKey, Crowd key, or Bitbucket
	// numeric id; generated when empty.
	Key string
	// Slug is Bitbucket's URL slug (read-only, derived from Name).
	Slug        string
	DisplayName string
	Email       string
	Active      bool
	// Password lets a seeded user call the REST API as a non-admin.
	Password  string
	Groups    []string
	LastLogin time.Time
	// Attributes are Jira user properties (string values; other JSON
	// values as raw JSON text) or Crowd user attributes (first value).
	Attributes map[string]string
	// Licensed reports whether the user takes a seat (read-only).
	Licensed bool
}

// Server emulates one product. Create it with New.
type Server struct {
	kind          Kind
	opts          Options
	now           func() time.Time
	log           *slog.Logger
	header        string
	licenceGroups []string
	defaultGroup  string
	mux           *http.ServeMux

	mu       sync.Mutex // guards the directory below
	users    map[string]*user
	byKey    map[string]string
	bySlug   map[string]string
	userIdx  *index
	groups   map[string]*group
	groupIdx *index
	nextID   int
	memo     map[string][]string // derived lists, valid for memoGen
	memoGen  int64
	sso      *ssoState // the built-in OIDC client, when enabled (oidcsso.go)

	// gen changes whenever the directory may have changed; it is bumped
	// before and after every REST write, so a list derived while a write
	// was under way is never reused after it.
	gen atomic.Int64

	fmu        sync.Mutex // guards counters and fault knobs
	calls      map[string]int
	reads      int
	writes     int
	latency    time.Duration
	rateN      int
	retryAfter time.Duration
	failN      int
	failStatus int
	down       bool
	readOnly   bool
	hangUp     bool
}

// New returns a Server emulating kind, seeded from opts.
func New(kind Kind, opts Options) *Server {
	s := &Server{
		kind:     kind,
		opts:     opts,
		now:      opts.Now,
		log:      opts.Log,
		header:   opts.IdentityHeader,
		users:    map[string]*user{},
		byKey:    map[string]string{},
		bySlug:   map[string]string{},
		userIdx:  newIndex(),
		groups:   map[string]*group{},
		groupIdx: newIndex(),
		calls:    map[string]int{},
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.log == nil {
		s.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if s.header == "" {
		s.header = "X-Remote-User"
	}
	s.licenceGroups = opts.LicenceGroups
	if s.licenceGroups == nil {
		switch kind {
		case Jira:
			s.licenceGroups = []string{"jira-software-users"}
		case Confluence:
			s.licenceGroups = []string{"confluence-users"}
		case Bitbucket:
			s.licenceGroups = []string{"stash-users"}
		}
	}
	switch {
	case kind == Crowd || opts.DefaultGroup == "-":
	case opts.DefaultGroup != "":
		s.defaultGroup = opts.DefaultGroup
	case len(s.licenceGroups) > 0:
		s.defaultGroup = s.licenceGroups[0]
	}
	for _, g := range s.licenceGroups {
		grp := s.ensureGroup(g)
		if kind == Bitbucket {
			grp.perm = "LICENSED_USER"
		}
	}
	if s.defaultGroup != "" {
		s.ensureGroup(s.defaultGroup)
	}
	for _, g := range opts.Groups {
		s.ensureGroup(g)
	}
	for _, u := range opts.Users {
		s.AddUser(u)
	}
	s.mux = http.NewServeMux()
	switch kind {
	case Jira:
		s.routeJira()
	case Confluence:
		s.routeConfluence()
	case Bitbucket:
		s.routeBitbucket()
	case Crowd:
		s.routeCrowd()
	}
	return s
}

// Kind reports the emulated product.
func (s *Server) Kind() Kind { return s.kind }

// AddUser adds u, or replaces the user of that name (groups included),
// creating named groups as needed. Identifiers are generated when empty.
func (s *Server) AddUser(u User) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.gen.Add(1)
	if old := s.lookup(u.Name); old != nil {
		s.deleteUser(old)
	}
	nu := &user{
		name: u.Name, key: u.Key, displayName: u.DisplayName, email: u.Email,
		active: u.Active, password: u.Password, lastLogin: u.LastLogin,
	}
	nu.first, nu.last = splitName(u.DisplayName)
	if s.kind == Bitbucket {
		nu.key = "" // the numeric id is the key
	}
	s.insert(nu)
	for k, v := range u.Attributes {
		switch s.kind {
		case Crowd:
			nu.attrs[k] = []string{v}
		default:
			nu.props[k] = jsonString(v)
		}
	}
	for _, g := range u.Groups {
		s.join(nu, s.ensureGroup(g))
	}
}

// AddGroup creates a group; an existing one is left alone.
func (s *Server) AddGroup(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.gen.Add(1)
	s.ensureGroup(name)
}

// SetGroupPermission gives group (created when missing) the Bitbucket
// global permission perm (LICENSED_USER, PROJECT_CREATE, ADMIN,
// SYS_ADMIN; "" revokes it), as an admin would on the global permissions
// page. Every member then holds a seat (reference §5.5).
func (s *Server) SetGroupPermission(group, perm string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.gen.Add(1)
	s.ensureGroup(group).perm = perm
}

// User returns the named user (case-insensitive).
func (s *Server) User(name string) (User, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	u := s.lookup(name)
	if u == nil {
		return User{}, false
	}
	return s.export(u), true
}

// Users returns every user, ordered by lower-cased name.
func (s *Server) Users() []User {
	s.mu.Lock()
	defer s.mu.Unlock()
	keys := s.userIdx.keys()
	out := make([]User, 0, len(keys))
	for _, k := range keys {
		out = append(out, s.export(s.users[k]))
	}
	return out
}

// GroupMembers returns the direct members' names, ordered; nil when the
// group does not exist.
func (s *Server) GroupMembers(group string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	g := s.group(group)
	if g == nil {
		return nil
	}
	keys := g.members.keys()
	out := make([]string, 0, len(keys))
	for _, k := range keys {
		out = append(out, s.users[k].name)
	}
	return out
}

// Groups returns every group name, ordered case-insensitively.
func (s *Server) Groups() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, k := range s.groupIdx.keys() {
		out = append(out, s.groups[k].name)
	}
	return out
}

func (s *Server) export(u *user) User {
	out := User{
		Name: u.name, Key: u.key, Slug: u.slug, DisplayName: u.displayName,
		Email: u.email, Active: u.active, Password: u.password,
		Groups: s.groupNames(u), LastLogin: u.lastLogin, Licensed: s.licensed(u),
	}
	if s.kind == Bitbucket {
		out.Key = itoa(u.id)
	} else {
		out.Slug = ""
	}
	if len(u.props)+len(u.attrs) > 0 {
		out.Attributes = map[string]string{}
	}
	for k, v := range u.props {
		out.Attributes[k] = unquote(v)
	}
	for k, v := range u.attrs {
		if len(v) > 0 {
			out.Attributes[k] = v[0]
		}
	}
	return out
}

// Calls returns the number of REST calls per "METHOD path-pattern" (for
// example "POST /rest/api/2/group/user"), including refused ones. Calls
// to unknown REST paths count under "METHOD (unknown)".
func (s *Server) Calls() map[string]int {
	s.fmu.Lock()
	defer s.fmu.Unlock()
	return maps.Clone(s.calls)
}

// ResetCalls zeroes the call counters.
func (s *Server) ResetCalls() {
	s.fmu.Lock()
	defer s.fmu.Unlock()
	s.calls = map[string]int{}
	s.reads, s.writes = 0, 0
}

// Reads counts GET (and HEAD) REST calls since the last reset.
func (s *Server) Reads() int {
	s.fmu.Lock()
	defer s.fmu.Unlock()
	return s.reads
}

// Writes counts non-GET REST calls since the last reset.
func (s *Server) Writes() int {
	s.fmu.Lock()
	defer s.fmu.Unlock()
	return s.writes
}

// SetLatency adds d before every REST call is answered (the wait ends
// early when the client gives up).
func (s *Server) SetLatency(d time.Duration) {
	s.fmu.Lock()
	defer s.fmu.Unlock()
	s.latency = d
}

// RateLimit makes the next n REST calls answer 429 with Retry-After
// (whole seconds, rounded up) and the X-RateLimit-* headers of the
// reference's §7.
func (s *Server) RateLimit(n int, retryAfter time.Duration) {
	s.fmu.Lock()
	defer s.fmu.Unlock()
	s.rateN, s.retryAfter = n, retryAfter
}

// FailNext makes the next n REST calls answer status (500, 502, 503, …)
// with the product's error body.
func (s *Server) FailNext(n int, status int) {
	s.fmu.Lock()
	defer s.fmu.Unlock()
	s.failN, s.failStatus = n, status
}

// SetDown simulates an outage behind a front proxy: every REST call
// answers 503 with the product's error body until SetDown(false).
func (s *Server) SetDown(down bool) {
	s.fmu.Lock()
	defer s.fmu.Unlock()
	s.down = down
}

// SetReadOnly simulates an app that answers reads but refuses every write
// with 503 (Jira's and Confluence's read-only mode during maintenance).
func (s *Server) SetReadOnly(readOnly bool) {
	s.fmu.Lock()
	defer s.fmu.Unlock()
	s.readOnly = readOnly
}

// SetHangUp simulates a dead app: every REST call has its connection
// closed without an answer, so clients see a transport error.
func (s *Server) SetHangUp(hangUp bool) {
	s.fmu.Lock()
	defer s.fmu.Unlock()
	s.hangUp = hangUp
}

// fault is what the knobs decide for one call.
type fault struct {
	latency    time.Duration
	hangUp     bool
	status     int // 503 for down, or the FailNext status
	rateLimit  bool
	retryAfter time.Duration
}

// enter counts the call and consumes the fault knobs, in the order a
// client would meet them: dead host, outage, injected failure, rate
// limiter; the app's own authentication comes after them.
func (s *Server) enter(method, pattern string) fault {
	s.fmu.Lock()
	defer s.fmu.Unlock()
	s.calls[method+" "+pattern]++
	if method == http.MethodGet || method == http.MethodHead {
		s.reads++
	} else {
		s.writes++
	}
	f := fault{latency: s.latency, hangUp: s.hangUp}
	switch {
	case s.hangUp:
	case s.down, s.readOnly && method != http.MethodGet && method != http.MethodHead:
		f.status = http.StatusServiceUnavailable
	case s.failN > 0:
		s.failN--
		f.status = s.failStatus
	case s.rateN > 0:
		s.rateN--
		f.rateLimit, f.retryAfter = true, s.retryAfter
	}
	return f
}

// ServeHTTP routes /rest/... to the product's API and everything else to
// the identity page.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if st := s.ssoConfig(); st != nil && s.serveSSO(w, r, st) {
		return
	}
	if !strings.HasPrefix(r.URL.Path, "/rest/") {
		s.servePage(w, r)
		return
	}
	if p := s.unalias(r.URL.Path); p != r.URL.Path {
		r.URL.Path, r.URL.RawPath = p, ""
	}
	_, pattern := s.mux.Handler(r)
	if pattern == "" {
		pattern = "(unknown)"
	} else {
		_, pattern, _ = strings.Cut(pattern, " ")
	}
	f := s.enter(r.Method, pattern)
	s.log.Debug("atlassiantest: call", "app", s.kind, "method", r.Method, "pattern", pattern)
	if f.latency > 0 {
		t := time.NewTimer(f.latency)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			return
		}
	}
	switch {
	case f.hangUp:
		s.hangUpConn(w)
		return
	case f.status != 0:
		s.fail(w, f.status, "", http.StatusText(f.status)+" (emulated failure)")
		return
	case f.rateLimit:
		s.tooMany(w, f.retryAfter)
		return
	}
	c, ok := s.authenticate(w, r)
	if !ok {
		return
	}
	if pattern == "(unknown)" {
		s.fail(w, http.StatusNotFound, "", "No resource matches "+r.Method+" "+r.URL.Path)
		return
	}
	write := r.Method != http.MethodGet && r.Method != http.MethodHead
	if write {
		s.gen.Add(1)
		defer s.gen.Add(1)
	}
	s.mux.ServeHTTP(w, r.WithContext(withCaller(r.Context(), c)))
}

// unalias maps the "latest" aliases onto the versioned paths they stand
// for, so calls count under one pattern.
func (s *Server) unalias(path string) string {
	var alias, to string
	switch s.kind {
	case Jira:
		alias, to = "/rest/api/latest/", jiraAPI+"/"
	case Bitbucket:
		alias, to = "/rest/api/latest/", bbAPI+"/"
	case Crowd:
		alias, to = "/rest/usermanagement/latest/", crowdAPI+"/"
	default:
		return path
	}
	if rest, ok := strings.CutPrefix(path, alias); ok {
		return to + rest
	}
	return path
}

func (s *Server) hangUpConn(w http.ResponseWriter) {
	hj, ok := w.(http.Hijacker)
	if !ok {
		// HTTP/2 cannot be hijacked; abort the stream instead.
		panic(http.ErrAbortHandler)
	}
	conn, _, err := hj.Hijack()
	if err != nil {
		panic(http.ErrAbortHandler)
	}
	conn.Close()
}

// route registers h for pattern ("METHOD /path").
func (s *Server) route(pattern string, h http.HandlerFunc) { s.mux.HandleFunc(pattern, h) }

// sortedKeys is a helper for deterministic map output.
func sortedKeys[V any](m map[string]V) []string {
	return slices.Sorted(maps.Keys(m))
}
