package jit

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/usherhq/usher/store"
)

// LoginRecorder is the store's last-login writes.
type LoginRecorder interface {
	RecordLogin(ctx context.Context, idp, subject string, at time.Time) error
	RecordLogins(ctx context.Context, logins ...store.Login) error
}

// LoginTimes coalesces last-login times: a sign-in notes its time in
// memory and a Run loop writes the latest per identity once a second, all
// in one transaction, so that a sign-in that changes nothing costs no
// synchronous database write and a busy second costs one. A crash loses
// at most the last second of them (or, while the database is down, the
// times noted since it went away), which only makes an inactivity sweep
// see a person's previous login; no decision rests on a single second.
// Without a running Run loop, Note writes at once. It is safe for
// concurrent use.
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
	logins := make([]store.Login, 0, len(todo))
	for k, at := range todo {
		logins = append(logins, store.Login{IdP: k.idp, Subject: k.subject, At: at})
	}
	err := l.Store.RecordLogins(ctx, logins...)
	if err == nil {
		return
	}
	// Keep them for the next try unless newer times came meanwhile,
	// bounded so that a long outage cannot grow them without end.
	l.mu.Lock()
	if l.pending == nil {
		l.pending = make(map[loginKey]time.Time, len(todo))
	}
	for k, at := range todo {
		cur, ok := l.pending[k]
		if !ok && len(l.pending) >= maxPendingLogins {
			continue
		}
		if at.After(cur) {
			l.pending[k] = at
		}
	}
	l.mu.Unlock()
	log := l.Log
	if log == nil {
		log = slog.Default()
	}
	log.Warn("last-login times not written; kept for the next try", "logins", len(todo), "err", err)
}

// maxPendingLogins bounds the times kept in memory while the database
// does not take them.
const maxPendingLogins = 100_000
