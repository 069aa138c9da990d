package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/usherhq/usher/config"
	"github.com/usherhq/usher/sweep"
)

// sweepPolicy decodes sweeps[i] strictly and validates it.
func sweepPolicy(cfg *config.Config, i int) (*sweep.Policy, error) {
	raw := cfg.Sweeps[i]
	var p sweep.Policy
	if err := raw.Decode(&p); err != nil {
		return nil, err
	}
	errs := p.Validate()
	idps := map[string]bool{}
	for _, idp := range cfg.IdPs {
		idps[idp.ID] = true
	}
	apps := map[string]bool{}
	for _, a := range cfg.Apps {
		apps[a.Name] = true
	}
	for k, id := range p.IdPs {
		if !idps[id] {
			errs = append(errs, config.FieldErrorf(fmt.Sprintf("idps[%d]", k), "no identity provider %q is configured", id))
		}
	}
	for k, a := range p.Apps {
		if !apps[a] {
			errs = append(errs, config.FieldErrorf(fmt.Sprintf("apps[%d]", k), "no app %q is configured", a))
		}
	}
	if name := p.Sources.Directory; name != "" {
		k := slices.IndexFunc(cfg.Directories, func(d config.Directory) bool { return d.Name == name })
		switch {
		case k < 0:
			errs = append(errs, config.FieldErrorf("sources.directory", "no directory %q is configured under directories", name))
		case len(p.IdPs) == 1 && p.IdPs[0] != cfg.Directories[k].IdP:
			errs = append(errs, config.FieldErrorf("idps", "directory %s holds the people of IdP %s: name that IdP here", name, cfg.Directories[k].IdP))
		}
	}
	for j := range i {
		var other sweep.Policy
		if cfg.Sweeps[j].Decode(&other) == nil && other.Name == p.Name {
			errs = append(errs, config.FieldErrorf("name", "%q is also the name of sweeps[%d]", p.Name, j))
		}
	}
	if errs := raw.Errors(errs); len(errs) > 0 {
		return nil, errs
	}
	return &p, nil
}

// sweepSummary lists the sweeps for usher check: when each runs, whose
// people it covers and what it does.
func sweepSummary(cfg *config.Config) string {
	if len(cfg.Sweeps) == 0 {
		return ""
	}
	var b strings.Builder
	fmt.Fprintf(&b, "\nsweeps (%d):\n", len(cfg.Sweeps))
	w := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
	for i := range cfg.Sweeps {
		p, err := sweepPolicy(cfg, i)
		if err != nil {
			continue // loadConfig refused it already
		}
		when := "by hand only"
		switch {
		case p.Schedule != "":
			when = fmt.Sprintf("cron %q", p.Schedule)
		case p.Every > 0:
			when = "every " + config.ShortDuration(p.Every)
		}
		action := string(p.Action)
		if action == "" {
			action = string(sweep.Deactivate)
		}
		if p.DryRun {
			action += " (dry run)"
		}
		fmt.Fprintf(w, "  %s\t%s\tidps %s\t%s\n", p.Name, when, strings.Join(p.IdPs, ", "), action)
	}
	w.Flush()
	return b.String()
}

// openSweepers builds one Sweeper per configured policy.
func (m *Main) openSweepers(g *generation, cfg *config.Config) error {
	for i := range cfg.Sweeps {
		p, err := sweepPolicy(cfg, i)
		if err != nil {
			return err
		}
		s, err := sweep.New(*p, sweep.Deps{
			Store: m.store, Apps: g.dirs, Remover: g.lifecycle, Log: m.Log, Now: m.Now, Owner: m.owner,
			Directory: g.connectors[p.Sources.Directory], DirectoryScope: g.scopes[p.Sources.Directory],
			OnRun: func(res *sweep.Result, d time.Duration) {
				m.metrics.Sweep(res.Policy, d, res.Planned, res.Applied, res.Blocked)
			},
		})
		if err != nil {
			return fmt.Errorf("sweeps[%d]: %w", i, err) // "sweep <name>: ..."
		}
		g.sweepers[p.Name] = s
		g.sweepOrder = append(g.sweepOrder, p.Name)
	}
	return nil
}

// sweepNames are the configured sweep policies' names, in config order.
func sweepNames(cfg *config.Config) []string {
	var out []string
	for i := range cfg.Sweeps {
		if p, err := sweepPolicy(cfg, i); err == nil {
			out = append(out, p.Name)
		}
	}
	return out
}

// sweepRuns is what `usher sweep --json` prints: one JSON document with
// a run per policy, in config order.
type sweepRuns struct {
	Runs []sweepRun `json:"runs"`
}

// sweepRun is a sweep.Result, or only the policy when the run failed
// before it planned, with the run's error.
type sweepRun struct {
	*sweep.Result
	Policy string `json:"policy"` // also when Result is nil
	Error  string `json:"error,omitempty"`
}

// cmdSweep runs the sweeps now, or with --dry-run prints their plans and
// acts on nothing. The first policy that fails stops the command; the
// runs so far are printed all the same.
func cmdSweep(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("sweep")
	path := fs.String("config", "usher.yaml", "config file")
	dry := fs.Bool("dry-run", false, "print the plan and change nothing")
	asJSON := fs.Bool("json", false, `print one JSON document, {"runs": [...]}, instead of tables`)
	only := fs.String("policy", "", "run only this policy (default: all)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	cfg, err := loadConfig(*path)
	if err != nil {
		return err
	}
	if len(cfg.Sweeps) == 0 {
		return fmt.Errorf("%s has no sweeps", *path)
	}
	if names := sweepNames(cfg); *only != "" && !slices.Contains(names, *only) {
		return usageError{fmt.Errorf("no sweep policy named %q (configured: %s)", *only, strings.Join(names, ", ")), fs}
	}
	m := &Main{Config: cfg, Log: newLogger(stderr, cfg.Log), Offline: true}
	if err := m.Open(ctx); err != nil {
		return err
	}
	defer m.Close()
	out := sweepRuns{Runs: []sweepRun{}}
	var runErr error
	g := m.gen.Load()
	for _, name := range g.sweepOrder {
		if *only != "" && name != *only {
			continue
		}
		res, err := g.sweepers[name].Run(ctx, *dry)
		run := sweepRun{Result: res, Policy: name}
		if err != nil {
			run.Error = err.Error()
		}
		out.Runs = append(out.Runs, run)
		if res != nil && !*asJSON {
			printSweep(stdout, res)
		}
		if err != nil {
			runErr = err // "sweep <name>: ...": the sweeper names itself
			break
		}
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(out); err != nil {
			return err
		}
	}
	return runErr
}

func printSweep(w io.Writer, r *sweep.Result) {
	mode := "applied"
	if r.DryRun {
		mode = "dry run: nothing changed"
	}
	fmt.Fprintf(w, "sweep %s (%s)\n", r.Policy, mode)
	if r.Plan != nil {
		fmt.Fprint(w, r.Plan.Table())
	}
	if r.Blocked {
		fmt.Fprintf(w, "BLOCKED by the safety valve: %s\n", r.BlockReason)
	}
	fmt.Fprintf(w, "planned %d, applied %d, skipped %d, failed %d\n\n", r.Planned, r.Applied, r.Skipped, r.Failed)
}
