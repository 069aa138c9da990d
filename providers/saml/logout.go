package saml

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"

	"github.com/crewjam/saml"

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
	sp := p.sp.Load()
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
// /usher/saml/{id}/slo (HTTP-Redirect or HTTP-POST): signature (required
// for HTTP-Redirect, checked whenever present), Destination, Issuer, issue
// time and a success status. Refusals wrap providers.ErrRefused. usher
// keeps no record of the LogoutRequests it sent, so InResponseTo is not
// matched; the response only ends a logout usher already performed.
func (p *Provider) HandleLogoutResponse(r *http.Request) error {
	if r.Method == http.MethodPost {
		if err := p.parseForm(r); err != nil {
			return p.refuse("logout response: unreadable form: %w", err)
		}
	}
	sp := p.sp.Load()
	//lint:ignore SA1019 ParseLogoutResponse needs the LogoutRequest IDs, which usher does not keep.
	err := sp.ValidateLogoutResponseRequest(r) //nolint:staticcheck
	if err == nil {
		return nil
	}
	if ire, ok := errors.AsType[*saml.InvalidResponseError](err); ok {
		return p.refuse("logout response: %w", ire.PrivateErr)
	}
	return p.refuse("logout response: %w", err)
}
