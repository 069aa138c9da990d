package ldap

import (
	"fmt"
	"strings"
	"time"

	goldap "github.com/go-ldap/ldap/v3"

	"github.com/usherhq/usher/directory"
)

// attrEntryUUID is OpenLDAP's immutable ID (RFC 4530), operational: only
// returned when asked for by name.
const attrEntryUUID = "entryUUID"

// Profile attributes, the same in AD and inetOrgPerson.
const (
	attrMail        = "mail"
	attrDisplayName = "displayName"
	attrCN          = "cn"
	attrGivenName   = "givenName"
	attrSN          = "sn"
)

// val, vals and rawVal read attributes by name case-insensitively: servers
// answer with the schema's spelling (userPrincipalName), configurations
// may spell it otherwise.
func val(e *goldap.Entry, attr string) string    { return e.GetEqualFoldAttributeValue(attr) }
func vals(e *goldap.Entry, attr string) []string { return e.GetEqualFoldAttributeValues(attr) }
func rawVal(e *goldap.Entry, attr string) []byte { return e.GetEqualFoldRawAttributeValue(attr) }
func (c *Connector) idAttr() string {
	if c.ad {
		return attrObjectGUID
	}
	return attrEntryUUID
}

// entryID is an entry's immutable ID as a string. An entry without one
// fails the listing rather than drop out of it, where it would look like
// a leaver.
func (c *Connector) entryID(e *goldap.Entry) (string, error) {
	if c.ad {
		return guidString(rawVal(e, attrObjectGUID))
	}
	id := val(e, attrEntryUUID)
	if id == "" {
		return "", fmt.Errorf("no entryUUID (the bind account may not read it)")
	}
	return strings.ToLower(id), nil
}

// userAttrs are the attributes read for a person.
func (c *Connector) userAttrs() []string {
	attrs := []string{c.idAttr(), c.cfg.SubjectAttribute, c.cfg.UsernameAttribute,
		attrMail, attrDisplayName, attrCN, attrGivenName, attrSN}
	if c.ad {
		attrs = append(attrs, attrUserAccountControl, attrAccountExpires, attrUACComputed)
	} else {
		attrs = append(attrs, attrModifyTimestamp)
		if d := c.cfg.Disabled; d != nil {
			if d.Attribute != "" {
				attrs = append(attrs, d.Attribute)
			}
			if d.PPolicy {
				attrs = append(attrs, attrPwdAccountLockedTime)
			}
		}
	}
	return append(attrs, c.cfg.Attributes...)
}

// person builds a Person from a user entry and its groups (nesting
// included).
func (c *Connector) person(e *goldap.Entry, groups []group, now time.Time) (directory.Person, error) {
	id, err := c.entryID(e)
	if err != nil {
		return directory.Person{}, fmt.Errorf("ldap %s: person %s: %w: %w", c.name, e.DN, err, directory.ErrIncomplete)
	}
	p := directory.Person{
		ID:             id,
		Subject:        c.subject(e, id),
		Username:       val(e, c.cfg.UsernameAttribute),
		Email:          val(e, attrMail),
		DisplayName:    val(e, attrDisplayName),
		GivenName:      val(e, attrGivenName),
		FamilyName:     val(e, attrSN),
		GroupsComplete: true,
	}
	if p.DisplayName == "" {
		p.DisplayName = val(e, attrCN)
	}
	for _, g := range groups {
		p.Groups = append(p.Groups, g.name)
		p.GroupIDs = append(p.GroupIDs, g.id)
	}
	if c.ad {
		p.Status = adStatus(e, now)
	} else {
		p.Status = c.olStatus(e, groups)
	}
	for _, a := range c.cfg.Attributes {
		if v := vals(e, a); len(v) > 0 {
			if p.Attributes == nil {
				p.Attributes = map[string][]string{}
			}
			p.Attributes[a] = v
		}
	}
	return p, nil
}

// subject is the value of the subject attribute; objectGUID in its
// string form.
func (c *Connector) subject(e *goldap.Entry, id string) string {
	switch {
	case strings.EqualFold(c.cfg.SubjectAttribute, c.idAttr()):
		return id
	case strings.EqualFold(c.cfg.SubjectAttribute, attrObjectGUID):
		s, _ := guidString(rawVal(e, attrObjectGUID))
		return s
	}
	return val(e, c.cfg.SubjectAttribute)
}

// subjectFilter is the equality filter for a subject, escaped; a GUID
// subject is matched by its raw bytes.
func (c *Connector) subjectFilter(subject string) (string, error) {
	if subject == "" {
		return "", fmt.Errorf("empty subject")
	}
	if strings.EqualFold(c.cfg.SubjectAttribute, attrObjectGUID) {
		b, err := guidBytes(subject)
		if err != nil {
			return "", err
		}
		return "(" + attrObjectGUID + "=" + escapeBytes(b) + ")", nil
	}
	if strings.EqualFold(c.cfg.SubjectAttribute, attrEntryUUID) && !isUUID(subject) {
		// slapd answers a malformed UUID with invalidAttributeSyntax,
		// not with "no such person".
		return "", fmt.Errorf("not a UUID: %q", subject)
	}
	return "(" + c.cfg.SubjectAttribute + "=" + goldap.EscapeFilter(subject) + ")", nil
}

// isUUID reports the 8-4-4-4-12 hex form.
func isUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i, r := range s {
		switch {
		case i == 8 || i == 13 || i == 18 || i == 23:
			if r != '-' {
				return false
			}
		case !strings.ContainsRune("0123456789abcdefABCDEF", r):
			return false
		}
	}
	return true
}
