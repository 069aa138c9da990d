package storetest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/usherhq/usher/store"
)

// brake asks s whether idp's removal of subject at at passes a brake of
// limit within window.
func brake(t *testing.T, s store.Store, idp, subject string, at time.Time, window time.Duration, limit int) store.BrakeResult {
	t.Helper()
	res, err := s.Brake(context.Background(), store.BrakeCheck{
		IdP: idp, Subject: subject, At: at, Since: at.Add(-window), Limit: limit,
		Hold: store.Hold{Username: "user-" + subject, Reason: "scim: deactivated", People: 40, Window: window, SessionsRevoked: true},
	})
	if err != nil {
		t.Fatalf("Brake(%s/%s): %v", idp, subject, err)
	}
	return res
}

// testBrakeCounts: the window counts removals and holds together; the
// first ones pass, the rest are held, a person is never held twice, a
// repeated removal counts once, and removals age out of the window while
// holds do not.
func testBrakeCounts(t *testing.T, s store.Store) {
	const window = time.Hour
	type step struct {
		subject        string
		after          time.Duration // since base
		held, new      bool
		removed, holds int
	}
	steps := []step{
		{subject: "a", removed: 1},
		{subject: "b", after: time.Minute, removed: 2},
		{subject: "c", after: 2 * time.Minute, removed: 3},
		{subject: "d", after: 3 * time.Minute, held: true, new: true, removed: 3, holds: 1},
		// Held already: not held twice, nothing counted.
		{subject: "d", after: 4 * time.Minute, held: true, removed: 3, holds: 1},
		// Counted in this window already (a DELETE after a deactivation).
		{subject: "a", after: 5 * time.Minute, removed: 3, holds: 1},
		{subject: "e", after: 6 * time.Minute, held: true, new: true, removed: 3, holds: 2},
		// a, b and c leave the window; the holds stay: 0 + 2 < 3.
		{subject: "f", after: 62*time.Minute + time.Second, removed: 1, holds: 2},
		{subject: "g", after: 63 * time.Minute, held: true, new: true, removed: 1, holds: 3},
		// a's removal aged out: a new removal of a counts again, and is held.
		{subject: "a", after: 64 * time.Minute, held: true, new: true, removed: 1, holds: 4},
	}
	for i, st := range steps {
		got := brake(t, s, "okta", st.subject, base.Add(st.after), window, 3)
		if got.Held != st.held || got.New != st.new || got.Removed != st.removed || got.Holds != st.holds {
			t.Fatalf("step %d (%s at +%s): got held %v new %v removed %d holds %d; want held %v new %v removed %d holds %d",
				i, st.subject, st.after, got.Held, got.New, got.Removed, got.Holds, st.held, st.new, st.removed, st.holds)
		}
		if got.Held && (got.Hold.IdP != "okta" || got.Hold.Subject != st.subject) {
			t.Fatalf("step %d: hold %+v", i, got.Hold)
		}
	}
	// The numbers at the time stay with the hold.
	h, err := s.Hold(context.Background(), "okta", "e")
	if err != nil {
		t.Fatal(err)
	}
	want := store.Hold{IdP: "okta", Subject: "e", Username: "user-e", Reason: "scim: deactivated", HeldAt: ms(base.Add(6 * time.Minute)),
		Removed: 3, Holds: 1, People: 40, Limit: 3, Window: window, SessionsRevoked: true}
	if h != want {
		t.Fatalf("Hold:\n got %+v\nwant %+v", h, want)
	}
	inUTC(t, "HeldAt", h.HeldAt)

	// Another IdP's brake counts its own.
	if got := brake(t, s, "entra", "a", base.Add(65*time.Minute), window, 1); got.Held || got.Removed != 1 || got.Holds != 0 {
		t.Fatalf("entra's first removal: %+v", got)
	}
	// A limit of zero holds everything.
	if got := brake(t, s, "google", "a", base, window, 0); !got.Held || !got.New {
		t.Fatalf("limit 0: %+v", got)
	}
}

// testHolds: holds read back, page oldest first, count per IdP, and go
// once; a dropped person's next removal is decided afresh.
func testHolds(t *testing.T, s store.Store) {
	ctx := context.Background()
	// Limit 0: every removal is held. Two at the same time order by subject.
	for i, sub := range []string{"p3", "p1", "p2", "p0"} {
		at := base.Add(time.Duration(i) * time.Minute)
		if sub == "p0" {
			at = base.Add(2 * time.Minute)
		}
		if got := brake(t, s, "okta", sub, at, time.Hour, 0); !got.New {
			t.Fatalf("%s not held: %+v", sub, got)
		}
	}
	brake(t, s, "entra", "x", base, 90*time.Second+500*time.Millisecond, 0)

	page, total, err := s.Holds(ctx, "okta", 0, 10)
	if err != nil || total != 4 {
		t.Fatalf("Holds: %d, %v", total, err)
	}
	if got := subjects(page); !slices.Equal(got, []string{"p3", "p1", "p0", "p2"}) {
		t.Fatalf("Holds order = %v, want oldest first, then by subject", got)
	}
	page, total, err = s.Holds(ctx, "okta", 1, 2)
	if err != nil || total != 4 || !slices.Equal(subjects(page), []string{"p1", "p0"}) {
		t.Fatalf("Holds page 2: %v, %d, %v", subjects(page), total, err)
	}
	page, total, err = s.Holds(ctx, "okta", 0, 0)
	if err != nil || total != 4 || len(page) != 0 {
		t.Fatalf("Holds total only: %d holds, total %d, %v", len(page), total, err)
	}
	if _, total, err := s.Holds(ctx, "nobody", 0, 10); err != nil || total != 0 {
		t.Fatalf("Holds of an IdP without any: %d, %v", total, err)
	}
	counts, err := s.HoldCounts(ctx)
	if err != nil || len(counts) != 2 || counts["okta"] != 4 || counts["entra"] != 1 {
		t.Fatalf("HoldCounts = %v, %v", counts, err)
	}
	if h, err := s.Hold(ctx, "entra", "x"); err != nil || h.Window != 90*time.Second {
		t.Fatalf("window kept to the second: %+v, %v", h, err)
	}

	if err := s.DeleteHold(ctx, "okta", "p1"); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteHold(ctx, "okta", "p1"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("second DeleteHold = %v, want ErrNotFound", err)
	}
	if _, err := s.Hold(ctx, "okta", "p1"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Hold after delete = %v, want ErrNotFound", err)
	}
	if _, err := s.Hold(ctx, "entra", "p3"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("another IdP's hold = %v, want ErrNotFound", err)
	}
	// With room in the window again, p1's next removal passes.
	if got := brake(t, s, "okta", "p1", base.Add(5*time.Minute), time.Hour, 4); got.Held || got.Removed != 1 || got.Holds != 3 {
		t.Fatalf("p1 after its hold went: %+v", got)
	}
}

func subjects(hs []store.Hold) []string {
	out := make([]string, len(hs))
	for i, h := range hs {
		out[i] = h.Subject
	}
	return out
}

// testBrakeConcurrent: decisions for one IdP at once, as replicas make
// them, let exactly Limit removals pass.
func testBrakeConcurrent(t *testing.T, s store.Store) {
	const people, limit = 24, 5
	var (
		wg     sync.WaitGroup
		mu     sync.Mutex
		passed int
		errs   []error
	)
	for i := range people {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := s.Brake(context.Background(), store.BrakeCheck{
				IdP: "okta", Subject: fmt.Sprintf("s%02d", i), At: base, Since: base.Add(-time.Hour), Limit: limit,
			})
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, err)
			} else if !res.Held {
				passed++
			}
		}()
	}
	wg.Wait()
	if len(errs) > 0 {
		t.Fatalf("concurrent Brake: %v", errors.Join(errs...))
	}
	_, held, err := s.Holds(context.Background(), "okta", 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if passed != limit || held != people-limit {
		t.Fatalf("%d passed and %d held; want %d and %d", passed, held, limit, people-limit)
	}
}

func testBrakeInvalid(t *testing.T, s store.Store) {
	for name, c := range map[string]store.BrakeCheck{
		"no idp":         {Subject: "a", At: base, Since: base, Limit: 1},
		"no subject":     {IdP: "okta", At: base, Since: base, Limit: 1},
		"no time":        {IdP: "okta", Subject: "a", Limit: 1},
		"since after at": {IdP: "okta", Subject: "a", At: base, Since: base.Add(time.Second), Limit: 1},
		"negative limit": {IdP: "okta", Subject: "a", At: base, Since: base, Limit: -1},
	} {
		if _, err := s.Brake(context.Background(), c); !errors.Is(err, store.ErrInvalid) {
			t.Errorf("Brake with %s = %v, want ErrInvalid", name, err)
		}
	}
}
