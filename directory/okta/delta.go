package okta

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/usherhq/usher/directory"
	"github.com/usherhq/usher/directory/rest"
)

// Delta lists the people whose Okta record changed since the token,
// through search=lastUpdated gt "<mark>", which (unlike the default
// listing) includes DEPROVISIONED users. Each is read with their groups
// (one call per person), so a delta person has GroupsComplete and an
// exact scope verdict (OutOfScope for those outside the scope groups).
//
// Consistency: Okta serves search from an eventually consistent index
// (reference §3.2), so a change can surface there some time after its
// lastUpdated. Each delta therefore looks DeltaOverlap (default 15
// minutes) further back than the previous one began, by the server's own
// clock (the Date of its answers, so usher's clock skew does not
// matter). Okta documents no bound on the lag; 15 minutes is far above
// the seconds it usually takes, and the price is only that recent
// changes are reported again, which the sync applies idempotently. Full
// pulls, which use the strongly consistent listings, remain the
// authority.
//
// Not seen by a delta: group membership changes alone (they do not touch
// a user's lastUpdated) and hard deletions (a deleted user is gone; the
// deactivation before it is seen, as Disabled). Both are corrected by the
// next full pull. Okta tokens do not expire; a token from another
// configuration is refused with ErrDeltaExpired.
func (c *Connector) Delta(ctx context.Context, token string, fn func(directory.Page) error) (string, error) {
	budget := rest.NewBudget(c.cfg.MaxWait)
	fail := func(err error) (string, error) {
		return "", fmt.Errorf("okta %s: delta: %w", c.name, err)
	}
	if token == "" {
		res, err := c.api.Do(ctx, rest.Request{Op: "users", URL: c.url("/api/v1/users", limit(1)), Budget: budget})
		if err != nil {
			return fail(err)
		}
		return c.encodeToken(c.serverTime(res.Header)), nil
	}
	mark, err := c.decodeToken(token)
	if err != nil {
		return fail(err)
	}
	scope, err := c.resolveScope(ctx, budget)
	if err != nil {
		return fail(err)
	}
	since := mark.Add(-c.cfg.DeltaOverlap).UTC().Format("2006-01-02T15:04:05.000Z")
	q := withLimit(url.Values{"search": {"lastUpdated gt " + quote(since)}}, c.cfg.PageSize)
	var next time.Time
	err = c.each(ctx, "users", c.url("/api/v1/users", q), budget, func(res *rest.Response) error {
		if next.IsZero() {
			next = c.serverTime(res.Header)
		}
		var users []user
		if err := json.Unmarshal(res.Body, &users); err != nil {
			return fmt.Errorf("decode users: %w", err)
		}
		people := make([]directory.Person, len(users))
		g, gctx := errgroup.WithContext(ctx)
		g.SetLimit(c.cfg.Concurrency)
		for i, u := range users {
			g.Go(func() error {
				p, err := c.complete(gctx, u, scope, budget)
				if err != nil {
					return err
				}
				people[i] = *p
				return nil
			})
		}
		if err := g.Wait(); err != nil {
			return err
		}
		if len(people) == 0 {
			return nil
		}
		if err := fn(directory.Page{People: people}); err != nil {
			return callbackError{err}
		}
		return nil
	})
	if ce, ok := err.(callbackError); ok {
		return "", ce.err
	}
	if err != nil {
		return fail(err)
	}
	return c.encodeToken(next), nil
}

// callbackError carries fn's error out of each unwrapped.
type callbackError struct{ err error }

func (e callbackError) Error() string { return e.err.Error() }

// serverTime is the answer's Date, else our clock.
func (c *Connector) serverTime(h http.Header) time.Time {
	if t, err := http.ParseTime(h.Get("Date")); err == nil {
		return t
	}
	return c.clock.Now()
}

const tokenPrefix = "okta1."

func (c *Connector) configHash() string {
	h := sha256.New()
	for _, s := range []string{c.cfg.OrgURL, c.cfg.SubjectAttribute, strings.Join(c.cfg.Groups, "\x00"), strings.Join(c.cfg.Attributes, "\x00")} {
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
		return time.Time{}, fmt.Errorf("%w: not an okta delta token", directory.ErrDeltaExpired)
	}
	t, err := time.Parse(time.RFC3339, stamp)
	if err != nil {
		return time.Time{}, fmt.Errorf("%w: malformed okta delta token", directory.ErrDeltaExpired)
	}
	if hash != c.configHash() {
		return time.Time{}, fmt.Errorf("%w: the directory's configuration changed since the token", directory.ErrDeltaExpired)
	}
	return t, nil
}
