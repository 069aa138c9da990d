package jit

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// LoginRecorder is the store's last-login write.
type LoginRecorder interface {
	RecordLogin(ctx context.Context, idp, subject string, at time.Time) error
}

// LoginTimes coalesces last-login times: a sign-in notes its time in
// memory and a Run loop writes the latest per identity once a second, so
// that a sign-in that changes nothing costs no synchronous database
// write. A crash loses at most the last second of them, which only makes
// an inactivity sweep see a person's previous login; no decision rests on
// a single second. Without a running Run loop, Note writes at once. It is
// safe for concurrent use.
type LoginTimes struct {
	Store LoginRecorder
	Log   *slog.Logger

	mu      sync.Mutex
	running bool
	pending map[loginKey]time.Time
}

type loginKey struct{ idp, subject string }

// loginsEvery is how often noted login times are written.
const loginsEvery = time.Second

// Note records that (idp, subject) signed in at at.
func (l *LoginTimes) Note(ctx context.Context, idp, subject string, at time.Time) error {
	l.mu.Lock()
	if !l.running {
		l.mu.Unlock()
		return l.Store.RecordLogin(ctx, idp, subject, at)
	}
	if l.pending == nil {
		l.pending = map[loginKey]time.Time{}
	}
	k := loginKey{idp, subject}
	if at.After(l.pending[k]) {
		l.pending[k] = at
	}
	l.mu.Unlock()
	return nil
}

// Run writes noted times until ctx ends, then writes what is left.
func (l *LoginTimes) Run(ctx context.Context) {
	l.mu.Lock()
	l.running = true
	l.mu.Unlock()
	t := time.NewTicker(loginsEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			l.mu.Lock()
			l.running = false
			l.mu.Unlock()
			l.flush(context.WithoutCancel(ctx))
			return
		case <-t.C:
			l.flush(ctx)
		}
	}
}

// Flush writes the noted times now.
func (l *LoginTimes) Flush(ctx context.Context) { l.flush(ctx) }

func (l *LoginTimes) flush(ctx context.Context) {
	l.mu.Lock()
	todo := l.pending
	l.pending = nil
	l.mu.Unlock()
	if len(todo) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	failed := 0
	var firstErr error
	for k, at := range todo {
		if err := l.Store.RecordLogin(ctx, k.idp, k.subject, at); err != nil {
			failed++
			if firstErr == nil {
				firstErr = err
			}
			// Keep it for the next try unless a newer time came meanwhile.
			l.mu.Lock()
			if l.pending == nil {
				l.pending = map[loginKey]time.Time{}
			}
			if at.After(l.pending[k]) && len(l.pending) < 100_000 {
				l.pending[k] = at
			}
			l.mu.Unlock()
		}
	}
	if failed > 0 {
		log := l.Log
		if log == nil {
			log = slog.Default()
		}
		log.Warn("last-login times not written; kept for the next try", "failed", failed, "of", len(todo), "err", firstErr)
	}
}
