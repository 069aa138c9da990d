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
}

// SharedSecret is a header name and its secret value.
type SharedSecret struct {
	Header string `yaml:"header"` // default X-Usher-Secret
	Value  Secret `yaml:"value"`
}

// App is one upstream application behind usher.
type App struct {
	Name string `yaml:"name"`
	// Kind is jira, confluence, bitbucket, crowd or generic.
	Kind     string `yaml:"kind"`
	Upstream string `yaml:"upstream"`
	Route    Route  `yaml:"route"`
	// PassThrough is traffic the app authenticates itself.
	PassThrough PassThrough `yaml:"pass_through"`
	// API is how usher reaches the app's REST API to provision users
	// (credentials, concurrency); decoded strictly into the app kind's own
	// struct. Without it usher only proxies to the app.
	API Raw `yaml:"api"`
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
	// SCIM, when set, lets this IdP push users to /scim/v2 with its own
	// bearer token.
	SCIM   *SCIM `yaml:"scim"`
	Config Raw   `yaml:"config"`
}

// SCIM is an IdP's SCIM push endpoint settings.
type SCIM struct {
	// Token is the bearer token the IdP sends; each IdP has its own and
	// sees only its own users.
	Token Secret `yaml:"token"`
	// Subject names the SCIM attribute that equals the login subject
	// (OIDC sub, SAML subject): externalId (default), userName, id, or
	// urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber.
	Subject string `yaml:"subject"`
	// Automatic applies SCIM creates and updates to the apps at once, so
	// people exist before their first login. Deactivations always apply.
	Automatic bool `yaml:"automatic"`
}
