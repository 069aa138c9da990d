package jit

import (
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/usherhq/usher/config"
	"github.com/usherhq/usher/providers"
)

var testApps = []string{"bitbucket", "confluence", "jira"}

// testPrivileged stands in for the privileged groups the target kinds
// declare (cmd/usher collects them from targets).
var testPrivileged = []string{"jira-administrators", "jira-system-administrators", "confluence-administrators", "system-administrators", "sys-admins", "stash-admins", "crowd-administrators"}

// claimsOf are the provider types' claim defaults, as the providers
// declare them.
var claimsOf = map[string]config.ClaimDefaults{
	"oidc": {Username: "preferred_username", DisplayName: "name"},
	"saml": {Username: "nameid", DisplayName: "displayName"},
}

// compile compiles m for an okta IdP of the given type against the test
// apps.
func compile(idpType string, m config.Mapping, p config.Provisioning) (*Mapper, error) {
	return Compile(m, Scope{IdP: "okta", Claims: claimsOf[idpType], Provisioning: p, Apps: testApps, Privileged: testPrivileged})
}

func mustCompile(t testing.TB, idpType string, m config.Mapping, p config.Provisioning) *Mapper {
	t.Helper()
	mp, err := compile(idpType, m, p)
	if err != nil {
		t.Fatalf("Compile: %v", err)
	}
	return mp
}

func ident(claims map[string][]string) providers.Identity {
	if _, ok := claims["preferred_username"]; !ok {
		claims["preferred_username"] = []string{"alice"}
	}
	return providers.Identity{IdP: "okta", Subject: "sub-1", Claims: claims}
}

func mustMap(t testing.TB, mp *Mapper, id providers.Identity) *Profile {
	t.Helper()
	p, err := mp.Map(id)
	if err != nil {
		t.Fatalf("Map: %v", err)
	}
	return p
}

// groupsOf lists an app's granted groups as "name<rule" for compact checks.
func groupsOf(p *Profile, app string) []string {
	a := p.Apps[app]
	if a == nil {
		return nil
	}
	out := []string{}
	for _, g := range a.Groups {
		out = append(out, g.Group+"<"+g.Rule)
	}
	return out
}

func TestNormalizeUsername(t *testing.T) {
	for _, tc := range []struct {
		raw, allowed, want string
		err                string // substring; "" means success
	}{
		{raw: "admin", want: "admin"},
		{raw: "Admin", want: "admin"},
		{raw: "ADMIN", want: "admin"},
		{raw: "j.doe+x_1@example.com", want: "j.doe+x_1@example.com"},
		{raw: "ａｄｍｉｎ", err: "compatibility"},       // full-width
		{raw: "\u212Aelvin", err: "compatibility"}, // Kelvin sign
		{raw: "ﬁnn", err: "compatibility"},         // ligature fi
		{raw: "adm\u0130n", err: "not allowed"},    // İ lowercases to i + combining dot
		{raw: "admın", err: "not allowed"},         // dotless i
		{raw: "a b", err: "not allowed"},
		{raw: "a,b", err: "not allowed"},
		{raw: "a\nb", err: "not allowed"},
		{raw: "", err: "empty or too long"},
		{raw: strings.Repeat("a", 256), err: "empty or too long"},
		{raw: strings.Repeat("a", 255), want: strings.Repeat("a", 255)},
		{raw: "\xff", err: "UTF-8"},
		{raw: "bob1", allowed: "a-z", err: "not allowed"},
		{raw: "Bob-Smith", allowed: "a-z-", want: "bob-smith"},
		{raw: "bob", allowed: "z-a", err: "reversed"},
		{raw: "bob", allowed: "a-z ", err: "may not be part"},
		{raw: "jörg", allowed: "a-zäöü", want: "jörg"},
		{raw: "JÖRG", allowed: "a-zäöü", want: "jörg"},
	} {
		t.Run(fmt.Sprintf("%q/%q", tc.raw, tc.allowed), func(t *testing.T) {
			got, err := NormalizeUsername(tc.raw, tc.allowed)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("got %q, %v; want error containing %q", got, err, tc.err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("got %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}

func TestDefaults(t *testing.T) {
	for _, tc := range []struct {
		typ, user, name string
	}{
		{"oidc", "preferred_username", "name"},
		{"saml", "nameid", "displayName"},
	} {
		m := config.Mapping{}.WithDefaults(claimsOf[tc.typ])
		if m.Username.Claim != tc.user || m.DisplayName.Claim != tc.name || m.Email.Claim != "email" ||
			m.Groups.Claim != "groups" || m.Groups.Sync != SyncFull || m.Provisioning != ProvisionOnLogin {
			t.Errorf("%s: %+v", tc.typ, m)
		}
	}
	// An explicit template keeps the default claim out.
	m := config.Mapping{DisplayName: config.ValueRule{Template: "{{a}}"}}.WithDefaults(claimsOf["oidc"])
	if m.DisplayName.Claim != nil {
		t.Errorf("template rule got claim %v", m.DisplayName.Claim)
	}
	// SAML users come from the NameID claim the SAML provider sets.
	mp := mustCompile(t, "saml", config.Mapping{}, config.Provisioning{})
	p := mustMap(t, mp, providers.Identity{Subject: "x", Claims: map[string][]string{
		"nameid": {"Alice@Example.com"}, "displayName": {"Alice A."}, "email": {"alice@example.com"},
	}})
	if p.Username != "alice@example.com" || p.DisplayName != "Alice A." || p.Email != "alice@example.com" {
		t.Errorf("saml defaults: %+v", p)
	}
}

func TestCompileErrors(t *testing.T) {
	jiraOnly := func(gs ...string) config.AppGroups { return config.AppGroups{"jira": gs} }
	for _, tc := range []struct {
		name  string
		m     config.Mapping
		p     config.Provisioning
		field string
		msg   string
	}{
		{"bad rule regexp", config.Mapping{Groups: config.GroupMapping{Rules: []config.GroupRule{
			{Match: "^ok$", Groups: jiraOnly("x")}, {Match: "^(team", Groups: jiraOnly("$1")},
		}}}, config.Provisioning{}, "mapping.groups.rules[1].match", "missing closing )"},
		{"empty rule match", config.Mapping{Groups: config.GroupMapping{Rules: []config.GroupRule{{Groups: jiraOnly("x")}}}},
			config.Provisioning{}, "mapping.groups.rules[0].match", "required"},
		{"unknown capture", config.Mapping{Groups: config.GroupMapping{Rules: []config.GroupRule{
			{Match: "^team-(.+)$", Groups: jiraOnly("team-$2")},
		}}}, config.Provisioning{}, "mapping.groups.rules[0].groups.jira[0]", "$2 names no group"},
		{"unknown named capture", config.Mapping{Groups: config.GroupMapping{Rules: []config.GroupRule{
			{Match: "^team-(?P<t>.+)$", Groups: jiraOnly("team-${x}")},
		}}}, config.Provisioning{}, "mapping.groups.rules[0].groups.jira[0]", "$x names no group"},
		{"separator in rule template", config.Mapping{Groups: config.GroupMapping{Rules: []config.GroupRule{
			{Match: "^(.+)$", Groups: jiraOnly("a,$1")},
		}}}, config.Provisioning{}, "mapping.groups.rules[0].groups.jira[0]", "separator"},
		{"privileged literal in rule", config.Mapping{Groups: config.GroupMapping{Rules: []config.GroupRule{
			{Match: "^Admins$", Groups: config.AppGroups{"*": {"Jira-Administrators"}}},
		}}}, config.Provisioning{}, "mapping.groups.rules[0].groups.*[0]", "privileged"},
		{"privileged in defaults", config.Mapping{Groups: config.GroupMapping{Defaults: config.AppGroups{"jira": {"users", "jira-administrators"}}}},
			config.Provisioning{}, "mapping.groups.defaults.jira[1]", `"jira-administrators" is a privileged group in jira`},
		{"configured privileged in defaults", config.Mapping{Groups: config.GroupMapping{Defaults: config.AppGroups{"*": {"ops"}}}},
			config.Provisioning{PrivilegedGroups: config.AppGroups{"confluence": {"ops"}}}, "mapping.groups.defaults.*[0]", "privileged group in confluence"},
		{"unknown app in map", config.Mapping{Groups: config.GroupMapping{Map: []config.GroupMap{
			{IdPGroup: "Eng", Groups: config.AppGroups{"jria": {"x"}}},
		}}}, config.Provisioning{}, "mapping.groups.map[0].groups.jria", `unknown app "jria" (apps: bitbucket, confluence, jira)`},
		{"map line without group", config.Mapping{Groups: config.GroupMapping{Map: []config.GroupMap{{Groups: jiraOnly("x")}}}},
			config.Provisioning{}, "mapping.groups.map[0]", "set idp_group or idp_group_id"},
		{"map line with both", config.Mapping{Groups: config.GroupMapping{Map: []config.GroupMap{{IdPGroup: "a", IdPGroupID: "b", Groups: jiraOnly("x")}}}},
			config.Provisioning{}, "mapping.groups.map[0]", "not both"},
		{"separator in map target", config.Mapping{Groups: config.GroupMapping{Map: []config.GroupMap{{IdPGroup: "a", Groups: jiraOnly("x,y")}}}},
			config.Provisioning{}, "mapping.groups.map[0].groups.jira[0]", "separator"},
		{"bad include", config.Mapping{Groups: config.GroupMapping{Include: []string{"ok", "[a"}}},
			config.Provisioning{}, "mapping.groups.include[1]", "missing closing ]"},
		{"bad sync", config.Mapping{Groups: config.GroupMapping{Sync: "mirror"}},
			config.Provisioning{}, "mapping.groups.sync", "want full or add_only"},
		{"bad provisioning", config.Mapping{Provisioning: "always"},
			config.Provisioning{}, "mapping.provisioning", "want on_login, manual or off"},
		{"unclosed template", config.Mapping{DisplayName: config.ValueRule{Template: "{{given_name}} {{family"}},
			config.Provisioning{}, "mapping.display_name.template", "unclosed {{"},
		{"empty placeholder", config.Mapping{DisplayName: config.ValueRule{Template: "{{ }}"}},
			config.Provisioning{}, "mapping.display_name.template", "empty placeholder"},
		{"claim and template", config.Mapping{DisplayName: config.ValueRule{Claim: "name", Template: "{{a}}"}},
			config.Provisioning{}, "mapping.display_name", "not both"},
		{"claim of wrong type", config.Mapping{Email: config.ValueRule{Claim: 5}},
			config.Provisioning{}, "mapping.email.claim", "want a claim name"},
		{"unknown transform", config.Mapping{Username: config.ValueRule{Transforms: []any{"lowercase", "lower"}}},
			config.Provisioning{}, "mapping.username.transforms[1]", `unknown transform "lower"`},
		{"transform typo key", config.Mapping{Attributes: map[string]config.ValueRule{"employee_id": {Claim: "n", Transforms: []any{map[string]any{"regex": "^0+", "replce": ""}}}}},
			config.Provisioning{}, "mapping.attributes.employee_id.transforms[0]", `unknown key "replce"`},
		{"transform bad regexp", config.Mapping{Username: config.ValueRule{Transforms: []any{map[string]any{"regex": "(", "replace": ""}}}},
			config.Provisioning{}, "mapping.username.transforms[0]", "regex: error parsing"},
		{"transform bad reference", config.Mapping{Username: config.ValueRule{Transforms: []any{map[string]any{"regex": "^(a)", "replace": "$2"}}}},
			config.Provisioning{}, "mapping.username.transforms[0]", "$2 names no group"},
		{"unknown access app", config.Mapping{Access: config.Access{Apps: []string{"jira", "wiki"}}},
			config.Provisioning{}, "mapping.access.apps[1]", `unknown app "wiki"`},
		{"empty require group", config.Mapping{Access: config.Access{RequireGroups: []string{" "}}},
			config.Provisioning{}, "mapping.access.require_groups[0]", "empty"},
		{"require claim without values", config.Mapping{Access: config.Access{RequireClaims: map[string][]string{"department": nil}}},
			config.Provisioning{}, "mapping.access.require_claims.department", "at least one value"},
		{"privileged for unknown app", config.Mapping{},
			config.Provisioning{PrivilegedGroups: config.AppGroups{"jiraa": {"x"}}}, "provisioning.privileged_groups.jiraa", "unknown app"},
		{"bad username set", config.Mapping{},
			config.Provisioning{UsernameAllowed: "a-z\t"}, "provisioning.username_allowed", "may not be part"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := compile("oidc", tc.m, tc.p)
			var es Errors
			if !errors.As(err, &es) {
				t.Fatalf("got %v, want Errors", err)
			}
			for _, e := range es {
				var fe *config.FieldError
				if !errors.As(e, &fe) {
					t.Fatalf("%T is not a *config.FieldError", e)
				}
				if fe.Field == tc.field && strings.Contains(fe.Msg, tc.msg) {
					return
				}
			}
			t.Fatalf("no error at %s containing %q in:\n%v", tc.field, tc.msg, err)
		})
	}
	// Every problem is reported, not just the first.
	_, err := compile("oidc", config.Mapping{
		Provisioning: "x",
		Groups:       config.GroupMapping{Sync: "y", Include: []string{"("}},
	}, config.Provisioning{})
	if es := err.(Errors); len(es) != 3 {
		t.Errorf("want 3 errors, got %v", err)
	}
	// A SAML or OIDC type is needed to know where usernames come from.
	if _, err := compile("ldap", config.Mapping{}, config.Provisioning{}); err == nil || !strings.Contains(err.Error(), "mapping.username.claim") {
		t.Errorf("unknown type: %v", err)
	}
}

func TestValueRules(t *testing.T) {
	claims := map[string][]string{
		"preferred_username": {"Jane.Doe@Example.COM"},
		"email":              {""},
		"upn":                {"jane.doe@corp.example.com"},
		"given_name":         {"Jane"},
		"family_name":        {"Doe"},
		"name":               {"Jane Q. Doe"},
		"department":         {"  ", "Engineering"},
		"employeeNumber":     {"000123"},
		"http://schemas.xmlsoap.org/claims/CommonName": {"jdoe"},
	}
	for _, tc := range []struct {
		name string
		rule config.ValueRule
		want string
	}{
		{"claim", config.ValueRule{Claim: "given_name"}, "Jane"},
		{"first non-empty claim wins", config.ValueRule{Claim: []any{"email", "upn"}}, "jane.doe@corp.example.com"},
		{"go list of claims", config.ValueRule{Claim: []string{"missing", "upn"}}, "jane.doe@corp.example.com"},
		{"first non-blank value of a claim", config.ValueRule{Claim: "department"}, "Engineering"},
		{"lowercase strip_domain", config.ValueRule{Claim: "preferred_username", Transforms: []any{"lowercase", "strip_domain"}}, "jane.doe"},
		{"uppercase", config.ValueRule{Claim: "given_name", Transforms: []any{"uppercase"}}, "JANE"},
		{"trim", config.ValueRule{Template: "{{given_name}}  ", Transforms: []any{"trim"}}, "Jane"},
		{"regex", config.ValueRule{Claim: "employeeNumber", Transforms: []any{map[string]any{"regex": "^0+", "replace": ""}}}, "123"},
		{"regex captures", config.ValueRule{Claim: "upn", Transforms: []any{map[string]string{"regex": `^([^.]+)\.([^@]+)@.*$`, "replace": "${2}_$1"}}}, "doe_jane"},
		{"template", config.ValueRule{Template: "{{given_name}} {{ family_name }}"}, "Jane Doe"},
		{"template with URI claim", config.ValueRule{Template: "cn={{http://schemas.xmlsoap.org/claims/CommonName}}"}, "cn=jdoe"},
		{"template missing claim is empty and trimmed", config.ValueRule{Template: "{{given_name}} {{nickname}}"}, "Jane"},
		{"template all empty uses fallback", config.ValueRule{Template: "{{a}} {{b}}", Fallback: "name"}, "Jane Q. Doe"},
		{"fallback list", config.ValueRule{Claim: "missing", Fallback: []any{"email", "upn"}}, "jane.doe@corp.example.com"},
		{"fallback goes through transforms", config.ValueRule{Claim: "missing", Fallback: "upn", Transforms: []any{"strip_domain"}}, "jane.doe"},
		{"transform to empty uses fallback", config.ValueRule{Claim: "employeeNumber", Transforms: []any{map[string]any{"regex": "^[0-9]+$", "replace": ""}}, Fallback: "given_name"}, "Jane"},
		{"default", config.ValueRule{Claim: "missing", Fallback: "missing2", Default: "n/a"}, "n/a"},
		{"default is literal", config.ValueRule{Claim: "missing", Default: "N/A", Transforms: []any{"lowercase"}}, "N/A"},
		{"nothing", config.ValueRule{Claim: "missing"}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mp := mustCompile(t, "oidc", config.Mapping{Attributes: map[string]config.ValueRule{"x": tc.rule}}, config.Provisioning{})
			p := mustMap(t, mp, ident(claims))
			if got := p.Attributes["x"]; got != tc.want {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
			if _, ok := p.Attributes["x"]; ok == (tc.want == "") {
				t.Fatalf("empty attributes are left out; got %v", p.Attributes)
			}
		})
	}
}

func TestScalarsWithControlCharactersAreDropped(t *testing.T) {
	mp := mustCompile(t, "oidc", config.Mapping{}, config.Provisioning{})
	p := mustMap(t, mp, ident(map[string][]string{"email": {"a@example.com\r\nX-Remote-User: admin"}, "name": {"Bob\x00"}}))
	if p.Email != "" || p.DisplayName != "" || len(p.Warnings) != 2 {
		t.Fatalf("email %q, name %q, warnings %q", p.Email, p.DisplayName, p.Warnings)
	}
}

func TestUsernameThroughMap(t *testing.T) {
	mp := mustCompile(t, "oidc", config.Mapping{}, config.Provisioning{})
	for _, tc := range []struct {
		raw  []string
		want string // "" means denied
	}{
		{[]string{"Alice"}, "alice"},
		{[]string{"alice"}, "alice"},
		{[]string{"\u212Aevin"}, ""},
		{[]string{"adm\u0130n"}, ""},
		{[]string{"ﬀ"}, ""},
		{[]string{"  "}, ""},
		{[]string{".."}, ""},
		{[]string{"."}, ""},
		{nil, ""},
	} {
		p, err := mp.Map(providers.Identity{Subject: "s", Claims: map[string][]string{"preferred_username": tc.raw}})
		if tc.want == "" {
			var de *DeniedError
			if !errors.As(err, &de) || !errors.Is(err, ErrDenied) || de.Reason == "" {
				t.Errorf("%q: got %v, want a *DeniedError", tc.raw, err)
			}
			continue
		}
		if err != nil || p.Username != tc.want {
			t.Errorf("%q: got %v, %v", tc.raw, p, err)
		}
	}
	// A custom allowed set from the provisioning block.
	mp = mustCompile(t, "oidc", config.Mapping{}, config.Provisioning{UsernameAllowed: "a-z"})
	if _, err := mp.Map(ident(map[string][]string{"preferred_username": {"bob1"}})); !errors.Is(err, ErrDenied) {
		t.Errorf("digit with a-z: %v", err)
	}
}

// realistic is the mapping from the design notes.
func realistic() config.Mapping {
	return config.Mapping{
		Groups: config.GroupMapping{
			Exclude: []string{"^test-"},
			Map: []config.GroupMap{
				{IdPGroup: "Engineering", Groups: config.AppGroups{"jira": {"jira-software-users", "developers"}, "confluence": {"confluence-users"}}},
				{IdPGroupID: "8F1C0C3E-1111-2222-3333-444455556666", Groups: config.AppGroups{"*": {"staff"}}},
				{IdPGroup: "JiraAdmins", Groups: config.AppGroups{"jira": {"jira-administrators"}}},
			},
			Rules: []config.GroupRule{
				{Match: "^team-(.+)$", Groups: config.AppGroups{"*": {"team-$1"}}},
				{Match: "^(.+)$", Groups: config.AppGroups{"*": {"$1"}}},
			},
			Defaults: config.AppGroups{"*": {"usher-users"}, "jira": {"jira-users"}},
		},
	}
}

func TestGroupMapping(t *testing.T) {
	mp := mustCompile(t, "oidc", realistic(), config.Provisioning{})
	p := mustMap(t, mp, ident(map[string][]string{"groups": {
		"Engineering", "team-red", "test-x", "8f1c0c3e-1111-2222-3333-444455556666",
		" spaced ", "", "a,b", "line\nbreak", "jira-administrators", "JIRA-Administrators",
		"ｊｉｒａ-administrators", "team-jira-administrators",
	}}))
	wantJira := []string{
		"8f1c0c3e-1111-2222-3333-444455556666<rules[1]",
		"Engineering<rules[1]",
		"developers<map[0]",
		"jira-software-users<map[0]",
		"jira-users<default",
		"spaced<rules[1]",
		"staff<map[1]",
		"team-jira-administrators<rules[0]",
		"team-red<rules[0]",
		"usher-users<default",
	}
	if got := groupsOf(p, "jira"); !reflect.DeepEqual(got, wantJira) {
		t.Errorf("jira groups:\n got %q\nwant %q", got, wantJira)
	}
	// Sorted, trimmed, filtered; never split.
	wantIdP := []string{"8f1c0c3e-1111-2222-3333-444455556666", "Engineering", "JIRA-Administrators", "jira-administrators", "spaced", "team-jira-administrators", "team-red", "ｊｉｒａ-administrators"}
	if !reflect.DeepEqual(p.IdPGroups, wantIdP) {
		t.Errorf("IdP groups:\n got %q\nwant %q", p.IdPGroups, wantIdP)
	}
	for _, w := range []string{`"a,b" holds a separator`, `"line\nbreak" holds a control character`, `privileged jira group "jira-administrators"`, `privileged jira group "JIRA-Administrators"`, `privileged jira group "ｊｉｒａ-administrators"`} {
		if !slices.ContainsFunc(p.Warnings, func(s string) bool { return strings.Contains(s, w) }) {
			t.Errorf("no warning containing %s in %q", w, p.Warnings)
		}
	}
	for _, app := range testApps {
		for _, g := range p.Apps[app].Groups {
			if strings.ContainsAny(g.Group, ",\n") || groupKey(g.Group) == "jira-administrators" {
				t.Errorf("%s got %q", app, g.Group)
			}
		}
	}
	// Only the explicit map line grants a privileged group.
	p = mustMap(t, mp, ident(map[string][]string{"groups": {"JiraAdmins"}}))
	if got := groupsOf(p, "jira"); !slices.Contains(got, "jira-administrators<map[2]") {
		t.Errorf("explicit map line: %q", got)
	}
	if got := groupsOf(p, "confluence"); slices.ContainsFunc(got, func(s string) bool { return strings.HasPrefix(s, "jira-administrators") }) {
		t.Errorf("map line for jira leaked to confluence: %q", got)
	}
}

func TestPrivilegedGroups(t *testing.T) {
	catchAll := config.Mapping{Groups: config.GroupMapping{Rules: []config.GroupRule{{Match: "^(.+)$", Groups: config.AppGroups{"*": {"$1"}}}}}}
	for _, tc := range []struct {
		name    string
		m       config.Mapping
		p       config.Provisioning
		groups  []string
		app     string
		refused string
	}{
		{"catch-all rule", catchAll, config.Provisioning{}, []string{"jira-administrators"}, "jira", "jira-administrators"},
		{"built-in names are privileged in every app", catchAll, config.Provisioning{}, []string{"confluence-administrators"}, "jira", "confluence-administrators"},
		{"bitbucket admins", catchAll, config.Provisioning{}, []string{"stash-admins"}, "bitbucket", "stash-admins"},
		{"case", catchAll, config.Provisioning{}, []string{"System-Administrators"}, "confluence", "System-Administrators"},
		{"configured for one app", catchAll, config.Provisioning{PrivilegedGroups: config.AppGroups{"bitbucket": {"bb-admins"}}}, []string{"bb-admins"}, "bitbucket", "bb-admins"},
		{"configured for every app", catchAll, config.Provisioning{PrivilegedGroups: config.AppGroups{"*": {"ops"}}}, []string{"ops"}, "jira", "ops"},
		{"rule with prefix", config.Mapping{Groups: config.GroupMapping{Rules: []config.GroupRule{{Match: "^x-(.+)$", Groups: config.AppGroups{"jira": {"jira-$1"}}}}}},
			config.Provisioning{}, []string{"x-administrators"}, "jira", "jira-administrators"},
		{"same name, no mapping", config.Mapping{}, config.Provisioning{}, []string{"jira-administrators"}, "jira", "jira-administrators"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mp := mustCompile(t, "oidc", tc.m, tc.p)
			p := mustMap(t, mp, ident(map[string][]string{"groups": tc.groups}))
			for _, g := range p.Apps[tc.app].Groups {
				if strings.EqualFold(g.Group, tc.refused) {
					t.Fatalf("%s granted %q by %s", tc.app, g.Group, g.Rule)
				}
			}
			if p.Apps[tc.app].Manages(tc.refused) {
				t.Errorf("%s: a privileged group only a rule pattern covers counts as managed", tc.app)
			}
		})
	}
	// Configured privileged groups add to the built-in ones.
	mp := mustCompile(t, "oidc", catchAll, config.Provisioning{PrivilegedGroups: config.AppGroups{"jira": {"x"}}})
	p := mustMap(t, mp, ident(map[string][]string{"groups": {"jira-administrators", "x", "y"}}))
	if got := groupsOf(p, "jira"); !reflect.DeepEqual(got, []string{"y<rules[0]"}) {
		t.Errorf("got %q", got)
	}
	if got := groupsOf(p, "confluence"); !reflect.DeepEqual(got, []string{"x<rules[0]", "y<rules[0]"}) {
		t.Errorf("x is privileged in jira only; confluence got %q", got)
	}
}

func TestGroupIDs(t *testing.T) {
	m := config.Mapping{Groups: config.GroupMapping{Map: []config.GroupMap{
		{IdPGroupID: "8F1C0C3E-AAAA-BBBB-CCCC-DDDDEEEEFFFF", Groups: config.AppGroups{"jira": {"eng"}}},
		{IdPGroup: "Sales", Groups: config.AppGroups{"jira": {"sales"}}},
	}}}
	mp := mustCompile(t, "oidc", m, config.Provisioning{})
	for _, tc := range []struct {
		groups []string
		want   []string
	}{
		{[]string{"8f1c0c3e-aaaa-bbbb-cccc-ddddeeeeffff"}, []string{"eng<map[0]"}},
		{[]string{"8F1C0C3E-AAAA-BBBB-CCCC-DDDDEEEEFFFF"}, []string{"eng<map[0]"}},
		{[]string{"8f1c0c3e-aaaa-bbbb-cccc-ddddeeeefff0"}, []string{}},
		{[]string{"8f1c0c3e-aaaa-bbbb-cccc-ddddeeeeffff-x"}, []string{}},
		// Names match exactly; a case variant is another IdP group.
		{[]string{"sales"}, []string{}},
		{[]string{"Sales"}, []string{"sales<map[1]"}},
	} {
		p := mustMap(t, mp, ident(map[string][]string{"groups": tc.groups}))
		if got := groupsOf(p, "jira"); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%q: got %q, want %q", tc.groups, got, tc.want)
		}
	}
}

func TestFiltersAndAccess(t *testing.T) {
	m := config.Mapping{
		Groups: config.GroupMapping{
			Include: []string{"^jira-", "^eng"},
			Exclude: []string{"^jira-test"},
			Rules:   []config.GroupRule{{Match: "^(.+)$", Groups: config.AppGroups{"*": {"$1"}}}},
		},
		Access: config.Access{
			RequireGroups: []string{"Staff", "0000AAAA-0000-0000-0000-000000000000"},
			RequireClaims: map[string][]string{"department": {"Engineering", "Support"}},
			Apps:          []string{"jira", "confluence"},
		},
	}
	mp := mustCompile(t, "oidc", m, config.Provisioning{})
	mp.SetName("Okta")
	for _, tc := range []struct {
		name   string
		claims map[string][]string
		denied string // reason; "" means allowed
		idp    []string
	}{
		{"allowed; require_groups sees unfiltered groups", map[string][]string{
			"groups": {"Staff", "jira-dev", "jira-test-1", "engineering", "other"}, "department": {"Engineering"},
		}, "", []string{"engineering", "jira-dev"}},
		{"GUID compares case-insensitively", map[string][]string{
			"groups": {"0000aaaa-0000-0000-0000-000000000000"}, "department": {"Support"},
		}, "", []string{}},
		{"not in a required group", map[string][]string{
			"groups": {"staff", "jira-dev"}, "department": {"Engineering"},
		}, "you are not in any of the groups Staff, 0000AAAA-0000-0000-0000-000000000000 required by Okta", nil},
		{"separator never matches", map[string][]string{
			"groups": {"Staff,Admins"}, "department": {"Engineering"},
		}, "you are not in any of the groups", nil},
		{"claim value not allowed", map[string][]string{
			"groups": {"Staff"}, "department": {"Sales", "engineering"},
		}, "Okta requires your department to be one of Engineering, Support", nil},
		{"claim missing", map[string][]string{"groups": {"Staff"}}, "Okta requires your department", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := mp.Map(ident(tc.claims))
			if tc.denied != "" {
				var de *DeniedError
				if !errors.As(err, &de) || !strings.Contains(de.Reason, tc.denied) {
					t.Fatalf("got %v, want denial %q", err, tc.denied)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(p.IdPGroups, tc.idp) {
				t.Errorf("IdP groups %q, want %q", p.IdPGroups, tc.idp)
			}
			if len(p.Apps) != 2 || p.Apps["bitbucket"] != nil {
				t.Errorf("apps: %v", p.Apps)
			}
			if err := p.Allow("jira"); err != nil {
				t.Errorf("jira: %v", err)
			}
			err = p.Allow("bitbucket")
			var de *DeniedError
			if !errors.As(err, &de) || de.Reason != "Okta does not give access to bitbucket" {
				t.Errorf("bitbucket: %v", err)
			}
		})
	}
}

func TestManaged(t *testing.T) {
	m := realistic()
	m.Groups.Sync = SyncAddOnly
	mp := mustCompile(t, "oidc", m, config.Provisioning{})
	p := mustMap(t, mp, ident(map[string][]string{}))
	jira := p.Apps["jira"]
	if jira.Sync != SyncAddOnly {
		t.Errorf("sync %q", jira.Sync)
	}
	wantNames := []string{"developers", "jira-administrators", "jira-software-users", "jira-users", "staff", "usher-users"}
	if !reflect.DeepEqual(jira.ManagedGroups, wantNames) {
		t.Errorf("managed names %q", jira.ManagedGroups)
	}
	if want := []string{"(?i)^.*$", "(?i)^team-.*$"}; !reflect.DeepEqual(jira.ManagedPatterns, want) {
		t.Errorf("managed patterns %q", jira.ManagedPatterns)
	}
	narrow := config.Mapping{Groups: config.GroupMapping{
		Map:   []config.GroupMap{{IdPGroup: "Admins", Groups: config.AppGroups{"jira": {"jira-administrators"}}}},
		Rules: []config.GroupRule{{Match: "^team-(.+)$", Groups: config.AppGroups{"jira": {"team-$1"}, "confluence": {"$$team"}}}},
	}}
	p = mustMap(t, mustCompile(t, "oidc", narrow, config.Provisioning{}), ident(map[string][]string{}))
	for _, tc := range []struct {
		app, group string
		want       bool
	}{
		{"jira", "jira-administrators", true}, // explicit map target
		{"jira", "Jira-Administrators", true},
		{"jira", "team-red", true},
		{"jira", "TEAM-Red", true},
		{"jira", "hand-given", false},
		{"jira", "team", false},
		{"confluence", "$team", true}, // literal template, $$ is a dollar
		{"confluence", "team-red", false},
		{"confluence", "jira-administrators", false},
		{"bitbucket", "team-red", false},
	} {
		if got := p.Apps[tc.app].Manages(tc.group); got != tc.want {
			t.Errorf("%s manages %q = %v, want %v", tc.app, tc.group, got, tc.want)
		}
	}
	var nilApp *AppProfile
	if nilApp.Manages("x") {
		t.Error("nil AppProfile manages")
	}
}

func TestDeterminismAndHash(t *testing.T) {
	claims := func(rev bool) map[string][]string {
		gs := []string{"Engineering", "team-red", "team-blue", "jira-dev", "8f1c0c3e-1111-2222-3333-444455556666"}
		if rev {
			slices.Reverse(gs)
		}
		return map[string][]string{"groups": gs, "email": {"a@example.com"}, "name": {"A"}, "department": {"Eng"}, "employeeNumber": {"007"}}
	}
	m := realistic()
	m.Attributes = map[string]config.ValueRule{
		"department":  {Claim: "department"},
		"employee_id": {Claim: "employeeNumber", Transforms: []any{map[string]any{"regex": "^0+", "replace": ""}}},
	}
	a := mustMap(t, mustCompile(t, "oidc", m, config.Provisioning{}), ident(claims(false)))
	var b *Profile
	for range 20 { // map iteration order differs between compiles
		b = mustMap(t, mustCompile(t, "oidc", m, config.Provisioning{}), ident(claims(true)))
		for _, app := range testApps {
			if a.Hash(app) != b.Hash(app) {
				t.Fatalf("%s: hash differs across compiles and claim order", app)
			}
		}
	}
	a.Apps["jira"].plan, b.Apps["jira"].plan = nil, nil
	if !reflect.DeepEqual(a.Apps["jira"], b.Apps["jira"]) {
		t.Errorf("profiles differ:\n%+v\n%+v", a.Apps["jira"], b.Apps["jira"])
	}
	// Pinned, so that a change of encoding is a visible decision (bump
	// hashVersion) and not an accident that re-syncs every user.
	if got, want := a.Hash("jira"), "d3c31ddab213060475e84c090d33f18d2d6ead45947d8def24c7189a0c71d179"; got != want {
		t.Logf("jira hash %s (pinned %s)", got, want)
		t.Errorf("hash encoding changed")
	}
	if a.Hash("crowd") != "" {
		t.Error("hash of an app without access")
	}
	h := a.Hash("jira")
	for _, tc := range []struct {
		name   string
		change func(p *Profile)
	}{
		{"username", func(p *Profile) { p.Username = "x" }},
		{"email", func(p *Profile) { p.Email = "x" }},
		{"display name", func(p *Profile) { p.DisplayName = "x" }},
		{"attribute", func(p *Profile) { p.Attributes["department"] = "x" }},
		{"attribute moved", func(p *Profile) { p.Attributes = map[string]string{"department": "Eng7", "employee_id": ""} }},
		{"group", func(p *Profile) { p.Apps["jira"].Groups = p.Apps["jira"].Groups[1:] }},
		{"sync", func(p *Profile) { p.Apps["jira"].Sync = SyncAddOnly }},
		{"managed", func(p *Profile) { p.Apps["jira"].ManagedGroups = nil }},
	} {
		c := mustMap(t, mustCompile(t, "oidc", m, config.Provisioning{}), ident(claims(false)))
		tc.change(c)
		if c.Hash("jira") == h {
			t.Errorf("%s: hash unchanged", tc.name)
		}
	}
}

// TestLoaderShapes decodes a mapping block with the real strict loader, so
// the `any` fields arrive as the loader really delivers them.
func TestLoaderShapes(t *testing.T) {
	doc := `
idps:
  - id: okta
    type: oidc
    config:
      username: {claim: preferred_username, transforms: [lowercase, strip_domain]}
      email: {claim: [email, upn]}
      display_name: {template: "{{given_name}} {{family_name}}", fallback: name}
      attributes:
        department: {claim: department}
        employee_id: {claim: employeeNumber, transforms: [{regex: "^0+", replace: ""}]}
      groups:
        claim: groups
        include: ["^jira-", "^eng", "^Eng"]
        exclude: ["^test-"]
        map:
          - idp_group: Engineering
            groups: {jira: [jira-software-users, developers], confluence: [confluence-users]}
          - idp_group_id: 8f1c0c3e-1111-2222-3333-444455556666
            groups: {"*": [staff]}
        rules:
          - match: "^jira-(.+)$"
            groups: {"*": ["team-$1"]}
        defaults: {"*": [usher-users], jira: [jira-users]}
        sync: full
      access:
        require_groups: [Staff]
        require_claims: {department: [Engineering, Support]}
        apps: [jira, confluence]
      provisioning: on_login
`
	cfg, _ := config.Parse("test.yaml", []byte(doc)) // other settings are missing on purpose
	if cfg == nil || len(cfg.IdPs) != 1 {
		t.Fatalf("parse: %+v", cfg)
	}
	var m config.Mapping
	if err := cfg.IdPs[0].Config.Decode(&m); err != nil {
		t.Fatalf("decode: %v", err)
	}
	mp := mustCompile(t, "oidc", m, config.Provisioning{})
	p := mustMap(t, mp, ident(map[string][]string{
		"preferred_username": {"Jane@Example.com"}, "upn": {"jane@corp"}, "given_name": {"Jane"},
		"department": {"Engineering"}, "employeeNumber": {"0042"},
		"groups": {"Staff", "Engineering", "jira-red", "8F1C0C3E-1111-2222-3333-444455556666"},
	}))
	if p.Username != "jane" || p.Email != "jane@corp" || p.DisplayName != "Jane" || p.Attributes["employee_id"] != "42" {
		t.Errorf("values: %+v", p)
	}
	want := []string{"developers<map[0]", "jira-software-users<map[0]", "jira-users<default", "team-red<rules[0]", "usher-users<default"}
	if got := groupsOf(p, "jira"); !reflect.DeepEqual(got, want) {
		t.Errorf("jira: got %q, want %q", got, want)
	}
	if len(p.Apps) != 2 {
		t.Errorf("apps %v", p.Apps)
	}
}

func FuzzMap(f *testing.F) {
	f.Add("{{given_name}} {{family_name}}", "^0+", "", "Jane", "team-(.+)", "team-$1", "team-red")
	f.Add("{{a}}{{", "(", "$1", "x,y", "^(.+)$", "$1", "jira-administrators")
	f.Add("{{ }}", "(?P<n>.)", "${n}${n}", "\u212A\n", ".*", "a$$b", "a\x00b")
	f.Add("", "", "", "", "", "", "")
	f.Fuzz(func(t *testing.T, tmpl, re, repl, value, match, target, group string) {
		m := config.Mapping{
			DisplayName: config.ValueRule{Template: tmpl, Transforms: []any{map[string]any{"regex": re, "replace": repl}, "strip_domain", "uppercase"}},
			Groups:      config.GroupMapping{Rules: []config.GroupRule{{Match: match, Groups: config.AppGroups{"*": {target}}}}},
		}
		mp, err := compile("oidc", m, config.Provisioning{})
		if err != nil {
			return
		}
		id := providers.Identity{Subject: "s", Claims: map[string][]string{
			"preferred_username": {value}, "given_name": {value}, "family_name": {group}, "groups": {group, value},
		}}
		a, errA := mp.Map(id)
		b, errB := mp.Map(id)
		if (errA == nil) != (errB == nil) {
			t.Fatalf("nondeterministic error: %v / %v", errA, errB)
		}
		if errA != nil {
			if !errors.Is(errA, ErrDenied) {
				t.Fatalf("Map failed without a denial: %v", errA)
			}
			return
		}
		for _, app := range testApps {
			if a.Hash(app) != b.Hash(app) {
				t.Fatal("nondeterministic hash")
			}
			for _, g := range a.Apps[app].Groups {
				if _, reason := cleanGroup(g.Group); reason != "" || g.Group != strings.TrimSpace(g.Group) {
					t.Fatalf("%s got unusable group %q: %s", app, g.Group, reason)
				}
				if a.Apps[app].plan.privileged[groupKey(g.Group)] {
					t.Fatalf("%s got privileged group %q from %s", app, g.Group, g.Rule)
				}
			}
		}
		if strings.ContainsFunc(a.DisplayName, isBreaking) {
			t.Fatalf("display name %q", a.DisplayName)
		}
	})
}

// BenchmarkMap is a realistic login: 10 map lines, 3 rules, 50 IdP groups.
func BenchmarkMap(b *testing.B) {
	m := config.Mapping{
		Username:    config.ValueRule{Claim: "preferred_username", Transforms: []any{"lowercase", "strip_domain"}},
		Email:       config.ValueRule{Claim: []any{"email", "upn"}},
		DisplayName: config.ValueRule{Template: "{{given_name}} {{family_name}}", Fallback: "name"},
		Attributes: map[string]config.ValueRule{
			"department":  {Claim: "department"},
			"employee_id": {Claim: "employeeNumber", Transforms: []any{map[string]any{"regex": "^0+", "replace": ""}}},
		},
		Groups: config.GroupMapping{
			Exclude: []string{"^test-"},
			Rules: []config.GroupRule{
				{Match: "^team-(.+)$", Groups: config.AppGroups{"*": {"team-$1"}}},
				{Match: "^proj-([a-z]+)-dev$", Groups: config.AppGroups{"jira": {"$1-developers"}, "bitbucket": {"$1-writers"}}},
				{Match: "^wiki-(.+)$", Groups: config.AppGroups{"confluence": {"space-$1"}}},
			},
			Defaults: config.AppGroups{"*": {"usher-users"}, "jira": {"jira-users"}},
		},
		Access: config.Access{RequireGroups: []string{"Staff"}},
	}
	for i := range 10 {
		m.Groups.Map = append(m.Groups.Map, config.GroupMap{
			IdPGroup: fmt.Sprintf("Dept-%d", i),
			Groups:   config.AppGroups{"jira": {fmt.Sprintf("dept-%d", i), "developers"}, "confluence": {fmt.Sprintf("dept-%d-wiki", i)}},
		})
	}
	groups := []string{"Staff"}
	for i := 0; len(groups) < 50; i++ {
		switch i % 5 {
		case 0:
			groups = append(groups, fmt.Sprintf("Dept-%d", i%10))
		case 1:
			groups = append(groups, fmt.Sprintf("team-%d", i))
		case 2:
			groups = append(groups, fmt.Sprintf("proj-p%c-dev", 'a'+i%26))
		case 3:
			groups = append(groups, fmt.Sprintf("wiki-%d", i))
		default:
			groups = append(groups, fmt.Sprintf("other-%d", i))
		}
	}
	mp := mustCompile(b, "oidc", m, config.Provisioning{})
	id := providers.Identity{IdP: "okta", Subject: "00u1", Claims: map[string][]string{
		"preferred_username": {"Jane.Doe@example.com"}, "email": {"jane.doe@example.com"},
		"given_name": {"Jane"}, "family_name": {"Doe"}, "department": {"Engineering"},
		"employeeNumber": {"000123"}, "groups": groups,
	}}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := mp.Map(id); err != nil {
			b.Fatal(err)
		}
	}
}

func TestProtectedUsernames(t *testing.T) {
	for _, tc := range []struct {
		protected []string
		user      string
		denied    bool
	}{
		{nil, "admin", true},
		{nil, "Administrator", true},
		{nil, "alice", false},
		{[]string{"svc-*"}, "svc-backup", true},
		{[]string{"svc-*"}, "admin", false},
		{[]string{}, "admin", false},
	} {
		var m config.Mapping
		mp, err := Compile(m, Scope{IdP: "okta", Claims: claimsOf["oidc"], Provisioning: config.Provisioning{ProtectedUsers: tc.protected}, Apps: []string{"jira"}, Privileged: testPrivileged})
		if err != nil {
			t.Fatal(err)
		}
		_, err = mp.Map(providers.Identity{IdP: "okta", Subject: "s", Claims: map[string][]string{"preferred_username": {tc.user}}})
		if got := errors.Is(err, ErrDenied); got != tc.denied {
			t.Errorf("protected %q, user %q: denied = %v (%v), want %v", tc.protected, tc.user, got, err, tc.denied)
		}
	}
}

func TestGroupOverageOnlyAdds(t *testing.T) {
	var m config.Mapping
	m.Groups.Defaults = config.AppGroups{"*": {"staff"}}
	mp, err := Compile(m, Scope{IdP: "entra", Claims: claimsOf["oidc"], Apps: []string{"jira"}, Privileged: testPrivileged})
	if err != nil {
		t.Fatal(err)
	}
	for _, claims := range []map[string][]string{
		{"_claim_names.groups": {"src1"}},
		{"hasgroups": {"true"}},
		{"http://schemas.microsoft.com/claims/groups.link": {"https://graph.microsoft.com/v1.0/users/x/getMemberObjects"}},
	} {
		claims["preferred_username"] = []string{"alice"}
		p, err := mp.Map(providers.Identity{IdP: "entra", Subject: "s", Claims: claims})
		if err != nil {
			t.Fatal(err)
		}
		if p.Apps["jira"].Sync != SyncAddOnly || len(p.Warnings) == 0 {
			t.Errorf("claims %v: sync %q, warnings %q; want add_only with a warning", claims, p.Apps["jira"].Sync, p.Warnings)
		}
	}
}

func TestUsernamesMayOverlap(t *testing.T) {
	tmpl := func(s string, transforms ...any) config.Mapping {
		return config.Mapping{Username: config.ValueRule{Template: s, Transforms: transforms}}
	}
	plain := config.Mapping{}
	for _, tc := range []struct {
		name string
		a, b config.Mapping
		want bool
	}{
		{"two plain claims", plain, plain, true},
		{"a prefix against a plain claim", tmpl("ext-{{preferred_username}}"), plain, true},
		{"different prefixes", tmpl("ext-{{preferred_username}}"), tmpl("int-{{sub}}"), false},
		{"prefixes differing in case only", tmpl("EXT-{{sub}}"), tmpl("ext-{{sub}}"), true},
		{"one prefix extends the other", tmpl("ext-{{sub}}"), tmpl("ext-x-{{sub}}"), true},
		{"different suffixes", tmpl("{{sub}}.a"), tmpl("{{sub}}.b"), false},
		{"strip_domain drops the suffix", tmpl("{{email}}@a.test", "strip_domain"), tmpl("{{email}}@b.test", "strip_domain"), true},
		{"a regex transform can make anything", tmpl("ext-{{sub}}", map[string]any{"regex": "^ext-", "replace": ""}), tmpl("int-{{sub}}"), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, b := mustCompile(t, "oidc", tc.a, config.Provisioning{}), mustCompile(t, "oidc", tc.b, config.Provisioning{})
			if got := UsernamesMayOverlap(a, b); got != tc.want {
				t.Errorf("UsernamesMayOverlap = %v, want %v", got, tc.want)
			}
		})
	}
}
