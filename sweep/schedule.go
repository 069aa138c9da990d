package sweep

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/go-co-op/gocron/v2"
	"github.com/jonboulle/clockwork"
)

// Schedule runs each sweeper on its policy's schedule until ctx ends or
// stop is called. Every replica may call it: each run first takes the
// store lease "sweep:<name>" as owner (renewed every lease/3 while it
// runs), so exactly one replica sweeps; the others skip that tick.
// Sweepers without a schedule are left to manual runs. stop waits for
// running sweeps to notice cancellation.
func Schedule(ctx context.Context, sweepers []*Sweeper, owner string, lease time.Duration) (stop func(), err error) {
	return schedule(ctx, sweepers, owner, lease, nil)
}

func schedule(ctx context.Context, sweepers []*Sweeper, owner string, lease time.Duration, clock clockwork.Clock) (func(), error) {
	if owner == "" {
		return nil, errors.New("sweep schedule: owner is required")
	}
	if lease <= 0 {
		lease = 2 * time.Minute
	}
	var opts []gocron.SchedulerOption
	if clock != nil {
		opts = append(opts, gocron.WithClock(clock))
	}
	sch, err := gocron.NewScheduler(opts...)
	if err != nil {
		return nil, fmt.Errorf("sweep schedule: %w", err)
	}
	for _, sw := range sweepers {
		var def gocron.JobDefinition
		switch p := sw.p; {
		case p.Schedule != "":
			def = gocron.CronJob(p.Schedule, false)
		case p.Every > 0:
			def = gocron.DurationJob(p.Every)
		default:
			continue
		}
		task := func(ctx context.Context) {
			res, err := sw.run(ctx, owner, lease, sw.p.DryRun)
			switch {
			case errors.Is(err, ErrLeaseHeld):
				sw.d.Log.Debug("sweep: another replica holds the lease")
			case errors.Is(err, ErrBlocked):
				// Run logged it at error already.
			case err != nil:
				sw.d.Log.Error("sweep: run failed", "err", err)
			case res != nil:
				sw.d.Log.Info("sweep: scheduled run finished", "run", res.RunID, "applied", res.Applied, "failed", res.Failed)
			}
		}
		if _, err := sch.NewJob(def, gocron.NewTask(task), gocron.WithContext(ctx), gocron.WithName("sweep:"+sw.p.Name),
			gocron.WithSingletonMode(gocron.LimitModeReschedule)); err != nil {
			_ = sch.Shutdown()
			return nil, fmt.Errorf("sweep %s: schedule: %w", sw.p.Name, err)
		}
	}
	sch.Start()
	return func() { _ = sch.Shutdown() }, nil
}
