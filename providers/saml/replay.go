package saml

import (
	"context"
	"time"

	"github.com/patrickmn/go-cache"
)

// ReplayCache remembers assertion IDs so each assertion logs in once.
// Implementations are safe for concurrent use and, when several usher
// replicas run, shared by all of them (through the store).
type ReplayCache interface {
	// Seen records id until expiry and reports whether it was already
	// there. Recording and checking are one atomic step. An error means
	// the cache could not answer; the login is then refused as a
	// technical failure, never accepted.
	Seen(ctx context.Context, id string, expires time.Time) (bool, error)
}

// MemoryReplayCache is a ReplayCache for a single usher process.
type MemoryReplayCache struct {
	c *cache.Cache
}

// NewMemoryReplayCache returns an empty in-process replay cache. Expired
// IDs are purged every few minutes.
func NewMemoryReplayCache() *MemoryReplayCache {
	return &MemoryReplayCache{c: cache.New(cache.NoExpiration, 5*time.Minute)}
}

// Seen implements ReplayCache. Entries expire by the wall clock, so keep
// expiry in real time.
func (m *MemoryReplayCache) Seen(_ context.Context, id string, expires time.Time) (bool, error) {
	d := time.Until(expires)
	if d <= 0 {
		// Already past its expiry by the wall clock (a test clock, or
		// a skewed IdP): keep it a while anyway rather than not at all.
		d = 10 * time.Minute
	}
	// Add fails when the key is present and unexpired: that is the atomic
	// check-and-record.
	if err := m.c.Add(id, struct{}{}, d); err != nil {
		return true, nil
	}
	return false, nil
}
