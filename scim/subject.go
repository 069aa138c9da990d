package scim

import (
	"fmt"
	"regexp"
	"strings"

	"github.com/elimity-com/scim/optional"
	"github.com/elimity-com/scim/schema"
)

// The subject attribute (IdPConfig.SubjectAttr) is what ties a pushed
// user to the person who logs in: its value must equal the login subject
// (OIDC sub or subject_claim, SAML subject). The forms:
//
//   - externalId (default): the IdP's own id of the person as it sends
//     it. Okta sends its user id (the OIDC sub); Entra sends mailNickname
//     unless the mapping is changed to objectId (then use OIDC
//     subject_claim: oid).
//   - userName: when the login subject is the user name (SAML NameID).
//   - id: the resource id usher assigns. No login carries it, so only for
//     people who never sign in through usher.
//   - urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:<attr>
//     with attr one of employeeNumber, costCenter, organization,
//     division, department.
//   - urn:<any other extension schema>:<attr>: a custom extension
//     attribute, such as Entra's objectId mapped to
//     urn:ietf:params:scim:schemas:extension:usher:2.0:User:objectId.
//     usher then serves that schema in /Schemas (one string attribute)
//     and stores it; data under extension schemas it does not serve is
//     dropped (see normalizeUser).
const (
	SubjectExternalID     = "externalId"
	SubjectUserName       = "userName"
	SubjectID             = "id"
	SubjectEmployeeNumber = enterpriseURN + ":employeeNumber"
)

// subjectRef is a parsed subject attribute.
type subjectRef struct {
	// attr is the canonical spelling: externalId, userName, id, or the
	// full path of an extension attribute.
	attr string
	// urn and name are set for an extension attribute; custom says it
	// is not the enterprise schema's.
	urn, name string
	custom    bool
}

// attrName is RFC 7643 §2.1's ATTRNAME, as the elimity library checks it
// (with a panic) when it builds a schema.
var attrName = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_$-]*$`)

// urnName is an RFC 8141 URN with a namespace identifier, without
// spaces, quotes or control characters.
var urnName = regexp.MustCompile(`^(?i:urn):[A-Za-z0-9][A-Za-z0-9-]{0,31}:[!-~]+$`)

// ParseSubjectAttr checks a subject attribute (the scim.subject setting)
// and returns its canonical spelling. The error says what is accepted.
func ParseSubjectAttr(a string) (string, error) {
	r, err := parseSubject(a)
	return r.attr, err
}

func parseSubject(a string) (subjectRef, error) {
	a = strings.TrimSpace(a)
	coreUser := schema.UserSchema + ":"
	if len(a) > len(coreUser) && strings.EqualFold(a[:len(coreUser)], coreUser) {
		a = a[len(coreUser):] // the core schema's own attributes, fully qualified
	}
	for _, ok := range []string{SubjectExternalID, SubjectUserName, SubjectID} {
		if strings.EqualFold(a, ok) {
			return subjectRef{attr: ok}, nil
		}
	}
	if a == "" {
		return subjectRef{attr: SubjectExternalID}, nil
	}
	i := strings.LastIndexByte(a, ':')
	if i < 0 || !strings.HasPrefix(strings.ToLower(a), "urn:") {
		return subjectRef{}, fmt.Errorf("subject attribute %q is not externalId, userName, id or an extension attribute urn:<schema>:<attribute>", a)
	}
	urn, name := a[:i], a[i+1:]
	if strings.EqualFold(urn, enterpriseURN) {
		for _, n := range enterpriseTextAttrs {
			if strings.EqualFold(name, n) {
				return subjectRef{attr: enterpriseURN + ":" + n, urn: enterpriseURN, name: n}, nil
			}
		}
		return subjectRef{}, fmt.Errorf("subject attribute %q: the enterprise extension's string attributes are %s", a, strings.Join(enterpriseTextAttrs, ", "))
	}
	switch {
	case !attrName.MatchString(name):
		return subjectRef{}, fmt.Errorf("subject attribute %q: %q is not an attribute name (a letter, then letters, digits, _, $ or -)", a, name)
	case !urnName.MatchString(urn):
		return subjectRef{}, fmt.Errorf("subject attribute %q: %q is not a schema URN (urn:<namespace>:<name>)", a, urn)
	case strings.HasPrefix(strings.ToLower(urn), "urn:ietf:params:scim:schemas:core:"),
		strings.HasPrefix(strings.ToLower(urn), "urn:ietf:params:scim:api:"):
		return subjectRef{}, fmt.Errorf("subject attribute %q: %s is not a user extension schema", a, urn)
	}
	return subjectRef{attr: urn + ":" + name, urn: urn, name: name, custom: true}, nil
}

// extSchema is a custom extension schema an IdP may push: the schema of
// its subject attribute, with that one string attribute.
type extSchema struct {
	urn   string
	attrs []string
	res   schema.Schema
}

func customExtension(ref subjectRef) extSchema {
	return extSchema{
		urn:   ref.urn,
		attrs: []string{ref.name},
		res: schema.Schema{
			ID:          ref.urn,
			Name:        optional.NewString("Subject"),
			Description: optional.NewString("The attribute usher takes the login subject from (scim.subject)."),
			Attributes: schema.Attributes{schema.SimpleCoreAttribute(schema.SimpleStringParams(schema.StringParams{
				Name:        ref.name,
				Description: optional.NewString("Equals the person's login subject."),
				CaseExact:   true,
			}))},
		},
	}
}

// extension returns the IdP's custom extension schema named urn (any
// case), or nil.
func (d *idp) extension(urn string) *extSchema {
	for i := range d.exts {
		if strings.EqualFold(d.exts[i].urn, urn) {
			return &d.exts[i]
		}
	}
	return nil
}

// subjectOf reads the configured subject attribute.
func subjectOf(d *idp, a attrs, id string) string {
	switch ref := d.subject; {
	case ref.attr == SubjectUserName:
		return a.str("userName")
	case ref.attr == SubjectID:
		return id
	case ref.urn != "":
		m, _ := a[ref.urn].(map[string]any)
		s, _ := m[ref.name].(string)
		return s
	}
	return a.str("externalId")
}

// missingSubject is the refusal of a new user without the subject
// attribute: it names the attribute and the setting, so the admin who
// reads it in the IdP's provisioning log knows what to change where.
func missingSubject(d *idp) error {
	return invalidValue("%s is required: usher ties a pushed user to the person who signs in by it "+
		"(scim.subject of IdP %s is %s), so it must equal their login subject; "+
		"map it in the IdP, or set scim.subject to the attribute that holds the subject",
		d.subject.attr, d.ID, d.subject.attr)
}
