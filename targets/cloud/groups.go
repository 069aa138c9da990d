package cloud

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/usherhq/usher/targets"
)

// usher's mappings name groups; Cloud changes memberships by group id
// (§26.5). Names are resolved through the groups search and kept for a
// short while, since a group can be renamed, deleted or taken over by
// the IdP sync at any time.

type groupInfo struct {
	id, name string
	synced   bool
	at       time.Time
}

type orgGroup struct {
	ID   string `json:"id"`
	Name string `json:"name"`
	// ExternalSynced and ManagedBy "external" mark groups the org's IdP
	// sync owns; the field names come from jira.js's group model, the
	// rule that such groups cannot change from §26.5.
	ExternalSynced bool   `json:"externalSynced"`
	ManagedBy      string `json:"managedBy"`
}

// maxGroupPages bounds the pages a name lookup follows; names are
// matched exactly, so more than a page of hits is unexpected.
const maxGroupPages = 20

// findGroup resolves a group name (case-insensitively) to its id. fresh
// skips the cache. ErrGroupNotFound when no group has the name.
func (t *Target) findGroup(ctx context.Context, op, username, name string, fresh bool) (groupInfo, error) {
	k := strings.ToLower(name)
	if !fresh {
		t.mu.Lock()
		g, ok := t.groups[k]
		t.mu.Unlock()
		if ok && t.now().Sub(g.at) < t.ttl {
			return g, nil
		}
	}
	body := map[string]any{"groupNames": []string{name}, "limit": 50}
	for range maxGroupPages {
		groups, next, err := search[orgGroup](ctx, t, op, username, "/groups/search", body)
		if err != nil {
			return groupInfo{}, err
		}
		for _, g := range groups {
			if strings.EqualFold(g.Name, name) && g.ID != "" {
				info := groupInfo{id: g.ID, name: g.Name, synced: g.ExternalSynced || g.ManagedBy == "external", at: t.now()}
				t.mu.Lock()
				t.groups[k] = info
				t.mu.Unlock()
				return info, nil
			}
		}
		if next == "" {
			break
		}
		body = map[string]any{"cursor": next}
	}
	t.forgetGroup(name)
	return groupInfo{}, t.refuse(op, username, fmt.Errorf("%w: %s", targets.ErrGroupNotFound, name))
}

func (t *Target) forgetGroup(name string) {
	t.mu.Lock()
	delete(t.groups, strings.ToLower(name))
	t.mu.Unlock()
}

func (t *Target) synced(op, username string, g groupInfo) error {
	return t.refuse(op, username, fmt.Errorf("%w (%s)", ErrGroupSynced, g.name))
}

// AddToGroup adds the person by accountId to the group by id (§26.5).
// A group the IdP sync owns is refused before any call, with
// ErrGroupSynced. One write when the group's id is cached.
func (t *Target) AddToGroup(ctx context.Context, username, group string) error {
	op := "add to group " + group
	id, err := t.accountID(ctx, op, username)
	if err != nil {
		return err
	}
	for attempt := 0; ; attempt++ {
		g, err := t.findGroup(ctx, op, username, group, attempt > 0)
		if err != nil {
			return err
		}
		if g.synced {
			return t.synced(op, username, g)
		}
		_, err = t.org.Do(ctx, targets.Request{Op: op, User: username, Method: http.MethodPost,
			Path: t.dir() + "/groups/" + esc(g.id) + "/memberships", Body: map[string]string{"accountId": id}, Idempotent: true})
		if err == nil {
			return nil
		}
		e := targets.APIErrorOf(err)
		switch st := targets.StatusOf(err); {
		case targets.IsTemporary(err), e != nil && e.HasCode("ADMIN-UAM-409-3"):
			return t.classify(err, callUser)
		case e != nil && e.HasCode("ADMIN-UAM-404-3") && attempt == 0:
			continue // the cached id is stale: the group was deleted or remade
		case e != nil && e.HasCode("ADMIN-UAM-404-3"):
			return t.classify(err, callGroup)
		case st == http.StatusNotFound:
			return t.classify(err, callUser)
		case (st == http.StatusBadRequest || st == http.StatusConflict) && attempt == 0:
			// Perhaps the group was taken over by the IdP sync since it
			// was cached: look again before reporting.
			continue
		}
		return t.classify(err, callUser)
	}
}

// RemoveFromGroup removes the person from the group. Done (nil) when
// usher never bound the person, the group does not exist, or they are
// not a member; ErrGroupSynced when the IdP sync owns the group.
func (t *Target) RemoveFromGroup(ctx context.Context, username, group string) error {
	op := "remove from group " + group
	id, err := t.accountID(ctx, op, username)
	if errors.Is(err, targets.ErrNotFound) {
		return nil
	} else if err != nil {
		return err
	}
	for attempt := 0; ; attempt++ {
		g, err := t.findGroup(ctx, op, username, group, attempt > 0)
		if errors.Is(err, targets.ErrGroupNotFound) {
			return nil
		} else if err != nil {
			return err
		}
		if g.synced {
			return t.synced(op, username, g)
		}
		_, err = t.org.Do(ctx, targets.Request{Op: op, User: username, Method: http.MethodDelete,
			Path: t.dir() + "/groups/" + esc(g.id) + "/memberships/" + esc(id)})
		st := targets.StatusOf(err)
		switch {
		case err == nil:
			return nil
		case targets.IsTemporary(err):
			return err
		case st == http.StatusNotFound:
			// Not a member, no such account, or a stale group id: the
			// person is not in a group of that name either way once the
			// name resolves to nothing or to a group they are not in.
			if e := targets.APIErrorOf(err); e != nil && e.HasCode("ADMIN-UAM-404-3") && attempt == 0 {
				continue
			}
			return nil
		case (st == http.StatusBadRequest || st == http.StatusConflict) && attempt == 0:
			continue
		}
		return t.classify(err, callUser)
	}
}

// CreateGroup creates the group in the configured directory unless one
// of that name exists, and caches its id.
func (t *Target) CreateGroup(ctx context.Context, group string) error {
	op := "create group " + group
	if _, err := t.findGroup(ctx, op, "", group, true); err == nil || !errors.Is(err, targets.ErrGroupNotFound) {
		return err
	}
	_, err := t.org.Do(ctx, targets.Request{Op: op, Method: http.MethodPost, Path: t.dir() + "/groups",
		Body: map[string]string{"name": group}, Idempotent: true})
	if err != nil && targets.StatusOf(err) != http.StatusConflict {
		return t.classify(err, callGroup)
	}
	// The create answer's body is not documented; one lookup learns the
	// id (and confirms a 409 meant "exists").
	_, err = t.findGroup(ctx, op, "", group, true)
	return err
}
