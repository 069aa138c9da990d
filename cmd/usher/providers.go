package main

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/usherhq/usher/config"
	"github.com/usherhq/usher/providers"
	"github.com/usherhq/usher/providers/oidc"
	"github.com/usherhq/usher/providers/saml"
	"github.com/usherhq/usher/store"
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

// idpCache keeps the documents IdP providers fetch (OIDC discovery, SAML
// metadata) in the store's blobs, which every replica shares, under
// idp/<id>/: a replica that starts while an IdP does not answer uses the
// last copy any replica fetched.
type idpCache struct {
	b      store.Blobs
	prefix string
}

var _ providers.Cache = idpCache{}

func (c idpCache) Get(ctx context.Context, key string) ([]byte, time.Time, error) {
	v, at, err := c.b.Blob(ctx, c.prefix+key)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return nil, time.Time{}, fmt.Errorf("%s%s: %w", c.prefix, key, providers.ErrNotCached)
	case err != nil:
		return nil, time.Time{}, fmt.Errorf("read %s%s: %w", c.prefix, key, err)
	}
	return v, at, nil
}

func (c idpCache) Put(ctx context.Context, key string, value []byte) error {
	if err := c.b.PutBlob(ctx, c.prefix+key, value); err != nil {
		return fmt.Errorf("write %s%s: %w", c.prefix, key, err)
	}
	return nil
}
