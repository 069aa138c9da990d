package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/usherhq/usher/config"
	"github.com/usherhq/usher/jit"
	"github.com/usherhq/usher/providers"
	"github.com/usherhq/usher/scim"
)

// scimHandler builds the /scim/v2 endpoint when any IdP pushes SCIM.
func (m *Main) scimHandler(cfg *config.Config, g *generation) (http.Handler, error) {
	var idps []scim.IdPConfig
	hooks := scimHooks{l: g.lifecycle, automatic: map[string]bool{}}
	for _, idp := range cfg.IdPs {
		if idp.SCIM == nil {
			continue
		}
		tok, err := idp.SCIM.Token.Resolve()
		if err != nil {
			return nil, fmt.Errorf("idp %s: scim.token: %w", idp.ID, err)
		}
		idps = append(idps, scim.IdPConfig{ID: idp.ID, Token: tok, SubjectAttr: idp.SCIM.Subject, Automatic: idp.SCIM.Automatic})
		hooks.automatic[idp.ID] = idp.SCIM.Automatic
	}
	if len(idps) == 0 {
		return nil, nil
	}
	return scim.New(scim.Config{
		IdPs: idps, Store: m.store, Hooks: hooks,
		Log: m.Log, Now: m.Now, BaseURL: g.public.JoinPath("/scim/v2").String(),
		Observe: m.metrics.SCIM,
	})
}

// scimBrakes are the IdPs' SCIM brakes (idps[].scim.brake), by IdP id.
func scimBrakes(cfg *config.Config) map[string]jit.Brake {
	out := map[string]jit.Brake{}
	for _, idp := range cfg.IdPs {
		if idp.SCIM == nil || idp.SCIM.Brake == nil {
			continue
		}
		b := idp.SCIM.Brake
		out[idp.ID] = jit.Brake{MaxCount: b.MaxCount, MaxShare: b.MaxShare, Window: b.Window,
			KeepSessions: b.HeldSessions == config.HeldSessionsKeep}
	}
	return out
}

// scimSubjects checks every IdP's scim.subject with the SCIM server's
// own parser, so `usher check` refuses what the server would.
func scimSubjects(cfg *config.Config) config.Errors {
	var errs config.Errors
	for i, idp := range cfg.IdPs {
		if idp.SCIM == nil {
			continue
		}
		if _, err := scim.ParseSubjectAttr(idp.SCIM.Subject); err != nil {
			errs = append(errs, cfg.ErrorAt(fmt.Sprintf("idps[%d].scim.subject", i), err.Error()))
		}
	}
	return errs
}

// scimHooks translate SCIM pushes into the lifecycle: an active user is
// admitted like a login (same mapping, same provisioning), a deactivated
// or deleted one is removed.
type scimHooks struct {
	l *jit.Lifecycle
	// automatic: the IdP's pushes are applied at once (scim.automatic),
	// by IdP id.
	automatic map[string]bool
}

func (h scimHooks) Provision(ctx context.Context, idp string, u scim.User) error {
	id := providers.Identity{IdP: idp, Subject: u.Subject, Claims: scimClaims(u)}
	_, err := h.l.Admit(ctx, id, jit.SCIMPush(idp, "active"))
	if e := jit.AdmitErrorOf(err); e != nil && (e.Kind == jit.Denied || e.Kind == jit.AccessRemoved) {
		return nil // a decision, audited by the lifecycle; not a failure of the push
	}
	return err
}

// Deprovision removes the person. A removal the IdP's SCIM brake holds
// is not an error: the push is stored and answered as usual, and the hold
// waits on the admin page.
func (h scimHooks) Deprovision(ctx context.Context, idp, subject, reason string) error {
	_, err := h.l.Remove(ctx, jit.Removal{IdP: idp, Subject: subject}, jit.SCIMPush(idp, reason))
	if errors.Is(err, jit.ErrUnbound) {
		return nil // logged and audited by the lifecycle
	}
	return err
}

var _ scim.Activator = scimHooks{}

// Activated: the IdP says the person is active again. With automatic,
// the admission that follows (Provision) withdraws SCIM's removals.
func (h scimHooks) Activated(ctx context.Context, idp, subject string) error {
	return h.l.ActiveAgain(ctx, idp, subject, jit.SCIMPush(idp, "active again"), h.automatic[idp])
}

// scimClaims offers a SCIM user's attributes under their SCIM names and
// under the claim names a mapping reads by default, so one IdP mapping
// serves logins and pushes alike: the OIDC standard claims
// (preferred_username, email, name, given_name, family_name) and the
// SAML defaults, nameid (the user name) and displayName. The display
// name is the pushed displayName, else name.formatted, else given and
// family name (scim.User.DisplayName): Entra and Okta may push people
// without displayName, and the apps refuse an account without one. A
// mapping that reads another claim (a SAML attribute URI) can fall back
// to these: `display_name: {claim: <uri>, fallback: name}`.
func scimClaims(u scim.User) map[string][]string {
	c := make(map[string][]string, len(u.Claims)+6)
	for k, v := range u.Claims {
		c[k] = v
	}
	set := func(k, v string) {
		if _, ok := c[k]; !ok && v != "" {
			c[k] = []string{v}
		}
	}
	set("preferred_username", u.UserName)
	set("email", u.Email)
	set("name", u.DisplayName)
	set("displayName", u.DisplayName)
	// A SAML login's NameID is the user name in Entra's and Okta's
	// defaults (the UPN, the Okta username), as userName is in their
	// SCIM mappings.
	set("nameid", u.UserName)
	set("given_name", u.GivenName)
	set("family_name", u.FamilyName)
	if _, ok := c["groups"]; !ok && len(u.Groups) > 0 {
		c["groups"] = u.Groups
	}
	return c
}
