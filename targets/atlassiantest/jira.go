package atlassiantest

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"html"
	"net/http"
	"net/url"
	"slices"
	"strings"
)

// Jira Data Center /rest/api/2 (reference §3).

const jiraAPI = "/rest/api/2"

// jiraTime is Jira's REST date format; the format of lastLoginTime is
// [U] in the reference, Jira uses this one for its other timestamps.
const jiraTime = "2006-01-02T15:04:05.000-0700"

func (s *Server) routeJira() {
	p := jiraAPI
	s.route("GET "+p+"/user", s.jiraGetUser)
	s.route("POST "+p+"/user", s.jiraCreateUser)
	s.route("PUT "+p+"/user", s.jiraUpdateUser)
	s.route("DELETE "+p+"/user", s.jiraDeleteUser)
	s.route("GET "+p+"/user/search", s.jiraSearch)
	s.route("GET "+p+"/user/list", s.jiraList)
	s.route("GET "+p+"/user/properties", s.jiraPropertyKeys)
	s.route("GET "+p+"/user/properties/{propertyKey}", s.jiraGetProperty)
	s.route("PUT "+p+"/user/properties/{propertyKey}", s.jiraSetProperty)
	s.route("DELETE "+p+"/user/properties/{propertyKey}", s.jiraDeleteProperty)
	s.route("GET "+p+"/group", s.jiraGetGroup)
	s.route("POST "+p+"/group", s.jiraCreateGroup)
	s.route("POST "+p+"/group/user", s.jiraAddMember)
	s.route("DELETE "+p+"/group/user", s.jiraRemoveMember)
	s.route("GET "+p+"/group/member", s.jiraMembers)
	s.route("GET "+p+"/groups/picker", s.jiraGroupPicker)
}

// jiraTarget finds the user named by ?username= or ?key=, answering the
// error itself. Sending both is refused ([U] server behaviour; clients
// never do it).
func (s *Server) jiraTarget(w http.ResponseWriter, r *http.Request) *user {
	q := r.URL.Query()
	name, key := q.Get("username"), q.Get("key")
	switch {
	case name != "" && key != "":
		s.fail(w, http.StatusBadRequest, "", "Specify either username or key, not both")
		return nil
	case name == "" && key == "":
		s.fail(w, http.StatusBadRequest, "", "Either the username or the key query parameter is required")
		return nil
	}
	u := s.lookup(name)
	if key != "" {
		u = s.lookupKey(key)
		name = key
	}
	if u == nil {
		s.fail(w, http.StatusNotFound, "", fmt.Sprintf("The user named '%s' does not exist", name))
	}
	return u
}

func (s *Server) jiraUserSelf(r *http.Request, u *user) string {
	return base(r) + jiraAPI + "/user?username=" + url.QueryEscape(u.name)
}

func (s *Server) jiraUser(r *http.Request, u *user, expand string) map[string]any {
	self := s.jiraUserSelf(r, u)
	avatar := base(r) + "/secure/useravatar?ownerId=" + url.QueryEscape(u.key)
	m := map[string]any{
		"self": self, "key": u.key, "name": u.name, "emailAddress": u.email,
		"avatarUrls": map[string]string{
			"16x16": avatar + "&size=xsmall", "24x24": avatar + "&size=small",
			"32x32": avatar + "&size=medium", "48x48": avatar,
		},
		"displayName": u.displayName, "active": u.active, "deleted": false,
		"timeZone": "UTC", "locale": "en_US", "expand": "groups,applicationRoles",
	}
	if !u.lastLogin.IsZero() {
		m["lastLoginTime"] = u.lastLogin.Format(jiraTime)
	}
	ex := strings.Split(expand, ",")
	if slices.Contains(ex, "groups") {
		items := []map[string]string{}
		for _, g := range s.groupNames(u) {
			items = append(items, map[string]string{"name": g, "self": base(r) + jiraAPI + "/group?groupname=" + url.QueryEscape(g)})
		}
		m["groups"] = map[string]any{"size": len(items), "items": items}
	}
	if slices.Contains(ex, "applicationRoles") {
		items := []map[string]string{}
		if s.licensed(u) {
			items = append(items, map[string]string{"key": "jira-software", "name": "Jira Software"})
		}
		m["applicationRoles"] = map[string]any{"size": len(items), "items": items}
	}
	return m
}

func (s *Server) jiraGroup(r *http.Request, g *group) map[string]any {
	return map[string]any{
		"name": g.name, "self": base(r) + jiraAPI + "/group?groupname=" + url.QueryEscape(g.name),
		"users":  map[string]any{"size": g.members.len(), "items": []any{}, "max-results": 50, "start-index": 0, "end-index": 0},
		"expand": "users",
	}
}

func (s *Server) jiraGetUser(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if u := s.jiraTarget(w, r); u != nil {
		writeJSON(w, http.StatusOK, s.jiraUser(r, u, r.URL.Query().Get("expand")))
	}
}

type jiraUserWrite struct {
	Name            *string         `json:"name"`
	Password        string          `json:"password"`
	EmailAddress    *string         `json:"emailAddress"`
	DisplayName     *string         `json:"displayName"`
	Notification    any             `json:"notification"`
	ApplicationKeys *[]string       `json:"applicationKeys"`
	Active          json.RawMessage `json:"active"`
}

func (s *Server) jiraCreateUser(w http.ResponseWriter, r *http.Request) {
	if !s.admin(w, r) {
		return
	}
	var in jiraUserWrite
	if !s.decode(w, r, &in) {
		return
	}
	// Field keys of the validation errors are [U] except "username".
	switch {
	case in.Name == nil || strings.TrimSpace(*in.Name) == "":
		s.fail(w, http.StatusBadRequest, "username", "You must specify a username.")
		return
	case in.DisplayName == nil || strings.TrimSpace(*in.DisplayName) == "":
		s.fail(w, http.StatusBadRequest, "displayName", "You must specify a full name.")
		return
	case in.EmailAddress == nil || !strings.Contains(*in.EmailAddress, "@"):
		s.fail(w, http.StatusBadRequest, "email", "You must specify a valid email address.")
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.lookup(*in.Name) != nil {
		s.fail(w, http.StatusBadRequest, "username", "A user with that username already exists.")
		return
	}
	// Jira stores usernames lower-cased ([U] in the reference).
	u := &user{name: lower(*in.Name), displayName: *in.DisplayName, email: *in.EmailAddress, active: true, password: in.Password}
	s.insert(u)
	// Omitted applicationKeys give default access; an explicit empty
	// list gives none ([U] for DC, stated for Cloud).
	if s.defaultGroup != "" && (in.ApplicationKeys == nil || len(*in.ApplicationKeys) > 0) {
		s.join(u, s.ensureGroup(s.defaultGroup))
	}
	s.log.Info("jira: user created", "user", u.name, "key", u.key)
	writeJSON(w, http.StatusCreated, map[string]any{
		"self": s.jiraUserSelf(r, u), "key": u.key, "name": u.name,
		"emailAddress": u.email, "displayName": u.displayName,
	})
}

// parseActive accepts the documented boolean and the "true"/"false"
// strings atlassian-python-api sends.
func parseActive(raw json.RawMessage) (*bool, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	var b bool
	if err := json.Unmarshal(raw, &b); err == nil {
		return &b, nil
	}
	var str string
	if err := json.Unmarshal(raw, &str); err == nil && (equalFold(str, "true") || equalFold(str, "false")) {
		b = equalFold(str, "true")
		return &b, nil
	}
	return nil, fmt.Errorf("active must be true or false, got %s", raw)
}

func (s *Server) jiraUpdateUser(w http.ResponseWriter, r *http.Request) {
	if !s.admin(w, r) {
		return
	}
	var in jiraUserWrite
	if !s.decode(w, r, &in) {
		return
	}
	active, err := parseActive(in.Active)
	if err != nil {
		s.fail(w, http.StatusBadRequest, "active", err.Error())
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	u := s.jiraTarget(w, r)
	if u == nil {
		return
	}
	if in.Name != nil && *in.Name != "" && lower(*in.Name) != lower(u.name) {
		if s.lookup(*in.Name) != nil {
			s.fail(w, http.StatusBadRequest, "username", "A user with that username already exists.")
			return
		}
		s.rename(u, lower(*in.Name))
	}
	if in.DisplayName != nil {
		u.displayName = *in.DisplayName
	}
	if in.EmailAddress != nil {
		u.email = *in.EmailAddress
	}
	if active != nil {
		u.active = *active
	}
	writeJSON(w, http.StatusOK, s.jiraUser(r, u, ""))
}

func (s *Server) jiraDeleteUser(w http.ResponseWriter, r *http.Request) {
	if !s.admin(w, r) {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if u := s.jiraTarget(w, r); u != nil {
		s.deleteUser(u)
		w.WriteHeader(http.StatusNoContent)
	}
}

// jiraSearch is /user/search: "username" is required and matches a
// substring of name, display name or e-mail; "." matches everyone. Only
// the first searchWindow results can be reached, as on a real instance.
func (s *Server) jiraSearch(w http.ResponseWriter, r *http.Request) {
	const searchWindow = 1000 // older DC; the newest docs say 100 (reference §3.10)
	q := r.URL.Query()
	term := lower(q.Get("username"))
	if term == "" {
		s.fail(w, http.StatusBadRequest, "", "The username query parameter was not provided")
		return
	}
	start, ok := s.qint(w, q, "startAt", 0)
	if !ok {
		return
	}
	limit, ok := s.qint(w, q, "maxResults", 50)
	if !ok {
		return
	}
	end := min(start+min(limit, searchWindow), searchWindow)
	withActive, withInactive := qbool(q, "includeActive", true), qbool(q, "includeInactive", false)
	s.mu.Lock()
	defer s.mu.Unlock()
	out := []map[string]any{}
	n := 0
	for _, k := range s.userIdx.keys() {
		if n >= end {
			break
		}
		u := s.users[k]
		if (u.active && !withActive) || (!u.active && !withInactive) {
			continue
		}
		if term != "." && !strings.Contains(k, term) && !strings.Contains(lower(u.displayName), term) && !strings.Contains(lower(u.email), term) {
			continue
		}
		if n >= start {
			out = append(out, s.jiraUser(r, u, ""))
		}
		n++
	}
	writeJSON(w, http.StatusOK, out)
}

// jiraList is the 10.3+ /user/list stream. The cursor is the last name
// returned, encoded; a cursor that does not decode gives an empty last
// page, never 404 (reference §3.10).
func (s *Server) jiraList(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	limit, ok := s.qint(w, q, "maxResults", 100)
	if !ok {
		return
	}
	limit = min(max(limit, 1), 1000)
	s.mu.Lock()
	defer s.mu.Unlock()
	keys := s.userIdx.keys()
	start := 0
	if c := q.Get("cursor"); c != "" {
		last, err := base64.RawURLEncoding.DecodeString(c)
		if err != nil {
			start = len(keys)
		} else {
			start = s.userIdx.after(string(last))
		}
	}
	start, end := window(start, limit, len(keys))
	values := make([]map[string]any, 0, end-start)
	for _, k := range keys[start:end] {
		values = append(values, s.jiraUser(r, s.users[k], ""))
	}
	self := base(r) + r.URL.RequestURI()
	resp := map[string]any{"self": self, "maxResults": limit, "isLast": end >= len(keys), "values": values}
	if end < len(keys) {
		c := base64.RawURLEncoding.EncodeToString([]byte(keys[end-1]))
		resp["nextCursor"] = c
		resp["nextPage"] = base(r) + jiraAPI + "/user/list?maxResults=" + itoa(limit) + "&cursor=" + c
	}
	writeJSON(w, http.StatusOK, resp)
}

func (s *Server) jiraGroupParam(w http.ResponseWriter, r *http.Request) *group {
	name := r.URL.Query().Get("groupname")
	g := s.group(name)
	if g == nil {
		s.fail(w, http.StatusNotFound, "", fmt.Sprintf("Specified group '%s' does not exist.", name))
	}
	return g
}

func (s *Server) jiraGetGroup(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if g := s.jiraGroupParam(w, r); g != nil {
		writeJSON(w, http.StatusOK, s.jiraGroup(r, g))
	}
}

func (s *Server) jiraCreateGroup(w http.ResponseWriter, r *http.Request) {
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
		s.fail(w, http.StatusBadRequest, "", "You must specify a valid group name.")
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.group(in.Name) != nil {
		// Status and text [U]: the reference expects 400.
		s.fail(w, http.StatusBadRequest, "", "A group or user with this name already exists.")
		return
	}
	writeJSON(w, http.StatusCreated, s.jiraGroup(r, s.ensureGroup(in.Name)))
}

func (s *Server) jiraAddMember(w http.ResponseWriter, r *http.Request) {
	if !s.admin(w, r) {
		return
	}
	var in struct {
		Name string `json:"name"`
	}
	if !s.decode(w, r, &in) {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	g := s.jiraGroupParam(w, r)
	if g == nil {
		return
	}
	u := s.lookup(in.Name)
	if u == nil {
		s.fail(w, http.StatusNotFound, "", fmt.Sprintf("The user named '%s' does not exist", in.Name))
		return
	}
	if !s.join(u, g) {
		// 400 per the reference; the DC text is [U], this is Cloud's.
		s.fail(w, http.StatusBadRequest, "", fmt.Sprintf("Cannot add user. '%s' is already a member of '%s'", u.name, g.name))
		return
	}
	writeJSON(w, http.StatusCreated, s.jiraGroup(r, g))
}

func (s *Server) jiraRemoveMember(w http.ResponseWriter, r *http.Request) {
	if !s.admin(w, r) {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	g := s.jiraGroupParam(w, r)
	if g == nil {
		return
	}
	name := r.URL.Query().Get("username")
	u := s.lookup(name)
	if u == nil {
		s.fail(w, http.StatusNotFound, "", fmt.Sprintf("The user named '%s' does not exist", name))
		return
	}
	if !s.leave(u, g) {
		// [U]: Jira's group service rejects removing a non-member as a
		// validation error, which its REST layer answers with 400.
		s.fail(w, http.StatusBadRequest, "", fmt.Sprintf("Cannot remove user '%s' from group '%s' since user is not a member of '%s'", u.name, g.name, g.name))
		return
	}
	w.WriteHeader(http.StatusOK)
}

// jiraMembers pages a group's direct members ordered by username (the
// emulator has no nested groups). maxResults is capped at 50.
func (s *Server) jiraMembers(w http.ResponseWriter, r *http.Request) {
	if !s.admin(w, r) {
		return
	}
	q := r.URL.Query()
	start, ok := s.qint(w, q, "startAt", 0)
	if !ok {
		return
	}
	limit, ok := s.qint(w, q, "maxResults", 50)
	if !ok {
		return
	}
	limit = min(limit, 50)
	inactive := qbool(q, "includeInactiveUsers", false)
	s.mu.Lock()
	defer s.mu.Unlock()
	g := s.jiraGroupParam(w, r)
	if g == nil {
		return
	}
	keys := g.members.keys()
	if !inactive {
		all := keys
		keys = s.memoized("jira active members\x00"+lower(g.name), func() []string {
			active := make([]string, 0, len(all))
			for _, k := range all {
				if s.users[k].active {
					active = append(active, k)
				}
			}
			return active
		})
	}
	from, to := window(start, limit, len(keys))
	values := make([]map[string]any, 0, to-from)
	for _, k := range keys[from:to] {
		u := s.users[k]
		values = append(values, map[string]any{
			"self": s.jiraUserSelf(r, u), "name": u.name, "key": u.key, "emailAddress": u.email,
			"avatarUrls": map[string]string{}, "displayName": u.displayName, "active": u.active, "timeZone": "UTC",
		})
	}
	resp := map[string]any{
		"self": base(r) + r.URL.RequestURI(), "maxResults": limit, "startAt": from,
		"total": len(keys), "isLast": to >= len(keys), "values": values,
	}
	if to < len(keys) {
		resp["nextPage"] = fmt.Sprintf("%s%s/group/member?groupname=%s&includeInactiveUsers=%t&startAt=%d&maxResults=%d",
			base(r), jiraAPI, url.QueryEscape(g.name), inactive, to, limit)
	}
	writeJSON(w, http.StatusOK, resp)
}

// jiraGroupPicker lists groups whose name contains query, capped like
// jira.ajax.autocomplete.limit (default 20).
func (s *Server) jiraGroupPicker(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	limit, ok := s.qint(w, q, "maxResults", 20)
	if !ok {
		return
	}
	term := lower(q.Get("query"))
	exclude := map[string]bool{}
	for _, e := range q["exclude"] {
		exclude[lower(e)] = true
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	groups := []map[string]any{}
	total := 0
	for _, k := range s.groupIdx.keys() {
		if exclude[k] || !strings.Contains(k, term) {
			continue
		}
		total++
		if len(groups) < limit {
			name := s.groups[k].name
			hl := html.EscapeString(name)
			// Highlight only where lower-casing kept byte offsets.
			if i := strings.Index(k, term); term != "" && len(k) == len(name) {
				hl = html.EscapeString(name[:i]) + "<b>" + html.EscapeString(name[i:i+len(term)]) + "</b>" + html.EscapeString(name[i+len(term):])
			}
			groups = append(groups, map[string]any{"name": name, "html": hl, "labels": []any{}})
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"header": fmt.Sprintf("Showing %d of %d matching groups", len(groups), total),
		"total":  total, "groups": groups,
	})
}
