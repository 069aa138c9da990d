package atlassiantest

import (
	"fmt"
	"testing"
	"time"
)

func bbEnv(t *testing.T, mod func(*Options)) *env {
	return newEnv(t, Bitbucket, func(o *Options) {
		o.Users = []User{{Name: "John Smith@corp", DisplayName: "John Smith", Email: "john@example.com", Active: true,
			Groups: []string{"stash-users"}, LastLogin: time.UnixMilli(1700000000000)}}
		o.Groups = []string{"devs", "qa"}
		if mod != nil {
			mod(o)
		}
	})
}

// TestBitbucketEndpoints walks reference §5 in one stateful sequence.
func TestBitbucketEndpoints(t *testing.T) {
	e := bbEnv(t, nil)
	const p = "/rest/api/1.0"
	const nf = "com.atlassian.bitbucket.user.NoSuchUserException"
	runSteps(t, e, []step{
		{"slug differs from name", "GET", p + "/users/john_smith_corp", nil, 200, map[string]any{
			"name": "John Smith@corp", "slug": "john_smith_corp", "id": 1, "type": "NORMAL", "active": true,
			"emailAddress": "john@example.com", "links.self.0.href": e.url + "/users/john_smith_corp",
			"lastAuthenticationTimestamp": nil,
		}},
		{"name is not a slug", "GET", p + "/users/nobody", nil, 404, map[string]any{"errors.0.exceptionName": nf, "errors.0.context": nil}},
		{"admin list detailed", "GET", p + "/admin/users?filter=JOHN", nil, 200, map[string]any{
			"size": 1, "isLastPage": true, "values.0.lastAuthenticationTimestamp": float64(1700000000000),
			"values.0.directoryName": "Bitbucket Internal Directory", "values.0.mutableDetails": true, "nextPageStart": nil,
		}},
		{"create via query params", "POST", p + "/admin/users?name=jdoe&password=pw&displayName=Jane%20Doe&emailAddress=jdoe@example.com", nil, 204, nil},
		{"created user", "GET", p + "/users/jdoe", nil, 200, map[string]any{"name": "jdoe", "displayName": "Jane Doe"}},
		{"create exists", "POST", p + "/admin/users?name=JDOE&password=pw&displayName=J&emailAddress=j@x.org", nil, 409, map[string]any{"errors.#": 1}},
		{"create missing email", "POST", p + "/admin/users?name=x&password=pw&displayName=X", nil, 400, map[string]any{
			"errors.0.exceptionName": "com.atlassian.bitbucket.validation.ArgumentValidationException",
		}},
		{"create without default group", "POST", p + "/admin/users?name=nogroup&password=pw&displayName=N&emailAddress=n@x.org&addToDefaultGroup=false", nil, 204, nil},
		{"update uses email", "PUT", p + "/admin/users", map[string]string{"name": "jdoe", "displayName": "Jane Q. Doe", "email": "jane@new.example"}, 200, map[string]any{
			"emailAddress": "jane@new.example", "displayName": "Jane Q. Doe", "deletable": true,
		}},
		{"update missing", "PUT", p + "/admin/users", map[string]string{"name": "nobody", "displayName": "N"}, 404, map[string]any{"errors.0.exceptionName": nf}},
		{"user's groups", "GET", p + "/admin/users/more-members?context=jdoe", nil, 200, map[string]any{"size": 1, "values.0.name": "stash-users"}},
		{"add-groups", "POST", p + "/admin/users/add-groups", map[string]any{"user": "jdoe", "groups": []string{"devs", "qa"}}, 200, nil},
		{"add-groups again", "POST", p + "/admin/users/add-groups", map[string]any{"user": "jdoe", "groups": []string{"devs"}}, 200, nil},
		{"add-groups all or nothing", "POST", p + "/admin/users/add-groups", map[string]any{"user": "nogroup", "groups": []string{"devs", "nope"}}, 404, map[string]any{
			"errors.0.exceptionName": "com.atlassian.bitbucket.user.NoSuchGroupException",
		}},
		{"nothing added", "GET", p + "/admin/users/more-members?context=nogroup", nil, 200, map[string]any{"size": 0}},
		{"add-users", "POST", p + "/admin/groups/add-users", map[string]any{"group": "qa", "users": []string{"nogroup"}}, 200, nil},
		{"group members", "GET", p + "/admin/groups/more-members?context=qa", nil, 200, map[string]any{"size": 2, "values.0.name": "jdoe", "values.1.name": "nogroup"}},
		{"remove-group context=user itemName=group", "POST", p + "/admin/users/remove-group", map[string]string{"context": "jdoe", "itemName": "qa"}, 200, nil},
		{"remove-group non-member", "POST", p + "/admin/users/remove-group", map[string]string{"context": "jdoe", "itemName": "qa"}, 200, nil},
		{"remove-group swapped fields", "POST", p + "/admin/users/remove-group", map[string]string{"context": "qa", "itemName": "jdoe"}, 404, nil},
		{"create group", "POST", p + "/admin/groups?name=ops", nil, 200, map[string]any{"name": "ops", "deletable": true}},
		{"create group again", "POST", p + "/admin/groups?name=OPS", nil, 409, nil},
		{"list groups", "GET", p + "/admin/groups?filter=o", nil, 200, map[string]any{"size": 1, "values.0.name": "ops"}},
		{"no deactivation resource", "PUT", p + "/admin/users/deactivate?name=jdoe", nil, 404, nil},
		{"rename", "POST", p + "/admin/users/rename", map[string]string{"name": "jdoe", "newName": "Jane.Doe"}, 200, map[string]any{"name": "Jane.Doe", "slug": "jane.doe", "id": 2}},
		{"groups follow rename", "GET", p + "/admin/users/more-members?context=jane.doe", nil, 200, map[string]any{"size": 2}},
		{"delete", "DELETE", p + "/admin/users?name=jane.doe", nil, 200, map[string]any{"name": "Jane.Doe"}},
		{"deleted", "GET", p + "/users/jane.doe", nil, 404, nil},
		{"delete missing", "DELETE", p + "/admin/users?name=jane.doe", nil, 404, nil},
	})
}

// Seats follow LICENSED_USER held directly or through a group; removing
// the licence groups is Bitbucket's "deactivation" (reference §5.5).
func TestBitbucketLicensing(t *testing.T) {
	e := bbEnv(t, func(o *Options) { o.Seats = 2 })
	const p = "/rest/api/1.0"
	licensed := func(name string) bool {
		u, ok := e.s.User(name)
		return ok && u.Licensed
	}
	if !licensed("John Smith@corp") {
		t.Fatal("stash-users member not licensed")
	}
	runSteps(t, e, []step{
		{"second seat", "POST", p + "/admin/users?name=a&password=pw&displayName=A&emailAddress=a@x.org", nil, 204, nil},
		{"no third seat", "POST", p + "/admin/users?name=b&password=pw&displayName=B&emailAddress=b@x.org", nil, 403, map[string]any{
			"errors.0.exceptionName": "com.atlassian.bitbucket.license.LicenseLimitException",
		}},
		{"unlicensed user is fine", "POST", p + "/admin/users?name=b&password=pw&displayName=B&emailAddress=b@x.org&addToDefaultGroup=false", nil, 204, nil},
		{"licence group refused", "POST", p + "/admin/users/add-groups", map[string]any{"user": "b", "groups": []string{"stash-users"}}, 403, nil},
		{"direct permission refused", "PUT", p + "/admin/permissions/users?name=b&permission=LICENSED_USER", nil, 403, nil},
		{"free a seat", "POST", p + "/admin/users/remove-group", map[string]string{"context": "a", "itemName": "stash-users"}, 200, nil},
		{"direct permission", "PUT", p + "/admin/permissions/users?name=b&permission=LICENSED_USER", nil, 204, nil},
		{"bad permission", "PUT", p + "/admin/permissions/users?name=b&permission=GOD", nil, 400, nil},
		{"user permissions", "GET", p + "/admin/permissions/users", nil, 200, map[string]any{"size": 1, "values.0.user.name": "b", "values.0.permission": "LICENSED_USER"}},
		{"group permissions", "GET", p + "/admin/permissions/groups", nil, 200, map[string]any{"size": 1, "values.0.group.name": "stash-users", "values.0.permission": "LICENSED_USER"}},
		{"grant devs", "PUT", p + "/admin/permissions/groups?name=devs&permission=PROJECT_CREATE", nil, 204, nil},
		{"revoke b", "DELETE", p + "/admin/permissions/users?name=b", nil, 204, nil},
		{"revoke missing", "DELETE", p + "/admin/permissions/users?name=nobody", nil, 404, nil},
		{"revoke devs", "DELETE", p + "/admin/permissions/groups?name=devs", nil, 204, nil},
	})
	if licensed("a") || licensed("b") {
		t.Fatal("a or b still licensed")
	}
}

func TestBitbucketPaging(t *testing.T) {
	e := bbEnv(t, func(o *Options) {
		for i := range 60 {
			o.Users = append(o.Users, User{Name: fmt.Sprintf("u%02d", i), Email: "u@x.org", Active: true, Groups: []string{"devs"}})
		}
	})
	for _, path := range []string{"/rest/api/1.0/admin/groups/more-members?context=devs", "/rest/api/1.0/users?filter=u"} {
		var names []string
		start := 0
		for pages := 1; ; pages++ {
			v := e.do("GET", fmt.Sprintf("%s&start=%d", path, start), nil).json(t)
			if field(v, "limit") != 25.0 || field(v, "start") != float64(start) {
				t.Fatalf("%s: limit %v start %v", path, field(v, "limit"), field(v, "start"))
			}
			for _, u := range field(v, "values").([]any) {
				names = append(names, field(u, "name").(string))
			}
			if field(v, "isLastPage") == true {
				if pages != 3 || field(v, "nextPageStart") != nil {
					t.Fatalf("%s: %d pages, nextPageStart %v", path, pages, field(v, "nextPageStart"))
				}
				break
			}
			start = int(field(v, "nextPageStart").(float64))
		}
		if len(names) != 60 || names[59] != "u59" {
			t.Fatalf("%s: %d names", path, len(names))
		}
	}
}
