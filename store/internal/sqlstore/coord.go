package sqlstore

import (
	"context"
	"time"

	"github.com/usherhq/usher/store"
)

var _ store.Coordination = (*Store)(nil)

// pruneBatch bounds the expired rows one SeenOnce or Revoke deletes, so a
// backlog is cleared over many calls instead of stalling one login.
const pruneBatch = 100

// SeenOnce implements store.Coordination. Expiry is judged by the store's
// clock; an expired record counts as absent and is replaced. One upsert
// decides: of replicas racing on a key, exactly one inserts or replaces it.
func (s *Store) SeenOnce(ctx context.Context, key string, expires time.Time) (replay bool, err error) {
	ctx, end := s.call(ctx, &err, "seen once %s", key)
	defer end()
	if key == "" {
		return false, invalid("key is required")
	}
	if err := text(key); err != nil {
		return false, err
	}
	now := s.ts(s.now())
	err = s.tx(ctx, s.write, false, func(tx Querier) error {
		// Prune first: a failure then records nothing, and the caller's
		// retry is not mistaken for a replay. Skipping locked rows keeps
		// replicas pruning at once from queueing on each other; the outer
		// condition is rechecked on a row an upsert renewed meanwhile, so a
		// live record is never lost.
		if _, err := s.exec(ctx, tx, `
			DELETE FROM seen_once WHERE expires <= ? AND key IN (
				SELECT key FROM seen_once WHERE expires <= ? LIMIT ?`+s.f.SkipLocked+`)`,
			now, now, pruneBatch); err != nil {
			return err
		}
		n, err := s.exec(ctx, tx, `
			INSERT INTO seen_once (key, expires) VALUES (?, ?)
			ON CONFLICT (key) DO UPDATE SET expires = excluded.expires
			WHERE seen_once.expires <= ?`, key, s.ts(expires), now)
		replay = n == 0
		return err
	})
	return replay, err
}

// Revoke implements store.Coordination. A zero CreatedAt means now.
// Revocations past Until are pruned, a bounded batch per call. Seq order
// is commit order, so a replica that polled "after N" never misses a
// revocation committed later with a smaller seq: SQLite writes one
// transaction at a time, and PostgreSQL inserts under an EXCLUSIVE table
// lock (plain reads still pass; revocations are rare, the wait cheap).
func (s *Store) Revoke(ctx context.Context, r store.Revocation) (seq int64, err error) {
	ctx, end := s.call(ctx, &err, "revoke session %q of %s/%s", r.SessionID, r.IdP, r.Subject)
	defer end()
	switch {
	case r.SessionID == "" && (r.IdP == "" || r.Subject == ""):
		return 0, invalid("a session ID or an IdP and subject are required")
	case r.Until.IsZero():
		return 0, invalid("until is required")
	}
	if err := text(r.SessionID, r.IdP, r.Subject); err != nil {
		return 0, err
	}
	now := s.now()
	err = s.tx(ctx, s.write, false, func(tx Querier) error {
		if s.f.LockRevocations != "" {
			if _, err := s.exec(ctx, tx, s.f.LockRevocations); err != nil {
				return err
			}
		}
		if _, err := s.exec(ctx, tx, `
			DELETE FROM revocations WHERE seq IN (
				SELECT seq FROM revocations WHERE until_at <= ? LIMIT ?)`, s.ts(now), pruneBatch); err != nil {
			return err
		}
		return s.row(ctx, tx, `
			INSERT INTO revocations (session_id, idp, subject, before_at, until_at, created_at)
			VALUES (?, ?, ?, ?, ?, ?) RETURNING seq`,
			r.SessionID, r.IdP, r.Subject, s.nullTS(r.Before), s.ts(r.Until), s.ts(orTime(r.CreatedAt, now))).Scan(&seq)
	})
	return seq, err
}

// Revocations implements store.Coordination; "past Until" is judged by the
// store's clock.
func (s *Store) Revocations(ctx context.Context, after int64) (out []store.Revocation, err error) {
	ctx, end := s.call(ctx, &err, "revocations after %d", after)
	defer end()
	rows, err := s.query(ctx, s.read, `
		SELECT seq, session_id, idp, subject, before_at, until_at, created_at FROM revocations
		WHERE seq > ? AND until_at > ? ORDER BY seq`, after, s.ts(s.now()))
	return collect(rows, err, func(row scanner) (store.Revocation, error) {
		var r store.Revocation
		err := row.Scan(&r.Seq, &r.SessionID, &r.IdP, &r.Subject, at(&r.Before), at(&r.Until), at(&r.CreatedAt))
		return r, err
	})
}

// Lease implements store.Coordination: one upsert that only overwrites an
// expired lease or owner's own, judged by the store's clock. Replicas'
// clocks must agree to well within ttl.
func (s *Store) Lease(ctx context.Context, name, owner string, ttl time.Duration) (held bool, err error) {
	ctx, end := s.call(ctx, &err, "lease %s for %s", name, owner)
	defer end()
	if name == "" || owner == "" || ttl <= 0 {
		return false, invalid("name, owner and a positive ttl are required, got %q, %q, %v", name, owner, ttl)
	}
	now := s.now()
	n, err := s.exec(ctx, s.write, `
		INSERT INTO leases (name, owner, expires) VALUES (?, ?, ?)
		ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, expires = excluded.expires
		WHERE leases.owner = excluded.owner OR leases.expires <= ?`,
		name, owner, s.ts(now.Add(ttl)), s.ts(now))
	return n == 1, err
}

// ReleaseLease implements store.Coordination; releasing a lease someone
// else holds, or nobody, does nothing.
func (s *Store) ReleaseLease(ctx context.Context, name, owner string) (err error) {
	ctx, end := s.call(ctx, &err, "release lease %s of %s", name, owner)
	defer end()
	_, err = s.exec(ctx, s.write, `DELETE FROM leases WHERE name = ? AND owner = ?`, name, owner)
	return err
}
