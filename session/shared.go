package session

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/usherhq/usher/store"
)

// RevocationStore is where replicas share revocations.
type RevocationStore interface {
	Revoke(ctx context.Context, r store.Revocation) (int64, error)
	Revocations(ctx context.Context, after int64) ([]store.Revocation, error)
}

// Shared keeps this replica's in-memory Revocations in step with the
// store, so that a logout, a SCIM deactivation or a sweep on any replica
// ends the person's sessions on every replica.
//
// It polls rather than using PostgreSQL LISTEN/NOTIFY: polling works the
// same on SQLite and PostgreSQL, needs no dedicated connection, and one
// indexed "seq > n" query a second is cheap; the hot path still only
// reads memory. A revocation reaches every replica within one Interval.
type Shared struct {
	Local *Revocations
	Store RevocationStore
	// Absolute is the session absolute timeout: how long a revocation
	// must be remembered.
	Absolute time.Duration
	Now      func() time.Time
	Log      *slog.Logger

	mu    sync.Mutex
	after int64
}

func (s *Shared) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

// RevokeSession ends one session everywhere (logout).
func (s *Shared) RevokeSession(ctx context.Context, sess *Session) error {
	until := sess.Created.Add(s.Absolute)
	s.Local.Add(sess.ID, until)
	if _, err := s.Store.Revoke(ctx, store.Revocation{SessionID: sess.ID, Until: until}); err != nil {
		return fmt.Errorf("revoke session of %s/%s: %w", sess.IdP, sess.Subject, err)
	}
	return nil
}

// RevokeIdentity ends every session of (idp, subject) that exists now,
// on every replica: a deprovisioned person's next request is refused.
func (s *Shared) RevokeIdentity(ctx context.Context, idp, subject string) error {
	before := s.now()
	s.Local.RevokeIdentity(idp, subject, before)
	if _, err := s.Store.Revoke(ctx, store.Revocation{IdP: idp, Subject: subject, Before: before, Until: before.Add(s.Absolute)}); err != nil {
		return fmt.Errorf("revoke sessions of %s/%s: %w", idp, subject, err)
	}
	return nil
}

// Refresh applies revocations recorded since the last refresh.
func (s *Shared) Refresh(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	rs, err := s.Store.Revocations(ctx, s.after)
	if err != nil {
		return fmt.Errorf("read revocations: %w", err)
	}
	for _, r := range rs {
		if r.SessionID != "" {
			s.Local.Add(r.SessionID, r.Until)
		} else {
			s.Local.RevokeIdentity(r.IdP, r.Subject, r.Before)
		}
		s.after = r.Seq
	}
	return nil
}

// Run refreshes every interval until ctx ends.
func (s *Shared) Run(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if err := s.Refresh(ctx); err != nil && ctx.Err() == nil && s.Log != nil {
			s.Log.Warn("refresh session revocations", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
