package saml

import (
	"bytes"
	"context"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
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
// providers.ErrRefused, say their providers.Reason and keep crewjam's
// hidden cause.
func (p *Provider) Finish(ctx context.Context, r *http.Request, state []byte) (*providers.Result, error) {
	if r.Method != http.MethodPost {
		return nil, p.refuse(providers.ReasonOther, "the ACS accepts only POST, got %s", r.Method)
	}
	// The body comes first: a browser that drops the connection in the
	// middle of the POST also ends the request's context, and either is
	// the client's doing, never a failure of the IdP.
	if err := p.parseForm(r); err != nil {
		if mbe, ok := errors.AsType[*http.MaxBytesError](err); ok {
			return nil, p.refuse(providers.ReasonOther, "request body larger than %d bytes (raise max_response_bytes, now %d, if the IdP's responses are that large)", mbe.Limit, p.cfg.MaxResponseBytes)
		}
		return nil, p.refuse(providers.ReasonOther, "request body cut short or unreadable (the browser went away?): %w", err)
	}
	if err := ctx.Err(); err != nil {
		return nil, p.refuse(providers.ReasonOther, "request cancelled before it was checked (the browser went away?): %w", err)
	}

	var flow *flowState
	if state != nil {
		flow = &flowState{}
		if err := json.Unmarshal(state, flow); err != nil || flow.RequestID == "" {
			return nil, p.refuse(providers.ReasonState, "flow state is not a SAML login state")
		}
		// usher found the flow by RelayState; check it is the one this
		// request was issued for.
		if got := r.PostForm.Get("RelayState"); got != flow.FlowID {
			return nil, p.refuse(providers.ReasonState, "RelayState does not match the login flow")
		}
	} else if !p.cfg.AllowIdPInitiated {
		return nil, p.refuse(providers.ReasonState, "unsolicited (IdP-initiated) response, and allow_idp_initiated is off")
	}

	raw, err := p.decodeResponse(r.PostForm.Get("SAMLResponse"))
	if err != nil {
		return nil, err
	}
	status, err := p.inspectResponse(raw)
	if err != nil {
		return nil, err
	}

	cur, err := p.current()
	if err != nil {
		return nil, err
	}
	sp := *cur.sp
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
		ire, ok := errors.AsType[*saml.InvalidResponseError](err)
		if !ok {
			return nil, fmt.Errorf("saml %s: parse response: %w", p.id, err)
		}
		cause := ire.PrivateErr
		if _, bad := errors.AsType[saml.ErrBadStatus](cause); bad {
			// Only now, with its signature (if any), Destination, Issuer
			// and InResponseTo checked, is the status the IdP's word
			// about this login.
			return nil, p.refuse(providers.ReasonIdPError, "IdP answered %s", status)
		}
		if !status.success() {
			return nil, p.refuse(reasonOf(cause), "%w (the response carries the error status %s)", cause, status)
		}
		if cause != nil && cause.Error() == "signature element not present" {
			// crewjam's words for an unsigned assertion in an unsigned
			// Response (here: inside an EncryptedAssertion).
			return nil, p.refuse(providers.ReasonSignature, "neither the Response nor the Assertion is signed: %w", cause)
		}
		return nil, p.refuse(reasonOf(cause), "%w", cause)
	}
	if err := p.checkAssertion(assertion); err != nil {
		return nil, err
	}

	id, err := p.identity(assertion)
	if err != nil {
		return nil, p.refuse(providers.ReasonOther, "%w", err)
	}

	seen, err := p.replay.Seen(ctx, "saml:"+p.id+":"+assertion.ID, p.replayExpiry(assertion))
	if err != nil {
		return nil, fmt.Errorf("saml %s: replay cache: %w", p.id, err)
	}
	if seen {
		return nil, p.refuse(providers.ReasonReplay, "assertion %q was already used", assertion.ID)
	}

	res := &providers.Result{Identity: *id}
	if flow == nil {
		// The landing page is configuration, never RelayState.
		res.ReturnTo = p.cfg.IdPInitiatedPath
	}
	return res, nil
}

func (p *Provider) refuse(reason providers.Reason, format string, args ...any) error {
	return providers.Refused(reason, "saml %s: "+format, append([]any{p.id}, args...)...)
}

// reasonOf sorts the cause crewjam/saml gives for refusing a message by
// the error kinds it attaches.
func reasonOf(cause error) providers.Reason {
	switch {
	case cause == nil:
		return providers.ReasonOther
	case errors.Is(cause, saml.ErrInvalidSignature):
		return providers.ReasonSignature
	case errors.Is(cause, saml.ErrExpired), errors.Is(cause, saml.ErrNotYetValid):
		return providers.ReasonExpired
	case errors.Is(cause, saml.ErrAudienceMismatch), errors.Is(cause, saml.ErrDestinationMismatch),
		errors.Is(cause, saml.ErrIssuerMismatch):
		return providers.ReasonAudience
	case errors.Is(cause, saml.ErrRequestIDMismatch):
		return providers.ReasonState
	case errors.Is(cause, rsa.ErrVerification), strings.HasPrefix(cause.Error(), "cannot validate signature"):
		// crewjam (v0.6.3) does not classify a failed query-string
		// (HTTP-Redirect, SimpleSign) signature; these are its words.
		return providers.ReasonSignature
	}
	if _, ok := errors.AsType[saml.ErrBadStatus](cause); ok {
		return providers.ReasonIdPError
	}
	return providers.ReasonOther
}

// decodeResponse base64-decodes SAMLResponse within max_response_bytes.
func (p *Provider) decodeResponse(enc string) ([]byte, error) {
	if enc == "" {
		return nil, p.refuse(providers.ReasonOther, "no SAMLResponse in the request (artifact and other bindings are not supported)")
	}
	if int64(base64.StdEncoding.DecodedLen(len(enc))) > p.cfg.MaxResponseBytes+3 {
		return nil, p.refuse(providers.ReasonOther, "SAMLResponse larger than %d bytes", p.cfg.MaxResponseBytes)
	}
	raw, err := base64.StdEncoding.DecodeString(enc)
	if err != nil {
		return nil, p.refuse(providers.ReasonOther, "SAMLResponse is not base64: %w", err)
	}
	if int64(len(raw)) > p.cfg.MaxResponseBytes {
		return nil, p.refuse(providers.ReasonOther, "SAMLResponse larger than %d bytes", p.cfg.MaxResponseBytes)
	}
	return raw, nil
}

// statusSuccess is the top-level status of a successful response.
const statusSuccess = "urn:oasis:names:tc:SAML:2.0:status:Success"

// samlStatus is a Response's Status as the IdP wrote it: the top-level
// code, the second-level one (NoPassive, AuthnFailed, RequestDenied, ...)
// and the message.
type samlStatus struct {
	Code, SubCode, Message string
}

func (s samlStatus) success() bool { return s.Code == statusSuccess }

// String names the status briefly: "Responder/NoPassive: the user is not
// signed in".
func (s samlStatus) String() string {
	short := func(urn string) string {
		if i := strings.LastIndexByte(urn, ':'); i >= 0 {
			return urn[i+1:]
		}
		return urn
	}
	out := short(s.Code)
	if out == "" {
		out = "(no status)"
	}
	if s.SubCode != "" {
		out += "/" + short(s.SubCode)
	}
	if m := strings.TrimSpace(s.Message); m != "" {
		if len(m) > 200 {
			m = m[:200] + "..."
		}
		out += fmt.Sprintf(": %q", m)
	}
	return out
}

// inspectResponse checks the shape of a response before crewjam parses it
// and reads its status: no DTD, a Response root and, for a successful one,
// a Destination, a signature and exactly one Assertion or
// EncryptedAssertion in the whole document. crewjam returns the first of
// several assertions when the Response is signed; usher accepts one and
// only one, so wrapped or smuggled copies are refused outright. A response
// with an error status usually carries no assertion and often no
// signature; crewjam still checks what it has before its status is
// believed.
func (p *Provider) inspectResponse(raw []byte) (samlStatus, error) {
	var st samlStatus
	if err := checkNoDTD(raw); err != nil {
		return st, p.refuse(providers.ReasonOther, "%w", err)
	}
	d := xml.NewDecoder(bytes.NewReader(raw))
	var path []xml.Name // open elements
	dest, assertions, signatures, encrypted := "", 0, 0, false
	inMessage := false
	for {
		tok, err := d.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			return st, p.refuse(providers.ReasonOther, "malformed XML: %w", err)
		}
		switch t := tok.(type) {
		case xml.Directive:
			return st, p.refuse(providers.ReasonOther, "XML with a DTD or entity declaration is not accepted")
		case xml.StartElement:
			if len(path) == 0 {
				if t.Name.Space != nsProtocol || t.Name.Local != "Response" {
					return st, p.refuse(providers.ReasonOther, "root element is {%s}%s, not a SAML Response", t.Name.Space, t.Name.Local)
				}
				dest = attr(t, "Destination")
			}
			// Response/Status/StatusCode[/StatusCode] and
			// Response/Status/StatusMessage.
			if t.Name.Space == nsProtocol && len(path) >= 2 && path[1] == (xml.Name{Space: nsProtocol, Local: "Status"}) {
				switch {
				case len(path) == 2 && t.Name.Local == "StatusCode":
					st.Code = attr(t, "Value")
				case len(path) == 3 && t.Name.Local == "StatusCode" && path[2].Local == "StatusCode":
					st.SubCode = attr(t, "Value")
				case len(path) == 2 && t.Name.Local == "StatusMessage":
					inMessage = true
				}
			}
			if t.Name.Space == nsAssertion && (t.Name.Local == "Assertion" || t.Name.Local == "EncryptedAssertion") {
				assertions++
				encrypted = encrypted || t.Name.Local == "EncryptedAssertion"
			}
			if t.Name.Space == nsDSig && t.Name.Local == "Signature" {
				signatures++
			}
			path = append(path, t.Name)
		case xml.CharData:
			if inMessage && len(st.Message) < 1024 {
				st.Message += string(t)
			}
		case xml.EndElement:
			inMessage = false
			path = path[:len(path)-1]
		}
	}
	if !st.success() {
		// An error status: an IdP that does say why sends nothing
		// to log in with.
		if assertions > 1 {
			return st, p.refuse(providers.ReasonOther, "response with status %s holds %d assertions", st, assertions)
		}
		return st, nil
	}
	if dest == "" {
		return st, p.refuse(providers.ReasonOther, "response has no Destination")
	}
	if assertions != 1 {
		return st, p.refuse(providers.ReasonOther, "response must hold exactly one Assertion or EncryptedAssertion, found %d", assertions)
	}
	if signatures == 0 && !encrypted {
		return st, p.refuse(providers.ReasonSignature, "neither the Response nor the Assertion is signed")
	}
	return st, nil
}

// attr returns the value of an unqualified attribute of el.
func attr(el xml.StartElement, name string) string {
	for _, a := range el.Attr {
		if a.Name.Space == "" && a.Name.Local == name {
			return a.Value
		}
	}
	return ""
}

// checkAssertion applies what crewjam does not, or not as configured.
func (p *Provider) checkAssertion(a *saml.Assertion) error {
	// crewjam accepts an unsigned assertion in a signed Response; usher
	// only when told to. A Signature that is present has been verified.
	if a.Signature == nil && !p.cfg.AllowUnsignedAssertions {
		return p.refuse(providers.ReasonSignature, "assertion is not signed (only the Response is), and allow_unsigned_assertions is off")
	}

	// crewjam allows its own fixed skew (3m); apply the configured one.
	// A time within exactly skew of the limit is accepted.
	now, skew := p.now(), p.cfg.ClockSkew
	expired := func(format string, args ...any) error {
		return p.refuse(providers.ReasonExpired, format, args...)
	}
	if a.IssueInstant.After(now.Add(skew)) {
		return expired("assertion issued in the future (%s, now %s, skew %s)", a.IssueInstant.Format(time.RFC3339), now.Format(time.RFC3339), skew)
	}
	if c := a.Conditions; c != nil {
		if !c.NotBefore.IsZero() && c.NotBefore.After(now.Add(skew)) {
			return expired("assertion not valid before %s (now %s, skew %s)", c.NotBefore.Format(time.RFC3339), now.Format(time.RFC3339), skew)
		}
		if !c.NotOnOrAfter.IsZero() && now.After(c.NotOnOrAfter.Add(skew)) {
			return expired("assertion expired at %s (now %s, skew %s)", c.NotOnOrAfter.Format(time.RFC3339), now.Format(time.RFC3339), skew)
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
			confirmErr = expired("SubjectConfirmationData not valid before %s (now %s, skew %s)", d.NotBefore.Format(time.RFC3339), now.Format(time.RFC3339), skew)
		case now.After(d.NotOnOrAfter.Add(skew)):
			confirmErr = expired("SubjectConfirmationData expired at %s (now %s, skew %s)", d.NotOnOrAfter.Format(time.RFC3339), now.Format(time.RFC3339), skew)
		default:
			confirmed = true
		}
	}
	if !confirmed {
		if confirmErr == nil {
			confirmErr = p.refuse(providers.ReasonAudience, "no bearer SubjectConfirmation for this ACS")
		}
		return confirmErr
	}

	if p.nameIDFormat != "" {
		got := ""
		if a.Subject.NameID != nil {
			got = a.Subject.NameID.Format
		}
		if got != p.nameIDFormat && !(got == "" && p.nameIDFormat == string(saml.UnspecifiedNameIDFormat)) {
			return p.refuse(providers.ReasonOther, "NameID format is %q, want %q", got, p.nameIDFormat)
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
