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

	"github.com/usherhq/usher/jit"
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
	// Items are the outcomes of the items handled in this call, the
	// first MaxShown of them; Omitted counts the others.
	Items   []Outcome `json:"items,omitempty"`
	Omitted int       `json:"omitted,omitempty"`
	Plan    *Plan     `json:"plan,omitempty"`

	// unrecorded counts the items changed in the app whose bookkeeping
	// failed: the run stays open so the next Run finishes them.
	unrecorded int
}

// add counts an outcome, and lists it while fewer than shown are.
func (r *Result) add(o Outcome, shown int) {
	switch o.Outcome {
	case "applied":
		r.Applied++
	case "skipped":
		r.Skipped++
	default:
		r.Failed++
	}
	if o.unrecorded {
		r.unrecorded++
	}
	if len(r.Items) < shown {
		r.Items = append(r.Items, o)
	} else {
		r.Omitted++
	}
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

// bookkeepingTimeout bounds the store writes after a decision; they run
// even when the run is being cancelled, so a change is never left
// unrecorded.
const bookkeepingTimeout = 30 * time.Second

// applyPage is how many planned items apply reads from the store at once.
const applyPage = 500

// apply runs the action items of run res.RunID that are not done yet,
// reading them from the store a page at a time. It stops starting items
// when ctx ends; an error means the plan could not be read.
func (s *Sweeper) apply(ctx context.Context, res *Result) error {
	var mu sync.Mutex
	after := int64(0)
	for ctx.Err() == nil {
		page, err := s.d.Store.SweepItems(ctx, res.RunID, store.SweepItemFilter{After: after, Limit: s.applyPage, Pending: true})
		if err != nil {
			return fmt.Errorf("read the plan after item %d: %w", after, err)
		}
		todo := make([]Item, 0, len(page))
		for _, row := range page {
			var it Item
			if err := json.Unmarshal(row.Data, &it); err != nil {
				// Not this version's item: left for the next plan, which
				// finds the person again if they are still gone.
				s.d.Log.Error("sweep: planned item unreadable", "run", res.RunID, "item", row.Key, "err", err)
				res.add(Outcome{Outcome: "failed", Detail: fmt.Sprintf("planned item %d (%s) unreadable: %v", row.Seq, row.Key, err)}, s.shown)
				continue
			}
			if it.Action != Skip {
				todo = append(todo, it)
			}
		}
		s.forEach(ctx, todo, func(ctx context.Context, _ int, it Item) {
			o := s.applyItem(ctx, res.RunID, it)
			mu.Lock()
			defer mu.Unlock()
			res.add(o, s.shown)
		})
		if len(page) < s.applyPage {
			return nil
		}
		after = page[len(page)-1].Seq
	}
	return nil
}

func (s *Sweeper) applyItem(ctx context.Context, run int64, it Item) Outcome {
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
	case as.Deprovisioned && s.ours(as, run):
		// This run decided it and stopped before the rest: finish it. The
		// removal is idempotent.
		return s.remove(ctx, run, it, log)
	case as.Deprovisioned:
		return skip("already deprovisioned: " + as.DeprovisionedReason)
	}
	if g := s.protectedUser(it.Username); g != "" {
		return skip("protected user (" + g + ")")
	}
	f, err := s.pointFacts(ctx, b, it)
	if err != nil {
		return failed(err)
	}
	if rule, _ := s.evaluate(f, s.d.Now()); rule == "" {
		return skip("no source says the user is gone any more")
	}
	if len(s.p.ProtectedGroups) > 0 {
		groups, err := s.d.Apps[it.App].UserGroups(ctx, it.Username)
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
	return s.remove(ctx, run, it, log)
}

// ours reports whether this policy's run decided the app state's
// removal: under the sweep's name, or under the directory's for the
// people its source found gone.
func (s *Sweeper) ours(as store.AppState, run int64) bool {
	if as.DeprovisionedRun != run {
		return false
	}
	switch jit.Source(as.DeprovisionedSource) {
	case jit.SourceSweep:
		return as.DeprovisionedActor == s.p.Name
	case jit.SourceDirectory:
		return s.p.Sources.Directory != "" && as.DeprovisionedActor == s.p.Sources.Directory
	}
	return false
}

// cause is why the item's removal happens. A leaver the directory found
// is removed in the directory's name, so that the directory's own sync
// brings the person back when they are active there again; every other
// rule is the sweep's decision, which only an admin withdraws.
func (s *Sweeper) cause(run int64, it Item) jit.Cause {
	c := jit.BySweep(s.p.Name, run, it.Reason+" ["+it.Rule+"]")
	if it.Rule == RuleDirectory {
		c = jit.ByDirectory(s.p.Sources.Directory, run, it.Reason+" (sweep "+s.p.Name+")")
	}
	c.IdP = it.IdP
	return c
}

// remove hands the item to the lifecycle, which records the decision,
// ends the sessions and changes the app (or queues the change), then
// records the item done. The bookkeeping runs even when ctx is being
// cancelled: the decision has been made.
func (s *Sweeper) remove(ctx context.Context, run int64, it Item, log *slog.Logger) Outcome {
	cause := s.cause(run, it)
	rm := jit.Removal{IdP: it.IdP, Subject: it.Subject, Apps: []string{it.App}, Action: jit.RemoveAction(it.Action),
		LicenceGroups: s.p.LicenceGroups}
	outs, err := s.d.Remover.Remove(ctx, rm, cause)
	unfinished := false
	for _, o := range outs {
		if o.Err != nil && !o.Queued {
			unfinished = true
		}
	}
	if err != nil && (!decided(outs) || unfinished) {
		if ctx.Err() == nil {
			log.Error("sweep: item failed", "err", err)
		}
		// Decided but neither applied nor queued: the run stays open and
		// the next Run finishes it (the re-check finds this run's
		// decision). Not decided: the next run plans it again.
		return Outcome{Item: it, Outcome: "failed", Detail: err.Error(), unrecorded: decided(outs)}
	}
	bctx, cancel := bookkeeping(ctx)
	defer cancel()
	if err := s.d.Store.MarkSwept(bctx, run, it.key()); err != nil {
		log.Error("sweep: record progress", "err", err)
		return Outcome{Item: it, Outcome: "failed", Detail: err.Error(), unrecorded: true}
	}
	if err != nil {
		// The app refused; the retry queue keeps trying. Shown as failed
		// so that an admin looks.
		log.Error("sweep: the app refused the change; it stays queued", "err", err)
		return Outcome{Item: it, Outcome: "failed", Detail: err.Error() + " (queued for retry)"}
	}
	detail := ""
	for _, o := range outs {
		switch {
		case o.Queued:
			detail = "queued: " + it.App + " is unavailable; the retry queue finishes it"
		case o.Skipped != "":
			detail = o.Skipped
		}
	}
	return Outcome{Item: it, Outcome: "applied", Detail: detail}
}

// decided reports whether the lifecycle got as far as recording the
// decision (it returns outcomes only then).
func decided(outs []jit.RemoveOutcome) bool {
	for _, o := range outs {
		if o.Skipped == "" {
			return true
		}
	}
	return false
}

func bookkeeping(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), bookkeepingTimeout)
}

// pointFacts re-reads the evidence about one identity. The directory
// pull is not repeated per user: the plan's finding stands.
func (s *Sweeper) pointFacts(ctx context.Context, b store.Binding, it Item) (facts, error) {
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
		return f, nil // no pushed record: SCIM says nothing about them
	case err != nil:
		return f, err
	}
	f.scim = s.scimFact(u)
	return f, nil
}
