package admin

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/usherhq/usher/store"
)

const (
	// maxHits bounds a search's answer.
	maxHits = 100
	// browsePage is how many bindings the user list shows without a query.
	browsePage = 50
	// timelineLimit bounds the events a timeline shows.
	timelineLimit = 500
)

type userHit struct {
	store.Binding
	Match string // what matched: "username", "subject", "email"; "" when browsing
}

type usersData struct {
	Q         string
	Hits      []userHit
	Truncated bool   // the search stopped at scanLimit bindings or maxHits hits
	Next      string // browsing: the cursor of the next page
}

// searchUsers finds bindings by exact username, by substring of username
// or subject over at most scanLimit bindings, and by the e-mail recent
// login events carry. Without q it lists bindings from the cursor after.
func (h *handler) searchUsers(ctx context.Context, q, after string) (usersData, error) {
	d := usersData{Q: q}
	if after != "" && !strings.Contains(after, "\x00") {
		// Cursors are idp NUL subject, as bindingCursor writes them; any
		// other value is a hand-made URL, not a store failure.
		after = ""
	}
	if q == "" {
		err := h.eachBinding(ctx, after, browsePage, func(b store.Binding) bool {
			d.Hits = append(d.Hits, userHit{Binding: b})
			return true
		})
		if len(d.Hits) == browsePage {
			d.Next = bindingCursor(d.Hits[len(d.Hits)-1].Binding)
		}
		return d, err
	}
	seen := map[string]bool{}
	add := func(b store.Binding, match string) bool {
		k := bindingCursor(b)
		if seen[k] {
			return true
		}
		if len(d.Hits) >= maxHits {
			d.Truncated = true
			return false
		}
		seen[k] = true
		d.Hits = append(d.Hits, userHit{Binding: b, Match: match})
		return true
	}
	b, err := h.o.Store.BindingByUsername(ctx, q)
	switch {
	case err == nil:
		add(b, "username")
	case !errors.Is(err, store.ErrNotFound):
		return d, fmt.Errorf("admin: search %q: %w", q, err)
	}
	lq := strings.ToLower(q)
	scanned := 0
	err = h.eachBinding(ctx, "", scanLimit, func(b store.Binding) bool {
		scanned++
		switch {
		case strings.Contains(strings.ToLower(b.Username), lq):
			return add(b, "username")
		case strings.Contains(strings.ToLower(b.Subject), lq):
			return add(b, "subject")
		}
		return true
	})
	if err != nil {
		return d, fmt.Errorf("admin: search %q: %w", q, err)
	}
	if scanned >= scanLimit {
		d.Truncated = true
	}
	if strings.Contains(q, "@") {
		// The store keeps no e-mail column; logins record it in Detail.
		evs, err := h.o.Store.Audit(ctx, store.AuditFilter{Action: "login", Limit: scanLimit})
		if err != nil {
			return d, fmt.Errorf("admin: search %q by e-mail: %w", q, err)
		}
		for _, e := range evs {
			if seen[e.IdP+"\x00"+e.Subject] || !strings.Contains(strings.ToLower(loginEmail(e.Detail)), lq) {
				continue
			}
			b, err := h.o.Store.Binding(ctx, e.IdP, e.Subject)
			if errors.Is(err, store.ErrNotFound) {
				continue
			}
			if err != nil {
				return d, fmt.Errorf("admin: search %q by e-mail: %w", q, err)
			}
			if !add(b, "email") {
				break
			}
		}
	}
	return d, nil
}

// usersQuery reads a search (q) and a browsing cursor (after).
func usersQuery(r *http.Request) (q, after string, err error) {
	q, after = strings.TrimSpace(r.URL.Query().Get("q")), r.URL.Query().Get("after")
	// The cursor is idp NUL subject: only its parts must be text.
	idp, subject, _ := strings.Cut(after, "\x00")
	return q, after, checkFields(false, "the search", q, "the cursor", idp+subject)
}

func (h *handler) usersPage(w http.ResponseWriter, r *http.Request) {
	q, after, err := usersQuery(r)
	if err != nil {
		h.fail(w, r, http.StatusBadRequest, "Bad search: "+err.Error(), nil)
		return
	}
	d, err := h.searchUsers(r.Context(), q, after)
	if err != nil {
		h.fail(w, r, http.StatusInternalServerError, "The search failed.", err)
		return
	}
	h.render(w, r, http.StatusOK, "users", "Users", d)
}

type appView struct {
	App     string
	State   *store.AppState
	Managed []store.Membership
	// AccountID is the app's own id of the person (Atlassian Cloud), "".
	AccountID string
}

type timelineData struct {
	IdP, Subject string
	Binding      *store.Binding
	AccessExpiry time.Time
	Events       []eventView
	Apps         []appView
	// Changes are what "Sync now" or "Reinstate" did; Did names which
	// ("" when neither ran), telling an empty list from no action.
	Changes []string
	Did     string
	// Removed: some app holds a removal of this person, which "Sync now"
	// does not undo and "Reinstate" does.
	Removed bool
	// Directory is the IdP's directory, "" when it has none: then the
	// page offers no "sync from the directory".
	Directory string
	Now       time.Time
}

// timeline gathers why a person has what: their audit events (newest
// first), and per app what usher last applied and which groups it
// manages. ErrNotFound when usher knows nothing of the identity.
func (h *handler) timeline(ctx context.Context, idp, subject string) (timelineData, error) {
	d := timelineData{IdP: idp, Subject: subject, Now: h.now(), Directory: h.dirs().DirectoryOf(idp)}
	st := h.o.Store
	b, err := st.Binding(ctx, idp, subject)
	switch {
	case err == nil:
		d.Binding = &b
	case !errors.Is(err, store.ErrNotFound):
		return d, fmt.Errorf("admin: timeline %s/%s: %w", idp, subject, err)
	}
	byID := map[int64]store.Event{}
	if d.Binding != nil {
		evs, err := st.Audit(ctx, store.AuditFilter{IdP: idp, Username: b.Username, Limit: timelineLimit})
		if err != nil {
			return d, fmt.Errorf("admin: timeline %s/%s: %w", idp, subject, err)
		}
		for _, e := range evs {
			// Another identity refused this username is not this person's story.
			if e.Subject == subject || e.Subject == "" {
				byID[e.ID] = e
			}
		}
	}
	// Refusals before any binding carry no username; find them by subject
	// among the IdP's recent events.
	evs, err := st.Audit(ctx, store.AuditFilter{IdP: idp, Limit: 4 * timelineLimit})
	if err != nil {
		return d, fmt.Errorf("admin: timeline %s/%s: %w", idp, subject, err)
	}
	for _, e := range evs {
		if e.Subject == subject {
			byID[e.ID] = e
		}
	}
	if d.Binding == nil && len(byID) == 0 {
		return d, fmt.Errorf("admin: timeline %s/%s: %w", idp, subject, store.ErrNotFound)
	}
	all := make([]store.Event, 0, len(byID))
	for _, e := range byID {
		all = append(all, e)
	}
	slices.SortFunc(all, func(a, b store.Event) int {
		return cmp.Or(b.Time.Compare(a.Time), cmp.Compare(b.ID, a.ID))
	})
	if len(all) > timelineLimit {
		all = all[:timelineLimit]
	}
	apps := map[string]bool{}
	for _, e := range all {
		d.Events = append(d.Events, viewEvent(e, true))
		if e.App != "" {
			apps[e.App] = true
		}
	}
	if d.AccessExpiry, err = st.AccessExpiry(ctx, idp, subject); err != nil && !errors.Is(err, store.ErrNotFound) {
		return d, fmt.Errorf("admin: timeline %s/%s: access expiry: %w", idp, subject, err)
	}
	if d.Binding == nil {
		return d, nil
	}
	for _, app := range slices.Sorted(maps.Keys(apps)) {
		v := appView{App: app}
		s, err := st.AppState(ctx, app, b.Username)
		switch {
		case err == nil:
			v.State = &s
		case !errors.Is(err, store.ErrNotFound):
			return d, fmt.Errorf("admin: timeline %s/%s: app %s: %w", idp, subject, app, err)
		}
		if v.Managed, err = st.Managed(ctx, app, b.Username); err != nil {
			return d, fmt.Errorf("admin: timeline %s/%s: app %s: %w", idp, subject, app, err)
		}
		if h.o.AccountID != nil {
			v.AccountID = h.o.AccountID(ctx, app, b.Username)
		}
		d.Apps = append(d.Apps, v)
		d.Removed = d.Removed || v.State != nil && v.State.Deprovisioned
	}
	return d, nil
}

func (h *handler) userPage(w http.ResponseWriter, r *http.Request) {
	idp, subject, ok := h.identity(w, r)
	if !ok {
		return
	}
	d, err := h.timeline(r.Context(), idp, subject)
	if err != nil {
		h.fail(w, r, statusOf(err, http.StatusInternalServerError), "No timeline for "+idp+" / "+subject+".", err)
		return
	}
	h.render(w, r, http.StatusOK, "user", "User "+displayName(d), d)
}

// userAction is a button on a person's page: it changes the apps and
// says what it did.
type userAction func(r *http.Request, idp, subject string) ([]string, error)

func (h *handler) userSync(w http.ResponseWriter, r *http.Request) {
	h.userChanges(w, r, h.syncUser, "Sync")
}

func (h *handler) userReinstate(w http.ResponseWriter, r *http.Request) {
	h.userChanges(w, r, h.reinstateUser, "Reinstate")
}

// userChanges runs a person's action and shows their page with its result.
func (h *handler) userChanges(w http.ResponseWriter, r *http.Request, do userAction, what string) {
	idp, subject, ok := h.identity(w, r)
	if !ok {
		return
	}
	changes, err := do(r, idp, subject)
	if err != nil {
		h.fail(w, r, statusOf(err, http.StatusBadGateway), what+" failed: "+err.Error(), err)
		return
	}
	d, err := h.timeline(r.Context(), idp, subject)
	if err != nil {
		h.fail(w, r, statusOf(err, http.StatusInternalServerError), what+" done, but the timeline could not be read.", err)
		return
	}
	d.Changes, d.Did = changes, what
	h.render(w, r, http.StatusOK, "user", "User "+displayName(d), d)
}

func (h *handler) syncUser(r *http.Request, idp, subject string) ([]string, error) {
	actor := principalOf(r).Actor
	changes, err := h.o.Actions.SyncUser(r.Context(), idp, subject, actor)
	if err != nil {
		return nil, fmt.Errorf("admin: sync %s/%s: %w", idp, subject, err)
	}
	h.log.Info("admin sync", "actor", actor, "idp", idp, "subject", subject, "changes", len(changes))
	return changes, nil
}

func (h *handler) reinstateUser(r *http.Request, idp, subject string) ([]string, error) {
	actor := principalOf(r).Actor
	changes, err := h.o.Actions.Reinstate(r.Context(), idp, subject, actor)
	if err != nil {
		return nil, fmt.Errorf("admin: reinstate %s/%s: %w", idp, subject, err)
	}
	h.log.Info("admin reinstate", "actor", actor, "idp", idp, "subject", subject, "changes", len(changes))
	return changes, nil
}

func displayName(d timelineData) string {
	if d.Binding != nil {
		return d.Binding.Username
	}
	return d.Subject
}

// link binds an identity to existing app accounts by an admin's decision:
// the way in for a person whose IdP's adoption policy refused to take an
// account over.
func (h *handler) link(w http.ResponseWriter, r *http.Request) {
	if idp, subject, _, ok := h.doLink(w, r); ok {
		http.Redirect(w, r, userURL(idp, subject), http.StatusSeeOther)
	}
}

// doLink reads the link form, links, and answers a refusal or failure
// itself (false). The form and the API share it.
func (h *handler) doLink(w http.ResponseWriter, r *http.Request) (idp, subject, username string, ok bool) {
	idp, subject, username, err := linkForm(r)
	if err == nil && !h.configured(idp) {
		err = fmt.Errorf("no identity provider %q is configured", idp)
	}
	if err != nil {
		h.fail(w, r, http.StatusBadRequest, "Not linked: "+err.Error(), nil)
		return "", "", "", false
	}
	actor := principalOf(r).Actor
	if err := h.o.Actions.Link(r.Context(), idp, subject, username, actor); err != nil {
		status := http.StatusInternalServerError
		if errors.Is(err, store.ErrUsernameTaken) {
			status = http.StatusConflict
		}
		h.fail(w, r, status, "Not linked: "+err.Error(), err)
		return "", "", "", false
	}
	h.log.Info("admin link", "actor", actor, "idp", idp, "subject", subject, "username", username)
	return idp, subject, username, true
}

// configured reports an IdP of the config.
func (h *handler) configured(idp string) bool {
	return slices.ContainsFunc(h.o.IdPs, func(x IdP) bool { return x.ID == idp })
}

// linkForm reads and checks the link form's fields.
func linkForm(r *http.Request) (idp, subject, username string, err error) {
	if err := r.ParseForm(); err != nil {
		return "", "", "", errors.New("the form could not be read")
	}
	idp = strings.TrimSpace(r.PostForm.Get("idp"))
	subject = strings.TrimSpace(r.PostForm.Get("subject"))
	username = strings.TrimSpace(r.PostForm.Get("username"))
	if err := checkFields(true, "idp", idp, "subject", subject, "username", username); err != nil {
		return "", "", "", err
	}
	return idp, subject, username, nil
}
