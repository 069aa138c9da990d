package dirsync

import (
	"bytes"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/usherhq/usher/directory"
)

// Kinds of run.
const (
	KindFull  = "full"
	KindDelta = "delta"
)

// Outcome is what a sync did (or, in a dry run, would do) with a person.
type Outcome string

const (
	// OutcomeCreated: provisioned into an app for the first time.
	OutcomeCreated Outcome = "created"
	// OutcomeUpdated: the profile changed since it was last applied.
	OutcomeUpdated Outcome = "updated"
	// OutcomeUnchanged: the profile is the one last applied; no app call.
	OutcomeUnchanged Outcome = "unchanged"
	// OutcomeQueued: an app was down; the retry queue finishes it.
	OutcomeQueued Outcome = "queued"
	// OutcomeDenied: the IdP's access policy refuses the person.
	OutcomeDenied Outcome = "denied"
	// OutcomeRefused: the person cannot be bound (the username belongs
	// to another identity, no usable username, adoption refused).
	OutcomeRefused Outcome = "refused"
	// OutcomeFailed: a technical failure; the next sync tries again.
	OutcomeFailed Outcome = "failed"
	// OutcomeSkipped: left alone on purpose; Detail says why.
	OutcomeSkipped Outcome = "skipped"
	// OutcomeLeaver: the directory says the person has left; a sweep
	// with the directory as its source takes their access away.
	OutcomeLeaver Outcome = "leaver"
)

// Item is one person's outcome.
type Item struct {
	Subject  string  `json:"subject"`
	ID       string  `json:"id,omitempty"`
	Username string  `json:"username,omitempty"`
	Outcome  Outcome `json:"outcome"`
	// Apps are the apps the person was (or would be) created in or
	// updated in.
	Apps    []string `json:"apps,omitempty"`
	Detail  string   `json:"detail,omitempty"`
	Changes []string `json:"changes,omitempty"`

	fastPath bool // an app skipped the person by the fast path
	manual   bool // recorded for an admin's sync, not applied
}

// Result is one run: what it read and what it did with each person.
type Result struct {
	// Run numbers the directory's recorded runs; 0 for a dry run.
	Run       int64     `json:"run"`
	Directory string    `json:"directory"`
	IdP       string    `json:"idp"`
	Kind      string    `json:"kind"`
	DryRun    bool      `json:"dry_run"`
	By        string    `json:"by,omitempty"`
	Started   time.Time `json:"started"`
	Finished  time.Time `json:"finished"`
	// Complete: a full pull read the whole scope, or a delta reached
	// the end of the changes.
	Complete bool   `json:"complete"`
	Error    string `json:"error,omitempty"`
	Note     string `json:"note,omitempty"`
	// People read, and distinct groups among them.
	People    int `json:"people"`
	Groups    int `json:"groups"`
	Created   int `json:"created"`
	Updated   int `json:"updated"`
	Unchanged int `json:"unchanged"`
	Queued    int `json:"queued"`
	Denied    int `json:"denied"`
	Refused   int `json:"refused"`
	Failed    int `json:"failed"`
	Skipped   int `json:"skipped"`
	Leavers   int `json:"leavers"`
	// Items are the people of every outcome but unchanged, at most
	// maxItems of them; ItemsLeftOut counts the rest.
	Items        []Item `json:"items,omitempty"`
	ItemsLeftOut int    `json:"items_left_out,omitempty"`

	groups map[string]bool
}

// add counts one person's outcome.
func (r *Result) add(it Item, p directory.Person) {
	r.People++
	if r.groups == nil {
		r.groups = map[string]bool{}
	}
	for _, g := range p.GroupIDs {
		r.groups[g] = true
	}
	if len(p.GroupIDs) == 0 {
		for _, g := range p.Groups {
			r.groups[g] = true
		}
	}
	switch it.Outcome {
	case OutcomeCreated:
		r.Created++
	case OutcomeUpdated:
		r.Updated++
	case OutcomeUnchanged:
		r.Unchanged++
		return
	case OutcomeQueued:
		r.Queued++
	case OutcomeDenied:
		r.Denied++
	case OutcomeRefused:
		r.Refused++
	case OutcomeSkipped:
		r.Skipped++
	case OutcomeLeaver:
		r.Leavers++
	default:
		r.Failed++
	}
	if len(r.Items) < maxItems {
		r.Items = append(r.Items, it)
	} else {
		r.ItemsLeftOut++
	}
}

// reset forgets what a run counted (a delta that turned into a full
// pull counts again from zero).
func (r *Result) reset() {
	*r = Result{Run: r.Run, Directory: r.Directory, IdP: r.IdP, DryRun: r.DryRun, By: r.By, Started: r.Started, Note: r.Note}
}

// summary is the run without its people, as the runs history keeps it.
func (r *Result) summary() Result {
	s := *r
	s.Items, s.groups = nil, nil
	return s
}

// Table renders the result for a terminal.
func (r *Result) Table() string {
	var b bytes.Buffer
	mode := "applied"
	if r.DryRun {
		mode = "dry run: nothing changed"
	}
	fmt.Fprintf(&b, "directory %s (idp %s), %s sync", r.Directory, r.IdP, r.Kind)
	if r.Run != 0 {
		fmt.Fprintf(&b, " run %d", r.Run)
	}
	fmt.Fprintf(&b, " (%s)\n", mode)
	if r.Note != "" {
		fmt.Fprintf(&b, "note: %s\n", r.Note)
	}
	if !r.Complete {
		fmt.Fprintf(&b, "INCOMPLETE: %s\n", r.Error)
	}
	fmt.Fprintf(&b, "%d people, %d groups: created %d, updated %d, unchanged %d, queued %d, denied %d, refused %d, failed %d, skipped %d, leavers %d\n",
		r.People, r.Groups, r.Created, r.Updated, r.Unchanged, r.Queued, r.Denied, r.Refused, r.Failed, r.Skipped, r.Leavers)
	if len(r.Items) > 0 {
		tw := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "SUBJECT\tUSERNAME\tOUTCOME\tAPPS\tDETAIL")
		for _, it := range r.Items {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", it.Subject, it.Username, it.Outcome, strings.Join(it.Apps, ","), it.Detail)
		}
		tw.Flush()
	}
	if r.ItemsLeftOut > 0 {
		fmt.Fprintf(&b, "... and %d more people not listed\n", r.ItemsLeftOut)
	}
	return b.String()
}
