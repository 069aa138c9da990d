// Package jit is just-in-time provisioning: it maps an IdP identity to the
// desired app profile and reconciles it against each app.
//
// The mapping half (Compile, Mapper.Map, Profile) is pure: no I/O, no
// clock, safe for concurrent use once compiled. Compile turns one IdP's
// config.Mapping into a Mapper with every regular expression, template and
// app name checked up front, so that Map, which runs on every login, only
// evaluates. Map applies the access policy (a refusal is a *DeniedError,
// which the proxy shows as a 403 naming the reason), derives the username
// by one rule (NormalizeUsername), and computes per-app group grants.
//
// Two safety rules shape the group mapping:
//
//   - A privileged app group (jira-administrators, ...) is granted only by
//     an explicit `map` line that names it; never by a rule template, never
//     by defaults, never because an IdP group has the same name.
//   - A group value is never split: a name holding a separator or a control
//     character is dropped with a warning, so "a,b" cannot become two
//     groups downstream (headers, REST calls).
//
// Templates in value rules are simple {{claim_name}} placeholder
// substitution, not text/template: nothing but claim values can be reached
// from a config file. An unknown or empty claim substitutes "", and the
// result is trimmed of surrounding white space.
package jit
