package postgres

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/usherhq/usher/store"
	"github.com/usherhq/usher/store/postgres/pgtest"
	"github.com/usherhq/usher/store/storetest"
)

func TestProvisioning(t *testing.T) {
	t.Parallel()
	storetest.RunProvisioning(t, func(t *testing.T, now func() time.Time) store.Provisioning {
		return open(t, pgtest.Migrated(t), Options{Now: now})
	})
}

func TestCoordination(t *testing.T) {
	t.Parallel()
	storetest.RunCoordination(t, func(t *testing.T, now func() time.Time) store.Coordination {
		return open(t, pgtest.Migrated(t), Options{Now: now})
	})
}

// Two replicas, each with its own pool and several workers, drain one
// queue: every job is completed exactly once and none is left.
func TestReplicasDrainQueue(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dsn := pgtest.Migrated(t)
	replicas := [2]*Store{open(t, dsn, Options{MaxConns: 4}), open(t, dsn, Options{MaxConns: 4})}
	for _, r := range replicas {
		defer r.Close()
	}
	const jobs = 300
	for i := range jobs {
		if _, err := replicas[i%2].Enqueue(ctx, store.Job{Kind: "reconcile", App: "jira", Key: fmt.Sprint("u", i)}); err != nil {
			t.Fatalf("Enqueue: %v", err)
		}
	}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		done  = map[int64]int{}
		errs  []error
		start = make(chan struct{})
	)
	for w := range 12 {
		r := replicas[w%2]
		owner := fmt.Sprintf("replica-%d/worker-%d", w%2, w)
		wg.Go(func() {
			<-start
			for {
				got, err := r.Claim(ctx, owner, time.Now(), 5, time.Minute)
				if err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
					return
				}
				if len(got) == 0 {
					return
				}
				for _, j := range got {
					err := r.Complete(ctx, j.ID, owner)
					mu.Lock()
					if err != nil {
						errs = append(errs, err)
					} else {
						done[j.ID]++
					}
					mu.Unlock()
				}
			}
		})
	}
	close(start)
	wg.Wait()
	for _, err := range errs {
		t.Errorf("worker: %v", err)
	}
	if len(done) != jobs {
		t.Fatalf("%d jobs completed, want %d", len(done), jobs)
	}
	for id, n := range done {
		if n != 1 {
			t.Fatalf("job %d completed %d times", id, n)
		}
	}
	st, err := replicas[0].Queue(ctx)
	if err != nil || st.Depth != 0 {
		t.Fatalf("Queue after draining = %+v, %v; want empty", st, err)
	}
	// Completed is gone for the other replica too.
	for id := range done {
		if err := replicas[1].Complete(ctx, id, "anyone"); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("Complete of a finished job = %v, want ErrNotFound", err)
		}
		break
	}
}
