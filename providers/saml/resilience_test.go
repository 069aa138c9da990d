package saml

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
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

func (m *memCache) len() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.vals)
}

// syncBuffer is a log sink safe for the refresh goroutine.
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

// withValidUntil puts validUntil on the EntityDescriptor of metadata made
// by staticIdPMetadata.
func withValidUntil(md string, until time.Time) string {
	return strings.Replace(md, `entityID="https://idp.example/metadata"`,
		`validUntil="`+until.UTC().Format(time.RFC3339)+`" entityID="https://idp.example/metadata"`, 1)
}

// urlEnv is a metadata server and what opens providers for it.
type urlEnv struct {
	t     *testing.T
	ms    *metadataServer
	srv   *httptest.Server
	clock *clockwork.FakeClock // timers and ages
	now   *clockwork.FakeClock // assertion and validUntil time
	cache *memCache
	kp    keyPair
}

func newURLEnv(t *testing.T) *urlEnv {
	t.Helper()
	_, kp := fixedKeys(t)
	e := &urlEnv{t: t, ms: &metadataServer{}, clock: clockwork.NewFakeClock(), now: newClock(fixedNow), kp: kp}
	e.cache = newMemCache(e.clock)
	e.ms.set(http.StatusOK, staticIdPMetadata(t, pemOf(kp)))
	e.srv = httptest.NewServer(e.ms)
	t.Cleanup(e.srv.Close)
	return e
}

// open opens provider "okta" ("Okta") on path of the metadata server.
func (e *urlEnv) open(path string) (*Provider, *syncBuffer) {
	e.t.Helper()
	logs := &syncBuffer{}
	cfg := &Config{
		MetadataURL: e.srv.URL + path,
		SPKey:       secretFile(e.t, "sp-key.pem"),
		SPCert:      secretFile(e.t, "sp-cert.pem"),
	}
	p, err := cfg.OpenWith(context.Background(), "okta", providers.Deps{
		PublicURL: publicURL, Name: "Okta", Client: e.srv.Client(), Cache: e.cache, Clock: e.clock,
		Log: slog.New(slog.NewTextHandler(logs, nil)),
	}, Options{Now: e.now.Now})
	if err != nil {
		e.t.Fatalf("Open: %v", err)
	}
	e.t.Cleanup(func() { p.Close() })
	return p, logs
}

// advance lets the refresh loop's timer run d later.
func (e *urlEnv) advance(d time.Duration) {
	e.t.Helper()
	if err := e.clock.BlockUntilContext(context.Background(), 1); err != nil {
		e.t.Fatal(err)
	}
	e.clock.Advance(d)
}

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

// TestMetadataRetriedUntilLoaded: metadata_url down at Open and no copy:
// unavailable, retried after 5s, 10s, 20s..., loaded once it answers (and
// a copy kept), then refreshed at metadata_refresh again.
func TestMetadataRetriedUntilLoaded(t *testing.T) {
	t.Parallel()
	e := newURLEnv(t)
	e.ms.setDown(true)
	p, logs := e.open("/metadata")
	if err := p.Available(); !errors.Is(err, providers.ErrUnavailable) {
		t.Fatalf("Available() = %v", err)
	}
	if out := logs.String(); !strings.Contains(out, "level=ERROR") || !strings.Contains(out, "idp=okta") {
		t.Fatalf("the log does not say the IdP is unavailable:\n%s", out)
	}
	e.advance(retryFirst)
	eventually(t, "retried", func() bool { return e.ms.count() == 2 })
	e.advance(retryFirst)
	if n := e.ms.count(); n != 2 {
		t.Fatalf("%d fetches after 10s, want 2 (the second retry waits 10s)", n)
	}
	e.clock.Advance(retryFirst)
	eventually(t, "retried twice", func() bool { return e.ms.count() == 3 })

	e.ms.setDown(false)
	e.advance(4 * retryFirst)
	eventually(t, "available", func() bool { return p.Available() == nil })
	if err := login(t, p, signer(t, e.kp)); err != nil {
		t.Fatalf("login once the metadata loaded: %v", err)
	}
	if err := p.Ready(context.Background()); err != nil {
		t.Fatalf("Ready() = %v", err)
	}
	if e.cache.len() != 1 {
		t.Fatal("no copy of the metadata was kept")
	}
	if err := p.Ready(context.Background()); err != nil {
		t.Fatalf("Ready() once loaded = %v", err)
	}
	// Back to the hourly refresh.
	e.advance(30 * time.Minute)
	if n := e.ms.count(); n != 4 {
		t.Fatalf("%d fetches 30 minutes after loading, want 4", n)
	}
	e.clock.Advance(30 * time.Minute)
	eventually(t, "refreshed", func() bool { return e.ms.count() == 5 })
}

// TestMetadataStoredCopy: with metadata_url down, the stored copy is used;
// the log names the IdP and the copy's age, and Ready says fetching fails.
func TestMetadataStoredCopy(t *testing.T) {
	t.Parallel()
	e := newURLEnv(t)
	first, _ := e.open("/metadata")
	first.Close()

	e.clock.Advance(3 * time.Hour)
	e.ms.setDown(true)
	p, logs := e.open("/metadata")
	if err := p.Available(); err != nil {
		t.Fatalf("Available() with a stored copy = %v", err)
	}
	if err := login(t, p, signer(t, e.kp)); err != nil {
		t.Fatalf("login with the stored copy: %v", err)
	}
	out := logs.String()
	if !strings.Contains(out, "using the stored copy") || !strings.Contains(out, "idp=okta") || !strings.Contains(out, "age=3h0m0s") {
		t.Fatalf("the log does not name the IdP and the copy's age:\n%s", out)
	}
	err := p.Ready(context.Background())
	if err == nil || !strings.Contains(err.Error(), "fetching the IdP metadata fails") || !strings.Contains(err.Error(), "copy fetched 3h0m0s ago") {
		t.Fatalf("Ready() while metadata_url is down = %v", err)
	}

	e.ms.setDown(false)
	e.advance(retryFirst)
	eventually(t, "ready", func() bool { return p.Ready(context.Background()) == nil })
}

// TestMetadataStoredCopyPastValidUntil: a stored copy past its validUntil
// is not used, and the log says why.
func TestMetadataStoredCopyPastValidUntil(t *testing.T) {
	t.Parallel()
	e := newURLEnv(t)
	e.ms.set(http.StatusOK, withValidUntil(staticIdPMetadata(t, pemOf(e.kp)), fixedNow.Add(time.Hour)))
	first, _ := e.open("/metadata")
	first.Close()

	e.now.Advance(fixedNow.Add(2 * time.Hour).Sub(e.now.Now()))
	e.ms.setDown(true)
	p, logs := e.open("/metadata")
	if err := p.Available(); !errors.Is(err, providers.ErrUnavailable) {
		t.Fatalf("Available() with an expired copy = %v", err)
	}
	if out := logs.String(); !strings.Contains(out, "past its validUntil") {
		t.Fatalf("the log does not say why the copy was not used:\n%s", out)
	}
}

// TestMetadataStoredCopyOfAnotherURL: a copy kept for another
// metadata_url (another IdP under the same id) is never used.
func TestMetadataStoredCopyOfAnotherURL(t *testing.T) {
	t.Parallel()
	e := newURLEnv(t)
	first, _ := e.open("/old-idp")
	first.Close()
	e.ms.setDown(true)
	p, _ := e.open("/new-idp")
	if err := p.Available(); !errors.Is(err, providers.ErrUnavailable) {
		t.Fatalf("Available() with only another URL's copy = %v", err)
	}
}

// TestMetadataValidUntil: fetched metadata already past its validUntil is
// refused (the last good copy stays), and loaded metadata that passes it
// makes the provider unavailable until a refresh brings a valid one.
func TestMetadataValidUntil(t *testing.T) {
	t.Parallel()
	e := newURLEnv(t)
	md := staticIdPMetadata(t, pemOf(e.kp))
	e.ms.set(http.StatusOK, withValidUntil(md, fixedNow.Add(time.Hour)))
	p, _ := e.open("/metadata")
	if err := p.Available(); err != nil {
		t.Fatal(err)
	}

	e.ms.set(http.StatusOK, withValidUntil(md, fixedNow.Add(-time.Minute)))
	if err := p.RefreshMetadata(context.Background()); err == nil || !strings.Contains(err.Error(), "expired at") {
		t.Fatalf("refresh with expired metadata: %v", err)
	}
	if err := p.Available(); err != nil {
		t.Fatalf("after a refused refresh the last good copy must stay: %v", err)
	}

	e.now.Advance(fixedNow.Add(2 * time.Hour).Sub(e.now.Now()))
	want := "Okta is unavailable: its metadata expired at " + fixedNow.Add(time.Hour).UTC().Format(time.RFC3339)
	if _, err := p.Begin(context.Background(), "flow-1", ""); !errors.Is(err, providers.ErrUnavailable) || !strings.Contains(err.Error(), want) {
		t.Fatalf("Begin with expired metadata: %v, want %q", err, want)
	}
	if err := p.Ready(context.Background()); err == nil || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("Ready() with expired metadata = %v", err)
	}

	e.ms.set(http.StatusOK, withValidUntil(md, fixedNow.Add(48*time.Hour)))
	if err := p.RefreshMetadata(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := p.Available(); err != nil {
		t.Fatalf("after a valid refresh: %v", err)
	}
}

// TestConfiguredMetadataPastValidUntil: inline or file metadata is the
// admin's choice: used past its validUntil, with a warning.
func TestConfiguredMetadataPastValidUntil(t *testing.T) {
	t.Parallel()
	_, kp := fixedKeys(t)
	logs := &syncBuffer{}
	cfg := &Config{
		MetadataXML: withValidUntil(staticIdPMetadata(t, pemOf(kp)), fixedNow.Add(-time.Hour)),
		SPKey:       secretFile(t, "sp-key.pem"),
		SPCert:      secretFile(t, "sp-cert.pem"),
	}
	c := newClock(fixedNow)
	p, err := cfg.OpenWith(context.Background(), "okta", providers.Deps{PublicURL: publicURL, Log: slog.New(slog.NewTextHandler(logs, nil))}, Options{Now: c.Now})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if err := p.Ready(context.Background()); err != nil {
		t.Fatalf("Ready() = %v", err)
	}
	if !strings.Contains(logs.String(), "past its validUntil") {
		t.Fatalf("no warning:\n%s", logs.String())
	}
}

// TestMetadataValidUntilOfAggregate: the earliest validUntil around the
// IdP entity counts: aggregate, nested aggregate, entity, IdP role.
func TestMetadataValidUntilOfAggregate(t *testing.T) {
	t.Parallel()
	_, kp := fixedKeys(t)
	entity := strings.TrimPrefix(staticIdPMetadata(t, pemOf(kp)), `<?xml version="1.0"?>`)
	at := func(h int) string { return fixedNow.Add(time.Duration(h) * time.Hour).UTC().Format(time.RFC3339) }
	for _, tc := range []struct {
		name, doc string
		want      time.Time
	}{
		{"none", entity, time.Time{}},
		{"entity", withValidUntil(entity, fixedNow.Add(5*time.Hour)), fixedNow.Add(5 * time.Hour)},
		{"role", strings.Replace(entity, `<IDPSSODescriptor `, `<IDPSSODescriptor validUntil="`+at(3)+`" `, 1), fixedNow.Add(3 * time.Hour)},
		{"aggregate", `<EntitiesDescriptor xmlns="urn:oasis:names:tc:SAML:2.0:metadata" validUntil="` + at(2) + `">` +
			withValidUntil(entity, fixedNow.Add(5*time.Hour)) + `</EntitiesDescriptor>`, fixedNow.Add(2 * time.Hour)},
		{"nested", `<EntitiesDescriptor xmlns="urn:oasis:names:tc:SAML:2.0:metadata" validUntil="` + at(4) + `"><EntitiesDescriptor validUntil="` + at(1) + `">` +
			entity + `</EntitiesDescriptor></EntitiesDescriptor>`, fixedNow.Add(time.Hour)},
	} {
		md, err := parseIdPMetadata([]byte(tc.doc))
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if !md.validUntil.Equal(tc.want) {
			t.Errorf("%s: validUntil = %s, want %s", tc.name, md.validUntil, tc.want)
		}
	}
}
