package sqlstore

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"strings"
	"time"

	"github.com/usherhq/usher/store"
)

const bindingCols = `idp, subject, username, created_at, last_login`

func scanBinding(row scanner) (store.Binding, error) {
	var b store.Binding
	if err := row.Scan(&b.IdP, &b.Subject, &b.Username, at(&b.CreatedAt), at(&b.LastLogin)); err != nil {
		return store.Binding{}, err
	}
	return b, nil
}

// Bind implements store.Store. An unchanged binding is answered by a read
// (from the read pool: a returning user's login does not queue for
// SQLite's writer); otherwise one upsert does the work, so two replicas
// binding the same username race only inside the database, where the
// unique constraint picks the winner.
func (s *Store) Bind(ctx context.Context, b store.Binding) (got store.Binding, err error) {
	ctx, end := s.call(ctx, &err, "bind %s/%s → %s", b.IdP, b.Subject, b.Username)
	defer end()
	if b.IdP == "" || b.Subject == "" || b.Username == "" {
		return got, invalid("idp, subject and username are required")
	}
	if err := text(b.IdP, b.Subject, b.Username); err != nil {
		return got, err
	}
	created := s.orNow(b.CreatedAt)
	// ON CONFLICT only arbitrates the primary key. When one identity is
	// inserted twice at once (PostgreSQL replicas), the loser trips the
	// username constraint instead; the owner then turns out to be the
	// identity itself, and another pass finds the committed row. Three
	// passes also cover a rename racing with it.
	for range 3 {
		got, err = s.bind(ctx, b, created)
		if !errors.Is(err, store.ErrUsernameTaken) {
			break
		}
		owner, oerr := scanBinding(s.row(ctx, s.read,
			`SELECT `+bindingCols+` FROM bindings WHERE username_key = ?`, fold(b.Username)))
		if oerr != nil && !errors.Is(oerr, sql.ErrNoRows) {
			return store.Binding{}, oerr
		}
		if oerr == nil && (owner.IdP != b.IdP || owner.Subject != b.Subject) {
			break
		}
	}
	if err != nil {
		return store.Binding{}, err
	}
	return got, nil
}

func (s *Store) bind(ctx context.Context, b store.Binding, created time.Time) (store.Binding, error) {
	cur, err := scanBinding(s.row(ctx, s.read,
		`SELECT `+bindingCols+` FROM bindings WHERE idp = ? AND subject = ?`, b.IdP, b.Subject))
	switch {
	case err == nil && cur.Username == b.Username:
		return cur, nil
	case err != nil && !errors.Is(err, sql.ErrNoRows):
		return store.Binding{}, err
	}
	// The upsert keeps created_at and last_login of an existing identity
	// (a rename); the unique username_key refuses a name another identity
	// owns, and the failed statement changes nothing.
	got, err := scanBinding(s.row(ctx, s.write, `
		INSERT INTO bindings (idp, subject, username, username_key, created_at)
		VALUES (?, ?, ?, ?, ?)
		ON CONFLICT (idp, subject) DO UPDATE
		SET username = excluded.username, username_key = excluded.username_key
		RETURNING `+bindingCols,
		b.IdP, b.Subject, b.Username, fold(b.Username), s.ts(created)))
	if s.unique(err) == "bindings.username_key" {
		err = store.ErrUsernameTaken
	}
	return got, err
}

// unique names the unique key err tripped, "" when it is not a unique
// violation.
func (s *Store) unique(err error) string {
	if err == nil {
		return ""
	}
	f := s.f.Classify(err)
	if f.Kind != Unique {
		return ""
	}
	return cmp.Or(f.Key, "?")
}

// foreignKey reports whether err is a reference to a missing row.
func (s *Store) foreignKey(err error) bool {
	return err != nil && s.f.Classify(err).Kind == ForeignKey
}

// Binding implements store.Store.
func (s *Store) Binding(ctx context.Context, idp, subject string) (b store.Binding, err error) {
	ctx, end := s.call(ctx, &err, "binding %s/%s", idp, subject)
	defer end()
	return scanBinding(s.row(ctx, s.read,
		`SELECT `+bindingCols+` FROM bindings WHERE idp = ? AND subject = ?`, idp, subject))
}

// BindingByUsername implements store.Store.
func (s *Store) BindingByUsername(ctx context.Context, username string) (b store.Binding, err error) {
	ctx, end := s.call(ctx, &err, "binding of username %s", username)
	defer end()
	return scanBinding(s.row(ctx, s.read,
		`SELECT `+bindingCols+` FROM bindings WHERE username_key = ?`, fold(username)))
}

// RecordLogin implements store.Store.
func (s *Store) RecordLogin(ctx context.Context, idp, subject string, at time.Time) (err error) {
	ctx, end := s.call(ctx, &err, "record login of %s/%s", idp, subject)
	defer end()
	n, err := s.exec(ctx, s.write,
		`UPDATE bindings SET last_login = ? WHERE idp = ? AND subject = ?`, s.ts(at), idp, subject)
	if err == nil && n == 0 {
		err = store.ErrNotFound
	}
	return err
}

// RecordLogins implements store.Store: one UPDATE per identity, in
// transactions of at most maxRows, so that a large flush does not hold
// SQLite's one writer for long; with more than maxRows the earlier
// transactions stay written when a later one fails (a retry rewrites
// them harmlessly, since times never move back).
func (s *Store) RecordLogins(ctx context.Context, logins ...store.Login) (err error) {
	if len(logins) == 0 {
		return nil
	}
	ctx, end := s.call(ctx, &err, "record %d logins", len(logins))
	defer end()
	for _, l := range logins {
		if l.IdP == "" || l.Subject == "" || l.At.IsZero() {
			return invalid("idp, subject and time are required")
		}
		if err := text(l.IdP, l.Subject); err != nil {
			return err
		}
	}
	for start := 0; start < len(logins); start += maxRows {
		chunk := logins[start:min(start+maxRows, len(logins))]
		err := s.tx(ctx, s.write, false, func(tx Querier) error {
			for _, l := range chunk {
				at := s.ts(l.At)
				if _, err := s.exec(ctx, tx, `
					UPDATE bindings SET last_login = ?
					WHERE idp = ? AND subject = ? AND (last_login IS NULL OR last_login < ?)`,
					at, l.IdP, l.Subject, at); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// Append implements store.Store: one multi-row INSERT, so the events are
// one transaction and their IDs follow their order.
func (s *Store) Append(ctx context.Context, events ...store.Event) (err error) {
	if len(events) == 0 {
		return nil
	}
	ctx, end := s.call(ctx, &err, "append %d audit events", len(events))
	defer end()
	now := s.now()
	rows := make([][]any, len(events))
	for i, e := range events {
		if e.Time.IsZero() {
			e.Time = now
		}
		rows[i] = []any{s.ts(e.Time), e.Action, e.IdP, e.Subject, e.Username, e.App, e.Actor, e.Outcome, scrub(e.Detail)}
	}
	return s.insertRows(ctx,
		`INSERT INTO audit (time, action, idp, subject, username, app, actor, outcome, detail) VALUES `, ``, rows)
}

// Audit implements store.Store.
func (s *Store) Audit(ctx context.Context, f store.AuditFilter) (evs []store.Event, err error) {
	ctx, end := s.call(ctx, &err, "audit")
	defer end()
	var (
		where []string
		args  []any
	)
	for _, c := range []struct{ col, val string }{
		{"idp", f.IdP}, {"username", f.Username}, {"app", f.App}, {"action", f.Action},
	} {
		if c.val != "" {
			where = append(where, c.col+" = ?")
			args = append(args, c.val)
		}
	}
	if !f.Since.IsZero() {
		where = append(where, "time >= ?")
		args = append(args, s.ts(f.Since))
	}
	if !f.Until.IsZero() {
		where = append(where, "time < ?")
		args = append(args, s.ts(f.Until))
	}
	q := `SELECT id, time, action, idp, subject, username, app, actor, outcome, detail FROM audit`
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	q += " ORDER BY time DESC, id DESC LIMIT ?"
	args = append(args, pageSize(f.Limit))
	rows, err := s.query(ctx, s.read, q, args...)
	return collect(rows, err, func(row scanner) (store.Event, error) {
		var e store.Event
		err := row.Scan(&e.ID, at(&e.Time), &e.Action, &e.IdP, &e.Subject, &e.Username, &e.App, &e.Actor, &e.Outcome, &e.Detail)
		return e, err
	})
}

// defaultPage is the page size when a caller passes a limit <= 0.
const defaultPage = 100

func pageSize(limit int) int {
	if limit <= 0 {
		return defaultPage
	}
	return limit
}
