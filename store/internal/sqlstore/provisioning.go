package sqlstore

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"github.com/usherhq/usher/store"
)

var _ store.Provisioning = (*Store)(nil)

const appStateCols = `app, username, idp, subject, hash, synced_at, deprovisioned, deprovisioned_at, deprovisioned_reason,
	deprovisioned_source, deprovisioned_actor, deprovisioned_run, deprovisioned_action`

func scanAppState(row scanner) (store.AppState, error) {
	var a store.AppState
	err := row.Scan(&a.App, &a.Username, &a.IdP, &a.Subject, &a.Hash, at(&a.SyncedAt), &a.Deprovisioned, at(&a.DeprovisionedAt), &a.DeprovisionedReason,
		&a.DeprovisionedSource, &a.DeprovisionedActor, &a.DeprovisionedRun, &a.DeprovisionedAction)
	if err != nil {
		return store.AppState{}, err
	}
	return a, nil
}

// AppState implements store.Provisioning. The username matches in any case.
func (s *Store) AppState(ctx context.Context, app, username string) (a store.AppState, err error) {
	ctx, end := s.call(ctx, &err, "app state of %s in %s", username, app)
	defer end()
	return scanAppState(s.row(ctx, s.read,
		`SELECT `+appStateCols+` FROM app_states WHERE app = ? AND username_key = ?`, app, fold(username)))
}

// Recorded implements store.Provisioning: the binding, the profile and
// the states are joined to a row that always exists, so one statement
// answers with one row per state, or one row without a state when there
// is none.
func (s *Store) Recorded(ctx context.Context, idp, subject, username string, apps ...string) (r store.Recorded, err error) {
	ctx, end := s.call(ctx, &err, "recorded provisioning of %s/%s", idp, subject)
	defer end()
	if apps == nil {
		apps = []string{}
	}
	list, err := jsonList(apps)
	if err != nil {
		return store.Recorded{}, err
	}
	rows, err := s.query(ctx, s.read, `
		SELECT COALESCE(b.username, ''), b.created_at, b.last_login, p.profile, p.updated_at,
			COALESCE(a.app, ''), COALESCE(a.username, ''), COALESCE(a.idp, ''), COALESCE(a.subject, ''),
			COALESCE(a.hash, ''), a.synced_at, COALESCE(a.deprovisioned, false), a.deprovisioned_at,
			COALESCE(a.deprovisioned_reason, ''), COALESCE(a.deprovisioned_source, ''), COALESCE(a.deprovisioned_actor, ''),
			COALESCE(a.deprovisioned_run, 0), COALESCE(a.deprovisioned_action, '')
		FROM (SELECT 1 AS one) k
		LEFT JOIN bindings b ON b.idp = ? AND b.subject = ?
		LEFT JOIN profiles p ON p.idp = ? AND p.subject = ?
		LEFT JOIN (
			SELECT `+appStateCols+` FROM app_states
			WHERE username_key = ? AND app IN (SELECT value FROM `+s.f.JSONEach+`)
		) a ON true`, idp, subject, idp, subject, fold(username), list)
	if err != nil {
		return store.Recorded{}, err
	}
	defer rows.Close()
	r.States = make(map[string]store.AppState, len(apps))
	for rows.Next() {
		var a store.AppState
		b := &r.Binding
		if err := rows.Scan(&b.Username, at(&b.CreatedAt), at(&b.LastLogin), &r.Profile, at(&r.ProfileAt),
			&a.App, &a.Username, &a.IdP, &a.Subject, &a.Hash, at(&a.SyncedAt), &a.Deprovisioned, at(&a.DeprovisionedAt),
			&a.DeprovisionedReason, &a.DeprovisionedSource, &a.DeprovisionedActor, &a.DeprovisionedRun, &a.DeprovisionedAction); err != nil {
			return store.Recorded{}, err
		}
		if a.App != "" {
			r.States[a.App] = a
		}
	}
	if r.Bound = r.Binding.Username != ""; r.Bound {
		r.Binding.IdP, r.Binding.Subject = idp, subject
	}
	return r, rows.Err()
}

// PutAppState implements store.Provisioning. A username differing only in
// case replaces the state and its spelling.
func (s *Store) PutAppState(ctx context.Context, a store.AppState) (err error) {
	ctx, end := s.call(ctx, &err, "put app state of %s in %s", a.Username, a.App)
	defer end()
	if a.App == "" || a.Username == "" {
		return invalid("app and username are required")
	}
	_, err = s.exec(ctx, s.write, `
		INSERT INTO app_states (app, username_key, username, idp, subject, hash, synced_at, deprovisioned, deprovisioned_at, deprovisioned_reason,
			deprovisioned_source, deprovisioned_actor, deprovisioned_run, deprovisioned_action)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (app, username_key) DO UPDATE SET
			username = excluded.username, idp = excluded.idp, subject = excluded.subject,
			hash = excluded.hash, synced_at = excluded.synced_at, deprovisioned = excluded.deprovisioned,
			deprovisioned_at = excluded.deprovisioned_at, deprovisioned_reason = excluded.deprovisioned_reason,
			deprovisioned_source = excluded.deprovisioned_source, deprovisioned_actor = excluded.deprovisioned_actor,
			deprovisioned_run = excluded.deprovisioned_run, deprovisioned_action = excluded.deprovisioned_action`,
		a.App, fold(a.Username), a.Username, a.IdP, a.Subject, a.Hash, s.nullTS(a.SyncedAt),
		a.Deprovisioned, s.nullTS(a.DeprovisionedAt), a.DeprovisionedReason,
		a.DeprovisionedSource, a.DeprovisionedActor, a.DeprovisionedRun, a.DeprovisionedAction)
	return err
}

// RecordSync implements store.Provisioning: one upsert that leaves the
// deprovisioned fields as stored.
func (s *Store) RecordSync(ctx context.Context, a store.AppState) (err error) {
	ctx, end := s.call(ctx, &err, "record sync of %s in %s", a.Username, a.App)
	defer end()
	if a.App == "" || a.Username == "" {
		return invalid("app and username are required")
	}
	_, err = s.exec(ctx, s.write, `
		INSERT INTO app_states (app, username_key, username, idp, subject, hash, synced_at)
		VALUES (?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (app, username_key) DO UPDATE SET
			username = excluded.username, idp = excluded.idp, subject = excluded.subject,
			hash = excluded.hash, synced_at = excluded.synced_at`,
		a.App, fold(a.Username), a.Username, a.IdP, a.Subject, a.Hash, s.nullTS(a.SyncedAt))
	return err
}

// AppStates implements store.Provisioning. The order and the cursor are
// by lower-cased username, bytewise (the key column is COLLATE "C" in
// PostgreSQL), the way the apps tell users apart; limit <= 0 means 100.
func (s *Store) AppStates(ctx context.Context, app, after string, limit int) (out []store.AppState, err error) {
	ctx, end := s.call(ctx, &err, "app states of %s", app)
	defer end()
	rows, err := s.query(ctx, s.read, `
		SELECT `+appStateCols+` FROM app_states
		WHERE app = ? AND username_key > ? ORDER BY username_key LIMIT ?`,
		app, fold(after), pageSize(limit))
	return collect(rows, err, scanAppState)
}

// Managed implements store.Provisioning: memberships ordered by lower-cased
// group name, each with the spelling it was first added with.
func (s *Store) Managed(ctx context.Context, app, username string) (out []store.Membership, err error) {
	ctx, end := s.call(ctx, &err, "managed groups of %s in %s", username, app)
	defer end()
	rows, err := s.query(ctx, s.read, `
		SELECT app, username, grp, idp, rule, added_at FROM managed_groups
		WHERE app = ? AND username_key = ? ORDER BY group_key`, app, fold(username))
	return collect(rows, err, func(row scanner) (store.Membership, error) {
		var m store.Membership
		err := row.Scan(&m.App, &m.Username, &m.Group, &m.IdP, &m.Rule, at(&m.AddedAt))
		return m, err
	})
}

// AddManaged implements store.Provisioning. A group already recorded (in
// any case) keeps its spelling and AddedAt; IdP and Rule become the
// latest grant's. A zero AddedAt means now.
func (s *Store) AddManaged(ctx context.Context, ms ...store.Membership) (err error) {
	if len(ms) == 0 {
		return nil
	}
	ctx, end := s.call(ctx, &err, "add %d managed groups", len(ms))
	defer end()
	// One statement cannot upsert a row twice: fold repeats into the
	// first, taking the later grant's IdP and Rule as a second upsert
	// would.
	now := s.now()
	first := make(map[[3]string]int, len(ms))
	rows := make([][]any, 0, len(ms))
	for _, m := range ms {
		if m.App == "" || m.Username == "" || m.Group == "" {
			return invalid("add managed group %q of %q in %q: app, username and group are required", m.Group, m.Username, m.App)
		}
		key := [3]string{m.App, fold(m.Username), fold(m.Group)}
		if i, ok := first[key]; ok {
			rows[i][5], rows[i][6] = m.IdP, m.Rule
			continue
		}
		first[key] = len(rows)
		rows = append(rows, []any{key[0], key[1], key[2], m.Username, m.Group, m.IdP, m.Rule, s.ts(orTime(m.AddedAt, now))})
	}
	return s.insertRows(ctx,
		`INSERT INTO managed_groups (app, username_key, group_key, username, grp, idp, rule, added_at) VALUES `,
		` ON CONFLICT (app, username_key, group_key) DO UPDATE SET idp = excluded.idp, rule = excluded.rule`, rows)
}

// RemoveManaged implements store.Provisioning. Groups match in any case;
// no groups removes nothing.
func (s *Store) RemoveManaged(ctx context.Context, app, username string, groups ...string) (err error) {
	if len(groups) == 0 {
		return nil
	}
	ctx, end := s.call(ctx, &err, "remove %d managed groups of %s in %s", len(groups), username, app)
	defer end()
	keys := make([]string, len(groups))
	for i, g := range groups {
		keys[i] = fold(g)
	}
	list, err := jsonList(keys)
	if err != nil {
		return err
	}
	_, err = s.exec(ctx, s.write, `
		DELETE FROM managed_groups WHERE app = ? AND username_key = ?
		AND group_key IN (SELECT value FROM `+s.f.JSONEach+`)`, app, fold(username), list)
	return err
}

// jsonList encodes ss as one JSON array parameter for Flavor.JSONEach,
// refusing what text refuses (JSON would carry a NUL across escaped).
func jsonList(ss []string) (string, error) {
	if err := text(ss...); err != nil {
		return "", err
	}
	b, err := json.Marshal(ss)
	return string(b), err
}

const jobCols = `id, kind, app, key, payload, attempts, not_before, last_error, created_at, updated_at`

func scanJob(row scanner) (store.Job, error) {
	var j store.Job
	err := row.Scan(&j.ID, &j.Kind, &j.App, &j.Key, &j.Payload, &j.Attempts, at(&j.NotBefore), &j.LastError, at(&j.CreatedAt), at(&j.UpdatedAt))
	if err != nil {
		return store.Job{}, err
	}
	return j, nil
}

// unleased is lease_until of a job nobody works on. PostgreSQL databases
// made before it may hold NULL there instead; Claim takes both.
var unleased = time.UnixMilli(0)

// Enqueue implements store.Provisioning. A zero NotBefore means now, a
// zero CreatedAt too; a replaced job keeps its CreatedAt, Attempts and
// LastError, and a lease on it runs on (see Complete). The upsert is one
// statement, so replicas enqueuing the same job at once end with one row.
func (s *Store) Enqueue(ctx context.Context, j store.Job) (id int64, err error) {
	ctx, end := s.call(ctx, &err, "enqueue %s job for %s in %s", j.Kind, j.Key, j.App)
	defer end()
	if j.Kind == "" || j.App == "" || j.Key == "" {
		return 0, invalid("kind, app and key are required")
	}
	now := s.now()
	err = s.row(ctx, s.write, `
		INSERT INTO jobs (kind, app, key, payload, not_before, created_at, updated_at)
		VALUES (?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (kind, app, key) DO UPDATE
		SET payload = excluded.payload, not_before = excluded.not_before,
		    updated_at = excluded.updated_at, generation = jobs.generation + 1
		RETURNING id`,
		j.Kind, j.App, j.Key, blob(j.Payload), s.ts(orTime(j.NotBefore, now)), s.ts(orTime(j.CreatedAt, now)),
		s.ts(now)).Scan(&id)
	return id, err
}

// Intend implements store.Provisioning: an upsert that leaves the job
// leased to owner, handed its newest generation.
func (s *Store) Intend(ctx context.Context, j store.Job, owner string, lease time.Duration) (id int64, err error) {
	ctx, end := s.call(ctx, &err, "intend %s job for %s in %s", j.Kind, j.Key, j.App)
	defer end()
	if j.Kind == "" || j.App == "" || j.Key == "" || owner == "" || lease <= 0 {
		return 0, invalid("kind, app, key, owner and a positive lease are required")
	}
	now := s.now()
	err = s.row(ctx, s.write, `
		INSERT INTO jobs (kind, app, key, payload, not_before, created_at, updated_at, owner, lease_until)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (kind, app, key) DO UPDATE
		SET payload = excluded.payload, not_before = excluded.not_before, updated_at = excluded.updated_at,
		    owner = excluded.owner, lease_until = excluded.lease_until,
		    generation = jobs.generation + 1, claim_gen = jobs.generation + 1
		RETURNING id`,
		j.Kind, j.App, j.Key, blob(j.Payload), s.ts(orTime(j.NotBefore, now)), s.ts(orTime(j.CreatedAt, now)),
		s.ts(now), owner, s.ts(now.Add(lease))).Scan(&id)
	return id, err
}

// Wake implements store.Provisioning.
func (s *Store) Wake(ctx context.Context, app string, now time.Time) (n int, err error) {
	ctx, end := s.call(ctx, &err, "wake jobs of %s", app)
	defer end()
	if app == "" {
		return 0, invalid("app is required")
	}
	c, err := s.exec(ctx, s.write, `
		UPDATE jobs SET not_before = ?
		WHERE app = ? AND not_before > ? AND (lease_until IS NULL OR lease_until <= ?)`,
		s.ts(now), app, s.ts(now), s.ts(now))
	return int(c), err
}

// WaitingApps implements store.Provisioning.
func (s *Store) WaitingApps(ctx context.Context, now time.Time) (apps []string, err error) {
	ctx, end := s.call(ctx, &err, "apps with waiting jobs")
	defer end()
	rows, err := s.query(ctx, s.read, `SELECT DISTINCT app FROM jobs WHERE not_before > ? ORDER BY app`, s.ts(now))
	return collect(rows, err, func(row scanner) (string, error) {
		var a string
		err := row.Scan(&a)
		return a, err
	})
}

// blob keeps NOT NULL blob columns happy: a nil slice would go as NULL.
func blob(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return b
}

// Claim implements store.Provisioning. Picking and leasing are one
// statement, hence one transaction. In PostgreSQL the picked rows are
// locked FOR UPDATE and rows another replica is leasing right now are
// skipped, not waited for, so claimers never block each other nor get the
// same job; in SQLite the one writer at a time does the same.
func (s *Store) Claim(ctx context.Context, owner string, now time.Time, limit int, lease time.Duration) (jobs []store.Job, err error) {
	ctx, end := s.call(ctx, &err, "claim jobs for %s", owner)
	defer end()
	if owner == "" || lease <= 0 {
		return nil, invalid("owner and a positive lease are required, got %q and %v", owner, lease)
	}
	if limit <= 0 {
		return nil, nil
	}
	rows, err := s.query(ctx, s.write, `
		WITH due (due_id) AS (
			SELECT id FROM jobs
			WHERE not_before <= ? AND (lease_until IS NULL OR lease_until <= ?
				OR EXISTS (SELECT 1 FROM leases WHERE leases.name = 'replica:' || jobs.owner AND leases.expires <= ?))
			ORDER BY not_before, id LIMIT ?`+s.f.SkipLocked+`)
		UPDATE jobs SET owner = ?, lease_until = ?, claim_gen = generation
		FROM due WHERE id = due_id
		RETURNING `+jobCols,
		s.ts(now), s.ts(now), s.ts(now), limit, owner, s.ts(now.Add(lease)))
	jobs, err = collect(rows, err, scanJob)
	// RETURNING gives no order.
	slices.SortFunc(jobs, func(a, b store.Job) int {
		if c := a.NotBefore.Compare(b.NotBefore); c != 0 {
			return c
		}
		return cmp.Compare(a.ID, b.ID)
	})
	return jobs, err
}

// errNotHeld explains a Complete or Retry by someone whose claim is gone:
// the lease expired and another owner took the job, or it was completed.
func errNotHeld(id int64, owner string) error {
	return fmt.Errorf("job %d not held by %s: %w", id, owner, store.ErrNotFound)
}

// Complete implements store.Provisioning. The owner holds a job until
// another owner claims it, even past its lease: finished work still
// counts. ErrNotFound when owner does not hold it.
func (s *Store) Complete(ctx context.Context, id int64, owner string) (err error) {
	ctx, end := s.call(ctx, &err, "complete job %d", id)
	defer end()
	if owner == "" {
		return invalid("owner is required")
	}
	// Two statements, each atomic on its own, and no transaction: the
	// common case (nothing re-enqueued since the claim) is one statement,
	// one round trip. An Enqueue racing with the DELETE either bumped the
	// generation first (the DELETE, rechecking the locked row, then skips
	// it) or waits for it and inserts a fresh job: the newest payload
	// survives either way. A job the DELETE skipped stays leased to owner
	// until the UPDATE releases it, so nobody else can have claimed it in
	// between unless the lease ran out, which the UPDATE then reports.
	n, err := s.exec(ctx, s.write,
		`DELETE FROM jobs WHERE id = ? AND owner = ? AND generation = claim_gen`, id, owner)
	if err != nil || n == 1 {
		return err
	}
	// Re-enqueued since the claim: the newer payload still has to land.
	n, err = s.exec(ctx, s.write,
		`UPDATE jobs SET owner = '', lease_until = ? WHERE id = ? AND owner = ?`, s.ts(unleased), id, owner)
	if err == nil && n == 0 {
		err = errNotHeld(id, owner)
	}
	return err
}

// Retry implements store.Provisioning. ErrNotFound when owner does not
// hold the job.
func (s *Store) Retry(ctx context.Context, id int64, owner string, notBefore time.Time, lastErr string) (err error) {
	ctx, end := s.call(ctx, &err, "retry job %d", id)
	defer end()
	if owner == "" {
		return invalid("owner is required")
	}
	now := s.ts(s.now())
	n, err := s.exec(ctx, s.write, `
		UPDATE jobs SET attempts = attempts + 1, not_before = ?, last_error = ?, failed_at = ?,
		       updated_at = ?, owner = '', lease_until = ?
		WHERE id = ? AND owner = ?`,
		s.ts(notBefore), scrub(lastErr), now, now, s.ts(unleased), id, owner)
	if err == nil && n == 0 {
		err = errNotHeld(id, owner)
	}
	return err
}

// Queue implements store.Provisioning. Depth counts leased jobs too: they
// are not done until completed.
func (s *Store) Queue(ctx context.Context) (st store.QueueStats, err error) {
	ctx, end := s.call(ctx, &err, "queue stats")
	defer end()
	err = s.row(ctx, s.read, `SELECT count(*), min(created_at) FROM jobs`).Scan(&st.Depth, at(&st.Oldest))
	if err != nil {
		return st, err
	}
	rows, err := s.query(ctx, s.read, `SELECT `+jobCols+` FROM jobs
		WHERE last_error <> '' ORDER BY failed_at DESC, id DESC LIMIT 10`)
	st.LastErrors, err = collect(rows, err, scanJob)
	return st, err
}

// PutProfile implements store.Provisioning.
func (s *Store) PutProfile(ctx context.Context, idp, subject string, profile []byte, at time.Time) (err error) {
	ctx, end := s.call(ctx, &err, "put profile of %s/%s", idp, subject)
	defer end()
	if idp == "" || subject == "" {
		return invalid("idp and subject are required")
	}
	_, err = s.exec(ctx, s.write, `
		INSERT INTO profiles (idp, subject, profile, updated_at) VALUES (?, ?, ?, ?)
		ON CONFLICT (idp, subject) DO UPDATE SET profile = excluded.profile, updated_at = excluded.updated_at`,
		idp, subject, blob(profile), s.ts(at))
	return err
}

// Profile implements store.Provisioning.
func (s *Store) Profile(ctx context.Context, idp, subject string) (p []byte, updated time.Time, err error) {
	ctx, end := s.call(ctx, &err, "profile of %s/%s", idp, subject)
	defer end()
	err = s.row(ctx, s.read, `SELECT profile, updated_at FROM profiles WHERE idp = ? AND subject = ?`,
		idp, subject).Scan(&p, at(&updated))
	if err != nil {
		return nil, time.Time{}, err
	}
	return p, updated, nil
}
