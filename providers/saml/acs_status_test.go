package saml

import (
	"context"
	"encoding/base64"
	"encoding/xml"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/usherhq/usher/providers"
	"github.com/usherhq/usher/providers/saml/samltest"
)

// TestIdPErrorStatus: an IdP that cannot log the person in says why in
// its status (NoPassive, AuthnFailed, RequestDenied) and sends no
// assertion. That is refused as the IdP's error, naming the status, not as
// a malformed response; and only once crewjam has checked what the
// response carries (InResponseTo, Destination, Issuer, a signature if any).
func TestIdPErrorStatus(t *testing.T) {
	t.Parallel()
	const responder = "urn:oasis:names:tc:SAML:2.0:status:Responder"
	for _, tc := range []struct {
		name string
		mod  func(e *env, r *samltest.Response)
		want string
		why  providers.Reason
	}{
		{"NoPassive, unsigned", func(_ *env, r *samltest.Response) {
			r.Status, r.SubStatus = responder, "urn:oasis:names:tc:SAML:2.0:status:NoPassive"
			r.NoAssertion, r.SignAssertion = true, false
		}, "IdP answered Responder/NoPassive", providers.ReasonIdPError},
		{"AuthnFailed with a message, signed", func(_ *env, r *samltest.Response) {
			r.Status, r.SubStatus = responder, "urn:oasis:names:tc:SAML:2.0:status:AuthnFailed"
			r.StatusMessage = "The user account is disabled."
			r.NoAssertion, r.SignAssertion, r.SignResponse = true, false, true
		}, `IdP answered Responder/AuthnFailed: "The user account is disabled."`, providers.ReasonIdPError},
		{"RequestDenied without Destination", func(_ *env, r *samltest.Response) {
			r.Status, r.SubStatus = "urn:oasis:names:tc:SAML:2.0:status:Requester", "urn:oasis:names:tc:SAML:2.0:status:RequestDenied"
			r.NoAssertion, r.SignAssertion, r.Destination = true, false, ""
		}, "IdP answered Requester/RequestDenied", providers.ReasonIdPError},
		{"error status for another login", func(_ *env, r *samltest.Response) {
			r.Status, r.SubStatus = responder, "urn:oasis:names:tc:SAML:2.0:status:NoPassive"
			r.NoAssertion, r.SignAssertion, r.InResponseTo = true, false, "id-test-999"
		}, "error status Responder/NoPassive", providers.ReasonState},
		{"error status with a bad signature", func(e *env, r *samltest.Response) {
			e.idp = attackerIdP(e.t, e.idp)
			r.Status = responder
			r.NoAssertion, r.SignAssertion, r.SignResponse = true, false, true
		}, "error status Responder", providers.ReasonSignature},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, nil)
			ch, reqID := e.begin("flow-1")
			r := e.forged(reqID)
			tc.mod(e, &r)
			_, err := e.post(r, "flow-1", ch.State)
			wantRefused(t, err, tc.want)
			if got := providers.ReasonOf(err); got != tc.why {
				t.Fatalf("reason = %q, want %q (%v)", got, tc.why, err)
			}
		})
	}
}

// cutReader hands out data, then fails as a body does when the client
// drops the connection mid-POST.
type cutReader struct {
	data []byte
}

func (c *cutReader) Read(p []byte) (int, error) {
	if len(c.data) == 0 {
		return 0, io.ErrUnexpectedEOF
	}
	n := copy(p, c.data)
	c.data = c.data[n:]
	return n, nil
}

// TestTruncatedBody: a POST the client cut short (which also cancels the
// request's context) is a refusal for a reason other than the IdP's: the
// IdP never produced it, and anyone can send one.
func TestTruncatedBody(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	ch, reqID := e.begin("flow-1")
	doc, err := e.idp.Forge(e.forged(reqID))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := samltest.Bytes(doc)
	full := samltest.ACSRequest(e.p.ACSURL(), b, "flow-1")
	body, _ := io.ReadAll(full.Body)

	for _, tc := range []struct {
		name   string
		body   io.Reader
		cancel bool
	}{
		{"cut short", &cutReader{data: body[:len(body)/2]}, true},
		{"cut short, context alive", &cutReader{data: body[:len(body)/2]}, false},
		{"whole body, client gone", strings.NewReader(string(body)), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			if tc.cancel {
				cancel()
			}
			defer cancel()
			r := samltest.PostRequest(e.p.ACSURL(), nil).WithContext(ctx)
			r.Body = io.NopCloser(tc.body)
			flow := e.p.FlowID(r) // the proxy asks first
			_, err := e.p.Finish(ctx, r, nil)
			if flow != "" && tc.name != "whole body, client gone" {
				t.Errorf("FlowID of a cut body = %q", flow)
			}
			wantRefused(t, err, "")
			if got := providers.ReasonOf(err); got != providers.ReasonOther {
				t.Fatalf("reason = %q, want other (%v)", got, err)
			}
		})
	}
	// The intact request still logs in.
	res, err := e.post(e.forged(reqID), "flow-1", ch.State)
	wantAccepted(t, res, err, "alice@example.com")
}

// TestMaxBodyBytes: the provider tells the proxy how large a body its
// max_response_bytes needs, and accepts a response that large.
func TestMaxBodyBytes(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(c *Config) { c.MaxResponseBytes = 2 << 20 })
	if got, min := e.p.MaxBodyBytes(), int64(2<<20)*4/3; got < min {
		t.Fatalf("MaxBodyBytes = %d, less than the base64 of max_response_bytes (%d)", got, min)
	}
	ch, reqID := e.begin("flow-1")
	r := e.forged(reqID)
	// About 1.5 MiB of attributes: a person in very many groups.
	groups := make([]string, 0, 15000)
	for i := range 15000 {
		groups = append(groups, "group-with-a-long-name-"+strings.Repeat("x", 20)+"-"+time.Duration(i).String())
	}
	r.Attributes = map[string][]string{"groups": groups}
	doc, err := e.idp.Forge(r)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := samltest.Bytes(doc)
	if len(b) < 1<<20 {
		t.Fatalf("response is only %d bytes", len(b))
	}
	req := samltest.ACSRequest(e.p.ACSURL(), b, "flow-1")
	req.Body = http.MaxBytesReader(nil, req.Body, e.p.MaxBodyBytes())
	res, err := e.p.Finish(context.Background(), req, ch.State)
	wantAccepted(t, res, err, "alice@example.com")
	if n := len(res.Identity.Claims["groups"]); n != 15000 {
		t.Fatalf("%d groups", n)
	}

	// Beyond max_response_bytes, refused with the setting named.
	small := newEnv(t, func(c *Config) { c.MaxResponseBytes = 512 << 10 })
	ch, reqID = small.begin("flow-1")
	r = small.forged(reqID)
	r.Attributes = map[string][]string{"groups": groups}
	_, err = small.post(r, "flow-1", ch.State)
	wantRefused(t, err, "larger than")
}

// TestSPMetadataValidity: usher's SP metadata carries no validUntil
// unless configured, so an IdP that honours it keeps trusting an imported
// copy; sp_metadata_valid_for sets one.
func TestSPMetadataValidity(t *testing.T) {
	t.Parallel()
	var md struct {
		ValidUntil    string `xml:"validUntil,attr"`
		CacheDuration string `xml:"cacheDuration,attr"`
		SP            struct {
			ValidUntil string `xml:"validUntil,attr"`
		} `xml:"SPSSODescriptor"`
	}
	read := func(p *Provider) {
		t.Helper()
		b, _, err := p.Metadata()
		if err != nil {
			t.Fatal(err)
		}
		md.ValidUntil, md.CacheDuration, md.SP.ValidUntil = "", "", ""
		if err := xml.Unmarshal(b, &md); err != nil {
			t.Fatal(err)
		}
	}
	read(openStatic(t, nil))
	if md.ValidUntil != "" || md.SP.ValidUntil != "" || md.CacheDuration == "" {
		t.Fatalf("default metadata: validUntil %q/%q, cacheDuration %q", md.ValidUntil, md.SP.ValidUntil, md.CacheDuration)
	}
	read(openStatic(t, func(c *Config) { c.SPMetadataValidFor = 365 * 24 * time.Hour }))
	until, err := time.Parse(time.RFC3339, md.ValidUntil)
	if err != nil || !until.Equal(fixedNow.Add(365*24*time.Hour)) {
		t.Fatalf("validUntil = %q, want a year from now (%v)", md.ValidUntil, err)
	}
}

// TestRefusalsAreTyped: every ACS refusal reaches the proxy with a reason
// from the fixed set, whatever its words.
func TestRefusalsAreTyped(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	ch, _ := e.begin("flow-1")
	post := func(v url.Values) error {
		_, err := e.p.Finish(context.Background(), samltest.PostRequest(e.p.ACSURL(), v), ch.State)
		return err
	}
	for name, tc := range map[string]struct {
		err error
		why providers.Reason
	}{
		"RelayState of another flow": {post(url.Values{"SAMLResponse": {"x"}, "RelayState": {"flow-2"}}), providers.ReasonState},
		"no SAMLResponse":            {post(url.Values{"RelayState": {"flow-1"}}), providers.ReasonOther},
		"not base64":                 {post(url.Values{"SAMLResponse": {"%%%"}, "RelayState": {"flow-1"}}), providers.ReasonOther},
		"DTD": {post(url.Values{"SAMLResponse": {base64.StdEncoding.EncodeToString([]byte(`<!DOCTYPE x [<!ENTITY a "b">]><x/>`))},
			"RelayState": {"flow-1"}}), providers.ReasonOther},
	} {
		if !errors.Is(tc.err, providers.ErrRefused) || providers.ReasonOf(tc.err) != tc.why {
			t.Errorf("%s: %v (reason %q), want a refusal for %q", name, tc.err, providers.ReasonOf(tc.err), tc.why)
		}
	}
}
