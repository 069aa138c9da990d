package sweep

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/usherhq/usher/jit"
	"github.com/usherhq/usher/store"
	"github.com/usherhq/usher/targets"
)

// Rule names: which source found the user gone.
const (
	RuleSCIM         = "scim"
	RuleDirectory    = "directory"
	RuleInactive     = "inactive_days"
	RuleEndDate      = "end_date_claim"
	RuleAccessExpiry = "access_expiry"
)

// MaxShown is how many items a Plan lists, and a Result's outcomes: a
// plan over a large company may hold more, which a run keeps in the store
// and reads back page by page; the counts are always exact.
const MaxShown = 1000

// Plan is what a sweep would do, computed without changing anything.
type Plan struct {
	Policy  string    `json:"policy"`
	Action  Action    `json:"action"`
	Created time.Time `json:"created"`
	// Managed counts the identities of the policy's IdPs that usher
	// provisioned into an app in scope and did not deprovision yet.
	Managed int `json:"managed"`
	// Users counts the identities with at least one action.
	Users int `json:"users"`
	// Planned counts the items that change something, Skips the
	// candidates left alone (Action "skip": protected, or not in the
	// app).
	Planned int `json:"planned"`
	Skips   int `json:"skips"`
	// Items are the plan's first items, in plan order, at most MaxShown;
	// Omitted counts the others.
	Items       []Item   `json:"items"`
	Omitted     int      `json:"omitted,omitempty"`
	Blocked     bool     `json:"blocked"`
	BlockReason string   `json:"block_reason,omitempty"`
	Warnings    []string `json:"warnings,omitempty"`

	// scope is the directory scope a complete pull of this plan saw; a
	// run that acts on the plan keeps it for the next sweep.
	scope string
	// user is the identity of the last item counted, to count users:
	// the items of one identity come together.
	user string
}

// Item is one (identity, app) the sweep acts on or skips.
type Item struct {
	IdP      string `json:"idp"`
	Subject  string `json:"subject"`
	Username string `json:"username"`
	App      string `json:"app"`
	Rule     string `json:"rule"`   // the source that matched
	Reason   string `json:"reason"` // why the source says the user is gone
	Action   Action `json:"action"`
	// Skip says why a candidate is left alone (Action "skip").
	Skip string `json:"skip,omitempty"`
	// SCIMID is the pushed SCIM user's id, for the re-check.
	SCIMID string `json:"scim_id,omitempty"`
	// Seats, for a deactivation in an app whose seat comes through
	// groups (Bitbucket), names what it takes away that grants a seat:
	// groups, or "direct PERMISSION" (jit.ReleaseSeat).
	Seats []string `json:"seats,omitempty"`
	// SeatKept names the seat-granting groups it leaves (memberships
	// given by hand, outside licence_groups): the person keeps the seat.
	SeatKept []string `json:"seat_kept,omitempty"`
}

// key names the item in the run's progress records.
func (it Item) key() string { return it.App + "/" + strings.ToLower(it.Username) }

// Actions counts the items that change something.
func (p *Plan) Actions() int { return p.Planned }

// add counts items, the candidates of one or more identities, each
// identity's together, and lists them while fewer than shown are.
func (p *Plan) add(items []Item, shown int) {
	for _, it := range items {
		switch {
		case it.Action == Skip:
			p.Skips++
		default:
			p.Planned++
			if id := it.IdP + "\x00" + it.Subject; id != p.user {
				p.user = id
				p.Users++
			}
		}
		if len(p.Items) < shown {
			p.Items = append(p.Items, it)
		} else {
			p.Omitted++
		}
	}
}

// Table renders the plan for a terminal.
func (p *Plan) Table() string {
	var b bytes.Buffer
	fmt.Fprintf(&b, "sweep %s at %s: %d actions for %d of %d managed users",
		p.Policy, p.Created.UTC().Format(time.RFC3339), p.Actions(), p.Users, p.Managed)
	if p.Blocked {
		fmt.Fprintf(&b, "; BLOCKED: %s", p.BlockReason)
	}
	b.WriteString("\n")
	for _, w := range p.Warnings {
		fmt.Fprintf(&b, "warning: %s\n", w)
	}
	if len(p.Items) == 0 {
		return b.String()
	}
	tw := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "IDP\tSUBJECT\tUSERNAME\tAPP\tACTION\tRULE\tREASON")
	for _, it := range p.Items {
		reason := it.Reason
		if it.Skip != "" {
			reason += " (skipped: " + it.Skip + ")"
		}
		switch {
		case len(it.SeatKept) > 0 && len(it.Seats) > 0:
			reason += " (seat stays: " + strings.Join(it.SeatKept, ", ") + " given by hand; takes away " + strings.Join(it.Seats, ", ") + ")"
		case len(it.SeatKept) > 0:
			reason += " (seat stays: " + strings.Join(it.SeatKept, ", ") + " given by hand)"
		case len(it.Seats) > 0:
			reason += " (frees seat: " + strings.Join(it.Seats, ", ") + ")"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", it.IdP, it.Subject, it.Username, it.App, it.Action, it.Rule, reason)
	}
	tw.Flush()
	if p.Omitted > 0 {
		fmt.Fprintf(&b, "... and %d more items, not shown (%d listed)\n", p.Omitted, len(p.Items))
	}
	return b.String()
}

// facts are the evidence about one identity.
type facts struct {
	b       store.Binding
	scim    *scimFact // nil: no pushed user for this identity
	dirGone string    // non-empty: the directory pull says gone, and why
	expiry  time.Time
}

type scimFact struct {
	id      string
	active  bool
	endDate time.Time
	endErr  error
}

// evaluate returns the first rule that says the identity is gone.
func (s *Sweeper) evaluate(f facts, now time.Time) (rule, reason string) {
	src := s.p.Sources
	if src.AccessExpiry && !f.expiry.IsZero() && !now.Before(f.expiry) {
		return RuleAccessExpiry, "access expired " + f.expiry.UTC().Format(time.RFC3339)
	}
	// A person is a SCIM leaver only when the IdP said so: a pushed user
	// marked inactive. A person without a pushed record is not one: an
	// import may not have reached them yet, and a SCIM delete is acted on
	// when it arrives. Absence counts only from a complete directory pull.
	if src.SCIM && f.scim != nil && !f.scim.active {
		return RuleSCIM, "inactive in SCIM"
	}
	if f.dirGone != "" {
		return RuleDirectory, f.dirGone
	}
	if src.EndDateClaim != "" && f.scim != nil && f.scim.endErr == nil && !f.scim.endDate.IsZero() && !now.Before(f.scim.endDate) {
		return RuleEndDate, fmt.Sprintf("%s ended %s", src.EndDateClaim, f.scim.endDate.UTC().Format(time.RFC3339))
	}
	if days := src.InactiveDays; days > 0 {
		last, what := f.b.LastLogin, "last login"
		if last.IsZero() {
			last, what = f.b.CreatedAt, "never logged in; bound"
		}
		if !last.IsZero() && now.Sub(last) >= time.Duration(days)*24*time.Hour {
			return RuleInactive, fmt.Sprintf("%s %s, over %d days ago", what, last.UTC().Format("2006-01-02"), days)
		}
	}
	return "", ""
}

// protectedUser returns the glob a username matches, or "".
func (s *Sweeper) protectedUser(username string) string {
	return matchAny(s.p.ProtectedUsers, username)
}

func matchAny(globs []string, name string) string {
	name = strings.ToLower(name)
	for _, g := range globs {
		if ok, _ := path.Match(strings.ToLower(g), name); ok {
			return g
		}
	}
	return ""
}

// protectedGroup returns the first of groups a protected glob matches.
func (s *Sweeper) protectedGroup(groups []string) string {
	for _, g := range groups {
		if m := matchAny(s.p.ProtectedGroups, g); m != "" {
			return g
		}
	}
	return ""
}

const (
	pageSize = 500
	// batchSize is how many items the planner reads protected groups for
	// at once, and records in one write.
	batchSize = 256
)

// Plan reads the sources and the store and returns what the sweep would
// do. It changes nothing. Source failures do not fail the call: they
// block the plan, with the reason, so the refusal is recorded. The plan
// lists its first MaxShown items; its counts cover all of them.
func (s *Sweeper) Plan(ctx context.Context) (*Plan, error) {
	p, err := s.plan(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("sweep %s: plan: %w", s.p.Name, err)
	}
	return p, nil
}

// plan streams through the bindings, one page at a time, and hands every
// item to record (when not nil) in batches, in plan order, so that a run
// keeps the whole plan in the store while only counts and the first
// items stay in memory. Evidence is read for a page of bindings at a time
// (app states, pushed SCIM users, expiries), except the directory's, which
// comes as one pull ahead of the bindings and is kept as a compact index.
func (s *Sweeper) plan(ctx context.Context, record func(context.Context, []Item) error) (*Plan, error) {
	now := s.d.Now()
	p := &Plan{Policy: s.p.Name, Action: s.p.Action, Created: now}
	st := s.d.Store

	var dir *dirIndex
	if s.p.Sources.Directory != "" {
		dir = s.pull(ctx)
		if dir.noMissing {
			p.Warnings = append(p.Warnings, fmt.Sprintf("the scope of directory %s changed since the last sweep: absence from this pull is not counted once; disabled people still are", s.p.Sources.Directory))
		}
		if dir.err == nil {
			p.scope = s.d.DirectoryScope
		}
	}

	var (
		managedIdP = map[string]int{}
		batch      []Item
		scimWarned int
	)
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		if err := s.markProtectedGroups(ctx, p, batch); err != nil {
			return err
		}
		p.add(batch, s.shown)
		if record != nil {
			if err := record(ctx, batch); err != nil {
				return err
			}
		}
		batch = batch[:0]
		return nil
	}
	after := ""
	for {
		page, err := st.Bindings(ctx, after, pageSize)
		if err != nil {
			return nil, err
		}
		judged, err := s.judge(ctx, page, dir, now)
		if err != nil {
			return nil, err
		}
		for i, b := range page {
			j := judged[i]
			if len(j.live) == 0 {
				continue
			}
			p.Managed++
			managedIdP[b.IdP]++
			scim := j.facts.scim
			if scim != nil && scim.endErr != nil && scimWarned < 20 {
				scimWarned++
				p.Warnings = append(p.Warnings, fmt.Sprintf("%s: SCIM user of %s: %v", b.IdP, b.Username, scim.endErr))
			}
			if j.rule == "" {
				continue
			}
			for _, app := range j.live {
				it := Item{IdP: b.IdP, Subject: b.Subject, Username: b.Username, App: app,
					Rule: j.rule, Reason: j.reason, Action: s.p.Action}
				if scim != nil {
					it.SCIMID = scim.id
				}
				if g := s.protectedUser(b.Username); g != "" {
					it.Action, it.Skip = Skip, "protected user ("+g+")"
				}
				batch = append(batch, it)
			}
			// Only between identities: the items of one are counted
			// together.
			if len(batch) >= batchSize {
				if err := flush(); err != nil {
					return nil, err
				}
			}
		}
		if len(page) < pageSize {
			break
		}
		last := page[len(page)-1]
		after = last.IdP + "\x00" + last.Subject
	}
	if err := flush(); err != nil {
		return nil, err
	}

	if dir != nil {
		idp := s.p.IdPs[0]
		switch {
		case dir.err != nil:
			p.block("the pull of directory %s did not complete, so nobody's absence from it counts: %v", s.p.Sources.Directory, dir.err)
		case dir.users == 0 && managedIdP[idp] > 0:
			p.block("the pull of directory %s returned no users while usher manages %d users of %s", s.p.Sources.Directory, managedIdP[idp], idp)
		}
	}
	if !p.Blocked {
		s.valve(p)
	}
	if !p.Blocked {
		// After the valve: a plan refused for acting on too many people
		// (a broken IdP) costs the apps no read per person.
		if err := s.markSeats(ctx, p); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// judgement is what the planner found about one binding.
type judgement struct {
	// live are the apps in scope where usher provisioned the identity and
	// did not deprovision it; none: not a managed identity.
	live         []string
	facts        facts
	rule, reason string // the rule that says the identity is gone, or ""
}

// judge reads the evidence about the bindings of page that belong to the
// policy's IdPs and evaluates it: a query per app and per kind of
// evidence for the whole page, not one per person.
func (s *Sweeper) judge(ctx context.Context, page []store.Binding, dir *dirIndex, now time.Time) ([]judgement, error) {
	out := make([]judgement, len(page))
	var usernames []string
	for _, b := range page {
		if s.idps[b.IdP] {
			usernames = append(usernames, b.Username)
		}
	}
	if len(usernames) == 0 {
		return out, nil
	}
	// The apps where each is provisioned and not deprovisioned: by them
	// (or by nobody in particular: a state from before states named
	// their identity).
	states := make([]map[string]store.AppState, len(s.apps))
	for k, app := range s.apps {
		list, err := s.d.Store.AppStatesOf(ctx, app, usernames)
		if err != nil {
			return nil, err
		}
		states[k] = make(map[string]store.AppState, len(list))
		for _, a := range list {
			states[k][strings.ToLower(a.Username)] = a
		}
	}
	managed := map[string][]int{} // by IdP, the managed bindings' places
	for i, b := range page {
		if !s.idps[b.IdP] {
			continue
		}
		for k, app := range s.apps {
			a, ok := states[k][strings.ToLower(b.Username)]
			if ok && (a.IdP == "" || (a.IdP == b.IdP && a.Subject == b.Subject)) && !a.Deprovisioned {
				out[i].live = append(out[i].live, app)
			}
		}
		if len(out[i].live) > 0 {
			out[i].facts.b = b
			managed[b.IdP] = append(managed[b.IdP], i)
		}
	}
	for idp, places := range managed {
		if err := s.gather(ctx, idp, page, places, out, dir); err != nil {
			return nil, err
		}
		for _, i := range places {
			out[i].rule, out[i].reason = s.evaluate(out[i].facts, now)
		}
	}
	return out, nil
}

// gather reads the evidence about the bindings at places of page, all of
// idp, into their judgements' facts.
func (s *Sweeper) gather(ctx context.Context, idp string, page []store.Binding, places []int, out []judgement, dir *dirIndex) error {
	st, src := s.d.Store, s.p.Sources
	subjects := make([]string, len(places))
	for n, i := range places {
		subjects[n] = page[i].Subject
	}
	if src.SCIM || src.EndDateClaim != "" {
		// The pushed user bound to the person's subject (the first by ID,
		// should there be several), else the one of their username.
		users, err := st.SCIMUsersOf(ctx, idp, "subject", subjects)
		if err != nil {
			return err
		}
		bySubject := make(map[string]store.SCIMUser, len(users))
		for _, u := range users {
			if v, ok := bySubject[u.Subject]; !ok || u.ID < v.ID {
				bySubject[u.Subject] = u
			}
		}
		var names []string
		for _, i := range places {
			if u, ok := bySubject[page[i].Subject]; ok {
				out[i].facts.scim = s.scimFact(u)
			} else {
				names = append(names, page[i].Username)
			}
		}
		if len(names) > 0 {
			if users, err = st.SCIMUsersOf(ctx, idp, "userName", names); err != nil {
				return err
			}
			byName := make(map[string]store.SCIMUser, len(users))
			for _, u := range users {
				byName[strings.ToLower(u.UserName)] = u
			}
			for _, i := range places {
				if out[i].facts.scim != nil {
					continue
				}
				if u, ok := byName[strings.ToLower(page[i].Username)]; ok {
					out[i].facts.scim = s.scimFact(u)
				}
			}
		}
	}
	if dir != nil && dir.err == nil {
		for _, i := range places {
			out[i].facts.dirGone = dir.gone(page[i])
		}
	}
	if src.AccessExpiry {
		expiries, err := st.AccessExpiries(ctx, idp, subjects)
		if err != nil {
			return err
		}
		for _, i := range places {
			out[i].facts.expiry = expiries[page[i].Subject]
		}
	}
	return nil
}

func (p *Plan) block(format string, args ...any) {
	if !p.Blocked {
		p.Blocked, p.BlockReason = true, fmt.Sprintf(format, args...)
	}
}

// valve blocks plans that act on implausibly many users.
func (s *Sweeper) valve(p *Plan) {
	if p.Users == 0 {
		return
	}
	if s.p.MaxCount > 0 && p.Users > s.p.MaxCount {
		p.block("plan acts on %d users, more than max_count %d", p.Users, s.p.MaxCount)
		return
	}
	if share := float64(p.Users) / float64(p.Managed); share > s.p.MaxShare {
		p.block("plan acts on %d of %d managed users (%.1f%%), more than max_share %.1f%%",
			p.Users, p.Managed, 100*share, 100*s.p.MaxShare)
	}
}

// markProtectedGroups reads the groups of each planned user of items from
// the app and skips members of protected groups, so the valve counts real
// actions and a dry run shows who is shielded. Apply checks again. A
// failed read blocks p.
func (s *Sweeper) markProtectedGroups(ctx context.Context, p *Plan, items []Item) error {
	if len(s.p.ProtectedGroups) == 0 {
		return nil
	}
	var (
		mu       sync.Mutex
		firstErr error
	)
	s.forEach(ctx, items, func(ctx context.Context, i int, it Item) {
		if it.Action == Skip {
			return
		}
		groups, err := s.d.Apps[it.App].UserGroups(ctx, it.Username)
		mu.Lock()
		defer mu.Unlock()
		switch {
		case errors.Is(err, targets.ErrNotFound):
			items[i].Action, items[i].Skip = Skip, "not in "+it.App
		case err != nil:
			if firstErr == nil {
				firstErr = err
			}
		default:
			if g := s.protectedGroup(groups); g != "" {
				items[i].Action, items[i].Skip = Skip, "member of protected group "+g
			}
		}
	})
	if firstErr != nil {
		p.block("reading groups for protected_groups failed: %v", firstErr)
	}
	return ctx.Err()
}

// markSeats fills Seats and SeatKept of the deactivations in apps whose
// seat comes through groups (targets.SeatHolder: Bitbucket), so a dry
// run shows which seats the sweep frees. It only reads, and only for the
// items the plan lists: the seat is shown, not decided, here (the
// lifecycle decides it when it acts), so a failed read is a warning.
func (s *Sweeper) markSeats(ctx context.Context, p *Plan) error {
	if p.Action != Deactivate {
		return nil
	}
	var mu sync.Mutex
	s.forEach(ctx, p.Items, func(ctx context.Context, i int, it Item) {
		sh, ok := s.d.Apps[it.App].(targets.SeatHolder)
		if !ok || it.Action == Skip {
			return
		}
		seat, err := sh.Seat(ctx, it.Username)
		var ms []store.Membership
		if err == nil {
			ms, err = s.d.Store.Managed(ctx, it.App, it.Username)
		}
		mu.Lock()
		defer mu.Unlock()
		switch {
		case errors.Is(err, targets.ErrNotFound):
		case err != nil:
			if len(p.Warnings) < 20 {
				p.Warnings = append(p.Warnings, fmt.Sprintf("%s: %s: seat not read: %v", it.App, it.Username, err))
			}
		default:
			rel := jit.ReleaseSeat(seat, ms)
			p.Items[i].Seats, p.Items[i].SeatKept = rel.Freed, rel.Kept
		}
	})
	return ctx.Err()
}

// forEach calls fn for items with at most Concurrency calls in flight per
// app. It stops starting new calls when ctx ends.
func (s *Sweeper) forEach(ctx context.Context, items []Item, fn func(ctx context.Context, i int, it Item)) {
	queues := map[string]chan int{}
	for i, it := range items {
		if queues[it.App] == nil {
			queues[it.App] = make(chan int, len(items))
		}
		queues[it.App] <- i
	}
	var wg sync.WaitGroup
	for _, q := range queues {
		close(q)
		for range s.p.Concurrency {
			wg.Go(func() {
				for i := range q {
					if ctx.Err() != nil {
						return
					}
					fn(ctx, i, items[i])
				}
			})
		}
	}
	wg.Wait()
}

func (s *Sweeper) scimFact(u store.SCIMUser) *scimFact {
	f := &scimFact{id: u.ID, active: u.Active}
	if c := s.p.Sources.EndDateClaim; c != "" {
		f.endDate, f.endErr = endDate(u.Resource, c)
	}
	return f
}

// endDate finds attribute name (case-insensitively) at the top level of a
// SCIM resource or inside one of its extension schemas, and parses it.
// Absent or empty gives a zero time.
func endDate(resource []byte, name string) (time.Time, error) {
	if len(resource) == 0 {
		return time.Time{}, nil
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(resource, &top); err != nil {
		return time.Time{}, fmt.Errorf("resource: %w", err)
	}
	raw, ok := lookupFold(top, name)
	if !ok {
		for k, v := range top {
			if !strings.HasPrefix(strings.ToLower(k), "urn:") {
				continue
			}
			var ext map[string]json.RawMessage
			if json.Unmarshal(v, &ext) == nil {
				if raw, ok = lookupFold(ext, name); ok {
					break
				}
			}
		}
	}
	if !ok || string(raw) == "null" {
		return time.Time{}, nil
	}
	var v string
	if err := json.Unmarshal(raw, &v); err != nil {
		return time.Time{}, fmt.Errorf("%s is not a string", name)
	}
	v = strings.TrimSpace(v)
	if v == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339, v); err == nil {
		return t, nil
	}
	if t, err := time.Parse("2006-01-02", v); err == nil {
		return t.Add(24 * time.Hour), nil // the whole day still counts
	}
	return time.Time{}, fmt.Errorf("%s %q is neither RFC 3339 nor YYYY-MM-DD", name, v)
}

func lookupFold(m map[string]json.RawMessage, name string) (json.RawMessage, bool) {
	if v, ok := m[name]; ok {
		return v, true
	}
	for k, v := range m {
		if strings.EqualFold(k, name) {
			return v, true
		}
	}
	return nil, false
}
