package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/usherhq/usher/config"
	"github.com/usherhq/usher/jit"
	"github.com/usherhq/usher/providers"
	"github.com/usherhq/usher/scim"
	"github.com/usherhq/usher/store"
)

// scimHandler builds the /scim/v2 endpoint when any IdP pushes SCIM.
func (m *Main) scimHandler(cfg *config.Config, g *generation, mappers map[string]*jit.Mapper) (http.Handler, error) {
	var idps []scim.IdPConfig
	for _, idp := range cfg.IdPs {
		if idp.SCIM == nil {
			continue
		}
		tok, err := idp.SCIM.Token.Resolve()
		if err != nil {
			return nil, fmt.Errorf("idp %s: scim.token: %w", idp.ID, err)
		}
		idps = append(idps, scim.IdPConfig{ID: idp.ID, Token: tok, SubjectAttr: idp.SCIM.Subject, Automatic: idp.SCIM.Automatic})
	}
	if len(idps) == 0 {
		return nil, nil
	}
	return scim.New(scim.Config{
		IdPs: idps, Store: m.store, Hooks: &scimHooks{m: m, g: g, mappers: mappers},
		Log: m.Log, Now: m.Now, BaseURL: g.public.JoinPath("/scim/v2").String(),
		Observe: m.metrics.SCIM,
	})
}

// scimHooks connect SCIM pushes to provisioning: the same mapping and
// reconcile as a login, and deprovisioning that also ends sessions.
type scimHooks struct {
	m       *Main
	g       *generation
	mappers map[string]*jit.Mapper
}

func (h *scimHooks) Provision(ctx context.Context, idp string, u scim.User) error {
	m := h.m
	id := providers.Identity{IdP: idp, Subject: u.Subject, Claims: scimClaims(u)}
	p, err := h.mappers[idp].Map(id)
	var denied *jit.DeniedError
	if errors.As(err, &denied) {
		m.audit(ctx, store.Event{Action: "scim.denied", IdP: idp, Subject: u.Subject, Actor: "scim", Outcome: "refused", Detail: denied.Reason})
		return nil
	}
	if err != nil {
		return fmt.Errorf("scim provision %s/%s: %w", idp, u.Subject, err)
	}
	prev, err := m.store.Binding(ctx, idp, u.Subject)
	known := err == nil
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return err
	}
	if _, err := m.store.Bind(ctx, store.Binding{IdP: idp, Subject: u.Subject, Username: p.Username, CreatedAt: m.Now()}); err != nil {
		m.audit(ctx, store.Event{Action: "scim.refused", IdP: idp, Subject: u.Subject, Username: p.Username, Actor: "scim", Outcome: "refused", Detail: err.Error()})
		return fmt.Errorf("scim provision %s/%s: %w", idp, u.Subject, err)
	}
	m.audit(ctx, store.Event{Action: "scim.push", IdP: idp, Subject: u.Subject, Username: p.Username, Actor: "scim", Outcome: "ok", Detail: jit.Explain(id, p)})
	rec := h.g.reconciler
	if rec == nil {
		return nil
	}
	prevName := ""
	if known && prev.Username != p.Username {
		prevName = prev.Username
	}
	if err := rec.Reinstate(ctx, "scim: active", p.Username, prevName); err != nil {
		return err
	}
	_, err = rec.Login(ctx, p, prevName, "scim", true)
	return err
}

func (h *scimHooks) Deprovision(ctx context.Context, idp, subject, reason string) error {
	return h.m.deprovision(ctx, idp, subject, reason, "scim")
}

// deprovision takes a person's access away at once: their sessions end on
// every replica and every app that usher provisioned them into
// deactivates them (or queues it while the app is down).
func (m *Main) deprovision(ctx context.Context, idp, subject, reason, actor string) error {
	source := actor
	if strings.HasPrefix(actor, "admin") {
		source = "admin"
	}
	m.metrics.Revocation(source)
	if err := m.sessions.RevokeIdentity(ctx, idp, subject); err != nil {
		return err
	}
	b, err := m.store.Binding(ctx, idp, subject)
	if errors.Is(err, store.ErrNotFound) {
		// Nobody logged in with this subject. Either the person never
		// used usher, or the SCIM subject attribute does not match the
		// login subject (scim.subject): say so, it would make every
		// deactivation a no-op.
		m.Log.Warn("deprovision: no identity bound to this subject; nothing to deactivate in the apps (check scim.subject if this is unexpected)",
			"idp", idp, "subject", subject, "reason", reason)
		m.audit(ctx, store.Event{Action: "deprovision", IdP: idp, Subject: subject, Actor: actor, Outcome: "unbound", Detail: reason + ": no identity bound to this subject"})
		return nil
	}
	if err != nil {
		return fmt.Errorf("deprovision %s/%s: %w", idp, subject, err)
	}
	m.audit(ctx, store.Event{Action: "deprovision", IdP: idp, Subject: subject, Username: b.Username, Actor: actor, Outcome: "ok", Detail: reason})
	rec := m.gen.Load().reconciler
	if rec == nil {
		return nil
	}
	var errs []error
	for app := range rec.Apps {
		if _, err := m.store.AppState(ctx, app, b.Username); errors.Is(err, store.ErrNotFound) {
			continue // usher never provisioned them there
		}
		errs = append(errs, rec.Deactivate(ctx, jit.Leaver{App: app, IdP: idp, Subject: subject, Username: b.Username, Reason: reason, Actor: actor}))
	}
	return errors.Join(errs...)
}

func (m *Main) audit(ctx context.Context, e store.Event) {
	if e.Time.IsZero() {
		e.Time = m.Now()
	}
	if err := m.store.Append(context.WithoutCancel(ctx), e); err != nil {
		m.Log.Error("audit", "action", e.Action, "idp", e.IdP, "err", err)
	}
}

// scimClaims offers a SCIM user's attributes under their SCIM names and
// under the OIDC standard claim names, so one IdP mapping serves logins
// and pushes alike.
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
	set("given_name", u.GivenName)
	set("family_name", u.FamilyName)
	if _, ok := c["groups"]; !ok && len(u.Groups) > 0 {
		c["groups"] = u.Groups
	}
	return c
}
