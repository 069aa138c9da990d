package atlassiantest

import (
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
)

// The Organizations REST API (§26) and the user-management API (§27),
// both on api.atlassian.com behind the organization API key.

const (
	orgV1 = "/admin/v1/orgs/{orgId}"
	orgV2 = "/admin/v2/orgs/{orgId}"
	dirV2 = orgV2 + "/directories/{directoryId}"
	// orgPageMax bounds a page; the real maximum is not documented [U].
	orgPageMax     = 100
	orgPageDefault = 100
)

// Role ids the Organizations API knows (§22); invites also accept
// atlassian/viewer.
var cloudRoles = []string{
	"atlassian/user", "atlassian/admin", "atlassian/guest", "atlassian/customer",
	"atlassian/user-access-admin", "atlassian/contributor", "atlassian/basic",
	"atlassian/stakeholder", "atlassian/org-admin", "atlassian/site-admin",
	"atlassian/ai-access", "atlassian/viewer",
}

// OrgAPI is the api.atlassian.com host: /admin/... and /users/.../manage.
func (c *Cloud) OrgAPI() http.Handler {
	h := &cloudHost{c: c, name: "api", mux: http.NewServeMux(), auth: c.orgAuth, fail: orgFail}
	m := h.mux
	m.HandleFunc("GET "+orgV1+"/users", c.orgManagedUsers)
	m.HandleFunc("POST "+dirV2+"/users/search", c.orgSearchUsers)
	m.HandleFunc("GET "+dirV2+"/users/{accountId}", c.orgGetUser)
	m.HandleFunc("DELETE "+dirV2+"/users/{accountId}", c.orgRemoveUser)
	m.HandleFunc("POST "+dirV2+"/users/{accountId}/suspend", c.orgSuspend(true))
	m.HandleFunc("POST "+dirV2+"/users/{accountId}/restore", c.orgSuspend(false))
	m.HandleFunc("POST "+orgV2+"/users/invite", c.orgInvite)
	m.HandleFunc("POST "+orgV1+"/users/{userId}/roles/assign", c.orgRole(true))
	m.HandleFunc("POST "+orgV1+"/users/{userId}/roles/revoke", c.orgRole(false))
	m.HandleFunc("POST "+dirV2+"/groups/search", c.orgSearchGroups)
	m.HandleFunc("POST "+dirV2+"/groups", c.orgCreateGroup)
	m.HandleFunc("GET "+dirV2+"/groups/{groupId}", c.orgGetGroup)
	m.HandleFunc("DELETE "+dirV2+"/groups/{groupId}", c.orgDeleteGroup)
	m.HandleFunc("POST "+dirV2+"/groups/{groupId}/memberships", c.orgMembership(true))
	m.HandleFunc("DELETE "+dirV2+"/groups/{groupId}/memberships/{accountId}", c.orgMembership(false))
	m.HandleFunc("GET /users/{accountId}/manage", c.manageQuery)
	m.HandleFunc("GET /users/{accountId}/manage/profile", c.manageProfile)
	m.HandleFunc("PATCH /users/{accountId}/manage/profile", c.manageProfile)
	m.HandleFunc("PUT /users/{accountId}/manage/email", c.manageEmail)
	m.HandleFunc("POST /users/{accountId}/manage/lifecycle/{action}", c.manageLifecycle)
	return h
}

// orgFail writes the Organizations API envelope (§26.6): an errors list
// whose status is a string. code "" picks the generic one for status.
func orgFail(w http.ResponseWriter, status int, code, msg string) {
	if code == "" {
		code = orgCode(status)
	}
	writeJSON(w, status, map[string]any{"errors": []map[string]string{{
		"id": newCloudID(0), "status": strconv.Itoa(status), "code": code,
		"title": http.StatusText(status), "detail": msg,
	}}})
}

func orgCode(status int) string {
	switch status {
	case http.StatusBadRequest:
		return "ADMIN-UAM-400-1"
	case http.StatusUnauthorized:
		return "ADMIN-UAM-401-1"
	case http.StatusPaymentRequired:
		return "ADMIN-UAM-402-1"
	case http.StatusForbidden:
		return "ADMIN-UAM-403-1"
	case http.StatusNotFound:
		return "ADMIN-UAM-404-1"
	case http.StatusConflict:
		return "ADMIN-UAM-409-2"
	}
	// 429 and 5xx: the code list of §26.6 has only -500-1; the rate
	// limiter's and the edge's codes are not known [U].
	return "ADMIN-UAM-500-1"
}

// orgAuth accepts only the organization API key as a Bearer token: site
// API tokens (Basic) and OAuth tokens get 401 (§23). A key created with
// scopes is refused by the user-management API with 403 (§23, measured
// by jira.js).
func (c *Cloud) orgAuth(w http.ResponseWriter, r *http.Request) bool {
	c.mu.Lock()
	key, scoped := c.opts.OrgKey, c.opts.OrgKeyScoped
	c.mu.Unlock()
	tok, ok := cutPrefixFold(r.Header.Get("Authorization"), "Bearer ")
	if !ok || !same(tok, key) {
		orgFail(w, http.StatusUnauthorized, "ADMIN-UAM-401-1", "The request is not authenticated: send the organization API key as a Bearer token")
		return false
	}
	if scoped && strings.HasPrefix(r.URL.Path, "/users/") {
		orgFail(w, http.StatusForbidden, "ADMIN-UAM-403-1", "This API key cannot use the user management API")
		return false
	}
	return true
}

// scope checks the org and directory in the path, answering 404 itself.
func (c *Cloud) scope(w http.ResponseWriter, r *http.Request) bool {
	if r.PathValue("orgId") != c.opts.OrgID {
		orgFail(w, http.StatusNotFound, "ADMIN-UAM-404-2", "Organization not found")
		return false
	}
	if d := r.PathValue("directoryId"); d != "" && d != "-" && d != c.opts.DirectoryID {
		orgFail(w, http.StatusNotFound, "ADMIN-UAM-404-1", "Directory not found")
		return false
	}
	return true
}

// orgDecode reads a JSON body, answering 400 itself.
func orgDecode(w http.ResponseWriter, r *http.Request, v any) bool {
	b, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err == nil && len(strings.TrimSpace(string(b))) > 0 {
		err = json.Unmarshal(b, v)
	}
	if err != nil {
		orgFail(w, http.StatusBadRequest, "ADMIN-UAM-400-1", "Invalid request body: "+err.Error())
		return false
	}
	return true
}

// visible is whether the org sees an account: everyone in the directory,
// and managed accounts even after removal (§26.4).
func (c *Cloud) visible(a *cloudAccount) bool {
	return a != nil && (a.membership != "no_membership" || c.managed(a))
}

// status is the composite status of §22.
func (c *Cloud) status(a *cloudAccount) string {
	switch {
	case a.forDeletion:
		return "for_deletion"
	case a.accountStatus != "active":
		return "deactivated"
	case a.membership == "suspended":
		return "suspended"
	case a.membership == "no_membership":
		return "not_invited"
	}
	return "active"
}

func (c *Cloud) userJSON(a *cloudAccount, expand []string) map[string]any {
	claim := "unmanaged"
	if c.managed(a) {
		claim = "managed"
	}
	var source any
	if a.source != "" {
		source = a.source
	}
	var deactivated any
	if !a.deactivatedOn.IsZero() {
		deactivated = a.deactivatedOn.Format(time.RFC3339)
	}
	u := map[string]any{
		"accountId": a.id, "accountType": "atlassian", "status": c.status(a),
		"accountStatus": a.accountStatus, "membershipStatus": a.membership,
		"addedToOrg": a.addedToOrg.Format(time.RFC3339), "name": a.name, "nickname": a.nickname,
		"email": a.email, "emailVerified": true, "claimStatus": claim, "platformRoles": []string{},
		"managementSource": source, "mfaEnabled": false, "deactivatedOn": deactivated,
		"forDeletion": a.forDeletion,
	}
	if slices.Contains(expand, "groups") {
		gs := []map[string]any{}
		for _, id := range c.gorder {
			if a.groups[id] {
				gs = append(gs, map[string]any{"id": id, "name": c.groups[id].name, "description": c.groups[id].description})
			}
		}
		u["groups"] = gs
	}
	if slices.Contains(expand, "productAccess") {
		pa := []map[string]any{}
		for res := range c.holds(a, nil, nil) {
			key := strings.TrimPrefix(res, "ari:cloud:")
			key, _, _ = strings.Cut(key, "::")
			pa = append(pa, map[string]any{"key": key, "id": res})
		}
		slices.SortFunc(pa, func(x, y map[string]any) int { return strings.Compare(x["id"].(string), y["id"].(string)) })
		u["productAccess"] = pa
	}
	return u
}

// orgCursor is what an opaque cursor stands for: the search and where
// the next page starts. Reusing a cursor gives the same page again, so a
// retried call is harmless.
type orgCursor struct {
	Offset int             `json:"o"`
	Query  json.RawMessage `json:"q"`
}

func encodeCursor(offset int, query any) string {
	q, _ := json.Marshal(query)
	b, _ := json.Marshal(orgCursor{Offset: offset, Query: q})
	return base64.RawURLEncoding.EncodeToString(b)
}

func decodeCursor(s string, query any) (int, bool) {
	b, err := base64.RawURLEncoding.DecodeString(s)
	var cur orgCursor
	if err != nil || json.Unmarshal(b, &cur) != nil || cur.Offset < 0 || json.Unmarshal(cur.Query, query) != nil {
		return 0, false
	}
	return cur.Offset, true
}

// orgSearch reads a search request's body into a Q. With a cursor in
// it, the search is the one the cursor stands for (the request's other
// filters are ignored) from the cursor's offset. It answers a request it
// cannot take itself (false).
func orgSearch[Q any](c *Cloud, w http.ResponseWriter, r *http.Request, cursor func(*Q) string) (q Q, offset int, ok bool) {
	if !c.scope(w, r) || !orgDecode(w, r, &q) {
		return q, 0, false
	}
	if cur := cursor(&q); cur != "" {
		var zero Q
		q = zero
		if offset, ok = decodeCursor(cur, &q); !ok {
			orgFail(w, http.StatusBadRequest, "ADMIN-UAM-400-1", "Invalid page cursor")
			return q, 0, false
		}
	}
	return q, offset, true
}

// page cuts n items at offset/limit and writes {data, links}.
func orgPage(w http.ResponseWriter, r *http.Request, data []map[string]any, offset, limit int, query any) {
	if limit <= 0 {
		limit = orgPageDefault
	}
	limit = min(limit, orgPageMax)
	end := min(offset+limit, len(data))
	page := []map[string]any{}
	if offset < len(data) {
		page = data[offset:end]
	}
	links := map[string]any{"self": "https://" + r.Host + r.URL.Path}
	if end < len(data) {
		links["next"] = encodeCursor(end, query)
	}
	writeJSON(w, http.StatusOK, map[string]any{"data": page, "links": links})
}

type userSearch struct {
	Cursor     string   `json:"cursor,omitempty"`
	Limit      int      `json:"limit,omitempty"`
	AccountIDs []string `json:"accountIds,omitempty"`
	GroupIDs   []string `json:"groupIds,omitempty"`
	SearchTerm string   `json:"searchTerm,omitempty"`
	Emails     []string `json:"emails,omitempty"`
	Expand     []string `json:"expand,omitempty"`
}

// orgSearchUsers is POST …/users/search (§26.3): searchTerm and emails
// are mutually exclusive (400); emails match exactly, case-insensitively
// [U for case]; with a cursor the other filters are ignored.
func (c *Cloud) orgSearchUsers(w http.ResponseWriter, r *http.Request) {
	q, offset, ok := orgSearch(c, w, r, func(q *userSearch) string { return q.Cursor })
	if !ok {
		return
	}
	if q.SearchTerm != "" && len(q.Emails) > 0 {
		orgFail(w, http.StatusBadRequest, "ADMIN-UAM-400-1", "searchTerm and emails cannot be used together")
		return
	}
	c.mu.Lock()
	var data []map[string]any
	for _, id := range c.order {
		a := c.accounts[id]
		if !c.visible(a) || !c.matches(a, q) {
			continue
		}
		data = append(data, c.userJSON(a, q.Expand))
	}
	c.mu.Unlock()
	orgPage(w, r, data, offset, q.Limit, q)
}

func (c *Cloud) matches(a *cloudAccount, q userSearch) bool {
	if len(q.AccountIDs) > 0 && !slices.Contains(q.AccountIDs, a.id) {
		return false
	}
	if len(q.Emails) > 0 && !slices.ContainsFunc(q.Emails, func(e string) bool { return strings.EqualFold(e, a.email) }) {
		return false
	}
	if t := lower(q.SearchTerm); t != "" && !strings.Contains(lower(a.name), t) && !strings.Contains(lower(a.email), t) {
		return false
	}
	for _, g := range q.GroupIDs {
		if !a.groups[g] {
			return false
		}
	}
	return true
}

// orgManagedUsers is the v1 list of managed accounts (§26.1), with its
// own snake_case shape and cursor paging.
func (c *Cloud) orgManagedUsers(w http.ResponseWriter, r *http.Request) {
	if !c.scope(w, r) {
		return
	}
	offset := 0
	var q struct{}
	if cur := r.URL.Query().Get("cursor"); cur != "" {
		var ok bool
		if offset, ok = decodeCursor(cur, &q); !ok {
			orgFail(w, http.StatusBadRequest, "ADMIN-UAM-400-1", "Invalid page cursor")
			return
		}
	}
	c.mu.Lock()
	var data []map[string]any
	for _, id := range c.order {
		a := c.accounts[id]
		if !c.managed(a) {
			continue
		}
		data = append(data, map[string]any{
			"account_id": a.id, "account_type": "atlassian", "account_status": a.accountStatus,
			"name": a.name, "email": a.email, "access_billable": billable(a), "product_access": []any{},
		})
	}
	total := len(data)
	c.mu.Unlock()
	end := min(offset+orgPageDefault, total)
	page := []map[string]any{}
	if offset < total {
		page = data[offset:end]
	}
	links := map[string]any{"self": r.URL.Path}
	if end < total {
		links["next"] = encodeCursor(end, q)
	}
	writeJSON(w, http.StatusOK, map[string]any{"data": page, "links": links, "meta": map[string]int{"total": total}})
}

// account finds the path's account among those the org sees, answering
// 404 itself.
func (c *Cloud) account(w http.ResponseWriter, r *http.Request, param string) *cloudAccount {
	a := c.accounts[r.PathValue(param)]
	if !c.visible(a) {
		orgFail(w, http.StatusNotFound, "ADMIN-UAM-404-1", "User not found")
		return nil
	}
	return a
}

// member is the path's accountId among the directory's members, for the
// calls that change a member; it answers 404 itself (nil). The caller
// holds c.mu.
func (c *Cloud) member(w http.ResponseWriter, r *http.Request) *cloudAccount {
	if !c.scope(w, r) {
		return nil
	}
	a := c.account(w, r, "accountId")
	if a != nil && a.membership == "no_membership" {
		orgFail(w, http.StatusNotFound, "ADMIN-UAM-404-1", "User is not in this directory")
		return nil
	}
	return a
}

func (c *Cloud) orgGetUser(w http.ResponseWriter, r *http.Request) {
	if !c.scope(w, r) {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if a := c.account(w, r, "accountId"); a != nil {
		writeJSON(w, http.StatusOK, map[string]any{"data": c.userJSON(a, nil)})
	}
}

// orgRemoveUser removes the person from the directory (§26.4): roles and
// groups go, and a re-invite is needed. Managed accounts stay visible.
func (c *Cloud) orgRemoveUser(w http.ResponseWriter, r *http.Request) {
	c.mu.Lock()
	defer c.mu.Unlock()
	a := c.member(w, r)
	if a == nil {
		return
	}
	for gid := range a.groups {
		delete(c.groups[gid].members, a.id)
	}
	a.groups, a.roles = map[string]bool{}, map[CloudRole]bool{}
	a.membership = "no_membership"
	w.WriteHeader(http.StatusNoContent)
}

// orgSuspend suspends or restores directory access (§26.4): roles and
// groups are kept. Restoring bills the person again, so it can meet the
// licence limit [U: inferred from billing].
func (c *Cloud) orgSuspend(suspend bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		c.mu.Lock()
		defer c.mu.Unlock()
		a := c.member(w, r)
		if a == nil {
			return
		}
		if suspend {
			a.membership = "suspended"
		} else if a.membership == "suspended" {
			if res := c.overLimit(a, a.accountStatus == "active", nil, nil); res != "" {
				licenceLimit(w, res)
				return
			}
			a.membership = "active"
		}
		w.WriteHeader(http.StatusNoContent)
	}
}

func licenceLimit(w http.ResponseWriter, resource string) {
	orgFail(w, http.StatusConflict, "ADMIN-UAM-409-3", "Product licence limit exceeded for "+resource)
}

func validRole(r CloudRole) bool {
	return strings.HasPrefix(r.Resource, "ari:cloud:") && slices.Contains(cloudRoles, r.Role)
}

// orgInvite is POST /v2/orgs/{orgId}/users/invite (§26.3): only for
// orgs with a paid subscription (402 otherwise). A new address gets a
// new account whose name is the address's local part until the person
// sets their own [U]; an address the org knows gets the roles and groups
// (and is added back to the directory after a removal). Afterwards the
// account is active, in the directory, management source "invited"
// (§31.3 [U]). A synced group, an unknown group or a role beyond the
// licence limit refuses the whole invite.
func (c *Cloud) orgInvite(w http.ResponseWriter, r *http.Request) {
	if !c.scope(w, r) {
		return
	}
	var in struct {
		Emails           []string    `json:"emails"`
		PermissionRules  []CloudRole `json:"permissionRules"`
		AdditionalGroups []string    `json:"additionalGroups"`
		SendNotification bool        `json:"sendNotification"`
		NotificationText string      `json:"notificationText"`
	}
	if !orgDecode(w, r, &in) {
		return
	}
	if c.opts.NoPaidSubscription {
		orgFail(w, http.StatusPaymentRequired, "ADMIN-UAM-402-1", "Inviting users through the API needs at least one paid subscription")
		return
	}
	if len(in.Emails) == 0 {
		orgFail(w, http.StatusBadRequest, "ADMIN-UAM-400-1", "emails is required")
		return
	}
	for _, e := range in.Emails {
		if local, domain, ok := strings.Cut(e, "@"); !ok || local == "" || !strings.Contains(domain, ".") {
			orgFail(w, http.StatusBadRequest, "ADMIN-UAM-400-1", "Invalid e-mail address "+strconv.Quote(e))
			return
		}
	}
	for _, pr := range in.PermissionRules {
		if !validRole(pr) {
			orgFail(w, http.StatusBadRequest, "ADMIN-UAM-400-3", "Invalid role "+pr.Role+" for resource "+pr.Resource)
			return
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	var groups []*cloudGroup
	for _, id := range in.AdditionalGroups {
		g := c.groups[id]
		switch {
		case g == nil:
			orgFail(w, http.StatusNotFound, "ADMIN-UAM-404-3", "Group not found: "+id)
			return
		case g.synced:
			syncedGroup(w, g)
			return
		}
		groups = append(groups, g)
	}
	for _, e := range in.Emails {
		if res := c.overLimit(c.known(e), true, in.PermissionRules, groups); res != "" {
			licenceLimit(w, res)
			return
		}
	}
	var out []map[string]any
	for _, e := range in.Emails {
		a := c.accountByEmail(e)
		if a == nil || !c.visible(a) {
			if a != nil {
				c.forget(a) // an unmanaged account the org had lost sight of
			}
			a = c.insertAccount("", e)
		}
		a.membership = "active"
		if a.source == "" {
			a.source = "invited"
		}
		var rr, gr []map[string]any
		for _, pr := range in.PermissionRules {
			a.roles[pr] = true
			rr = append(rr, map[string]any{"resource": pr.Resource, "role": pr.Role, "status": "SUCCESS"})
		}
		for _, g := range groups {
			g.members[a.id], a.groups[g.id] = true, true
			gr = append(gr, map[string]any{"groupId": g.id, "status": "SUCCESS"})
		}
		out = append(out, map[string]any{"id": a.id, "email": a.email,
			"results": []map[string]any{{"roleAssignmentResult": rr, "groupAssignmentResult": gr}}})
	}
	writeJSON(w, http.StatusOK, map[string]any{"data": out})
}

// known is the account the org sees for address e, or nil.
func (c *Cloud) known(e string) *cloudAccount {
	if a := c.accountByEmail(e); c.visible(a) {
		return a
	}
	return nil
}

// orgRole assigns or revokes an app role (§26.3). Assigning a role the
// person holds already is a no-op [U].
func (c *Cloud) orgRole(assign bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if !c.scope(w, r) {
			return
		}
		var in CloudRole
		if !orgDecode(w, r, &in) {
			return
		}
		if !validRole(in) {
			orgFail(w, http.StatusBadRequest, "ADMIN-UAM-400-3", "Invalid role "+in.Role+" for resource "+in.Resource)
			return
		}
		c.mu.Lock()
		defer c.mu.Unlock()
		a := c.account(w, r, "userId")
		if a == nil {
			return
		}
		if assign {
			if a.accountStatus != "active" {
				orgFail(w, http.StatusBadRequest, "ADMIN-UAM-400-2", "The user is inactive")
				return
			}
			if res := c.overLimit(a, billable(a), []CloudRole{in}, nil); res != "" {
				licenceLimit(w, res)
				return
			}
			a.roles[in] = true
		} else {
			delete(a.roles, in)
		}
		w.WriteHeader(http.StatusNoContent)
	}
}

func (c *Cloud) groupJSON(g *cloudGroup) map[string]any {
	managedBy := "admins"
	if g.synced {
		managedBy = "external"
	}
	return map[string]any{
		"id": g.id, "name": g.name, "description": g.description, "directoryId": c.opts.DirectoryID,
		"externalSynced": g.synced, "managedBy": managedBy,
	}
}

type groupSearch struct {
	Cursor     string   `json:"cursor,omitempty"`
	Limit      int      `json:"limit,omitempty"`
	GroupIDs   []string `json:"groupIds,omitempty"`
	GroupNames []string `json:"groupNames,omitempty"`
	SearchTerm string   `json:"searchTerm,omitempty"`
	AccountIDs []string `json:"accountIds,omitempty"`
}

// orgSearchGroups is POST …/groups/search (§26.5); groupNames match
// exactly, case-insensitively [U for case].
func (c *Cloud) orgSearchGroups(w http.ResponseWriter, r *http.Request) {
	q, offset, ok := orgSearch(c, w, r, func(q *groupSearch) string { return q.Cursor })
	if !ok {
		return
	}
	c.mu.Lock()
	var data []map[string]any
	for _, id := range c.gorder {
		g := c.groups[id]
		switch {
		case len(q.GroupIDs) > 0 && !slices.Contains(q.GroupIDs, g.id):
		case len(q.GroupNames) > 0 && !slices.ContainsFunc(q.GroupNames, func(n string) bool { return strings.EqualFold(n, g.name) }):
		case q.SearchTerm != "" && !strings.Contains(lower(g.name), lower(q.SearchTerm)):
		case len(q.AccountIDs) > 0 && !slices.ContainsFunc(q.AccountIDs, func(a string) bool { return g.members[a] }):
		default:
			data = append(data, c.groupJSON(g))
		}
	}
	c.mu.Unlock()
	orgPage(w, r, data, offset, q.Limit, q)
}

// orgCreateGroup creates a group in a directory; the wildcard "-" names
// no directory to create it in [U]. A taken name is 409 [U code].
func (c *Cloud) orgCreateGroup(w http.ResponseWriter, r *http.Request) {
	if !c.scope(w, r) {
		return
	}
	if r.PathValue("directoryId") == "-" {
		orgFail(w, http.StatusBadRequest, "ADMIN-UAM-400-1", "Name a directory to create a group in")
		return
	}
	var in struct {
		Name        string `json:"name"`
		Description string `json:"description"`
	}
	if !orgDecode(w, r, &in) {
		return
	}
	if strings.TrimSpace(in.Name) == "" {
		orgFail(w, http.StatusBadRequest, "ADMIN-UAM-400-1", "name is required")
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.groupByName(in.Name) != nil {
		orgFail(w, http.StatusConflict, "ADMIN-UAM-409-2", "A group with this name already exists")
		return
	}
	g := c.insertGroup("", in.Name, false, nil)
	g.description = in.Description
	writeJSON(w, http.StatusCreated, c.groupJSON(g))
}

func (c *Cloud) group(w http.ResponseWriter, r *http.Request) *cloudGroup {
	g := c.groups[r.PathValue("groupId")]
	if g == nil {
		orgFail(w, http.StatusNotFound, "ADMIN-UAM-404-3", "Group not found")
	}
	return g
}

func (c *Cloud) orgGetGroup(w http.ResponseWriter, r *http.Request) {
	if !c.scope(w, r) {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if g := c.group(w, r); g != nil {
		writeJSON(w, http.StatusOK, map[string]any{"data": c.groupJSON(g)})
	}
}

func (c *Cloud) orgDeleteGroup(w http.ResponseWriter, r *http.Request) {
	if !c.scope(w, r) {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	g := c.group(w, r)
	switch {
	case g == nil:
	case g.synced:
		syncedGroup(w, g)
	default:
		c.deleteGroup(g)
		w.WriteHeader(http.StatusNoContent)
	}
}

// syncedGroup is the refusal for groups the org's IdP sync owns (§26.5);
// the status and code are not documented [U: 400 chosen of 400/409].
func syncedGroup(w http.ResponseWriter, g *cloudGroup) {
	orgFail(w, http.StatusBadRequest, "ADMIN-UAM-400-1",
		"Group "+g.name+" is synced from an identity provider; manage it in the identity provider instead")
}

// orgMembership adds or removes a member (§26.5): the person must be in
// the group's directory; synced groups cannot change; adding can meet
// the licence limit of an app the group grants. Adding a member again is
// a no-op [U]; removing a non-member is 404 [U].
func (c *Cloud) orgMembership(add bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if !c.scope(w, r) {
			return
		}
		var id string
		if add {
			var in struct {
				AccountID string `json:"accountId"`
			}
			if !orgDecode(w, r, &in) {
				return
			}
			id = in.AccountID
		} else {
			id = r.PathValue("accountId")
		}
		c.mu.Lock()
		defer c.mu.Unlock()
		g := c.group(w, r)
		if g == nil {
			return
		}
		a := c.accounts[id]
		if !c.visible(a) {
			orgFail(w, http.StatusNotFound, "ADMIN-UAM-404-1", "User not found")
			return
		}
		if g.synced {
			syncedGroup(w, g)
			return
		}
		if !add {
			if !g.members[a.id] {
				orgFail(w, http.StatusNotFound, "ADMIN-UAM-404-1", "The user is not a member of this group")
				return
			}
			delete(g.members, a.id)
			delete(a.groups, g.id)
			w.WriteHeader(http.StatusNoContent)
			return
		}
		if a.membership == "no_membership" {
			orgFail(w, http.StatusBadRequest, "ADMIN-UAM-400-1", "The user is not in the group's directory")
			return
		}
		if !g.members[a.id] {
			if res := c.overLimit(a, billable(a), nil, []*cloudGroup{g}); res != "" {
				licenceLimit(w, res)
				return
			}
		}
		g.members[a.id], a.groups[g.id] = true, true
		w.WriteHeader(http.StatusNoContent)
	}
}

// managedAccount finds the path's account for the user-management API,
// which serves managed accounts only (§27): others are 403 [U code].
func (c *Cloud) managedAccount(w http.ResponseWriter, r *http.Request) *cloudAccount {
	a := c.accounts[r.PathValue("accountId")]
	switch {
	case a == nil:
		orgFail(w, http.StatusNotFound, "ADMIN-UAM-404-1", "User not found")
		return nil
	case !c.managed(a):
		orgFail(w, http.StatusForbidden, "ADMIN-UAM-403-2", "The account is not managed by this organization")
		return nil
	}
	return a
}

// manageQuery is GET /users/{id}/manage: what the key may do (§27).
func (c *Cloud) manageQuery(w http.ResponseWriter, r *http.Request) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.accounts[r.PathValue("accountId")] == nil {
		orgFail(w, http.StatusNotFound, "ADMIN-UAM-404-1", "User not found")
		return
	}
	allowed := c.managed(c.accounts[r.PathValue("accountId")])
	out := map[string]any{}
	for _, p := range []string{"email.set", "lifecycle.enablement", "lifecycle.delete", "profile", "profile.write", "profile.read", "apiToken.read", "apiToken.delete"} {
		e := map[string]any{"allowed": allowed}
		if !allowed {
			e["reason"] = map[string]string{"key": "not.managed"}
		}
		out[p] = e
	}
	writeJSON(w, http.StatusOK, out)
}

// manageProfile reads or patches the profile of a managed account.
func (c *Cloud) manageProfile(w http.ResponseWriter, r *http.Request) {
	var in map[string]any
	if r.Method == http.MethodPatch && !orgDecode(w, r, &in) {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	a := c.managedAccount(w, r)
	if a == nil {
		return
	}
	for k, v := range in {
		s, ok := v.(string)
		switch {
		case !ok:
			orgFail(w, http.StatusBadRequest, "ADMIN-UAM-400-1", "Field "+k+" must be a string")
			return
		case k == "name":
			a.name = s
		case k == "nickname":
			a.nickname = s
		default:
			orgFail(w, http.StatusBadRequest, "ADMIN-UAM-400-1", "Field "+k+" cannot be changed here")
			return
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"account": map[string]any{
		"account_id": a.id, "name": a.name, "nickname": a.nickname, "email": a.email,
		"account_type": "atlassian", "account_status": a.accountStatus, "email_verified": true,
	}})
}

// manageEmail changes a managed account's address; the new one must be
// on a verified domain (§27). (Atlassian also ends the person's
// sessions; the emulator has none.)
func (c *Cloud) manageEmail(w http.ResponseWriter, r *http.Request) {
	var in struct {
		Email string `json:"email"`
	}
	if !orgDecode(w, r, &in) {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	a := c.managedAccount(w, r)
	if a == nil {
		return
	}
	old := a.email
	a.email = in.Email
	verified := c.managed(a)
	taken := c.accountByEmail(in.Email)
	if !verified || (taken != nil && taken != a) {
		a.email = old
		orgFail(w, http.StatusBadRequest, "ADMIN-UAM-400-1", "The new address must be unused and on a verified domain")
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// manageLifecycle is disable / enable / delete / cancel-delete (§27).
func (c *Cloud) manageLifecycle(w http.ResponseWriter, r *http.Request) {
	if r.Body != nil {
		_, _ = io.Copy(io.Discard, io.LimitReader(r.Body, 1<<20)) // {message?}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	a := c.managedAccount(w, r)
	if a == nil {
		return
	}
	switch r.PathValue("action") {
	case "disable":
		if a.accountStatus == "active" {
			a.accountStatus, a.deactivatedOn = "inactive", c.now().UTC()
		}
	case "enable":
		if a.forDeletion {
			orgFail(w, http.StatusBadRequest, "ADMIN-UAM-400-1", "Cancel the deletion first")
			return
		}
		if a.accountStatus == "inactive" {
			a.accountStatus, a.deactivatedOn = "active", time.Time{}
		}
	case "delete":
		// A 14-day grace period in which the account shows as deactivated.
		a.forDeletion, a.accountStatus = true, "inactive"
	case "cancel-delete":
		a.forDeletion = false
	default:
		orgFail(w, http.StatusNotFound, "ADMIN-UAM-404-1", "No such lifecycle action")
		return
	}
	w.WriteHeader(http.StatusNoContent)
}
