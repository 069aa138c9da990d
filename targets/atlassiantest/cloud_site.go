package atlassiantest

import (
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"strings"
)

// The site's Jira Cloud REST API v3 (§24): the part a provisioner uses
// to invite people without the Organizations API.

const jiraCloudAPI = "/rest/api/3"

// Jira Cloud's product keys for POST /user (§24).
var jiraProducts = []string{"jira-core", "jira-servicedesk", "jira-product-discovery", "jira-software"}

// Site is the <site>.atlassian.net host.
func (c *Cloud) Site() http.Handler {
	h := &cloudHost{c: c, name: "site", mux: http.NewServeMux(), auth: c.siteAuth, fail: jiraFail}
	h.mux.HandleFunc("POST "+jiraCloudAPI+"/user", c.siteCreateUser)
	h.mux.HandleFunc("GET "+jiraCloudAPI+"/user", c.siteGetUser)
	return h
}

// jiraFail writes Jira's envelope (§24): errorMessages, errors.
func jiraFail(w http.ResponseWriter, status int, field, msg string) {
	e := map[string]any{"errorMessages": []string{}, "errors": map[string]string{}}
	if field != "" {
		e["errors"] = map[string]string{field: msg}
	} else {
		e["errorMessages"] = []string{msg}
	}
	writeJSON(w, status, e)
}

// siteAuth takes the admin's e-mail and classic API token as Basic
// credentials. A scoped token works only through the api.atlassian.com
// gateway and gets 401 here; so does a Bearer org API key (§23).
func (c *Cloud) siteAuth(w http.ResponseWriter, r *http.Request) bool {
	user, pass, ok := r.BasicAuth()
	if ok && same(user, c.opts.SiteEmail) && same(pass, c.opts.SiteToken) && !c.opts.SiteTokenScoped {
		return true
	}
	jiraFail(w, http.StatusUnauthorized, "", "Client must be authenticated to access this resource.")
	return false
}

// siteUser is a Jira Cloud user; emailAddress is left out when the
// person's privacy settings hide it (§22).
func (c *Cloud) siteUser(r *http.Request, a *cloudAccount) map[string]any {
	u := map[string]any{
		"self":      "https://" + r.Host + jiraCloudAPI + "/user?accountId=" + a.id,
		"accountId": a.id, "accountType": "atlassian", "displayName": a.name,
		"active":   a.accountStatus == "active" && a.membership == "active",
		"timeZone": "UTC", "locale": "en_US",
	}
	if !a.emailHidden {
		u["emailAddress"] = a.email
	}
	return u
}

// hasJiraAccess is whether the account holds a role on one of the
// site's Jira products.
func (c *Cloud) hasJiraAccess(a *cloudAccount) bool {
	for res := range c.holds(a, nil, nil) {
		for _, p := range jiraProducts {
			if res == c.ProductResource(p) {
				return true
			}
		}
	}
	return false
}

// siteCreateUser is POST /rest/api/3/user (§24): an existing user with
// Jira access comes back 201 as is; without access and with no products
// asked, 400; a new address is invited (an account is made, the person
// sets their own name). v3 requires products ([] = no product access).
// The answer at a licence limit is not documented [U: 400 chosen].
func (c *Cloud) siteCreateUser(w http.ResponseWriter, r *http.Request) {
	var in struct {
		EmailAddress string    `json:"emailAddress"`
		Products     *[]string `json:"products"`
	}
	b, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err == nil {
		err = json.Unmarshal(b, &in)
	}
	switch {
	case err != nil:
		jiraFail(w, http.StatusBadRequest, "", "Invalid request payload: "+err.Error())
		return
	case !strings.Contains(in.EmailAddress, "@"):
		jiraFail(w, http.StatusBadRequest, "emailAddress", "Enter a valid email address.")
		return
	case in.Products == nil:
		jiraFail(w, http.StatusBadRequest, "products", "products is required.")
		return
	}
	var roles []CloudRole
	for _, p := range *in.Products {
		if !slices.Contains(jiraProducts, p) {
			jiraFail(w, http.StatusBadRequest, "products", "Unknown product "+p+".")
			return
		}
		roles = append(roles, CloudRole{Resource: c.ProductResource(p), Role: "atlassian/user"})
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	a := c.accountByEmail(in.EmailAddress)
	if a != nil && c.visible(a) && a.membership != "no_membership" && c.hasJiraAccess(a) {
		writeJSON(w, http.StatusCreated, c.siteUser(r, a))
		return
	}
	if a != nil && c.visible(a) && len(roles) == 0 {
		jiraFail(w, http.StatusBadRequest, "", "The user already exists and has no access to Jira; name the products to grant.")
		return
	}
	if res := c.overLimit(c.known(in.EmailAddress), true, roles, nil); res != "" {
		jiraFail(w, http.StatusBadRequest, "", "You've reached the user limit of your licence for "+res+".")
		return
	}
	if a == nil || !c.visible(a) {
		if a != nil {
			c.forget(a)
		}
		a = c.insertAccount("", in.EmailAddress)
	}
	a.membership = "active"
	if a.source == "" {
		a.source = "invited"
	}
	for _, role := range roles {
		a.roles[role] = true
	}
	writeJSON(w, http.StatusCreated, c.siteUser(r, a))
}

// siteGetUser is GET /rest/api/3/user?accountId= (§24).
func (c *Cloud) siteGetUser(w http.ResponseWriter, r *http.Request) {
	id := r.URL.Query().Get("accountId")
	if id == "" {
		jiraFail(w, http.StatusBadRequest, "", "The accountId query parameter needs to be provided.")
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	a := c.accounts[id]
	if !c.visible(a) {
		jiraFail(w, http.StatusNotFound, "", "The user with account ID '"+id+"' does not exist.")
		return
	}
	writeJSON(w, http.StatusOK, c.siteUser(r, a))
}
