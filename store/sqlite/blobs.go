package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/usherhq/usher/store"
)

var _ store.Blobs = (*Store)(nil)

// PutBlob implements store.Blobs.
func (s *Store) PutBlob(ctx context.Context, key string, value []byte) error {
	if err := store.CheckBlobKey(key); err != nil {
		return fmt.Errorf("sqlite %s: put blob %q: %w", s.path, key, err)
	}
	if value == nil {
		value = []byte{} // the column is NOT NULL; an empty file is still a file
	}
	if _, err := s.write.ExecContext(ctx, `
		INSERT INTO blobs (key, value, modified) VALUES (?, ?, ?)
		ON CONFLICT (key) DO UPDATE SET value = excluded.value, modified = excluded.modified`,
		key, value, millis(s.now())); err != nil {
		return fmt.Errorf("sqlite %s: put blob %s: %w", s.path, key, err)
	}
	return nil
}

// Blob implements store.Blobs.
func (s *Store) Blob(ctx context.Context, key string) ([]byte, time.Time, error) {
	var (
		v        []byte
		modified int64
	)
	err := s.read.QueryRowContext(ctx, `SELECT value, modified FROM blobs WHERE key = ?`, key).Scan(&v, &modified)
	if errors.Is(err, sql.ErrNoRows) {
		err = store.ErrNotFound
	}
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("sqlite %s: blob %s: %w", s.path, key, err)
	}
	if v == nil {
		v = []byte{}
	}
	return v, fromMillis(modified), nil
}

// DeleteBlob implements store.Blobs: one statement, so a concurrent reader
// sees the whole "directory" or none of it.
func (s *Store) DeleteBlob(ctx context.Context, key string) error {
	if err := store.CheckBlobKey(key); err != nil {
		return fmt.Errorf("sqlite %s: delete blob %q: %w", s.path, key, err)
	}
	lo, hi := store.BlobPrefixRange(key)
	res, err := s.write.ExecContext(ctx,
		`DELETE FROM blobs WHERE key = ? OR (key >= ? AND key < ?)`, key, lo, hi)
	var n int64
	if err == nil {
		n, err = res.RowsAffected()
	}
	if err == nil && n == 0 {
		err = store.ErrNotFound
	}
	if err != nil {
		return fmt.Errorf("sqlite %s: delete blob %s: %w", s.path, key, err)
	}
	return nil
}

// BlobKeys implements store.Blobs.
func (s *Store) BlobKeys(ctx context.Context, prefix string, recursive bool) ([]string, error) {
	keys, err := s.blobKeys(ctx, prefix)
	if err != nil {
		return nil, fmt.Errorf("sqlite %s: blob keys under %q: %w", s.path, prefix, err)
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
		q, args = `SELECT key FROM blobs WHERE key >= ? AND key < ? ORDER BY key`, []any{lo, hi}
	}
	rows, err := s.read.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var keys []string
	for rows.Next() {
		var k string
		if err := rows.Scan(&k); err != nil {
			return nil, err
		}
		keys = append(keys, k)
	}
	return keys, rows.Err()
}
