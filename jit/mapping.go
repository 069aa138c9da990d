package jit

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
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

// DefaultProtectedUsers are usernames usher never signs anyone in as
// unless provisioning.protected_users says otherwise: the apps' local
// administrator accounts, which an IdP identity must not take over.
var DefaultProtectedUsers = []string{"admin", "administrator", "root", "sysadmin"}

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
	// Adoption is the IdP's policy for app accounts of this username that
	// exist but that usher never provisioned (config.Adopt*).
	Adoption string
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
