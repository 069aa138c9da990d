// Package admin owns usher's admin listener: health and readiness probes,
// Prometheus metrics, and the admin pages and JSON API over the store —
// the people usher knows and why each got what (the audit timeline), the
// audit log and its export, deprovisioning sweeps with their dry-run plans,
// the retry queue, the IdP directories' syncs and the effective config —
// plus the few actions an admin may take: sync a person now, run a sweep,
// sync a directory (or preview it), reload the config.
//
// Pages are server-rendered and work without JavaScript. Every /admin
// route needs an authenticated admin; state changes only on POST, and
// browser POSTs carry a CSRF token.
package admin

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/usherhq/usher/session"
	"github.com/usherhq/usher/store"
)

// Options configure the admin handler.
type Options struct {
	Store   store.Store // required
	Actions Actions     // nil: pages render, actions fail
	// Directories are the IdP directories' syncs; nil: none configured.
	Directories DirectoryActions
	// IdPs are the configured identity providers, in config order, with
	// their adoption policy and SCIM brake. A link to an IdP not among
	// them is refused.
	IdPs []IdP
	// Holds settle the removals the IdPs' SCIM brakes held; nil: the
	// pages list them, and acting on them fails.
	Holds HoldActions
	// Token, when set, admits "Authorization: Bearer <token>" (API,
	// scripts, Prometheus) and, through the /admin/login form, a browser
	// with a short-lived admin cookie sealed by Codec.
	Token string
	// SSO, when set, admits browsers whose usher session (Codec's
	// session cookie) has SSO.Group among its groups.
	SSO *SSO
	// Codec seals the admin cookie, opens usher sessions and makes CSRF
	// tokens. Without it only the bearer token works.
	Codec *session.Codec
	// Config returns the effective config as YAML, secrets already
	// redacted.
	Config func() ([]byte, error)
	// Ready returns named readiness checks; nil checks only Store.Ping.
	Ready func(ctx context.Context) []Check
	// Metrics is served at /metrics behind admin auth; nil means 404.
	Metrics http.Handler
	// AccountID, when set, gives the app's own id of a person (an
	// Atlassian Cloud accountId) for the user view; "" when the app has
	// none or usher bound none.
	AccountID func(ctx context.Context, app, username string) string
	Log       *slog.Logger
	Now       func() time.Time
}

// SSO admits admins through usher's own login.
type SSO struct {
	// IdP is the identity provider whose Group counts: another IdP
	// sending a group of the same name must not make anyone admin.
	IdP string
	// Group a session must carry to be admin.
	Group string
	// LoginURL is where a browser without a session signs in, e.g.
	// https://sso.example.com/usher/login?rd=...
	LoginURL string
}

// Check is one named readiness check; Err nil means ready.
type Check struct {
	Name string
	Err  error
	// Critical: usher cannot do its job without it (the store, every IdP
	// at once). A failing critical check makes /readyz answer 503; any
	// other failing check reports the replica degraded with 200, since
	// every replica shares the outage and a load balancer taking them all
	// out would stop the apps and IdPs that still work.
	Critical bool
}

// Actions are the state-changing operations behind the admin pages. The
// admin package only calls them on POST. actor is "admin:token" or
// "admin:<username>" and must be written to the audit events they cause.
type Actions interface {
	// SyncUser re-applies the person's last profile to every app now and
	// returns change summaries.
	SyncUser(ctx context.Context, idp, subject, actor string) ([]string, error)
	// Reinstate withdraws every removal of the person, whoever decided it,
	// re-applies their last profile (which reactivates them) and returns
	// change summaries.
	Reinstate(ctx context.Context, idp, subject, actor string) ([]string, error)
	// PlanSweep computes a dry-run plan; it records nothing.
	PlanSweep(ctx context.Context, policy string) (*SweepPlan, error)
	// RunSweep runs a sweep (dryRun records the run but changes no app).
	RunSweep(ctx context.Context, policy string, dryRun bool, actor string) (*SweepPlan, error)
	// Policies names the configured sweep policies.
	Policies() []string
	// Reload re-reads the config.
	Reload(ctx context.Context, actor string) error
	// Link binds an identity to the existing app accounts of username,
	// whatever its IdP's adoption policy says, and audits it.
	Link(ctx context.Context, idp, subject, username, actor string) error
}

// SweepPlan is a sweep's plan and, after a run, its outcome.
type SweepPlan struct {
	Policy      string `json:"policy"`
	Blocked     bool   `json:"blocked"`
	BlockReason string `json:"block_reason,omitempty"`
	Managed     int    `json:"managed"`
	// Items are the plan's first items; a large plan lists only some, and
	// Omitted counts the others.
	Items   []SweepItem `json:"items"`
	Omitted int         `json:"omitted,omitempty"`
	// Counts are the plan's items per action, all of them; nil: count
	// Items.
	Counts  map[string]int `json:"counts,omitempty"`
	Applied int            `json:"applied"`
	Failed  int            `json:"failed"`
}

// Total counts the plan's items, listed or not.
func (p *SweepPlan) Total() int { return len(p.Items) + p.Omitted }

// SweepItem is one (identity, app) in a plan.
type SweepItem struct {
	IdP      string `json:"idp"`
	Subject  string `json:"subject"`
	Username string `json:"username"`
	App      string `json:"app"`
	Reason   string `json:"reason"`
	Action   string `json:"action"`
	Outcome  string `json:"outcome,omitempty"`
}

// noActions stands in when no Actions are wired: pages still render and
// every action says why it cannot run.
type noActions struct{}

var errNoActions = errors.New("admin: no actions configured")

func (noActions) SyncUser(context.Context, string, string, string) ([]string, error) {
	return nil, errNoActions
}
func (noActions) Reinstate(context.Context, string, string, string) ([]string, error) {
	return nil, errNoActions
}
func (noActions) PlanSweep(context.Context, string) (*SweepPlan, error) { return nil, errNoActions }
func (noActions) RunSweep(context.Context, string, bool, string) (*SweepPlan, error) {
	return nil, errNoActions
}
func (noActions) Policies() []string                   { return nil }
func (noActions) Reload(context.Context, string) error { return errNoActions }
func (noActions) Link(context.Context, string, string, string, string) error {
	return errNoActions
}

// CookieName is the admin cookie's name. The public listener should strip
// it from requests it forwards to apps, like its own session cookie.
const CookieName = "usher_admin"

const (
	// cookieTTL keeps a stolen admin cookie short-lived.
	cookieTTL = time.Hour
	// readyTimeout bounds /readyz so a hung dependency reads as not ready
	// instead of hanging the probe.
	readyTimeout = 5 * time.Second
	// scanLimit bounds every walk over all bindings or audit events.
	scanLimit = 10_000
	// maxForm bounds POST bodies; admin forms are tiny.
	maxForm = 64 << 10
)

type handler struct {
	o        Options
	log      *slog.Logger
	now      func() time.Time
	tokenSum [sha256.Size]byte
	pages    pageSet
	mux      *http.ServeMux
}

// New returns the admin listener's handler.
func New(o Options) http.Handler {
	h := &handler{o: o, log: o.Log, now: o.Now, pages: mustPages(), mux: http.NewServeMux()}
	if h.o.Actions == nil {
		h.o.Actions = noActions{}
	}
	if h.log == nil {
		h.log = slog.New(slog.DiscardHandler)
	}
	if h.now == nil {
		h.now = time.Now
	}
	h.tokenSum = sha256.Sum256([]byte(o.Token))
	h.routes()
	return h
}

func (h *handler) routes() {
	m := h.mux
	m.HandleFunc("GET /healthz", h.healthz)
	m.HandleFunc("GET /readyz", h.readyz)
	m.HandleFunc("GET /metrics", h.metrics)
	m.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/admin/", http.StatusFound)
	})
	m.HandleFunc("GET /admin", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/admin/", http.StatusFound)
	})
	m.HandleFunc("GET /admin/login", h.loginPage)
	m.HandleFunc("POST /admin/login", h.loginSubmit)
	m.HandleFunc("POST /admin/logout", h.logout)

	m.HandleFunc("GET /admin/{$}", h.overviewPage)
	m.HandleFunc("GET /admin/users", h.usersPage)
	m.HandleFunc("GET /admin/users/{idp}/{subject}", h.userPage)
	m.HandleFunc("POST /admin/users/{idp}/{subject}/sync", h.userSync)
	m.HandleFunc("POST /admin/users/{idp}/{subject}/reinstate", h.userReinstate)
	m.HandleFunc("POST /admin/link", h.link)
	m.HandleFunc("GET /admin/audit", h.auditPage)
	m.HandleFunc("GET /admin/audit.jsonl", h.auditExport)
	m.HandleFunc("GET /admin/sweeps", h.sweepsPage)
	m.HandleFunc("GET /admin/sweeps/{policy}/plan", h.planPage)
	m.HandleFunc("POST /admin/sweeps/{policy}/run", h.runSweep)
	m.HandleFunc("GET /admin/directories", h.directoriesPage)
	m.HandleFunc("POST /admin/directories/{name}/sync", h.startSync)
	m.HandleFunc("POST /admin/directories/{name}/dry-run", h.dryRun)
	m.HandleFunc("POST /admin/users/{idp}/{subject}/directory-sync", h.userDirectorySync)
	m.HandleFunc("GET /admin/queue", h.queuePage)
	m.HandleFunc("GET /admin/config", h.configPage)
	m.HandleFunc("POST /admin/reload", h.reload)
	m.HandleFunc("GET /admin/holds", h.holdsPage)
	m.HandleFunc("GET /admin/holds/{idp}", h.idpHoldsPage)
	h.holdRoutes(m, "/admin/holds/")

	h.apiRoutes(m)
}

// ServeHTTP sets the security headers, then lets only admins past /admin
// (except the login form) before routing.
func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	hd := w.Header()
	hd.Set("Cache-Control", "no-store")
	hd.Set("X-Content-Type-Options", "nosniff")
	hd.Set("X-Frame-Options", "DENY")
	hd.Set("Referrer-Policy", "no-referrer")
	hd.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")

	p := r.URL.Path
	if p != "/admin/login" && (p == "/admin" || strings.HasPrefix(p, "/admin/")) {
		r.Body = http.MaxBytesReader(w, r.Body, maxForm)
		pr, ok := h.gate(w, r)
		if !ok {
			return
		}
		r = r.WithContext(context.WithValue(r.Context(), principalKey{}, pr))
	}
	h.mux.ServeHTTP(w, r)
}

func (h *handler) healthz(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

type readyBody struct {
	Status string            `json:"status"`
	Checks map[string]string `json:"checks"`
}

func (h *handler) readyz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), readyTimeout)
	defer cancel()
	done := make(chan []Check, 1) // buffered: a late answer must not block
	go func() {
		if h.o.Ready != nil {
			done <- h.o.Ready(ctx)
			return
		}
		done <- []Check{{Name: "store", Err: h.o.Store.Ping(ctx), Critical: true}}
	}()
	var checks []Check
	select {
	case checks = <-done:
	case <-ctx.Done():
		// A check that ignores its context must not hang the probe.
		checks = []Check{{Name: "readyz", Err: fmt.Errorf("checks did not answer within %s", readyTimeout)}}
	}
	body := readyBody{Status: "ok", Checks: map[string]string{}}
	status := http.StatusOK
	for _, c := range checks {
		if c.Err == nil {
			body.Checks[c.Name] = "ok"
			continue
		}
		body.Checks[c.Name] = c.Err.Error()
		switch {
		case c.Critical || c.Name == "readyz":
			body.Status, status = "unavailable", http.StatusServiceUnavailable
		case body.Status == "ok":
			body.Status = "degraded"
		}
	}
	if body.Status != "ok" {
		h.log.Warn("not ready: "+body.Status, "checks", body.Checks)
	}
	writeJSON(w, status, body)
}

// metrics needs an admin like every other page: Prometheus scrapes it with
// the bearer token (authorization: {credentials: <token>} in its config).
func (h *handler) metrics(w http.ResponseWriter, r *http.Request) {
	if h.o.Metrics == nil {
		http.NotFound(w, r)
		return
	}
	if _, err := h.authenticate(r); err != nil {
		w.Header().Set("WWW-Authenticate", `Bearer realm="usher admin"`)
		writeJSON(w, http.StatusUnauthorized, apiError{Error: "metrics need the admin bearer token"})
		return
	}
	h.o.Metrics.ServeHTTP(w, r)
}

func (h *handler) reload(w http.ResponseWriter, r *http.Request) {
	pr := principalOf(r)
	if err := h.o.Actions.Reload(r.Context(), pr.Actor); err != nil {
		h.fail(w, r, http.StatusInternalServerError, "Reload failed: "+err.Error(), err)
		return
	}
	// Actions.Reload logs the request and the reload itself.
	h.render(w, r, http.StatusOK, "message", "Reloaded", messageData{Message: "The configuration was reloaded.", Link: "/admin/config"})
}

func (h *handler) configPage(w http.ResponseWriter, r *http.Request) {
	text, err := h.configText()
	if err != nil {
		h.fail(w, r, http.StatusInternalServerError, "The effective configuration is not available.", err)
		return
	}
	h.render(w, r, http.StatusOK, "config", "Configuration", text)
}

func (h *handler) configText() (string, error) {
	if h.o.Config == nil {
		return "", errors.New("admin: no config source")
	}
	b, err := h.o.Config()
	if err != nil {
		return "", err
	}
	return string(b), nil
}

func (h *handler) queuePage(w http.ResponseWriter, r *http.Request) {
	q, err := h.o.Store.Queue(r.Context())
	if err != nil {
		h.fail(w, r, http.StatusInternalServerError, "The retry queue could not be read.", err)
		return
	}
	h.render(w, r, http.StatusOK, "queue", "Retry queue", queueData{QueueStats: q, Now: h.now()})
}

type queueData struct {
	store.QueueStats
	Now time.Time
}

type overviewData struct {
	Bindings int
	MoreThan bool // Bindings hit scanLimit
	First    []store.Binding
	Queue    store.QueueStats
	Runs     []store.SweepRun
	Policies []string
	IdPs     []brakeState
	Held     int // held removals of every IdP
	Now      time.Time
}

func (h *handler) overviewPage(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	d := overviewData{Now: h.now()}
	err := h.eachBinding(ctx, "", scanLimit, func(b store.Binding) bool {
		if len(d.First) < 20 {
			d.First = append(d.First, b)
		}
		d.Bindings++
		return true
	})
	d.MoreThan = d.Bindings >= scanLimit
	if err == nil {
		d.Queue, err = h.o.Store.Queue(ctx)
	}
	if err == nil {
		d.Runs, err = h.o.Store.SweepRuns(ctx, 5)
	}
	if err == nil {
		d.IdPs, err = h.brakeStates(ctx)
		for _, s := range d.IdPs {
			d.Held += s.Holds
		}
	}
	if err != nil {
		h.fail(w, r, http.StatusInternalServerError, "The store could not be read.", err)
		return
	}
	if h.o.Actions != nil {
		d.Policies = h.o.Actions.Policies()
	}
	h.render(w, r, http.StatusOK, "overview", "Overview", d)
}

// eachBinding walks bindings after cursor, at most limit of them, until fn
// returns false.
func (h *handler) eachBinding(ctx context.Context, after string, limit int, fn func(store.Binding) bool) error {
	seen := 0
	for seen < limit {
		n := min(1000, limit-seen)
		page, err := h.o.Store.Bindings(ctx, after, n)
		if err != nil {
			return err
		}
		for _, b := range page {
			seen++
			if !fn(b) {
				return nil
			}
		}
		if len(page) < n {
			return nil
		}
		after = bindingCursor(page[len(page)-1])
	}
	return nil
}

func bindingCursor(b store.Binding) string { return b.IdP + "\x00" + b.Subject }

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v) // the client went away; nothing to do
}

type apiError struct {
	Error string `json:"error"`
}

func isAPI(r *http.Request) bool { return strings.HasPrefix(r.URL.Path, "/admin/api/") }

// statusOf maps store errors to HTTP statuses.
func statusOf(err error, otherwise int) int {
	if errors.Is(err, store.ErrNotFound) {
		return http.StatusNotFound
	}
	return otherwise
}

// fail answers with an error page (or JSON under /admin/api/) and logs the
// cause once. Admins may see the cause: they are the ones fixing it.
func (h *handler) fail(w http.ResponseWriter, r *http.Request, status int, msg string, cause error) {
	if cause != nil {
		level := h.log.Warn
		if status >= 500 {
			level = h.log.Error
		}
		level("admin request failed", "status", status, "path", r.URL.Path, "err", cause)
	}
	if isAPI(r) {
		if cause != nil && !strings.Contains(msg, cause.Error()) {
			msg += ": " + cause.Error()
		}
		writeJSON(w, status, apiError{Error: msg})
		return
	}
	h.render(w, r, status, "message", "Error", messageData{Message: msg, Err: true})
}
