package sweep

import (
	"fmt"
	"path"
	"time"

	"github.com/robfig/cron/v3"

	"github.com/usherhq/usher/config"
)

// Policy is one `sweeps:` entry of the config file: which users a sweep
// looks at, what evidence says they are gone, what it does to them and
// when it refuses to act. It is plain data; the lead may move it into
// package config.
type Policy struct {
	Name string `yaml:"name"`
	// Schedule is a five-field cron expression in the server's local time
	// zone; Every is a fixed interval instead. Exactly one is set (neither
	// means the sweep only runs by hand: `usher sweep`, the admin page).
	Schedule string        `yaml:"schedule"`
	Every    time.Duration `yaml:"every"`
	// IdPs names the IdPs whose bound users this policy covers.
	IdPs    []string `yaml:"idps"`
	Sources Sources  `yaml:"sources"`
	// Action is what happens to a leaver; default deactivate.
	Action Action `yaml:"action"`
	// Apps limits the sweep to these apps; default all apps.
	Apps []string `yaml:"apps"`
	// ProtectedUsers are username globs (path.Match syntax, compared
	// case-insensitively) that are never touched.
	ProtectedUsers []string `yaml:"protected_users"`
	// ProtectedGroups are group globs; their members are never touched.
	ProtectedGroups []string `yaml:"protected_groups"`
	// LicenceGroups names, per app, the group that action
	// remove_licence_group takes away (Jira: jira-software-users,
	// Confluence: confluence-users, Bitbucket: stash-users). Required for
	// every app in scope with that action: usher does not guess which
	// group costs a seat.
	LicenceGroups map[string]string `yaml:"licence_groups"`
	// MaxShare and MaxCount are the safety valve: a plan that acts on more
	// than MaxShare of the managed users, or on more than MaxCount users,
	// is refused as a whole. MaxShare defaults to 0.05; MaxCount 0 means
	// no count limit.
	MaxShare float64 `yaml:"max_share"`
	MaxCount int     `yaml:"max_count"`
	// Concurrency caps the changes in flight per app (default 4).
	Concurrency int  `yaml:"concurrency"`
	DryRun      bool `yaml:"dry_run"`
}

// Sources are the kinds of evidence that a user has left. Any one of them
// matching makes the user a candidate.
type Sources struct {
	// SCIM: the IdP's SCIM push marked the user inactive, or deleted it.
	SCIM bool `yaml:"scim"`
	// Directory names a configured directory (`directories:`) of the
	// policy's one IdP: a bound user disabled there, or missing from a
	// complete pull of it, is gone. A pull that failed, was throttled to
	// a stop or came back truncated blocks the plan instead.
	Directory string `yaml:"directory"`
	// InactiveDays: no login for that many days (never logged in: counted
	// from the binding's creation).
	InactiveDays int `yaml:"inactive_days"`
	// EndDateClaim names an attribute of the pushed SCIM user (top level
	// or inside an extension schema) holding an end date (RFC 3339 or
	// YYYY-MM-DD; a bare date lasts to the end of that day, UTC).
	EndDateClaim string `yaml:"end_date_claim"`
	// AccessExpiry: an admin-set expiry date has passed.
	AccessExpiry bool `yaml:"access_expiry"`
}

// Action is what a sweep does to a leaver.
type Action string

const (
	// Deactivate sets the user inactive in the app (Bitbucket: frees the
	// seat by removing the licensing groups).
	Deactivate Action = "deactivate"
	// RemoveManagedGroups removes only the memberships usher added.
	RemoveManagedGroups Action = "remove_managed_groups"
	// RemoveLicenceGroup removes the app's configured licence group.
	RemoveLicenceGroup Action = "remove_licence_group"
	// Delete deletes the user; only for apps whose adapter can.
	Delete Action = "delete"
	// Skip marks a plan item that is a candidate but protected.
	Skip Action = "skip"
)

const (
	defaultMaxShare    = 0.05
	defaultConcurrency = 4
)

// withDefaults returns p with defaults applied.
func (p Policy) withDefaults() Policy {
	if p.Action == "" {
		p.Action = Deactivate
	}
	if p.MaxShare == 0 {
		p.MaxShare = defaultMaxShare
	}
	if p.Concurrency <= 0 {
		p.Concurrency = defaultConcurrency
	}
	return p
}

// Validate reports every problem with the policy, naming the YAML key.
// Whether the named apps exist and can do the action is checked by New.
func (p *Policy) Validate() []error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, &config.FieldError{Field: field, Msg: fmt.Sprintf(format, args...)})
	}
	if p.Name == "" {
		bad("name", "required")
	}
	switch {
	case p.Schedule != "" && p.Every != 0:
		bad("every", "set schedule or every, not both")
	case p.Schedule != "":
		if _, err := cron.ParseStandard(p.Schedule); err != nil {
			bad("schedule", "not a cron expression: %v", err)
		}
	case p.Every < 0:
		bad("every", "must be positive")
	case p.Every > 0 && p.Every < time.Minute:
		bad("every", "must be at least 1m")
	}
	if len(p.IdPs) == 0 {
		bad("idps", "name at least one IdP")
	}
	src := p.Sources
	if !src.SCIM && src.Directory == "" && src.InactiveDays == 0 && src.EndDateClaim == "" && !src.AccessExpiry {
		bad("sources", "enable at least one source")
	}
	if src.InactiveDays < 0 {
		bad("sources.inactive_days", "must not be negative")
	}
	if src.Directory != "" && len(p.IdPs) != 1 {
		bad("sources.directory", "a directory belongs to exactly one IdP; name only that IdP in idps, or split the policy")
	}
	switch p.Action {
	case "", Deactivate, RemoveManagedGroups, Delete:
	case RemoveLicenceGroup:
		if len(p.Apps) == 0 {
			bad("apps", "list the apps when the action is remove_licence_group, each with a licence_groups entry")
		}
		for _, app := range p.Apps {
			if p.LicenceGroups[app] == "" {
				bad("licence_groups."+app, "required with action remove_licence_group")
			}
		}
	default:
		bad("action", "want deactivate, remove_managed_groups, remove_licence_group or delete, not %q", p.Action)
	}
	for i, g := range p.ProtectedUsers {
		if _, err := path.Match(g, ""); err != nil {
			bad(fmt.Sprintf("protected_users[%d]", i), "bad glob %q", g)
		}
	}
	for i, g := range p.ProtectedGroups {
		if _, err := path.Match(g, ""); err != nil {
			bad(fmt.Sprintf("protected_groups[%d]", i), "bad glob %q", g)
		}
	}
	if !(p.MaxShare >= 0 && p.MaxShare <= 1) { // also refuses NaN
		bad("max_share", "want a fraction between 0 and 1")
	}
	if p.MaxCount < 0 {
		bad("max_count", "must not be negative")
	}
	if p.Concurrency < 0 {
		bad("concurrency", "must not be negative")
	}
	return errs
}
