package saml

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"

	"github.com/crewjam/saml"

	"github.com/usherhq/usher/providers"
)

// Bounds of the work on metadata_url.
const (
	// fetchTimeout bounds one fetch of metadata_url, at Open and in the
	// refresh loop.
	fetchTimeout = 30 * time.Second
	// cacheTimeout bounds one read or write of the cache (the store).
	cacheTimeout = 5 * time.Second
	// retryFirst and retryMax bound the retries after a failed fetch:
	// the wait doubles from retryFirst up to retryMax (and never beyond
	// metadata_refresh) until a fetch succeeds.
	retryFirst = 5 * time.Second
	retryMax   = 5 * time.Minute
)

// loaded is IdP metadata in use.
type loaded struct {
	sp *saml.ServiceProvider
	// validUntil is the earliest validUntil of the metadata (its
	// aggregate, entity and IdP role), zero when it names none.
	validUntil time.Time
	// fetched is when metadata_url answered with it (zero for file or
	// inline metadata); stored: read from the cache at Open because
	// metadata_url did not answer.
	fetched time.Time
	stored  bool
}

// failure is a run of failed fetches of metadata_url.
type failure struct {
	since    time.Time
	attempts int
	err      error
}

// metadata is parsed IdP metadata.
type metadata struct {
	entity     *saml.EntityDescriptor
	validUntil time.Time
}

// loadMetadata reads and parses the IdP metadata from its configured source.
func (p *Provider) loadMetadata(ctx context.Context) (*metadata, error) {
	var data []byte
	switch {
	case p.cfg.MetadataURL != "":
		b, err := p.fetchMetadata(ctx)
		if err != nil {
			return nil, err
		}
		data = b
	case p.cfg.MetadataFile != "":
		f, err := os.Open(p.cfg.MetadataFile)
		if err != nil {
			return nil, fmt.Errorf("read IdP metadata: %w", err)
		}
		defer f.Close()
		b, err := readBounded(f, maxMetadataBytes)
		if err != nil {
			return nil, fmt.Errorf("read IdP metadata %s: %w", p.cfg.MetadataFile, err)
		}
		data = b
	default:
		data = []byte(p.cfg.MetadataXML)
	}
	md, err := parseIdPMetadata(data)
	if err != nil {
		return nil, fmt.Errorf("IdP metadata: %w", err)
	}
	return md, nil
}

func (p *Provider) fetchMetadata(ctx context.Context) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, fetchTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.cfg.MetadataURL, nil)
	if err != nil {
		return nil, fmt.Errorf("fetch IdP metadata: %w", err)
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("fetch IdP metadata: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("fetch IdP metadata %s: status %s", p.cfg.MetadataURL, resp.Status)
	}
	b, err := readBounded(resp.Body, maxMetadataBytes)
	if err != nil {
		return nil, fmt.Errorf("fetch IdP metadata %s: %w", p.cfg.MetadataURL, err)
	}
	return b, nil
}

func readBounded(r io.Reader, limit int64) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("larger than %d bytes", limit)
	}
	return b, nil
}

// parseIdPMetadata parses metadata holding one IdP and checks it can be used:
// it has an IDPSSODescriptor with at least one signing certificate.
func parseIdPMetadata(data []byte) (*metadata, error) {
	if err := checkNoDTD(data); err != nil {
		return nil, err
	}
	md, err := unmarshalIdPEntity(data)
	if err != nil {
		return nil, err
	}
	if md.entity.EntityID == "" {
		return nil, errors.New("entity has no entityID")
	}
	if len(md.entity.IDPSSODescriptors) == 0 {
		return nil, errors.New("no IDPSSODescriptor")
	}
	certs := 0
	for _, d := range md.entity.IDPSSODescriptors {
		for _, k := range d.KeyDescriptors {
			if k.Use == "" || k.Use == "signing" {
				certs += len(k.KeyInfo.X509Data.X509Certificates)
			}
		}
		if d.ValidUntil != nil {
			md.validUntil = earliest(md.validUntil, *d.ValidUntil)
		}
	}
	if certs == 0 {
		return nil, errors.New("no signing certificate in the IDPSSODescriptor")
	}
	md.validUntil = earliest(md.validUntil, md.entity.ValidUntil)
	return md, nil
}

// earliest is the earlier of two validUntil times, a zero one meaning
// "none".
func earliest(a, b time.Time) time.Time {
	switch {
	case a.IsZero():
		return b
	case b.IsZero() || a.Before(b):
		return a
	}
	return b
}

// checkNoDTD refuses XML with a document type declaration or any other
// <! directive besides comments and CDATA, before any parser sees it: SAML
// never needs a DTD, and refusing it rules out entity expansion (billion
// laughs) and external entities (XXE) whatever the parsers do.
func checkNoDTD(data []byte) error {
	rest := data
	for {
		i := bytes.Index(rest, []byte("<!"))
		if i < 0 {
			return nil
		}
		rest = rest[i+2:]
		if !bytes.HasPrefix(rest, []byte("--")) && !bytes.HasPrefix(rest, []byte("[CDATA[")) {
			return errors.New("XML with a DTD or entity declaration is not accepted")
		}
	}
}

// use builds the service provider for md and checks it can start logins.
func (p *Provider) use(md *metadata) (*loaded, error) {
	sp := p.newSP(md.entity)
	binding := saml.HTTPRedirectBinding
	if p.cfg.Binding == "post" {
		binding = saml.HTTPPostBinding
	}
	if sp.GetSSOBindingLocation(binding) == "" {
		return nil, fmt.Errorf("IdP metadata has no SingleSignOnService for the %s binding", p.cfg.Binding)
	}
	return &loaded{sp: sp, validUntil: md.validUntil}, nil
}

// install makes md the IdP metadata future logins use.
func (p *Provider) install(md *metadata) error {
	l, err := p.use(md)
	if err != nil {
		return err
	}
	p.md.Store(l)
	return nil
}

// cacheKey is where the copy of metadata_url's document is kept. The key
// names the URL, so a copy from before the admin pointed metadata_url
// elsewhere (another IdP, whose certificates usher must not keep
// trusting) is never used.
func (p *Provider) cacheKey() string {
	sum := sha256.Sum256([]byte(p.cfg.MetadataURL))
	return "metadata/" + hex.EncodeToString(sum[:8])
}

// fetchAndInstall fetches metadata_url, checks the document (parse,
// signing certificate, SSO endpoint, validUntil), uses it and keeps a
// copy in the cache.
func (p *Provider) fetchAndInstall(ctx context.Context) error {
	raw, err := p.fetchMetadata(ctx)
	if err != nil {
		return err
	}
	md, err := parseIdPMetadata(raw)
	if err != nil {
		return fmt.Errorf("IdP metadata from %s: %w", p.cfg.MetadataURL, err)
	}
	if now := p.now(); !md.validUntil.IsZero() && now.After(md.validUntil) {
		return fmt.Errorf("IdP metadata from %s expired at %s (validUntil), now %s", p.cfg.MetadataURL,
			md.validUntil.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	}
	l, err := p.use(md)
	if err != nil {
		return err
	}
	l.fetched = p.clock.Now()
	p.md.Store(l)
	if p.cache != nil {
		cctx, cancel := context.WithTimeout(ctx, cacheTimeout)
		defer cancel()
		if err := p.cache.Put(cctx, p.cacheKey(), raw); err != nil {
			p.log.Warn("saml: could not keep a copy of the IdP metadata", "err", err)
		}
	}
	return nil
}

// openURLMetadata loads metadata_url at Open: from the IdP, else from
// the stored copy, else not at all (the provider is unavailable until
// the refresh loop loads it).
func (p *Provider) openURLMetadata(ctx context.Context) {
	err := p.fetchAndInstall(ctx)
	if err == nil {
		return
	}
	p.fail(err)
	if l := p.fromCache(ctx, err); l != nil {
		p.md.Store(l)
		return
	}
	p.log.Error("saml: the IdP metadata could not be fetched and no stored copy is usable; the IdP is unavailable until it loads (retrying in the background)",
		"err", err)
}

// fromCache returns the stored copy of metadata_url's document when it
// can be used, or nil. fetchErr is why the IdP's own did not load.
func (p *Provider) fromCache(ctx context.Context, fetchErr error) *loaded {
	if p.cache == nil {
		return nil
	}
	cctx, cancel := context.WithTimeout(ctx, cacheTimeout)
	defer cancel()
	raw, at, err := p.cache.Get(cctx, p.cacheKey())
	switch {
	case errors.Is(err, providers.ErrNotCached):
		return nil
	case err != nil:
		p.log.Warn("saml: could not read the stored copy of the IdP metadata", "err", err)
		return nil
	}
	if len(raw) > maxMetadataBytes {
		p.log.Warn("saml: the stored copy of the IdP metadata is not usable: too large", "bytes", len(raw))
		return nil
	}
	md, err := parseIdPMetadata(raw)
	if err != nil {
		p.log.Warn("saml: the stored copy of the IdP metadata is not usable", "err", err)
		return nil
	}
	if now := p.now(); !md.validUntil.IsZero() && now.After(md.validUntil) {
		// The IdP said how long its metadata may be trusted; a copy past
		// that could hold a certificate the IdP has since withdrawn.
		p.log.Warn("saml: the stored copy of the IdP metadata is not used: it is past its validUntil, so the IdP no longer vouches for its certificates and endpoints",
			"valid_until", md.validUntil.UTC().Format(time.RFC3339), "stored_at", at.UTC().Format(time.RFC3339))
		return nil
	}
	l, err := p.use(md)
	if err != nil {
		p.log.Warn("saml: the stored copy of the IdP metadata is not usable", "err", err)
		return nil
	}
	l.fetched, l.stored = at, true
	p.log.Warn("saml: the IdP metadata could not be fetched; using the stored copy (retrying in the background)",
		"age", p.clock.Since(at).Round(time.Second).String(), "stored_at", at.UTC().Format(time.RFC3339), "err", fetchErr)
	return l
}

// fail records a failed fetch of metadata_url.
func (p *Provider) fail(err error) {
	f := &failure{since: p.clock.Now(), attempts: 1, err: err}
	if prev := p.failing.Load(); prev != nil {
		f.since, f.attempts = prev.since, prev.attempts+1
	}
	p.failing.Store(f)
}

// RefreshMetadata fetches the IdP metadata from metadata_url again and uses
// it if it is valid and not past its validUntil. On failure the last good
// copy stays in use, the failure is counted (MetadataRefreshFailures) and
// returned.
func (p *Provider) RefreshMetadata(ctx context.Context) error {
	if p.cfg.MetadataURL == "" {
		return nil
	}
	if err := p.fetchAndInstall(ctx); err != nil {
		p.refreshFailures.Add(1)
		p.fail(err)
		return fmt.Errorf("saml %s: refresh metadata: %w", p.id, err)
	}
	p.failing.Store(nil)
	return nil
}

// MetadataRefreshFailures counts failed metadata refreshes since Open, for
// the admin metrics.
func (p *Provider) MetadataRefreshFailures() uint64 { return p.refreshFailures.Load() }

// retryDelay is the wait before retry n (0 is the first) after failed
// fetches, never longer than the refresh interval.
func (p *Provider) retryDelay(n int) time.Duration {
	d := retryFirst
	for ; n > 0 && d < retryMax; n-- {
		d *= 2
	}
	return min(d, retryMax, p.cfg.MetadataRefresh)
}

// startRefresh fetches metadata_url every metadata_refresh, and sooner,
// with backoff, while fetches fail (at Open too).
func (p *Provider) startRefresh() {
	ctx, cancel := context.WithCancel(context.Background())
	p.stopRefresh = cancel
	p.refreshDone = make(chan struct{})
	go func() {
		defer close(p.refreshDone)
		for {
			wait := p.cfg.MetadataRefresh
			f := p.failing.Load()
			if f != nil {
				wait = p.retryDelay(f.attempts - 1)
			}
			t := p.clock.NewTimer(wait)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.Chan():
			}
			err := p.RefreshMetadata(ctx)
			switch {
			case ctx.Err() != nil:
				return
			case err != nil:
				p.log.Warn("saml metadata refresh failed; keeping the last good copy", "err", err)
			case f != nil:
				p.log.Info("saml: IdP metadata loaded; the IdP is available", "attempts", f.attempts+1)
			}
		}
	}()
}

// Close stops the metadata refresh and waits for it to end. It is safe to
// call more than once.
func (p *Provider) Close() error {
	p.stopOnce.Do(func() {
		if p.stopRefresh != nil {
			p.stopRefresh()
			<-p.refreshDone
		}
	})
	return nil
}

// current is the IdP metadata in use, or why there is none that may be
// used: never loaded, or (from metadata_url) past its validUntil.
func (p *Provider) current() (*loaded, error) {
	l := p.md.Load()
	if l == nil {
		var cause error
		if f := p.failing.Load(); f != nil {
			cause = f.err
		}
		return nil, &providers.UnavailableError{Name: p.name, Reason: "its metadata could not be fetched", Err: cause}
	}
	if p.cfg.MetadataURL != "" && !l.validUntil.IsZero() && p.now().After(l.validUntil) {
		var cause error
		if f := p.failing.Load(); f != nil {
			cause = fmt.Errorf("refreshing it fails: %w", f.err)
		}
		return nil, &providers.UnavailableError{Name: p.name,
			Reason: "its metadata expired at " + l.validUntil.UTC().Format(time.RFC3339), Err: cause}
	}
	return l, nil
}

// Available reports whether Begin can start a login: IdP metadata is
// loaded and, when it comes from metadata_url, not past its validUntil.
func (p *Provider) Available() error {
	_, err := p.current()
	return err
}

// Ready reports whether logins can work: Available, and the last fetch
// of metadata_url (if any) succeeded. While fetches fail, logins use the
// last good copy, and Ready says since when and how old that copy is.
// It makes no network call.
func (p *Provider) Ready(context.Context) error {
	l, err := p.current()
	if err != nil {
		return err
	}
	if f := p.failing.Load(); f != nil {
		return fmt.Errorf("saml %s: fetching the IdP metadata fails since %s (%d attempts): %w; logins use the copy fetched %s ago",
			p.id, f.since.UTC().Format(time.RFC3339), f.attempts, f.err, p.clock.Since(l.fetched).Round(time.Second))
	}
	return nil
}

// Metadata returns usher's SP metadata for this IdP: entity ID, the ACS
// (HTTP-POST), the SLO endpoint (HTTP-Redirect) and the SP certificate for
// signing and encryption. It needs nothing from the IdP, so it is served
// while the IdP's metadata is not loaded.
func (p *Provider) Metadata() ([]byte, string, error) {
	md := p.newSP(nil).Metadata()
	b, err := xml.MarshalIndent(md, "", "  ")
	if err != nil {
		return nil, "", fmt.Errorf("saml %s: marshal SP metadata: %w", p.id, err)
	}
	return append([]byte(xml.Header), b...), "application/samlmetadata+xml", nil
}

// unmarshalIdPEntity reads an EntityDescriptor, or the one IdP entity of an
// EntitiesDescriptor aggregate, with the earliest validUntil of the
// aggregates around it.
func unmarshalIdPEntity(data []byte) (*metadata, error) {
	d := xml.NewDecoder(bytes.NewReader(data))
	var root xml.StartElement
	for {
		tok, err := d.Token()
		if err != nil {
			return nil, fmt.Errorf("malformed XML: %w", err)
		}
		if se, ok := tok.(xml.StartElement); ok {
			root = se
			break
		}
	}
	if root.Name.Local != "EntitiesDescriptor" {
		md := &saml.EntityDescriptor{}
		if err := xml.Unmarshal(data, md); err != nil {
			return nil, err
		}
		return &metadata{entity: md}, nil
	}
	var agg saml.EntitiesDescriptor
	if err := xml.Unmarshal(data, &agg); err != nil {
		return nil, err
	}
	var idps []*metadata
	var walk func(*saml.EntitiesDescriptor, time.Time)
	walk = func(e *saml.EntitiesDescriptor, until time.Time) {
		if e.ValidUntil != nil {
			until = earliest(until, *e.ValidUntil)
		}
		for i := range e.EntityDescriptors {
			if len(e.EntityDescriptors[i].IDPSSODescriptors) > 0 {
				idps = append(idps, &metadata{entity: &e.EntityDescriptors[i], validUntil: until})
			}
		}
		for i := range e.EntitiesDescriptors {
			walk(&e.EntitiesDescriptors[i], until)
		}
	}
	walk(&agg, time.Time{})
	if len(idps) != 1 {
		return nil, fmt.Errorf("metadata aggregate holds %d IdP entities, want exactly one", len(idps))
	}
	return idps[0], nil
}
