package postgres

import (
	"testing"
	"time"

	"github.com/usherhq/usher/store"
	"github.com/usherhq/usher/store/postgres/pgtest"
	"github.com/usherhq/usher/store/storetest"
)

func TestBlobs(t *testing.T) {
	t.Parallel()
	storetest.RunBlobs(t, func(t *testing.T, now func() time.Time) store.Blobs {
		return open(t, pgtest.Migrated(t), Options{Now: now})
	})
}
