package session

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/usherhq/usher/store"
)

// RevocationStore is where replicas share revocations.
type RevocationStore interface {
	Revoke(ctx context.Context, r store.Revocation) (int64, error)
	Revocations(ctx context.Context, after int64) ([]store.Revocation, error)
}

// ErrNotShared means a revocation holds on this replica but the store did
// not take it yet: other replicas may accept the session until it does.
// Shared keeps retrying (and, with a Spool, survives a restart meanwhile);
// a logout page should say so.
var ErrNotShared = errors.New("session: revocation not shared with the other replicas yet")

// Shared keeps this replica's in-memory Revocations in step with the
// store, so that a logout, a SCIM deactivation or a sweep on any replica
// ends the person's sessions on every replica.
//
// It polls rather than using PostgreSQL LISTEN/NOTIFY: polling works the
// same on SQLite and PostgreSQL, needs no dedicated connection, and one
// indexed "seq > n" query a second is cheap; the hot path still only
// reads memory. A revocation reaches every replica within one Interval.
//
// A revocation is never lost to a database outage: it holds on this
// replica at once, and when the store does not take it, it waits in
// memory (and in the Spool file) and is written again at every Run tick
// until it lands.
type Shared struct {
	Local *Revocations
	Store RevocationStore
	// Absolute is the session absolute timeout: how long a revocation
	// must be remembered.
	Absolute time.Duration
	Now      func() time.Time
	Log      *slog.Logger
	// Spool is a file for revocations the store has not taken yet, so a
	// restart during a database outage does not forget a logout. Empty
	// keeps them in memory only.
	Spool string
	// WriteTimeout bounds one attempt to write a revocation (default 3s),
	// so a hanging database cannot hold a logout.
	WriteTimeout time.Duration

	refresh sync.Mutex // one Refresh at a time
	mu      sync.Mutex // guards after and pending; never held across a store call
	after   int64
	pending []store.Revocation
}

func (s *Shared) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

// RevokeSession ends one session everywhere (logout). The error is
// ErrNotShared (wrapped) when only this replica knows so far.
func (s *Shared) RevokeSession(ctx context.Context, sess *Session) error {
	until := sess.Created.Add(s.Absolute)
	s.Local.Add(sess.ID, until)
	return s.share(ctx, store.Revocation{SessionID: sess.ID, Until: until})
}

// RevokeIdentity ends every session of (idp, subject) that exists now,
// on every replica: a deprovisioned person's next request is refused. The
// error is ErrNotShared (wrapped) when only this replica knows so far.
func (s *Shared) RevokeIdentity(ctx context.Context, idp, subject string) error {
	before := s.now()
	s.Local.RevokeIdentity(idp, subject, before)
	return s.share(ctx, store.Revocation{IdP: idp, Subject: subject, Before: before, Until: before.Add(s.Absolute)})
}

// share writes r to the store, or keeps it pending.
func (s *Shared) share(ctx context.Context, r store.Revocation) error {
	err := s.write(ctx, r)
	if err == nil {
		return nil
	}
	s.mu.Lock()
	s.pending = append(s.pending, r)
	serr := s.spoolLocked()
	s.mu.Unlock()
	if serr != nil {
		s.log().Error("revocation: keep pending revocation in the spool file", "file", s.Spool, "err", serr)
	}
	s.log().Error("revocation: the store did not take it; this replica refuses the session, the others learn it when the store answers",
		"idp", r.IdP, "session", r.SessionID != "", "err", err)
	return fmt.Errorf("%w: %w", ErrNotShared, err)
}

func (s *Shared) write(ctx context.Context, r store.Revocation) error {
	d := s.WriteTimeout
	if d <= 0 {
		d = 3 * time.Second
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), d)
	defer cancel()
	_, err := s.Store.Revoke(ctx, r)
	return err
}

// Pending is how many revocations wait for the store.
func (s *Shared) Pending() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.pending)
}

// flush writes the pending revocations, oldest first, and keeps those
// the store still does not take.
func (s *Shared) flush(ctx context.Context) error {
	s.mu.Lock()
	todo := s.pending
	s.pending = nil
	s.mu.Unlock()
	if len(todo) == 0 {
		return nil
	}
	var left []store.Revocation
	var firstErr error
	now := s.now()
	for i, r := range todo {
		if !r.Until.After(now) {
			continue // every session it could match has expired
		}
		if err := s.write(ctx, r); err != nil {
			left, firstErr = append(left, todo[i:]...), err
			break
		}
	}
	s.mu.Lock()
	s.pending = append(left, s.pending...)
	err := s.spoolLocked()
	n := len(s.pending)
	s.mu.Unlock()
	if err != nil {
		s.log().Error("revocation: rewrite the spool file", "file", s.Spool, "err", err)
	}
	if firstErr != nil {
		return fmt.Errorf("%d revocations still wait for the store: %w", n, firstErr)
	}
	s.log().Info("revocation: pending revocations reached the store", "count", len(todo))
	return nil
}

// spoolLocked replaces the spool file with the pending list (removes it
// when empty). The write is atomic: a crash leaves the old or the new.
func (s *Shared) spoolLocked() error {
	if s.Spool == "" {
		return nil
	}
	if len(s.pending) == 0 {
		if err := os.Remove(s.Spool); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
		return nil
	}
	var b bytes.Buffer
	for _, r := range s.pending {
		line, err := json.Marshal(r)
		if err != nil {
			return err
		}
		b.Write(line)
		b.WriteByte('\n')
	}
	if err := os.MkdirAll(filepath.Dir(s.Spool), 0o700); err != nil {
		return err
	}
	tmp := s.Spool + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(b.Bytes()); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, s.Spool)
}

// LoadSpool applies the revocations a previous run could not share (this
// replica refuses those sessions at once) and queues them for the store.
// Call it once at start, before serving.
func (s *Shared) LoadSpool() error {
	if s.Spool == "" {
		return nil
	}
	f, err := os.Open(s.Spool)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read pending revocations: %w", err)
	}
	defer f.Close()
	var rs []store.Revocation
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var r store.Revocation
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			return fmt.Errorf("read pending revocations from %s: %w", s.Spool, err)
		}
		rs = append(rs, r)
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("read pending revocations from %s: %w", s.Spool, err)
	}
	for _, r := range rs {
		s.apply(r)
	}
	s.mu.Lock()
	s.pending = append(rs, s.pending...)
	s.mu.Unlock()
	if len(rs) > 0 {
		s.log().Warn("revocation: revocations a previous run could not share are refused here and retried", "count", len(rs), "file", s.Spool)
	}
	return nil
}

func (s *Shared) apply(r store.Revocation) {
	if r.SessionID != "" {
		s.Local.Add(r.SessionID, r.Until)
	} else {
		s.Local.RevokeIdentity(r.IdP, r.Subject, r.Before)
	}
}

// Refresh applies revocations recorded since the last refresh. A store
// that does not answer makes it fail after WriteTimeout, never hang.
func (s *Shared) Refresh(ctx context.Context) error {
	s.refresh.Lock()
	defer s.refresh.Unlock()
	s.mu.Lock()
	after := s.after
	s.mu.Unlock()
	d := s.WriteTimeout
	if d <= 0 {
		d = 3 * time.Second
	}
	rctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	rs, err := s.Store.Revocations(rctx, after)
	if err != nil {
		return fmt.Errorf("read revocations: %w", err)
	}
	for _, r := range rs {
		s.apply(r)
	}
	if n := len(rs); n > 0 {
		s.mu.Lock()
		s.after = rs[n-1].Seq
		s.mu.Unlock()
	}
	return nil
}

// Run writes pending revocations and refreshes every interval until ctx
// ends.
func (s *Shared) Run(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if err := s.flush(ctx); err != nil && ctx.Err() == nil {
			s.log().Warn("revocation: write pending revocations", "err", err)
		}
		if err := s.Refresh(ctx); err != nil && ctx.Err() == nil {
			s.log().Warn("refresh session revocations", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (s *Shared) log() *slog.Logger {
	if s.Log != nil {
		return s.Log
	}
	return slog.Default()
}
