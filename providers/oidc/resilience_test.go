package oidc

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/usherhq/usher/providers"
)

// memCache is a providers.Cache in memory, stamped by a clock.
type memCache struct {
	clock clockwork.Clock
	mu    sync.Mutex
	vals  map[string][]byte
	at    map[string]time.Time
}

func newMemCache(c clockwork.Clock) *memCache {
	return &memCache{clock: c, vals: map[string][]byte{}, at: map[string]time.Time{}}
}

func (m *memCache) Get(_ context.Context, key string) ([]byte, time.Time, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	v, ok := m.vals[key]
	if !ok {
		return nil, time.Time{}, fmt.Errorf("%s: %w", key, providers.ErrNotCached)
	}
	return bytes.Clone(v), m.at[key], nil
}

func (m *memCache) Put(_ context.Context, key string, v []byte) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.vals[key], m.at[key] = bytes.Clone(v), m.clock.Now()
	return nil
}

func (m *memCache) get(key string) []byte {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.vals[key]
}

// syncBuffer is a log sink safe for the provider's background goroutine.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// openCached opens a provider "a" named "Acme" for f with cache and a fake
// clock, logging to the returned buffer. Close runs at cleanup.
func openCached(t *testing.T, f *fakeIssuer, cache providers.Cache, clock clockwork.Clock) (*Provider, *syncBuffer) {
	t.Helper()
	logs := &syncBuffer{}
	pu, _ := url.Parse(publicURL)
	c := &Config{Issuer: f.issuer(), ClientID: clientID, Now: func() time.Time { return testNow }}
	pp, err := c.Open(context.Background(), "a", providers.Deps{
		PublicURL: pu, Name: "Acme", Cache: cache, Clock: clock,
		Log: slog.New(slog.NewTextHandler(logs, nil)),
	})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	p := pp.(*Provider)
	t.Cleanup(func() { p.Close() })
	return p, logs
}

// eventually waits for cond, which a background goroutine makes true.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("still not %s after 10s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestUnreachableAtOpenWithoutCopy: with the IdP down and nothing
// stored, Open succeeds; the provider is unavailable with a clear typed
// error, retries with growing waits, loads once the IdP answers, keeps a
// copy, and stops retrying then.
func TestUnreachableAtOpenWithoutCopy(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFakeIssuer(t)
	f.setDown(true)
	clock := clockwork.NewFakeClock()
	cache := newMemCache(clock)
	p, logs := openCached(t, f, cache, clock)

	const want = "Acme is unavailable: its discovery document could not be fetched"
	err := p.Available()
	var ue *providers.UnavailableError
	if !errors.As(err, &ue) || ue.Message() != want {
		t.Fatalf("Available() = %v, want %q", err, want)
	}
	if _, err := p.Begin(ctx, "flow-1", ""); !errors.Is(err, providers.ErrUnavailable) || errors.Is(err, providers.ErrRefused) || !strings.Contains(err.Error(), want) {
		t.Fatalf("Begin: err = %v, want an unavailable error saying %q", err, want)
	}
	if err := p.Ready(ctx); !errors.Is(err, providers.ErrUnavailable) {
		t.Fatalf("Ready() = %v", err)
	}
	if out := logs.String(); !strings.Contains(out, "level=ERROR") || !strings.Contains(out, "idp=a") || !strings.Contains(out, "unavailable") {
		t.Fatalf("the log does not say the IdP is unavailable:\n%s", out)
	}

	// Retries wait 5s, then 10s, ...
	step := func(d time.Duration) {
		t.Helper()
		if err := clock.BlockUntilContext(ctx, 1); err != nil {
			t.Fatal(err)
		}
		clock.Advance(d)
	}
	step(retryFirst)
	eventually(t, "retried once", func() bool { n, _ := f.counts(); return n == 2 })
	step(retryFirst) // half of the second wait
	if n, _ := f.counts(); n != 2 {
		t.Fatalf("%d discovery requests after 10s, want 2 (the second retry waits 10s)", n)
	}
	clock.Advance(retryFirst)
	eventually(t, "retried twice", func() bool { n, _ := f.counts(); return n == 3 })

	f.setDown(false)
	step(2 * retryFirst * 2)
	eventually(t, "available", func() bool { return p.Available() == nil })
	if _, err := p.Begin(ctx, "flow-1", ""); err != nil {
		t.Fatalf("Begin after the IdP came back: %v", err)
	}
	if err := p.Ready(ctx); err != nil {
		t.Fatalf("Ready after the IdP came back: %v", err)
	}
	if got := cache.get(cacheKey); !bytes.Contains(got, []byte(f.issuer())) {
		t.Fatalf("the cache holds %q, want the discovery document", got)
	}
	// Loaded: the retry loop has ended, so Close does not wait.
	p.Close()
	n, _ := f.counts()
	clock.Advance(time.Hour)
	if m, _ := f.counts(); m != n {
		t.Fatalf("discovery fetched %d more times after the load and Close", m-n)
	}
}

// TestUnreachableAtOpenWithCopy: a stored copy lets the provider start
// logins while the IdP's discovery does not answer; the log names the IdP
// and the copy's age; Ready says the keys cannot be fetched; once the
// IdP is back, the IdP's own document replaces the copy.
func TestUnreachableAtOpenWithCopy(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFakeIssuer(t)
	clock := clockwork.NewFakeClock()
	cache := newMemCache(clock)
	first, _ := openCached(t, f, cache, clock)
	first.Close()
	if cache.get(cacheKey) == nil {
		t.Fatal("a successful Open kept no copy")
	}

	clock.Advance(2 * time.Hour)
	f.setDown(true)
	p, logs := openCached(t, f, cache, clock)
	if err := p.Available(); err != nil {
		t.Fatalf("Available() with a stored copy = %v", err)
	}
	ch, err := p.Begin(ctx, "flow-1", "")
	if err != nil || !strings.HasPrefix(ch.URL, f.issuer()+"/authorize?") {
		t.Fatalf("Begin from the stored copy: %v, %v", ch, err)
	}
	out := logs.String()
	if !strings.Contains(out, "level=WARN") || !strings.Contains(out, "using the stored copy") || !strings.Contains(out, "idp=a") || !strings.Contains(out, "age=2h0m0s") {
		t.Fatalf("the log does not name the IdP and the copy's age:\n%s", out)
	}
	err = p.Ready(ctx)
	if err == nil || !strings.Contains(err.Error(), "signing keys could not be fetched") || !strings.Contains(err.Error(), "stored copy from 2h0m0s ago") {
		t.Fatalf("Ready() while the IdP is down = %v", err)
	}

	f.setDown(false)
	if err := clock.BlockUntilContext(ctx, 1); err != nil {
		t.Fatal(err)
	}
	clock.Advance(retryFirst)
	eventually(t, "loaded from the IdP", func() bool { return !p.disc.Load().stored })
	// A new document is checked afresh.
	if err := p.Ready(ctx); err != nil {
		t.Fatalf("Ready() once the IdP is back = %v", err)
	}
}

// TestStoredCopyOfAnotherIssuer: a copy stored for another issuer (the
// admin changed it) is never used.
func TestStoredCopyOfAnotherIssuer(t *testing.T) {
	t.Parallel()
	other := newFakeIssuer(t)
	clock := clockwork.NewFakeClock()
	cache := newMemCache(clock)
	first, _ := openCached(t, other, cache, clock)
	first.Close()

	f := newFakeIssuer(t)
	f.setDown(true)
	p, logs := openCached(t, f, cache, clock)
	if err := p.Available(); !errors.Is(err, providers.ErrUnavailable) {
		t.Fatalf("Available() with another issuer's copy = %v", err)
	}
	if out := logs.String(); !strings.Contains(out, "not usable") || !strings.Contains(out, "issuer") {
		t.Fatalf("the log does not say why the copy was not used:\n%s", out)
	}
}

// TestReadyKeepsItsAnswer: however often /readyz asks, the IdP's keys are
// fetched once per readyOK.
func TestReadyKeepsItsAnswer(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFakeIssuer(t)
	clock := clockwork.NewFakeClock()
	p, _ := openCached(t, f, nil, clock)

	var wg sync.WaitGroup
	for range 50 {
		wg.Go(func() {
			if err := p.Ready(ctx); err != nil {
				t.Errorf("Ready() = %v", err)
			}
		})
	}
	wg.Wait()
	if _, n := f.counts(); n != 1 {
		t.Fatalf("50 concurrent Ready calls fetched the keys %d times, want 1", n)
	}
	clock.Advance(readyOK - time.Second)
	_ = p.Ready(ctx)
	if _, n := f.counts(); n != 1 {
		t.Fatalf("keys fetched %d times within %s, want 1", n, readyOK)
	}
	clock.Advance(time.Second)
	_ = p.Ready(ctx)
	if _, n := f.counts(); n != 2 {
		t.Fatalf("keys fetched %d times after %s, want 2", n, readyOK)
	}

	// An empty key set is not ready.
	f.mu.Lock()
	f.published = nil
	f.mu.Unlock()
	clock.Advance(readyOK)
	if err := p.Ready(ctx); err == nil || !strings.Contains(err.Error(), "holds no keys") {
		t.Fatalf("Ready() with an empty key set = %v", err)
	}
	// A failure is kept for readyFailed.
	f.mu.Lock()
	f.published = []string{"k1"}
	f.mu.Unlock()
	clock.Advance(readyFailed - time.Second)
	if err := p.Ready(ctx); err == nil {
		t.Fatalf("Ready() forgot its failure within %s", readyFailed)
	}
	clock.Advance(time.Second)
	if err := p.Ready(ctx); err != nil {
		t.Fatalf("Ready() after %s = %v", readyFailed, err)
	}
}

func TestRetryDelay(t *testing.T) {
	t.Parallel()
	for n, want := range []time.Duration{5 * time.Second, 10 * time.Second, 20 * time.Second, 40 * time.Second, 80 * time.Second, 160 * time.Second, 5 * time.Minute, 5 * time.Minute} {
		if got := retryDelay(n); got != want {
			t.Errorf("retryDelay(%d) = %s, want %s", n, got, want)
		}
	}
	if got := retryDelay(1 << 20); got != retryMax {
		t.Errorf("retryDelay(huge) = %s, want %s", got, retryMax)
	}
}
