package atlassiantest

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
)

// Bitbucket Data Center /rest/api/1.0 (reference §5). There is no
// deactivation resource: PUT/POST on anything like it answers 404, and
// "active" is read-only. Seats follow LICENSED_USER (or a higher global
// permission) held directly or through a group.

const bbAPI = "/rest/api/1.0"

// Exception names: AuthorisationException, NoSuchRepositoryException and
// ArgumentValidationException are [S]; the user-management ones are [U],
// named after Bitbucket's public Java API.
const (
	bbNoSuchUser  = "com.atlassian.bitbucket.user.NoSuchUserException"
	bbNoSuchGroup = "com.atlassian.bitbucket.user.NoSuchGroupException"
	bbDuplicate   = "com.atlassian.bitbucket.IntegrityException"
	bbInvalid     = "com.atlassian.bitbucket.validation.ArgumentValidationException"
	bbLicence     = "com.atlassian.bitbucket.license.LicenseLimitException"
)

func (s *Server) routeBitbucket() {
	p := bbAPI
	s.route("GET "+p+"/users/{userSlug}", s.bbGetUser)
	s.route("GET "+p+"/users", s.bbFindUsers(false))
	s.route("GET "+p+"/admin/users", s.bbFindUsers(true))
	s.route("POST "+p+"/admin/users", s.bbCreateUser)
	s.route("PUT "+p+"/admin/users", s.bbUpdateUser)
	s.route("DELETE "+p+"/admin/users", s.bbDeleteUser)
	s.route("POST "+p+"/admin/users/rename", s.bbRename)
	s.route("GET "+p+"/admin/users/more-members", s.bbUserGroups)
	s.route("POST "+p+"/admin/users/add-groups", s.bbAddGroups)
	s.route("POST "+p+"/admin/groups/add-users", s.bbAddUsers)
	s.route("POST "+p+"/admin/users/remove-group", s.bbRemoveGroup)
	s.route("GET "+p+"/admin/groups", s.bbListGroups)
	s.route("POST "+p+"/admin/groups", s.bbCreateGroup)
	s.route("GET "+p+"/admin/groups/more-members", s.bbGroupMembers)
	s.route("GET "+p+"/admin/permissions/users", s.bbUserPermissions)
	s.route("PUT "+p+"/admin/permissions/users", s.bbGrantUser)
	s.route("DELETE "+p+"/admin/permissions/users", s.bbRevokeUser)
	s.route("GET "+p+"/admin/permissions/groups", s.bbGroupPermissions)
	s.route("PUT "+p+"/admin/permissions/groups", s.bbGrantGroup)
	s.route("DELETE "+p+"/admin/permissions/groups", s.bbRevokeGroup)
}

func (s *Server) bbUser(r *http.Request, u *user) map[string]any {
	return map[string]any{
		"name": u.name, "emailAddress": u.email, "id": u.id, "displayName": u.displayName,
		"active": u.active, "slug": u.slug, "type": "NORMAL",
		"links": map[string]any{"self": []map[string]string{{"href": base(r) + "/users/" + u.slug}}},
	}
}

func (s *Server) bbDetailed(r *http.Request, u *user) map[string]any {
	m := s.bbUser(r, u)
	m["directoryName"] = "Bitbucket Internal Directory"
	m["deletable"] = true
	m["mutableDetails"] = true
	m["mutableGroups"] = true
	if !u.lastLogin.IsZero() {
		m["lastAuthenticationTimestamp"] = u.lastLogin.UnixMilli()
	}
	return m
}

// bbPaging reads start and limit (default 25, at most 1000 [U]).
func (s *Server) bbPaging(w http.ResponseWriter, r *http.Request) (start, limit int, ok bool) {
	q := r.URL.Query()
	if start, ok = s.qint(w, q, "start", 0); !ok {
		return
	}
	if limit, ok = s.qint(w, q, "limit", 25); !ok {
		return
	}
	return start, min(max(limit, 1), 1000), true
}

func bbPage(values []map[string]any, start, limit int, last bool) map[string]any {
	m := map[string]any{"size": len(values), "limit": limit, "isLastPage": last, "values": values, "start": start}
	if !last {
		m["nextPageStart"] = start + len(values)
	}
	return m
}

// bbMatch is Bitbucket's substring filter over name, display name and
// e-mail.
func bbMatch(u *user, filter string) bool {
	return filter == "" || strings.Contains(lower(u.name), filter) ||
		strings.Contains(lower(u.displayName), filter) || strings.Contains(lower(u.email), filter)
}

// bbFiltered returns the keys of users matching filter; without a
// filter it is the index itself, so paging costs no scan. scope names
// the list keys come from, for the memo.
func (s *Server) bbFiltered(scope string, keys []string, filter string) []string {
	if filter == "" {
		return keys
	}
	return s.memoized("bb filter\x00"+scope+"\x00"+filter, func() []string {
		var out []string
		for _, k := range keys {
			if bbMatch(s.users[k], filter) {
				out = append(out, k)
			}
		}
		return out
	})
}

func (s *Server) bbNoUser(w http.ResponseWriter, name string) {
	s.fail(w, http.StatusNotFound, bbNoSuchUser, fmt.Sprintf("User %s does not exist.", name))
}

func (s *Server) bbNoGroup(w http.ResponseWriter, name string) {
	s.fail(w, http.StatusNotFound, bbNoSuchGroup, fmt.Sprintf("Group %s does not exist.", name))
}

func (s *Server) bbGetUser(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	slug := r.PathValue("userSlug")
	u := s.lookupSlug(slug)
	if u == nil {
		s.bbNoUser(w, slug)
		return
	}
	writeJSON(w, http.StatusOK, s.bbUser(r, u))
}

// bbFindUsers serves /users (simple shape, any user) and /admin/users
// (detailed shape with lastAuthenticationTimestamp, admins only).
func (s *Server) bbFindUsers(detailed bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if detailed && !s.admin(w, r) {
			return
		}
		start, limit, ok := s.bbPaging(w, r)
		if !ok {
			return
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		keys := s.bbFiltered("users", s.userIdx.keys(), lower(r.URL.Query().Get("filter")))
		from, to := window(start, limit, len(keys))
		values := make([]map[string]any, 0, to-from)
		for _, k := range keys[from:to] {
			if detailed {
				values = append(values, s.bbDetailed(r, s.users[k]))
			} else {
				values = append(values, s.bbUser(r, s.users[k]))
			}
		}
		writeJSON(w, http.StatusOK, bbPage(values, from, limit, to >= len(keys)))
	}
}

// bbCreateUser takes every input as a query parameter and answers 204
// with no body (reference §5.3).
func (s *Server) bbCreateUser(w http.ResponseWriter, r *http.Request) {
	if !s.admin(w, r) {
		return
	}
	q := r.URL.Query()
	name, display, email := q.Get("name"), q.Get("displayName"), q.Get("emailAddress")
	notify := q.Has("notify") && q.Get("notify") != "false"
	switch {
	case strings.TrimSpace(name) == "" || strings.TrimSpace(display) == "" || !strings.Contains(email, "@"):
		s.fail(w, http.StatusBadRequest, bbInvalid, "name, displayName and a valid emailAddress are required")
		return
	case q.Get("password") == "" && !notify:
		s.fail(w, http.StatusBadRequest, bbInvalid, "A password is required unless notify is set")
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.lookup(name) != nil {
		s.fail(w, http.StatusConflict, bbDuplicate, fmt.Sprintf("A user with the name %s already exists.", name))
		return
	}
	var def *group
	if s.defaultGroup != "" && qbool(q, "addToDefaultGroup", true) {
		def = s.ensureGroup(s.defaultGroup)
		if def.perm != "" && !s.seatsLeft() {
			s.fail(w, http.StatusForbidden, bbLicence, "Adding the user to the default group would exceed the licensed user limit")
			return
		}
	}
	u := &user{name: name, displayName: display, email: email, active: true, password: q.Get("password")}
	s.insert(u)
	if def != nil {
		s.join(u, def)
	}
	w.WriteHeader(http.StatusNoContent)
}

// bbUpdateUser: the body field is "email", not "emailAddress".
func (s *Server) bbUpdateUser(w http.ResponseWriter, r *http.Request) {
	if !s.admin(w, r) {
		return
	}
	var in struct {
		Name        string  `json:"name"`
		DisplayName *string `json:"displayName"`
		Email       *string `json:"email"`
	}
	if !s.decode(w, r, &in) {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	u := s.lookup(in.Name)
	if u == nil {
		s.bbNoUser(w, in.Name)
		return
	}
	if in.DisplayName != nil {
		u.displayName = *in.DisplayName
	}
	if in.Email != nil {
		u.email = *in.Email
	}
	writeJSON(w, http.StatusOK, s.bbDetailed(r, u))
}

func (s *Server) bbDeleteUser(w http.ResponseWriter, r *http.Request) {
	if !s.admin(w, r) {
		return
	}
	name := r.URL.Query().Get("name")
	if equalFold(name, callerOf(r).name) {
		s.fail(w, http.StatusConflict, bbDuplicate, "You cannot delete yourself")
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	u := s.lookup(name)
	if u == nil {
		s.bbNoUser(w, name)
		return
	}
	out := s.bbDetailed(r, u)
	s.deleteUser(u)
	writeJSON(w, http.StatusOK, out)
}

// bbRename's body {"name","newName"} is [U] in the reference.
func (s *Server) bbRename(w http.ResponseWriter, r *http.Request) {
	if !s.admin(w, r) {
		return
	}
	var in struct {
		Name    string `json:"name"`
		NewName string `json:"newName"`
	}
	if !s.decode(w, r, &in) {
		return
	}
	if strings.TrimSpace(in.NewName) == "" {
		s.fail(w, http.StatusBadRequest, bbInvalid, "newName is required")
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	u := s.lookup(in.Name)
	if u == nil {
		s.bbNoUser(w, in.Name)
		return
	}
	if o := s.lookup(in.NewName); o != nil && o != u {
		s.fail(w, http.StatusConflict, bbDuplicate, fmt.Sprintf("A user with the name %s already exists.", in.NewName))
		return
	}
	s.rename(u, in.NewName)
	writeJSON(w, http.StatusOK, s.bbDetailed(r, u))
}

func (s *Server) bbUserGroups(w http.ResponseWriter, r *http.Request) {
	if !s.admin(w, r) {
		return
	}
	start, limit, ok := s.bbPaging(w, r)
	if !ok {
		return
	}
	q := r.URL.Query()
	s.mu.Lock()
	defer s.mu.Unlock()
	u := s.lookup(q.Get("context"))
	if u == nil {
		s.bbNoUser(w, q.Get("context"))
		return
	}
	filter := lower(q.Get("filter"))
	var names []string
	for _, n := range s.groupNames(u) {
		if strings.Contains(lower(n), filter) {
			names = append(names, n)
		}
	}
	from, to := window(start, limit, len(names))
	values := make([]map[string]any, 0, to-from)
	for _, n := range names[from:to] {
		values = append(values, map[string]any{"name": n, "deletable": true})
	}
	writeJSON(w, http.StatusOK, bbPage(values, from, limit, to >= len(names)))
}

// bbAddGroups is all or nothing: 404 when the user or any group is
// missing, and nothing changes. Adding a member again is a no-op 200
// ([U], believed idempotent).
func (s *Server) bbAddGroups(w http.ResponseWriter, r *http.Request) {
	if !s.admin(w, r) {
		return
	}
	var in struct {
		User   string   `json:"user"`
		Groups []string `json:"groups"`
	}
	if !s.decode(w, r, &in) {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	u := s.lookup(in.User)
	if u == nil {
		s.bbNoUser(w, in.User)
		return
	}
	gs, ok := s.bbGroups(w, in.Groups)
	if !ok {
		return
	}
	if !s.bbSeatFor(w, u, gs) {
		return
	}
	for _, g := range gs {
		s.join(u, g)
	}
	w.WriteHeader(http.StatusOK)
}

func (s *Server) bbAddUsers(w http.ResponseWriter, r *http.Request) {
	if !s.admin(w, r) {
		return
	}
	var in struct {
		Group string   `json:"group"`
		Users []string `json:"users"`
	}
	if !s.decode(w, r, &in) {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	gs, ok := s.bbGroups(w, []string{in.Group})
	if !ok {
		return
	}
	var us []*user
	for _, n := range in.Users {
		u := s.lookup(n)
		if u == nil {
			s.bbNoUser(w, n)
			return
		}
		us = append(us, u)
	}
	for _, u := range us {
		if !s.bbSeatFor(w, u, gs) {
			return
		}
	}
	for _, u := range us {
		s.join(u, gs[0])
	}
	w.WriteHeader(http.StatusOK)
}

func (s *Server) bbGroups(w http.ResponseWriter, names []string) ([]*group, bool) {
	var gs []*group
	for _, n := range names {
		g := s.group(n)
		if g == nil {
			s.bbNoGroup(w, n)
			return nil, false
		}
		gs = append(gs, g)
	}
	return gs, true
}

// bbSeatFor answers 403 when joining gs would license u beyond Seats.
func (s *Server) bbSeatFor(w http.ResponseWriter, u *user, gs []*group) bool {
	if slices.ContainsFunc(gs, func(g *group) bool { return s.grantsLicence(u, g) }) && !s.seatsLeft() {
		s.fail(w, http.StatusForbidden, bbLicence, "Adding the user to these groups would exceed the licensed user limit")
		return false
	}
	return true
}

// bbRemoveGroup: context is the user, itemName the group (reference
// §5.6). Removing a non-member answers 200 ([U]).
func (s *Server) bbRemoveGroup(w http.ResponseWriter, r *http.Request) {
	if !s.admin(w, r) {
		return
	}
	var in struct {
		Context  string `json:"context"`
		ItemName string `json:"itemName"`
	}
	if !s.decode(w, r, &in) {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	u := s.lookup(in.Context)
	if u == nil {
		s.bbNoUser(w, in.Context)
		return
	}
	g := s.group(in.ItemName)
	if g == nil {
		s.bbNoGroup(w, in.ItemName)
		return
	}
	s.leave(u, g)
	w.WriteHeader(http.StatusOK)
}

func (s *Server) bbListGroups(w http.ResponseWriter, r *http.Request) {
	if !s.admin(w, r) {
		return
	}
	start, limit, ok := s.bbPaging(w, r)
	if !ok {
		return
	}
	filter := lower(r.URL.Query().Get("filter"))
	s.mu.Lock()
	defer s.mu.Unlock()
	var keys []string
	for _, k := range s.groupIdx.keys() {
		if strings.Contains(k, filter) {
			keys = append(keys, k)
		}
	}
	from, to := window(start, limit, len(keys))
	values := make([]map[string]any, 0, to-from)
	for _, k := range keys[from:to] {
		values = append(values, map[string]any{"name": s.groups[k].name, "deletable": true})
	}
	writeJSON(w, http.StatusOK, bbPage(values, from, limit, to >= len(keys)))
}

func (s *Server) bbCreateGroup(w http.ResponseWriter, r *http.Request) {
	if !s.admin(w, r) {
		return
	}
	name := r.URL.Query().Get("name")
	if strings.TrimSpace(name) == "" {
		s.fail(w, http.StatusBadRequest, bbInvalid, "name is required")
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.group(name) != nil {
		s.fail(w, http.StatusConflict, bbDuplicate, fmt.Sprintf("A group with the name %s already exists.", name))
		return
	}
	g := s.ensureGroup(name)
	writeJSON(w, http.StatusOK, map[string]any{"name": g.name, "deletable": true})
}

func (s *Server) bbGroupMembers(w http.ResponseWriter, r *http.Request) {
	if !s.admin(w, r) {
		return
	}
	start, limit, ok := s.bbPaging(w, r)
	if !ok {
		return
	}
	q := r.URL.Query()
	s.mu.Lock()
	defer s.mu.Unlock()
	g := s.group(q.Get("context"))
	if g == nil {
		s.bbNoGroup(w, q.Get("context"))
		return
	}
	keys := s.bbFiltered("group\x00"+lower(g.name), g.members.keys(), lower(q.Get("filter")))
	from, to := window(start, limit, len(keys))
	values := make([]map[string]any, 0, to-from)
	for _, k := range keys[from:to] {
		values = append(values, s.bbDetailed(r, s.users[k]))
	}
	writeJSON(w, http.StatusOK, bbPage(values, from, limit, to >= len(keys)))
}
