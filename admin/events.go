package admin

import (
	"encoding/json"
	"regexp"
	"time"

	"github.com/usherhq/usher/store"
)

// secretKey matches claim and detail keys whose values must never be
// shown. The audit writer already redacts them; the admin pages do it
// again because a leak here would be read by everyone with admin access.
var secretKey = regexp.MustCompile(`(?i)token|secret|password|assertion|code`)

const redacted = "[redacted]"

// eventView is an audit event as the pages and the API show it: the
// Detail redacted and, for logins, the claims received and the profile
// produced taken apart.
type eventView struct {
	ID       int64          `json:"id"`
	Time     time.Time      `json:"time"`
	Action   string         `json:"action"`
	IdP      string         `json:"idp,omitempty"`
	Subject  string         `json:"subject,omitempty"`
	Username string         `json:"username,omitempty"`
	App      string         `json:"app,omitempty"`
	Actor    string         `json:"actor,omitempty"`
	Outcome  string         `json:"outcome,omitempty"`
	Detail   string         `json:"detail,omitempty"`
	Claims   map[string]any `json:"claims,omitempty"`
	Profile  map[string]any `json:"profile,omitempty"`
}

// viewEvent redacts e. With split, a JSON Detail carrying "claims" or
// "profile" is taken apart (the rest of it stays in Detail); without, the
// Detail stays one (redacted) string, as the export writes it.
func viewEvent(e store.Event, split bool) eventView {
	v := eventView{
		ID: e.ID, Time: e.Time, Action: e.Action, IdP: e.IdP, Subject: e.Subject,
		Username: e.Username, App: e.App, Actor: e.Actor, Outcome: e.Outcome, Detail: e.Detail,
	}
	var obj map[string]any
	if len(e.Detail) == 0 || e.Detail[0] != '{' || json.Unmarshal([]byte(e.Detail), &obj) != nil {
		return v
	}
	redactMap(obj)
	if split {
		if c, ok := obj["claims"].(map[string]any); ok {
			v.Claims = c
			delete(obj, "claims")
		}
		if p, ok := obj["profile"].(map[string]any); ok {
			v.Profile = p
			delete(obj, "profile")
		}
		if len(obj) == 0 {
			v.Detail = ""
			return v
		}
	}
	v.Detail = compactJSON(obj)
	return v
}

// redactMap replaces, at any depth, values whose keys look secret.
func redactMap(m map[string]any) {
	for k, v := range m {
		if secretKey.MatchString(k) {
			m[k] = redacted
			continue
		}
		redactValue(v)
	}
}

func redactValue(v any) {
	switch x := v.(type) {
	case map[string]any:
		redactMap(x)
	case []any:
		for _, e := range x {
			redactValue(e)
		}
	}
}

// loginEmail returns the e-mail a login event's Detail carries, from the
// profile first, else from the claims.
func loginEmail(detail string) string {
	if len(detail) == 0 || detail[0] != '{' {
		return ""
	}
	var d struct {
		Claims  map[string]any `json:"claims"`
		Profile map[string]any `json:"profile"`
	}
	if json.Unmarshal([]byte(detail), &d) != nil {
		return ""
	}
	for _, m := range []map[string]any{d.Profile, d.Claims} {
		for _, k := range []string{"email", "Email", "mail"} {
			if s, ok := m[k].(string); ok && s != "" {
				return s
			}
		}
	}
	return ""
}
