package dirsync

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/go-co-op/gocron/v2"
	"github.com/jonboulle/clockwork"
)

// Background runs syncs outside any request: each syncer on its
// schedule, and any of them at once on request (Trigger, the admin
// page's "sync everyone now"). Every replica may run one: a run first
// takes the directory's store lease, so exactly one replica syncs a
// directory; the others skip that tick. Stop cancels what runs and
// waits for it.
type Background struct {
	sch  gocron.Scheduler
	stop chan struct{} // closed by Stop: triggered runs end
	once sync.Once
	wg   sync.WaitGroup
}

// Start schedules the syncers that have a schedule. clock nil is the
// real clock.
func Start(syncers []*Syncer, clock clockwork.Clock) (*Background, error) {
	var opts []gocron.SchedulerOption
	if clock != nil {
		opts = append(opts, gocron.WithClock(clock))
	}
	sch, err := gocron.NewScheduler(opts...)
	if err != nil {
		return nil, fmt.Errorf("dirsync schedule: %w", err)
	}
	b := &Background{sch: sch, stop: make(chan struct{})}
	for _, s := range syncers {
		var def gocron.JobDefinition
		switch c := s.cfg; {
		case c.Schedule != "":
			def = gocron.CronJob(c.Schedule, false)
		case c.Every > 0:
			def = gocron.DurationJob(c.Every)
		default:
			continue
		}
		task := func(ctx context.Context) {
			res, err := s.RunWith(ctx, Options{By: "schedule"})
			switch {
			case errors.Is(err, ErrBusy):
				s.d.Log.Debug("dirsync: another run or replica holds the directory")
			case err != nil:
				s.d.Log.Error("dirsync: scheduled run failed", "err", err)
			case res != nil:
				s.d.Log.Debug("dirsync: scheduled run finished", "run", res.Run)
			}
		}
		// gocron cancels the task's context when it shuts down.
		if _, err := sch.NewJob(def, gocron.NewTask(task), gocron.WithName("directory:"+s.name),
			gocron.WithSingletonMode(gocron.LimitModeReschedule)); err != nil {
			_ = sch.Shutdown()
			return nil, fmt.Errorf("directory %s: schedule: %w", s.name, err)
		}
	}
	sch.Start()
	return b, nil
}

// Trigger starts a run of s now, in the background. It returns ErrBusy
// at once when s is running in this process; a run another replica
// holds the lease for ends without doing anything, and says so in the
// log.
func (b *Background) Trigger(s *Syncer, o Options) error {
	if !s.running.TryLock() {
		return ErrBusy
	}
	select {
	case <-b.stop:
		s.running.Unlock()
		return errors.New("dirsync: stopping")
	default:
	}
	ctx, cancel := context.WithCancel(context.Background())
	b.wg.Add(1)
	go func() {
		select {
		case <-b.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	go func() {
		defer b.wg.Done()
		defer s.running.Unlock()
		defer cancel()
		if _, err := s.runLocked(ctx, o); err != nil {
			s.d.Log.Error("dirsync: run failed", "by", o.By, "err", err)
		}
	}()
	return nil
}

// Stop cancels running syncs (they stop between pages, having applied
// what they read) and waits for them.
func (b *Background) Stop() {
	b.once.Do(func() { close(b.stop) })
	_ = b.sch.Shutdown()
	b.wg.Wait()
}
