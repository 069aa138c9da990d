package saml

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/usherhq/usher/providers"
	"github.com/usherhq/usher/providers/saml/samltest"
)

// metadataServer serves whatever body/status it is told to; down, it
// drops every connection unanswered.
type metadataServer struct {
	mu       sync.Mutex
	status   int
	body     string
	down     bool
	requests int
}

func (m *metadataServer) setDown(down bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.down = down
}

func (m *metadataServer) count() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.requests
}

func (m *metadataServer) set(status int, body string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.status, m.body = status, body
}

func (m *metadataServer) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.requests++
	if m.down {
		if conn, _, err := http.NewResponseController(w).Hijack(); err == nil {
			conn.Close()
		}
		return
	}
	w.WriteHeader(m.status)
	_, _ = w.Write([]byte(m.body))
}

// signer is a samltest IdP used only to forge responses as the static IdP.
func signer(t testing.TB, kp keyPair) *samltest.IdP {
	t.Helper()
	c := newClock(fixedNow)
	return newIdP(t, c, &kp)
}

var forged atomic.Int64

func forgeFor(t testing.TB, idp *samltest.IdP, p *Provider, reqID string) []byte {
	t.Helper()
	r := idp.NewResponse(p.ACSURL(), p.EntityID(), reqID, "alice@example.com")
	r.Issuer = "https://idp.example/metadata"
	r.AssertionID = fmt.Sprintf("id-assertion-%d", forged.Add(1))
	doc, err := idp.Forge(r)
	if err != nil {
		t.Fatal(err)
	}
	return docBytes(t, doc)
}

func login(t testing.TB, p *Provider, idp *samltest.IdP) error {
	t.Helper()
	ch, err := p.Begin(context.Background(), "flow-1", "")
	if err != nil {
		t.Fatal(err)
	}
	var st flowState
	if err := jsonUnmarshal(ch.State, &st); err != nil {
		t.Fatal(err)
	}
	_, err = p.Finish(context.Background(), samltest.ACSRequest(p.ACSURL(), forgeFor(t, idp, p, st.RequestID), "flow-1"), ch.State)
	return err
}

func pemOf(kp keyPair) string {
	_, c := samltest.PEM(kp.key, kp.cert)
	return c
}

func TestMetadataRollover(t *testing.T) {
	_, oldKP := fixedKeys(t)
	k, c, err := samltest.NewKeyPair("new idp key", fixedNow)
	if err != nil {
		t.Fatal(err)
	}
	newKP := keyPair{k, c}
	p := openStatic(t, func(cfg *Config) { cfg.MetadataXML = staticIdPMetadata(t, pemOf(oldKP), pemOf(newKP)) })
	for name, kp := range map[string]keyPair{"old": oldKP, "new": newKP} {
		if err := login(t, p, signer(t, kp)); err != nil {
			t.Errorf("signed with the %s key: %v", name, err)
		}
	}
}

func TestMetadataURLRefresh(t *testing.T) {
	_, kpA := fixedKeys(t)
	k, c, err := samltest.NewKeyPair("rotated", fixedNow)
	if err != nil {
		t.Fatal(err)
	}
	kpB := keyPair{k, c}
	idpA, idpB := signer(t, kpA), signer(t, kpB)

	ms := &metadataServer{}
	ms.set(http.StatusOK, staticIdPMetadata(t, pemOf(kpA)))
	srv := httptest.NewServer(ms)
	defer srv.Close()

	cfg := &Config{
		MetadataURL: srv.URL + "/metadata",
		SPKey:       secretFile(t, "sp-key.pem"),
		SPCert:      secretFile(t, "sp-cert.pem"),
	}
	ck := newClock(fixedNow)
	p, err := cfg.OpenWith(context.Background(), "okta", providers.Deps{PublicURL: publicURL, Client: srv.Client()}, Options{Now: ck.Now})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if err := login(t, p, idpA); err != nil {
		t.Fatal(err)
	}

	for i, bad := range []struct {
		status int
		body   string
		want   string
	}{
		{http.StatusInternalServerError, "down", "status 500"},
		{http.StatusOK, `<!DOCTYPE x [<!ENTITY a "b">]>` + staticIdPMetadata(t, pemOf(kpB)), "DTD"},
		{http.StatusOK, strings.Repeat(" ", maxMetadataBytes+1), "larger than"},
		{http.StatusOK, "<EntityDescriptor/>", "metadata"},
	} {
		ms.set(bad.status, bad.body)
		err := p.RefreshMetadata(context.Background())
		if err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Fatalf("refresh %d: err %v, want %q", i, err, bad.want)
		}
		if got := p.MetadataRefreshFailures(); got != uint64(i+1) {
			t.Fatalf("failures = %d, want %d", got, i+1)
		}
		// The last good copy is still in use.
		if err := login(t, p, idpA); err != nil {
			t.Fatalf("after failed refresh %d: %v", i, err)
		}
	}

	ms.set(http.StatusOK, staticIdPMetadata(t, pemOf(kpB)))
	if err := p.RefreshMetadata(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := login(t, p, idpB); err != nil {
		t.Fatalf("rotated key: %v", err)
	}
	if err := login(t, p, idpA); err == nil {
		t.Fatal("the retired key still signs")
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	_ = p.Close() // twice is fine
}

// TestMetadataURLUnreachableAtOpen: metadata_url does not answer and no
// copy is stored: the provider opens unavailable, with a typed error that
// is no refusal, and still serves usher's own SP metadata.
func TestMetadataURLUnreachableAtOpen(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	srv.Close()
	cfg := &Config{
		MetadataURL: srv.URL + "/metadata",
		SPKey:       secretFile(t, "sp-key.pem"),
		SPCert:      secretFile(t, "sp-cert.pem"),
	}
	p, err := cfg.OpenWith(context.Background(), "okta", providers.Deps{PublicURL: publicURL, Name: "Okta"}, Options{})
	if err != nil {
		t.Fatalf("Open with metadata_url down: %v", err)
	}
	defer p.Close()
	const want = "Okta is unavailable: its metadata could not be fetched"
	_, err = p.Begin(context.Background(), "flow-1", "")
	if !errors.Is(err, providers.ErrUnavailable) || errors.Is(err, providers.ErrRefused) ||
		!strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "fetch IdP metadata") {
		t.Fatalf("Begin: err = %v, want %q and the cause", err, want)
	}
	if err := p.Ready(context.Background()); !errors.Is(err, providers.ErrUnavailable) {
		t.Fatalf("Ready() = %v", err)
	}
	if _, _, err := p.Metadata(); err != nil {
		t.Fatalf("SP metadata while the IdP's is missing: %v", err)
	}
}

func TestMetadataRefreshStopsOnClose(t *testing.T) {
	ms := &metadataServer{}
	_, kp := fixedKeys(t)
	ms.set(http.StatusOK, staticIdPMetadata(t, pemOf(kp)))
	srv := httptest.NewServer(ms)
	defer srv.Close()
	cfg := &Config{
		MetadataURL:     srv.URL,
		MetadataRefresh: time.Millisecond,
		SPKey:           secretFile(t, "sp-key.pem"),
		SPCert:          secretFile(t, "sp-cert.pem"),
	}
	p, err := cfg.OpenWith(context.Background(), "okta", providers.Deps{PublicURL: publicURL}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	// Close returns only once the refresh goroutine has ended.
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
}
