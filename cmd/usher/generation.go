package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"sync"
	"time"

	"github.com/usherhq/usher/admin"
	"github.com/usherhq/usher/appsso"
	"github.com/usherhq/usher/config"
	"github.com/usherhq/usher/directory"
	"github.com/usherhq/usher/dirsync"
	"github.com/usherhq/usher/jit"
	"github.com/usherhq/usher/providers"
	"github.com/usherhq/usher/providers/saml"
	"github.com/usherhq/usher/proxy"
	"github.com/usherhq/usher/session"
	"github.com/usherhq/usher/sweep"
	"github.com/usherhq/usher/targets"
)

// generation is everything built from one config file: IdPs, mappings,
// app adapters, reconcile, sweeps, SCIM, the public and the admin
// handler. A reload builds a new generation and swaps it in whole, so a
// request sees either the old config or the new one, never a mix. The
// store, the session revocations and the listeners outlive generations.
type generation struct {
	cfg     *config.Config
	public  *url.URL
	codec   *session.Codec
	handler *proxy.Handler
	// front is the public listener's handler: the OpenID Provider's paths,
	// then the proxy.
	front      http.Handler
	provider   *appsso.Provider
	admin      http.Handler
	providers  []providers.Provider
	dirs       map[string]targets.Target
	lifecycle  *jit.Lifecycle
	worker     *jit.Worker
	sweepers   map[string]*sweep.Sweeper
	sweepOrder []string
	// connectors, their scopes and syncers are the configured directories
	// by name; syncOrder is their order in the file.
	connectors map[string]directory.Connector
	scopes     map[string]string
	syncers    map[string]*dirsync.Syncer
	syncOrder  []string
	// background runs the directory syncs' schedules and the admin's
	// "sync everyone now"; nil until start.
	background *dirsync.Background
	closers    []io.Closer
	stop       func()
	// running names what start runs, for the shutdown's log.
	running []string
}

// build opens a generation; on error nothing of it is left open.
func (m *Main) build(ctx context.Context, cfg *config.Config) (g *generation, err error) {
	g = &generation{cfg: cfg, dirs: map[string]targets.Target{}, sweepers: map[string]*sweep.Sweeper{},
		connectors: map[string]directory.Connector{}, scopes: map[string]string{}, syncers: map[string]*dirsync.Syncer{}}
	defer func() {
		if err != nil {
			g.close()
		}
	}()
	if g.public, err = url.Parse(cfg.Server.PublicURL); err != nil {
		return nil, fmt.Errorf("server.public_url: %w", err)
	}
	keys := make([][]byte, 0, len(cfg.Session.Keys))
	for i, k := range cfg.Session.Keys {
		v, err := k.Resolve()
		if err != nil {
			return nil, fmt.Errorf("session.keys[%d]: %w", i, err)
		}
		keys = append(keys, []byte(v))
	}
	g.codec, err = session.NewCodec(keys, session.Options{
		Name: cfg.Session.CookieName, Domain: cfg.Session.CookieDomain, Secure: g.public.Scheme == "https",
		Idle: cfg.Session.IdleTimeout, Absolute: cfg.Session.AbsoluteTimeout, Now: m.Now, Revoker: m.revoked,
	})
	if err != nil {
		return nil, err // "session: key 1: ..."
	}

	idps, mappers, err := m.openIdPs(ctx, g, cfg)
	if err != nil {
		return nil, err
	}

	for i, a := range cfg.Apps {
		tc, err := targetConfig(cfg, i)
		if err != nil {
			return nil, err
		}
		if tc == nil {
			continue
		}
		app := a.Name
		var base *url.URL
		switch {
		case a.Upstream != "":
			base = mustParse(a.Upstream)
		case a.URL != "":
			base = mustParse(a.URL) // not proxied: the app's REST API is at its own URL
		}
		dir, err := tc.Open(app, targets.Deps{
			Upstream: base, Log: m.Log.With("app", app), Now: m.Now,
			Observe:  func(op, result string, d time.Duration) { m.metrics.AppCall(app, op, result, d) },
			Accounts: blobAccounts{m.store},
		})
		if err != nil {
			return nil, err // "<app>: ...": targets name the app themselves
		}
		g.dirs[app] = dir
	}
	g.lifecycle = &jit.Lifecycle{
		Mappers: mappers, Apps: g.dirs, Store: m.store, Sessions: m.sessions, Audit: m.audit, Logins: m.logins, Metrics: m.metrics, Owner: m.owner,
		Log: m.Log, Now: m.Now, FastPath: cfg.Provisioning.FastPath, CreateGroups: *cfg.Provisioning.CreateGroups,
		QueueWhenDown: cfg.Provisioning.OnAppDown != "deny", Deadline: cfg.Provisioning.Deadline,
		Brakes: scimBrakes(cfg),
	}
	if len(g.dirs) > 0 {
		r := cfg.Provisioning.Retry
		g.worker = &jit.Worker{Lifecycle: g.lifecycle, Store: m.store, Owner: m.owner,
			Interval: r.Interval, MinBackoff: r.MinBackoff, MaxBackoff: r.MaxBackoff, ProbeEvery: r.ProbeEvery}
	}
	if err := m.openDirectories(g, cfg); err != nil {
		return nil, err
	}
	if err := m.openSweepers(g, cfg); err != nil {
		return nil, err
	}
	if m.Offline {
		return g, nil
	}

	names := proxy.HeaderNames{
		Username: cfg.Headers.Username, Email: cfg.Headers.Email,
		DisplayName: cfg.Headers.DisplayName, Groups: cfg.Headers.Groups, Strip: cfg.Headers.Strip,
		Attributes:     cfg.Headers.Attributes,
		CookiePrefixes: []string{g.codec.CookieName(), g.codec.PrefixedName(proxy.FlowCookiePrefix), admin.CookieName},
		Encoding:       proxy.HeaderEncoding(cfg.Headers.Encoding),
	}
	if ss := cfg.Headers.SharedSecret; ss != nil {
		v, err := ss.Value.Resolve()
		if err != nil {
			return nil, fmt.Errorf("headers.shared_secret.value: %w", err)
		}
		names.SecretHeader, names.SecretValue = ss.Header, v
	}
	var apps []proxy.App
	for _, a := range cfg.Apps {
		if a.Kind == config.KindCloud {
			continue // provisioned only: Cloud logins do not pass through usher
		}
		if a.Upstream == "" {
			// Not proxied; named so that session app lists account for it.
			apps = append(apps, proxy.App{Name: a.Name, Direct: true})
			continue
		}
		fwd := proxy.NewForwarder(mustParse(a.Upstream), names, m.transport, m.Log.With("app", a.Name))
		fwd.Proto = g.public.Scheme // the browser's scheme, also behind a TLS terminator
		fwd.App, fwd.Metrics = a.Name, m.metrics
		apps = append(apps, proxy.App{Name: a.Name, Route: a.Route, PassThrough: a.PassThrough, Forwarder: fwd})
	}
	scimH, err := m.scimHandler(cfg, g)
	if err != nil {
		return nil, err
	}
	g.handler = proxy.New(proxy.Options{
		PublicURL: g.public, Apps: apps, IdPs: idps, Codec: g.codec, Sessions: m.sessions,
		Lifecycle: g.lifecycle, Audit: m.audit, FlowTimeout: cfg.Session.FlowTimeout, SCIM: scimH, Metrics: m.metrics, Log: m.Log, Now: m.Now,
		SessionAttributes: slices.Sorted(maps.Keys(cfg.Headers.Attributes)),
	})
	if g.provider, err = m.openProvider(ctx, g, cfg, keys); err != nil {
		return nil, err
	}
	g.front = withProvider(g.provider, g.handler)
	if g.admin, err = m.adminHandler(g); err != nil {
		return nil, err
	}
	return g, nil
}

// openIdPs opens every IdP of cfg at once, so that IdPs that are slow
// to answer hold a start or reload for the slowest one's fetch deadline,
// not for the sum of them. An IdP that does not answer opens from its
// stored copy, or unavailable (its provider retries in the background);
// only configuration errors fail. Opened providers join g.closers.
func (m *Main) openIdPs(ctx context.Context, g *generation, cfg *config.Config) ([]proxy.IdP, map[string]*jit.Mapper, error) {
	type opened struct {
		p   providers.Provider
		err error
	}
	mappers := map[string]*jit.Mapper{}
	configs := make([]providers.Config, len(cfg.IdPs))
	for i, c := range cfg.IdPs {
		pc, err := providerConfig(cfg, i)
		if err != nil {
			return nil, nil, err
		}
		configs[i] = pc
		if mappers[c.ID], err = mapperFor(cfg, i); err != nil {
			return nil, nil, err
		}
	}
	results := make([]opened, len(cfg.IdPs))
	var wg sync.WaitGroup
	for i, c := range cfg.IdPs {
		wg.Go(func() {
			name := c.Name
			if name == "" {
				name = c.ID
			}
			deps := providers.Deps{
				PublicURL: g.public, Name: name, Log: m.Log, Client: m.Client,
				Cache: idpCache{b: m.store, prefix: "idp/" + c.ID + "/"},
			}
			var p providers.Provider
			var err error
			if sc, ok := configs[i].(*saml.Config); ok {
				// Replicas share the assertion replay cache through the store.
				p, err = sc.OpenWith(ctx, c.ID, deps, saml.Options{Replay: replayCache{m.store}, Now: m.Now})
			} else {
				p, err = configs[i].Open(ctx, c.ID, deps)
			}
			results[i] = opened{p, err}
		})
	}
	wg.Wait()
	var idps []proxy.IdP
	var firstErr error
	for i, c := range cfg.IdPs {
		r := results[i]
		if r.err != nil {
			if firstErr == nil {
				firstErr = r.err // "oidc <id>: ...", "saml <id>: ...": providers name themselves
			}
			continue
		}
		if cl, ok := r.p.(io.Closer); ok {
			g.closers = append(g.closers, cl)
		}
		g.providers = append(g.providers, r.p)
		idps = append(idps, proxy.IdP{Provider: r.p, Name: c.Name, Domains: c.Domains, Mapper: mappers[c.ID]})
	}
	if firstErr != nil {
		return nil, nil, firstErr
	}
	return idps, mappers, nil
}

// start runs the generation's background work: the retry worker, the
// sweep schedule and the directory syncs.
func (g *generation) start(m *Main) error {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if g.worker != nil && !m.NoWorker {
			g.worker.Run(ctx)
		}
	}()
	keysDone := make(chan struct{})
	go func() {
		defer close(keysDone)
		if g.provider != nil {
			g.provider.Run(ctx) // signing keys: reload and rotate
		}
	}()
	stopSweeps := func() {}
	if len(g.sweepers) > 0 && !m.NoSchedule {
		var ss []*sweep.Sweeper
		for _, name := range g.sweepOrder {
			ss = append(ss, g.sweepers[name])
		}
		stop, err := sweep.Schedule(ctx, ss, m.owner, 0)
		if err != nil {
			cancel()
			<-done
			<-keysDone
			return fmt.Errorf("schedule sweeps: %w", err)
		}
		stopSweeps = stop
	}
	// The runner serves the admin's "sync everyone now" even when
	// schedules are off.
	var scheduled []*dirsync.Syncer
	if !m.NoSchedule {
		for _, name := range g.syncOrder {
			scheduled = append(scheduled, g.syncers[name])
		}
	}
	bg, err := dirsync.Start(scheduled, nil)
	if err != nil {
		stopSweeps()
		cancel()
		<-done
		return fmt.Errorf("schedule directory syncs: %w", err)
	}
	g.background = bg
	g.stop = func() {
		stopSweeps() // a running sweep stops between users
		bg.Stop()    // a running sync stops between pages
		cancel()
		<-done // the worker finishes the job at hand first
		<-keysDone
	}
	if g.worker != nil && !m.NoWorker {
		g.running = append(g.running, "retry worker (after the job at hand)")
	}
	if g.provider != nil {
		g.running = append(g.running, "OpenID Provider key rotation")
	}
	if len(g.sweepers) > 0 && !m.NoSchedule {
		g.running = append(g.running, "sweep schedule")
	}
	if len(scheduled) > 0 {
		g.running = append(g.running, "directory sync schedule")
	}
	return nil
}

// close stops background work and releases providers.
func (g *generation) close() {
	if g == nil {
		return
	}
	if g.stop != nil {
		g.stop()
		g.stop = nil
	}
	var errs []error
	for i := len(g.closers) - 1; i >= 0; i-- {
		errs = append(errs, g.closers[i].Close())
	}
	g.closers = nil
	_ = errors.Join(errs...)
}
