package main

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/usherhq/usher/config"
	"github.com/usherhq/usher/jit"
	"github.com/usherhq/usher/targets"
	"github.com/usherhq/usher/targets/bitbucket"
	"github.com/usherhq/usher/targets/cloud"
	"github.com/usherhq/usher/targets/confluence"
	"github.com/usherhq/usher/targets/crowd"
	"github.com/usherhq/usher/targets/jira"
)

// targetKinds maps an app's `kind:` to its REST adapter config. A generic
// app has none: usher only proxies to it.
var targetKinds = map[string]func() targets.Config{
	"jira":       func() targets.Config { return new(jira.Config) },
	"confluence": func() targets.Config { return new(confluence.Config) },
	"bitbucket":  func() targets.Config { return new(bitbucket.Config) },
	"crowd":      func() targets.Config { return new(crowd.Config) },
	"cloud":      func() targets.Config { return new(cloud.Config) },
}

// targetConfig decodes app i's `api:` block strictly into its kind's
// struct and validates it; nil when the app has no API block (proxy only).
func targetConfig(cfg *config.Config, i int) (targets.Config, error) {
	tc, err := decodeTarget(cfg, i)
	if tc == nil || err != nil {
		return nil, err
	}
	if errs := cfg.Apps[i].API.Errors(tc.Validate()); len(errs) > 0 {
		return nil, errs
	}
	return tc, nil
}

// decodeTarget decodes app i's `api:` block without validating it.
func decodeTarget(cfg *config.Config, i int) (targets.Config, error) {
	app := cfg.Apps[i]
	if app.API.IsZero() {
		return nil, nil
	}
	newConfig, ok := targetKinds[app.Kind]
	if !ok {
		return nil, config.Errors{app.API.ErrorAt("", fmt.Sprintf("apps of kind %q cannot be provisioned; remove the api block", app.Kind))}
	}
	tc := newConfig()
	if err := app.API.Decode(tc); err != nil {
		return nil, err
	}
	return tc, nil
}

// privilegedGroups are the administrator groups every app kind declares,
// all together: a name that is an admin group in one product is never
// something a mapping rule should grant in another. Configured apps add
// the ones their own settings name (a Cloud site's jira-admins-<site>),
// even when other settings of the block are wrong. A block that does not
// decode adds nothing here; loadConfig reports it.
func privilegedGroups(cfg *config.Config) []string {
	var out []string
	for _, kind := range slices.Sorted(maps.Keys(targetKinds)) {
		out = append(out, targetKinds[kind]().PrivilegedGroups()...)
	}
	for i := range cfg.Apps {
		if tc, err := decodeTarget(cfg, i); err == nil && tc != nil {
			out = append(out, tc.PrivilegedGroups()...)
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// mapperFor compiles IdP i's mapping against the configured apps.
func mapperFor(cfg *config.Config, i int) (*jit.Mapper, error) {
	idp := cfg.IdPs[i]
	apps := make([]string, len(cfg.Apps))
	for j, a := range cfg.Apps {
		apps[j] = a.Name
	}
	newConfig, ok := providerTypes[idp.Type]
	if !ok {
		return nil, config.Errors{unknownType(cfg, i)}
	}
	m, err := jit.Compile(idp.Mapping, jit.Scope{
		IdP: idp.ID, Claims: newConfig().ClaimDefaults(), Provisioning: cfg.Provisioning, Apps: apps, Privileged: privilegedGroups(cfg),
		Adoption: idp.Adoption,
	})
	if err != nil {
		return nil, mappingErrors(cfg, i, err)
	}
	m.SetName(idp.Name)
	return m, nil
}

// mappingErrors places mapping problems at their YAML lines: fields
// starting "mapping." are inside idps[i], "provisioning." at the root.
func mappingErrors(cfg *config.Config, i int, err error) error {
	errs := []error{err}
	if u, ok := err.(interface{ Unwrap() []error }); ok {
		errs = u.Unwrap()
	}
	var out config.Errors
	for _, e := range errs {
		var fe *config.FieldError
		switch {
		case !errors.As(e, &fe):
			out = append(out, cfg.ErrorAt(fmt.Sprintf("idps[%d].mapping", i), e.Error()))
		case strings.HasPrefix(fe.Field, "provisioning."):
			out = append(out, cfg.ErrorAt(fe.Field, fe.Msg))
		default:
			out = append(out, cfg.ErrorAt(fmt.Sprintf("idps[%d].%s", i, fe.Field), fe.Msg))
		}
	}
	return out
}
