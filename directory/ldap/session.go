package ldap

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	goldap "github.com/go-ldap/ldap/v3"

	"github.com/usherhq/usher/directory"
)

// session is one bound connection. It is used by one operation at a time
// (one Pull, one Person); the connector keeps one idle session for reuse.
type session struct {
	c    *Connector
	conn *goldap.Conn
}

// connectError marks a failure to reach the server (dial, TLS): worth a
// retry, unlike a refused bind.
type connectError struct{ err error }

func (e *connectError) Error() string { return e.err.Error() }
func (e *connectError) Unwrap() error { return e.err }

// connect dials, upgrades to TLS and binds, all within one timeout and
// the context.
func (c *Connector) connect(ctx context.Context) (_ *session, err error) {
	begin := c.clock.Now()
	defer func() { c.observe("connect", err, begin) }()
	pw, err := c.cfg.BindPassword.Resolve()
	if err != nil {
		return nil, fmt.Errorf("ldap %s: bind_password: %w", c.name, err)
	}
	if pw == "" {
		return nil, fmt.Errorf("ldap %s: bind_password is empty; an empty password is an unauthenticated bind", c.name)
	}
	dctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	addr := c.addr()
	d := &net.Dialer{Timeout: c.cfg.Timeout}
	var raw net.Conn
	if c.url.Scheme == "ldaps" {
		raw, err = (&tls.Dialer{NetDialer: d, Config: c.tls}).DialContext(dctx, "tcp", addr)
	} else {
		raw, err = d.DialContext(dctx, "tcp", addr)
	}
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("ldap %s: connect %s: %w", c.name, addr, ctx.Err())
		}
		return nil, &connectError{fmt.Errorf("ldap %s: connect %s: %w", c.name, addr, err)}
	}
	// StartTLS's handshake and the bind have no deadline of their own in
	// go-ldap: the socket's deadline and the context bound them.
	raw.SetDeadline(time.Now().Add(c.cfg.Timeout))
	stop := context.AfterFunc(ctx, func() { raw.Close() })
	conn := goldap.NewConn(raw, c.url.Scheme == "ldaps")
	conn.Start()
	conn.SetTimeout(c.cfg.Timeout)
	fail := func(what string, err error) (*session, error) {
		// go-ldap reports a connection the server dropped sometimes as
		// ErrorNetwork, sometimes as a plain read error on a closed
		// connection.
		dropped := conn.IsClosing() || goldap.IsErrorAnyOf(err, goldap.ErrorNetwork)
		conn.Close()
		if ctx.Err() != nil {
			return nil, fmt.Errorf("ldap %s: %s: %w", c.name, what, ctx.Err())
		}
		err = fmt.Errorf("ldap %s: %s: %w", c.name, what, err)
		if dropped {
			return nil, &connectError{err}
		}
		return nil, err
	}
	if c.cfg.StartTLS {
		if err := conn.StartTLS(c.tls); err != nil {
			return fail("StartTLS", err)
		}
	}
	if err := conn.Bind(c.cfg.BindDN, pw); err != nil {
		// AD puts the reason in the diagnostic message ("data 52e"
		// bad password, "533" disabled, "775" locked: §6.1); go-ldap's
		// error carries it.
		return fail("bind as "+c.cfg.BindDN, err)
	}
	if !stop() {
		conn.Close()
		return nil, fmt.Errorf("ldap %s: connect: %w", c.name, ctx.Err())
	}
	raw.SetDeadline(time.Time{})
	return &session{c: c, conn: conn}, nil
}

func (c *Connector) addr() string {
	if c.url.Port() != "" {
		return c.url.Host
	}
	port := "389"
	if c.url.Scheme == "ldaps" {
		port = "636"
	}
	return net.JoinHostPort(c.url.Hostname(), port)
}

func (s *session) close() { s.conn.Close() }

// search runs one request (one page) under the operation timeout and the
// context: cancelling ctx closes the connection, which ends the request.
func (s *session) search(ctx context.Context, op string, req *goldap.SearchRequest) (*goldap.SearchResult, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	req.TimeLimit = max(1, int(s.c.cfg.Timeout/time.Second))
	stop := context.AfterFunc(ctx, func() { s.conn.Close() })
	begin := s.c.clock.Now()
	res, err := s.conn.Search(req)
	if !stop() {
		return nil, ctx.Err()
	}
	s.c.observe(op, err, begin)
	return res, err
}

// paged runs req over RFC 2696 pages, calling page with each page's
// entries. A server that ignores the control answers in one page. A
// truncated listing (size, time or admin limit) is ErrIncomplete.
// Continuation references (AD's other naming contexts below a domain
// root) are not followed: people live in the domain partition, and the
// referred partitions (DomainDnsZones, ForestDnsZones, Configuration)
// hold none.
func (s *session) paged(ctx context.Context, op string, req *goldap.SearchRequest, page func([]*goldap.Entry) error) error {
	ctl := goldap.NewControlPaging(uint32(s.c.cfg.PageSize))
	req.Controls = append(req.Controls[:len(req.Controls):len(req.Controls)], ctl)
	for n := 1; ; n++ {
		res, err := s.search(ctx, op, req)
		if err != nil {
			return searchError(s.c.name, fmt.Sprintf("%s under %s page %d", op, req.BaseDN, n), err)
		}
		if err := page(res.Entries); err != nil {
			s.abandon(ctx, op, req, ctl)
			return err
		}
		resp, ok := goldap.FindControl(res.Controls, goldap.ControlTypePaging).(*goldap.ControlPaging)
		if !ok || len(resp.Cookie) == 0 {
			return nil
		}
		ctl.SetCookie(resp.Cookie)
	}
}

// abandon tells the server to drop a paged search we stop early (RFC 2696
// §3: size 0 with the last cookie). Best effort: the connection's end
// drops it too.
func (s *session) abandon(ctx context.Context, op string, req *goldap.SearchRequest, ctl *goldap.ControlPaging) {
	if len(ctl.Cookie) == 0 || ctx.Err() != nil {
		return
	}
	size := ctl.PagingSize
	ctl.PagingSize = 0
	s.search(ctx, op, req)
	ctl.PagingSize = size
}

// searchError words a failed search and marks truncations incomplete.
func searchError(name, what string, err error) error {
	if goldap.IsErrorAnyOf(err, goldap.LDAPResultSizeLimitExceeded, goldap.LDAPResultTimeLimitExceeded,
		goldap.LDAPResultAdminLimitExceeded) {
		return fmt.Errorf("ldap %s: %s: the server cut the listing short: %w: %w", name, what, directory.ErrIncomplete, err)
	}
	return fmt.Errorf("ldap %s: %s: %w", name, what, err)
}

// retryable reports whether err is the connection's fault or a passing
// server state (§7.5: busy, unavailable, server down, a dropped or timed
// out connection): a new connection may succeed.
func retryable(err error) bool {
	var ce *connectError
	return errors.As(err, &ce) ||
		goldap.IsErrorAnyOf(err, goldap.ErrorNetwork, goldap.LDAPResultBusy, goldap.LDAPResultUnavailable,
			goldap.LDAPResultServerDown, goldap.LDAPResultTimeout, goldap.LDAPResultConnectError)
}

// findOne searches bases for the one entry filter matches; nil when none.
// Two matches are an error: a subject must name one person.
func (s *session) findOne(ctx context.Context, bases []string, filter string, attrs []string) (*goldap.Entry, error) {
	var found *goldap.Entry
	for _, base := range bases {
		req := goldap.NewSearchRequest(base, goldap.ScopeWholeSubtree, goldap.NeverDerefAliases, 2, 0, false, filter, attrs, nil)
		res, err := s.search(ctx, "person", req)
		switch {
		case goldap.IsErrorWithCode(err, goldap.LDAPResultNoSuchObject):
			continue
		case goldap.IsErrorWithCode(err, goldap.LDAPResultSizeLimitExceeded):
			// More than the two asked for.
			return nil, fmt.Errorf("ldap %s: %w: more than two entries under %s", s.c.name, errAmbiguous, base)
		}
		if err != nil {
			return nil, searchError(s.c.name, "look up under "+base, err)
		}
		for _, e := range res.Entries {
			if found != nil && !strings.EqualFold(found.DN, e.DN) {
				return nil, fmt.Errorf("ldap %s: %w: %s and %s both match", s.c.name, errAmbiguous, found.DN, e.DN)
			}
			found = e
		}
	}
	return found, nil
}

var errAmbiguous = errors.New("subject matches more than one entry")

// rootDSE reads the server's root entry.
func (s *session) rootDSE(ctx context.Context, attrs ...string) (*goldap.Entry, error) {
	req := goldap.NewSearchRequest("", goldap.ScopeBaseObject, goldap.NeverDerefAliases, 1, 0, false, "(objectClass=*)", attrs, nil)
	res, err := s.search(ctx, "rootdse", req)
	if err != nil {
		return nil, fmt.Errorf("ldap %s: read the root DSE: %w", s.c.name, err)
	}
	if len(res.Entries) != 1 {
		return nil, fmt.Errorf("ldap %s: read the root DSE: %d entries", s.c.name, len(res.Entries))
	}
	return res.Entries[0], nil
}

// moreValues reads the rest of attr on dn from range start next on,
// following AD range retrieval (MS-ADTS 3.1.1.3.1.3.3): a multi-valued
// attribute with more than MaxValRange values (1500) comes back as
// attr;range=0-1499, and the rest is read as attr;range=1500-*, ... until
// a chunk's range ends in *.
func (s *session) moreValues(ctx context.Context, dn, attr string, next int) ([]string, error) {
	var vals []string
	for next >= 0 {
		want := attr + ";range=" + strconv.Itoa(next) + "-*"
		req := goldap.NewSearchRequest(dn, goldap.ScopeBaseObject, goldap.NeverDerefAliases, 1, 0, false,
			"(objectClass=*)", []string{want}, nil)
		res, err := s.search(ctx, "members", req)
		if err != nil {
			return nil, searchError(s.c.name, "read "+want+" of "+dn, err)
		}
		if len(res.Entries) != 1 {
			return nil, fmt.Errorf("ldap %s: read %s of %s: entry gone: %w", s.c.name, want, dn, directory.ErrIncomplete)
		}
		chunk, n, err := rangeValues(res.Entries[0], attr, next)
		if err != nil {
			return nil, fmt.Errorf("ldap %s: %s of %s: %w: %w", s.c.name, want, dn, err, directory.ErrIncomplete)
		}
		vals = append(vals, chunk...)
		next = n
	}
	return vals, nil
}

// rangeValues reads attr from e, asked for from value number from on: its
// values and where the next range starts, or -1 when e holds the last (or
// only) values. AD sends the ranged option even when the plain attribute
// is also present (empty). A range that starts elsewhere than asked is an
// error: the values between would be lost without a word.
func rangeValues(e *goldap.Entry, attr string, from int) ([]string, int, error) {
	var plain []string
	for _, a := range e.Attributes {
		name, opts, ranged := strings.Cut(a.Name, ";")
		if !strings.EqualFold(name, attr) {
			continue
		}
		if !ranged {
			plain = a.Values
			continue
		}
		for _, o := range strings.Split(opts, ";") {
			r, ok := cutPrefixFold(o, "range=")
			if !ok {
				continue
			}
			lo, hi, ok := strings.Cut(r, "-")
			low, err := strconv.Atoi(lo)
			if !ok || err != nil || low < 0 {
				return nil, 0, fmt.Errorf("bad range option %q", a.Name)
			}
			if low != from {
				return nil, 0, fmt.Errorf("range option %q does not start at %d, where it was asked for", a.Name, from)
			}
			if hi == "*" {
				return a.Values, -1, nil
			}
			high, err := strconv.Atoi(hi)
			if err != nil || high < low {
				return nil, 0, fmt.Errorf("bad range option %q", a.Name)
			}
			return a.Values, high + 1, nil
		}
	}
	return plain, -1, nil
}

func cutPrefixFold(s, prefix string) (string, bool) {
	if len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix) {
		return s[len(prefix):], true
	}
	return "", false
}
