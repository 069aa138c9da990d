package config

import (
	"fmt"
	"net"
	"net/url"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
)

// PathOf gives the position of a YAML path such as "idps[1].domains[0]"
// in the file the Config was parsed from. For a path the file does not
// contain it gives the closest enclosing one; 0, 0 for a Config built in
// code.
func (c *Config) PathOf(yamlPath string) (line, col int) {
	if c.src == nil || c.src.root == nil {
		return 0, 0
	}
	return locate(c.src.root, c.src.anchors, yamlPath)
}

// ErrorAt makes a positioned Error for a YAML path of this Config.
func (c *Config) ErrorAt(yamlPath, msg string) Error {
	line, col := c.PathOf(yamlPath)
	e := Error{Path: yamlPath, Line: line, Column: col, Msg: msg}
	if c.src != nil {
		e.File = c.src.file
	}
	return e
}

type validator struct {
	c    *Config
	errs Errors
}

func (v *validator) errorf(path, format string, args ...any) {
	v.errs = append(v.errs, v.c.ErrorAt(path, fmt.Sprintf(format, args...)))
}

var (
	appNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,62}$`)
	idpIDRE   = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,31}$`)
)

var appKinds = []string{"jira", "confluence", "bitbucket", "crowd", "cloud", "generic"}

// KindCloud is an Atlassian Cloud site: provisioned through Atlassian's
// APIs, never proxied, since Cloud logins do not pass through usher.
const KindCloud = "cloud"

// Validate checks the common schema after defaults and returns every
// problem found. It does not read secrets (that happens when usher opens
// them) and does not look into IdP `config:` blocks (cmd/usher decodes and
// validates those with the provider type).
func (c *Config) Validate() Errors {
	v := &validator{c: c}
	v.server()
	v.session()
	v.store()
	v.headers()
	v.apps()
	v.idps()
	v.directories()
	return v.errs
}

func (v *validator) server() {
	s := v.c.Server
	if s.PublicURL == "" {
		v.errorf("server.public_url", "required: usher's external base URL, such as https://sso.example.com")
	} else if u, err := url.Parse(s.PublicURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		v.errorf("server.public_url", "want an absolute http or https URL, got %q", s.PublicURL)
	} else if u.Path != "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		v.errorf("server.public_url", "want scheme and host only (no path, query, fragment or user info), got %q", s.PublicURL)
	}
	if !validListen(s.Listen) {
		v.errorf("server.listen", "want host:port such as :8080 or 127.0.0.1:8080, got %q", s.Listen)
	}
	if s.DataDir == "" {
		v.errorf("server.data_dir", "required")
	}
	if s.BodyReadTimeout < time.Second {
		v.errorf("server.body_read_timeout", "want at least 1s, got %s", s.BodyReadTimeout)
	}
	if s.BodyMinRate < 1 {
		v.errorf("server.body_min_rate", "want bytes per second, at least 1, got %d", s.BodyMinRate)
	}
	if s.MaxConnsPerClient < 1 {
		v.errorf("server.max_conns_per_client", "want at least 1, got %d", s.MaxConnsPerClient)
	}
}

func validListen(addr string) bool {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	n, err := strconv.Atoi(port)
	return err == nil && n >= 0 && n <= 65535
}

func (v *validator) session() {
	s := v.c.Session
	if len(s.Keys) == 0 {
		v.errorf("session.keys", "at least one key is required")
	}
	for i, k := range s.Keys {
		if k.IsZero() {
			v.errorf(joinIndex("session.keys", i), "empty key")
		}
	}
	if !isToken(s.CookieName) {
		v.errorf("session.cookie_name", "want a cookie name (letters, digits and !#$%%&'*+-.^_`|~), got %q", s.CookieName)
	}
	if s.CookieDomain != "" && !isDNSName(s.CookieDomain) {
		v.errorf("session.cookie_domain", "want a lowercase DNS name without leading dot, got %q", s.CookieDomain)
	}
	for _, d := range []struct {
		path string
		val  time.Duration
	}{{"session.idle_timeout", s.IdleTimeout}, {"session.absolute_timeout", s.AbsoluteTimeout}, {"session.flow_timeout", s.FlowTimeout}} {
		if d.val <= 0 {
			v.errorf(d.path, "must be positive")
		}
	}
	if s.IdleTimeout > s.AbsoluteTimeout {
		v.errorf("session.idle_timeout", "%s is longer than absolute_timeout %s", s.IdleTimeout, s.AbsoluteTimeout)
	}
}

func (v *validator) store() {
	s := v.c.Store
	switch s.Driver {
	case "sqlite":
		if !s.DSN.IsZero() {
			v.errorf("store.dsn", "only for driver postgres")
		}
		if s.Path == "" {
			v.errorf("store.path", "required for driver sqlite")
		}
	case "postgres":
		if s.DSN.IsZero() {
			v.errorf("store.dsn", "required for driver postgres")
		}
		if s.Path != "" {
			v.errorf("store.path", "only for driver sqlite")
		}
	default:
		v.errorf("store.driver", "want sqlite or postgres, got %q", s.Driver)
	}
	if f := v.c.Log.Format; !oneOf(f, []string{"auto", "json", "text"}) {
		v.errorf("log.format", "want auto, json or text, got %q", f)
	}
	if l := v.c.Log.Level; !oneOf(l, []string{"debug", "info", "warn", "error"}) {
		v.errorf("log.level", "want debug, info, warn or error, got %q", l)
	}
	if (v.c.Admin.SSOGroup == "") != (v.c.Admin.SSOIdP == "") {
		v.errorf("admin.sso_idp", "set sso_group and sso_idp together: the group counts only from that identity provider")
	} else if id := v.c.Admin.SSOIdP; id != "" {
		found := false
		for _, idp := range v.c.IdPs {
			found = found || idp.ID == id
		}
		if !found {
			v.errorf("admin.sso_idp", "no identity provider %q is configured", id)
		}
	}
	if a := v.c.Admin.Listen; a != "off" {
		if _, _, err := net.SplitHostPort(a); err != nil {
			v.errorf("admin.listen", "want host:port or off, got %q", a)
		}
	}
	if l := v.c.Server.HTTPListen; l != "" {
		if _, _, err := net.SplitHostPort(l); err != nil {
			v.errorf("server.http_listen", "want host:port, got %q", l)
		}
	}
	if o := v.c.Provisioning.OnAppDown; o != "allow_known" && o != "deny" {
		v.errorf("provisioning.on_app_down", "want allow_known or deny, got %q", o)
	}
	r := v.c.Provisioning.Retry
	if r.Interval < 100*time.Millisecond {
		v.errorf("provisioning.retry.interval", "want at least 100ms, got %s", r.Interval)
	}
	if r.MinBackoff < 0 {
		v.errorf("provisioning.retry.min_backoff", "must not be negative")
	} else if r.MaxBackoff < r.MinBackoff {
		v.errorf("provisioning.retry.max_backoff", "%s is shorter than min_backoff %s", r.MaxBackoff, r.MinBackoff)
	}
	if r.ProbeEvery < 0 {
		v.errorf("provisioning.retry.probe_every", "must not be negative")
	}
	if d := v.c.Provisioning.Deadline; d < 0 || d > 10*time.Minute {
		v.errorf("provisioning.deadline", "want between 0 and 10m (a person waits for it at sign-in), got %s", d)
	}
	if m := v.c.Store.Migrate; m != "auto" && m != "manual" {
		v.errorf("store.migrate", "want auto or manual, got %q", m)
	}
	if v.c.Store.MaxConns < 0 {
		v.errorf("store.max_conns", "must not be negative")
	}
	if v.c.Store.Timeout < 0 {
		v.errorf("store.timeout", "must not be negative")
	}
}

func (v *validator) headers() {
	h := v.c.Headers
	switch h.Encoding {
	case "latin1", "utf8", "percent", "rfc2047":
	default:
		v.errorf("headers.encoding", "want latin1, utf8, percent or rfc2047, got %q", h.Encoding)
	}
	type named struct{ path, name string }
	names := []named{
		{"headers.username", h.Username},
		{"headers.email", h.Email},
		{"headers.display_name", h.DisplayName},
		{"headers.groups", h.Groups},
	}
	if h.SharedSecret != nil {
		names = append(names, named{"headers.shared_secret.header", h.SharedSecret.Header})
		if h.SharedSecret.Value.IsZero() {
			v.errorf("headers.shared_secret.value", "required")
		}
	}
	seen := map[string]string{}
	for _, n := range names {
		if !isToken(n.name) {
			v.errorf(n.path, "want an HTTP header name, got %q", n.name)
			continue
		}
		key := strings.ToLower(n.name)
		if other, dup := seen[key]; dup {
			v.errorf(n.path, "header %s is also used by %s", n.name, other)
			continue
		}
		seen[key] = n.path
	}
	for i, s := range h.Strip {
		if !isToken(s) {
			v.errorf(joinIndex("headers.strip", i), "want an HTTP header name, got %q", s)
		}
	}
	attrs := make([]string, 0, len(h.Attributes))
	for a := range h.Attributes {
		attrs = append(attrs, a)
	}
	sort.Strings(attrs)
	for _, a := range attrs {
		name, path := h.Attributes[a], "headers.attributes."+a
		if !isToken(name) {
			v.errorf(path, "want an HTTP header name, got %q", name)
			continue
		}
		key := strings.ToLower(name)
		if other, dup := seen[key]; dup {
			v.errorf(path, "header %s is also used by %s", name, other)
			continue
		}
		seen[key] = path
	}
}

func (v *validator) idps() {
	if len(v.c.IdPs) == 0 {
		v.errorf("idps", "at least one identity provider is required")
	}
	ids := map[string]int{}
	domains := map[string]string{}
	for i, idp := range v.c.IdPs {
		p := joinIndex("idps", i)
		switch {
		case idp.ID == "":
			v.errorf(p+".id", "required")
		case !idpIDRE.MatchString(idp.ID):
			v.errorf(p+".id", "want 1-32 lowercase letters, digits and '-', starting with a letter or digit, got %q", idp.ID)
		default:
			if j, dup := ids[idp.ID]; dup {
				v.errorf(p+".id", "duplicate IdP id %q (also idps[%d])", idp.ID, j)
			} else {
				ids[idp.ID] = i
			}
		}
		switch idp.Adoption {
		case AdoptNever, AdoptVerifiedEmail, AdoptAlways:
		default:
			v.errorf(p+".adoption", "want never, verified_email or always, got %q", idp.Adoption)
		}
		if idp.Type == "" {
			// Which types exist is cmd/usher's to say: each is a provider
			// package in its type map.
			v.errorf(p+".type", "required")
		}
		for k, d := range idp.Domains {
			dp := joinIndex(p+".domains", k)
			if !isDNSName(d) {
				v.errorf(dp, "want a lowercase DNS name, got %q", d)
				continue
			}
			if other, dup := domains[d]; dup {
				v.errorf(dp, "domain %s is already claimed by %s", d, other)
				continue
			}
			domains[d] = fmt.Sprintf("idps[%d] (%s)", i, idp.ID)
		}
		if sc := idp.SCIM; sc != nil {
			if sc.Token.IsZero() {
				v.errorf(p+".scim.token", "required: the bearer token this IdP sends to /scim/v2")
			}
			// scim.subject is checked by the scim package's own parser
			// (cmd/usher), which knows the extension attributes it takes.
			if b := sc.Brake; b != nil {
				v.scimBrake(p+".scim.brake", b)
			}
		}
	}
}

// minBrakeWindow is the shortest SCIM brake window: an IdP's burst of
// pushes takes seconds to minutes, and a window shorter than that lets it
// through in pieces.
const minBrakeWindow = time.Minute

func (v *validator) scimBrake(p string, b *SCIMBrake) {
	if b.MaxCount < 0 {
		v.errorf(p+".max_count", "must not be negative")
	}
	if !(b.MaxShare >= 0 && b.MaxShare <= 1) { // also refuses NaN
		v.errorf(p+".max_share", "want a fraction between 0 and 1, got %v", b.MaxShare)
	}
	if b.MaxCount == 0 && b.MaxShare == 0 {
		v.errorf(p, "set max_count, max_share or both: a brake without a limit holds nothing")
	}
	if b.Window < minBrakeWindow {
		v.errorf(p+".window", "want at least %s, got %s", minBrakeWindow, b.Window)
	}
	if !oneOf(b.HeldSessions, []string{HeldSessionsRevoke, HeldSessionsKeep}) {
		v.errorf(p+".held_sessions", "want revoke or keep, got %q", b.HeldSessions)
	}
}

// directoryFields are the Person fields a directory's claims may name.
var directoryFields = []string{"subject", "id", "username", "email", "display_name", "given_name", "family_name", "groups", "group_ids"}

func (v *validator) directories() {
	idps := map[string]bool{}
	for _, idp := range v.c.IdPs {
		idps[idp.ID] = true
	}
	names := map[string]int{}
	for i, d := range v.c.Directories {
		p := joinIndex("directories", i)
		switch {
		case d.Name == "":
			v.errorf(p+".name", "required")
		case !idpIDRE.MatchString(d.Name):
			v.errorf(p+".name", "want 1-32 lowercase letters, digits and '-', starting with a letter or digit, got %q", d.Name)
		default:
			if j, dup := names[d.Name]; dup {
				v.errorf(p+".name", "duplicate directory name %q (also directories[%d])", d.Name, j)
			} else {
				names[d.Name] = i
			}
		}
		if d.Type == "" {
			// Which types exist is cmd/usher's to say.
			v.errorf(p+".type", "required")
		}
		switch {
		case d.IdP == "":
			v.errorf(p+".idp", "required: the IdP whose logins these people are")
		case !idps[d.IdP]:
			v.errorf(p+".idp", "no identity provider %q is configured", d.IdP)
		}
		switch {
		case d.Schedule != "" && d.Every != 0:
			v.errorf(p+".every", "set schedule or every, not both")
		case d.Every < 0:
			v.errorf(p+".every", "must be positive")
		case d.Every > 0 && d.Every < time.Minute:
			v.errorf(p+".every", "must be at least 1m")
		}
		if d.FullEvery < time.Minute {
			v.errorf(p+".full_every", "must be at least 1m")
		}
		if !oneOf(d.GroupValues, []string{"names", "ids"}) {
			v.errorf(p+".group_values", "want names or ids, got %q", d.GroupValues)
		}
		if d.Concurrency < 1 || d.Concurrency > 64 {
			v.errorf(p+".concurrency", "want 1 to 64, got %d", d.Concurrency)
		}
		claims := make([]string, 0, len(d.Claims))
		for claim := range d.Claims {
			claims = append(claims, claim)
		}
		sort.Strings(claims)
		for _, claim := range claims {
			field := d.Claims[claim]
			switch {
			case claim == "":
				v.errorf(p+".claims", "empty claim name")
			case field == "":
				v.errorf(p+".claims."+claim, "name a field (%s) or a directory attribute", strings.Join(directoryFields, ", "))
			}
		}
		if d.Config.IsZero() {
			v.errorf(p+".config", "required: the %s connector's settings", d.Type)
		}
	}
}

func oneOf(s string, list []string) bool {
	for _, x := range list {
		if s == x {
			return true
		}
	}
	return false
}

// isToken reports an RFC 9110 token: a valid header or cookie name.
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return true
}

// isDNSName reports a lowercase ASCII host name (IDNs in their xn-- form).
func isDNSName(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	for _, label := range strings.Split(s, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return true
}

func validHostPort(s string) bool {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return isDNSName(s)
	}
	n, err := strconv.Atoi(port)
	return isDNSName(host) && err == nil && n > 0 && n <= 65535
}
