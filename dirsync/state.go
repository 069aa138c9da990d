package dirsync

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/usherhq/usher/store"
)

// What a directory's sync keeps lives in the store's blobs, under
// directory/<name>/: "delta" (the delta token, the scope it was taken
// under, the last complete full pull) and "runs" (the last runs'
// summaries, newest first). Only the lease holder writes them.

// runsKept is how many run summaries the history keeps.
const runsKept = 20

// state is the delta bookkeeping.
type state struct {
	Token string `json:"token,omitempty"`
	// Scope is Config.Scope when the token was taken.
	Scope    string    `json:"scope,omitempty"`
	LastFull time.Time `json:"last_full,omitzero"`
}

func (s *Syncer) key(what string) string { return "directory/" + s.name + "/" + what }

func (s *Syncer) loadState(ctx context.Context) (state, error) {
	var st state
	b, _, err := s.d.Store.Blob(ctx, s.key("delta"))
	switch {
	case errors.Is(err, store.ErrNotFound):
		return st, nil
	case err != nil:
		return st, fmt.Errorf("dirsync %s: read state: %w", s.name, err)
	}
	if err := json.Unmarshal(b, &st); err != nil {
		// A damaged token costs a full pull, nothing more.
		s.d.Log.Warn("dirsync: unreadable delta state; pulling in full", "err", err)
		return state{}, nil
	}
	return st, nil
}

func (s *Syncer) saveState(ctx context.Context, st state) error {
	b, err := json.Marshal(st)
	if err == nil {
		err = s.d.Store.PutBlob(ctx, s.key("delta"), b)
	}
	if err != nil {
		return fmt.Errorf("dirsync %s: save state: %w", s.name, err)
	}
	return nil
}

// Runs are the directory's last recorded runs, newest first, without
// their people.
func (s *Syncer) Runs(ctx context.Context) ([]Result, error) { return s.loadRuns(ctx) }

func (s *Syncer) loadRuns(ctx context.Context) ([]Result, error) {
	b, _, err := s.d.Store.Blob(ctx, s.key("runs"))
	switch {
	case errors.Is(err, store.ErrNotFound):
		return nil, nil
	case err != nil:
		return nil, fmt.Errorf("dirsync %s: read runs: %w", s.name, err)
	}
	var runs []Result
	if err := json.Unmarshal(b, &runs); err != nil {
		s.d.Log.Warn("dirsync: unreadable run history; starting it again", "err", err)
		return nil, nil
	}
	return runs, nil
}

func (s *Syncer) recordRun(ctx context.Context, runs []Result, r *Result) error {
	runs = append([]Result{r.summary()}, runs...)
	if len(runs) > runsKept {
		runs = runs[:runsKept]
	}
	b, err := json.Marshal(runs)
	if err == nil {
		err = s.d.Store.PutBlob(ctx, s.key("runs"), b)
	}
	if err != nil {
		return fmt.Errorf("dirsync %s: record run %d: %w", s.name, r.Run, err)
	}
	return nil
}

// nextRun numbers the next run after the newest recorded one.
func nextRun(runs []Result) int64 {
	var n int64
	for _, r := range runs {
		n = max(n, r.Run)
	}
	return n + 1
}

// lastFullPeople is how many people the newest complete full pull read,
// the progress bar's expectation; 0 when none is recorded.
func lastFullPeople(runs []Result) int {
	for _, r := range runs {
		if r.Kind == KindFull && r.Complete {
			return r.People
		}
	}
	return 0
}
