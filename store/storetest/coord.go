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

// RunCoordination runs the store.Coordination conformance suite as
// subtests. open must return a store on a fresh, empty, migrated database
// that takes its time from now; the suite closes it if it is an io.Closer.
func RunCoordination(t *testing.T, open func(t *testing.T, now func() time.Time) store.Coordination) {
	runClocked(t, open, []clockedTest[store.Coordination]{
		{"SeenOnce", testSeenOnce},
		{"SeenOnceConcurrent", testSeenOnceConcurrent},
		{"Revocations", testRevocations},
		{"Lease", testLease},
		{"LeaseRace", testLeaseRace},
		{"CoordinationContextCanceled", testCoordinationCanceled},
	})
}

func seen(t *testing.T, s store.Coordination, key string, expires time.Time) bool {
	t.Helper()
	replay, err := s.SeenOnce(context.Background(), key, expires)
	if err != nil {
		t.Fatalf("SeenOnce(%s): %v", key, err)
	}
	return replay
}

func testSeenOnce(t *testing.T, s store.Coordination, clock *suiteClock) {
	steps := []struct {
		advance time.Duration
		key     string
		expires time.Duration // after base
		want    bool
	}{
		{0, "assertion-1", time.Minute, false},
		{0, "assertion-1", time.Minute, true},
		{0, "assertion-2", time.Minute, false},
		{59 * time.Second, "assertion-1", time.Minute, true},
		// At its expiry a record counts as absent and is replaced.
		{time.Second, "assertion-1", 5 * time.Minute, false},
		{0, "assertion-1", 5 * time.Minute, true},
		{2 * time.Minute, "assertion-1", 6 * time.Minute, true},
		{0, "assertion-2", 10 * time.Minute, false},
	}
	for i, st := range steps {
		clock.Add(st.advance)
		if got := seen(t, s, st.key, base.Add(st.expires)); got != st.want {
			t.Fatalf("step %d: SeenOnce(%s) at %v = %v, want %v", i, st.key, clock.Now().Sub(base), got, st.want)
		}
	}
	// Expired records are pruned as a side effect; many of them do not
	// stop the store from answering correctly.
	for i := range 250 {
		seen(t, s, fmt.Sprint("old-", i), clock.Now().Add(time.Second))
	}
	clock.Add(time.Second)
	for i := range 250 {
		if seen(t, s, fmt.Sprint("old-", i), clock.Now().Add(time.Minute)) {
			t.Fatalf("expired old-%d reported as a replay", i)
		}
	}
	if _, err := s.SeenOnce(context.Background(), "", base); err == nil {
		t.Error("SeenOnce of an empty key succeeded")
	}
}

// Replicas checking one assertion at once: exactly one sees it first.
func testSeenOnceConcurrent(t *testing.T, s store.Coordination, clock *suiteClock) {
	const racers = 20
	for round := range 5 {
		key := fmt.Sprint("assertion-", round)
		// Round 3 races over an expired record, which must be replaced once.
		if round == 4 {
			key = "assertion-3"
			clock.Add(time.Hour)
		}
		var (
			wg    sync.WaitGroup
			mu    sync.Mutex
			fresh int
			errs  []error
		)
		start := make(chan struct{})
		for range racers {
			wg.Go(func() {
				<-start
				replay, err := s.SeenOnce(context.Background(), key, clock.Now().Add(time.Minute))
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					errs = append(errs, err)
				} else if !replay {
					fresh++
				}
			})
		}
		close(start)
		wg.Wait()
		for _, err := range errs {
			t.Fatalf("SeenOnce: %v", err)
		}
		if fresh != 1 {
			t.Fatalf("round %d: %d of %d racers saw %s first, want exactly 1", round, fresh, racers, key)
		}
	}
}

func revocations(t *testing.T, s store.Coordination, after int64) []store.Revocation {
	t.Helper()
	rs, err := s.Revocations(context.Background(), after)
	if err != nil {
		t.Fatalf("Revocations(%d): %v", after, err)
	}
	for _, r := range rs {
		inUTC(t, "Revocations", r.Before, r.Until, r.CreatedAt)
	}
	return rs
}

func seqs(rs []store.Revocation) []int64 {
	var s []int64
	for _, r := range rs {
		s = append(s, r.Seq)
	}
	return s
}

func testRevocations(t *testing.T, s store.Coordination, clock *suiteClock) {
	ctx := context.Background()
	if rs := revocations(t, s, 0); len(rs) != 0 {
		t.Fatalf("Revocations of an empty store = %+v", rs)
	}
	in := []store.Revocation{
		{SessionID: "s1", Until: base.Add(time.Hour), CreatedAt: base.Add(-time.Minute)},
		{IdP: "okta", Subject: "123", Before: base, Until: base.Add(10 * time.Minute)},
		{SessionID: "s3", Until: base.Add(2 * time.Hour)},
	}
	var got []int64
	for _, r := range in {
		seq, err := s.Revoke(ctx, r)
		if err != nil {
			t.Fatalf("Revoke(%+v): %v", r, err)
		}
		if len(got) > 0 && seq <= got[len(got)-1] {
			t.Fatalf("Revoke seq %d after %d, want increasing", seq, got[len(got)-1])
		}
		got = append(got, seq)
	}
	rs := revocations(t, s, 0)
	if !slices.Equal(seqs(rs), got) {
		t.Fatalf("Revocations(0) = %v, want %v", seqs(rs), got)
	}
	for i, r := range rs {
		want := in[i]
		want.Seq = got[i]
		if want.CreatedAt.IsZero() {
			want.CreatedAt = clock.Now() // the store's clock
		}
		if r.SessionID != want.SessionID || r.IdP != want.IdP || r.Subject != want.Subject ||
			!r.Before.Equal(msOrZero(want.Before)) || !r.Until.Equal(ms(want.Until)) || !r.CreatedAt.Equal(ms(want.CreatedAt)) {
			t.Fatalf("revocation %d:\n got %+v\nwant %+v", i, r, want)
		}
	}
	if rs := revocations(t, s, got[0]); !slices.Equal(seqs(rs), got[1:]) {
		t.Fatalf("Revocations(after %d) = %v, want %v", got[0], seqs(rs), got[1:])
	}
	if rs := revocations(t, s, got[2]); len(rs) != 0 {
		t.Fatalf("Revocations(after the last) = %v, want none", seqs(rs))
	}

	// Past its Until a revocation is forgotten.
	clock.Add(10 * time.Minute)
	if rs := revocations(t, s, 0); !slices.Equal(seqs(rs), []int64{got[0], got[2]}) {
		t.Fatalf("Revocations after the second's Until = %v, want %v", seqs(rs), []int64{got[0], got[2]})
	}
	// Once every revocation is pruned, seqs still increase: a replica that
	// saw the old ones must see the new one.
	clock.Add(3 * time.Hour)
	if rs := revocations(t, s, 0); len(rs) != 0 {
		t.Fatalf("Revocations after every Until = %v, want none", seqs(rs))
	}
	seq, err := s.Revoke(ctx, store.Revocation{SessionID: "s4", Until: clock.Now().Add(time.Minute)})
	if err != nil {
		t.Fatalf("Revoke: %v", err)
	}
	if seq <= got[2] {
		t.Fatalf("seq after pruning = %d, want > %d", seq, got[2])
	}
	if rs := revocations(t, s, got[2]); !slices.Equal(seqs(rs), []int64{seq}) {
		t.Fatalf("Revocations(after %d) = %v, want [%d]", got[2], seqs(rs), seq)
	}

	for _, bad := range []store.Revocation{
		{Until: base.Add(time.Hour)},                 // revokes nothing
		{IdP: "okta", Until: base.Add(time.Hour)},    // every subject of an IdP
		{Subject: "123", Until: base.Add(time.Hour)}, // a subject of no IdP
		{SessionID: "s1"},                            // never forgotten
	} {
		if _, err := s.Revoke(ctx, bad); !errors.Is(err, store.ErrInvalid) {
			t.Errorf("Revoke(%+v) = %v, want a validation error (ErrInvalid)", bad, err)
		}
	}
}

func lease(t *testing.T, s store.Coordination, name, owner string, ttl time.Duration) bool {
	t.Helper()
	held, err := s.Lease(context.Background(), name, owner, ttl)
	if err != nil {
		t.Fatalf("Lease(%s, %s): %v", name, owner, err)
	}
	return held
}

func release(t *testing.T, s store.Coordination, name, owner string) {
	t.Helper()
	if err := s.ReleaseLease(context.Background(), name, owner); err != nil {
		t.Fatalf("ReleaseLease(%s, %s): %v", name, owner, err)
	}
}

func testLease(t *testing.T, s store.Coordination, clock *suiteClock) {
	const ttl = 30 * time.Second
	steps := []struct {
		advance time.Duration
		release bool // release instead of lease
		name    string
		owner   string
		want    bool
	}{
		{0, false, "sweep", "a", true},
		{0, false, "sweep", "b", false},
		{0, false, "retry", "b", true},                // another name is another lease
		{10 * time.Second, false, "sweep", "a", true}, // renewal: now runs to 40s
		{25 * time.Second, false, "sweep", "b", false},
		{0, true, "sweep", "b", false}, // not b's to release
		{0, false, "sweep", "b", false},
		{5 * time.Second, false, "sweep", "b", true}, // a's expired at 40s
		{0, false, "sweep", "a", false},
		{0, true, "sweep", "a", false},
		{0, false, "sweep", "b", true},
		{0, true, "sweep", "b", false},
		{0, false, "sweep", "a", true}, // released: free at once
		{0, false, "retry", "a", true}, // b's ran out at 30s
	}
	for i, st := range steps {
		clock.Add(st.advance)
		if st.release {
			release(t, s, st.name, st.owner)
			continue
		}
		if got := lease(t, s, st.name, st.owner, ttl); got != st.want {
			t.Fatalf("step %d at %v: Lease(%s, %s) = %v, want %v", i, clock.Now().Sub(base), st.name, st.owner, got, st.want)
		}
	}
	release(t, s, "nothing", "a")
	for _, bad := range [][2]string{{"", "a"}, {"sweep", ""}} {
		if _, err := s.Lease(context.Background(), bad[0], bad[1], ttl); !errors.Is(err, store.ErrInvalid) {
			t.Errorf("Lease(%q, %q) = %v, want a validation error (ErrInvalid)", bad[0], bad[1], err)
		}
	}
	if _, err := s.Lease(context.Background(), "sweep", "a", 0); !errors.Is(err, store.ErrInvalid) {
		t.Error("Lease with no ttl succeeded")
	}
}

// Replicas starting at once elect exactly one leader, and keep it.
func testLeaseRace(t *testing.T, s store.Coordination, clock *suiteClock) {
	const racers = 20
	race := func() []string {
		var (
			wg      sync.WaitGroup
			mu      sync.Mutex
			holders []string
			errs    []error
		)
		start := make(chan struct{})
		for i := range racers {
			wg.Go(func() {
				<-start
				owner := fmt.Sprint("replica-", i)
				held, err := s.Lease(context.Background(), "sweep", owner, time.Minute)
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					errs = append(errs, err)
				} else if held {
					holders = append(holders, owner)
				}
			})
		}
		close(start)
		wg.Wait()
		for _, err := range errs {
			t.Fatalf("Lease: %v", err)
		}
		return holders
	}
	first := race()
	if len(first) != 1 {
		t.Fatalf("holders = %v, want exactly one", first)
	}
	clock.Add(30 * time.Second)
	if again := race(); len(again) != 1 || again[0] != first[0] {
		t.Fatalf("holders while %s's lease runs = %v, want only it (renewing)", first[0], again)
	}
	// The renewal ran to 90s; past it, a new race has one winner again.
	clock.Add(time.Minute)
	if next := race(); len(next) != 1 {
		t.Fatalf("holders after expiry = %v, want exactly one", next)
	}
}

func testCoordinationCanceled(t *testing.T, s store.Coordination, _ *suiteClock) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	calls := map[string]func() error{
		"SeenOnce": func() error { _, err := s.SeenOnce(ctx, "k", base.Add(time.Hour)); return err },
		"Revoke": func() error {
			_, err := s.Revoke(ctx, store.Revocation{SessionID: "s", Until: base.Add(time.Hour)})
			return err
		},
		"Revocations":  func() error { _, err := s.Revocations(ctx, 0); return err },
		"Lease":        func() error { _, err := s.Lease(ctx, "sweep", "a", time.Minute); return err },
		"ReleaseLease": func() error { return s.ReleaseLease(ctx, "sweep", "a") },
	}
	for name, call := range calls {
		// The caller gave up: that is not the database's fault.
		if err := call(); !errors.Is(err, context.Canceled) || errors.Is(err, store.ErrUnavailable) {
			t.Errorf("%s with canceled context = %v, want context.Canceled and not ErrUnavailable", name, err)
		}
	}
	if seen(t, s, "k", base.Add(time.Hour)) {
		t.Error("canceled SeenOnce recorded the key")
	}
	if rs := revocations(t, s, 0); len(rs) != 0 {
		t.Errorf("canceled Revoke left %d revocations", len(rs))
	}
}
