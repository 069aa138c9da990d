package postgres

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/usherhq/usher/store"
)

var _ store.Provisioning = (*Store)(nil)

// defaultPage is the page size of AppStates when the caller gives none.
const defaultPage = 100

// nullTS stores a zero time as NULL, so "never" survives the trip.
func nullTS(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	v := ts(t)
	return &v
}

func fromNullTS(t *time.Time) time.Time {
	if t == nil {
		return time.Time{}
	}
	return t.UTC()
}

const appStateCols = `app, username, idp, subject, hash, synced_at, deprovisioned, deprovisioned_at, deprovisioned_reason,
	deprovisioned_source, deprovisioned_actor, deprovisioned_run, deprovisioned_action`

func scanAppState(row pgx.Row) (store.AppState, error) {
	var (
		a            store.AppState
		synced, depr *time.Time
	)
	err := row.Scan(&a.App, &a.Username, &a.IdP, &a.Subject, &a.Hash, &synced, &a.Deprovisioned, &depr, &a.DeprovisionedReason,
		&a.DeprovisionedSource, &a.DeprovisionedActor, &a.DeprovisionedRun, &a.DeprovisionedAction)
	if errors.Is(err, pgx.ErrNoRows) {
		err = store.ErrNotFound
	}
	a.SyncedAt = fromNullTS(synced)
	a.DeprovisionedAt = fromNullTS(depr)
	return a, err
}

// AppState implements store.Provisioning. The username matches in any case.
func (s *Store) AppState(ctx context.Context, app, username string) (store.AppState, error) {
	a, err := scanAppState(s.pool.QueryRow(ctx,
		`SELECT `+appStateCols+` FROM app_states WHERE app = $1 AND username_key = $2`, app, strings.ToLower(username)))
	if err != nil {
		return store.AppState{}, fmt.Errorf("postgres %s: app state of %s in %s: %w", s.name, username, app, err)
	}
	return a, nil
}

// PutAppState implements store.Provisioning. A username differing only in
// case replaces the state and its spelling.
func (s *Store) PutAppState(ctx context.Context, a store.AppState) error {
	if a.App == "" || a.Username == "" {
		return fmt.Errorf("postgres %s: put app state %q/%q: app and username are required", s.name, a.App, a.Username)
	}
	_, err := s.pool.Exec(ctx, `
		INSERT INTO app_states (app, username_key, username, idp, subject, hash, synced_at, deprovisioned, deprovisioned_at, deprovisioned_reason,
			deprovisioned_source, deprovisioned_actor, deprovisioned_run, deprovisioned_action)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
		ON CONFLICT (app, username_key) DO UPDATE SET
			username = EXCLUDED.username, idp = EXCLUDED.idp, subject = EXCLUDED.subject,
			hash = EXCLUDED.hash, synced_at = EXCLUDED.synced_at, deprovisioned = EXCLUDED.deprovisioned,
			deprovisioned_at = EXCLUDED.deprovisioned_at, deprovisioned_reason = EXCLUDED.deprovisioned_reason,
			deprovisioned_source = EXCLUDED.deprovisioned_source, deprovisioned_actor = EXCLUDED.deprovisioned_actor,
			deprovisioned_run = EXCLUDED.deprovisioned_run, deprovisioned_action = EXCLUDED.deprovisioned_action`,
		a.App, strings.ToLower(a.Username), a.Username, a.IdP, a.Subject, a.Hash, nullTS(a.SyncedAt),
		a.Deprovisioned, nullTS(a.DeprovisionedAt), a.DeprovisionedReason,
		a.DeprovisionedSource, a.DeprovisionedActor, a.DeprovisionedRun, a.DeprovisionedAction)
	if err != nil {
		return fmt.Errorf("postgres %s: put app state of %s in %s: %w", s.name, a.Username, a.App, err)
	}
	return nil
}

// RecordSync implements store.Provisioning.
func (s *Store) RecordSync(ctx context.Context, a store.AppState) error {
	if a.App == "" || a.Username == "" {
		return fmt.Errorf("postgres %s: record sync %q/%q: app and username are required", s.name, a.App, a.Username)
	}
	_, err := s.pool.Exec(ctx, `
		INSERT INTO app_states (app, username_key, username, idp, subject, hash, synced_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7)
		ON CONFLICT (app, username_key) DO UPDATE SET
			username = EXCLUDED.username, idp = EXCLUDED.idp, subject = EXCLUDED.subject,
			hash = EXCLUDED.hash, synced_at = EXCLUDED.synced_at`,
		a.App, strings.ToLower(a.Username), a.Username, a.IdP, a.Subject, a.Hash, nullTS(a.SyncedAt))
	if err != nil {
		return fmt.Errorf("postgres %s: record sync of %s in %s: %w", s.name, a.Username, a.App, err)
	}
	return nil
}

// AppStates implements store.Provisioning. The order and the cursor are
// by lower-cased username, the way the apps tell users apart; limit <= 0
// means 100. The key column is COLLATE "C", bytewise like store/sqlite,
// so the order does not depend on the database's locale.
func (s *Store) AppStates(ctx context.Context, app, after string, limit int) ([]store.AppState, error) {
	if limit <= 0 {
		limit = defaultPage
	}
	rows, err := s.pool.Query(ctx, `
		SELECT `+appStateCols+` FROM app_states
		WHERE app = $1 AND username_key > $2 ORDER BY username_key LIMIT $3`,
		app, strings.ToLower(after), limit)
	if err != nil {
		return nil, fmt.Errorf("postgres %s: app states of %s: %w", s.name, app, err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (store.AppState, error) { return scanAppState(row) })
	if err != nil {
		return nil, fmt.Errorf("postgres %s: app states of %s: %w", s.name, app, err)
	}
	if len(out) == 0 {
		out = nil
	}
	return out, nil
}

// Managed implements store.Provisioning: memberships ordered by lower-cased
// group name, each with the spelling it was first added with.
func (s *Store) Managed(ctx context.Context, app, username string) ([]store.Membership, error) {
	rows, err := s.pool.Query(ctx, `
		SELECT app, username, grp, idp, rule, added_at FROM managed_groups
		WHERE app = $1 AND username_key = $2 ORDER BY group_key`, app, strings.ToLower(username))
	if err != nil {
		return nil, fmt.Errorf("postgres %s: managed groups of %s in %s: %w", s.name, username, app, err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (store.Membership, error) {
		var m store.Membership
		err := row.Scan(&m.App, &m.Username, &m.Group, &m.IdP, &m.Rule, &m.AddedAt)
		m.AddedAt = m.AddedAt.UTC()
		return m, err
	})
	if err != nil {
		return nil, fmt.Errorf("postgres %s: managed groups of %s in %s: %w", s.name, username, app, err)
	}
	if len(out) == 0 {
		out = nil
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
	now := s.now()
	batch := &pgx.Batch{}
	for _, m := range ms {
		if m.App == "" || m.Username == "" || m.Group == "" {
			return fmt.Errorf("postgres %s: add managed group %q of %q in %q: app, username and group are required", s.name, m.Group, m.Username, m.App)
		}
		added := m.AddedAt
		if added.IsZero() {
			added = now
		}
		batch.Queue(`
			INSERT INTO managed_groups (app, username_key, group_key, username, grp, idp, rule, added_at)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
			ON CONFLICT (app, username_key, group_key) DO UPDATE
			SET idp = EXCLUDED.idp, rule = EXCLUDED.rule`,
			m.App, strings.ToLower(m.Username), strings.ToLower(m.Group), m.Username, m.Group, m.IdP, m.Rule, ts(added))
	}
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		return tx.SendBatch(ctx, batch).Close()
	})
	if err != nil {
		return fmt.Errorf("postgres %s: add %d managed groups: %w", s.name, len(ms), err)
	}
	return nil
}

// RemoveManaged implements store.Provisioning. Groups match in any case;
// no groups removes nothing.
func (s *Store) RemoveManaged(ctx context.Context, app, username string, groups ...string) error {
	if len(groups) == 0 {
		return nil
	}
	keys := make([]string, len(groups))
	for i, g := range groups {
		keys[i] = strings.ToLower(g)
	}
	_, err := s.pool.Exec(ctx, `
		DELETE FROM managed_groups WHERE app = $1 AND username_key = $2 AND group_key = ANY($3)`,
		app, strings.ToLower(username), keys)
	if err != nil {
		return fmt.Errorf("postgres %s: remove %d managed groups of %s in %s: %w", s.name, len(groups), username, app, err)
	}
	return nil
}

const jobCols = `id, kind, app, key, payload, attempts, not_before, last_error, created_at, updated_at`

func scanJob(row pgx.Row) (store.Job, error) {
	var j store.Job
	err := row.Scan(&j.ID, &j.Kind, &j.App, &j.Key, &j.Payload, &j.Attempts, &j.NotBefore, &j.LastError, &j.CreatedAt, &j.UpdatedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		err = store.ErrNotFound
	}
	j.NotBefore, j.CreatedAt, j.UpdatedAt = j.NotBefore.UTC(), j.CreatedAt.UTC(), j.UpdatedAt.UTC()
	return j, err
}

func collectJobs(rows pgx.Rows) ([]store.Job, error) {
	jobs, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (store.Job, error) { return scanJob(row) })
	if len(jobs) == 0 {
		jobs = nil
	}
	return jobs, err
}

// Enqueue implements store.Provisioning. A zero NotBefore means now, a
// zero CreatedAt too; a replaced job keeps its CreatedAt, Attempts and
// LastError, and a lease on it runs on (see Complete). The upsert is one
// statement, so replicas enqueuing the same job at once end with one row.
func (s *Store) Enqueue(ctx context.Context, j store.Job) (int64, error) {
	if j.Kind == "" || j.App == "" || j.Key == "" {
		return 0, fmt.Errorf("postgres %s: enqueue %q job for %q in %q: kind, app and key are required", s.name, j.Kind, j.Key, j.App)
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
	err := s.pool.QueryRow(ctx, `
		INSERT INTO jobs (kind, app, key, payload, not_before, created_at, updated_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7)
		ON CONFLICT (kind, app, key) DO UPDATE
		SET payload = EXCLUDED.payload, not_before = EXCLUDED.not_before,
		    updated_at = EXCLUDED.updated_at, generation = jobs.generation + 1
		RETURNING id`,
		j.Kind, j.App, j.Key, payload, ts(notBefore), ts(created), ts(now)).Scan(&id)
	if err != nil {
		return 0, fmt.Errorf("postgres %s: enqueue %s job for %s in %s: %w", s.name, j.Kind, j.Key, j.App, err)
	}
	return id, nil
}

// Claim implements store.Provisioning. Picking and leasing are one
// statement, hence one transaction: the picked rows are locked FOR UPDATE
// and rows another replica is leasing right now are skipped, not waited
// for, so claimers never block each other nor get the same job.
func (s *Store) Claim(ctx context.Context, owner string, now time.Time, limit int, lease time.Duration) ([]store.Job, error) {
	if owner == "" || lease <= 0 {
		return nil, fmt.Errorf("postgres %s: claim jobs for %q for %v: owner and a positive lease are required", s.name, owner, lease)
	}
	if limit <= 0 {
		return nil, nil
	}
	rows, err := s.pool.Query(ctx, `
		WITH due AS (
			SELECT id FROM jobs
			WHERE not_before <= $3 AND (lease_until IS NULL OR lease_until <= $3)
			ORDER BY not_before, id LIMIT $4
			FOR UPDATE SKIP LOCKED)
		UPDATE jobs SET owner = $1, lease_until = $2, claim_gen = generation
		FROM due WHERE jobs.id = due.id
		RETURNING `+qualify("jobs.", jobCols),
		owner, ts(now.Add(lease)), ts(now), limit)
	if err != nil {
		return nil, fmt.Errorf("postgres %s: claim jobs for %s: %w", s.name, owner, err)
	}
	jobs, err := collectJobs(rows)
	if err != nil {
		return nil, fmt.Errorf("postgres %s: claim jobs for %s: %w", s.name, owner, err)
	}
	// RETURNING gives no order.
	slices.SortFunc(jobs, func(a, b store.Job) int {
		if c := a.NotBefore.Compare(b.NotBefore); c != 0 {
			return c
		}
		return cmp.Compare(a.ID, b.ID)
	})
	return jobs, nil
}

// qualify prefixes every column of a comma-separated list.
func qualify(prefix, cols string) string {
	parts := strings.Split(cols, ", ")
	for i, p := range parts {
		parts[i] = prefix + p
	}
	return strings.Join(parts, ", ")
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
		return fmt.Errorf("postgres %s: complete job %d: %w", s.name, id, err)
	}
	return nil
}

func (s *Store) complete(ctx context.Context, id int64, owner string) error {
	if owner == "" {
		return errors.New("owner is required")
	}
	// An Enqueue racing with the DELETE either bumped the generation first
	// (the DELETE, rechecking the locked row, then skips it) or waits for
	// it and inserts a fresh job: the newest payload survives either way.
	tag, err := s.pool.Exec(ctx,
		`DELETE FROM jobs WHERE id = $1 AND owner = $2 AND generation = claim_gen`, id, owner)
	if err != nil {
		return err
	}
	if tag.RowsAffected() == 1 {
		return nil
	}
	// Re-enqueued since the claim: the newer payload still has to land.
	tag, err = s.pool.Exec(ctx,
		`UPDATE jobs SET owner = '', lease_until = NULL WHERE id = $1 AND owner = $2`, id, owner)
	if err != nil {
		return err
	}
	if tag.RowsAffected() == 0 {
		return errNotHeld(id, owner)
	}
	return nil
}

// Retry implements store.Provisioning. ErrNotFound when owner does not
// hold the job.
func (s *Store) Retry(ctx context.Context, id int64, owner string, notBefore time.Time, lastErr string) error {
	if owner == "" {
		return fmt.Errorf("postgres %s: retry job %d: owner is required", s.name, id)
	}
	now := ts(s.now())
	tag, err := s.pool.Exec(ctx, `
		UPDATE jobs SET attempts = attempts + 1, not_before = $1, last_error = $2, failed_at = $3,
		       updated_at = $3, owner = '', lease_until = NULL
		WHERE id = $4 AND owner = $5`,
		ts(notBefore), lastErr, now, id, owner)
	if err == nil && tag.RowsAffected() == 0 {
		err = errNotHeld(id, owner)
	}
	if err != nil {
		return fmt.Errorf("postgres %s: retry job %d: %w", s.name, id, err)
	}
	return nil
}

// Queue implements store.Provisioning. Depth counts leased jobs too: they
// are not done until completed.
func (s *Store) Queue(ctx context.Context) (store.QueueStats, error) {
	var (
		st     store.QueueStats
		oldest *time.Time
	)
	if err := s.pool.QueryRow(ctx, `SELECT count(*), min(created_at) FROM jobs`).Scan(&st.Depth, &oldest); err != nil {
		return st, fmt.Errorf("postgres %s: queue stats: %w", s.name, err)
	}
	st.Oldest = fromNullTS(oldest)
	rows, err := s.pool.Query(ctx, `SELECT `+jobCols+` FROM jobs
		WHERE last_error <> '' ORDER BY failed_at DESC, id DESC LIMIT 10`)
	if err != nil {
		return st, fmt.Errorf("postgres %s: queue stats: %w", s.name, err)
	}
	if st.LastErrors, err = collectJobs(rows); err != nil {
		return st, fmt.Errorf("postgres %s: queue stats: %w", s.name, err)
	}
	return st, nil
}
