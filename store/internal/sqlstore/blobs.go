package sqlstore

import (
	"context"
	"time"

	"github.com/usherhq/usher/store"
)

var _ store.Blobs = (*Store)(nil)

// PutBlob implements store.Blobs. Replicas putting one key at once: the
// last upsert wins whole; a value is never mixed.
func (s *Store) PutBlob(ctx context.Context, key string, value []byte) (err error) {
	ctx, end := s.call(ctx, &err, "put blob %q", key)
	defer end()
	if err := store.CheckBlobKey(key); err != nil {
		return invalid("%v", err)
	}
	// The column is NOT NULL; an empty file is still a file.
	_, err = s.exec(ctx, s.write, `
		INSERT INTO blobs (key, value, modified) VALUES (?, ?, ?)
		ON CONFLICT (key) DO UPDATE SET value = excluded.value, modified = excluded.modified`,
		key, blob(value), s.ts(s.now()))
	return err
}

// Blob implements store.Blobs.
func (s *Store) Blob(ctx context.Context, key string) (v []byte, modified time.Time, err error) {
	ctx, end := s.call(ctx, &err, "blob %s", key)
	defer end()
	err = s.row(ctx, s.read, `SELECT value, modified FROM blobs WHERE key = ?`, key).Scan(&v, at(&modified))
	if err != nil {
		return nil, time.Time{}, err
	}
	if v == nil {
		v = []byte{}
	}
	return v, modified, nil
}

// DeleteBlob implements store.Blobs: one statement, so a concurrent reader
// sees the whole "directory" or none of it.
func (s *Store) DeleteBlob(ctx context.Context, key string) (err error) {
	ctx, end := s.call(ctx, &err, "delete blob %q", key)
	defer end()
	if err := store.CheckBlobKey(key); err != nil {
		return invalid("%v", err)
	}
	lo, hi := store.BlobPrefixRange(key)
	return affected(s.exec(ctx, s.write,
		`DELETE FROM blobs WHERE key = ? OR (key >= ? AND key < ?)`, key, lo, hi))
}

// BlobKeys implements store.Blobs. Keys compare bytewise: the key column
// is COLLATE "C" in PostgreSQL, BINARY in SQLite.
func (s *Store) BlobKeys(ctx context.Context, prefix string, recursive bool) (keys []string, err error) {
	ctx, end := s.call(ctx, &err, "blob keys under %q", prefix)
	defer end()
	if prefix != "" {
		if err := store.CheckBlobKey(prefix); err != nil {
			return nil, invalid("%v", err)
		}
	}
	lo, hi := store.BlobPrefixRange(prefix)
	q, args := `SELECT key FROM blobs ORDER BY key`, []any(nil)
	if hi != "" {
		q, args = `SELECT key FROM blobs WHERE key >= ? AND key < ? ORDER BY key`, []any{lo, hi}
	}
	rows, err := s.query(ctx, s.read, q, args...)
	keys, err = collect(rows, err, func(row scanner) (string, error) {
		var k string
		err := row.Scan(&k)
		return k, err
	})
	if err != nil || recursive {
		return keys, err
	}
	return store.BlobChildren(prefix, keys), nil
}
