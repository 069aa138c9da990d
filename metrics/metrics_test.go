package metrics

import (
	"fmt"
	"io"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func newTest(t *testing.T) (*Metrics, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	m := New(reg)
	m.Now = func() time.Time { return time.Unix(1700000000, 0) }
	return m, reg
}

func compare(t *testing.T, reg *prometheus.Registry, want string, names ...string) {
	t.Helper()
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), names...); err != nil {
		t.Error(err)
	}
}

func TestRequest(t *testing.T) {
	m, reg := newTest(t)
	for _, c := range []struct {
		app    string
		status int
	}{
		{"jira", 200}, {"jira", 0}, {"jira", 204}, {"jira", 302}, {"jira", 404},
		{"jira", 503}, {"jira", 600}, {"jira", 101}, {"wiki", 401}, {"", 200},
	} {
		m.Request(c.app, c.status)
	}
	compare(t, reg, `
# HELP usher_requests_total HTTP requests answered, by app and status class (1xx..5xx).
# TYPE usher_requests_total counter
usher_requests_total{app="",code="1xx"} 0
usher_requests_total{app="",code="2xx"} 1
usher_requests_total{app="",code="3xx"} 0
usher_requests_total{app="",code="4xx"} 0
usher_requests_total{app="",code="5xx"} 0
usher_requests_total{app="jira",code="1xx"} 1
usher_requests_total{app="jira",code="2xx"} 3
usher_requests_total{app="jira",code="3xx"} 1
usher_requests_total{app="jira",code="4xx"} 1
usher_requests_total{app="jira",code="5xx"} 2
usher_requests_total{app="wiki",code="1xx"} 0
usher_requests_total{app="wiki",code="2xx"} 0
usher_requests_total{app="wiki",code="3xx"} 0
usher_requests_total{app="wiki",code="4xx"} 1
usher_requests_total{app="wiki",code="5xx"} 0
`, "usher_requests_total")
}

func TestRequestAppCap(t *testing.T) {
	m, _ := newTest(t)
	for i := range MaxApps + 10 {
		m.Request(fmt.Sprintf("app%d", i), 200)
	}
	if n := testutil.CollectAndCount(m.requests); n != (MaxApps+1)*len(codeClasses) {
		t.Errorf("series = %d, want %d", n, (MaxApps+1)*len(codeClasses))
	}
	if v := testutil.ToFloat64(m.requests.WithLabelValues("other", "2xx")); v != 10 {
		t.Errorf(`app="other" = %v, want 10`, v)
	}
}

func TestLogin(t *testing.T) {
	m, reg := newTest(t)
	m.Login("entra", OutcomeOK, ReasonNone)
	m.Login("entra", OutcomeRefused, ReasonSignature)
	m.Login("entra", OutcomeRefused, ReasonSignature)
	m.Login("okta", OutcomeDenied, ReasonPolicy)
	m.Login("okta", "weird", "some error text with user@example.com")
	compare(t, reg, `
# HELP usher_logins_total Finished login attempts by IdP, outcome (ok, refused, denied, error) and reason.
# TYPE usher_logins_total counter
usher_logins_total{idp="entra",outcome="ok",reason="none"} 1
usher_logins_total{idp="entra",outcome="refused",reason="signature"} 2
usher_logins_total{idp="okta",outcome="denied",reason="policy"} 1
usher_logins_total{idp="okta",outcome="error",reason="other"} 1
`, "usher_logins_total")
}

func TestReasonsAreKept(t *testing.T) {
	m, _ := newTest(t)
	for _, r := range []string{ReasonNone, ReasonState, ReasonSignature, ReasonReplay,
		ReasonAudience, ReasonExpired, ReasonPolicy, ReasonUsernameTaken,
		ReasonIdPError, ReasonProvisioning, ReasonStore, ReasonOther} {
		m.Login("x", OutcomeError, r)
		if v := testutil.ToFloat64(m.logins.WithLabelValues("x", OutcomeError, r)); v != 1 {
			t.Errorf("reason %q counted %v, want 1", r, v)
		}
	}
}

func TestAppCallQueueSweep(t *testing.T) {
	m, reg := newTest(t)
	m.AppCall("jira", "create_user", ResultOK, 30*time.Millisecond)
	m.AppCall("jira", "create_user", ResultThrottled, 2*time.Second)
	m.AppCall("jira", "add_group", "boom", time.Millisecond)
	m.SetQueue(7, 90*time.Second)
	m.Sweep("nightly", 1500*time.Millisecond, 12, 0, true)
	m.Sweep("hourly", 2*time.Second, 3, 3, false)
	compare(t, reg, `
# HELP usher_app_calls_total REST calls to upstream apps by app, operation and result (ok, error, retry, throttled).
# TYPE usher_app_calls_total counter
usher_app_calls_total{app="jira",op="add_group",result="error"} 1
usher_app_calls_total{app="jira",op="create_user",result="ok"} 1
usher_app_calls_total{app="jira",op="create_user",result="throttled"} 1
# HELP usher_retry_queue_depth Provisioning jobs waiting in the durable retry queue.
# TYPE usher_retry_queue_depth gauge
usher_retry_queue_depth 7
# HELP usher_retry_queue_oldest_seconds Age of the oldest job in the retry queue; 0 when empty.
# TYPE usher_retry_queue_oldest_seconds gauge
usher_retry_queue_oldest_seconds 90
# HELP usher_sweep_duration_seconds Duration of the last sweep run of the policy.
# TYPE usher_sweep_duration_seconds gauge
usher_sweep_duration_seconds{policy="hourly"} 2
usher_sweep_duration_seconds{policy="nightly"} 1.5
# HELP usher_sweep_planned Changes the last sweep run of the policy planned.
# TYPE usher_sweep_planned gauge
usher_sweep_planned{policy="hourly"} 3
usher_sweep_planned{policy="nightly"} 12
# HELP usher_sweep_applied Changes the last sweep run of the policy applied.
# TYPE usher_sweep_applied gauge
usher_sweep_applied{policy="hourly"} 3
usher_sweep_applied{policy="nightly"} 0
# HELP usher_sweep_blocked_total Sweep runs the safety valve refused to apply.
# TYPE usher_sweep_blocked_total counter
usher_sweep_blocked_total{policy="hourly"} 0
usher_sweep_blocked_total{policy="nightly"} 1
# HELP usher_sweep_runs_total Sweep runs by policy, blocked or not.
# TYPE usher_sweep_runs_total counter
usher_sweep_runs_total{policy="hourly"} 1
usher_sweep_runs_total{policy="nightly"} 1
# HELP usher_sweep_last_run_timestamp_seconds Unix time the last sweep run of the policy finished.
# TYPE usher_sweep_last_run_timestamp_seconds gauge
usher_sweep_last_run_timestamp_seconds{policy="hourly"} 1.7e+09
usher_sweep_last_run_timestamp_seconds{policy="nightly"} 1.7e+09
`, "usher_app_calls_total", "usher_retry_queue_depth", "usher_retry_queue_oldest_seconds",
		"usher_sweep_duration_seconds", "usher_sweep_planned", "usher_sweep_applied",
		"usher_sweep_blocked_total", "usher_sweep_runs_total", "usher_sweep_last_run_timestamp_seconds")

	// The histogram: one observation of 30ms lands in the 0.05 bucket and
	// above, the 2s one in 2.5 and above.
	compare(t, reg, `
# HELP usher_app_call_duration_seconds Duration of REST calls to upstream apps.
# TYPE usher_app_call_duration_seconds histogram
usher_app_call_duration_seconds_bucket{app="jira",op="add_group",le="0.005"} 1
usher_app_call_duration_seconds_bucket{app="jira",op="add_group",le="0.01"} 1
usher_app_call_duration_seconds_bucket{app="jira",op="add_group",le="0.025"} 1
usher_app_call_duration_seconds_bucket{app="jira",op="add_group",le="0.05"} 1
usher_app_call_duration_seconds_bucket{app="jira",op="add_group",le="0.1"} 1
usher_app_call_duration_seconds_bucket{app="jira",op="add_group",le="0.25"} 1
usher_app_call_duration_seconds_bucket{app="jira",op="add_group",le="0.5"} 1
usher_app_call_duration_seconds_bucket{app="jira",op="add_group",le="1"} 1
usher_app_call_duration_seconds_bucket{app="jira",op="add_group",le="2.5"} 1
usher_app_call_duration_seconds_bucket{app="jira",op="add_group",le="5"} 1
usher_app_call_duration_seconds_bucket{app="jira",op="add_group",le="10"} 1
usher_app_call_duration_seconds_bucket{app="jira",op="add_group",le="30"} 1
usher_app_call_duration_seconds_bucket{app="jira",op="add_group",le="+Inf"} 1
usher_app_call_duration_seconds_sum{app="jira",op="add_group"} 0.001
usher_app_call_duration_seconds_count{app="jira",op="add_group"} 1
usher_app_call_duration_seconds_bucket{app="jira",op="create_user",le="0.005"} 0
usher_app_call_duration_seconds_bucket{app="jira",op="create_user",le="0.01"} 0
usher_app_call_duration_seconds_bucket{app="jira",op="create_user",le="0.025"} 0
usher_app_call_duration_seconds_bucket{app="jira",op="create_user",le="0.05"} 1
usher_app_call_duration_seconds_bucket{app="jira",op="create_user",le="0.1"} 1
usher_app_call_duration_seconds_bucket{app="jira",op="create_user",le="0.25"} 1
usher_app_call_duration_seconds_bucket{app="jira",op="create_user",le="0.5"} 1
usher_app_call_duration_seconds_bucket{app="jira",op="create_user",le="1"} 1
usher_app_call_duration_seconds_bucket{app="jira",op="create_user",le="2.5"} 2
usher_app_call_duration_seconds_bucket{app="jira",op="create_user",le="5"} 2
usher_app_call_duration_seconds_bucket{app="jira",op="create_user",le="10"} 2
usher_app_call_duration_seconds_bucket{app="jira",op="create_user",le="30"} 2
usher_app_call_duration_seconds_bucket{app="jira",op="create_user",le="+Inf"} 2
usher_app_call_duration_seconds_sum{app="jira",op="create_user"} 2.03
usher_app_call_duration_seconds_count{app="jira",op="create_user"} 2
`, "usher_app_call_duration_seconds")
}

func TestSCIMRevocationMetadata(t *testing.T) {
	m, reg := newTest(t)
	m.SCIM("okta", "patch", "ok")
	m.SCIM("okta", "patch", "ok")
	m.SCIM("okta", "delete", "not_found")
	m.Revocation(SourceSCIM)
	m.Revocation(SourceLogout)
	m.Revocation("cosmic ray")
	m.MetadataRefreshFailure("adfs")
	compare(t, reg, `
# HELP usher_scim_requests_total SCIM requests by IdP, operation and result.
# TYPE usher_scim_requests_total counter
usher_scim_requests_total{idp="okta",op="delete",result="not_found"} 1
usher_scim_requests_total{idp="okta",op="patch",result="ok"} 2
# HELP usher_session_revocations_total Sessions revoked by source (logout, scim, sweep, admin, directory).
# TYPE usher_session_revocations_total counter
usher_session_revocations_total{source="logout"} 1
usher_session_revocations_total{source="other"} 1
usher_session_revocations_total{source="scim"} 1
# HELP usher_saml_metadata_refresh_failures_total Failed refreshes of a SAML IdP's metadata.
# TYPE usher_saml_metadata_refresh_failures_total counter
usher_saml_metadata_refresh_failures_total{idp="adfs"} 1
`, "usher_scim_requests_total", "usher_session_revocations_total", "usher_saml_metadata_refresh_failures_total")
}

func TestDirectory(t *testing.T) {
	m, reg := newTest(t)
	m.DirectorySync("entra", SyncFull, SyncOK, 90*time.Second, 1200, 40)
	m.DirectorySync("entra", SyncDelta, SyncIncomplete, 2*time.Second, 3, 2)
	m.DirectorySync("entra", "weird", "boom", time.Second, 0, 0)
	m.DirectoryChanges("entra", ChangeCreated, 5)
	m.DirectoryChanges("entra", ChangeUpdated, 0)
	m.DirectoryChanges("entra", "exploded", 1)
	m.DirectoryCall("entra", "users", ResultOK, 100*time.Millisecond)
	m.DirectoryCall("entra", "users", ResultThrottled, 2*time.Second)
	m.DirectoryCall("entra", "users", "retry", time.Second)
	m.Revocation(SourceDirectory)
	compare(t, reg, `
# HELP usher_directory_sync_runs_total Directory sync runs by directory, kind (full, delta) and result (ok, incomplete, error).
# TYPE usher_directory_sync_runs_total counter
usher_directory_sync_runs_total{directory="entra",kind="delta",result="incomplete"} 1
usher_directory_sync_runs_total{directory="entra",kind="full",result="error"} 1
usher_directory_sync_runs_total{directory="entra",kind="full",result="ok"} 1
# HELP usher_directory_people_seen People the last directory sync run of the directory and kind read.
# TYPE usher_directory_people_seen gauge
usher_directory_people_seen{directory="entra",kind="delta"} 3
usher_directory_people_seen{directory="entra",kind="full"} 0
# HELP usher_directory_changes_total People a directory sync created or updated in the apps, or could not (denied by policy, refused, failed).
# TYPE usher_directory_changes_total counter
usher_directory_changes_total{change="created",directory="entra"} 5
usher_directory_changes_total{change="failed",directory="entra"} 1
# HELP usher_directory_calls_total API calls to IdP directories by directory, operation and result (ok, throttled, error).
# TYPE usher_directory_calls_total counter
usher_directory_calls_total{directory="entra",op="users",result="error"} 1
usher_directory_calls_total{directory="entra",op="users",result="ok"} 1
usher_directory_calls_total{directory="entra",op="users",result="throttled"} 1
# HELP usher_session_revocations_total Sessions revoked by source (logout, scim, sweep, admin, directory).
# TYPE usher_session_revocations_total counter
usher_session_revocations_total{source="directory"} 1
`, "usher_directory_sync_runs_total", "usher_directory_people_seen", "usher_directory_changes_total", "usher_directory_calls_total", "usher_session_revocations_total")
}

func TestNilSafe(t *testing.T) {
	var m *Metrics
	if New(nil) != nil {
		t.Fatal("New(nil) should give a nil *Metrics")
	}
	m.Request("jira", 200)
	m.Login("x", OutcomeOK, ReasonNone)
	m.AppCall("jira", "get_user", ResultOK, time.Second)
	m.SetQueue(1, time.Second)
	m.Sweep("p", time.Second, 1, 1, false)
	m.SCIM("x", "get", "ok")
	m.Revocation(SourceAdmin)
	m.MetadataRefreshFailure("x")
	m.DirectorySync("d", SyncFull, SyncOK, time.Second, 1, 1)
	m.DirectoryChanges("d", ChangeCreated, 1)
	m.DirectoryCall("d", "users", ResultOK, time.Second)
	if m.Handler(nil) == nil {
		t.Fatal("nil Handler")
	}
}

func TestNewTwiceSharesCollectors(t *testing.T) {
	reg := prometheus.NewRegistry()
	a, b := New(reg), New(reg)
	a.Request("jira", 200)
	b.Request("jira", 200)
	if v := testutil.ToFloat64(a.requests.WithLabelValues("jira", "2xx")); v != 2 {
		t.Errorf("shared counter = %v, want 2", v)
	}
}

func TestHandler(t *testing.T) {
	m, reg := newTest(t)
	m.Request("jira", 200)
	srv := httptest.NewServer(m.Handler(reg))
	defer srv.Close()
	resp, err := srv.Client().Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if !strings.Contains(string(body), `usher_requests_total{app="jira",code="2xx"} 1`) {
		t.Errorf("scrape lacks the request counter:\n%s", body)
	}
}

func TestRequestAllocs(t *testing.T) {
	m, _ := newTest(t)
	m.Request("jira", 200) // first sighting resolves the counters
	if n := testing.AllocsPerRun(100, func() { m.Request("jira", 404) }); n != 0 {
		t.Errorf("Request allocates %v times per call, want 0", n)
	}
}

func BenchmarkRequest(b *testing.B) {
	m := New(prometheus.NewRegistry())
	apps := []string{"jira", "confluence", "bitbucket", ""}
	for _, a := range apps {
		m.Request(a, 200)
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			m.Request(apps[i&3], 200+(i&3)*100)
			i++
		}
	})
}

func BenchmarkRequestSerial(b *testing.B) {
	m := New(prometheus.NewRegistry())
	m.Request("jira", 200)
	b.ReportAllocs()
	for b.Loop() {
		m.Request("jira", 200)
	}
}

func TestSCIMBrake(t *testing.T) {
	m, reg := newTest(t)
	m.SCIMHeld("okta")
	m.SCIMHeld("okta")
	m.SCIMHeld("entra")
	m.SetSCIMHolds(map[string]int{"okta": 2, "entra": 1, "google": 0})
	// entra left the config and its holds were settled.
	m.SetSCIMHolds(map[string]int{"okta": 7, "google": 0})
	compare(t, reg, `
# HELP usher_scim_brake_held_total SCIM removals an IdP's brake held back for an admin, by IdP (counted by the replica that held them).
# TYPE usher_scim_brake_held_total counter
usher_scim_brake_held_total{idp="entra"} 1
usher_scim_brake_held_total{idp="okta"} 2
# HELP usher_scim_brake_holds SCIM removals an IdP's brake holds now, waiting for an admin to release or drop them, by IdP (read from the store, alike on every replica).
# TYPE usher_scim_brake_holds gauge
usher_scim_brake_holds{idp="google"} 0
usher_scim_brake_holds{idp="okta"} 7
`, "usher_scim_brake_held_total", "usher_scim_brake_holds")
	var nilM *Metrics
	nilM.SCIMHeld("okta")
	nilM.SetSCIMHolds(map[string]int{"okta": 1})
}
