package jit

import (
	"context"
	"errors"
	"testing"

	"github.com/usherhq/usher/providers"
	"github.com/usherhq/usher/targets/atlassiantest"
)

// resolverFunc is a GroupResolver from a function.
type resolverFunc func(ctx context.Context, id providers.Identity) ([]string, error)

func (f resolverFunc) ResolveGroups(ctx context.Context, id providers.Identity) ([]string, error) {
	return f(ctx, id)
}

// overaged is alice's login whose token says her groups did not fit.
func overaged(marker string) providers.Identity {
	id := person("s1", "alice")
	delete(id.Claims, "groups")
	switch marker {
	case "hasgroups", ClaimGroupsIncomplete:
		id.Claims[marker] = []string{"true"}
	default:
		id.Claims[marker] = []string{"x"}
	}
	return id
}

func TestAdmitResolvesGroupOverage(t *testing.T) {
	for _, marker := range []string{"_claim_names.groups", "hasgroups", "http://schemas.microsoft.com/claims/groups.link", ClaimGroupsIncomplete} {
		t.Run(marker, func(t *testing.T) {
			f := newFixture(t, atlassiantest.Jira)
			f.withMapping(t, "")
			if _, err := f.l.Admit(t.Context(), person("s1", "alice", "Engineering"), LoginVia("okta")); err != nil {
				t.Fatal(err)
			}
			var asked []string
			f.l.Overage = map[string]GroupResolver{"okta": resolverFunc(func(ctx context.Context, id providers.Identity) ([]string, error) {
				if _, ok := ctx.Deadline(); !ok {
					t.Error("the lookup has no deadline")
				}
				asked = append(asked, id.Subject)
				return []string{"Staff"}, nil // left Engineering
			})}
			// The directory's list is the whole truth: Staff passes the
			// access policy and Engineering's group goes.
			a, err := f.l.Admit(t.Context(), overaged(marker), LoginVia("okta"))
			if err != nil {
				t.Fatal(err)
			}
			if len(asked) != 1 || asked[0] != "s1" {
				t.Errorf("resolver asked for %v", asked)
			}
			if u := f.user(t, "jira", "alice"); has(u.Groups, "developers") {
				t.Errorf("jira groups %v: the resolved list should have removed developers", u.Groups)
			}
			if a.Profile.Apps["jira"].Sync != SyncFull || len(a.Profile.Warnings) != 0 {
				t.Errorf("sync %q, warnings %q; want full and none", a.Profile.Apps["jira"].Sync, a.Profile.Warnings)
			}
		})
	}
}

func TestAdmitOverageWithoutAnswerOnlyAdds(t *testing.T) {
	for name, r := range map[string]GroupResolver{
		"no resolver": nil,
		"lookup fails": resolverFunc(func(context.Context, providers.Identity) ([]string, error) {
			return nil, errors.New("graph: 503")
		}),
	} {
		t.Run(name, func(t *testing.T) {
			f := newFixture(t, atlassiantest.Jira)
			f.withMapping(t, "")
			if _, err := f.l.Admit(t.Context(), person("s1", "alice", "Engineering"), LoginVia("okta")); err != nil {
				t.Fatal(err)
			}
			if r != nil {
				f.l.Overage = map[string]GroupResolver{"okta": r}
			}
			id := person("s1", "alice") // Staff only, but the list is partial
			id.Claims["hasgroups"] = []string{"true"}
			a, err := f.l.Admit(t.Context(), id, LoginVia("okta"))
			if err != nil {
				t.Fatal(err)
			}
			if u := f.user(t, "jira", "alice"); !has(u.Groups, "developers") {
				t.Errorf("jira groups %v: a partial list removed developers", u.Groups)
			}
			if a.Profile.Apps["jira"].Sync != SyncAddOnly {
				t.Errorf("sync %q, want add_only", a.Profile.Apps["jira"].Sync)
			}
		})
	}
}
