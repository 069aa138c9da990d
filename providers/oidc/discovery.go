package oidc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sync"
	"time"

	gooidc "github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"

	"github.com/usherhq/usher/providers"
)

const (
	// fetchTimeout bounds one fetch of the discovery document, at Open
	// and in the background: an IdP that does not answer must not hold a
	// start or a reload for the HTTP client's whole timeout.
	fetchTimeout = 10 * time.Second
	// cacheTimeout bounds one read or write of the cache (the store).
	cacheTimeout = 5 * time.Second
	// retryFirst and retryMax bound the background retries of a
	// discovery document that could not be fetched: the wait doubles
	// from retryFirst up to retryMax.
	retryFirst = 5 * time.Second
	retryMax   = 5 * time.Minute
	// readyOK and readyFailed are how long Ready keeps its answer about
	// the IdP's keys, so that /readyz polled every second asks the IdP
	// at most this often.
	readyOK     = 30 * time.Second
	readyFailed = 10 * time.Second

	// cacheKey is where the discovery document is kept. A stored copy
	// names its issuer, which must equal the configured one, so a copy
	// from before an issuer change is never used for the new issuer.
	cacheKey = "discovery"
)

// discovered is what usher uses from one discovery document.
type discovered struct {
	oauth      oauth2.Config
	op         *gooidc.Provider
	verifier   *gooidc.IDTokenVerifier
	jwksURI    string
	endSession string
	// requireIss is the discovery flag
	// authorization_response_iss_parameter_supported (RFC 9207).
	requireIss bool
	// fetched is when the document came from the IdP.
	fetched time.Time
	// stored: read from the cache because the IdP did not answer.
	stored bool
}

// document is the part of a discovery document usher reads.
type document struct {
	Issuer      string   `json:"issuer"`
	AuthURL     string   `json:"authorization_endpoint"`
	TokenURL    string   `json:"token_endpoint"`
	UserInfoURL string   `json:"userinfo_endpoint"`
	JWKSURI     string   `json:"jwks_uri"`
	EndSession  string   `json:"end_session_endpoint"`
	IssParam    bool     `json:"authorization_response_iss_parameter_supported"`
	Algs        []string `json:"id_token_signing_alg_values_supported"`
}

// openDiscovery loads discovery at Open: from the IdP, else from the
// cache; unless the IdP answered, the retry loop starts.
func (p *Provider) openDiscovery(ctx context.Context) {
	err := p.load(ctx)
	if err == nil {
		return
	}
	p.setLoadErr(err)
	if d := p.fromCache(ctx, err); d != nil {
		p.install(d)
	} else {
		p.log.Error("oidc: the discovery document could not be fetched and no stored copy is usable; the IdP is unavailable until it loads (retrying in the background)",
			"err", err)
	}
	p.startRetry()
}

// load fetches the discovery document, puts it to use and keeps a copy.
func (p *Provider) load(ctx context.Context) error {
	raw, err := p.fetchDiscovery(ctx)
	if err != nil {
		return err
	}
	d, err := p.parse(raw)
	if err != nil {
		return err
	}
	d.fetched = p.clock.Now()
	p.install(d)
	p.setLoadErr(nil)
	if p.cache != nil {
		cctx, cancel := context.WithTimeout(ctx, cacheTimeout)
		defer cancel()
		if err := p.cache.Put(cctx, cacheKey, raw); err != nil {
			p.log.Warn("oidc: could not keep a copy of the discovery document", "err", err)
		}
	}
	return nil
}

// fetchDiscovery reads the discovery document from the IdP.
func (p *Provider) fetchDiscovery(ctx context.Context) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, fetchTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.discoveryURL, nil)
	if err != nil {
		return nil, fmt.Errorf("oidc %s: discovery at %s: %w", p.id, p.issuer, err)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := p.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("oidc %s: discovery at %s: %w", p.id, p.issuer, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("oidc %s: discovery at %s: status %s", p.id, p.issuer, resp.Status)
	}
	b, err := io.ReadAll(resp.Body) // bounded by the client's transport
	if err != nil {
		return nil, fmt.Errorf("oidc %s: discovery at %s: %w", p.id, p.issuer, err)
	}
	return b, nil
}

// parse checks a discovery document, fetched or stored, and builds what
// logins use from it.
func (p *Provider) parse(raw []byte) (*discovered, error) {
	if len(raw) > maxDiscoveryBytes {
		return nil, fmt.Errorf("oidc %s: discovery document of %d bytes is larger than %d", p.id, len(raw), maxDiscoveryBytes)
	}
	var doc document
	if err := json.Unmarshal(raw, &doc); err != nil {
		return nil, fmt.Errorf("oidc %s: discovery document: %w", p.id, err)
	}
	if doc.Issuer != p.issuer {
		return nil, fmt.Errorf("oidc %s: discovery document: %w", p.id, &gooidc.IssuerMismatchError{Provided: p.issuer, Discovered: doc.Issuer})
	}
	switch {
	case doc.JWKSURI == "":
		return nil, fmt.Errorf("oidc %s: discovery document has no jwks_uri", p.id)
	case doc.AuthURL == "":
		return nil, fmt.Errorf("oidc %s: discovery document has no authorization_endpoint", p.id)
	case doc.TokenURL == "":
		return nil, fmt.Errorf("oidc %s: discovery document has no token_endpoint", p.id)
	}
	if len(doc.Algs) > 0 && !slices.ContainsFunc(doc.Algs, func(a string) bool { return slices.Contains(p.algs, a) }) {
		p.log.Warn("oidc: the IdP announces no allowed ID token algorithm; logins will fail",
			"announced", doc.Algs, "allowed", p.algs)
	}
	op := (&gooidc.ProviderConfig{
		IssuerURL:   doc.Issuer,
		AuthURL:     doc.AuthURL,
		TokenURL:    doc.TokenURL,
		UserInfoURL: doc.UserInfoURL,
		JWKSURL:     doc.JWKSURI,
	}).NewProvider(gooidc.ClientContext(context.Background(), p.client))
	keys := gooidc.NewRemoteKeySet(gooidc.ClientContext(context.Background(), p.keyClient), doc.JWKSURI)
	return &discovered{
		oauth: oauth2.Config{
			ClientID:     p.clientID,
			ClientSecret: p.secret,
			Endpoint:     op.Endpoint(),
			RedirectURL:  p.redirect,
			Scopes:       p.scopes,
		},
		op: op,
		// The verifier checks signatures (with the allowed algorithms
		// only) and parses; verifyIDToken makes every other check itself,
		// with its clock and skew, so each refusal carries its reason.
		verifier: gooidc.NewVerifier(p.issuer, keySet{keys}, &gooidc.Config{
			SupportedSigningAlgs: p.algs,
			SkipClientIDCheck:    true,
			SkipIssuerCheck:      true,
			SkipExpiryCheck:      true,
		}),
		jwksURI:    doc.JWKSURI,
		endSession: doc.EndSession,
		requireIss: doc.IssParam,
	}, nil
}

// fromCache returns discovery from the stored copy, or nil when there is
// none that can be used. fetchErr is why the IdP's own did not load.
func (p *Provider) fromCache(ctx context.Context, fetchErr error) *discovered {
	if p.cache == nil {
		return nil
	}
	cctx, cancel := context.WithTimeout(ctx, cacheTimeout)
	defer cancel()
	raw, at, err := p.cache.Get(cctx, cacheKey)
	switch {
	case errors.Is(err, providers.ErrNotCached):
		return nil
	case err != nil:
		p.log.Warn("oidc: could not read the stored copy of the discovery document", "err", err)
		return nil
	}
	d, err := p.parse(raw)
	if err != nil {
		p.log.Warn("oidc: the stored copy of the discovery document is not usable", "err", err)
		return nil
	}
	d.fetched, d.stored = at, true
	p.log.Warn("oidc: the discovery document could not be fetched; using the stored copy (retrying in the background)",
		"age", p.clock.Since(at).Round(time.Second).String(), "stored_at", at.UTC().Format(time.RFC3339), "err", fetchErr)
	return d
}

func (p *Provider) install(d *discovered) { p.disc.Store(d) }

func (p *Provider) setLoadErr(err error) {
	if err == nil {
		p.loadErr.Store(nil)
		return
	}
	p.loadErr.Store(&err)
}

func (p *Provider) lastLoadErr() error {
	if e := p.loadErr.Load(); e != nil {
		return *e
	}
	return nil
}

// retryDelay is the wait before background attempt n (0 is the first).
func retryDelay(n int) time.Duration {
	d := retryFirst
	for ; n > 0 && d < retryMax; n-- {
		d *= 2
	}
	return min(d, retryMax)
}

// startRetry fetches discovery in the background until it loads from
// the IdP (a stored copy in use is replaced then) or Close is called.
// Each attempt has fetchTimeout.
func (p *Provider) startRetry() {
	ctx, cancel := context.WithCancel(context.Background())
	p.stopRetry = cancel
	p.retryDone = make(chan struct{})
	go func() {
		defer close(p.retryDone)
		for n := 0; ; n++ {
			t := p.clock.NewTimer(retryDelay(n))
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.Chan():
			}
			err := p.load(ctx)
			if err == nil {
				p.log.Info("oidc: discovery document loaded; the IdP is available", "attempts", n+1)
				return
			}
			if ctx.Err() != nil {
				return
			}
			p.setLoadErr(err)
			p.log.Warn("oidc: the discovery document could still not be fetched", "attempt", n+1, "next_in", retryDelay(n+1).String(), "err", err)
		}
	}()
}

// Close stops the background retry, if any, and waits for it to end. It
// is safe to call more than once.
func (p *Provider) Close() error {
	p.stopOnce.Do(func() {
		if p.stopRetry != nil {
			p.stopRetry()
			<-p.retryDone
		}
	})
	return nil
}

// Available reports whether Begin can start a login: nil once a
// discovery document (the IdP's or a stored copy) is loaded.
func (p *Provider) Available() error {
	if p.disc.Load() != nil {
		return nil
	}
	return &providers.UnavailableError{Name: p.name, Reason: "its discovery document could not be fetched", Err: p.lastLoadErr()}
}

// Ready reports whether logins can work: discovery is loaded and the
// IdP's signing keys can be fetched. The key check is kept for
// readyOK (readyFailed after a failure).
func (p *Provider) Ready(ctx context.Context) error {
	d := p.disc.Load()
	if d == nil {
		return p.Available()
	}
	err := p.keys.get(ctx, p.clock, d, p.checkKeys)
	if err != nil && d.stored {
		return fmt.Errorf("%w (discovery: the stored copy from %s ago, as the IdP does not answer: %v)",
			err, p.clock.Since(d.fetched).Round(time.Second), p.lastLoadErr())
	}
	return err
}

// checkKeys fetches the JWKS of d and checks it holds a key.
func (p *Provider) checkKeys(ctx context.Context, d *discovered) error {
	ctx, cancel := context.WithTimeout(ctx, keyFetchTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, d.jwksURI, nil)
	if err != nil {
		return fmt.Errorf("oidc %s: signing keys: %w", p.id, err)
	}
	resp, err := p.keyClient.Do(req)
	if err != nil {
		return fmt.Errorf("oidc %s: signing keys could not be fetched: %w", p.id, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("oidc %s: signing keys could not be fetched: %s answered %s", p.id, d.jwksURI, resp.Status)
	}
	var set struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&set); err != nil {
		return fmt.Errorf("oidc %s: signing keys at %s: %w", p.id, d.jwksURI, err)
	}
	if len(set.Keys) == 0 {
		return fmt.Errorf("oidc %s: the key set at %s holds no keys", p.id, d.jwksURI)
	}
	return nil
}

// readyCache keeps the last answer of a readiness check for one
// discovery document; concurrent callers share one check in flight.
type readyCache struct {
	mu      sync.Mutex
	d       *discovered
	at      time.Time
	err     error
	pending chan struct{}
}

func (c *readyCache) get(ctx context.Context, clock interface{ Now() time.Time }, d *discovered, check func(context.Context, *discovered) error) error {
	for {
		c.mu.Lock()
		if c.pending != nil {
			wait := c.pending
			c.mu.Unlock()
			select {
			case <-wait:
				continue
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		keep := readyOK
		if c.err != nil {
			keep = readyFailed
		}
		if c.d == d && clock.Now().Sub(c.at) < keep {
			err := c.err
			c.mu.Unlock()
			return err
		}
		done := make(chan struct{})
		c.pending = done
		c.mu.Unlock()

		// Not the caller's cancellation: others may wait for this
		// answer, and checkKeys has its own deadline.
		err := check(context.WithoutCancel(ctx), d)

		c.mu.Lock()
		c.d, c.at, c.err, c.pending = d, clock.Now(), err, nil
		c.mu.Unlock()
		close(done)
		return err
	}
}
