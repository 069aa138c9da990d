package scim

import (
	"context"
	"errors"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/elimity-com/scim/schema"
	filter "github.com/scim2/filter-parser/v2"

	"github.com/usherhq/usher/store"
)

// page is a list request's startIndex (1-based) and count.
type page struct{ start, count int }

// parsePage reads startIndex and count (RFC 7644 §3.4.2.4): below 1 means
// 1, a negative count means 0 (totals only), more than maxResults is cut.
func parsePage(r *http.Request) (page, error) {
	pg := page{start: 1, count: maxResults}
	q := r.URL.Query()
	for _, p := range []struct {
		name string
		dst  *int
	}{{"startIndex", &pg.start}, {"count", &pg.count}} {
		v := strings.TrimSpace(q.Get(p.name))
		if v == "" {
			continue
		}
		n, err := strconv.Atoi(v)
		if err != nil {
			return page{}, invalidValue("%s must be an integer", p.name)
		}
		*p.dst = n
	}
	pg.start = max(pg.start, 1)
	pg.count = min(max(pg.count, 0), maxResults)
	return pg, nil
}

func pageOf[T any](all []T, pg page) []T {
	lo := min(pg.start-1, len(all))
	hi := min(lo+pg.count, len(all))
	return all[lo:hi]
}

func writeList(w http.ResponseWriter, pg page, total int, res []any) error {
	return writeJSON(w, http.StatusOK, map[string]any{
		"schemas":      []string{listURN},
		"totalResults": total,
		"startIndex":   pg.start,
		"itemsPerPage": len(res),
		"Resources":    res,
	})
}

// finder evaluates list filters against the store, which can only look
// resources up by a few unique attributes. So a filter is an eq on one of
// those (keys), or an and/or of such; a value path ("members[value eq
// ...]") may narrow an and, through pred.
// listResources answers a list request for users or groups: a filtered
// search through find, or a page of the IdP's resources from the store.
func listResources[T any](w http.ResponseWriter, r *request, find finder[T],
	list func(ctx context.Context, idp string, offset, limit int) ([]T, int, error),
	doc func(*http.Request, T) map[string]any) error {
	pg, err := parsePage(r.Request)
	if err != nil {
		return err
	}
	var (
		items []T
		total int
	)
	if f := strings.TrimSpace(r.URL.Query().Get("filter")); f != "" {
		all, err := find.eval(r.Context(), f)
		if err != nil {
			return err
		}
		total, items = len(all), pageOf(all, pg)
	} else if items, total, err = list(r.Context(), r.idp.ID, pg.start-1, pg.count); err != nil {
		return unavailable(err)
	}
	res := make([]any, 0, len(items))
	for _, it := range items {
		res = append(res, doc(r.Request, it))
	}
	return writeList(w, pg, total, res)
}

type finder[T any] struct {
	kind string
	core string            // the resource's core schema URN, allowed as prefix
	keys map[string]string // lower-case filter attribute -> store attribute
	find func(ctx context.Context, attr, value string) (T, error)
	id   func(T) string
	pred func(T, *filter.ValuePath) (bool, error)
}

func userFinder(s *server, d *idp) finder[store.SCIMUser] {
	return finder[store.SCIMUser]{
		kind: "User",
		core: schema.UserSchema,
		keys: map[string]string{"username": "userName", "externalid": "externalId", "id": "id"},
		find: func(ctx context.Context, attr, value string) (store.SCIMUser, error) {
			if attr == "id" {
				return s.store.SCIMUser(ctx, d.ID, value)
			}
			return s.store.FindSCIMUser(ctx, d.ID, attr, value)
		},
		id: func(u store.SCIMUser) string { return u.ID },
	}
}

func groupFinder(s *server, d *idp) finder[store.SCIMGroup] {
	return finder[store.SCIMGroup]{
		kind: "Group",
		core: schema.GroupSchema,
		keys: map[string]string{"displayname": "displayName", "externalid": "externalId", "id": "id"},
		find: func(ctx context.Context, attr, value string) (store.SCIMGroup, error) {
			if attr == "id" {
				return s.store.SCIMGroup(ctx, d.ID, value)
			}
			return s.store.FindSCIMGroup(ctx, d.ID, attr, value)
		},
		id: func(g store.SCIMGroup) string { return g.ID },
		pred: func(g store.SCIMGroup, vp *filter.ValuePath) (bool, error) {
			if vp.AttributePath.URI() != "" || !strings.EqualFold(vp.AttributePath.AttributeName, "members") ||
				vp.AttributePath.SubAttribute != nil {
				return false, invalidFilter("only members[...] may narrow a group filter")
			}
			for _, m := range g.Members {
				if matchElem(vp.ValueFilter, map[string]any{"value": m}) {
					return true, nil
				}
			}
			return false, nil
		},
	}
}

// Filter bounds: the parser recurses without limit, and IdPs send short
// filters (userName eq "…", at most an and/or of two).
const (
	maxFilterLen   = 2048
	maxFilterDepth = 16
)

// checkFilterSize refuses filters too long or too deeply nested to be a
// real IdP's, before the parser sees them.
func checkFilterSize(raw string) error {
	if len(raw) > maxFilterLen {
		return invalidFilter("filter longer than %d bytes", maxFilterLen)
	}
	depth := 0
	for _, c := range raw {
		switch c {
		case '(', '[':
			if depth++; depth > maxFilterDepth {
				return invalidFilter("filter nested deeper than %d", maxFilterDepth)
			}
		case ')', ']':
			depth--
		}
	}
	return nil
}

func (f finder[T]) eval(ctx context.Context, raw string) ([]T, error) {
	if err := checkFilterSize(raw); err != nil {
		return nil, err
	}
	expr, err := filter.ParseFilter([]byte(raw))
	if err != nil {
		return nil, invalidFilter("cannot parse filter %q", raw)
	}
	return f.evalExpr(ctx, expr)
}

func (f finder[T]) evalExpr(ctx context.Context, e filter.Expression) ([]T, error) {
	switch t := e.(type) {
	case *filter.AttributeExpression:
		return f.lookup(ctx, t)
	case *filter.LogicalExpression:
		if t.Operator == filter.AND {
			left, right := t.Left, t.Right
			if _, ok := left.(*filter.ValuePath); ok {
				left, right = right, left
			}
			if vp, ok := right.(*filter.ValuePath); ok && f.pred != nil {
				cands, err := f.evalExpr(ctx, left)
				if err != nil {
					return nil, err
				}
				var out []T
				for _, c := range cands {
					ok, err := f.pred(c, vp)
					if err != nil {
						return nil, err
					}
					if ok {
						out = append(out, c)
					}
				}
				return out, nil
			}
		}
		l, err := f.evalExpr(ctx, t.Left)
		if err != nil {
			return nil, err
		}
		r, err := f.evalExpr(ctx, t.Right)
		if err != nil {
			return nil, err
		}
		if t.Operator == filter.AND {
			var out []T
			for _, a := range l {
				for _, b := range r {
					if f.id(a) == f.id(b) {
						out = append(out, a)
						break
					}
				}
			}
			return out, nil
		}
		out := l
		for _, b := range r {
			dup := false
			for _, a := range l {
				dup = dup || f.id(a) == f.id(b)
			}
			if !dup {
				out = append(out, b)
			}
		}
		return out, nil
	}
	return nil, f.unsupported()
}

func (f finder[T]) unsupported() error {
	names := slices.Sorted(maps.Values(f.keys))
	return invalidFilter("%s filters support eq on %s, joined by and/or", f.kind, strings.Join(names, ", "))
}

func (f finder[T]) lookup(ctx context.Context, e *filter.AttributeExpression) ([]T, error) {
	p := e.AttributePath
	if uri := p.URI(); (uri != "" && !strings.EqualFold(uri, f.core)) || p.SubAttribute != nil || e.Operator != filter.EQ {
		return nil, f.unsupported()
	}
	attr, ok := f.keys[strings.ToLower(p.AttributeName)]
	if !ok {
		return nil, f.unsupported()
	}
	value, ok := e.CompareValue.(string)
	if !ok {
		return nil, invalidFilter("%s must be compared with a string", attr)
	}
	if textProblem(value) != "" {
		// No stored resource holds such a value (saving refuses it), and
		// PostgreSQL would fail on a NUL: the answer is "none", which
		// leads the IdP to the create that says what is wrong.
		return nil, nil
	}
	r, err := f.find(ctx, attr, value)
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, unavailable(err)
	}
	return []T{r}, nil
}
