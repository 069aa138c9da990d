package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"time"

	"github.com/usherhq/usher/store"
)

var _ store.Brakes = (*Store)(nil)

const holdCols = `idp, subject, username, reason, held_at, removed, holds, people, max_removals, window_s, sessions_revoked`

func scanHold(row scanner) (store.Hold, error) {
	var h store.Hold
	var window int64
	err := row.Scan(&h.IdP, &h.Subject, &h.Username, &h.Reason, at(&h.HeldAt), &h.Removed, &h.Holds, &h.People, &h.Limit,
		&window, &h.SessionsRevoked)
	h.Window = time.Duration(window) * time.Second
	return h, err
}

// Brake implements store.Brakes in one write transaction. Its first
// statement upserts the IdP's row in scim_brakes, which PostgreSQL keeps
// locked until the transaction ends, so that of replicas deciding for one
// IdP at once each counts what the one before it wrote; SQLite writes one
// transaction at a time anyway.
func (s *Store) Brake(ctx context.Context, c store.BrakeCheck) (res store.BrakeResult, err error) {
	ctx, end := s.call(ctx, &err, "scim brake of %s/%s", c.IdP, c.Subject)
	defer end()
	switch {
	case c.IdP == "" || c.Subject == "":
		return res, invalid("idp and subject are required")
	case c.At.IsZero() || c.Since.After(c.At):
		return res, invalid("at is required and since must not be after it")
	case c.Limit < 0:
		return res, invalid("limit must not be negative, got %d", c.Limit)
	}
	if err := text(c.IdP, c.Subject, c.Hold.Username); err != nil {
		return res, err
	}
	err = s.tx(ctx, s.write, false, func(tx Querier) error {
		res = store.BrakeResult{}
		if _, err := s.exec(ctx, tx, `
			INSERT INTO scim_brakes (idp, decided) VALUES (?, ?)
			ON CONFLICT (idp) DO UPDATE SET decided = excluded.decided`, c.IdP, s.ts(c.At)); err != nil {
			return err
		}
		if err := s.row(ctx, tx, `SELECT count(*) FROM scim_holds WHERE idp = ?`, c.IdP).Scan(&res.Holds); err != nil {
			return err
		}
		if err := s.row(ctx, tx, `SELECT count(*) FROM scim_removals WHERE idp = ? AND at >= ?`,
			c.IdP, s.ts(c.Since)).Scan(&res.Removed); err != nil {
			return err
		}
		held, err := scanHold(s.row(ctx, tx, `SELECT `+holdCols+` FROM scim_holds WHERE idp = ? AND subject = ?`, c.IdP, c.Subject))
		switch {
		case err == nil:
			res.Held, res.Hold = true, held
			return nil
		case !errors.Is(err, sql.ErrNoRows):
			return err
		}
		var last time.Time
		err = s.row(ctx, tx, `SELECT at FROM scim_removals WHERE idp = ? AND subject = ?`, c.IdP, c.Subject).Scan(at(&last))
		switch {
		case err == nil && !last.Before(c.Since.UTC().Truncate(time.Millisecond)):
			return nil // counted in this window already
		case err != nil && !errors.Is(err, sql.ErrNoRows):
			return err
		}
		if res.Removed+res.Holds < c.Limit {
			res.Removed++
			_, err := s.exec(ctx, tx, `
				INSERT INTO scim_removals (idp, subject, at) VALUES (?, ?, ?)
				ON CONFLICT (idp, subject) DO UPDATE SET at = excluded.at`, c.IdP, c.Subject, s.ts(c.At))
			return err
		}
		h := c.Hold
		h.IdP, h.Subject, h.HeldAt, h.Removed, h.Holds, h.Limit = c.IdP, c.Subject, c.At.UTC().Truncate(time.Millisecond), res.Removed, res.Holds, c.Limit
		h.Window = h.Window.Truncate(time.Second)
		if _, err := s.exec(ctx, tx, `INSERT INTO scim_holds (`+holdCols+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			h.IdP, h.Subject, h.Username, scrub(h.Reason), s.ts(h.HeldAt), h.Removed, h.Holds, h.People, h.Limit,
			int64(h.Window/time.Second), h.SessionsRevoked); err != nil {
			return err
		}
		h.Reason = scrub(h.Reason)
		res.Held, res.New, res.Hold = true, true, h
		res.Holds++
		return nil
	})
	if err != nil {
		return store.BrakeResult{}, err
	}
	return res, nil
}

// Hold implements store.Brakes.
func (s *Store) Hold(ctx context.Context, idp, subject string) (h store.Hold, err error) {
	ctx, end := s.call(ctx, &err, "scim hold of %s/%s", idp, subject)
	defer end()
	return scanHold(s.row(ctx, s.read, `SELECT `+holdCols+` FROM scim_holds WHERE idp = ? AND subject = ?`, idp, subject))
}

// Holds implements store.Brakes.
func (s *Store) Holds(ctx context.Context, idp string, offset, limit int) (holds []store.Hold, total int, err error) {
	ctx, end := s.call(ctx, &err, "scim holds of %s [%d+%d]", idp, offset, limit)
	defer end()
	offset, limit = max(offset, 0), max(limit, 0)
	total, err = s.page(ctx, `SELECT count(*) FROM scim_holds WHERE idp = ?`, idp, limit, func(tx Querier) error {
		rows, err := s.query(ctx, tx, `SELECT `+holdCols+` FROM scim_holds WHERE idp = ?
			ORDER BY held_at, subject LIMIT ? OFFSET ?`, idp, limit, offset)
		holds, err = collect(rows, err, scanHold)
		return err
	})
	if err != nil {
		return nil, 0, err
	}
	return holds, total, nil
}

// HoldCounts implements store.Brakes.
func (s *Store) HoldCounts(ctx context.Context) (counts map[string]int, err error) {
	ctx, end := s.call(ctx, &err, "scim hold counts")
	defer end()
	type count struct {
		idp string
		n   int
	}
	rows, err := s.query(ctx, s.read, `SELECT idp, count(*) FROM scim_holds GROUP BY idp`)
	cs, err := collect(rows, err, func(row scanner) (count, error) {
		var c count
		return c, row.Scan(&c.idp, &c.n)
	})
	if err != nil {
		return nil, err
	}
	counts = make(map[string]int, len(cs))
	for _, c := range cs {
		counts[c.idp] = c.n
	}
	return counts, nil
}

// DeleteHold implements store.Brakes.
func (s *Store) DeleteHold(ctx context.Context, idp, subject string) (err error) {
	ctx, end := s.call(ctx, &err, "delete scim hold of %s/%s", idp, subject)
	defer end()
	return affected(s.exec(ctx, s.write, `DELETE FROM scim_holds WHERE idp = ? AND subject = ?`, idp, subject))
}
