package saml

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/crewjam/saml"

	"github.com/usherhq/usher/providers"
)

const (
	nsAssertion = "urn:oasis:names:tc:SAML:2.0:assertion"
	nsProtocol  = "urn:oasis:names:tc:SAML:2.0:protocol"
	nsDSig      = "http://www.w3.org/2000/09/xmldsig#"
	bearer      = "urn:oasis:names:tc:SAML:2.0:cm:bearer"
)

// Finish is the ACS: it verifies the posted SAMLResponse and returns the
// identity it vouches for. crewjam/saml checks the signatures (reading
// everything from what they cover), Destination, Issuer, Status,
// InResponseTo, Audience, Recipient and decrypts; Finish adds the checks
// crewjam leaves out or makes too loose for usher: body and XML bounds, no
// DTD, exactly one assertion, a required Destination, a signed assertion
// unless allowed otherwise, the configured clock skew, the NameID format,
// RelayState against the flow and replay. Refusals wrap
// providers.ErrRefused and keep crewjam's hidden cause.
func (p *Provider) Finish(ctx context.Context, r *http.Request, state []byte) (*providers.Result, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if r.Method != http.MethodPost {
		return nil, p.refuse("the ACS accepts only POST, got %s", r.Method)
	}
	if err := p.parseForm(r); err != nil {
		if mbe, ok := errors.AsType[*http.MaxBytesError](err); ok {
			return nil, p.refuse("request body larger than %d bytes", mbe.Limit)
		}
		return nil, p.refuse("unreadable form: %w", err)
	}

	var flow *flowState
	if state != nil {
		flow = &flowState{}
		if err := json.Unmarshal(state, flow); err != nil || flow.RequestID == "" {
			return nil, p.refuse("flow state is not a SAML login state")
		}
		// usher found the flow by RelayState; check it is the one this
		// request was issued for.
		if got := r.PostForm.Get("RelayState"); got != flow.FlowID {
			return nil, p.refuse("RelayState does not match the login flow")
		}
	} else if !p.cfg.AllowIdPInitiated {
		return nil, p.refuse("unsolicited (IdP-initiated) response, and allow_idp_initiated is off")
	}

	raw, err := p.decodeResponse(r.PostForm.Get("SAMLResponse"))
	if err != nil {
		return nil, err
	}
	if err := inspectResponse(raw); err != nil {
		return nil, p.refuse("%w", err)
	}

	sp := *p.sp.Load()
	var requestIDs []string
	if flow != nil {
		requestIDs = []string{flow.RequestID}
	} else {
		// With no request ID to match, crewjam then requires
		// InResponseTo to be absent from the Response and the
		// SubjectConfirmationData.
		sp.AllowIDPInitiated = true
	}
	assertion, err := sp.ParseXMLResponse(raw, requestIDs, p.acsURL)
	if err != nil {
		if ire, ok := errors.AsType[*saml.InvalidResponseError](err); ok {
			if ire.PrivateErr != nil && ire.PrivateErr.Error() == "signature element not present" {
				// crewjam's words for an unsigned assertion in an
				// unsigned Response (here: inside an EncryptedAssertion).
				return nil, p.refuse("neither the Response nor the Assertion is signed: %w", ire.PrivateErr)
			}
			return nil, p.refuse("%w", ire.PrivateErr)
		}
		return nil, fmt.Errorf("saml %s: parse response: %w", p.id, err)
	}
	if err := p.checkAssertion(assertion); err != nil {
		return nil, p.refuse("%w", err)
	}

	id, err := p.identity(assertion)
	if err != nil {
		return nil, p.refuse("%w", err)
	}

	seen, err := p.replay.Seen(ctx, "saml:"+p.id+":"+assertion.ID, p.replayExpiry(assertion))
	if err != nil {
		return nil, fmt.Errorf("saml %s: replay cache: %w", p.id, err)
	}
	if seen {
		return nil, p.refuse("assertion %q was already used", assertion.ID)
	}

	res := &providers.Result{Identity: *id}
	if flow == nil {
		// The landing page is configuration, never RelayState.
		res.ReturnTo = p.cfg.IdPInitiatedPath
	}
	return res, nil
}

func (p *Provider) refuse(format string, args ...any) error {
	return providers.Refused("saml %s: "+format, append([]any{p.id}, args...)...)
}

// decodeResponse base64-decodes SAMLResponse within max_response_bytes.
func (p *Provider) decodeResponse(enc string) ([]byte, error) {
	if enc == "" {
		return nil, p.refuse("no SAMLResponse in the request (artifact and other bindings are not supported)")
	}
	if int64(base64.StdEncoding.DecodedLen(len(enc))) > p.cfg.MaxResponseBytes+3 {
		return nil, p.refuse("SAMLResponse larger than %d bytes", p.cfg.MaxResponseBytes)
	}
	raw, err := base64.StdEncoding.DecodeString(enc)
	if err != nil {
		return nil, p.refuse("SAMLResponse is not base64: %w", err)
	}
	if int64(len(raw)) > p.cfg.MaxResponseBytes {
		return nil, p.refuse("SAMLResponse larger than %d bytes", p.cfg.MaxResponseBytes)
	}
	return raw, nil
}

// inspectResponse checks the shape of a response before crewjam parses it:
// no DTD, a Response root with a Destination, and exactly one Assertion or
// EncryptedAssertion in the whole document. crewjam returns the first of
// several assertions when the Response is signed; usher accepts one and
// only one, so wrapped or smuggled copies are refused outright.
func inspectResponse(raw []byte) error {
	if err := checkNoDTD(raw); err != nil {
		return err
	}
	d := xml.NewDecoder(bytes.NewReader(raw))
	depth, assertions, signatures, encrypted := 0, 0, 0, false
	for {
		tok, err := d.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("malformed XML: %w", err)
		}
		switch t := tok.(type) {
		case xml.Directive:
			return errors.New("XML with a DTD or entity declaration is not accepted")
		case xml.StartElement:
			if depth == 0 {
				if t.Name.Space != nsProtocol || t.Name.Local != "Response" {
					return fmt.Errorf("root element is {%s}%s, not a SAML Response", t.Name.Space, t.Name.Local)
				}
				dest := ""
				for _, a := range t.Attr {
					if a.Name.Space == "" && a.Name.Local == "Destination" {
						dest = a.Value
					}
				}
				if dest == "" {
					return errors.New("response has no Destination")
				}
			}
			if t.Name.Space == nsAssertion && (t.Name.Local == "Assertion" || t.Name.Local == "EncryptedAssertion") {
				assertions++
				encrypted = encrypted || t.Name.Local == "EncryptedAssertion"
			}
			if t.Name.Space == nsDSig && t.Name.Local == "Signature" {
				signatures++
			}
			depth++
		case xml.EndElement:
			depth--
		}
	}
	if assertions != 1 {
		return fmt.Errorf("response must hold exactly one Assertion or EncryptedAssertion, found %d", assertions)
	}
	if signatures == 0 && !encrypted {
		return errors.New("neither the Response nor the Assertion is signed")
	}
	return nil
}

// checkAssertion applies what crewjam does not, or not as configured.
func (p *Provider) checkAssertion(a *saml.Assertion) error {
	// crewjam accepts an unsigned assertion in a signed Response; usher
	// only when told to. A Signature that is present has been verified.
	if a.Signature == nil && !p.cfg.AllowUnsignedAssertions {
		return errors.New("assertion is not signed (only the Response is), and allow_unsigned_assertions is off")
	}

	// crewjam allows its own fixed skew (3m); apply the configured one.
	// A time within exactly skew of the limit is accepted.
	now, skew := p.now(), p.cfg.ClockSkew
	if a.IssueInstant.After(now.Add(skew)) {
		return fmt.Errorf("assertion issued in the future (%s, now %s, skew %s)", a.IssueInstant.Format(time.RFC3339), now.Format(time.RFC3339), skew)
	}
	if c := a.Conditions; c != nil {
		if !c.NotBefore.IsZero() && c.NotBefore.After(now.Add(skew)) {
			return fmt.Errorf("assertion not valid before %s (now %s, skew %s)", c.NotBefore.Format(time.RFC3339), now.Format(time.RFC3339), skew)
		}
		if !c.NotOnOrAfter.IsZero() && now.After(c.NotOnOrAfter.Add(skew)) {
			return fmt.Errorf("assertion expired at %s (now %s, skew %s)", c.NotOnOrAfter.Format(time.RFC3339), now.Format(time.RFC3339), skew)
		}
	}
	var confirmErr error
	confirmed := false
	for _, sc := range a.Subject.SubjectConfirmations {
		d := sc.SubjectConfirmationData
		if sc.Method != bearer || d == nil || d.Recipient != p.acsURL.String() {
			continue
		}
		switch {
		case !d.NotBefore.IsZero() && d.NotBefore.After(now.Add(skew)):
			confirmErr = fmt.Errorf("SubjectConfirmationData not valid before %s (now %s, skew %s)", d.NotBefore.Format(time.RFC3339), now.Format(time.RFC3339), skew)
		case now.After(d.NotOnOrAfter.Add(skew)):
			confirmErr = fmt.Errorf("SubjectConfirmationData expired at %s (now %s, skew %s)", d.NotOnOrAfter.Format(time.RFC3339), now.Format(time.RFC3339), skew)
		default:
			confirmed = true
		}
	}
	if !confirmed {
		if confirmErr == nil {
			confirmErr = errors.New("no bearer SubjectConfirmation for this ACS")
		}
		return confirmErr
	}

	if p.nameIDFormat != "" {
		got := ""
		if a.Subject.NameID != nil {
			got = a.Subject.NameID.Format
		}
		if got != p.nameIDFormat && !(got == "" && p.nameIDFormat == string(saml.UnspecifiedNameIDFormat)) {
			return fmt.Errorf("NameID format is %q, want %q", got, p.nameIDFormat)
		}
	}
	return nil
}

// replayExpiry is how long an assertion ID must be remembered: until no
// check would accept the assertion any more.
func (p *Provider) replayExpiry(a *saml.Assertion) time.Time {
	until := a.IssueInstant.Add(saml.MaxIssueDelay)
	if a.Conditions != nil && a.Conditions.NotOnOrAfter.After(until) {
		until = a.Conditions.NotOnOrAfter
	}
	for _, sc := range a.Subject.SubjectConfirmations {
		if d := sc.SubjectConfirmationData; d != nil && d.NotOnOrAfter.After(until) {
			until = d.NotOnOrAfter
		}
	}
	return until.Add(p.cfg.ClockSkew)
}
