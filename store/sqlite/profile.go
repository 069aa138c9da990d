package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/usherhq/usher/store"
)

// PutProfile implements store.Provisioning.
func (s *Store) PutProfile(ctx context.Context, idp, subject string, profile []byte, at time.Time) error {
	if idp == "" || subject == "" {
		return fmt.Errorf("sqlite %s: put profile %q/%q: idp and subject are required", s.path, idp, subject)
	}
	_, err := s.write.ExecContext(ctx,
		`INSERT OR REPLACE INTO profiles (idp, subject, profile, updated_at) VALUES (?, ?, ?, ?)`,
		idp, subject, profile, millis(at))
	if err != nil {
		return fmt.Errorf("sqlite %s: put profile of %s/%s: %w", s.path, idp, subject, err)
	}
	return nil
}

// Profile implements store.Provisioning.
func (s *Store) Profile(ctx context.Context, idp, subject string) ([]byte, time.Time, error) {
	var p []byte
	var ms int64
	err := s.read.QueryRowContext(ctx, `SELECT profile, updated_at FROM profiles WHERE idp = ? AND subject = ?`, idp, subject).Scan(&p, &ms)
	if errors.Is(err, sql.ErrNoRows) {
		err = store.ErrNotFound
	}
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("sqlite %s: profile of %s/%s: %w", s.path, idp, subject, err)
	}
	return p, fromMillis(ms), nil
}
