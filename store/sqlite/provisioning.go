package sqlite

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/usherhq/usher/store"
)

var _ store.Provisioning = (*Store)(nil)

// defaultPage is the page size of AppStates when the caller gives none.
const defaultPage = 100

// nullMillis stores a zero time as NULL, so "never" survives the trip.
func nullMillis(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return millis(t)
}

func fromNullMillis(v sql.NullInt64) time.Time {
	if !v.Valid {
		return time.Time{}
	}
	return fromMillis(v.Int64)
}

const appStateCols = `app, username, idp, subject, hash, synced_at, deprovisioned, deprovisioned_at, deprovisioned_reason,
	deprovisioned_source, deprovisioned_actor, deprovisioned_run, deprovisioned_action`

func scanAppState(row scanner) (store.AppState, error) {
	var (
		a            store.AppState
		synced, depr sql.NullInt64
	)
	err := row.Scan(&a.App, &a.Username, &a.IdP, &a.Subject, &a.Hash, &synced, &a.Deprovisioned, &depr, &a.DeprovisionedReason,
		&a.DeprovisionedSource, &a.DeprovisionedActor, &a.DeprovisionedRun, &a.DeprovisionedAction)
	if errors.Is(err, sql.ErrNoRows) {
		err = store.ErrNotFound
	}
	a.SyncedAt = fromNullMillis(synced)
	a.DeprovisionedAt = fromNullMillis(depr)
	return a, err
}

// AppState implements store.Provisioning. The username matches in any case.
func (s *Store) AppState(ctx context.Context, app, username string) (store.AppState, error) {
	a, err := scanAppState(s.read.QueryRowContext(ctx,
		`SELECT `+appStateCols+` FROM app_states WHERE app = ? AND username_key = ?`, app, strings.ToLower(username)))
	if err != nil {
		return store.AppState{}, fmt.Errorf("sqlite %s: app state of %s in %s: %w", s.path, username, app, err)
	}
	return a, nil
}

// PutAppState implements store.Provisioning. A username differing only in
// case replaces the state and its spelling.
func (s *Store) PutAppState(ctx context.Context, a store.AppState) error {
	if a.App == "" || a.Username == "" {
		return fmt.Errorf("sqlite %s: put app state %q/%q: app and username are required", s.path, a.App, a.Username)
	}
	_, err := s.write.ExecContext(ctx, `
		INSERT OR REPLACE INTO app_states (app, username_key, username, idp, subject, hash, synced_at, deprovisioned, deprovisioned_at, deprovisioned_reason,
			deprovisioned_source, deprovisioned_actor, deprovisioned_run, deprovisioned_action)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		a.App, strings.ToLower(a.Username), a.Username, a.IdP, a.Subject, a.Hash, nullMillis(a.SyncedAt),
		a.Deprovisioned, nullMillis(a.DeprovisionedAt), a.DeprovisionedReason,
		a.DeprovisionedSource, a.DeprovisionedActor, a.DeprovisionedRun, a.DeprovisionedAction)
	if err != nil {
		return fmt.Errorf("sqlite %s: put app state of %s in %s: %w", s.path, a.Username, a.App, err)
	}
	return nil
}

// RecordSync implements store.Provisioning.
func (s *Store) RecordSync(ctx context.Context, a store.AppState) error {
	if a.App == "" || a.Username == "" {
		return fmt.Errorf("sqlite %s: record sync %q/%q: app and username are required", s.path, a.App, a.Username)
	}
	_, err := s.write.ExecContext(ctx, `
		INSERT INTO app_states (app, username_key, username, idp, subject, hash, synced_at)
		VALUES (?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (app, username_key) DO UPDATE SET
			username = excluded.username, idp = excluded.idp, subject = excluded.subject,
			hash = excluded.hash, synced_at = excluded.synced_at`,
		a.App, strings.ToLower(a.Username), a.Username, a.IdP, a.Subject, a.Hash, nullMillis(a.SyncedAt))
	if err != nil {
		return fmt.Errorf("sqlite %s: record sync of %s in %s: %w", s.path, a.Username, a.App, err)
	}
	return nil
}

// AppStates implements store.Provisioning. The order and the cursor are
// by lower-cased username, the way the apps tell users apart; limit <= 0
// means 100.
func (s *Store) AppStates(ctx context.Context, app, after string, limit int) ([]store.AppState, error) {
	if limit <= 0 {
		limit = defaultPage
	}
	rows, err := s.read.QueryContext(ctx, `
		SELECT `+appStateCols+` FROM app_states
		WHERE app = ? AND username_key > ? ORDER BY username_key LIMIT ?`,
		app, strings.ToLower(after), limit)
	if err != nil {
		return nil, fmt.Errorf("sqlite %s: app states of %s: %w", s.path, app, err)
	}
	defer rows.Close()
	var out []store.AppState
	for rows.Next() {
		a, err := scanAppState(rows)
		if err != nil {
			return nil, fmt.Errorf("sqlite %s: app states of %s: %w", s.path, app, err)
		}
		out = append(out, a)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite %s: app states of %s: %w", s.path, app, err)
	}
	return out, nil
}

// Managed implements store.Provisioning: memberships ordered by lower-cased
// group name, each with the spelling it was first added with.
func (s *Store) Managed(ctx context.Context, app, username string) ([]store.Membership, error) {
	rows, err := s.read.QueryContext(ctx, `
		SELECT app, username, grp, idp, rule, added_at FROM managed_groups
		WHERE app = ? AND username_key = ? ORDER BY group_key`, app, strings.ToLower(username))
	if err != nil {
		return nil, fmt.Errorf("sqlite %s: managed groups of %s in %s: %w", s.path, username, app, err)
	}
	defer rows.Close()
	var out []store.Membership
	for rows.Next() {
		var (
			m     store.Membership
			added int64
		)
		if err := rows.Scan(&m.App, &m.Username, &m.Group, &m.IdP, &m.Rule, &added); err != nil {
			return nil, fmt.Errorf("sqlite %s: managed groups of %s in %s: %w", s.path, username, app, err)
		}
		m.AddedAt = fromMillis(added)
		out = append(out, m)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite %s: managed groups of %s in %s: %w", s.path, username, app, err)
	}
	return out, nil
}

// AddManaged implements store.Provisioning. A group already recorded (in
// any case) keeps its spelling and AddedAt; IdP and Rule become the
// latest grant's. A zero AddedAt means now.
func (s *Store) AddManaged(ctx context.Context, ms ...store.Membership) error {
	if len(ms) == 0 {
		return nil
	}
	for _, m := range ms {
		if m.App == "" || m.Username == "" || m.Group == "" {
			return fmt.Errorf("sqlite %s: add managed group %q of %q in %q: app, username and group are required", s.path, m.Group, m.Username, m.App)
		}
	}
	if err := s.addManaged(ctx, ms); err != nil {
		return fmt.Errorf("sqlite %s: add %d managed groups: %w", s.path, len(ms), err)
	}
	return nil
}

func (s *Store) addManaged(ctx context.Context, ms []store.Membership) error {
	tx, err := s.write.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	stmt, err := tx.PrepareContext(ctx, `
		INSERT INTO managed_groups (app, username_key, group_key, username, grp, idp, rule, added_at)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (app, username_key, group_key) DO UPDATE
		SET idp = excluded.idp, rule = excluded.rule`)
	if err != nil {
		return err
	}
	defer stmt.Close()
	now := s.now()
	for _, m := range ms {
		added := m.AddedAt
		if added.IsZero() {
			added = now
		}
		if _, err := stmt.ExecContext(ctx, m.App, strings.ToLower(m.Username), strings.ToLower(m.Group),
			m.Username, m.Group, m.IdP, m.Rule, millis(added)); err != nil {
			return err
		}
	}
	return tx.Commit()
}

// RemoveManaged implements store.Provisioning. Groups match in any case;
// no groups removes nothing.
func (s *Store) RemoveManaged(ctx context.Context, app, username string, groups ...string) error {
	if len(groups) == 0 {
		return nil
	}
	keys := make([]any, 0, len(groups)+2)
	keys = append(keys, app, strings.ToLower(username))
	for _, g := range groups {
		keys = append(keys, strings.ToLower(g))
	}
	_, err := s.write.ExecContext(ctx, `
		DELETE FROM managed_groups WHERE app = ? AND username_key = ?
		AND group_key IN (?`+strings.Repeat(", ?", len(groups)-1)+`)`, keys...)
	if err != nil {
		return fmt.Errorf("sqlite %s: remove %d managed groups of %s in %s: %w", s.path, len(groups), username, app, err)
	}
	return nil
}

const jobCols = `id, kind, app, key, payload, attempts, not_before, last_error, created_at, updated_at`

func scanJob(row scanner) (store.Job, error) {
	var (
		j                          store.Job
		notBefore, created, update int64
	)
	err := row.Scan(&j.ID, &j.Kind, &j.App, &j.Key, &j.Payload, &j.Attempts, &notBefore, &j.LastError, &created, &update)
	if errors.Is(err, sql.ErrNoRows) {
		err = store.ErrNotFound
	}
	j.NotBefore, j.CreatedAt, j.UpdatedAt = fromMillis(notBefore), fromMillis(created), fromMillis(update)
	return j, err
}

// Enqueue implements store.Provisioning. A zero NotBefore means now, a
// zero CreatedAt too; a replaced job keeps its CreatedAt, Attempts and
// LastError, and a lease on it runs on (see Complete).
func (s *Store) Enqueue(ctx context.Context, j store.Job) (int64, error) {
	if j.Kind == "" || j.App == "" || j.Key == "" {
		return 0, fmt.Errorf("sqlite %s: enqueue %q job for %q in %q: kind, app and key are required", s.path, j.Kind, j.Key, j.App)
	}
	now := s.now()
	notBefore, created := j.NotBefore, j.CreatedAt
	if notBefore.IsZero() {
		notBefore = now
	}
	if created.IsZero() {
		created = now
	}
	payload := j.Payload
	if payload == nil {
		payload = []byte{}
	}
	var id int64
	err := s.write.QueryRowContext(ctx, `
		INSERT INTO jobs (kind, app, key, payload, not_before, created_at, updated_at)
		VALUES (?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (kind, app, key) DO UPDATE
		SET payload = excluded.payload, not_before = excluded.not_before,
		    updated_at = excluded.updated_at, generation = generation + 1
		RETURNING id`,
		j.Kind, j.App, j.Key, payload, millis(notBefore), millis(created), millis(now)).Scan(&id)
	if err != nil {
		return 0, fmt.Errorf("sqlite %s: enqueue %s job for %s in %s: %w", s.path, j.Kind, j.Key, j.App, err)
	}
	return id, nil
}

// Claim implements store.Provisioning. The single writer connection and
// BEGIN IMMEDIATE make the pick and the lease one step no other writer,
// in this process or another, can interleave with.
func (s *Store) Claim(ctx context.Context, owner string, now time.Time, limit int, lease time.Duration) ([]store.Job, error) {
	if owner == "" || lease <= 0 {
		return nil, fmt.Errorf("sqlite %s: claim jobs for %q for %v: owner and a positive lease are required", s.path, owner, lease)
	}
	if limit <= 0 {
		return nil, nil
	}
	jobs, err := s.claim(ctx, owner, now, limit, lease)
	if err != nil {
		return nil, fmt.Errorf("sqlite %s: claim jobs for %s: %w", s.path, owner, err)
	}
	return jobs, nil
}

func (s *Store) claim(ctx context.Context, owner string, now time.Time, limit int, lease time.Duration) ([]store.Job, error) {
	tx, err := s.write.BeginTx(ctx, nil)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback()
	rows, err := tx.QueryContext(ctx, `
		UPDATE jobs SET owner = ?1, lease_until = ?2, claim_gen = generation
		WHERE id IN (
			SELECT id FROM jobs WHERE not_before <= ?3 AND lease_until <= ?3
			ORDER BY not_before, id LIMIT ?4)
		RETURNING `+jobCols,
		owner, millis(now.Add(lease)), millis(now), limit)
	if err != nil {
		return nil, err
	}
	var jobs []store.Job
	for rows.Next() {
		j, err := scanJob(rows)
		if err != nil {
			rows.Close()
			return nil, err
		}
		jobs = append(jobs, j)
	}
	if err := errors.Join(rows.Err(), rows.Close()); err != nil {
		return nil, err
	}
	if err := tx.Commit(); err != nil {
		return nil, err
	}
	sortJobs(jobs)
	return jobs, nil
}

// sortJobs puts claimed jobs in due order; RETURNING gives no order.
func sortJobs(jobs []store.Job) {
	slices.SortFunc(jobs, func(a, b store.Job) int {
		if c := a.NotBefore.Compare(b.NotBefore); c != 0 {
			return c
		}
		return cmp.Compare(a.ID, b.ID)
	})
}

// errNotHeld explains a Complete or Retry by someone whose claim is gone:
// the lease expired and another owner took the job, or it was completed.
func errNotHeld(id int64, owner string) error {
	return fmt.Errorf("job %d not held by %s: %w", id, owner, store.ErrNotFound)
}

// Complete implements store.Provisioning. The owner holds a job until
// another owner claims it, even past its lease: finished work still
// counts. ErrNotFound when owner does not hold it.
func (s *Store) Complete(ctx context.Context, id int64, owner string) error {
	if err := s.complete(ctx, id, owner); err != nil {
		return fmt.Errorf("sqlite %s: complete job %d: %w", s.path, id, err)
	}
	return nil
}

func (s *Store) complete(ctx context.Context, id int64, owner string) error {
	if owner == "" {
		return errors.New("owner is required")
	}
	tx, err := s.write.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	res, err := tx.ExecContext(ctx,
		`DELETE FROM jobs WHERE id = ? AND owner = ? AND generation = claim_gen`, id, owner)
	if err != nil {
		return err
	}
	n, err := res.RowsAffected()
	if err != nil {
		return err
	}
	if n == 1 {
		return tx.Commit()
	}
	// Re-enqueued since the claim: the newer payload still has to land.
	res, err = tx.ExecContext(ctx,
		`UPDATE jobs SET owner = '', lease_until = 0 WHERE id = ? AND owner = ?`, id, owner)
	if err != nil {
		return err
	}
	if n, err = res.RowsAffected(); err != nil {
		return err
	}
	if n == 0 {
		return errNotHeld(id, owner)
	}
	return tx.Commit()
}

// Retry implements store.Provisioning. ErrNotFound when owner does not
// hold the job.
func (s *Store) Retry(ctx context.Context, id int64, owner string, notBefore time.Time, lastErr string) error {
	if owner == "" {
		return fmt.Errorf("sqlite %s: retry job %d: owner is required", s.path, id)
	}
	now := s.now()
	res, err := s.write.ExecContext(ctx, `
		UPDATE jobs SET attempts = attempts + 1, not_before = ?, last_error = ?, failed_at = ?,
		       updated_at = ?, owner = '', lease_until = 0
		WHERE id = ? AND owner = ?`,
		millis(notBefore), lastErr, millis(now), millis(now), id, owner)
	if err == nil {
		var n int64
		if n, err = res.RowsAffected(); err == nil && n == 0 {
			err = errNotHeld(id, owner)
		}
	}
	if err != nil {
		return fmt.Errorf("sqlite %s: retry job %d: %w", s.path, id, err)
	}
	return nil
}

// Queue implements store.Provisioning. Depth counts leased jobs too: they
// are not done until completed.
func (s *Store) Queue(ctx context.Context) (store.QueueStats, error) {
	var (
		st     store.QueueStats
		oldest sql.NullInt64
	)
	if err := s.read.QueryRowContext(ctx, `SELECT count(*), min(created_at) FROM jobs`).Scan(&st.Depth, &oldest); err != nil {
		return st, fmt.Errorf("sqlite %s: queue stats: %w", s.path, err)
	}
	st.Oldest = fromNullMillis(oldest)
	rows, err := s.read.QueryContext(ctx, `SELECT `+jobCols+` FROM jobs
		WHERE last_error <> '' ORDER BY failed_at DESC, id DESC LIMIT 10`)
	if err != nil {
		return st, fmt.Errorf("sqlite %s: queue stats: %w", s.path, err)
	}
	defer rows.Close()
	for rows.Next() {
		j, err := scanJob(rows)
		if err != nil {
			return st, fmt.Errorf("sqlite %s: queue stats: %w", s.path, err)
		}
		st.LastErrors = append(st.LastErrors, j)
	}
	if err := rows.Err(); err != nil {
		return st, fmt.Errorf("sqlite %s: queue stats: %w", s.path, err)
	}
	return st, nil
}
