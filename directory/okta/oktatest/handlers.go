package oktatest

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

const stamp = "2006-01-02T15:04:05.000Z"

type reply struct {
	status int
	header http.Header
	body   any
}

func okBody(body any) reply { return reply{status: http.StatusOK, body: body} }

// oktaError is Okta's error body (reference §3.7).
func oktaError(status int, code, summary string) reply {
	b := make([]byte, 12)
	rand.Read(b)
	return reply{status: status, body: map[string]any{
		"errorCode": code, "errorSummary": summary, "errorLink": code,
		"errorId": "oae" + base64.RawURLEncoding.EncodeToString(b), "errorCauses": []any{},
	}}
}

type request struct {
	r       *http.Request
	q       url.Values
	segs    []string // after /api/v1/
	pattern string
	page    int
	bucket  string
}

func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	now := s.clock.Now()
	w.Header().Set("Date", now.UTC().Format(http.TimeFormat))
	if r.URL.Path == "/oauth2/v1/token" && r.Method == http.MethodPost {
		s.count("POST /oauth2/v1/token")
		if rep, limited := s.rate("token", w); limited {
			s.write(w, rep, false)
			return
		}
		s.write(w, s.token(r), false)
		return
	}
	if !strings.HasPrefix(r.URL.Path, "/api/v1/") || r.Method != http.MethodGet {
		s.write(w, s.notUnderstood(r, "unknown path or method"), false)
		return
	}
	req := &request{r: r, q: r.URL.Query(), segs: strings.Split(strings.TrimPrefix(r.URL.Path, "/api/v1/"), "/"), page: 1}
	pat := slices.Clone(req.segs)
	if len(pat) > 1 {
		pat[1] = "{id}"
	}
	req.pattern = "GET /api/v1/" + strings.Join(pat, "/")
	req.bucket = req.segs[0]
	s.count(req.pattern)
	if c, ok := decodeCursor(req.q.Get("after")); ok && c.Page > 0 {
		req.page = c.Page
	}
	if s.concurrency != nil {
		select {
		case s.concurrency <- struct{}{}:
			defer func() { <-s.concurrency }()
		default:
			rep := oktaError(429, "E0000047", "API call exceeded rate limit due to too many requests.")
			rep.header = http.Header{"X-Rate-Limit-Limit": {"0"}, "X-Rate-Limit-Remaining": {"0"},
				"X-Rate-Limit-Reset": {strconv.FormatInt(now.Add(time.Second).Unix(), 10)}}
			s.write(w, rep, false)
			return
		}
	}
	if rep, denied := s.authorize(r, req.bucket); denied {
		s.write(w, rep, false)
		return
	}
	if rep, limited := s.rate(req.bucket, w); limited {
		s.write(w, rep, false)
		return
	}
	f := s.fault(r, req.page)
	if f != nil && !f.Truncate {
		var rep reply
		if f.Status == http.StatusTooManyRequests {
			rep = oktaError(429, "E0000047", "API call exceeded rate limit due to too many requests.")
			w.Header().Set("X-Rate-Limit-Remaining", "0")
			w.Header().Set("X-Rate-Limit-Reset", strconv.FormatInt(now.Add(f.Reset).Unix(), 10))
		} else {
			rep = oktaError(f.Status, "E0000009", "Internal Server Error")
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

// rate applies the per-bucket window and sets X-Rate-Limit-* on every
// answer (reference §3.6).
func (s *Server) rate(bucket string, w http.ResponseWriter) (reply, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.clock.Now()
	win := s.windows[bucket]
	if win == nil || !now.Before(win.reset) {
		win = &window{reset: now.Truncate(time.Second).Add(s.rateWindow)}
		s.windows[bucket] = win
	}
	h := w.Header()
	h.Set("X-Rate-Limit-Limit", strconv.Itoa(s.rateLimit))
	h.Set("X-Rate-Limit-Reset", strconv.FormatInt(win.reset.Unix(), 10))
	if win.used >= s.rateLimit {
		h.Set("X-Rate-Limit-Remaining", "0")
		return oktaError(429, "E0000047", "API call exceeded rate limit due to too many requests."), true
	}
	win.used++
	h.Set("X-Rate-Limit-Remaining", strconv.Itoa(s.rateLimit-win.used))
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
	w.Header().Set("Content-Type", "application/json")
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
	return oktaError(400, "E0000001", "Api validation failed: oktatest does not understand this request: "+why)
}

func (s *Server) checkParams(req *request, allowed ...string) (reply, bool) {
	for k := range req.q {
		if !slices.Contains(allowed, k) {
			return s.notUnderstood(req.r, "parameter "+k+" is not supported here"), false
		}
	}
	return reply{}, true
}

func (s *Server) route(req *request, w http.ResponseWriter) reply {
	segs := req.segs
	switch {
	case segs[0] == "users" && len(segs) == 1:
		return s.listUsers(req, w)
	case segs[0] == "users" && len(segs) == 2:
		return s.getUser(req, segs[1])
	case segs[0] == "users" && len(segs) == 3 && segs[2] == "groups":
		return s.userGroups(req, segs[1])
	case segs[0] == "groups" && len(segs) == 1:
		return s.listGroups(req, w)
	case segs[0] == "groups" && len(segs) == 2:
		return s.getGroup(req, segs[1])
	case segs[0] == "groups" && len(segs) == 3 && segs[2] == "users":
		return s.groupUsers(req, w, segs[1])
	}
	return s.notUnderstood(req.r, "unknown path")
}

func notFound(id, kind string) reply {
	return oktaError(404, "E0000007", fmt.Sprintf("Not found: Resource not found: %s (%s)", id, kind))
}

func invalidSearch(err error) reply {
	r := oktaError(400, "E0000031", "Invalid search criteria.")
	r.body.(map[string]any)["errorCauses"] = []any{map[string]any{"errorSummary": err.Error()}}
	return r
}

func (s *Server) renderUser(u *user, sn snapshot) map[string]any {
	var activated any
	if sn.status != "STAGED" {
		activated = u.created.UTC().Format(stamp)
	}
	return map[string]any{
		"id": u.id, "status": sn.status,
		"created": u.created.UTC().Format(stamp), "activated": activated,
		"statusChanged": sn.statusChanged.UTC().Format(stamp), "lastLogin": nil,
		"lastUpdated": sn.lastUpdated.UTC().Format(stamp), "passwordChanged": nil,
		"type":        map[string]any{"id": "oty1defaulttype0h7"},
		"profile":     sn.profile,
		"credentials": map[string]any{"provider": map[string]any{"type": "OKTA", "name": "OKTA"}},
		"_links":      map[string]any{"self": map[string]any{"href": s.URL + "/api/v1/users/" + u.id}},
	}
}

func (s *Server) renderGroup(g *group) map[string]any {
	oc := "okta:user_group"
	if g.typ == "APP_GROUP" {
		oc = "okta:windows_security_principal"
	}
	return map[string]any{
		"id": g.id, "created": g.created.UTC().Format(stamp), "lastUpdated": g.lastUpdated.UTC().Format(stamp),
		"lastMembershipUpdated": g.lastMembershipUpdated.UTC().Format(stamp),
		"objectClass":           []any{oc}, "type": g.typ,
		"profile": map[string]any{"name": g.name, "description": g.description},
		"_links":  map[string]any{"self": map[string]any{"href": s.URL + "/api/v1/groups/" + g.id}},
	}
}

// userAttr reads an expression attribute of a user snapshot.
func userAttr(u *user, sn snapshot) func(string) (any, bool) {
	return func(a string) (any, bool) {
		switch a {
		case "id":
			return u.id, true
		case "status":
			return sn.status, true
		case "created":
			return u.created.UTC().Format(stamp), true
		case "lastUpdated":
			return sn.lastUpdated.UTC().Format(stamp), true
		case "statusChanged":
			return sn.statusChanged.UTC().Format(stamp), true
		}
		if k, ok := strings.CutPrefix(a, "profile."); ok {
			v, present := sn.profile[k]
			return v, present
		}
		return nil, false
	}
}

// paged serves one page of ids after the `after` cursor and sets the
// Link headers (self and, when more remain, next).
func (s *Server) paged(req *request, w http.ResponseWriter, ids []string, limit int, render func(id string) (any, bool)) reply {
	q := url.Values{}
	for k, v := range req.q {
		if k != "after" {
			q[k] = v
		}
	}
	key := req.r.URL.Path + "?" + q.Encode()
	c := cursor{Query: key, Page: 1}
	if raw := req.q.Get("after"); raw != "" {
		var ok bool
		if c, ok = decodeCursor(raw); !ok || c.Query != key {
			return oktaError(400, "E0000001", "Api validation failed: after: invalid cursor")
		}
	}
	start := 0
	if c.After != "" {
		start = sort.SearchStrings(ids, c.After)
		if start < len(ids) && ids[start] == c.After {
			start++
		}
	}
	out := []any{}
	last, more := "", false
	for _, id := range ids[start:] {
		item, ok := render(id)
		if !ok {
			continue
		}
		if len(out) == limit {
			more = true
			break
		}
		out = append(out, item)
		last = id
	}
	w.Header().Add("Link", "<"+s.URL+req.r.URL.RequestURI()+`>; rel="self"`)
	if more {
		q.Set("after", encodeCursor(cursor{Query: key, After: last, Page: c.Page + 1}))
		w.Header().Add("Link", "<"+s.URL+req.r.URL.Path+"?"+q.Encode()+`>; rel="next"`)
	}
	return okBody(out)
}

func limitParam(req *request, def, max int) (int, reply, bool) {
	raw := req.q.Get("limit")
	if raw == "" {
		return def, reply{}, true
	}
	n, err := strconv.Atoi(raw)
	if err != nil || n < 1 {
		return 0, oktaError(400, "E0000001", "Api validation failed: limit"), false
	}
	return min(n, max), reply{}, true
}

func (s *Server) listUsers(req *request, w http.ResponseWriter) reply {
	if rep, good := s.checkParams(req, "limit", "after", "filter", "search", "q", "sortBy", "sortOrder"); !good {
		return rep
	}
	filter, search, q := req.q.Get("filter"), req.q.Get("search"), req.q.Get("q")
	if (filter != "") && (search != "") || (q != "" && (filter != "" || search != "")) {
		return s.notUnderstood(req.r, "combined q, filter and search")
	}
	if (req.q.Has("sortBy") || req.q.Has("sortOrder")) && search == "" {
		return s.notUnderstood(req.r, "sortBy without search")
	}
	if req.q.Has("sortBy") {
		return s.notUnderstood(req.r, "the emulator does not sort")
	}
	var e expr
	var err error
	switch {
	case filter != "":
		e, err = parseExpr(filter, userFilter)
	case search != "":
		e, err = parseExpr(search, userSearch)
	}
	if err != nil {
		return invalidSearch(err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	userIDs, _ := s.sorted()
	now := s.clock.Now()
	state := func(u *user) (snapshot, bool) {
		sn := u.now()
		if search != "" {
			// The index: the latest state older than the lag.
			horizon := now.Add(-s.searchLag)
			i := len(u.history) - 1
			for i >= 0 && u.history[i].at.After(horizon) {
				i--
			}
			if i < 0 {
				return snapshot{}, false
			}
			sn = u.history[i]
		}
		return sn, !sn.deleted
	}
	if q != "" {
		// q: a prefix match for pickers; not paged, default 10, no
		// DEPROVISIONED (reference §3.2).
		limit, rep, good := limitParam(req, 10, 200)
		if !good {
			return rep
		}
		out := []any{}
		lq := strings.ToLower(q)
		for _, id := range userIDs {
			u := s.users[id]
			sn, live := state(u)
			if !live || sn.status == "DEPROVISIONED" || len(out) == limit {
				continue
			}
			for _, k := range []string{"firstName", "lastName", "email"} {
				if v, _ := sn.profile[k].(string); strings.HasPrefix(strings.ToLower(v), lq) {
					out = append(out, s.renderUser(u, sn))
					break
				}
			}
		}
		return okBody(out)
	}
	limit, rep, good := limitParam(req, 200, 200)
	if !good {
		return rep
	}
	return s.paged(req, w, userIDs, limit, func(id string) (any, bool) {
		u := s.users[id]
		sn, live := state(u)
		if !live {
			return nil, false
		}
		if e == nil && sn.status == "DEPROVISIONED" {
			return nil, false // the default listing hides them
		}
		if e != nil && !e.eval(userAttr(u, sn)) {
			return nil, false
		}
		return s.renderUser(u, sn), true
	})
}

// findUser resolves an id, a login or a unique short login (the part
// before @).
func (s *Server) findUser(key string) *user {
	if u := s.users[key]; u != nil && !u.now().deleted {
		return u
	}
	var short []*user
	for _, u := range s.users {
		sn := u.now()
		login, _ := sn.profile["login"].(string)
		if sn.deleted {
			continue
		}
		if strings.EqualFold(login, key) {
			return u
		}
		if local, _, _ := strings.Cut(login, "@"); strings.EqualFold(local, key) {
			short = append(short, u)
		}
	}
	if len(short) == 1 {
		return short[0]
	}
	return nil
}

func (s *Server) getUser(req *request, key string) reply {
	if rep, good := s.checkParams(req); !good {
		return rep
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	u := s.findUser(key)
	if u == nil {
		return notFound(key, "User")
	}
	return okBody(s.renderUser(u, u.now()))
}

func (s *Server) userGroups(req *request, key string) reply {
	if rep, good := s.checkParams(req); !good { // no paging (reference §3.4)
		return rep
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	u := s.findUser(key)
	if u == nil {
		return notFound(key, "User")
	}
	ids := make([]string, 0, len(u.memberOf)+1)
	for g := range u.memberOf {
		ids = append(ids, g)
	}
	for id, g := range s.groups {
		if g.typ == "BUILT_IN" && g.name == "Everyone" {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	out := []any{}
	for _, id := range ids {
		out = append(out, s.renderGroup(s.groups[id]))
	}
	return okBody(out)
}

func groupAttr(g *group) func(string) (any, bool) {
	return func(a string) (any, bool) {
		switch a {
		case "id":
			return g.id, true
		case "type":
			return g.typ, true
		case "lastUpdated":
			return g.lastUpdated.UTC().Format(stamp), true
		case "lastMembershipUpdated":
			return g.lastMembershipUpdated.UTC().Format(stamp), true
		case "profile.name":
			return g.name, true
		case "profile.description":
			return g.description, true
		}
		return nil, false
	}
}

func (s *Server) listGroups(req *request, w http.ResponseWriter) reply {
	if rep, good := s.checkParams(req, "limit", "after", "filter", "search", "q"); !good {
		return rep
	}
	var e expr
	var err error
	switch {
	case req.q.Has("filter") && req.q.Has("search"):
		return s.notUnderstood(req.r, "filter and search together")
	case req.q.Has("filter"):
		e, err = parseExpr(req.q.Get("filter"), groupFilter)
	case req.q.Has("search"):
		e, err = parseExpr(req.q.Get("search"), groupSearch)
	}
	if err != nil {
		return invalidSearch(err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	_, groupIDs := s.sorted()
	if q := req.q.Get("q"); q != "" {
		limit, rep, good := limitParam(req, 300, 10000)
		if !good {
			return rep
		}
		out := []any{}
		for _, id := range groupIDs {
			if g := s.groups[id]; strings.HasPrefix(strings.ToLower(g.name), strings.ToLower(q)) && len(out) < limit {
				out = append(out, s.renderGroup(g))
			}
		}
		return okBody(out)
	}
	limit, rep, good := limitParam(req, 10000, 10000)
	if !good {
		return rep
	}
	return s.paged(req, w, groupIDs, limit, func(id string) (any, bool) {
		g := s.groups[id]
		if e != nil && !e.eval(groupAttr(g)) {
			return nil, false
		}
		return s.renderGroup(g), true
	})
}

func (s *Server) getGroup(req *request, id string) reply {
	if rep, good := s.checkParams(req); !good {
		return rep
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	g := s.groups[id]
	if g == nil {
		return notFound(id, "UserGroup")
	}
	return okBody(s.renderGroup(g))
}

func (s *Server) groupUsers(req *request, w http.ResponseWriter, id string) reply {
	if rep, good := s.checkParams(req, "limit", "after"); !good {
		return rep
	}
	limit, rep, good := limitParam(req, 1000, 1000)
	if !good {
		return rep
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	g := s.groups[id]
	if g == nil {
		return notFound(id, "UserGroup")
	}
	var ids []string
	if g.typ == "BUILT_IN" && g.name == "Everyone" {
		userIDs, _ := s.sorted()
		for _, uid := range userIDs {
			if !s.users[uid].now().deleted {
				ids = append(ids, uid)
			}
		}
	} else {
		for uid := range g.members {
			ids = append(ids, uid)
		}
		slices.Sort(ids)
	}
	return s.paged(req, w, ids, limit, func(uid string) (any, bool) {
		u := s.users[uid]
		return s.renderUser(u, u.now()), true
	})
}

// authorize checks SSWS or Bearer credentials and, for Bearer, the scope
// the endpoint family needs.
func (s *Server) authorize(r *http.Request, bucket string) (reply, bool) {
	auth := r.Header.Get("Authorization")
	s.mu.Lock()
	defer s.mu.Unlock()
	invalid := oktaError(401, "E0000011", "Invalid token provided")
	if tok, ok := strings.CutPrefix(auth, "SSWS "); ok {
		if !s.apiTokens[tok] {
			return invalid, true
		}
		return reply{}, false
	}
	tok, ok := strings.CutPrefix(auth, "Bearer ")
	if !ok {
		return invalid, true
	}
	b, known := s.bearers[tok]
	if !known || !s.clock.Now().Before(b.expiry) {
		return invalid, true
	}
	need := "okta.users.read"
	if bucket == "groups" {
		need = "okta.groups.read"
	}
	if !b.scopes[need] {
		rep := oktaError(403, "E0000006", "You do not have permission to perform the requested action")
		rep.header = http.Header{"Www-Authenticate": {`Bearer error="insufficient_scope", scope="` + need + `"`}}
		return rep, true
	}
	return reply{}, false
}

func oauthError(status int, code, desc string) reply {
	return reply{status: status, body: map[string]any{"error": code, "error_description": desc}}
}

// token serves the org authorization server's client credentials grant
// with private_key_jwt (reference §3.1).
func (s *Server) token(r *http.Request) reply {
	if err := r.ParseForm(); err != nil {
		return oauthError(400, "invalid_request", "Malformed request.")
	}
	f := r.PostForm
	if f.Get("grant_type") != "client_credentials" {
		return oauthError(400, "unsupported_grant_type", "The authorization grant type is not supported by the authorization server.")
	}
	if f.Get("client_assertion_type") != "urn:ietf:params:oauth:client-assertion-type:jwt-bearer" || f.Get("client_assertion") == "" {
		return oauthError(401, "invalid_client", "Client authentication failed: a client assertion is required.")
	}
	tok, err := jwt.ParseSigned(f.Get("client_assertion"), []jose.SignatureAlgorithm{
		jose.RS256, jose.RS384, jose.RS512, jose.ES256, jose.ES384, jose.ES512})
	if err != nil || len(tok.Headers) != 1 {
		return oauthError(401, "invalid_client", "The client_assertion is not a valid JWT.")
	}
	var unverified jwt.Claims
	_ = tok.UnsafeClaimsWithoutVerification(&unverified)
	s.mu.Lock()
	defer s.mu.Unlock()
	app := s.apps[unverified.Issuer]
	if app == nil || (f.Get("client_id") != "" && f.Get("client_id") != unverified.Issuer) {
		return oauthError(401, "invalid_client", "The client_id is invalid or does not match the assertion.")
	}
	if app.kid != "" && tok.Headers[0].KeyID != app.kid {
		return oauthError(401, "invalid_client", "The client_assertion signature key (kid) is unknown.")
	}
	var c jwt.Claims
	if err := tok.Claims(app.key, &c); err != nil {
		return oauthError(401, "invalid_client", "The client_assertion signature is invalid.")
	}
	now := s.clock.Now()
	switch {
	case c.Subject != c.Issuer:
		return oauthError(401, "invalid_client", "The client_assertion sub must equal iss.")
	case !c.Audience.Contains(s.URL + "/oauth2/v1/token"):
		return oauthError(401, "invalid_client", "The audience claim for client_assertion must be the endpoint invoked for the request.")
	case c.Expiry == nil || !now.Before(c.Expiry.Time()) || c.Expiry.Time().After(now.Add(time.Hour+time.Minute)):
		return oauthError(401, "invalid_client", "The client_assertion token is expired or expires more than an hour ahead.")
	case c.ID != "" && s.jtis[c.ID]:
		return oauthError(401, "invalid_client", "The client_assertion token has already been used.")
	}
	if c.ID != "" {
		s.jtis[c.ID] = true
	}
	scopes := strings.Fields(f.Get("scope"))
	if len(scopes) == 0 {
		return oauthError(400, "invalid_scope", "The authorization server resource does not have any configured default scopes, 'scope' must be provided.")
	}
	for _, sc := range scopes {
		if !app.scopes[sc] {
			return oauthError(400, "invalid_scope", "The following scopes are not allowed: "+sc)
		}
	}
	b := make([]byte, 24)
	rand.Read(b)
	access := "eyJraWQi." + base64.RawURLEncoding.EncodeToString(b)
	s.bearers[access] = bearer{scopes: set(scopes...), expiry: now.Add(time.Hour)}
	return okBody(map[string]any{"token_type": "Bearer", "expires_in": 3600, "access_token": access, "scope": strings.Join(scopes, " ")})
}
