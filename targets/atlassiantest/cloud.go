package atlassiantest

import (
	"crypto/rand"
	"encoding/hex"
	"io"
	"log/slog"
	"maps"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Cloud emulates one Atlassian Cloud organization with one site, as a
// third party without Atlassian Guard provisions it (reference
// atlassian-sso-and-cloud.md, part B): the Organizations REST API and the
// user-management API on api.atlassian.com (Bearer org API key), and the
// site's Jira REST API v3 (Basic e-mail:API token). It follows the
// reference's emulator checklist (§31): two auth realms, accountId-only
// addressing, hidden e-mail addresses, invite semantics, managed vs
// unmanaged accounts, the suspend / remove / deactivate state machine,
// groups synced from an IdP that cannot be changed, licence limits, 429
// and 503.
//
// The two hosts are two handlers, OrgAPI and Site; serve each on its own
// listener. All methods are safe for concurrent use.
type Cloud struct {
	opts CloudOptions
	now  func() time.Time
	log  *slog.Logger

	mu       sync.Mutex // guards the organization below
	accounts map[string]*cloudAccount
	order    []string // account ids in creation order
	groups   map[string]*cloudGroup
	gorder   []string // group ids in creation order

	knobs knobs
}

// CloudOptions configures a Cloud emulator.
type CloudOptions struct {
	// OrgID and DirectoryID name the organization and its one directory
	// (defaults "org-1" and "dir-1"). "-" in a directory path stands for
	// every directory the key may manage (§26.2).
	OrgID, DirectoryID string
	// CloudID names the site in resource ARIs (default "site-1"): product
	// p is the resource "ari:cloud:p::site/CloudID".
	CloudID string
	// OrgKey is the organization API key (Bearer). OrgKeyScoped makes it
	// a key created "with scopes": the user-management API refuses it
	// with 403 (§23).
	OrgKey       string
	OrgKeyScoped bool
	// SiteEmail and SiteToken are a site admin's Basic credentials for
	// the site's REST API. SiteTokenScoped makes the token a scoped one,
	// which the site URL answers with 401 (§23).
	SiteEmail, SiteToken string
	SiteTokenScoped      bool
	// VerifiedDomains are the org's verified (claimed) e-mail domains:
	// accounts there are managed, all others unmanaged (§22).
	VerifiedDomains []string
	// NoPaidSubscription makes the Organizations API invite answer 402
	// (it needs at least one paid subscription, §26.3).
	NoPaidSubscription bool
	// Seats caps, per resource ARI, the active accounts that hold a role
	// on it directly or through a group; a change beyond it answers
	// ADMIN-UAM-409-3 (§26.5, §26.6).
	Seats map[string]int
	// Groups and Accounts seed the organization.
	Groups   []CloudGroup
	Accounts []CloudAccount
	Now      func() time.Time
	Log      *slog.Logger
}

// CloudRole is an app role on a resource (§22, §26.3).
type CloudRole struct {
	Resource string `json:"resource"`
	Role     string `json:"role"`
}

// CloudGroup is a group as tests see it.
type CloudGroup struct {
	ID   string // generated when empty
	Name string
	// Synced groups come from the org's IdP sync and cannot be changed
	// through the Organizations API (§26.5).
	Synced bool
	// Grants are roles every member holds (product access groups).
	Grants []CloudRole
	// Members are account ids (read-only in views).
	Members []string
}

// CloudAccount is an Atlassian account as tests see it.
type CloudAccount struct {
	AccountID string // generated when empty
	Name      string
	Email     string
	// EmailHidden hides the address from the site's REST API, as the
	// person's privacy settings can (§22); the Organizations API still
	// shows it to org admins.
	EmailHidden bool
	// Managed is derived from VerifiedDomains (read-only).
	Managed bool
	// AccountStatus is active, inactive (deactivated) or closed;
	// MembershipStatus is active, suspended or no_membership (§22).
	// Seeds default to active.
	AccountStatus, MembershipStatus string
	// ManagementSource is invited, synced or "".
	ManagementSource string
	ForDeletion      bool
	// Groups are group names; Roles the directly assigned roles.
	Groups []string
	Roles  []CloudRole
}

type cloudAccount struct {
	id, name, nickname, email string
	emailHidden               bool
	accountStatus, membership string
	source                    string
	forDeletion               bool
	addedToOrg, deactivatedOn time.Time
	groups                    map[string]bool // group ids
	roles                     map[CloudRole]bool
}

type cloudGroup struct {
	id, name, description string
	synced                bool
	grants                []CloudRole
	members               map[string]bool // account ids
}

// NewCloud returns an emulated organization seeded from opts.
func NewCloud(opts CloudOptions) *Cloud {
	if opts.OrgID == "" {
		opts.OrgID = "org-1"
	}
	if opts.DirectoryID == "" {
		opts.DirectoryID = "dir-1"
	}
	if opts.CloudID == "" {
		opts.CloudID = "site-1"
	}
	c := &Cloud{
		opts: opts, now: opts.Now, log: opts.Log,
		accounts: map[string]*cloudAccount{}, groups: map[string]*cloudGroup{},
		knobs: knobs{calls: map[string]int{}},
	}
	if c.now == nil {
		c.now = time.Now
	}
	if c.log == nil {
		c.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	for _, g := range opts.Groups {
		c.AddGroup(g)
	}
	for _, a := range opts.Accounts {
		c.AddAccount(a)
	}
	return c
}

// ProductResource is the ARI of a product on the emulated site, the
// resource the site's products ("jira-software") grant roles on.
func (c *Cloud) ProductResource(product string) string {
	return "ari:cloud:" + product + "::site/" + c.opts.CloudID
}

// OrgID and DirectoryID report the emulated organization's ids.
func (c *Cloud) OrgID() string       { return c.opts.OrgID }
func (c *Cloud) DirectoryID() string { return c.opts.DirectoryID }

func newCloudID(n int) string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	// 24 hex digits, the shape of real accountIds (§22).
	return pad(n, 8) + hex.EncodeToString(b)
}

// AddGroup creates a group (or replaces the one with that name) and
// returns its id.
func (c *Cloud) AddGroup(g CloudGroup) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if old := c.groupByName(g.Name); old != nil {
		c.deleteGroup(old)
	}
	return c.insertGroup(g.ID, g.Name, g.Synced, g.Grants).id
}

func (c *Cloud) insertGroup(id, name string, synced bool, grants []CloudRole) *cloudGroup {
	if id == "" {
		id = "g" + newCloudID(len(c.gorder)+1)
	}
	g := &cloudGroup{id: id, name: name, synced: synced, grants: slices.Clone(grants), members: map[string]bool{}}
	c.groups[id] = g
	c.gorder = append(c.gorder, id)
	return g
}

func (c *Cloud) deleteGroup(g *cloudGroup) {
	for id := range g.members {
		if a := c.accounts[id]; a != nil {
			delete(a.groups, g.id)
		}
	}
	delete(c.groups, g.id)
	c.gorder = slices.DeleteFunc(c.gorder, func(id string) bool { return id == g.id })
}

// AddAccount adds an account (or replaces the one with that e-mail) and
// returns its accountId. Named groups must exist.
func (c *Cloud) AddAccount(a CloudAccount) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if old := c.accountByEmail(a.Email); old != nil {
		c.forget(old)
	}
	na := c.insertAccount(a.AccountID, a.Email)
	na.name, na.emailHidden, na.source, na.forDeletion = a.Name, a.EmailHidden, a.ManagementSource, a.ForDeletion
	if a.AccountStatus != "" {
		na.accountStatus = a.AccountStatus
	}
	if a.MembershipStatus != "" {
		na.membership = a.MembershipStatus
	}
	for _, r := range a.Roles {
		na.roles[r] = true
	}
	for _, name := range a.Groups {
		if g := c.groupByName(name); g != nil {
			g.members[na.id] = true
			na.groups[g.id] = true
		}
	}
	return na.id
}

func (c *Cloud) insertAccount(id, email string) *cloudAccount {
	if id == "" {
		id = newCloudID(len(c.order) + 1)
	}
	local, _, _ := strings.Cut(email, "@")
	a := &cloudAccount{
		id: id, email: email, name: local, nickname: local,
		accountStatus: "active", membership: "active",
		addedToOrg: c.now().UTC(), groups: map[string]bool{}, roles: map[CloudRole]bool{},
	}
	c.accounts[id] = a
	c.order = append(c.order, id)
	return a
}

func (c *Cloud) forget(a *cloudAccount) {
	for gid := range a.groups {
		if g := c.groups[gid]; g != nil {
			delete(g.members, a.id)
		}
	}
	delete(c.accounts, a.id)
	c.order = slices.DeleteFunc(c.order, func(id string) bool { return id == a.id })
}

func (c *Cloud) managed(a *cloudAccount) bool {
	_, domain, _ := strings.Cut(a.email, "@")
	for _, d := range c.opts.VerifiedDomains {
		if strings.EqualFold(d, domain) {
			return true
		}
	}
	return false
}

func (c *Cloud) accountByEmail(email string) *cloudAccount {
	for _, id := range c.order {
		if a := c.accounts[id]; strings.EqualFold(a.email, email) {
			return a
		}
	}
	return nil
}

func (c *Cloud) groupByName(name string) *cloudGroup {
	for _, id := range c.gorder {
		if g := c.groups[id]; strings.EqualFold(g.name, name) {
			return g
		}
	}
	return nil
}

// Account returns the account with that accountId.
func (c *Cloud) Account(id string) (CloudAccount, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	a := c.accounts[id]
	if a == nil {
		return CloudAccount{}, false
	}
	return c.exportAccount(a), true
}

// AccountByEmail returns the account with that e-mail address
// (case-insensitive).
func (c *Cloud) AccountByEmail(email string) (CloudAccount, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	a := c.accountByEmail(email)
	if a == nil {
		return CloudAccount{}, false
	}
	return c.exportAccount(a), true
}

// Accounts returns every account in creation order.
func (c *Cloud) Accounts() []CloudAccount {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]CloudAccount, 0, len(c.order))
	for _, id := range c.order {
		out = append(out, c.exportAccount(c.accounts[id]))
	}
	return out
}

// Group returns the group of that name (case-insensitive).
func (c *Cloud) Group(name string) (CloudGroup, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	g := c.groupByName(name)
	if g == nil {
		return CloudGroup{}, false
	}
	return CloudGroup{ID: g.id, Name: g.name, Synced: g.synced, Grants: slices.Clone(g.grants),
		Members: slices.Sorted(maps.Keys(g.members))}, true
}

// GroupNames returns every group name, ordered case-insensitively.
func (c *Cloud) GroupNames() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for _, id := range c.gorder {
		out = append(out, c.groups[id].name)
	}
	slices.SortFunc(out, func(a, b string) int { return strings.Compare(lower(a), lower(b)) })
	return out
}

func (c *Cloud) exportAccount(a *cloudAccount) CloudAccount {
	out := CloudAccount{
		AccountID: a.id, Name: a.name, Email: a.email, EmailHidden: a.emailHidden, Managed: c.managed(a),
		AccountStatus: a.accountStatus, MembershipStatus: a.membership, ManagementSource: a.source,
		ForDeletion: a.forDeletion, Roles: slices.Collect(maps.Keys(a.roles)),
	}
	for gid := range a.groups {
		out.Groups = append(out.Groups, c.groups[gid].name)
	}
	slices.Sort(out.Groups)
	slices.SortFunc(out.Roles, func(x, y CloudRole) int { return strings.Compare(x.Resource+x.Role, y.Resource+y.Role) })
	return out
}

// SetAccountStatus changes an account the way its owner or Atlassian
// would (closing it, say), outside any API.
func (c *Cloud) SetAccountStatus(id, status string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if a := c.accounts[id]; a != nil {
		a.accountStatus = status
	}
}

// SetOrgKey replaces the organization API key, as an admin who revokes
// or rotates it does; scoped says the new key was created with scopes.
func (c *Cloud) SetOrgKey(key string, scoped bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.opts.OrgKey, c.opts.OrgKeyScoped = key, scoped
}

// SetSeats changes the licence limit of a resource (0 removes it).
func (c *Cloud) SetSeats(resource string, n int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.opts.Seats == nil {
		c.opts.Seats = map[string]int{}
	}
	if n == 0 {
		delete(c.opts.Seats, resource)
		return
	}
	c.opts.Seats[resource] = n
}

// holds lists the resources an account holds a role on, directly or
// through its groups, with extra roles and groups added.
func (c *Cloud) holds(a *cloudAccount, extraRoles []CloudRole, extraGroups []*cloudGroup) map[string]bool {
	out := map[string]bool{}
	for r := range a.roles {
		out[r.Resource] = true
	}
	for _, r := range extraRoles {
		out[r.Resource] = true
	}
	for gid := range a.groups {
		for _, r := range c.groups[gid].grants {
			out[r.Resource] = true
		}
	}
	for _, g := range extraGroups {
		for _, r := range g.grants {
			out[r.Resource] = true
		}
	}
	return out
}

// billable is whether an account takes a seat: suspended and
// deactivated people are not billed (§26.4).
func billable(a *cloudAccount) bool {
	return a.membership == "active" && a.accountStatus == "active"
}

// overLimit says which resource a change would take beyond its seats:
// a (nil for a new account) as it stands, after the change holding the
// extra roles and groups and billable or not as billableAfter says,
// against every other billable holder.
func (c *Cloud) overLimit(a *cloudAccount, billableAfter bool, extraRoles []CloudRole, extraGroups []*cloudGroup) string {
	if !billableAfter {
		return ""
	}
	before := map[string]bool{}
	after := map[string]bool{}
	if a != nil {
		if billable(a) {
			before = c.holds(a, nil, nil)
		}
		after = c.holds(a, extraRoles, extraGroups)
	} else {
		for _, r := range extraRoles {
			after[r.Resource] = true
		}
		for _, g := range extraGroups {
			for _, r := range g.grants {
				after[r.Resource] = true
			}
		}
	}
	for res := range after {
		limit, capped := c.opts.Seats[res]
		if !capped || before[res] {
			continue
		}
		n := 0
		for _, o := range c.accounts {
			if o != a && billable(o) && c.holds(o, nil, nil)[res] {
				n++
			}
		}
		if n >= limit {
			return res
		}
	}
	return ""
}

// knobs are the call counters and fault injections, as on Server.
type knobs struct {
	mu         sync.Mutex
	calls      map[string]int
	reads      int
	writes     int
	latency    time.Duration
	rateN      int
	retryAfter time.Duration
	failN      int
	failStatus int
	down       bool
	hangUp     bool
}

// Calls returns the number of calls per "METHOD pattern", both hosts
// together, including refused ones; unknown paths count under
// "METHOD (unknown)".
func (c *Cloud) Calls() map[string]int {
	c.knobs.mu.Lock()
	defer c.knobs.mu.Unlock()
	return maps.Clone(c.knobs.calls)
}

// ResetCalls zeroes the call counters.
func (c *Cloud) ResetCalls() {
	c.knobs.mu.Lock()
	defer c.knobs.mu.Unlock()
	c.knobs.calls = map[string]int{}
	c.knobs.reads, c.knobs.writes = 0, 0
}

// Reads counts calls that change nothing: GETs and the POST searches of
// the Organizations API (a search is a read sent as a POST, §26.3).
func (c *Cloud) Reads() int {
	c.knobs.mu.Lock()
	defer c.knobs.mu.Unlock()
	return c.knobs.reads
}

// Writes counts every other call.
func (c *Cloud) Writes() int {
	c.knobs.mu.Lock()
	defer c.knobs.mu.Unlock()
	return c.knobs.writes
}

// SetLatency adds d before every call is answered.
func (c *Cloud) SetLatency(d time.Duration) {
	c.knobs.mu.Lock()
	defer c.knobs.mu.Unlock()
	c.knobs.latency = d
}

// RateLimit makes the next n calls answer 429 with Retry-After (whole
// seconds, rounded up), §28.
func (c *Cloud) RateLimit(n int, retryAfter time.Duration) {
	c.knobs.mu.Lock()
	defer c.knobs.mu.Unlock()
	c.knobs.rateN, c.knobs.retryAfter = n, retryAfter
}

// FailNext makes the next n calls answer status with the host's error
// envelope.
func (c *Cloud) FailNext(n, status int) {
	c.knobs.mu.Lock()
	defer c.knobs.mu.Unlock()
	c.knobs.failN, c.knobs.failStatus = n, status
}

// SetDown makes every call answer 503 with Retry-After until
// SetDown(false), as Atlassian's edge does during an incident (§28).
func (c *Cloud) SetDown(down bool) {
	c.knobs.mu.Lock()
	defer c.knobs.mu.Unlock()
	c.knobs.down = down
}

// SetHangUp closes every call's connection without an answer.
func (c *Cloud) SetHangUp(hangUp bool) {
	c.knobs.mu.Lock()
	defer c.knobs.mu.Unlock()
	c.knobs.hangUp = hangUp
}

func (k *knobs) enter(method, pattern string, read bool) fault {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.calls[method+" "+pattern]++
	if read {
		k.reads++
	} else {
		k.writes++
	}
	f := fault{latency: k.latency, hangUp: k.hangUp}
	switch {
	case k.hangUp:
	case k.down:
		f.status = http.StatusServiceUnavailable
	case k.failN > 0:
		k.failN--
		f.status = k.failStatus
	case k.rateN > 0:
		k.rateN--
		f.rateLimit, f.retryAfter = true, k.retryAfter
	}
	return f
}

// cloudHost is one of the two hosts: its mux, how it authenticates and
// how it writes errors.
type cloudHost struct {
	c    *Cloud
	name string
	mux  *http.ServeMux
	auth func(w http.ResponseWriter, r *http.Request) bool
	fail func(w http.ResponseWriter, status int, code, msg string)
}

func (h *cloudHost) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	_, pattern := h.mux.Handler(r)
	if pattern == "" {
		pattern = "(unknown)"
	} else {
		_, pattern, _ = strings.Cut(pattern, " ")
	}
	read := r.Method == http.MethodGet || r.Method == http.MethodHead || strings.HasSuffix(pattern, "/search")
	f := h.c.knobs.enter(r.Method, pattern, read)
	h.c.log.Debug("atlassiantest: cloud call", "host", h.name, "method", r.Method, "pattern", pattern)
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
		hangUp(w)
		return
	case f.status != 0:
		if f.status == http.StatusServiceUnavailable {
			// Atlassian's edge names when to come back (§28).
			w.Header().Set("Retry-After", "1")
		}
		h.fail(w, f.status, "", http.StatusText(f.status)+" (emulated failure)")
		return
	case f.rateLimit:
		w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(f.retryAfter.Seconds()))))
		if h.name == "site" {
			// Jira Cloud's rate-limit headers (§28); the Organizations
			// API's header names are not known [U], so it sends only
			// Retry-After.
			hd := w.Header()
			hd.Set("X-RateLimit-Limit", strconv.Itoa(rateBucket))
			hd.Set("X-RateLimit-Remaining", "0")
			hd.Set("X-RateLimit-Reset", h.c.now().UTC().Add(f.retryAfter).Format("2006-01-02T15:04Z"))
			hd.Set("RateLimit-Reason", "jira-burst-based")
		}
		h.fail(w, http.StatusTooManyRequests, "", "Too many requests; retry after the Retry-After delay")
		return
	}
	if !h.auth(w, r) {
		return
	}
	if pattern == "(unknown)" {
		h.fail(w, http.StatusNotFound, "", "No resource matches "+r.Method+" "+r.URL.Path)
		return
	}
	h.mux.ServeHTTP(w, r)
}

func hangUp(w http.ResponseWriter) {
	hj, ok := w.(http.Hijacker)
	if !ok {
		panic(http.ErrAbortHandler)
	}
	conn, _, err := hj.Hijack()
	if err != nil {
		panic(http.ErrAbortHandler)
	}
	conn.Close()
}

// CloudSite is the Kind the contract suite's name-addressed view of a
// Cloud emulator reports (targettest).
const CloudSite Kind = "cloud"
