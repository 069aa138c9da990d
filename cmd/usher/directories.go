package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/robfig/cron/v3"

	"github.com/usherhq/usher/config"
	"github.com/usherhq/usher/directory"
	"github.com/usherhq/usher/directory/google"
	"github.com/usherhq/usher/directory/graph"
	"github.com/usherhq/usher/directory/ldap"
	"github.com/usherhq/usher/directory/okta"
	"github.com/usherhq/usher/directory/onelogin"
	"github.com/usherhq/usher/directory/scimpull"
	"github.com/usherhq/usher/dirsync"
	"github.com/usherhq/usher/jit"
	"github.com/usherhq/usher/metrics"
	"github.com/usherhq/usher/providers"
)

// directoryTypes maps a directory's `type:` to its connector's config.
// It is the one place where directory connectors are wired in.
var directoryTypes = map[string]func() directory.Config{
	"graph":    func() directory.Config { return new(graph.Config) },
	"okta":     func() directory.Config { return new(okta.Config) },
	"google":   func() directory.Config { return new(google.Config) },
	"onelogin": func() directory.Config { return new(onelogin.Config) },
	"ldap":     func() directory.Config { return new(ldap.Config) },
	"scim":     func() directory.Config { return new(scimpull.Config) },
}

// directoryConfig decodes directories[i].config strictly into its type's
// struct and validates it and the entry's schedule, with YAML lines.
func directoryConfig(cfg *config.Config, i int) (directory.Config, error) {
	d := cfg.Directories[i]
	at := func(key string) string { return fmt.Sprintf("directories[%d].%s", i, key) }
	var errs config.Errors
	if d.Schedule != "" {
		if _, err := cron.ParseStandard(d.Schedule); err != nil {
			errs = append(errs, cfg.ErrorAt(at("schedule"), fmt.Sprintf("not a cron expression: %v", err)))
		}
	}
	newConfig, ok := directoryTypes[d.Type]
	if !ok {
		if d.Type != "" { // an empty type is reported by config
			errs = append(errs, cfg.ErrorAt(at("type"), fmt.Sprintf("want one of %s, got %q",
				strings.Join(slices.Sorted(maps.Keys(directoryTypes)), ", "), d.Type)))
		}
		return nil, errs
	}
	dc := newConfig()
	if err := d.Config.Decode(dc); err != nil {
		var es config.Errors
		if errors.As(err, &es) {
			return nil, append(errs, es...)
		}
		return nil, err
	}
	errs = append(errs, d.Config.Errors(dc.Validate())...)
	if len(errs) > 0 {
		return nil, errs
	}
	return dc, nil
}

// directoryScope identifies a directory's configured connector block
// (secrets redacted, so only references are hashed): a delta token or a
// sweep's idea of "missing" taken under another scope is not trusted.
func directoryScope(d config.Directory) string {
	b, err := json.Marshal(d.Config)
	if err != nil {
		return ""
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:8])
}

// openDirectories opens every configured directory's connector and its
// syncer, and completes group overage at login through the Graph
// directory of each IdP that has one.
func (m *Main) openDirectories(g *generation, cfg *config.Config) error {
	apps := slices.Sorted(maps.Keys(g.dirs))
	overage := map[string]jit.GroupResolver{}
	for i, d := range cfg.Directories {
		dc, err := directoryConfig(cfg, i)
		if err != nil {
			return err
		}
		name := d.Name
		conn, err := dc.Open(name, d.IdP, directory.Deps{
			Log: m.Log.With("directory", name),
			Observe: func(op, result string, took time.Duration) {
				m.metrics.DirectoryCall(name, op, result, took)
			},
		})
		if err != nil {
			return fmt.Errorf("directory %s: %w", name, err)
		}
		if c, ok := conn.(io.Closer); ok {
			g.closers = append(g.closers, c)
		}
		k := slices.IndexFunc(cfg.IdPs, func(p config.IdP) bool { return p.ID == d.IdP })
		if k < 0 {
			return fmt.Errorf("directory %s: no identity provider %q is configured", name, d.IdP)
		}
		idp := cfg.IdPs[k]
		scope := directoryScope(d)
		s, err := dirsync.New(dirsync.Config{
			Automatic: d.Automatic, GroupIDs: d.GroupValues == "ids", GroupClaim: idp.Mapping.Groups.Claim,
			Claims: d.Claims, Concurrency: d.Concurrency, FullEvery: d.FullEvery,
			Schedule: d.Schedule, Every: d.Every, Scope: scope,
		}, dirsync.Deps{
			Conn: conn, Lifecycle: g.lifecycle, Mapper: g.lifecycle.Mappers[d.IdP], Apps: apps, Store: m.store,
			Log: m.Log, Owner: m.owner, OnRun: func(r *dirsync.Result) { m.directoryRun(r) },
		})
		if err != nil {
			return fmt.Errorf("directory %s: %w", name, err)
		}
		g.connectors[name], g.scopes[name], g.syncers[name] = conn, scope, s
		g.syncOrder = append(g.syncOrder, name)
		if gc, ok := conn.(*graph.Connector); ok && overage[d.IdP] == nil {
			overage[d.IdP] = graphOverage{conn: gc, ids: d.GroupValues == "ids"}
		}
	}
	g.lifecycle.Overage = overage
	return nil
}

// directoryRun counts a finished sync run.
func (m *Main) directoryRun(r *dirsync.Result) {
	result := metrics.SyncOK
	if !r.Complete {
		result = metrics.SyncIncomplete
	}
	m.metrics.DirectorySync(r.Directory, r.Kind, result, r.Finished.Sub(r.Started), r.People, r.Groups)
	for change, n := range map[string]int{
		metrics.ChangeCreated: r.Created, metrics.ChangeUpdated: r.Updated, metrics.ChangeDenied: r.Denied,
		metrics.ChangeRefused: r.Refused, metrics.ChangeFailed: r.Failed,
	} {
		m.metrics.DirectoryChanges(r.Directory, change, n)
	}
}

// syncerOf is the syncer of the first directory of idp, or nil.
func (g *generation) syncerOf(idp string) *dirsync.Syncer {
	for _, name := range g.syncOrder {
		if s := g.syncers[name]; s.IdP() == idp {
			return s
		}
	}
	return nil
}

// graphOverage completes an Entra login's partial group list through
// Microsoft Graph (reference §2.9): the user's object ID comes from the
// token's oid claim or the assertion's objectidentifier attribute, never
// from the URL the token embeds. The groups are every group the user is
// in, through nesting, in the form the directory's group_values gives
// the mapping; the mapping's include and exclude narrow them, as they
// would a token's list.
type graphOverage struct {
	conn *graph.Connector
	ids  bool
}

func (o graphOverage) ResolveGroups(ctx context.Context, id providers.Identity) ([]string, error) {
	oid := id.Claim("oid")
	if oid == "" {
		oid = id.Claim("http://schemas.microsoft.com/identity/claims/objectidentifier")
	}
	if oid == "" {
		p, err := o.conn.Person(ctx, id.Subject)
		if err != nil {
			return nil, err
		}
		oid = p.ID
	}
	gs, err := o.conn.MemberGroups(ctx, oid)
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(gs))
	for _, g := range gs {
		switch {
		case o.ids:
			out = append(out, g.ID)
		case g.DisplayName != "":
			out = append(out, g.DisplayName)
		}
	}
	return out, nil
}
