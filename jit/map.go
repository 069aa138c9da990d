package jit

import (
	"fmt"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/usherhq/usher/providers"
)

// Map derives the profile of id. Policy refusals (require_groups,
// require_claims, an unusable username) are *DeniedError; Map has no other
// failure mode, and never panics on claim content.
//
// access.require_groups is checked against the IdP groups before
// include/exclude: the filters decide what gets mapped, not who may enter,
// so narrowing the mapped set cannot lock people out by accident.
func (m *Mapper) Map(id providers.Identity) (*Profile, error) {
	p := &Profile{IdP: m.idp, Subject: id.Subject, Provisioning: m.provisioning, Adoption: m.adoption, idpName: m.name}
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
// groups.link attribute pointing at Microsoft Graph; and usher's own
// ClaimGroupsIncomplete.
func groupsIncomplete(id *providers.Identity) bool {
	if len(id.Claims["_claim_names.groups"]) > 0 || id.Claim("hasgroups") == "true" || id.Claim(ClaimGroupsIncomplete) == "true" {
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
