package atlassiantest

import (
	"encoding/json"
	"fmt"
	"net/url"
	"testing"
	"time"
)

func jiraEnv(t *testing.T) *env {
	return newEnv(t, Jira, func(o *Options) {
		o.Users = []User{
			{Name: "fred", Key: "fred", DisplayName: "Fred F. User", Email: "fred@example.com", Active: true,
				Groups: []string{"devs", "jira-software-users"}, LastLogin: time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)},
			{Name: "olga", DisplayName: "Olga Old", Email: "olga@example.com", Active: false},
		}
	})
}

// TestJiraEndpoints walks the documented shapes of reference §3 in one
// stateful sequence.
func TestJiraEndpoints(t *testing.T) {
	e := jiraEnv(t)
	const p = "/rest/api/2"
	runSteps(t, e, []step{
		{"get by username", "GET", p + "/user?username=fred", nil, 200, map[string]any{
			"name": "fred", "key": "fred", "emailAddress": "fred@example.com", "displayName": "Fred F. User",
			"active": true, "deleted": false, "avatarUrls.#": 4, "groups": nil,
			"lastLoginTime": "2025-01-02T03:04:05.000+0000", "self": e.url + p + "/user?username=fred",
		}},
		{"case-insensitive", "GET", p + "/user?username=FRED", nil, 200, map[string]any{"name": "fred"}},
		{"by key", "GET", p + "/user?key=fred", nil, 200, map[string]any{"name": "fred"}},
		{"expand groups", "GET", p + "/user?username=fred&expand=groups,applicationRoles", nil, 200, map[string]any{
			"groups.size": 2, "groups.items.0.name": "devs", "groups.items.1.name": "jira-software-users",
			"applicationRoles.items.0.key": "jira-software",
		}},
		{"both username and key", "GET", p + "/user?username=fred&key=fred", nil, 400, nil},
		{"missing", "GET", p + "/user?username=nobody", nil, 404, map[string]any{
			"errorMessages.0": "The user named 'nobody' does not exist", "errors.#": 0,
		}},
		{"create", "POST", p + "/user", map[string]any{"name": "JDoe", "emailAddress": "jdoe@example.com", "displayName": "Jane Doe", "notification": "false"}, 201, map[string]any{
			"name": "jdoe", "key": "JIRAUSER10003", "emailAddress": "jdoe@example.com", "displayName": "Jane Doe",
		}},
		{"new user got default access", "GET", p + "/user?username=jdoe&expand=groups", nil, 200, map[string]any{
			"groups.items.0.name": "jira-software-users", "active": true,
		}},
		{"create duplicate", "POST", p + "/user", map[string]any{"name": "jdoe", "emailAddress": "j@x.org", "displayName": "J"}, 400, map[string]any{
			"errors.username": "A user with that username already exists.", "errorMessages.#": 0,
		}},
		{"create without name", "POST", p + "/user", map[string]any{"emailAddress": "j@x.org", "displayName": "J"}, 400, map[string]any{"errors.username": "You must specify a username."}},
		{"create no app access", "POST", p + "/user", map[string]any{"name": "noapp", "emailAddress": "n@x.org", "displayName": "N", "applicationKeys": []string{}}, 201, nil},
		{"no app access means no groups", "GET", p + "/user?username=noapp&expand=groups", nil, 200, map[string]any{"groups.size": 0}},
		{"update partial", "PUT", p + "/user?username=jdoe", map[string]any{"displayName": "Jane Q. Doe"}, 200, map[string]any{
			"displayName": "Jane Q. Doe", "emailAddress": "jdoe@example.com",
		}},
		{"deactivate", "PUT", p + "/user?username=jdoe", map[string]any{"active": false}, 200, map[string]any{"active": false}},
		{"reactivate as string", "PUT", p + "/user?key=JIRAUSER10003", map[string]any{"name": "jdoe", "active": "true"}, 200, map[string]any{"active": true}},
		{"bad active", "PUT", p + "/user?username=jdoe", map[string]any{"active": "maybe"}, 400, nil},
		{"update missing", "PUT", p + "/user?username=nobody", map[string]any{"displayName": "x"}, 404, nil},
		{"rename keeps key", "PUT", p + "/user?username=jdoe", map[string]any{"name": "jane"}, 200, map[string]any{"name": "jane", "key": "JIRAUSER10003"}},
		{"old name gone", "GET", p + "/user?username=jdoe", nil, 404, nil},
		{"rename onto taken", "PUT", p + "/user?username=jane", map[string]any{"name": "fred"}, 400, map[string]any{"errors.username": "A user with that username already exists."}},
		{"create group", "POST", p + "/group", map[string]string{"name": "qa"}, 201, map[string]any{"name": "qa", "users.size": 0, "expand": "users"}},
		{"create group again", "POST", p + "/group", map[string]string{"name": "QA"}, 400, map[string]any{"errorMessages.#": 1}},
		{"get group", "GET", p + "/group?groupname=qa", nil, 200, map[string]any{"name": "qa"}},
		{"add member", "POST", p + "/group/user?groupname=qa", map[string]string{"name": "Jane"}, 201, map[string]any{"name": "qa", "users.size": 1}},
		{"add member again", "POST", p + "/group/user?groupname=qa", map[string]string{"name": "jane"}, 400, map[string]any{"errorMessages.#": 1}},
		{"add to missing group", "POST", p + "/group/user?groupname=nope", map[string]string{"name": "jane"}, 404, nil},
		{"add missing user", "POST", p + "/group/user?groupname=qa", map[string]string{"name": "nobody"}, 404, nil},
		{"remove member", "DELETE", p + "/group/user?groupname=qa&username=jane", nil, 200, nil},
		{"remove non-member", "DELETE", p + "/group/user?groupname=qa&username=jane", nil, 400, map[string]any{"errorMessages.#": 1}},
		{"remove from missing group", "DELETE", p + "/group/user?groupname=nope&username=jane", nil, 404, nil},
		{"groups picker", "GET", p + "/groups/picker?query=DEV", nil, 200, map[string]any{
			"total": 1, "groups.0.name": "devs", "groups.0.html": "<b>dev</b>s", "header": "Showing 1 of 1 matching groups",
		}},
		{"search needs username", "GET", p + "/user/search", nil, 400, nil},
		{"search dot = all active", "GET", p + "/user/search?username=.", nil, 200, map[string]any{"#": 3}},
		{"search inactive", "GET", p + "/user/search?username=.&includeActive=false&includeInactive=true", nil, 200, map[string]any{"#": 1, "0.name": "olga"}},
		{"search by email", "GET", p + "/user/search?username=FRED@", nil, 200, map[string]any{"#": 1, "0.name": "fred"}},
		{"delete", "DELETE", p + "/user?username=jane", nil, 204, nil},
		{"deleted", "GET", p + "/user?key=JIRAUSER10003", nil, 404, nil},
		{"delete missing", "DELETE", p + "/user?username=jane", nil, 404, nil},
	})
	if got := e.s.GroupMembers("qa"); len(got) != 0 {
		t.Fatalf("qa members after delete: %v", got)
	}
}

func TestJiraProperties(t *testing.T) {
	e := jiraEnv(t)
	const p = "/rest/api/2/user/properties"
	runSteps(t, e, []step{
		{"none yet", "GET", p + "?username=fred", nil, 200, map[string]any{"keys.#": 0}},
		{"missing", "GET", p + "/usher.idp?username=fred", nil, 404, map[string]any{"errorMessages.#": 1}},
		{"create", "PUT", p + "/usher.idp?username=fred", json.RawMessage(`"okta"`), 201, nil},
		{"replace", "PUT", p + "/usher.idp?username=FRED", json.RawMessage(`"entra"`), 200, nil},
		{"object value", "PUT", p + "/usher.meta?username=fred", json.RawMessage(`{"dept":"ops"}`), 201, nil},
		{"read", "GET", p + "/usher.idp?username=fred", nil, 200, map[string]any{"key": "usher.idp", "value": "entra"}},
		{"list", "GET", p + "?username=fred", nil, 200, map[string]any{"keys.#": 2, "keys.0.key": "usher.idp"}},
		{"unknown user", "PUT", p + "/k?username=nobody", json.RawMessage(`1`), 404, nil},
		{"delete", "DELETE", p + "/usher.meta?username=fred", nil, 204, nil},
		{"delete again", "DELETE", p + "/usher.meta?username=fred", nil, 404, nil},
	})
	if u, _ := e.s.User("fred"); u.Attributes["usher.idp"] != "entra" || len(u.Attributes) != 1 {
		t.Fatalf("Attributes = %v", u.Attributes)
	}
}

func TestJiraGroupMemberPaging(t *testing.T) {
	e := newEnv(t, Jira, func(o *Options) {
		for i := range 120 {
			o.Users = append(o.Users, User{Name: fmt.Sprintf("m%03d", i), Active: i%10 != 0, Groups: []string{"big"}})
		}
	})
	var names []string
	path := "/rest/api/2/group/member?groupname=big&maxResults=500"
	for pages := 0; ; pages++ {
		if pages > 10 {
			t.Fatal("paging does not end")
		}
		v := e.do("GET", path, nil).json(t)
		if field(v, "maxResults") != 50.0 || field(v, "total") != 108.0 {
			t.Fatalf("page header: maxResults %v total %v", field(v, "maxResults"), field(v, "total"))
		}
		for _, m := range field(v, "values").([]any) {
			if field(m, "active") != true {
				t.Fatalf("inactive member listed: %v", m)
			}
			names = append(names, field(m, "name").(string))
		}
		if field(v, "isLast") == true {
			if field(v, "nextPage") != nil {
				t.Fatal("nextPage on the last page")
			}
			break
		}
		next, _ := url.Parse(field(v, "nextPage").(string))
		path = next.RequestURI()
	}
	if len(names) != 108 || names[0] != "m001" || names[107] != "m119" {
		t.Fatalf("got %d members, first %s", len(names), names[0])
	}
	v := e.do("GET", "/rest/api/2/group/member?groupname=big&includeInactiveUsers=true&startAt=100", nil).json(t)
	if field(v, "total") != 120.0 || field(v, "values.#") != 20 || field(v, "startAt") != 100.0 || field(v, "isLast") != true {
		t.Fatalf("with inactive: %v", v)
	}
	// The active-member list is reused between pages but not across a
	// write.
	e.do("PUT", "/rest/api/2/user?username=m001", map[string]any{"active": false})
	if v := e.do("GET", "/rest/api/2/group/member?groupname=big", nil).json(t); field(v, "total") != 107.0 || field(v, "values.0.name") != "m002" {
		t.Fatalf("after deactivation: total %v first %v", field(v, "total"), field(v, "values.0.name"))
	}
	e.s.AddUser(User{Name: "m001", Active: true, Groups: []string{"big"}})
	if v := e.do("GET", "/rest/api/2/group/member?groupname=big", nil).json(t); field(v, "total") != 108.0 {
		t.Fatalf("after AddUser: total %v", field(v, "total"))
	}
}

func TestJiraUserListCursor(t *testing.T) {
	e := newEnv(t, Jira, seedMany(250))
	seen := map[string]bool{}
	cursor := ""
	for pages := 1; ; pages++ {
		path := "/rest/api/2/user/list?maxResults=100"
		if cursor != "" {
			path += "&cursor=" + cursor
		}
		v := e.do("GET", path, nil).json(t)
		for _, u := range field(v, "values").([]any) {
			n := field(u, "name").(string)
			if seen[n] {
				t.Fatalf("%s returned twice", n)
			}
			seen[n] = true
		}
		if field(v, "isLast") == true {
			if pages != 3 {
				t.Fatalf("%d pages", pages)
			}
			break
		}
		cursor = field(v, "nextCursor").(string)
		// A user created mid-walk behind the cursor does not disturb it.
		e.s.AddUser(User{Name: fmt.Sprintf("aaa%d", pages), Active: true})
	}
	if len(seen) != 250 {
		t.Fatalf("saw %d users", len(seen))
	}
	if r := e.do("GET", "/rest/api/2/user/list?cursor=!!notbase64", nil); r.status != 200 || field(r.json(t), "isLast") != true {
		t.Fatalf("unknown cursor: %d %s", r.status, r)
	}
}

func TestJiraSearchWindow(t *testing.T) {
	e := newEnv(t, Jira, seedMany(1100))
	if v := e.do("GET", "/rest/api/2/user/search?username=.&startAt=990&maxResults=50", nil).json(t); field(v, "#") != 10 {
		t.Fatalf("window: %v results", field(v, "#"))
	}
	if v := e.do("GET", "/rest/api/2/user/search?username=.&startAt=1000", nil).json(t); field(v, "#") != 0 {
		t.Fatalf("beyond window: %v results", field(v, "#"))
	}
}
