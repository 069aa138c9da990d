package tlsserve

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/certmagic"

	"github.com/usherhq/usher/store"
)

// SharedStore is where acme.shared keeps certificates, account keys and
// locks: usher's own store, so that every replica on the same database
// serves the certificate one of them obtained.
type SharedStore interface {
	store.Blobs
	store.Coordination
}

// Where certmagic's files and locks live among other components' blobs and
// leases.
const (
	acmeBlobPrefix  = "acme"
	acmeLeasePrefix = "acme/lock/"
)

// Lock timing. A lease outlives its holder by at most lockTTL, which is
// how long replicas wait for a crashed one; the holder renews it three
// times per TTL, so a slow statement or two does not lose it.
const (
	lockTTL     = 30 * time.Second
	lockMinPoll = 250 * time.Millisecond
	lockMaxPoll = 5 * time.Second
)

// storeStorage is a certmagic.Storage over usher's store. Files are blobs
// under "acme/"; certmagic's locks are store leases held by a token unique
// to each Lock call, renewed in the background until Unlock.
//
// Like certmagic's own FileStorage, mutual exclusion is by timeout: a
// holder that cannot reach the database for lockTTL loses its lock to the
// next replica. certmagic re-checks storage after taking a lock, so the
// worst case is a second order at the CA, not a broken certificate.
type storeStorage struct {
	st    SharedStore
	log   *slog.Logger
	owner string // this process, in lease owners

	// ttl is the lease; renewEvery its renewal period; Lock polls a held
	// lock from minPoll, doubling up to maxPoll.
	ttl, renewEvery, minPoll, maxPoll time.Duration

	seq  atomic.Uint64
	mu   sync.Mutex
	held map[string]*heldLock // by lock name
}

var (
	_ certmagic.Storage   = (*storeStorage)(nil)
	_ certmagic.TryLocker = (*storeStorage)(nil)
)

// heldLock is one lock this process holds and the goroutine renewing it.
type heldLock struct {
	token string
	once  sync.Once
	stop  chan struct{}
	done  chan struct{}
}

func (h *heldLock) stopRenewing() {
	h.once.Do(func() { close(h.stop) })
	<-h.done
}

func newStoreStorage(st SharedStore, log *slog.Logger) *storeStorage {
	var b [8]byte
	rand.Read(b[:])
	host, _ := os.Hostname()
	return &storeStorage{
		st:         st,
		log:        log,
		owner:      host + "/" + hex.EncodeToString(b[:]),
		ttl:        lockTTL,
		renewEvery: lockTTL / 3,
		minPoll:    lockMinPoll,
		maxPoll:    lockMaxPoll,
		held:       map[string]*heldLock{},
	}
}

func blobKey(key string) string {
	if key == "" {
		return acmeBlobPrefix
	}
	return acmeBlobPrefix + "/" + key
}

func notExist(key string) error {
	return fmt.Errorf("acme storage %s: %w", key, fs.ErrNotExist)
}

// Store implements certmagic.Storage.
func (s *storeStorage) Store(ctx context.Context, key string, value []byte) error {
	if err := s.st.PutBlob(ctx, blobKey(key), value); err != nil {
		return fmt.Errorf("acme storage: %w", err)
	}
	return nil
}

// Load implements certmagic.Storage; fs.ErrNotExist for a missing key.
func (s *storeStorage) Load(ctx context.Context, key string) ([]byte, error) {
	v, _, err := s.st.Blob(ctx, blobKey(key))
	switch {
	case errors.Is(err, store.ErrNotFound):
		return nil, notExist(key)
	case err != nil:
		return nil, fmt.Errorf("acme storage: %w", err)
	}
	return v, nil
}

// Delete implements certmagic.Storage: a missing key is no error.
func (s *storeStorage) Delete(ctx context.Context, key string) error {
	if err := s.st.DeleteBlob(ctx, blobKey(key)); err != nil && !errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("acme storage: %w", err)
	}
	return nil
}

// Exists implements certmagic.Storage: a file or a directory.
func (s *storeStorage) Exists(ctx context.Context, key string) bool {
	_, err := s.Stat(ctx, key)
	return err == nil
}

// List implements certmagic.Storage. A directory that does not exist is
// fs.ErrNotExist, as for FileStorage; a file has no entries.
func (s *storeStorage) List(ctx context.Context, prefix string, recursive bool) ([]string, error) {
	keys, err := s.st.BlobKeys(ctx, blobKey(prefix), recursive)
	if err != nil {
		return nil, fmt.Errorf("acme storage: %w", err)
	}
	if len(keys) == 0 {
		if _, _, err := s.st.Blob(ctx, blobKey(prefix)); err == nil {
			return nil, nil
		}
		return nil, notExist(prefix)
	}
	for i, k := range keys {
		keys[i] = strings.TrimPrefix(k, acmeBlobPrefix+"/")
	}
	return keys, nil
}

// Stat implements certmagic.Storage. A directory's Modified is that of
// its newest file: certmagic picks the most recent ACME account by it.
func (s *storeStorage) Stat(ctx context.Context, key string) (certmagic.KeyInfo, error) {
	v, modified, err := s.st.Blob(ctx, blobKey(key))
	if err == nil {
		return certmagic.KeyInfo{Key: key, Modified: modified, Size: int64(len(v)), IsTerminal: true}, nil
	}
	if !errors.Is(err, store.ErrNotFound) {
		return certmagic.KeyInfo{}, fmt.Errorf("acme storage: %w", err)
	}
	keys, err := s.st.BlobKeys(ctx, blobKey(key), true)
	if err != nil {
		return certmagic.KeyInfo{}, fmt.Errorf("acme storage: %w", err)
	}
	if len(keys) == 0 {
		return certmagic.KeyInfo{}, notExist(key)
	}
	info := certmagic.KeyInfo{Key: key}
	for _, k := range keys {
		_, m, err := s.st.Blob(ctx, k)
		switch {
		case errors.Is(err, store.ErrNotFound): // deleted meanwhile
		case err != nil:
			return certmagic.KeyInfo{}, fmt.Errorf("acme storage: %w", err)
		case m.After(info.Modified):
			info.Modified = m
		}
	}
	return info, nil
}

// Lock implements certmagic.Locker: it polls, backing off, until the
// lease is free or expired, or ctx ends.
func (s *storeStorage) Lock(ctx context.Context, name string) error {
	wait := s.minPoll
	for {
		ok, err := s.TryLock(ctx, name)
		if err != nil || ok {
			return err
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("acme storage: lock %s: %w", name, ctx.Err())
		case <-t.C:
		}
		wait = min(2*wait, s.maxPoll)
	}
}

// TryLock implements certmagic.TryLocker: one attempt. Each attempt has
// its own lease owner, so two goroutines of one process exclude each
// other as two replicas do.
func (s *storeStorage) TryLock(ctx context.Context, name string) (bool, error) {
	token := fmt.Sprintf("%s/%d", s.owner, s.seq.Add(1))
	ok, err := s.st.Lease(ctx, acmeLeasePrefix+name, token, s.ttl)
	if err != nil {
		return false, fmt.Errorf("acme storage: lock %s: %w", name, err)
	}
	if !ok {
		return false, nil
	}
	h := &heldLock{token: token, stop: make(chan struct{}), done: make(chan struct{})}
	s.mu.Lock()
	// An entry left here belongs to a local holder whose lease expired
	// and was just taken over: its renewal is pointless now.
	if old := s.held[name]; old != nil {
		old.once.Do(func() { close(old.stop) })
	}
	s.held[name] = h
	s.mu.Unlock()
	go s.renew(name, h)
	return true, nil
}

// renew keeps h's lease alive until stopped, on its own short contexts:
// the caller's ctx only bounded taking the lock.
func (s *storeStorage) renew(name string, h *heldLock) {
	defer close(h.done)
	t := time.NewTicker(s.renewEvery)
	defer t.Stop()
	for {
		select {
		case <-h.stop:
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), s.renewEvery)
		ok, err := s.st.Lease(ctx, acmeLeasePrefix+name, h.token, s.ttl)
		cancel()
		switch {
		case err != nil:
			// The lease is good until it expires; try again next tick.
			s.log.Warn("acme storage: renewing lock failed", "lock", name, "err", err)
		case !ok:
			s.log.Warn("acme storage: lock expired and another replica took it", "lock", name)
			return
		}
	}
}

// Unlock implements certmagic.Locker. The renewer stops before the lease
// is released, so a late renewal cannot take the lease again.
func (s *storeStorage) Unlock(ctx context.Context, name string) error {
	s.mu.Lock()
	h := s.held[name]
	delete(s.held, name)
	s.mu.Unlock()
	if h == nil {
		return fmt.Errorf("acme storage: unlock %s: not locked here", name)
	}
	h.stopRenewing()
	if err := s.st.ReleaseLease(ctx, acmeLeasePrefix+name, h.token); err != nil {
		return fmt.Errorf("acme storage: unlock %s: %w", name, err)
	}
	return nil
}

// stopRenewals ends every renewer without releasing: the leases expire
// within the TTL, as when the process dies. Unlock still releases them.
func (s *storeStorage) stopRenewals() {
	s.mu.Lock()
	held := make([]*heldLock, 0, len(s.held))
	for _, h := range s.held {
		held = append(held, h)
	}
	s.mu.Unlock()
	for _, h := range held {
		h.stopRenewing()
	}
}

// String names the storage in certmagic's logs.
func (s *storeStorage) String() string { return "usher store" }
