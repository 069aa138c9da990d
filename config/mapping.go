package config

import "time"

// Mapping is how one IdP's claims become the profile usher provisions in
// each app (the `mapping:` block of an IdP entry). It is data only: package
// jit fills the defaults, compiles and checks it, and reports problems with
// paths such as "mapping.groups.rules[1].match".
//
// A few fields accept more than one YAML shape (a claim name or a list of
// names; a transform name or a {regex, replace} mapping). They are typed
// `any` so that the strict loader keeps them as plain values (string,
// []any, map[string]any); jit decodes them as strictly as the loader would.
type Mapping struct {
	Username    ValueRule            `yaml:"username"`
	Email       ValueRule            `yaml:"email"`
	DisplayName ValueRule            `yaml:"display_name"`
	Attributes  map[string]ValueRule `yaml:"attributes"`
	Groups      GroupMapping         `yaml:"groups"`
	Access      Access               `yaml:"access"`
	// Provisioning is on_login (default), manual or off.
	Provisioning string `yaml:"provisioning"`
}

// ValueRule derives one string from the identity's claims: the first
// non-empty of Claim (or the Template), then Transforms; when that is empty,
// the first non-empty Fallback claim through the same Transforms; when that
// is empty too, Default as written.
type ValueRule struct {
	// Claim is a claim name or a list of names; the first with a
	// non-empty value wins.
	Claim any `yaml:"claim"`
	// Template substitutes {{claim_name}} placeholders, e.g.
	// "{{given_name}} {{family_name}}". Exclusive with Claim.
	Template string `yaml:"template"`
	// Fallback is a claim name or a list of names, read when the result
	// is empty.
	Fallback any `yaml:"fallback"`
	// Transforms apply in order: "lowercase", "uppercase", "trim",
	// "strip_domain", or {regex: RE, replace: TEMPLATE}.
	Transforms []any `yaml:"transforms"`
	// Default is a literal used when everything else is empty.
	Default string `yaml:"default"`
}

// AppGroups names app groups per app: the key is an app name, or "*" for
// every app the IdP's users may enter.
type AppGroups map[string][]string

// GroupMapping turns the IdP's group claim into app group memberships.
type GroupMapping struct {
	// Claim holds the IdP group names (or IDs), default "groups".
	Claim string `yaml:"claim"`
	// Include and Exclude are regular expressions on IdP group values,
	// applied before Map and Rules. An empty Include keeps every group.
	Include []string `yaml:"include"`
	Exclude []string `yaml:"exclude"`
	// Map lines grant app groups for one IdP group. They are the only way
	// to grant a privileged group.
	Map []GroupMap `yaml:"map"`
	// Rules grant app groups by regular expression, with $1 / ${name}
	// captures in the group templates. They never grant privileged groups.
	Rules []GroupRule `yaml:"rules"`
	// Defaults are granted to every user of the IdP; privileged groups are
	// refused here.
	Defaults AppGroups `yaml:"defaults"`
	// Sync is full (default: remove managed groups the IdP no longer
	// grants) or add_only.
	Sync string `yaml:"sync"`
}

// GroupMap is one explicit mapping line: exactly one of IdPGroup (a name,
// compared exactly) or IdPGroupID (an object ID, as Entra sends, compared
// case-insensitively).
type GroupMap struct {
	IdPGroup   string    `yaml:"idp_group"`
	IdPGroupID string    `yaml:"idp_group_id"`
	Groups     AppGroups `yaml:"groups"`
}

// GroupRule grants app groups to every IdP group Match matches.
type GroupRule struct {
	Match  string    `yaml:"match"`
	Groups AppGroups `yaml:"groups"`
}

// Access is who may enter through this IdP, and where.
type Access struct {
	// RequireGroups: the user must be in at least one of these IdP groups
	// (checked before Include/Exclude filter the groups; names compare
	// exactly, GUID-shaped IDs case-insensitively).
	RequireGroups []string `yaml:"require_groups"`
	// RequireClaims: for every claim listed, one of the user's values must
	// be among the listed values.
	RequireClaims map[string][]string `yaml:"require_claims"`
	// Apps the IdP's users may enter; empty means every app.
	Apps []string `yaml:"apps"`
}

// Provisioning is the top-level `provisioning:` block, shared by every IdP.
type Provisioning struct {
	// PrivilegedGroups are app groups only an explicit mapping line may
	// grant, per app name or "*". They add to usher's built-in list
	// (jira-administrators, confluence-administrators, ...), never
	// replace it.
	PrivilegedGroups AppGroups `yaml:"privileged_groups"`
	// UsernameAllowed is the set of characters a username may hold after
	// NFKC and lowercasing, written like a regexp class body without the
	// brackets; default "a-z0-9._@+-".
	UsernameAllowed string `yaml:"username_allowed"`
	// ProtectedUsers are username patterns (path.Match globs such as
	// "svc-*") no IdP identity may sign in as, nor SCIM provision: local
	// admin and service accounts of the apps. Default: admin,
	// administrator, root, sysadmin. An empty list protects nobody.
	ProtectedUsers []string `yaml:"protected_users"`
	// FastPath is how long an applied profile counts as fresh: a login
	// with an unchanged profile within it makes no app call. Default 1h.
	FastPath time.Duration `yaml:"fast_path"`
	// OnAppDown decides a login while an app is unreachable:
	// "allow_known" (default) lets people the app already knows in and
	// queues their changes; "deny" refuses every login that cannot be
	// provisioned. A new person is always refused then.
	OnAppDown string `yaml:"on_app_down"`
	// CreateGroups creates mapped groups missing in an app (default true).
	CreateGroups *bool `yaml:"create_groups"`
	// Deadline bounds the work in each app for one sign-in, SCIM push or
	// directory sync (every call and retry; default 5s). An app that has
	// not finished by then counts as down for it.
	Deadline time.Duration `yaml:"deadline"`
	// Retry times the retry queue: changes an app could not take.
	Retry Retry `yaml:"retry"`
}

// Retry times the retry queue (provisioning.retry).
type Retry struct {
	// Interval is how often each replica looks for due changes, and the
	// beat of its heartbeat (a replica silent for three beats is gone,
	// and the changes it was making are any replica's). Default 5s.
	Interval time.Duration `yaml:"interval"`
	// MinBackoff and MaxBackoff bound the wait before a change is tried
	// again: it doubles from MinBackoff with each failure, up to
	// MaxBackoff (defaults 5s and 1h), with jitter.
	MinBackoff time.Duration `yaml:"min_backoff"`
	MaxBackoff time.Duration `yaml:"max_backoff"`
	// ProbeEvery is how often an app with waiting changes is asked
	// whether it answers again; when it does, its changes are tried at
	// once instead of after their backoff. Default 15s.
	ProbeEvery time.Duration `yaml:"probe_every"`
}

// Adoption policies (idps[].adoption).
const (
	AdoptNever         = "never"
	AdoptVerifiedEmail = "verified_email"
	AdoptAlways        = "always"
)

// ClaimDefaults are the claims an IdP type takes the username and the
// display name from when a mapping names none (OIDC: preferred_username
// and name; SAML: the NameID and displayName). Each provider type
// declares its own.
type ClaimDefaults struct {
	Username    string
	DisplayName string
}

// WithDefaults returns m with the defaults: username and display name
// from the IdP type's claims d, e-mail from email, groups from the groups
// claim, full group sync and provisioning on login. A value rule gets its
// default claim only when it names neither a claim nor a template.
func (m Mapping) WithDefaults(d ClaimDefaults) Mapping {
	fill := func(r *ValueRule, claim string) {
		if r.Claim == nil && r.Template == "" && claim != "" {
			r.Claim = claim
		}
	}
	fill(&m.Username, d.Username)
	fill(&m.Email, "email")
	fill(&m.DisplayName, d.DisplayName)
	if m.Groups.Claim == "" {
		m.Groups.Claim = "groups"
	}
	if m.Groups.Sync == "" {
		m.Groups.Sync = "full"
	}
	if m.Provisioning == "" {
		m.Provisioning = "on_login"
	}
	return m
}
