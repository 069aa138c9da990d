package atlassiantest

import (
	"fmt"
	"testing"
	"time"
)

func confEnv(t *testing.T, mod func(*Options)) *env {
	return newEnv(t, Confluence, func(o *Options) {
		o.Users = []User{{Name: "jblogs", DisplayName: "Joe Blogs", Email: "joe@example.com", Active: true, Groups: []string{"confluence-users"}}}
		if mod != nil {
			mod(o)
		}
	})
}

func newConfUser(name string) map[string]any {
	return map[string]any{"userName": name, "fullName": "Jane Doe", "email": name + "@example.com", "password": "long-random", "notifyViaEmail": false}
}

// TestConfluenceEndpoints walks reference §4 in one stateful sequence.
func TestConfluenceEndpoints(t *testing.T) {
	e := confEnv(t, nil)
	const p = "/rest/api"
	runSteps(t, e, []step{
		{"get", "GET", p + "/user?username=JBLOGS", nil, 200, map[string]any{
			"type": "known", "username": "jblogs", "displayName": "Joe Blogs", "userKey": "4028d676000000000000000000000001",
			"status": nil, "_expandable.status": "", "email": nil, "profilePicture.isDefault": true,
		}},
		{"get expand status", "GET", p + "/user?key=4028d676000000000000000000000001&expand=status", nil, 200, map[string]any{"status": "Active"}},
		{"missing", "GET", p + "/user?username=nobody", nil, 404, map[string]any{
			"statusCode": 404, "reason": "Not Found", "data.successful": false, "data.authorized": true,
		}},
		{"create", "POST", p + "/admin/user", newConfUser("jdoe"), 201, map[string]any{"userKey": "4028d676000000000000000000000002", "#": 1}},
		{"create exists", "POST", p + "/admin/user", newConfUser("jdoe"), 409, map[string]any{"statusCode": 409}},
		{"create upper-case", "POST", p + "/admin/user", newConfUser("JDoe2"), 400, map[string]any{"statusCode": 400, "data.valid": false}},
		{"create anonymous", "POST", p + "/admin/user", newConfUser("anonymous"), 400, nil},
		{"create without password", "POST", p + "/admin/user", map[string]any{"userName": "x", "fullName": "X", "email": "x@x.org", "notifyViaEmail": "false"}, 400, nil},
		{"create with invite", "POST", p + "/admin/user", map[string]any{"userName": "inv", "fullName": "I", "email": "i@x.org", "notifyViaEmail": true}, 201, nil},
		{"invite forbids password", "POST", p + "/admin/user", map[string]any{"userName": "inv2", "fullName": "I", "email": "i@x.org", "password": "p", "notifyViaEmail": true}, 400, nil},
		{"update", "PUT", p + "/admin/user/jdoe", map[string]any{"email": "jane@new.example", "fullName": "Jane Q. Doe"}, 204, nil},
		{"update missing", "PUT", p + "/admin/user/nobody", map[string]any{"fullName": "N"}, 404, nil},
		{"update invalid", "PUT", p + "/admin/user/jdoe", map[string]any{"email": "nope"}, 400, nil},
		{"disable", "PUT", p + "/admin/user/jdoe/disable", nil, 204, nil},
		{"disable again", "PUT", p + "/admin/user/jdoe/disable", nil, 204, nil},
		{"status deactivated", "GET", p + "/user?username=jdoe&expand=status", nil, 200, map[string]any{"status": "Deactivated", "displayName": "Jane Q. Doe"}},
		{"enable", "PUT", p + "/admin/user/jdoe/enable", nil, 204, nil},
		{"enable again", "PUT", p + "/admin/user/jdoe/enable", nil, 204, nil},
		{"disable missing", "PUT", p + "/admin/user/nobody/disable", nil, 404, nil},
		{"memberof has default group", "GET", p + "/user/memberof?username=jdoe", nil, 200, map[string]any{
			"size": 1, "results.0.name": "confluence-users", "results.0.type": "group", "_links.next": nil,
		}},
		{"create group", "POST", p + "/admin/group", map[string]string{"name": "qa", "type": "group"}, 201, map[string]any{"name": "qa", "type": "group"}},
		{"create group again", "POST", p + "/admin/group", map[string]string{"name": "qa"}, 409, nil},
		{"create group no name", "POST", p + "/admin/group", map[string]string{}, 400, nil},
		{"get group", "GET", p + "/group/qa", nil, 200, map[string]any{"name": "qa"}},
		{"get missing group", "GET", p + "/group/nope", nil, 404, nil},
		{"add member", "PUT", p + "/user/jdoe/group/qa", nil, 204, nil},
		{"add member again", "PUT", p + "/user/jdoe/group/qa", nil, 204, nil},
		{"members", "GET", p + "/group/qa/member", nil, 200, map[string]any{"size": 1, "results.0.username": "jdoe"}},
		{"add to missing group", "PUT", p + "/user/jdoe/group/nope", nil, 404, nil},
		{"add missing user", "PUT", p + "/user/nobody/group/qa", nil, 404, nil},
		{"remove member", "DELETE", p + "/user/jdoe/group/qa", nil, 204, nil},
		{"remove non-member", "DELETE", p + "/user/jdoe/group/qa", nil, 204, nil},
		{"password", "POST", p + "/admin/user/jdoe/password", map[string]string{"password": "new"}, 204, nil},
		{"delete is a long task", "DELETE", p + "/admin/user/jdoe", nil, 202, map[string]any{"links.status": "/rest/api/longtask/00000002"}},
		{"deleted", "GET", p + "/user?username=jdoe", nil, 404, nil},
		{"delete missing", "DELETE", p + "/admin/user/jdoe", nil, 404, nil},
	})
}

func TestConfluenceSeatsAnd402(t *testing.T) {
	e := confEnv(t, func(o *Options) { o.Seats = 2 })
	if r := e.do("POST", "/rest/api/admin/user", newConfUser("second")); r.status != 201 {
		t.Fatalf("second seat: %d %s", r.status, r)
	}
	r := e.do("POST", "/rest/api/admin/user", newConfUser("third"))
	if r.status != 402 || field(r.json(t), "statusCode") != 402.0 {
		t.Fatalf("beyond licence: %d %s", r.status, r)
	}
	// Disabling frees the seat.
	e.do("PUT", "/rest/api/admin/user/second/disable", nil)
	if r := e.do("POST", "/rest/api/admin/user", newConfUser("third")); r.status != 201 {
		t.Fatalf("after freeing a seat: %d %s", r.status, r)
	}
}

func TestConfluencePaging(t *testing.T) {
	e := confEnv(t, func(o *Options) {
		for i := range 450 {
			o.Users = append(o.Users, User{Name: fmt.Sprintf("u%03d", i), Active: true, Groups: []string{"big"}})
		}
	})
	var got []string
	path := "/rest/api/group/big/member?limit=500&expand=status"
	for pages := 0; path != ""; pages++ {
		if pages > 5 {
			t.Fatal("paging does not end")
		}
		v := e.do("GET", path, nil).json(t)
		if field(v, "limit") != 200.0 {
			t.Fatalf("limit not capped: %v", field(v, "limit"))
		}
		for _, u := range field(v, "results").([]any) {
			if field(u, "status") != "Active" {
				t.Fatalf("expand lost across pages: %v", u)
			}
			got = append(got, field(u, "username").(string))
		}
		next, _ := field(v, "_links.next").(string)
		if next == "" && field(v, "size").(float64) == 200 {
			t.Fatal("no next link on a full page")
		}
		path = next
	}
	if len(got) != 450 || got[0] != "u000" || got[449] != "u449" {
		t.Fatalf("got %d members", len(got))
	}
	v := e.do("GET", "/rest/api/user/list?start=400&limit=100", nil).json(t)
	if field(v, "size") != 51.0 || field(v, "start") != 400.0 || field(v, "_links.next") != nil {
		t.Fatalf("user/list tail: size %v next %v", field(v, "size"), field(v, "_links.next"))
	}
	v = e.do("GET", "/rest/api/group?limit=1", nil).json(t)
	if field(v, "results.0.name") != "big" || field(v, "_links.next") != "/rest/api/group?limit=1&start=1" {
		t.Fatalf("group list: %v", v)
	}
}

func TestConfluenceActiveUsersByLastLogin(t *testing.T) {
	day := func(d int) time.Time { return time.Date(2025, 1, d, 0, 0, 0, 0, time.UTC) }
	e := confEnv(t, func(o *Options) {
		o.Users = append(o.Users,
			User{Name: "recent", Email: "r@x.org", Active: true, Groups: []string{"confluence-users"}, LastLogin: day(20)},
			User{Name: "idle", Email: "i@x.org", Active: true, Groups: []string{"confluence-users"}, LastLogin: day(2)},
			User{Name: "disabled", Active: false, Groups: []string{"confluence-users"}, LastLogin: day(1)},
			User{Name: "unlicensed", Active: true, LastLogin: day(1)},
		)
	})
	v := e.do("GET", "/rest/api/admin/users/list/active?expand=lastLogin", nil).json(t)
	want := []string{"jblogs", "idle", "recent"} // never logged in first
	if field(v, "size") != float64(len(want)) {
		t.Fatalf("size %v: %v", field(v, "size"), v)
	}
	for i, n := range want {
		if got := field(v, fmt.Sprintf("results.%d.username", i)); got != n {
			t.Errorf("results[%d] = %v, want %s", i, got, n)
		}
	}
	if field(v, "results.1.email") != "i@x.org" || field(v, "results.1.lastLogin") != "2025-01-02T00:00:00Z" {
		t.Errorf("idle: %v", field(v, "results.1"))
	}
}
