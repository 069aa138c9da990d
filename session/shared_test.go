package session

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/usherhq/usher/store"
)

// flakyStore keeps revocations in memory and fails while down.
type flakyStore struct {
	mu   sync.Mutex
	down bool
	rs   []store.Revocation
}

func (f *flakyStore) Revoke(_ context.Context, r store.Revocation) (int64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down {
		return 0, store.ErrUnavailable
	}
	r.Seq = int64(len(f.rs) + 1)
	f.rs = append(f.rs, r)
	return r.Seq, nil
}

func (f *flakyStore) Revocations(_ context.Context, after int64) ([]store.Revocation, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down {
		return nil, store.ErrUnavailable
	}
	var out []store.Revocation
	for _, r := range f.rs {
		if r.Seq > after {
			out = append(out, r)
		}
	}
	return out, nil
}

func (f *flakyStore) setDown(d bool) { f.mu.Lock(); f.down = d; f.mu.Unlock() }

// A revocation the store does not take holds here at once, waits in the
// spool file across a restart, and reaches the store when it is back.
func TestSharedKeepsRevocationsTheStoreRefused(t *testing.T) {
	now := time.Date(2026, 1, 1, 9, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	st := &flakyStore{down: true}
	spool := filepath.Join(t.TempDir(), "data", "revocations.pending")
	a := &Shared{Local: NewRevocations(8*time.Hour, clock), Store: st, Absolute: 8 * time.Hour, Now: clock, Spool: spool}

	sess := &Session{ID: "s1", IdP: "okta", Subject: "u1", Created: now.Add(-time.Minute)}
	if err := a.RevokeSession(t.Context(), sess); !errors.Is(err, ErrNotShared) || !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("RevokeSession with the store down = %v, want ErrNotShared wrapping the cause", err)
	}
	if err := a.RevokeIdentity(t.Context(), "okta", "u2"); !errors.Is(err, ErrNotShared) {
		t.Fatalf("RevokeIdentity = %v", err)
	}
	if !a.Local.Revoked(sess) || a.Pending() != 2 {
		t.Fatalf("revoked here %v, pending %d", a.Local.Revoked(sess), a.Pending())
	}
	if _, err := os.Stat(spool); err != nil {
		t.Fatalf("spool: %v", err)
	}
	if err := a.flush(t.Context()); err == nil || a.Pending() != 2 {
		t.Fatalf("flush while down = %v, pending %d", err, a.Pending())
	}

	// A restart before the store is back.
	b := &Shared{Local: NewRevocations(8*time.Hour, clock), Store: st, Absolute: 8 * time.Hour, Now: clock, Spool: spool}
	if err := b.LoadSpool(); err != nil {
		t.Fatal(err)
	}
	other := &Session{ID: "s9", IdP: "okta", Subject: "u2", Created: now.Add(-time.Hour)}
	if !b.Local.Revoked(sess) || !b.Local.Revoked(other) || b.Pending() != 2 {
		t.Fatalf("after restart: session revoked %v, identity revoked %v, pending %d", b.Local.Revoked(sess), b.Local.Revoked(other), b.Pending())
	}

	st.setDown(false)
	if err := b.flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	if b.Pending() != 0 || len(st.rs) != 2 || st.rs[0].SessionID != "s1" || st.rs[1].Subject != "u2" {
		t.Fatalf("pending %d, store %+v", b.Pending(), st.rs)
	}
	if _, err := os.Stat(spool); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("spool left behind: %v", err)
	}
	// Another replica learns both.
	c := &Shared{Local: NewRevocations(8*time.Hour, clock), Store: st, Absolute: 8 * time.Hour, Now: clock}
	if err := c.Refresh(t.Context()); err != nil {
		t.Fatal(err)
	}
	if !c.Local.Revoked(sess) || !c.Local.Revoked(other) {
		t.Error("the other replica does not refuse the sessions")
	}
}

// A Refresh against a store that does not answer returns, and a logout
// meanwhile is not held up by it.
func TestSharedNeverHangsOnTheStore(t *testing.T) {
	hang := &hangingStore{}
	s := &Shared{Local: NewRevocations(time.Hour, nil), Store: hang, Absolute: time.Hour, WriteTimeout: 50 * time.Millisecond}
	done := make(chan error, 1)
	go func() { done <- s.Refresh(context.Background()) }()
	start := time.Now()
	err := s.RevokeSession(context.Background(), &Session{ID: "x", Created: time.Now()})
	if !errors.Is(err, ErrNotShared) {
		t.Fatalf("RevokeSession = %v", err)
	}
	if err := <-done; err == nil {
		t.Fatal("Refresh against a hanging store succeeded")
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("took %v", took)
	}
}

type hangingStore struct{}

func (hangingStore) Revoke(ctx context.Context, _ store.Revocation) (int64, error) {
	<-ctx.Done()
	return 0, ctx.Err()
}

func (hangingStore) Revocations(ctx context.Context, _ int64) ([]store.Revocation, error) {
	<-ctx.Done()
	return nil, ctx.Err()
}
