package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/usherhq/usher/admin"
	"github.com/usherhq/usher/dirsync"
)

// cmdSync syncs the configured directories now: everyone (a full pull)
// by default, or one person with --subject; with --dry-run it reports
// what a sync would change and changes nothing.
func cmdSync(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("sync")
	path := fs.String("config", "usher.yaml", "config file")
	only := fs.String("directory", "", "sync only this directory (default: all)")
	dry := fs.Bool("dry-run", false, "report what a sync would change, and change nothing")
	asJSON := fs.Bool("json", false, "print JSON instead of a table")
	subject := fs.String("subject", "", "sync only the person with this login subject (with --directory when several are configured)")
	delta := fs.Bool("delta", false, "sync what changed since the last sync where the directory allows it, not everyone")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	switch {
	case *subject != "" && (*dry || *delta):
		return usageError{errors.New("--subject syncs one person now; it takes neither --dry-run nor --delta"), fs}
	case *subject != "" && admin.FieldProblem(*subject) != "":
		// The admin page's rule for the same action.
		return usageError{fmt.Errorf("--subject %s", admin.FieldProblem(*subject)), fs}
	}
	cfg, err := loadConfig(*path)
	if err != nil {
		return err
	}
	if len(cfg.Directories) == 0 {
		return fmt.Errorf("%s has no directories", *path)
	}
	var configured []string
	for _, d := range cfg.Directories {
		configured = append(configured, d.Name)
	}
	switch {
	case *only != "" && !slices.Contains(configured, *only):
		return usageError{fmt.Errorf("no directory named %q (configured: %s)", *only, strings.Join(configured, ", ")), fs}
	case *subject != "" && *only == "" && len(configured) > 1:
		return usageError{errors.New("--subject needs --directory when several directories are configured"), fs}
	}
	m := &Main{Config: cfg, Log: newLogger(stderr, cfg.Log), Offline: true}
	if err := m.Open(ctx); err != nil {
		return err
	}
	defer m.Close()
	g := m.gen.Load()
	var names []string
	for _, name := range g.syncOrder {
		if *only == "" || name == *only {
			names = append(names, name)
		}
	}
	out := func(v any, table string) error {
		if !*asJSON {
			_, err := fmt.Fprintln(stdout, table)
			return err
		}
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	}
	if *subject != "" {
		it, err := g.syncers[names[0]].SyncPerson(ctx, *subject, "cli")
		if it != nil {
			if perr := out(it, personTable(names[0], it)); perr != nil {
				return perr
			}
		}
		return err
	}
	var errs []error
	for _, name := range names {
		o := dirsync.Options{Full: !*delta, DryRun: *dry, By: "cli"}
		var bar *progressBar
		if f, ok := stderr.(*os.File); ok && isTerminal(f) { // a bar only on a terminal
			bar = &progressBar{w: stderr, name: name}
			o.Progress = bar.update
		}
		res, err := g.syncers[name].RunWith(ctx, o)
		bar.clear()
		if res != nil {
			if perr := out(res, res.Table()); perr != nil {
				return perr
			}
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("directory %s: %w", name, err))
		}
	}
	return errors.Join(errs...)
}

func personTable(dir string, it *dirsync.Item) string {
	var b strings.Builder
	fmt.Fprintf(&b, "directory %s: %s (%s): %s", dir, it.Subject, it.Username, it.Outcome)
	if it.Detail != "" {
		fmt.Fprintf(&b, ": %s", it.Detail)
	}
	for _, c := range it.Changes {
		fmt.Fprintf(&b, "\n  %s", c)
	}
	return b.String()
}

// progressBar draws a sync's progress on one terminal line. The total is
// what the directory's last complete full pull read; without one it
// counts people only.
type progressBar struct {
	w     io.Writer
	name  string
	drawn time.Time
	wide  bool // something is on the line
}

const barWidth = 30

func (b *progressBar) update(p dirsync.Progress) {
	now := time.Now()
	if now.Sub(b.drawn) < 100*time.Millisecond && p.People < p.Expected {
		return // a few redraws a second are enough
	}
	b.drawn = now
	fmt.Fprintf(b.w, "\r\033[K%s", renderProgress(b.name, p))
	b.wide = true
}

// clear removes the bar before the result is printed. A nil bar does
// nothing.
func (b *progressBar) clear() {
	if b != nil && b.wide {
		fmt.Fprint(b.w, "\r\033[K")
	}
}

// renderProgress is one line: "corp full [#####-----] 42% 420/1000 people,
// 3 created, 1 updated, 0 failed".
func renderProgress(name string, p dirsync.Progress) string {
	counts := fmt.Sprintf("%d created, %d updated, %d failed", p.Created, p.Updated, p.Failed)
	if p.Expected <= 0 {
		return fmt.Sprintf("%s %s: %d people, %s", name, p.Kind, p.People, counts)
	}
	frac := min(1, float64(p.People)/float64(p.Expected))
	n := int(frac * barWidth)
	return fmt.Sprintf("%s %s [%s%s] %3.0f%% %d/%d people, %s", name, p.Kind,
		strings.Repeat("#", n), strings.Repeat("-", barWidth-n), 100*frac, p.People, p.Expected, counts)
}
