package ldaptest

import (
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	goldap "github.com/go-ldap/ldap/v3"
)

// Client is a harness's administrator connection, dialled on first use
// and shared by the tests (go-ldap connections are safe for concurrent
// use), with the helpers tests seed and change entries with. A harness's
// Server embeds it.
type Client struct {
	name string
	dial func() (*goldap.Conn, error)
	attr func(Attr) Attr

	mu       sync.Mutex
	conn     *goldap.Conn
	subtrees atomic.Int64
}

// NewClient makes a Client whose errors start with name (the harness's
// package) and which connects with dial: a connection bound as the
// administrator, with a timeout set. attr, when not nil, rewrites each
// LDIF attribute before it is added (sambatest turns "password:" into
// AD's unicodePwd).
func NewClient(name string, dial func() (*goldap.Conn, error), attr func(Attr) Attr) *Client {
	return &Client{name: name, dial: dial, attr: attr}
}

// Admin returns the shared administrator connection, dialling a new one
// when there is none or the last one closed.
func (c *Client) Admin() (*goldap.Conn, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.conn != nil && !c.conn.IsClosing() {
		return c.conn, nil
	}
	conn, err := c.dial()
	if err != nil {
		return nil, fmt.Errorf("%s: connect as the administrator: %w", c.name, err)
	}
	c.conn = conn
	return conn, nil
}

// Close closes the administrator connection; a later call dials again.
func (c *Client) Close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.conn != nil {
		c.conn.Close()
		c.conn = nil
	}
}

// Add adds the entries of ldif (see ParseLDIF) in order, so parents come
// first and groups after their members.
func (c *Client) Add(ldif string) error {
	recs, err := ParseLDIF(ldif)
	if err != nil {
		return fmt.Errorf("%s: %w", c.name, err)
	}
	conn, err := c.Admin()
	if err != nil {
		return err
	}
	for _, r := range recs {
		req := goldap.NewAddRequest(r.DN, nil)
		for _, a := range r.Attrs {
			if c.attr != nil {
				a = c.attr(a)
			}
			req.Attribute(a.Name, a.Values)
		}
		if err := conn.Add(req); err != nil {
			return fmt.Errorf("%s: add %s: %w", c.name, r.DN, err)
		}
	}
	return nil
}

// Seed is Add for a test: an error fails t.
func (c *Client) Seed(t testing.TB, ldif string) {
	t.Helper()
	if err := c.Add(ldif); err != nil {
		t.Fatal(err)
	}
}

// Modify replaces attribute values of dn (no values deletes the
// attribute).
func (c *Client) Modify(t testing.TB, dn string, replace map[string][]string) {
	t.Helper()
	conn, err := c.Admin()
	if err != nil {
		t.Fatal(err)
	}
	req := goldap.NewModifyRequest(dn, nil)
	for k, v := range replace {
		req.Replace(k, v)
	}
	if err := conn.Modify(req); err != nil {
		t.Fatalf("%s: modify %s: %v", c.name, dn, err)
	}
}

// Delete removes dn.
func (c *Client) Delete(t testing.TB, dn string) {
	t.Helper()
	conn, err := c.Admin()
	if err != nil {
		t.Fatal(err)
	}
	if err := conn.Del(goldap.NewDelRequest(dn, nil)); err != nil {
		t.Fatalf("%s: delete %s: %v", c.name, dn, err)
	}
}

// Entry reads one entry with the given attributes ("+" for operational
// ones).
func (c *Client) Entry(t testing.TB, dn string, attrs ...string) *goldap.Entry {
	t.Helper()
	conn, err := c.Admin()
	if err != nil {
		t.Fatal(err)
	}
	res, err := conn.Search(goldap.NewSearchRequest(dn, goldap.ScopeBaseObject, goldap.NeverDerefAliases,
		0, 30, false, "(objectClass=*)", attrs, nil))
	if err != nil {
		t.Fatalf("%s: read %s: %v", c.name, dn, err)
	}
	if len(res.Entries) != 1 {
		t.Fatalf("%s: read %s: %d entries", c.name, dn, len(res.Entries))
	}
	return res.Entries[0]
}

// SubtreeName names a test's own subtree: the test's name and a number,
// which keeps -count=N and same-named subtests apart. Tests that seed
// their own subtree do not see each other's entries and can run in
// parallel on one server.
func (c *Client) SubtreeName(t testing.TB) (name string, n int64) {
	n = c.subtrees.Add(1)
	return fmt.Sprintf("%s-%d", strings.NewReplacer("/", "-", " ", "_").Replace(t.Name()), n), n
}
