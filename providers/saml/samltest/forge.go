package samltest

import (
	"bytes"
	"compress/flate"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/xml"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sort"
	"time"

	"github.com/beevik/etree"
	"github.com/crewjam/saml/xmlenc"
	dsig "github.com/russellhaering/goxmldsig"
)

// Response describes a hand-built SAML Response. Forge fills the usual
// fields from an SP's ACS and entity ID; tests then change what the attack
// needs. Zero times are taken from the IdP clock.
type Response struct {
	ResponseID   string
	AssertionID  string
	Issuer       string // default the IdP entity ID
	Destination  string
	Recipient    string
	Audience     string
	InResponseTo string // on the Response and the SubjectConfirmationData

	NameID       string
	NameIDFormat string
	SessionIndex string
	// Attributes by Name; FriendlyNames optionally maps a Name to its
	// FriendlyName.
	Attributes    map[string][]string
	FriendlyNames map[string]string

	IssueInstant time.Time
	NotBefore    time.Time // Conditions NotBefore
	NotOnOrAfter time.Time // Conditions and SubjectConfirmationData NotOnOrAfter

	SignAssertion bool
	SignResponse  bool
	// EncryptTo, when set, encrypts the (signed or not) assertion to
	// this certificate into an EncryptedAssertion.
	EncryptTo *x509.Certificate
	// Status defaults to Success. SubStatus, when set, is a second-level
	// StatusCode (urn:...:status:NoPassive) and StatusMessage its text.
	Status        string
	SubStatus     string
	StatusMessage string
	// NoAssertion leaves the assertion out, as IdPs do in a response with
	// an error status.
	NoAssertion bool
}

// NewResponse returns a Response for the SP at acs/audience with both the
// assertion signed, valid from now for five minutes.
func (i *IdP) NewResponse(acs, audience, inResponseTo, nameID string) Response {
	now := i.now().UTC().Truncate(time.Second)
	return Response{
		ResponseID:    "id-response-1",
		AssertionID:   "id-assertion-1",
		Issuer:        i.EntityID(),
		Destination:   acs,
		Recipient:     acs,
		Audience:      audience,
		InResponseTo:  inResponseTo,
		NameID:        nameID,
		NameIDFormat:  "urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress",
		SessionIndex:  "session-1",
		IssueInstant:  now,
		NotBefore:     now,
		NotOnOrAfter:  now.Add(5 * time.Minute),
		SignAssertion: true,
	}
}

const (
	nsSAML  = "urn:oasis:names:tc:SAML:2.0:assertion"
	nsSAMLP = "urn:oasis:names:tc:SAML:2.0:protocol"
)

func samlTime(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05Z") }

// Forge builds the Response document, signed as r asks.
func (i *IdP) Forge(r Response) (*etree.Document, error) {
	resp := i.ResponseElement(r)
	if !r.NoAssertion {
		a, err := i.ForgeAssertion(r)
		if err != nil {
			return nil, err
		}
		if r.EncryptTo != nil {
			if a, err = EncryptAssertion(a, r.EncryptTo); err != nil {
				return nil, err
			}
		}
		resp.AddChild(a)
	}
	var err error
	if r.SignResponse {
		if resp, err = i.Sign(resp); err != nil {
			return nil, err
		}
	}
	doc := etree.NewDocument()
	doc.SetRoot(resp)
	return doc, nil
}

// ResponseElement is the Response envelope of r without an assertion.
func (i *IdP) ResponseElement(r Response) *etree.Element {
	resp := etree.NewElement("samlp:Response")
	resp.CreateAttr("xmlns:samlp", nsSAMLP)
	resp.CreateAttr("xmlns:saml", nsSAML)
	resp.CreateAttr("ID", r.ResponseID)
	resp.CreateAttr("Version", "2.0")
	resp.CreateAttr("IssueInstant", samlTime(r.IssueInstant))
	if r.Destination != "" {
		resp.CreateAttr("Destination", r.Destination)
	}
	if r.InResponseTo != "" {
		resp.CreateAttr("InResponseTo", r.InResponseTo)
	}
	resp.CreateElement("saml:Issuer").SetText(r.Issuer)
	status := r.Status
	if status == "" {
		status = "urn:oasis:names:tc:SAML:2.0:status:Success"
	}
	st := resp.CreateElement("samlp:Status")
	code := st.CreateElement("samlp:StatusCode")
	code.CreateAttr("Value", status)
	if r.SubStatus != "" {
		code.CreateElement("samlp:StatusCode").CreateAttr("Value", r.SubStatus)
	}
	if r.StatusMessage != "" {
		st.CreateElement("samlp:StatusMessage").SetText(r.StatusMessage)
	}
	return resp
}

// ForgeAssertion builds the Assertion of r, signed if r.SignAssertion.
func (i *IdP) ForgeAssertion(r Response) (*etree.Element, error) {
	a := etree.NewElement("saml:Assertion")
	a.CreateAttr("xmlns:saml", nsSAML)
	a.CreateAttr("ID", r.AssertionID)
	a.CreateAttr("Version", "2.0")
	a.CreateAttr("IssueInstant", samlTime(r.IssueInstant))
	a.CreateElement("saml:Issuer").SetText(r.Issuer)

	subj := a.CreateElement("saml:Subject")
	nid := subj.CreateElement("saml:NameID")
	if r.NameIDFormat != "" {
		nid.CreateAttr("Format", r.NameIDFormat)
	}
	nid.SetText(r.NameID)
	sc := subj.CreateElement("saml:SubjectConfirmation")
	sc.CreateAttr("Method", "urn:oasis:names:tc:SAML:2.0:cm:bearer")
	scd := sc.CreateElement("saml:SubjectConfirmationData")
	if r.InResponseTo != "" {
		scd.CreateAttr("InResponseTo", r.InResponseTo)
	}
	scd.CreateAttr("NotOnOrAfter", samlTime(r.NotOnOrAfter))
	scd.CreateAttr("Recipient", r.Recipient)

	cond := a.CreateElement("saml:Conditions")
	cond.CreateAttr("NotBefore", samlTime(r.NotBefore))
	cond.CreateAttr("NotOnOrAfter", samlTime(r.NotOnOrAfter))
	cond.CreateElement("saml:AudienceRestriction").CreateElement("saml:Audience").SetText(r.Audience)

	as := a.CreateElement("saml:AuthnStatement")
	as.CreateAttr("AuthnInstant", samlTime(r.IssueInstant))
	if r.SessionIndex != "" {
		as.CreateAttr("SessionIndex", r.SessionIndex)
	}
	as.CreateElement("saml:AuthnContext").CreateElement("saml:AuthnContextClassRef").
		SetText("urn:oasis:names:tc:SAML:2.0:ac:classes:PasswordProtectedTransport")

	if len(r.Attributes) > 0 {
		st := a.CreateElement("saml:AttributeStatement")
		names := make([]string, 0, len(r.Attributes))
		for n := range r.Attributes {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, n := range names {
			at := st.CreateElement("saml:Attribute")
			at.CreateAttr("Name", n)
			if fn := r.FriendlyNames[n]; fn != "" {
				at.CreateAttr("FriendlyName", fn)
			}
			for _, v := range r.Attributes[n] {
				at.CreateElement("saml:AttributeValue").SetText(v)
			}
		}
	}
	if r.SignAssertion {
		return i.Sign(a)
	}
	return a, nil
}

// Sign returns el with an enveloped RSA-SHA256 signature by the IdP key,
// placed after its Issuer as the schema wants. el must have an ID.
func (i *IdP) Sign(el *etree.Element) (*etree.Element, error) {
	ctx, err := dsig.NewSigningContext(i.Key, [][]byte{i.Cert.Raw})
	if err != nil {
		return nil, err
	}
	ctx.Canonicalizer = dsig.MakeC14N10ExclusiveCanonicalizerWithPrefixList("")
	if err := ctx.SetSignatureMethod(dsig.RSASHA256SignatureMethod); err != nil {
		return nil, err
	}
	signed, err := ctx.SignEnveloped(el)
	if err != nil {
		return nil, fmt.Errorf("samltest: sign %s: %w", el.Tag, err)
	}
	// goxmldsig appends the Signature; the schema wants it after Issuer.
	sig := signed.RemoveChildAt(len(signed.Child) - 1)
	if sig == nil {
		return nil, fmt.Errorf("samltest: sign %s: no signature", el.Tag)
	}
	signed.InsertChildAt(1, sig)
	return signed, nil
}

// EncryptAssertion wraps assertion in an EncryptedAssertion for cert, as an
// IdP (or anyone holding the SP's public certificate) would.
func EncryptAssertion(assertion *etree.Element, cert *x509.Certificate) (*etree.Element, error) {
	doc := etree.NewDocument()
	doc.SetRoot(assertion.Copy())
	plain, err := doc.WriteToBytes()
	if err != nil {
		return nil, err
	}
	enc := xmlenc.OAEP()
	enc.BlockCipher = xmlenc.AES256GCM
	data, err := enc.Encrypt(cert, plain, nil)
	if err != nil {
		return nil, fmt.Errorf("samltest: encrypt assertion: %w", err)
	}
	data.CreateAttr("Type", "http://www.w3.org/2001/04/xmlenc#Element")
	ea := etree.NewElement("saml:EncryptedAssertion")
	ea.CreateAttr("xmlns:saml", nsSAML)
	ea.AddChild(data)
	return ea, nil
}

// Bytes serialises doc.
func Bytes(doc *etree.Document) ([]byte, error) {
	return doc.WriteToBytes()
}

// ACSRequest is the POST a browser makes to acs with SAMLResponse xmlDoc.
func ACSRequest(acs string, xmlDoc []byte, relayState string) *http.Request {
	v := url.Values{"SAMLResponse": {base64.StdEncoding.EncodeToString(xmlDoc)}}
	if relayState != "" {
		v.Set("RelayState", relayState)
	}
	return PostRequest(acs, v)
}

func xmlBytes(v any) ([]byte, error) {
	if v == nil {
		return nil, errors.New("samltest: nothing to marshal")
	}
	b, err := xml.MarshalIndent(v, "", "  ")
	if err != nil {
		return nil, err
	}
	return append([]byte(xml.Header), b...), nil
}

// LogoutRequest describes a LogoutRequest the IdP sends to a service
// provider's single logout service. Zero IssueInstant is the IdP clock's
// now.
type LogoutRequest struct {
	ID           string
	Destination  string
	Issuer       string // default the IdP entity ID
	NameID       string
	NameIDFormat string
	SessionIndex string
	IssueInstant time.Time
}

// NewLogoutRequest returns a LogoutRequest for nameID (emailAddress
// format), addressed to the SP's single logout URL slo.
func (i *IdP) NewLogoutRequest(slo, nameID string) LogoutRequest {
	return LogoutRequest{
		ID:           "id-logout-1",
		Destination:  slo,
		Issuer:       i.EntityID(),
		NameID:       nameID,
		NameIDFormat: "urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress",
		SessionIndex: "session-1",
		IssueInstant: i.now().UTC().Truncate(time.Second),
	}
}

// LogoutRequestElement is r as an unsigned samlp:LogoutRequest element;
// Sign it for the HTTP-POST binding.
func (i *IdP) LogoutRequestElement(r LogoutRequest) *etree.Element {
	el := etree.NewElement("samlp:LogoutRequest")
	el.CreateAttr("xmlns:samlp", nsSAMLP)
	el.CreateAttr("xmlns:saml", nsSAML)
	el.CreateAttr("ID", r.ID)
	el.CreateAttr("Version", "2.0")
	at := r.IssueInstant
	if at.IsZero() {
		at = i.now()
	}
	el.CreateAttr("IssueInstant", samlTime(at))
	if r.Destination != "" {
		el.CreateAttr("Destination", r.Destination)
	}
	issuer := r.Issuer
	if issuer == "" {
		issuer = i.EntityID()
	}
	el.CreateElement("saml:Issuer").SetText(issuer)
	nid := el.CreateElement("saml:NameID")
	if r.NameIDFormat != "" {
		nid.CreateAttr("Format", r.NameIDFormat)
	}
	nid.SetText(r.NameID)
	if r.SessionIndex != "" {
		el.CreateElement("samlp:SessionIndex").SetText(r.SessionIndex)
	}
	return el
}

// RedirectRequest is the GET a browser makes to dest with el sent by the
// HTTP-Redirect binding under param (SAMLRequest or SAMLResponse), with a
// query-string signature by the IdP key when sign is set.
func (i *IdP) RedirectRequest(dest, param string, el *etree.Element, relay string, sign bool) (*http.Request, error) {
	doc := etree.NewDocument()
	doc.SetRoot(el.Copy())
	var buf bytes.Buffer
	fw, err := flate.NewWriter(&buf, flate.BestCompression)
	if err != nil {
		return nil, err
	}
	if _, err := doc.WriteTo(fw); err != nil {
		return nil, err
	}
	if err := fw.Close(); err != nil {
		return nil, err
	}
	q := param + "=" + url.QueryEscape(base64.StdEncoding.EncodeToString(buf.Bytes()))
	if relay != "" {
		q += "&RelayState=" + url.QueryEscape(relay)
	}
	if sign {
		q += "&SigAlg=" + url.QueryEscape(dsig.RSASHA256SignatureMethod)
		digest := sha256.Sum256([]byte(q))
		sig, err := rsa.SignPKCS1v15(rand.Reader, i.Key, crypto.SHA256, digest[:])
		if err != nil {
			return nil, err
		}
		q += "&Signature=" + url.QueryEscape(base64.StdEncoding.EncodeToString(sig))
	}
	return httptest.NewRequest(http.MethodGet, dest+"?"+q, nil), nil
}

// PostMessage is the POST a browser makes to dest with el sent by the
// HTTP-POST binding under param; Sign el first for a signed message.
func PostMessage(dest, param string, el *etree.Element, relay string) (*http.Request, error) {
	doc := etree.NewDocument()
	doc.SetRoot(el.Copy())
	b, err := doc.WriteToBytes()
	if err != nil {
		return nil, err
	}
	v := url.Values{param: {base64.StdEncoding.EncodeToString(b)}}
	if relay != "" {
		v.Set("RelayState", relay)
	}
	return PostRequest(dest, v), nil
}
