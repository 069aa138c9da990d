package storetest

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/usherhq/usher/store"
)

// Benchmark measures the calls on a login's hot path, each as a
// sub-benchmark run in parallel the way concurrent logins call them:
// Bind of an identity already bound (the common login), Binding,
// AppState and Append of one audit event. open must return a store on a
// fresh, empty, migrated database; Benchmark closes it.
func Benchmark(b *testing.B, open func(b *testing.B) store.Store) {
	const users = 1000
	ctx := context.Background()
	s := open(b)
	b.Cleanup(func() { s.Close() })
	for i := range users {
		sub := fmt.Sprint(i)
		if _, err := s.Bind(ctx, store.Binding{IdP: "okta", Subject: sub, Username: "user" + sub}); err != nil {
			b.Fatal(err)
		}
		if err := s.PutAppState(ctx, store.AppState{App: "jira", Username: "user" + sub, IdP: "okta", Subject: sub, Hash: "h", SyncedAt: time.Now()}); err != nil {
			b.Fatal(err)
		}
	}
	// each runs fn with a user number that differs between calls.
	each := func(b *testing.B, fn func(sub string) error) {
		var n atomic.Int64
		b.ReportAllocs()
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				sub := fmt.Sprint(n.Add(1) % users)
				if err := fn(sub); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	b.Run("Bind", func(b *testing.B) {
		each(b, func(sub string) error {
			_, err := s.Bind(ctx, store.Binding{IdP: "okta", Subject: sub, Username: "user" + sub})
			return err
		})
	})
	b.Run("Binding", func(b *testing.B) {
		each(b, func(sub string) error {
			_, err := s.Binding(ctx, "okta", sub)
			return err
		})
	})
	b.Run("AppState", func(b *testing.B) {
		each(b, func(sub string) error {
			_, err := s.AppState(ctx, "jira", "user"+sub)
			return err
		})
	})
	b.Run("Append", func(b *testing.B) {
		each(b, func(sub string) error {
			return s.Append(ctx, store.Event{Action: "login", IdP: "okta", Subject: sub, Username: "user" + sub, Actor: "login", Outcome: "ok"})
		})
	})
}

// BenchmarkBrake measures one SCIM brake decision during a burst: the
// IdP has removed removals people within the window already and holds
// as many, so each decision counts both (two indexed counts) and writes
// the new removal, under the IdP's lock. open must return a store on a
// fresh, empty, migrated database; BenchmarkBrake closes it.
func BenchmarkBrake(b *testing.B, open func(b *testing.B) store.Store, removals int) {
	ctx := context.Background()
	s := open(b)
	b.Cleanup(func() { s.Close() })
	at := time.Now()
	for i := range 2 * removals {
		limit := 1 << 30
		if i >= removals {
			limit = 0 // hold the second half
		}
		if _, err := s.Brake(ctx, store.BrakeCheck{IdP: "okta", Subject: fmt.Sprint("pre", i), At: at, Since: at.Add(-time.Hour), Limit: limit}); err != nil {
			b.Fatal(err)
		}
	}
	var n atomic.Int64
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			_, err := s.Brake(ctx, store.BrakeCheck{IdP: "okta", Subject: fmt.Sprint("s", n.Add(1)), At: at, Since: at.Add(-time.Hour), Limit: 1 << 30})
			if err != nil {
				b.Error(err)
				return
			}
		}
	})
}
