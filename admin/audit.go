package admin

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/usherhq/usher/store"
)

const (
	pageLimit   = 1000    // most events a page or API answer shows
	exportLimit = 100_000 // most events one export streams
	exportBatch = 1000
)

// auditQuery is the audit filter as typed into the form, and parsed.
type auditQuery struct {
	App, IdP, User, Action, Since, Until string
	Limit                                int
	Filter                               store.AuditFilter
}

// Encode returns the query string that selects the same events.
func (q auditQuery) Encode() string {
	v := url.Values{}
	for k, s := range map[string]string{"app": q.App, "idp": q.IdP, "user": q.User, "action": q.Action, "since": q.Since, "until": q.Until} {
		if s != "" {
			v.Set(k, s)
		}
	}
	return v.Encode()
}

// timeLayouts are what a datetime-local input sends, plus what scripts
// send. Times without a zone are UTC, as the pages say.
var timeLayouts = []string{time.RFC3339Nano, "2006-01-02T15:04:05", "2006-01-02T15:04", "2006-01-02"}

func parseTime(s string) (time.Time, error) {
	for _, l := range timeLayouts {
		if t, err := time.ParseInLocation(l, s, time.UTC); err == nil {
			return t.UTC(), nil
		}
	}
	return time.Time{}, fmt.Errorf("%q is not a time (use 2006-01-02T15:04 in UTC, or RFC 3339)", s)
}

func parseAuditQuery(v url.Values, defLimit, maxLimit int) (auditQuery, error) {
	q := auditQuery{
		App: strings.TrimSpace(v.Get("app")), IdP: strings.TrimSpace(v.Get("idp")),
		User: strings.TrimSpace(v.Get("user")), Action: strings.TrimSpace(v.Get("action")),
		Since: strings.TrimSpace(v.Get("since")), Until: strings.TrimSpace(v.Get("until")),
		Limit: defLimit,
	}
	q.Filter = store.AuditFilter{App: q.App, IdP: q.IdP, Username: q.User, Action: q.Action}
	err := checkFields(false, "app", q.App, "idp", q.IdP, "user", q.User, "action", q.Action)
	if err != nil {
		return q, err
	}
	if q.Since != "" {
		if q.Filter.Since, err = parseTime(q.Since); err != nil {
			return q, fmt.Errorf("since: %w", err)
		}
	}
	if q.Until != "" {
		if q.Filter.Until, err = parseTime(q.Until); err != nil {
			return q, fmt.Errorf("until: %w", err)
		}
	}
	if s := v.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n <= 0 {
			return q, fmt.Errorf("limit: %q is not a positive number", s)
		}
		q.Limit = min(n, maxLimit)
	}
	q.Filter.Limit = q.Limit
	return q, nil
}

type auditData struct {
	Query  auditQuery
	Events []eventView
	Export string
}

func (h *handler) auditEvents(ctx context.Context, q auditQuery) ([]eventView, error) {
	evs, err := h.o.Store.Audit(ctx, q.Filter)
	if err != nil {
		return nil, fmt.Errorf("admin: audit: %w", err)
	}
	out := make([]eventView, 0, len(evs))
	for _, e := range evs {
		out = append(out, viewEvent(e, false))
	}
	return out, nil
}

func (h *handler) auditPage(w http.ResponseWriter, r *http.Request) {
	q, err := parseAuditQuery(r.URL.Query(), 100, pageLimit)
	if err != nil {
		h.fail(w, r, http.StatusBadRequest, "Bad filter: "+err.Error(), nil)
		return
	}
	evs, err := h.auditEvents(r.Context(), q)
	if err != nil {
		h.fail(w, r, http.StatusInternalServerError, "The audit log could not be read.", err)
		return
	}
	h.render(w, r, http.StatusOK, "audit", "Audit log", auditData{Query: q, Events: evs, Export: "/admin/audit.jsonl?" + q.Encode()})
}

// auditExport streams matching events as JSON lines, newest first, in
// batches, so a large export holds one batch in memory at a time.
func (h *handler) auditExport(w http.ResponseWriter, r *http.Request) {
	q, err := parseAuditQuery(r.URL.Query(), exportLimit, exportLimit)
	if err != nil {
		h.fail(w, r, http.StatusBadRequest, "Bad filter: "+err.Error(), nil)
		return
	}
	started := false
	bw := bufio.NewWriterSize(w, 64<<10)
	enc := json.NewEncoder(bw)
	flusher, _ := w.(http.Flusher)
	n, err := h.eachEvent(r.Context(), q.Filter, q.Limit, func(batch []store.Event) error {
		if !started {
			w.Header().Set("Content-Type", "application/x-ndjson")
			w.Header().Set("Content-Disposition", `attachment; filename="usher-audit.jsonl"`)
			w.WriteHeader(http.StatusOK)
			started = true
		}
		for _, e := range batch {
			if err := enc.Encode(viewEvent(e, false)); err != nil {
				return err
			}
		}
		if err := bw.Flush(); err != nil {
			return err
		}
		if flusher != nil {
			flusher.Flush()
		}
		return nil
	})
	switch {
	case err != nil && !started:
		h.fail(w, r, http.StatusInternalServerError, "The audit log could not be read.", err)
	case err != nil:
		// Too late for a status: the client sees a short file.
		h.log.Error("admin: audit export cut short", "events", n, "err", err)
	case !started:
		w.Header().Set("Content-Type", "application/x-ndjson")
		w.WriteHeader(http.StatusOK)
	default:
		h.log.Info("admin: audit exported", "actor", principalOf(r).Actor, "events", n)
	}
}

// eachEvent pages through the events matching f, newest first, handing fn
// at most limit of them in batches. The store pages only by time, so the
// next page ends just after the last time seen and drops the events
// already handed out (same time, ID not below the last one).
func (h *handler) eachEvent(ctx context.Context, f store.AuditFilter, limit int, fn func([]store.Event) error) (int, error) {
	sent, batch := 0, exportBatch
	var last *store.Event
	for sent < limit {
		q := f
		q.Limit = batch
		if last != nil {
			q.Until = last.Time.Add(time.Millisecond)
			if !f.Until.IsZero() && f.Until.Before(q.Until) {
				q.Until = f.Until
			}
		}
		evs, err := h.o.Store.Audit(ctx, q)
		if err != nil {
			return sent, fmt.Errorf("admin: audit export: %w", err)
		}
		fresh := evs[:0:0]
		for _, e := range evs {
			if last != nil && e.Time.Equal(last.Time) && e.ID >= last.ID {
				continue
			}
			fresh = append(fresh, e)
		}
		if len(fresh) == 0 {
			if len(evs) < q.Limit {
				return sent, nil
			}
			// A whole batch inside one millisecond, all seen: widen it.
			batch *= 2
			continue
		}
		fresh = fresh[:min(len(fresh), limit-sent)]
		if err := fn(fresh); err != nil {
			return sent, err
		}
		sent += len(fresh)
		e := fresh[len(fresh)-1]
		last = &e
		if len(evs) < q.Limit {
			return sent, nil
		}
	}
	return sent, nil
}
