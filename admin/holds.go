package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/usherhq/usher/store"
)

// IdP is a configured identity provider as the overview and the held
// removals page show it.
type IdP struct {
	ID   string `json:"id"`
	Name string `json:"name"`
	Type string `json:"type"`
	// Adoption is its adoption policy: never, verified_email or always.
	Adoption string `json:"adoption"`
	// SCIM says it pushes people to /scim/v2; Automatic, that pushes
	// create and update people in the apps at once.
	SCIM      bool `json:"scim"`
	Automatic bool `json:"scim_automatic,omitempty"`
	// Brake is its SCIM brake; nil when it has none.
	Brake *Brake `json:"brake,omitempty"`
}

// Brake is an IdP's SCIM brake as configured (idps[].scim.brake).
type Brake struct {
	MaxCount     int           `json:"max_count,omitempty"`
	MaxShare     float64       `json:"max_share,omitempty"`
	Window       time.Duration `json:"-"`
	HeldSessions string        `json:"held_sessions"` // revoke or keep
}

// MarshalJSON writes the window as a duration string ("1h0m0s").
func (b Brake) MarshalJSON() ([]byte, error) {
	type plain Brake
	return json.Marshal(struct {
		plain
		Window string `json:"window"`
	}{plain(b), b.Window.String()})
}

// String is the brake's limit in a few words: "25 or 10% of the people
// within 1h0m0s".
func (b Brake) String() string {
	var s string
	switch {
	case b.MaxCount > 0 && b.MaxShare > 0:
		s = fmt.Sprintf("%d or %g%% of the people", b.MaxCount, 100*b.MaxShare)
	case b.MaxCount > 0:
		s = fmt.Sprintf("%d people", b.MaxCount)
	default:
		s = fmt.Sprintf("%g%% of the people", 100*b.MaxShare)
	}
	return s + " within " + b.Window.String()
}

// HoldActions settle the removals the IdPs' SCIM brakes held. The admin
// package calls them only on POST; actor is "admin:token" or
// "admin:<username>". Release and Drop fail with an error wrapping
// store.ErrNotFound when no removal of the person is held.
type HoldActions interface {
	// Release carries out a held removal and returns what it did, one
	// line per app.
	Release(ctx context.Context, idp, subject, actor string) ([]string, error)
	// Drop withdraws a held removal: the person keeps their access.
	Drop(ctx context.Context, idp, subject, actor string) error
	// ReleaseAll and DropAll settle every hold of an IdP and say how many.
	ReleaseAll(ctx context.Context, idp, actor string) (int, error)
	DropAll(ctx context.Context, idp, actor string) (int, error)
}

// noHolds stands in when no HoldActions are wired.
type noHolds struct{}

func (noHolds) Release(context.Context, string, string, string) ([]string, error) {
	return nil, errNoActions
}
func (noHolds) Drop(context.Context, string, string, string) error { return errNoActions }
func (noHolds) ReleaseAll(context.Context, string, string) (int, error) {
	return 0, errNoActions
}
func (noHolds) DropAll(context.Context, string, string) (int, error) { return 0, errNoActions }

func (h *handler) holdActions() HoldActions {
	if h.o.Holds == nil {
		return noHolds{}
	}
	return h.o.Holds
}

// brakeState is an IdP with what its brake is doing now.
type brakeState struct {
	IdP
	Holds int
}

// State is "off", "armed" or "holding N".
func (b brakeState) State() string {
	switch {
	case b.Holds > 0:
		return "holding " + strconv.Itoa(b.Holds)
	case b.Brake != nil:
		return "armed"
	}
	return "off"
}

// brakeStates are the configured IdPs, in config order, then any IdP no
// longer configured that still has holds.
func (h *handler) brakeStates(ctx context.Context) ([]brakeState, error) {
	counts, err := h.o.Store.HoldCounts(ctx)
	if err != nil {
		return nil, err
	}
	var out []brakeState
	for _, idp := range h.o.IdPs {
		out = append(out, brakeState{IdP: idp, Holds: counts[idp.ID]})
		delete(counts, idp.ID)
	}
	gone := make([]string, 0, len(counts))
	for id := range counts {
		gone = append(gone, id)
	}
	slices.Sort(gone)
	for _, id := range gone {
		out = append(out, brakeState{IdP: IdP{ID: id, Name: id + " (no longer configured)"}, Holds: counts[id]})
	}
	return out, nil
}

// holdsShown is how many holds a page lists.
const holdsShown = 100

type holdsData struct {
	IdPs []brakeState
	// One IdP's holds, when the page is about one.
	IdP    *brakeState
	Holds  []store.Hold
	Total  int
	Offset int
	Next   int // offset of the next page, 0 when none
	Now    time.Time
}

func (h *handler) holdsPage(w http.ResponseWriter, r *http.Request) {
	states, err := h.brakeStates(r.Context())
	if err != nil {
		h.fail(w, r, http.StatusInternalServerError, "The held removals could not be read.", err)
		return
	}
	h.render(w, r, http.StatusOK, "holds", "Held removals", holdsData{IdPs: states, Now: h.now()})
}

// idpState is one IdP's brake state; a name that is neither configured
// nor holding anything is 404.
func (h *handler) idpState(ctx context.Context, id string) (brakeState, int, error) {
	states, err := h.brakeStates(ctx)
	if err != nil {
		return brakeState{}, http.StatusInternalServerError, err
	}
	i := slices.IndexFunc(states, func(s brakeState) bool { return s.ID == id })
	if i < 0 {
		return brakeState{}, http.StatusNotFound, fmt.Errorf("no IdP %q is configured or holds anything", id)
	}
	return states[i], http.StatusOK, nil
}

// idpHolds reads a page of one IdP's holds; a name that is neither
// configured nor holding anything is 404.
func (h *handler) idpHolds(r *http.Request) (holdsData, int, error) {
	ctx, id := r.Context(), r.PathValue("idp")
	offset, limit := 0, holdsShown
	for _, p := range []struct {
		name string
		v    *int
		min  int
	}{{"offset", &offset, 0}, {"limit", &limit, 1}} {
		s := r.URL.Query().Get(p.name)
		if s == "" {
			continue
		}
		n, err := strconv.Atoi(s)
		if err != nil || n < p.min {
			return holdsData{}, http.StatusBadRequest, fmt.Errorf("%s: want a whole number of at least %d, got %q", p.name, p.min, s)
		}
		*p.v = n
	}
	limit = min(limit, pageLimit)
	state, status, err := h.idpState(ctx, id)
	if err != nil {
		return holdsData{}, status, err
	}
	d := holdsData{IdP: &state, Offset: offset, Now: h.now()}
	d.Holds, d.Total, err = h.o.Store.Holds(ctx, id, offset, limit)
	if err != nil {
		return holdsData{}, http.StatusInternalServerError, err
	}
	if offset+len(d.Holds) < d.Total {
		d.Next = offset + len(d.Holds)
	}
	return d, http.StatusOK, nil
}

func (h *handler) idpHoldsPage(w http.ResponseWriter, r *http.Request) {
	d, status, err := h.idpHolds(r)
	if err != nil {
		h.fail(w, r, status, "The held removals could not be read: "+err.Error(), err)
		return
	}
	h.render(w, r, http.StatusOK, "holds", "Held removals of "+d.IdP.ID, d)
}

// holdRoutes serves the hold actions under prefix, for the pages and
// the API alike (settle answers each in its kind).
func (h *handler) holdRoutes(m *http.ServeMux, prefix string) {
	for _, a := range []string{"release", "drop"} {
		m.HandleFunc("POST "+prefix+"{idp}/{subject}/"+a, func(w http.ResponseWriter, r *http.Request) { h.settle(w, r, a) })
		m.HandleFunc("POST "+prefix+"{idp}/"+a+"-all", func(w http.ResponseWriter, r *http.Request) { h.settle(w, r, a+"-all") })
	}
}

// settle runs one hold action and answers with its outcome.
func (h *handler) settle(w http.ResponseWriter, r *http.Request, action string) {
	idp, subject, ok := h.identity(w, r)
	if !ok {
		return
	}
	actor := principalOf(r).Actor
	if subject == "" {
		// As on the IdP's page: an IdP neither configured nor holding
		// anything is a mistyped URL, not zero holds settled.
		if _, status, err := h.idpState(r.Context(), idp); err != nil {
			h.fail(w, r, status, fmt.Sprintf("Could not %s the held removals of %s: %v", strings.TrimSuffix(action, "-all"), idp, err), err)
			return
		}
	}
	var (
		changes []string
		n       int
		err     error
	)
	switch action {
	case "release":
		changes, err = h.holdActions().Release(r.Context(), idp, subject, actor)
	case "drop":
		err = h.holdActions().Drop(r.Context(), idp, subject, actor)
	case "release-all":
		n, err = h.holdActions().ReleaseAll(r.Context(), idp, actor)
	case "drop-all":
		n, err = h.holdActions().DropAll(r.Context(), idp, actor)
	}
	h.log.Info("admin "+action+" of held SCIM removals", "actor", actor, "idp", idp, "subject", subject, "count", n, "err", err)
	back := "/admin/holds/" + url.PathEscape(idp)
	if err != nil && (subject != "" || n == 0) {
		status := http.StatusBadGateway
		switch {
		case errors.Is(err, store.ErrNotFound):
			status = http.StatusNotFound
		case errors.Is(err, errNoActions):
			status = http.StatusInternalServerError
		}
		msg := fmt.Sprintf("Could not %s the held removal: %v", action, err)
		if subject == "" {
			msg = fmt.Sprintf("Could not %s the held removals of %s: %v", strings.TrimSuffix(action, "-all"), idp, err)
		}
		h.fail(w, r, status, msg, err)
		return
	}
	if isAPI(r) {
		status := "dropped"
		if action == "release" || action == "release-all" {
			status = "released"
		}
		out := map[string]any{"idp": idp, "status": status}
		if subject != "" {
			out["subject"] = subject
		} else {
			out[status] = n
		}
		if changes != nil {
			out["changes"] = changes
		}
		if err != nil {
			out["error"] = err.Error() // some of them: the rest are done
		}
		writeJSON(w, http.StatusOK, out)
		return
	}
	msg := ""
	switch action {
	case "release":
		msg = fmt.Sprintf("Released: the removal of %s/%s happened (%s).", idp, subject, strings.Join(changes, "; "))
	case "drop":
		msg = fmt.Sprintf("Dropped: %s/%s keeps their access. %s", idp, subject, dropNote)
	case "release-all":
		msg = fmt.Sprintf("Released %d held removals of %s.", n, idp)
	case "drop-all":
		msg = fmt.Sprintf("Dropped %d held removals of %s. %s", n, idp, dropNote)
	}
	if err != nil {
		msg += " Some failed: " + err.Error()
	}
	h.render(w, r, http.StatusOK, "message", "Held removals", messageData{Message: msg, Link: back, Err: err != nil})
}

// dropNote is what a drop leaves undone, said wherever one is made.
const dropNote = "The IdP still says inactive: its next push about them, or a sweep with a scim source, removes them again unless the IdP is fixed."

type holdJSON struct {
	IdP             string    `json:"idp"`
	Subject         string    `json:"subject"`
	Username        string    `json:"username"`
	Reason          string    `json:"reason"`
	HeldAt          time.Time `json:"held_at"`
	Removed         int       `json:"removed_in_window"`
	Holds           int       `json:"held_before"`
	People          int       `json:"people"`
	Limit           int       `json:"limit"`
	Window          string    `json:"window"`
	SessionsRevoked bool      `json:"sessions_revoked"`
}

type brakeJSON struct {
	IdP
	State string `json:"state"`
	Holds int    `json:"holds"`
}

func (h *handler) apiHoldsOverview(w http.ResponseWriter, r *http.Request) {
	states, err := h.brakeStates(r.Context())
	if err != nil {
		h.fail(w, r, http.StatusInternalServerError, "holds", err)
		return
	}
	out := struct {
		IdPs []brakeJSON `json:"idps"`
	}{IdPs: []brakeJSON{}}
	for _, s := range states {
		out.IdPs = append(out.IdPs, brakeJSON{IdP: s.IdP, State: s.State(), Holds: s.Holds})
	}
	writeJSON(w, http.StatusOK, out)
}

func (h *handler) apiIdPHolds(w http.ResponseWriter, r *http.Request) {
	d, status, err := h.idpHolds(r)
	if err != nil {
		h.fail(w, r, status, "holds", err)
		return
	}
	out := struct {
		IdP   string     `json:"idp"`
		State string     `json:"state"`
		Total int        `json:"total"`
		Next  int        `json:"next,omitempty"`
		Holds []holdJSON `json:"holds"`
	}{IdP: d.IdP.ID, State: d.IdP.State(), Total: d.Total, Next: d.Next, Holds: []holdJSON{}}
	for _, x := range d.Holds {
		out.Holds = append(out.Holds, holdJSON{IdP: x.IdP, Subject: x.Subject, Username: x.Username, Reason: x.Reason, HeldAt: x.HeldAt,
			Removed: x.Removed, Holds: x.Holds, People: x.People, Limit: x.Limit, Window: x.Window.String(), SessionsRevoked: x.SessionsRevoked})
	}
	writeJSON(w, http.StatusOK, out)
}
