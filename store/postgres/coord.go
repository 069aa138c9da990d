package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/usherhq/usher/store"
)

var _ store.Coordination = (*Store)(nil)

// pruneBatch bounds the expired rows one SeenOnce or Revoke deletes, so a
// backlog is cleared over many calls instead of stalling one login.
const pruneBatch = 100

// SeenOnce implements store.Coordination. Expiry is judged by the store's
// clock; an expired record counts as absent and is replaced. One upsert
// decides: of replicas racing on a key, exactly one inserts or replaces it.
func (s *Store) SeenOnce(ctx context.Context, key string, expires time.Time) (bool, error) {
	if key == "" {
		return false, fmt.Errorf("postgres %s: seen once: key is required", s.name)
	}
	now := ts(s.now())
	// Prune first: a failure then records nothing, and the caller's retry
	// is not mistaken for a replay. SKIP LOCKED keeps replicas pruning at
	// once from queueing on each other; the outer condition is rechecked
	// on a row an upsert renewed meanwhile, so a live record is never lost.
	if _, err := s.pool.Exec(ctx, `
		DELETE FROM seen_once WHERE expires <= $1 AND key IN (
			SELECT key FROM seen_once WHERE expires <= $1 LIMIT $2 FOR UPDATE SKIP LOCKED)`,
		now, pruneBatch); err != nil {
		return false, fmt.Errorf("postgres %s: seen once: prune: %w", s.name, err)
	}
	tag, err := s.pool.Exec(ctx, `
		INSERT INTO seen_once (key, expires) VALUES ($1, $2)
		ON CONFLICT (key) DO UPDATE SET expires = EXCLUDED.expires
		WHERE seen_once.expires <= $3`, key, ts(expires), now)
	if err != nil {
		return false, fmt.Errorf("postgres %s: seen once: %w", s.name, err)
	}
	return tag.RowsAffected() == 0, nil
}

// validRevocation refuses a revocation that would revoke nothing, or
// everything of everyone, or never be forgotten.
func validRevocation(r store.Revocation) error {
	switch {
	case r.SessionID == "" && (r.IdP == "" || r.Subject == ""):
		return errors.New("a session ID or an IdP and subject are required")
	case r.Until.IsZero():
		return errors.New("until is required")
	}
	return nil
}

// Revoke implements store.Coordination. A zero CreatedAt means now.
// Revocations past Until are pruned, a bounded batch per call.
//
// Inserts take an EXCLUSIVE table lock (plain reads still pass): without
// it a revocation could get seq 5, commit after seq 6, and a replica that
// already polled "after 6" would never see it. Revocations are rare; the
// wait is cheap.
func (s *Store) Revoke(ctx context.Context, r store.Revocation) (int64, error) {
	if err := validRevocation(r); err != nil {
		return 0, fmt.Errorf("postgres %s: revoke session %q of %s/%s: %w", s.name, r.SessionID, r.IdP, r.Subject, err)
	}
	now := ts(s.now())
	created := r.CreatedAt
	if created.IsZero() {
		created = now
	}
	var seq int64
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `LOCK TABLE revocations IN EXCLUSIVE MODE`); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `
			DELETE FROM revocations WHERE seq IN (
				SELECT seq FROM revocations WHERE until_at <= $1 LIMIT $2)`, now, pruneBatch); err != nil {
			return err
		}
		return tx.QueryRow(ctx, `
			INSERT INTO revocations (session_id, idp, subject, before_at, until_at, created_at)
			VALUES ($1, $2, $3, $4, $5, $6) RETURNING seq`,
			r.SessionID, r.IdP, r.Subject, nullTS(r.Before), ts(r.Until), ts(created)).Scan(&seq)
	})
	if err != nil {
		return 0, fmt.Errorf("postgres %s: revoke session %q of %s/%s: %w", s.name, r.SessionID, r.IdP, r.Subject, err)
	}
	return seq, nil
}

// Revocations implements store.Coordination; "past Until" is judged by the
// store's clock.
func (s *Store) Revocations(ctx context.Context, after int64) ([]store.Revocation, error) {
	rows, err := s.pool.Query(ctx, `
		SELECT seq, session_id, idp, subject, before_at, until_at, created_at FROM revocations
		WHERE seq > $1 AND until_at > $2 ORDER BY seq`, after, ts(s.now()))
	if err != nil {
		return nil, fmt.Errorf("postgres %s: revocations after %d: %w", s.name, after, err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (store.Revocation, error) {
		var (
			r      store.Revocation
			before *time.Time
		)
		err := row.Scan(&r.Seq, &r.SessionID, &r.IdP, &r.Subject, &before, &r.Until, &r.CreatedAt)
		r.Before, r.Until, r.CreatedAt = fromNullTS(before), r.Until.UTC(), r.CreatedAt.UTC()
		return r, err
	})
	if err != nil {
		return nil, fmt.Errorf("postgres %s: revocations after %d: %w", s.name, after, err)
	}
	if len(out) == 0 {
		out = nil
	}
	return out, nil
}

// Lease implements store.Coordination: one upsert that only overwrites an
// expired lease or owner's own, judged by the store's clock. Replicas'
// clocks must agree to well within ttl.
func (s *Store) Lease(ctx context.Context, name, owner string, ttl time.Duration) (bool, error) {
	if name == "" || owner == "" || ttl <= 0 {
		return false, fmt.Errorf("postgres %s: lease %q for %q for %v: name, owner and a positive ttl are required", s.name, name, owner, ttl)
	}
	now := s.now()
	tag, err := s.pool.Exec(ctx, `
		INSERT INTO leases (name, owner, expires) VALUES ($1, $2, $3)
		ON CONFLICT (name) DO UPDATE SET owner = EXCLUDED.owner, expires = EXCLUDED.expires
		WHERE leases.owner = EXCLUDED.owner OR leases.expires <= $4`,
		name, owner, ts(now.Add(ttl)), ts(now))
	if err != nil {
		return false, fmt.Errorf("postgres %s: lease %s for %s: %w", s.name, name, owner, err)
	}
	return tag.RowsAffected() == 1, nil
}

// ReleaseLease implements store.Coordination; releasing a lease someone
// else holds, or nobody, does nothing.
func (s *Store) ReleaseLease(ctx context.Context, name, owner string) error {
	if _, err := s.pool.Exec(ctx,
		`DELETE FROM leases WHERE name = $1 AND owner = $2`, name, owner); err != nil {
		return fmt.Errorf("postgres %s: release lease %s of %s: %w", s.name, name, owner, err)
	}
	return nil
}
