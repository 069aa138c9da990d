package scim

import (
	"bytes"
	"context"
	"encoding/json"
	"maps"
	"net/http"
	"slices"
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
func (s *server) parseUserBody(r *request, raw []byte) (attrs, error) {
	m, err := decodeObject(raw)
	if err != nil {
		return nil, err
	}
	if err := requireSchema(m, schema.UserSchema); err != nil {
		return nil, err
	}
	return s.normalizeUser(r, m)
}

// normalizeUser validates a user against the core, enterprise and the
// IdP's own extension schemas and returns it in canonical form. It
// accepts what Entra and Okta send beyond the letter of RFC 7643:
// booleans as strings in any case, the manager as a bare id, and drops
// what must not be stored (the password Okta sends).
//
// Data under an extension schema usher does not serve for this IdP (not
// listed in its /Schemas) is dropped, and the drop is logged, naming the
// schema: RFC 7644 §3.3 lets a server "alter and/or ignore POSTed
// content" and has it return its own representation, which then lacks
// that schema; and what usher neither maps nor needs is personal data it
// should not keep (RFC 7644 §8.7.1, RFC 7643 §9.3). Refusing instead
// would fail every push of an IdP whose admin mapped one extra attribute
// for another application, deactivations included, for data usher
// would never read. PATCH paths into such a schema are dropped the same
// way (applyUserPath), so POST, PUT and PATCH agree. Entra's and Okta's
// documented payloads carry no such data; Entra's groups only name a
// schema of their own in "schemas", which is fine.
func (s *server) normalizeUser(r *request, m map[string]any) (attrs, error) {
	d := r.idp
	out := attrs{}
	var ext map[string]any
	custom := map[string]map[string]any{} // IdP's extension URN -> attributes
	var dropped []string
	// Objects first, then attributes sent by their full path
	// ("urn:...:User:objectId"), which go into those objects.
	paths := map[string]any{}
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
		case strings.Contains(k, ":"):
			// No core attribute name holds a colon: this is an extension.
			if x := d.extension(k); x != nil {
				e, ok := v.(map[string]any)
				if !ok && v != nil {
					return nil, invalidValue("%s must be an object", x.urn)
				}
				custom[x.urn] = e
			} else {
				paths[k] = v
			}
			delete(m, k)
		}
	}
	for k, v := range paths {
		i := strings.LastIndexByte(k, ':')
		urn, name := k[:i], k[i+1:]
		switch x := d.extension(urn); {
		case x != nil:
			if custom[x.urn] == nil {
				custom[x.urn] = map[string]any{}
			}
			custom[x.urn][name] = v
		case strings.EqualFold(urn, enterpriseURN):
			if ext == nil {
				ext = map[string]any{}
			}
			ext[name] = v
		case strings.EqualFold(urn, schema.UserSchema):
			// A core attribute by its full path; the short form wins.
			if id, ok := v.(string); ok && strings.EqualFold(name, "externalId") && out["externalId"] == nil && id != "" {
				out["externalId"] = id
			} else if lookupFold(m, name) == nil {
				m[name] = v
			}
		default:
			dropped = append(dropped, k)
		}
	}
	s.noteDropped(r, dropped)
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
	for urn, e := range custom {
		if e == nil {
			continue
		}
		ev, serr := d.extension(urn).res.ValidateExtension(e)
		if serr != nil {
			return nil, fromLib(serr, urn)
		}
		if v := prune(map[string]any(ev)); v != nil {
			out[urn] = v
		}
	}
	if err := checkUserText(out, d.exts); err != nil {
		// The resource is valid but for its text: returned with the
		// refusal, so that a deactivation in it still applies
		// (deactivateRefused).
		return out, err
	}
	return out, nil
}

// deactivateRefused takes a person's access away when a push that makes
// them inactive is refused for the text of another attribute (a, when
// not nil, is the resource the push would have stored): a control
// character in a display name must not keep a leaver in the apps. The
// SCIM record stays as it was and the IdP gets the refusal, as when the
// store fails (saveUser); deprovisioning is idempotent, so its retry
// does no harm. prev is nil on create, where an inactive person may
// still have app accounts from their logins.
func (s *server) deactivateRefused(r *request, prev *store.SCIMUser, id string, a attrs) {
	if a == nil {
		return
	}
	active, ok := a["active"].(bool)
	if !ok || active || (prev != nil && !prev.Active) {
		return
	}
	subject := subjectOf(r.idp, a, id)
	if prev != nil && prev.Subject != "" {
		subject = prev.Subject
	}
	if subject == "" || textProblem(subject) != "" {
		return // nobody to name
	}
	s.log.Warn("scim: push refused, but the deactivation in it applies", "idp", r.idp.ID, "id", id, "subject", subject)
	s.deprovision(r.Context(), r.idp, subject, ReasonDeactivated)
}

// noteDropped logs, once per request, the extension data normalizeUser
// or a PATCH dropped: the admin learns which IdP mapping sends what usher
// does not keep.
func (s *server) noteDropped(r *request, keys []string) {
	if len(keys) == 0 {
		return
	}
	slices.Sort(keys)
	s.log.Warn("scim: dropped attributes under schemas usher does not serve for this IdP; map them in the IdP only if another application needs them",
		"idp", r.idp.ID, "method", r.Method, "path", r.URL.Path, "attributes", slices.Compact(keys))
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
	id := uuid.NewString()
	a, err := s.parseUserBody(r, raw)
	if err != nil {
		s.deactivateRefused(r, nil, id, a)
		return err
	}
	if _, ok := a["active"]; !ok {
		a["active"] = true // absent means active, as Okta and Entra assume
	}
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
	a, perr := s.parseUserBody(r, raw)
	if perr != nil && a == nil {
		return perr
	}
	defer s.lock(r.idp.ID, "User", id)()
	prev, err := s.store.SCIMUser(r.Context(), r.idp.ID, id)
	if err != nil {
		return storeErr(err, "User", id)
	}
	if perr != nil {
		s.deactivateRefused(r, &prev, id, a)
		return perr
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
	var dropped []string
	for _, op := range ops {
		if err := s.applyUserOp(r.idp, cur, op, &dropped); err != nil {
			return err
		}
	}
	s.noteDropped(r, dropped)
	a, err := s.normalizeUser(r, cur)
	if err != nil {
		s.deactivateRefused(r, &prev, id, a)
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
		return store.SCIMUser{}, missingSubject(d)
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
	if active && (prev == nil || !prev.Active) {
		s.activated(ctx, d, rec.Subject)
	}
	if active && d.Automatic {
		s.provision(ctx, d, saved, a)
	}
	return saved, nil
}

// hookCtx keeps a hook running when the IdP gives up waiting: a
// deprovisioning cut short would leave access behind.
func hookCtx(ctx context.Context) context.Context { return context.WithoutCancel(ctx) }

func (s *server) deprovision(ctx context.Context, d *idp, subject, reason string) {
	if err := s.hooks.Deprovision(hookCtx(ctx), d.ID, subject, reason); err != nil {
		s.log.Error("scim: deprovision failed; the SCIM state is recorded", "idp", d.ID, "subject", subject, "reason", reason, "err", err)
	}
}

func (s *server) activated(ctx context.Context, d *idp, subject string) {
	a, ok := s.hooks.(Activator)
	if !ok {
		return
	}
	if err := a.Activated(hookCtx(ctx), d.ID, subject); err != nil {
		s.log.Error("scim: activation hook failed; the SCIM state is recorded", "idp", d.ID, "subject", subject, "err", err)
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
	for _, k := range slices.Sorted(maps.Keys(doc)) {
		if strings.HasPrefix(k, "urn:") {
			schemas = append(schemas, k) // the enterprise or the IdP's own extension
		}
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
