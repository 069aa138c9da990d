package ldap

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	goldap "github.com/go-ldap/ldap/v3"

	"github.com/usherhq/usher/directory"
)

const (
	attrModifyTimestamp      = "modifyTimestamp"
	attrPwdAccountLockedTime = "pwdAccountLockedTime"
	// ppolicyPermanentLock is the pwdAccountLockedTime that means "locked
	// until an administrator unlocks" (§6.6).
	ppolicyPermanentLock = "000001010000Z"
)

// olStatus applies the `disabled` rules; without them everyone is active.
// A permanent ppolicy lock is Disabled, a lock with a time is a temporary
// lockout (Inactive, not a leaver, §7.1).
func (c *Connector) olStatus(e *goldap.Entry, groups []group) directory.Status {
	d := c.cfg.Disabled
	if d == nil {
		return directory.Active
	}
	if d.Attribute != "" {
		for _, v := range vals(e, d.Attribute) {
			for _, w := range d.Values {
				if strings.EqualFold(strings.TrimSpace(v), w) {
					return directory.Disabled
				}
			}
		}
	}
	if c.disabledGroup != "" {
		for _, g := range groups {
			if g.key == c.disabledGroup {
				return directory.Disabled
			}
		}
	}
	if d.PPolicy {
		switch v := val(e, attrPwdAccountLockedTime); {
		case v == ppolicyPermanentLock:
			return directory.Disabled
		case v != "":
			return directory.Inactive
		}
	}
	return directory.Active
}

// generalizedTime is LDAP's GeneralizedTime as OpenLDAP writes
// modifyTimestamp (seconds, UTC).
const generalizedTime = "20060102150405Z"

func parseGeneralizedTime(v string) (time.Time, error) {
	if i := strings.IndexAny(v, ".,"); i >= 0 && strings.HasSuffix(v, "Z") {
		v = v[:i] + "Z" // fractions: the token keeps whole seconds
	}
	return time.Parse(generalizedTime, v)
}

// olToken is an OpenLDAP delta token: the latest modifyTimestamp seen.
type olToken struct {
	scope string
	since time.Time
}

const olTokenPrefix = "ol1"

func (t olToken) String() string {
	return olTokenPrefix + ":" + t.scope + ":" + t.since.UTC().Format(generalizedTime)
}

func parseOLToken(s string) (olToken, error) {
	p := strings.Split(s, ":")
	if len(p) != 3 || p[0] != olTokenPrefix {
		return olToken{}, errors.New("not an OpenLDAP delta token")
	}
	t, err := parseGeneralizedTime(p[2])
	if err != nil {
		return olToken{}, errors.New("bad time in delta token")
	}
	return olToken{scope: p[1], since: t}, nil
}

// olDelta lists people whose entries changed at or after the token's
// time. modifyTimestamp has whole seconds, so the search repeats the
// token's second (people changed in it come again, none is lost). A
// first token starts clock_skew before usher's clock, which covers a
// server clock that is behind. Deleted entries do not show in searches:
// deletions are found by full pulls (syncrepl would report them, but
// needs the syncprov overlay on the server).
func (c *Connector) olDelta(ctx context.Context, token string, fn func(directory.Page) error) (string, error) {
	if token == "" {
		return olToken{scope: c.scope, since: c.clock.Now().Add(-c.cfg.ClockSkew)}.String(), nil
	}
	prev, err := parseOLToken(token)
	if err != nil {
		return "", fmt.Errorf("ldap %s: %w: %v", c.name, directory.ErrDeltaExpired, err)
	}
	if prev.scope != c.scope {
		return "", fmt.Errorf("ldap %s: %w: the scope changed since the token was made", c.name, directory.ErrDeltaExpired)
	}
	latest := prev.since
	d := newDeliveries(fn)
	filter := "(&" + c.serverScope + "(" + attrModifyTimestamp + ">=" + prev.since.UTC().Format(generalizedTime) + "))"
	err = c.run(ctx, func(s *session) error {
		return c.listPeople(ctx, s, d, filter, func(e *goldap.Entry) {
			if t, err := parseGeneralizedTime(val(e, attrModifyTimestamp)); err == nil && t.After(latest) {
				latest = t
			}
		})
	})
	if err != nil {
		return "", err
	}
	return olToken{scope: c.scope, since: latest}.String(), nil
}
