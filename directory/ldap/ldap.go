// Package ldap is the directory connector for LDAP directories: Active
// Directory and OpenLDAP (directories.md §6). It binds with a sync
// account over LDAPS or StartTLS, reads people page by page (RFC 2696)
// under configured base DNs, filter and groups, and reports each person's
// state and groups, nesting included.
//
// What the two flavours differ in:
//
//   - ID: AD's objectGUID, in the standard GUID string form; OpenLDAP's
//     entryUUID.
//   - Disabled: AD's ACCOUNTDISABLE bit of userAccountControl or a past
//     accountExpires (a lockout is Inactive, not a leaver); on OpenLDAP
//     what the `disabled` block says (an attribute value, a permanent
//     ppolicy lock, a group).
//   - Group scope: AD filters on the server with the in-chain matching
//     rule; OpenLDAP, which does not know that rule and silently matches
//     nothing with it, checks the nested membership in usher.
//   - Delta: AD's uSNChanged against the DC's highestCommittedUSN (and
//     tombstones), void when the DC's invocationId changes; OpenLDAP's
//     modifyTimestamp, which cannot see deletions.
//
// People's groups come from one read of every group's member list under
// the group bases (AD range retrieval included), so a pull costs two
// paged searches however many people there are, needs neither the
// memberof nor the dynlist overlay, and a group list is only reported
// when every member list was read in full.
//
// A connection that drops is replaced (dial, TLS and bind again); a paged
// search then starts over from its first page, because its cookie
// belonged to the old connection, and people already handed to the
// caller are not handed over twice. A listing the server cut short
// (sizeLimitExceeded, timeLimitExceeded, adminLimitExceeded) is
// directory.ErrIncomplete. Every filter value is escaped.
package ldap

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"sync"
	"time"

	goldap "github.com/go-ldap/ldap/v3"
	"github.com/jonboulle/clockwork"

	"github.com/usherhq/usher/directory"
)

// Connector reads one LDAP directory. It is safe for concurrent use: each
// operation has a connection of its own, and one idle connection is kept
// for the next.
type Connector struct {
	name, idp string
	cfg       Config
	ad        bool
	url       *url.URL
	tls       *tls.Config
	log       *slog.Logger
	clock     clockwork.Clock
	obs       func(op, result string, d time.Duration)

	// scope is the hash delta tokens carry; serverScope is the user
	// filter with AD's group clause; anyPerson finds people outside it.
	scope       string
	serverScope string
	anyPerson   string
	// groupKeys are the configured groups, normalised (OpenLDAP checks
	// them in usher); disabledGroup likewise.
	groupKeys     map[string]bool
	disabledGroup string

	mu   sync.Mutex
	idle *session
}

var (
	_ directory.Connector = (*Connector)(nil)
	_ directory.Deltaer   = (*Connector)(nil)
)

func newConnector(name, idp string, cfg Config, u *url.URL, tc *tls.Config, deps directory.Deps) *Connector {
	c := &Connector{name: name, idp: idp, cfg: cfg, ad: cfg.Flavor == ActiveDirectory, url: u, tls: tc,
		log: deps.Log, clock: deps.Clock, obs: deps.Observe, scope: cfg.scopeHash(), groupKeys: map[string]bool{}}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	if c.clock == nil {
		c.clock = clockwork.NewRealClock()
	}
	for _, g := range cfg.Groups {
		c.groupKeys[normDN(g)] = true
	}
	c.serverScope = cfg.UserFilter
	if c.ad {
		c.anyPerson = "(|(&(objectCategory=person)(objectClass=user))" + cfg.UserFilter + ")"
		if len(cfg.Groups) > 0 {
			var b strings.Builder
			b.WriteString("(&" + cfg.UserFilter + "(|")
			for _, g := range cfg.Groups {
				b.WriteString("(memberOf:" + inChainRule + ":=" + goldap.EscapeFilter(g) + ")")
			}
			b.WriteString("))")
			c.serverScope = b.String()
		}
	} else {
		c.anyPerson = "(|(objectClass=person)(objectClass=posixAccount)" + cfg.UserFilter + ")"
	}
	if cfg.Disabled != nil && cfg.Disabled.Group != "" {
		c.disabledGroup = normDN(cfg.Disabled.Group)
	}
	return c
}

// Name is the configured directory name.
func (c *Connector) Name() string { return c.name }

// IdP is the IdP whose login subjects Person.Subject holds.
func (c *Connector) IdP() string { return c.idp }

func (c *Connector) observe(op string, err error, begin time.Time) {
	if c.obs == nil {
		return
	}
	result := "ok"
	if err != nil && !goldap.IsErrorWithCode(err, goldap.LDAPResultNoSuchObject) {
		result = "error"
	}
	c.obs(op, result, c.clock.Since(begin))
}

// callbackError carries the caller's own error out of a paged search,
// untouched and never retried.
type callbackError struct{ err error }

func (e *callbackError) Error() string { return e.err.Error() }

// run calls fn with a bound session, reconnecting and calling fn again
// from its start when the connection drops or the server is busy, up to
// cfg.Retries times (a kept connection that had gone stale while idle is
// replaced without counting).
func (c *Connector) run(ctx context.Context, fn func(*session) error) error {
	retries := 0
	for {
		s, reused, err := c.take(ctx)
		if err == nil {
			err = fn(s)
		}
		var cb *callbackError
		switch {
		case err == nil:
			c.put(s)
			return nil
		case errors.As(err, &cb):
			c.put(s)
			return cb.err
		}
		dead := s != nil && s.conn.IsClosing()
		if s != nil {
			if dead || retryable(err) {
				s.close()
			} else {
				c.put(s)
			}
		}
		if ctx.Err() != nil {
			if errors.Is(err, ctx.Err()) {
				return err
			}
			return fmt.Errorf("ldap %s: %w (after: %v)", c.name, ctx.Err(), err)
		}
		if !dead && !retryable(err) {
			return err
		}
		if reused && retries == 0 {
			continue
		}
		if retries >= *c.cfg.Retries {
			return fmt.Errorf("ldap %s: gave up after %d reconnects: %w: %w", c.name, retries, directory.ErrIncomplete, err)
		}
		retries++
		wait := backoff(retries)
		c.log.Warn("ldap: connection lost or server busy; reconnecting and starting the operation over",
			"directory", c.name, "retry", retries, "wait", wait, "err", err)
		if wait > 0 {
			select {
			case <-ctx.Done():
				return fmt.Errorf("ldap %s: %w (after: %v)", c.name, ctx.Err(), err)
			case <-c.clock.After(wait):
			}
		}
	}
}

// backoff is the wait before reconnect number retry: none before the
// first, then 1s, 2s, 4s, 8s, 16s, and 30s from then on. The shift stops
// there, so a large retries setting cannot overflow it into no wait.
func backoff(retry int) time.Duration {
	switch {
	case retry <= 1:
		return 0
	case retry > 6:
		return 30 * time.Second
	}
	return time.Second << (retry - 2)
}

// take returns the idle session, or a new one.
func (c *Connector) take(ctx context.Context) (*session, bool, error) {
	c.mu.Lock()
	s := c.idle
	c.idle = nil
	c.mu.Unlock()
	if s != nil && !s.conn.IsClosing() {
		return s, true, nil
	}
	if s != nil {
		s.close()
	}
	s, err := c.connect(ctx)
	return s, false, err
}

// put keeps s for the next operation, or closes it when one is kept.
func (c *Connector) put(s *session) {
	if s == nil {
		return
	}
	c.mu.Lock()
	if c.idle == nil && !s.conn.IsClosing() {
		c.idle, s = s, nil
	}
	c.mu.Unlock()
	if s != nil {
		s.close()
	}
}

// Close closes the idle connection.
func (c *Connector) Close() error {
	c.mu.Lock()
	s := c.idle
	c.idle = nil
	c.mu.Unlock()
	if s != nil {
		s.close()
	}
	return nil
}

// Pull lists every person in scope, one page per server page.
func (c *Connector) Pull(ctx context.Context, fn func(directory.Page) error) error {
	st := &listing{d: newDeliveries(fn)}
	return c.run(ctx, func(s *session) error {
		if st.graph == nil {
			g, err := s.readGroups(ctx)
			if err != nil {
				return err
			}
			st.graph = g
		}
		return c.eachUser(ctx, s, c.serverScope, func(es []*goldap.Entry) error { return st.deliver(c, es) })
	})
}

// eachUser runs filter under every base DN, page by page.
func (c *Connector) eachUser(ctx context.Context, s *session, filter string, page func([]*goldap.Entry) error) error {
	for _, base := range c.cfg.BaseDNs {
		req := goldap.NewSearchRequest(base, goldap.ScopeWholeSubtree, goldap.NeverDerefAliases, 0, 0, false,
			filter, c.userAttrs(), nil)
		if err := s.paged(ctx, "users", req, page); err != nil {
			return err
		}
	}
	return nil
}

// listing is one pull's or delta's state across reconnects.
type listing struct {
	graph *groupGraph
	d     *deliveries
}

// deliver turns entries into people and hands on those in scope.
func (st *listing) deliver(c *Connector, es []*goldap.Entry) error {
	now := c.clock.Now()
	var page directory.Page
	for _, e := range es {
		groups := st.graph.closure(e.DN)
		if !c.inGroupScope(groups) {
			continue
		}
		p, err := c.person(e, groups, now)
		if err != nil {
			return err
		}
		page.People = append(page.People, p)
	}
	return st.d.deliver("", page)
}

// inGroupScope checks the group scope in usher, for OpenLDAP; AD's
// server-side filter already did.
func (c *Connector) inGroupScope(groups []group) bool {
	if c.ad || len(c.groupKeys) == 0 {
		return true
	}
	for _, g := range groups {
		if c.groupKeys[g.key] {
			return true
		}
	}
	return false
}

// deliveries hands pages to the caller, each person once even when a
// search started over after a reconnect.
type deliveries struct {
	fn   func(directory.Page) error
	seen map[string]struct{}
}

func newDeliveries(fn func(directory.Page) error) *deliveries {
	return &deliveries{fn: fn, seen: map[string]struct{}{}}
}

func (d *deliveries) deliver(kind string, page directory.Page) error {
	people := page.People[:0]
	for _, p := range page.People {
		k := kind + "\x00" + p.ID
		if _, ok := d.seen[k]; ok {
			continue
		}
		d.seen[k] = struct{}{}
		people = append(people, p)
	}
	if len(people) == 0 {
		return nil
	}
	if err := d.fn(directory.Page{People: people}); err != nil {
		return &callbackError{err}
	}
	return nil
}

// Person looks one person up by subject, in scope or not.
func (c *Connector) Person(ctx context.Context, subject string) (*directory.Person, error) {
	match, err := c.subjectFilter(subject)
	if err != nil {
		return nil, fmt.Errorf("ldap %s: %w: %v", c.name, directory.ErrNotFound, err)
	}
	var out *directory.Person
	err = c.run(ctx, func(s *session) error {
		attrs := c.userAttrs()
		e, err := s.findOne(ctx, c.cfg.BaseDNs, "(&"+c.serverScope+match+")", attrs)
		if err != nil {
			return err
		}
		inScope := e != nil
		if e == nil {
			ncs, err := s.namingContexts(ctx)
			if err != nil {
				return err
			}
			if e, err = s.findOne(ctx, ncs, "(&"+c.anyPerson+match+")", attrs); err != nil {
				return err
			}
			if e == nil {
				return fmt.Errorf("ldap %s: subject %q: %w", c.name, subject, directory.ErrNotFound)
			}
		}
		groups, err := s.groupsOf(ctx, e.DN)
		if err != nil {
			return err
		}
		p, err := c.person(e, groups, c.clock.Now())
		if err != nil {
			return err
		}
		p.OutOfScope = !inScope || !c.inGroupScope(groups)
		out = &p
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// namingContexts are where a person outside the configured bases may be.
func (s *session) namingContexts(ctx context.Context) ([]string, error) {
	root, err := s.rootDSE(ctx, "namingContexts", "defaultNamingContext")
	if err != nil {
		return nil, err
	}
	if nc := root.GetEqualFoldAttributeValue("defaultNamingContext"); nc != "" {
		return []string{nc}, nil
	}
	return root.GetEqualFoldAttributeValues("namingContexts"), nil
}

// Delta lists the people changed since token.
func (c *Connector) Delta(ctx context.Context, token string, fn func(directory.Page) error) (string, error) {
	if c.ad {
		return c.adDelta(ctx, token, fn)
	}
	return c.olDelta(ctx, token, fn)
}

// listPeople runs filter under the bases, reads the group graph when
// anyone matched (a delta that finds nobody costs one search), and
// delivers the people.
func (c *Connector) listPeople(ctx context.Context, s *session, d *deliveries, filter string, seen func(*goldap.Entry)) error {
	var entries []*goldap.Entry
	err := c.eachUser(ctx, s, filter, func(es []*goldap.Entry) error {
		entries = append(entries, es...)
		return nil
	})
	if err != nil {
		return err
	}
	if len(entries) == 0 {
		return nil
	}
	// The graph only now: OpenLDAP keeps one paged search per
	// connection, so it cannot be read inside the search above.
	g, err := s.readGroups(ctx)
	if err != nil {
		return err
	}
	st := &listing{graph: g, d: d}
	for i := 0; i < len(entries); i += c.cfg.PageSize {
		page := entries[i:min(i+c.cfg.PageSize, len(entries))]
		if seen != nil {
			for _, e := range page {
				seen(e)
			}
		}
		if err := st.deliver(c, page); err != nil {
			return err
		}
	}
	return nil
}
