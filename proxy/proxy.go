// Package proxy is usher's public HTTP face: it routes requests to the
// apps by host and path, checks the session cookie, runs the login
// endpoints (IdP chooser, callbacks, logout) and forwards authenticated
// requests with trusted identity headers. It owns the upstream side too:
// the connection pool requests without a body travel on (upstream.go),
// the direct path that forwards plain GET and HEAD without
// httputil.ReverseProxy (direct.go), and the limits on what one client
// may hold: slow bodies, connections, requests in progress (limits.go).
//
// The hot path, a request with a valid session, does no I/O besides the
// upstream round trip and reads only memory: the session comes from the
// Codec's cache of opened cookies, revocations from memory.
package proxy

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/usherhq/usher/config"
	"github.com/usherhq/usher/jit"
	"github.com/usherhq/usher/metrics"
	"github.com/usherhq/usher/providers"
	"github.com/usherhq/usher/session"
)

// App is one routed upstream, or (Direct) an app people reach without
// usher, which signs them in through usher's OpenID Provider: never routed
// to, but counted when a session's app list is made.
type App struct {
	Name        string
	Route       config.Route
	PassThrough config.PassThrough
	Forwarder   *Forwarder
	Direct      bool
}

// IdP is one configured identity provider with its display settings and
// the mapping from its claims to the app profile.
type IdP struct {
	Provider providers.Provider
	Name     string
	Domains  []string
	Mapper   *jit.Mapper
}

// errIdPGone: the session's IdP is no longer configured.
var errIdPGone = errors.New("session: its identity provider is no longer configured")

// idpAt is the IdP a /usher/{type}/{idp}/ request names, or nil when
// there is none of that id and type.
func (h *Handler) idpAt(r *http.Request) *IdP {
	idp := h.idps[r.PathValue("idp")]
	if idp == nil || idp.Provider.Type() != r.PathValue("type") {
		return nil
	}
	return idp
}

// provider is the IdP's provider, or nil for a nil IdP.
func (i *IdP) provider() providers.Provider {
	if i == nil {
		return nil
	}
	return i.Provider
}

// Lifecycle admits a person who signed in (jit.Lifecycle): mapping,
// policy, binding, provisioning and audit all happen there.
type Lifecycle interface {
	Admit(ctx context.Context, id providers.Identity, cause jit.Cause) (*jit.Admission, error)
}

// Audit is the one audit writer (jit.AuditLog).
type Audit interface {
	Record(ctx context.Context, entries ...jit.Entry) error
}

// Options configure a Handler.
type Options struct {
	PublicURL *url.URL
	Apps      []App
	IdPs      []IdP
	Codec     *session.Codec
	// Sessions ends a session everywhere at logout, and every session of
	// a person when their IdP asks (SAML single logout): session.Shared.
	Sessions interface {
		RevokeSession(ctx context.Context, s *session.Session) error
		RevokeIdentity(ctx context.Context, idp, subject string) error
	}
	// Lifecycle admits people at login; Audit records refusals and
	// logouts that happen before or after an admission.
	Lifecycle   Lifecycle
	Audit       Audit
	FlowTimeout time.Duration
	// SCIM serves /scim/v2 when IdPs push users; nil when none does.
	SCIM http.Handler
	// Metrics counts requests and logins; nil counts nothing.
	Metrics *metrics.Metrics
	// SessionAttributes are the custom attributes the session keeps, to
	// be sent as headers (the keys of headers.attributes).
	SessionAttributes []string
	Log               *slog.Logger
	Now               func() time.Time
}

// Handler serves everything on usher's public listener.
type Handler struct {
	opt     Options
	log     *slog.Logger
	now     func() time.Time
	apps    []App // most specific route first
	idps    map[string]*IdP
	order   []*IdP // chooser order, as configured
	domains map[string]*IdP
	hosts   map[string]bool // hosts a return URL may name
	scheme  string
	mux     *http.ServeMux // /usher/ endpoints
	reqIDs  requestIDs
}

// New builds the public handler.
func New(opt Options) *Handler {
	h := &Handler{
		opt:     opt,
		log:     opt.Log,
		now:     opt.Now,
		idps:    map[string]*IdP{},
		domains: map[string]*IdP{},
		hosts:   map[string]bool{},
		scheme:  opt.PublicURL.Scheme,
		reqIDs:  newRequestIDs(),
	}
	if h.log == nil {
		h.log = slog.Default()
	}
	if h.now == nil {
		h.now = time.Now
	}
	if h.opt.FlowTimeout <= 0 {
		h.opt.FlowTimeout = 10 * time.Minute
	}
	for i := range opt.IdPs {
		idp := &opt.IdPs[i]
		h.idps[idp.Provider.ID()] = idp
		h.order = append(h.order, idp)
		for _, d := range idp.Domains {
			h.domains[strings.ToLower(d)] = idp
		}
	}
	h.hosts[strings.ToLower(opt.PublicURL.Host)] = true
	h.apps = append([]App(nil), opt.Apps...)
	for _, a := range h.apps {
		if a.Route.Host != "" {
			h.hosts[strings.ToLower(a.Route.Host)] = true
		}
	}
	sort.SliceStable(h.apps, func(i, j int) bool { return moreSpecific(h.apps[i].Route, h.apps[j].Route) })
	h.mux = h.routes()
	return h
}

// moreSpecific orders routes: a host beats no host, then a longer path
// prefix beats a shorter one.
func moreSpecific(a, b config.Route) bool {
	if (a.Host != "") != (b.Host != "") {
		return a.Host != ""
	}
	return len(a.PathPrefix) > len(b.PathPrefix)
}

func (h *Handler) routes() *http.ServeMux {
	m := http.NewServeMux()
	m.HandleFunc("GET /usher/login", h.login)
	m.HandleFunc("POST /usher/login", h.discover)
	// Every provider type gets the same endpoints under /usher/{type}/{idp}/;
	// what a provider cannot do (metadata, single logout) answers 404.
	m.HandleFunc("GET /usher/{type}/{idp}/callback", h.callback)
	m.HandleFunc("POST /usher/{type}/{idp}/callback", h.callback)
	m.HandleFunc("POST /usher/{type}/{idp}/acs", h.callback)
	m.HandleFunc("GET /usher/{type}/{idp}/metadata", h.metadata)
	m.HandleFunc("/usher/{type}/{idp}/slo", h.slo)
	m.HandleFunc("GET /usher/logout", h.logoutPage)
	m.HandleFunc("POST /usher/logout", h.logout)
	m.HandleFunc("GET /usher/logged-out", h.loggedOut)
	m.HandleFunc("/usher/", func(w http.ResponseWriter, r *http.Request) {
		h.fail(w, r, http.StatusNotFound, "Not found", "There is no such usher page.", nil)
	})
	return m
}

// ServeHTTP routes a request: usher's own pages, pass-through traffic,
// authenticated traffic, or a login redirect.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	closeAfterChunked(w, r)
	if strings.HasPrefix(r.URL.Path, "/usher/") {
		id := h.reqIDs.next()
		w.Header().Set("X-Request-Id", id)
		h.mux.ServeHTTP(w, withRequestID(r, id))
		return
	}
	if h.opt.SCIM != nil && (r.URL.Path == "/scim/v2" || strings.HasPrefix(r.URL.Path, "/scim/v2/")) {
		h.opt.SCIM.ServeHTTP(w, r)
		return
	}
	if hasDotSegment(r.URL.Path) {
		// "/status/../secure/admin" would match a pass-through prefix here
		// and mean something else to the app once it normalises the path.
		h.fail(w, r, http.StatusBadRequest, "Invalid address", "The address holds \".\" or \"..\" path segments.", nil)
		return
	}
	app := h.match(r)
	if app == nil {
		h.fail(w, r, http.StatusNotFound, "Not found", "No application is configured for this address.", nil)
		return
	}
	if passThrough(app.PassThrough, r) {
		app.Forwarder.Forward(w, r, nil)
		return
	}
	// Shared: read-only here, and no allocation for a cookie seen before.
	s, refresh, err := h.opt.Codec.LoadShared(r) // also consults revocations
	if err != nil {
		h.unauthenticated(w, r, app, err)
		return
	}
	// The config in force decides, not the one the session was issued
	// under: a reload that removed the IdP, or closed this app to it,
	// shuts its sessions out at once, without a database call.
	idp := h.idps[s.IdP]
	if idp == nil {
		h.unauthenticated(w, r, app, errIdPGone)
		return
	}
	if s.Apps != nil && !slices.Contains(s.Apps, app.Name) || idp.Mapper != nil && !idp.Mapper.Allows(app.Name) {
		h.opt.Metrics.Request(app.Name, http.StatusForbidden)
		h.fail(w, r, http.StatusForbidden, "No access to "+app.Name, "Your account is not allowed to use "+app.Name+". Ask your administrator if you need it.", nil)
		return
	}
	if refresh {
		if err := h.opt.Codec.Save(w, s); err != nil {
			h.log.Warn("refresh session cookie", "err", err)
		}
	}
	app.Forwarder.Forward(w, r, s)
}

// match finds the app for a request. Host comparison ignores the port
// only when the route names none.
func (h *Handler) match(r *http.Request) *App {
	host := strings.ToLower(r.Host)
	bare := host
	if i := strings.LastIndexByte(bare, ':'); i >= 0 && !strings.Contains(bare[i:], "]") {
		bare = bare[:i]
	}
	for i := range h.apps {
		a := &h.apps[i]
		if a.Direct {
			continue
		}
		if rh := a.Route.Host; rh != "" && !strings.EqualFold(rh, host) && !strings.EqualFold(rh, bare) {
			continue
		}
		if pathHasPrefix(r.URL.Path, a.Route.PathPrefix) {
			return a
		}
	}
	return nil
}

// hasDotSegment reports a "." or ".." segment in a decoded path, also
// when followed by a path parameter ("..;x"), which Tomcat strips before
// normalising.
func hasDotSegment(p string) bool {
	for p != "" {
		seg := p
		if i := strings.IndexByte(p, '/'); i >= 0 {
			seg, p = p[:i], p[i+1:]
		} else {
			p = ""
		}
		if i := strings.IndexByte(seg, ';'); i >= 0 {
			seg = seg[:i]
		}
		if seg == "." || seg == ".." {
			return true
		}
	}
	return false
}

// pathHasPrefix matches whole path segments: "/jira" matches "/jira" and
// "/jira/x" but not "/jiraffe".
func pathHasPrefix(path, prefix string) bool {
	if prefix == "" || prefix == "/" {
		return true
	}
	prefix = strings.TrimSuffix(prefix, "/")
	return path == prefix || strings.HasPrefix(path, prefix+"/")
}

func passThrough(p config.PassThrough, r *http.Request) bool {
	if p.Authorization {
		a := r.Header.Get("Authorization")
		if len(a) > 6 && (strings.EqualFold(a[:6], "basic ") || (len(a) > 7 && strings.EqualFold(a[:7], "bearer "))) {
			return true
		}
	}
	for _, prefix := range p.Paths {
		if pathHasPrefix(r.URL.Path, prefix) {
			return true
		}
	}
	return false
}

// unauthenticated answers a request without a usable session: browsers
// navigating go to the login page with their destination kept; API and
// XHR callers get 401, since a redirect to an HTML login page would only
// confuse them.
func (h *Handler) unauthenticated(w http.ResponseWriter, r *http.Request, app *App, err error) {
	if isNavigation(r) {
		h.opt.Metrics.Request(app.Name, http.StatusFound)
		rd := r.URL.RequestURI()
		if h.needsAbsoluteReturn(r) {
			rd = h.scheme + "://" + strings.ToLower(r.Host) + rd
		}
		target := h.opt.PublicURL.JoinPath("/usher/login")
		target.RawQuery = url.Values{"rd": {rd}}.Encode()
		http.Redirect(w, r, target.String(), http.StatusFound)
		return
	}
	h.opt.Metrics.Request(app.Name, http.StatusUnauthorized)
	w.Header().Set("WWW-Authenticate", `Usher realm="usher"`)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusUnauthorized)
	_, _ = w.Write([]byte(`{"error":"login required","login":"` + h.opt.PublicURL.JoinPath("/usher/login").String() + `"}` + "\n"))
}

// needsAbsoluteReturn reports whether the request came to a configured app
// host other than the public one, so the return URL must name it.
func (h *Handler) needsAbsoluteReturn(r *http.Request) bool {
	host := strings.ToLower(r.Host)
	return host != strings.ToLower(h.opt.PublicURL.Host) && h.hosts[host]
}

func isNavigation(r *http.Request) bool {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		return false
	}
	if strings.EqualFold(r.Header.Get("X-Requested-With"), "XMLHttpRequest") {
		return false
	}
	if m := r.Header.Get("Sec-Fetch-Mode"); m != "" {
		return m == "navigate"
	}
	return strings.Contains(r.Header.Get("Accept"), "text/html")
}
