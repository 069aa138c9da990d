package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/usherhq/usher/store"
)

var _ store.Coordination = (*Store)(nil)

// pruneBatch bounds the expired rows one SeenOnce or Revoke deletes, so a
// backlog is cleared over many calls instead of stalling one login.
const pruneBatch = 100

// SeenOnce implements store.Coordination. Expiry is judged by the store's
// clock; an expired record counts as absent and is replaced.
func (s *Store) SeenOnce(ctx context.Context, key string, expires time.Time) (bool, error) {
	seen, err := s.seenOnce(ctx, key, expires)
	if err != nil {
		return false, fmt.Errorf("sqlite %s: seen once: %w", s.path, err)
	}
	return seen, nil
}

func (s *Store) seenOnce(ctx context.Context, key string, expires time.Time) (bool, error) {
	if key == "" {
		return false, errors.New("key is required")
	}
	now := millis(s.now())
	tx, err := s.write.BeginTx(ctx, nil)
	if err != nil {
		return false, err
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `
		DELETE FROM seen_once WHERE key IN (
			SELECT key FROM seen_once WHERE expires <= ? LIMIT ?)`, now, pruneBatch); err != nil {
		return false, err
	}
	res, err := tx.ExecContext(ctx, `
		INSERT INTO seen_once (key, expires) VALUES (?, ?)
		ON CONFLICT (key) DO UPDATE SET expires = excluded.expires
		WHERE seen_once.expires <= ?`, key, millis(expires), now)
	if err != nil {
		return false, err
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, err
	}
	if err := tx.Commit(); err != nil {
		return false, err
	}
	return n == 0, nil
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
func (s *Store) Revoke(ctx context.Context, r store.Revocation) (int64, error) {
	seq, err := s.revoke(ctx, r)
	if err != nil {
		return 0, fmt.Errorf("sqlite %s: revoke session %q of %s/%s: %w", s.path, r.SessionID, r.IdP, r.Subject, err)
	}
	return seq, nil
}

func (s *Store) revoke(ctx context.Context, r store.Revocation) (int64, error) {
	if err := validRevocation(r); err != nil {
		return 0, err
	}
	now := s.now()
	created := r.CreatedAt
	if created.IsZero() {
		created = now
	}
	tx, err := s.write.BeginTx(ctx, nil)
	if err != nil {
		return 0, err
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `
		DELETE FROM revocations WHERE seq IN (
			SELECT seq FROM revocations WHERE until_at <= ? LIMIT ?)`, millis(now), pruneBatch); err != nil {
		return 0, err
	}
	var seq int64
	if err := tx.QueryRowContext(ctx, `
		INSERT INTO revocations (session_id, idp, subject, before_at, until_at, created_at)
		VALUES (?, ?, ?, ?, ?, ?) RETURNING seq`,
		r.SessionID, r.IdP, r.Subject, nullMillis(r.Before), millis(r.Until), millis(created)).Scan(&seq); err != nil {
		return 0, err
	}
	return seq, tx.Commit()
}

// Revocations implements store.Coordination; "past Until" is judged by the
// store's clock.
func (s *Store) Revocations(ctx context.Context, after int64) ([]store.Revocation, error) {
	rows, err := s.read.QueryContext(ctx, `
		SELECT seq, session_id, idp, subject, before_at, until_at, created_at FROM revocations
		WHERE seq > ? AND until_at > ? ORDER BY seq`, after, millis(s.now()))
	if err != nil {
		return nil, fmt.Errorf("sqlite %s: revocations after %d: %w", s.path, after, err)
	}
	defer rows.Close()
	var out []store.Revocation
	for rows.Next() {
		var (
			r              store.Revocation
			before         sql.NullInt64
			until, created int64
		)
		if err := rows.Scan(&r.Seq, &r.SessionID, &r.IdP, &r.Subject, &before, &until, &created); err != nil {
			return nil, fmt.Errorf("sqlite %s: revocations after %d: %w", s.path, after, err)
		}
		r.Before, r.Until, r.CreatedAt = fromNullMillis(before), fromMillis(until), fromMillis(created)
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite %s: revocations after %d: %w", s.path, after, err)
	}
	return out, nil
}

// Lease implements store.Coordination: one upsert that only overwrites an
// expired lease or owner's own, judged by the store's clock.
func (s *Store) Lease(ctx context.Context, name, owner string, ttl time.Duration) (bool, error) {
	if name == "" || owner == "" || ttl <= 0 {
		return false, fmt.Errorf("sqlite %s: lease %q for %q for %v: name, owner and a positive ttl are required", s.path, name, owner, ttl)
	}
	now := s.now()
	res, err := s.write.ExecContext(ctx, `
		INSERT INTO leases (name, owner, expires) VALUES (?, ?, ?)
		ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, expires = excluded.expires
		WHERE leases.owner = excluded.owner OR leases.expires <= ?`,
		name, owner, millis(now.Add(ttl)), millis(now))
	var n int64
	if err == nil {
		n, err = res.RowsAffected()
	}
	if err != nil {
		return false, fmt.Errorf("sqlite %s: lease %s for %s: %w", s.path, name, owner, err)
	}
	return n == 1, nil
}

// ReleaseLease implements store.Coordination; releasing a lease someone
// else holds, or nobody, does nothing.
func (s *Store) ReleaseLease(ctx context.Context, name, owner string) error {
	if _, err := s.write.ExecContext(ctx,
		`DELETE FROM leases WHERE name = ? AND owner = ?`, name, owner); err != nil {
		return fmt.Errorf("sqlite %s: release lease %s of %s: %w", s.path, name, owner, err)
	}
	return nil
}
