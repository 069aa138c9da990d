package sweep

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/usherhq/usher/store"
	"github.com/usherhq/usher/targets"
)

// Result is the outcome of applying a plan.
type Result struct {
	RunID       int64  `json:"run_id"`
	Policy      string `json:"policy"`
	DryRun      bool   `json:"dry_run"`
	Resumed     bool   `json:"resumed"`
	Blocked     bool   `json:"blocked"`
	BlockReason string `json:"block_reason,omitempty"`
	Planned     int    `json:"planned"`
	Applied     int    `json:"applied"`
	Skipped     int    `json:"skipped"` // left alone at the re-check
	Failed      int    `json:"failed"`
	// Items are the outcomes of the items handled in this call.
	Items []Outcome `json:"items,omitempty"`
	Plan  *Plan     `json:"plan,omitempty"`
}

// Outcome is what happened to one plan item.
type Outcome struct {
	Item
	Outcome string `json:"outcome"` // "applied", "skipped", "failed"
	Detail  string `json:"detail,omitempty"`
	// unrecorded: the app changed but the bookkeeping failed; the run
	// stays open so the next Run finishes it.
	unrecorded bool
}

// bookkeepingTimeout bounds the store writes after an app change; they run
// even when the run is being cancelled, so a change is never left
// unrecorded.
const bookkeepingTimeout = 30 * time.Second

// apply runs the plan's action items that are not done yet.
func (s *Sweeper) apply(ctx context.Context, res *Result, done map[string]bool) {
	var todo []Item
	for _, it := range res.Plan.Items {
		if it.Action != Skip && !done[it.key()] {
			todo = append(todo, it)
		}
	}
	var mu sync.Mutex
	rc := &recheck{scimKnown: map[string]bool{}}
	s.forEach(ctx, todo, func(ctx context.Context, _ int, it Item) {
		o := s.applyItem(ctx, res.RunID, it, rc)
		mu.Lock()
		defer mu.Unlock()
		res.Items = append(res.Items, o)
		switch o.Outcome {
		case "applied":
			res.Applied++
		case "skipped":
			res.Skipped++
		default:
			res.Failed++
		}
	})
}

// marker prefixes DeprovisionedReason, so a resumed run recognises the
// users it already changed.
func (s *Sweeper) marker(run int64) string {
	return fmt.Sprintf("sweep:%s run %d: ", s.p.Name, run)
}

// recheck caches, for one apply, what is the same for every user of an
// IdP.
type recheck struct {
	mu sync.Mutex
	// scimKnown: whether the IdP's SCIM store holds users. Counting them
	// once per apply, not per user, keeps the re-check cheap.
	scimKnown map[string]bool
}

func (rc *recheck) known(ctx context.Context, st Store, idp string) (bool, error) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if k, ok := rc.scimKnown[idp]; ok {
		return k, nil
	}
	_, total, err := st.SCIMUsers(ctx, idp, 0, 0)
	if err != nil {
		return false, err
	}
	rc.scimKnown[idp] = total > 0
	return total > 0, nil
}

func (s *Sweeper) applyItem(ctx context.Context, run int64, it Item, rc *recheck) Outcome {
	log := s.d.Log.With("run", run, "app", it.App, "user", it.Username, "idp", it.IdP, "rule", it.Rule)
	st := s.d.Store
	out := func(outcome, detail string) Outcome { return Outcome{Item: it, Outcome: outcome, Detail: detail} }
	failed := func(err error) Outcome {
		if ctx.Err() == nil {
			log.Error("sweep: item failed", "err", err)
		}
		return out("failed", err.Error())
	}
	skip := func(why string) Outcome {
		log.Info("sweep: skipped at re-check", "why", why)
		bctx, cancel := bookkeeping(ctx)
		defer cancel()
		if err := st.MarkSwept(bctx, run, it.key()); err != nil {
			return failed(err)
		}
		return out("skipped", why)
	}

	// Re-check: the plan may be old (a resumed run) and logins, SCIM and
	// admins change things meanwhile.
	b, err := st.Binding(ctx, it.IdP, it.Subject)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return skip("identity no longer bound")
	case err != nil:
		return failed(err)
	case !strings.EqualFold(b.Username, it.Username):
		return skip("identity now bound to " + b.Username)
	}
	as, err := st.AppState(ctx, it.App, it.Username)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return skip("no longer provisioned in " + it.App)
	case err != nil:
		return failed(err)
	case as.Deprovisioned && strings.HasPrefix(as.DeprovisionedReason, s.marker(run)):
		// This run changed the app and crashed before recording the rest.
		return s.finish(ctx, run, it, as, log)
	case as.Deprovisioned:
		return skip("already deprovisioned: " + as.DeprovisionedReason)
	}
	if g := s.protectedUser(it.Username); g != "" {
		return skip("protected user (" + g + ")")
	}
	f, err := s.pointFacts(ctx, b, it, rc)
	if err != nil {
		return failed(err)
	}
	if rule, _ := s.evaluate(f, s.d.Now()); rule == "" {
		return skip("no source says the user is gone any more")
	}
	dir := s.d.Apps[it.App]
	if len(s.p.ProtectedGroups) > 0 {
		groups, err := dir.UserGroups(ctx, it.Username)
		switch {
		case errors.Is(err, targets.ErrNotFound):
			return skip("not in " + it.App)
		case err != nil:
			return failed(err)
		}
		if g := s.protectedGroup(groups); g != "" {
			return skip("member of protected group " + g)
		}
	}

	if err := s.act(ctx, dir, it); err != nil {
		if errors.Is(err, targets.ErrNotFound) {
			return skip("not in " + it.App)
		}
		s.audit(ctx, run, it, "error", err.Error(), log)
		return failed(err)
	}
	as.Deprovisioned = true
	as.DeprovisionedAt = s.d.Now()
	as.DeprovisionedReason = s.marker(run) + it.Reason
	bctx, cancel := bookkeeping(ctx)
	defer cancel()
	if err := st.PutAppState(bctx, as); err != nil {
		// The app changed but a login could undo it: say so loudly.
		log.Error("sweep: app changed but not recorded as deprovisioned", "err", err)
		o := out("failed", err.Error())
		o.unrecorded = true
		return o
	}
	return s.finish(ctx, run, it, as, log)
}

// finish revokes sessions, audits and records the item done. It runs
// even when ctx is being cancelled: the app has already changed.
func (s *Sweeper) finish(ctx context.Context, run int64, it Item, as store.AppState, log *slog.Logger) Outcome {
	bctx, cancel := bookkeeping(ctx)
	defer cancel()
	var errs []error
	if err := s.d.Revoke(bctx, it.IdP, it.Subject, as.DeprovisionedAt); err != nil {
		errs = append(errs, fmt.Errorf("revoke sessions: %w", err))
	}
	if err := s.audit(bctx, run, it, "ok", "", log); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		// Not marked done: the re-check finds the marker and retries this.
		log.Error("sweep: bookkeeping failed", "err", err)
		return Outcome{Item: it, Outcome: "failed", Detail: err.Error(), unrecorded: true}
	}
	if err := s.d.Store.MarkSwept(bctx, run, it.key()); err != nil {
		log.Error("sweep: record progress", "err", err)
		return Outcome{Item: it, Outcome: "failed", Detail: err.Error(), unrecorded: true}
	}
	return Outcome{Item: it, Outcome: "applied"}
}

func bookkeeping(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), bookkeepingTimeout)
}

// audit appends the item's event; failures are returned and logged.
func (s *Sweeper) audit(ctx context.Context, run int64, it Item, outcome, errText string, log *slog.Logger) error {
	detail, _ := json.Marshal(struct {
		Run    int64  `json:"run"`
		Rule   string `json:"rule"`
		Reason string `json:"reason"`
		Error  string `json:"error,omitempty"`
	}{run, it.Rule, it.Reason, errText})
	ev := store.Event{Time: s.d.Now(), Action: "sweep." + string(it.Action), IdP: it.IdP, Subject: it.Subject,
		Username: it.Username, App: it.App, Actor: "sweep:" + s.p.Name, Outcome: outcome, Detail: string(detail)}
	if err := s.d.Store.Append(ctx, ev); err != nil {
		log.Error("sweep: audit", "err", err)
		return fmt.Errorf("audit: %w", err)
	}
	return nil
}

// act makes the change in the app.
func (s *Sweeper) act(ctx context.Context, dir targets.Target, it Item) error {
	switch it.Action {
	case Deactivate:
		return dir.SetActive(ctx, it.Username, false)
	case RemoveManagedGroups:
		ms, err := s.d.Store.Managed(ctx, it.App, it.Username)
		if err != nil {
			return err
		}
		var groups []string
		for _, m := range ms {
			if err := dir.RemoveFromGroup(ctx, it.Username, m.Group); err != nil && !errors.Is(err, targets.ErrGroupNotFound) {
				return err
			}
			groups = append(groups, m.Group)
		}
		if len(groups) == 0 {
			return nil
		}
		return s.d.Store.RemoveManaged(ctx, it.App, it.Username, groups...)
	case RemoveLicenceGroup:
		g := s.p.LicenceGroups[it.App]
		if g == "" {
			return fmt.Errorf("no licence group configured for %s", it.App)
		}
		err := dir.RemoveFromGroup(ctx, it.Username, g)
		if errors.Is(err, targets.ErrGroupNotFound) {
			return nil
		}
		return err
	case Delete:
		d, ok := dir.(targets.Deleter)
		if !ok {
			return fmt.Errorf("%s cannot delete users", it.App)
		}
		return d.DeleteUser(ctx, it.Username)
	}
	return fmt.Errorf("unknown action %q", it.Action)
}

// pointFacts re-reads the evidence about one identity. The directory
// pull is not repeated per user: the plan's finding stands.
func (s *Sweeper) pointFacts(ctx context.Context, b store.Binding, it Item, rc *recheck) (facts, error) {
	f := facts{b: b}
	st := s.d.Store
	src := s.p.Sources
	if it.Rule == RuleDirectory {
		f.dirGone = it.Reason
	}
	if src.AccessExpiry {
		var err error
		if f.expiry, err = st.AccessExpiry(ctx, b.IdP, b.Subject); err != nil {
			return f, err
		}
	}
	if !src.SCIM && src.EndDateClaim == "" {
		return f, nil
	}
	var (
		u   store.SCIMUser
		err error
	)
	if it.SCIMID != "" {
		u, err = st.SCIMUser(ctx, b.IdP, it.SCIMID)
	} else {
		// By the login subject the person is bound to: the SCIM userName
		// is often an e-mail where the app username is not.
		u, err = st.FindSCIMUser(ctx, b.IdP, "subject", b.Subject)
	}
	switch {
	case errors.Is(err, store.ErrNotFound):
		// Deleted, or the IdP never pushed: only the count tells.
		f.scimKnown, err = rc.known(ctx, st, b.IdP)
		return f, err
	case err != nil:
		return f, err
	}
	f.scim = s.scimFact(u)
	f.scimKnown = true
	return f, nil
}
