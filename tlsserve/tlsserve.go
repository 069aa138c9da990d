// Package tlsserve owns how usher's public listener gets TLS, and which
// forwarded headers usher believes. Three modes:
//
//   - off: usher speaks plain HTTP behind a TLS terminator (a load
//     balancer, ingress controller, nginx, a service mesh). The usual choice
//     with several replicas behind a load balancer. List the terminator's
//     addresses in trusted_proxies so that usher learns the client's IP,
//     scheme and host from X-Forwarded-For/Proto/Host; from anyone else
//     those headers are removed.
//   - files: usher terminates TLS with a certificate and key from files,
//     e.g. issued by a company CA or renewed by an external ACME client
//     (certbot, cert-manager). The files are re-read when they change, with
//     no restart; a broken replacement is logged and the previous pair kept.
//   - acme: usher obtains and renews certificates itself (certmagic) from
//     Let's Encrypt or any ACME CA (a private step-ca, pebble in tests). Fits
//     a single usher reachable from the CA on ports 80 (HTTP-01) or 443
//     (TLS-ALPN-01). Several replicas share certificates through usher's
//     own store with acme.shared (or a shared storage directory): one
//     replica obtains, the others load what it stored. The CA must still
//     reach whichever replica it hits for a challenge, which every replica
//     can answer; prefer mode off with a terminator for scale-out.
package tlsserve

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"time"

	"github.com/caddyserver/certmagic"

	"github.com/usherhq/usher/config"
)

// Mode selects how the public listener gets TLS.
type Mode string

// The modes; the package comment says which fits which deployment.
const (
	ModeOff   Mode = "off"
	ModeFiles Mode = "files"
	ModeACME  Mode = "acme"
)

// Config is the server.tls block. An empty Mode means ModeOff.
type Config struct {
	Mode Mode `yaml:"mode"`
	// CertFile and KeyFile are PEM files (mode files). CertFile holds the
	// leaf first, then its intermediates.
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	ACME     ACME   `yaml:"acme"`
	// TrustedProxies are CIDRs (or single addresses) whose
	// X-Forwarded-For/Proto/Host usher believes. See TrustProxies.
	TrustedProxies []string `yaml:"trusted_proxies"`
}

// ACME configures automatic certificates (mode acme). Using it means
// agreeing to the CA's subscriber agreement.
type ACME struct {
	// Email is the ACME account's contact; the CA sends expiry warnings
	// there when renewal keeps failing.
	Email string `yaml:"email"`
	// CA is the ACME directory URL, default Let's Encrypt production (then
	// Let's Encrypt staging is tried after a failure, to spare the
	// production rate limits).
	CA string `yaml:"ca"`
	// CARoot is a PEM file with the root(s) that sign the ACME server's own
	// HTTPS certificate, for a private or test CA.
	CARoot string `yaml:"ca_root"`
	// Hosts are the names to obtain certificates for, e.g. the public
	// host and every app host usher routes.
	Hosts []string `yaml:"hosts"`
	// Storage is the directory for account keys, certificates and locks,
	// default DataDir/acme.
	Storage string `yaml:"storage"`
	// Shared keeps account keys, certificates and locks in usher's store
	// instead of a directory, so replicas on one PostgreSQL database share
	// them and only one asks the CA.
	Shared                  bool `yaml:"shared"`
	DisableHTTPChallenge    bool `yaml:"disable_http_challenge"`
	DisableTLSALPNChallenge bool `yaml:"disable_tls_alpn_challenge"`
	// AltHTTPPort and AltTLSALPNPort are the local ports the challenges are
	// answered on when they differ from 80 and 443 (port forwarding, tests).
	// usher's own listeners answer the challenges when they hold these
	// ports; otherwise certmagic opens a short-lived listener.
	AltHTTPPort    int `yaml:"alt_http_port"`
	AltTLSALPNPort int `yaml:"alt_tls_alpn_port"`
}

func (c *Config) mode() Mode {
	if c.Mode == "" {
		return ModeOff
	}
	return c.Mode
}

// Validate returns every problem with c as *config.FieldError, with
// field paths relative to the tls block ("acme.email").
func (c *Config) Validate() []error {
	var errs []error
	add := func(field, format string, args ...any) {
		errs = append(errs, &config.FieldError{Field: field, Msg: fmt.Sprintf(format, args...)})
	}
	mode := c.mode()
	switch mode {
	case ModeOff, ModeFiles, ModeACME:
	default:
		add("mode", "must be off, files or acme, not %q", c.Mode)
	}
	if mode == ModeFiles {
		if c.CertFile == "" {
			add("cert_file", "required in mode files")
		}
		if c.KeyFile == "" {
			add("key_file", "required in mode files")
		}
	} else {
		if c.CertFile != "" {
			add("cert_file", "only used in mode files")
		}
		if c.KeyFile != "" {
			add("key_file", "only used in mode files")
		}
	}
	if mode == ModeACME {
		errs = append(errs, c.ACME.validate()...)
	} else if !c.ACME.isZero() {
		add("acme", "only used in mode acme")
	}
	for i, p := range c.TrustedProxies {
		if _, err := parsePrefix(p); err != nil {
			add(fmt.Sprintf("trusted_proxies[%d]", i), "%v", err)
		}
	}
	return errs
}

func (a *ACME) isZero() bool {
	return a.Email == "" && a.CA == "" && a.CARoot == "" && len(a.Hosts) == 0 &&
		a.Storage == "" && !a.Shared && !a.DisableHTTPChallenge && !a.DisableTLSALPNChallenge &&
		a.AltHTTPPort == 0 && a.AltTLSALPNPort == 0
}

func (a *ACME) validate() []error {
	var errs []error
	add := func(field, format string, args ...any) {
		errs = append(errs, &config.FieldError{Field: "acme." + field, Msg: fmt.Sprintf(format, args...)})
	}
	if a.Email == "" {
		add("email", "required")
	} else if !strings.Contains(a.Email, "@") {
		add("email", "%q is not an e-mail address", a.Email)
	}
	if a.CA != "" {
		if u, err := url.Parse(a.CA); err != nil || u.Scheme != "https" || u.Host == "" {
			add("ca", "must be an https:// ACME directory URL")
		}
	}
	if len(a.Hosts) == 0 {
		add("hosts", "required: at least one host name")
	}
	for i, h := range a.Hosts {
		switch {
		case strings.Contains(h, "*"):
			// Wildcards need DNS-01, which usher does not offer.
			add(fmt.Sprintf("hosts[%d]", i), "wildcard %q needs the DNS challenge, which usher does not support", h)
		case !certmagic.SubjectQualifiesForCert(h) || strings.ContainsAny(h, ":/"):
			add(fmt.Sprintf("hosts[%d]", i), "%q is not a host name", h)
		}
	}
	if a.Shared && a.Storage != "" {
		add("storage", "not used with shared: certificates are kept in usher's store")
	}
	if a.DisableHTTPChallenge && a.DisableTLSALPNChallenge {
		add("disable_tls_alpn_challenge", "both challenges are disabled; the CA could not validate any host")
	}
	if a.AltHTTPPort < 0 || a.AltHTTPPort > 65535 {
		add("alt_http_port", "must be a TCP port")
	}
	if a.AltTLSALPNPort < 0 || a.AltTLSALPNPort > 65535 {
		add("alt_tls_alpn_port", "must be a TCP port")
	}
	return errs
}

// Server provides TLS for the public listener in the configured mode.
// Set the exported fields before the first handshake; after that it is
// safe for concurrent use.
type Server struct {
	// Now is the clock for certificate file checks; default time.Now.
	Now func() time.Time
	// ReloadInterval is how often, at most, a handshake checks the
	// certificate files for changes (mode files); default one second.
	ReloadInterval time.Duration

	mode  Mode
	log   *slog.Logger
	files *certFiles
	acme  *acmeManager
}

// Option adds to New what only the wiring has.
type Option func(*options)

type options struct {
	shared SharedStore
}

// WithStore gives New the store that acme.shared keeps certificates in.
// Without acme.shared it is unused.
func WithStore(s SharedStore) Option {
	return func(o *options) { o.shared = s }
}

// New prepares TLS for mode c.Mode. In mode files it loads the pair once
// and fails if it cannot; in mode acme it sets up certmagic without
// contacting the CA (Manage does). dataDir is the default parent of the
// ACME storage directory; acme.shared needs WithStore instead. Call Close
// when done.
func New(c Config, log *slog.Logger, dataDir string, opts ...Option) (*Server, error) {
	if errs := c.Validate(); len(errs) > 0 {
		return nil, fmt.Errorf("tls: %w", errs[0])
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	s := &Server{Now: time.Now, ReloadInterval: time.Second, mode: c.mode(), log: log}
	switch s.mode {
	case ModeFiles:
		f, err := loadCertFiles(c.CertFile, c.KeyFile, log)
		if err != nil {
			return nil, err
		}
		s.files = f
	case ModeACME:
		m, err := newACME(c.ACME, log, dataDir, o.shared)
		if err != nil {
			return nil, err
		}
		s.acme = m
	}
	return s, nil
}

// Mode reports the server's mode.
func (s *Server) Mode() Mode { return s.mode }

// TLSConfig returns a fresh config for the public HTTPS listener, nil in
// mode off. It offers HTTP/2 and HTTP/1.1 and, in mode acme, answers
// TLS-ALPN-01 challenges.
func (s *Server) TLSConfig() *tls.Config {
	switch s.mode {
	case ModeFiles:
		return &tls.Config{
			MinVersion: tls.VersionTLS12,
			NextProtos: []string{"h2", "http/1.1"},
			GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
				return s.files.get(s.now(), s.ReloadInterval), nil
			},
		}
	case ModeACME:
		tc := s.acme.magic.TLSConfig()
		tc.MinVersion = tls.VersionTLS12
		// "acme-tls/1" must stay offered for TLS-ALPN-01 validation.
		tc.NextProtos = []string{"h2", "http/1.1", "acme-tls/1"}
		return tc
	}
	return nil
}

// HTTPHandler wraps the plain-HTTP listener's handler. In mode off it
// returns next unchanged. With TLS on, the plain listener exists only to
// answer ACME HTTP-01 challenges (mode acme) and to send everything else
// to https on the default port; next is not called.
func (s *Server) HTTPHandler(next http.Handler) http.Handler {
	switch s.mode {
	case ModeFiles:
		return http.HandlerFunc(redirectHTTPS)
	case ModeACME:
		return s.acme.issuer.HTTPChallengeHandler(http.HandlerFunc(redirectHTTPS))
	}
	return next
}

// redirectHTTPS sends a plain-HTTP request to the same host and path over
// https. The host comes from the request; a client can only redirect
// itself.
func redirectHTTPS(w http.ResponseWriter, r *http.Request) {
	host := r.Host
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	if host == "" || strings.ContainsAny(host, "/\\@ ") {
		http.Error(w, "bad host", http.StatusBadRequest)
		return
	}
	if strings.Contains(host, ":") { // IPv6 literal
		host = "[" + host + "]"
	}
	w.Header().Set("Connection", "close")
	// 308 keeps the method and body; a 301 would turn a POST into a GET.
	http.Redirect(w, r, "https://"+host+r.URL.RequestURI(), http.StatusPermanentRedirect)
}

// Manage starts certificate management. In mode acme it loads or obtains
// a certificate for every host before returning (so the first handshake
// does not wait for the CA) and renews them in the background until
// Close; an error means some host has no certificate. In the other modes
// there is nothing to start: mode files checks its files on handshakes.
func (s *Server) Manage(ctx context.Context) error {
	if s.mode != ModeACME {
		return nil
	}
	return s.acme.manage(ctx)
}

// Close stops background certificate maintenance.
func (s *Server) Close() error {
	if s.acme != nil {
		s.acme.close()
	}
	return nil
}

func (s *Server) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

// parsePrefix reads a CIDR or a single address (as a /32 or /128).
func parsePrefix(s string) (netip.Prefix, error) {
	s = strings.TrimSpace(s)
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("%q is not a CIDR", s)
		}
		if p.Addr().Is4In6() && p.Bits() >= 96 {
			p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is not an address or CIDR", s)
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), nil
}
