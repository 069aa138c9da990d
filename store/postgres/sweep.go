package postgres

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/usherhq/usher/store"
)

var _ store.Sweeps = (*Store)(nil)

// sweepDefaultLimit is the page size when a caller passes limit <= 0.
const sweepDefaultLimit = 100

const sweepRunCols = `id, policy, dry_run, started, finished, state, planned, applied, failed, reason, plan`

func scanSweepRun(row pgx.Row) (store.SweepRun, error) {
	var (
		r        store.SweepRun
		finished *time.Time
	)
	err := row.Scan(&r.ID, &r.Policy, &r.DryRun, &r.Started, &finished, &r.State,
		&r.Planned, &r.Applied, &r.Failed, &r.Reason, &r.Plan)
	if err != nil {
		if errors.Is(err, pgx.ErrNoRows) {
			return store.SweepRun{}, store.ErrNotFound
		}
		return store.SweepRun{}, err
	}
	r.Started = r.Started.UTC()
	if finished != nil {
		r.Finished = finished.UTC()
	}
	if len(r.Plan) == 0 {
		r.Plan = nil
	}
	return r, nil
}

// sweepFinished is the finished column: NULL while unset.
func sweepFinished(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	t = ts(t)
	return &t
}

// StartSweep implements store.Sweeps. A zero Started means now, an empty
// State means "running"; the ID passed in is ignored.
func (s *Store) StartSweep(ctx context.Context, r store.SweepRun) (int64, error) {
	if r.Policy == "" {
		return 0, fmt.Errorf("postgres %s: start sweep: policy is required", s.name)
	}
	if r.State == "" {
		r.State = "running"
	}
	var id int64
	err := s.pool.QueryRow(ctx, `
		INSERT INTO sweep_runs (policy, dry_run, started, finished, state, planned, applied, failed, reason, plan)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING id`,
		r.Policy, r.DryRun, ts(scimOrNow(r.Started, s.now)), sweepFinished(r.Finished), r.State,
		r.Planned, r.Applied, r.Failed, r.Reason, scimBlob(r.Plan)).Scan(&id)
	if err != nil {
		return 0, fmt.Errorf("postgres %s: start sweep of %s: %w", s.name, r.Policy, err)
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
	err := scimDeleted(s.pool.Exec(ctx, `
		UPDATE sweep_runs SET planned = $1, applied = $2, failed = $3, state = $4, reason = $5, finished = $6
		WHERE id = $7`,
		r.Planned, r.Applied, r.Failed, r.State, r.Reason, ts(scimOrNow(r.Finished, s.now)), r.ID))
	if err != nil {
		return fmt.Errorf("postgres %s: finish sweep %d: %w", s.name, r.ID, err)
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
	err := scimDeleted(s.pool.Exec(ctx, `
		UPDATE sweep_runs SET planned = $1, applied = $2, failed = $3, state = $4, reason = $5, plan = $6, finished = $7
		WHERE id = $8`,
		r.Planned, r.Applied, r.Failed, r.State, r.Reason, scimBlob(r.Plan), sweepFinished(r.Finished), r.ID))
	if err != nil {
		return fmt.Errorf("postgres %s: update sweep %d: %w", s.name, r.ID, err)
	}
	return nil
}

// SweepRuns implements store.Sweeps, newest (highest ID) first; limit <= 0
// means 100.
func (s *Store) SweepRuns(ctx context.Context, limit int) ([]store.SweepRun, error) {
	if limit <= 0 {
		limit = sweepDefaultLimit
	}
	rows, err := s.pool.Query(ctx, `SELECT `+sweepRunCols+` FROM sweep_runs ORDER BY id DESC LIMIT $1`, limit)
	var runs []store.SweepRun
	if err == nil {
		runs, err = pgx.CollectRows(rows, func(row pgx.CollectableRow) (store.SweepRun, error) { return scanSweepRun(row) })
	}
	if err != nil {
		return nil, fmt.Errorf("postgres %s: sweep runs: %w", s.name, err)
	}
	if len(runs) == 0 {
		runs = nil
	}
	return runs, nil
}

// UnfinishedSweep implements store.Sweeps. Dry runs count too; the caller
// sees DryRun.
func (s *Store) UnfinishedSweep(ctx context.Context, policy string) (store.SweepRun, error) {
	r, err := scanSweepRun(s.pool.QueryRow(ctx,
		`SELECT `+sweepRunCols+` FROM sweep_runs WHERE policy = $1 AND state = 'running' ORDER BY id DESC LIMIT 1`, policy))
	if err != nil {
		return r, fmt.Errorf("postgres %s: unfinished sweep of %s: %w", s.name, policy, err)
	}
	return r, nil
}

// MarkSwept implements store.Sweeps. ErrNotFound for an unknown run.
func (s *Store) MarkSwept(ctx context.Context, runID int64, item string) error {
	_, err := s.pool.Exec(ctx,
		`INSERT INTO sweep_items (run_id, item) VALUES ($1, $2) ON CONFLICT DO NOTHING`, runID, item)
	if err != nil {
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == "23503" {
			err = store.ErrNotFound
		}
		return fmt.Errorf("postgres %s: mark %q of sweep %d done: %w", s.name, item, runID, err)
	}
	return nil
}

// Swept implements store.Sweeps. The map is never nil; an unknown run has
// no items done.
func (s *Store) Swept(ctx context.Context, runID int64) (map[string]bool, error) {
	rows, err := s.pool.Query(ctx, `SELECT item FROM sweep_items WHERE run_id = $1`, runID)
	var items []string
	if err == nil {
		items, err = pgx.CollectRows(rows, pgx.RowTo[string])
	}
	if err != nil {
		return nil, fmt.Errorf("postgres %s: items of sweep %d: %w", s.name, runID, err)
	}
	done := make(map[string]bool, len(items))
	for _, it := range items {
		done[it] = true
	}
	return done, nil
}

// AddSweepItems implements store.Sweeps, in one statement. Seq must be
// positive.
func (s *Store) AddSweepItems(ctx context.Context, runID int64, items []store.SweepItem) error {
	var err error
	for _, it := range items {
		if it.Seq < 1 {
			err = fmt.Errorf("item %q: seq %d is not positive", it.Key, it.Seq)
			break
		}
	}
	if err == nil && len(items) > 0 {
		seqs := make([]int64, len(items))
		keys := make([]string, len(items))
		data := make([][]byte, len(items))
		for i, it := range items {
			seqs[i], keys[i], data[i] = it.Seq, it.Key, scimBlob(it.Data)
		}
		_, err = s.pool.Exec(ctx, `
			INSERT INTO sweep_plan_items (run_id, seq, item, data)
			SELECT $1, seq, item, data FROM unnest($2::bigint[], $3::text[], $4::bytea[]) AS i (seq, item, data)
			ON CONFLICT (run_id, seq) DO UPDATE SET item = excluded.item, data = excluded.data`,
			runID, seqs, keys, data)
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == "23503" {
			err = store.ErrNotFound
		}
	}
	if err != nil {
		return fmt.Errorf("postgres %s: record %d planned items of sweep %d: %w", s.name, len(items), runID, err)
	}
	return nil
}

// SweepItems implements store.Sweeps.
func (s *Store) SweepItems(ctx context.Context, runID int64, f store.SweepItemFilter) ([]store.SweepItem, error) {
	if f.Limit <= 0 {
		f.Limit = sweepDefaultLimit
	}
	q := `SELECT seq, item, data FROM sweep_plan_items p WHERE run_id = $1 AND seq > $2`
	if f.Pending {
		q += ` AND NOT EXISTS (SELECT 1 FROM sweep_items d WHERE d.run_id = p.run_id AND d.item = p.item)`
	}
	rows, err := s.pool.Query(ctx, q+` ORDER BY seq LIMIT $3`, runID, f.After, f.Limit)
	var items []store.SweepItem
	if err == nil {
		items, err = pgx.CollectRows(rows, func(row pgx.CollectableRow) (store.SweepItem, error) {
			var it store.SweepItem
			err := row.Scan(&it.Seq, &it.Key, &it.Data)
			return it, err
		})
	}
	if err != nil {
		return nil, fmt.Errorf("postgres %s: planned items of sweep %d after %d: %w", s.name, runID, f.After, err)
	}
	if len(items) == 0 {
		items = nil
	}
	return items, nil
}

// ForgetSweepItems implements store.Sweeps, in one transaction.
func (s *Store) ForgetSweepItems(ctx context.Context, policy string, before int64) error {
	const runs = `SELECT id FROM sweep_runs WHERE policy = $1 AND id < $2 AND state <> 'running'`
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `DELETE FROM sweep_plan_items WHERE run_id IN (`+runs+`)`, policy, before); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `DELETE FROM sweep_items WHERE run_id IN (`+runs+`)`, policy, before)
		return err
	})
	if err != nil {
		return fmt.Errorf("postgres %s: forget the items of sweeps of %s before %d: %w", s.name, policy, before, err)
	}
	return nil
}

// Bindings implements store.Sweeps. Order and cursor compare bytewise (the
// "C" collation, backed by the bindings_page index), as in store/sqlite;
// limit <= 0 means 100. An empty page means the end.
func (s *Store) Bindings(ctx context.Context, after string, limit int) ([]store.Binding, error) {
	if limit <= 0 {
		limit = sweepDefaultLimit
	}
	var (
		rows pgx.Rows
		err  error
	)
	if after == "" {
		rows, err = s.pool.Query(ctx, `
			SELECT `+bindingCols+` FROM bindings
			ORDER BY idp COLLATE "C", subject COLLATE "C" LIMIT $1`, limit)
	} else if idp, subject, ok := strings.Cut(after, "\x00"); !ok {
		err = fmt.Errorf("cursor %q is not idp NUL subject", after)
	} else {
		rows, err = s.pool.Query(ctx, `
			SELECT `+bindingCols+` FROM bindings
			WHERE (idp COLLATE "C", subject COLLATE "C") > ($1, $2)
			ORDER BY idp COLLATE "C", subject COLLATE "C" LIMIT $3`, idp, subject, limit)
	}
	var bs []store.Binding
	if err == nil {
		bs, err = pgx.CollectRows(rows, func(row pgx.CollectableRow) (store.Binding, error) { return scanBinding(row) })
	}
	if err != nil {
		return nil, fmt.Errorf("postgres %s: bindings after %q: %w", s.name, after, err)
	}
	if len(bs) == 0 {
		bs = nil
	}
	return bs, nil
}

// SetAccessExpiry implements store.Sweeps. The identity need not be bound
// yet: an admin may set the date before the first login.
func (s *Store) SetAccessExpiry(ctx context.Context, idp, subject string, at time.Time) error {
	var err error
	if at.IsZero() {
		_, err = s.pool.Exec(ctx, `DELETE FROM access_expiry WHERE idp = $1 AND subject = $2`, idp, subject)
	} else {
		_, err = s.pool.Exec(ctx, `
			INSERT INTO access_expiry (idp, subject, expires_at) VALUES ($1, $2, $3)
			ON CONFLICT (idp, subject) DO UPDATE SET expires_at = EXCLUDED.expires_at`,
			idp, subject, ts(at))
	}
	if err != nil {
		return fmt.Errorf("postgres %s: set access expiry of %s/%s: %w", s.name, idp, subject, err)
	}
	return nil
}

// AccessExpiry implements store.Sweeps, in UTC at millisecond precision.
func (s *Store) AccessExpiry(ctx context.Context, idp, subject string) (time.Time, error) {
	var at time.Time
	err := s.pool.QueryRow(ctx,
		`SELECT expires_at FROM access_expiry WHERE idp = $1 AND subject = $2`, idp, subject).Scan(&at)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return time.Time{}, nil
	case err != nil:
		return time.Time{}, fmt.Errorf("postgres %s: access expiry of %s/%s: %w", s.name, idp, subject, err)
	}
	return at.UTC(), nil
}
