package main

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"

	"github.com/usherhq/usher/config"
	"github.com/usherhq/usher/store"
	"github.com/usherhq/usher/targets"
)

// blobAccounts keeps targets.Accounts (Atlassian Cloud accountIds by
// usher username) in the store's blobs, which every replica shares:
//
//	targets/accounts/<app>/user/<username, lower-cased, escaped> → accountId
//	targets/accounts/<app>/id/<accountId, escaped>               → username
//
// The reverse key lets a listing name the people usher bound. Writes put
// the forward key last, so a crash in between leaves at worst a reverse
// key nobody's forward key confirms, which reads ignore.
type blobAccounts struct{ b store.Blobs }

var _ targets.Accounts = blobAccounts{}

const accountsPrefix = "targets/accounts/"

func userKey(app, username string) string {
	return accountsPrefix + app + "/user/" + url.PathEscape(strings.ToLower(username))
}

func idKey(app, id string) string { return accountsPrefix + app + "/id/" + url.PathEscape(id) }

func (a blobAccounts) get(ctx context.Context, key string) (string, error) {
	v, _, err := a.b.Blob(ctx, key)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return "", targets.ErrNotFound
	case err != nil:
		return "", fmt.Errorf("accounts: read %s: %w", key, err)
	}
	return string(v), nil
}

func (a blobAccounts) del(ctx context.Context, key string) error {
	if err := a.b.DeleteBlob(ctx, key); err != nil && !errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("accounts: delete %s: %w", key, err)
	}
	return nil
}

func (a blobAccounts) AccountID(ctx context.Context, app, username string) (string, error) {
	return a.get(ctx, userKey(app, username))
}

// Username answers only when the forward key agrees, so a stale reverse
// key (a crash between the two writes) names nobody.
func (a blobAccounts) Username(ctx context.Context, app, id string) (string, error) {
	name, err := a.get(ctx, idKey(app, id))
	if err != nil {
		return "", err
	}
	if fwd, err := a.get(ctx, userKey(app, name)); err != nil || fwd != id {
		if err != nil && !errors.Is(err, targets.ErrNotFound) {
			return "", err
		}
		return "", targets.ErrNotFound
	}
	return name, nil
}

func (a blobAccounts) PutAccountID(ctx context.Context, app, username, id string) error {
	if old, err := a.get(ctx, userKey(app, username)); err == nil && old != id {
		if err := a.del(ctx, idKey(app, old)); err != nil {
			return err
		}
	} else if err != nil && !errors.Is(err, targets.ErrNotFound) {
		return err
	}
	if prev, err := a.get(ctx, idKey(app, id)); err == nil && !strings.EqualFold(prev, username) {
		// The account was someone else's under usher: that name lets go.
		if err := a.del(ctx, userKey(app, prev)); err != nil {
			return err
		}
	} else if err != nil && !errors.Is(err, targets.ErrNotFound) {
		return err
	}
	if err := a.b.PutBlob(ctx, idKey(app, id), []byte(username)); err != nil {
		return fmt.Errorf("accounts: write: %w", err)
	}
	if err := a.b.PutBlob(ctx, userKey(app, username), []byte(id)); err != nil {
		return fmt.Errorf("accounts: write: %w", err)
	}
	return nil
}

func (a blobAccounts) DeleteAccountID(ctx context.Context, app, username string) error {
	id, err := a.get(ctx, userKey(app, username))
	switch {
	case errors.Is(err, targets.ErrNotFound):
		return nil
	case err != nil:
		return err
	}
	if err := a.del(ctx, userKey(app, username)); err != nil {
		return err
	}
	if name, err := a.get(ctx, idKey(app, id)); err == nil && strings.EqualFold(name, username) {
		return a.del(ctx, idKey(app, id))
	}
	return nil
}

// cloudApp reports whether app is an Atlassian Cloud app, whose people
// have accountIds.
func cloudApp(cfg *config.Config, app string) bool {
	for _, a := range cfg.Apps {
		if a.Name == app {
			return a.Kind == config.KindCloud
		}
	}
	return false
}
