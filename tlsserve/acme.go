package tlsserve

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"

	"github.com/caddyserver/certmagic"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// acmeManager is certmagic set up for usher: its own cache and storage
// (a directory, or usher's store with acme.shared; never certmagic's
// package-level defaults, which other code in the process could share)
// and one ACME issuer.
type acmeManager struct {
	hosts  []string
	cache  *certmagic.Cache
	magic  *certmagic.Config
	issuer *certmagic.ACMEIssuer
	shared *storeStorage // nil with file storage
}

func newACME(c ACME, log *slog.Logger, dataDir string, shared SharedStore) (*acmeManager, error) {
	m := &acmeManager{hosts: slices.Clone(c.Hosts)}
	var storage certmagic.Storage
	switch {
	case c.Shared && shared == nil:
		return nil, errors.New("tls: acme.shared: no shared store was given to keep certificates in")
	case c.Shared:
		m.shared = newStoreStorage(shared, log)
		storage = m.shared
	case c.Storage != "":
		storage = &certmagic.FileStorage{Path: c.Storage}
	default:
		storage = &certmagic.FileStorage{Path: filepath.Join(dataDir, "acme")}
	}
	var roots *x509.CertPool
	if c.CARoot != "" {
		pem, err := os.ReadFile(c.CARoot)
		if err != nil {
			return nil, fmt.Errorf("tls: acme.ca_root: %w", err)
		}
		roots = x509.NewCertPool()
		if !roots.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("tls: acme.ca_root: no PEM certificate in %s", c.CARoot)
		}
	}
	zl := zap.New(&slogCore{h: log.Handler()}).Named("certmagic")

	m.cache = certmagic.NewCache(certmagic.CacheOptions{
		GetConfigForCert: func(certmagic.Certificate) (*certmagic.Config, error) {
			return m.magic, nil
		},
		Logger: zl,
	})
	m.magic = certmagic.New(m.cache, certmagic.Config{
		Storage: storage,
		Logger:  zl,
		// Clients without SNI (old tools, access by IP) get the first
		// host's certificate rather than a handshake failure.
		DefaultServerName: c.Hosts[0],
	})
	m.issuer = certmagic.NewACMEIssuer(m.magic, certmagic.ACMEIssuer{
		CA:                      c.CA, // "" means Let's Encrypt production, staging as TestCA
		Email:                   c.Email,
		Agreed:                  true,
		TrustedRoots:            roots,
		DisableHTTPChallenge:    c.DisableHTTPChallenge,
		DisableTLSALPNChallenge: c.DisableTLSALPNChallenge,
		AltHTTPPort:             c.AltHTTPPort,
		AltTLSALPNPort:          c.AltTLSALPNPort,
		Logger:                  zl,
	})
	m.magic.Issuers = []certmagic.Issuer{m.issuer}
	return m, nil
}

func (m *acmeManager) manage(ctx context.Context) error {
	if err := m.magic.ManageSync(ctx, m.hosts); err != nil {
		return fmt.Errorf("tls: acme: %w", err)
	}
	return nil
}

func (m *acmeManager) close() {
	m.cache.Stop()
	if m.shared != nil {
		m.shared.stopRenewals()
	}
}

// slogCore sends certmagic's zap logs to usher's slog handler, so they
// land in the same stream with the same format and level filter.
type slogCore struct {
	h slog.Handler
}

func (c *slogCore) Enabled(l zapcore.Level) bool {
	return c.h.Enabled(context.Background(), slogLevel(l))
}

func (c *slogCore) With(fields []zapcore.Field) zapcore.Core {
	return &slogCore{h: c.h.WithAttrs(attrs(fields))}
}

func (c *slogCore) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if c.Enabled(e.Level) {
		return ce.AddCore(e, c)
	}
	return ce
}

func (c *slogCore) Write(e zapcore.Entry, fields []zapcore.Field) error {
	r := slog.NewRecord(e.Time, slogLevel(e.Level), e.Message, 0)
	if e.LoggerName != "" {
		r.AddAttrs(slog.String("logger", e.LoggerName))
	}
	r.AddAttrs(attrs(fields)...)
	return c.h.Handle(context.Background(), r)
}

func (c *slogCore) Sync() error { return nil }

func slogLevel(l zapcore.Level) slog.Level {
	switch {
	case l <= zapcore.DebugLevel:
		return slog.LevelDebug
	case l == zapcore.InfoLevel:
		return slog.LevelInfo
	case l == zapcore.WarnLevel:
		return slog.LevelWarn
	}
	return slog.LevelError
}

// attrs turns zap fields into slog attributes through zap's own map
// encoder, which knows every field type.
func attrs(fields []zapcore.Field) []slog.Attr {
	if len(fields) == 0 {
		return nil
	}
	enc := zapcore.NewMapObjectEncoder()
	for _, f := range fields {
		f.AddTo(enc)
	}
	keys := make([]string, 0, len(enc.Fields))
	for k := range enc.Fields {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	out := make([]slog.Attr, 0, len(keys))
	for _, k := range keys {
		out = append(out, slog.Any(k, enc.Fields[k]))
	}
	return out
}
