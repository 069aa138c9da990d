package sweep

import (
	"context"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
)

func TestSchedule(t *testing.T) {
	e := newEnv(t, []person{{name: "leaver", scim: "inactive", lastLogin: t0}, {name: "alice", scim: "active", lastLogin: t0}})
	p := policy()
	p.Every = time.Hour
	manual := policy()
	manual.Name = "manual" // no schedule: never run by the scheduler
	clock := clockwork.NewFakeClock()
	stop, err := schedule(t.Context(), []*Sweeper{e.sweeper(t, p), e.sweeper(t, manual)}, "replica-a", time.Minute, clock)
	must(t, err)
	defer stop()

	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := clock.BlockUntilContext(ctx, 1); err != nil {
		t.Fatalf("scheduler never armed its timer: %v", err)
	}
	clock.Advance(time.Hour)
	for !finished(t, e) {
		select {
		case <-ctx.Done():
			t.Fatal("scheduled sweep did not run")
		case <-time.After(5 * time.Millisecond):
		}
	}
	stop()
	runs, err := e.st.SweepRuns(t.Context(), 10)
	must(t, err)
	if len(runs) != 1 || runs[0].Policy != "leavers" || runs[0].Applied != 1 || e.active(t, "leaver") {
		t.Errorf("runs %+v", runs)
	}
	// The lease is released after the run.
	ok, err := e.st.Lease(t.Context(), "sweep:leavers", "replica-b", time.Minute)
	must(t, err)
	if !ok {
		t.Error("lease still held after the run")
	}
}

func finished(t *testing.T, e *env) bool {
	runs, err := e.st.SweepRuns(t.Context(), 1)
	must(t, err)
	return len(runs) == 1 && runs[0].State == "done"
}

func TestScheduleRefusesBadInput(t *testing.T) {
	e := newEnv(t, nil)
	if _, err := Schedule(t.Context(), []*Sweeper{e.sweeper(t, policy())}, "", time.Minute); err == nil {
		t.Error("no owner accepted")
	}
}
