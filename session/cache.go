package session

import (
	"strings"
	"sync"
)

// openCache remembers the sessions this Codec has already opened, by the
// exact sealed cookie value, so the hot path does not decode base64,
// decrypt and decode the same cookie on every request of a page (a
// browser sends one value until the cookie is refreshed, at most once a
// minute). Only values that opened are kept; a hit is the same value,
// byte for byte, that authenticated before, so it proves as much. What
// changes over time (expiry, timeouts, revocation) is checked again on
// every hit.
//
// Two generations bound it: when the current map is full it becomes the
// old one and the one before is dropped, so recently used values stay and
// memory stays below 2×max entries. A Codec, and so this cache, lives for
// one config generation: new keys mean a new Codec and an empty cache.
type openCache struct {
	max int
	mu  sync.RWMutex
	cur map[string]*opened
	old map[string]*opened
}

// opened is a sealed value that opened: its session, never modified once
// cached, and what the envelope said.
type opened struct {
	s        *Session
	expires  int64 // unix ns, the envelope's expiry
	keyIndex int
}

const cacheMax = 2048

func (c *openCache) get(value string) *opened {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if o := c.cur[value]; o != nil {
		return o
	}
	return c.old[value]
}

func (c *openCache) put(value string, o *opened) {
	// value is a slice of the request's Cookie header; a copy keeps the
	// rest of that header from living on in the cache.
	value = strings.Clone(value)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cur == nil || len(c.cur) >= c.max {
		c.old, c.cur = c.cur, make(map[string]*opened, c.max)
	}
	c.cur[value] = o
}
