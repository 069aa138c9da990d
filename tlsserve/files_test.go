package tlsserve

import (
	"bytes"
	"crypto/tls"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
)

// presented does a real TLS handshake with addr and returns the leaf the
// server presented.
func presented(t *testing.T, addr string) []byte {
	t.Helper()
	conn, err := tls.Dial("tcp", addr, &tls.Config{ServerName: "usher.test", InsecureSkipVerify: true})
	if err != nil {
		t.Fatalf("handshake: %v", err)
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0].Raw
}

func TestFilesReload(t *testing.T) {
	dir := t.TempDir()
	a, b, c := selfSigned(t, "a"), selfSigned(t, "b"), selfSigned(t, "c")
	certFile := writeFile(t, dir, "cert.pem", a.certPEM)
	keyFile := writeFile(t, dir, "key.pem", a.keyPEM)
	log, logs := testLogger(t)

	s, err := New(Config{Mode: ModeFiles, CertFile: certFile, KeyFile: keyFile}, log, dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	clock := clockwork.NewFakeClockAt(time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC))
	s.Now = clock.Now
	s.ReloadInterval = 5 * time.Second
	addr := serveTLS(t, s.TLSConfig(), http.NotFoundHandler())

	want := func(step string, p pair) {
		t.Helper()
		if got := presented(t, addr); !bytes.Equal(got, p.der) {
			t.Errorf("%s: server presented the wrong certificate", step)
		}
	}
	want("start", a)

	replace(t, certFile, b.certPEM)
	replace(t, keyFile, b.keyPEM)
	want("within the interval", a)
	clock.Advance(5 * time.Second)
	want("after the interval", b)

	// A half-done replacement (new certificate, old key) is refused, and
	// so is garbage; the last good pair stays.
	replace(t, certFile, c.certPEM)
	clock.Advance(5 * time.Second)
	want("certificate without its key", b)
	if err := os.WriteFile(certFile, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	clock.Advance(5 * time.Second)
	want("broken file", b)
	clock.Advance(5 * time.Second)
	want("broken file, later", b)
	if n := strings.Count(logs.String(), "cannot be used"); n != 2 {
		t.Errorf("logged %d failed reloads, want 2 (one per broken state):\n%s", n, logs)
	}

	// Completing the pair recovers.
	replace(t, certFile, c.certPEM)
	replace(t, keyFile, c.keyPEM)
	clock.Advance(5 * time.Second)
	want("repaired", c)
	if !strings.Contains(logs.String(), "reloaded certificate files") {
		t.Errorf("no reload logged:\n%s", logs)
	}
}

func TestFilesMissing(t *testing.T) {
	dir := t.TempDir()
	_, err := New(Config{Mode: ModeFiles, CertFile: dir + "/nope.pem", KeyFile: dir + "/nope.key"}, nil, dir)
	if err == nil || !strings.Contains(err.Error(), "nope.pem") {
		t.Fatalf("New with missing files: err = %v", err)
	}
	a := selfSigned(t, "a")
	certFile := writeFile(t, dir, "cert.pem", a.certPEM)
	keyFile := writeFile(t, dir, "key.pem", selfSigned(t, "other").keyPEM)
	if _, err := New(Config{Mode: ModeFiles, CertFile: certFile, KeyFile: keyFile}, nil, dir); err == nil {
		t.Fatal("New accepted a certificate with somebody else's key")
	}
}

func TestFilesHTTPRedirect(t *testing.T) {
	dir := t.TempDir()
	a := selfSigned(t, "a")
	s, err := New(Config{Mode: ModeFiles,
		CertFile: writeFile(t, dir, "c.pem", a.certPEM),
		KeyFile:  writeFile(t, dir, "k.pem", a.keyPEM)}, nil, dir)
	if err != nil {
		t.Fatal(err)
	}
	if s.TLSConfig() == nil {
		t.Fatal("no TLS config in mode files")
	}
	h := s.HTTPHandler(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {
		t.Error("plain HTTP reached the app in mode files")
	}))
	for _, c := range []struct{ host, target, want string }{
		{"jira.example.com", "/browse/X-1?a=b", "https://jira.example.com/browse/X-1?a=b"},
		{"jira.example.com:8080", "/", "https://jira.example.com/"},
		{"[::1]:80", "/x", "https://[::1]/x"},
	} {
		rec := doRequest(h, "POST", c.host, c.target, "192.0.2.1:1")
		if rec.Code != http.StatusPermanentRedirect || rec.Header().Get("Location") != c.want {
			t.Errorf("%s%s: %d %q, want 308 %q", c.host, c.target, rec.Code, rec.Header().Get("Location"), c.want)
		}
	}
}

func TestModeOff(t *testing.T) {
	s, err := New(Config{}, nil, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if s.Mode() != ModeOff || s.TLSConfig() != nil {
		t.Fatalf("mode %q, TLS config %v; want off and nil", s.Mode(), s.TLSConfig())
	}
	called := false
	h := s.HTTPHandler(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { called = true }))
	doRequest(h, "GET", "x", "/", "192.0.2.1:1")
	if !called {
		t.Error("mode off does not pass plain HTTP through")
	}
	if err := s.Manage(t.Context()); err != nil {
		t.Error(err)
	}
}
