package atlassiantest

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
)

// User properties are not in the reference; paths and codes follow
// Jira's documented user-property resource (PUT: 201 new, 200 replaced).
func (s *Server) jiraPropertyKeys(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	u := s.jiraTarget(w, r)
	if u == nil {
		return
	}
	keys := []map[string]string{}
	for _, k := range sortedKeys(u.props) {
		keys = append(keys, map[string]string{"key": k, "self": s.propertySelf(r, u, k)})
	}
	writeJSON(w, http.StatusOK, map[string]any{"keys": keys})
}

func (s *Server) propertySelf(r *http.Request, u *user, k string) string {
	return base(r) + jiraAPI + "/user/properties/" + url.PathEscape(k) + "?username=" + url.QueryEscape(u.name)
}

func (s *Server) jiraGetProperty(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	u := s.jiraTarget(w, r)
	if u == nil {
		return
	}
	k := r.PathValue("propertyKey")
	v, ok := u.props[k]
	if !ok {
		s.fail(w, http.StatusNotFound, "", fmt.Sprintf("The property with key '%s' does not exist.", k))
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"key": k, "value": v})
}

func (s *Server) jiraSetProperty(w http.ResponseWriter, r *http.Request) {
	if !s.admin(w, r) {
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, 32<<10))
	if err != nil || !json.Valid(body) {
		s.fail(w, http.StatusBadRequest, "", "The property value must be valid JSON")
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	u := s.jiraTarget(w, r)
	if u == nil {
		return
	}
	k := r.PathValue("propertyKey")
	_, existed := u.props[k]
	u.props[k] = json.RawMessage(body)
	if existed {
		w.WriteHeader(http.StatusOK)
		return
	}
	w.WriteHeader(http.StatusCreated)
}

func (s *Server) jiraDeleteProperty(w http.ResponseWriter, r *http.Request) {
	if !s.admin(w, r) {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	u := s.jiraTarget(w, r)
	if u == nil {
		return
	}
	k := r.PathValue("propertyKey")
	if _, ok := u.props[k]; !ok {
		s.fail(w, http.StatusNotFound, "", fmt.Sprintf("The property with key '%s' does not exist.", k))
		return
	}
	delete(u.props, k)
	w.WriteHeader(http.StatusNoContent)
}
