package main

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"sync"
	"time"

	"github.com/usherhq/usher/config"
	"github.com/usherhq/usher/jit"
	"github.com/usherhq/usher/providers"
	"github.com/usherhq/usher/providers/saml"
	"github.com/usherhq/usher/proxy"
	"github.com/usherhq/usher/session"
	"github.com/usherhq/usher/store"
	"github.com/usherhq/usher/store/postgres"
	"github.com/usherhq/usher/store/sqlite"
	"github.com/usherhq/usher/sweep"
	"github.com/usherhq/usher/targets"
)

// Main is one running usher. Tests build it with a ":0" listener and a temp
// data dir; the serve and demo commands build it from a config file.
type Main struct {
	Config *config.Config
	Log    *slog.Logger
	// Client talks to IdPs (discovery, token, metadata). Default: a client
	// with a 10 s timeout.
	Client *http.Client
	Now    func() time.Time

	store   store.Store
	handler *proxy.Handler
	revoked *session.Revocations
	srv     *http.Server
	ln      net.Listener
	closers []io.Closer
	served  chan error

	reconciler     *jit.Reconciler
	worker         *jit.Worker
	sessions       *session.Shared
	stopBackground func()
	// RevocationPoll is how often revocations from other replicas are
	// read, default 1s.
	RevocationPoll time.Duration
	// NoWorker keeps the retry worker from running in the background
	// (tests drain the queue themselves).
	NoWorker bool
	// NoSchedule keeps sweeps from running on their schedules.
	NoSchedule bool
	// Offline opens store, apps and sweeps but no listener and no
	// background loops: for one-shot commands (usher sweep).
	Offline bool

	owner      string // this replica's name in leases
	sweepers   map[string]*sweep.Sweeper
	sweepOrder []string
	stopSweeps func()
}

// Open starts everything: store, providers, the public listener. On error
// nothing is left running.
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
	m.owner = ownerName()
	if m.Client == nil {
		m.Client = &http.Client{Timeout: 10 * time.Second}
	}
	public, err := url.Parse(cfg.Server.PublicURL)
	if err != nil {
		return fmt.Errorf("server.public_url: %w", err)
	}

	keys := make([][]byte, 0, len(cfg.Session.Keys))
	for i, k := range cfg.Session.Keys {
		v, err := k.Resolve()
		if err != nil {
			return fmt.Errorf("session.keys[%d]: %w", i, err)
		}
		keys = append(keys, []byte(v))
	}
	m.revoked = session.NewRevocations(cfg.Session.AbsoluteTimeout, m.Now)
	codec, err := session.NewCodec(keys, session.Options{
		Name:     cfg.Session.CookieName,
		Domain:   cfg.Session.CookieDomain,
		Secure:   public.Scheme == "https",
		Idle:     cfg.Session.IdleTimeout,
		Absolute: cfg.Session.AbsoluteTimeout,
		Now:      m.Now,
		Revoker:  m.revoked,
	})
	if err != nil {
		return fmt.Errorf("session: %w", err)
	}

	if m.store, err = openStore(ctx, cfg.Store); err != nil {
		return err
	}
	m.closers = append(m.closers, m.store)
	m.sessions = &session.Shared{Local: m.revoked, Store: m.store, Absolute: cfg.Session.AbsoluteTimeout, Now: m.Now, Log: m.Log}
	if err := m.sessions.Refresh(ctx); err != nil {
		return err
	}

	deps := providers.Deps{PublicURL: public, Log: m.Log, Client: m.Client}
	var idps []proxy.IdP
	mappers := map[string]*jit.Mapper{}
	for i, c := range cfg.IdPs {
		pc, err := providerConfig(cfg, i)
		if err != nil {
			return err
		}
		var p providers.Provider
		if sc, ok := pc.(*saml.Config); ok {
			// Replicas share the assertion replay cache through the store.
			p, err = sc.OpenWith(ctx, c.ID, deps, saml.Options{Replay: replayCache{m.store}, Now: m.Now})
		} else {
			p, err = pc.Open(ctx, c.ID, deps)
		}
		if err != nil {
			return fmt.Errorf("idp %s: %w", c.ID, err)
		}
		if cl, ok := p.(io.Closer); ok {
			m.closers = append(m.closers, cl)
		}
		mapper, err := mapperFor(cfg, i)
		if err != nil {
			return err
		}
		mappers[c.ID] = mapper
		idps = append(idps, proxy.IdP{Provider: p, Name: c.Name, Domains: c.Domains, Mapper: mapper})
	}

	var provisioner proxy.Provisioner
	dirs := map[string]targets.Directory{}
	for i, a := range cfg.Apps {
		tc, err := targetConfig(cfg, i)
		if err != nil {
			return err
		}
		if tc == nil {
			continue
		}
		dir, err := tc.Open(a.Name, targets.Deps{Upstream: mustParse(a.Upstream), Log: m.Log.With("app", a.Name), Now: m.Now})
		if err != nil {
			return fmt.Errorf("app %s: %w", a.Name, err)
		}
		dirs[a.Name] = dir
	}
	if len(dirs) > 0 {
		ps := m.store
		rec := &jit.Reconciler{
			Apps: dirs, Store: ps, Log: m.Log, Now: m.Now,
			FastPath: cfg.Provisioning.FastPath, CreateGroups: *cfg.Provisioning.CreateGroups,
		}
		provisioner = rec
		m.worker = &jit.Worker{Reconciler: rec, Store: ps, Owner: m.owner}
		m.reconciler = rec
	}

	names := proxy.HeaderNames{
		Username: cfg.Headers.Username, Email: cfg.Headers.Email,
		DisplayName: cfg.Headers.DisplayName, Groups: cfg.Headers.Groups,
		Strip:          cfg.Headers.Strip,
		CookiePrefixes: []string{codec.CookieName(), codec.PrefixedName(proxy.FlowCookiePrefix)},
	}
	if ss := cfg.Headers.SharedSecret; ss != nil {
		v, err := ss.Value.Resolve()
		if err != nil {
			return fmt.Errorf("headers.shared_secret.value: %w", err)
		}
		names.SecretHeader, names.SecretValue = ss.Header, v
	}
	transport := proxy.SharedTransport()
	var apps []proxy.App
	for _, a := range cfg.Apps {
		up, err := url.Parse(a.Upstream)
		if err != nil {
			return fmt.Errorf("app %s: upstream: %w", a.Name, err)
		}
		fwd := proxy.NewForwarder(up, names, transport, m.Log.With("app", a.Name))
		fwd.Proto = public.Scheme // the browser's scheme, also behind a TLS terminator
		apps = append(apps, proxy.App{Name: a.Name, Route: a.Route, PassThrough: a.PassThrough, Forwarder: fwd})
	}

	if err := m.openSweepers(cfg, dirs); err != nil {
		return err
	}
	if m.Offline {
		return nil
	}
	scimH, err := m.scimHandler(cfg, public, mappers)
	if err != nil {
		return err
	}
	m.handler = proxy.New(proxy.Options{
		SCIM:      scimH,
		PublicURL: public, Apps: apps, IdPs: idps, Codec: codec, Sessions: m.sessions,
		Store: m.store, Provisioner: provisioner, QueueWhenDown: cfg.Provisioning.OnAppDown != "deny",
		FlowTimeout: cfg.Session.FlowTimeout, Log: m.Log, Now: m.Now,
	})
	if m.ln == nil {
		if m.ln, err = net.Listen("tcp", cfg.Server.Listen); err != nil {
			return fmt.Errorf("listen on %s: %w", cfg.Server.Listen, err)
		}
	}
	m.srv = &http.Server{
		Handler:           m.handler,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(m.Log.Handler(), slog.LevelWarn),
	}
	m.served = make(chan error, 1)
	go func() { m.served <- m.srv.Serve(m.ln) }()
	m.background(ctx)
	if len(m.sweepers) > 0 && !m.NoSchedule {
		var ss []*sweep.Sweeper
		for _, name := range m.sweepOrder {
			ss = append(ss, m.sweepers[name])
		}
		stop, err := sweep.Schedule(context.WithoutCancel(ctx), ss, m.owner, 0)
		if err != nil {
			return fmt.Errorf("schedule sweeps: %w", err)
		}
		m.stopSweeps = stop
	}
	return nil
}

// background starts the loops that run beside the server: revocation
// refresh and the retry worker. Close stops them at a safe point.
func (m *Main) background(ctx context.Context) {
	bctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	var wg sync.WaitGroup
	poll := m.RevocationPoll
	if poll <= 0 {
		poll = time.Second
	}
	wg.Add(1)
	go func() { defer wg.Done(); m.sessions.Run(bctx, poll) }()
	if m.worker != nil && !m.NoWorker {
		wg.Add(1)
		go func() { defer wg.Done(); m.worker.Run(bctx) }()
	}
	m.stopBackground = func() { cancel(); wg.Wait() }
}

// replayCache lets SAML providers share assertion IDs through the store.
type replayCache struct{ s store.Coordination }

func (c replayCache) Seen(ctx context.Context, id string, expires time.Time) (bool, error) {
	return c.s.SeenOnce(ctx, id, expires)
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

func openStore(ctx context.Context, c config.Store) (store.Store, error) {
	switch c.Driver {
	case "postgres":
		dsn, err := c.DSN.Resolve()
		if err != nil {
			return nil, fmt.Errorf("store.dsn: %w", err)
		}
		s, err := postgres.Open(ctx, dsn, postgres.Options{
			NoMigrate: c.Migrate == "manual", MaxConns: int32(c.MaxConns), StatementTimeout: c.StatementTimeout,
		})
		if err != nil {
			return nil, fmt.Errorf("store: %w", err)
		}
		return s, nil
	default:
		s, err := sqlite.Open(ctx, c.Path, sqlite.Options{NoMigrate: c.Migrate == "manual"})
		if err != nil {
			return nil, fmt.Errorf("store: %w", err)
		}
		return s, nil
	}
}

// Listen makes Open use ln instead of listening on the configured address.
func (m *Main) Listen(ln net.Listener) { m.ln = ln }

// Addr is the public listener's address.
func (m *Main) Addr() string {
	if m.ln == nil {
		return ""
	}
	return m.ln.Addr().String()
}

// Handler is the public handler (for tests and benchmarks).
func (m *Main) Handler() http.Handler { return m.handler }

// Wait serves until ctx ends or the server fails, then shuts down
// gracefully: in-flight requests get up to 30 s to finish.
func (m *Main) Wait(ctx context.Context) error {
	select {
	case err := <-m.served:
		if errors.Is(err, http.ErrServerClosed) {
			return nil
		}
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return m.srv.Shutdown(sctx)
}

// Close stops the listener and releases the store and providers.
func (m *Main) Close() error {
	if m.stopSweeps != nil {
		m.stopSweeps() // a running sweep stops between users
		m.stopSweeps = nil
	}
	if m.stopBackground != nil {
		m.stopBackground() // the worker finishes the job at hand first
		m.stopBackground = nil
	}
	var errs []error
	if m.srv != nil {
		errs = append(errs, m.srv.Close())
	} else if m.ln != nil {
		errs = append(errs, m.ln.Close())
	}
	for i := len(m.closers) - 1; i >= 0; i-- {
		errs = append(errs, m.closers[i].Close())
	}
	m.closers = nil
	return errors.Join(errs...)
}
