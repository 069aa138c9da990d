package jit

import "sync"

// keyLocks serialises work by key (a person in an app): holders of one
// key take turns, holders of different keys never wait for each other.
// A fixed set of mutexes chosen by hash would make people who share a
// mutex wait for each other's app calls, which a morning's burst of
// logins turns into queues. A key nobody holds takes no memory. The zero
// value is ready to use; it is safe for concurrent use.
type keyLocks struct {
	mu sync.Mutex
	m  map[string]*keyLock
}

type keyLock struct {
	sync.Mutex
	users int // holders and waiters; guarded by keyLocks.mu
}

// lock takes key's lock and returns its release.
func (k *keyLocks) lock(key string) func() {
	k.mu.Lock()
	l := k.m[key]
	if l == nil {
		if k.m == nil {
			k.m = map[string]*keyLock{}
		}
		l = &keyLock{}
		k.m[key] = l
	}
	l.users++
	k.mu.Unlock()
	l.Lock()
	return func() {
		l.Unlock()
		k.mu.Lock()
		if l.users--; l.users == 0 {
			delete(k.m, key)
		}
		k.mu.Unlock()
	}
}
