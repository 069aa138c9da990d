package onelogin

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/usherhq/usher/directory"
	"github.com/usherhq/usher/directory/rest"
)

// Delta lists the people whose OneLogin record changed since the token,
// through GET /api/2/users?updated_since=<mark> (reference §5.2). Each
// user record carries the person's role_ids and group_id, so a delta
// person has GroupsComplete and an exact scope verdict (OutOfScope for
// those outside the scope), at no call beyond the listing and the role
// (and group) names.
//
// The overlap: the mark is the server's own time when the previous
// delta began (the Date of its first answer, so usher's clock skew does
// not matter), and each delta asks for changes since DeltaOverlap
// (default 15 minutes) before it. A change is stamped with updated_at
// when it is written, but may become visible to the listing a little
// later (a write still committing, or a read served by a replica that
// lags [U]: OneLogin documents neither way); without the overlap such a
// change, stamped just before the mark and visible just after it, would
// fall between two deltas and never surface. The price is that recent
// changes come again, which the sync applies idempotently. Full pulls
// remain the authority.
//
// Not seen by a delta: deletions (a deleted user is simply gone, 404;
// reference §7.1) and, probably, role or group assignments alone ([U]
// whether they move updated_at). Both are corrected by the next full
// pull. OneLogin tokens do not expire; a token from another
// configuration is refused with ErrDeltaExpired.
func (c *Connector) Delta(ctx context.Context, token string, fn func(directory.Page) error) (string, error) {
	budget := rest.NewBudget(c.cfg.MaxWait)
	fail := func(err error) (string, error) {
		return "", fmt.Errorf("onelogin %s: delta: %w", c.name, err)
	}
	if token == "" {
		res, err := c.api.Do(ctx, rest.Request{Op: "users", URL: c.url("/api/2/users", url.Values{"limit": {"1"}}), Budget: budget})
		if err != nil {
			return fail(c.explain(err))
		}
		return c.encodeToken(c.serverTime(res.Header)), nil
	}
	mark, err := c.decodeToken(token)
	if err != nil {
		return fail(err)
	}
	n, err := c.loadNames(ctx, budget)
	if err != nil {
		return fail(err)
	}
	since := mark.Add(-c.cfg.DeltaOverlap).UTC().Format("2006-01-02T15:04:05.000Z")
	q := url.Values{"updated_since": {since}, "limit": {strconv.Itoa(c.cfg.PageSize)}}
	var next time.Time
	var fnErr error
	err = c.each(ctx, "users", "/api/2/users", q, budget, func(res *rest.Response) error {
		if next.IsZero() {
			next = c.serverTime(res.Header)
		}
		users, err := c.decodeUsers(res.Body)
		if err != nil {
			return err
		}
		page := directory.Page{People: make([]directory.Person, 0, len(users))}
		for _, u := range users {
			p, err := c.person(u, n)
			if err != nil {
				return err
			}
			page.People = append(page.People, p)
		}
		if len(page.People) == 0 {
			return nil
		}
		if err := fn(page); err != nil {
			fnErr = err
			return err
		}
		return nil
	})
	if fnErr != nil {
		return "", fnErr
	}
	if err != nil {
		return fail(err)
	}
	return c.encodeToken(next), nil
}

// serverTime is the answer's Date, else our clock.
func (c *Connector) serverTime(h http.Header) time.Time {
	if t, err := http.ParseTime(h.Get("Date")); err == nil {
		return t
	}
	return c.clock.Now()
}

const tokenPrefix = "onelogin1."

// configHash binds a token to what decides who a delta reports and how.
func (c *Connector) configHash() string {
	h := sha256.New()
	for _, s := range []string{c.cfg.BaseURL, c.cfg.SubjectAttribute, strings.Join(c.cfg.Roles, "\x00"),
		strings.Join(c.cfg.Groups, "\x00"), strings.Join(c.cfg.GroupsFrom, "\x00"), strings.Join(c.cfg.Attributes, "\x00")} {
		h.Write([]byte(s))
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil)[:8])
}

func (c *Connector) encodeToken(mark time.Time) string {
	return tokenPrefix + mark.UTC().Format(time.RFC3339) + "." + c.configHash()
}

func (c *Connector) decodeToken(s string) (time.Time, error) {
	body, found := strings.CutPrefix(s, tokenPrefix)
	stamp, hash, found2 := strings.Cut(body, ".")
	if !found || !found2 {
		return time.Time{}, fmt.Errorf("%w: not a onelogin delta token", directory.ErrDeltaExpired)
	}
	t, err := time.Parse(time.RFC3339, stamp)
	if err != nil {
		return time.Time{}, fmt.Errorf("%w: malformed onelogin delta token", directory.ErrDeltaExpired)
	}
	if hash != c.configHash() {
		return time.Time{}, fmt.Errorf("%w: the directory's configuration changed since the token", directory.ErrDeltaExpired)
	}
	return t, nil
}
