package jit

import (
	"context"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/usherhq/usher/store"
	"github.com/usherhq/usher/targets/atlassiantest"
)

// readCounter counts the store reads an admission makes of what it
// recorded of a person, and which function asked for each app state.
type readCounter struct {
	LifecycleStore
	mu       sync.Mutex
	recorded int
	states   []string // the jit function that called AppState
}

func (c *readCounter) Recorded(ctx context.Context, idp, subject, username string, apps ...string) (store.Recorded, error) {
	c.mu.Lock()
	c.recorded++
	c.mu.Unlock()
	return c.LifecycleStore.Recorded(ctx, idp, subject, username, apps...)
}

func (c *readCounter) AppState(ctx context.Context, app, username string) (store.AppState, error) {
	caller := "?"
	pcs := make([]uintptr, 32)
	frames := runtime.CallersFrames(pcs[:runtime.Callers(2, pcs)])
	for {
		f, more := frames.Next()
		if i := strings.Index(f.Function, "/jit."); i >= 0 {
			caller = f.Function[i+len("/jit."):]
			break
		}
		if !more {
			break
		}
	}
	c.mu.Lock()
	c.states = append(c.states, caller)
	c.mu.Unlock()
	return c.LifecycleStore.AppState(ctx, app, username)
}

// TestAdmitReadsRecordsOnce: an admission reads what usher recorded of
// the person (binding, profile, app states) once, and decides adoption
// and what to record from that read. Only a reconcile reads an app
// state again, after it takes the person's lock, since another admission
// may have changed it meanwhile.
func TestAdmitReadsRecordsOnce(t *testing.T) {
	for _, tt := range []struct {
		name  string
		mode  string
		again bool // the person signed in before
	}{
		{name: "new person"},
		{name: "new person, manual provisioning", mode: ProvisionManual},
		{name: "returning person", again: true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, atlassiantest.Jira, atlassiantest.Confluence)
			f.withPolicy(t, tt.mode, "")
			if tt.again {
				if _, err := f.l.Admit(t.Context(), person("s1", "alice", "Engineering"), LoginVia("okta")); err != nil {
					t.Fatal(err)
				}
			}
			c := &readCounter{LifecycleStore: f.l.Store}
			f.l.Store = c
			if _, err := f.l.Admit(t.Context(), person("s1", "alice", "Engineering"), LoginVia("okta")); err != nil {
				t.Fatal(err)
			}
			if c.recorded != 1 {
				t.Errorf("Recorded read %d times, want once", c.recorded)
			}
			var again []string
			for _, caller := range c.states {
				if !strings.HasPrefix(caller, "(*Reconciler).apply") && !strings.HasPrefix(caller, "(*applier).") {
					again = append(again, caller)
				}
			}
			if len(again) > 0 {
				t.Errorf("AppState read by %v, which the admission's Recorded read answers already (all reads: %v)", again, c.states)
			}
		})
	}
}
