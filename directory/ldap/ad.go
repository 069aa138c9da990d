package ldap

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	goldap "github.com/go-ldap/ldap/v3"

	"github.com/usherhq/usher/directory"
)

// Active Directory attributes (§6.3).
const (
	attrObjectGUID         = "objectGUID"
	attrUserAccountControl = "userAccountControl"
	attrAccountExpires     = "accountExpires"
	// attrUACComputed is constructed: it carries the lockout and
	// password-expired bits that userAccountControl does not keep current.
	attrUACComputed = "msDS-User-Account-Control-Computed"
)

// userAccountControl bits.
const (
	uacAccountDisable  = 0x2
	uacLockout         = 0x10
	uacPasswordExpired = 0x800000
)

// guidString renders AD's 16-byte objectGUID in the standard form, whose
// first three fields are little-endian (not uuid.FromBytes' big-endian).
func guidString(b []byte) (string, error) {
	if len(b) != 16 {
		return "", fmt.Errorf("objectGUID is %d bytes, want 16", len(b))
	}
	return fmt.Sprintf("%08x-%04x-%04x-%x-%x",
		binary.LittleEndian.Uint32(b[0:4]), binary.LittleEndian.Uint16(b[4:6]),
		binary.LittleEndian.Uint16(b[6:8]), b[8:10], b[10:16]), nil
}

// guidBytes is guidString's inverse: the bytes in storage order.
func guidBytes(s string) ([]byte, error) {
	h := strings.ReplaceAll(strings.TrimSuffix(strings.TrimPrefix(s, "{"), "}"), "-", "")
	if len(h) != 32 || len(s) < 32 {
		return nil, fmt.Errorf("not a GUID: %q", s)
	}
	raw, err := hex.DecodeString(h)
	if err != nil {
		return nil, fmt.Errorf("not a GUID: %q", s)
	}
	b := make([]byte, 16)
	binary.LittleEndian.PutUint32(b[0:4], binary.BigEndian.Uint32(raw[0:4]))
	binary.LittleEndian.PutUint16(b[4:6], binary.BigEndian.Uint16(raw[4:6]))
	binary.LittleEndian.PutUint16(b[6:8], binary.BigEndian.Uint16(raw[6:8]))
	copy(b[8:], raw[8:])
	return b, nil
}

// escapeBytes writes every byte as \xx, for binary values in filters.
func escapeBytes(b []byte) string {
	var sb strings.Builder
	for _, c := range b {
		fmt.Fprintf(&sb, "\\%02x", c)
	}
	return sb.String()
}

// fileTime converts AD's Integer8 FILETIME (100 ns ticks since 1601-01-01
// UTC). ok is false for 0 and the maximum, which both mean "never".
func fileTime(v string) (t time.Time, ok bool, err error) {
	n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
	if err != nil {
		return time.Time{}, false, fmt.Errorf("not an Integer8: %q", v)
	}
	if n <= 0 || n == 1<<63-1 {
		return time.Time{}, false, nil
	}
	const epochDiff = 116444736000000000 // 1601-01-01 to 1970-01-01 in ticks
	ticks := n - epochDiff
	return time.Unix(ticks/1e7, (ticks%1e7)*100).UTC(), true, nil
}

// adStatus reads an AD account's state: the ACCOUNTDISABLE bit and a past
// accountExpires make it Disabled (a leaver); a lockout or an expired
// password is Inactive, which is not. Attributes that cannot be read or
// parsed count as active, the direction that removes nobody.
func adStatus(e *goldap.Entry, now time.Time) directory.Status {
	if uac, err := strconv.ParseInt(val(e, attrUserAccountControl), 10, 64); err == nil && uac&uacAccountDisable != 0 {
		return directory.Disabled
	}
	if v := val(e, attrAccountExpires); v != "" {
		if t, ok, err := fileTime(v); err == nil && ok && !now.Before(t) {
			return directory.Disabled
		}
	}
	if c, err := strconv.ParseInt(val(e, attrUACComputed), 10, 64); err == nil && c&(uacLockout|uacPasswordExpired) != 0 {
		return directory.Inactive
	}
	return directory.Active
}

// adToken is an AD delta token: the DC's invocationId and its
// highestCommittedUSN when the token was made (§6.5). USNs belong to one
// DC database; a restore or another DC gives another invocationId.
type adToken struct {
	scope      string
	invocation string
	usn        int64
}

const adTokenPrefix = "ad1"

func (t adToken) String() string {
	return fmt.Sprintf("%s:%s:%s:%d", adTokenPrefix, t.scope, t.invocation, t.usn)
}

func parseADToken(s string) (adToken, error) {
	p := strings.Split(s, ":")
	if len(p) != 4 || p[0] != adTokenPrefix {
		return adToken{}, errors.New("not an Active Directory delta token")
	}
	usn, err := strconv.ParseInt(p[3], 10, 64)
	if err != nil || usn < 0 {
		return adToken{}, errors.New("bad USN in delta token")
	}
	return adToken{scope: p[1], invocation: p[2], usn: usn}, nil
}

// adState reads the DC's current invocationId and highestCommittedUSN,
// and the domain's naming context (where tombstones live).
func (s *session) adState(ctx context.Context) (tok adToken, defaultNC string, err error) {
	root, err := s.rootDSE(ctx, "highestCommittedUSN", "dsServiceName", "defaultNamingContext")
	if err != nil {
		return adToken{}, "", err
	}
	usn, err := strconv.ParseInt(val(root, "highestCommittedUSN"), 10, 64)
	if err != nil {
		return adToken{}, "", fmt.Errorf("ldap %s: root DSE has no highestCommittedUSN (is this Active Directory?)", s.c.name)
	}
	svc := val(root, "dsServiceName")
	if svc == "" {
		return adToken{}, "", fmt.Errorf("ldap %s: root DSE has no dsServiceName", s.c.name)
	}
	req := goldap.NewSearchRequest(svc, goldap.ScopeBaseObject, goldap.NeverDerefAliases, 1, 0, false,
		"(objectClass=*)", []string{"invocationId"}, nil)
	res, err := s.search(ctx, "rootdse", req)
	if err != nil {
		return adToken{}, "", fmt.Errorf("ldap %s: read invocationId of %s: %w", s.c.name, svc, err)
	}
	if len(res.Entries) != 1 {
		return adToken{}, "", fmt.Errorf("ldap %s: read invocationId of %s: no entry", s.c.name, svc)
	}
	inv, err := guidString(rawVal(res.Entries[0], "invocationId"))
	if err != nil {
		return adToken{}, "", fmt.Errorf("ldap %s: invocationId of %s: %w", s.c.name, svc, err)
	}
	return adToken{scope: s.c.scope, invocation: inv, usn: usn}, val(root, "defaultNamingContext"), nil
}

// adDelta lists the people whose entries changed since the token's USN,
// and the deleted ones (tombstones, read with the Show Deleted control,
// which needs the right to list deleted objects: without it AD shows
// none, and deletions are found by full pulls only).
func (c *Connector) adDelta(ctx context.Context, token string, fn func(directory.Page) error) (string, error) {
	var prev adToken
	if token != "" {
		t, err := parseADToken(token)
		if err != nil {
			return "", fmt.Errorf("ldap %s: %w: %v", c.name, directory.ErrDeltaExpired, err)
		}
		if t.scope != c.scope {
			return "", fmt.Errorf("ldap %s: %w: the scope changed since the token was made", c.name, directory.ErrDeltaExpired)
		}
		prev = t
	}
	var next string
	d := newDeliveries(fn)
	err := c.run(ctx, func(s *session) error {
		cur, nc, err := s.adState(ctx)
		if err != nil {
			return err
		}
		// Read before searching: what changes during the search is
		// listed again next time rather than lost.
		next = cur.String()
		if token == "" {
			return nil
		}
		if cur.invocation != prev.invocation {
			return fmt.Errorf("ldap %s: %w: the domain controller's invocationId changed (another DC, or a restore)", c.name, directory.ErrDeltaExpired)
		}
		if cur.usn < prev.usn {
			return fmt.Errorf("ldap %s: %w: highestCommittedUSN went back from %d to %d", c.name, directory.ErrDeltaExpired, prev.usn, cur.usn)
		}
		since := "(uSNChanged>=" + strconv.FormatInt(prev.usn+1, 10) + ")"
		if err := c.listPeople(ctx, s, d, "(&"+c.serverScope+since+")", nil); err != nil {
			return err
		}
		if nc == "" {
			return nil
		}
		req := goldap.NewSearchRequest(nc, goldap.ScopeWholeSubtree, goldap.NeverDerefAliases, 0, 0, false,
			"(&(isDeleted=TRUE)(objectClass=user)(!(objectClass=computer))"+since+")",
			[]string{attrObjectGUID, "sAMAccountName", c.cfg.SubjectAttribute, "lastKnownParent"},
			[]goldap.Control{goldap.NewControlMicrosoftShowDeleted()})
		return s.paged(ctx, "users", req, func(es []*goldap.Entry) error {
			var page directory.Page
			for _, e := range es {
				p, err := c.tombstone(e)
				if err != nil {
					return err
				}
				page.People = append(page.People, p)
			}
			return d.deliver("deleted", page)
		})
	})
	if err != nil {
		return "", err
	}
	return next, nil
}

// tombstone reads a deleted user. Tombstones keep objectGUID and
// sAMAccountName; most other attributes (userPrincipalName, mail) are
// gone, so the subject is empty unless it is the GUID.
func (c *Connector) tombstone(e *goldap.Entry) (directory.Person, error) {
	id, err := guidString(rawVal(e, attrObjectGUID))
	if err != nil {
		return directory.Person{}, fmt.Errorf("ldap %s: deleted entry %s: %w", c.name, e.DN, err)
	}
	return directory.Person{ID: id, Subject: c.subject(e, id), Username: val(e, "sAMAccountName"),
		Status: directory.Deleted}, nil
}
