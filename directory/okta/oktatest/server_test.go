package oktatest_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/usherhq/usher/directory/okta/oktatest"
)

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

func get(t *testing.T, srv *oktatest.Server, path string) (*http.Response, []map[string]any, map[string]any) {
	t.Helper()
	if !strings.HasPrefix(path, "http") {
		path = srv.URL + path
	}
	req, _ := http.NewRequest("GET", path, nil)
	req.Header.Set("Authorization", "SSWS tok")
	res, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var raw json.RawMessage
	json.NewDecoder(res.Body).Decode(&raw)
	var list []map[string]any
	var obj map[string]any
	if json.Unmarshal(raw, &list) != nil {
		json.Unmarshal(raw, &obj)
	}
	return res, list, obj
}

func next(res *http.Response) string {
	for _, v := range res.Header.Values("Link") {
		if strings.HasSuffix(v, `rel="next"`) {
			return strings.Trim(strings.Split(v, ";")[0], "<>")
		}
	}
	return ""
}

func TestListings(t *testing.T) {
	t.Parallel()
	clock := clockwork.NewFakeClockAt(time.Date(2025, 3, 1, 9, 0, 0, 0, time.UTC))
	srv := oktatest.New(t, clock).Start()
	srv.AddAPIToken("tok")
	for i, st := range []string{"ACTIVE", "ACTIVE", "SUSPENDED", "DEPROVISIONED", "STAGED"} {
		srv.AddUser(oktatest.User{Status: st, Profile: map[string]any{"login": fmt.Sprintf("u%d@x.test", i), "email": fmt.Sprintf("u%d@x.test", i), "firstName": "Al"}})
	}
	// Default: all but DEPROVISIONED, paged with Link self + next.
	n, pages := 0, 0
	for link := "/api/v1/users?limit=2"; link != ""; pages++ {
		res, list, _ := get(t, srv, link)
		if res.StatusCode != 200 || len(res.Header.Values("Link")) == 0 {
			t.Fatalf("%s: %d, Link %q", link, res.StatusCode, res.Header.Values("Link"))
		}
		for _, h := range []string{"X-Rate-Limit-Limit", "X-Rate-Limit-Remaining", "X-Rate-Limit-Reset", "Date"} {
			if res.Header.Get(h) == "" {
				t.Errorf("no %s header", h)
			}
		}
		n += len(list)
		link = next(res)
	}
	if n != 4 || pages != 2 {
		t.Errorf("default listing: %d users in %d pages, want 4 in 2", n, pages)
	}
	_, list, _ := get(t, srv, `/api/v1/users?filter=status+eq+%22DEPROVISIONED%22`)
	if len(list) != 1 {
		t.Errorf("filter DEPROVISIONED: %d", len(list))
	}
	_, list, _ = get(t, srv, `/api/v1/users?search=status+eq+%22DEPROVISIONED%22+or+status+eq+%22ACTIVE%22`)
	if len(list) != 3 {
		t.Errorf("search includes DEPROVISIONED: %d, want 3", len(list))
	}
	res, list, _ := get(t, srv, `/api/v1/users?q=al&limit=3`)
	if len(list) != 3 || next(res) != "" {
		t.Errorf("q: %d users, next %q; want 3 unpaged", len(list), next(res))
	}
	res, _, body := get(t, srv, `/api/v1/users?filter=profile.department+eq+%22x%22`)
	if res.StatusCode != 400 || body["errorCode"] != "E0000031" {
		t.Errorf("filter on an unfilterable attribute: %d %v", res.StatusCode, body)
	}
	res, _, body = get(t, srv, `/api/v1/users/00u0000000000nobody`)
	if res.StatusCode != 404 || body["errorCode"] != "E0000007" || body["errorId"] == "" {
		t.Errorf("unknown user: %d %v", res.StatusCode, body)
	}
	res, _, body = get(t, srv, `/api/v1/users/u0`) // a unique short login
	if res.StatusCode != 200 || body["status"] != "ACTIVE" {
		t.Errorf("short login: %d %v", res.StatusCode, body)
	}
}

func TestRateLimitAnswer(t *testing.T) {
	t.Parallel()
	clock := clockwork.NewFakeClockAt(time.Date(2025, 3, 1, 9, 0, 0, 0, time.UTC))
	srv := oktatest.New(t, clock).Start()
	srv.AddAPIToken("tok")
	srv.SetRateLimit(1, time.Minute)
	get(t, srv, "/api/v1/users")
	res, _, body := get(t, srv, "/api/v1/users")
	if res.StatusCode != 429 || body["errorCode"] != "E0000047" || res.Header.Get("X-Rate-Limit-Remaining") != "0" {
		t.Errorf("over the limit: %d %v %v", res.StatusCode, body, res.Header)
	}
	if res, _, _ := get(t, srv, "/api/v1/groups"); res.StatusCode != 200 {
		t.Errorf("another endpoint family has its own bucket: %d", res.StatusCode)
	}
	clock.Advance(time.Minute)
	if res, _, _ := get(t, srv, "/api/v1/users"); res.StatusCode != 200 {
		t.Errorf("after the reset: %d", res.StatusCode)
	}
}

func TestNotUnderstood(t *testing.T) {
	t.Parallel()
	rec := &recorder{TB: t}
	srv := oktatest.New(rec, nil).Start()
	srv.AddAPIToken("tok")
	for _, path := range []string{"/api/v1/users?expand=groups", "/api/v1/apps", "/api/v1/users/x/groups?limit=5", "/api/v1/users?sortBy=id"} {
		rec.errs = nil
		if res, _, _ := get(t, srv, path); res.StatusCode != 400 || len(rec.errs) != 1 {
			t.Errorf("%s: %d, failures %q", path, res.StatusCode, rec.errs)
		}
	}
}
