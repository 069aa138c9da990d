package atlassiantest

import (
	"fmt"
	"net/http"
	"slices"
)

// Bitbucket global permissions (reference §5.5): each user and group
// holds at most one; any of them grants a seat.

var bbPermissions = []string{"LICENSED_USER", "PROJECT_CREATE", "ADMIN", "SYS_ADMIN"}

func (s *Server) bbUserPermissions(w http.ResponseWriter, r *http.Request) {
	if !s.admin(w, r) {
		return
	}
	start, limit, ok := s.bbPaging(w, r)
	if !ok {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var held []*user
	for _, k := range s.userIdx.keys() {
		if u := s.users[k]; u.perm != "" {
			held = append(held, u)
		}
	}
	from, to := window(start, limit, len(held))
	values := make([]map[string]any, 0, to-from)
	for _, u := range held[from:to] {
		values = append(values, map[string]any{"user": s.bbUser(r, u), "permission": u.perm})
	}
	writeJSON(w, http.StatusOK, bbPage(values, from, limit, to >= len(held)))
}

func (s *Server) bbGroupPermissions(w http.ResponseWriter, r *http.Request) {
	if !s.admin(w, r) {
		return
	}
	start, limit, ok := s.bbPaging(w, r)
	if !ok {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var held []*group
	for _, k := range s.groupIdx.keys() {
		if g := s.groups[k]; g.perm != "" {
			held = append(held, g)
		}
	}
	from, to := window(start, limit, len(held))
	values := make([]map[string]any, 0, to-from)
	for _, g := range held[from:to] {
		values = append(values, map[string]any{"group": map[string]string{"name": g.name}, "permission": g.perm})
	}
	writeJSON(w, http.StatusOK, bbPage(values, from, limit, to >= len(held)))
}

func (s *Server) bbPermissionParam(w http.ResponseWriter, r *http.Request) (string, bool) {
	p := r.URL.Query().Get("permission")
	if !slices.Contains(bbPermissions, p) {
		s.fail(w, http.StatusBadRequest, bbInvalid, fmt.Sprintf("Unknown global permission %q", p))
		return "", false
	}
	return p, true
}

// bbGrantUser sets the user's one global permission (204); 403 when it
// would take a seat beyond the licence.
func (s *Server) bbGrantUser(w http.ResponseWriter, r *http.Request) {
	if !s.admin(w, r) {
		return
	}
	perm, ok := s.bbPermissionParam(w, r)
	if !ok {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	name := r.URL.Query().Get("name")
	u := s.lookup(name)
	if u == nil {
		s.bbNoUser(w, name)
		return
	}
	if !s.licensed(u) && !s.seatsLeft() {
		s.fail(w, http.StatusForbidden, bbLicence, "Granting the permission would exceed the licensed user limit")
		return
	}
	u.perm = perm
	w.WriteHeader(http.StatusNoContent)
}

// bbRevokeUser removes every global permission the user holds directly.
func (s *Server) bbRevokeUser(w http.ResponseWriter, r *http.Request) {
	if !s.admin(w, r) {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	name := r.URL.Query().Get("name")
	u := s.lookup(name)
	if u == nil {
		s.bbNoUser(w, name)
		return
	}
	u.perm = ""
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) bbGrantGroup(w http.ResponseWriter, r *http.Request) {
	if !s.admin(w, r) {
		return
	}
	perm, ok := s.bbPermissionParam(w, r)
	if !ok {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	name := r.URL.Query().Get("name")
	g := s.group(name)
	if g == nil {
		s.bbNoGroup(w, name)
		return
	}
	g.perm = perm
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) bbRevokeGroup(w http.ResponseWriter, r *http.Request) {
	if !s.admin(w, r) {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	name := r.URL.Query().Get("name")
	g := s.group(name)
	if g == nil {
		s.bbNoGroup(w, name)
		return
	}
	g.perm = ""
	w.WriteHeader(http.StatusNoContent)
}
