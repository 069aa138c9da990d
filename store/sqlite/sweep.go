package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	sqlite "modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/usherhq/usher/store"
)

var _ store.Sweeps = (*Store)(nil)

// sweepDefaultLimit is the page size when a caller passes limit <= 0.
const sweepDefaultLimit = 100

const sweepRunCols = `id, policy, dry_run, started, finished, state, planned, applied, failed, reason, plan`

func scanSweepRun(row scanner) (store.SweepRun, error) {
	var (
		r        store.SweepRun
		started  int64
		finished sql.NullInt64
	)
	err := row.Scan(&r.ID, &r.Policy, &r.DryRun, &started, &finished, &r.State,
		&r.Planned, &r.Applied, &r.Failed, &r.Reason, &r.Plan)
	if err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			return store.SweepRun{}, store.ErrNotFound
		}
		return store.SweepRun{}, err
	}
	r.Started = fromMillis(started)
	if finished.Valid {
		r.Finished = fromMillis(finished.Int64)
	}
	if len(r.Plan) == 0 {
		r.Plan = nil
	}
	return r, nil
}

// sweepFinished is the finished column: NULL while unset.
func sweepFinished(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return millis(t)
}

// StartSweep implements store.Sweeps. A zero Started means now, an empty
// State means "running"; the ID passed in is ignored.
func (s *Store) StartSweep(ctx context.Context, r store.SweepRun) (int64, error) {
	if r.Policy == "" {
		return 0, fmt.Errorf("sqlite %s: start sweep: policy is required", s.path)
	}
	if r.State == "" {
		r.State = "running"
	}
	var id int64
	err := s.write.QueryRowContext(ctx, `
		INSERT INTO sweep_runs (policy, dry_run, started, finished, state, planned, applied, failed, reason, plan)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id`,
		r.Policy, r.DryRun, millis(scimOrNow(r.Started, s.now)), sweepFinished(r.Finished), r.State,
		r.Planned, r.Applied, r.Failed, r.Reason, scimBlob(r.Plan)).Scan(&id)
	if err != nil {
		return 0, fmt.Errorf("sqlite %s: start sweep of %s: %w", s.path, r.Policy, err)
	}
	return id, nil
}

// FinishSweep implements store.Sweeps: it sets Planned, Applied, Failed,
// State, Reason and Finished of run r.ID. A zero Finished means now, an
// empty State means "done". ErrNotFound for an unknown run.
func (s *Store) FinishSweep(ctx context.Context, r store.SweepRun) error {
	if r.State == "" {
		r.State = "done"
	}
	err := scimDeleted(s.write.ExecContext(ctx, `
		UPDATE sweep_runs SET planned = ?, applied = ?, failed = ?, state = ?, reason = ?, finished = ?
		WHERE id = ?`,
		r.Planned, r.Applied, r.Failed, r.State, r.Reason, millis(scimOrNow(r.Finished, s.now)), r.ID))
	if err != nil {
		return fmt.Errorf("sqlite %s: finish sweep %d: %w", s.path, r.ID, err)
	}
	return nil
}

// UpdateSweep implements store.Sweeps: it sets Planned, Applied, Failed,
// State (empty means "running"), Reason, Plan and Finished (zero: unset)
// of run r.ID. ErrNotFound for an unknown run.
func (s *Store) UpdateSweep(ctx context.Context, r store.SweepRun) error {
	if r.State == "" {
		r.State = "running"
	}
	err := scimDeleted(s.write.ExecContext(ctx, `
		UPDATE sweep_runs SET planned = ?, applied = ?, failed = ?, state = ?, reason = ?, plan = ?, finished = ?
		WHERE id = ?`,
		r.Planned, r.Applied, r.Failed, r.State, r.Reason, scimBlob(r.Plan), sweepFinished(r.Finished), r.ID))
	if err != nil {
		return fmt.Errorf("sqlite %s: update sweep %d: %w", s.path, r.ID, err)
	}
	return nil
}

// SweepRuns implements store.Sweeps, newest (highest ID) first; limit <= 0
// means 100.
func (s *Store) SweepRuns(ctx context.Context, limit int) ([]store.SweepRun, error) {
	if limit <= 0 {
		limit = sweepDefaultLimit
	}
	rows, err := s.read.QueryContext(ctx, `SELECT `+sweepRunCols+` FROM sweep_runs ORDER BY id DESC LIMIT ?`, limit)
	var runs []store.SweepRun
	if err == nil {
		defer rows.Close()
		for rows.Next() {
			var r store.SweepRun
			if r, err = scanSweepRun(rows); err != nil {
				break
			}
			runs = append(runs, r)
		}
		if err == nil {
			err = rows.Err()
		}
	}
	if err != nil {
		return nil, fmt.Errorf("sqlite %s: sweep runs: %w", s.path, err)
	}
	return runs, nil
}

// UnfinishedSweep implements store.Sweeps. Dry runs count too; the caller
// sees DryRun.
func (s *Store) UnfinishedSweep(ctx context.Context, policy string) (store.SweepRun, error) {
	r, err := scanSweepRun(s.read.QueryRowContext(ctx,
		`SELECT `+sweepRunCols+` FROM sweep_runs WHERE policy = ? AND state = 'running' ORDER BY id DESC LIMIT 1`, policy))
	if err != nil {
		return r, fmt.Errorf("sqlite %s: unfinished sweep of %s: %w", s.path, policy, err)
	}
	return r, nil
}

// MarkSwept implements store.Sweeps. ErrNotFound for an unknown run.
func (s *Store) MarkSwept(ctx context.Context, runID int64, item string) error {
	_, err := s.write.ExecContext(ctx,
		`INSERT INTO sweep_items (run_id, item) VALUES (?, ?) ON CONFLICT DO NOTHING`, runID, item)
	if err != nil {
		var se *sqlite.Error
		if errors.As(err, &se) && se.Code() == sqlite3.SQLITE_CONSTRAINT_FOREIGNKEY {
			err = store.ErrNotFound
		}
		return fmt.Errorf("sqlite %s: mark %q of sweep %d done: %w", s.path, item, runID, err)
	}
	return nil
}

// Swept implements store.Sweeps. The map is never nil; an unknown run has
// no items done.
func (s *Store) Swept(ctx context.Context, runID int64) (map[string]bool, error) {
	rows, err := s.read.QueryContext(ctx, `SELECT item FROM sweep_items WHERE run_id = ?`, runID)
	done := map[string]bool{}
	if err == nil {
		defer rows.Close()
		for rows.Next() {
			var item string
			if err = rows.Scan(&item); err != nil {
				break
			}
			done[item] = true
		}
		if err == nil {
			err = rows.Err()
		}
	}
	if err != nil {
		return nil, fmt.Errorf("sqlite %s: items of sweep %d: %w", s.path, runID, err)
	}
	return done, nil
}

// AddSweepItems implements store.Sweeps, in one transaction. Seq must be
// positive.
func (s *Store) AddSweepItems(ctx context.Context, runID int64, items []store.SweepItem) error {
	err := checkSweepItems(items)
	if err == nil && len(items) > 0 {
		err = s.scimWriteTx(ctx, func(tx *sql.Tx) error {
			stmt, err := tx.PrepareContext(ctx, `
				INSERT INTO sweep_plan_items (run_id, seq, item, data) VALUES (?, ?, ?, ?)
				ON CONFLICT (run_id, seq) DO UPDATE SET item = excluded.item, data = excluded.data`)
			if err != nil {
				return err
			}
			defer stmt.Close()
			for _, it := range items {
				if _, err := stmt.ExecContext(ctx, runID, it.Seq, it.Key, scimBlob(it.Data)); err != nil {
					return err
				}
			}
			return nil
		})
	}
	if err != nil {
		var se *sqlite.Error
		if errors.As(err, &se) && se.Code() == sqlite3.SQLITE_CONSTRAINT_FOREIGNKEY {
			err = store.ErrNotFound
		}
		return fmt.Errorf("sqlite %s: record %d planned items of sweep %d: %w", s.path, len(items), runID, err)
	}
	return nil
}

func checkSweepItems(items []store.SweepItem) error {
	for _, it := range items {
		if it.Seq < 1 {
			return fmt.Errorf("item %q: seq %d is not positive", it.Key, it.Seq)
		}
	}
	return nil
}

// SweepItems implements store.Sweeps.
func (s *Store) SweepItems(ctx context.Context, runID int64, f store.SweepItemFilter) ([]store.SweepItem, error) {
	if f.Limit <= 0 {
		f.Limit = sweepDefaultLimit
	}
	q := `SELECT seq, item, data FROM sweep_plan_items p WHERE run_id = ? AND seq > ?`
	if f.Pending {
		q += ` AND NOT EXISTS (SELECT 1 FROM sweep_items d WHERE d.run_id = p.run_id AND d.item = p.item)`
	}
	rows, err := s.read.QueryContext(ctx, q+` ORDER BY seq LIMIT ?`, runID, f.After, f.Limit)
	var items []store.SweepItem
	if err == nil {
		defer rows.Close()
		for rows.Next() {
			var it store.SweepItem
			if err = rows.Scan(&it.Seq, &it.Key, &it.Data); err != nil {
				break
			}
			items = append(items, it)
		}
		if err == nil {
			err = rows.Err()
		}
	}
	if err != nil {
		return nil, fmt.Errorf("sqlite %s: planned items of sweep %d after %d: %w", s.path, runID, f.After, err)
	}
	return items, nil
}

// ForgetSweepItems implements store.Sweeps, in one transaction.
func (s *Store) ForgetSweepItems(ctx context.Context, policy string, before int64) error {
	const runs = `SELECT id FROM sweep_runs WHERE policy = ? AND id < ? AND state <> 'running'`
	err := s.scimWriteTx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `DELETE FROM sweep_plan_items WHERE run_id IN (`+runs+`)`, policy, before); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `DELETE FROM sweep_items WHERE run_id IN (`+runs+`)`, policy, before)
		return err
	})
	if err != nil {
		return fmt.Errorf("sqlite %s: forget the items of sweeps of %s before %d: %w", s.path, policy, before, err)
	}
	return nil
}

// sweepCursor splits a Bindings cursor into (idp, subject); "" starts at
// the beginning.
func sweepCursor(after string) (idp, subject string, start bool, err error) {
	if after == "" {
		return "", "", true, nil
	}
	idp, subject, ok := strings.Cut(after, "\x00")
	if !ok {
		return "", "", false, fmt.Errorf("cursor %q is not idp NUL subject", after)
	}
	return idp, subject, false, nil
}

// Bindings implements store.Sweeps. Order and cursor compare bytewise;
// limit <= 0 means 100. An empty page means the end.
func (s *Store) Bindings(ctx context.Context, after string, limit int) ([]store.Binding, error) {
	if limit <= 0 {
		limit = sweepDefaultLimit
	}
	idp, subject, start, err := sweepCursor(after)
	var bs []store.Binding
	if err == nil {
		// Two statements rather than "? OR (...)", so each walks the
		// primary key index.
		var rows *sql.Rows
		if start {
			rows, err = s.read.QueryContext(ctx,
				`SELECT `+bindingCols+` FROM bindings ORDER BY idp, subject LIMIT ?`, limit)
		} else {
			rows, err = s.read.QueryContext(ctx, `
				SELECT `+bindingCols+` FROM bindings WHERE (idp, subject) > (?, ?)
				ORDER BY idp, subject LIMIT ?`, idp, subject, limit)
		}
		if err == nil {
			defer rows.Close()
			for rows.Next() {
				var b store.Binding
				if b, err = scanBinding(rows); err != nil {
					break
				}
				bs = append(bs, b)
			}
			if err == nil {
				err = rows.Err()
			}
		}
	}
	if err != nil {
		return nil, fmt.Errorf("sqlite %s: bindings after %q: %w", s.path, after, err)
	}
	return bs, nil
}

// SetAccessExpiry implements store.Sweeps. The identity need not be bound
// yet: an admin may set the date before the first login.
func (s *Store) SetAccessExpiry(ctx context.Context, idp, subject string, at time.Time) error {
	var err error
	if at.IsZero() {
		_, err = s.write.ExecContext(ctx, `DELETE FROM access_expiry WHERE idp = ? AND subject = ?`, idp, subject)
	} else {
		_, err = s.write.ExecContext(ctx, `
			INSERT INTO access_expiry (idp, subject, expires_at) VALUES (?, ?, ?)
			ON CONFLICT (idp, subject) DO UPDATE SET expires_at = excluded.expires_at`,
			idp, subject, millis(at))
	}
	if err != nil {
		return fmt.Errorf("sqlite %s: set access expiry of %s/%s: %w", s.path, idp, subject, err)
	}
	return nil
}

// AccessExpiry implements store.Sweeps, in UTC at millisecond precision.
func (s *Store) AccessExpiry(ctx context.Context, idp, subject string) (time.Time, error) {
	var at int64
	err := s.read.QueryRowContext(ctx,
		`SELECT expires_at FROM access_expiry WHERE idp = ? AND subject = ?`, idp, subject).Scan(&at)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return time.Time{}, nil
	case err != nil:
		return time.Time{}, fmt.Errorf("sqlite %s: access expiry of %s/%s: %w", s.path, idp, subject, err)
	}
	return fromMillis(at), nil
}
