// Package config holds usher's configuration: the YAML schema, defaults,
// secret references and validation. It holds data, not behaviour: other
// packages read these structs, and provider-specific blocks stay raw (Raw)
// until cmd/usher decodes them into the provider type's own Config.
package config

import "time"

// Config is one usher configuration file.
type Config struct {
	Server  Server  `yaml:"server"`
	Admin   Admin   `yaml:"admin"`
	Log     Log     `yaml:"log"`
	Session Session `yaml:"session"`
	Store   Store   `yaml:"store"`
	Headers Headers `yaml:"headers"`
	Apps    []App   `yaml:"apps"`
	IdPs    []IdP   `yaml:"idps"`
	// Provisioning holds the settings just-in-time provisioning shares
	// across IdPs.
	Provisioning Provisioning `yaml:"provisioning"`
	// Sweeps are deprovisioning policies; each entry is decoded strictly
	// into the sweep package's Policy by cmd/usher.
	Sweeps []Raw `yaml:"sweeps"`
	// Directories are the IdPs' own directories (Microsoft Graph, Okta,
	// LDAP, a SCIM listing, ...) that usher reads on a schedule: to create
	// and update people before their first login, and as a sweep source.
	Directories []Directory `yaml:"directories"`

	// src is the parsed file, kept so that Validate and PathOf can give
	// line numbers; nil for a Config built in code.
	src *source
}

// Server is the public listener.
type Server struct {
	// Listen is the public address, default ":8080".
	Listen string `yaml:"listen"`
	// PublicURL is usher's external base URL (scheme and host, no path),
	// e.g. https://sso.example.com. Callback URLs registered at IdPs are
	// derived from it, never from a request's Host header.
	PublicURL string `yaml:"public_url"`
	// DataDir holds the SQLite file and generated state, default "./data".
	DataDir string `yaml:"data_dir"`
	// TLS is how the public listener gets TLS (mode off, files or acme);
	// decoded strictly into tlsserve.Config by cmd/usher.
	TLS Raw `yaml:"tls"`
	// HTTPListen, with TLS on, is a plain-HTTP listener (":80") that
	// answers ACME HTTP-01 challenges and redirects to HTTPS.
	HTTPListen string `yaml:"http_listen"`
	// BodyReadTimeout is the longest wait for the next bytes of a request
	// body, and the grace before BodyMinRate counts (default 60s).
	BodyReadTimeout time.Duration `yaml:"body_read_timeout"`
	// BodyMinRate is the slowest average, in bytes per second, at which a
	// request body may arrive (default 1024).
	BodyMinRate int64 `yaml:"body_min_rate"`
	// MaxConnsPerClient caps the open connections of one client address
	// (an IPv6 /64), and its requests in progress behind trusted proxies
	// (default 256).
	MaxConnsPerClient int `yaml:"max_conns_per_client"`
}

// Admin is the admin listener: pages, JSON API, metrics, health.
type Admin struct {
	// Listen defaults to 127.0.0.1:9090; "off" disables the listener.
	Listen string `yaml:"listen"`
	// Token admits scripts, Prometheus (bearer) and browsers (login form).
	Token Secret `yaml:"token"`
	// SSOGroup admits people whose usher session carries this group from
	// the IdP SSOIdP (both or neither).
	SSOGroup string `yaml:"sso_group"`
	SSOIdP   string `yaml:"sso_idp"`
}

// Log configures usher's own logs.
type Log struct {
	// Format is json, text or auto (default: text on a terminal, JSON
	// otherwise).
	Format string `yaml:"format"`
	// Level is debug, info (default), warn or error.
	Level string `yaml:"level"`
	// Drop names personal fields left out of every log line, e.g.
	// [email, username, subject].
	Drop []string `yaml:"drop"`
}

// Session is the browser session cookie.
type Session struct {
	// Keys encrypt session and flow cookies. The first key encrypts; all
	// keys decrypt, so a new key can be rolled in ahead of the old one.
	Keys []Secret `yaml:"keys"`
	// CookieName defaults to "usher_session"; under HTTPS without a
	// CookieDomain it gets the "__Host-" prefix.
	CookieName string `yaml:"cookie_name"`
	// CookieDomain shares the session across app hosts (jira.example.com,
	// wiki.example.com → "example.com"). Empty means host-only.
	CookieDomain    string        `yaml:"cookie_domain"`
	IdleTimeout     time.Duration `yaml:"idle_timeout"`     // default 8h
	AbsoluteTimeout time.Duration `yaml:"absolute_timeout"` // default 24h
	// FlowTimeout bounds a login round trip through the IdP, default 10m.
	FlowTimeout time.Duration `yaml:"flow_timeout"`
}

// Store selects persistence.
type Store struct {
	// Driver is "sqlite" (default) or "postgres".
	Driver string `yaml:"driver"`
	// Path is the SQLite file, default DataDir/usher.db.
	Path string `yaml:"path"`
	// DSN is the PostgreSQL connection string.
	DSN Secret `yaml:"dsn"`
	// Migrate is "auto" (default: usher applies schema migrations at
	// start) or "manual" (usher refuses to start on an old schema; run
	// `usher migrate` first, e.g. once per upgrade before rolling the
	// replicas).
	Migrate string `yaml:"migrate"`
	// MaxConns caps PostgreSQL connections per replica (default 10).
	MaxConns int `yaml:"max_conns"`
	// StatementTimeout bounds every PostgreSQL statement (default 5s).
	StatementTimeout time.Duration `yaml:"statement_timeout"`
	// Timeout bounds every store call on usher's side, SQLite or
	// PostgreSQL (default 5s): a database that accepts connections but
	// never answers fails the call instead of holding a login or a push.
	Timeout time.Duration `yaml:"timeout"`
}

// Headers are the trusted identity headers usher sets on proxied requests.
// Every client-sent copy of these (in any case or spelling) is removed.
type Headers struct {
	Username    string `yaml:"username"`     // default X-Remote-User
	Email       string `yaml:"email"`        // default X-Remote-Email
	DisplayName string `yaml:"display_name"` // default X-Remote-Name
	Groups      string `yaml:"groups"`       // default X-Remote-Groups
	// Strip names further headers to remove from every client request.
	Strip []string `yaml:"strip"`
	// Attributes sends mapped custom attributes to every app as headers,
	// attribute name → header name ({department: X-Remote-Department}):
	// for apps with no place to store them. Client copies are stripped.
	Attributes map[string]string `yaml:"attributes"`
	// SharedSecret, when set, is sent to upstreams so they can tell a
	// request came through usher.
	SharedSecret *SharedSecret `yaml:"shared_secret"`
	// Encoding is how values beyond printable ASCII are written: latin1
	// (default), utf8, percent or rfc2047 (see docs/config.md).
	Encoding string `yaml:"encoding"`
}

// SharedSecret is a header name and its secret value.
type SharedSecret struct {
	Header string `yaml:"header"` // default X-Usher-Secret
	Value  Secret `yaml:"value"`
}

// App is one application usher signs people into: proxied (upstream and
// route), reached directly (url, no upstream), or both.
type App struct {
	Name string `yaml:"name"`
	// Kind is jira, confluence, bitbucket, crowd, cloud (an Atlassian
	// Cloud site: provisioned, never proxied, so no upstream or route) or
	// generic.
	Kind string `yaml:"kind"`
	// Upstream is where usher forwards the app's traffic; without it usher
	// is not in the data path (provider only, or provisioning only).
	Upstream string `yaml:"upstream"`
	Route    Route  `yaml:"route"`
	// URL is the app's base URL as browsers reach it (the app's own "Base
	// URL" setting, with any context path). Required with SSO; the REST
	// base URL for provisioning when there is no upstream.
	URL string `yaml:"url"`
	// SSO registers the app's built-in SSO (an OpenID Connect client) with
	// usher's OpenID Provider at <public_url>/usher/op.
	SSO *AppSSO `yaml:"sso"`
	// PassThrough is traffic the app authenticates itself.
	PassThrough PassThrough `yaml:"pass_through"`
	// API is how usher reaches the app's REST API to provision users
	// (credentials, concurrency); decoded strictly into the app kind's own
	// struct. Without it usher only proxies to the app.
	API Raw `yaml:"api"`
}

// AppSSO is an app's client registration at usher's OpenID Provider.
type AppSSO struct {
	// ClientID is what the app sends as client_id (Atlassian: "Client ID").
	ClientID string `yaml:"client_id"`
	// ClientSecret authenticates the app at the token endpoint
	// (client_secret_basic or client_secret_post). Not with Public.
	ClientSecret Secret `yaml:"client_secret"`
	// RedirectURIs are matched exactly. Default for jira, confluence and
	// bitbucket: <url>/plugins/servlet/oidc/callback.
	RedirectURIs []string `yaml:"redirect_uris"`
	// Public marks a client without a secret: PKCE is then required.
	Public bool `yaml:"public"`
	// Groups adds a "groups" claim (the person's IdP groups as usher keeps
	// them in the session) when the app asks for the groups scope.
	Groups bool `yaml:"groups"`
	// SigningAlg signs this app's ID tokens: RS256 (default) or ES256.
	SigningAlg string `yaml:"signing_alg"`
}

// AtlassianCallbackPath is where the Atlassian apps' built-in OIDC client
// receives the authorization response, below the app's base URL.
const AtlassianCallbackPath = "/plugins/servlet/oidc/callback"

// Mode says how an app learns who the person is.
func (a App) Mode() string {
	switch {
	case a.Upstream == "" && a.SSO != nil:
		return "provider only"
	case a.Upstream == "":
		return "provisioning only"
	case a.SSO != nil:
		return "proxy + provider"
	}
	return "proxy + header"
}

// Route matches requests to an app by host, path prefix or both. The most
// specific route wins (host+longest prefix, then host, then prefix).
type Route struct {
	Host       string `yaml:"host"`
	PathPrefix string `yaml:"path_prefix"`
}

// PassThrough lists requests proxied without a usher session; identity
// headers are still stripped from them.
type PassThrough struct {
	// Authorization passes requests carrying "Authorization: Basic" or
	// "Bearer" (REST clients, git over HTTP).
	Authorization bool `yaml:"authorization"`
	// Paths are path prefixes such as /status or /s/ (static resources).
	Paths []string `yaml:"paths"`
}

// IdP is one identity provider. Type-specific settings stay in Config and
// are decoded strictly into that type's own struct by cmd/usher.
type IdP struct {
	ID   string `yaml:"id"`
	Name string `yaml:"name"` // shown on the chooser page; default ID
	Type string `yaml:"type"` // oidc or saml
	// Domains route users to this IdP by the domain of the e-mail address
	// they type on the chooser page (home-realm discovery).
	Domains []string `yaml:"domains"`
	// Mapping turns the IdP's claims into the app profile: username,
	// e-mail, display name, attributes, groups, access policy.
	Mapping Mapping `yaml:"mapping"`
	// Adoption decides whether this IdP's people may take over an app
	// account that exists but that no usher identity owns yet (how an
	// existing Jira moves to usher): "never", "verified_email" (default:
	// the app account's e-mail equals the IdP's verified e-mail) or
	// "always". An admin can link an identity to an account by hand.
	Adoption string `yaml:"adoption"`
	// SCIM, when set, lets this IdP push users to /scim/v2 with its own
	// bearer token.
	SCIM   *SCIM `yaml:"scim"`
	Config Raw   `yaml:"config"`
}

// Directory is one `directories:` entry: an IdP's own directory, read on
// a schedule. The type-specific block stays raw in Config; cmd/usher
// decodes it strictly into the connector type's own struct.
type Directory struct {
	// Name identifies the directory in logs, metrics, audit events and
	// sweep sources (sources.directory).
	Name string `yaml:"name"`
	// Type is the connector: graph, okta, google, onelogin, ldap, scim.
	Type string `yaml:"type"`
	// IdP is the id of the IdP whose logins these people are: the
	// directory's subject attribute equals that IdP's login subject, and
	// that IdP's mapping turns each person into a profile.
	IdP string `yaml:"idp"`
	// Schedule (five-field cron, local time) or Every (an interval, at
	// least 1m) runs a sync: a delta when the connector has deltas and a
	// full pull is not due, else a full pull. Neither: only by hand
	// (usher sync, the admin page).
	Schedule string        `yaml:"schedule"`
	Every    time.Duration `yaml:"every"`
	// FullEvery is how often a scheduled sync is a full pull instead of a
	// delta (default 24h).
	FullEvery time.Duration `yaml:"full_every"`
	// Automatic creates people in the apps before their first login.
	// Without it a sync only updates people usher already knows (who
	// signed in, or were pushed over SCIM).
	Automatic bool `yaml:"automatic"`
	// GroupValues is what the people's groups look like to the IdP's
	// mapping: "names" (display names) or "ids" (object IDs, what
	// Entra ID sends by default). Default: ids for graph, names
	// otherwise.
	GroupValues string `yaml:"group_values"`
	// Claims offer directory fields under further claim names, for
	// mappings that read claims by their SAML attribute names: claim name
	// → subject, id, username, email, display_name, given_name,
	// family_name, groups, group_ids, or the name of a directory
	// attribute the connector reads.
	Claims map[string]string `yaml:"claims"`
	// Concurrency is how many people a sync admits at once (default 4).
	Concurrency int `yaml:"concurrency"`
	// Config is the connector type's own block.
	Config Raw `yaml:"config"`
}

// SCIM is an IdP's SCIM push endpoint settings.
type SCIM struct {
	// Token is the bearer token the IdP sends; each IdP has its own and
	// sees only its own users.
	Token Secret `yaml:"token"`
	// Subject names the SCIM attribute that equals the login subject
	// (OIDC sub or subject_claim, SAML subject): externalId (default),
	// userName, id, an enterprise extension string attribute
	// (urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber)
	// or a custom extension attribute (urn:<schema>:<attribute>, e.g.
	// Entra's objectId mapped to
	// urn:ietf:params:scim:schemas:extension:usher:2.0:User:objectId).
	Subject string `yaml:"subject"`
	// Automatic applies SCIM creates and updates to the apps at once, so
	// people exist before their first login. Deactivations always apply.
	Automatic bool `yaml:"automatic"`
	// Brake, when set, holds this IdP's SCIM deactivations back for an
	// admin once it removes more of its people within a window than the
	// brake allows: a misassigned group at the IdP looks exactly like
	// half the company leaving.
	Brake *SCIMBrake `yaml:"brake"`
}

// SCIMBrake is an IdP's SCIM brake. Within any Window, the IdP's SCIM
// removals and the removals already held together may reach MaxCount and
// MaxShare of its people (its pushed SCIM users); past that, each further
// removal is held until an admin releases or drops it.
type SCIMBrake struct {
	// MaxCount is how many removals a window allows; 0: no count limit.
	MaxCount int `yaml:"max_count"`
	// MaxShare is the share of the IdP's pushed people a window allows
	// to be removed (0.1 = 10 %, rounded down); 0: no share limit. At
	// least one of MaxCount and MaxShare is set.
	MaxShare float64 `yaml:"max_share"`
	// Window is how far back the removals count (default 1h).
	Window time.Duration `yaml:"window"`
	// HeldSessions says what happens to a held person's sessions:
	// "revoke" (default: they end, as for a removal, and the person can
	// sign in again only if the IdP lets them) or "keep".
	HeldSessions string `yaml:"held_sessions"`
}

// What a SCIM brake does to a held person's sessions.
const (
	HeldSessionsRevoke = "revoke"
	HeldSessionsKeep   = "keep"
)
