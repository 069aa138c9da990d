package tlsserve

import (
	"context"
	"errors"
	"io/fs"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/usherhq/usher/store/sqlite"
)

// replicas opens n handles on one SQLite file, as n usher processes on
// one database, all on clock (nil: the real one).
func replicas(t *testing.T, n int, now func() time.Time) []*sqlite.Store {
	t.Helper()
	path := filepath.Join(t.TempDir(), "usher.db")
	var out []*sqlite.Store
	for range n {
		s, err := sqlite.Open(context.Background(), path, sqlite.Options{Now: now})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		out = append(out, s)
	}
	return out
}

// testStorage is a storeStorage that polls fast and stops renewing at
// the end of the test.
func testStorage(t *testing.T, st SharedStore) *storeStorage {
	log, _ := testLogger(t)
	s := newStoreStorage(st, log)
	s.minPoll, s.maxPoll = time.Millisecond, 10*time.Millisecond
	t.Cleanup(s.stopRenewals)
	return s
}

var base = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// The file semantics certmagic's Storage documents and its FileStorage
// has: fs.ErrNotExist from Load, List and Stat; directories implied by
// the keys under them; Delete of a directory takes everything under it
// and of a missing key is no error.
func TestStoreStorageFiles(t *testing.T) {
	ctx := context.Background()
	clock := clockwork.NewFakeClockAt(base)
	s := testStorage(t, replicas(t, 1, clock.Now)[0])
	const site = "certificates/ca/example.com"
	files := []string{site + "/example.com.crt", site + "/example.com.key", site + "/example.com.json",
		"certificates/ca/other.com/other.com.crt", "acme/ca/users/ops@usher.test/ops.json"}
	for i, k := range files {
		clock.Advance(time.Minute)
		if err := s.Store(ctx, k, []byte(k[:i+1])); err != nil {
			t.Fatal(err)
		}
	}

	if v, err := s.Load(ctx, files[1]); err != nil || string(v) != "ce" {
		t.Errorf("Load(%s) = %q, %v", files[1], v, err)
	}
	for _, k := range []string{"missing", site, site + "/example.com"} {
		if _, err := s.Load(ctx, k); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("Load(%s) = %v, want fs.ErrNotExist", k, err)
		}
	}

	for k, want := range map[string]bool{
		files[0]: true, site: true, "certificates": true,
		"certificates/c": false, site + "/example": false, "missing": false,
	} {
		if got := s.Exists(ctx, k); got != want {
			t.Errorf("Exists(%s) = %v, want %v", k, got, want)
		}
	}

	for _, c := range []struct {
		prefix    string
		recursive bool
		want      []string
	}{
		{"certificates", false, []string{"certificates/ca"}},
		{"certificates/ca", false, []string{site, "certificates/ca/other.com"}},
		{site, false, []string{site + "/example.com.crt", site + "/example.com.json", site + "/example.com.key"}},
		{"certificates", true, []string{site + "/example.com.crt", site + "/example.com.json", site + "/example.com.key", "certificates/ca/other.com/other.com.crt"}},
		{files[0], false, nil}, // a file lists nothing
	} {
		got, err := s.List(ctx, c.prefix, c.recursive)
		if err != nil || !slices.Equal(got, c.want) {
			t.Errorf("List(%s, %v) = %q, %v; want %q", c.prefix, c.recursive, got, err, c.want)
		}
	}
	if got, err := s.List(ctx, "missing", false); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("List(missing) = %q, %v; want fs.ErrNotExist", got, err)
	}

	fi, err := s.Stat(ctx, files[2])
	if err != nil || fi.Key != files[2] || !fi.IsTerminal || fi.Size != 3 || !fi.Modified.Equal(base.Add(3*time.Minute)) {
		t.Errorf("Stat(file) = %+v, %v", fi, err)
	}
	// A directory is as new as its newest file.
	fi, err = s.Stat(ctx, site)
	if err != nil || fi.Key != site || fi.IsTerminal || !fi.Modified.Equal(base.Add(3*time.Minute)) {
		t.Errorf("Stat(dir) = %+v, %v", fi, err)
	}
	if _, err := s.Stat(ctx, "missing"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Stat(missing) = %v, want fs.ErrNotExist", err)
	}

	// Store overwrites.
	if err := s.Store(ctx, files[0], []byte("renewed")); err != nil {
		t.Fatal(err)
	}
	if v, err := s.Load(ctx, files[0]); err != nil || string(v) != "renewed" {
		t.Errorf("Load after overwrite = %q, %v", v, err)
	}

	for _, k := range []string{files[0], site, "missing", files[0]} {
		if err := s.Delete(ctx, k); err != nil {
			t.Errorf("Delete(%s) = %v, want nil", k, err)
		}
	}
	for k, want := range map[string]bool{site: false, files[1]: false, "certificates/ca/other.com/other.com.crt": true} {
		if got := s.Exists(ctx, k); got != want {
			t.Errorf("after Delete, Exists(%s) = %v, want %v", k, got, want)
		}
	}
}

func tryLock(t *testing.T, s *storeStorage, name string) bool {
	t.Helper()
	ok, err := s.TryLock(context.Background(), name)
	if err != nil {
		t.Fatalf("TryLock(%s): %v", name, err)
	}
	return ok
}

// A lock excludes every other locker, on another replica or in the same
// process, until Unlock; a waiting Lock then gets it.
func TestStoreStorageLock(t *testing.T) {
	ctx := context.Background()
	clock := clockwork.NewFakeClockAt(base)
	rs := replicas(t, 2, clock.Now)
	a, b := testStorage(t, rs[0]), testStorage(t, rs[1])
	const name = "issue_cert_example.com"

	if err := a.Lock(ctx, name); err != nil {
		t.Fatal(err)
	}
	if tryLock(t, b, name) || tryLock(t, a, name) {
		t.Fatal("a held lock was taken again")
	}
	if !tryLock(t, b, "issue_cert_other.com") {
		t.Fatal("another name's lock was not free")
	}
	ended, cancel := context.WithCancel(ctx)
	cancel()
	if err := b.Lock(ended, name); !errors.Is(err, context.Canceled) {
		t.Fatalf("Lock with an ended context = %v, want context.Canceled", err)
	}

	got := make(chan error, 1)
	go func() { got <- b.Lock(ctx, name) }()
	if err := a.Unlock(ctx, name); err != nil {
		t.Fatal(err)
	}
	if err := <-got; err != nil {
		t.Fatalf("waiting Lock after Unlock: %v", err)
	}
	if tryLock(t, a, name) {
		t.Fatal("the lock b waited for was still free")
	}
	if err := b.Unlock(ctx, name); err != nil {
		t.Fatal(err)
	}
	if !tryLock(t, a, name) {
		t.Fatal("lock not free after Unlock")
	}
	if err := b.Unlock(ctx, "never-locked"); err == nil {
		t.Error("Unlock of a lock never taken succeeded")
	}
}

// A holder that dies (stops renewing without unlocking) loses the lock
// once its lease runs out; its late Unlock does not free the new holder's.
func TestStoreStorageLockExpiry(t *testing.T) {
	ctx := context.Background()
	clock := clockwork.NewFakeClockAt(base)
	rs := replicas(t, 3, clock.Now)
	a, b, c := testStorage(t, rs[0]), testStorage(t, rs[1]), testStorage(t, rs[2])
	const name = "issue_cert_example.com"

	if !tryLock(t, a, name) {
		t.Fatal("free lock not taken")
	}
	a.stopRenewals()
	clock.Advance(a.ttl - time.Millisecond)
	if tryLock(t, b, name) {
		t.Fatal("lock taken before the lease ran out")
	}
	clock.Advance(time.Millisecond)
	if !tryLock(t, b, name) {
		t.Fatal("lock of a dead holder not taken after its lease ran out")
	}
	if err := a.Unlock(ctx, name); err != nil {
		t.Fatalf("late Unlock: %v", err)
	}
	if tryLock(t, c, name) {
		t.Fatal("the dead holder's late Unlock freed the new holder's lock")
	}
}

// renewals is a store that reports each lease renewal it answered.
type renewals struct {
	SharedStore
	done chan bool
}

func (r *renewals) Lease(ctx context.Context, name, owner string, ttl time.Duration) (bool, error) {
	ok, err := r.SharedStore.Lease(ctx, name, owner, ttl)
	if err == nil {
		r.done <- ok
	}
	return ok, err
}

// A live holder keeps its lock past the TTL by renewing it.
func TestStoreStorageLockRenewed(t *testing.T) {
	ctx := context.Background()
	clock := clockwork.NewFakeClockAt(base)
	rs := replicas(t, 2, clock.Now)
	watched := &renewals{SharedStore: rs[0], done: make(chan bool)}
	a, b := testStorage(t, watched), testStorage(t, rs[1])
	a.renewEvery = time.Millisecond
	const name = "issue_cert_example.com"

	go func() { <-watched.done }() // the Lock itself
	if err := a.Lock(ctx, name); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		clock.Advance(a.ttl / 2)
		// Two renewals: the second surely read the moved clock.
		for range 2 {
			if !<-watched.done {
				t.Fatal("renewal lost the lease")
			}
		}
		if tryLock(t, b, name) {
			t.Fatalf("lock of a live holder taken at %v", clock.Now().Sub(base))
		}
	}
	go func() {
		for range watched.done { // renewals racing Unlock
		}
	}()
	if err := a.Unlock(ctx, name); err != nil {
		t.Fatal(err)
	}
	close(watched.done) // no renewer is left to send
	if !tryLock(t, b, name) {
		t.Fatal("lock not free after Unlock")
	}
}
