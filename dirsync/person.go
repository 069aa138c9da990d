package dirsync

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/usherhq/usher/directory"
	"github.com/usherhq/usher/jit"
	"github.com/usherhq/usher/providers"
	"github.com/usherhq/usher/store"
)

// screen sorts out the people a sync does not admit: leavers (the
// sweep's), temporary states, people outside the scope. done says it
// decided.
func (s *Syncer) screen(p directory.Person) (it Item, done bool) {
	it = Item{Subject: p.Subject, ID: p.ID, Username: p.Username}
	switch {
	case p.Status.Leaver():
		it.Outcome, it.Detail = OutcomeLeaver, p.Status.String()+" in the directory: a sweep with this directory as its source takes access away"
	case p.OutOfScope:
		it.Outcome, it.Detail = OutcomeSkipped, "outside the directory's configured scope"
	case p.Status == directory.Inactive:
		it.Outcome, it.Detail = OutcomeSkipped, "inactive for now (locked out, not yet activated): left as it is"
	case p.Subject == "":
		it.Outcome, it.Detail = OutcomeSkipped, "the directory gave no subject for this person"
	default:
		return it, false
	}
	return it, true
}

// one syncs one person of a pull or delta.
func (s *Syncer) one(ctx context.Context, p directory.Person, dryRun bool, cause jit.Cause) Item {
	if it, done := s.screen(p); done {
		return it
	}
	if !p.GroupsComplete {
		// A delta without membership data: the person's own record has
		// it. If that fails too, the mapping only adds groups.
		if q, err := s.d.Conn.Person(ctx, p.Subject); err == nil && q.GroupsComplete {
			if it, done := s.screen(*q); done {
				return it
			}
			p = *q
		}
	}
	id := s.identity(p)
	pv := s.preview(ctx, p, id)
	if dryRun {
		return pv.Item
	}
	switch pv.Outcome {
	case OutcomeUnchanged, OutcomeSkipped, OutcomeFailed:
		return pv.Item
	case OutcomeDenied, OutcomeRefused:
		if !pv.known {
			// Not usher's yet: admitting would only write a refusal to
			// the audit log at every sync.
			return pv.Item
		}
	}
	return s.admit(ctx, p, id, cause)
}

// admit runs the person through the lifecycle and says what happened.
func (s *Syncer) admit(ctx context.Context, p directory.Person, id providers.Identity, cause jit.Cause) Item {
	it := Item{Subject: p.Subject, ID: p.ID, Username: p.Username}
	a, err := s.d.Lifecycle.Admit(ctx, id, cause)
	if e := jit.AdmitErrorOf(err); e != nil {
		if e.Username != "" {
			it.Username = e.Username
		}
		switch e.Kind {
		case jit.Denied:
			it.Outcome, it.Detail = OutcomeDenied, e.Reason
		case jit.Unmatched, jit.UsernameTaken, jit.AdoptionRefused:
			it.Outcome, it.Detail = OutcomeRefused, e.Error()
		case jit.AccessRemoved:
			it.Outcome, it.Detail = OutcomeSkipped, "access was taken away in every app (by a sweep or an admin); it stays so"
		default:
			it.Outcome, it.Detail = OutcomeFailed, e.Error()
		}
		return it
	}
	if err != nil {
		it.Outcome, it.Detail = OutcomeFailed, err.Error()
		return it
	}
	it.Username = a.Profile.Username
	it.Outcome = OutcomeUnchanged
	if a.Profile.Provisioning == jit.ProvisionManual {
		// Admitted means recorded: the preview saw it differ.
		it.Outcome, it.Detail = OutcomeUpdated, "manual provisioning: the profile is recorded for an admin's sync"
		it.manual = true
		return it
	}
	created, updated, queued := false, false, false
	for _, o := range a.Outcomes {
		for _, c := range o.Changes {
			it.Changes = append(it.Changes, o.App+": "+c)
		}
		switch {
		case o.Queued:
			queued = true
			it.Apps = append(it.Apps, o.App)
		case o.Err != nil:
			// A deprovisioned app: the decision stands.
		case o.Skipped == "fast path":
			it.fastPath = true
		case !o.Known:
			created = true
			it.Apps = append(it.Apps, o.App)
		case len(o.Changes) > 0:
			updated = true
			it.Apps = append(it.Apps, o.App)
		}
	}
	switch {
	case created:
		it.Outcome = OutcomeCreated
	case updated:
		it.Outcome = OutcomeUpdated
	case queued:
		it.Outcome, it.Detail = OutcomeQueued, "an app is unavailable; the retry queue finishes the change"
	}
	return it
}

// identity is the person as their IdP's login would present them: the
// OIDC standard claims, the SAML NameID and displayName, the groups
// under the mapping's group claim, the directory's own attributes under
// their names, and the configured extra claims, so that one mapping
// serves logins and syncs alike.
func (s *Syncer) identity(p directory.Person) providers.Identity {
	c := make(map[string][]string, len(p.Attributes)+12)
	for k, v := range p.Attributes {
		c[k] = v
	}
	set := func(k, v string) {
		if _, ok := c[k]; !ok && v != "" {
			c[k] = []string{v}
		}
	}
	set("sub", p.Subject)
	// With the SAML default subject (the NameID), the subject is what the
	// assertion's NameID holds.
	set("nameid", p.Subject)
	set("preferred_username", p.Username)
	set("email", p.Email)
	set("name", p.DisplayName)
	set("displayName", p.DisplayName)
	set("given_name", p.GivenName)
	set("family_name", p.FamilyName)
	groups := p.Groups
	if s.cfg.GroupIDs {
		groups = p.GroupIDs
	}
	// Always set, also when empty: a complete list without a group says
	// the person is in none, and the mapping removes what it manages.
	c[s.cfg.GroupClaim] = append([]string{}, groups...)
	if !p.GroupsComplete {
		c[jit.ClaimGroupsIncomplete] = []string{"true"}
	}
	for claim, field := range s.cfg.Claims {
		if v := fieldOf(p, field); len(v) > 0 {
			c[claim] = v
		} else {
			delete(c, claim)
		}
	}
	return providers.Identity{IdP: s.idp, Subject: p.Subject, Claims: c}
}

// fieldOf is a Person field by its name in the config, or a directory
// attribute.
func fieldOf(p directory.Person, field string) []string {
	one := func(v string) []string {
		if v == "" {
			return nil
		}
		return []string{v}
	}
	switch field {
	case "subject":
		return one(p.Subject)
	case "id":
		return one(p.ID)
	case "username":
		return one(p.Username)
	case "email":
		return one(p.Email)
	case "display_name":
		return one(p.DisplayName)
	case "given_name":
		return one(p.GivenName)
	case "family_name":
		return one(p.FamilyName)
	case "groups":
		return p.Groups
	case "group_ids":
		return p.GroupIDs
	}
	return p.Attributes[field]
}

// previewed is a preview and what it learnt on the way.
type previewed struct {
	Item
	known bool // the identity is bound
}

// preview says what admitting the person would do, reading only the
// store: created (an app usher has not provisioned them into), updated
// (the profile's hash differs from the one last applied, or usher took
// them away and this directory says they are back), unchanged, denied
// by the mapping's policy, or refused (the username belongs to another
// identity). It calls no app and writes nothing.
func (s *Syncer) preview(ctx context.Context, p directory.Person, id providers.Identity) previewed {
	pv := previewed{Item: Item{Subject: p.Subject, ID: p.ID, Username: p.Username}}
	failed := func(err error) previewed {
		pv.Outcome, pv.Detail = OutcomeFailed, err.Error()
		return pv
	}
	b, err := s.d.Store.Binding(ctx, s.idp, p.Subject)
	switch {
	case err == nil:
		pv.known = true
	case !errors.Is(err, store.ErrNotFound):
		return failed(fmt.Errorf("read binding: %w", err))
	}
	prof, err := s.d.Mapper.Map(id)
	var denied *jit.DeniedError
	switch {
	case errors.As(err, &denied):
		pv.Outcome, pv.Detail = OutcomeDenied, denied.Reason
		return pv
	case err != nil:
		pv.Outcome, pv.Detail = OutcomeRefused, err.Error()
		return pv
	}
	pv.Username = prof.Username
	if !pv.known && !s.cfg.Automatic {
		pv.Outcome, pv.Detail = OutcomeSkipped, "not known to usher yet, and the directory is not automatic: created at the first login"
		return pv
	}
	owner, err := s.d.Store.BindingByUsername(ctx, prof.Username)
	switch {
	case err == nil && (owner.IdP != s.idp || owner.Subject != p.Subject):
		pv.Outcome, pv.Detail = OutcomeRefused, fmt.Sprintf("the username %s belongs to another identity (%s)", prof.Username, owner.IdP)
		return pv
	case err != nil && !errors.Is(err, store.ErrNotFound):
		return failed(fmt.Errorf("read binding of %s: %w", prof.Username, err))
	}
	switch prof.Provisioning {
	case jit.ProvisionOff:
		pv.Outcome, pv.Detail = OutcomeUnchanged, "the IdP's provisioning is off"
		return pv
	case jit.ProvisionManual:
		same, err := s.recorded(ctx, prof)
		if err != nil {
			return failed(err)
		}
		if same {
			pv.Outcome, pv.Detail = OutcomeUnchanged, "manual provisioning: the recorded profile is current"
		} else {
			pv.Outcome, pv.Detail = OutcomeUpdated, "manual provisioning: the profile is recorded for an admin's sync"
		}
		return pv
	}
	renamed := pv.known && !strings.EqualFold(b.Username, prof.Username)
	pv.Outcome = OutcomeUnchanged
	var created, updated, removed []string
	for _, app := range s.d.Apps {
		if prof.Apps[app] == nil {
			continue
		}
		name := prof.Username
		if renamed {
			name = b.Username // the state follows the person to the new name
		}
		st, err := s.d.Store.AppState(ctx, app, name)
		switch {
		case errors.Is(err, store.ErrNotFound):
			created = append(created, app)
		case err != nil:
			return failed(fmt.Errorf("read %s state: %w", app, err))
		case st.Deprovisioned && s.ours(st):
			updated = append(updated, app+" (back: this directory's removal is withdrawn)")
		case st.Deprovisioned:
			removed = append(removed, app)
		case renamed || st.Hash != prof.Hash(app):
			updated = append(updated, app)
		}
	}
	switch {
	case len(created) > 0:
		pv.Outcome, pv.Apps = OutcomeCreated, append(created, updated...)
	case len(updated) > 0:
		pv.Outcome, pv.Apps = OutcomeUpdated, updated
	case len(removed) > 0:
		pv.Outcome, pv.Detail = OutcomeSkipped, "access was taken away in "+strings.Join(removed, ", ")+" (by a sweep or an admin); it stays so"
	}
	if renamed {
		pv.Detail = "renamed from " + b.Username
	}
	return pv
}

// recorded reports whether the profile recorded for an admin's sync
// (manual provisioning) is prof, app by app.
func (s *Syncer) recorded(ctx context.Context, prof *jit.Profile) (bool, error) {
	b, _, err := s.d.Store.Profile(ctx, s.idp, prof.Subject)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("read recorded profile: %w", err)
	}
	var ds map[string]jit.Desired
	if err := json.Unmarshal(b, &ds); err != nil {
		return false, nil // unreadable: record it again
	}
	n := 0
	for _, app := range s.d.Apps {
		if prof.Apps[app] == nil {
			continue
		}
		n++
		if d, ok := ds[app]; !ok || d.Hash != prof.Hash(app) || d.Username != prof.Username {
			return false, nil
		}
	}
	return n == len(ds), nil
}

// ours reports whether this directory decided an app state's removal
// (through a sweep whose source it is), which it withdraws when the
// person is active again.
func (s *Syncer) ours(st store.AppState) bool {
	return st.DeprovisionedSource == string(jit.SourceDirectory) && st.DeprovisionedActor == s.name
}
