package jit

import (
	"fmt"
	"maps"
	"path"
	"regexp"
	"slices"
	"strings"
	"unicode"

	"golang.org/x/text/unicode/norm"

	"github.com/usherhq/usher/config"
)

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
	adoption     string   // config.Adopt*
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

// Scope is what one IdP's mapping is compiled against.
type Scope struct {
	// IdP is the IdP's id.
	IdP string
	// Claims are the IdP type's default claims (providers.Config).
	Claims config.ClaimDefaults
	// Provisioning is the shared provisioning block.
	Provisioning config.Provisioning
	// Apps are the configured app names.
	Apps []string
	// Privileged are the groups the app kinds declare as their
	// administrators' (targets.Config.PrivilegedGroups, all kinds
	// together). Compile knows app names, not products, so it treats each
	// as privileged in every app: a name that is an admin group in one
	// product is never something a rule should produce in another.
	Privileged []string
	// Adoption is the IdP's policy for app accounts that exist but that
	// no usher identity owns (config.AdoptNever, ...); default
	// config.AdoptVerifiedEmail.
	Adoption string
}

// Compile checks and compiles one IdP's mapping in its scope, with the
// defaults of config.Mapping.WithDefaults and the IdP type's claims. A
// non-nil error is an Errors listing every problem with its field path.
func Compile(m config.Mapping, s Scope) (*Mapper, error) {
	idpID, p, apps, builtinPrivileged := s.IdP, s.Provisioning, s.Apps, s.Privileged
	m = m.WithDefaults(s.Claims)
	adoption := s.Adoption
	switch adoption {
	case "":
		adoption = config.AdoptVerifiedEmail
	case config.AdoptNever, config.AdoptVerifiedEmail, config.AdoptAlways:
	default:
		return nil, Errors{config.FieldErrorf("adoption", "want never, verified_email or always, got %q", adoption)}
	}
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
		adoption:     adoption,
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
		c.errorf("mapping.username.claim", "required: this IdP type has no default username claim")
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

	privileged := c.privileged(p, mp.apps, builtinPrivileged)
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

// Adoption is the IdP's policy for taking over app accounts no usher
// identity owns yet (config.AdoptNever, AdoptVerifiedEmail, AdoptAlways).
func (m *Mapper) Adoption() string { return m.adoption }

// Allows reports whether the IdP's users may enter app under this
// mapping. The proxy asks on every request, so that a reload that closes
// an app to an IdP shuts its sessions out at once; it costs a lookup in
// a short sorted list.
func (m *Mapper) Allows(app string) bool {
	if !m.restricted {
		return true
	}
	_, found := slices.BinarySearch(m.apps, app)
	return found
}

func (c *compiler) known() string {
	if len(c.appList) == 0 {
		return " (no apps are configured)"
	}
	return " (apps: " + strings.Join(c.appList, ", ") + ")"
}

// privileged resolves the privileged groups per allowed app: the built-in
// names everywhere, plus the configured ones for "*" and for the app.
func (c *compiler) privileged(p config.Provisioning, apps, builtin []string) map[string]map[string]bool {
	all := map[string]bool{}
	for _, g := range builtin {
		all[groupKey(g)] = true
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
