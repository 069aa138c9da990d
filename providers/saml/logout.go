package saml

import (
	"bytes"
	"compress/flate"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"time"

	"github.com/beevik/etree"
	"github.com/crewjam/saml"
	dsig "github.com/russellhaering/goxmldsig"

	"github.com/usherhq/usher/providers"
)

// LogoutURL returns a signed HTTP-Redirect LogoutRequest for id, or "" when
// the IdP metadata has no HTTP-Redirect SingleLogoutService. returnTo
// travels as RelayState only as a relative path on usher's own site; an
// absolute URL elsewhere is dropped.
func (p *Provider) LogoutURL(ctx context.Context, id providers.Identity, returnTo string) (string, error) {
	if err := ctx.Err(); err != nil {
		return "", err
	}
	// Metadata past its validUntil still names where the IdP ends
	// sessions; without any, usher's own session is gone all the same.
	l := p.md.Load()
	if l == nil {
		return "", nil
	}
	sp := l.sp
	dest := sp.GetSLOBindingLocation(saml.HTTPRedirectBinding)
	if dest == "" {
		return "", nil
	}
	h, err := decodeLogoutHint(id.LogoutHint)
	if err != nil {
		return "", fmt.Errorf("saml %s: %w", p.id, err)
	}
	if h.NameID == "" {
		return "", fmt.Errorf("saml %s: logout hint has no NameID", p.id)
	}
	var opts []saml.LogoutRequestOption
	if h.SessionIndex != "" {
		opts = append(opts, saml.WithSessionIndex(h.SessionIndex))
	}
	req, err := sp.MakeLogoutRequest(dest, h.NameID, opts...)
	if err != nil {
		return "", fmt.Errorf("saml %s: make LogoutRequest: %w", p.id, err)
	}
	if req.NameID != nil {
		// The NameID must match the one the IdP issued, format included.
		req.NameID.Format = h.Format
	}
	u, err := sp.RedirectLogoutRequestURL(req, p.relativeReturn(returnTo))
	if err != nil {
		return "", fmt.Errorf("saml %s: redirect LogoutRequest: %w", p.id, err)
	}
	return u.String(), nil
}

// relativeReturn turns returnTo into a path on usher's public origin, or ""
// when it points anywhere else.
func (p *Provider) relativeReturn(returnTo string) string {
	u, err := url.Parse(returnTo)
	if err != nil || returnTo == "" {
		return ""
	}
	if u.IsAbs() || u.Host != "" {
		if u.Scheme != p.acsURL.Scheme || u.Host != p.acsURL.Host {
			return ""
		}
	}
	rel := (&url.URL{Path: u.Path, RawPath: u.RawPath, RawQuery: u.RawQuery}).String()
	if !isLocalPath(rel) {
		return ""
	}
	return rel
}

// HandleLogoutResponse validates the LogoutResponse the IdP sends to
// /usher/saml/{id}/slo (HTTP-Redirect or HTTP-POST): signature (required:
// a query-string signature or an enveloped one), Destination, Issuer,
// issue time and a success status. Refusals wrap providers.ErrRefused.
// usher keeps no record of the LogoutRequests it sent, so InResponseTo is
// not matched; the response only confirms a logout usher already
// performed, and must never be the reason anything is cleared.
func (p *Provider) HandleLogoutResponse(r *http.Request) error {
	if r.Method == http.MethodPost {
		if err := p.parseForm(r); err != nil {
			return p.refuse(providers.ReasonOther, "logout response: unreadable form: %w", err)
		}
	}
	cur, err := p.current()
	if err != nil {
		return err
	}
	sp := cur.sp
	//lint:ignore SA1019 ParseLogoutResponse needs the LogoutRequest IDs, which usher does not keep.
	err = sp.ValidateLogoutResponseRequest(r) //nolint:staticcheck
	if err == nil {
		return nil
	}
	cause := err
	if ire, ok := errors.AsType[*saml.InvalidResponseError](err); ok {
		cause = ire.PrivateErr
	}
	if cause != nil && cause.Error() == "signature element not present" {
		return p.refuse(providers.ReasonSignature, "logout response is not signed")
	}
	return p.refuse(reasonOf(cause), "logout response: %w", cause)
}

// IsLogoutRequest reports whether r carries a SAMLRequest (a logout
// request from the IdP) rather than a SAMLResponse. A POST body is read
// within the provider's bound.
func (p *Provider) IsLogoutRequest(r *http.Request) bool {
	switch r.Method {
	case http.MethodGet:
		return r.URL.Query().Get("SAMLRequest") != ""
	case http.MethodPost:
		return p.parseForm(r) == nil && r.PostForm.Get("SAMLRequest") != ""
	}
	return false
}

// HandleLogoutRequest verifies a LogoutRequest the IdP sends to
// /usher/saml/{id}/slo, by HTTP-Redirect or HTTP-POST: crewjam checks the
// signature against the IdP metadata's certificates (required in either
// binding), Destination, Issuer, issue time, NotOnOrAfter and decrypts an
// EncryptedID; usher adds the configured clock skew and replay.
//
// Whose sessions end: with subject "nameid", the NameID's; with the
// subject taken from an attribute, which a LogoutRequest does not carry,
// only the subject of the browser's own session (current) when its NameID
// is the one named. usher ends every session of that person at this IdP,
// whatever SessionIndex the request names: ending more than asked is the
// safe direction.
//
// The answer is a signed LogoutResponse to the IdP's SingleLogoutService
// (its ResponseLocation when it has one), by the binding the request came
// with when the IdP offers it, else the other; Success only when the
// sessions were ended, Responder otherwise.
func (p *Provider) HandleLogoutRequest(ctx context.Context, r *http.Request, current *providers.Identity) (*providers.LogoutRequest, error) {
	binding := saml.HTTPRedirectBinding
	switch r.Method {
	case http.MethodGet:
	case http.MethodPost:
		binding = saml.HTTPPostBinding
		if err := p.parseForm(r); err != nil {
			return nil, p.refuse(providers.ReasonOther, "logout request: unreadable form: %w", err)
		}
	default:
		return nil, p.refuse(providers.ReasonOther, "logout request by %s; only GET and POST are SAML bindings", r.Method)
	}
	cur, err := p.current()
	if err != nil {
		return nil, err
	}
	req, err := cur.sp.ValidateLogoutRequest(r)
	if err != nil {
		cause := err
		if ire, ok := errors.AsType[*saml.InvalidResponseError](err); ok {
			cause = ire.PrivateErr
		}
		if cause != nil && cause.Error() == "signature element not present" {
			return nil, p.refuse(providers.ReasonSignature, "logout request is not signed")
		}
		return nil, p.refuse(reasonOf(cause), "logout request: %w", cause)
	}
	now, skew := p.now(), p.cfg.ClockSkew
	if req.IssueInstant.After(now.Add(skew)) {
		return nil, p.refuse(providers.ReasonExpired, "logout request issued in the future (%s, now %s, skew %s)",
			req.IssueInstant.Format(time.RFC3339), now.Format(time.RFC3339), skew)
	}
	if req.NameID == nil || req.NameID.Value == "" {
		return nil, p.refuse(providers.ReasonOther, "logout request names no NameID")
	}
	until := req.IssueInstant.Add(saml.MaxIssueDelay)
	if req.NotOnOrAfter != nil && req.NotOnOrAfter.After(until) {
		until = *req.NotOnOrAfter
	}
	seen, err := p.replay.Seen(ctx, "saml-logout:"+p.id+":"+req.ID, until.Add(skew))
	if err != nil {
		return nil, fmt.Errorf("saml %s: replay cache: %w", p.id, err)
	}
	if seen {
		return nil, p.refuse(providers.ReasonReplay, "logout request %q was already used", req.ID)
	}

	subjects := p.logoutSubjects(req.NameID, current)
	relay := r.URL.Query().Get("RelayState")
	if binding == saml.HTTPPostBinding {
		relay = r.PostForm.Get("RelayState")
	}
	id := req.ID
	return &providers.LogoutRequest{
		Subjects: subjects,
		Answer: func(ended bool) (*providers.Challenge, error) {
			return p.logoutResponse(cur.sp, id, binding, relay, ended && len(subjects) > 0)
		},
	}, nil
}

// logoutSubjects is whose sessions a LogoutRequest for nameID ends.
func (p *Provider) logoutSubjects(nameID *saml.NameID, current *providers.Identity) []string {
	var subjects []string
	if current != nil && current.IdP == p.id {
		h, err := decodeLogoutHint(current.LogoutHint)
		if err == nil && h.NameID == nameID.Value && (h.Format == "" || nameID.Format == "" || h.Format == nameID.Format) {
			subjects = append(subjects, current.Subject)
		}
	}
	if p.cfg.Subject == "nameid" && !slices.Contains(subjects, nameID.Value) {
		subjects = append(subjects, nameID.Value)
	}
	return subjects
}

// logoutResponse builds the signed LogoutResponse to the IdP's logout
// request inResponseTo.
func (p *Provider) logoutResponse(sp *saml.ServiceProvider, inResponseTo, binding, relay string, ok bool) (*providers.Challenge, error) {
	binding, dest := idpLogoutEndpoint(sp.IDPMetadata, binding)
	if dest == "" {
		return nil, fmt.Errorf("saml %s: the IdP metadata has no HTTP-Redirect or HTTP-POST SingleLogoutService to answer at", p.id)
	}
	status := saml.Status{StatusCode: saml.StatusCode{Value: saml.StatusSuccess}}
	if !ok {
		status = saml.Status{StatusCode: saml.StatusCode{Value: saml.StatusResponder}}
	}
	resp := &saml.LogoutResponse{
		ID:           p.newID(),
		InResponseTo: inResponseTo,
		Version:      "2.0",
		IssueInstant: p.now().UTC(),
		Destination:  dest,
		Issuer:       &saml.Issuer{Format: "urn:oasis:names:tc:SAML:2.0:nameid-format:entity", Value: p.entityID},
		Status:       status,
	}
	if binding == saml.HTTPPostBinding {
		if err := sp.SignLogoutResponse(resp); err != nil {
			return nil, fmt.Errorf("saml %s: sign LogoutResponse: %w", p.id, err)
		}
		doc := etree.NewDocument()
		doc.SetRoot(resp.Element())
		b, err := doc.WriteToBytes()
		if err != nil {
			return nil, fmt.Errorf("saml %s: serialise LogoutResponse: %w", p.id, err)
		}
		form := url.Values{"SAMLResponse": {base64.StdEncoding.EncodeToString(b)}}
		if relay != "" {
			form.Set("RelayState", relay)
		}
		return &providers.Challenge{URL: dest, Form: form}, nil
	}
	u, err := p.signedRedirect(dest, "SAMLResponse", resp.Element(), relay)
	if err != nil {
		return nil, fmt.Errorf("saml %s: LogoutResponse: %w", p.id, err)
	}
	return &providers.Challenge{URL: u}, nil
}

// idpLogoutEndpoint picks where to answer a logout request: the IdP's
// SingleLogoutService for the preferred binding, else for the other one;
// its ResponseLocation when set, else its Location.
func idpLogoutEndpoint(md *saml.EntityDescriptor, prefer string) (binding, location string) {
	other := saml.HTTPPostBinding
	if prefer == saml.HTTPPostBinding {
		other = saml.HTTPRedirectBinding
	}
	for _, b := range []string{prefer, other} {
		for _, d := range md.IDPSSODescriptors {
			for _, e := range d.SingleLogoutServices {
				if e.Binding != b {
					continue
				}
				if e.ResponseLocation != "" {
					return b, e.ResponseLocation
				}
				if e.Location != "" {
					return b, e.Location
				}
			}
		}
	}
	return "", ""
}

// signedRedirect is dest with el as an HTTP-Redirect binding message under
// param (deflated, base64), RelayState, and the query-string signature
// (RSA-SHA256) over them in the order the binding fixes
// (saml-bindings §3.4.4.1). Written here rather than taken from crewjam,
// whose helpers address only the Location of an endpoint.
func (p *Provider) signedRedirect(dest, param string, el *etree.Element, relay string) (string, error) {
	u, err := url.Parse(dest)
	if err != nil {
		return "", fmt.Errorf("destination %q: %w", dest, err)
	}
	doc := etree.NewDocument()
	doc.SetRoot(el)
	var buf bytes.Buffer
	fw, err := flate.NewWriter(&buf, flate.BestCompression)
	if err != nil {
		return "", err
	}
	if _, err := doc.WriteTo(fw); err != nil {
		return "", err
	}
	if err := fw.Close(); err != nil {
		return "", err
	}
	q := param + "=" + url.QueryEscape(base64.StdEncoding.EncodeToString(buf.Bytes()))
	if relay != "" {
		q += "&RelayState=" + url.QueryEscape(relay)
	}
	q += "&SigAlg=" + url.QueryEscape(dsig.RSASHA256SignatureMethod)
	digest := sha256.Sum256([]byte(q))
	sig, err := rsa.SignPKCS1v15(rand.Reader, p.key, crypto.SHA256, digest[:])
	if err != nil {
		return "", fmt.Errorf("sign: %w", err)
	}
	q += "&Signature=" + url.QueryEscape(base64.StdEncoding.EncodeToString(sig))
	if u.RawQuery != "" {
		u.RawQuery += "&" + q
	} else {
		u.RawQuery = q
	}
	return u.String(), nil
}
