package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/usherhq/usher/store"
)

var _ store.Blobs = (*Store)(nil)

// PutBlob implements store.Blobs. Replicas putting one key at once: the
// last upsert wins whole; a value is never mixed.
func (s *Store) PutBlob(ctx context.Context, key string, value []byte) error {
	if err := store.CheckBlobKey(key); err != nil {
		return fmt.Errorf("postgres %s: put blob %q: %w", s.name, key, err)
	}
	if value == nil {
		value = []byte{} // the column is NOT NULL; an empty file is still a file
	}
	if _, err := s.pool.Exec(ctx, `
		INSERT INTO blobs (key, value, modified) VALUES ($1, $2, $3)
		ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, modified = EXCLUDED.modified`,
		key, value, ts(s.now())); err != nil {
		return fmt.Errorf("postgres %s: put blob %s: %w", s.name, key, err)
	}
	return nil
}

// Blob implements store.Blobs.
func (s *Store) Blob(ctx context.Context, key string) ([]byte, time.Time, error) {
	var (
		v        []byte
		modified time.Time
	)
	err := s.pool.QueryRow(ctx, `SELECT value, modified FROM blobs WHERE key = $1`, key).Scan(&v, &modified)
	if errors.Is(err, pgx.ErrNoRows) {
		err = store.ErrNotFound
	}
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("postgres %s: blob %s: %w", s.name, key, err)
	}
	if v == nil {
		v = []byte{}
	}
	return v, modified.UTC(), nil
}

// DeleteBlob implements store.Blobs: one statement, so a concurrent reader
// sees the whole "directory" or none of it.
func (s *Store) DeleteBlob(ctx context.Context, key string) error {
	if err := store.CheckBlobKey(key); err != nil {
		return fmt.Errorf("postgres %s: delete blob %q: %w", s.name, key, err)
	}
	lo, hi := store.BlobPrefixRange(key)
	tag, err := s.pool.Exec(ctx,
		`DELETE FROM blobs WHERE key = $1 OR (key >= $2 AND key < $3)`, key, lo, hi)
	if err == nil && tag.RowsAffected() == 0 {
		err = store.ErrNotFound
	}
	if err != nil {
		return fmt.Errorf("postgres %s: delete blob %s: %w", s.name, key, err)
	}
	return nil
}

// BlobKeys implements store.Blobs.
func (s *Store) BlobKeys(ctx context.Context, prefix string, recursive bool) ([]string, error) {
	keys, err := s.blobKeys(ctx, prefix)
	if err != nil {
		return nil, fmt.Errorf("postgres %s: blob keys under %q: %w", s.name, prefix, err)
	}
	if !recursive {
		keys = store.BlobChildren(prefix, keys)
	}
	return keys, nil
}

func (s *Store) blobKeys(ctx context.Context, prefix string) ([]string, error) {
	if prefix != "" {
		if err := store.CheckBlobKey(prefix); err != nil {
			return nil, err
		}
	}
	lo, hi := store.BlobPrefixRange(prefix)
	q, args := `SELECT key FROM blobs ORDER BY key`, []any(nil)
	if hi != "" {
		q, args = `SELECT key FROM blobs WHERE key >= $1 AND key < $2 ORDER BY key`, []any{lo, hi}
	}
	rows, err := s.pool.Query(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	keys, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if len(keys) == 0 {
		keys = nil
	}
	return keys, err
}
