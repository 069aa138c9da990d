package jit

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/usherhq/usher/store"
	"github.com/usherhq/usher/targets/atlassiantest"
)

// intentLog records each Intend with the app writes seen before it.
type intentLog struct {
	store.Provisioning
	srv    map[string]*atlassiantest.Server
	mu     sync.Mutex
	writes []int // app writes made before each intent
}

func (l *intentLog) Intend(ctx context.Context, j store.Job, owner string, lease time.Duration) (int64, error) {
	l.mu.Lock()
	l.writes = append(l.writes, l.srv[j.App].Writes())
	l.mu.Unlock()
	return l.Provisioning.Intend(ctx, j, owner, lease)
}

func (l *intentLog) take() []int {
	l.mu.Lock()
	defer l.mu.Unlock()
	w := l.writes
	l.writes = nil
	return w
}

// TestIntentBeforeTheFirstChange: a change is recorded as an intent
// before the app's first write, and closed when it lands; a login that
// finds the app as it should be (its profile older than the fast path)
// reads, records the sync, and writes no intent.
func TestIntentBeforeTheFirstChange(t *testing.T) {
	t.Parallel()
	f := newFixture(t, atlassiantest.Jira)
	log := &intentLog{Provisioning: f.st, srv: f.srv}
	f.r.Store = log
	ctx := t.Context()
	login := func(what string, p *Profile, wantIntents int) {
		t.Helper()
		f.resetCalls()
		out, err := f.r.provision(ctx, p, "", LoginVia("okta"), queueNever, nil)
		if err != nil || len(out) != 1 || out[0].Err != nil {
			t.Fatalf("%s: provision = %+v, %v", what, out, err)
		}
		writes := log.take()
		if len(writes) != wantIntents {
			t.Fatalf("%s: %d intents, want %d", what, len(writes), wantIntents)
		}
		for _, w := range writes {
			if w != 0 {
				t.Fatalf("%s: intent recorded after %d app writes, want before the first", what, w)
			}
		}
		if q := f.queue(t); q.Depth != 0 {
			t.Fatalf("%s: %d jobs left in the queue, want none", what, q.Depth)
		}
	}
	p := profile("jira")
	login("first login", p, 1)
	if f.srv["jira"].Writes() == 0 {
		t.Fatal("first login wrote nothing to the app")
	}
	f.clock.Advance(2 * f.r.FastPath)
	login("unchanged, past the fast path", p, 0)
	if f.srv["jira"].Writes() != 0 {
		t.Fatalf("unchanged login wrote to the app: %v", f.srv["jira"].Calls())
	}
	if st := f.state(t, "jira", "alice"); !st.SyncedAt.Equal(f.clock.Now()) {
		t.Fatalf("unchanged login did not record its sync: synced at %v, now %v", st.SyncedAt, f.clock.Now())
	}
	p.Apps["jira"].Groups = grants("developers", "support")
	login("a group added", p, 1)
}
