package storetest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/usherhq/usher/store"
)

// badText is text no backend may store: PostgreSQL refuses a NUL byte and
// invalid UTF-8, so both backends refuse them, alike, as ErrInvalid.
var badText = map[string]string{
	"NUL":     "al\x00ice",
	"invalid": "al\xffice",
}

// textCalls calls every method that takes text, with bad in one text
// argument each; the other arguments are valid.
func textCalls(s store.Store, bad string) map[string]func(ctx context.Context) error {
	t0 := base
	return map[string]func(ctx context.Context) error{
		"Bind idp": func(ctx context.Context) error {
			_, err := s.Bind(ctx, store.Binding{IdP: bad, Subject: "1", Username: "alice"})
			return err
		},
		"Bind subject": func(ctx context.Context) error {
			_, err := s.Bind(ctx, store.Binding{IdP: "okta", Subject: bad, Username: "alice"})
			return err
		},
		"Bind username": func(ctx context.Context) error {
			_, err := s.Bind(ctx, store.Binding{IdP: "okta", Subject: "1", Username: bad})
			return err
		},
		"Binding":           func(ctx context.Context) error { _, err := s.Binding(ctx, "okta", bad); return err },
		"BindingByUsername": func(ctx context.Context) error { _, err := s.BindingByUsername(ctx, bad); return err },
		"RecordLogin":       func(ctx context.Context) error { return s.RecordLogin(ctx, bad, "1", t0) },
		"RecordLogins": func(ctx context.Context) error {
			return s.RecordLogins(ctx, store.Login{IdP: "okta", Subject: "1", At: t0}, store.Login{IdP: "okta", Subject: bad, At: t0})
		},
		"Append": func(ctx context.Context) error {
			return s.Append(ctx, store.Event{Action: "login"}, store.Event{Action: "login", Username: bad})
		},
		"Audit": func(ctx context.Context) error { _, err := s.Audit(ctx, store.AuditFilter{Username: bad}); return err },

		"AppState": func(ctx context.Context) error { _, err := s.AppState(ctx, "jira", bad); return err },
		"Recorded subject": func(ctx context.Context) error {
			_, err := s.Recorded(ctx, "okta", bad, "alice", "jira")
			return err
		},
		"Recorded user": func(ctx context.Context) error {
			_, err := s.Recorded(ctx, "okta", "1", bad, "jira")
			return err
		},
		"Recorded app": func(ctx context.Context) error {
			_, err := s.Recorded(ctx, "okta", "1", "alice", "jira", bad)
			return err
		},
		"PutAppState": func(ctx context.Context) error {
			return s.PutAppState(ctx, store.AppState{App: "jira", Username: "alice", Hash: bad})
		},
		"AppStates": func(ctx context.Context) error { _, err := s.AppStates(ctx, "jira", bad, 10); return err },
		"Managed":   func(ctx context.Context) error { _, err := s.Managed(ctx, bad, "alice"); return err },
		"AddManaged": func(ctx context.Context) error {
			return s.AddManaged(ctx, store.Membership{App: "jira", Username: "alice", Group: bad})
		},
		"RemoveManaged": func(ctx context.Context) error { return s.RemoveManaged(ctx, "jira", "alice", "ok", bad) },
		"Enqueue": func(ctx context.Context) error {
			_, err := s.Enqueue(ctx, store.Job{Kind: "reconcile", App: "jira", Key: bad})
			return err
		},
		"Claim":      func(ctx context.Context) error { _, err := s.Claim(ctx, bad, t0, 10, time.Minute); return err },
		"Complete":   func(ctx context.Context) error { return s.Complete(ctx, 1, bad) },
		"Retry":      func(ctx context.Context) error { return s.Retry(ctx, 1, bad, t0, "failed") },
		"PutProfile": func(ctx context.Context) error { return s.PutProfile(ctx, "okta", bad, []byte("{}"), t0) },
		"Profile":    func(ctx context.Context) error { _, _, err := s.Profile(ctx, bad, "1"); return err },

		"SeenOnce": func(ctx context.Context) error { _, err := s.SeenOnce(ctx, bad, t0.Add(time.Hour)); return err },
		"Revoke": func(ctx context.Context) error {
			_, err := s.Revoke(ctx, store.Revocation{IdP: "okta", Subject: bad, Until: t0.Add(time.Hour)})
			return err
		},
		"Lease":        func(ctx context.Context) error { _, err := s.Lease(ctx, "sweep", bad, time.Minute); return err },
		"ReleaseLease": func(ctx context.Context) error { return s.ReleaseLease(ctx, bad, "owner") },

		"PutSCIMUser": func(ctx context.Context) error { return s.PutSCIMUser(ctx, scimUser("okta", "u1", bad, "")) },
		"PutSCIMUser externalId": func(ctx context.Context) error {
			return s.PutSCIMUser(ctx, scimUser("okta", "u1", "alice", bad))
		},
		"SCIMUser":       func(ctx context.Context) error { _, err := s.SCIMUser(ctx, "okta", bad); return err },
		"FindSCIMUser":   func(ctx context.Context) error { _, err := s.FindSCIMUser(ctx, "okta", "userName", bad); return err },
		"SCIMUsers":      func(ctx context.Context) error { _, _, err := s.SCIMUsers(ctx, bad, 0, 10); return err },
		"DeleteSCIMUser": func(ctx context.Context) error { return s.DeleteSCIMUser(ctx, "okta", bad) },
		"PutSCIMGroup": func(ctx context.Context) error {
			return s.PutSCIMGroup(ctx, store.SCIMGroup{IdP: "okta", ID: "g1", DisplayName: bad})
		},
		"PutSCIMGroup member": func(ctx context.Context) error {
			return s.PutSCIMGroup(ctx, store.SCIMGroup{IdP: "okta", ID: "g1", DisplayName: "Team", Members: []string{bad}})
		},
		"SCIMGroup": func(ctx context.Context) error { _, err := s.SCIMGroup(ctx, bad, "g1"); return err },
		"FindSCIMGroup": func(ctx context.Context) error {
			_, err := s.FindSCIMGroup(ctx, "okta", "displayName", bad)
			return err
		},
		"SCIMGroups":      func(ctx context.Context) error { _, _, err := s.SCIMGroups(ctx, bad, 0, 10); return err },
		"DeleteSCIMGroup": func(ctx context.Context) error { return s.DeleteSCIMGroup(ctx, bad, "g1") },
		"SCIMUserGroups":  func(ctx context.Context) error { _, err := s.SCIMUserGroups(ctx, "okta", bad); return err },

		"StartSweep":      func(ctx context.Context) error { _, err := s.StartSweep(ctx, store.SweepRun{Policy: bad}); return err },
		"FinishSweep":     func(ctx context.Context) error { return s.FinishSweep(ctx, store.SweepRun{ID: 1, State: bad}) },
		"UnfinishedSweep": func(ctx context.Context) error { _, err := s.UnfinishedSweep(ctx, bad); return err },
		"MarkSwept":       func(ctx context.Context) error { return s.MarkSwept(ctx, 1, bad) },
		"Bindings":        func(ctx context.Context) error { _, err := s.Bindings(ctx, "okta\x00"+bad, 10); return err },
		"SetAccessExpiry": func(ctx context.Context) error { return s.SetAccessExpiry(ctx, "okta", bad, t0) },
		"AccessExpiry":    func(ctx context.Context) error { _, err := s.AccessExpiry(ctx, bad, "1"); return err },

		"Brake idp": func(ctx context.Context) error {
			_, err := s.Brake(ctx, store.BrakeCheck{IdP: bad, Subject: "1", At: t0, Since: t0, Limit: 1})
			return err
		},
		"Brake subject": func(ctx context.Context) error {
			_, err := s.Brake(ctx, store.BrakeCheck{IdP: "okta", Subject: bad, At: t0, Since: t0, Limit: 1})
			return err
		},
		"Brake username": func(ctx context.Context) error {
			_, err := s.Brake(ctx, store.BrakeCheck{IdP: "okta", Subject: "1", At: t0, Since: t0, Hold: store.Hold{Username: bad}})
			return err
		},
		"Hold":       func(ctx context.Context) error { _, err := s.Hold(ctx, "okta", bad); return err },
		"Holds":      func(ctx context.Context) error { _, _, err := s.Holds(ctx, bad, 0, 10); return err },
		"DeleteHold": func(ctx context.Context) error { return s.DeleteHold(ctx, "okta", bad) },

		"PutBlob":    func(ctx context.Context) error { return s.PutBlob(ctx, "acme/"+bad, []byte("x")) },
		"Blob":       func(ctx context.Context) error { _, _, err := s.Blob(ctx, bad); return err },
		"DeleteBlob": func(ctx context.Context) error { return s.DeleteBlob(ctx, bad) },
		"BlobKeys":   func(ctx context.Context) error { _, err := s.BlobKeys(ctx, bad, true); return err },
	}
}

// testBadText: text with a NUL byte or invalid UTF-8 is refused with
// ErrInvalid (not a database error that looks temporary, which a SCIM IdP
// would retry forever), by every method, and nothing is stored.
func testBadText(t *testing.T, s store.Store) {
	ctx := context.Background()
	for kind, bad := range badText {
		for name, call := range textCalls(s, bad) {
			err := call(ctx)
			if !errors.Is(err, store.ErrInvalid) || errors.Is(err, store.ErrUnavailable) {
				t.Errorf("%s with %s text = %v, want ErrInvalid", name, kind, err)
			}
		}
	}
	empty := map[string]func() (int, error){
		"bindings": func() (int, error) { bs, err := s.Bindings(ctx, "", 10); return len(bs), err },
		"audit":    func() (int, error) { evs, err := s.Audit(ctx, store.AuditFilter{}); return len(evs), err },
		"app states": func() (int, error) {
			as, err := s.AppStates(ctx, "jira", "", 10)
			return len(as), err
		},
		"managed":     func() (int, error) { ms, err := s.Managed(ctx, "jira", "alice"); return len(ms), err },
		"jobs":        func() (int, error) { st, err := s.Queue(ctx); return st.Depth, err },
		"scim users":  func() (int, error) { _, n, err := s.SCIMUsers(ctx, "okta", 0, 0); return n, err },
		"scim groups": func() (int, error) { _, n, err := s.SCIMGroups(ctx, "okta", 0, 0); return n, err },
		"sweep runs":  func() (int, error) { rs, err := s.SweepRuns(ctx, 10); return len(rs), err },
		"blobs":       func() (int, error) { ks, err := s.BlobKeys(ctx, "", true); return len(ks), err },
	}
	for what, count := range empty {
		if n, err := count(); err != nil || n != 0 {
			t.Errorf("%s after refused writes: %d, %v; want none", what, n, err)
		}
	}
	if _, err := s.SeenOnce(ctx, "alice", base.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
}

// testDeadlinePassed: a call whose deadline has passed fails as the
// database not answering in time, ErrUnavailable, keeping
// context.DeadlineExceeded for the caller to see.
func testDeadlinePassed(t *testing.T, s store.Store) {
	mustBind(t, s, store.Binding{IdP: "okta", Subject: "123", Username: "alice"})
	ctx, cancel := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
	defer cancel()
	calls := map[string]func() error{
		"Bind": func() error {
			_, err := s.Bind(ctx, store.Binding{IdP: "okta", Subject: "456", Username: "bob"})
			return err
		},
		"Binding":  func() error { _, err := s.Binding(ctx, "okta", "123"); return err },
		"Append":   func() error { return s.Append(ctx, event(1, base)) },
		"AppState": func() error { _, err := s.AppState(ctx, "jira", "alice"); return err },
		"Recorded": func() error {
			_, err := s.Recorded(ctx, "okta", "123", "alice", "jira", "confluence")
			return err
		},
		"Claim": func() error { _, err := s.Claim(ctx, "w", base, 1, time.Minute); return err },
		"SCIMUsers": func() error {
			_, _, err := s.SCIMUsers(ctx, "okta", 0, 10)
			return err
		},
		"Ping": func() error { return s.Ping(ctx) },
	}
	for name, call := range calls {
		if err := call(); !errors.Is(err, store.ErrUnavailable) || !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("%s past its deadline = %v, want ErrUnavailable and context.DeadlineExceeded", name, err)
		}
	}
	if _, err := s.BindingByUsername(context.Background(), "bob"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Bind past its deadline stored bob: %v", err)
	}
}

// testFreeText: free text recording what happened elsewhere is stored
// with NUL and invalid UTF-8 replaced by U+FFFD, never refused, and the
// same in every backend; so is an error naming refused input, which a
// caller may well audit.
func testFreeText(t *testing.T, s store.Store) {
	ctx := context.Background()
	want := map[string]string{"NUL": "al\uFFFDice", "invalid": "al\uFFFDice"}
	for kind, bad := range badText {
		if err := s.Append(ctx, store.Event{Action: "app.error", Detail: "jira said: " + bad}); err != nil {
			t.Fatalf("Append with %s text in Detail: %v", kind, err)
		}
		evs, err := s.Audit(ctx, store.AuditFilter{Limit: 1})
		if err != nil || len(evs) != 1 || evs[0].Detail != "jira said: "+want[kind] {
			t.Errorf("Detail with %s text read back as %+v, %v; want %q", kind, evs, err, "jira said: "+want[kind])
		}

		id, err := s.Enqueue(ctx, store.Job{Kind: "reconcile", App: "jira", Key: kind})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Claim(ctx, "w", time.Now(), 10, time.Minute); err != nil {
			t.Fatal(err)
		}
		if err := s.Retry(ctx, id, "w", base, bad); err != nil {
			t.Fatalf("Retry with %s text as the last error: %v", kind, err)
		}
		st, err := s.Queue(ctx)
		if err != nil || len(st.LastErrors) == 0 || st.LastErrors[0].LastError != want[kind] {
			t.Errorf("last error with %s text read back as %+v, %v; want %q", kind, st.LastErrors, err, want[kind])
		}

		run, err := s.StartSweep(ctx, store.SweepRun{Policy: "p", Reason: bad})
		if err == nil {
			err = s.FinishSweep(ctx, store.SweepRun{ID: run, State: "failed", Reason: bad})
		}
		if err != nil {
			t.Fatalf("sweep with %s text as the reason: %v", kind, err)
		}
		if runs, err := s.SweepRuns(ctx, 1); err != nil || runs[0].Reason != want[kind] {
			t.Errorf("sweep reason with %s text read back as %+v, %v; want %q", kind, runs, err, want[kind])
		}

		_, err = s.Bind(ctx, store.Binding{IdP: "okta", Subject: bad, Username: "alice"})
		if !errors.Is(err, store.ErrInvalid) {
			t.Fatalf("Bind with %s text = %v, want ErrInvalid", kind, err)
		}
		if err := s.Append(ctx, store.Event{Action: "login.refused", Detail: err.Error()}); err != nil {
			t.Errorf("Append of the refusal's error message: %v", err)
		}
	}
}
