package jit

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"

	"github.com/usherhq/usher/config"
	"github.com/usherhq/usher/providers"
)

// Provisioning modes (mapping.provisioning) and group sync modes
// (mapping.groups.sync).
const (
	ProvisionOnLogin = "on_login"
	ProvisionManual  = "manual"
	ProvisionOff     = "off"

	SyncFull    = "full"
	SyncAddOnly = "add_only"
)

// allApps is the AppGroups key meaning every app the IdP's users may enter.
const allApps = "*"

// maxGroupName bounds group names; Atlassian products accept 255.
const maxGroupName = 255

// DefaultPrivilegedGroups are the app groups usher always treats as
// privileged, by product. Bitbucket grants ADMIN and SYS_ADMIN through
// global permissions on arbitrary groups (reference §5.5), so it has no
// fixed admin group: sys-admins and stash-admins are common names, and
// installations must list their own under provisioning.privileged_groups.
//
// Compile knows app names, not products, so it treats every name here as
// privileged in every app: a name that is an admin group in one product is
// never something a rule should produce in another.
func DefaultPrivilegedGroups() config.AppGroups {
	return config.AppGroups{
		"jira":       {"jira-administrators", "jira-system-administrators"},
		"confluence": {"confluence-administrators", "system-administrators"},
		"bitbucket":  {"sys-admins", "stash-admins"},
		"crowd":      {"crowd-administrators"},
	}
}

// DefaultProtectedUsers are usernames usher never signs anyone in as
// unless provisioning.protected_users says otherwise: the apps' local
// administrator accounts, which an IdP identity must not take over.
var DefaultProtectedUsers = []string{"admin", "administrator", "root", "sysadmin"}

// Defaults returns m with the defaults for an IdP of type idpType; see
// config.Mapping.WithDefaults, the one place they are defined.
func Defaults(idpType string, m config.Mapping) config.Mapping { return m.WithDefaults(idpType) }

// ErrDenied marks an access-policy refusal; errors.Is(err, ErrDenied) holds
// for every *DeniedError.
var ErrDenied = errors.New("access denied")

// DeniedError is a policy refusal: the login worked, but this person may
// not enter (through this IdP, or into this app). Reason is written for
// the person and shown on the 403 page.
type DeniedError struct {
	Reason string
}

func (e *DeniedError) Error() string        { return "access denied: " + e.Reason }
func (e *DeniedError) Is(target error) bool { return target == ErrDenied }

// Errors is every problem Compile found. Each element is a
// *config.FieldError whose Field is a path relative to the IdP entry
// ("mapping.groups.rules[1].match") or, for the shared block, relative to
// the file ("provisioning.privileged_groups.jira[0]"); the provisioning
// errors repeat for every IdP compiled against the same block.
type Errors []error

func (es Errors) Error() string {
	msgs := make([]string, len(es))
	for i, e := range es {
		msgs[i] = e.Error()
	}
	return strings.Join(msgs, "; ")
}

func (es Errors) Unwrap() []error { return es }

// Profile is the desired state of one person, as one IdP describes them.
type Profile struct {
	IdP, Subject string
	Username     string
	Email        string
	DisplayName  string
	// Attributes holds the non-empty custom attributes.
	Attributes map[string]string
	// Apps holds only the apps this IdP's users may enter.
	Apps map[string]*AppProfile
	// IdPGroups are the IdP's groups after include/exclude, sorted.
	IdPGroups []string
	// Provisioning is the IdP's mode: on_login, manual or off.
	Provisioning string
	// Warnings say what Map dropped and why (a group name holding a
	// separator, a rule that would have produced a privileged group).
	Warnings []string

	idpName string
}

// AppProfile is what one app should hold for the person.
type AppProfile struct {
	// Groups are the app groups to grant, sorted by name, one entry per
	// name (compared case-insensitively, as the apps do).
	Groups []Grant
	// ManagedGroups are the app groups this mapping can grant by name (map
	// targets, defaults, rule templates without captures), sorted; shared
	// between profiles, do not modify.
	ManagedGroups []string
	// ManagedPatterns are anchored, case-insensitive regular expressions
	// for the groups rule templates with captures can produce ("team-$1"
	// becomes "(?i)^team-.*$"). They never cover a privileged group.
	ManagedPatterns []string
	// Sync is full or add_only.
	Sync string

	plan *appPlan
}

// Grant is one app group and the mapping line that granted it: "map[0]",
// "rules[1]" or "default".
type Grant struct {
	Group string
	Rule  string
}

// Manages reports whether reconcile may remove group from the person in
// this app because the mapping could have granted it: a managed name, or
// a rule pattern match that is not a privileged group. Groups an admin
// gave by hand outside that set are never touched.
func (a *AppProfile) Manages(group string) bool {
	if a == nil || a.plan == nil {
		return false
	}
	k := groupKey(group)
	if a.plan.managed[k] {
		return true
	}
	if a.plan.privileged[k] {
		return false
	}
	for _, re := range a.plan.patterns {
		if re.MatchString(group) {
			return true
		}
	}
	return false
}

// Allow returns a *DeniedError when the person may not enter app through
// this profile's IdP.
func (p *Profile) Allow(app string) error {
	if _, ok := p.Apps[app]; ok {
		return nil
	}
	return &DeniedError{Reason: fmt.Sprintf("%s does not give access to %s", p.idpName, app)}
}

// hashVersion changes whenever the canonical encoding below does, so that
// every stored hash misses once instead of matching wrongly.
const hashVersion = "usher-profile-v1"

// Hash is the canonical SHA-256 (hex) of what reconcile would write to
// app: username, e-mail, display name, attributes, granted groups, the
// managed set and the sync mode. Equal hashes mean nothing to do (the fast
// path). It is "" for an app the profile has no access to.
func (p *Profile) Hash(app string) string {
	a, ok := p.Apps[app]
	if !ok || a == nil {
		return ""
	}
	h := sha256.New()
	var buf []byte
	str := func(s string) {
		buf = binary.AppendUvarint(buf[:0], uint64(len(s)))
		buf = append(buf, s...)
		h.Write(buf)
	}
	count := func(n int) {
		buf = binary.AppendUvarint(buf[:0], uint64(n))
		h.Write(buf)
	}
	str(hashVersion)
	str(app)
	str(p.Username)
	str(p.Email)
	str(p.DisplayName)
	keys := slices.Sorted(maps.Keys(p.Attributes))
	count(len(keys))
	for _, k := range keys {
		str(k)
		str(p.Attributes[k])
	}
	names := make([]string, len(a.Groups))
	for i, g := range a.Groups {
		names[i] = g.Group
	}
	slices.Sort(names)
	count(len(names))
	for _, n := range names {
		str(n)
	}
	str(a.Sync)
	count(len(a.ManagedGroups))
	for _, n := range a.ManagedGroups {
		str(n)
	}
	count(len(a.ManagedPatterns))
	for _, n := range a.ManagedPatterns {
		str(n)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// Mapper is one IdP's compiled mapping. It is immutable and safe for
// concurrent use.
type Mapper struct {
	idp, name string

	username, email, displayName *valueRule
	attrs                        []namedRule
	allowed                      *charset
	protected                    []string // username globs never signed in through usher

	groupClaim       string
	include, exclude []*regexp.Regexp
	lines            []mapLine
	byName           map[string][]int // IdP group name → line indices
	byID             map[string][]int // lowercased group ID → line indices
	rules            []groupRule
	defaults         map[string][]string // app → groups

	requireGroups []string
	requireClaims []claimRequirement

	apps         []string // the apps the IdP's users may enter, sorted
	restricted   bool     // mapping.access.apps names them
	plans        map[string]*appPlan
	sync         string
	provisioning string
}

type namedRule struct {
	name string
	rule *valueRule
}

type mapLine struct {
	targets map[string][]string // app → groups
}

type groupRule struct {
	re      *regexp.Regexp
	targets map[string][]string // app → templates
}

type claimRequirement struct {
	claim  string
	values []string
}

// appPlan is what Compile knows about one app.
type appPlan struct {
	privileged map[string]bool // groupKey → privileged
	managed    map[string]bool // groupKey → grantable by name
	names      []string        // managed names, sorted
	patterns   []*regexp.Regexp
	patternSrc []string
}

// groupKey is how group names compare: the apps treat names
// case-insensitively, and NFKC keeps full-width look-alikes of a privileged
// name from passing as a different group.
func groupKey(s string) string {
	if isPlainASCII(s) { // NFKC leaves printable ASCII alone
		return strings.ToLower(s)
	}
	return strings.ToLower(norm.NFKC.String(s))
}

// isPlainASCII reports printable ASCII without separators: the common
// group name, which the checks below can pass without decoding runes.
func isPlainASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == ',' || c == ';' {
			return false
		}
	}
	return true
}

// compiler gathers every problem instead of stopping at the first.
type compiler struct {
	errs    Errors
	apps    map[string]bool
	appList []string
}

func (c *compiler) errorf(field, format string, args ...any) {
	c.errs = append(c.errs, &config.FieldError{Field: field, Msg: fmt.Sprintf(format, args...)})
}

// Compile checks and compiles one IdP's mapping against the shared
// provisioning block and the configured app names. idpType selects the
// defaults (see Defaults). A non-nil error is an Errors listing every
// problem with its field path.
func Compile(idpID, idpType string, m config.Mapping, p config.Provisioning, apps []string) (*Mapper, error) {
	m = Defaults(idpType, m)
	c := &compiler{apps: map[string]bool{}}
	for i, a := range apps {
		if a == "" || a == allApps {
			c.errorf(fmt.Sprintf("apps[%d]", i), "app name %q cannot be used in a mapping", a)
			continue
		}
		if !c.apps[a] {
			c.apps[a] = true
			c.appList = append(c.appList, a)
		}
	}
	slices.Sort(c.appList)
	mp := &Mapper{
		idp:          idpID,
		name:         idpID,
		groupClaim:   m.Groups.Claim,
		sync:         m.Groups.Sync,
		provisioning: m.Provisioning,
		byName:       map[string][]int{},
		byID:         map[string][]int{},
		plans:        map[string]*appPlan{},
	}

	var err error
	mp.protected = p.ProtectedUsers
	if mp.protected == nil {
		mp.protected = DefaultProtectedUsers
	}
	for i, g := range mp.protected {
		if _, err := path.Match(g, ""); err != nil {
			c.errorf(fmt.Sprintf("provisioning.protected_users[%d]", i), "bad pattern %q: %v", g, err)
		}
	}
	if mp.allowed, err = parseAllowed(p.UsernameAllowed); err != nil {
		c.errorf("provisioning.username_allowed", "%v", err)
		mp.allowed, _ = parseAllowed("")
	}
	mp.username = c.valueRule("mapping.username", m.Username)
	if m.Username.Claim == nil && m.Username.Template == "" {
		c.errorf("mapping.username.claim", "required for an IdP of type %q", idpType)
	}
	mp.email = c.valueRule("mapping.email", m.Email)
	mp.displayName = c.valueRule("mapping.display_name", m.DisplayName)
	for _, name := range slices.Sorted(maps.Keys(m.Attributes)) {
		path := "mapping.attributes." + name
		if name == "" || strings.ContainsFunc(name, unicode.IsControl) {
			c.errorf(path, "attribute name %q is not usable", name)
			continue
		}
		mp.attrs = append(mp.attrs, namedRule{name: name, rule: c.valueRule(path, m.Attributes[name])})
	}

	switch m.Provisioning {
	case ProvisionOnLogin, ProvisionManual, ProvisionOff:
	default:
		c.errorf("mapping.provisioning", "want on_login, manual or off, got %q", m.Provisioning)
	}
	switch m.Groups.Sync {
	case SyncFull, SyncAddOnly:
	default:
		c.errorf("mapping.groups.sync", "want full or add_only, got %q", m.Groups.Sync)
	}

	// Access first: it decides which apps everything else resolves to.
	mp.apps = c.appList
	mp.restricted = len(m.Access.Apps) > 0
	if len(m.Access.Apps) > 0 {
		mp.apps = nil
		for i, a := range m.Access.Apps {
			if !c.apps[a] {
				c.errorf(fmt.Sprintf("mapping.access.apps[%d]", i), "unknown app %q%s", a, c.known())
				continue
			}
			if !slices.Contains(mp.apps, a) {
				mp.apps = append(mp.apps, a)
			}
		}
		slices.Sort(mp.apps)
	}
	for i, g := range m.Access.RequireGroups {
		g = strings.TrimSpace(g)
		if g == "" {
			c.errorf(fmt.Sprintf("mapping.access.require_groups[%d]", i), "empty group name")
			continue
		}
		mp.requireGroups = append(mp.requireGroups, g)
	}
	for _, claim := range slices.Sorted(maps.Keys(m.Access.RequireClaims)) {
		vs := m.Access.RequireClaims[claim]
		if claim == "" || len(vs) == 0 {
			c.errorf("mapping.access.require_claims."+claim, "need a claim name and at least one value")
			continue
		}
		mp.requireClaims = append(mp.requireClaims, claimRequirement{claim: claim, values: vs})
	}

	privileged := c.privileged(p, mp.apps)
	for _, a := range mp.apps {
		mp.plans[a] = &appPlan{privileged: privileged[a], managed: map[string]bool{}}
	}
	manage := func(app, group string) {
		plan := mp.plans[app]
		if k := groupKey(group); !plan.managed[k] {
			plan.managed[k] = true
			plan.names = append(plan.names, group)
		}
	}

	mp.include = c.regexps("mapping.groups.include", m.Groups.Include)
	mp.exclude = c.regexps("mapping.groups.exclude", m.Groups.Exclude)

	for i, line := range m.Groups.Map {
		path := fmt.Sprintf("mapping.groups.map[%d]", i)
		name, id := strings.TrimSpace(line.IdPGroup), strings.TrimSpace(line.IdPGroupID)
		switch {
		case name != "" && id != "":
			c.errorf(path, "set idp_group or idp_group_id, not both")
		case name != "":
			mp.byName[name] = append(mp.byName[name], i)
		case id != "":
			k := strings.ToLower(id)
			mp.byID[k] = append(mp.byID[k], i)
		default:
			c.errorf(path, "set idp_group or idp_group_id")
		}
		targets := c.appGroups(path+".groups", line.Groups, mp.apps, nil)
		for app, gs := range targets {
			for _, g := range gs {
				manage(app, g)
			}
		}
		mp.lines = append(mp.lines, mapLine{targets: targets})
	}

	for i, r := range m.Groups.Rules {
		path := fmt.Sprintf("mapping.groups.rules[%d]", i)
		re, err := regexp.Compile(r.Match)
		if err != nil {
			c.errorf(path+".match", "%v", err)
			re = nil
		} else if r.Match == "" {
			c.errorf(path+".match", "required")
		}
		targets := c.ruleTargets(path+".groups", r.Groups, re, mp.apps, privileged)
		for app, ts := range targets {
			for _, t := range ts {
				if pat, literal := templatePattern(t); literal {
					manage(app, expandLiteral(t))
				} else if !slices.Contains(mp.plans[app].patternSrc, pat) {
					mp.plans[app].patternSrc = append(mp.plans[app].patternSrc, pat)
					mp.plans[app].patterns = append(mp.plans[app].patterns, regexp.MustCompile(pat))
				}
			}
		}
		mp.rules = append(mp.rules, groupRule{re: re, targets: targets})
	}

	mp.defaults = c.appGroups("mapping.groups.defaults", m.Groups.Defaults, mp.apps, privileged)
	for app, gs := range mp.defaults {
		for _, g := range gs {
			manage(app, g)
		}
	}
	for _, plan := range mp.plans {
		slices.Sort(plan.names)
		slices.Sort(plan.patternSrc)
		slices.SortFunc(plan.patterns, func(a, b *regexp.Regexp) int { return strings.Compare(a.String(), b.String()) })
	}

	if len(c.errs) > 0 {
		return nil, c.errs
	}
	return mp, nil
}

// SetName sets the IdP's display name used in refusal reasons (default: the
// IdP id). Call it before the Mapper is shared.
func (m *Mapper) SetName(name string) {
	if name != "" {
		m.name = name
	}
}

// Provisioning is the IdP's provisioning mode.
func (m *Mapper) Provisioning() string { return m.provisioning }

// RestrictsApps reports whether the IdP's users may enter only the apps
// mapping.access.apps names (rather than every app).
func (m *Mapper) RestrictsApps() bool { return m.restricted }

func (c *compiler) known() string {
	if len(c.appList) == 0 {
		return " (no apps are configured)"
	}
	return " (apps: " + strings.Join(c.appList, ", ") + ")"
}

// privileged resolves the privileged groups per allowed app: the built-in
// names everywhere, plus the configured ones for "*" and for the app.
func (c *compiler) privileged(p config.Provisioning, apps []string) map[string]map[string]bool {
	all := map[string]bool{}
	for _, gs := range DefaultPrivilegedGroups() {
		for _, g := range gs {
			all[groupKey(g)] = true
		}
	}
	out := make(map[string]map[string]bool, len(apps))
	for _, a := range apps {
		out[a] = maps.Clone(all)
	}
	for _, key := range slices.Sorted(maps.Keys(p.PrivilegedGroups)) {
		path := "provisioning.privileged_groups." + key
		if key != allApps && !c.apps[key] {
			c.errorf(path, "unknown app %q%s", key, c.known())
			continue
		}
		for i, g := range p.PrivilegedGroups[key] {
			g, reason := cleanGroup(g)
			if reason != "" {
				c.errorf(fmt.Sprintf("%s[%d]", path, i), "%s", reason)
				continue
			}
			for _, a := range apps {
				if key == allApps || key == a {
					out[a][groupKey(g)] = true
				}
			}
		}
	}
	return out
}

// appGroups checks an app → groups block and resolves "*" into every
// allowed app. Apps configured but closed to this IdP are skipped. When
// privileged is non-nil, privileged names are refused.
func (c *compiler) appGroups(path string, ag config.AppGroups, apps []string, privileged map[string]map[string]bool) map[string][]string {
	out := map[string][]string{}
	for _, key := range slices.Sorted(maps.Keys(ag)) {
		kpath := path + "." + key
		if key != allApps && !c.apps[key] {
			c.errorf(kpath, "unknown app %q%s", key, c.known())
			continue
		}
		for i, g := range ag[key] {
			gpath := fmt.Sprintf("%s[%d]", kpath, i)
			g, reason := cleanGroup(g)
			if reason != "" {
				c.errorf(gpath, "%s", reason)
				continue
			}
			for _, a := range apps {
				if key != allApps && key != a {
					continue
				}
				if privileged != nil && privileged[a][groupKey(g)] {
					c.errorf(gpath, "%q is a privileged group in %s; only an explicit map line may grant it", g, a)
					break
				}
				if !slices.ContainsFunc(out[a], func(x string) bool { return groupKey(x) == groupKey(g) }) {
					out[a] = append(out[a], g)
				}
			}
		}
	}
	return out
}

// ruleTargets checks a rule's group templates: every $ reference must name
// a group of the rule's regexp, and a template without captures must not
// be a privileged name.
func (c *compiler) ruleTargets(path string, ag config.AppGroups, re *regexp.Regexp, apps []string, privileged map[string]map[string]bool) map[string][]string {
	out := map[string][]string{}
	for _, key := range slices.Sorted(maps.Keys(ag)) {
		kpath := path + "." + key
		if key != allApps && !c.apps[key] {
			c.errorf(kpath, "unknown app %q%s", key, c.known())
			continue
		}
		for i, t := range ag[key] {
			tpath := fmt.Sprintf("%s[%d]", kpath, i)
			t = strings.TrimSpace(t)
			if t == "" {
				c.errorf(tpath, "empty group template")
				continue
			}
			if re != nil {
				if ref := badReference(t, re); ref != "" {
					c.errorf(tpath, "%s names no group of the match expression", ref)
					continue
				}
			}
			// The literal parts alone must already make a usable name
			// (captures come from IdP groups that passed the same check).
			literal := expandLiteral(t)
			if _, reason := cleanGroup(literal); reason != "" && literal != "" {
				c.errorf(tpath, "%s", reason)
				continue
			}
			for _, a := range apps {
				if key != allApps && key != a {
					continue
				}
				if _, lit := templatePattern(t); lit && privileged[a][groupKey(literal)] {
					c.errorf(tpath, "%q is a privileged group in %s; rules never grant privileged groups, use an explicit map line", literal, a)
					break
				}
				out[a] = append(out[a], t)
			}
		}
	}
	return out
}

func (c *compiler) regexps(path string, srcs []string) []*regexp.Regexp {
	var out []*regexp.Regexp
	for i, s := range srcs {
		re, err := regexp.Compile(s)
		if err != nil {
			c.errorf(fmt.Sprintf("%s[%d]", path, i), "%v", err)
			continue
		}
		out = append(out, re)
	}
	return out
}

// templateRefs walks a regexp replacement template the way regexp.Expand
// reads it: $name or ${name}, $$ for a literal $, and a $ that starts no
// valid reference copied as is. It calls lit for literal text and ref for
// each reference.
func templateRefs(t string, lit func(string), ref func(string)) {
	for {
		i := strings.IndexByte(t, '$')
		if i < 0 {
			lit(t)
			return
		}
		lit(t[:i])
		t = t[i:]
		if strings.HasPrefix(t, "$$") {
			lit("$")
			t = t[2:]
			continue
		}
		name, rest, ok := extractRef(t)
		if !ok {
			lit("$")
			t = t[1:]
			continue
		}
		ref(name)
		t = rest
	}
}

// extractRef mirrors regexp's extract: t starts with '$'.
func extractRef(t string) (name, rest string, ok bool) {
	if len(t) < 2 {
		return "", "", false
	}
	brace := false
	i := 1
	if t[1] == '{' {
		brace = true
		i = 2
	}
	j := i
	for j < len(t) {
		r, size := utf8.DecodeRuneInString(t[j:])
		if !unicode.IsLetter(r) && !unicode.IsDigit(r) && r != '_' {
			break
		}
		j += size
	}
	if j == i {
		return "", "", false
	}
	name = t[i:j]
	if brace {
		if j >= len(t) || t[j] != '}' {
			return "", "", false
		}
		j++
	}
	return name, t[j:], true
}

// badReference returns the first reference in t that names no group of re.
func badReference(t string, re *regexp.Regexp) string {
	bad := ""
	templateRefs(t, func(string) {}, func(name string) {
		if bad != "" {
			return
		}
		if n, err := strconv.Atoi(name); err == nil {
			if n < 0 || n > re.NumSubexp() {
				bad = "$" + name
			}
			return
		}
		if re.SubexpIndex(name) < 0 {
			bad = "$" + name
		}
	})
	return bad
}

// templatePattern turns a replacement template into an anchored,
// case-insensitive regexp source for the names it can produce; literal
// reports that it has no references (it produces one fixed name).
func templatePattern(t string) (pattern string, literal bool) {
	var b strings.Builder
	b.WriteString("(?i)^")
	literal = true
	templateRefs(t, func(s string) { b.WriteString(regexp.QuoteMeta(s)) }, func(string) {
		literal = false
		b.WriteString(".*")
	})
	b.WriteString("$")
	return b.String(), literal
}

// expandLiteral is the name a template without references produces.
func expandLiteral(t string) string {
	var b strings.Builder
	templateRefs(t, func(s string) { b.WriteString(s) }, func(string) {})
	return b.String()
}

// cleanGroup trims a group name and says why it cannot be used, if so. A
// name is never split: "a,b" is refused, not read as two groups.
func cleanGroup(s string) (string, string) {
	s = strings.TrimSpace(s)
	switch {
	case s == "." || s == "..":
		// Would become a path segment in app REST URLs.
		return s, fmt.Sprintf("group name %q is not a name", s)
	case s != "" && len(s) <= maxGroupName && isPlainASCII(s):
		return s, ""
	case s == "":
		return "", "empty group name"
	case !utf8.ValidString(s):
		return s, fmt.Sprintf("group name %q is not valid UTF-8", s)
	case len(s) > maxGroupName:
		return s, fmt.Sprintf("group name %q is longer than %d bytes", s, maxGroupName)
	case strings.ContainsAny(s, ",;"):
		return s, fmt.Sprintf("group name %q holds a separator (, or ;)", s)
	case strings.ContainsFunc(s, isBreaking):
		return s, fmt.Sprintf("group name %q holds a control character", s)
	}
	return s, ""
}

// isBreaking reports characters that end a line or field somewhere
// downstream (headers, logs, CSV): control characters and the Unicode
// line and paragraph separators.
func isBreaking(r rune) bool {
	return unicode.IsControl(r) || r == '\u2028' || r == '\u2029'
}

// valueRule is a compiled config.ValueRule.
type valueRule struct {
	claims     []string
	tmpl       []tmplPart
	fallback   []string
	transforms []transform
	def        string
}

type tmplPart struct {
	lit   string
	claim string // set for a placeholder
}

type transformKind int

const (
	tLower transformKind = iota
	tUpper
	tTrim
	tStripDomain
	tRegex
)

type transform struct {
	kind transformKind
	re   *regexp.Regexp
	repl string
}

func (c *compiler) valueRule(path string, r config.ValueRule) *valueRule {
	v := &valueRule{def: r.Default}
	var err error
	if v.claims, err = claimNames(r.Claim); err != nil {
		c.errorf(path+".claim", "%v", err)
	}
	if r.Template != "" {
		if len(v.claims) > 0 {
			c.errorf(path, "set claim or template, not both")
		}
		if v.tmpl, err = parseTemplate(r.Template); err != nil {
			c.errorf(path+".template", "%v", err)
		}
	}
	if v.fallback, err = claimNames(r.Fallback); err != nil {
		c.errorf(path+".fallback", "%v", err)
	}
	for i, t := range r.Transforms {
		tr, err := parseTransform(t)
		if err != nil {
			c.errorf(fmt.Sprintf("%s.transforms[%d]", path, i), "%v", err)
			continue
		}
		v.transforms = append(v.transforms, tr)
	}
	return v
}

// claimNames reads a claim name or a list of names, as the strict loader
// or a Go literal presents them.
func claimNames(v any) ([]string, error) {
	var out []string
	add := func(s string) error {
		if s = strings.TrimSpace(s); s == "" {
			return errors.New("empty claim name")
		}
		out = append(out, s)
		return nil
	}
	switch x := v.(type) {
	case nil:
		return nil, nil
	case string:
		if x == "" {
			return nil, nil
		}
		return out, add(x)
	case []string:
		for _, s := range x {
			if err := add(s); err != nil {
				return nil, err
			}
		}
	case []any:
		for _, e := range x {
			s, ok := e.(string)
			if !ok {
				return nil, fmt.Errorf("want claim names, got %T in the list", e)
			}
			if err := add(s); err != nil {
				return nil, err
			}
		}
	default:
		return nil, fmt.Errorf("want a claim name or a list of names, got %T", v)
	}
	return out, nil
}

func parseTransform(v any) (transform, error) {
	switch x := v.(type) {
	case string:
		switch x {
		case "lowercase":
			return transform{kind: tLower}, nil
		case "uppercase":
			return transform{kind: tUpper}, nil
		case "trim":
			return transform{kind: tTrim}, nil
		case "strip_domain":
			return transform{kind: tStripDomain}, nil
		}
		return transform{}, fmt.Errorf("unknown transform %q (want lowercase, uppercase, trim, strip_domain or {regex: ..., replace: ...})", x)
	case map[string]any:
		m := make(map[string]string, len(x))
		for k, e := range x {
			s, ok := e.(string)
			if !ok && e != nil {
				return transform{}, fmt.Errorf("%s: want a string, got %T", k, e)
			}
			m[k] = s
		}
		return regexTransform(m)
	case map[string]string:
		return regexTransform(x)
	}
	return transform{}, fmt.Errorf("want a transform name or {regex: ..., replace: ...}, got %T", v)
}

func regexTransform(m map[string]string) (transform, error) {
	for _, k := range slices.Sorted(maps.Keys(m)) {
		if k != "regex" && k != "replace" {
			return transform{}, fmt.Errorf("unknown key %q (want regex and replace)", k)
		}
	}
	src, ok := m["regex"]
	if !ok || src == "" {
		return transform{}, errors.New("regex: required")
	}
	re, err := regexp.Compile(src)
	if err != nil {
		return transform{}, fmt.Errorf("regex: %v", err)
	}
	if ref := badReference(m["replace"], re); ref != "" {
		return transform{}, fmt.Errorf("replace: %s names no group of the regex", ref)
	}
	return transform{kind: tRegex, re: re, repl: m["replace"]}, nil
}

// parseTemplate reads "{{given_name}} {{family_name}}". Claim names may
// hold anything but braces (SAML attribute names are URIs).
func parseTemplate(s string) ([]tmplPart, error) {
	var parts []tmplPart
	rest := s
	for rest != "" {
		i := strings.Index(rest, "{{")
		if i < 0 {
			parts = append(parts, tmplPart{lit: rest})
			break
		}
		if i > 0 {
			parts = append(parts, tmplPart{lit: rest[:i]})
		}
		j := strings.Index(rest[i+2:], "}}")
		if j < 0 {
			return nil, fmt.Errorf("unclosed {{ at offset %d", len(s)-len(rest)+i)
		}
		name := strings.TrimSpace(rest[i+2 : i+2+j])
		if name == "" {
			return nil, fmt.Errorf("empty placeholder at offset %d", len(s)-len(rest)+i)
		}
		if strings.ContainsAny(name, "{}") {
			return nil, fmt.Errorf("placeholder %q holds a brace", name)
		}
		parts = append(parts, tmplPart{claim: name})
		rest = rest[i+2+j+2:]
	}
	return parts, nil
}

// firstValue is a claim's first value that is not blank.
func firstValue(id *providers.Identity, claim string) string {
	for _, v := range id.Claims[claim] {
		if strings.TrimSpace(v) != "" {
			return v
		}
	}
	return ""
}

func blank(s string) bool { return strings.TrimSpace(s) == "" }

// source describes where the rule reads from, for messages.
func (v *valueRule) source() string {
	if v.tmpl != nil {
		return "template"
	}
	return "claim " + strings.Join(append(slices.Clip(v.claims), v.fallback...), ", ")
}

func (v *valueRule) eval(id *providers.Identity) string {
	var s string
	if v.tmpl != nil {
		var b strings.Builder
		for _, p := range v.tmpl {
			if p.claim == "" {
				b.WriteString(p.lit)
			} else {
				b.WriteString(firstValue(id, p.claim))
			}
		}
		s = strings.TrimSpace(b.String())
	} else {
		for _, c := range v.claims {
			if s = firstValue(id, c); s != "" {
				break
			}
		}
	}
	if s != "" {
		s = v.apply(s)
	}
	if blank(s) {
		s = ""
		for _, c := range v.fallback {
			if s = firstValue(id, c); s != "" {
				s = v.apply(s)
				break
			}
		}
	}
	if blank(s) {
		s = v.def
	}
	return s
}

func (v *valueRule) apply(s string) string {
	for _, t := range v.transforms {
		switch t.kind {
		case tLower:
			s = strings.ToLower(s)
		case tUpper:
			s = strings.ToUpper(s)
		case tTrim:
			s = strings.TrimSpace(s)
		case tStripDomain:
			s, _, _ = strings.Cut(s, "@")
		case tRegex:
			s = t.re.ReplaceAllString(s, t.repl)
		}
	}
	return s
}

// Map derives the profile of id. Policy refusals (require_groups,
// require_claims, an unusable username) are *DeniedError; Map has no other
// failure mode, and never panics on claim content.
//
// access.require_groups is checked against the IdP groups before
// include/exclude: the filters decide what gets mapped, not who may enter,
// so narrowing the mapped set cannot lock people out by accident.
func (m *Mapper) Map(id providers.Identity) (*Profile, error) {
	p := &Profile{IdP: m.idp, Subject: id.Subject, Provisioning: m.provisioning, idpName: m.name}
	warn := func(format string, args ...any) {
		w := fmt.Sprintf(format, args...)
		if !slices.Contains(p.Warnings, w) {
			p.Warnings = append(p.Warnings, w)
		}
	}

	// The IdP's groups: trimmed, checked, de-duplicated, never split.
	raw := id.Claims[m.groupClaim]
	groups := make([]string, 0, len(raw))
	seen := make(map[string]bool, len(raw))
	for _, g := range raw {
		g, reason := cleanGroup(g)
		if reason == "empty group name" {
			continue
		}
		if reason != "" {
			warn("IdP group dropped: %s", reason)
			continue
		}
		if !seen[g] {
			seen[g] = true
			groups = append(groups, g)
		}
	}
	slices.Sort(groups)

	if err := m.checkAccess(&id, groups); err != nil {
		return nil, err
	}

	rawUser := m.username.eval(&id)
	if rawUser == "" {
		return nil, &DeniedError{Reason: fmt.Sprintf("%s sent no user name (%s)", m.name, m.username.source())}
	}
	u, err := m.allowed.normalize(rawUser)
	if err != nil {
		return nil, &DeniedError{Reason: fmt.Sprintf("the user name %s sent cannot be used: %v", m.name, err)}
	}
	for _, g := range m.protected {
		if ok, _ := path.Match(g, u); ok {
			return nil, &DeniedError{Reason: fmt.Sprintf("the account %s is protected and can only sign in to the applications directly", u)}
		}
	}
	p.Username = u
	p.Email = m.scalar(&id, "email", m.email, warn)
	p.DisplayName = m.scalar(&id, "display name", m.displayName, warn)
	if len(m.attrs) > 0 {
		p.Attributes = make(map[string]string, len(m.attrs))
		for _, a := range m.attrs {
			if v := m.scalar(&id, "attribute "+a.name, a.rule, warn); v != "" {
				p.Attributes[a.name] = v
			}
		}
	}

	// include/exclude, then map lines, rules and defaults in that order, so
	// a group's Rule names the first line that granted it.
	p.IdPGroups = groups[:0:0]
	for _, g := range groups {
		if m.keep(g) {
			p.IdPGroups = append(p.IdPGroups, g)
		}
	}
	grants := make(map[string][]Grant, len(m.apps))
	granted := make(map[string]map[string]bool, len(m.apps))
	grant := func(app, group, rule string) {
		set := granted[app]
		if set == nil {
			set = map[string]bool{}
			granted[app] = set
		}
		if k := groupKey(group); !set[k] {
			set[k] = true
			grants[app] = append(grants[app], Grant{Group: group, Rule: rule})
		}
	}

	var lines []int
	for _, g := range p.IdPGroups {
		lines = append(lines, m.byName[g]...)
		if len(m.byID) > 0 {
			lines = append(lines, m.byID[strings.ToLower(g)]...)
		}
	}
	slices.Sort(lines)
	lines = slices.Compact(lines)
	for _, i := range lines {
		rule := "map[" + strconv.Itoa(i) + "]"
		for _, app := range m.apps {
			for _, g := range m.lines[i].targets[app] {
				grant(app, g, rule)
			}
		}
	}

	var dst []byte
	for ri, r := range m.rules {
		rule := "rules[" + strconv.Itoa(ri) + "]"
		for _, g := range p.IdPGroups {
			match := r.re.FindStringSubmatchIndex(g)
			if match == nil {
				continue
			}
			for _, app := range m.apps {
				for _, t := range r.targets[app] {
					dst = r.re.ExpandString(dst[:0], t, g, match)
					name, reason := cleanGroup(string(dst))
					if reason == "empty group name" {
						continue
					}
					if reason != "" {
						warn("%s: IdP group %q gives no %s group: %s", rule, g, app, reason)
						continue
					}
					if m.plans[app].privileged[groupKey(name)] {
						warn("%s: IdP group %q would give the privileged %s group %q; only an explicit map line grants it", rule, g, app, name)
						continue
					}
					grant(app, name, rule)
				}
			}
		}
	}

	for _, app := range m.apps {
		for _, g := range m.defaults[app] {
			grant(app, g, "default")
		}
	}

	sync := m.sync
	if groupsIncomplete(&id) {
		// The IdP left groups out (Entra's group overage): removing what is
		// missing would take away access the person still has.
		sync = SyncAddOnly
		warn("the identity provider sent an incomplete group list (group overage); groups are only added this time, none removed")
	}
	p.Apps = make(map[string]*AppProfile, len(m.apps))
	for _, app := range m.apps {
		gs := grants[app]
		slices.SortFunc(gs, func(a, b Grant) int { return strings.Compare(a.Group, b.Group) })
		plan := m.plans[app]
		p.Apps[app] = &AppProfile{
			Groups:          gs,
			ManagedGroups:   plan.names,
			ManagedPatterns: plan.patternSrc,
			Sync:            sync,
			plan:            plan,
		}
	}
	return p, nil
}

// groupsIncomplete spots Entra ID's group overage markers: in OIDC tokens
// a "_claim_names" entry for groups (or "hasgroups"), in SAML a
// groups.link attribute pointing at Microsoft Graph.
func groupsIncomplete(id *providers.Identity) bool {
	if len(id.Claims["_claim_names.groups"]) > 0 || id.Claim("hasgroups") == "true" {
		return true
	}
	return len(id.Claims["http://schemas.microsoft.com/claims/groups.link"]) > 0
}

// scalar evaluates a single-line value; one holding a control character
// is dropped rather than passed on to headers and REST calls.
func (m *Mapper) scalar(id *providers.Identity, what string, v *valueRule, warn func(string, ...any)) string {
	s := v.eval(id)
	if !utf8.ValidString(s) || strings.ContainsFunc(s, isBreaking) {
		warn("%s dropped: %q holds a control character or invalid UTF-8", what, s)
		return ""
	}
	return s
}

func (m *Mapper) keep(g string) bool {
	if len(m.include) > 0 && !slices.ContainsFunc(m.include, func(re *regexp.Regexp) bool { return re.MatchString(g) }) {
		return false
	}
	return !slices.ContainsFunc(m.exclude, func(re *regexp.Regexp) bool { return re.MatchString(g) })
}

func (m *Mapper) checkAccess(id *providers.Identity, groups []string) error {
	if len(m.requireGroups) > 0 {
		ok := false
		for _, want := range m.requireGroups {
			guid := isGUID(want)
			for _, g := range groups {
				if g == want || guid && strings.EqualFold(g, want) {
					ok = true
					break
				}
			}
			if ok {
				break
			}
		}
		if !ok {
			return &DeniedError{Reason: fmt.Sprintf("you are not in any of the groups %s required by %s", strings.Join(m.requireGroups, ", "), m.name)}
		}
	}
	for _, req := range m.requireClaims {
		if !slices.ContainsFunc(id.Claims[req.claim], func(v string) bool { return slices.Contains(req.values, v) }) {
			return &DeniedError{Reason: fmt.Sprintf("%s requires your %s to be one of %s", m.name, req.claim, strings.Join(req.values, ", "))}
		}
	}
	return nil
}

// isGUID reports the 8-4-4-4-12 hex form Entra uses for object IDs, which
// compare case-insensitively.
func isGUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
				return false
			}
		}
	}
	return true
}
