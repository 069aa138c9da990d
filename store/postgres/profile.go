package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/usherhq/usher/store"
)

// PutProfile implements store.Provisioning.
func (s *Store) PutProfile(ctx context.Context, idp, subject string, profile []byte, at time.Time) error {
	if idp == "" || subject == "" {
		return fmt.Errorf("postgres %s: put profile %q/%q: idp and subject are required", s.name, idp, subject)
	}
	_, err := s.pool.Exec(ctx, `
		INSERT INTO profiles (idp, subject, profile, updated_at) VALUES ($1, $2, $3, $4)
		ON CONFLICT (idp, subject) DO UPDATE SET profile = EXCLUDED.profile, updated_at = EXCLUDED.updated_at`,
		idp, subject, profile, at.UTC().Truncate(time.Millisecond))
	if err != nil {
		return fmt.Errorf("postgres %s: put profile of %s/%s: %w", s.name, idp, subject, err)
	}
	return nil
}

// Profile implements store.Provisioning.
func (s *Store) Profile(ctx context.Context, idp, subject string) ([]byte, time.Time, error) {
	var p []byte
	var at time.Time
	err := s.pool.QueryRow(ctx, `SELECT profile, updated_at FROM profiles WHERE idp = $1 AND subject = $2`, idp, subject).Scan(&p, &at)
	if errors.Is(err, pgx.ErrNoRows) {
		err = store.ErrNotFound
	}
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("postgres %s: profile of %s/%s: %w", s.name, idp, subject, err)
	}
	return p, at.UTC(), nil
}
