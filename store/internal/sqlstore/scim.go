package sqlstore

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/usherhq/usher/store"
)

var _ store.SCIM = (*Store)(nil)

// scimUnique names a unique key for the ErrConflict message.
type scimUnique struct{ key, attr, value string }

// scimConflict turns a unique violation into store.ErrConflict naming the
// attribute that is taken.
func (s *Store) scimConflict(err error, keys ...scimUnique) error {
	key := s.unique(err)
	if key == "" {
		return err
	}
	for _, k := range keys {
		if k.key == key {
			return fmt.Errorf("%s %q is taken: %w", k.attr, k.value, store.ErrConflict)
		}
	}
	return fmt.Errorf("%w: %w", store.ErrConflict, err)
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

// scimPage normalises SCIM paging: a negative offset starts at the
// beginning, and a limit of zero or less asks for the total only (SCIM's
// count=0).
func scimPage(offset, limit int) (int, int) {
	return max(offset, 0), max(limit, 0)
}

// affected turns "no row changed" into store.ErrNotFound.
func affected(n int64, err error) error {
	if err == nil && n == 0 {
		return store.ErrNotFound
	}
	return err
}

// page counts with countQuery and, when limit > 0 and there is anything,
// reads the page with fn, both in one snapshot, so they agree.
func (s *Store) page(ctx context.Context, countQuery, idp string, limit int, fn func(Querier) error) (total int, err error) {
	err = s.tx(ctx, s.read, true, func(tx Querier) error {
		if err := s.row(ctx, tx, countQuery, idp).Scan(&total); err != nil || limit == 0 || total == 0 {
			return err
		}
		return fn(tx)
	})
	return total, err
}

const scimUserCols = `idp, id, external_id, user_name, subject, active, resource, created, updated, version`

func scanSCIMUser(row scanner) (store.SCIMUser, error) {
	var u store.SCIMUser
	err := row.Scan(&u.IdP, &u.ID, &u.ExternalID, &u.UserName, &u.Subject, &u.Active, &u.Resource, at(&u.Created), at(&u.Updated), &u.Version)
	if err != nil {
		return store.SCIMUser{}, err
	}
	if len(u.Resource) == 0 {
		u.Resource = nil
	}
	return u, nil
}

// PutSCIMUser implements store.SCIM: it creates or replaces the user
// (idp, id). Created is kept from the first Put (zero means now), a zero
// Updated means now, Version starts at 1 and goes up by one on every Put;
// the Version passed in is ignored. IdP, ID and UserName are required.
func (s *Store) PutSCIMUser(ctx context.Context, u store.SCIMUser) (err error) {
	ctx, end := s.call(ctx, &err, "put scim user %s/%s", u.IdP, u.ID)
	defer end()
	if u.IdP == "" || u.ID == "" || u.UserName == "" {
		return invalid("idp, id and userName are required")
	}
	created, updated := s.ts(s.orNow(u.Created)), s.ts(s.orNow(u.Updated))
	return scimRetry(func() error {
		_, err := s.exec(ctx, s.write, `
			INSERT INTO scim_users (idp, id, external_id, user_name, user_name_key, subject, active, resource, created, updated, version)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1)
			ON CONFLICT (idp, id) DO UPDATE
			SET external_id = excluded.external_id, user_name = excluded.user_name,
			    user_name_key = excluded.user_name_key, subject = excluded.subject,
			    active = excluded.active, resource = excluded.resource,
			    updated = excluded.updated, version = scim_users.version + 1`,
			u.IdP, u.ID, u.ExternalID, u.UserName, fold(u.UserName), u.Subject, u.Active,
			blob(u.Resource), created, updated)
		return s.scimConflict(err,
			scimUnique{"scim_users.user_name_key", "userName", u.UserName},
			scimUnique{"scim_users.external_id", "externalId", u.ExternalID})
	})
}

// SCIMUser implements store.SCIM.
func (s *Store) SCIMUser(ctx context.Context, idp, id string) (u store.SCIMUser, err error) {
	ctx, end := s.call(ctx, &err, "scim user %s/%s", idp, id)
	defer end()
	return scanSCIMUser(s.row(ctx, s.read,
		`SELECT `+scimUserCols+` FROM scim_users WHERE idp = ? AND id = ?`, idp, id))
}

// FindSCIMUser implements store.SCIM. Attribute names compare
// case-insensitively, as SCIM attribute names do; any other attribute is
// ErrInvalid, not ErrNotFound. An empty externalId or subject matches
// nobody.
func (s *Store) FindSCIMUser(ctx context.Context, idp, attr, value string) (u store.SCIMUser, err error) {
	ctx, end := s.call(ctx, &err, "find scim user %s %s=%q", idp, attr, value)
	defer end()
	var where string
	switch {
	case strings.EqualFold(attr, "userName"):
		where, value = `user_name_key = ?`, fold(value)
	case strings.EqualFold(attr, "externalId"):
		where = `external_id = ? AND external_id <> ''`
	case strings.EqualFold(attr, "subject"):
		where = `subject = ? AND subject <> '' ORDER BY id LIMIT 1`
	default:
		return u, invalid("cannot look users up by %q (only userName, externalId, subject)", attr)
	}
	return scanSCIMUser(s.row(ctx, s.read, `SELECT `+scimUserCols+` FROM scim_users WHERE idp = ? AND `+where, idp, value))
}

// SCIMUsers implements store.SCIM. The page and the total come from one
// snapshot, so they agree.
func (s *Store) SCIMUsers(ctx context.Context, idp string, offset, limit int) (users []store.SCIMUser, total int, err error) {
	ctx, end := s.call(ctx, &err, "scim users of %s [%d+%d]", idp, offset, limit)
	defer end()
	offset, limit = scimPage(offset, limit)
	total, err = s.page(ctx, `SELECT count(*) FROM scim_users WHERE idp = ?`, idp, limit, func(tx Querier) error {
		rows, err := s.query(ctx, tx,
			`SELECT `+scimUserCols+` FROM scim_users WHERE idp = ? ORDER BY id LIMIT ? OFFSET ?`, idp, limit, offset)
		users, err = collect(rows, err, scanSCIMUser)
		return err
	})
	if err != nil {
		return nil, 0, err
	}
	return users, total, nil
}

// DeleteSCIMUser implements store.SCIM. The user's memberships go with it,
// and every group it was in gets a new Version: its member list changed.
func (s *Store) DeleteSCIMUser(ctx context.Context, idp, id string) (err error) {
	ctx, end := s.call(ctx, &err, "delete scim user %s/%s", idp, id)
	defer end()
	return s.tx(ctx, s.write, false, func(tx Querier) error {
		if _, err := s.exec(ctx, tx, `
			UPDATE scim_groups SET version = version + 1, updated = ?
			WHERE idp = ? AND id IN (SELECT group_id FROM scim_members WHERE idp = ? AND user_id = ?)`,
			s.ts(s.now()), idp, idp, id); err != nil {
			return err
		}
		return affected(s.exec(ctx, tx, `DELETE FROM scim_users WHERE idp = ? AND id = ?`, idp, id))
	})
}

// scimGroupCols reads the members along with the group, as a JSON array,
// so a group is one consistent statement.
func (s *Store) scimGroupCols() string {
	return `g.idp, g.id, g.external_id, g.display_name, g.created, g.updated, g.version,
		(SELECT coalesce(` + s.f.JSONAgg + `(m.user_id), '[]') FROM scim_members m WHERE m.idp = g.idp AND m.group_id = g.id)`
}

func scanSCIMGroup(row scanner) (store.SCIMGroup, error) {
	var (
		g       store.SCIMGroup
		members []byte
	)
	err := row.Scan(&g.IdP, &g.ID, &g.ExternalID, &g.DisplayName, at(&g.Created), at(&g.Updated), &g.Version, &members)
	if err != nil {
		return store.SCIMGroup{}, err
	}
	if err := json.Unmarshal(members, &g.Members); err != nil {
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
func (s *Store) PutSCIMGroup(ctx context.Context, g store.SCIMGroup) (err error) {
	ctx, end := s.call(ctx, &err, "put scim group %s/%s", g.IdP, g.ID)
	defer end()
	if g.IdP == "" || g.ID == "" || g.DisplayName == "" {
		return invalid("idp, id and displayName are required")
	}
	if err := text(g.IdP, g.ID, g.ExternalID, g.DisplayName); err != nil {
		return err
	}
	members, err := jsonList(slices.Compact(slices.Sorted(slices.Values(g.Members))))
	if err != nil {
		return err
	}
	created, updated := s.ts(s.orNow(g.Created)), s.ts(s.orNow(g.Updated))
	return scimRetry(func() error {
		return s.tx(ctx, s.write, false, func(tx Querier) error {
			_, err := s.exec(ctx, tx, `
				INSERT INTO scim_groups (idp, id, external_id, display_name, display_name_key, created, updated, version)
				VALUES (?, ?, ?, ?, ?, ?, ?, 1)
				ON CONFLICT (idp, id) DO UPDATE
				SET external_id = excluded.external_id, display_name = excluded.display_name,
				    display_name_key = excluded.display_name_key,
				    updated = excluded.updated, version = scim_groups.version + 1`,
				g.IdP, g.ID, g.ExternalID, g.DisplayName, fold(g.DisplayName), created, updated)
			if err != nil {
				return s.scimConflict(err,
					scimUnique{"scim_groups.display_name_key", "displayName", g.DisplayName},
					scimUnique{"scim_groups.external_id", "externalId", g.ExternalID})
			}
			if _, err := s.exec(ctx, tx, `DELETE FROM scim_members WHERE idp = ? AND group_id = ?`, g.IdP, g.ID); err != nil {
				return err
			}
			if len(g.Members) == 0 {
				return nil
			}
			// Name an unknown member; the foreign key still guards a user
			// deleted between this check and the insert.
			var missing string
			err = s.row(ctx, tx, `
				SELECT m.value FROM `+s.f.JSONEach+` AS m
				WHERE NOT EXISTS (SELECT 1 FROM scim_users u WHERE u.idp = ? AND u.id = m.value)
				LIMIT 1`, members, g.IdP).Scan(&missing)
			switch {
			case err == nil:
				return fmt.Errorf("member %q is not a user of %s: %w", missing, g.IdP, store.ErrNotFound)
			case !errors.Is(err, sql.ErrNoRows):
				return err
			}
			_, err = s.exec(ctx, tx, `
				INSERT INTO scim_members (idp, group_id, user_id)
				SELECT ?, ?, value FROM `+s.f.JSONEach, g.IdP, g.ID, members)
			if s.foreignKey(err) {
				err = fmt.Errorf("a member is not a user of %s: %w", g.IdP, store.ErrNotFound)
			}
			return err
		})
	})
}

// SCIMGroup implements store.SCIM. Members come back sorted.
func (s *Store) SCIMGroup(ctx context.Context, idp, id string) (g store.SCIMGroup, err error) {
	ctx, end := s.call(ctx, &err, "scim group %s/%s", idp, id)
	defer end()
	return scanSCIMGroup(s.row(ctx, s.read,
		`SELECT `+s.scimGroupCols()+` FROM scim_groups g WHERE g.idp = ? AND g.id = ?`, idp, id))
}

// FindSCIMGroup implements store.SCIM: by "displayName"
// (case-insensitive) or "externalId" (exact); attribute names compare
// case-insensitively; any other attribute is ErrInvalid.
func (s *Store) FindSCIMGroup(ctx context.Context, idp, attr, value string) (g store.SCIMGroup, err error) {
	ctx, end := s.call(ctx, &err, "find scim group %s %s=%q", idp, attr, value)
	defer end()
	var where string
	switch {
	case strings.EqualFold(attr, "displayName"):
		where, value = `g.display_name_key = ?`, fold(value)
	case strings.EqualFold(attr, "externalId"):
		where = `g.external_id = ? AND g.external_id <> ''`
	default:
		return g, invalid("cannot look groups up by %q (only displayName, externalId)", attr)
	}
	return scanSCIMGroup(s.row(ctx, s.read,
		`SELECT `+s.scimGroupCols()+` FROM scim_groups g WHERE g.idp = ? AND `+where, idp, value))
}

// SCIMGroups implements store.SCIM, like SCIMUsers.
func (s *Store) SCIMGroups(ctx context.Context, idp string, offset, limit int) (groups []store.SCIMGroup, total int, err error) {
	ctx, end := s.call(ctx, &err, "scim groups of %s [%d+%d]", idp, offset, limit)
	defer end()
	offset, limit = scimPage(offset, limit)
	total, err = s.page(ctx, `SELECT count(*) FROM scim_groups WHERE idp = ?`, idp, limit, func(tx Querier) error {
		rows, err := s.query(ctx, tx,
			`SELECT `+s.scimGroupCols()+` FROM scim_groups g WHERE g.idp = ? ORDER BY g.id LIMIT ? OFFSET ?`, idp, limit, offset)
		groups, err = collect(rows, err, scanSCIMGroup)
		return err
	})
	if err != nil {
		return nil, 0, err
	}
	return groups, total, nil
}

// DeleteSCIMGroup implements store.SCIM; its member rows go with it.
func (s *Store) DeleteSCIMGroup(ctx context.Context, idp, id string) (err error) {
	ctx, end := s.call(ctx, &err, "delete scim group %s/%s", idp, id)
	defer end()
	return affected(s.exec(ctx, s.write, `DELETE FROM scim_groups WHERE idp = ? AND id = ?`, idp, id))
}

// SCIMUserGroups implements store.SCIM, sorted bytewise by name. An
// unknown user is in no groups: the answer is empty, not ErrNotFound.
func (s *Store) SCIMUserGroups(ctx context.Context, idp, userID string) (names []string, err error) {
	ctx, end := s.call(ctx, &err, "scim groups of user %s/%s", idp, userID)
	defer end()
	rows, err := s.query(ctx, s.read, `
		SELECT g.display_name FROM scim_members m
		JOIN scim_groups g ON g.idp = m.idp AND g.id = m.group_id
		WHERE m.idp = ? AND m.user_id = ?
		ORDER BY g.display_name`+s.f.Bytewise, idp, userID)
	return collect(rows, err, func(row scanner) (string, error) {
		var n string
		err := row.Scan(&n)
		return n, err
	})
}
