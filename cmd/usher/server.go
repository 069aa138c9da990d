package main

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/usherhq/usher/config"
	"github.com/usherhq/usher/jit"
	"github.com/usherhq/usher/metrics"
	"github.com/usherhq/usher/proxy"
	"github.com/usherhq/usher/session"
	"github.com/usherhq/usher/store"
	"github.com/usherhq/usher/tlsserve"
)

// Main is one running usher. Tests build it with ":0" listeners and a temp
// data dir; the serve and demo commands build it from a config file.
type Main struct {
	Config *config.Config
	// ConfigPath is re-read by Reload; empty means reload is unavailable.
	ConfigPath string
	Log        *slog.Logger
	// Client talks to IdPs (discovery, token, metadata). Default: a client
	// with a 10 s timeout.
	Client *http.Client
	Now    func() time.Time
	// NoWorker keeps the retry worker from running in the background
	// (tests drain the queue themselves).
	NoWorker bool
	// NoSchedule keeps sweeps from running on their schedules.
	NoSchedule bool
	// Offline opens store, apps and sweeps but no listener and no
	// background loops: for one-shot commands (usher sweep).
	Offline bool
	// RevocationPoll is how often revocations from other replicas are
	// read, default 1s.
	RevocationPoll time.Duration
	// KeyRotateEvery, KeyPrepublish and KeyRefresh override the OpenID
	// Provider's signing-key schedule (tests); zero keeps its defaults.
	KeyRotateEvery, KeyPrepublish, KeyRefresh time.Duration
	// ShutdownGrace is how long Wait lets requests in flight finish,
	// default 30s.
	ShutdownGrace time.Duration
	// WrapStore, when set, wraps the store Open opens, before anything
	// uses it (tests count the calls the hot path makes).
	WrapStore func(store.Store) store.Store

	owner     string // this replica's name in leases
	store     store.Store
	audit     *jit.AuditLog
	logins    *jit.LoginTimes
	revoked   *session.Revocations
	sessions  *session.Shared
	reg       *prometheus.Registry
	metrics   *metrics.Metrics
	transport *proxy.Transport
	tls       *tlsserve.Server

	gen      atomic.Pointer[generation]
	reloadMu sync.Mutex

	ln, adminLn          net.Listener
	srv, adminSrv, plain *http.Server
	served               chan error
	stopBackground       func()
	// inflight counts requests being served on every listener, so that a
	// shutdown cut short can say how many it cut off.
	inflight atomic.Int64
}

// Open starts everything: store, providers, listeners, background work.
// On error nothing is left running.
func (m *Main) Open(ctx context.Context) (err error) {
	defer func() {
		if err != nil {
			m.Close()
		}
	}()
	cfg := m.Config
	if m.Log == nil {
		m.Log = slog.Default()
	}
	if m.Now == nil {
		m.Now = time.Now
	}
	if m.Client == nil {
		m.Client = &http.Client{Timeout: 10 * time.Second}
	}
	m.owner = ownerName()
	m.transport = proxy.SharedTransport()
	m.reg = prometheus.NewRegistry()
	m.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m.metrics = metrics.New(m.reg)

	if err := prepareDataDir(cfg); err != nil {
		return err
	}
	if m.store, err = openStore(ctx, cfg.Store); err != nil {
		return err
	}
	if m.WrapStore != nil {
		m.store = m.WrapStore(m.store)
	}
	m.audit = &jit.AuditLog{Store: m.store, Log: m.Log, Now: m.Now}
	m.logins = &jit.LoginTimes{Store: m.store, Log: m.Log}
	m.revoked = session.NewRevocations(cfg.Session.AbsoluteTimeout, m.Now)
	m.sessions = &session.Shared{Local: m.revoked, Store: m.store, Absolute: cfg.Session.AbsoluteTimeout, Now: m.Now, Log: m.Log,
		Spool: filepath.Join(cfg.Server.DataDir, "revocations.pending")}
	if err := m.sessions.LoadSpool(); err != nil {
		return err
	}
	if err := m.sessions.Refresh(ctx); err != nil {
		return err
	}
	g, err := m.build(ctx, cfg)
	if err != nil {
		return err
	}
	m.gen.Store(g)
	for _, w := range configWarnings(cfg) {
		m.Log.Warn("config: " + w)
	}
	if m.Offline {
		return nil
	}
	if err := m.listen(ctx, cfg); err != nil {
		return err
	}
	if err := g.start(m); err != nil {
		return err
	}
	m.background()
	return nil
}

// listen opens the public listener (with TLS when configured), the plain
// HTTP listener for redirects and ACME challenges, and the admin listener.
func (m *Main) listen(ctx context.Context, cfg *config.Config) error {
	var tc tlsserve.Config
	if !cfg.Server.TLS.IsZero() {
		if err := cfg.Server.TLS.Decode(&tc); err != nil {
			return err
		}
	}
	var err error
	if m.tls, err = tlsserve.New(tc, m.Log, cfg.Server.DataDir, tlsserve.WithStore(m.store)); err != nil {
		return err
	}
	if err := m.tls.Manage(ctx); err != nil {
		return err // "tls: acme: ..."
	}
	var public http.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		m.gen.Load().front.ServeHTTP(w, r)
	})
	// What one client can hold: slow bodies are cut off, and requests in
	// progress are counted per client after the trusted-proxy handling,
	// which puts the forwarded client address in RemoteAddr.
	public = proxy.LimitBodies(public, proxy.BodyLimits{ReadTimeout: cfg.Server.BodyReadTimeout, MinRate: cfg.Server.BodyMinRate})
	public = proxy.LimitRequestsPerClient(public, cfg.Server.MaxConnsPerClient)
	// Connections are counted per peer address; the trusted proxies
	// carry everyone behind them and are not.
	proxies, err := proxy.ParsePrefixes(tc.TrustedProxies)
	if err != nil {
		return err
	}
	limitConns := func(ln net.Listener) net.Listener {
		return proxy.LimitConnsPerClient(ln, cfg.Server.MaxConnsPerClient, proxies, m.Log)
	}
	if len(tc.TrustedProxies) > 0 {
		if public, err = tlsserve.TrustProxies(tc.TrustedProxies, public); err != nil {
			return err
		}
	}
	if m.ln == nil {
		if m.ln, err = net.Listen("tcp", cfg.Server.Listen); err != nil {
			return fmt.Errorf("listen on %s: %w", cfg.Server.Listen, err)
		}
	}
	ln := limitConns(m.ln)
	if tlsConf := m.tls.TLSConfig(); tlsConf != nil {
		ln = tls.NewListener(ln, tlsConf)
	}
	m.srv = m.server(public)
	m.served = make(chan error, 3)
	go func() { m.served <- m.srv.Serve(ln) }()

	if cfg.Server.HTTPListen != "" {
		pln, err := net.Listen("tcp", cfg.Server.HTTPListen)
		if err != nil {
			return fmt.Errorf("listen on %s: %w", cfg.Server.HTTPListen, err)
		}
		m.plain = m.server(m.tls.HTTPHandler(public))
		go func() { m.served <- m.plain.Serve(limitConns(pln)) }()
	}
	if cfg.Admin.Listen != "off" {
		if m.adminLn == nil {
			if m.adminLn, err = net.Listen("tcp", cfg.Admin.Listen); err != nil {
				return fmt.Errorf("admin listener on %s: %w (set admin.listen to another address, or off)", cfg.Admin.Listen, err)
			}
		}
		m.adminSrv = m.server(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			m.gen.Load().admin.ServeHTTP(w, r)
		}))
		go func() { m.served <- m.adminSrv.Serve(m.adminLn) }()
	}
	return nil
}

func (m *Main) server(h http.Handler) *http.Server {
	return &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			m.inflight.Add(1)
			defer m.inflight.Add(-1)
			h.ServeHTTP(w, r)
		}),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(m.Log.Handler(), slog.LevelWarn),
	}
}

// Reload re-reads the config file and swaps in a new generation. A file
// with problems is refused with every problem logged, and the running
// config keeps serving; the error says so ("running config kept: ..."),
// for callers that say the reload failed. Sessions survive as long as the new session keys
// still hold the key that sealed them.
func (m *Main) Reload(ctx context.Context) error {
	m.reloadMu.Lock()
	defer m.reloadMu.Unlock()
	if m.ConfigPath == "" {
		return errors.New("reload: usher was not started from a config file")
	}
	cfg, err := loadConfig(m.ConfigPath)
	if err != nil {
		m.Log.Error("reload refused: the config file has problems; the running config stays", "file", m.ConfigPath, "err", err)
		return fmt.Errorf("running config kept: %w", err)
	}
	old := m.gen.Load()
	for _, c := range []struct {
		what     string
		old, new any
	}{
		{"store", old.cfg.Store, cfg.Store},
		{"server.listen", old.cfg.Server.Listen, cfg.Server.Listen},
		{"server.http_listen", old.cfg.Server.HTTPListen, cfg.Server.HTTPListen},
		{"admin.listen", old.cfg.Admin.Listen, cfg.Admin.Listen},
		{"server.body_read_timeout", old.cfg.Server.BodyReadTimeout, cfg.Server.BodyReadTimeout},
		{"server.body_min_rate", old.cfg.Server.BodyMinRate, cfg.Server.BodyMinRate},
		{"server.max_conns_per_client", old.cfg.Server.MaxConnsPerClient, cfg.Server.MaxConnsPerClient},
	} {
		if !reflect.DeepEqual(c.old, c.new) {
			m.Log.Warn("reload: this setting takes effect at the next restart", "setting", c.what)
		}
	}
	if a := m.Config.Session.AbsoluteTimeout; cfg.Session.AbsoluteTimeout > a {
		// Revocations are remembered for the absolute timeout in force at
		// start; a longer one now would let a revoked cookie live again.
		m.Log.Warn("reload: a longer session.absolute_timeout takes effect at the next restart", "running", a, "configured", cfg.Session.AbsoluteTimeout)
		cfg.Session.AbsoluteTimeout = a
		if cfg.Session.IdleTimeout > a {
			cfg.Session.IdleTimeout = a
		}
	}
	g, err := m.build(ctx, cfg)
	if err != nil {
		m.Log.Error("reload refused: the new config could not be opened; the running config stays", "err", err)
		return fmt.Errorf("running config kept: %w", err)
	}
	if err := g.start(m); err != nil {
		g.close()
		return fmt.Errorf("running config kept: %w", err)
	}
	m.gen.Store(g)
	m.Config = cfg
	old.close()
	_ = m.audit.Record(ctx, jit.Entry{Action: jit.ActConfigReload, Cause: jit.Cause{Source: jit.SourceSystem}, Outcome: jit.ResultOK, Detail: m.ConfigPath})
	m.Log.Info("config reloaded", "file", m.ConfigPath)
	return nil
}

func mustParse(s string) *url.URL {
	u, _ := url.Parse(s) // validated by config
	return u
}

// ownerName identifies this replica in job and sweep leases: host, process
// and a random part, so two replicas in one process never share leases.
func ownerName() string {
	host, _ := os.Hostname()
	var b [4]byte
	_, _ = rand.Read(b[:])
	return fmt.Sprintf("%s/%d/%x", host, os.Getpid(), b)
}

// Listen makes Open use ln for the public listener instead of the
// configured address.
func (m *Main) Listen(ln net.Listener) { m.ln = ln }

// ListenAdmin makes Open use ln for the admin listener.
func (m *Main) ListenAdmin(ln net.Listener) { m.adminLn = ln }

// Addr is the public listener's address.
func (m *Main) Addr() string {
	if m.ln == nil {
		return ""
	}
	return m.ln.Addr().String()
}

// AdminAddr is the admin listener's address, "" when off.
func (m *Main) AdminAddr() string {
	if m.adminLn == nil {
		return ""
	}
	return m.adminLn.Addr().String()
}

// Wait serves until ctx ends or a listener fails, then shuts down
// gracefully: in-flight requests get ShutdownGrace (30 s) to finish,
// then the retry worker and sweeps stop at a safe point (Close). A
// shutdown that had to cut requests off says how many.
func (m *Main) Wait(ctx context.Context) error {
	grace := m.ShutdownGrace
	if grace <= 0 {
		grace = 30 * time.Second
	}
	var err error
	select {
	case err = <-m.served:
		if errors.Is(err, http.ErrServerClosed) {
			err = nil
		} else {
			m.Log.Error("shutting down: a listener failed", "err", err, "grace", grace.String())
		}
	case <-ctx.Done():
		why := []any{"grace", grace.String()}
		if s, ok := errors.AsType[stopSignal](context.Cause(ctx)); ok {
			why = append(why, "signal", s.name())
		} else {
			why = append(why, "reason", context.Cause(ctx).Error())
		}
		m.Log.Info("shutting down: finishing requests in flight", why...)
	}
	sctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	// All at once: one by one, a slow request on the public listener
	// would keep the admin listener accepting (and /readyz answering ok)
	// until it finished.
	errs := make(chan error, 3)
	n := 0
	for _, s := range []*http.Server{m.srv, m.plain, m.adminSrv} {
		if s != nil {
			n++
			go func() { errs <- s.Shutdown(sctx) }()
		}
	}
	cut := false
	for range n {
		e := <-errs
		if errors.Is(e, context.DeadlineExceeded) {
			cut = true
			continue
		}
		err = errors.Join(err, e)
	}
	if cut {
		// Close, which follows, closes their connections.
		k := m.inflight.Load()
		what := fmt.Sprintf("%d requests", k)
		verb := "were"
		if k == 1 {
			what, verb = "1 request", "was"
		}
		err = errors.Join(err, fmt.Errorf("shutdown: %s still running after %s %s cut off", what, grace, verb))
	}
	return err
}

// Close stops listeners, background work and the current generation,
// then releases the store.
func (m *Main) Close() error {
	var errs []error
	for _, s := range []*http.Server{m.srv, m.plain, m.adminSrv} {
		if s != nil {
			errs = append(errs, s.Close())
		}
	}
	if m.srv == nil && m.ln != nil {
		errs = append(errs, m.ln.Close())
	}
	if m.adminSrv == nil && m.adminLn != nil {
		errs = append(errs, m.adminLn.Close())
	}
	var stopped []string
	if m.stopBackground != nil {
		m.stopBackground()
		m.stopBackground = nil
		stopped = append(stopped, "session revocation refresh", "queue metrics")
	}
	if g := m.gen.Swap(nil); g != nil {
		var sweeps, syncs []string
		for _, name := range g.sweepOrder {
			if g.sweepers[name].Running() {
				sweeps = append(sweeps, name)
			}
		}
		for _, name := range g.syncOrder {
			if g.syncers[name].Running() != nil {
				syncs = append(syncs, name)
			}
		}
		stopped = append(stopped, g.running...)
		g.close()
		for _, name := range sweeps {
			m.Log.Warn("shutdown: a sweep was stopped between two people; its next run resumes it", "sweep", name)
		}
		for _, name := range syncs {
			m.Log.Warn("shutdown: a directory sync was stopped between two pages", "directory", name)
		}
	}
	if len(stopped) > 0 {
		m.Log.Info("shutdown: background work stopped", "stopped", stopped)
	}
	if m.transport != nil {
		m.transport.CloseIdleConnections()
	}
	if m.tls != nil {
		errs = append(errs, m.tls.Close())
		m.tls = nil
	}
	if m.store != nil {
		errs = append(errs, m.store.Close())
		m.store = nil
	}
	return errors.Join(errs...)
}
