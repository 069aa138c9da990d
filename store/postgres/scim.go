package postgres

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/usherhq/usher/store"
)

var _ store.SCIM = (*Store)(nil)

// scimUnique names a unique constraint for the ErrConflict message.
type scimUnique struct{ constraint, attr, value string }

// scimConflict turns a unique violation into store.ErrConflict naming the
// attribute that is taken.
func scimConflict(err error, cols ...scimUnique) error {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "23505" {
		return err
	}
	for _, c := range cols {
		if pgErr.ConstraintName == c.constraint {
			return fmt.Errorf("%s %q is taken: %w", c.attr, c.value, store.ErrConflict)
		}
	}
	return fmt.Errorf("%v: %w", err, store.ErrConflict)
}

// scimRetry runs put again when it fails with ErrConflict. ON CONFLICT only
// arbitrates the primary key: when two replicas create the same resource
// at once, the loser can trip the userName (or displayName) constraint
// instead and must see the committed row as its own. A real conflict just
// fails three times.
func scimRetry(put func() error) error {
	var err error
	for range 3 {
		if err = put(); !errors.Is(err, store.ErrConflict) {
			break
		}
	}
	return err
}

func scimOrNow(t time.Time, now func() time.Time) time.Time {
	if t.IsZero() {
		return now()
	}
	return t
}

// scimBlob keeps NOT NULL bytea columns happy: pgx sends a nil slice as
// NULL.
func scimBlob(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return b
}

// scimPage normalises SCIM paging: a negative offset starts at the
// beginning, and a limit of zero or less asks for the total only (SCIM's
// count=0).
func scimPage(offset, limit int) (int, int) {
	return max(offset, 0), max(limit, 0)
}

// scimDeleted turns "no row affected" into store.ErrNotFound.
func scimDeleted(tag pgconn.CommandTag, err error) error {
	if err == nil && tag.RowsAffected() == 0 {
		err = store.ErrNotFound
	}
	return err
}

// scimReadOnly runs fn in a repeatable-read, read-only transaction, so a
// page and its total agree.
func (s *Store) scimReadOnly(ctx context.Context, fn func(pgx.Tx) error) error {
	return pgx.BeginTxFunc(ctx, s.pool, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, fn)
}

const scimUserCols = `idp, id, external_id, user_name, subject, active, resource, created, updated, version`

func scanSCIMUser(row pgx.Row) (store.SCIMUser, error) {
	var u store.SCIMUser
	err := row.Scan(&u.IdP, &u.ID, &u.ExternalID, &u.UserName, &u.Subject, &u.Active, &u.Resource, &u.Created, &u.Updated, &u.Version)
	if err != nil {
		if errors.Is(err, pgx.ErrNoRows) {
			return store.SCIMUser{}, store.ErrNotFound
		}
		return store.SCIMUser{}, err
	}
	u.Created, u.Updated = u.Created.UTC(), u.Updated.UTC()
	if len(u.Resource) == 0 {
		u.Resource = nil
	}
	return u, nil
}

// PutSCIMUser implements store.SCIM: it creates or replaces the user
// (idp, id). Created is kept from the first Put (zero means now), a zero
// Updated means now, Version starts at 1 and goes up by one on every Put;
// the Version passed in is ignored. IdP, ID and UserName are required.
func (s *Store) PutSCIMUser(ctx context.Context, u store.SCIMUser) error {
	if u.IdP == "" || u.ID == "" || u.UserName == "" {
		return fmt.Errorf("postgres %s: put scim user %q/%q: idp, id and userName are required", s.name, u.IdP, u.ID)
	}
	created, updated := ts(scimOrNow(u.Created, s.now)), ts(scimOrNow(u.Updated, s.now))
	err := scimRetry(func() error {
		_, err := s.pool.Exec(ctx, `
			INSERT INTO scim_users (idp, id, external_id, user_name, user_name_key, subject, active, resource, created, updated, version)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 1)
			ON CONFLICT (idp, id) DO UPDATE
			SET external_id = EXCLUDED.external_id, user_name = EXCLUDED.user_name,
			    user_name_key = EXCLUDED.user_name_key, subject = EXCLUDED.subject,
			    active = EXCLUDED.active, resource = EXCLUDED.resource,
			    updated = EXCLUDED.updated, version = scim_users.version + 1`,
			u.IdP, u.ID, u.ExternalID, u.UserName, strings.ToLower(u.UserName), u.Subject, u.Active,
			scimBlob(u.Resource), created, updated)
		return scimConflict(err,
			scimUnique{"scim_users_user_name", "userName", u.UserName},
			scimUnique{"scim_users_external_id", "externalId", u.ExternalID})
	})
	if err != nil {
		return fmt.Errorf("postgres %s: put scim user %s/%s: %w", s.name, u.IdP, u.ID, err)
	}
	return nil
}

// SCIMUser implements store.SCIM.
func (s *Store) SCIMUser(ctx context.Context, idp, id string) (store.SCIMUser, error) {
	u, err := scanSCIMUser(s.pool.QueryRow(ctx,
		`SELECT `+scimUserCols+` FROM scim_users WHERE idp = $1 AND id = $2`, idp, id))
	if err != nil {
		return u, fmt.Errorf("postgres %s: scim user %s/%s: %w", s.name, idp, id, err)
	}
	return u, nil
}

// FindSCIMUser implements store.SCIM. Attribute names compare
// case-insensitively, as SCIM attribute names do; any other attribute is
// an error, not ErrNotFound. An empty externalId matches nobody.
func (s *Store) FindSCIMUser(ctx context.Context, idp, attr, value string) (store.SCIMUser, error) {
	var (
		u   store.SCIMUser
		err error
	)
	switch {
	case strings.EqualFold(attr, "userName"):
		u, err = scanSCIMUser(s.pool.QueryRow(ctx,
			`SELECT `+scimUserCols+` FROM scim_users WHERE idp = $1 AND user_name_key = $2`, idp, strings.ToLower(value)))
	case strings.EqualFold(attr, "externalId"):
		u, err = scanSCIMUser(s.pool.QueryRow(ctx,
			`SELECT `+scimUserCols+` FROM scim_users WHERE idp = $1 AND external_id = $2 AND external_id <> ''`, idp, value))
	case strings.EqualFold(attr, "subject") && value != "":
		u, err = scanSCIMUser(s.pool.QueryRow(ctx,
			`SELECT `+scimUserCols+` FROM scim_users WHERE idp = $1 AND subject = $2 ORDER BY id LIMIT 1`, idp, value))
	default:
		err = fmt.Errorf("cannot look users up by %q (only userName, externalId, subject)", attr)
	}
	if err != nil {
		return u, fmt.Errorf("postgres %s: find scim user %s %s=%q: %w", s.name, idp, attr, value, err)
	}
	return u, nil
}

// SCIMUsers implements store.SCIM. The page and the total come from one
// snapshot, so they agree.
func (s *Store) SCIMUsers(ctx context.Context, idp string, offset, limit int) ([]store.SCIMUser, int, error) {
	offset, limit = scimPage(offset, limit)
	var (
		users []store.SCIMUser
		total int
	)
	err := s.scimReadOnly(ctx, func(tx pgx.Tx) error {
		users = nil
		if err := tx.QueryRow(ctx, `SELECT count(*) FROM scim_users WHERE idp = $1`, idp).Scan(&total); err != nil {
			return err
		}
		if limit == 0 || total == 0 {
			return nil
		}
		rows, err := tx.Query(ctx,
			`SELECT `+scimUserCols+` FROM scim_users WHERE idp = $1 ORDER BY id LIMIT $2 OFFSET $3`, idp, limit, offset)
		if err != nil {
			return err
		}
		users, err = pgx.CollectRows(rows, func(row pgx.CollectableRow) (store.SCIMUser, error) { return scanSCIMUser(row) })
		return err
	})
	if err != nil {
		return nil, 0, fmt.Errorf("postgres %s: scim users of %s [%d+%d]: %w", s.name, idp, offset, limit, err)
	}
	if len(users) == 0 {
		users = nil
	}
	return users, total, nil
}

// DeleteSCIMUser implements store.SCIM. The user's memberships go with it,
// and every group it was in gets a new Version: its member list changed.
func (s *Store) DeleteSCIMUser(ctx context.Context, idp, id string) error {
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `
			UPDATE scim_groups SET version = version + 1, updated = $1
			WHERE idp = $2 AND id IN (SELECT group_id FROM scim_members WHERE idp = $2 AND user_id = $3)`,
			ts(s.now()), idp, id); err != nil {
			return err
		}
		return scimDeleted(tx.Exec(ctx, `DELETE FROM scim_users WHERE idp = $1 AND id = $2`, idp, id))
	})
	if err != nil {
		return fmt.Errorf("postgres %s: delete scim user %s/%s: %w", s.name, idp, id, err)
	}
	return nil
}

// scimGroupCols reads the members along with the group, so a group is one
// consistent statement.
const scimGroupCols = `g.idp, g.id, g.external_id, g.display_name, g.created, g.updated, g.version,
	ARRAY(SELECT m.user_id FROM scim_members m WHERE m.idp = g.idp AND m.group_id = g.id ORDER BY m.user_id)`

func scanSCIMGroup(row pgx.Row) (store.SCIMGroup, error) {
	var g store.SCIMGroup
	err := row.Scan(&g.IdP, &g.ID, &g.ExternalID, &g.DisplayName, &g.Created, &g.Updated, &g.Version, &g.Members)
	if err != nil {
		if errors.Is(err, pgx.ErrNoRows) {
			return store.SCIMGroup{}, store.ErrNotFound
		}
		return store.SCIMGroup{}, err
	}
	g.Created, g.Updated = g.Created.UTC(), g.Updated.UTC()
	if len(g.Members) == 0 {
		g.Members = nil
	}
	return g, nil
}

// PutSCIMGroup implements store.SCIM: it creates or replaces the group
// (idp, id) and its member list, in one transaction. Created, Updated and
// Version behave as in PutSCIMUser. IdP, ID and DisplayName are required;
// display names are unique per IdP case-insensitively, like externalId
// (ErrConflict), because the apps would merge two such groups into one.
// A member that is not a user of the IdP fails the Put with an error
// wrapping store.ErrNotFound, naming the member; nothing changes then.
// Repeated members count once.
func (s *Store) PutSCIMGroup(ctx context.Context, g store.SCIMGroup) error {
	if g.IdP == "" || g.ID == "" || g.DisplayName == "" {
		return fmt.Errorf("postgres %s: put scim group %q/%q: idp, id and displayName are required", s.name, g.IdP, g.ID)
	}
	created, updated := ts(scimOrNow(g.Created, s.now)), ts(scimOrNow(g.Updated, s.now))
	members := slices.Compact(slices.Sorted(slices.Values(g.Members)))
	err := scimRetry(func() error {
		return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
			_, err := tx.Exec(ctx, `
				INSERT INTO scim_groups (idp, id, external_id, display_name, display_name_key, created, updated, version)
				VALUES ($1, $2, $3, $4, $5, $6, $7, 1)
				ON CONFLICT (idp, id) DO UPDATE
				SET external_id = EXCLUDED.external_id, display_name = EXCLUDED.display_name,
				    display_name_key = EXCLUDED.display_name_key,
				    updated = EXCLUDED.updated, version = scim_groups.version + 1`,
				g.IdP, g.ID, g.ExternalID, g.DisplayName, strings.ToLower(g.DisplayName), created, updated)
			if err != nil {
				return scimConflict(err,
					scimUnique{"scim_groups_display_name", "displayName", g.DisplayName},
					scimUnique{"scim_groups_external_id", "externalId", g.ExternalID})
			}
			if _, err := tx.Exec(ctx, `DELETE FROM scim_members WHERE idp = $1 AND group_id = $2`, g.IdP, g.ID); err != nil {
				return err
			}
			if len(members) == 0 {
				return nil
			}
			// Name an unknown member; the foreign key still guards a user
			// deleted between this check and the insert.
			var missing string
			err = tx.QueryRow(ctx, `
				SELECT m FROM unnest($2::text[]) AS m
				WHERE NOT EXISTS (SELECT 1 FROM scim_users u WHERE u.idp = $1 AND u.id = m)
				LIMIT 1`, g.IdP, members).Scan(&missing)
			switch {
			case err == nil:
				return fmt.Errorf("member %q is not a user of %s: %w", missing, g.IdP, store.ErrNotFound)
			case !errors.Is(err, pgx.ErrNoRows):
				return err
			}
			_, err = tx.Exec(ctx, `
				INSERT INTO scim_members (idp, group_id, user_id)
				SELECT $1, $2, unnest($3::text[])`, g.IdP, g.ID, members)
			var pgErr *pgconn.PgError
			if errors.As(err, &pgErr) && pgErr.Code == "23503" {
				err = fmt.Errorf("%s: %w", pgErr.Detail, store.ErrNotFound)
			}
			return err
		})
	})
	if err != nil {
		return fmt.Errorf("postgres %s: put scim group %s/%s: %w", s.name, g.IdP, g.ID, err)
	}
	return nil
}

// SCIMGroup implements store.SCIM. Members come back sorted.
func (s *Store) SCIMGroup(ctx context.Context, idp, id string) (store.SCIMGroup, error) {
	g, err := scanSCIMGroup(s.pool.QueryRow(ctx,
		`SELECT `+scimGroupCols+` FROM scim_groups g WHERE g.idp = $1 AND g.id = $2`, idp, id))
	if err != nil {
		return g, fmt.Errorf("postgres %s: scim group %s/%s: %w", s.name, idp, id, err)
	}
	return g, nil
}

// FindSCIMGroup implements store.SCIM: by "displayName"
// (case-insensitive) or "externalId" (exact); attribute names compare
// case-insensitively; any other attribute is an error.
func (s *Store) FindSCIMGroup(ctx context.Context, idp, attr, value string) (store.SCIMGroup, error) {
	var (
		g   store.SCIMGroup
		err error
	)
	switch {
	case strings.EqualFold(attr, "displayName"):
		g, err = scanSCIMGroup(s.pool.QueryRow(ctx,
			`SELECT `+scimGroupCols+` FROM scim_groups g WHERE g.idp = $1 AND g.display_name_key = $2`, idp, strings.ToLower(value)))
	case strings.EqualFold(attr, "externalId"):
		g, err = scanSCIMGroup(s.pool.QueryRow(ctx,
			`SELECT `+scimGroupCols+` FROM scim_groups g WHERE g.idp = $1 AND g.external_id = $2 AND g.external_id <> ''`, idp, value))
	default:
		err = fmt.Errorf("cannot look groups up by %q (only displayName, externalId)", attr)
	}
	if err != nil {
		return g, fmt.Errorf("postgres %s: find scim group %s %s=%q: %w", s.name, idp, attr, value, err)
	}
	return g, nil
}

// SCIMGroups implements store.SCIM, like SCIMUsers.
func (s *Store) SCIMGroups(ctx context.Context, idp string, offset, limit int) ([]store.SCIMGroup, int, error) {
	offset, limit = scimPage(offset, limit)
	var (
		groups []store.SCIMGroup
		total  int
	)
	err := s.scimReadOnly(ctx, func(tx pgx.Tx) error {
		groups = nil
		if err := tx.QueryRow(ctx, `SELECT count(*) FROM scim_groups WHERE idp = $1`, idp).Scan(&total); err != nil {
			return err
		}
		if limit == 0 || total == 0 {
			return nil
		}
		rows, err := tx.Query(ctx,
			`SELECT `+scimGroupCols+` FROM scim_groups g WHERE g.idp = $1 ORDER BY g.id LIMIT $2 OFFSET $3`, idp, limit, offset)
		if err != nil {
			return err
		}
		groups, err = pgx.CollectRows(rows, func(row pgx.CollectableRow) (store.SCIMGroup, error) { return scanSCIMGroup(row) })
		return err
	})
	if err != nil {
		return nil, 0, fmt.Errorf("postgres %s: scim groups of %s [%d+%d]: %w", s.name, idp, offset, limit, err)
	}
	if len(groups) == 0 {
		groups = nil
	}
	return groups, total, nil
}

// DeleteSCIMGroup implements store.SCIM; its member rows go with it.
func (s *Store) DeleteSCIMGroup(ctx context.Context, idp, id string) error {
	err := scimDeleted(s.pool.Exec(ctx, `DELETE FROM scim_groups WHERE idp = $1 AND id = $2`, idp, id))
	if err != nil {
		return fmt.Errorf("postgres %s: delete scim group %s/%s: %w", s.name, idp, id, err)
	}
	return nil
}

// SCIMUserGroups implements store.SCIM, sorted by name. An unknown user is
// in no groups: the answer is empty, not ErrNotFound.
func (s *Store) SCIMUserGroups(ctx context.Context, idp, userID string) ([]string, error) {
	rows, err := s.pool.Query(ctx, `
		SELECT g.display_name FROM scim_members m
		JOIN scim_groups g ON g.idp = m.idp AND g.id = m.group_id
		WHERE m.idp = $1 AND m.user_id = $2
		ORDER BY g.display_name COLLATE "C"`, idp, userID)
	var names []string
	if err == nil {
		names, err = pgx.CollectRows(rows, pgx.RowTo[string])
	}
	if err != nil {
		return nil, fmt.Errorf("postgres %s: scim groups of user %s/%s: %w", s.name, idp, userID, err)
	}
	if len(names) == 0 {
		names = nil
	}
	return names, nil
}
