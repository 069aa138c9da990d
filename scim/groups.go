package scim

import (
	"errors"
	"net/http"
	"slices"
	"strings"

	"github.com/elimity-com/scim/schema"
	"github.com/google/uuid"
	filter "github.com/scim2/filter-parser/v2"

	"github.com/usherhq/usher/store"
)

// group is the writable part of a group.
type group struct {
	displayName, externalID string
	members                 []string // user ids
}

// parseGroupBody reads a POST/PUT group body. Data under any extension
// schema is dropped and logged, as for users (see normalizeUser): usher
// serves no group extension. Naming one in "schemas" is fine (Entra names
// its own).
func (s *server) parseGroupBody(r *request, raw []byte) (group, error) {
	m, err := decodeObject(raw)
	if err != nil {
		return group{}, err
	}
	if err := requireSchema(m, schema.GroupSchema); err != nil {
		return group{}, err
	}
	var g group
	var dropped []string
	for k, v := range m {
		switch {
		case strings.Contains(k, ":"):
			dropped = append(dropped, k)
		case strings.EqualFold(k, "displayName"):
			g.displayName, _ = v.(string)
		case strings.EqualFold(k, "externalId"):
			if g.externalID, err = optString(k, v); err != nil {
				return group{}, err
			}
		case strings.EqualFold(k, "members"):
			if g.members, err = parseMembers(v); err != nil {
				return group{}, err
			}
		}
	}
	s.noteDropped(r, dropped)
	if strings.TrimSpace(g.displayName) == "" {
		return group{}, invalidValue("displayName is required")
	}
	if err := checkGroupText(g); err != nil {
		return group{}, err
	}
	return g, nil
}

func optString(name string, v any) (string, error) {
	if v == nil {
		return "", nil
	}
	s, ok := v.(string)
	if !ok {
		return "", invalidValue("%s must be a string", name)
	}
	return s, nil
}

// parseMembers reads [{"value": "<user id>", ...}]; a single object is a
// one-element list.
func parseMembers(v any) ([]string, error) {
	var list []any
	switch t := v.(type) {
	case nil:
		return nil, nil
	case []any:
		list = t
	case map[string]any:
		list = []any{t}
	default:
		return nil, invalidValue("members must be a list of objects")
	}
	var ids []string
	for _, e := range list {
		m, ok := e.(map[string]any)
		if !ok {
			return nil, invalidValue("members must be a list of objects")
		}
		id, ok := lookupFold(m, "value").(string)
		if !ok || id == "" {
			return nil, invalidValue("each member needs a string value (a user id)")
		}
		if !slices.Contains(ids, id) {
			ids = append(ids, id)
		}
	}
	return ids, nil
}

func (s *server) createGroup(w http.ResponseWriter, r *request) error {
	raw, err := s.body(w, r)
	if err != nil {
		return err
	}
	g, err := s.parseGroupBody(r, raw)
	if err != nil {
		return err
	}
	id := uuid.NewString()
	saved, err := s.saveGroup(r, nil, id, g)
	if err != nil {
		return err
	}
	w.Header().Set("Location", s.location(r.Request, "Groups", id))
	return s.writeGroup(w, r, http.StatusCreated, saved)
}

func (s *server) getGroup(w http.ResponseWriter, r *request, id string) error {
	g, err := s.store.SCIMGroup(r.Context(), r.idp.ID, id)
	if err != nil {
		return storeErr(err, "Group", id)
	}
	return s.writeGroup(w, r, http.StatusOK, g)
}

func (s *server) replaceGroup(w http.ResponseWriter, r *request, id string) error {
	raw, err := s.body(w, r)
	if err != nil {
		return err
	}
	g, err := s.parseGroupBody(r, raw)
	if err != nil {
		return err
	}
	defer s.lock(r.idp.ID, "Group", id)()
	prev, err := s.store.SCIMGroup(r.Context(), r.idp.ID, id)
	if err != nil {
		return storeErr(err, "Group", id)
	}
	saved, err := s.saveGroup(r, &prev, id, g)
	if err != nil {
		return err
	}
	return s.writeGroup(w, r, http.StatusOK, saved)
}

func (s *server) patchGroup(w http.ResponseWriter, r *request, id string) error {
	raw, err := s.body(w, r)
	if err != nil {
		return err
	}
	ops, err := parsePatch(raw)
	if err != nil {
		return err
	}
	defer s.lock(r.idp.ID, "Group", id)()
	prev, err := s.store.SCIMGroup(r.Context(), r.idp.ID, id)
	if err != nil {
		return storeErr(err, "Group", id)
	}
	g := group{displayName: prev.DisplayName, externalID: prev.ExternalID, members: slices.Clone(prev.Members)}
	for _, op := range ops {
		if err := applyGroupOp(&g, op); err != nil {
			return err
		}
	}
	if strings.TrimSpace(g.displayName) == "" {
		return invalidValue("displayName is required")
	}
	if err := checkGroupText(g); err != nil {
		return err
	}
	saved, err := s.saveGroup(r, &prev, id, g)
	if err != nil {
		return err
	}
	return s.writeGroup(w, r, http.StatusOK, saved)
}

func (s *server) deleteGroup(w http.ResponseWriter, r *request, id string) error {
	ctx := r.Context()
	defer s.lock(r.idp.ID, "Group", id)()
	prev, err := s.store.SCIMGroup(ctx, r.idp.ID, id)
	if err != nil {
		return storeErr(err, "Group", id)
	}
	if err := s.store.DeleteSCIMGroup(ctx, r.idp.ID, id); err != nil {
		return storeErr(err, "Group", id)
	}
	if r.idp.Automatic {
		for _, m := range prev.Members {
			s.provisionByID(ctx, r.idp, m)
		}
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// saveGroup stores a group and, when Automatic, re-provisions the members
// whose groups changed: those added or removed, or all of them when the
// group was renamed.
func (s *server) saveGroup(r *request, prev *store.SCIMGroup, id string, g group) (store.SCIMGroup, error) {
	ctx, d := r.Context(), r.idp
	rec := store.SCIMGroup{
		IdP: d.ID, ID: id, ExternalID: g.externalID, DisplayName: g.displayName,
		Members: g.members, Created: s.now(), Updated: s.now(),
	}
	if prev != nil {
		rec.Created = prev.Created
	}
	if err := s.store.PutSCIMGroup(ctx, rec); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			e := invalidValue("every member must be a user of this IdP")
			e.cause = err
			return store.SCIMGroup{}, e
		}
		return store.SCIMGroup{}, storeErr(err, "Group", id)
	}
	saved, err := s.store.SCIMGroup(ctx, d.ID, id)
	if err != nil {
		s.log.Error("scim: read back stored group", "idp", d.ID, "id", id, "err", err)
		saved = rec
	}
	if d.Automatic {
		var before []string
		renamed := false
		if prev != nil {
			before, renamed = prev.Members, prev.DisplayName != g.displayName
		}
		for _, m := range changedMembers(before, g.members, renamed) {
			s.provisionByID(ctx, d, m)
		}
	}
	return saved, nil
}

func changedMembers(before, after []string, all bool) []string {
	var out []string
	for _, m := range after {
		if all || !slices.Contains(before, m) {
			out = append(out, m)
		}
	}
	for _, m := range before {
		if !slices.Contains(after, m) {
			out = append(out, m)
		}
	}
	return out
}

// applyGroupOp applies one PATCH operation. Both IdPs' member shapes are
// taken: Entra's {"path": "members", "value": [{"value": id}]} for add and
// remove, and Okta's and Entra's `members[value eq "id"]` remove.
func applyGroupOp(g *group, op patchOp) error {
	if op.path == "" {
		obj, ok := op.value.(map[string]any)
		if !ok {
			return invalidValue("an operation without a path needs an object value")
		}
		for k, v := range obj {
			if err := applyGroupAttr(g, op.op, k, nil, v); err != nil {
				return err
			}
		}
		return nil
	}
	if err := checkFilterSize(op.path); err != nil {
		return err
	}
	p, err := filter.ParsePath([]byte(op.path))
	if err != nil {
		return invalidPath("cannot parse path %q", op.path)
	}
	ap := p.AttributePath
	if uri := ap.URI(); (uri != "" && !strings.EqualFold(uri, schema.GroupSchema)) || ap.SubAttribute != nil || p.SubAttribute != nil {
		return invalidPath("unsupported path %q", op.path)
	}
	return applyGroupAttr(g, op.op, ap.AttributeName, p.ValueExpression, op.value)
}

func applyGroupAttr(g *group, op, name string, sel filter.Expression, v any) error {
	switch {
	case strings.EqualFold(name, "id"), strings.EqualFold(name, "schemas"), strings.EqualFold(name, "meta"):
		return nil // Okta repeats the id in a no-path replace
	case sel != nil && !strings.EqualFold(name, "members"):
		return invalidPath("%s takes no filter", name)
	case strings.EqualFold(name, "displayName"):
		if op == "remove" {
			return mutability("displayName is required")
		}
		s, ok := v.(string)
		if !ok {
			return invalidValue("displayName must be a string")
		}
		g.displayName = s
	case strings.EqualFold(name, "externalId"):
		if op == "remove" {
			g.externalID = ""
			return nil
		}
		s, err := optString("externalId", v)
		if err != nil {
			return err
		}
		g.externalID = s
	case strings.EqualFold(name, "members"):
		return applyMembers(g, op, sel, v)
	default:
		return invalidPath("unknown group attribute %q", name)
	}
	return nil
}

func applyMembers(g *group, op string, sel filter.Expression, v any) error {
	if sel != nil {
		if op != "remove" {
			return invalidPath("members with a filter can only be removed")
		}
		g.members = slices.DeleteFunc(g.members, func(m string) bool {
			return matchElem(sel, map[string]any{"value": m})
		})
		return nil
	}
	ids, err := parseMembers(v)
	if err != nil {
		return err
	}
	switch op {
	case "replace":
		g.members = ids
	case "add":
		for _, id := range ids {
			if !slices.Contains(g.members, id) {
				g.members = append(g.members, id)
			}
		}
	case "remove":
		if v == nil {
			g.members = nil // remove "members" without a value: all of them
			return nil
		}
		g.members = slices.DeleteFunc(g.members, func(m string) bool { return slices.Contains(ids, m) })
	}
	return nil
}

// groupDoc renders a group; Entra asks for excludedAttributes=members.
func (s *server) groupDoc(r *http.Request, g store.SCIMGroup) map[string]any {
	doc := map[string]any{
		"schemas":     []string{schema.GroupSchema},
		"id":          g.ID,
		"displayName": g.DisplayName,
		"meta": map[string]any{
			"resourceType": "Group",
			"created":      formatTime(g.Created),
			"lastModified": formatTime(g.Updated),
			"location":     s.location(r, "Groups", g.ID),
			"version":      version(g.Version),
		},
	}
	if g.ExternalID != "" {
		doc["externalId"] = g.ExternalID
	}
	if !excluded(r, "members") {
		members := make([]any, 0, len(g.Members))
		for _, m := range g.Members {
			members = append(members, map[string]any{"value": m, "$ref": s.location(r, "Users", m)})
		}
		doc["members"] = members
	}
	return doc
}

func excluded(r *http.Request, attr string) bool {
	for _, a := range strings.Split(r.URL.Query().Get("excludedAttributes"), ",") {
		if strings.EqualFold(strings.TrimSpace(a), attr) {
			return true
		}
	}
	return false
}

func (s *server) writeGroup(w http.ResponseWriter, r *request, status int, g store.SCIMGroup) error {
	w.Header().Set("ETag", version(g.Version))
	return writeJSON(w, status, s.groupDoc(r.Request, g))
}

func (s *server) listGroups(w http.ResponseWriter, r *request) error {
	return listResources(w, r, groupFinder(s, r.idp), s.store.SCIMGroups, s.groupDoc)
}
