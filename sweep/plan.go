package sweep

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"path"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/usherhq/usher/directory"
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
	// Items are the candidates; protected ones carry Action "skip".
	Items       []Item   `json:"items"`
	Blocked     bool     `json:"blocked"`
	BlockReason string   `json:"block_reason,omitempty"`
	Warnings    []string `json:"warnings,omitempty"`

	// scope is the directory scope a complete pull of this plan saw; a
	// run that acts on the plan keeps it for the next sweep.
	scope string
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
func (p *Plan) Actions() int {
	n := 0
	for _, it := range p.Items {
		if it.Action != Skip {
			n++
		}
	}
	return n
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

// appRef is what the plan keeps of an AppState.
type appRef struct {
	idp, subject  string
	deprovisioned bool
}

// scimIndex is one IdP's pushed users, keyed by bound subject and by
// lower-cased userName.
type scimIndex struct {
	total      int
	bySubject  map[string]*scimFact
	byUserName map[string]*scimFact
}

func (x *scimIndex) find(b store.Binding) *scimFact {
	if f := x.bySubject[b.Subject]; f != nil {
		return f
	}
	return x.byUserName[strings.ToLower(b.Username)]
}

// dirIndex is one complete directory pull.
type dirIndex struct {
	err   error
	users int
	// byKey holds subjects and the directory's IDs, byLower lower-cased
	// usernames; each says whether the person is still in (active, or
	// only temporarily inactive: locked out, not yet activated).
	byKey   map[string]bool
	byLower map[string]bool
	// disabled says why a person who is out is out ("disabled in the
	// directory").
	disabled map[string]string
	// noMissing: the directory's scope changed since the last sweep, so
	// absence from this pull proves nothing; only explicit signals count.
	noMissing bool
}

// gone reports why the pull says b is gone, or "" when it is present.
// A person matches by subject first, and, to be safe, also by the
// directory's ID or username: someone the pull lists in any of these
// ways is not "missing".
func (x *dirIndex) gone(b store.Binding) string {
	seen, in := false, false
	why := ""
	for _, v := range []struct {
		m map[string]bool
		k string
	}{{x.byKey, b.Subject}, {x.byLower, strings.ToLower(b.Subject)}, {x.byLower, strings.ToLower(b.Username)}} {
		if a, ok := v.m[v.k]; ok {
			seen, in = true, in || a
			if why == "" {
				why = x.disabled[v.k]
			}
		}
	}
	switch {
	case in:
		return ""
	case seen && why != "":
		return why
	case seen:
		return "disabled in the directory"
	case x.noMissing:
		return ""
	}
	return "missing from a complete pull of the directory"
}

const (
	pageSize = 500
	// scimPageSize is larger: the store pages SCIM users by offset and
	// counts them on every page.
	scimPageSize = 5000
)

// Plan reads the sources and the store and returns what the sweep would
// do. It changes nothing. Source failures do not fail the call: they
// block the plan, with the reason, so the refusal is recorded.
func (s *Sweeper) Plan(ctx context.Context) (*Plan, error) {
	now := s.d.Now()
	p := &Plan{Policy: s.p.Name, Action: s.p.Action, Created: now}
	st := s.d.Store
	fail := func(err error) (*Plan, error) { return nil, fmt.Errorf("sweep %s: plan: %w", s.p.Name, err) }

	states := map[string]map[string]appRef{}
	for _, app := range s.apps {
		m := map[string]appRef{}
		after := ""
		for {
			page, err := st.AppStates(ctx, app, after, pageSize)
			if err != nil {
				return fail(err)
			}
			for _, a := range page {
				if s.idps[a.IdP] || a.IdP == "" {
					m[strings.ToLower(a.Username)] = appRef{a.IdP, a.Subject, a.Deprovisioned}
				}
			}
			if len(page) < pageSize {
				break
			}
			after = strings.ToLower(page[len(page)-1].Username)
		}
		states[app] = m
	}

	scim := map[string]*scimIndex{}
	if s.p.Sources.SCIM || s.p.Sources.EndDateClaim != "" {
		for _, idp := range s.p.IdPs {
			x, warn, err := s.loadSCIM(ctx, idp)
			if err != nil {
				return fail(err)
			}
			p.Warnings = append(p.Warnings, warn...)
			scim[idp] = x
		}
	}
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
		managed    int
		managedIdP = map[string]int{}
		users      = map[string]bool{}
	)
	after := ""
	for {
		page, err := st.Bindings(ctx, after, pageSize)
		if err != nil {
			return fail(err)
		}
		for _, b := range page {
			if !s.idps[b.IdP] {
				continue
			}
			var live []string
			for _, app := range s.apps {
				ref, ok := states[app][strings.ToLower(b.Username)]
				if !ok || (ref.idp != "" && (ref.idp != b.IdP || ref.subject != b.Subject)) {
					continue
				}
				if !ref.deprovisioned {
					live = append(live, app)
				}
			}
			if len(live) == 0 {
				continue
			}
			managed++
			managedIdP[b.IdP]++
			f := facts{b: b}
			if x := scim[b.IdP]; x != nil {
				f.scim = x.find(b)
			}
			if dir != nil && dir.err == nil {
				f.dirGone = dir.gone(b)
			}
			if s.p.Sources.AccessExpiry {
				if f.expiry, err = st.AccessExpiry(ctx, b.IdP, b.Subject); err != nil {
					return fail(err)
				}
			}
			rule, reason := s.evaluate(f, now)
			if rule == "" {
				continue
			}
			for _, app := range live {
				it := Item{IdP: b.IdP, Subject: b.Subject, Username: b.Username, App: app,
					Rule: rule, Reason: reason, Action: s.p.Action}
				if f.scim != nil {
					it.SCIMID = f.scim.id
				}
				if g := s.protectedUser(b.Username); g != "" {
					it.Action, it.Skip = Skip, "protected user ("+g+")"
				}
				p.Items = append(p.Items, it)
			}
		}
		if len(page) < pageSize {
			break
		}
		last := page[len(page)-1]
		after = last.IdP + "\x00" + last.Subject
	}
	p.Managed = managed

	if err := s.markProtectedGroups(ctx, p); err != nil {
		return fail(err)
	}
	for _, it := range p.Items {
		if it.Action != Skip {
			users[it.IdP+"\x00"+it.Subject] = true
		}
	}
	p.Users = len(users)

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
			return fail(err)
		}
	}
	return p, nil
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

// markProtectedGroups reads the groups of each planned user from the app
// and skips members of protected groups, so the valve counts real actions
// and a dry run shows who is shielded. Apply checks again.
func (s *Sweeper) markProtectedGroups(ctx context.Context, p *Plan) error {
	if len(s.p.ProtectedGroups) == 0 {
		return nil
	}
	var (
		mu       sync.Mutex
		firstErr error
	)
	s.forEach(ctx, p.Items, func(ctx context.Context, i int, it Item) {
		if it.Action == Skip {
			return
		}
		groups, err := s.d.Apps[it.App].UserGroups(ctx, it.Username)
		mu.Lock()
		defer mu.Unlock()
		switch {
		case errors.Is(err, targets.ErrNotFound):
			p.Items[i].Action, p.Items[i].Skip = Skip, "not in "+it.App
		case err != nil:
			if firstErr == nil {
				firstErr = err
			}
		default:
			if g := s.protectedGroup(groups); g != "" {
				p.Items[i].Action, p.Items[i].Skip = Skip, "member of protected group "+g
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
// run shows which seats the sweep frees. It only reads. A failed read is
// a warning: the seat is shown, not decided, here.
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

// loadSCIM indexes the IdP's pushed users.
func (s *Sweeper) loadSCIM(ctx context.Context, idp string) (*scimIndex, []string, error) {
	x := &scimIndex{bySubject: map[string]*scimFact{}, byUserName: map[string]*scimFact{}}
	var warn []string
	for offset := 0; ; {
		page, total, err := s.d.Store.SCIMUsers(ctx, idp, offset, scimPageSize)
		if err != nil {
			return nil, nil, err
		}
		x.total = total
		for _, u := range page {
			f := s.scimFact(u)
			if f.endErr != nil && len(warn) < 20 {
				warn = append(warn, fmt.Sprintf("%s: SCIM user %s: %v", idp, u.UserName, f.endErr))
			}
			if u.Subject != "" {
				x.bySubject[u.Subject] = f
			}
			x.byUserName[strings.ToLower(u.UserName)] = f
		}
		offset += len(page)
		if len(page) == 0 || offset >= total {
			return x, warn, nil
		}
	}
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

// pull runs the directory source; a failure is kept in the index.
func (s *Sweeper) pull(ctx context.Context) *dirIndex {
	x := &dirIndex{byKey: map[string]bool{}, byLower: map[string]bool{}, disabled: map[string]string{}}
	if s.d.DirectoryScope != "" {
		last, _, err := s.d.Store.Blob(ctx, s.scopeKey())
		switch {
		case err == nil:
			x.noMissing = string(last) != s.d.DirectoryScope
		case !errors.Is(err, store.ErrNotFound):
			x.err = fmt.Errorf("read the scope of the last sweep: %w", err)
			return x
		}
	}
	x.err = s.d.Directory.Pull(ctx, func(page directory.Page) error {
		for _, p := range page.People {
			x.users++
			in := !p.Status.Leaver()
			why := ""
			if !in {
				why = p.Status.String() + " in the directory"
			}
			add := func(m map[string]bool, k string) {
				if k == "" {
					return
				}
				m[k] = m[k] || in
				if !in && x.disabled[k] == "" {
					x.disabled[k] = why
				}
			}
			add(x.byKey, p.Subject)
			add(x.byKey, p.ID)
			add(x.byLower, strings.ToLower(p.Username))
		}
		return nil
	})
	if x.err == nil && x.users == 0 && ctx.Err() != nil {
		x.err = ctx.Err()
	}
	return x
}

// scopeKey is where the scope of the policy's last swept pull is kept.
func (s *Sweeper) scopeKey() string {
	// Policy names are free text: escaped, one never reads as a path.
	return "sweep/" + url.PathEscape(s.p.Name) + "/directory-scope"
}
