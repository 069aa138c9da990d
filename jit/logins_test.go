package jit

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/usherhq/usher/store"
)

// loginRecorder records the store calls of LoginTimes, failing while
// down is set.
type loginRecorder struct {
	mu      sync.Mutex
	down    bool
	single  int             // RecordLogin calls
	batches [][]store.Login // RecordLogins calls that succeeded
}

func (r *loginRecorder) RecordLogin(context.Context, string, string, time.Time) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.single++
	return nil
}

func (r *loginRecorder) RecordLogins(_ context.Context, ls ...store.Login) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.down {
		return errors.New("database down")
	}
	r.batches = append(r.batches, slices.Clone(ls))
	return nil
}

// TestLoginTimesBatch: noted times are written as one batch holding the
// newest time per identity; a failed batch is kept for the next flush,
// where a newer time noted meanwhile wins.
func TestLoginTimesBatch(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	t0 := time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)
	rec := &loginRecorder{}
	l := &LoginTimes{Store: rec, Log: slog.New(slog.DiscardHandler)}
	l.running = true // as under Run, whose ticker this test replaces by Flush

	note := func(sub string, at time.Time) {
		t.Helper()
		if err := l.Note(ctx, "okta", sub, at); err != nil {
			t.Fatalf("Note: %v", err)
		}
	}
	note("a", t0.Add(2*time.Second))
	note("a", t0.Add(time.Second)) // older: the newer one stays
	note("b", t0)
	l.Flush(ctx)
	want := "okta/a@2 okta/b@0"
	if len(rec.batches) != 1 || batchString(rec.batches[0], t0) != want {
		t.Fatalf("batches = %v, want one: %s", rec.batches, want)
	}

	rec.down = true
	note("a", t0.Add(3*time.Second))
	note("c", t0.Add(3*time.Second))
	l.Flush(ctx) // fails: kept
	note("c", t0.Add(4*time.Second))
	rec.down = false
	l.Flush(ctx)
	want = "okta/a@3 okta/c@4"
	if len(rec.batches) != 2 || batchString(rec.batches[1], t0) != want {
		t.Fatalf("batches = %v, want a second: %s", rec.batches, want)
	}
	l.Flush(ctx) // nothing left
	if len(rec.batches) != 2 || rec.single != 0 {
		t.Fatalf("after an empty flush: %d batches, %d single writes; want 2 and 0", len(rec.batches), rec.single)
	}
}

// TestLoginTimesWithoutRun: with no Run loop, a login time is written at
// once.
func TestLoginTimesWithoutRun(t *testing.T) {
	t.Parallel()
	rec := &loginRecorder{}
	l := &LoginTimes{Store: rec}
	if err := l.Note(context.Background(), "okta", "a", time.Now()); err != nil {
		t.Fatal(err)
	}
	if rec.single != 1 || len(rec.batches) != 0 {
		t.Fatalf("%d single writes, %d batches; want 1 and 0", rec.single, len(rec.batches))
	}
}

// batchString renders a batch sorted, times as seconds after t0.
func batchString(ls []store.Login, t0 time.Time) string {
	var out []string
	for _, l := range ls {
		out = append(out, l.IdP+"/"+l.Subject+"@"+seconds(l.At.Sub(t0)))
	}
	slices.Sort(out)
	return strings.Join(out, " ")
}

func seconds(d time.Duration) string { return strings.TrimSuffix(d.String(), "s") }
