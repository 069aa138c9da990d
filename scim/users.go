package scim

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"strings"

	scimerr "github.com/elimity-com/scim/errors"
	"github.com/elimity-com/scim/schema"
	"github.com/google/uuid"

	"github.com/usherhq/usher/store"
)

const (
	enterpriseURN = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
	patchOpURN    = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
	listURN       = "urn:ietf:params:scim:api:messages:2.0:ListResponse"
)

// attrs is a user resource as stored: canonical attribute names, no id,
// meta, schemas or password; the enterprise extension under its URN.
type attrs map[string]any

func (a attrs) str(k string) string {
	s, _ := a[k].(string)
	return s
}

func (a attrs) ext() map[string]any {
	m, _ := a[enterpriseURN].(map[string]any)
	return m
}

// decodeObject parses a JSON object, keeping numbers as json.Number.
func decodeObject(raw []byte) (map[string]any, error) {
	d := json.NewDecoder(bytes.NewReader(raw))
	d.UseNumber()
	var m map[string]any
	if err := d.Decode(&m); err != nil || m == nil {
		return nil, invalidSyntax("the body is not a JSON object")
	}
	if d.More() {
		return nil, invalidSyntax("the body has data after the JSON object")
	}
	return m, nil
}

// requireSchema checks the "schemas" list names core. A missing or foreign
// schema is invalidSyntax: RFC 7644 §3.12 keeps invalidValue for attribute
// values and invalidSyntax for a body that does not conform to the request
// schema, which "schemas" declares.
func requireSchema(m map[string]any, core string) error {
	list, _ := m["schemas"].([]any)
	for _, v := range list {
		if s, ok := v.(string); ok && strings.EqualFold(s, core) {
			return nil
		}
	}
	return invalidSyntax("schemas must list %s", core)
}

// parseUserBody reads a POST/PUT user body.
func (s *server) parseUserBody(raw []byte) (attrs, error) {
	m, err := decodeObject(raw)
	if err != nil {
		return nil, err
	}
	if err := requireSchema(m, schema.UserSchema); err != nil {
		return nil, err
	}
	return s.normalizeUser(m)
}

// normalizeUser validates a user against the core and enterprise schemas
// and returns it in canonical form. It accepts what Entra and Okta send
// beyond the letter of RFC 7643: booleans as strings in any case, the
// manager as a bare id, and drops what must not be stored.
func (s *server) normalizeUser(m map[string]any) (attrs, error) {
	out := attrs{}
	var ext map[string]any
	for k, v := range m {
		switch {
		case strings.EqualFold(k, enterpriseURN):
			e, ok := v.(map[string]any)
			if !ok && v != nil {
				return nil, invalidValue("%s must be an object", enterpriseURN)
			}
			ext = e
			delete(m, k)
		case strings.EqualFold(k, "externalId"):
			if v != nil {
				id, ok := v.(string)
				if !ok {
					return nil, invalidValue("externalId must be a string")
				}
				if id != "" {
					out["externalId"] = id
				}
			}
			delete(m, k)
		case strings.EqualFold(k, "password"):
			// Okta sends one on create; usher never authenticates with it.
			delete(m, k)
		}
	}
	if u, _ := lookupFold(m, "userName").(string); strings.TrimSpace(u) == "" {
		return nil, invalidValue("userName is required")
	}
	coerce(m, s.userRes.Attributes)
	m["schemas"] = []any{schema.UserSchema}
	core, serr := s.userRes.Validate(m)
	if serr != nil {
		return nil, fromLib(serr, "user")
	}
	for k, v := range core {
		if v = prune(v); v != nil {
			out[k] = v
		}
	}
	if ext != nil {
		if mgr, ok := lookupFold(ext, "manager").(string); ok {
			setFold(ext, "manager", map[string]any{"value": mgr})
		}
		coerce(ext, s.enterRes.Attributes)
		ev, serr := s.enterRes.ValidateExtension(ext)
		if serr != nil {
			return nil, fromLib(serr, "enterprise extension")
		}
		if v := prune(map[string]any(ev)); v != nil {
			out[enterpriseURN] = v
		}
	}
	return out, nil
}

// fromLib turns the library's generic validation errors into ours, with a
// detail that says where.
func fromLib(e *scimerr.ScimError, where string) *apiError {
	return newErr(e.Status, e.ScimType, "%s: %s", where, e.Detail)
}

func lookupFold(m map[string]any, key string) any {
	for k, v := range m {
		if strings.EqualFold(k, key) {
			return v
		}
	}
	return nil
}

func setFold(m map[string]any, key string, v any) {
	for k := range m {
		if strings.EqualFold(k, key) {
			delete(m, k)
		}
	}
	m[key] = v
}

// prune drops nulls, empty lists and empty objects, which the schema
// validation leaves behind (Entra sends "roles": []).
func prune(v any) any {
	switch t := v.(type) {
	case nil:
		return nil
	case map[string]any:
		for k, sv := range t {
			if sv = prune(sv); sv == nil {
				delete(t, k)
			} else {
				t[k] = sv
			}
		}
		if len(t) == 0 {
			return nil
		}
	case []any:
		var out []any
		for _, e := range t {
			if e = prune(e); e != nil {
				out = append(out, e)
			}
		}
		if len(out) == 0 {
			return nil
		}
		return out
	}
	return v
}

func (s *server) createUser(w http.ResponseWriter, r *request) error {
	raw, err := s.body(w, r)
	if err != nil {
		return err
	}
	a, err := s.parseUserBody(raw)
	if err != nil {
		return err
	}
	if _, ok := a["active"]; !ok {
		a["active"] = true // absent means active, as Okta and Entra assume
	}
	id := uuid.NewString()
	saved, err := s.saveUser(r, nil, id, a)
	if err != nil {
		return err
	}
	w.Header().Set("Location", s.location(r.Request, "Users", id))
	return s.writeUser(w, r, http.StatusCreated, saved)
}

func (s *server) getUser(w http.ResponseWriter, r *request, id string) error {
	u, err := s.store.SCIMUser(r.Context(), r.idp.ID, id)
	if err != nil {
		return storeErr(err, "User", id)
	}
	return s.writeUser(w, r, http.StatusOK, u)
}

func (s *server) replaceUser(w http.ResponseWriter, r *request, id string) error {
	raw, err := s.body(w, r)
	if err != nil {
		return err
	}
	a, err := s.parseUserBody(raw)
	if err != nil {
		return err
	}
	defer s.lock(r.idp.ID, "User", id)()
	prev, err := s.store.SCIMUser(r.Context(), r.idp.ID, id)
	if err != nil {
		return storeErr(err, "User", id)
	}
	if _, ok := a["active"]; !ok {
		// A PUT without active must not quietly reactivate anybody.
		a["active"] = prev.Active
	}
	saved, err := s.saveUser(r, &prev, id, a)
	if err != nil {
		return err
	}
	return s.writeUser(w, r, http.StatusOK, saved)
}

func (s *server) patchUser(w http.ResponseWriter, r *request, id string) error {
	raw, err := s.body(w, r)
	if err != nil {
		return err
	}
	ops, err := parsePatch(raw)
	if err != nil {
		return err
	}
	defer s.lock(r.idp.ID, "User", id)()
	prev, err := s.store.SCIMUser(r.Context(), r.idp.ID, id)
	if err != nil {
		return storeErr(err, "User", id)
	}
	var cur map[string]any
	if err := json.Unmarshal(prev.Resource, &cur); err != nil || cur == nil {
		cur = map[string]any{}
	}
	cur["active"] = prev.Active
	for _, op := range ops {
		if err := s.applyUserOp(cur, op); err != nil {
			return err
		}
	}
	a, err := s.normalizeUser(cur)
	if err != nil {
		return err
	}
	if _, ok := a["active"]; !ok {
		a["active"] = prev.Active
	}
	saved, err := s.saveUser(r, &prev, id, a)
	if err != nil {
		return err
	}
	return s.writeUser(w, r, http.StatusOK, saved)
}

func (s *server) deleteUser(w http.ResponseWriter, r *request, id string) error {
	ctx := r.Context()
	defer s.lock(r.idp.ID, "User", id)()
	prev, err := s.store.SCIMUser(ctx, r.idp.ID, id)
	if err != nil {
		return storeErr(err, "User", id)
	}
	if err := s.store.DeleteSCIMUser(ctx, r.idp.ID, id); err != nil {
		ae := storeErr(err, "User", id)
		if ae.retry {
			// Access goes even when the record cannot: the IdP retries
			// the DELETE, and deprovisioning is idempotent.
			s.deprovision(ctx, r.idp, prev.Subject, ReasonDeleted)
		}
		return ae
	}
	s.deprovision(ctx, r.idp, prev.Subject, ReasonDeleted)
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// saveUser stores a user and then runs the hooks: Deprovision when the
// user is (or arrives) inactive after being active or unknown, Provision
// when active and the IdP is Automatic. prev is nil on create.
func (s *server) saveUser(r *request, prev *store.SCIMUser, id string, a attrs) (store.SCIMUser, error) {
	ctx, d := r.Context(), r.idp
	active, _ := a["active"].(bool)
	rec := store.SCIMUser{
		IdP: d.ID, ID: id, ExternalID: a.str("externalId"), UserName: a.str("userName"),
		Active: active, Updated: s.now(),
	}
	subject := subjectOf(d, a, id)
	switch {
	case prev != nil && prev.Subject != "":
		rec.Subject, rec.Created = prev.Subject, prev.Created
		if subject != prev.Subject {
			s.log.Warn("scim: subject attribute changed; keeping the subject the user was created with",
				"idp", d.ID, "id", id, "attr", d.SubjectAttr, "subject", prev.Subject)
		}
	case subject == "":
		return store.SCIMUser{}, invalidValue("%s is required: it identifies the person for IdP %s", d.SubjectAttr, d.ID)
	default:
		rec.Subject, rec.Created = subject, s.now()
	}
	res, err := json.Marshal(a)
	if err != nil {
		return store.SCIMUser{}, err
	}
	rec.Resource = res
	deactivated := !active && (prev == nil || prev.Active)
	if err := s.store.PutSCIMUser(ctx, rec); err != nil {
		ae := storeErr(err, "User", id)
		if ae.retry && deactivated {
			s.deprovision(ctx, d, rec.Subject, ReasonDeactivated)
		}
		return store.SCIMUser{}, ae
	}
	saved, err := s.store.SCIMUser(ctx, d.ID, id)
	if err != nil {
		s.log.Error("scim: read back stored user", "idp", d.ID, "id", id, "err", err)
		saved = rec
		if prev != nil {
			saved.Version = prev.Version + 1
		} else {
			saved.Version = 1
		}
	}
	if deactivated {
		s.deprovision(ctx, d, rec.Subject, ReasonDeactivated)
	}
	if active && d.Automatic {
		s.provision(ctx, d, saved, a)
	}
	return saved, nil
}

// subjectOf reads the configured subject attribute.
func subjectOf(d *idp, a attrs, id string) string {
	switch d.SubjectAttr {
	case SubjectUserName:
		return a.str("userName")
	case SubjectID:
		return id
	case SubjectEmployeeNumber:
		s, _ := a.ext()["employeeNumber"].(string)
		return s
	}
	return a.str("externalId")
}

// hookCtx keeps a hook running when the IdP gives up waiting: a
// deprovisioning cut short would leave access behind.
func hookCtx(ctx context.Context) context.Context { return context.WithoutCancel(ctx) }

func (s *server) deprovision(ctx context.Context, d *idp, subject, reason string) {
	if err := s.hooks.Deprovision(hookCtx(ctx), d.ID, subject, reason); err != nil {
		s.log.Error("scim: deprovision failed; the SCIM state is recorded", "idp", d.ID, "subject", subject, "reason", reason, "err", err)
	}
}

func (s *server) provision(ctx context.Context, d *idp, u store.SCIMUser, a attrs) {
	groups, err := s.store.SCIMUserGroups(ctx, d.ID, u.ID)
	if err != nil {
		// Provisioning with a partial group list could take groups away.
		s.log.Error("scim: provision skipped: read groups", "idp", d.ID, "id", u.ID, "err", err)
		return
	}
	if err := s.hooks.Provision(hookCtx(ctx), d.ID, toUser(d.ID, u, a, groups)); err != nil {
		s.log.Error("scim: provision failed; the SCIM state is recorded", "idp", d.ID, "subject", u.Subject, "err", err)
	}
}

// provisionByID re-provisions a stored user, as after a group change.
func (s *server) provisionByID(ctx context.Context, d *idp, id string) {
	u, err := s.store.SCIMUser(ctx, d.ID, id)
	if err != nil {
		s.log.Error("scim: provision skipped: read user", "idp", d.ID, "id", id, "err", err)
		return
	}
	if !u.Active {
		return
	}
	var a attrs
	if err := json.Unmarshal(u.Resource, &a); err != nil {
		s.log.Error("scim: provision skipped: decode user", "idp", d.ID, "id", id, "err", err)
		return
	}
	s.provision(ctx, d, u, a)
}

// userDoc renders a stored user as a SCIM resource.
func (s *server) userDoc(r *http.Request, u store.SCIMUser) map[string]any {
	doc := map[string]any{}
	_ = json.Unmarshal(u.Resource, &doc)
	schemas := []string{schema.UserSchema}
	if _, ok := doc[enterpriseURN]; ok {
		schemas = append(schemas, enterpriseURN)
	}
	doc["schemas"] = schemas
	doc["id"] = u.ID
	doc["active"] = u.Active
	doc["meta"] = map[string]any{
		"resourceType": "User",
		"created":      formatTime(u.Created),
		"lastModified": formatTime(u.Updated),
		"location":     s.location(r, "Users", u.ID),
		"version":      version(u.Version),
	}
	return doc
}

func (s *server) writeUser(w http.ResponseWriter, r *request, status int, u store.SCIMUser) error {
	w.Header().Set("ETag", version(u.Version))
	return writeJSON(w, status, s.userDoc(r.Request, u))
}

func (s *server) listUsers(w http.ResponseWriter, r *request) error {
	return listResources(w, r, userFinder(s, r.idp), s.store.SCIMUsers, s.userDoc)
}
