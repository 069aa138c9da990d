package saml

import (
	"bytes"
	"compress/flate"
	"context"
	"encoding/base64"
	"encoding/xml"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/beevik/etree"

	"github.com/usherhq/usher/providers"
	"github.com/usherhq/usher/providers/saml/samltest"
)

func (e *env) sloURL() string { return e.p.sloURL.String() }

// signedLogoutRequest is a LogoutRequest from e's IdP as a browser brings
// it to usher: by HTTP-Redirect with a query-string signature, or by
// HTTP-POST with an enveloped one.
func (e *env) signedLogoutRequest(r samltest.LogoutRequest, binding string) *http.Request {
	e.t.Helper()
	el := e.idp.LogoutRequestElement(r)
	if binding == "redirect" {
		req, err := e.idp.RedirectRequest(e.sloURL(), "SAMLRequest", el, "relay-1", true)
		if err != nil {
			e.t.Fatal(err)
		}
		return req
	}
	signed, err := e.idp.Sign(el)
	if err != nil {
		e.t.Fatal(err)
	}
	req, err := samltest.PostMessage(e.sloURL(), "SAMLRequest", signed, "relay-1")
	if err != nil {
		e.t.Fatal(err)
	}
	return req
}

// logoutResponseOf decodes the LogoutResponse in an answer.
func logoutResponseOf(t testing.TB, ch *providers.Challenge) (dest string, relay string, resp struct {
	InResponseTo string `xml:"InResponseTo,attr"`
	Destination  string `xml:"Destination,attr"`
	Status       struct {
		StatusCode struct {
			Value string `xml:"Value,attr"`
		} `xml:"StatusCode"`
	} `xml:"Status"`
	Signature *struct{} `xml:"http://www.w3.org/2000/09/xmldsig# Signature"`
}) {
	t.Helper()
	var raw []byte
	if ch.Form == nil {
		u, err := url.Parse(ch.URL)
		if err != nil {
			t.Fatal(err)
		}
		q := u.Query()
		if q.Get("Signature") == "" || q.Get("SigAlg") == "" {
			t.Fatalf("redirect LogoutResponse is not signed: %s", ch.URL)
		}
		deflated, err := base64.StdEncoding.DecodeString(q.Get("SAMLResponse"))
		if err != nil {
			t.Fatal(err)
		}
		if raw, err = io.ReadAll(flate.NewReader(bytes.NewReader(deflated))); err != nil {
			t.Fatal(err)
		}
		u.RawQuery = ""
		dest, relay = u.String(), q.Get("RelayState")
	} else {
		var err error
		if raw, err = base64.StdEncoding.DecodeString(ch.Form.Get("SAMLResponse")); err != nil {
			t.Fatal(err)
		}
		dest, relay = ch.URL, ch.Form.Get("RelayState")
	}
	if err := xml.Unmarshal(raw, &resp); err != nil {
		t.Fatalf("LogoutResponse %s: %v", raw, err)
	}
	if ch.Form != nil && resp.Signature == nil {
		t.Fatalf("POST LogoutResponse is not signed: %s", raw)
	}
	return dest, relay, resp
}

func TestLogoutRequest(t *testing.T) {
	t.Parallel()
	success := "urn:oasis:names:tc:SAML:2.0:status:Success"
	for _, binding := range []string{"redirect", "post"} {
		t.Run(binding, func(t *testing.T) {
			e := newEnv(t, nil)
			req := e.signedLogoutRequest(e.idp.NewLogoutRequest(e.sloURL(), "alice@example.com"), binding)
			if !e.p.IsLogoutRequest(req) {
				t.Fatal("IsLogoutRequest = false")
			}
			lr, err := e.p.HandleLogoutRequest(context.Background(), req, nil)
			if err != nil {
				t.Fatal(err)
			}
			if len(lr.Subjects) != 1 || lr.Subjects[0] != "alice@example.com" {
				t.Fatalf("subjects = %q", lr.Subjects)
			}
			ch, err := lr.Answer(true)
			if err != nil {
				t.Fatal(err)
			}
			if (ch.Form == nil) != (binding == "redirect") {
				t.Errorf("answered a %s request by the other binding: %+v", binding, ch)
			}
			dest, relay, resp := logoutResponseOf(t, ch)
			if dest != e.idp.URL()+"/slo" || resp.Destination != dest || resp.InResponseTo != "id-logout-1" ||
				resp.Status.StatusCode.Value != success || relay != "relay-1" {
				t.Fatalf("answer to %s, relay %q: %+v", dest, relay, resp)
			}
			ch, err = lr.Answer(false)
			if err != nil {
				t.Fatal(err)
			}
			if _, _, resp := logoutResponseOf(t, ch); resp.Status.StatusCode.Value != "urn:oasis:names:tc:SAML:2.0:status:Responder" {
				t.Fatalf("failed logout answered %q", resp.Status.StatusCode.Value)
			}
		})
	}
}

func TestLogoutRequestRefused(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		req  func(e *env) *http.Request
		why  providers.Reason
	}{
		{"unsigned redirect", func(e *env) *http.Request {
			r, _ := e.idp.RedirectRequest(e.sloURL(), "SAMLRequest", e.idp.LogoutRequestElement(e.idp.NewLogoutRequest(e.sloURL(), "alice@example.com")), "", false)
			return r
		}, providers.ReasonSignature},
		{"unsigned post", func(e *env) *http.Request {
			r, _ := samltest.PostMessage(e.sloURL(), "SAMLRequest", e.idp.LogoutRequestElement(e.idp.NewLogoutRequest(e.sloURL(), "alice@example.com")), "")
			return r
		}, providers.ReasonSignature},
		{"signed by another key", func(e *env) *http.Request {
			evil := attackerIdP(e.t, e.idp)
			r, _ := evil.RedirectRequest(e.sloURL(), "SAMLRequest", evil.LogoutRequestElement(evil.NewLogoutRequest(e.sloURL(), "alice@example.com")), "", true)
			return r
		}, providers.ReasonSignature},
		{"tampered after signing", func(e *env) *http.Request {
			r := e.signedLogoutRequest(e.idp.NewLogoutRequest(e.sloURL(), "alice@example.com"), "redirect")
			q := r.URL.Query()
			q.Set("RelayState", "other")
			r.URL.RawQuery = q.Encode()
			return r
		}, providers.ReasonSignature},
		{"another SP's endpoint", func(e *env) *http.Request {
			lr := e.idp.NewLogoutRequest("https://other.example/slo", "alice@example.com")
			return e.signedLogoutRequest(lr, "redirect")
		}, providers.ReasonAudience},
		{"another issuer", func(e *env) *http.Request {
			lr := e.idp.NewLogoutRequest(e.sloURL(), "alice@example.com")
			lr.Issuer = "https://other-idp.example"
			return e.signedLogoutRequest(lr, "post")
		}, providers.ReasonAudience},
		{"old", func(e *env) *http.Request {
			lr := e.idp.NewLogoutRequest(e.sloURL(), "alice@example.com")
			lr.IssueInstant = fixedNow.Add(-time.Hour)
			return e.signedLogoutRequest(lr, "redirect")
		}, providers.ReasonExpired},
		{"in the future", func(e *env) *http.Request {
			lr := e.idp.NewLogoutRequest(e.sloURL(), "alice@example.com")
			lr.IssueInstant = fixedNow.Add(2 * time.Minute)
			return e.signedLogoutRequest(lr, "redirect")
		}, providers.ReasonExpired},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, nil)
			lr, err := e.p.HandleLogoutRequest(context.Background(), tc.req(e), nil)
			if lr != nil {
				t.Fatalf("accepted: %+v", lr)
			}
			wantRefused(t, err, "")
			if got := providers.ReasonOf(err); got != tc.why {
				t.Fatalf("reason = %q, want %q (%v)", got, tc.why, err)
			}
		})
	}

	t.Run("replay", func(t *testing.T) {
		e := newEnv(t, nil)
		lr := e.idp.NewLogoutRequest(e.sloURL(), "alice@example.com")
		if _, err := e.p.HandleLogoutRequest(context.Background(), e.signedLogoutRequest(lr, "redirect"), nil); err != nil {
			t.Fatal(err)
		}
		_, err := e.p.HandleLogoutRequest(context.Background(), e.signedLogoutRequest(lr, "post"), nil)
		wantRefused(t, err, "already used")
		if got := providers.ReasonOf(err); got != providers.ReasonReplay {
			t.Fatalf("reason = %q", got)
		}
	})
}

// TestLogoutRequestSubjects: a LogoutRequest names a NameID; when the
// subject is an attribute, only the browser's own session tells whose it is.
func TestLogoutRequestSubjects(t *testing.T) {
	t.Parallel()
	hint := func(nameID string) string {
		h, err := encodeLogoutHint(logoutHint{NameID: nameID, Format: nameIDFormats["emailAddress"], SessionIndex: "s-9"})
		if err != nil {
			t.Fatal(err)
		}
		return h
	}
	oid := "http://schemas.microsoft.com/identity/claims/objectidentifier"
	for _, tc := range []struct {
		name    string
		subject string
		current *providers.Identity
		want    []string
	}{
		{"nameid subject", "", nil, []string{"alice@example.com"}},
		{"nameid subject, same session", "", &providers.Identity{IdP: "okta", Subject: "alice@example.com", LogoutHint: hint("alice@example.com")}, []string{"alice@example.com"}},
		{"attribute subject, no session", oid, nil, nil},
		{"attribute subject, the person's session", oid, &providers.Identity{IdP: "okta", Subject: "oid-1", LogoutHint: hint("alice@example.com")}, []string{"oid-1"}},
		{"attribute subject, someone else's session", oid, &providers.Identity{IdP: "okta", Subject: "oid-2", LogoutHint: hint("bob@example.com")}, nil},
		{"attribute subject, a session at another IdP", oid, &providers.Identity{IdP: "entra", Subject: "oid-1", LogoutHint: hint("alice@example.com")}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, func(c *Config) { c.Subject = tc.subject })
			lr, err := e.p.HandleLogoutRequest(context.Background(),
				e.signedLogoutRequest(e.idp.NewLogoutRequest(e.sloURL(), "alice@example.com"), "redirect"), tc.current)
			if err != nil {
				t.Fatal(err)
			}
			if strings.Join(lr.Subjects, ",") != strings.Join(tc.want, ",") {
				t.Fatalf("subjects = %q, want %q", lr.Subjects, tc.want)
			}
			// Nobody found: the IdP must not hear that the logout worked.
			ch, err := lr.Answer(true)
			if err != nil {
				t.Fatal(err)
			}
			_, _, resp := logoutResponseOf(t, ch)
			if ok := strings.HasSuffix(resp.Status.StatusCode.Value, ":Success"); ok != (len(tc.want) > 0) {
				t.Fatalf("status %q for subjects %q", resp.Status.StatusCode.Value, lr.Subjects)
			}
		})
	}
}

// TestLogoutAnswerEndpoint: the answer goes to the IdP's ResponseLocation
// when it has one, by the binding the request came with if the IdP offers
// it, else by the other.
func TestLogoutAnswerEndpoint(t *testing.T) {
	t.Parallel()
	redirect := `<SingleLogoutService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect" Location="https://idp.example/slo"/>`
	for _, tc := range []struct {
		name, endpoints, binding, want string
		post                           bool
	}{
		{"redirect", redirect, "redirect", "https://idp.example/slo", false},
		{"response location", `<SingleLogoutService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect" Location="https://idp.example/slo" ResponseLocation="https://idp.example/slo/done"/>`, "redirect", "https://idp.example/slo/done", false},
		{"post request, redirect only", redirect, "post", "https://idp.example/slo", false},
		{"post request", redirect + `<SingleLogoutService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST" Location="https://idp.example/slo/post"/>`, "post", "https://idp.example/slo/post", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, nil)
			md, err := e.idp.Metadata()
			if err != nil {
				t.Fatal(err)
			}
			// Keep the IdP's keys and entity ID, replace its logout endpoints.
			doc := etree.NewDocument()
			if err := doc.ReadFromBytes(md); err != nil {
				t.Fatal(err)
			}
			sso := doc.FindElement("//IDPSSODescriptor")
			for _, el := range sso.SelectElements("SingleLogoutService") {
				sso.RemoveChild(el)
			}
			frag := etree.NewDocument()
			if err := frag.ReadFromString(`<x xmlns="urn:oasis:names:tc:SAML:2.0:metadata">` + tc.endpoints + `</x>`); err != nil {
				t.Fatal(err)
			}
			for i, el := range frag.Root().ChildElements() {
				el.CreateAttr("xmlns", "urn:oasis:names:tc:SAML:2.0:metadata")
				sso.InsertChildAt(i, el)
			}
			xmlText, _ := doc.WriteToString()
			p := e.open("okta", e.idp, func(c *Config) { c.MetadataXML = xmlText })
			e.p = p
			lr, err := p.HandleLogoutRequest(context.Background(), e.signedLogoutRequest(e.idp.NewLogoutRequest(e.sloURL(), "alice@example.com"), tc.binding), nil)
			if err != nil {
				t.Fatal(err)
			}
			ch, err := lr.Answer(true)
			if err != nil {
				t.Fatal(err)
			}
			dest, _, resp := logoutResponseOf(t, ch)
			if dest != tc.want || resp.Destination != tc.want || (ch.Form != nil) != tc.post {
				t.Fatalf("answer to %s (Destination %s, form %v), want %s (form %v)", dest, resp.Destination, ch.Form != nil, tc.want, tc.post)
			}
		})
	}
}

// TestIdPInitiatedLogoutEndToEnd: alice logs in through the IdP, then
// signs out at the IdP; the IdP sends usher a signed LogoutRequest through
// the browser, usher names alice's sessions and answers, and the IdP
// accepts the answer (checking its signature and InResponseTo) and reports
// every service signed out. Once by each binding.
func TestIdPInitiatedLogoutEndToEnd(t *testing.T) {
	for _, binding := range []string{"redirect", "post"} {
		t.Run(binding, func(t *testing.T) {
			c := newClock(time.Now().UTC().Truncate(time.Second))
			idp := newIdP(t, c, nil)
			e := &env{t: t, clock: c, idp: idp}
			e.p = e.open("okta", idp, nil)
			if binding == "post" {
				// Register usher with the POST logout endpoint only,
				// so the IdP uses that binding.
				md, _, err := e.p.Metadata()
				if err != nil {
					t.Fatal(err)
				}
				doc := etree.NewDocument()
				if err := doc.ReadFromBytes(md); err != nil {
					t.Fatal(err)
				}
				for _, el := range doc.FindElements("//SingleLogoutService") {
					if strings.HasSuffix(el.SelectAttrValue("Binding", ""), "HTTP-Redirect") {
						el.Parent().RemoveChild(el)
					}
				}
				if md, err = doc.WriteToBytes(); err != nil {
					t.Fatal(err)
				}
				if err := idp.AddServiceProvider("okta", md); err != nil {
					t.Fatal(err)
				}
			}
			b := samltest.NewBrowser()
			ch, _ := e.begin("flow-1")
			acs, err := b.Login(context.Background(), idp, ch, "alice", "wonderland")
			if err != nil {
				t.Fatal(err)
			}
			res, err := e.p.Finish(context.Background(), acs, ch.State)
			wantAccepted(t, res, err, "alice@example.com")

			// Sign out at the IdP.
			resp, err := b.Client.Get(idp.URL() + "/logout")
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			var toUsher *http.Request
			switch {
			case binding == "redirect" && resp.StatusCode == http.StatusFound:
				toUsher = httptestRequest(http.MethodGet, resp.Header.Get("Location"), nil)
			case binding == "post" && resp.StatusCode == http.StatusOK:
				f, err := samltestForm(body)
				if err != nil {
					t.Fatalf("IdP logout page: %s", body)
				}
				toUsher = samltest.PostRequest(f.action, f.values)
			default:
				t.Fatalf("IdP logout: %s %s %s", resp.Status, resp.Header.Get("Location"), body)
			}
			if !strings.HasPrefix(toUsher.URL.String(), e.sloURL()) {
				t.Fatalf("IdP sent the LogoutRequest to %s", toUsher.URL)
			}
			if !e.p.IsLogoutRequest(toUsher) {
				t.Fatal("not recognised as a logout request")
			}
			lr, err := e.p.HandleLogoutRequest(context.Background(), toUsher, &res.Identity)
			if err != nil {
				t.Fatal(err)
			}
			if len(lr.Subjects) != 1 || lr.Subjects[0] != res.Identity.Subject {
				t.Fatalf("subjects = %q, want %q", lr.Subjects, res.Identity.Subject)
			}
			answer, err := lr.Answer(true)
			if err != nil {
				t.Fatal(err)
			}

			// The browser takes the answer back to the IdP.
			if answer.Form == nil {
				resp, err = b.Client.Get(answer.URL)
			} else {
				resp, err = b.Client.PostForm(answer.URL, answer.Form)
			}
			if err != nil {
				t.Fatal(err)
			}
			body, _ = io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "You have been logged out") ||
				strings.Contains(string(body), "could not be confirmed") {
				t.Fatalf("IdP after usher's answer: %s\n%s", resp.Status, body)
			}
		})
	}
}

// TestUnsignedLogoutResponse: SimpleSAMLphp answers usher's LogoutRequest
// unsigned by default. usher refuses it as a signature problem (the proxy
// then only shows the page, clearing nothing on its word).
func TestUnsignedLogoutResponse(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	el := etree.NewElement("samlp:LogoutResponse")
	el.CreateAttr("xmlns:samlp", "urn:oasis:names:tc:SAML:2.0:protocol")
	el.CreateAttr("xmlns:saml", "urn:oasis:names:tc:SAML:2.0:assertion")
	el.CreateAttr("ID", "id-lr-1")
	el.CreateAttr("Version", "2.0")
	el.CreateAttr("IssueInstant", fixedNow.Format("2006-01-02T15:04:05Z"))
	el.CreateAttr("Destination", e.sloURL())
	el.CreateAttr("InResponseTo", "id-test-1")
	el.CreateElement("saml:Issuer").SetText(e.idp.EntityID())
	el.CreateElement("samlp:Status").CreateElement("samlp:StatusCode").CreateAttr("Value", "urn:oasis:names:tc:SAML:2.0:status:Success")

	for name, req := range map[string]func() *http.Request{
		"redirect": func() *http.Request {
			r, _ := e.idp.RedirectRequest(e.sloURL(), "SAMLResponse", el, "/usher/logged-out", false)
			return r
		},
		"post": func() *http.Request {
			r, _ := samltest.PostMessage(e.sloURL(), "SAMLResponse", el, "/usher/logged-out")
			return r
		},
	} {
		r := req()
		if e.p.IsLogoutRequest(r) {
			t.Fatalf("%s: a LogoutResponse taken for a request", name)
		}
		err := e.p.HandleLogoutResponse(r)
		wantRefused(t, err, "not signed")
		if got := providers.ReasonOf(err); got != providers.ReasonSignature {
			t.Fatalf("%s: reason = %q", name, got)
		}
	}
	// Signed, the same answer is accepted.
	r, _ := e.idp.RedirectRequest(e.sloURL(), "SAMLResponse", el, "", true)
	if err := e.p.HandleLogoutResponse(r); err != nil {
		t.Fatal(err)
	}
}
