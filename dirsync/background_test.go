package dirsync

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestScheduledSync(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.seed()
	s := e.syncer(t, Config{Automatic: true, Scope: "v1", Every: time.Hour})
	manual := e.syncer(t, Config{Automatic: true, Scope: "v1"}) // no schedule
	b, err := Start([]*Syncer{s, manual}, e.clock)
	must(t, err)
	defer b.Stop()

	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := e.clock.BlockUntilContext(ctx, 1); err != nil {
		t.Fatalf("the scheduler never armed its timer: %v", err)
	}
	e.clock.Advance(time.Hour)
	runs := waitRuns(t, s, 1)
	if runs[0].By != "schedule" || runs[0].Created != 3 {
		t.Errorf("scheduled run %+v", runs[0])
	}
	b.Stop()
	if e.dir.pulls != 1 {
		t.Errorf("%d pulls, want 1 (the manual directory is not scheduled)", e.dir.pulls)
	}
}

func TestTrigger(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.seed()
	s := e.syncer(t, Config{Automatic: true, Scope: "v1"})
	b, err := Start([]*Syncer{s}, e.clock)
	must(t, err)
	defer b.Stop()

	// A run in progress in this process: a trigger is refused at once.
	s.running.Lock()
	if err := b.Trigger(s, Options{Full: true, By: "admin:root"}); !errors.Is(err, ErrBusy) {
		t.Errorf("trigger while running: %v", err)
	}
	s.running.Unlock()

	must(t, b.Trigger(s, Options{Full: true, By: "admin:root"}))
	runs := waitRuns(t, s, 1)
	if runs[0].By != "admin:root" || !runs[0].Complete || runs[0].Created != 3 {
		t.Errorf("runs %+v", runs)
	}
	b.Stop()
	if err := b.Trigger(s, Options{}); err == nil {
		t.Error("a stopped Background took a trigger")
	}
}

// waitRuns waits until s has recorded n runs.
func waitRuns(t *testing.T, s *Syncer, n int) []Result {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		runs, err := s.Runs(t.Context())
		must(t, err)
		if len(runs) >= n {
			return runs
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d runs recorded, want %d", len(runs), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
