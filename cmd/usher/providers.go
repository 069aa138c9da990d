package main

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/usherhq/usher/config"
	"github.com/usherhq/usher/providers"
	"github.com/usherhq/usher/providers/oidc"
	"github.com/usherhq/usher/providers/saml"
)

// providerTypes maps an IdP's `type:` to its config struct. It is the one
// place where protocols are wired in; no package registers itself.
var providerTypes = map[string]func() providers.Config{
	"oidc": func() providers.Config { return new(oidc.Config) },
	"saml": func() providers.Config { return new(saml.Config) },
}

// providerConfig decodes and validates IdP i's `config:` block strictly
// into its type's own struct, reporting problems with YAML path and line.
func providerConfig(cfg *config.Config, i int) (providers.Config, error) {
	idp := cfg.IdPs[i]
	newConfig, ok := providerTypes[idp.Type]
	if !ok {
		return nil, config.Errors{unknownType(cfg, i)}
	}
	pc := newConfig()
	if err := idp.Config.Decode(pc); err != nil {
		return nil, err
	}
	if errs := idp.Config.Errors(pc.Validate()); len(errs) > 0 {
		return nil, errs
	}
	return pc, nil
}

// unknownType places an IdP type no provider package implements.
func unknownType(cfg *config.Config, i int) config.Error {
	return cfg.ErrorAt(fmt.Sprintf("idps[%d].type", i), fmt.Sprintf("want one of %s, got %q",
		strings.Join(slices.Sorted(maps.Keys(providerTypes)), ", "), cfg.IdPs[i].Type))
}
