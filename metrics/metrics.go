// Package metrics owns usher's Prometheus collectors: their names, labels
// and the fixed label values that keep cardinality bounded. Other packages
// call the small typed methods of *Metrics and never touch a collector.
//
// Every method is safe on a nil *Metrics and then does nothing, so tests and
// packages wired without metrics need no setup. All methods are safe for
// concurrent use.
//
// Label values come from configuration (app names, IdP IDs, sweep policy
// names) or from the fixed sets below; free text such as error messages or
// usernames never becomes a label.
package metrics

import (
	"errors"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Login reasons: why a login ended the way it did. Login maps any other
// value to ReasonOther, so the series count stays fixed whatever callers
// pass.
const (
	ReasonNone          = "none" // a successful login
	ReasonState         = "state"
	ReasonSignature     = "signature"
	ReasonReplay        = "replay"
	ReasonAudience      = "audience"
	ReasonExpired       = "expired"
	ReasonPolicy        = "policy"
	ReasonUsernameTaken = "username_taken"
	ReasonIdPError      = "idp_error"
	ReasonProvisioning  = "provisioning"
	ReasonStore         = "store"
	ReasonOther         = "other"
)

// Login outcomes. ok: logged in; refused: the protocol exchange was
// rejected (signature, replay, state…); denied: policy said no; error: a
// technical failure. Any other value is counted as OutcomeError.
const (
	OutcomeOK      = "ok"
	OutcomeRefused = "refused"
	OutcomeDenied  = "denied"
	OutcomeError   = "error"
)

// App call results. Any other value is counted as ResultError.
const (
	ResultOK        = "ok"
	ResultError     = "error"
	ResultRetry     = "retry"
	ResultThrottled = "throttled"
)

// Revocation sources. Any other value is counted as SourceOther.
const (
	SourceLogout    = "logout"
	SourceSCIM      = "scim"
	SourceSweep     = "sweep"
	SourceAdmin     = "admin"
	SourceDirectory = "directory"
	SourceOther     = "other"
)

// Directory sync kinds and results, and the changes a sync counts. Any
// other kind counts as "full", any other result as SyncError, any other
// change as ChangeFailed.
const (
	SyncFull  = "full"
	SyncDelta = "delta"

	SyncOK SyncResult = "ok"
	// SyncIncomplete: the pull or delta stopped before the end (an
	// outage, throttling past the budget, a truncated listing); what was
	// read was applied.
	SyncIncomplete SyncResult = "incomplete"
	SyncError      SyncResult = "error"

	ChangeCreated = "created"
	ChangeUpdated = "updated"
	ChangeDenied  = "denied"
	ChangeRefused = "refused"
	ChangeFailed  = "failed"
)

// SyncResult is how a directory sync run ended.
type SyncResult string

// MaxApps bounds the distinct app label values Request accepts; later
// newcomers are counted under app="other". Apps come from configuration,
// so the cap only matters when a caller passes something unexpected.
const MaxApps = 256

var (
	reasons = set(ReasonNone, ReasonState, ReasonSignature, ReasonReplay,
		ReasonAudience, ReasonExpired, ReasonPolicy, ReasonUsernameTaken,
		ReasonIdPError, ReasonProvisioning, ReasonStore, ReasonOther)
	outcomes    = set(OutcomeOK, OutcomeRefused, OutcomeDenied, OutcomeError)
	callResults = set(ResultOK, ResultError, ResultRetry, ResultThrottled)
	sources     = set(SourceLogout, SourceSCIM, SourceSweep, SourceAdmin, SourceDirectory, SourceOther)
	syncResults = set(string(SyncOK), string(SyncIncomplete), string(SyncError))
	changes     = set(ChangeCreated, ChangeUpdated, ChangeDenied, ChangeRefused, ChangeFailed)
	dirResults  = set(ResultOK, ResultError, ResultThrottled)
	// codeClasses are the label values of usher_requests_total's code.
	codeClasses = [5]string{"1xx", "2xx", "3xx", "4xx", "5xx"}
)

func set(vals ...string) map[string]bool {
	m := make(map[string]bool, len(vals))
	for _, v := range vals {
		m[v] = true
	}
	return m
}

// Metrics holds every usher collector. Create it with New.
type Metrics struct {
	// Now stamps usher_sweep_last_run_timestamp_seconds; default time.Now.
	Now func() time.Time

	requests *prometheus.CounterVec
	// reqApps maps an app to its pre-resolved counters, one per status
	// class, so Request does a map read and an atomic add: no label
	// hashing, no allocation. Copy-on-write: readers never lock.
	reqApps atomic.Pointer[map[string]*[5]prometheus.Counter]
	reqMu   sync.Mutex // serialises writers of reqApps

	logins *prometheus.CounterVec

	appCalls    *prometheus.CounterVec
	appCallDur  *prometheus.HistogramVec
	queueDepth  prometheus.Gauge
	queueOldest prometheus.Gauge

	sweepDur     *prometheus.GaugeVec
	sweepPlanned *prometheus.GaugeVec
	sweepApplied *prometheus.GaugeVec
	sweepLast    *prometheus.GaugeVec
	sweepRuns    *prometheus.CounterVec
	sweepBlocked *prometheus.CounterVec

	scim        *prometheus.CounterVec
	scimHeld    *prometheus.CounterVec
	scimHolds   *prometheus.GaugeVec
	holdsMu     sync.Mutex      // serialises SetSCIMHolds
	holdsSet    map[string]bool // the IdPs SetSCIMHolds set last
	revocations *prometheus.CounterVec
	metadata    *prometheus.CounterVec

	dirRuns    *prometheus.CounterVec
	dirDur     *prometheus.GaugeVec
	dirLast    *prometheus.GaugeVec
	dirPeople  *prometheus.GaugeVec
	dirGroups  *prometheus.GaugeVec
	dirChanges *prometheus.CounterVec
	dirCalls   *prometheus.CounterVec
	dirCallDur *prometheus.HistogramVec
}

// New creates usher's collectors and registers them on reg. A nil reg
// gives a nil *Metrics, whose methods do nothing. Calling New twice on the
// same registry is harmless: the second Metrics shares the first one's
// collectors.
func New(reg prometheus.Registerer) *Metrics {
	if reg == nil {
		return nil
	}
	m := &Metrics{Now: time.Now}
	// One line a collector: its name, its help text and its labels. Each
	// is registered on reg as it is made.
	counter := func(name, help string, labels ...string) *prometheus.CounterVec {
		return register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, labels))
	}
	gauge := func(name, help string, labels ...string) *prometheus.GaugeVec {
		return register(reg, prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: name, Help: help}, labels))
	}
	gauge1 := func(name, help string) prometheus.Gauge {
		return register(reg, prometheus.NewGauge(prometheus.GaugeOpts{Name: name, Help: help}))
	}
	histogram := func(name, help string, buckets []float64, labels ...string) *prometheus.HistogramVec {
		return register(reg, prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: name, Help: help, Buckets: buckets}, labels))
	}
	m.requests = counter("usher_requests_total",
		"HTTP requests answered, by app and status class (1xx..5xx).", "app", "code")
	m.logins = counter("usher_logins_total",
		"Finished login attempts by IdP, outcome (ok, refused, denied, error) and reason.", "idp", "outcome", "reason")
	m.appCalls = counter("usher_app_calls_total",
		"REST calls to upstream apps by app, operation and result (ok, error, retry, throttled).", "app", "op", "result")
	// Atlassian REST calls run from a few ms to tens of seconds when an
	// instance is under load; the default buckets stop at 10s.
	m.appCallDur = histogram("usher_app_call_duration_seconds", "Duration of REST calls to upstream apps.",
		[]float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}, "app", "op")
	m.queueDepth = gauge1("usher_retry_queue_depth",
		"Provisioning jobs waiting in the durable retry queue.")
	m.queueOldest = gauge1("usher_retry_queue_oldest_seconds",
		"Age of the oldest job in the retry queue; 0 when empty.")
	// Sweeps run rarely (hourly, daily), so the interesting numbers are
	// those of the last run per policy: gauges, not counters whose rate
	// would be meaningless at that frequency. Runs and blocked runs are
	// counters so that alerts can use increase().
	m.sweepDur = gauge("usher_sweep_duration_seconds",
		"Duration of the last sweep run of the policy.", "policy")
	m.sweepPlanned = gauge("usher_sweep_planned",
		"Changes the last sweep run of the policy planned.", "policy")
	m.sweepApplied = gauge("usher_sweep_applied",
		"Changes the last sweep run of the policy applied.", "policy")
	m.sweepLast = gauge("usher_sweep_last_run_timestamp_seconds",
		"Unix time the last sweep run of the policy finished.", "policy")
	m.sweepRuns = counter("usher_sweep_runs_total",
		"Sweep runs by policy, blocked or not.", "policy")
	m.sweepBlocked = counter("usher_sweep_blocked_total",
		"Sweep runs the safety valve refused to apply.", "policy")
	m.scim = counter("usher_scim_requests_total",
		"SCIM requests by IdP, operation and result.", "idp", "op", "result")
	m.scimHeld = counter("usher_scim_brake_held_total",
		"SCIM removals an IdP's brake held back for an admin, by IdP (counted by the replica that held them).", "idp")
	m.scimHolds = gauge("usher_scim_brake_holds",
		"SCIM removals an IdP's brake holds now, waiting for an admin to release or drop them, by IdP (read from the store, alike on every replica).", "idp")
	m.revocations = counter("usher_session_revocations_total",
		"Sessions revoked by source (logout, scim, sweep, admin, directory).", "source")
	m.metadata = counter("usher_saml_metadata_refresh_failures_total",
		"Failed refreshes of a SAML IdP's metadata.", "idp")
	m.dirRuns = counter("usher_directory_sync_runs_total",
		"Directory sync runs by directory, kind (full, delta) and result (ok, incomplete, error).", "directory", "kind", "result")
	m.dirDur = gauge("usher_directory_sync_duration_seconds",
		"Duration of the last directory sync run of the directory and kind.", "directory", "kind")
	m.dirLast = gauge("usher_directory_sync_last_run_timestamp_seconds",
		"Unix time the last directory sync run of the directory and kind finished.", "directory", "kind")
	m.dirPeople = gauge("usher_directory_people_seen",
		"People the last directory sync run of the directory and kind read.", "directory", "kind")
	m.dirGroups = gauge("usher_directory_groups_seen",
		"Distinct groups among the people the last directory sync run of the directory and kind read.", "directory", "kind")
	m.dirChanges = counter("usher_directory_changes_total",
		"People a directory sync created or updated in the apps, or could not (denied by policy, refused, failed).", "directory", "change")
	m.dirCalls = counter("usher_directory_calls_total",
		"API calls to IdP directories by directory, operation and result (ok, throttled, error).", "directory", "op", "result")
	m.dirCallDur = histogram("usher_directory_call_duration_seconds", "Duration of API calls to IdP directories, including waits on throttling.",
		[]float64{.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60}, "directory", "op")
	empty := map[string]*[5]prometheus.Counter{}
	m.reqApps.Store(&empty)
	return m
}

// register adds c to reg; if an equal collector is already there (New
// called twice on one registry) it returns that one instead, so both
// Metrics values feed the same series.
func register[C prometheus.Collector](reg prometheus.Registerer, c C) C {
	err := reg.Register(c)
	var are prometheus.AlreadyRegisteredError
	if errors.As(err, &are) {
		if existing, ok := are.ExistingCollector.(C); ok {
			return existing
		}
	}
	return c
}

// Request counts one answered HTTP request. app is the configured app name
// ("" for usher's own endpoints). The status is reduced to its class:
// per-code series would multiply cardinality for little insight, and the
// access log has the exact code. 0 (no WriteHeader) counts as 2xx; codes
// below 200 as 1xx, codes of 500 and above as 5xx.
//
// Request runs on every proxied request: after an app's first request it
// does one map read and one atomic add, without allocating.
func (m *Metrics) Request(app string, status int) {
	if m == nil {
		return
	}
	class := 1 // 2xx
	switch {
	case status == 0:
	case status < 200:
		class = 0
	case status >= 500:
		class = 4
	default:
		class = status/100 - 1
	}
	if cs := (*m.reqApps.Load())[app]; cs != nil {
		cs[class].Inc()
		return
	}
	m.appCounters(app)[class].Inc()
}

// appCounters resolves and caches app's counters on its first request.
func (m *Metrics) appCounters(app string) *[5]prometheus.Counter {
	m.reqMu.Lock()
	defer m.reqMu.Unlock()
	old := *m.reqApps.Load()
	if cs := old[app]; cs != nil {
		return cs
	}
	if len(old) >= MaxApps {
		app = "other"
		if cs := old[app]; cs != nil {
			return cs
		}
	}
	cs := new([5]prometheus.Counter)
	for i, c := range codeClasses {
		cs[i] = m.requests.WithLabelValues(app, c)
	}
	next := make(map[string]*[5]prometheus.Counter, len(old)+1)
	for k, v := range old {
		next[k] = v
	}
	next[app] = cs
	m.reqApps.Store(&next)
	return cs
}

// Login counts one finished login attempt at IdP idp. outcome is one of
// the Outcome constants and reason one of the Reason constants; anything
// else is counted as OutcomeError / ReasonOther.
func (m *Metrics) Login(idp, outcome, reason string) {
	if m == nil {
		return
	}
	if !outcomes[outcome] {
		outcome = OutcomeError
	}
	if !reasons[reason] {
		reason = ReasonOther
	}
	m.logins.WithLabelValues(idp, outcome, reason).Inc()
}

// AppCall records one REST call to app. op is the caller's operation name
// from a fixed set (get_user, create_user, add_group…); result is one of
// the Result constants, anything else counts as ResultError.
func (m *Metrics) AppCall(app, op, result string, d time.Duration) {
	if m == nil {
		return
	}
	if !callResults[result] {
		result = ResultError
	}
	m.appCalls.WithLabelValues(app, op, result).Inc()
	m.appCallDur.WithLabelValues(app, op).Observe(d.Seconds())
}

// SetQueue reports the retry queue's depth and the age of its oldest job.
func (m *Metrics) SetQueue(depth int, oldest time.Duration) {
	if m == nil {
		return
	}
	m.queueDepth.Set(float64(depth))
	m.queueOldest.Set(oldest.Seconds())
}

// Sweep records one finished sweep run of policy: how long it took, how
// many changes it planned and applied, and whether the safety valve
// blocked it (then applied is normally 0).
func (m *Metrics) Sweep(policy string, d time.Duration, planned, applied int, blocked bool) {
	if m == nil {
		return
	}
	m.sweepDur.WithLabelValues(policy).Set(d.Seconds())
	m.sweepPlanned.WithLabelValues(policy).Set(float64(planned))
	m.sweepApplied.WithLabelValues(policy).Set(float64(applied))
	m.sweepLast.WithLabelValues(policy).Set(m.unixNow())
	m.sweepRuns.WithLabelValues(policy).Inc()
	// Resolve the blocked series even when not blocked, so it exists at 0
	// and increase() alerts see the first block.
	b := m.sweepBlocked.WithLabelValues(policy)
	if blocked {
		b.Inc()
	}
}

// unixNow is Now as Unix seconds, for the last-run timestamps.
func (m *Metrics) unixNow() float64 {
	now := time.Now
	if m.Now != nil {
		now = m.Now
	}
	return float64(now().UnixNano()) / 1e9
}

// SCIM counts one SCIM request from idp. op and result must come from the
// scim package's fixed sets (e.g. create/replace/patch/delete/get/list and
// ok/invalid/conflict/not_found/error), never from request data.
func (m *Metrics) SCIM(idp, op, result string) {
	if m == nil {
		return
	}
	m.scim.WithLabelValues(idp, op, result).Inc()
}

// SCIMHeld counts one SCIM removal IdP idp's brake held back.
func (m *Metrics) SCIMHeld(idp string) {
	if m == nil {
		return
	}
	m.scimHeld.WithLabelValues(idp).Inc()
}

// SetSCIMHolds reports how many removals each IdP's brake holds now.
// holds names every IdP with a brake (0 when it holds nothing), plus any
// other IdP that still has holds; IdPs absent from it, gone from the
// config, lose their series.
func (m *Metrics) SetSCIMHolds(holds map[string]int) {
	if m == nil {
		return
	}
	m.holdsMu.Lock()
	defer m.holdsMu.Unlock()
	for idp := range m.holdsSet {
		if _, ok := holds[idp]; !ok {
			m.scimHolds.DeleteLabelValues(idp)
		}
	}
	m.holdsSet = make(map[string]bool, len(holds))
	for idp, n := range holds {
		m.scimHolds.WithLabelValues(idp).Set(float64(n))
		m.holdsSet[idp] = true
	}
}

// Revocation counts one revoked session. source is one of the Source
// constants; anything else counts as SourceOther.
func (m *Metrics) Revocation(source string) {
	if m == nil {
		return
	}
	if !sources[source] {
		source = SourceOther
	}
	m.revocations.WithLabelValues(source).Inc()
}

// DirectorySync records one finished directory sync run: its kind (full
// or delta), how it ended, how long it took and how many people and
// distinct groups it read.
func (m *Metrics) DirectorySync(dir, kind string, result SyncResult, d time.Duration, people, groups int) {
	if m == nil {
		return
	}
	if kind != SyncDelta {
		kind = SyncFull
	}
	if !syncResults[string(result)] {
		result = SyncError
	}
	m.dirRuns.WithLabelValues(dir, kind, string(result)).Inc()
	m.dirDur.WithLabelValues(dir, kind).Set(d.Seconds())
	m.dirLast.WithLabelValues(dir, kind).Set(m.unixNow())
	m.dirPeople.WithLabelValues(dir, kind).Set(float64(people))
	m.dirGroups.WithLabelValues(dir, kind).Set(float64(groups))
}

// DirectoryChanges counts n people of one change kind (created, updated,
// denied, refused, failed) by a directory sync. n of 0 counts nothing.
func (m *Metrics) DirectoryChanges(dir, change string, n int) {
	if m == nil || n <= 0 {
		return
	}
	if !changes[change] {
		change = ChangeFailed
	}
	m.dirChanges.WithLabelValues(dir, change).Add(float64(n))
}

// DirectoryCall records one API call to an IdP directory. op comes from
// the connector's fixed set (users, groups, members, token, ...); result
// is ok, throttled or error (anything else counts as error).
func (m *Metrics) DirectoryCall(dir, op, result string, d time.Duration) {
	if m == nil {
		return
	}
	if !dirResults[result] {
		result = ResultError
	}
	m.dirCalls.WithLabelValues(dir, op, result).Inc()
	m.dirCallDur.WithLabelValues(dir, op).Observe(d.Seconds())
}

// MetadataRefreshFailure counts one failed refresh of SAML IdP idp's
// metadata.
func (m *Metrics) MetadataRefreshFailure(idp string) {
	if m == nil {
		return
	}
	m.metadata.WithLabelValues(idp).Inc()
}

// Handler serves the metrics gathered from reg in the Prometheus
// exposition format. It works on a nil *Metrics too: reg, not m, is what
// it serves.
func (m *Metrics) Handler(reg prometheus.Gatherer) http.Handler {
	if reg == nil {
		return http.NotFoundHandler()
	}
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
}
