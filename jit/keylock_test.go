package jit

import (
	"sync"
	"testing"
	"time"
)

// TestKeyLocks: one key's holders take turns; another key's holder does
// not wait for them; nothing is kept once every holder is gone.
func TestKeyLocks(t *testing.T) {
	t.Parallel()
	var k keyLocks
	unlock := k.lock("jira\x00alice")

	other := make(chan struct{})
	go func() { k.lock("jira\x00bob")(); close(other) }()
	select {
	case <-other:
	case <-time.After(10 * time.Second):
		t.Fatal("bob waited for alice's lock")
	}

	var mu sync.Mutex
	inside, most := 0, 0
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			defer k.lock("jira\x00alice")()
			mu.Lock()
			inside++
			most = max(most, inside)
			mu.Unlock()
			time.Sleep(time.Millisecond)
			mu.Lock()
			inside--
			mu.Unlock()
		})
	}
	time.Sleep(5 * time.Millisecond)
	mu.Lock()
	if inside != 0 {
		t.Errorf("%d got alice's lock while it was held", inside)
	}
	mu.Unlock()
	unlock()
	wg.Wait()
	if most != 1 {
		t.Errorf("%d held alice's lock at once, want 1", most)
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if len(k.m) != 0 {
		t.Errorf("%d locks kept after every holder left", len(k.m))
	}
}
