package atlassiantest

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
)

// Crowd /rest/usermanagement/1 (reference §6). Calls authenticate the
// application, not a user; PUT /user replaces the whole user.

const crowdAPI = "/rest/usermanagement/1"

// crowdLastAuth is the attribute carrying the last login (epoch ms);
// the name is [U] in the reference (§6.6).
const crowdLastAuth = "lastAuthenticated"

func (s *Server) routeCrowd() {
	p := crowdAPI
	s.route("GET "+p+"/user", s.crowdGetUser)
	s.route("POST "+p+"/user", s.crowdCreateUser)
	s.route("PUT "+p+"/user", s.crowdReplaceUser)
	s.route("DELETE "+p+"/user", s.crowdDeleteUser)
	s.route("POST "+p+"/user/rename", s.crowdRename)
	s.route("GET "+p+"/user/attribute", s.crowdAttributes)
	s.route("POST "+p+"/user/attribute", s.crowdStoreAttributes)
	s.route("PUT "+p+"/user/attribute", s.crowdStoreAttributes)
	s.route("DELETE "+p+"/user/attribute", s.crowdDeleteAttribute)
	s.route("GET "+p+"/user/group/direct", s.crowdUserGroups)
	s.route("POST "+p+"/user/group/direct", s.crowdAddUserToGroup)
	s.route("DELETE "+p+"/user/group/direct", s.crowdRemoveMembership)
	s.route("GET "+p+"/group", s.crowdGetGroup)
	s.route("POST "+p+"/group", s.crowdCreateGroup)
	s.route("GET "+p+"/group/user/direct", s.crowdGroupUsers)
	s.route("POST "+p+"/group/user/direct", s.crowdAddGroupMember)
	s.route("GET "+p+"/search", s.crowdSearch)
}

type crowdLink struct {
	Href string `json:"href"`
	Rel  string `json:"rel"`
}

type crowdAttr struct {
	Name   string   `json:"name"`
	Values []string `json:"values"`
}

type crowdUserIn struct {
	Name        string `json:"name"`
	FirstName   string `json:"first-name"`
	LastName    string `json:"last-name"`
	DisplayName string `json:"display-name"`
	Email       string `json:"email"`
	Active      *bool  `json:"active"`
	Password    *struct {
		Value string `json:"value"`
	} `json:"password"`
}

func (s *Server) crowdUserLink(r *http.Request, u *user) crowdLink {
	return crowdLink{Href: base(r) + crowdAPI + "/user?username=" + url.QueryEscape(u.name), Rel: "self"}
}

func (s *Server) crowdAttrs(u *user) []crowdAttr {
	out := []crowdAttr{}
	for _, k := range sortedKeys(u.attrs) {
		out = append(out, crowdAttr{Name: k, Values: u.attrs[k]})
	}
	if _, ok := u.attrs[crowdLastAuth]; !ok && !u.lastLogin.IsZero() {
		out = append(out, crowdAttr{Name: crowdLastAuth, Values: []string{fmt.Sprint(u.lastLogin.UnixMilli())}})
	}
	return out
}

func (s *Server) crowdUser(r *http.Request, u *user, expand string) map[string]any {
	link := s.crowdUserLink(r, u)
	m := map[string]any{
		"name": u.name, "first-name": u.first, "last-name": u.last, "display-name": u.displayName,
		"email": u.email, "active": u.active, "key": u.key, "link": link,
		"password": map[string]any{"link": crowdLink{Href: base(r) + crowdAPI + "/user/password?username=" + url.QueryEscape(u.name), Rel: "edit"}},
	}
	if strings.Contains(expand, "attributes") {
		m["attributes"] = map[string]any{"attributes": s.crowdAttrs(u), "link": link}
	}
	return m
}

func (s *Server) crowdGroup(r *http.Request, g *group) map[string]any {
	return map[string]any{
		"name": g.name, "description": "", "type": "GROUP", "active": true,
		"link": crowdLink{Href: base(r) + crowdAPI + "/group?groupname=" + url.QueryEscape(g.name), Rel: "self"},
	}
}

func (s *Server) crowdNoUser(w http.ResponseWriter, status int, name string) {
	s.fail(w, status, "USER_NOT_FOUND", fmt.Sprintf("User <%s> does not exist", name))
}

func (s *Server) crowdNoGroup(w http.ResponseWriter, status int, name string) {
	s.fail(w, status, "GROUP_NOT_FOUND", fmt.Sprintf("Group <%s> does not exist", name))
}

// crowdTarget finds ?username=, answering 404 itself.
func (s *Server) crowdTarget(w http.ResponseWriter, r *http.Request) *user {
	name := r.URL.Query().Get("username")
	u := s.lookup(name)
	if u == nil {
		s.crowdNoUser(w, http.StatusNotFound, name)
	}
	return u
}

func (s *Server) crowdPaging(w http.ResponseWriter, r *http.Request) (start, limit int, ok bool) {
	q := r.URL.Query()
	if start, ok = s.qint(w, q, "start-index", 0); !ok {
		return
	}
	limit, ok = s.qint(w, q, "max-results", 1000) // default [U]
	return start, limit, ok
}

func (s *Server) crowdGetUser(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if u := s.crowdTarget(w, r); u != nil {
		writeJSON(w, http.StatusOK, s.crowdUser(r, u, r.URL.Query().Get("expand")))
	}
}

func (s *Server) crowdCreateUser(w http.ResponseWriter, r *http.Request) {
	var in crowdUserIn
	if !s.decode(w, r, &in) {
		return
	}
	if strings.TrimSpace(in.Name) == "" {
		s.fail(w, http.StatusBadRequest, "INVALID_USER", "User name must not be blank")
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.lookup(in.Name) != nil {
		// Crowd reports "already exists" as INVALID_USER (reference §6.7).
		s.fail(w, http.StatusBadRequest, "INVALID_USER", fmt.Sprintf("User <%s> already exists", in.Name))
		return
	}
	u := &user{name: in.Name}
	crowdApply(u, in)
	s.insert(u)
	w.Header().Set("Location", s.crowdUserLink(r, u).Href)
	w.WriteHeader(http.StatusCreated)
}

// crowdApply copies a full user object onto u. Strings the caller left
// out are blanked, which is why clients must read-modify-write (the KB
// warning in reference §6.3). An omitted "active" keeps its value on
// update ([U]) and means active on create.
func crowdApply(u *user, in crowdUserIn) {
	u.first, u.last, u.email = in.FirstName, in.LastName, in.Email
	u.displayName = in.DisplayName
	if u.displayName == "" {
		u.displayName = strings.TrimSpace(in.FirstName + " " + in.LastName)
	}
	if in.Active != nil {
		u.active = *in.Active
	} else if u.key == "" {
		u.active = true
	}
	if in.Password != nil {
		u.password = in.Password.Value
	}
}

func (s *Server) crowdReplaceUser(w http.ResponseWriter, r *http.Request) {
	var in crowdUserIn
	if !s.decode(w, r, &in) {
		return
	}
	name := r.URL.Query().Get("username")
	if !equalFold(in.Name, name) {
		s.fail(w, http.StatusBadRequest, "ILLEGAL_ARGUMENT", fmt.Sprintf("User name in the body <%s> does not match the URI <%s>", in.Name, name))
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	u := s.crowdTarget(w, r)
	if u == nil {
		return
	}
	pw := u.password
	crowdApply(u, in)
	u.password = pw // PUT /user does not change the password
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) crowdDeleteUser(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if u := s.crowdTarget(w, r); u != nil {
		s.deleteUser(u)
		w.WriteHeader(http.StatusNoContent)
	}
}

// crowdRename is POST /user/rename {"new-name"} (Crowd 2.8+; not in the
// reference). It answers the renamed user.
func (s *Server) crowdRename(w http.ResponseWriter, r *http.Request) {
	var in struct {
		NewName string `json:"new-name"`
	}
	if !s.decode(w, r, &in) {
		return
	}
	if strings.TrimSpace(in.NewName) == "" {
		s.fail(w, http.StatusBadRequest, "INVALID_USER", "new-name must not be blank")
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	u := s.crowdTarget(w, r)
	if u == nil {
		return
	}
	if o := s.lookup(in.NewName); o != nil && o != u {
		s.fail(w, http.StatusBadRequest, "INVALID_USER", fmt.Sprintf("User <%s> already exists", in.NewName))
		return
	}
	s.rename(u, in.NewName)
	writeJSON(w, http.StatusOK, s.crowdUser(r, u, ""))
}

func (s *Server) crowdAttributes(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if u := s.crowdTarget(w, r); u != nil {
		writeJSON(w, http.StatusOK, map[string]any{"attributes": s.crowdAttrs(u), "link": s.crowdUserLink(r, u)})
	}
}

// crowdStoreAttributes accepts POST (Go clients) and PUT (python) since
// the reference could not settle the verb; both replace the named
// attributes' values and leave the others alone.
func (s *Server) crowdStoreAttributes(w http.ResponseWriter, r *http.Request) {
	var in struct {
		Attributes []crowdAttr `json:"attributes"`
	}
	if !s.decode(w, r, &in) {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	u := s.crowdTarget(w, r)
	if u == nil {
		return
	}
	for _, a := range in.Attributes {
		if a.Name != "" {
			u.attrs[a.Name] = append([]string(nil), a.Values...)
		}
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) crowdDeleteAttribute(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if u := s.crowdTarget(w, r); u != nil {
		delete(u.attrs, r.URL.Query().Get("attributename"))
		w.WriteHeader(http.StatusNoContent)
	}
}

func (s *Server) crowdUserGroups(w http.ResponseWriter, r *http.Request) {
	start, limit, ok := s.crowdPaging(w, r)
	if !ok {
		return
	}
	q := r.URL.Query()
	s.mu.Lock()
	defer s.mu.Unlock()
	u := s.crowdTarget(w, r)
	if u == nil {
		return
	}
	if gn := q.Get("groupname"); gn != "" {
		g := s.group(gn)
		if g == nil || !g.members.has(lower(u.name)) {
			s.fail(w, http.StatusNotFound, "MEMBERSHIP_NOT_FOUND", fmt.Sprintf("User <%s> is not a direct member of group <%s>", u.name, gn))
			return
		}
		writeJSON(w, http.StatusOK, s.crowdGroupRef(r, g, q.Get("expand")))
		return
	}
	names := s.groupNames(u)
	from, to := window(start, limit, len(names))
	out := make([]map[string]any, 0, to-from)
	for _, n := range names[from:to] {
		out = append(out, s.crowdGroupRef(r, s.group(n), q.Get("expand")))
	}
	writeJSON(w, http.StatusOK, map[string]any{"expand": "group", "groups": out})
}

func (s *Server) crowdGroupRef(r *http.Request, g *group, expand string) map[string]any {
	full := s.crowdGroup(r, g)
	if strings.Contains(expand, "group") {
		return full
	}
	return map[string]any{"name": g.name, "link": full["link"]}
}

func (s *Server) crowdUserRef(r *http.Request, u *user, expand string) map[string]any {
	if strings.Contains(expand, "user") {
		return s.crowdUser(r, u, expand)
	}
	return map[string]any{"name": u.name, "link": s.crowdUserLink(r, u)}
}

// crowdAddMembership is shared by both directions. Codes for the user
// direction are [S]: 404 user missing, 400 group missing, 409 already a
// member. The group direction mirrors them ([U]).
func (s *Server) crowdAddMembership(w http.ResponseWriter, u *user, g *group, userName, groupName string, userFirst bool) {
	switch {
	case u == nil:
		s.crowdNoUser(w, map[bool]int{true: http.StatusNotFound, false: http.StatusBadRequest}[userFirst], userName)
	case g == nil:
		s.crowdNoGroup(w, map[bool]int{true: http.StatusBadRequest, false: http.StatusNotFound}[userFirst], groupName)
	case !s.join(u, g):
		s.fail(w, http.StatusConflict, "MEMBERSHIP_ALREADY_EXISTS", fmt.Sprintf("User <%s> is already a direct member of group <%s>", u.name, g.name))
	default:
		w.WriteHeader(http.StatusCreated)
	}
}

func (s *Server) crowdAddUserToGroup(w http.ResponseWriter, r *http.Request) {
	var in struct {
		Name string `json:"name"`
	}
	if !s.decode(w, r, &in) {
		return
	}
	name := r.URL.Query().Get("username")
	s.mu.Lock()
	defer s.mu.Unlock()
	s.crowdAddMembership(w, s.lookup(name), s.group(in.Name), name, in.Name, true)
}

func (s *Server) crowdAddGroupMember(w http.ResponseWriter, r *http.Request) {
	var in struct {
		Name string `json:"name"`
	}
	if !s.decode(w, r, &in) {
		return
	}
	gn := r.URL.Query().Get("groupname")
	s.mu.Lock()
	defer s.mu.Unlock()
	s.crowdAddMembership(w, s.lookup(in.Name), s.group(gn), in.Name, gn, false)
}

// crowdRemoveMembership answers 404 with the reason naming what is
// missing: the user, the group, or the membership.
func (s *Server) crowdRemoveMembership(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	s.mu.Lock()
	defer s.mu.Unlock()
	u := s.crowdTarget(w, r)
	if u == nil {
		return
	}
	g := s.group(q.Get("groupname"))
	switch {
	case g == nil:
		s.crowdNoGroup(w, http.StatusNotFound, q.Get("groupname"))
	case !s.leave(u, g):
		s.fail(w, http.StatusNotFound, "MEMBERSHIP_NOT_FOUND", fmt.Sprintf("User <%s> is not a direct member of group <%s>", u.name, g.name))
	default:
		w.WriteHeader(http.StatusNoContent)
	}
}

func (s *Server) crowdGetGroup(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	name := r.URL.Query().Get("groupname")
	if g := s.group(name); g != nil {
		writeJSON(w, http.StatusOK, s.crowdGroup(r, g))
		return
	}
	s.crowdNoGroup(w, http.StatusNotFound, name)
}

func (s *Server) crowdCreateGroup(w http.ResponseWriter, r *http.Request) {
	var in struct {
		Name string `json:"name"`
	}
	if !s.decode(w, r, &in) {
		return
	}
	if strings.TrimSpace(in.Name) == "" {
		s.fail(w, http.StatusBadRequest, "INVALID_GROUP", "Group name must not be blank")
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.group(in.Name) != nil {
		s.fail(w, http.StatusBadRequest, "INVALID_GROUP", fmt.Sprintf("Group <%s> already exists", in.Name))
		return
	}
	g := s.ensureGroup(in.Name)
	w.Header().Set("Location", base(r)+crowdAPI+"/group?groupname="+url.QueryEscape(g.name))
	w.WriteHeader(http.StatusCreated)
}

func (s *Server) crowdGroupUsers(w http.ResponseWriter, r *http.Request) {
	start, limit, ok := s.crowdPaging(w, r)
	if !ok {
		return
	}
	q := r.URL.Query()
	s.mu.Lock()
	defer s.mu.Unlock()
	g := s.group(q.Get("groupname"))
	if g == nil {
		s.crowdNoGroup(w, http.StatusNotFound, q.Get("groupname"))
		return
	}
	if un := q.Get("username"); un != "" {
		u := s.lookup(un)
		if u == nil || !g.members.has(lower(un)) {
			s.fail(w, http.StatusNotFound, "MEMBERSHIP_NOT_FOUND", fmt.Sprintf("User <%s> is not a direct member of group <%s>", un, g.name))
			return
		}
		writeJSON(w, http.StatusOK, s.crowdUserRef(r, u, q.Get("expand")))
		return
	}
	keys := g.members.keys()
	from, to := window(start, limit, len(keys))
	out := make([]map[string]any, 0, to-from)
	for _, k := range keys[from:to] {
		out = append(out, s.crowdUserRef(r, s.users[k], q.Get("expand")))
	}
	writeJSON(w, http.StatusOK, map[string]any{"expand": "user", "users": out})
}
