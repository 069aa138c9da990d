package graphtest

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
)

// Properties the emulator knows (reference §2.2, §2.4). A $select or
// $filter naming anything else is refused the way Graph refuses it.
var (
	userProps = set("id", "userPrincipalName", "mail", "displayName", "givenName", "surname",
		"accountEnabled", "businessPhones", "jobTitle", "mobilePhone", "officeLocation",
		"preferredLanguage", "onPremisesSamAccountName", "onPremisesUserPrincipalName",
		"onPremisesDistinguishedName", "onPremisesSecurityIdentifier", "onPremisesImmutableId",
		"onPremisesSyncEnabled", "onPremisesDomainName", "onPremisesExtensionAttributes",
		"employeeLeaveDateTime", "employeeHireDate", "employeeId", "employeeType", "department",
		"companyName", "userType", "createdDateTime", "deletedDateTime", "mailNickname",
		"otherMails", "proxyAddresses", "city", "country", "state", "usageLocation")
	// Properties Graph serves only on a single user: 501 on a collection.
	singleUserProps = set("aboutMe", "skills", "mailboxSettings", "birthday", "hireDate",
		"interests", "mySite", "pastProjects", "preferredName", "responsibilities", "schools")
	defaultUserProps = []string{"businessPhones", "displayName", "givenName", "id", "jobTitle",
		"mail", "mobilePhone", "officeLocation", "preferredLanguage", "surname", "userPrincipalName"}
	groupProps = set("id", "displayName", "description", "mail", "mailEnabled", "mailNickname",
		"securityEnabled", "groupTypes", "onPremisesSamAccountName", "onPremisesSecurityIdentifier",
		"onPremisesSyncEnabled", "createdDateTime", "visibility", "membershipRule")
	defaultGroupProps = []string{"id", "displayName", "description", "mail", "mailEnabled",
		"mailNickname", "securityEnabled", "groupTypes", "onPremisesSamAccountName",
		"onPremisesSecurityIdentifier", "onPremisesSyncEnabled", "createdDateTime", "visibility"}
)

func set(names ...string) map[string]bool {
	m := make(map[string]bool, len(names))
	for _, n := range names {
		m[n] = true
	}
	return m
}

// reply is an answer before encoding.
type reply struct {
	status int
	header http.Header
	body   any    // JSON-encoded
	text   string // or plain text ($count)
}

func ok(body any) reply { return reply{status: http.StatusOK, body: body} }

// graphError is an answer in the Graph error envelope (reference §2.8).
func graphError(status int, code, msg string) reply {
	return reply{status: status, body: map[string]any{"error": map[string]any{
		"code": code, "message": msg,
		"innerError": map[string]any{
			"date": time.Now().UTC().Format("2006-01-02T15:04:05"), "request-id": uuid.NewString(),
			"client-request-id": uuid.NewString(),
		},
	}}}
}

func defaultCode(status int) string {
	switch status {
	case http.StatusTooManyRequests:
		return "TooManyRequests"
	case http.StatusServiceUnavailable:
		return "serviceNotAvailable"
	case http.StatusGatewayTimeout:
		return "gatewayTimeout"
	case http.StatusNotFound:
		return "Request_ResourceNotFound"
	case http.StatusForbidden:
		return "Authorization_RequestDenied"
	case http.StatusUnauthorized:
		return "InvalidAuthenticationToken"
	}
	return "generalException"
}

// request is one parsed API request.
type request struct {
	r        *http.Request
	q        url.Values
	segs     []string // path after /v1.0/
	advanced bool     // ConsistencyLevel: eventual
	pattern  string
	page     int
}

func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/oauth2/v2.0/token") {
		s.count("POST /{tenant}/oauth2/v2.0/token")
		s.write(w, r, s.token(r), nil)
		return
	}
	if !strings.HasPrefix(r.URL.Path, "/v1.0/") {
		s.write(w, r, s.notUnderstood(r, "unknown path"), nil)
		return
	}
	req := &request{
		r: r, q: r.URL.Query(),
		segs:     strings.Split(strings.TrimPrefix(r.URL.Path, "/v1.0/"), "/"),
		advanced: r.Header.Get("ConsistencyLevel") == "eventual",
		page:     1,
	}
	req.pattern = r.Method + " /v1.0/" + patternOf(req.segs)
	s.count(req.pattern)
	if c, ok := decodeCursor(req.q.Get("$skiptoken")); ok {
		req.page = c.Page
	}
	if rep, failed := s.authorize(r); failed {
		s.write(w, r, rep, nil)
		return
	}
	f := s.fault(r, req.page)
	if f != nil && !f.Truncate {
		rep := graphError(f.Status, f.Code, "Injected fault.")
		if f.RetryAfter != "" {
			rep.header = http.Header{"Retry-After": {f.RetryAfter}}
		}
		s.write(w, r, rep, nil)
		return
	}
	s.write(w, r, s.route(req), f)
}

// patternOf names a path for counting: ids become {id}.
func patternOf(segs []string) string {
	out := slices.Clone(segs)
	if len(out) > 1 && out[1] != "delta" && out[1] != "$count" {
		out[1] = "{id}"
	}
	return strings.Join(out, "/")
}

func (s *Server) count(pattern string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.requests[pattern]++
}

// fault finds the first injected fault that hits this request.
func (s *Server) fault(r *http.Request, page int) *Fault {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, f := range s.faults {
		if f.Times > 0 && f.hits >= f.Times {
			continue
		}
		if f.Method != "" && f.Method != r.Method {
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
		if f.Code == "" {
			f.Code = defaultCode(f.Status)
		}
		return f
	}
	return nil
}

func (s *Server) write(w http.ResponseWriter, r *http.Request, rep reply, truncate *Fault) {
	for k, v := range rep.header {
		w.Header()[k] = v
	}
	w.Header().Set("request-id", uuid.NewString())
	var body []byte
	if rep.body != nil {
		b, err := json.Marshal(rep.body)
		if err != nil {
			s.fail("encode answer: %v", err)
		}
		body = b
		w.Header().Set("Content-Type", "application/json;odata.metadata=minimal;odata.streaming=true;IEEE754Compatible=false;charset=utf-8")
	} else {
		body = []byte(rep.text)
		w.Header().Set("Content-Type", "text/plain")
	}
	if truncate != nil && rep.status == http.StatusOK {
		// Promise the whole body, send half: the client sees the
		// connection end early.
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		w.WriteHeader(http.StatusOK)
		w.Write(body[:len(body)/2])
		return
	}
	w.WriteHeader(rep.status)
	w.Write(body)
}

// notUnderstood fails the test and answers 400: the emulator must not
// guess.
func (s *Server) notUnderstood(r *http.Request, why string) reply {
	s.fail("request not understood: %s %s: %s", r.Method, r.URL.RequestURI(), why)
	return graphError(http.StatusBadRequest, "Request_BadRequest", "graphtest does not understand this request: "+why)
}

func (s *Server) route(req *request) reply {
	r, segs := req.r, req.segs
	get := r.Method == http.MethodGet
	post := r.Method == http.MethodPost
	switch {
	case segs[0] == "users" && len(segs) == 1 && get:
		return s.list(req, false)
	case segs[0] == "groups" && len(segs) == 1 && get:
		return s.list(req, true)
	case (segs[0] == "users" || segs[0] == "groups") && len(segs) == 2 && segs[1] == "$count" && get:
		return s.countPath(req)
	case segs[0] == "users" && len(segs) == 2 && segs[1] == "delta" && get:
		return s.delta(req, false)
	case segs[0] == "groups" && len(segs) == 2 && segs[1] == "delta" && get:
		return s.delta(req, true)
	case segs[0] == "users" && len(segs) == 2 && get:
		return s.getOne(req, false, segs[1])
	case segs[0] == "groups" && len(segs) == 2 && get:
		return s.getOne(req, true, segs[1])
	case segs[0] == "users" && len(segs) >= 3 && get && (segs[2] == "memberOf" || segs[2] == "transitiveMemberOf"):
		return s.memberOf(req, segs[1], segs[2] == "transitiveMemberOf", segs[3:])
	case segs[0] == "groups" && len(segs) >= 3 && get && (segs[2] == "members" || segs[2] == "transitiveMembers"):
		return s.members(req, segs[1], segs[2] == "transitiveMembers", segs[3:])
	case segs[0] == "users" && len(segs) == 3 && post:
		return s.memberAction(req, segs[1], segs[2])
	}
	return s.notUnderstood(r, "unknown path")
}

// checkOptions refuses query options the endpoint does not take.
func (s *Server) checkOptions(req *request, allowed ...string) (reply, bool) {
	for k := range req.q {
		if !slices.Contains(allowed, k) {
			return s.notUnderstood(req.r, "query option "+k+" is not supported here"), false
		}
	}
	return reply{}, true
}

// selection parses $select against the properties of the types listed;
// nil means the default set.
func (s *Server) selection(req *request, collection bool, typeProps ...map[string]bool) ([]string, reply, bool) {
	raw := req.q.Get("$select")
	if raw == "" {
		return nil, reply{}, true
	}
	var out []string
	for _, p := range strings.Split(raw, ",") {
		p = strings.TrimSpace(p)
		known := strings.HasPrefix(p, "extension_")
		for _, tp := range typeProps {
			known = known || tp[p]
		}
		switch {
		case known:
			out = append(out, p)
		case collection && singleUserProps[p]:
			return nil, graphError(http.StatusNotImplemented, "NotImplemented",
				fmt.Sprintf("This operation target is not yet supported. Property '%s' cannot be selected on a collection.", p)), false
		default:
			return nil, graphError(http.StatusBadRequest, "Request_BadRequest",
				fmt.Sprintf("Could not find a property named '%s' on type 'microsoft.graph.directoryObject'.", p)), false
		}
	}
	return out, reply{}, true
}

// project is an object as the client sees it: the selected (or default)
// properties, null where unset.
func project(o *object, sel []string, typed bool) map[string]any {
	props := sel
	if props == nil {
		props = defaultUserProps
		if o.isGroup {
			props = defaultGroupProps
		}
	}
	out := make(map[string]any, len(props)+1)
	for _, p := range props {
		if o.isGroup && !groupProps[p] && !strings.HasPrefix(p, "extension_") {
			continue
		}
		if !o.isGroup && !userProps[p] && !strings.HasPrefix(p, "extension_") {
			continue
		}
		out[p] = o.props[p]
	}
	out["id"] = o.id
	if typed {
		if o.isGroup {
			out["@odata.type"] = "#microsoft.graph.group"
		} else {
			out["@odata.type"] = "#microsoft.graph.user"
		}
	}
	return out
}

func (s *Server) top(req *request) (int, reply, bool) {
	raw := req.q.Get("$top")
	if raw == "" {
		return 100, reply{}, true
	}
	n, err := strconv.Atoi(raw)
	if err != nil || n < 1 || n > 999 {
		return 0, graphError(http.StatusBadRequest, "Request_BadRequest",
			fmt.Sprintf("Invalid page size specified: '%s'. Must be between 1 and 999 inclusive.", raw)), false
	}
	return n, reply{}, true
}

// queryKey is the listing's identity a skip token is bound to: path,
// every option but $skiptoken, and the consistency level.
func queryKey(req *request) string {
	q := url.Values{}
	for k, v := range req.q {
		if k != "$skiptoken" {
			q[k] = v
		}
	}
	return req.r.URL.Path + "?" + q.Encode() + "&cl=" + strconv.FormatBool(req.advanced)
}

// matcher builds the $filter / $search predicate of a listing.
func (s *Server) matcher(req *request, props map[string]bool, what string) (func(*object) bool, reply, bool) {
	counted := req.advanced && req.q.Get("$count") == "true"
	var f filter
	if raw := req.q.Get("$filter"); raw != "" {
		p, err := parseFilter(raw)
		if err != nil {
			return nil, graphError(http.StatusBadRequest, "BadRequest", "Invalid filter clause: "+err.Error()), false
		}
		for _, name := range p.props {
			if !props[name] && !strings.HasPrefix(name, "extension_") && !strings.Contains(name, "/") {
				return nil, graphError(http.StatusBadRequest, "Request_BadRequest",
					fmt.Sprintf("Could not find a property named '%s' on type 'microsoft.graph.%s'.", name, what)), false
			}
		}
		if p.advanced && !counted {
			return nil, graphError(http.StatusBadRequest, "Request_UnsupportedQuery",
				fmt.Sprintf("Unsupported or invalid query filter clause specified for property '%s' of resource '%s'.", p.props[0], what)), false
		}
		f = p.f
	}
	var search func(*object) bool
	if raw := req.q.Get("$search"); raw != "" {
		if !req.advanced {
			return nil, graphError(http.StatusBadRequest, "Request_UnsupportedQuery",
				"Request with $search query parameter only works through MSGraph with a special request header: 'ConsistencyLevel: eventual'"), false
		}
		prop, val, found := strings.Cut(strings.Trim(raw, `"`), ":")
		if !found || !props[prop] {
			return nil, graphError(http.StatusBadRequest, "Request_BadRequest", "Invalid $search: "+raw), false
		}
		val = strings.ToLower(val)
		search = func(o *object) bool {
			v, _ := o.props[prop].(string)
			return strings.Contains(strings.ToLower(v), val)
		}
	}
	return func(o *object) bool {
		if f != nil && !f.eval(func(k string) (any, bool) { return lookup(o.props, k) }) {
			return false
		}
		return search == nil || search(o)
	}, reply{}, true
}

// lookup reads a property path ("onPremisesExtensionAttributes/extensionAttribute1").
func lookup(props map[string]any, path string) (any, bool) {
	head, rest, nested := strings.Cut(path, "/")
	v, ok := props[head]
	if !nested || !ok {
		return v, ok
	}
	m, isMap := v.(map[string]any)
	if !isMap {
		return nil, false
	}
	return lookup(m, rest)
}

// page serves one page of a listing over ids: the items after the skip
// token that pass keep, at most top, and a nextLink when more remain.
func (s *Server) page(req *request, ids []string, top int, keep func(id string) (map[string]any, bool)) reply {
	key := queryKey(req)
	c := cursor{Query: key, Page: 1}
	if raw := req.q.Get("$skiptoken"); raw != "" {
		var okc bool
		c, okc = decodeCursor(raw)
		if !okc || c.Query != key {
			return graphError(http.StatusBadRequest, "Request_BadRequest", "The specified page token value has expired or is invalid for this query.")
		}
	}
	var items []any
	var last string
	more := false
	for i := after(ids, c.After); i < len(ids); i++ {
		item, ok := keep(ids[i])
		if !ok {
			continue
		}
		if len(items) == top {
			more = true
			break
		}
		items = append(items, item)
		last = ids[i]
	}
	body := map[string]any{"@odata.context": s.URL + "/v1.0/$metadata#directoryObjects", "value": orEmpty(items)}
	if more {
		next := cursor{Query: key, After: last, Page: c.Page + 1}
		body["@odata.nextLink"] = s.link(req, "$skiptoken", encodeCursor(next))
	}
	return ok(body)
}

func orEmpty(items []any) []any {
	if items == nil {
		return []any{}
	}
	return items
}

// link is the request's URL with one option set, on this server.
func (s *Server) link(req *request, key, value string) string {
	q := url.Values{}
	for k, v := range req.q {
		q[k] = v
	}
	q.Set(key, value)
	return s.URL + req.r.URL.Path + "?" + q.Encode()
}

func (s *Server) list(req *request, groups bool) reply {
	if rep, good := s.checkOptions(req, "$select", "$filter", "$top", "$skiptoken", "$count", "$search"); !good {
		return rep
	}
	props, what := userProps, "user"
	if groups {
		props, what = groupProps, "group"
	}
	sel, rep, good := s.selection(req, true, props)
	if !good {
		return rep
	}
	top, rep, good := s.top(req)
	if !good {
		return rep
	}
	match, rep, good := s.matcher(req, props, what)
	if !good {
		return rep
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	userIDs, groupIDs := s.sorted()
	ids, table := userIDs, s.users
	if groups {
		ids, table = groupIDs, s.groups
	}
	rep = s.page(req, ids, top, func(id string) (map[string]any, bool) {
		o := table[id]
		if !groups && !s.visible(o, req.advanced) {
			return nil, false
		}
		if !match(o) {
			return nil, false
		}
		return project(o, sel, false), true
	})
	if req.advanced && req.q.Get("$count") == "true" {
		n := 0
		for _, id := range ids {
			if o := table[id]; (groups || s.visible(o, true)) && match(o) {
				n++
			}
		}
		rep.body.(map[string]any)["@odata.count"] = n
	}
	return rep
}

func (s *Server) countPath(req *request) reply {
	if rep, good := s.checkOptions(req, "$filter"); !good {
		return rep
	}
	if !req.advanced {
		return graphError(http.StatusBadRequest, "Request_BadRequest", "$count is not currently supported.")
	}
	groups := req.segs[0] == "groups"
	props, what := userProps, "user"
	if groups {
		props, what = groupProps, "group"
	}
	req.q.Set("$count", "true") // the path form counts by definition
	match, rep, good := s.matcher(req, props, what)
	if !good {
		return rep
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	if groups {
		for _, g := range s.groups {
			if match(g) {
				n++
			}
		}
	} else {
		for _, u := range s.users {
			if s.visible(u, true) && match(u) {
				n++
			}
		}
	}
	return reply{status: http.StatusOK, text: strconv.Itoa(n)}
}

// findUser resolves a path key: an id or a userPrincipalName.
func (s *Server) findUser(key string) *object {
	if u := s.users[key]; u != nil && !u.deleted {
		return u
	}
	if !strings.Contains(key, "@") {
		return nil
	}
	for _, u := range s.users {
		if upn, _ := u.props["userPrincipalName"].(string); !u.deleted && strings.EqualFold(upn, key) {
			return u
		}
	}
	return nil
}

func notFound(key string) reply {
	return graphError(http.StatusNotFound, "Request_ResourceNotFound",
		fmt.Sprintf("Resource '%s' does not exist or one of its queried reference-property objects are not present.", key))
}

func (s *Server) getOne(req *request, group bool, key string) reply {
	if rep, good := s.checkOptions(req, "$select"); !good {
		return rep
	}
	props := userProps
	if group {
		props = groupProps
	}
	sel, rep, good := s.selection(req, false, props)
	if !good {
		return rep
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var o *object
	if group {
		o = s.groups[key]
	} else {
		o = s.findUser(key)
	}
	if o == nil {
		return notFound(key)
	}
	out := project(o, sel, false)
	out["@odata.context"] = s.URL + "/v1.0/$metadata#users/$entity"
	return ok(out)
}

// cast reads an optional OData cast segment (microsoft.graph.user /
// microsoft.graph.group).
func (s *Server) cast(req *request, rest []string) (string, reply, bool) {
	switch {
	case len(rest) == 0:
		return "", reply{}, true
	case len(rest) == 1 && rest[0] == "microsoft.graph.user":
		return "user", reply{}, true
	case len(rest) == 1 && rest[0] == "microsoft.graph.group":
		return "group", reply{}, true
	}
	return "", s.notUnderstood(req.r, "unknown segment after the navigation property"), false
}

// memberOf serves /users/{id}/memberOf and /transitiveMemberOf: the
// groups (the emulator keeps no directory roles or administrative
// units).
func (s *Server) memberOf(req *request, key string, transitive bool, rest []string) reply {
	if rep, good := s.checkOptions(req, "$select", "$top", "$skiptoken", "$filter", "$count"); !good {
		return rep
	}
	cast, rep, good := s.cast(req, rest)
	if !good {
		return rep
	}
	if cast == "user" {
		return s.notUnderstood(req.r, "users are not members of users")
	}
	sel, rep, good := s.selection(req, true, groupProps)
	if !good {
		return rep
	}
	top, rep, good := s.top(req)
	if !good {
		return rep
	}
	// Filters on membership lists are advanced queries.
	match := func(*object) bool { return true }
	if req.q.Get("$filter") != "" {
		if !req.advanced || req.q.Get("$count") != "true" {
			return graphError(http.StatusBadRequest, "Request_UnsupportedQuery", "Filter on memberOf requires advanced query parameters.")
		}
		match, rep, good = s.matcher(req, groupProps, "group")
		if !good {
			return rep
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	u := s.findUser(key)
	if u == nil {
		return notFound(key)
	}
	var ids []string
	if transitive {
		ids = s.transitiveMemberOf(u)
	} else {
		for g := range u.memberOf {
			ids = append(ids, g)
		}
		slices.Sort(ids)
	}
	return s.page(req, ids, top, func(id string) (map[string]any, bool) {
		g := s.groups[id]
		if !match(g) {
			return nil, false
		}
		return project(g, sel, true), true
	})
}

func (s *Server) members(req *request, groupID string, transitive bool, rest []string) reply {
	if rep, good := s.checkOptions(req, "$select", "$top", "$skiptoken", "$count"); !good {
		return rep
	}
	cast, rep, good := s.cast(req, rest)
	if !good {
		return rep
	}
	sel, rep, good := s.selection(req, true, userProps, groupProps)
	if !good {
		return rep
	}
	top, rep, good := s.top(req)
	if !good {
		return rep
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	g := s.groups[groupID]
	if g == nil {
		return notFound(groupID)
	}
	var ids []string
	if transitive {
		users, groups := s.transitiveMembers(g)
		ids = append(users, groups...)
	} else {
		for m := range g.members {
			if u := s.users[m]; u == nil || !u.deleted {
				ids = append(ids, m)
			}
		}
	}
	slices.Sort(ids)
	return s.page(req, ids, top, func(id string) (map[string]any, bool) {
		o := s.obj(id)
		if (cast == "user" && o.isGroup) || (cast == "group" && !o.isGroup) {
			return nil, false
		}
		return project(o, sel, true), true
	})
}

// memberAction serves getMemberGroups, getMemberObjects and
// checkMemberGroups (reference §2.4).
func (s *Server) memberAction(req *request, key, action string) reply {
	if rep, good := s.checkOptions(req); !good {
		return rep
	}
	var body struct {
		SecurityEnabledOnly *bool    `json:"securityEnabledOnly"`
		GroupIDs            []string `json:"groupIds"`
	}
	dec := json.NewDecoder(req.r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&body); err != nil {
		return graphError(http.StatusBadRequest, "Request_BadRequest", "Invalid request body: "+err.Error())
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	u := s.findUser(key)
	if u == nil {
		return notFound(key)
	}
	all := s.transitiveMemberOf(u)
	switch action {
	case "getMemberGroups", "getMemberObjects":
		if body.SecurityEnabledOnly == nil {
			return graphError(http.StatusBadRequest, "Request_BadRequest", "securityEnabledOnly is required.")
		}
		out := []any{}
		for _, id := range all {
			if !*body.SecurityEnabledOnly || s.groups[id].securityOn {
				out = append(out, id)
			}
		}
		if len(out) > 11000 {
			return graphError(http.StatusBadRequest, "DirectoryResultSizeLimitExceeded",
				"The results could not be returned because too many results are available. Use transitiveMemberOf instead.")
		}
		return ok(map[string]any{"value": out})
	case "checkMemberGroups":
		if len(body.GroupIDs) == 0 || len(body.GroupIDs) > 20 {
			return graphError(http.StatusBadRequest, "Request_BadRequest", "groupIds must hold 1 to 20 ids.")
		}
		out := []any{}
		for _, id := range body.GroupIDs {
			if i := sort.SearchStrings(all, id); i < len(all) && all[i] == id {
				out = append(out, id)
			}
		}
		return ok(map[string]any{"value": out})
	}
	return s.notUnderstood(req.r, "unknown action "+action)
}
