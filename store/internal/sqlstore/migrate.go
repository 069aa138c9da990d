package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"io/fs"
	"log/slog"

	"github.com/pressly/goose/v3"
)

// Migrate brings the schema of db up to date with the goose migrations at
// the root of fsys. With check, it changes nothing and fails when a
// migration is pending instead. opts add to the goose provider (a session
// locker, so that replicas take turns).
func Migrate(ctx context.Context, db *sql.DB, dialect goose.Dialect, fsys fs.FS, log *slog.Logger, check bool, opts ...goose.ProviderOption) error {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	p, err := goose.NewProvider(dialect, db, fsys, append(opts, goose.WithSlog(log))...)
	if err != nil {
		return err
	}
	if !check {
		_, err = p.Up(ctx)
		return err
	}
	pending, err := p.HasPending(ctx)
	if err == nil && pending {
		err = errors.New("schema is not up to date; run `usher migrate`")
	}
	return err
}
