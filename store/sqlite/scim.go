package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	sqlite "modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/usherhq/usher/store"
)

var _ store.SCIM = (*Store)(nil)

// scimUnique names a unique column for the ErrConflict message.
type scimUnique struct{ col, attr, value string }

// scimConflict turns a unique-constraint failure into store.ErrConflict
// naming the attribute that is taken. SQLite names the failed columns
// ("UNIQUE constraint failed: scim_users.idp, scim_users.user_name_key"),
// which is how the attribute is found.
func scimConflict(err error, cols ...scimUnique) error {
	var se *sqlite.Error
	if !errors.As(err, &se) || se.Code() != sqlite3.SQLITE_CONSTRAINT_UNIQUE {
		return err
	}
	for _, c := range cols {
		if strings.Contains(se.Error(), "."+c.col) {
			return fmt.Errorf("%s %q is taken: %w", c.attr, c.value, store.ErrConflict)
		}
	}
	return fmt.Errorf("%v: %w", err, store.ErrConflict)
}

func scimOrNow(t time.Time, now func() time.Time) time.Time {
	if t.IsZero() {
		return now()
	}
	return t
}

// scimPage normalises SCIM paging: a negative offset starts at the
// beginning, and a limit of zero or less asks for the total only (SCIM's
// count=0).
func scimPage(offset, limit int) (int, int) {
	return max(offset, 0), max(limit, 0)
}

const scimUserCols = `idp, id, external_id, user_name, subject, active, resource, created, updated, version`

func scanSCIMUser(row scanner) (store.SCIMUser, error) {
	var (
		u                store.SCIMUser
		created, updated int64
	)
	err := row.Scan(&u.IdP, &u.ID, &u.ExternalID, &u.UserName, &u.Subject, &u.Active, &u.Resource, &created, &updated, &u.Version)
	if err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			return store.SCIMUser{}, store.ErrNotFound
		}
		return store.SCIMUser{}, err
	}
	u.Created, u.Updated = fromMillis(created), fromMillis(updated)
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
		return fmt.Errorf("sqlite %s: put scim user %q/%q: idp, id and userName are required", s.path, u.IdP, u.ID)
	}
	_, err := s.write.ExecContext(ctx, `
		INSERT INTO scim_users (idp, id, external_id, user_name, user_name_key, subject, active, resource, created, updated, version)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1)
		ON CONFLICT (idp, id) DO UPDATE
		SET external_id = excluded.external_id, user_name = excluded.user_name,
		    user_name_key = excluded.user_name_key, subject = excluded.subject,
		    active = excluded.active, resource = excluded.resource,
		    updated = excluded.updated, version = scim_users.version + 1`,
		u.IdP, u.ID, u.ExternalID, u.UserName, strings.ToLower(u.UserName), u.Subject, u.Active,
		scimBlob(u.Resource), millis(scimOrNow(u.Created, s.now)), millis(scimOrNow(u.Updated, s.now)))
	if err != nil {
		err = scimConflict(err,
			scimUnique{"user_name_key", "userName", u.UserName},
			scimUnique{"external_id", "externalId", u.ExternalID})
		return fmt.Errorf("sqlite %s: put scim user %s/%s: %w", s.path, u.IdP, u.ID, err)
	}
	return nil
}

// scimBlob keeps NOT NULL blob columns happy: database/sql sends a nil
// slice as NULL.
func scimBlob(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return b
}

// SCIMUser implements store.SCIM.
func (s *Store) SCIMUser(ctx context.Context, idp, id string) (store.SCIMUser, error) {
	u, err := scanSCIMUser(s.read.QueryRowContext(ctx,
		`SELECT `+scimUserCols+` FROM scim_users WHERE idp = ? AND id = ?`, idp, id))
	if err != nil {
		return u, fmt.Errorf("sqlite %s: scim user %s/%s: %w", s.path, idp, id, err)
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
		u, err = scanSCIMUser(s.read.QueryRowContext(ctx,
			`SELECT `+scimUserCols+` FROM scim_users WHERE idp = ? AND user_name_key = ?`, idp, strings.ToLower(value)))
	case strings.EqualFold(attr, "externalId"):
		u, err = scanSCIMUser(s.read.QueryRowContext(ctx,
			`SELECT `+scimUserCols+` FROM scim_users WHERE idp = ? AND external_id = ? AND external_id <> ''`, idp, value))
	case strings.EqualFold(attr, "subject") && value != "":
		u, err = scanSCIMUser(s.read.QueryRowContext(ctx,
			`SELECT `+scimUserCols+` FROM scim_users WHERE idp = ? AND subject = ? ORDER BY id LIMIT 1`, idp, value))
	default:
		err = fmt.Errorf("cannot look users up by %q (only userName, externalId, subject)", attr)
	}
	if err != nil {
		return u, fmt.Errorf("sqlite %s: find scim user %s %s=%q: %w", s.path, idp, attr, value, err)
	}
	return u, nil
}

// SCIMUsers implements store.SCIM. The page and the total come from one
// read transaction, so they agree.
func (s *Store) SCIMUsers(ctx context.Context, idp string, offset, limit int) ([]store.SCIMUser, int, error) {
	offset, limit = scimPage(offset, limit)
	var users []store.SCIMUser
	total, err := s.scimReadPage(ctx, `SELECT count(*) FROM scim_users WHERE idp = ?`, idp, limit,
		func(tx *sql.Tx) error {
			rows, err := tx.QueryContext(ctx,
				`SELECT `+scimUserCols+` FROM scim_users WHERE idp = ? ORDER BY id LIMIT ? OFFSET ?`, idp, limit, offset)
			if err != nil {
				return err
			}
			defer rows.Close()
			for rows.Next() {
				u, err := scanSCIMUser(rows)
				if err != nil {
					return err
				}
				users = append(users, u)
			}
			return rows.Err()
		})
	if err != nil {
		return nil, 0, fmt.Errorf("sqlite %s: scim users of %s [%d+%d]: %w", s.path, idp, offset, limit, err)
	}
	return users, total, nil
}

// scimReadPage counts with countQuery and, when limit > 0, reads the page with
// fn, both in one read transaction.
func (s *Store) scimReadPage(ctx context.Context, countQuery, idp string, limit int, fn func(*sql.Tx) error) (int, error) {
	tx, err := s.read.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return 0, err
	}
	defer tx.Rollback()
	var total int
	if err := tx.QueryRowContext(ctx, countQuery, idp).Scan(&total); err != nil {
		return 0, err
	}
	if limit > 0 && total > 0 {
		if err := fn(tx); err != nil {
			return 0, err
		}
	}
	return total, tx.Commit()
}

// DeleteSCIMUser implements store.SCIM. The user's memberships go with it,
// and every group it was in gets a new Version: its member list changed.
func (s *Store) DeleteSCIMUser(ctx context.Context, idp, id string) error {
	err := s.scimWriteTx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `
			UPDATE scim_groups SET version = version + 1, updated = ?
			WHERE idp = ? AND id IN (SELECT group_id FROM scim_members WHERE idp = ? AND user_id = ?)`,
			millis(s.now()), idp, idp, id); err != nil {
			return err
		}
		return scimDeleted(tx.ExecContext(ctx, `DELETE FROM scim_users WHERE idp = ? AND id = ?`, idp, id))
	})
	if err != nil {
		return fmt.Errorf("sqlite %s: delete scim user %s/%s: %w", s.path, idp, id, err)
	}
	return nil
}

// scimDeleted turns "no row affected" into store.ErrNotFound.
func scimDeleted(res sql.Result, err error) error {
	if err != nil {
		return err
	}
	n, err := res.RowsAffected()
	if err == nil && n == 0 {
		err = store.ErrNotFound
	}
	return err
}

func (s *Store) scimWriteTx(ctx context.Context, fn func(*sql.Tx) error) error {
	tx, err := s.write.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if err := fn(tx); err != nil {
		return err
	}
	return tx.Commit()
}

// scimGroupCols reads the members along with the group, as a JSON array,
// so a group is one consistent query.
const scimGroupCols = `g.idp, g.id, g.external_id, g.display_name, g.created, g.updated, g.version,
	(SELECT json_group_array(m.user_id) FROM scim_members m WHERE m.idp = g.idp AND m.group_id = g.id)`

func scanSCIMGroup(row scanner) (store.SCIMGroup, error) {
	var (
		g                store.SCIMGroup
		created, updated int64
		members          string
	)
	err := row.Scan(&g.IdP, &g.ID, &g.ExternalID, &g.DisplayName, &created, &updated, &g.Version, &members)
	if err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			return store.SCIMGroup{}, store.ErrNotFound
		}
		return store.SCIMGroup{}, err
	}
	g.Created, g.Updated = fromMillis(created), fromMillis(updated)
	if err := json.Unmarshal([]byte(members), &g.Members); err != nil {
		return store.SCIMGroup{}, fmt.Errorf("members of group %s: %w", g.ID, err)
	}
	if len(g.Members) == 0 {
		g.Members = nil
	}
	slices.Sort(g.Members)
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
		return fmt.Errorf("sqlite %s: put scim group %q/%q: idp, id and displayName are required", s.path, g.IdP, g.ID)
	}
	err := s.scimWriteTx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `
			INSERT INTO scim_groups (idp, id, external_id, display_name, display_name_key, created, updated, version)
			VALUES (?, ?, ?, ?, ?, ?, ?, 1)
			ON CONFLICT (idp, id) DO UPDATE
			SET external_id = excluded.external_id, display_name = excluded.display_name,
			    display_name_key = excluded.display_name_key,
			    updated = excluded.updated, version = scim_groups.version + 1`,
			g.IdP, g.ID, g.ExternalID, g.DisplayName, strings.ToLower(g.DisplayName),
			millis(scimOrNow(g.Created, s.now)), millis(scimOrNow(g.Updated, s.now)))
		if err != nil {
			return scimConflict(err,
				scimUnique{"display_name_key", "displayName", g.DisplayName},
				scimUnique{"external_id", "externalId", g.ExternalID})
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM scim_members WHERE idp = ? AND group_id = ?`, g.IdP, g.ID); err != nil {
			return err
		}
		if len(g.Members) == 0 {
			return nil
		}
		stmt, err := tx.PrepareContext(ctx,
			`INSERT INTO scim_members (idp, group_id, user_id) VALUES (?, ?, ?) ON CONFLICT DO NOTHING`)
		if err != nil {
			return err
		}
		defer stmt.Close()
		for _, m := range g.Members {
			if _, err := stmt.ExecContext(ctx, g.IdP, g.ID, m); err != nil {
				var se *sqlite.Error
				if errors.As(err, &se) && se.Code() == sqlite3.SQLITE_CONSTRAINT_FOREIGNKEY {
					err = fmt.Errorf("member %q is not a user of %s: %w", m, g.IdP, store.ErrNotFound)
				}
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("sqlite %s: put scim group %s/%s: %w", s.path, g.IdP, g.ID, err)
	}
	return nil
}

// SCIMGroup implements store.SCIM. Members come back sorted.
func (s *Store) SCIMGroup(ctx context.Context, idp, id string) (store.SCIMGroup, error) {
	g, err := scanSCIMGroup(s.read.QueryRowContext(ctx,
		`SELECT `+scimGroupCols+` FROM scim_groups g WHERE g.idp = ? AND g.id = ?`, idp, id))
	if err != nil {
		return g, fmt.Errorf("sqlite %s: scim group %s/%s: %w", s.path, idp, id, err)
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
		g, err = scanSCIMGroup(s.read.QueryRowContext(ctx,
			`SELECT `+scimGroupCols+` FROM scim_groups g WHERE g.idp = ? AND g.display_name_key = ?`, idp, strings.ToLower(value)))
	case strings.EqualFold(attr, "externalId"):
		g, err = scanSCIMGroup(s.read.QueryRowContext(ctx,
			`SELECT `+scimGroupCols+` FROM scim_groups g WHERE g.idp = ? AND g.external_id = ? AND g.external_id <> ''`, idp, value))
	default:
		err = fmt.Errorf("cannot look groups up by %q (only displayName, externalId)", attr)
	}
	if err != nil {
		return g, fmt.Errorf("sqlite %s: find scim group %s %s=%q: %w", s.path, idp, attr, value, err)
	}
	return g, nil
}

// SCIMGroups implements store.SCIM, like SCIMUsers.
func (s *Store) SCIMGroups(ctx context.Context, idp string, offset, limit int) ([]store.SCIMGroup, int, error) {
	offset, limit = scimPage(offset, limit)
	var groups []store.SCIMGroup
	total, err := s.scimReadPage(ctx, `SELECT count(*) FROM scim_groups WHERE idp = ?`, idp, limit,
		func(tx *sql.Tx) error {
			rows, err := tx.QueryContext(ctx,
				`SELECT `+scimGroupCols+` FROM scim_groups g WHERE g.idp = ? ORDER BY g.id LIMIT ? OFFSET ?`, idp, limit, offset)
			if err != nil {
				return err
			}
			defer rows.Close()
			for rows.Next() {
				g, err := scanSCIMGroup(rows)
				if err != nil {
					return err
				}
				groups = append(groups, g)
			}
			return rows.Err()
		})
	if err != nil {
		return nil, 0, fmt.Errorf("sqlite %s: scim groups of %s [%d+%d]: %w", s.path, idp, offset, limit, err)
	}
	return groups, total, nil
}

// DeleteSCIMGroup implements store.SCIM; its member rows go with it.
func (s *Store) DeleteSCIMGroup(ctx context.Context, idp, id string) error {
	err := scimDeleted(s.write.ExecContext(ctx, `DELETE FROM scim_groups WHERE idp = ? AND id = ?`, idp, id))
	if err != nil {
		return fmt.Errorf("sqlite %s: delete scim group %s/%s: %w", s.path, idp, id, err)
	}
	return nil
}

// SCIMUserGroups implements store.SCIM, sorted by name. An unknown user is
// in no groups: the answer is empty, not ErrNotFound.
func (s *Store) SCIMUserGroups(ctx context.Context, idp, userID string) ([]string, error) {
	rows, err := s.read.QueryContext(ctx, `
		SELECT g.display_name FROM scim_members m
		JOIN scim_groups g ON g.idp = m.idp AND g.id = m.group_id
		WHERE m.idp = ? AND m.user_id = ?
		ORDER BY g.display_name`, idp, userID)
	var names []string
	if err == nil {
		defer rows.Close()
		for rows.Next() {
			var n string
			if err = rows.Scan(&n); err != nil {
				break
			}
			names = append(names, n)
		}
		if err == nil {
			err = rows.Err()
		}
	}
	if err != nil {
		return nil, fmt.Errorf("sqlite %s: scim groups of user %s/%s: %w", s.path, idp, userID, err)
	}
	return names, nil
}
