package main

import (
	"context"
	"fmt"
	"net/http"
	"strings"

	"github.com/usherhq/usher/appsso"
	"github.com/usherhq/usher/config"
)

// openProvider builds usher's OpenID Provider for the apps that register
// a client (apps[].sso); nil when none does.
func (m *Main) openProvider(ctx context.Context, g *generation, cfg *config.Config, secrets [][]byte) (*appsso.Provider, error) {
	var clients []appsso.Client
	for i, a := range cfg.Apps {
		if a.SSO == nil {
			continue
		}
		c := appsso.Client{
			ID: a.SSO.ClientID, Public: a.SSO.Public, RedirectURIs: a.SSO.RedirectURIs,
			App: a.Name, Groups: a.SSO.Groups, SigningAlg: a.SSO.SigningAlg,
		}
		if !a.SSO.Public {
			v, err := a.SSO.ClientSecret.Resolve()
			if err != nil {
				return nil, fmt.Errorf("apps[%d].sso.client_secret: %w", i, err)
			}
			c.Secret = v
		}
		clients = append(clients, c)
	}
	if len(clients) == 0 {
		return nil, nil
	}
	p, err := appsso.New(ctx, appsso.Options{
		PublicURL: g.public, Clients: clients, Sessions: g.codec, Secrets: secrets, Store: m.store, Audit: m.audit,
		Admits: func(idp, app string) bool {
			mp := g.lifecycle.Mappers[idp]
			return mp != nil && mp.Allows(app)
		},
		Revoker: m.revoked, Revocations: m.sessions, FlowTimeout: cfg.Session.FlowTimeout, Owner: m.owner,
		RotateEvery: m.KeyRotateEvery, Prepublish: m.KeyPrepublish, KeyRefresh: m.KeyRefresh,
		Log: m.Log, Now: m.Now,
	})
	if err != nil {
		return nil, fmt.Errorf("openid provider: %w", err)
	}
	return p, nil
}

// withProvider serves the provider's paths ahead of the proxy.
func withProvider(p *appsso.Provider, next http.Handler) http.Handler {
	if p == nil {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == appsso.Path || strings.HasPrefix(r.URL.Path, appsso.Path+"/") {
			p.ServeHTTP(w, r)
			return
		}
		next.ServeHTTP(w, r)
	})
}
