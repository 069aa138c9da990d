package atlassiantest

import (
	"fmt"
	"net/url"
	"testing"
	"time"
)

func crowdEnv(t *testing.T, mod func(*Options)) *env {
	return newEnv(t, Crowd, func(o *Options) {
		o.Users = []User{{Name: "JDoe", DisplayName: "Jane Doe", Email: "jdoe@example.com", Active: true,
			Groups: []string{"devs"}, LastLogin: time.UnixMilli(1700000000000), Attributes: map[string]string{"dept": "ops"}}}
		o.Groups = []string{"qa"}
		if mod != nil {
			mod(o)
		}
	})
}

func crowdUser(name string) map[string]any {
	return map[string]any{"name": name, "first-name": "Bob", "last-name": "Builder", "display-name": "Bob Builder",
		"email": name + "@example.com", "active": true, "password": map[string]string{"value": "secret"}}
}

// TestCrowdEndpoints walks reference §6 in one stateful sequence.
func TestCrowdEndpoints(t *testing.T) {
	e := crowdEnv(t, nil)
	const p = "/rest/usermanagement/1"
	runSteps(t, e, []step{
		{"get case-insensitive", "GET", p + "/user?username=jdoe", nil, 200, map[string]any{
			"name": "JDoe", "first-name": "Jane", "last-name": "Doe", "display-name": "Jane Doe", "email": "jdoe@example.com",
			"active": true, "link.rel": "self", "password.link.rel": "edit", "password.value": nil, "attributes": nil,
		}},
		{"expand attributes", "GET", p + "/user?username=JDoe&expand=attributes", nil, 200, map[string]any{
			"attributes.attributes.#": 2, "attributes.attributes.0.name": "dept", "attributes.attributes.0.values.0": "ops",
			"attributes.attributes.1.name": "lastAuthenticated", "attributes.attributes.1.values.0": "1700000000000",
		}},
		{"missing", "GET", p + "/user?username=nobody", nil, 404, map[string]any{"reason": "USER_NOT_FOUND"}},
		{"create", "POST", p + "/user", crowdUser("bob"), 201, nil},
		{"create exists", "POST", p + "/user", crowdUser("BOB"), 400, map[string]any{"reason": "INVALID_USER"}},
		{"add to group", "POST", p + "/user/group/direct?username=bob", map[string]string{"name": "devs"}, 201, nil},
		{"already a member", "POST", p + "/user/group/direct?username=bob", map[string]string{"name": "devs"}, 409, map[string]any{"reason": "MEMBERSHIP_ALREADY_EXISTS"}},
		{"group missing", "POST", p + "/user/group/direct?username=bob", map[string]string{"name": "nope"}, 400, map[string]any{"reason": "GROUP_NOT_FOUND"}},
		{"user missing", "POST", p + "/user/group/direct?username=nobody", map[string]string{"name": "devs"}, 404, map[string]any{"reason": "USER_NOT_FOUND"}},
		{"other direction", "POST", p + "/group/user/direct?groupname=qa", map[string]string{"name": "bob"}, 201, nil},
		{"user's groups", "GET", p + "/user/group/direct?username=bob", nil, 200, map[string]any{"groups.#": 2, "groups.0.name": "devs", "groups.1.name": "qa"}},
		{"is member", "GET", p + "/user/group/direct?username=bob&groupname=QA", nil, 200, map[string]any{"name": "qa"}},
		{"group's users", "GET", p + "/group/user/direct?groupname=devs", nil, 200, map[string]any{"users.#": 2, "users.0.name": "bob", "users.1.name": "JDoe"}},
		{"remove", "DELETE", p + "/user/group/direct?username=bob&groupname=qa", nil, 204, nil},
		{"remove non-member", "DELETE", p + "/user/group/direct?username=bob&groupname=qa", nil, 404, map[string]any{"reason": "MEMBERSHIP_NOT_FOUND"}},
		{"remove missing group", "DELETE", p + "/user/group/direct?username=bob&groupname=nope", nil, 404, map[string]any{"reason": "GROUP_NOT_FOUND"}},
		{"not member", "GET", p + "/user/group/direct?username=bob&groupname=qa", nil, 404, map[string]any{"reason": "MEMBERSHIP_NOT_FOUND"}},
		{"create group", "POST", p + "/group", map[string]any{"name": "ops", "type": "GROUP", "active": true}, 201, nil},
		{"create group again", "POST", p + "/group", map[string]any{"name": "OPS"}, 400, map[string]any{"reason": "INVALID_GROUP"}},
		{"get group", "GET", p + "/group?groupname=ops", nil, 200, map[string]any{"name": "ops", "type": "GROUP", "active": true}},
		{"missing group", "GET", p + "/group?groupname=nope", nil, 404, map[string]any{"reason": "GROUP_NOT_FOUND"}},
		{"store attributes", "POST", p + "/user/attribute?username=bob", map[string]any{"attributes": []map[string]any{{"name": "usher.idp", "values": []string{"okta"}}}}, 204, nil},
		{"store with PUT", "PUT", p + "/user/attribute?username=bob", map[string]any{"attributes": []map[string]any{{"name": "dept", "values": []string{"eng"}}}}, 204, nil},
		{"read attributes", "GET", p + "/user/attribute?username=bob", nil, 200, map[string]any{"attributes.#": 2, "attributes.0.name": "dept", "attributes.1.values.0": "okta"}},
		{"delete attribute", "DELETE", p + "/user/attribute?username=bob&attributename=dept", nil, 204, nil},
		{"rename", "POST", p + "/user/rename?username=bob", map[string]string{"new-name": "robert"}, 200, map[string]any{"name": "robert"}},
		{"groups follow rename", "GET", p + "/group/user/direct?groupname=devs&username=ROBERT", nil, 200, map[string]any{"name": "robert"}},
		{"delete", "DELETE", p + "/user?username=robert", nil, 204, nil},
		{"delete missing", "DELETE", p + "/user?username=robert", nil, 404, map[string]any{"reason": "USER_NOT_FOUND"}},
	})
	if u, _ := e.s.User("jdoe"); u.Attributes["dept"] != "ops" {
		t.Fatalf("attributes: %v", u.Attributes)
	}
}

// PUT /user replaces the whole user: what the caller leaves out is
// blanked, so only read-modify-write keeps data (reference §6.3).
func TestCrowdPutReplacesUser(t *testing.T) {
	e := crowdEnv(t, nil)
	const p = "/rest/usermanagement/1/user?username=JDoe"
	runSteps(t, e, []step{
		{"name mismatch", "PUT", p, map[string]any{"name": "other", "active": false}, 400, map[string]any{"reason": "ILLEGAL_ARGUMENT"}},
		{"missing user", "PUT", "/rest/usermanagement/1/user?username=nobody", map[string]any{"name": "nobody"}, 404, nil},
		{"partial deactivate", "PUT", p, map[string]any{"name": "jdoe", "active": false}, 204, nil},
		{"fields blanked", "GET", p, nil, 200, map[string]any{"active": false, "email": "", "display-name": "", "first-name": ""}},
		{"full object", "PUT", p, map[string]any{"name": "JDoe", "first-name": "Jane", "last-name": "Doe", "display-name": "Jane Doe", "email": "j@x.org", "active": true}, 204, nil},
		{"restored", "GET", p, nil, 200, map[string]any{"active": true, "email": "j@x.org", "display-name": "Jane Doe"}},
	})
}

func TestCrowdSearchPaging(t *testing.T) {
	e := crowdEnv(t, func(o *Options) {
		for i := range 25 {
			o.Users = append(o.Users, User{Name: fmt.Sprintf("u%02d", i), Email: fmt.Sprintf("u%02d@x.org", i), Active: i%5 != 0, Groups: []string{"qa"}})
		}
	})
	search := func(restriction string, start, max int, expand string) []any {
		q := url.Values{"entity-type": {"user"}, "start-index": {fmt.Sprint(start)}, "max-results": {fmt.Sprint(max)}, "expand": {expand}}
		if restriction != "" {
			q.Set("restriction", restriction)
		}
		r := e.do("GET", "/rest/usermanagement/1/search?"+q.Encode(), nil)
		if r.status != 200 {
			t.Fatalf("search %q: %d %s", restriction, r.status, r)
		}
		return field(r.json(t), "users").([]any)
	}
	// Page until a short page, the only end signal Crowd gives.
	var all []string
	for start := 0; ; start += 10 {
		page := search("", start, 10, "")
		for _, u := range page {
			all = append(all, field(u, "name").(string))
		}
		if len(page) < 10 {
			break
		}
	}
	if len(all) != 26 || all[0] != "JDoe" || all[25] != "u24" {
		t.Fatalf("all users: %d %v", len(all), all)
	}
	inactive := search("active=false", 0, 100, "user")
	if len(inactive) != 5 || field(inactive[0], "active") != false || field(inactive[0], "email") != "u00@x.org" {
		t.Fatalf("inactive: %v", inactive)
	}
	if got := search(`name="u1*" and active=true`, 1, 3, ""); len(got) != 3 || field(got[0], "name") != "u12" {
		t.Fatalf("prefix search: %v", got)
	}
	if r := e.do("GET", "/rest/usermanagement/1/search?entity-type=user&restriction=color%3Dred", nil); r.status != 400 {
		t.Fatalf("unknown property: %d", r.status)
	}
	v := e.do("GET", "/rest/usermanagement/1/search?entity-type=group", nil).json(t)
	if field(v, "groups.#") != 2 || field(v, "groups.0.name") != "devs" {
		t.Fatalf("groups: %v", v)
	}
	v = e.do("GET", "/rest/usermanagement/1/group/user/direct?groupname=qa&start-index=20&max-results=10", nil).json(t)
	if field(v, "users.#") != 5 || field(v, "users.0.name") != "u20" {
		t.Fatalf("members page: %v", v)
	}
}
