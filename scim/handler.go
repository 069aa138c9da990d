// Package scim owns usher's SCIM 2.0 server (RFC 7643/7644): the endpoint
// identity providers push users and groups to. Each IdP has its own bearer
// token, and the token alone decides which IdP's users and groups a request
// sees and changes. Pushed state lives in store.SCIM; deactivations and
// deletions reach the apps at once through Hooks.Deprovision, and with
// Automatic provisioning creates and updates reach them through
// Hooks.Provision.
//
// What is stored is checked at the door: the strings usher keys, maps or
// provisions must be one line of valid UTF-8 of at most 256 characters
// (text.go), the subject attribute (subject.go) must be present, and data
// under extension schemas an IdP's /Schemas does not list is dropped and
// logged (normalizeUser). A refusal is a 400 the IdP shows its admin; a
// deactivation in a refused push still applies.
//
// github.com/elimity-com/scim supplies the schemas, the error type and the
// discovery endpoints (/ServiceProviderConfig, /Schemas, /ResourceTypes).
// Its resource routing is bypassed: it cannot scope requests per token,
// answers every handler failure that is not in its table as 500 (no 503
// with Retry-After), ignores body read errors (no 413), and its PATCH
// validator rejects what Entra ID really sends ("active": "False").
package scim

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	elimity "github.com/elimity-com/scim"
	"github.com/elimity-com/scim/optional"
	"github.com/elimity-com/scim/schema"

	"github.com/usherhq/usher/store"
)

const (
	defaultMaxBody = 1 << 20
	maxResults     = 100
	// retryAfter is what a 503 asks the IdP to wait; Entra and Okta both
	// retry failed operations on their own schedule anyway.
	retryAfter = "30"
)

// Config configures the SCIM server.
type Config struct {
	IdPs  []IdPConfig
	Store store.SCIM
	Hooks Hooks
	Log   *slog.Logger
	Now   func() time.Time
	// MaxBody bounds request bodies; larger ones get 413. Default 1 MiB.
	MaxBody int64
	// BaseURL is the public URL of the SCIM root, e.g.
	// "https://jira.example.com/scim/v2", used for meta.location. Empty
	// means derived from the request: its Host plus "/scim/v2".
	BaseURL string
	// Observe, when set, is told about every request (metrics): the IdP
	// ("" when unauthenticated), an op like "PATCH Users" and a result
	// of ok, client_error or error.
	Observe func(idp, op, result string)
}

// IdPConfig is one IdP allowed to push.
type IdPConfig struct {
	ID    string
	Token string // bearer token, already resolved
	// SubjectAttr names the SCIM attribute that is the (idp, subject) key:
	// "externalId" (default), "userName", "id", an enterprise extension
	// string attribute or a custom extension attribute (see
	// ParseSubjectAttr). The subject is taken when the user is created
	// and then kept: a later change of that attribute is logged, not
	// applied, because re-keying would orphan the person's app account.
	SubjectAttr string
	// Automatic applies creates and updates to the apps at once.
	Automatic bool
}

// Hooks connect pushed changes to the apps. Both are called synchronously,
// after the SCIM state is stored, and must be safe for concurrent use.
// Their errors are logged, not returned to the IdP: the change is recorded
// and the deprovisioning side keeps its own retry queue.
type Hooks interface {
	// Provision is called after a create/replace/patch of an active user
	// when Automatic; it reconciles the person into the apps like a login
	// would. u carries userName, name parts, displayName, emails, active,
	// groups, enterprise fields as claims.
	Provision(ctx context.Context, idp string, u User) error
	// Deprovision is called at once when a user becomes inactive or is
	// deleted: deactivate in every app of that IdP and revoke sessions.
	Deprovision(ctx context.Context, idp, subject, reason string) error
}

// Activator is what Hooks may also do: Activated is called when a user
// becomes active (created active, or pushed active after being inactive),
// whether or not the IdP is Automatic, before Provision. It lets the
// lifecycle withdraw what an earlier deactivation left waiting (a removal
// the IdP's brake held).
type Activator interface {
	Activated(ctx context.Context, idp, subject string) error
}

// User is a pushed user as the hooks see it.
type User struct {
	IdP, ID, Subject string
	UserName         string
	DisplayName      string
	GivenName        string
	FamilyName       string
	Email            string // the primary email, else the first
	Active           bool
	Groups           []string // display names of the user's SCIM groups
	// Claims is the resource flattened like providers.Identity.Claims:
	// nested attributes under dotted keys ("name.givenName"), multi-valued
	// ones as their values, primary first ("emails", "emails.work"),
	// extension attributes (enterprise, and the IdP's own subject
	// extension) under their full path and their bare name
	// ("department", "manager", "objectId"), and "groups".
	Claims map[string][]string
}

// Deprovision reasons.
const (
	ReasonDeactivated = "scim: deactivated"
	ReasonDeleted     = "scim: deleted"
)

type idp struct {
	IdPConfig
	tokenHash [sha256.Size]byte
	subject   subjectRef
	// exts are the custom extension schemas this IdP may push (its
	// subject's, if any), served in its /Schemas beside the enterprise
	// extension.
	exts      []extSchema
	discovery http.Handler
}

type server struct {
	onRequest func(idp, op, result string)
	idps      []idp
	store     store.SCIM
	hooks     Hooks
	log       *slog.Logger
	now       func() time.Time
	maxBody   int64
	baseURL   string
	userRes   schema.Schema
	groupRes  schema.Schema
	enterRes  schema.Schema
	// locks serialise read-modify-write cycles (PATCH, PUT, membership)
	// on one resource within this process; striped to stay small.
	locks [64]sync.Mutex
}

// New returns the SCIM handler. It serves /scim/v2/... and also works when
// mounted with the prefix already stripped.
func New(cfg Config) (http.Handler, error) {
	if cfg.Store == nil {
		return nil, errors.New("scim: a store is required")
	}
	if cfg.Hooks == nil {
		return nil, errors.New("scim: hooks are required")
	}
	s := &server{
		onRequest: cfg.Observe,
		store:     cfg.Store,
		hooks:     cfg.Hooks,
		log:       cfg.Log,
		now:       cfg.Now,
		maxBody:   cfg.MaxBody,
		baseURL:   strings.TrimRight(cfg.BaseURL, "/"),
		userRes:   schema.CoreUserSchema(),
		groupRes:  schema.CoreGroupSchema(),
		enterRes:  schema.ExtensionEnterpriseUser(),
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.maxBody <= 0 {
		s.maxBody = defaultMaxBody
	}
	seen := map[[sha256.Size]byte]string{}
	ids := map[string]bool{}
	for _, c := range cfg.IdPs {
		if c.ID == "" || c.Token == "" {
			return nil, fmt.Errorf("scim: idp %q: id and token are required", c.ID)
		}
		if ids[c.ID] {
			return nil, fmt.Errorf("scim: idp %q listed twice", c.ID)
		}
		ids[c.ID] = true
		ref, err := parseSubject(c.SubjectAttr)
		if err != nil {
			return nil, fmt.Errorf("scim: idp %s: %w", c.ID, err)
		}
		c.SubjectAttr = ref.attr
		h := sha256.Sum256([]byte(c.Token))
		if other, dup := seen[h]; dup {
			// One token for two IdPs could not tell them apart.
			return nil, fmt.Errorf("scim: idps %s and %s share a token", other, c.ID)
		}
		seen[h] = c.ID
		d := idp{IdPConfig: c, tokenHash: h, subject: ref}
		if ref.custom {
			d.exts = []extSchema{customExtension(ref)}
		}
		if d.discovery, err = discoveryServer(s, d.exts); err != nil {
			return nil, fmt.Errorf("scim: idp %s: discovery endpoints: %w", c.ID, err)
		}
		s.idps = append(s.idps, d)
	}
	return s, nil
}

// discoveryServer is the elimity server limited to the discovery
// endpoints of one IdP (its resource handlers are never reached): the
// schemas it lists are the ones usher keeps data of for that IdP.
func discoveryServer(s *server, exts []extSchema) (http.Handler, error) {
	userExts := []elimity.SchemaExtension{{Schema: s.enterRes}}
	for _, x := range exts {
		userExts = append(userExts, elimity.SchemaExtension{Schema: x.res})
	}
	srv, err := elimity.NewServer(&elimity.ServerArgs{
		ServiceProviderConfig: &elimity.ServiceProviderConfig{
			SupportFiltering: true,
			SupportPatch:     true,
			MaxResults:       maxResults,
			AuthenticationSchemes: []elimity.AuthenticationScheme{{
				Type:        elimity.AuthenticationTypeOauthBearerToken,
				Name:        "OAuth Bearer Token",
				Description: "A per-IdP bearer token in the Authorization header.",
				Primary:     true,
			}},
		},
		ResourceTypes: []elimity.ResourceType{
			{
				ID: optional.NewString("User"), Name: "User", Endpoint: "/Users",
				Description:      optional.NewString("User Account"),
				Schema:           s.userRes,
				SchemaExtensions: userExts,
			},
			{
				ID: optional.NewString("Group"), Name: "Group", Endpoint: "/Groups",
				Description: optional.NewString("Group"),
				Schema:      s.groupRes,
			},
		},
	})
	if err != nil {
		return nil, err
	}
	return srv, nil
}

// request is one authenticated request.
type request struct {
	*http.Request
	idp  *idp
	path []string // segments after the SCIM root
}

func (s *server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/scim+json")
	p := r.URL.Path
	if rest, ok := strings.CutPrefix(p, "/scim/v2"); ok {
		p = rest
	}
	p = strings.Trim(p, "/")
	d := s.authenticate(r)
	if d == nil {
		w.Header().Set("WWW-Authenticate", `Bearer realm="usher-scim"`)
		s.writeError(w, r, nil, errUnauthorized)
		s.observe("", r, http.StatusUnauthorized)
		return
	}
	req := &request{Request: r, idp: d}
	if p != "" {
		req.path = strings.Split(p, "/")
	}
	sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
	s.route(sw, req)
	s.observe(d.ID, r, sw.status)
}

// observe reports a request to Config.Observe with a fixed-set op
// (method and resource type) and result (ok, client_error, error).
func (s *server) observe(idp string, r *http.Request, status int) {
	if s.onRequest == nil {
		return
	}
	resource := "other"
	p := strings.Trim(strings.TrimPrefix(r.URL.Path, "/scim/v2"), "/")
	if first, _, _ := strings.Cut(p, "/"); first == "Users" || first == "Groups" {
		resource = first
	}
	result := "ok"
	switch {
	case status >= 500:
		result = "error"
	case status >= 400:
		result = "client_error"
	}
	method := "OTHER" // any token is a method to net/http: keep labels bounded
	switch r.Method {
	case http.MethodGet, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete:
		method = r.Method
	}
	s.onRequest(idp, method+" "+resource, result)
}

// statusWriter remembers the status for metrics.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	w.status = code
	w.ResponseWriter.WriteHeader(code)
}

// authenticate compares the bearer token with every IdP's, always all of
// them and on fixed-size hashes, so timing tells neither which IdP matched
// nor how long its token is.
func (s *server) authenticate(r *http.Request) *idp {
	scheme, token, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return nil
	}
	h := sha256.Sum256([]byte(strings.TrimSpace(token)))
	var found *idp
	for i := range s.idps {
		if subtle.ConstantTimeCompare(h[:], s.idps[i].tokenHash[:]) == 1 {
			found = &s.idps[i]
		}
	}
	return found
}

func (s *server) route(w http.ResponseWriter, r *request) {
	if len(r.path) == 0 {
		s.writeError(w, r.Request, r.idp, errNoEndpoint)
		return
	}
	switch r.path[0] {
	case "ServiceProviderConfig", "Schemas", "ResourceTypes":
		if r.Method != http.MethodGet {
			s.writeError(w, r.Request, r.idp, errMethod)
			return
		}
		r2 := r.Clone(r.Context())
		r2.URL.Path = "/" + strings.Join(r.path, "/")
		r.idp.discovery.ServeHTTP(w, r2)
		return
	case "Users":
		s.routeResource(w, r, s.listUsers, s.createUser, s.getUser, s.replaceUser, s.patchUser, s.deleteUser)
		return
	case "Groups":
		s.routeResource(w, r, s.listGroups, s.createGroup, s.getGroup, s.replaceGroup, s.patchGroup, s.deleteGroup)
		return
	case "Bulk", "Me", ".search":
		s.writeError(w, r.Request, r.idp, errNotImplemented)
		return
	}
	s.writeError(w, r.Request, r.idp, errNoEndpoint)
}

type handlerFunc func(w http.ResponseWriter, r *request) error
type idHandlerFunc func(w http.ResponseWriter, r *request, id string) error

func (s *server) routeResource(w http.ResponseWriter, r *request, list, create handlerFunc, get, replace, patch, del idHandlerFunc) {
	var err error
	switch {
	case len(r.path) == 1 && r.Method == http.MethodGet:
		err = list(w, r)
	case len(r.path) == 1 && r.Method == http.MethodPost:
		err = create(w, r)
	case len(r.path) == 2 && r.path[1] == ".search":
		err = errNotImplemented
	case len(r.path) == 2 && checkID(r.path[1]) != nil:
		err = checkID(r.path[1])
	case len(r.path) == 2:
		id := r.path[1]
		switch r.Method {
		case http.MethodGet:
			err = get(w, r, id)
		case http.MethodPut:
			err = replace(w, r, id)
		case http.MethodPatch:
			err = patch(w, r, id)
		case http.MethodDelete:
			err = del(w, r, id)
		default:
			err = errMethod
		}
	case len(r.path) == 1:
		err = errMethod
	default:
		err = errNoEndpoint
	}
	if err != nil {
		s.writeError(w, r.Request, r.idp, err)
	}
}

// body reads the request body within MaxBody. Any content type is
// accepted: Entra sends application/scim+json, others application/json.
func (s *server) body(w http.ResponseWriter, r *request) ([]byte, error) {
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.maxBody))
	if err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			return nil, errTooLarge(s.maxBody)
		}
		return nil, invalidSyntax("read body: %v", err)
	}
	return b, nil
}

// lock serialises writes to one resource in this process.
func (s *server) lock(idp, kind, id string) func() {
	h := fnv.New32a()
	h.Write([]byte(idp + "\x00" + kind + "\x00" + id))
	m := &s.locks[h.Sum32()%uint32(len(s.locks))]
	m.Lock()
	return m.Unlock
}

// location is the absolute URL of a resource. Without a configured
// BaseURL it trusts X-Forwarded-Proto only for the scheme; set BaseURL
// behind a TLS terminator.
func (s *server) location(r *http.Request, endpoint, id string) string {
	base := s.baseURL
	if base == "" {
		scheme := "http"
		if r.TLS != nil || strings.EqualFold(r.Header.Get("X-Forwarded-Proto"), "https") {
			scheme = "https"
		}
		base = scheme + "://" + r.Host + "/scim/v2"
	}
	return base + "/" + endpoint + "/" + url.PathEscape(id)
}

func version(v int) string { return fmt.Sprintf(`W/"%d"`, v) }

func formatTime(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }
