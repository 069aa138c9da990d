package saml

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/crewjam/saml"

	"github.com/usherhq/usher/providers"
)

// Claim names this provider adds beside the attributes.
const (
	ClaimNameID       = "nameid"
	ClaimNameIDFormat = "nameid_format"
	ClaimSessionIndex = "session_index"
)

// identity builds the Identity from a verified assertion: every attribute
// under its Name and its FriendlyName, then nameid, nameid_format and
// session_index (which an attribute cannot override).
func (p *Provider) identity(a *saml.Assertion) (*providers.Identity, error) {
	claims := map[string][]string{}
	add := func(k string, vs []string) {
		if k != "" {
			claims[k] = append(claims[k], vs...)
		}
	}
	for _, st := range a.AttributeStatements {
		for _, attr := range st.Attributes {
			vs := make([]string, 0, len(attr.Values))
			for _, v := range attr.Values {
				switch {
				case v.Nil:
				case v.NameID != nil:
					vs = append(vs, v.NameID.Value)
				default:
					vs = append(vs, v.Value)
				}
			}
			add(attr.Name, vs)
			if attr.FriendlyName != attr.Name {
				add(attr.FriendlyName, vs)
			}
		}
	}
	var nameID saml.NameID
	if a.Subject != nil && a.Subject.NameID != nil {
		nameID = *a.Subject.NameID
	}
	sessionIndex := ""
	if len(a.AuthnStatements) > 0 {
		sessionIndex = a.AuthnStatements[0].SessionIndex
	}
	claims[ClaimNameID] = []string{nameID.Value}
	claims[ClaimNameIDFormat] = []string{nameID.Format}
	claims[ClaimSessionIndex] = []string{sessionIndex}

	var subject string
	if p.cfg.Subject == "nameid" {
		subject = nameID.Value
		if subject == "" {
			return nil, errors.New("assertion has no NameID")
		}
	} else {
		vs := claims[p.cfg.Subject]
		if len(vs) == 0 || vs[0] == "" {
			return nil, fmt.Errorf("assertion has no attribute %q for the subject", p.cfg.Subject)
		}
		for _, v := range vs[1:] {
			if v != vs[0] {
				return nil, fmt.Errorf("attribute %q has several values; the subject must be one", p.cfg.Subject)
			}
		}
		subject = vs[0]
	}

	hint, err := encodeLogoutHint(logoutHint{NameID: nameID.Value, Format: nameID.Format, SessionIndex: sessionIndex})
	if err != nil {
		return nil, err
	}
	return &providers.Identity{IdP: p.id, Subject: subject, Claims: claims, LogoutHint: hint}, nil
}

// logoutHint is what a LogoutRequest needs. Encoded as a short JSON array,
// with well-known formats abbreviated, because it travels in the cookie.
type logoutHint struct {
	NameID, Format, SessionIndex string
}

func encodeLogoutHint(h logoutHint) (string, error) {
	f := h.Format
	for short, full := range nameIDFormats {
		if f == full {
			f = short
		}
	}
	b, err := json.Marshal([]string{h.NameID, f, h.SessionIndex})
	if err != nil {
		return "", fmt.Errorf("encode logout hint: %w", err)
	}
	return string(b), nil
}

func decodeLogoutHint(s string) (logoutHint, error) {
	var a []string
	if err := json.Unmarshal([]byte(s), &a); err != nil || len(a) != 3 {
		return logoutHint{}, errors.New("malformed SAML logout hint")
	}
	f := a[1]
	if full, ok := nameIDFormats[f]; ok {
		f = full
	}
	return logoutHint{NameID: a[0], Format: f, SessionIndex: a[2]}, nil
}
