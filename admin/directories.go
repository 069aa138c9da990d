package admin

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"

	"github.com/usherhq/usher/dirsync"
)

// Directory is a configured IdP directory, as the page lists it.
type Directory struct {
	Name      string `json:"name"`
	Type      string `json:"type"`
	IdP       string `json:"idp"`
	Schedule  string `json:"schedule"` // "cron 0 * * * *", "every 15m", "by hand only"
	Automatic bool   `json:"automatic"`
}

// DirectoryActions are the directory syncs behind the Directories page
// and the user page's "sync from the directory". The admin package calls
// the ones that change something only on POST; actor is "admin:token" or
// "admin:<username>".
type DirectoryActions interface {
	// Directories lists the configured directories, in config order.
	Directories() []Directory
	// DirectoryRuns are a directory's last recorded runs, newest first
	// (without their people), and the run in progress on this replica,
	// nil when none.
	DirectoryRuns(ctx context.Context, name string) ([]dirsync.Result, *dirsync.Progress, error)
	// StartSync starts a full sync of the directory in the background.
	// dirsync.ErrBusy when one is running.
	StartSync(ctx context.Context, name, actor string) error
	// DryRunSync computes what a full sync would do, changing nothing.
	DryRunSync(ctx context.Context, name, actor string) (*dirsync.Result, error)
	// DirectoryOf names the directory a person of idp is synced from, ""
	// when the IdP has none.
	DirectoryOf(idp string) string
	// SyncPerson reads one person from their IdP's directory and admits
	// them now.
	SyncPerson(ctx context.Context, idp, subject, actor string) (*dirsync.Item, error)
}

type directoryView struct {
	Directory
	Runs    []dirsync.Result
	Running *dirsync.Progress
	Err     string
}

type directoriesData struct {
	Directories []directoryView
	Started     string // the directory whose sync was just started
}

// directoryViews gathers each directory's runs; a directory whose runs
// cannot be read says why and the others still show.
func (h *handler) directoryViews(ctx context.Context) []directoryView {
	var out []directoryView
	for _, d := range h.dirs().Directories() {
		v := directoryView{Directory: d}
		runs, running, err := h.dirs().DirectoryRuns(ctx, d.Name)
		if err != nil {
			h.log.Error("admin: directory runs", "directory", d.Name, "err", err)
			v.Err = err.Error()
		}
		if len(runs) > runsShown {
			runs = runs[:runsShown]
		}
		v.Runs, v.Running = runs, running
		out = append(out, v)
	}
	return out
}

func (h *handler) dirs() DirectoryActions {
	if h.o.Directories == nil {
		return noDirectories{}
	}
	return h.o.Directories
}

func (h *handler) directoriesPage(w http.ResponseWriter, r *http.Request) {
	h.render(w, r, http.StatusOK, "directories", "Directories", directoriesData{Directories: h.directoryViews(r.Context())})
}

func (h *handler) knownDirectory(w http.ResponseWriter, r *http.Request) (string, bool) {
	name := r.PathValue("name")
	if !slices.ContainsFunc(h.dirs().Directories(), func(d Directory) bool { return d.Name == name }) {
		h.fail(w, r, http.StatusNotFound, fmt.Sprintf("No directory %q.", name), nil)
		return "", false
	}
	return name, true
}

// startSync is "sync everyone now": the full sync runs in the background
// (it can take minutes on a large directory) and the page shows its
// progress.
func (h *handler) startSync(w http.ResponseWriter, r *http.Request) {
	name, ok := h.knownDirectory(w, r)
	if !ok {
		return
	}
	actor := principalOf(r).Actor
	err := h.dirs().StartSync(r.Context(), name, actor)
	switch {
	case errors.Is(err, dirsync.ErrBusy):
		h.fail(w, r, http.StatusConflict, "A sync of "+name+" is already running.", nil)
		return
	case err != nil:
		h.fail(w, r, http.StatusInternalServerError, "The sync could not start: "+err.Error(), err)
		return
	}
	h.log.Info("admin directory sync", "actor", actor, "directory", name)
	if isAPI(r) {
		writeJSON(w, http.StatusAccepted, map[string]string{"status": "started", "directory": name})
		return
	}
	h.render(w, r, http.StatusOK, "directories", "Directories", directoriesData{Directories: h.directoryViews(r.Context()), Started: name})
}

// dryRun previews a full sync. It changes nothing, but it reads the
// whole directory (many API calls against the IdP's rate limits), so it
// is a POST: a prefetched link must not start one.
func (h *handler) dryRun(w http.ResponseWriter, r *http.Request) {
	name, ok := h.knownDirectory(w, r)
	if !ok {
		return
	}
	actor := principalOf(r).Actor
	h.log.Info("admin directory dry run", "actor", actor, "directory", name)
	res, err := h.dirs().DryRunSync(r.Context(), name, actor)
	if res == nil {
		if errors.Is(err, dirsync.ErrBusy) {
			h.fail(w, r, http.StatusConflict, "A sync of "+name+" is running; try the dry run when it ends.", nil)
			return
		}
		h.fail(w, r, http.StatusBadGateway, "The dry run failed: "+errText(err), err)
		return
	}
	if isAPI(r) {
		writeJSON(w, http.StatusOK, res)
		return
	}
	h.render(w, r, http.StatusOK, "dirrun", "Dry run: "+name, res)
}

// userDirectorySync is the user page's "sync from the directory".
func (h *handler) userDirectorySync(w http.ResponseWriter, r *http.Request) {
	idp, subject, ok := h.identity(w, r)
	if !ok {
		return
	}
	if h.dirs().DirectoryOf(idp) == "" {
		h.fail(w, r, http.StatusNotFound, "IdP "+idp+" has no directory to sync from.", nil)
		return
	}
	actor := principalOf(r).Actor
	it, err := h.dirs().SyncPerson(r.Context(), idp, subject, actor)
	h.log.Info("admin directory sync of one person", "actor", actor, "idp", idp, "subject", subject, "err", err)
	if err != nil && it == nil {
		status := http.StatusBadGateway
		if errors.Is(err, dirsync.ErrNotInDirectory) {
			status = http.StatusNotFound
		}
		h.fail(w, r, status, "The directory sync failed: "+err.Error(), err)
		return
	}
	if isAPI(r) {
		status := http.StatusOK
		if err != nil {
			status = http.StatusBadGateway
		}
		writeJSON(w, status, it)
		return
	}
	d, terr := h.timeline(r.Context(), idp, subject)
	if terr != nil {
		h.fail(w, r, statusOf(terr, http.StatusInternalServerError), "Synced, but the timeline could not be read.", terr)
		return
	}
	head := fmt.Sprintf("from directory %s: %s", d.Directory, it.Outcome)
	if it.Detail != "" {
		head += ": " + it.Detail
	}
	d.Did, d.Changes = "Directory sync", append([]string{head}, it.Changes...)
	h.render(w, r, http.StatusOK, "user", "User "+displayName(d), d)
}

func (h *handler) apiDirectories(w http.ResponseWriter, r *http.Request) {
	type dirJSON struct {
		Directory
		Running *dirsync.Progress `json:"running,omitempty"`
		Runs    []dirsync.Result  `json:"runs"`
		Error   string            `json:"error,omitempty"`
	}
	out := struct {
		Directories []dirJSON `json:"directories"`
	}{Directories: []dirJSON{}}
	for _, v := range h.directoryViews(r.Context()) {
		d := dirJSON{Directory: v.Directory, Running: v.Running, Runs: v.Runs, Error: v.Err}
		if d.Runs == nil {
			d.Runs = []dirsync.Result{}
		}
		out.Directories = append(out.Directories, d)
	}
	writeJSON(w, http.StatusOK, out)
}

func errText(err error) string {
	if err == nil {
		return "no result"
	}
	return err.Error()
}

// noDirectories stands in when no directory actions are wired.
type noDirectories struct{}

func (noDirectories) Directories() []Directory { return nil }
func (noDirectories) DirectoryRuns(context.Context, string) ([]dirsync.Result, *dirsync.Progress, error) {
	return nil, nil, nil
}
func (noDirectories) StartSync(context.Context, string, string) error { return errNoActions }
func (noDirectories) DryRunSync(context.Context, string, string) (*dirsync.Result, error) {
	return nil, errNoActions
}
func (noDirectories) DirectoryOf(string) string { return "" }
func (noDirectories) SyncPerson(context.Context, string, string, string) (*dirsync.Item, error) {
	return nil, errNoActions
}
