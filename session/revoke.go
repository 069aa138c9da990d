package session

import (
	"sync"
	"time"
)

// Revocations is an in-memory Revoker: a set of revoked session IDs, and
// per identity (idp, subject) a time before which every session of that
// person is revoked. Entries are forgotten after the absolute timeout,
// when every session they could match has expired anyway. A store-backed
// refresher feeds it so that revocations reach every replica. Safe for
// concurrent use; Revoked takes only a read lock.
type Revocations struct {
	ttl time.Duration
	now func() time.Time

	mu         sync.RWMutex
	ids        map[string]time.Time   // session ID → forget after
	identities map[identity]revokedAt // identity → revoked before
	lastPrune  time.Time
}

type identity struct{ idp, subject string }

type revokedAt struct {
	before time.Time // sessions created before this are revoked
	forget time.Time
}

// NewRevocations returns an empty set. absolute is the session absolute
// timeout: an identity revocation is forgotten that long after its cut-off.
// now defaults to time.Now.
func NewRevocations(absolute time.Duration, now func() time.Time) *Revocations {
	if now == nil {
		now = time.Now
	}
	return &Revocations{
		ttl:        absolute,
		now:        now,
		ids:        make(map[string]time.Time),
		identities: make(map[identity]revokedAt),
	}
}

var _ Revoker = (*Revocations)(nil)

// Add revokes the session with this ID until until, the time the session
// expires anyway (its Created plus the absolute timeout); the entry is
// forgotten then. Adding the same ID again keeps the later time.
func (r *Revocations) Add(id string, until time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if old, ok := r.ids[id]; !ok || until.After(old) {
		r.ids[id] = until
	}
	r.pruneLocked()
}

// RevokeIdentity revokes every session of (idp, subject) created before
// before. Sessions created later (a fresh login) stay valid. The latest
// time given for an identity wins.
func (r *Revocations) RevokeIdentity(idp, subject string, before time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	k := identity{idp, subject}
	if old, ok := r.identities[k]; !ok || before.After(old.before) {
		r.identities[k] = revokedAt{before: before, forget: before.Add(r.ttl)}
	}
	r.pruneLocked()
}

// Revoked reports whether s was revoked by ID or by identity.
func (r *Revocations) Revoked(s *Session) bool {
	if s == nil {
		return false
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	if _, ok := r.ids[s.ID]; ok {
		return true
	}
	if ra, ok := r.identities[identity{s.IdP, s.Subject}]; ok && s.Created.Before(ra.before) {
		return true
	}
	return false
}

// Len returns how many entries are held (IDs plus identities).
func (r *Revocations) Len() int {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return len(r.ids) + len(r.identities)
}

// Prune forgets entries past their lifetime. Add and RevokeIdentity call
// it at most once a minute; call it yourself to bound memory when nothing
// is added for long.
func (r *Revocations) Prune() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.lastPrune = time.Time{}
	r.pruneLocked()
}

func (r *Revocations) pruneLocked() {
	now := r.now()
	if now.Sub(r.lastPrune) < time.Minute {
		return
	}
	r.lastPrune = now
	for id, forget := range r.ids {
		if !now.Before(forget) {
			delete(r.ids, id)
		}
	}
	for k, ra := range r.identities {
		if !now.Before(ra.forget) {
			delete(r.identities, k)
		}
	}
}
