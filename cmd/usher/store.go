package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/usherhq/usher/config"
	"github.com/usherhq/usher/store"
	"github.com/usherhq/usher/store/postgres"
	"github.com/usherhq/usher/store/sqlite"
)

// replayCache lets SAML providers share assertion IDs through the store.
type replayCache struct{ s store.Coordination }

func (c replayCache) Seen(ctx context.Context, id string, expires time.Time) (bool, error) {
	return c.s.SeenOnce(ctx, id, expires)
}

// prepareDataDir makes the directory of the SQLite file (server.data_dir
// unless store.path says otherwise) when it is missing, readable by
// usher's user only: it holds identities, the audit log and sealed
// signing keys. A path that is a file, or a directory usher cannot
// write to, is refused naming the setting.
func prepareDataDir(cfg *config.Config) error {
	if cfg.Store.Driver == "postgres" {
		return nil
	}
	dir := filepath.Dir(cfg.Store.Path)
	setting := "store.path"
	if filepath.Clean(dir) == filepath.Clean(cfg.Server.DataDir) {
		setting = "server.data_dir"
	}
	cause := func(err error) error {
		if pe, ok := errors.AsType[*fs.PathError](err); ok {
			return pe.Err // the message names the directory already
		}
		return err
	}
	st, err := os.Stat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return fmt.Errorf("%s: cannot create %s: %w", setting, dir, cause(err))
		}
	case err != nil:
		return fmt.Errorf("%s: %s: %w", setting, dir, cause(err))
	case !st.IsDir():
		return fmt.Errorf("%s: %s exists and is not a directory", setting, dir)
	}
	f, err := os.CreateTemp(dir, ".usher-write-check-*")
	if err != nil {
		return fmt.Errorf("%s: %s is not writable by usher's user: %w", setting, dir, cause(err))
	}
	name := f.Name()
	f.Close()
	return os.Remove(name)
}

// openStore opens the configured store, SQLite or PostgreSQL, migrating
// it unless store.migrate is manual.
func openStore(ctx context.Context, c config.Store) (store.Store, error) {
	switch c.Driver {
	case "postgres":
		dsn, err := c.DSN.Resolve()
		if err != nil {
			return nil, fmt.Errorf("store.dsn: %w", err)
		}
		s, err := postgres.Open(ctx, dsn, postgres.Options{
			NoMigrate: c.Migrate == "manual", MaxConns: int32(c.MaxConns), StatementTimeout: c.StatementTimeout,
			Timeout: c.Timeout,
		})
		if err != nil {
			return nil, fmt.Errorf("store: %w", err)
		}
		return s, nil
	default:
		s, err := sqlite.Open(ctx, c.Path, sqlite.Options{NoMigrate: c.Migrate == "manual", Timeout: c.Timeout})
		if err != nil {
			return nil, fmt.Errorf("store: %w", err)
		}
		return s, nil
	}
}
