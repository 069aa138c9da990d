package googletest

import (
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
)

const apiPrefix = "/admin/directory/v1/"

type reply struct {
	status int
	body   any
}

func okBody(body any) reply { return reply{status: http.StatusOK, body: body} }

var statusNames = map[int]string{
	400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
	429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 502: "UNAVAILABLE", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED",
}

// apiError is Google's JSON error envelope (reference §4.4). [U] The
// exact fields per endpoint are unverified; this is the standard shape.
func apiError(status int, domain, reason, msg string) reply {
	return reply{status: status, body: map[string]any{"error": map[string]any{
		"code": status, "message": msg,
		"errors": []any{map[string]any{"message": msg, "domain": domain, "reason": reason}},
		"status": statusNames[status],
	}}}
}

func invalid(what string) reply {
	return apiError(400, "global", "invalid", "Invalid Input: "+what)
}

func notFound(what string) reply {
	return apiError(404, "global", "notFound", "Resource Not Found: "+what)
}

func quotaError(reason string) reply {
	switch reason {
	case "quotaExceeded":
		return apiError(403, "usageLimits", reason, "Queries per user concurrent limit exceeded.")
	case "rateLimitExceeded":
		return apiError(429, "usageLimits", reason, "Rate Limit Exceeded")
	}
	return apiError(403, "usageLimits", "userRateLimitExceeded",
		"Quota exceeded for quota metric 'Queries' and limit 'Queries per minute per user' of service 'admin.googleapis.com'.")
}

type request struct {
	r       *http.Request
	q       url.Values
	segs    []string // after /admin/directory/v1/
	pattern string
	page    int
	tok     issued
}

func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Date", s.clock.Now().UTC().Format(http.TimeFormat))
	if r.URL.Path == "/token" && r.Method == http.MethodPost {
		s.count("POST /token")
		s.write(w, s.token(r), false)
		return
	}
	if !strings.HasPrefix(r.URL.Path, apiPrefix) || r.Method != http.MethodGet {
		s.write(w, s.notUnderstood(r, "unknown path or method"), false)
		return
	}
	req := &request{r: r, q: r.URL.Query(), segs: strings.Split(strings.TrimPrefix(r.URL.Path, apiPrefix), "/"), page: 1}
	pat := slices.Clone(req.segs)
	for i := 1; i < len(pat); i += 2 {
		pat[i] = "{key}"
	}
	req.pattern = "GET " + apiPrefix + strings.Join(pat, "/")
	s.count(req.pattern)
	if c, ok := decodeCursor(req.q.Get("pageToken")); ok {
		req.page = c.Page
	}
	tok, rep, denied := s.authorize(r)
	if denied {
		s.write(w, rep, false)
		return
	}
	req.tok = tok
	if s.concurrency != nil {
		select {
		case s.concurrency <- struct{}{}:
			defer func() { <-s.concurrency }()
		default:
			s.write(w, quotaError("quotaExceeded"), false)
			return
		}
	}
	if rep, limited := s.rate(tok.sub); limited {
		s.write(w, rep, false)
		return
	}
	f := s.fault(r, req.page)
	if f != nil && !f.Truncate {
		reason := f.Reason
		switch {
		case reason != "":
		case f.Status == 403:
			reason = "userRateLimitExceeded"
		case f.Status == 429:
			reason = "rateLimitExceeded"
		default:
			reason = "backendError"
		}
		rep := apiError(f.Status, "global", reason, http.StatusText(f.Status))
		switch reason {
		case "userRateLimitExceeded", "quotaExceeded", "rateLimitExceeded":
			rep = quotaError(reason)
			rep.status = f.Status
		}
		s.write(w, rep, false)
		return
	}
	s.write(w, s.route(req), f != nil)
}

func (s *Server) count(pattern string) { s.lock(func() { s.requests[pattern]++ }) }

func (s *Server) fault(r *http.Request, page int) *Fault {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.clock.Now()
	for _, f := range s.faults {
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
		if f.For > 0 {
			if f.first.IsZero() {
				f.first = now
			}
			if now.Sub(f.first) >= f.For {
				continue
			}
		} else if f.Times > 0 && f.hits >= f.Times {
			continue
		}
		f.hits++
		return f
	}
	return nil
}

// rate applies the per-user queries-per-minute quota (reference §4.4).
func (s *Server) rate(sub string) (reply, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.clock.Now()
	win := s.windows[sub]
	if win == nil || now.Sub(win.start) >= time.Minute {
		win = &window{start: now}
		s.windows[sub] = win
	}
	if win.used >= s.quota {
		return quotaError("userRateLimitExceeded"), true
	}
	win.used++
	return reply{}, false
}

func (s *Server) write(w http.ResponseWriter, rep reply, truncate bool) {
	body, err := json.Marshal(rep.body)
	if err != nil {
		s.fail("encode answer: %v", err)
	}
	w.Header().Set("Content-Type", "application/json; charset=UTF-8")
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
	return invalid("googletest does not understand this request: " + why)
}

func (s *Server) checkParams(req *request, allowed ...string) (reply, bool) {
	for k := range req.q {
		if !slices.Contains(allowed, k) {
			return s.notUnderstood(req.r, "parameter "+k+" is not supported here"), false
		}
	}
	return reply{}, true
}

// authorize checks the bearer token and that its user is an admin.
func (s *Server) authorize(r *http.Request) (issued, reply, bool) {
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	s.mu.Lock()
	defer s.mu.Unlock()
	t, known := s.tokens[tok]
	if !ok || !known || !s.clock.Now().Before(t.expiry) {
		rep := apiError(401, "global", "authError", "Invalid Credentials")
		rep.body.(map[string]any)["error"].(map[string]any)["errors"].([]any)[0].(map[string]any)["location"] = "Authorization"
		return t, rep, true
	}
	// [U] A token for a user who is not an admin (or no sub at all)
	// answers 403 from the API, not from the token endpoint.
	if u := s.findUser(t.sub); u == nil || !u.now().u.IsAdmin {
		return t, apiError(403, "global", "forbidden", "Not Authorized to access this resource/api"), true
	}
	return t, reply{}, false
}

// needScope answers 403 unless the token holds one of the scopes.
func needScope(t issued, scopes ...string) (reply, bool) {
	for _, sc := range scopes {
		if t.scopes[sc] {
			return reply{}, true
		}
	}
	return apiError(403, "global", "insufficientPermissions", "Request had insufficient authentication scopes."), false
}

func (s *Server) route(req *request) reply {
	segs := req.segs
	switch {
	case segs[0] == "users" && len(segs) == 1:
		return s.listUsers(req)
	case segs[0] == "users" && len(segs) == 2:
		return s.getUser(req, segs[1])
	case segs[0] == "groups" && len(segs) == 1:
		return s.listGroups(req)
	case segs[0] == "groups" && len(segs) == 3 && segs[2] == "members":
		return s.listMembers(req, segs[1])
	case segs[0] == "groups" && len(segs) == 4 && segs[2] == "hasMember":
		return s.hasMember(req, segs[1], segs[3])
	}
	return s.notUnderstood(req.r, "unknown path")
}

// maxResults reads the page size: default def, 400 above max
// (reference §4.2, §4.3).
func maxResults(req *request, def, max int) (int, reply, bool) {
	raw := req.q.Get("maxResults")
	if raw == "" {
		return def, reply{}, true
	}
	n, err := strconv.Atoi(raw)
	if err != nil || n < 1 || n > max {
		return 0, invalid("maxResults"), false
	}
	return n, reply{}, true
}

// customerOK checks customer (my_customer or the account's ID).
func customerOK(req *request) (reply, bool) {
	if c := req.q.Get("customer"); c != "my_customer" && c != CustomerID {
		return apiError(400, "global", "badRequest", "Bad Request"), false
	}
	return reply{}, true
}

// paged serves one page of ids after the pageToken and, when more
// remain, a nextPageToken. render returns nil to skip an id.
func (s *Server) paged(req *request, listKey, kind string, ids []string, limit int, render func(id string) map[string]any) reply {
	q := url.Values{}
	for k, v := range req.q {
		if k != "pageToken" {
			q[k] = v
		}
	}
	key := req.r.URL.Path + "?" + q.Encode()
	c := cursor{Query: key, Page: 1}
	if raw := req.q.Get("pageToken"); raw != "" {
		var ok bool
		if c, ok = decodeCursor(raw); !ok || c.Query != key {
			return invalid("pageToken")
		}
	}
	start := 0
	if c.After != "" {
		start = sort.SearchStrings(ids, c.After)
		if start < len(ids) && ids[start] == c.After {
			start++
		}
	}
	var items []any
	last, more := "", false
	for _, id := range ids[start:] {
		item := render(id)
		if item == nil {
			continue
		}
		if len(items) == limit {
			more = true
			break
		}
		items = append(items, item)
		last = id
	}
	out := map[string]any{"kind": kind, "etag": `"` + randomHex(27) + `"`}
	// [U] Google leaves an empty list out of the answer altogether.
	if len(items) > 0 {
		out[listKey] = items
	}
	if more {
		out["nextPageToken"] = encodeCursor(cursor{Query: key, After: last, Page: c.Page + 1})
	}
	return s.project(req, out)
}

// project applies the fields parameter.
func (s *Server) project(req *request, body map[string]any) reply {
	f := req.q.Get("fields")
	if f == "" {
		return okBody(body)
	}
	sel, err := parseFields(f)
	if err != nil {
		return apiError(400, "global", "invalidParameter", "Invalid field selection "+f)
	}
	return okBody(sel.apply(normalize(body)))
}

// projection reads projection and customFieldMask: which custom schemas
// a user shows (nil: none; all: every one).
func projection(req *request) (schemas map[string]bool, all bool, rep reply, ok bool) {
	mask := req.q.Get("customFieldMask")
	switch req.q.Get("projection") {
	case "", "basic":
		if mask != "" {
			return nil, false, invalid("customFieldMask"), false
		}
		return nil, false, reply{}, true
	case "custom":
		if mask == "" {
			return nil, false, invalid("customFieldMask"), false
		}
		return set(strings.Split(mask, ",")...), false, reply{}, true
	case "full":
		return nil, true, reply{}, true
	}
	return nil, false, invalid("projection"), false
}

func (s *Server) renderUser(u *user, sn snapshot, schemas map[string]bool, allSchemas bool) map[string]any {
	x := sn.u
	out := map[string]any{
		"kind": "admin#directory#user", "id": u.id, "etag": `"` + randomHex(27) + `"`,
		"primaryEmail": x.PrimaryEmail,
		"name": map[string]any{"givenName": x.GivenName, "familyName": x.FamilyName,
			"fullName": strings.TrimSpace(x.GivenName + " " + x.FamilyName)},
		"isAdmin": x.IsAdmin, "isDelegatedAdmin": false,
		"lastLoginTime": "1970-01-01T00:00:00.000Z", "creationTime": u.created.UTC().Format("2006-01-02T15:04:05.000Z"),
		"agreedToTerms": true, "suspended": x.Suspended, "archived": x.Archived,
		"changePasswordAtNextLogin": false, "ipWhitelisted": false,
		"emails":     []any{map[string]any{"address": x.PrimaryEmail, "primary": true}},
		"customerId": CustomerID, "orgUnitPath": x.OrgUnitPath,
		"isMailboxSetup": true, "isEnrolledIn2Sv": false, "isEnforcedIn2Sv": false,
		"includeInGlobalAddressList": true,
	}
	if x.Suspended {
		out["suspensionReason"] = x.SuspensionReason
	}
	if len(x.Aliases) > 0 {
		out["aliases"] = x.Aliases
	}
	if len(x.ExternalIDs) > 0 {
		var ids []any
		for _, e := range x.ExternalIDs {
			m := map[string]any{"value": e.Value, "type": e.Type}
			if e.Type == "custom" {
				m["customType"] = e.CustomType
			}
			ids = append(ids, m)
		}
		out["externalIds"] = ids
	}
	if allSchemas || len(schemas) > 0 {
		cs := map[string]any{}
		for name, fields := range x.CustomSchemas {
			if allSchemas || schemas[name] {
				cs[name] = fields
			}
		}
		if len(cs) > 0 {
			out["customSchemas"] = cs
		}
	}
	if sn.deleted {
		out["deletionTime"] = sn.at.UTC().Format("2006-01-02T15:04:05.000Z")
	}
	for k, v := range x.Extra {
		out[k] = v
	}
	return out
}

func (s *Server) listUsers(req *request) reply {
	if rep, good := s.checkParams(req, "customer", "domain", "maxResults", "pageToken", "projection", "customFieldMask",
		"query", "showDeleted", "viewType", "fields"); !good {
		return rep
	}
	if rep, good := needScope(req.tok, ScopeUserReadonly, ScopeUser); !good {
		return rep
	}
	domain := strings.ToLower(req.q.Get("domain"))
	if domain == "" {
		if rep, good := customerOK(req); !good {
			return rep
		}
	}
	if v := req.q.Get("viewType"); v != "" && v != "admin_view" {
		return s.notUnderstood(req.r, "viewType "+v)
	}
	limit, rep, good := maxResults(req, 100, 500)
	if !good {
		return rep
	}
	schemas, all, rep, good := projection(req)
	if !good {
		return rep
	}
	var match func(User) bool
	if q := req.q.Get("query"); q != "" {
		var err error
		if match, err = parseQuery(q); err != nil {
			return s.notUnderstood(req.r, "query: "+err.Error())
		}
	}
	deleted := req.q.Get("showDeleted") == "true"
	s.mu.Lock()
	defer s.mu.Unlock()
	userIDs, _ := s.sorted()
	horizon := s.clock.Now().Add(-s.indexLag)
	return s.paged(req, "users", "admin#directory#users", userIDs, limit, func(id string) map[string]any {
		u := s.users[id]
		sn := u.now()
		if sn.deleted != deleted {
			return nil
		}
		if domain != "" && !strings.HasSuffix(strings.ToLower(sn.u.PrimaryEmail), "@"+domain) {
			return nil
		}
		if match != nil {
			// The search index: the latest state older than the lag.
			i := len(u.history) - 1
			for i >= 0 && u.history[i].at.After(horizon) {
				i--
			}
			if i < 0 || u.history[i].deleted != deleted || !match(u.history[i].u) {
				return nil
			}
		}
		return s.renderUser(u, sn, schemas, all)
	})
}

func (s *Server) getUser(req *request, key string) reply {
	if rep, good := s.checkParams(req, "projection", "customFieldMask", "viewType", "fields"); !good {
		return rep
	}
	if rep, good := needScope(req.tok, ScopeUserReadonly, ScopeUser); !good {
		return rep
	}
	schemas, all, rep, good := projection(req)
	if !good {
		return rep
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	u := s.findUser(key)
	if u == nil {
		return notFound("userKey")
	}
	return s.project(req, s.renderUser(u, u.now(), schemas, all))
}

func (s *Server) renderGroup(g *group) map[string]any {
	out := map[string]any{
		"kind": "admin#directory#group", "id": g.id, "etag": `"` + randomHex(27) + `"`,
		"email": g.Email, "name": g.Name, "description": g.Description,
		"directMembersCount": strconv.Itoa(len(g.members)), "adminCreated": true,
	}
	if len(g.Aliases) > 0 {
		out["aliases"] = g.Aliases
	}
	return out
}

// listGroups serves groups.list by customer, or by userKey: the groups
// a user or a group is a direct member of ([U] direct only).
func (s *Server) listGroups(req *request) reply {
	if rep, good := s.checkParams(req, "customer", "domain", "userKey", "maxResults", "pageToken", "fields"); !good {
		return rep
	}
	if rep, good := needScope(req.tok, ScopeGroupReadonly, ScopeGroup); !good {
		return rep
	}
	limit, rep, good := maxResults(req, 200, 200)
	if !good {
		return rep
	}
	userKey := req.q.Get("userKey")
	if userKey != "" && req.q.Has("customer") {
		return apiError(400, "global", "badRequest", "Bad Request")
	}
	if userKey == "" && !req.q.Has("domain") {
		if rep, good := customerOK(req); !good {
			return rep
		}
	}
	domain := strings.ToLower(req.q.Get("domain"))
	s.mu.Lock()
	defer s.mu.Unlock()
	_, groupIDs := s.sorted()
	var of map[string]bool
	if userKey != "" {
		if u := s.findUser(userKey); u != nil {
			of = u.memberOf
		} else if g := s.findGroup(userKey); g != nil {
			of = g.memberOf
		} else {
			return notFound("userKey")
		}
	}
	return s.paged(req, "groups", "admin#directory#groups", groupIDs, limit, func(id string) map[string]any {
		g := s.groups[id]
		if of != nil && !of[id] {
			return nil
		}
		if domain != "" && !strings.HasSuffix(strings.ToLower(g.Email), "@"+domain) {
			return nil
		}
		return s.renderGroup(g)
	})
}

// entries are a group's member entries, with every nested entry when
// derived (each once; [U] Google's order and duplicate handling).
func (s *Server) entries(g *group, derived bool) map[string]string {
	out := map[string]string{}
	seen := map[string]bool{g.id: true}
	queue := []*group{g}
	for len(queue) > 0 {
		cur := queue[0]
		queue = queue[1:]
		for id, typ := range cur.members {
			out[id] = typ
			if derived && typ == "GROUP" && !seen[id] {
				seen[id] = true
				queue = append(queue, s.groups[id])
			}
		}
	}
	return out
}

func (s *Server) renderMember(id, typ string) map[string]any {
	m := map[string]any{"kind": "admin#directory#member", "etag": `"` + randomHex(27) + `"`, "id": id, "role": "MEMBER", "type": typ}
	switch typ {
	case "USER":
		m["email"] = s.users[id].now().u.PrimaryEmail
		m["status"] = "ACTIVE"
	case "GROUP":
		m["email"] = s.groups[id].Email
	}
	return m
}

func (s *Server) listMembers(req *request, key string) reply {
	if rep, good := s.checkParams(req, "includeDerivedMembership", "maxResults", "pageToken", "roles", "fields"); !good {
		return rep
	}
	if rep, good := needScope(req.tok, ScopeGroupMemberReadonly, ScopeGroupReadonly, ScopeGroup); !good {
		return rep
	}
	limit, rep, good := maxResults(req, 200, 200)
	if !good {
		return rep
	}
	if r := req.q.Get("roles"); r != "" && !slices.Contains(strings.Split(r, ","), "MEMBER") {
		return s.notUnderstood(req.r, "the emulator's members are all MEMBERs")
	}
	derived := false
	switch v := req.q.Get("includeDerivedMembership"); v {
	case "", "false":
	case "true":
		derived = true
	default:
		return invalid("includeDerivedMembership")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	g := s.findGroup(key)
	if g == nil {
		return notFound("groupKey")
	}
	ents := s.entries(g, derived)
	ids := make([]string, 0, len(ents))
	for id := range ents {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return s.paged(req, "members", "admin#directory#members", ids, limit, func(id string) map[string]any {
		return s.renderMember(id, ents[id])
	})
}

// hasMember: direct or nested (reference §4.3).
func (s *Server) hasMember(req *request, key, memberKey string) reply {
	if rep, good := s.checkParams(req, "fields"); !good {
		return rep
	}
	if rep, good := needScope(req.tok, ScopeGroupMemberReadonly, ScopeGroupReadonly, ScopeGroup); !good {
		return rep
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	g := s.findGroup(key)
	if g == nil {
		return notFound("groupKey")
	}
	id := ""
	if u := s.findUser(memberKey); u != nil {
		id = u.id
	} else if m := s.findGroup(memberKey); m != nil {
		id = m.id
	} else {
		return invalid("memberKey")
	}
	_, is := s.entries(g, true)[id]
	return s.project(req, map[string]any{"isMember": is})
}
