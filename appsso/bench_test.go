package appsso_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/usherhq/usher/appsso"
	"github.com/usherhq/usher/session"
)

// BenchmarkCodeFlow is the whole code flow for a person with a usher
// session, as the provider serves it (in process, SQLite store): authorize
// (session check, code) → token (client authentication, code consumed
// once in the store, ID token signed) → userinfo. Flows run in parallel,
// as browsers and apps would. The target is ≥ 1,000 flows/s on 2 cores.
func BenchmarkCodeFlow(b *testing.B) {
	for _, alg := range []string{"RS256", "ES256"} {
		b.Run(alg, func(b *testing.B) {
			h := newHarness(b, harnessOptions{NoJira: true, Clients: []appsso.Client{
				{ID: "a", Secret: "secret-a", App: "wiki", RedirectURIs: []string{appA}, SigningAlg: alg},
			}})
			rec := httptest.NewRecorder()
			s := &session.Session{ID: randomID(), IdP: "acme", Subject: "00u-alice", Username: "alice", Email: "alice@acme.test",
				DisplayName: "Alice Archer", Created: h.clock.Now(), Seen: h.clock.Now()}
			if err := h.codec.Save(rec, s); err != nil {
				b.Fatal(err)
			}
			cookie := rec.Result().Cookies()[0]
			authURL := h.op.Issuer() + "/authorize?" + url.Values{"client_id": {"a"}, "redirect_uri": {appA}, "response_type": {"code"},
				"scope": {"openid profile email"}, "state": {"state-value-of-some-length-0123456789"}, "nonce": {"nonce-value-0123456789"}}.Encode()
			// Requests in flight per core: while one waits for the store's
			// commit, another signs.
			b.SetParallelism(4)
			b.ReportAllocs()
			b.ResetTimer()
			start, cpu0 := time.Now(), cpuTime()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if err := oneFlow(h.op, cookie, authURL); err != "" {
						b.Error(err)
						return
					}
				}
			})
			// flows/s depends on what else the machine runs; the CPU time a
			// flow costs does not (much): 2 cores / cpu-µs is the ceiling
			// on an idle machine.
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "flows/s")
			b.ReportMetric(float64((cpuTime()-cpu0).Microseconds())/float64(b.N), "cpu-µs/flow")
		})
	}
}

func oneFlow(op http.Handler, cookie *http.Cookie, authURL string) string {
	req := httptest.NewRequest(http.MethodGet, authURL, nil)
	req.AddCookie(cookie)
	w := httptest.NewRecorder()
	op.ServeHTTP(w, req)
	loc, err := url.Parse(w.Header().Get("Location"))
	if w.Code != http.StatusFound || err != nil || loc.Query().Get("code") == "" {
		return "authorize: " + w.Header().Get("Location")
	}
	form := url.Values{"grant_type": {"authorization_code"}, "code": {loc.Query().Get("code")}, "redirect_uri": {appA}}
	req = httptest.NewRequest(http.MethodPost, "/usher/op/token", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth("a", "secret-a")
	w = httptest.NewRecorder()
	op.ServeHTTP(w, req)
	var tok struct {
		AccessToken string `json:"access_token"`
		IDToken     string `json:"id_token"`
	}
	if w.Code != http.StatusOK || json.Unmarshal(w.Body.Bytes(), &tok) != nil || tok.IDToken == "" {
		return "token: " + w.Body.String()
	}
	req = httptest.NewRequest(http.MethodGet, "/usher/op/userinfo", nil)
	req.Header.Set("Authorization", "Bearer "+tok.AccessToken)
	w = httptest.NewRecorder()
	op.ServeHTTP(w, req)
	if w.Code != http.StatusOK || !strings.Contains(w.Body.String(), `"preferred_username":"alice"`) {
		return "userinfo: " + w.Body.String()
	}
	return ""
}

// cpuTime is the process's user and system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
