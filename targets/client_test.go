package targets_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/usherhq/usher/config"
	"github.com/usherhq/usher/targets"
)

// recorder is an injected Sleep that records waits and returns at once.
type recorder struct {
	mu sync.Mutex
	d  []time.Duration
}

func (r *recorder) sleep(ctx context.Context, d time.Duration) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.d = append(r.d, d)
	return ctx.Err()
}

func (r *recorder) waits() []time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.d)
}

func newClient(t *testing.T, h http.Handler, mod func(*targets.ClientConfig)) (*targets.Client, *recorder) {
	t.Helper()
	hs := httptest.NewServer(h)
	t.Cleanup(hs.Close)
	u, _ := url.Parse(hs.URL + "/ctx")
	rec := &recorder{}
	cfg := targets.ClientConfig{App: "jira", BaseURL: u, Auth: targets.Auth{Username: "admin", Password: "pw"}, Sleep: rec.sleep}
	if mod != nil {
		mod(&cfg)
	}
	c, err := targets.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c, rec
}

func TestErrorEnvelopes(t *testing.T) {
	tests := []struct {
		name, ctype, body string
		header            http.Header
		status            int
		wantMsg           string
		check             func(*targets.APIError) bool
	}{
		{name: "jira", status: 400, ctype: "application/json",
			body:    `{"errorMessages":[],"errors":{"username":"A user with that username already exists."}}`,
			wantMsg: "username: A user with that username already exists.",
			check:   func(e *targets.APIError) bool { return e.Fields["username"] != "" }},
		{name: "confluence", status: 404, ctype: "application/json",
			body:    `{"statusCode":404,"data":{"authorized":false,"valid":true,"errors":[],"successful":false},"message":"No user found","reason":"Not Found"}`,
			wantMsg: "Not Found; No user found"},
		{name: "bitbucket", status: 404, ctype: "application/json",
			body:    `{"errors":[{"context":null,"message":"No such user","exceptionName":"com.atlassian.bitbucket.user.NoSuchUserException"}]}`,
			wantMsg: "No such user",
			check:   func(e *targets.APIError) bool { return e.Mentions("NoSuchUser") }},
		{name: "cloud organizations", status: 409, ctype: "application/json",
			body:    `{"errors":[{"id":"7f1c","status":"409","code":"ADMIN-UAM-409-3","title":"Conflict","detail":"Product licence limit exceeded"}]}`,
			wantMsg: "Conflict: Product licence limit exceeded",
			check:   func(e *targets.APIError) bool { return e.HasCode("admin-uam-409-3") && !e.HasCode("ADMIN-UAM-409-2") }},
		{name: "crowd", status: 404, ctype: "application/json",
			body: `{"reason":"USER_NOT_FOUND","message":"User <x> does not exist"}`, wantMsg: "USER_NOT_FOUND; User <x> does not exist"},
		{name: "seraph html", status: 401, ctype: "text/html", body: "<html>login</html>",
			header: http.Header{"X-Seraph-Loginreason": {"AUTHENTICATED_FAILED"}}, wantMsg: "login reason AUTHENTICATED_FAILED"},
		{name: "plain text", status: 403, ctype: "text/plain", body: "XSRF check failed", wantMsg: "XSRF check failed"},
		{name: "empty", status: 403, wantMsg: "Forbidden"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, _ := newClient(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				for k, v := range tc.header {
					w.Header()[k] = v
				}
				if tc.ctype != "" {
					w.Header().Set("Content-Type", tc.ctype)
				}
				w.WriteHeader(tc.status)
				w.Write([]byte(tc.body))
			}), nil)
			_, err := c.Do(t.Context(), targets.Request{Op: "get user", User: "fred", Method: "GET", Path: "/rest/api/2/user"})
			var te *targets.Error
			if !errors.As(err, &te) || te.Status != tc.status || te.Temporary || te.App != "jira" || te.User != "fred" {
				t.Fatalf("err = %#v", err)
			}
			ae := targets.APIErrorOf(err)
			if ae == nil || ae.Error() != tc.wantMsg {
				t.Fatalf("API error = %v, want %q", ae, tc.wantMsg)
			}
			if tc.check != nil && !tc.check(ae) {
				t.Errorf("check failed on %#v", ae)
			}
			if !strings.Contains(err.Error(), "jira: get user fred: HTTP") {
				t.Errorf("message %q", err)
			}
		})
	}
}

func TestHeaders(t *testing.T) {
	type seen struct{ method, auth, token, ctype, path, query string }
	var got []seen
	var mu sync.Mutex
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		got = append(got, seen{r.Method, r.Header.Get("Authorization"), r.Header.Get("X-Atlassian-Token"), r.Header.Get("Content-Type"), r.URL.EscapedPath(), r.URL.RawQuery})
		mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	})
	basic, _ := newClient(t, h, nil)
	bearer, _ := newClient(t, h, func(c *targets.ClientConfig) { c.Auth = targets.Auth{Token: "pat"} })
	ctx := t.Context()
	calls := []struct {
		c *targets.Client
		r targets.Request
	}{
		{basic, targets.Request{Method: "GET", Path: "/rest/api/user/" + url.PathEscape("a b") + "/group/" + url.PathEscape("x/y"), Query: url.Values{"expand": {"status"}}}},
		{basic, targets.Request{Method: "POST", Path: "/rest/api/1.0/admin/users", Query: url.Values{"name": {"jdoe"}}}},
		{bearer, targets.Request{Method: "PUT", Path: "/rest/api/2/user", Body: map[string]bool{"active": false}}},
	}
	for _, c := range calls {
		if _, err := c.c.Do(ctx, c.r); err != nil {
			t.Fatal(err)
		}
	}
	want := []seen{
		{"GET", "Basic YWRtaW46cHc=", "", "", "/ctx/rest/api/user/a%20b/group/x%2Fy", "expand=status"},
		{"POST", "Basic YWRtaW46cHc=", "no-check", "", "/ctx/rest/api/1.0/admin/users", "name=jdoe"},
		{"PUT", "Bearer pat", "", "application/json", "/ctx/rest/api/2/user", ""},
	}
	if !slices.Equal(got, want) {
		t.Errorf("requests:\n got %v\nwant %v", got, want)
	}
}

// scripted answers each request with the next status in a list (then
// 200 {}), counting requests.
type scripted struct {
	mu       sync.Mutex
	statuses []int
	header   http.Header
	n        int
}

func (s *scripted) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.n++
	st := http.StatusOK
	if len(s.statuses) > 0 {
		st, s.statuses = s.statuses[0], s.statuses[1:]
	}
	for k, v := range s.header {
		w.Header()[k] = v
	}
	s.mu.Unlock()
	w.WriteHeader(st)
	w.Write([]byte(`{"name":"ok"}`))
}

func (s *scripted) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.n
}

func TestRetryPolicy(t *testing.T) {
	now := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		name       string
		statuses   []int
		header     http.Header
		req        targets.Request
		wantErr    bool
		wantTemp   bool
		wantStatus int
		wantCalls  int
		wantWaits  []time.Duration // nil: only count them
		waitCount  int
	}{
		{name: "429 retry-after seconds", statuses: []int{429}, header: http.Header{"Retry-After": {"5"}},
			req: targets.Request{Method: "POST", Path: "/u"}, wantCalls: 2, wantWaits: []time.Duration{5 * time.Second}},
		{name: "429 retry-after date", statuses: []int{429}, header: http.Header{"Retry-After": {now.Add(7 * time.Second).Format(http.TimeFormat)}},
			req: targets.Request{Method: "GET", Path: "/u"}, wantCalls: 2, wantWaits: []time.Duration{7 * time.Second}},
		{name: "429 beyond cap", statuses: []int{429}, header: http.Header{"Retry-After": {"61"}},
			req: targets.Request{Method: "GET", Path: "/u"}, wantErr: true, wantTemp: true, wantStatus: 429, wantCalls: 1, wantWaits: []time.Duration{}},
		{name: "503 on create is not resent", statuses: []int{503},
			req: targets.Request{Method: "POST", Path: "/u"}, wantErr: true, wantTemp: true, wantStatus: 503, wantCalls: 1, wantWaits: []time.Duration{}},
		{name: "503 on idempotent post is resent", statuses: []int{503, 502},
			req: targets.Request{Method: "POST", Path: "/u", Idempotent: true}, wantCalls: 3, waitCount: 2},
		{name: "5xx exhausted", statuses: []int{500, 500, 500, 500, 500, 500},
			req: targets.Request{Method: "DELETE", Path: "/u"}, wantErr: true, wantTemp: true, wantStatus: 500, wantCalls: 5, waitCount: 4},
		{name: "400 is final", statuses: []int{400},
			req: targets.Request{Method: "PUT", Path: "/u"}, wantErr: true, wantStatus: 400, wantCalls: 1, wantWaits: []time.Duration{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := &scripted{statuses: tc.statuses, header: tc.header}
			c, rec := newClient(t, s, func(c *targets.ClientConfig) { c.Now = func() time.Time { return now } })
			var out struct{ Name string }
			tc.req.Out = &out
			_, err := c.Do(t.Context(), tc.req)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v", err)
			}
			if err != nil && (targets.IsTemporary(err) != tc.wantTemp || targets.StatusOf(err) != tc.wantStatus) {
				t.Errorf("err = %#v, want temporary %v status %d", err, tc.wantTemp, tc.wantStatus)
			}
			if err == nil && out.Name != "ok" {
				t.Errorf("decoded %+v", out)
			}
			if s.count() != tc.wantCalls {
				t.Errorf("calls = %d, want %d", s.count(), tc.wantCalls)
			}
			w := rec.waits()
			if tc.wantWaits != nil && !slices.Equal(w, tc.wantWaits) && !(len(w) == 0 && len(tc.wantWaits) == 0) {
				t.Errorf("waits = %v, want %v", w, tc.wantWaits)
			}
			if tc.wantWaits == nil && len(w) != tc.waitCount {
				t.Errorf("waits = %v, want %d", w, tc.waitCount)
			}
			for i, d := range w {
				if tc.wantWaits == nil && (d < 0 || d > 250*time.Millisecond<<i) {
					t.Errorf("backoff %d = %s, beyond full jitter bound", i, d)
				}
			}
		})
	}
}

// TestResentAfterLostAnswer: an attempt that times out without an answer
// is retried and the response says Resent, which is what lets an adapter
// treat a following "already exists" as its own earlier success.
func TestResentAfterLostAnswer(t *testing.T) {
	var n atomic.Int32
	c, rec := newClient(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body) // lets the server notice the client hang up
		if n.Add(1) == 1 {
			<-r.Context().Done() // the first answer never comes
			return
		}
		w.WriteHeader(http.StatusCreated)
	}), func(c *targets.ClientConfig) { c.Timeout = 20 * time.Millisecond })
	res, err := c.Do(t.Context(), targets.Request{Method: "POST", Path: "/user", Body: map[string]string{"name": "x"}})
	if err != nil || !res.Resent || res.Status != 201 {
		t.Fatalf("res = %+v, err = %v", res, err)
	}
	if len(rec.waits()) != 1 {
		t.Errorf("waits = %v", rec.waits())
	}
}

func TestConcurrencyLimit(t *testing.T) {
	var inFlight, peak atomic.Int32
	arrived := make(chan struct{}, 10)
	release := make(chan struct{})
	c, _ := newClient(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		v := inFlight.Add(1)
		for {
			p := peak.Load()
			if v <= p || peak.CompareAndSwap(p, v) {
				break
			}
		}
		arrived <- struct{}{}
		<-release
		inFlight.Add(-1)
	}), func(c *targets.ClientConfig) { c.Concurrency = 2 })
	var wg sync.WaitGroup
	for range 5 {
		wg.Go(func() {
			if _, err := c.Do(context.Background(), targets.Request{Method: "GET", Path: "/u"}); err != nil {
				t.Error(err)
			}
		})
	}
	<-arrived
	<-arrived
	close(release)
	wg.Wait()
	if p := peak.Load(); p != 2 {
		t.Errorf("peak in flight = %d, want 2", p)
	}
}

// TestCancelDuringBackoff uses the real timer: a 30s Retry-After must not
// hold a cancelled caller.
func TestCancelDuringBackoff(t *testing.T) {
	got := make(chan struct{}, 1)
	c, _ := newClient(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Retry-After", "30")
		w.WriteHeader(429)
		got <- struct{}{}
	}), func(c *targets.ClientConfig) { c.Sleep = nil })
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		_, err := c.Do(ctx, targets.Request{Op: "get user", User: "u", Method: "GET", Path: "/u"})
		done <- err
	}()
	<-got
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) || targets.IsTemporary(err) {
			t.Errorf("err = %v, want a non-temporary context.Canceled", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Do kept waiting after cancel")
	}
}

func TestConnValidate(t *testing.T) {
	pw, tok := config.SecretValue("pw"), config.SecretValue("tok")
	tests := []struct {
		name string
		conn targets.Conn
		want []string // offending fields
	}{
		{"password", targets.Conn{Username: "admin", Password: pw}, nil},
		{"token", targets.Conn{Token: tok, URL: "https://jira.example.com/ctx", Concurrency: 4, Timeout: time.Second}, nil},
		{"neither", targets.Conn{Username: "admin"}, []string{"password"}},
		{"both", targets.Conn{Username: "admin", Password: pw, Token: tok}, []string{"token"}},
		{"password without user", targets.Conn{Password: pw}, []string{"username"}},
		{"user with token", targets.Conn{Username: "admin", Token: tok}, []string{"username"}},
		{"bad url and limits", targets.Conn{Token: tok, URL: "jira.example.com", Concurrency: -1, Timeout: -time.Second}, []string{"url", "concurrency", "timeout"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var fields []string
			for _, err := range tc.conn.Validate() {
				var fe *config.FieldError
				if !errors.As(err, &fe) {
					t.Fatalf("%v is not a FieldError", err)
				}
				fields = append(fields, fe.Field)
			}
			if !slices.Equal(fields, tc.want) {
				t.Errorf("fields = %v, want %v", fields, tc.want)
			}
		})
	}
}

func TestTimestamp(t *testing.T) {
	tests := map[string]time.Time{
		`1700000000000`:                  time.UnixMilli(1700000000000).UTC(),
		`"1700000000000"`:                time.UnixMilli(1700000000000).UTC(),
		`"2024-01-02T03:04:05Z"`:         time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC),
		`"2024-01-02T03:04:05.000+0000"`: time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC),
		`null`:                           {},
		`"yesterday"`:                    {},
	}
	for in, want := range tests {
		var ts targets.Timestamp
		if err := ts.UnmarshalJSON([]byte(in)); err != nil || !ts.Equal(want) {
			t.Errorf("%s → %v, %v; want %v", in, ts.Time, err, want)
		}
	}
}

func TestOpLabel(t *testing.T) {
	for in, want := range map[string]string{
		"add to group jira-users":  "add to group",
		"remove from group x y":    "remove from group",
		"create group team-a":      "create group",
		"get user":                 "get user",
		"rename user to bob":       "rename user",
		"set attribute department": "set attribute",
		"list users":               "list users",
		"":                         "",
	} {
		if got := targets.OpLabel(in); got != want {
			t.Errorf("OpLabel(%q) = %q, want %q", in, got, want)
		}
	}
}

// A write behind a redirect must fail, not turn into a GET that succeeds.
func TestRedirectIsAnError(t *testing.T) {
	var gets int
	mux := http.NewServeMux()
	mux.HandleFunc("PUT /ctx/rest/api/2/user", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/ctx/login.jsp", http.StatusFound)
	})
	mux.HandleFunc("GET /ctx/login.jsp", func(w http.ResponseWriter, r *http.Request) {
		gets++
		w.Write([]byte(`{}`))
	})
	c, _ := newClient(t, mux, nil)
	_, err := c.Do(context.Background(), targets.Request{Op: "update user", User: "alice", Method: "PUT", Path: "/rest/api/2/user", Body: map[string]any{"active": false}})
	if err == nil || gets != 0 {
		t.Fatalf("redirected PUT: err %v, followed %d times", err, gets)
	}
}

// Transport errors never carry the query string (Bitbucket sends the
// password of a new user there).
func TestTransportErrorHidesQuery(t *testing.T) {
	u, _ := url.Parse("http://127.0.0.1:1/ctx")
	c, err := targets.NewClient(targets.ClientConfig{App: "bitbucket", BaseURL: u, MaxRetries: -1})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Do(context.Background(), targets.Request{Op: "create user", User: "bob", Method: "POST", Path: "/rest/api/1.0/admin/users",
		Query: url.Values{"name": {"bob"}, "password": {"s3cret-Pw"}}})
	if err == nil || strings.Contains(err.Error(), "s3cret") {
		t.Fatalf("error %v", err)
	}
}
