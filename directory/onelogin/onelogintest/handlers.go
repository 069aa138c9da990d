package onelogintest

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"mime"
	"net/http"
	"net/url"
	"path"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
)

const stamp = "2006-01-02T15:04:05.000Z"

type reply struct {
	status int
	header http.Header
	body   any
}

func okBody(body any) reply { return reply{status: http.StatusOK, body: body} }

// v1Error is the v1 and auth error envelope (reference §5.4).
func v1Error(status int, typ, msg string) reply {
	return reply{status: status, body: map[string]any{"status": map[string]any{
		"error": true, "code": status, "type": typ, "message": msg}}}
}

// v2Error is the shape some v2 endpoints answer with (reference §5.4
// [U]).
func v2Error(status int, name, msg string) reply {
	return reply{status: status, body: map[string]any{"statusCode": status, "name": name, "message": msg}}
}

type request struct {
	r       *http.Request
	q       url.Values
	segs    []string // after /api/
	pattern string
	page    int
	scope   string
}

func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Date", s.clock.Now().UTC().Format(http.TimeFormat))
	if r.URL.Path == "/auth/oauth2/v2/token" && r.Method == http.MethodPost {
		s.count("POST /auth/oauth2/v2/token")
		s.write(w, s.token(r), false)
		return
	}
	if !strings.HasPrefix(r.URL.Path, "/api/") || r.Method != http.MethodGet {
		s.write(w, s.notUnderstood(r, "unknown path or method"), false)
		return
	}
	req := &request{r: r, q: r.URL.Query(), segs: strings.Split(strings.TrimPrefix(r.URL.Path, "/api/"), "/"), page: 1}
	pat := slices.Clone(req.segs)
	if len(pat) > 2 {
		pat[2] = "{id}"
	}
	req.pattern = "GET /api/" + strings.Join(pat, "/")
	s.count(req.pattern)
	if c, ok := decodeCursor(req.q.Get("cursor")); ok {
		req.page = c.Page
	} else if c, ok := decodeCursor(req.q.Get("after_cursor")); ok {
		req.page = c.Page
	}
	scope, ok := s.authorize(r)
	if !ok {
		s.write(w, v1Error(401, "Unauthorized", "Authentication Failure"), false)
		return
	}
	req.scope = scope
	if rep, limited := s.rate(w); limited {
		s.write(w, rep, false)
		return
	}
	f := s.fault(r, req.page)
	if f != nil && !f.Truncate {
		rep := v1Error(f.Status, http.StatusText(f.Status), http.StatusText(f.Status))
		if f.Status == http.StatusTooManyRequests {
			w.Header().Set("X-RateLimit-Remaining", "0")
			w.Header().Set("X-RateLimit-Reset", strconv.Itoa(int(f.Reset/time.Second)))
		}
		s.write(w, rep, false)
		return
	}
	s.write(w, s.route(req, w), f != nil)
}

func (s *Server) count(pattern string) { s.lock(func() { s.requests[pattern]++ }) }

func (s *Server) fault(r *http.Request, page int) *Fault {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, f := range s.faults {
		if f.Times > 0 && f.hits >= f.Times {
			continue
		}
		if p, prefix := strings.CutSuffix(f.Path, "*"); prefix {
			if !strings.HasPrefix(r.URL.Path, p) {
				continue
			}
		} else if f.Path != r.URL.Path {
			continue
		}
		if f.Page > 0 && f.Page != page {
			continue
		}
		f.hits++
		return f
	}
	return nil
}

// rate applies the account's hourly limit and sets X-RateLimit-* on
// every answer, the reset in seconds remaining (reference §5.4).
func (s *Server) rate(w http.ResponseWriter) (reply, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.clock.Now()
	if s.window.IsZero() || now.Sub(s.window) >= time.Hour {
		s.window, s.used = now, 0
	}
	h := w.Header()
	h.Set("X-RateLimit-Limit", strconv.Itoa(s.hourly))
	reset := s.window.Add(time.Hour).Sub(now)
	h.Set("X-RateLimit-Reset", strconv.Itoa(int((reset+time.Second-1)/time.Second)))
	if s.used >= s.hourly {
		h.Set("X-RateLimit-Remaining", "0")
		// [U] The reference does not show the 429 body; the v1 envelope.
		return v1Error(429, "Too Many Requests", "Rate limit exceeded"), true
	}
	s.used++
	h.Set("X-RateLimit-Remaining", strconv.Itoa(s.hourly-s.used))
	return reply{}, false
}

func (s *Server) write(w http.ResponseWriter, rep reply, truncate bool) {
	for k, v := range rep.header {
		w.Header()[k] = v
	}
	body, err := json.Marshal(rep.body)
	if err != nil {
		s.fail("encode answer: %v", err)
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	if truncate && rep.status == http.StatusOK {
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		w.WriteHeader(http.StatusOK)
		w.Write(body[:len(body)/2])
		return
	}
	w.WriteHeader(rep.status)
	w.Write(body)
}

func (s *Server) notUnderstood(r *http.Request, why string) reply {
	s.fail("request not understood: %s %s: %s", r.Method, r.URL.RequestURI(), why)
	return v2Error(400, "BadRequestError", "onelogintest does not understand this request: "+why)
}

func (s *Server) checkParams(req *request, allowed ...string) (reply, bool) {
	for k := range req.q {
		if !slices.Contains(allowed, k) && !(strings.HasPrefix(k, "custom_attributes.") && slices.Contains(allowed, "custom_attributes.*")) {
			return s.notUnderstood(req.r, "parameter "+k+" is not supported here"), false
		}
	}
	return reply{}, true
}

// authorize accepts "Bearer <token>" and the v1 docs' "bearer:<token>"
// (reference §5.1) and returns the credential's scope.
func (s *Server) authorize(r *http.Request) (string, bool) {
	h := r.Header.Get("Authorization")
	tok, ok := strings.CutPrefix(h, "Bearer ")
	if !ok {
		tok, ok = strings.CutPrefix(h, "bearer:")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	t, known := s.tokens[strings.TrimSpace(tok)]
	if !ok || !known || !s.clock.Now().Before(t.expiry) {
		return "", false
	}
	return t.scope, true
}

// token serves client credentials with HTTP Basic and a JSON body
// (reference §5.1).
func (s *Server) token(r *http.Request) reply {
	id, secret, ok := r.BasicAuth()
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.clients[id]
	if !ok || c == nil || c.secret != secret {
		return v1Error(401, "Unauthorized", "Authentication Failure")
	}
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != "application/json" {
		return v1Error(400, "Bad Request", "Content Type is not supported")
	}
	var body struct {
		GrantType string `json:"grant_type"`
	}
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil || body.GrantType != "client_credentials" {
		return v1Error(400, "Bad Request", "grant_type is incorrect/absent")
	}
	b := make([]byte, 32)
	rand.Read(b)
	access := fmt.Sprintf("%x", b)
	now := s.clock.Now()
	s.tokens[access] = issued{scope: c.scope, expiry: now.Add(36000 * time.Second)}
	return okBody(map[string]any{
		"access_token": access, "created_at": now.UTC().Format(stamp), "expires_in": 36000,
		"refresh_token": base64.RawURLEncoding.EncodeToString(b[:16]), "token_type": "bearer", "account_id": 555555,
	})
}

// allowed reports whether a credential scope may read the endpoint:
// users need any scope, roles and groups "Read all" or "Manage all"
// ([U] the reference does not map scopes to endpoints).
func allowed(scope string, users bool) bool {
	if users {
		return scope != ""
	}
	return scope == ReadAll || scope == ManageAll
}

func (s *Server) route(req *request, w http.ResponseWriter) reply {
	segs := req.segs
	forbidden := v1Error(403, "Forbidden", "Insufficient permission")
	switch {
	case len(segs) == 2 && segs[0] == "2" && segs[1] == "users":
		if !allowed(req.scope, true) {
			return forbidden
		}
		return s.listUsers(req, w)
	case len(segs) == 3 && segs[0] == "2" && segs[1] == "users":
		if !allowed(req.scope, true) {
			return forbidden
		}
		return s.getUser(req, segs[2])
	case len(segs) == 2 && segs[0] == "2" && segs[1] == "roles":
		if !allowed(req.scope, false) {
			return forbidden
		}
		return s.listRoles(req, w)
	case len(segs) == 4 && segs[0] == "2" && segs[1] == "roles" && segs[3] == "users":
		if !allowed(req.scope, false) {
			return forbidden
		}
		return s.roleUsers(req, w, segs[2])
	case len(segs) == 2 && segs[0] == "1" && segs[1] == "groups":
		if !allowed(req.scope, false) {
			return forbidden
		}
		return s.listGroups(req)
	}
	return s.notUnderstood(req.r, "unknown path")
}

func (s *Server) renderUser(u *user) map[string]any {
	x := u.u
	nilIf := func(v string) any {
		if v == "" {
			return nil
		}
		return v
	}
	var groupID any
	if x.GroupID != 0 {
		groupID = x.GroupID
	}
	roles := []any{}
	for _, r := range x.RoleIDs {
		roles = append(roles, r)
	}
	custom := map[string]any{}
	for k, v := range x.CustomAttributes {
		custom[k] = v
	}
	out := map[string]any{
		"id": u.id, "username": nilIf(x.Username), "email": nilIf(x.Email), "firstname": nilIf(x.Firstname), "lastname": nilIf(x.Lastname),
		"title": nilIf(x.Title), "department": nilIf(x.Department), "company": nilIf(x.Company), "phone": nil,
		"state": x.State, "status": x.Status, "group_id": groupID, "role_ids": roles,
		"directory_id": nil, "external_id": nilIf(x.ExternalID), "samaccountname": nilIf(x.Samaccountname),
		"userprincipalname": nilIf(x.Userprincipalname), "distinguished_name": nil, "member_of": nil,
		"manager_user_id": nil, "trusted_idp_id": nil,
		"activated_at": u.createdAt.UTC().Format(stamp), "created_at": u.createdAt.UTC().Format(stamp),
		"updated_at": u.updatedAt.UTC().Format(stamp), "last_login": nil, "password_changed_at": nil,
		"locked_until": nil, "invalid_login_attempts": 0, "custom_attributes": custom,
	}
	if s.noRoles {
		delete(out, "role_ids")
	}
	return out
}

// limit reads the page size: at most 100 ([U] larger values are capped,
// not refused), default 50 [U].
func limit(req *request) (int, reply, bool) {
	raw := req.q.Get("limit")
	if raw == "" {
		return 50, reply{}, true
	}
	n, err := strconv.Atoi(raw)
	if err != nil || n < 1 {
		return 0, v2Error(400, "BadRequestError", "limit must be a positive integer"), false
	}
	return min(n, 100), reply{}, true
}

// paged serves one page of ids after the cursor and sets the v2 paging
// headers (reference §5.4).
func (s *Server) paged(req *request, w http.ResponseWriter, ids []int64, n int, keep func(id int64) bool, render func(id int64) any) reply {
	q := url.Values{}
	for k, v := range req.q {
		if k != "cursor" {
			q[k] = v
		}
	}
	key := req.r.URL.Path + "?" + q.Encode()
	c := cursor{Query: key, Page: 1}
	if raw := req.q.Get("cursor"); raw != "" {
		var ok bool
		if c, ok = decodeCursor(raw); !ok || c.Query != key {
			return v2Error(400, "BadRequestError", "Invalid cursor")
		}
	}
	var items []any
	total := 0
	var last int64
	more := false
	for _, id := range ids {
		if !keep(id) {
			continue
		}
		total++
		if id <= c.After {
			continue
		}
		if len(items) == n {
			more = true
			continue
		}
		items = append(items, render(id))
		last = id
	}
	h := w.Header()
	h.Set("Current-Page", strconv.Itoa(c.Page))
	h.Set("Page-Items", strconv.Itoa(len(items)))
	h.Set("Total-Count", strconv.Itoa(total))
	h.Set("Total-Pages", strconv.Itoa(max(1, (total+n-1)/n)))
	if c.Page > 1 {
		h.Set("Before-Cursor", encodeCursor(cursor{Query: key, After: c.After, Page: c.Page - 1}))
	}
	if more {
		next := encodeCursor(cursor{Query: key, After: last, Page: c.Page + 1})
		h.Set("After-Cursor", next)
		q.Set("cursor", next)
		h.Add("Link", "<"+s.URL+req.r.URL.Path+"?"+q.Encode()+`>; rel="next"`)
	}
	if items == nil {
		items = []any{}
	}
	return okBody(items)
}

// match is a string filter: exact or with * wildcards, ignoring case
// ([U] case sensitivity).
func match(pattern, v string) bool {
	ok, err := path.Match(strings.ToLower(pattern), strings.ToLower(v))
	return err == nil && ok
}

func parseTime(v string) (time.Time, bool) {
	t, err := time.Parse(time.RFC3339Nano, v)
	return t, err == nil
}

func (s *Server) listUsers(req *request, w http.ResponseWriter) reply {
	if rep, good := s.checkParams(req, "limit", "cursor", "updated_since", "updated_until", "created_since", "created_until",
		"email", "username", "firstname", "lastname", "samaccountname", "external_id", "user_ids", "custom_attributes.*"); !good {
		return rep
	}
	n, rep, good := limit(req)
	if !good {
		return rep
	}
	var since, until, cSince, cUntil time.Time
	for k, dst := range map[string]*time.Time{"updated_since": &since, "updated_until": &until, "created_since": &cSince, "created_until": &cUntil} {
		if v := req.q.Get(k); v != "" {
			t, ok := parseTime(v)
			if !ok {
				return v2Error(400, "BadRequestError", k+" must be an ISO 8601 time")
			}
			*dst = t
		}
	}
	var ids map[int64]bool
	if v := req.q.Get("user_ids"); v != "" {
		ids = map[int64]bool{}
		for _, p := range strings.Split(v, ",") {
			id, err := strconv.ParseInt(p, 10, 64)
			if err != nil {
				return v2Error(400, "BadRequestError", "user_ids must be integers")
			}
			ids[id] = true
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	byUpdate := !since.IsZero() || !until.IsZero()
	horizon := s.clock.Now().Add(-s.lag)
	return s.paged(req, w, s.sortedUsers(), n, func(id int64) bool {
		u := s.users[id]
		x := u.u
		switch {
		case byUpdate && u.updatedAt.After(horizon):
			return false
		case !since.IsZero() && u.updatedAt.Before(since), !until.IsZero() && u.updatedAt.After(until),
			!cSince.IsZero() && u.createdAt.Before(cSince), !cUntil.IsZero() && u.createdAt.After(cUntil),
			ids != nil && !ids[id]:
			return false
		}
		for _, f := range []struct{ k, v string }{{"email", x.Email}, {"username", x.Username}, {"firstname", x.Firstname},
			{"lastname", x.Lastname}, {"samaccountname", x.Samaccountname}, {"external_id", x.ExternalID}} {
			if req.q.Has(f.k) && !match(req.q.Get(f.k), f.v) {
				return false
			}
		}
		for k := range req.q {
			if name, ok := strings.CutPrefix(k, "custom_attributes."); ok && !match(req.q.Get(k), x.CustomAttributes[name]) {
				return false
			}
		}
		return true
	}, func(id int64) any { return s.renderUser(s.users[id]) })
}

func (s *Server) getUser(req *request, raw string) reply {
	if rep, good := s.checkParams(req); !good {
		return rep
	}
	id, err := strconv.ParseInt(raw, 10, 64)
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil || s.users[id] == nil {
		return v2Error(404, "NotFoundError", "User not found")
	}
	return okBody(s.renderUser(s.users[id]))
}

func (s *Server) listRoles(req *request, w http.ResponseWriter) reply {
	if rep, good := s.checkParams(req, "limit", "cursor", "name"); !good {
		return rep
	}
	n, rep, good := limit(req)
	if !good {
		return rep
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	ids := make([]int64, 0, len(s.roles))
	for id := range s.roles {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return s.paged(req, w, ids, n, func(id int64) bool {
		return !req.q.Has("name") || match(req.q.Get("name"), s.roles[id].name)
	}, func(id int64) any {
		return map[string]any{"id": id, "name": s.roles[id].name}
	})
}

func (s *Server) roleUsers(req *request, w http.ResponseWriter, raw string) reply {
	if rep, good := s.checkParams(req, "limit", "cursor"); !good {
		return rep
	}
	n, rep, good := limit(req)
	if !good {
		return rep
	}
	rid, _ := strconv.ParseInt(raw, 10, 64)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.roles[rid] == nil {
		return v2Error(404, "NotFoundError", "Role not found")
	}
	return s.paged(req, w, s.sortedUsers(), n, func(id int64) bool {
		return slices.Contains(s.users[id].u.RoleIDs, rid)
	}, func(id int64) any {
		return map[string]any{"id": id, "name": s.users[id].u.Username}
	})
}

// listGroups serves v1 groups in the v1 envelope, 50 a page, paged by
// after_cursor ([U] the reference is unsure of the pagination keys).
func (s *Server) listGroups(req *request) reply {
	if rep, good := s.checkParams(req, "after_cursor"); !good {
		return rep
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	ids := make([]int64, 0, len(s.groups))
	for id := range s.groups {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	c := cursor{Query: "groups", Page: 1}
	if raw := req.q.Get("after_cursor"); raw != "" {
		var ok bool
		if c, ok = decodeCursor(raw); !ok || c.Query != "groups" {
			return v1Error(400, "Bad Request", "Invalid after_cursor")
		}
	}
	start := sort.Search(len(ids), func(i int) bool { return ids[i] > c.After })
	end := min(start+50, len(ids))
	data := []any{}
	for _, id := range ids[start:end] {
		g := s.groups[id]
		data = append(data, map[string]any{"id": g.id, "name": g.name, "reference": nil})
	}
	pag := map[string]any{"before_cursor": nil, "after_cursor": nil, "previous_link": nil, "next_link": nil}
	if end < len(ids) {
		next := encodeCursor(cursor{Query: "groups", After: ids[end-1], Page: c.Page + 1})
		pag["after_cursor"] = next
		pag["next_link"] = s.URL + "/api/1/groups?after_cursor=" + url.QueryEscape(next)
	}
	return okBody(map[string]any{
		"status":     map[string]any{"error": false, "code": 200, "type": "success", "message": "Success"},
		"pagination": pag, "data": data,
	})
}
