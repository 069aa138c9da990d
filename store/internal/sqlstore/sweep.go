package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"strings"
	"time"

	"github.com/usherhq/usher/store"
)

var _ store.Sweeps = (*Store)(nil)

const sweepRunCols = `id, policy, dry_run, started, finished, state, planned, applied, failed, reason, plan`

func scanSweepRun(row scanner) (store.SweepRun, error) {
	var r store.SweepRun
	err := row.Scan(&r.ID, &r.Policy, &r.DryRun, at(&r.Started), at(&r.Finished), &r.State,
		&r.Planned, &r.Applied, &r.Failed, &r.Reason, &r.Plan)
	if err != nil {
		return store.SweepRun{}, err
	}
	if len(r.Plan) == 0 {
		r.Plan = nil
	}
	return r, nil
}

// StartSweep implements store.Sweeps. A zero Started means now, an empty
// State means "running"; the ID passed in is ignored.
func (s *Store) StartSweep(ctx context.Context, r store.SweepRun) (id int64, err error) {
	ctx, end := s.call(ctx, &err, "start sweep of %s", r.Policy)
	defer end()
	if r.Policy == "" {
		return 0, invalid("policy is required")
	}
	if r.State == "" {
		r.State = "running"
	}
	err = s.row(ctx, s.write, `
		INSERT INTO sweep_runs (policy, dry_run, started, finished, state, planned, applied, failed, reason, plan)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id`,
		r.Policy, r.DryRun, s.ts(s.orNow(r.Started)), s.nullTS(r.Finished), r.State,
		r.Planned, r.Applied, r.Failed, scrub(r.Reason), blob(r.Plan)).Scan(&id)
	return id, err
}

// FinishSweep implements store.Sweeps: it sets Planned, Applied, Failed,
// State, Reason and Finished of run r.ID. A zero Finished means now, an
// empty State means "done". ErrNotFound for an unknown run.
func (s *Store) FinishSweep(ctx context.Context, r store.SweepRun) (err error) {
	ctx, end := s.call(ctx, &err, "finish sweep %d", r.ID)
	defer end()
	if r.State == "" {
		r.State = "done"
	}
	return affected(s.exec(ctx, s.write, `
		UPDATE sweep_runs SET planned = ?, applied = ?, failed = ?, state = ?, reason = ?, finished = ?
		WHERE id = ?`,
		r.Planned, r.Applied, r.Failed, r.State, scrub(r.Reason), s.ts(s.orNow(r.Finished)), r.ID))
}

// UpdateSweep implements store.Sweeps: it sets Planned, Applied, Failed,
// State (empty means "running"), Reason, Plan and Finished (zero: unset)
// of run r.ID. ErrNotFound for an unknown run.
func (s *Store) UpdateSweep(ctx context.Context, r store.SweepRun) (err error) {
	ctx, end := s.call(ctx, &err, "update sweep %d", r.ID)
	defer end()
	if r.State == "" {
		r.State = "running"
	}
	return affected(s.exec(ctx, s.write, `
		UPDATE sweep_runs SET planned = ?, applied = ?, failed = ?, state = ?, reason = ?, plan = ?, finished = ?
		WHERE id = ?`,
		r.Planned, r.Applied, r.Failed, r.State, scrub(r.Reason), blob(r.Plan), s.nullTS(r.Finished), r.ID))
}

// SweepRuns implements store.Sweeps, newest (highest ID) first; limit <= 0
// means 100.
func (s *Store) SweepRuns(ctx context.Context, limit int) (runs []store.SweepRun, err error) {
	ctx, end := s.call(ctx, &err, "sweep runs")
	defer end()
	rows, err := s.query(ctx, s.read, `SELECT `+sweepRunCols+` FROM sweep_runs ORDER BY id DESC LIMIT ?`, pageSize(limit))
	return collect(rows, err, scanSweepRun)
}

// UnfinishedSweep implements store.Sweeps. Dry runs count too; the caller
// sees DryRun.
func (s *Store) UnfinishedSweep(ctx context.Context, policy string) (r store.SweepRun, err error) {
	ctx, end := s.call(ctx, &err, "unfinished sweep of %s", policy)
	defer end()
	return scanSweepRun(s.row(ctx, s.read,
		`SELECT `+sweepRunCols+` FROM sweep_runs WHERE policy = ? AND state = 'running' ORDER BY id DESC LIMIT 1`, policy))
}

// MarkSwept implements store.Sweeps. ErrNotFound for an unknown run.
func (s *Store) MarkSwept(ctx context.Context, runID int64, item string) (err error) {
	ctx, end := s.call(ctx, &err, "mark %q of sweep %d done", item, runID)
	defer end()
	_, err = s.exec(ctx, s.write,
		`INSERT INTO sweep_items (run_id, item) VALUES (?, ?) ON CONFLICT DO NOTHING`, runID, item)
	if s.foreignKey(err) {
		err = store.ErrNotFound
	}
	return err
}

// Swept implements store.Sweeps. The map is never nil; an unknown run has
// no items done.
func (s *Store) Swept(ctx context.Context, runID int64) (done map[string]bool, err error) {
	ctx, end := s.call(ctx, &err, "items of sweep %d", runID)
	defer end()
	rows, err := s.query(ctx, s.read, `SELECT item FROM sweep_items WHERE run_id = ?`, runID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	done = map[string]bool{}
	for rows.Next() {
		var item string
		if err := rows.Scan(&item); err != nil {
			return nil, err
		}
		done[item] = true
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	return done, nil
}

// AddSweepItems implements store.Sweeps, in one transaction. Seq must be
// positive and appear once in items.
func (s *Store) AddSweepItems(ctx context.Context, runID int64, items []store.SweepItem) (err error) {
	ctx, end := s.call(ctx, &err, "record %d planned items of sweep %d", len(items), runID)
	defer end()
	if len(items) == 0 {
		return nil
	}
	rows := make([][]any, len(items))
	seen := make(map[int64]bool, len(items))
	for i, it := range items {
		switch {
		case it.Seq < 1:
			return invalid("item %q: seq %d is not positive", it.Key, it.Seq)
		case seen[it.Seq]:
			return invalid("item %q: seq %d twice", it.Key, it.Seq)
		}
		seen[it.Seq] = true
		rows[i] = []any{runID, it.Seq, it.Key, blob(it.Data)}
	}
	err = s.insertRows(ctx, `INSERT INTO sweep_plan_items (run_id, seq, item, data) VALUES `,
		` ON CONFLICT (run_id, seq) DO UPDATE SET item = excluded.item, data = excluded.data`, rows)
	if s.foreignKey(err) {
		err = store.ErrNotFound
	}
	return err
}

// SweepItems implements store.Sweeps.
func (s *Store) SweepItems(ctx context.Context, runID int64, f store.SweepItemFilter) (items []store.SweepItem, err error) {
	ctx, end := s.call(ctx, &err, "planned items of sweep %d after %d", runID, f.After)
	defer end()
	q := `SELECT seq, item, data FROM sweep_plan_items p WHERE run_id = ? AND seq > ?`
	if f.Pending {
		q += ` AND NOT EXISTS (SELECT 1 FROM sweep_items d WHERE d.run_id = p.run_id AND d.item = p.item)`
	}
	rows, err := s.query(ctx, s.read, q+` ORDER BY seq LIMIT ?`, runID, f.After, pageSize(f.Limit))
	return collect(rows, err, func(row scanner) (store.SweepItem, error) {
		var it store.SweepItem
		err := row.Scan(&it.Seq, &it.Key, &it.Data)
		return it, err
	})
}

// ForgetSweepItems implements store.Sweeps, in one transaction.
func (s *Store) ForgetSweepItems(ctx context.Context, policy string, before int64) (err error) {
	ctx, end := s.call(ctx, &err, "forget the items of sweeps of %s before %d", policy, before)
	defer end()
	const runs = `SELECT id FROM sweep_runs WHERE policy = ? AND id < ? AND state <> 'running'`
	return s.tx(ctx, s.write, false, func(tx Querier) error {
		if _, err := s.exec(ctx, tx, `DELETE FROM sweep_plan_items WHERE run_id IN (`+runs+`)`, policy, before); err != nil {
			return err
		}
		_, err := s.exec(ctx, tx, `DELETE FROM sweep_items WHERE run_id IN (`+runs+`)`, policy, before)
		return err
	})
}

// Bindings implements store.Sweeps. Order and cursor compare bytewise (in
// PostgreSQL the "C" collation, backed by the bindings_page index), so the
// order does not depend on the database's locale; limit <= 0 means 100.
// An empty page means the end.
func (s *Store) Bindings(ctx context.Context, after string, limit int) (bs []store.Binding, err error) {
	ctx, end := s.call(ctx, &err, "bindings after %q", after)
	defer end()
	c := s.f.Bytewise
	// Two statements rather than "? = '' OR (...)", so each walks the
	// index.
	var rows Rows
	if after == "" {
		rows, err = s.query(ctx, s.read, `
			SELECT `+bindingCols+` FROM bindings
			ORDER BY idp`+c+`, subject`+c+` LIMIT ?`, pageSize(limit))
	} else if idp, subject, ok := strings.Cut(after, "\x00"); !ok {
		return nil, invalid("cursor %q is not idp NUL subject", after)
	} else {
		rows, err = s.query(ctx, s.read, `
			SELECT `+bindingCols+` FROM bindings
			WHERE (idp`+c+`, subject`+c+`) > (?, ?)
			ORDER BY idp`+c+`, subject`+c+` LIMIT ?`, idp, subject, pageSize(limit))
	}
	return collect(rows, err, scanBinding)
}

// SetAccessExpiry implements store.Sweeps. The identity need not be bound
// yet: an admin may set the date before the first login.
func (s *Store) SetAccessExpiry(ctx context.Context, idp, subject string, at time.Time) (err error) {
	ctx, end := s.call(ctx, &err, "set access expiry of %s/%s", idp, subject)
	defer end()
	if at.IsZero() {
		_, err = s.exec(ctx, s.write, `DELETE FROM access_expiry WHERE idp = ? AND subject = ?`, idp, subject)
		return err
	}
	_, err = s.exec(ctx, s.write, `
		INSERT INTO access_expiry (idp, subject, expires_at) VALUES (?, ?, ?)
		ON CONFLICT (idp, subject) DO UPDATE SET expires_at = excluded.expires_at`,
		idp, subject, s.ts(at))
	return err
}

// AppStatesOf implements store.Sweeps, in one query.
func (s *Store) AppStatesOf(ctx context.Context, app string, usernames []string) (states []store.AppState, err error) {
	ctx, end := s.call(ctx, &err, "app states of %d users in %s", len(usernames), app)
	defer end()
	if len(usernames) == 0 {
		return nil, nil
	}
	keys := make([]string, len(usernames))
	for i, u := range usernames {
		keys[i] = fold(u)
	}
	list, err := jsonList(keys)
	if err != nil {
		return nil, err
	}
	rows, err := s.query(ctx, s.read, `SELECT `+appStateCols+` FROM app_states
		WHERE app = ? AND username_key IN (SELECT value FROM `+s.f.JSONEach+`)`, app, list)
	return collect(rows, err, scanAppState)
}

// SCIMUsersOf implements store.Sweeps, in one query.
func (s *Store) SCIMUsersOf(ctx context.Context, idp, attr string, values []string) (users []store.SCIMUser, err error) {
	ctx, end := s.call(ctx, &err, "scim users of %s by %d %s", idp, len(values), attr)
	defer end()
	var (
		col  string
		keys []string
	)
	switch {
	case strings.EqualFold(attr, "subject"):
		col = "subject"
		for _, v := range values {
			// A user bound to no one has subject "": no binding's.
			if v != "" {
				keys = append(keys, v)
			}
		}
	case strings.EqualFold(attr, "userName"):
		col = "user_name_key"
		for _, v := range values {
			keys = append(keys, fold(v))
		}
	default:
		return nil, invalid("cannot look users up by %q (only userName, subject)", attr)
	}
	if len(keys) == 0 {
		return nil, nil
	}
	list, err := jsonList(keys)
	if err != nil {
		return nil, err
	}
	// No ORDER BY: SQLite would walk the IdP's users in id order to give
	// it, instead of the index of col.
	rows, err := s.query(ctx, s.read, `SELECT `+scimUserCols+` FROM scim_users
		WHERE idp = ? AND `+col+` IN (SELECT value FROM `+s.f.JSONEach+`)`, idp, list)
	return collect(rows, err, scanSCIMUser)
}

// AccessExpiries implements store.Sweeps, in one query.
func (s *Store) AccessExpiries(ctx context.Context, idp string, subjects []string) (expiries map[string]time.Time, err error) {
	ctx, end := s.call(ctx, &err, "access expiries of %d subjects of %s", len(subjects), idp)
	defer end()
	expiries = map[string]time.Time{}
	if len(subjects) == 0 {
		return expiries, nil
	}
	list, err := jsonList(subjects)
	if err != nil {
		return nil, err
	}
	rows, err := s.query(ctx, s.read, `SELECT subject, expires_at FROM access_expiry
		WHERE idp = ? AND subject IN (SELECT value FROM `+s.f.JSONEach+`)`, idp, list)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	for rows.Next() {
		var (
			subject string
			t       time.Time
		)
		if err := rows.Scan(&subject, at(&t)); err != nil {
			return nil, err
		}
		expiries[subject] = t
	}
	return expiries, rows.Err()
}

// AccessExpiry implements store.Sweeps, in UTC at millisecond precision.
func (s *Store) AccessExpiry(ctx context.Context, idp, subject string) (expires time.Time, err error) {
	ctx, end := s.call(ctx, &err, "access expiry of %s/%s", idp, subject)
	defer end()
	err = s.row(ctx, s.read,
		`SELECT expires_at FROM access_expiry WHERE idp = ? AND subject = ?`, idp, subject).Scan(at(&expires))
	if errors.Is(err, sql.ErrNoRows) {
		return time.Time{}, nil
	}
	return expires, err
}
