package jit

// The applier: one reconcile of one person in one app, step by step
// (account, rename, e-mail, groups, attributes), taking back what it did
// when a removal overtakes it.

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/usherhq/usher/config"
	"github.com/usherhq/usher/store"
	"github.com/usherhq/usher/targets"
)

// applier runs one reconcile of one app, remembering what it changed
// that a removal would take away.
type applier struct {
	r   *Reconciler
	dir targets.Target
	d   Desired
	o   *Outcome
	// activated: created or reactivated the account; added: the groups
	// it added.
	activated bool
	added     []string
	// applied is the hash of the profile last applied in full ("" when
	// none, or when a removal or reinstatement reset it).
	applied string
	// before runs ahead of the first change (see apply); began says it
	// has.
	before func() error
	began  bool
}

// changing comes before each change to the app; ahead of the first it
// runs before, which records the change as an intent (see intent), so
// that a crash from there on leaves it queued. A run that only reads,
// finding the app as it should be (a returning person whose profile is
// unchanged but older than the fast path), writes no intent.
func (a *applier) changing() error {
	if a.before == nil || a.began {
		return nil
	}
	a.began = true
	return a.before()
}

// takeBack undoes what the applier changed that a removal takes away:
// the account goes back to inactive, the groups it added go. Profile
// updates stay; they give no access. It runs on a context the caller
// cannot cancel: a half-undone change is the one thing worse than none.
func (a *applier) takeBack(ctx context.Context) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), takeBackTimeout)
	defer cancel()
	d := a.d
	for _, g := range a.added {
		if err := a.dir.RemoveFromGroup(ctx, d.Username, g); err != nil {
			a.r.log().Error("take back a group a login added after a removal", "app", d.App, "username", d.Username, "group", g, "err", err)
			continue
		}
		if err := a.r.Store.RemoveManaged(ctx, d.App, d.Username, g); err != nil {
			a.r.log().Warn("forget a group taken back", "app", d.App, "username", d.Username, "group", g, "err", err)
		}
		a.change(ctx, ActGroupRemove, "removed from "+g+" again: access was removed meanwhile")
	}
	if a.activated {
		if err := a.dir.SetActive(ctx, d.Username, false); err != nil {
			a.r.log().Error("deactivate again after a removal", "app", d.App, "username", d.Username, "err", err)
			return
		}
		a.change(ctx, ActDeactivate, "deactivated "+d.Username+" again: access was removed meanwhile")
	}
}

// takeBackTimeout bounds the undo of a login overtaken by a removal.
const takeBackTimeout = 30 * time.Second

func (a *applier) change(ctx context.Context, action Action, detail string) {
	a.o.Changes = append(a.o.Changes, detail)
	a.r.audit(ctx, a.d, action, ResultOK, detail)
}

func (a *applier) failed(ctx context.Context, action Action, err error) error {
	a.r.audit(ctx, a.d, action, ResultError, err.Error())
	return err
}

func (a *applier) run(ctx context.Context) error {
	d := a.d
	u, err := a.dir.GetUser(ctx, d.Username)
	if errors.Is(err, targets.ErrNotFound) && d.PrevUsername != "" && !strings.EqualFold(d.PrevUsername, d.Username) {
		u, err = a.rename(ctx)
	}
	switch {
	case err == nil && !a.o.Known:
		// An account usher did not make: taking it over is the IdP's
		// adoption policy's decision, checked here too so that a queued
		// change obeys it as a login does.
		if ok, why := adoptable(d.Adoption, d.Email, u); !ok {
			return a.failed(ctx, ActAppRead, fmt.Errorf("%s: %s: %w: %s", d.App, d.Username, ErrAdoptionRefused, why))
		}
		a.change(ctx, ActAppRead, fmt.Sprintf("adopted the existing account %s (adoption: %s)", d.Username, orDefault(d.Adoption, config.AdoptVerifiedEmail)))
	case errors.Is(err, targets.ErrNotFound):
		if err := a.changing(); err != nil {
			return err
		}
		u, err = a.dir.CreateUser(ctx, targets.NewUser{Name: d.Username, DisplayName: d.DisplayName, Email: d.Email,
			NoAdopt: d.Adoption == config.AdoptNever})
		if errors.Is(err, targets.ErrNotAdopted) {
			return a.failed(ctx, ActAppCreate, fmt.Errorf("%s: %s: %w: %v", d.App, d.Username, ErrAdoptionRefused, err))
		}
		if errors.Is(err, targets.ErrExists) {
			// A retried create that had landed: read what is there.
			u, err = a.dir.GetUser(ctx, d.Username)
		} else if err == nil && u.Adopted {
			// The app had an account for this e-mail already (Atlassian
			// Cloud): say so, since bound is not made.
			a.change(ctx, ActAppCreate, fmt.Sprintf("adopted the existing account %s for %s (%s)", u.Key, d.Username, d.Email))
		} else if err == nil {
			a.activated = true
			a.change(ctx, ActAppCreate, fmt.Sprintf("created %s (%q, %s)", d.Username, d.DisplayName, d.Email))
		}
		if err != nil {
			return a.failed(ctx, ActAppCreate, err)
		}
	case err != nil:
		return a.failed(ctx, ActAppRead, err)
	}

	var up targets.Update
	var what []string
	if d.DisplayName != "" && u.DisplayName != d.DisplayName {
		up.DisplayName = &d.DisplayName
		what = append(what, fmt.Sprintf("display name %q → %q", u.DisplayName, d.DisplayName))
	}
	if change, desc := a.emailChange(u); change {
		up.Email = &d.Email
		what = append(what, desc)
	}
	if len(what) > 0 && u.ProfileReadOnly {
		// The account is its person's, not the organization's (an
		// unmanaged Cloud account): report the difference, change nothing.
		a.r.audit(ctx, d, ActAppUpdate, ResultSkipped, "not the organization's account, so usher cannot change "+strings.Join(what, ", "))
	} else if len(what) > 0 {
		if err := a.changing(); err != nil {
			return err
		}
		if err := a.dir.UpdateUser(ctx, d.Username, up); err != nil {
			return a.failed(ctx, ActAppUpdate, err)
		}
		a.change(ctx, ActAppUpdate, strings.Join(what, ", "))
	}
	if !u.Active {
		// A deactivation may have landed since Apply read the state (SCIM
		// or a sweep racing this login): never undo it.
		if st, err := a.r.Store.AppState(ctx, d.App, d.Username); err == nil && st.Deprovisioned {
			return fmt.Errorf("%s: %s: %w (%s)", d.App, d.Username, ErrDeprovisioned, st.DeprovisionedReason)
		}
		if err := a.changing(); err != nil {
			return err
		}
		a.activated = true // from here on, a removal may need this undone
		if err := a.dir.SetActive(ctx, d.Username, true); err != nil {
			return a.failed(ctx, ActAppActivate, err)
		}
		a.change(ctx, ActAppActivate, "reactivated "+d.Username)
	}
	if err := a.groups(ctx); err != nil {
		return err
	}
	return a.attributes(ctx)
}

// emailChange reports whether the app should be sent d's e-mail, and how
// to describe it. An app that reports e-mail is compared with its
// answer. One that does not (Confluence's user resource has none, §4.3)
// is compared with what usher applied last: nothing changed when this
// very profile was applied, and the previous recorded state tells the
// old e-mail when it is the one applied. When usher cannot tell, it
// sends the e-mail: one write more, never a change lost.
func (a *applier) emailChange(u *targets.User) (bool, string) {
	d := a.d
	switch {
	case d.Email == "":
		return false, ""
	case !u.EmailUnknown:
		return !strings.EqualFold(u.Email, d.Email), fmt.Sprintf("e-mail %q → %q", u.Email, d.Email)
	case a.applied != "" && a.applied == d.Hash:
		return false, ""
	case a.applied != "" && d.prior != nil && d.prior.Hash == a.applied:
		return !strings.EqualFold(d.prior.Email, d.Email), fmt.Sprintf("e-mail %q → %q", d.prior.Email, d.Email)
	}
	return true, fmt.Sprintf("e-mail set to %q (%s does not report it)", d.Email, d.App)
}

// rename moves the app account of a person whose username changed at the
// IdP, so the same (idp, subject) keeps one account.
func (a *applier) rename(ctx context.Context) (*targets.User, error) {
	d := a.d
	rn, ok := a.dir.(targets.Renamer)
	if !ok {
		return nil, targets.ErrNotFound // the app cannot rename: a new account is made
	}
	if _, err := a.dir.GetUser(ctx, d.PrevUsername); err != nil {
		return nil, err
	}
	if err := a.changing(); err != nil {
		return nil, err
	}
	if err := rn.Rename(ctx, d.PrevUsername, d.Username); err != nil {
		// A retried rename whose first answer was lost finds the old name
		// gone: if the new one exists, the rename landed.
		if _, gerr := a.dir.GetUser(ctx, d.Username); !errors.Is(err, targets.ErrNotFound) || gerr != nil {
			return nil, a.failed(ctx, ActAppRename, err)
		}
	}
	a.change(ctx, ActAppRename, fmt.Sprintf("renamed %s → %s", d.PrevUsername, d.Username))
	a.moveManaged(ctx)
	return a.dir.GetUser(ctx, d.Username)
}

// moveManaged carries the memberships usher manages over to the new
// username: the renamed account keeps them, and without the records a
// later mapping change could never take them away again.
func (a *applier) moveManaged(ctx context.Context) {
	d := a.d
	ms, err := a.r.Store.Managed(ctx, d.App, d.PrevUsername)
	if err != nil || len(ms) == 0 {
		if err != nil {
			a.r.log().Warn("read managed groups of old username", "app", d.App, "username", d.PrevUsername, "err", err)
		}
		return
	}
	names := make([]string, len(ms))
	for i := range ms {
		names[i] = ms[i].Group
		ms[i].Username = d.Username
	}
	// Add before forgetting: a crash in between leaves records under both
	// names, never a membership nobody manages.
	if err := a.r.Store.AddManaged(ctx, ms...); err != nil {
		a.r.log().Warn("move managed groups to new username", "app", d.App, "username", d.Username, "err", err)
		return
	}
	if err := a.r.Store.RemoveManaged(ctx, d.App, d.PrevUsername, names...); err != nil {
		a.r.log().Warn("forget managed groups of old username", "app", d.App, "username", d.PrevUsername, "err", err)
	}
}

// groups adds missing desired groups and, in full sync, removes the
// memberships usher added that are no longer desired. Memberships usher
// did not add are never removed.
func (a *applier) groups(ctx context.Context) error {
	d := a.d
	actual, err := a.dir.UserGroups(ctx, d.Username)
	if err != nil {
		return a.failed(ctx, ActAppGroups, err)
	}
	have := make(map[string]bool, len(actual))
	for _, g := range actual {
		have[strings.ToLower(g)] = true
	}
	want := make(map[string]bool, len(d.Groups))
	for _, g := range d.Groups {
		want[strings.ToLower(g.Group)] = true
		if have[strings.ToLower(g.Group)] {
			continue // present already, by usher or by hand: not ours to claim
		}
		// Record first, add second: a crash between the two leaves a
		// record of a membership that is missing, which the next run
		// forgets and redoes, never a membership usher added but would
		// not know to remove.
		if err := a.changing(); err != nil {
			return err
		}
		m := store.Membership{App: d.App, Username: d.Username, Group: g.Group, IdP: d.IdP, Rule: g.Rule, AddedAt: a.r.now()}
		if err := a.r.Store.AddManaged(ctx, m); err != nil {
			return fmt.Errorf("reconcile %s for %s: record managed %s: %w", d.App, d.Username, g.Group, err)
		}
		a.added = append(a.added, g.Group)
		err := a.dir.AddToGroup(ctx, d.Username, g.Group)
		if errors.Is(err, targets.ErrGroupNotFound) && a.r.CreateGroups {
			if err = a.dir.CreateGroup(ctx, g.Group); err == nil {
				a.change(ctx, ActGroupCreate, "created group "+g.Group)
				err = a.dir.AddToGroup(ctx, d.Username, g.Group)
			}
		}
		if err != nil {
			if ferr := a.r.Store.RemoveManaged(context.WithoutCancel(ctx), d.App, d.Username, g.Group); ferr != nil {
				a.r.log().Warn("forget unapplied membership", "app", d.App, "username", d.Username, "group", g.Group, "err", ferr)
			}
			if errors.Is(err, targets.ErrGroupReadOnly) {
				// Owned by the organization's IdP sync: leave it alone, say
				// why, and go on with the other groups.
				a.r.audit(ctx, d, ActGroupAdd, ResultSkipped, fmt.Sprintf("left %s alone: %v", g.Group, err))
				a.added = a.added[:len(a.added)-1]
				continue
			}
			return a.failed(ctx, ActGroupAdd, fmt.Errorf("add to %s: %w", g.Group, err))
		}
		a.change(ctx, ActGroupAdd, fmt.Sprintf("added to %s (%s)", g.Group, g.Rule))
		have[strings.ToLower(g.Group)] = true
	}

	managed, err := a.r.Store.Managed(ctx, d.App, d.Username)
	if err != nil {
		return fmt.Errorf("reconcile %s for %s: read managed groups: %w", d.App, d.Username, err)
	}
	var forget []string
	for _, m := range managed {
		k := strings.ToLower(m.Group)
		switch {
		case want[k]:
		case !have[k]:
			forget = append(forget, m.Group) // removed by hand meanwhile
		case d.Sync == SyncAddOnly:
		default:
			if err := a.changing(); err != nil {
				return err
			}
			if err := a.dir.RemoveFromGroup(ctx, d.Username, m.Group); errors.Is(err, targets.ErrGroupReadOnly) {
				// No longer usher's to manage: stop claiming it.
				a.r.audit(ctx, d, ActGroupRemove, ResultSkipped, fmt.Sprintf("left %s alone: %v", m.Group, err))
				forget = append(forget, m.Group)
				continue
			} else if err != nil {
				return a.failed(ctx, ActGroupRemove, fmt.Errorf("remove from %s: %w", m.Group, err))
			}
			a.change(ctx, ActGroupRemove, "removed from "+m.Group)
			if err := a.r.Store.RemoveManaged(ctx, d.App, d.Username, m.Group); err != nil {
				return fmt.Errorf("reconcile %s for %s: forget managed %s: %w", d.App, d.Username, m.Group, err)
			}
		}
	}
	if len(forget) > 0 {
		if err := a.r.Store.RemoveManaged(ctx, d.App, d.Username, forget...); err != nil {
			return fmt.Errorf("reconcile %s for %s: forget managed groups: %w", d.App, d.Username, err)
		}
	}
	return nil
}

func (a *applier) attributes(ctx context.Context) error {
	d := a.d
	as, ok := a.dir.(targets.AttributeSetter)
	if !ok || len(d.Attributes) == 0 {
		return nil
	}
	names := make([]string, 0, len(d.Attributes))
	for k := range d.Attributes {
		names = append(names, k)
	}
	slices.Sort(names)
	cur, err := as.Attributes(ctx, d.Username, names)
	if err != nil {
		return a.failed(ctx, ActAttributes, err)
	}
	diff := map[string]string{}
	var what []string
	for _, k := range names {
		if cur[k] != d.Attributes[k] {
			diff[k] = d.Attributes[k]
			what = append(what, fmt.Sprintf("%s %q → %q", k, cur[k], d.Attributes[k]))
		}
	}
	if len(diff) == 0 {
		return nil
	}
	if err := a.changing(); err != nil {
		return err
	}
	if err := as.SetAttributes(ctx, d.Username, diff); err != nil {
		return a.failed(ctx, ActAttributes, err)
	}
	a.change(ctx, ActAttributes, strings.Join(what, ", "))
	return nil
}
