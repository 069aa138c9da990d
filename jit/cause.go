package jit

import (
	"fmt"
	"strings"
)

// Source is what set a change in motion.
type Source string

const (
	SourceLogin     Source = "login"     // a person signed in (also through usher's OpenID Provider)
	SourceSCIM      Source = "scim"      // an IdP pushed a SCIM change
	SourceSweep     Source = "sweep"     // a scheduled or manual sweep run
	SourceDirectory Source = "directory" // a sync from an IdP's directory
	SourceAdmin     Source = "admin"     // an admin's action on the admin page or API
	SourceRetry     Source = "retry"     // the retry queue finishing a change
	SourceSystem    Source = "system"    // usher itself (a reload)
)

// Cause says why something happens to a person: which source, who (an
// admin's name, a sweep policy, a directory), which run, which IdP, and a
// human reason. It travels with every admission, removal, queued job and
// audit entry, so that nothing has to be read back out of a message.
type Cause struct {
	Source Source `json:"source"`
	// Actor names who acted within the source: the admin ("alice",
	// "token"), the sweep policy, the directory. Empty for logins and SCIM.
	Actor string `json:"actor,omitempty"`
	// Run is the sweep or directory sync run, 0 otherwise.
	Run int64 `json:"run,omitempty"`
	// IdP is the IdP the cause came through, when there is one.
	IdP string `json:"idp,omitempty"`
	// Reason is the human explanation: "inactive 90 days", "deactivated by
	// SCIM PATCH". Never parsed.
	Reason string `json:"reason,omitempty"`
}

// LoginVia is the cause of a login at idp.
func LoginVia(idp string) Cause { return Cause{Source: SourceLogin, IdP: idp} }

// SCIMPush is the cause of a SCIM push from idp.
func SCIMPush(idp, reason string) Cause { return Cause{Source: SourceSCIM, IdP: idp, Reason: reason} }

// ByAdmin is the cause of an admin's action; who is "token" or the admin's
// username.
func ByAdmin(who, reason string) Cause { return Cause{Source: SourceAdmin, Actor: who, Reason: reason} }

// BySweep is the cause of an item of a sweep run.
func BySweep(policy string, run int64, reason string) Cause {
	return Cause{Source: SourceSweep, Actor: policy, Run: run, Reason: reason}
}

// ByDirectory is the cause of a directory sync run's change.
func ByDirectory(name string, run int64, reason string) Cause {
	return Cause{Source: SourceDirectory, Actor: name, Run: run, Reason: reason}
}

// ActorLabel is the cause as the audit log's actor column shows it:
// "login", "scim", "sweep:leavers", "admin:alice", "directory:corp-ad",
// "retry".
func (c Cause) ActorLabel() string {
	if c.Actor == "" {
		return string(c.Source)
	}
	return string(c.Source) + ":" + c.Actor
}

// String is a short human description: "sweep leavers run 12: inactive
// 90 days", "login via okta", "admin alice: left the company".
func (c Cause) String() string {
	var b strings.Builder
	b.WriteString(string(c.Source))
	switch {
	case c.Source == SourceLogin && c.IdP != "":
		b.WriteString(" via " + c.IdP)
	case c.Actor != "":
		b.WriteString(" " + c.Actor)
	}
	if c.Run != 0 {
		fmt.Fprintf(&b, " run %d", c.Run)
	}
	if c.Reason != "" {
		b.WriteString(": " + c.Reason)
	}
	return b.String()
}

// retried is the cause of the retry queue finishing what c started.
func (c Cause) retried() Cause {
	if c.Source == SourceRetry {
		return c
	}
	r := c
	r.Source, r.Actor = SourceRetry, ""
	if c.Reason == "" {
		r.Reason = "from " + c.ActorLabel()
	} else {
		r.Reason = c.Reason + " (from " + c.ActorLabel() + ")"
	}
	return r
}
