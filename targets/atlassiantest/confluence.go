package atlassiantest

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"
)

// Confluence Data Center /rest/api (reference §4).

const confAPI = "/rest/api"

// confMaxLimit is the page size Confluence falls back to when asked for
// more; clients must read the returned limit (reference §4.7).
const confMaxLimit = 200

func (s *Server) routeConfluence() {
	p := confAPI
	s.route("GET "+p+"/user", s.confGetUser)
	s.route("GET "+p+"/user/list", s.confListUsers)
	s.route("GET "+p+"/user/memberof", s.confMemberOf)
	s.route("PUT "+p+"/user/{username}/group/{groupName}", s.confAddMember)
	s.route("DELETE "+p+"/user/{username}/group/{groupName}", s.confRemoveMember)
	s.route("GET "+p+"/group", s.confListGroups)
	s.route("GET "+p+"/group/{groupName}", s.confGetGroup)
	s.route("GET "+p+"/group/{groupName}/member", s.confMembers)
	s.route("POST "+p+"/admin/user", s.confCreateUser)
	s.route("PUT "+p+"/admin/user/{username}", s.confUpdateUser)
	s.route("PUT "+p+"/admin/user/{username}/disable", s.confSetActive(false))
	s.route("PUT "+p+"/admin/user/{username}/enable", s.confSetActive(true))
	s.route("DELETE "+p+"/admin/user/{username}", s.confDeleteUser)
	s.route("POST "+p+"/admin/user/{username}/password", s.confSetPassword)
	s.route("POST "+p+"/admin/group", s.confCreateGroup)
	s.route("GET "+p+"/admin/users/list/active", s.confActiveUsers)
}

// confPerson is the known-user representation. E-mail is not part of it
// ([U] in the reference); only the admin active-users list carries it.
func (s *Server) confPerson(r *http.Request, u *user, expand string) map[string]any {
	m := map[string]any{
		"type": "known", "username": u.name, "userKey": u.key, "displayName": u.displayName,
		"profilePicture": map[string]any{"path": "/images/icons/profilepics/default.svg", "width": 48, "height": 48, "isDefault": true},
		"_links":         map[string]string{"self": base(r) + confAPI + "/user?key=" + u.key, "base": base(r), "context": ""},
	}
	if slices.Contains(strings.Split(expand, ","), "status") {
		m["status"] = map[bool]string{true: "Active", false: "Deactivated"}[u.active]
		m["_expandable"] = map[string]string{}
	} else {
		m["_expandable"] = map[string]string{"status": ""}
	}
	return m
}

func (s *Server) confGroup(r *http.Request, g *group) map[string]any {
	return map[string]any{"type": "group", "name": g.name, "_links": map[string]string{"self": base(r) + confAPI + "/group/" + url.PathEscape(g.name)}}
}

// confPaging reads start and limit, capping limit at confMaxLimit.
func (s *Server) confPaging(w http.ResponseWriter, r *http.Request) (start, limit int, ok bool) {
	q := r.URL.Query()
	if start, ok = s.qint(w, q, "start", 0); !ok {
		return
	}
	if limit, ok = s.qint(w, q, "limit", confMaxLimit); !ok {
		return
	}
	return start, min(max(limit, 1), confMaxLimit), true
}

// confPage wraps results in Confluence's envelope; _links.next is there
// only when more results follow.
func confPage(r *http.Request, results []map[string]any, start, limit int, more bool) map[string]any {
	links := map[string]string{"base": base(r), "context": "", "self": base(r) + r.URL.RequestURI()}
	if more {
		q := r.URL.Query()
		q.Set("start", itoa(start+len(results)))
		q.Set("limit", itoa(limit))
		links["next"] = r.URL.Path + "?" + q.Encode()
	}
	return map[string]any{"results": results, "start": start, "limit": limit, "size": len(results), "_links": links}
}

// confTarget finds the user of ?username= or ?key=.
func (s *Server) confTarget(w http.ResponseWriter, r *http.Request) *user {
	q := r.URL.Query()
	var u *user
	if k := q.Get("key"); k != "" {
		u = s.lookupKey(k)
	} else {
		u = s.lookup(q.Get("username"))
	}
	if u == nil {
		s.fail(w, http.StatusNotFound, "", "No user found with the given username or userkey")
	}
	return u
}

func (s *Server) confPathUser(w http.ResponseWriter, r *http.Request) *user {
	name := r.PathValue("username")
	u := s.lookup(name)
	if u == nil {
		s.fail(w, http.StatusNotFound, "", fmt.Sprintf("No user found with username %s", name))
	}
	return u
}

func (s *Server) confPathGroup(w http.ResponseWriter, r *http.Request) *group {
	name := r.PathValue("groupName")
	g := s.group(name)
	if g == nil {
		s.fail(w, http.StatusNotFound, "", fmt.Sprintf("No group found with name %s", name))
	}
	return g
}

func (s *Server) confGetUser(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if u := s.confTarget(w, r); u != nil {
		writeJSON(w, http.StatusOK, s.confPerson(r, u, r.URL.Query().Get("expand")))
	}
}

// confListUsers is /user/list: every user, disabled and unlicensed ones
// included (reference §4.9).
func (s *Server) confListUsers(w http.ResponseWriter, r *http.Request) {
	start, limit, ok := s.confPaging(w, r)
	if !ok {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	keys := s.userIdx.keys()
	from, to := window(start, limit, len(keys))
	out := make([]map[string]any, 0, to-from)
	for _, k := range keys[from:to] {
		out = append(out, s.confPerson(r, s.users[k], r.URL.Query().Get("expand")))
	}
	writeJSON(w, http.StatusOK, confPage(r, out, from, limit, to < len(keys)))
}

func (s *Server) confMemberOf(w http.ResponseWriter, r *http.Request) {
	start, limit, ok := s.confPaging(w, r)
	if !ok {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	u := s.confTarget(w, r)
	if u == nil {
		return
	}
	names := s.groupNames(u)
	from, to := window(start, limit, len(names))
	out := make([]map[string]any, 0, to-from)
	for _, n := range names[from:to] {
		out = append(out, s.confGroup(r, s.group(n)))
	}
	writeJSON(w, http.StatusOK, confPage(r, out, from, limit, to < len(names)))
}

// Membership changes are idempotent and answer 204 (reference §4.7);
// a missing user or group answers 404 ([U]).
func (s *Server) confAddMember(w http.ResponseWriter, r *http.Request) { s.confMembership(w, r, true) }
func (s *Server) confRemoveMember(w http.ResponseWriter, r *http.Request) {
	s.confMembership(w, r, false)
}

func (s *Server) confMembership(w http.ResponseWriter, r *http.Request, add bool) {
	if !s.admin(w, r) {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	u := s.confPathUser(w, r)
	if u == nil {
		return
	}
	g := s.confPathGroup(w, r)
	if g == nil {
		return
	}
	if add {
		s.join(u, g)
	} else {
		s.leave(u, g)
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) confListGroups(w http.ResponseWriter, r *http.Request) {
	start, limit, ok := s.confPaging(w, r)
	if !ok {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	keys := s.groupIdx.keys()
	from, to := window(start, limit, len(keys))
	out := make([]map[string]any, 0, to-from)
	for _, k := range keys[from:to] {
		out = append(out, s.confGroup(r, s.groups[k]))
	}
	writeJSON(w, http.StatusOK, confPage(r, out, from, limit, to < len(keys)))
}

func (s *Server) confGetGroup(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if g := s.confPathGroup(w, r); g != nil {
		writeJSON(w, http.StatusOK, s.confGroup(r, g))
	}
}

func (s *Server) confMembers(w http.ResponseWriter, r *http.Request) {
	start, limit, ok := s.confPaging(w, r)
	if !ok {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	g := s.confPathGroup(w, r)
	if g == nil {
		return
	}
	keys := g.members.keys()
	from, to := window(start, limit, len(keys))
	out := make([]map[string]any, 0, to-from)
	for _, k := range keys[from:to] {
		out = append(out, s.confPerson(r, s.users[k], r.URL.Query().Get("expand")))
	}
	writeJSON(w, http.StatusOK, confPage(r, out, from, limit, to < len(keys)))
}

// confValidName applies the create-user username rules (reference §4.4).
func confValidName(n string) bool {
	return strings.TrimSpace(n) != "" && n == lower(n) && !strings.ContainsAny(n, " \t\n\\,+<>'\"") && n != "anonymous"
}

func (s *Server) confCreateUser(w http.ResponseWriter, r *http.Request) {
	if !s.admin(w, r) {
		return
	}
	var in struct {
		UserName       string          `json:"userName"`
		FullName       string          `json:"fullName"`
		Email          string          `json:"email"`
		Password       *string         `json:"password"`
		NotifyViaEmail json.RawMessage `json:"notifyViaEmail"`
	}
	if !s.decode(w, r, &in) {
		return
	}
	// The doc example sends notifyViaEmail as a string; accept both.
	notify, err := parseActive(in.NotifyViaEmail)
	var problem string
	switch {
	case err != nil:
		problem = "notifyViaEmail must be true or false"
	case !confValidName(in.UserName):
		problem = "Username must be lower case, without whitespace or any of \\ , + < > ' \" and not 'anonymous'"
	case strings.TrimSpace(in.FullName) == "" || strings.ContainsAny(in.FullName, "<>") || in.FullName == "anonymous":
		problem = "Full name must not be blank or contain < or >"
	case !strings.Contains(in.Email, "@"):
		problem = "A valid email address is required"
	case (notify == nil || !*notify) && (in.Password == nil || *in.Password == ""):
		problem = "A password is required when notifyViaEmail is false"
	case notify != nil && *notify && in.Password != nil:
		problem = "A password must not be set when notifyViaEmail is true"
	}
	if problem != "" {
		s.fail(w, http.StatusBadRequest, "", problem)
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.lookup(in.UserName) != nil {
		s.fail(w, http.StatusConflict, "", fmt.Sprintf("User with username %s already exists", in.UserName))
		return
	}
	if s.defaultGroup != "" && slices.Contains(s.licenceGroups, s.defaultGroup) && !s.seatsLeft() {
		s.fail(w, http.StatusPaymentRequired, "", "No more licences are available")
		return
	}
	u := &user{name: in.UserName, displayName: in.FullName, email: in.Email, active: true}
	if in.Password != nil {
		u.password = *in.Password
	}
	s.insert(u)
	if s.defaultGroup != "" {
		s.join(u, s.ensureGroup(s.defaultGroup))
	}
	writeJSON(w, http.StatusCreated, map[string]string{"userKey": u.key})
}

// confUpdateUser changes e-mail and full name; no body comes back
// (reference §4.5; 204 and the not-found code are [U]).
func (s *Server) confUpdateUser(w http.ResponseWriter, r *http.Request) {
	if !s.admin(w, r) {
		return
	}
	var in struct {
		Email    *string `json:"email"`
		FullName *string `json:"fullName"`
	}
	if !s.decode(w, r, &in) {
		return
	}
	if (in.Email != nil && !strings.Contains(*in.Email, "@")) ||
		(in.FullName != nil && (strings.TrimSpace(*in.FullName) == "" || strings.ContainsAny(*in.FullName, "<>"))) {
		s.fail(w, http.StatusBadRequest, "", "Invalid email or full name")
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	u := s.confPathUser(w, r)
	if u == nil {
		return
	}
	if in.Email != nil {
		u.email = *in.Email
	}
	if in.FullName != nil {
		u.displayName = *in.FullName
	}
	w.WriteHeader(http.StatusNoContent)
}

// confSetActive is disable/enable: idempotent, no body (reference §4.6).
func (s *Server) confSetActive(active bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if !s.admin(w, r) {
			return
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		if u := s.confPathUser(w, r); u != nil {
			u.active = active
			w.WriteHeader(http.StatusNoContent)
		}
	}
}

// confDeleteUser answers 202 with a long-task submission as Confluence
// does; the emulator has already deleted the user when it answers. The
// submission's field names are [U].
func (s *Server) confDeleteUser(w http.ResponseWriter, r *http.Request) {
	if !s.admin(w, r) {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	u := s.confPathUser(w, r)
	if u == nil {
		return
	}
	s.deleteUser(u)
	id := pad(u.id, 8)
	writeJSON(w, http.StatusAccepted, map[string]any{
		"id": id, "links": map[string]string{"status": confAPI + "/longtask/" + id},
	})
}

func (s *Server) confSetPassword(w http.ResponseWriter, r *http.Request) {
	if !s.admin(w, r) {
		return
	}
	var in struct {
		Password string `json:"password"`
	}
	if !s.decode(w, r, &in) {
		return
	}
	if strings.TrimSpace(in.Password) == "" {
		s.fail(w, http.StatusBadRequest, "", "Password must not be blank")
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if u := s.confPathUser(w, r); u != nil {
		u.password = in.Password
		w.WriteHeader(http.StatusNoContent)
	}
}

func (s *Server) confCreateGroup(w http.ResponseWriter, r *http.Request) {
	if !s.admin(w, r) {
		return
	}
	var in struct {
		Name string `json:"name"`
	}
	if !s.decode(w, r, &in) {
		return
	}
	if strings.TrimSpace(in.Name) == "" {
		s.fail(w, http.StatusBadRequest, "", "Group name must not be blank")
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.group(in.Name) != nil {
		s.fail(w, http.StatusConflict, "", fmt.Sprintf("Group %s already exists", in.Name))
		return
	}
	// 201 is [U]; the reference says only "2xx group".
	writeJSON(w, http.StatusCreated, s.confGroup(r, s.ensureGroup(in.Name)))
}

// confActiveUsers lists users who take a seat, least recently logged in
// first (reference §4.9). lastLogin's format is [U]; ISO 8601 here.
func (s *Server) confActiveUsers(w http.ResponseWriter, r *http.Request) {
	if !s.admin(w, r) {
		return
	}
	start, limit, ok := s.confPaging(w, r)
	if !ok {
		return
	}
	expand := r.URL.Query().Get("expand")
	s.mu.Lock()
	defer s.mu.Unlock()
	licensed := s.memoized("confluence active by last login", func() []string {
		var out []string
		for _, k := range s.userIdx.keys() {
			if s.licensed(s.users[k]) {
				out = append(out, k)
			}
		}
		slices.SortStableFunc(out, func(a, b string) int { return s.users[a].lastLogin.Compare(s.users[b].lastLogin) })
		return out
	})
	from, to := window(start, limit, len(licensed))
	out := make([]map[string]any, 0, to-from)
	for _, k := range licensed[from:to] {
		u := s.users[k]
		m := s.confPerson(r, u, expand)
		m["email"] = u.email
		if slices.Contains(strings.Split(expand, ","), "lastLogin") && !u.lastLogin.IsZero() {
			m["lastLogin"] = u.lastLogin.UTC().Format(time.RFC3339Nano)
		}
		out = append(out, m)
	}
	writeJSON(w, http.StatusOK, confPage(r, out, from, limit, to < len(licensed)))
}
