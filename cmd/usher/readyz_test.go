package main

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/usherhq/usher/admin"
	"github.com/usherhq/usher/providers"
	"github.com/usherhq/usher/store"
	"github.com/usherhq/usher/targets"
)

// hangingStore is a store whose database does not answer: Ping waits
// until its context ends, as a ping over a connection to a host that
// stopped answering does.
type hangingStore struct{ store.Store }

func (hangingStore) Ping(ctx context.Context) error {
	<-ctx.Done()
	return ctx.Err()
}

// upStore is a store whose Ping answers at once.
type upStore struct{ store.Store }

func (upStore) Ping(ctx context.Context) error { return ctx.Err() }

// healthyApp is an app whose REST API answers at once, unless the call's
// context has already ended (as an HTTP call would then fail).
type healthyApp struct{ targets.Target }

func (healthyApp) ListUsers(ctx context.Context, _ string, _ int) (targets.Page, error) {
	if err := ctx.Err(); err != nil {
		return targets.Page{}, err
	}
	return targets.Page{}, nil
}

// hungApp ignores its context and never answers.
type hungApp struct {
	targets.Target
	release chan struct{}
}

func (a hungApp) ListUsers(context.Context, string, int) (targets.Page, error) {
	<-a.release
	return targets.Page{}, nil
}

// checkedIdP is a provider that answers Ready with err.
type checkedIdP struct {
	providers.Provider
	id  string
	err error
}

func (p checkedIdP) ID() string                      { return p.id }
func (p checkedIdP) Available() error                { return nil }
func (p checkedIdP) Ready(ctx context.Context) error { return errors.Join(p.err, ctx.Err()) }

// readyz serves /readyz of m and g through the admin handler, as a load
// balancer sees it.
func readyz(t *testing.T, m *Main, g *generation) (int, map[string]string, time.Duration) {
	t.Helper()
	h := admin.New(admin.Options{Store: m.store, Log: slog.New(slog.DiscardHandler),
		Ready: func(ctx context.Context) []admin.Check { return m.ready(ctx, g) }})
	rec := httptest.NewRecorder()
	start := time.Now()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/readyz", nil))
	took := time.Since(start)
	var body struct {
		Status string            `json:"status"`
		Checks map[string]string `json:"checks"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
		t.Fatalf("/readyz body %q: %v", rec.Body, err)
	}
	return rec.Code, body.Checks, took
}

// TestReadyzNamesTheHangingStore: while the database hangs, /readyz says
// the store is what is wrong, and the IdPs and apps that answer are ok.
func TestReadyzNamesTheHangingStore(t *testing.T) {
	t.Parallel()
	m := &Main{store: hangingStore{}}
	g := &generation{
		providers: []providers.Provider{checkedIdP{id: "acme"}},
		dirs:      map[string]targets.Target{"jira": healthyApp{}, "wiki": healthyApp{}},
	}
	code, checks, took := readyz(t, m, g)
	t.Logf("/readyz answered %d after %v: %v", code, took.Round(time.Millisecond), checks)
	if code != http.StatusServiceUnavailable {
		t.Fatalf("status %d, want 503", code)
	}
	if !strings.Contains(checks["store"], "did not answer within 2s") {
		t.Errorf("store: %q, want it named as not answering", checks["store"])
	}
	for _, name := range []string{"idp:acme", "app:jira", "app:wiki"} {
		if checks[name] != "ok" {
			t.Errorf("%s: %q, want ok: the store's fault must not be reported as theirs", name, checks[name])
		}
	}
}

// TestReadyzChecks: each IdP's own answer is reported, and a check that
// ignores its context is named without holding the others.
func TestReadyzChecks(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	defer close(release)
	m := &Main{store: upStore{}}
	g := &generation{
		providers: []providers.Provider{
			checkedIdP{id: "acme"},
			checkedIdP{id: "globex", err: &providers.UnavailableError{Name: "Globex", Reason: "its discovery document could not be fetched"}},
		},
		dirs: map[string]targets.Target{"jira": healthyApp{}, "wiki": hungApp{release: release}},
	}
	code, checks, _ := readyz(t, m, g)
	want := map[string]string{
		"store":      "ok",
		"idp:acme":   "ok",
		"idp:globex": "Globex is unavailable: its discovery document could not be fetched",
		"app:jira":   "ok",
		"app:wiki":   "did not answer within 3s",
	}
	// An IdP and an app down, the store fine: degraded, still serving.
	if code != http.StatusOK || len(checks) != len(want) {
		t.Fatalf("/readyz: %d %v", code, checks)
	}
	for k, v := range want {
		if checks[k] != v {
			t.Errorf("%s: %q, want %q", k, checks[k], v)
		}
	}
}
