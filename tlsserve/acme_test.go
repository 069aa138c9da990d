package tlsserve

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/letsencrypt/pebble/v2/ca"
	"github.com/letsencrypt/pebble/v2/db"
	"github.com/letsencrypt/pebble/v2/va"
	"github.com/letsencrypt/pebble/v2/wfe"
)

// pebble is Let's Encrypt's test ACME server, run in-process with real
// challenge validation against loopback ports.
type pebble struct {
	dirURL string
	// caRoot is a PEM file with the root of the ACME server's own HTTPS
	// certificate (acme.ca_root).
	caRoot string
	// roots verify the certificates pebble issues.
	roots *x509.CertPool
	// orders and authzs count requests for new orders and for
	// authorizations: an ACME client that asks for neither obtained
	// nothing.
	orders, authzs atomic.Int32
}

// startPebble starts pebble whose validation authority checks HTTP-01 on
// httpPort and TLS-ALPN-01 on tlsPort of whatever the host name resolves
// to ("localhost": 127.0.0.1).
func startPebble(t *testing.T, httpPort, tlsPort int) *pebble {
	t.Helper()
	// Pebble reads these when its parts are built: no random sleeps
	// before validating, no rejected nonces (acmez would retry them, but
	// they only slow the test).
	t.Setenv("PEBBLE_VA_NOSLEEP", "1")
	t.Setenv("PEBBLE_WFE_NONCEREJECT", "0")
	logger := log.New(io.Discard, "pebble ", 0)
	if testing.Verbose() {
		logger.SetOutput(t.Output())
	}
	store := db.NewMemoryStore()
	authority := ca.New(logger, store, "", "ecdsa", 0, 1, map[string]ca.Profile{
		"default": {Description: "default"},
	})
	validator := va.New(logger, httpPort, tlsPort, false, "", store)
	front := wfe.New(logger, store, validator, authority, []string{"pebble.letsencrypt.org"}, false, false, 0, 0)
	p := &pebble{}
	h := front.Handler()
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/order-plz": // wfe's newOrderPath
			p.orders.Add(1)
		case strings.HasPrefix(r.URL.Path, "/authZ/"): // wfe's authzPath
			p.authzs.Add(1)
		}
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)

	caRoot := writeFile(t, t.TempDir(), "acme-server-root.pem",
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}))
	roots := x509.NewCertPool()
	roots.AddCert(authority.GetRootCert(0).Cert)
	p.dirURL, p.caRoot, p.roots = srv.URL+wfe.DirectoryPath, caRoot, roots
	return p
}

// freePort reserves a loopback port and returns its listener.
func listenLoopback(t *testing.T) (net.Listener, int) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln, ln.Addr().(*net.TCPAddr).Port
}

// verifyHandshake connects to addr as a browser would for "localhost",
// trusting only pebble's root, and returns the verified leaf.
func verifyHandshake(t *testing.T, addr string, roots *x509.CertPool) *x509.Certificate {
	t.Helper()
	conn, err := tls.Dial("tcp", addr, &tls.Config{ServerName: "localhost", RootCAs: roots})
	if err != nil {
		t.Fatalf("handshake verified against pebble's root: %v", err)
	}
	defer conn.Close()
	st := conn.ConnectionState()
	if len(st.VerifiedChains) == 0 || len(st.VerifiedChains[0]) < 3 {
		t.Fatalf("verified chain %v, want leaf, intermediate, root", st.VerifiedChains)
	}
	return st.PeerCertificates[0]
}

// TestACMEHTTP01 obtains a certificate from pebble through the HTTP-01
// challenge, answered by usher's own plain-HTTP handler, then serves HTTPS
// with it.
func TestACMEHTTP01(t *testing.T) {
	httpLn, httpPort := listenLoopback(t)
	p := startPebble(t, httpPort, 1) // TLS-ALPN disabled below: port unused
	logger, logs := testLogger(t)
	s, err := New(Config{Mode: ModeACME, ACME: ACME{
		Email:                   "ops@usher.test",
		CA:                      p.dirURL,
		CARoot:                  p.caRoot,
		Hosts:                   []string{"localhost"},
		DisableTLSALPNChallenge: true,
		AltHTTPPort:             httpPort,
	}}, logger, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()

	var challenges atomic.Int32
	plain := s.HTTPHandler(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {
		t.Error("plain HTTP reached the app in mode acme")
	}))
	serveHTTPOn(t, httpLn, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/.well-known/acme-challenge/") {
			challenges.Add(1)
		}
		plain.ServeHTTP(w, r)
	}))

	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	if err := s.Manage(ctx); err != nil {
		t.Fatalf("Manage: %v\n%s", err, logs)
	}
	if challenges.Load() == 0 {
		t.Error("pebble never asked usher's HTTP handler for the challenge")
	}

	addr := serveTLS(t, s.TLSConfig(), http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "hello over "+r.Proto)
	}))
	leaf := verifyHandshake(t, addr, p.roots)
	if len(leaf.DNSNames) != 1 || leaf.DNSNames[0] != "localhost" {
		t.Errorf("certificate names %v, want [localhost]", leaf.DNSNames)
	}

	// A real HTTPS request with the certificate, over HTTP/2.
	client := &http.Client{Transport: &http.Transport{
		TLSClientConfig:   &tls.Config{RootCAs: p.roots},
		ForceAttemptHTTP2: true,
	}}
	_, port, _ := net.SplitHostPort(addr)
	resp, err := client.Get("https://localhost:" + port + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "hello over HTTP/2.0" {
		t.Errorf("body %q", body)
	}

	// Everything else on plain HTTP goes to https.
	resp, err = (&http.Client{CheckRedirect: func(*http.Request, []*http.Request) error {
		return http.ErrUseLastResponse
	}}).Get("http://localhost:" + strconv.Itoa(httpPort) + "/secure?x=1")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusPermanentRedirect || resp.Header.Get("Location") != "https://localhost/secure?x=1" {
		t.Errorf("plain request: %d %q", resp.StatusCode, resp.Header.Get("Location"))
	}
}

// TestACMETLSALPN01 obtains a certificate through the TLS-ALPN-01
// challenge, answered by the same HTTPS listener that then serves the
// certificate: the path of a usher that only has port 443.
func TestACMETLSALPN01(t *testing.T) {
	tlsLn, tlsPort := listenLoopback(t)
	p := startPebble(t, 1, tlsPort) // HTTP-01 disabled below: port unused
	logger, logs := testLogger(t)
	storage := t.TempDir()
	cfg := Config{Mode: ModeACME, ACME: ACME{
		Email:                "ops@usher.test",
		CA:                   p.dirURL,
		CARoot:               p.caRoot,
		Hosts:                []string{"localhost"},
		Storage:              storage,
		DisableHTTPChallenge: true,
		AltTLSALPNPort:       tlsPort,
	}}
	s, err := New(cfg, logger, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	addr := serveTLSOn(t, tlsLn, s.TLSConfig(), http.NotFoundHandler())

	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	if err := s.Manage(ctx); err != nil {
		t.Fatalf("Manage: %v\n%s", err, logs)
	}
	first := verifyHandshake(t, addr, p.roots)

	// A restarted usher finds the certificate in storage and does not ask
	// the CA again.
	s2, err := New(cfg, logger, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if err := s2.Manage(ctx); err != nil {
		t.Fatal(err)
	}
	again := verifyHandshake(t, serveTLS(t, s2.TLSConfig(), http.NotFoundHandler()), p.roots)
	if !again.Equal(first) {
		t.Error("restart obtained a new certificate instead of loading the stored one")
	}
}

// TestACMESharedStore: two replicas share one store with acme.shared. The
// first obtains the certificate from pebble; the second serves HTTPS with
// the same certificate without asking the CA for anything.
func TestACMESharedStore(t *testing.T) {
	httpLn, httpPort := listenLoopback(t)
	p := startPebble(t, httpPort, 1) // TLS-ALPN disabled below: port unused
	rs := replicas(t, 2, nil)
	cfg := Config{Mode: ModeACME, ACME: ACME{
		Email:                   "ops@usher.test",
		CA:                      p.dirURL,
		CARoot:                  p.caRoot,
		Hosts:                   []string{"localhost"},
		Shared:                  true,
		DisableTLSALPNChallenge: true,
		AltHTTPPort:             httpPort,
	}}
	logger, logs := testLogger(t)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()

	// Each replica's data directory is its own: nothing may be kept there.
	first, err := New(cfg, logger, t.TempDir(), WithStore(rs[0]))
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	serveHTTPOn(t, httpLn, first.HTTPHandler(http.NotFoundHandler()))
	if err := first.Manage(ctx); err != nil {
		t.Fatalf("first Manage: %v\n%s", err, logs)
	}
	if p.orders.Load() != 1 || p.authzs.Load() == 0 {
		t.Fatalf("first replica: %d orders, %d authorization requests; want 1 and some", p.orders.Load(), p.authzs.Load())
	}
	want := verifyHandshake(t, serveTLS(t, first.TLSConfig(), http.NotFoundHandler()), p.roots)

	orders, authzs := p.orders.Load(), p.authzs.Load()
	second, err := New(cfg, logger, t.TempDir(), WithStore(rs[1]))
	if err != nil {
		t.Fatal(err)
	}
	defer second.Close()
	if err := second.Manage(ctx); err != nil {
		t.Fatalf("second Manage: %v\n%s", err, logs)
	}
	got := verifyHandshake(t, serveTLS(t, second.TLSConfig(), http.NotFoundHandler()), p.roots)
	if !got.Equal(want) {
		t.Error("second replica serves another certificate than the first obtained")
	}
	if p.orders.Load() != orders || p.authzs.Load() != authzs {
		t.Errorf("second replica contacted the CA: orders %d → %d, authorizations %d → %d",
			orders, p.orders.Load(), authzs, p.authzs.Load())
	}
}

// Without a store to keep them in, acme.shared is refused up front.
func TestACMESharedNeedsStore(t *testing.T) {
	_, err := New(Config{Mode: ModeACME, ACME: ACME{
		Email: "ops@usher.test", Hosts: []string{"localhost"}, Shared: true,
	}}, nil, t.TempDir())
	if err == nil || !strings.Contains(err.Error(), "acme.shared") {
		t.Fatalf("New with acme.shared and no store = %v, want an error naming acme.shared", err)
	}
}

// TestACMESharedStoreRace: two replicas starting at once on one store
// place one order between them. Only the first answers HTTP-01, as when
// the CA's request reaches one replica; it answers for whichever replica
// won the lock, from the challenge kept in the store.
func TestACMESharedStoreRace(t *testing.T) {
	httpLn, httpPort := listenLoopback(t)
	p := startPebble(t, httpPort, 1)
	rs := replicas(t, 2, nil)
	cfg := Config{Mode: ModeACME, ACME: ACME{
		Email:                   "ops@usher.test",
		CA:                      p.dirURL,
		CARoot:                  p.caRoot,
		Hosts:                   []string{"localhost"},
		Shared:                  true,
		DisableTLSALPNChallenge: true,
		AltHTTPPort:             httpPort,
	}}
	logger, logs := testLogger(t)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()

	var servers [2]*Server
	for i := range servers {
		s, err := New(cfg, logger, t.TempDir(), WithStore(rs[i]))
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		servers[i] = s
	}
	serveHTTPOn(t, httpLn, servers[0].HTTPHandler(http.NotFoundHandler()))
	errs := make(chan error, len(servers))
	for _, s := range servers {
		go func() { errs <- s.Manage(ctx) }()
	}
	for range servers {
		if err := <-errs; err != nil {
			t.Fatalf("Manage: %v\n%s", err, logs)
		}
	}
	if n := p.orders.Load(); n != 1 {
		t.Errorf("%d orders, want 1", n)
	}
	a := verifyHandshake(t, serveTLS(t, servers[0].TLSConfig(), http.NotFoundHandler()), p.roots)
	b := verifyHandshake(t, serveTLS(t, servers[1].TLSConfig(), http.NotFoundHandler()), p.roots)
	if !a.Equal(b) {
		t.Error("the replicas serve different certificates")
	}
}
