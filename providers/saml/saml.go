// Package saml owns usher's SAML 2.0 Service Provider: one Provider per
// configured SAML IdP, built on github.com/crewjam/saml. It starts logins
// (AuthnRequests over HTTP-Redirect or HTTP-POST), verifies responses at the
// assertion consumer service (ACS) with every check usher relies on made
// explicit, publishes SP metadata, and sends single-logout requests. Nothing
// outside this package imports crewjam/saml; callers see providers.Provider
// and the optional interfaces beside it.
package saml

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/crewjam/saml"
	"github.com/jonboulle/clockwork"
	dsig "github.com/russellhaering/goxmldsig"

	"github.com/usherhq/usher/config"
	"github.com/usherhq/usher/providers"
)

// Defaults, in one place.
const (
	defaultMetadataRefresh  = time.Hour
	defaultClockSkew        = 60 * time.Second
	defaultMaxResponseBytes = 256 << 10
	defaultIdPInitiatedPath = "/"
	// maxMaxResponseBytes caps max_response_bytes: the ACS holds the
	// whole POST body (about three times as much) in memory.
	maxMaxResponseBytes = 8 << 20
	// maxMetadataBytes bounds IdP metadata from a URL or file.
	maxMetadataBytes = 1 << 20
	// maxFormOverhead is what a POST body may carry besides the base64
	// SAMLResponse (RelayState, field names, separators).
	maxFormOverhead = 8 << 10
)

// Config is a SAML IdP's `config:` block, decoded strictly by cmd/usher.
type Config struct {
	// Exactly one of MetadataURL, MetadataFile and MetadataXML names the
	// IdP metadata. URL metadata is fetched at Open and then every
	// MetadataRefresh (default 1h); a failed refresh keeps the last good copy.
	MetadataURL     string        `yaml:"metadata_url"`
	MetadataFile    string        `yaml:"metadata_file"`
	MetadataXML     string        `yaml:"metadata_xml"`
	MetadataRefresh time.Duration `yaml:"metadata_refresh"`

	// EntityID is usher's SP entity ID at this IdP, default
	// {PublicURL}/usher/saml/{id}/metadata.
	EntityID string `yaml:"entity_id"`
	// SPKey and SPCert hold the SP's PEM private key and certificate
	// (`usher saml keygen` makes a pair). They sign requests and decrypt
	// encrypted assertions. Required: usher never generates them silently.
	SPKey  config.Secret `yaml:"sp_key"`
	SPCert config.Secret `yaml:"sp_cert"`
	// SignRequests signs AuthnRequests.
	SignRequests bool `yaml:"sign_requests"`
	// Binding sends AuthnRequests by "redirect" (default) or "post".
	Binding string `yaml:"binding"`

	// AllowUnsignedAssertions accepts an assertion without its own
	// signature when the Response around it is signed. An unsigned
	// assertion in an unsigned Response is never accepted.
	AllowUnsignedAssertions bool `yaml:"allow_unsigned_assertions"`
	// AllowIdPInitiated accepts unsolicited responses (no flow, no
	// InResponseTo); the user lands on IdPInitiatedPath (default "/").
	AllowIdPInitiated bool   `yaml:"allow_idp_initiated"`
	IdPInitiatedPath  string `yaml:"idp_initiated_path"`

	// Subject is where the identity's subject comes from: "nameid"
	// (default) or the Name of an attribute, such as
	// http://schemas.microsoft.com/identity/claims/objectidentifier.
	Subject string `yaml:"subject"`
	// NameIDFormat, when set, is requested in the AuthnRequest and required
	// of the response's NameID: persistent, transient, emailAddress,
	// unspecified, or a full URN.
	NameIDFormat string `yaml:"nameid_format"`

	// ClockSkew is the tolerance on every assertion time, default 60s, at
	// most crewjam/saml's own limit (3m).
	ClockSkew time.Duration `yaml:"clock_skew"`
	// MaxResponseBytes bounds the decoded SAMLResponse, default 256 KiB.
	// The POST body it arrives in may be about three times as large (base64
	// and URL encoding); the proxy accepts that much (MaxBodyBytes).
	MaxResponseBytes int64 `yaml:"max_response_bytes"`
	// SPMetadataValidFor, when set, puts validUntil = now + this duration
	// in usher's SP metadata. Unset (the default), the metadata has no
	// validUntil, only cacheDuration (one day): a copy an IdP imported
	// stays valid until the admin replaces it.
	SPMetadataValidFor time.Duration `yaml:"sp_metadata_valid_for"`
}

var _ providers.Config = (*Config)(nil)

// nameIDFormats maps the short names accepted in nameid_format.
var nameIDFormats = map[string]string{
	"persistent":   string(saml.PersistentNameIDFormat),
	"transient":    string(saml.TransientNameIDFormat),
	"emailAddress": string(saml.EmailAddressNameIDFormat),
	"unspecified":  string(saml.UnspecifiedNameIDFormat),
}

// ClaimDefaults implements providers.Config: the NameID and the displayName attribute.
func (c *Config) ClaimDefaults() config.ClaimDefaults {
	return config.ClaimDefaults{Username: "nameid", DisplayName: "displayName"}
}

// Validate returns every problem with the configuration, each naming its key.
func (c *Config) Validate() []error {
	var errs []error
	n := 0
	for _, s := range []string{c.MetadataURL, c.MetadataFile, c.MetadataXML} {
		if s != "" {
			n++
		}
	}
	if n != 1 {
		errs = append(errs, errors.New("exactly one of metadata_url, metadata_file and metadata_xml must be set"))
	}
	if c.MetadataURL != "" {
		u, err := url.Parse(c.MetadataURL)
		switch {
		case err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "":
			errs = append(errs, config.FieldErrorf("metadata_url", "%q is not an http(s) URL", c.MetadataURL))
		case u.Scheme == "http" && !isLoopback(u.Hostname()):
			// The metadata carries the IdP's signing certificates: fetched
			// over plain HTTP, anyone on the path could swap them.
			errs = append(errs, config.FieldErrorf("metadata_url", "%q must use https (plain http only on loopback)", c.MetadataURL))
		}
	}
	if c.MetadataRefresh < 0 {
		errs = append(errs, config.FieldErrorf("metadata_refresh", "must not be negative"))
	}
	if c.SPKey.IsZero() {
		errs = append(errs, config.FieldErrorf("sp_key", "required (create a pair with `usher saml keygen`)"))
	}
	if c.SPCert.IsZero() {
		errs = append(errs, config.FieldErrorf("sp_cert", "required (create a pair with `usher saml keygen`)"))
	}
	switch c.Binding {
	case "", "redirect", "post":
	default:
		errs = append(errs, config.FieldErrorf("binding", "%q is neither redirect nor post", c.Binding))
	}
	if p := c.IdPInitiatedPath; p != "" && !isLocalPath(p) {
		errs = append(errs, config.FieldErrorf("idp_initiated_path", "%q is not a path on this site (must start with a single /)", p))
	}
	if _, err := fullNameIDFormat(c.NameIDFormat); err != nil {
		errs = append(errs, config.FieldErrorf("nameid_format", "%v", err))
	}
	if c.ClockSkew < 0 || c.ClockSkew > saml.MaxClockSkew {
		errs = append(errs, config.FieldErrorf("clock_skew", "must be between 0 and %s", saml.MaxClockSkew))
	}
	if c.MaxResponseBytes < 0 {
		errs = append(errs, config.FieldErrorf("max_response_bytes", "must not be negative"))
	}
	if c.MaxResponseBytes > maxMaxResponseBytes {
		errs = append(errs, config.FieldErrorf("max_response_bytes", "must be at most %d (%d MiB)", maxMaxResponseBytes, maxMaxResponseBytes>>20))
	}
	if c.SPMetadataValidFor < 0 || (c.SPMetadataValidFor > 0 && c.SPMetadataValidFor < 24*time.Hour) {
		errs = append(errs, config.FieldErrorf("sp_metadata_valid_for", "must be at least 24h, or unset for metadata without validUntil"))
	}
	return errs
}

func fullNameIDFormat(s string) (string, error) {
	if s == "" {
		return "", nil
	}
	if full, ok := nameIDFormats[s]; ok {
		return full, nil
	}
	if strings.HasPrefix(s, "urn:") {
		return s, nil
	}
	return "", fmt.Errorf("%q is neither persistent, transient, emailAddress, unspecified nor a URN", s)
}

// isLocalPath reports whether p is a path on this site: it starts with one
// slash, not two (//evil.example is another host) and not /\ (which
// browsers read the same way), and has no scheme or host.
func isLocalPath(p string) bool {
	if !strings.HasPrefix(p, "/") || strings.HasPrefix(p, "//") || strings.HasPrefix(p, "/\\") {
		return false
	}
	u, err := url.Parse(p)
	return err == nil && u.Scheme == "" && u.Host == "" && u.User == nil
}

// Options are the parts of a Provider tests and replicated deployments
// replace. Zero values pick the defaults.
type Options struct {
	// Replay remembers accepted assertion IDs. Default: an in-process
	// cache, which is enough for a single replica; several replicas must
	// share one through the store.
	Replay ReplayCache
	// Now is the clock for every time check. Default time.Now.
	Now func() time.Time
	// NewID makes AuthnRequest IDs. Default: "id-" and 20 random bytes in
	// hex. IDs must be unguessable in production.
	NewID func() string
}

// Open builds the provider with default Options.
func (c *Config) Open(ctx context.Context, id string, deps providers.Deps) (providers.Provider, error) {
	return c.OpenWith(ctx, id, deps, Options{})
}

// OpenWith builds the provider: it reads the SP key pair, loads the IdP
// metadata and, for metadata_url, starts the refresh; Close stops it.
// Metadata from a file or inline must load. Metadata from a URL that
// does not answer is taken from the cache (deps.Cache) when a usable copy
// is there; without one the provider opens unavailable (Begin fails with
// a *providers.UnavailableError) until the refresh loads it.
func (c *Config) OpenWith(ctx context.Context, id string, deps providers.Deps, opts Options) (*Provider, error) {
	if errs := c.Validate(); len(errs) > 0 {
		return nil, fmt.Errorf("saml %s: invalid config: %w", id, errors.Join(errs...))
	}
	if deps.PublicURL == nil || deps.PublicURL.Host == "" {
		return nil, fmt.Errorf("saml %s: public URL is required", id)
	}
	cfg := *c
	if cfg.MetadataRefresh == 0 {
		cfg.MetadataRefresh = defaultMetadataRefresh
	}
	if cfg.Binding == "" {
		cfg.Binding = "redirect"
	}
	if cfg.IdPInitiatedPath == "" {
		cfg.IdPInitiatedPath = defaultIdPInitiatedPath
	}
	if cfg.Subject == "" {
		cfg.Subject = "nameid"
	}
	if cfg.ClockSkew == 0 {
		cfg.ClockSkew = defaultClockSkew
	}
	if cfg.MaxResponseBytes == 0 {
		cfg.MaxResponseBytes = defaultMaxResponseBytes
	}
	format, _ := fullNameIDFormat(cfg.NameIDFormat) // checked by Validate

	p := &Provider{
		id:           id,
		cfg:          cfg,
		nameIDFormat: format,
		log:          deps.Log,
		client:       deps.Client,
		replay:       opts.Replay,
		now:          opts.Now,
		newID:        opts.NewID,
		name:         deps.Name,
		cache:        deps.Cache,
		clock:        deps.Clock,
	}
	if p.name == "" {
		p.name = id
	}
	if p.clock == nil {
		p.clock = clockwork.NewRealClock()
	}
	if p.log == nil {
		p.log = slog.New(slog.DiscardHandler)
	}
	p.log = p.log.With("idp", id)
	if p.client == nil {
		p.client = &http.Client{Timeout: 30 * time.Second}
	}
	if p.replay == nil {
		p.replay = NewMemoryReplayCache()
	}
	if p.now == nil {
		p.now = time.Now
	}
	if p.newID == nil {
		p.newID = randomID
	}

	base := strings.TrimSuffix(deps.PublicURL.String(), "/") + "/usher/saml/" + url.PathEscape(id)
	for _, x := range []struct {
		dst  *url.URL
		path string
	}{{&p.acsURL, "/acs"}, {&p.metadataURL, "/metadata"}, {&p.sloURL, "/slo"}} {
		u, err := url.Parse(base + x.path)
		if err != nil {
			return nil, fmt.Errorf("saml %s: endpoint URL: %w", id, err)
		}
		*x.dst = *u
	}
	p.entityID = cfg.EntityID
	if p.entityID == "" {
		p.entityID = p.metadataURL.String()
	}

	var err error
	if p.key, p.cert, err = loadKeyPair(cfg.SPKey, cfg.SPCert); err != nil {
		return nil, fmt.Errorf("saml %s: %w", id, err)
	}

	if cfg.MetadataURL != "" {
		// The IdP's metadata endpoint may not answer: the provider then
		// opens with the stored copy, or unavailable, and the refresh
		// loop keeps trying.
		p.openURLMetadata(ctx)
		p.startRefresh()
		return p, nil
	}
	md, err := p.loadMetadata(ctx)
	if err != nil {
		return nil, fmt.Errorf("saml %s: %w", id, err)
	}
	if !md.validUntil.IsZero() && p.now().After(md.validUntil) {
		// The admin put this copy in the config: it stays in use, but
		// the IdP has said it should not be, so say so.
		p.log.Warn("saml: the configured IdP metadata is past its validUntil; using it because it is configured, not fetched",
			"valid_until", md.validUntil.UTC().Format(time.RFC3339))
	}
	if err := p.install(md); err != nil {
		return nil, fmt.Errorf("saml %s: %w", id, err)
	}
	return p, nil
}

// Provider is one SAML IdP. It is safe for concurrent use.
type Provider struct {
	id           string
	cfg          Config // with defaults applied
	nameIDFormat string // full URN or ""
	log          *slog.Logger
	client       *http.Client
	replay       ReplayCache
	now          func() time.Time
	newID        func() string

	key      *rsa.PrivateKey
	cert     *x509.Certificate
	entityID string
	acsURL   url.URL
	sloURL   url.URL
	// metadataURL is where usher serves SP metadata.
	metadataURL url.URL

	name  string // display name, for people
	cache providers.Cache
	clock clockwork.Clock

	// md is nil until IdP metadata is loaded, and replaced as a whole
	// when it is refreshed; a login in flight keeps the copy it loaded.
	md              atomic.Pointer[loaded]
	refreshFailures atomic.Uint64
	// failing is the state of the current run of failed fetches of
	// metadata_url, nil once one succeeds.
	failing atomic.Pointer[failure]

	stopOnce    sync.Once
	stopRefresh context.CancelFunc
	refreshDone chan struct{}
}

var (
	_ providers.Provider             = (*Provider)(nil)
	_ providers.Logouter             = (*Provider)(nil)
	_ providers.LogoutResponder      = (*Provider)(nil)
	_ providers.LogoutRequestHandler = (*Provider)(nil)
	_ providers.Metadataer           = (*Provider)(nil)
	_ providers.BodyLimiter          = (*Provider)(nil)
	_ providers.Checker              = (*Provider)(nil)
)

// ID is the configured IdP id.
func (p *Provider) ID() string { return p.id }

// Type is "saml".
func (p *Provider) Type() string { return "saml" }

// EntityID is usher's SP entity ID at this IdP.
func (p *Provider) EntityID() string { return p.entityID }

// ACSURL is where the IdP posts responses.
func (p *Provider) ACSURL() string { return p.acsURL.String() }

// newSP builds the crewjam ServiceProvider for md. Everything but the IdP
// metadata is fixed at Open.
func (p *Provider) newSP(md *saml.EntityDescriptor) *saml.ServiceProvider {
	sp := &saml.ServiceProvider{
		EntityID:    p.entityID,
		Key:         p.key,
		Certificate: p.cert,
		MetadataURL: p.metadataURL,
		AcsURL:      p.acsURL,
		SloURL:      p.sloURL,
		IDPMetadata: md,
		// Logout messages must be signed (saml-profiles §4.4.3), whether
		// or not AuthnRequests are.
		LogoutSignatureMethod: dsig.RSASHA256SignatureMethod,
		// The IdP may send logout requests and responses by either
		// binding; HandleLogoutRequest and HandleLogoutResponse take both.
		LogoutBindings:                   []string{saml.HTTPRedirectBinding, saml.HTTPPostBinding},
		AssertionConsumerServiceBindings: []string{saml.HTTPPostBinding},
		AuthnNameIDFormat:                saml.NameIDFormat(p.nameIDFormat),
		Clock:                            dsig.NewFakeClock(nowClock{Clock: clockwork.NewRealClock(), now: p.now}),
		HTTPClient:                       p.client,
		// validUntil only when configured: IdPs that honour it (Shibboleth,
		// SimpleSAMLphp) stop trusting an imported copy once it passes,
		// and crewjam's default would be two days after each fetch.
		MetadataValidDuration:  p.cfg.SPMetadataValidFor,
		MetadataOmitValidUntil: p.cfg.SPMetadataValidFor == 0,
	}
	if p.nameIDFormat == "" {
		// No preference: say "unspecified" rather than crewjam's default
		// "transient", which would give a new subject at every login.
		sp.AuthnNameIDFormat = saml.UnspecifiedNameIDFormat
	}
	if p.cfg.SignRequests {
		sp.SignatureMethod = dsig.RSASHA256SignatureMethod
	}
	return sp
}

// nowClock makes crewjam and goxmldsig read time from the injected Now.
type nowClock struct {
	clockwork.Clock
	now func() time.Time
}

func (c nowClock) Now() time.Time { return c.now() }

func randomID() string {
	var b [20]byte
	_, _ = rand.Read(b[:]) // never fails since Go 1.24
	return "id-" + hex.EncodeToString(b[:])
}

// isLoopback reports a loopback host name or address.
func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
