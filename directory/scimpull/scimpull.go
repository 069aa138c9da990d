// Package scimpull is the directory connector for an IdP that lists its
// people as a SCIM 2.0 service provider (RFC 7643, RFC 7644): it pages
// through /Users with startIndex and count under a bearer token, and
// reads each person's state from `active` and their groups from the
// read-only `groups` attribute, which RFC 7643 §4.1.2 defines as every
// group the person belongs to, directly or through nesting.
//
// A listing is complete only when it read exactly the totalResults the
// service provider announced, with that total steady across pages:
// anything else (an empty or short page before the end, a total that
// moved, more people than announced) is directory.ErrIncomplete, since
// people who shifted between pages would otherwise read as leavers.
// Throttling (429, Retry-After) and outages are retried by package rest.
package scimpull

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/usherhq/usher/config"
	"github.com/usherhq/usher/directory"
	"github.com/usherhq/usher/directory/rest"
)

// Config is a `scim` directory's block:
//
//	url: https://idp.example.com/scim/v2
//	token: {env: USHER_SCIM_PULL_TOKEN}
//	subject_attribute: externalId
//	groups: [jira-users]
type Config struct {
	// URL is the SCIM base URL; /Users is appended. https, or http on
	// loopback.
	URL string `yaml:"url"`
	// Token is the bearer token.
	Token config.Secret `yaml:"token"`
	// SubjectAttribute is the user attribute equal to the login subject
	// the IdP sends: id (default), externalId or userName.
	SubjectAttribute string `yaml:"subject_attribute"`
	// Groups limit the scope to people in at least one of these groups
	// (matched against the groups' display names and values).
	Groups []string `yaml:"groups"`
	// Attributes are further user attributes to read into
	// Person.Attributes: top-level ones (title, userType) or those of an
	// extension schema (department, employeeNumber of the enterprise
	// extension), by their bare name.
	Attributes []string `yaml:"attributes"`
	// PageSize is count per page (default 200; servers may send fewer).
	PageSize int `yaml:"page_size"`
	// Timeout bounds one attempt of one call (default 30s).
	Timeout time.Duration `yaml:"timeout"`
	// MaxWait caps the time one pull spends waiting on throttling and
	// retries (default 5m).
	MaxWait time.Duration `yaml:"max_wait"`
}

const (
	defaultPageSize = 200
	defaultMaxWait  = 5 * time.Minute
	maxPageSize     = 10000
)

var subjectAttributes = []string{"id", "externalId", "userName"}

// Validate reports every problem with the block, per key.
func (c *Config) Validate() []error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, config.FieldErrorf(field, format, args...))
	}
	if c.URL == "" {
		bad("url", "required")
	} else if err := rest.CheckBaseURL(c.URL); err != nil {
		bad("url", "%v", err)
	}
	if c.Token.IsZero() {
		bad("token", "required")
	}
	if c.SubjectAttribute != "" && !slices.Contains(subjectAttributes, c.SubjectAttribute) {
		bad("subject_attribute", "want id, externalId or userName, not %q", c.SubjectAttribute)
	}
	for i, g := range c.Groups {
		if strings.TrimSpace(g) == "" {
			bad(fmt.Sprintf("groups[%d]", i), "empty group name")
		}
	}
	for i, a := range c.Attributes {
		if a == "" || strings.ContainsAny(a, " \"") {
			bad(fmt.Sprintf("attributes[%d]", i), "not an attribute name: %q", a)
		}
	}
	if c.PageSize < 0 || c.PageSize > maxPageSize {
		bad("page_size", "want 1 to %d", maxPageSize)
	}
	if c.Timeout < 0 {
		bad("timeout", "must not be negative")
	}
	if c.MaxWait < 0 {
		bad("max_wait", "must not be negative")
	}
	return errs
}

// Open returns the connector; it makes no call.
func (c *Config) Open(name, idp string, deps directory.Deps) (directory.Connector, error) {
	if errs := c.Validate(); len(errs) > 0 {
		return nil, fmt.Errorf("scim %s: %w", name, errs[0])
	}
	cfg := *c
	if cfg.SubjectAttribute == "" {
		cfg.SubjectAttribute = "id"
	}
	if cfg.PageSize == 0 {
		cfg.PageSize = defaultPageSize
	}
	if cfg.MaxWait == 0 {
		cfg.MaxWait = defaultMaxWait
	}
	cfg.URL = strings.TrimRight(cfg.URL, "/")
	base, _ := url.Parse(cfg.URL)
	conn := &Connector{name: name, idp: idp, cfg: cfg, log: deps.Log}
	if conn.log == nil {
		conn.log = slog.New(slog.DiscardHandler)
	}
	api, err := rest.New(rest.Config{
		Service: "scim " + name, Origin: &url.URL{Scheme: base.Scheme, Host: base.Host},
		HTTP: deps.Client, Clock: deps.Clock, Log: deps.Log, Observe: deps.Observe,
		Auth: (*bearer)(conn), Timeout: cfg.Timeout, MaxWait: cfg.MaxWait / 10, Decode: decodeError,
	})
	if err != nil {
		return nil, fmt.Errorf("scim %s: %w", name, err)
	}
	conn.api = api
	return conn, nil
}

var _ directory.Config = (*Config)(nil)

// Connector pulls one SCIM service provider's /Users. It is safe for
// concurrent use.
type Connector struct {
	name, idp string
	cfg       Config
	api       *rest.Client
	log       *slog.Logger
}

var _ directory.Connector = (*Connector)(nil)

// bearer resolves the token on every request, so a rotated token file
// is picked up without a restart.
type bearer Connector

func (b *bearer) Authorize(_ context.Context, r *http.Request) error {
	tok, err := b.cfg.Token.Resolve()
	if err != nil {
		return fmt.Errorf("token: %w", err)
	}
	r.Header.Set("Authorization", "Bearer "+tok)
	return nil
}

func (b *bearer) Refresh(string) bool { return false }

// Name is the configured directory name.
func (c *Connector) Name() string { return c.name }

// IdP is the IdP whose login subjects Person.Subject holds.
func (c *Connector) IdP() string { return c.idp }

var accept = http.Header{"Accept": {"application/scim+json, application/json"}}

// listResponse is RFC 7644 §3.4.2's ListResponse.
type listResponse struct {
	TotalResults *int              `json:"totalResults"`
	ItemsPerPage int               `json:"itemsPerPage"`
	StartIndex   int               `json:"startIndex"`
	Resources    []json.RawMessage `json:"Resources"`
}

// Pull lists every person, page by page.
func (c *Connector) Pull(ctx context.Context, fn func(directory.Page) error) error {
	budget := rest.NewBudget(c.cfg.MaxWait)
	incomplete := func(format string, args ...any) error {
		return fmt.Errorf("scim %s: pull: %w: %s", c.name, directory.ErrIncomplete, fmt.Sprintf(format, args...))
	}
	total, read, start := -1, 0, 1
	for {
		var lr listResponse
		u := c.cfg.URL + "/Users?" + url.Values{"startIndex": {strconv.Itoa(start)}, "count": {strconv.Itoa(c.cfg.PageSize)}}.Encode()
		if _, err := c.api.GetJSON(ctx, "users", u, accept, budget, &lr); err != nil {
			if ctx.Err() != nil {
				return fmt.Errorf("scim %s: pull: %w", c.name, ctx.Err())
			}
			return fmt.Errorf("scim %s: pull: %w: %w", c.name, directory.ErrIncomplete, err)
		}
		switch {
		case lr.TotalResults == nil:
			return incomplete("page at startIndex %d has no totalResults", start)
		case total < 0:
			total = *lr.TotalResults
		case *lr.TotalResults != total:
			return incomplete("totalResults moved from %d to %d while paging", total, *lr.TotalResults)
		}
		n := len(lr.Resources)
		page := directory.Page{People: make([]directory.Person, 0, n)}
		for i, raw := range lr.Resources {
			p, err := c.person(raw)
			if err != nil {
				return incomplete("user %d at startIndex %d: %v", i, start, err)
			}
			if c.inScope(p) {
				page.People = append(page.People, p)
			}
		}
		read += n
		switch {
		case read > total:
			return incomplete("read %d users of totalResults %d", read, total)
		case n == 0 && read < total:
			return incomplete("empty page at startIndex %d after %d of %d users", start, read, total)
		case lr.ItemsPerPage > 0 && n < lr.ItemsPerPage:
			// A server may cap count below what we asked, but one that
			// says it put more on the page than it did has lost some.
			return incomplete("page at startIndex %d holds %d of its itemsPerPage %d", start, n, lr.ItemsPerPage)
		}
		if len(page.People) > 0 {
			if err := fn(page); err != nil {
				return err
			}
		}
		if read == total {
			return nil
		}
		start += n
	}
}

// Person looks one person up by subject: GET /Users/{id} for id, a
// filter on externalId or userName otherwise.
func (c *Connector) Person(ctx context.Context, subject string) (*directory.Person, error) {
	if subject == "" {
		return nil, fmt.Errorf("scim %s: empty subject: %w", c.name, directory.ErrNotFound)
	}
	var raw json.RawMessage
	if c.cfg.SubjectAttribute == "id" {
		_, err := c.api.GetJSON(ctx, "user", c.cfg.URL+"/Users/"+url.PathEscape(subject), accept, nil, &raw)
		if rest.StatusOf(err) == http.StatusNotFound {
			return nil, fmt.Errorf("scim %s: user %q: %w", c.name, subject, directory.ErrNotFound)
		}
		if err != nil {
			return nil, fmt.Errorf("scim %s: user %q: %w", c.name, subject, err)
		}
	} else {
		var lr listResponse
		u := c.cfg.URL + "/Users?" + url.Values{"filter": {c.cfg.SubjectAttribute + " eq " + quote(subject)}}.Encode()
		if _, err := c.api.GetJSON(ctx, "user", u, accept, nil, &lr); err != nil {
			return nil, fmt.Errorf("scim %s: user %q: %w", c.name, subject, err)
		}
		switch len(lr.Resources) {
		case 0:
			return nil, fmt.Errorf("scim %s: user %q: %w", c.name, subject, directory.ErrNotFound)
		case 1:
			raw = lr.Resources[0]
		default:
			return nil, fmt.Errorf("scim %s: %d users match %s %q", c.name, len(lr.Resources), c.cfg.SubjectAttribute, subject)
		}
	}
	p, err := c.person(raw)
	if err != nil {
		return nil, fmt.Errorf("scim %s: user %q: %w", c.name, subject, err)
	}
	// userName is case-insensitive in SCIM (RFC 7643 §4.1.1), the other
	// two are not; a filter match on another value is someone else.
	if c.cfg.SubjectAttribute == "userName" && !strings.EqualFold(p.Subject, subject) ||
		c.cfg.SubjectAttribute != "userName" && p.Subject != subject {
		return nil, fmt.Errorf("scim %s: user %q: the server answered with %q: %w", c.name, subject, p.Subject, directory.ErrNotFound)
	}
	p.OutOfScope = !c.inScope(p)
	return &p, nil
}

// quote makes a SCIM filter string literal (RFC 7644 §3.4.2.2: JSON
// string syntax), so no subject can change the filter's meaning.
func quote(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

func (c *Connector) inScope(p directory.Person) bool {
	if len(c.cfg.Groups) == 0 {
		return true
	}
	for _, want := range c.cfg.Groups {
		if slices.Contains(p.Groups, want) || slices.Contains(p.GroupIDs, want) {
			return true
		}
	}
	return false
}

// user is the part of an RFC 7643 User a person needs.
type user struct {
	ID         string `json:"id"`
	ExternalID string `json:"externalId"`
	UserName   string `json:"userName"`
	Name       struct {
		Formatted  string `json:"formatted"`
		GivenName  string `json:"givenName"`
		FamilyName string `json:"familyName"`
	} `json:"name"`
	DisplayName string `json:"displayName"`
	Emails      []struct {
		Value   string `json:"value"`
		Primary bool   `json:"primary"`
	} `json:"emails"`
	// Active is absent on some servers; absent counts as active, the
	// direction that removes nobody.
	Active *bool `json:"active"`
	Groups []struct {
		Value   string `json:"value"`
		Display string `json:"display"`
	} `json:"groups"`
}

func (c *Connector) person(raw json.RawMessage) (directory.Person, error) {
	var u user
	if err := json.Unmarshal(raw, &u); err != nil {
		return directory.Person{}, err
	}
	if u.ID == "" {
		return directory.Person{}, errors.New("a user without id")
	}
	p := directory.Person{
		ID: u.ID, Username: u.UserName, DisplayName: u.DisplayName,
		GivenName: u.Name.GivenName, FamilyName: u.Name.FamilyName,
		Status: directory.Active, GroupsComplete: true,
	}
	switch c.cfg.SubjectAttribute {
	case "externalId":
		p.Subject = u.ExternalID
	case "userName":
		p.Subject = u.UserName
	default:
		p.Subject = u.ID
	}
	if p.DisplayName == "" {
		p.DisplayName = u.Name.Formatted
	}
	for i, e := range u.Emails {
		if e.Primary || i == 0 && p.Email == "" {
			p.Email = e.Value
		}
	}
	if u.Active != nil && !*u.Active {
		p.Status = directory.Disabled
	}
	for _, g := range u.Groups {
		name := g.Display
		if name == "" {
			name = g.Value
		}
		p.Groups = append(p.Groups, name)
		p.GroupIDs = append(p.GroupIDs, g.Value)
	}
	if len(c.cfg.Attributes) > 0 {
		p.Attributes = attributes(raw, c.cfg.Attributes)
	}
	return p, nil
}

// attributes picks the named attributes, top level first, then inside
// extension schemas ("urn:..." objects), as strings.
func attributes(raw json.RawMessage, names []string) map[string][]string {
	var top map[string]json.RawMessage
	if json.Unmarshal(raw, &top) != nil {
		return nil
	}
	out := map[string][]string{}
	for _, name := range names {
		v, ok := top[name]
		if !ok {
			for k, ext := range top {
				if !strings.HasPrefix(k, "urn:") {
					continue
				}
				var m map[string]json.RawMessage
				if json.Unmarshal(ext, &m) == nil {
					if v, ok = m[name]; ok {
						break
					}
				}
			}
		}
		if vals := stringsOf(v); len(vals) > 0 {
			out[name] = vals
		}
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

// stringsOf renders a string, number, bool or an array of them.
func stringsOf(v json.RawMessage) []string {
	if len(v) == 0 {
		return nil
	}
	var list []json.RawMessage
	if json.Unmarshal(v, &list) == nil {
		var out []string
		for _, e := range list {
			out = append(out, stringsOf(e)...)
		}
		return out
	}
	var s string
	if json.Unmarshal(v, &s) == nil {
		return []string{s}
	}
	var x any
	if json.Unmarshal(v, &x) == nil {
		switch x.(type) {
		case float64, bool:
			return []string{strings.TrimSpace(string(v))}
		}
	}
	return nil
}

// decodeError reads RFC 7644 §3.12's error body.
func decodeError(status int, _ http.Header, body []byte) error {
	var e struct {
		Detail   string `json:"detail"`
		ScimType string `json:"scimType"`
	}
	if json.Unmarshal(body, &e) == nil && (e.Detail != "" || e.ScimType != "") {
		if e.ScimType != "" {
			return fmt.Errorf("%s (%s)", e.Detail, e.ScimType)
		}
		return errors.New(e.Detail)
	}
	return fmt.Errorf("%s: %s", http.StatusText(status), rest.Snippet(body))
}
