package saml

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"

	"github.com/beevik/etree"
	"github.com/crewjam/saml"

	"github.com/usherhq/usher/providers"
)

// flowState is what Begin hands usher to keep in the flow cookie.
type flowState struct {
	RequestID string `json:"r"`
	FlowID    string `json:"f"`
}

// Begin builds an AuthnRequest and the way to send it: a redirect URL
// (binding "redirect", signed in the query string when sign_requests is
// set) or a form to POST (binding "post", with an enveloped signature).
// RelayState is flowID. loginHint is not sent: SAML has no portable way.
func (p *Provider) Begin(ctx context.Context, flowID, loginHint string) (*providers.Challenge, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	cur, err := p.current()
	if err != nil {
		return nil, err
	}
	sp := cur.sp
	binding := saml.HTTPRedirectBinding
	if p.cfg.Binding == "post" {
		binding = saml.HTTPPostBinding
	}
	dest := sp.GetSSOBindingLocation(binding)
	// Pass the redirect binding so crewjam does not sign yet: the ID is
	// replaced first, and signing covers it.
	req, err := sp.MakeAuthenticationRequest(dest, saml.HTTPRedirectBinding, saml.HTTPPostBinding)
	if err != nil {
		return nil, fmt.Errorf("saml %s: make AuthnRequest: %w", p.id, err)
	}
	req.ID = p.newID()
	state, err := json.Marshal(flowState{RequestID: req.ID, FlowID: flowID})
	if err != nil {
		return nil, fmt.Errorf("saml %s: encode state: %w", p.id, err)
	}

	if binding == saml.HTTPRedirectBinding {
		u, err := req.Redirect(flowID, sp)
		if err != nil {
			return nil, fmt.Errorf("saml %s: redirect AuthnRequest: %w", p.id, err)
		}
		return &providers.Challenge{URL: u.String(), State: state}, nil
	}

	if p.cfg.SignRequests {
		if err := sp.SignAuthnRequest(req); err != nil {
			return nil, fmt.Errorf("saml %s: sign AuthnRequest: %w", p.id, err)
		}
	}
	doc := etree.NewDocument()
	doc.SetRoot(req.Element())
	var buf bytes.Buffer
	if _, err := doc.WriteTo(&buf); err != nil {
		return nil, fmt.Errorf("saml %s: serialise AuthnRequest: %w", p.id, err)
	}
	return &providers.Challenge{
		URL: dest,
		Form: url.Values{
			"SAMLRequest": {base64.StdEncoding.EncodeToString(buf.Bytes())},
			"RelayState":  {flowID},
		},
		State: state,
	}, nil
}

// FlowID returns the RelayState of a callback: from the POST body (read
// with a bound) or, for other methods, from the query. It is an opaque
// value; nothing in this package ever turns it into a URL.
func (p *Provider) FlowID(r *http.Request) string {
	if r.Method == http.MethodPost {
		if err := p.parseForm(r); err != nil {
			return ""
		}
		return r.PostForm.Get("RelayState")
	}
	return r.URL.Query().Get("RelayState")
}

// MaxBodyBytes is the largest POST body accepted at the ACS and the SLO
// endpoint: the base64 of the largest response (max_response_bytes), which
// URL encoding may triple, plus room for RelayState and field names. The
// proxy bounds callback bodies with it (providers.BodyLimiter).
func (p *Provider) MaxBodyBytes() int64 {
	return int64(base64.StdEncoding.EncodedLen(int(p.cfg.MaxResponseBytes)))*3 + maxFormOverhead
}

// parseForm parses a POST body at most MaxBodyBytes long. It is idempotent,
// so FlowID and Finish may both call it. The bound allows for URL
// encoding, which can triple the base64 text.
func (p *Provider) parseForm(r *http.Request) error {
	if r.PostForm != nil {
		return nil
	}
	if r.Body != nil {
		r.Body = http.MaxBytesReader(nil, r.Body, p.MaxBodyBytes())
	}
	if err := r.ParseForm(); err != nil {
		// Make a second call fail the same way instead of seeing an
		// empty form.
		r.PostForm, r.Form = nil, nil
		r.Body = io.NopCloser(errReader{err})
		return err
	}
	return nil
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }
