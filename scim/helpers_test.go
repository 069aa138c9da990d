package scim

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/usherhq/usher/store"
	"github.com/usherhq/usher/store/sqlite"
)

var testNow = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

const (
	tokenA = "token-entra-0123456789"
	tokenB = "token-okta-9876543210"
)

type hookCall struct {
	kind, idp, subject, reason string
	user                       User
}

// recHooks records every hook call; fail makes them return an error.
type recHooks struct {
	mu    sync.Mutex
	calls []hookCall
	fail  error
}

func (h *recHooks) Provision(_ context.Context, idp string, u User) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.calls = append(h.calls, hookCall{kind: "provision", idp: idp, subject: u.Subject, user: u})
	return h.fail
}

func (h *recHooks) Deprovision(_ context.Context, idp, subject, reason string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.calls = append(h.calls, hookCall{kind: "deprovision", idp: idp, subject: subject, reason: reason})
	return h.fail
}

// take returns the calls so far of one kind ("" for all) and forgets
// all calls.
func (h *recHooks) take(kind string) []hookCall {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []hookCall
	for _, c := range h.calls {
		if kind == "" || c.kind == kind {
			out = append(out, c)
		}
	}
	h.calls = nil
	return out
}

// failingStore is the real store with PutSCIMUser failing, as when the
// database is unreachable for writes.
type failingStore struct {
	store.SCIM
	failPut bool
}

func (f *failingStore) PutSCIMUser(ctx context.Context, u store.SCIMUser) error {
	if f.failPut {
		return errors.New("database is locked")
	}
	return f.SCIM.PutSCIMUser(ctx, u)
}

// testDB is a store a test can also close.
type testDB interface {
	store.SCIM
	Close() error
}

// actHooks are recHooks that are also an Activator; activations are
// kept apart, so tests of the other hooks see the calls they expect.
type actHooks struct {
	*recHooks
	mu        sync.Mutex
	activated []string // idp/subject
}

func (h *actHooks) Activated(_ context.Context, idp, subject string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.activated = append(h.activated, idp+"/"+subject)
	return nil
}

// takeActivated returns the activations so far and forgets them.
func (h *actHooks) takeActivated() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := h.activated
	h.activated = nil
	return out
}

type env struct {
	t     *testing.T
	srv   *httptest.Server
	hooks *recHooks
	act   *actHooks
	db    testDB
	st    *failingStore
	logs  *logBuf
}

// logBuf collects the server's log lines; safe for concurrent use.
type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// newEnv serves SCIM over a fresh SQLite store.
func newEnv(t *testing.T, idps ...IdPConfig) *env {
	t.Helper()
	db, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "usher.db"), sqlite.Options{})
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	return newEnvOn(t, db, idps...)
}

// newEnvOn serves SCIM over db, which it closes at cleanup.
func newEnvOn(t *testing.T, db testDB, idps ...IdPConfig) *env {
	t.Helper()
	t.Cleanup(func() { db.Close() })
	if len(idps) == 0 {
		idps = []IdPConfig{
			{ID: "entra", Token: tokenA, Automatic: true},
			{ID: "okta", Token: tokenB, Automatic: true},
		}
	}
	e := &env{t: t, hooks: &recHooks{}, db: db, st: &failingStore{SCIM: db}, logs: &logBuf{}}
	e.act = &actHooks{recHooks: e.hooks}
	h, err := New(Config{IdPs: idps, Store: e.st, Hooks: e.act, Now: func() time.Time { return testNow }, MaxBody: 64 << 10,
		Log: slog.New(slog.NewTextHandler(e.logs, nil))})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	mux := http.NewServeMux()
	mux.Handle("/scim/v2/", h)
	e.srv = httptest.NewServer(mux)
	t.Cleanup(e.srv.Close)
	return e
}

type resp struct {
	status int
	header http.Header
	body   map[string]any
	raw    string
}

func (e *env) do(token, method, path, body string) resp {
	e.t.Helper()
	req, err := http.NewRequest(method, e.srv.URL+"/scim/v2"+path, strings.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	req.Header.Set("Content-Type", "application/scim+json")
	res, err := e.srv.Client().Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	raw, err := io.ReadAll(res.Body)
	if err != nil {
		e.t.Fatalf("%s %s: read body: %v", method, path, err)
	}
	r := resp{status: res.StatusCode, header: res.Header, raw: string(raw)}
	if r.raw != "" {
		if err := json.Unmarshal([]byte(r.raw), &r.body); err != nil {
			e.t.Fatalf("%s %s: body is not JSON: %v\n%s", method, path, err, r.raw)
		}
	}
	return r
}

// must does a request and fails the test unless it answers want.
func (e *env) must(want int, token, method, path, body string) resp {
	e.t.Helper()
	r := e.do(token, method, path, body)
	if r.status != want {
		e.t.Fatalf("%s %s = %d, want %d\n%s", method, path, r.status, want, r.raw)
	}
	return r
}

// get reads a dotted path ("meta.version", "emails.0.value") from a
// decoded JSON document.
func get(doc any, path string) any {
	cur := doc
	for _, p := range strings.Split(path, ".") {
		switch t := cur.(type) {
		case map[string]any:
			cur = t[p]
		case []any:
			i := 0
			for _, c := range p {
				i = i*10 + int(c-'0')
			}
			if i >= len(t) {
				return nil
			}
			cur = t[i]
		default:
			return nil
		}
	}
	return cur
}

func wantField(t *testing.T, doc any, path string, want any) {
	t.Helper()
	if got := get(doc, path); got != want {
		t.Errorf("%s = %#v, want %#v", path, got, want)
	}
}

// wantError checks a SCIM error document.
func wantError(t *testing.T, r resp, status int, scimType string) {
	t.Helper()
	if r.status != status {
		t.Fatalf("status = %d, want %d\n%s", r.status, status, r.raw)
	}
	if s, _ := get(r.body, "schemas.0").(string); s != "urn:ietf:params:scim:api:messages:2.0:Error" {
		t.Errorf("schemas = %v, want the Error message URN", r.body["schemas"])
	}
	if got := r.body["status"]; got != strconv.Itoa(status) {
		t.Errorf("status field = %#v, want %q", got, strconv.Itoa(status))
	}
	if got, _ := r.body["scimType"].(string); got != scimType {
		t.Errorf("scimType = %q, want %q (detail %v)", got, scimType, r.body["detail"])
	}
}
