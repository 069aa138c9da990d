package admin

import (
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/usherhq/usher/store"
)

// runsShown is how many past sweep runs the pages list.
const runsShown = 20

type sweepsData struct {
	Runs     []store.SweepRun
	Policies []string
	Now      time.Time
}

func (h *handler) sweepsPage(w http.ResponseWriter, r *http.Request) {
	runs, err := h.o.Store.SweepRuns(r.Context(), runsShown)
	if err != nil {
		h.fail(w, r, http.StatusInternalServerError, "The sweep runs could not be read.", err)
		return
	}
	h.render(w, r, http.StatusOK, "sweeps", "Sweeps", sweepsData{Runs: runs, Policies: h.o.Actions.Policies(), Now: h.now()})
}

type planData struct {
	Plan *SweepPlan
	// Ran is set after a run; DryRun tells which kind.
	Ran    bool
	DryRun bool
	Counts map[string]int // items per action
}

func (h *handler) knownPolicy(w http.ResponseWriter, r *http.Request) (string, bool) {
	p := r.PathValue("policy")
	if !slices.Contains(h.o.Actions.Policies(), p) {
		h.fail(w, r, http.StatusNotFound, fmt.Sprintf("No sweep policy %q.", p), nil)
		return "", false
	}
	return p, true
}

// planPage shows what a sweep would do now. PlanSweep is read-only, so a
// GET is safe.
func (h *handler) planPage(w http.ResponseWriter, r *http.Request) {
	policy, ok := h.knownPolicy(w, r)
	if !ok {
		return
	}
	plan, err := h.o.Actions.PlanSweep(r.Context(), policy)
	if err != nil {
		h.fail(w, r, http.StatusInternalServerError, "The plan could not be computed: "+err.Error(), err)
		return
	}
	h.render(w, r, http.StatusOK, "plan", "Sweep plan: "+policy, newPlanData(plan, false, false))
}

func (h *handler) runSweep(w http.ResponseWriter, r *http.Request) {
	policy, ok := h.knownPolicy(w, r)
	if !ok {
		return
	}
	dryRun, err := dryRunParam(r)
	if err != nil {
		h.fail(w, r, http.StatusBadRequest, err.Error(), nil)
		return
	}
	plan, err := h.sweep(r, policy, dryRun)
	if err != nil && !blocked(plan) {
		h.fail(w, r, http.StatusBadGateway, "The sweep failed: "+err.Error(), err)
		return
	}
	h.render(w, r, http.StatusOK, "plan", "Sweep run: "+policy, newPlanData(plan, true, dryRun))
}

func (h *handler) sweep(r *http.Request, policy string, dryRun bool) (*SweepPlan, error) {
	actor := principalOf(r).Actor
	h.log.Info("admin sweep", "actor", actor, "policy", policy, "dry_run", dryRun)
	plan, err := h.o.Actions.RunSweep(r.Context(), policy, dryRun, actor)
	if err != nil {
		return plan, fmt.Errorf("admin: sweep %s: %w", policy, err)
	}
	return plan, nil
}

// dryRunParam reads dry_run from the form or query. A run changes apps,
// so it must be asked for explicitly: only "false" means for real.
func dryRunParam(r *http.Request) (bool, error) {
	s := r.FormValue("dry_run")
	if s == "" {
		return false, fmt.Errorf("dry_run must be true or false")
	}
	b, err := strconv.ParseBool(s)
	if err != nil {
		return false, fmt.Errorf("dry_run must be true or false, not %q", s)
	}
	return b, nil
}

// blocked tells a safety-valve refusal, which the page shows as the plan
// it refused, from a failure.
func blocked(p *SweepPlan) bool { return p != nil && p.Blocked }

func newPlanData(p *SweepPlan, ran, dryRun bool) planData {
	if p == nil {
		p = &SweepPlan{}
	}
	d := planData{Plan: p, Ran: ran, DryRun: dryRun, Counts: p.Counts}
	if d.Counts == nil {
		d.Counts = map[string]int{}
		for _, it := range p.Items {
			d.Counts[it.Action]++
		}
	}
	return d
}
