package main

import (
	"context"
	"sync"
	"time"
)

// background starts the loops that outlive generations: revocation
// refresh and the queue gauges. Close stops them.
func (m *Main) background() {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	poll := m.RevocationPoll
	if poll <= 0 {
		poll = time.Second
	}
	wg.Add(5)
	go func() { defer wg.Done(); m.heartbeat(ctx, m.Config.Provisioning.Retry.Interval) }()
	go func() { defer wg.Done(); m.sessions.Run(ctx, poll) }()
	go func() { defer wg.Done(); m.gauges(ctx, 15*time.Second) }()
	// Batched writes of what a crash may lose: a sign-in's own audit
	// record and its last-login time. They stop last, writing what waits.
	go func() { defer wg.Done(); m.audit.Run(ctx) }()
	go func() { defer wg.Done(); m.logins.Run(ctx) }()
	m.stopBackground = func() { cancel(); wg.Wait() }
}

// heartbeat keeps this replica's lease "replica:<owner>" alive: the
// changes it recorded and works on (job leases) are its own while it
// beats, and free for any replica at once when it stops beating (a
// crash), rather than when each job's lease runs out. A clean stop
// releases it.
func (m *Main) heartbeat(ctx context.Context, every time.Duration) {
	if every <= 0 {
		every = 5 * time.Second
	}
	name := "replica:" + m.owner
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		if _, err := m.store.Lease(ctx, name, m.owner, 3*every); err != nil && ctx.Err() == nil {
			m.Log.Warn("heartbeat lease", "err", err)
		}
		select {
		case <-ctx.Done():
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			_ = m.store.ReleaseLease(rctx, name, m.owner)
			cancel()
			return
		case <-t.C:
		}
	}
}

// gauges keeps the retry queue metrics current and counts SAML
// metadata refreshes that failed since the last look.
func (m *Main) gauges(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	seen := map[string]uint64{}
	var last *generation
	for {
		if q, err := m.store.Queue(ctx); err == nil {
			var age time.Duration
			if !q.Oldest.IsZero() {
				age = m.Now().Sub(q.Oldest)
			}
			m.metrics.SetQueue(q.Depth, age)
		}
		if g := m.gen.Load(); g != nil {
			m.brakeGauges(ctx, g)
			if g != last { // a reload opened new providers with new counters
				seen, last = map[string]uint64{}, g
			}
			for _, p := range g.providers {
				if f, ok := p.(interface{ MetadataRefreshFailures() uint64 }); ok {
					n := f.MetadataRefreshFailures()
					for ; seen[p.ID()] < n; seen[p.ID()]++ {
						m.metrics.MetadataRefreshFailure(p.ID())
					}
				}
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// brakeGauges reports the removals each IdP's SCIM brake holds, from the
// store, so every replica reports the same; an IdP with a brake and no
// holds reports 0.
func (m *Main) brakeGauges(ctx context.Context, g *generation) {
	counts, err := m.store.HoldCounts(ctx)
	if err != nil {
		return // the store's outage shows elsewhere; the gauge keeps its last value
	}
	for id := range g.lifecycle.Brakes {
		if _, ok := counts[id]; !ok {
			counts[id] = 0
		}
	}
	m.metrics.SetSCIMHolds(counts)
}
