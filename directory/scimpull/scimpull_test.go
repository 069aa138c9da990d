package scimpull

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/usherhq/usher/config"
	"github.com/usherhq/usher/directory"
	"github.com/usherhq/usher/directory/directorytest"
)

const token = "scim-test-token"

// spUser is one user of the emulated service provider.
type spUser struct {
	ID, ExternalID, UserName, Given, Family, Display, Email string
	Active                                                  bool
	Groups                                                  []string // direct, by name
	Department                                              string
}

// sp emulates a SCIM 2.0 service provider's /Users (RFC 7644 §3.4.2):
// 1-based startIndex, count, ListResponse with totalResults, the
// read-only groups attribute with direct and indirect memberships, `eq`
// filters on id, externalId and userName (userName case-insensitive),
// RFC 7644 §3.12 error bodies, bearer auth. Faults strike the listing's
// later pages (startIndex > 1).
type sp struct {
	t     *testing.T
	clock clockwork.Clock
	srv   *httptest.Server

	mu       sync.Mutex
	users    []*spUser
	groups   []string            // names, in creation order
	parents  map[string][]string // group → groups it is a direct member of
	maxCount int

	throttle time.Duration // once
	failPage bool
	truncate bool
	// lie edits each ListResponse before it goes out.
	lie func(start int, lr map[string]any)
}

func newSP(t *testing.T, clock clockwork.Clock) *sp {
	s := &sp{t: t, clock: clock, parents: map[string][]string{}, maxCount: 50}
	s.srv = httptest.NewServer(s)
	t.Cleanup(s.srv.Close)
	return s
}

func (s *sp) url() string { return s.srv.URL + "/scim/v2" }

func scimError(w http.ResponseWriter, status int, scimType, detail string) {
	w.Header().Set("Content-Type", "application/scim+json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]any{
		"schemas": []string{"urn:ietf:params:scim:api:messages:2.0:Error"},
		"status":  strconv.Itoa(status), "scimType": scimType, "detail": detail,
	})
}

func (s *sp) groupID(name string) string { return "g-" + name }

// closure is every group u is in, directly or through nesting.
func (s *sp) closure(u *spUser) (direct, all []string) {
	seen := map[string]bool{}
	stack := slices.Clone(u.Groups)
	for len(stack) > 0 {
		g := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if !seen[g] {
			seen[g] = true
			stack = append(stack, s.parents[g]...)
		}
	}
	for g := range seen {
		all = append(all, g)
	}
	slices.Sort(all)
	return u.Groups, all
}

func (s *sp) resource(u *spUser) map[string]any {
	direct, all := s.closure(u)
	var groups []map[string]any
	for _, g := range all {
		typ := "indirect"
		if slices.Contains(direct, g) {
			typ = "direct"
		}
		groups = append(groups, map[string]any{"value": s.groupID(g), "display": g, "type": typ,
			"$ref": s.url() + "/Groups/" + s.groupID(g)})
	}
	r := map[string]any{
		"schemas":     []string{"urn:ietf:params:scim:schemas:core:2.0:User", "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"},
		"id":          u.ID,
		"externalId":  u.ExternalID,
		"userName":    u.UserName,
		"name":        map[string]any{"givenName": u.Given, "familyName": u.Family, "formatted": u.Given + " " + u.Family},
		"displayName": u.Display,
		"emails":      []map[string]any{{"value": "other@example.test", "type": "home"}, {"value": u.Email, "type": "work", "primary": true}},
		"active":      u.Active,
		"meta":        map[string]any{"resourceType": "User", "location": s.url() + "/Users/" + u.ID},
		"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": map[string]any{"department": u.Department},
	}
	if groups != nil {
		r["groups"] = groups
	}
	return r
}

func (s *sp) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Authorization") != "Bearer "+token {
		scimError(w, http.StatusUnauthorized, "", "bad token")
		return
	}
	if r.Method != http.MethodGet {
		s.t.Errorf("unexpected %s %s", r.Method, r.URL)
		scimError(w, http.StatusMethodNotAllowed, "", "read only")
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	path := strings.TrimPrefix(r.URL.Path, "/scim/v2")
	if id, ok := strings.CutPrefix(path, "/Users/"); ok {
		for _, u := range s.users {
			if u.ID == id {
				w.Header().Set("Content-Type", "application/scim+json")
				json.NewEncoder(w).Encode(s.resource(u))
				return
			}
		}
		scimError(w, http.StatusNotFound, "", "Resource "+id+" not found")
		return
	}
	if path != "/Users" {
		s.t.Errorf("unexpected request %s", r.URL)
		scimError(w, http.StatusNotFound, "", "no such endpoint")
		return
	}
	q := r.URL.Query()
	users := s.users
	if f := q.Get("filter"); f != "" {
		attr, lit, ok := strings.Cut(f, " eq ")
		var want string
		if !ok || json.Unmarshal([]byte(lit), &want) != nil {
			scimError(w, http.StatusBadRequest, "invalidFilter", "cannot parse "+f)
			return
		}
		users = nil
		for _, u := range s.users {
			switch {
			case attr == "id" && u.ID == want, attr == "externalId" && u.ExternalID == want,
				attr == "userName" && strings.EqualFold(u.UserName, want):
				users = append(users, u)
			case attr != "id" && attr != "externalId" && attr != "userName":
				scimError(w, http.StatusBadRequest, "invalidFilter", "unsupported attribute "+attr)
				return
			}
		}
	}
	start, count := 1, len(users)
	if v, err := strconv.Atoi(q.Get("startIndex")); err == nil && v > 1 {
		start = v
	}
	if v, err := strconv.Atoi(q.Get("count")); err == nil && v >= 0 {
		count = v
	}
	count = min(count, s.maxCount)
	if start > 1 {
		switch {
		case s.throttle > 0:
			w.Header().Set("Retry-After", strconv.Itoa(int(s.throttle/time.Second)))
			s.throttle = 0
			scimError(w, http.StatusTooManyRequests, "", "slow down")
			return
		case s.failPage:
			scimError(w, http.StatusServiceUnavailable, "", "try later")
			return
		}
	}
	var res []any
	for i := start - 1; i < len(users) && len(res) < count; i++ {
		res = append(res, s.resource(users[i]))
	}
	lr := map[string]any{
		"schemas":      []string{"urn:ietf:params:scim:api:messages:2.0:ListResponse"},
		"totalResults": len(users), "itemsPerPage": len(res), "startIndex": start, "Resources": res,
	}
	if res == nil {
		lr["Resources"] = []any{}
	}
	if s.lie != nil {
		s.lie(start, lr)
	}
	body, _ := json.Marshal(lr)
	w.Header().Set("Content-Type", "application/scim+json")
	if s.truncate && start > 1 {
		// The body ends before its Content-Length.
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		w.WriteHeader(http.StatusOK)
		w.Write(body[:len(body)/2])
		return
	}
	w.Write(body)
}

func (s *sp) add(u *spUser) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.users = append(s.users, u)
}

func (s *sp) user(key string) *spUser {
	for _, u := range s.users {
		if u.ID == "u-"+key {
			return u
		}
	}
	s.t.Fatalf("no user %s", key)
	return nil
}

// backend runs the contract suite against the emulator; the connector
// scopes by the fixture's group and keys subjects on externalId.
type backend struct{ s *sp }

func (b *backend) Caps() directorytest.Caps {
	return directorytest.Caps{Nesting: true, Throttle: true, FailPage: true, Truncate: true}
}

func toUser(p directorytest.Person) *spUser {
	return &spUser{ID: "u-" + p.Key, ExternalID: "ext-" + p.Key, UserName: p.Username + "@example.test",
		Given: p.GivenName, Family: p.FamilyName, Display: p.DisplayName, Email: p.Email,
		Active: p.Status == directory.Active, Groups: p.Groups}
}

func want(p directorytest.Person) directorytest.Want {
	return directorytest.Want{ID: "u-" + p.Key, Subject: "ext-" + p.Key, Username: p.Username + "@example.test"}
}

func (b *backend) Seed(t *testing.T, f directorytest.Fixture) directorytest.Seeded {
	s := directorytest.Seeded{People: map[string]directorytest.Want{}, Groups: map[string]string{}, Unknown: "ext-nobody"}
	b.s.mu.Lock()
	for _, g := range f.Groups {
		b.s.groups = append(b.s.groups, g.Name)
		s.Groups[g.Name] = b.s.groupID(g.Name)
		for _, sub := range g.Subgroups {
			b.s.parents[sub] = append(b.s.parents[sub], g.Name)
		}
	}
	b.s.mu.Unlock()
	for _, p := range f.People {
		b.s.add(toUser(p))
		s.People[p.Key] = want(p)
	}
	return s
}

func (b *backend) Open(t *testing.T, deps directory.Deps) directory.Connector {
	cfg := &Config{URL: b.s.url(), Token: config.SecretValue(token), SubjectAttribute: "externalId",
		Groups: []string{"staff"}, PageSize: 2}
	c, err := cfg.Open("scim", "idp", deps)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func (b *backend) Create(t *testing.T, p directorytest.Person) directorytest.Want {
	b.s.add(toUser(p))
	return want(p)
}

func (b *backend) Rename(t *testing.T, key, name string) {
	b.s.mu.Lock()
	defer b.s.mu.Unlock()
	b.s.user(key).Display = name
}

func (b *backend) SetStatus(t *testing.T, key string, st directory.Status) {
	b.s.mu.Lock()
	defer b.s.mu.Unlock()
	b.s.user(key).Active = st == directory.Active
}

func (b *backend) Delete(t *testing.T, key string) {
	b.s.mu.Lock()
	defer b.s.mu.Unlock()
	b.s.users = slices.DeleteFunc(b.s.users, func(u *spUser) bool { return u.ID == "u-"+key })
}

func (b *backend) Throttle(t *testing.T, wait time.Duration) {
	b.s.mu.Lock()
	defer b.s.mu.Unlock()
	b.s.throttle = wait
}

func (b *backend) FailPage(t *testing.T) {
	b.s.mu.Lock()
	defer b.s.mu.Unlock()
	b.s.failPage = true
}

func (b *backend) Truncate(t *testing.T) {
	b.s.mu.Lock()
	defer b.s.mu.Unlock()
	b.s.truncate = true
}

func (b *backend) ExpireDelta(t *testing.T) { t.Fatal("no delta") }

func TestContract(t *testing.T) {
	directorytest.Run(t, func(t *testing.T, clock *clockwork.FakeClock) directorytest.Backend {
		return &backend{s: newSP(t, clock)}
	})
}

// seed fills an emulator with n people, each in group "g<i%2>".
func seed(s *sp, n int) {
	for i := range n {
		s.add(&spUser{ID: fmt.Sprintf("id%d", i), ExternalID: fmt.Sprintf("ext%d", i), UserName: fmt.Sprintf("User%d@example.test", i),
			Display: fmt.Sprintf("User %d", i), Email: fmt.Sprintf("u%d@example.test", i), Active: i != 3,
			Groups: []string{fmt.Sprintf("g%d", i%2)}, Department: "R&D"})
	}
}

func open(t *testing.T, s *sp, edit func(*Config)) directory.Connector {
	t.Helper()
	cfg := &Config{URL: s.url(), Token: config.SecretValue(token), PageSize: 2}
	if edit != nil {
		edit(cfg)
	}
	c, err := cfg.Open("scim", "idp", directory.Deps{Clock: clockwork.NewFakeClock()})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func pullAll(c directory.Connector) ([]directory.Person, error) {
	var got []directory.Person
	err := c.Pull(context.Background(), func(p directory.Page) error {
		got = append(got, p.People...)
		return nil
	})
	return got, err
}

func TestPull(t *testing.T) {
	t.Parallel()
	s := newSP(t, clockwork.NewFakeClock())
	seed(s, 5)
	c := open(t, s, func(c *Config) { c.Attributes = []string{"department", "userType"} })
	got, err := pullAll(c)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 5 {
		t.Fatalf("got %d people, want 5", len(got))
	}
	p := got[3]
	if p.ID != "id3" || p.Subject != "id3" || p.Username != "User3@example.test" || p.Email != "u3@example.test" ||
		p.DisplayName != "User 3" || p.Status != directory.Disabled || !slices.Equal(p.Groups, []string{"g1"}) ||
		!slices.Equal(p.GroupIDs, []string{"g-g1"}) || !p.GroupsComplete || !slices.Equal(p.Attributes["department"], []string{"R&D"}) {
		t.Errorf("person 3 = %+v", p)
	}
	if got[0].Status != directory.Active {
		t.Errorf("person 0 status = %v", got[0].Status)
	}
}

func TestPullIncomplete(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		lie  func(start int, lr map[string]any)
	}{
		{"total moves", func(start int, lr map[string]any) {
			if start > 1 {
				lr["totalResults"] = 6
			}
		}},
		{"short page", func(start int, lr map[string]any) {
			if start == 3 {
				lr["itemsPerPage"] = 3
			}
		}},
		{"empty page before the total", func(start int, lr map[string]any) {
			if start == 3 {
				lr["Resources"] = []any{}
				lr["itemsPerPage"] = 0
			}
		}},
		{"more than the total", func(start int, lr map[string]any) { lr["totalResults"] = 3 }},
		{"no total", func(start int, lr map[string]any) { delete(lr, "totalResults") }},
		{"user without id", func(start int, lr map[string]any) {
			if start == 3 {
				lr["Resources"].([]any)[0].(map[string]any)["id"] = ""
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := newSP(t, clockwork.NewFakeClock())
			seed(s, 5)
			s.lie = tt.lie
			got, err := pullAll(open(t, s, nil))
			if !errors.Is(err, directory.ErrIncomplete) {
				t.Fatalf("Pull = %v after %d people, want ErrIncomplete", err, len(got))
			}
		})
	}
}

func TestPullServerCapsCount(t *testing.T) {
	t.Parallel()
	// The server sends fewer than asked (itemsPerPage says so): fine.
	s := newSP(t, clockwork.NewFakeClock())
	seed(s, 7)
	s.maxCount = 3
	got, err := pullAll(open(t, s, func(c *Config) { c.PageSize = 100 }))
	if err != nil || len(got) != 7 {
		t.Fatalf("Pull = %d people, %v", len(got), err)
	}
}

func TestPullBadToken(t *testing.T) {
	t.Parallel()
	s := newSP(t, clockwork.NewFakeClock())
	seed(s, 1)
	_, err := pullAll(open(t, s, func(c *Config) { c.Token = config.SecretValue("wrong") }))
	if err == nil || !strings.Contains(err.Error(), "401") || !strings.Contains(err.Error(), "bad token") {
		t.Fatalf("Pull = %v, want the 401 with the server's detail", err)
	}
}

func TestPerson(t *testing.T) {
	t.Parallel()
	s := newSP(t, clockwork.NewFakeClock())
	seed(s, 4)
	s.add(&spUser{ID: `q"1`, ExternalID: `a" or userName eq "x`, UserName: `odd"name`, Active: true})
	ctx := context.Background()
	tests := []struct {
		attr, subject, wantID string
		scope                 []string
		out                   bool
	}{
		{"", "id2", "id2", nil, false},
		{"id", `q"1`, `q"1`, nil, false},
		{"externalId", "ext1", "id1", []string{"g0"}, true},
		{"externalId", "ext2", "id2", []string{"g-g0"}, false},
		{"externalId", `a" or userName eq "x`, `q"1`, nil, false},
		{"userName", "user3@EXAMPLE.test", "id3", nil, false},
		{"userName", `odd"name`, `q"1`, nil, false},
	}
	for _, tt := range tests {
		c := open(t, s, func(c *Config) { c.SubjectAttribute, c.Groups = tt.attr, tt.scope })
		p, err := c.Person(ctx, tt.subject)
		if err != nil || p.ID != tt.wantID || p.OutOfScope != tt.out {
			t.Errorf("Person(%s %q) = %+v, %v; want %s, out of scope %v", tt.attr, tt.subject, p, err, tt.wantID, tt.out)
		}
	}
	for _, tt := range []struct{ attr, subject string }{
		{"id", "nobody"}, {"id", ""}, {"externalId", "nobody"}, {"userName", "nobody"}, {"id", "../Users?x=1"},
	} {
		c := open(t, s, func(c *Config) { c.SubjectAttribute = tt.attr })
		if _, err := c.Person(ctx, tt.subject); !errors.Is(err, directory.ErrNotFound) {
			t.Errorf("Person(%s %q) = %v, want ErrNotFound", tt.attr, tt.subject, err)
		}
	}
}

func TestValidate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		cfg   Config
		field string
	}{
		{"valid", Config{URL: "https://idp.example.com/scim/v2", Token: config.SecretValue("t")}, ""},
		{"loopback http", Config{URL: "http://127.0.0.1:8080/scim", Token: config.SecretValue("t"), SubjectAttribute: "userName"}, ""},
		{"no url", Config{Token: config.SecretValue("t")}, "url"},
		{"plain http", Config{URL: "http://idp.example.com/scim", Token: config.SecretValue("t")}, "url"},
		{"query", Config{URL: "https://idp.example.com/scim?x=1", Token: config.SecretValue("t")}, "url"},
		{"no token", Config{URL: "https://idp.example.com/scim"}, "token"},
		{"subject", Config{URL: "https://idp.example.com/scim", Token: config.SecretValue("t"), SubjectAttribute: "email"}, "subject_attribute"},
		{"group", Config{URL: "https://idp.example.com/scim", Token: config.SecretValue("t"), Groups: []string{" "}}, "groups[0]"},
		{"attribute", Config{URL: "https://idp.example.com/scim", Token: config.SecretValue("t"), Attributes: []string{"a b"}}, "attributes[0]"},
		{"page", Config{URL: "https://idp.example.com/scim", Token: config.SecretValue("t"), PageSize: -1}, "page_size"},
		{"timeout", Config{URL: "https://idp.example.com/scim", Token: config.SecretValue("t"), Timeout: -1}, "timeout"},
		{"max wait", Config{URL: "https://idp.example.com/scim", Token: config.SecretValue("t"), MaxWait: -1}, "max_wait"},
	}
	for _, tt := range tests {
		errs := tt.cfg.Validate()
		if tt.field == "" {
			if len(errs) > 0 {
				t.Errorf("%s: %v", tt.name, errs)
			}
			continue
		}
		found := false
		for _, err := range errs {
			var fe *config.FieldError
			if errors.As(err, &fe) && fe.Field == tt.field {
				found = true
			}
		}
		if !found {
			t.Errorf("%s: %v, want an error for %s", tt.name, errs, tt.field)
		}
		if _, err := tt.cfg.Open("d", "i", directory.Deps{}); err == nil {
			t.Errorf("%s: Open accepted an invalid config", tt.name)
		}
	}
}
