package admin

import (
	"net/http"
	"time"

	"github.com/usherhq/usher/store"
)

// The JSON API mirrors the pages for scripts. It authenticates with the
// bearer token only, so it needs no CSRF token; it changes state only on
// POST.
func (h *handler) apiRoutes(m *http.ServeMux) {
	m.HandleFunc("GET /admin/api/users", h.apiUsers)
	m.HandleFunc("GET /admin/api/users/{idp}/{subject}", h.apiUser)
	m.HandleFunc("POST /admin/api/users/{idp}/{subject}/sync", h.apiSync)
	m.HandleFunc("POST /admin/api/users/{idp}/{subject}/reinstate", h.apiReinstate)
	m.HandleFunc("GET /admin/api/audit", h.apiAudit)
	m.HandleFunc("GET /admin/api/sweeps", h.apiSweeps)
	m.HandleFunc("GET /admin/api/sweeps/{policy}/plan", h.apiPlan)
	m.HandleFunc("POST /admin/api/sweeps/{policy}/run", h.apiRun)
	m.HandleFunc("GET /admin/api/directories", h.apiDirectories)
	m.HandleFunc("POST /admin/api/directories/{name}/sync", h.startSync)
	m.HandleFunc("POST /admin/api/directories/{name}/dry-run", h.dryRun)
	m.HandleFunc("POST /admin/api/users/{idp}/{subject}/directory-sync", h.userDirectorySync)
	m.HandleFunc("GET /admin/api/queue", h.apiQueue)
	m.HandleFunc("GET /admin/api/config", h.apiConfig)
	m.HandleFunc("POST /admin/api/reload", h.apiReload)
	m.HandleFunc("POST /admin/api/link", h.apiLink)
	m.HandleFunc("GET /admin/api/holds", h.apiHoldsOverview)
	m.HandleFunc("GET /admin/api/holds/{idp}", h.apiIdPHolds)
	h.holdRoutes(m, "/admin/api/holds/")
}

type bindingJSON struct {
	IdP       string     `json:"idp"`
	Subject   string     `json:"subject"`
	Username  string     `json:"username"`
	CreatedAt time.Time  `json:"created_at"`
	LastLogin *time.Time `json:"last_login,omitempty"`
	Match     string     `json:"match,omitempty"`
}

func bindingOut(b store.Binding, match string) bindingJSON {
	o := bindingJSON{IdP: b.IdP, Subject: b.Subject, Username: b.Username, CreatedAt: b.CreatedAt, Match: match}
	if !b.LastLogin.IsZero() {
		o.LastLogin = &b.LastLogin
	}
	return o
}

func (h *handler) apiUsers(w http.ResponseWriter, r *http.Request) {
	q, after, err := usersQuery(r)
	if err != nil {
		h.fail(w, r, http.StatusBadRequest, "bad search: "+err.Error(), nil)
		return
	}
	d, err := h.searchUsers(r.Context(), q, after)
	if err != nil {
		h.fail(w, r, http.StatusInternalServerError, "search failed", err)
		return
	}
	out := struct {
		Users     []bindingJSON `json:"users"`
		Truncated bool          `json:"truncated,omitempty"`
		Next      string        `json:"next,omitempty"`
	}{Users: []bindingJSON{}, Truncated: d.Truncated, Next: d.Next}
	for _, hit := range d.Hits {
		out.Users = append(out.Users, bindingOut(hit.Binding, hit.Match))
	}
	writeJSON(w, http.StatusOK, out)
}

type appStateJSON struct {
	App                 string           `json:"app"`
	AccountID           string           `json:"account_id,omitempty"`
	Hash                string           `json:"hash,omitempty"`
	SyncedAt            *time.Time       `json:"synced_at,omitempty"`
	Deprovisioned       bool             `json:"deprovisioned"`
	DeprovisionedAt     *time.Time       `json:"deprovisioned_at,omitempty"`
	DeprovisionedReason string           `json:"deprovisioned_reason,omitempty"`
	Managed             []membershipJSON `json:"managed"`
}

type membershipJSON struct {
	Group   string    `json:"group"`
	IdP     string    `json:"idp"`
	Rule    string    `json:"rule"`
	AddedAt time.Time `json:"added_at"`
}

func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

type timelineJSON struct {
	IdP          string         `json:"idp"`
	Subject      string         `json:"subject"`
	Binding      *bindingJSON   `json:"binding,omitempty"`
	AccessExpiry *time.Time     `json:"access_expiry,omitempty"`
	Apps         []appStateJSON `json:"apps"`
	Events       []eventView    `json:"events"`
	Changes      []string       `json:"changes,omitempty"`
}

func timelineOut(d timelineData) timelineJSON {
	o := timelineJSON{IdP: d.IdP, Subject: d.Subject, AccessExpiry: timePtr(d.AccessExpiry), Apps: []appStateJSON{}, Events: d.Events, Changes: d.Changes}
	if o.Events == nil {
		o.Events = []eventView{}
	}
	if d.Binding != nil {
		b := bindingOut(*d.Binding, "")
		o.Binding = &b
	}
	for _, a := range d.Apps {
		s := appStateJSON{App: a.App, AccountID: a.AccountID, Managed: []membershipJSON{}}
		if a.State != nil {
			s.Hash, s.SyncedAt = a.State.Hash, timePtr(a.State.SyncedAt)
			s.Deprovisioned, s.DeprovisionedAt, s.DeprovisionedReason = a.State.Deprovisioned, timePtr(a.State.DeprovisionedAt), a.State.DeprovisionedReason
		}
		for _, m := range a.Managed {
			s.Managed = append(s.Managed, membershipJSON{Group: m.Group, IdP: m.IdP, Rule: m.Rule, AddedAt: m.AddedAt})
		}
		o.Apps = append(o.Apps, s)
	}
	return o
}

func (h *handler) apiUser(w http.ResponseWriter, r *http.Request) {
	idp, subject, ok := h.identity(w, r)
	if !ok {
		return
	}
	d, err := h.timeline(r.Context(), idp, subject)
	if err != nil {
		h.fail(w, r, statusOf(err, http.StatusInternalServerError), "no timeline", err)
		return
	}
	writeJSON(w, http.StatusOK, timelineOut(d))
}

func (h *handler) apiSync(w http.ResponseWriter, r *http.Request) {
	h.apiChanges(w, r, h.syncUser, "sync failed")
}

func (h *handler) apiReinstate(w http.ResponseWriter, r *http.Request) {
	h.apiChanges(w, r, h.reinstateUser, "reinstate failed")
}

func (h *handler) apiChanges(w http.ResponseWriter, r *http.Request, do userAction, failed string) {
	idp, subject, ok := h.identity(w, r)
	if !ok {
		return
	}
	changes, err := do(r, idp, subject)
	if err != nil {
		h.fail(w, r, statusOf(err, http.StatusBadGateway), failed, err)
		return
	}
	if changes == nil {
		changes = []string{}
	}
	writeJSON(w, http.StatusOK, map[string][]string{"changes": changes})
}

func (h *handler) apiAudit(w http.ResponseWriter, r *http.Request) {
	q, err := parseAuditQuery(r.URL.Query(), 100, pageLimit)
	if err != nil {
		h.fail(w, r, http.StatusBadRequest, "bad filter: "+err.Error(), nil)
		return
	}
	evs, err := h.auditEvents(r.Context(), q)
	if err != nil {
		h.fail(w, r, http.StatusInternalServerError, "audit log unreadable", err)
		return
	}
	writeJSON(w, http.StatusOK, map[string][]eventView{"events": evs})
}

type sweepRunJSON struct {
	ID       int64      `json:"id"`
	Policy   string     `json:"policy"`
	DryRun   bool       `json:"dry_run"`
	Started  time.Time  `json:"started"`
	Finished *time.Time `json:"finished,omitempty"`
	State    string     `json:"state"`
	Planned  int        `json:"planned"`
	Applied  int        `json:"applied"`
	Failed   int        `json:"failed"`
	Reason   string     `json:"reason,omitempty"`
}

func (h *handler) apiSweeps(w http.ResponseWriter, r *http.Request) {
	runs, err := h.o.Store.SweepRuns(r.Context(), runsShown)
	if err != nil {
		h.fail(w, r, http.StatusInternalServerError, "sweep runs unreadable", err)
		return
	}
	out := struct {
		Policies []string       `json:"policies"`
		Runs     []sweepRunJSON `json:"runs"`
	}{Policies: h.o.Actions.Policies(), Runs: []sweepRunJSON{}}
	if out.Policies == nil {
		out.Policies = []string{}
	}
	for _, s := range runs {
		out.Runs = append(out.Runs, sweepRunJSON{
			ID: s.ID, Policy: s.Policy, DryRun: s.DryRun, Started: s.Started, Finished: timePtr(s.Finished),
			State: s.State, Planned: s.Planned, Applied: s.Applied, Failed: s.Failed, Reason: s.Reason,
		})
	}
	writeJSON(w, http.StatusOK, out)
}

func (h *handler) apiPlan(w http.ResponseWriter, r *http.Request) {
	policy, ok := h.knownPolicy(w, r)
	if !ok {
		return
	}
	plan, err := h.o.Actions.PlanSweep(r.Context(), policy)
	if err != nil {
		h.fail(w, r, http.StatusInternalServerError, "plan failed", err)
		return
	}
	writeJSON(w, http.StatusOK, plan)
}

func (h *handler) apiRun(w http.ResponseWriter, r *http.Request) {
	policy, ok := h.knownPolicy(w, r)
	if !ok {
		return
	}
	dryRun, err := dryRunParam(r)
	if err != nil {
		h.fail(w, r, http.StatusBadRequest, err.Error(), nil)
		return
	}
	plan, err := h.sweep(r, policy, dryRun)
	switch {
	case blocked(plan):
		// The valve refused: not a failure of usher, but nothing happened.
		writeJSON(w, http.StatusConflict, plan)
	case err != nil:
		h.fail(w, r, http.StatusBadGateway, "sweep failed", err)
	default:
		writeJSON(w, http.StatusOK, plan)
	}
}

type queueJSON struct {
	Depth      int        `json:"depth"`
	Oldest     *time.Time `json:"oldest,omitempty"`
	LastErrors []jobJSON  `json:"last_errors"`
}

type jobJSON struct {
	ID        int64     `json:"id"`
	Kind      string    `json:"kind"`
	App       string    `json:"app"`
	Key       string    `json:"key"`
	Attempts  int       `json:"attempts"`
	NotBefore time.Time `json:"not_before"`
	LastError string    `json:"last_error"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

func (h *handler) apiQueue(w http.ResponseWriter, r *http.Request) {
	q, err := h.o.Store.Queue(r.Context())
	if err != nil {
		h.fail(w, r, http.StatusInternalServerError, "queue unreadable", err)
		return
	}
	out := queueJSON{Depth: q.Depth, Oldest: timePtr(q.Oldest), LastErrors: []jobJSON{}}
	for _, j := range q.LastErrors {
		// The payload is the caller's business (and may hold a profile);
		// the error and the bookkeeping are what an operator needs.
		out.LastErrors = append(out.LastErrors, jobJSON{
			ID: j.ID, Kind: j.Kind, App: j.App, Key: j.Key, Attempts: j.Attempts, NotBefore: j.NotBefore,
			LastError: j.LastError, CreatedAt: j.CreatedAt, UpdatedAt: j.UpdatedAt,
		})
	}
	writeJSON(w, http.StatusOK, out)
}

func (h *handler) apiConfig(w http.ResponseWriter, r *http.Request) {
	text, err := h.configText()
	if err != nil {
		h.fail(w, r, http.StatusInternalServerError, "config unavailable", err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"config": text})
}

func (h *handler) apiReload(w http.ResponseWriter, r *http.Request) {
	actor := principalOf(r).Actor
	if err := h.o.Actions.Reload(r.Context(), actor); err != nil {
		h.fail(w, r, http.StatusInternalServerError, "reload failed", err)
		return
	}
	// Actions.Reload logs the request and the reload itself.
	writeJSON(w, http.StatusOK, map[string]string{"status": "reloaded"})
}

func (h *handler) apiLink(w http.ResponseWriter, r *http.Request) {
	if idp, subject, username, ok := h.doLink(w, r); ok {
		writeJSON(w, http.StatusOK, map[string]string{"status": "linked", "idp": idp, "subject": subject, "username": username})
	}
}
