package googletest_test

import (
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/jonboulle/clockwork"

	"github.com/usherhq/usher/directory/google/googletest"
)

var t0 = time.Date(2025, 3, 1, 9, 0, 0, 0, time.UTC)

type recorder struct {
	testing.TB
	mu   sync.Mutex
	errs []string
}

func (r *recorder) Errorf(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.errs = append(r.errs, fmt.Sprintf(format, args...))
}

func (r *recorder) Helper() {}

type keyFile struct {
	ClientEmail  string `json:"client_email"`
	PrivateKeyID string `json:"private_key_id"`
	PrivateKey   string `json:"private_key"`
}

type fixture struct {
	t     *testing.T
	srv   *googletest.Server
	clock *clockwork.FakeClock
	key   keyFile
	id    string
}

func newFixture(t *testing.T) *fixture {
	clock := clockwork.NewFakeClockAt(t0)
	srv := googletest.New(t, clock).Start()
	raw, id := srv.NewServiceAccount("sync")
	var k keyFile
	if err := json.Unmarshal(raw, &k); err != nil {
		t.Fatal(err)
	}
	srv.Delegate(id, googletest.ScopeUserReadonly, googletest.ScopeGroupReadonly)
	srv.AddUser(googletest.User{PrimaryEmail: "admin@x.test", IsAdmin: true})
	return &fixture{t: t, srv: srv, clock: clock, key: k, id: id}
}

// assertion signs a JWT bearer grant; mod changes the claims.
func (f *fixture) assertion(mod func(c map[string]any)) string {
	f.t.Helper()
	block, _ := pem.Decode([]byte(f.key.PrivateKey))
	key, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		f.t.Fatal(err)
	}
	signer, _ := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: key},
		(&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", f.key.PrivateKeyID))
	now := f.clock.Now()
	c := map[string]any{
		"iss": f.key.ClientEmail, "sub": "admin@x.test", "aud": f.srv.URL + "/token",
		"scope": googletest.ScopeUserReadonly + " " + googletest.ScopeGroupReadonly,
		"iat":   now.Unix(), "exp": now.Add(time.Hour).Unix(),
	}
	if mod != nil {
		mod(c)
	}
	s, err := jwt.Signed(signer).Claims(c).Serialize()
	if err != nil {
		f.t.Fatal(err)
	}
	return s
}

func (f *fixture) grant(assertion string) (int, map[string]any) {
	f.t.Helper()
	res, err := f.srv.Client().PostForm(f.srv.URL+"/token", url.Values{
		"grant_type": {"urn:ietf:params:oauth:grant-type:jwt-bearer"}, "assertion": {assertion}})
	if err != nil {
		f.t.Fatal(err)
	}
	defer res.Body.Close()
	var body map[string]any
	json.NewDecoder(res.Body).Decode(&body)
	return res.StatusCode, body
}

func (f *fixture) token() string {
	f.t.Helper()
	status, body := f.grant(f.assertion(nil))
	if status != 200 {
		f.t.Fatalf("token: %d %v", status, body)
	}
	return body["access_token"].(string)
}

func (f *fixture) get(tok, path string) (int, map[string]any) {
	f.t.Helper()
	req, _ := http.NewRequest("GET", f.srv.URL+path, nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	res, err := f.srv.Client().Do(req)
	if err != nil {
		f.t.Fatal(err)
	}
	defer res.Body.Close()
	var body map[string]any
	json.NewDecoder(res.Body).Decode(&body)
	return res.StatusCode, body
}

// reason is errors[0].reason of Google's envelope.
func reason(body map[string]any) string {
	e, _ := body["error"].(map[string]any)
	errs, _ := e["errors"].([]any)
	if len(errs) == 0 {
		return ""
	}
	r, _ := errs[0].(map[string]any)["reason"].(string)
	return r
}

func TestTokenEndpoint(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	if status, body := f.grant(f.assertion(nil)); status != 200 || body["token_type"] != "Bearer" || body["expires_in"] != float64(3599) {
		t.Fatalf("grant: %d %v", status, body)
	}
	tests := []struct {
		name   string
		mod    func(c map[string]any)
		status int
		code   string
	}{
		{"wrong audience", func(c map[string]any) { c["aud"] = "https://oauth2.googleapis.com/token" }, 400, "invalid_grant"},
		{"over an hour", func(c map[string]any) { c["exp"] = t0.Add(61 * time.Minute).Unix() }, 400, "invalid_grant"},
		{"expired", func(c map[string]any) { c["iat"], c["exp"] = t0.Add(-2*time.Hour).Unix(), t0.Add(-time.Hour).Unix() }, 400, "invalid_grant"},
		{"unknown sub", func(c map[string]any) { c["sub"] = "nobody@x.test" }, 400, "invalid_grant"},
		{"scope not delegated", func(c map[string]any) { c["scope"] = googletest.ScopeUser }, 401, "unauthorized_client"},
		{"no scope", func(c map[string]any) { delete(c, "scope") }, 400, "invalid_scope"},
		{"unknown account", func(c map[string]any) { c["iss"] = "other@x.iam.gserviceaccount.com" }, 401, "invalid_client"},
	}
	for _, tt := range tests {
		status, body := f.grant(f.assertion(tt.mod))
		if status != tt.status || body["error"] != tt.code {
			t.Errorf("%s: %d %v, want %d %s", tt.name, status, body, tt.status, tt.code)
		}
	}
	// Signed by another account's key.
	other, _ := f.srv.NewServiceAccount("other")
	var ok keyFile
	json.Unmarshal(other, &ok)
	f2 := *f
	f2.key.PrivateKey = ok.PrivateKey
	if status, body := f.grant(f2.assertion(nil)); status != 400 || body["error"] != "invalid_grant" {
		t.Errorf("foreign signature: %d %v", status, body)
	}
}

func TestAPIAuth(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	tok := f.token()
	if status, body := f.get("wrong", "/admin/directory/v1/users?customer=my_customer"); status != 401 || reason(body) != "authError" {
		t.Errorf("bad token: %d %v", status, body)
	}
	f.clock.Advance(time.Hour)
	if status, _ := f.get(tok, "/admin/directory/v1/users?customer=my_customer"); status != 401 {
		t.Errorf("expired token: %d", status)
	}
	// A non-admin sub gets a token, and 403 from the API.
	f.srv.AddUser(googletest.User{PrimaryEmail: "bob@x.test"})
	status, body := f.grant(f.assertion(func(c map[string]any) { c["sub"] = "bob@x.test" }))
	if status != 200 {
		t.Fatalf("grant for bob: %d %v", status, body)
	}
	if status, body := f.get(body["access_token"].(string), "/admin/directory/v1/users?customer=my_customer"); status != 403 || reason(body) != "forbidden" {
		t.Errorf("non-admin: %d %v", status, body)
	}
}

func TestUsersListing(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	for i := range 5 {
		f.srv.AddUser(googletest.User{PrimaryEmail: fmt.Sprintf("u%d@x.test", i), GivenName: "U", FamilyName: fmt.Sprint(i),
			Suspended: i == 3, CustomSchemas: map[string]map[string]any{"HR": {"id": i}, "Other": {"x": 1}}})
	}
	tok := f.token()
	base := "/admin/directory/v1/users?customer=my_customer&maxResults=2&projection=custom&customFieldMask=HR"
	seen, pages := 0, 0
	for next := base; next != ""; pages++ {
		status, body := f.get(tok, next)
		if status != 200 || body["kind"] != "admin#directory#users" {
			t.Fatalf("%s: %d %v", next, status, body)
		}
		for _, u := range body["users"].([]any) {
			m := u.(map[string]any)
			cs, _ := m["customSchemas"].(map[string]any)
			if _, other := cs["Other"]; other || (cs["HR"] == nil && m["primaryEmail"] != "admin@x.test") {
				t.Errorf("customFieldMask=HR gave %v", cs)
			}
			if m["suspended"] == true && m["suspensionReason"] != "ADMIN" {
				t.Errorf("suspended user without suspensionReason: %v", m)
			}
			seen++
		}
		next = ""
		if tokn, _ := body["nextPageToken"].(string); tokn != "" {
			next = base + "&pageToken=" + url.QueryEscape(tokn)
			// The token is bound to its query.
			if status, body := f.get(tok, "/admin/directory/v1/users?customer=my_customer&maxResults=3&pageToken="+url.QueryEscape(tokn)); status != 400 || reason(body) != "invalid" {
				t.Errorf("token replayed with another query: %d %v", status, body)
			}
		}
	}
	if seen != 6 || pages != 3 {
		t.Errorf("%d users in %d pages, want 6 in 3", seen, pages)
	}
	for q, want := range map[string]int{
		"maxResults=501":                      400,
		"maxResults=500":                      200,
		"customer=Cnope":                      400,
		"projection=custom":                   400, // no customFieldMask
		"projection=basic&customFieldMask=HR": 400,
		"fields=nextPageToken,users(id,name%2FgivenName)": 200,
	} {
		path := "/admin/directory/v1/users?" + q
		if !strings.Contains(q, "customer=") {
			path += "&customer=my_customer"
		}
		if status, _ := f.get(tok, path); status != want {
			t.Errorf("%s: %d, want %d", q, status, want)
		}
	}
	_, body := f.get(tok, "/admin/directory/v1/users?customer=my_customer&fields=users(id,name/givenName)&maxResults=1")
	u := body["users"].([]any)[0].(map[string]any)
	if len(body) != 1 || len(u) != 2 || len(u["name"].(map[string]any)) != 1 {
		t.Errorf("fields projection gave %v", body)
	}
}

func TestDeletedAndQuery(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.srv.SetIndexLag(time.Hour)
	id := f.srv.AddUser(googletest.User{PrimaryEmail: "ada@x.test", ExternalIDs: []googletest.ExternalID{{Type: "organization", Value: "1001"}}})
	tok := f.token()
	count := func(q string) int {
		status, body := f.get(tok, "/admin/directory/v1/users?customer=my_customer&"+q)
		if status != 200 {
			t.Fatalf("%s: %d %v", q, status, body)
		}
		users, _ := body["users"].([]any)
		return len(users)
	}
	if n := count("query=" + url.QueryEscape("externalId='1001'")); n != 0 {
		t.Errorf("the index found a user created now, despite an hour's lag")
	}
	f.clock.Advance(2 * time.Hour)
	tok = f.token()
	if n := count("query=" + url.QueryEscape("externalId='1001' isSuspended=false")); n != 1 {
		t.Errorf("the index did not find the user after the lag: %d", n)
	}
	f.srv.DeleteUser(id)
	if n := count("showDeleted=true"); n != 1 {
		t.Errorf("showDeleted listed %d", n)
	}
	if status, body := f.get(tok, "/admin/directory/v1/users/"+id); status != 404 || reason(body) != "notFound" {
		t.Errorf("deleted user: %d %v", status, body)
	}
}

func TestGroupsAndMembers(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ada := f.srv.AddUser(googletest.User{PrimaryEmail: "ada@x.test"})
	inner := f.srv.AddGroup(googletest.Group{Email: "inner@x.test", Name: "Inner"})
	outer := f.srv.AddGroup(googletest.Group{Email: "outer@x.test", Name: "Outer", Aliases: []string{"o@x.test"}})
	f.srv.AddMember(inner, ada)
	f.srv.AddMember(outer, inner)
	f.srv.AddMember(outer, googletest.CustomerID)
	tok := f.token()
	members := func(path string) map[string]string {
		status, body := f.get(tok, path)
		if status != 200 {
			t.Fatalf("%s: %d %v", path, status, body)
		}
		out := map[string]string{}
		ms, _ := body["members"].([]any)
		for _, m := range ms {
			mm := m.(map[string]any)
			out[mm["id"].(string)] = mm["type"].(string)
		}
		return out
	}
	direct := members("/admin/directory/v1/groups/o@x.test/members")
	if len(direct) != 2 || direct[inner] != "GROUP" || direct[googletest.CustomerID] != "CUSTOMER" {
		t.Errorf("direct members %v", direct)
	}
	derived := members("/admin/directory/v1/groups/" + outer + "/members?includeDerivedMembership=true")
	if len(derived) != 3 || derived[ada] != "USER" {
		t.Errorf("derived members %v", derived)
	}
	if status, body := f.get(tok, "/admin/directory/v1/groups/"+outer+"/members?maxResults=201"); status != 400 {
		t.Errorf("maxResults 201: %d %v", status, body)
	}
	if status, body := f.get(tok, "/admin/directory/v1/groups/nope@x.test/members"); status != 404 || reason(body) != "notFound" {
		t.Errorf("unknown group: %d %v", status, body)
	}
	_, body := f.get(tok, "/admin/directory/v1/groups/outer@x.test/hasMember/ada@x.test")
	if body["isMember"] != true {
		t.Errorf("hasMember (nested) = %v", body)
	}
	groupsOf := func(key string) int {
		status, body := f.get(tok, "/admin/directory/v1/groups?userKey="+url.QueryEscape(key))
		if status != 200 {
			t.Fatalf("userKey %s: %d %v", key, status, body)
		}
		gs, _ := body["groups"].([]any)
		return len(gs)
	}
	if groupsOf(ada) != 1 || groupsOf("inner@x.test") != 1 || groupsOf("outer@x.test") != 0 {
		t.Errorf("groups by userKey are not the direct memberships")
	}
	if status, _ := f.get(tok, "/admin/directory/v1/groups?userKey="+ada+"&customer=my_customer"); status != 400 {
		t.Errorf("userKey with customer: %d, want 400", status)
	}
}

func TestQuotasAndFaults(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	tok := f.token()
	f.srv.SetQuota(2)
	path := "/admin/directory/v1/users?customer=my_customer"
	for i := range 3 {
		status, body := f.get(tok, path)
		if i < 2 && status != 200 {
			t.Fatalf("call %d: %d", i, status)
		}
		if i == 2 && (status != 403 || reason(body) != "userRateLimitExceeded") {
			t.Errorf("over quota: %d %v", status, body)
		}
	}
	f.clock.Advance(time.Minute)
	if status, _ := f.get(tok, path); status != 200 {
		t.Errorf("the quota did not reopen after a minute: %d", status)
	}
	f.srv.SetQuota(1000)
	f.srv.Inject(googletest.Fault{Path: "/admin/directory/v1/users", Status: 403, Reason: "quotaExceeded", For: 10 * time.Second})
	if status, body := f.get(tok, path); status != 403 || reason(body) != "quotaExceeded" {
		t.Errorf("fault: %d %v", status, body)
	}
	f.clock.Advance(10 * time.Second)
	if status, _ := f.get(tok, path); status != 200 {
		t.Errorf("fault outlived its window: %d", status)
	}

	// Requests it does not understand fail the test that made them.
	rec := &recorder{TB: t}
	g := googletest.New(rec, f.clock).Start()
	res, err := g.Client().Post(g.URL+"/admin/directory/v1/users", "application/json", nil)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if len(rec.errs) == 0 {
		t.Error("a POST was not reported as not understood")
	}
}
