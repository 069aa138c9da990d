package sqlite

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/usherhq/usher/store"
	"github.com/usherhq/usher/store/storetest"
)

func TestProvisioning(t *testing.T) {
	t.Parallel()
	storetest.RunProvisioning(t, func(t *testing.T, now func() time.Time) store.Provisioning {
		return openTemp(t, "usher.db", Options{Now: now})
	})
}

func TestCoordination(t *testing.T) {
	t.Parallel()
	storetest.RunCoordination(t, func(t *testing.T, now func() time.Time) store.Coordination {
		return openTemp(t, "usher.db", Options{Now: now})
	})
}

// Expired replay records go away a bounded batch per SeenOnce, so the
// table does not grow without end and no single call does all the work.
func TestSeenOncePrunes(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	at := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	s := openTemp(t, "usher.db", Options{Now: func() time.Time { return at }})
	defer s.Close()
	for i := range 250 {
		if _, err := s.SeenOnce(ctx, fmt.Sprint("k", i), at.Add(time.Minute)); err != nil {
			t.Fatal(err)
		}
	}
	at = at.Add(time.Hour)
	count := func() int {
		var n int
		if err := s.read.QueryRowContext(ctx, `SELECT count(*) FROM seen_once`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	for _, want := range []int{151, 52, 3, 4} {
		if _, err := s.SeenOnce(ctx, fmt.Sprint("new", want), at.Add(time.Minute)); err != nil {
			t.Fatal(err)
		}
		if n := count(); n != want {
			t.Fatalf("rows after a SeenOnce = %d, want %d", n, want)
		}
	}
}
