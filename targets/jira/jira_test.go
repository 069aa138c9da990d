package jira_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/usherhq/usher/config"
	"github.com/usherhq/usher/targets"
	"github.com/usherhq/usher/targets/atlassiantest"
	"github.com/usherhq/usher/targets/jira"
	"github.com/usherhq/usher/targets/targettest"
)

func TestContract(t *testing.T) {
	targettest.Run(t, func(t *testing.T, deps targets.Deps) (targets.Target, *atlassiantest.Server) {
		srv := atlassiantest.New(atlassiantest.Jira, atlassiantest.Options{AdminUser: "admin", AdminPassword: "s3cret"})
		deps.Upstream = targettest.Serve(t, srv)
		cfg := &jira.Config{Conn: targets.Conn{Username: "admin", Password: config.SecretValue("s3cret")}}
		if errs := cfg.Validate(); len(errs) > 0 {
			t.Fatalf("Validate: %v", errs)
		}
		dir, err := cfg.Open("jira", deps)
		if err != nil {
			t.Fatal(err)
		}
		return dir, srv
	})
}

// TestListUsersBeforeJira103 hides /user/list, as Jira before 10.3 has
// none, and checks the adapter falls back to /user/search (§3.10) and
// remembers that.
func TestListUsersBeforeJira103(t *testing.T) {
	srv := atlassiantest.New(atlassiantest.Jira, atlassiantest.Options{AdminUser: "admin", AdminPassword: "s3cret"})
	for i := range 7 {
		srv.AddUser(atlassiantest.User{Name: fmt.Sprintf("u%d", i), Active: i != 3})
	}
	old := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/user/list") {
			http.NotFound(w, r)
			return
		}
		srv.ServeHTTP(w, r)
	})
	hs := httptest.NewServer(old)
	t.Cleanup(hs.Close)
	u, _ := url.Parse(hs.URL)
	cfg := &jira.Config{Conn: targets.Conn{Username: "admin", Password: config.SecretValue("s3cret")}}
	dir, err := cfg.Open("jira", targets.Deps{Upstream: u})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	cursor := ""
	for range 20 {
		p, err := dir.ListUsers(t.Context(), cursor, 3)
		if err != nil {
			t.Fatal(err)
		}
		for _, u := range p.Users {
			names = append(names, u.Name)
		}
		if cursor = p.Next; cursor == "" {
			break
		}
	}
	slices.Sort(names)
	if want := []string{"u0", "u1", "u2", "u3", "u4", "u5", "u6"}; !slices.Equal(names, want) {
		t.Errorf("listed %v, want %v (inactive u3 included)", names, want)
	}
	if n := srv.Calls()["GET /rest/api/2/user/search"]; n != 3 {
		t.Errorf("calls = %v, want 3 searches", srv.Calls())
	}
}
