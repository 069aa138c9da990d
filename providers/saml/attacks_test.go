package saml

import (
	"context"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/beevik/etree"

	"github.com/usherhq/usher/providers"
	"github.com/usherhq/usher/providers/saml/samltest"
)

// TestForgedBaseline shows the forge makes responses the ACS accepts, so
// that each attack below fails for its own reason only.
func TestForgedBaseline(t *testing.T) {
	e := newEnv(t, nil)
	ch, reqID := e.begin("flow-1")
	res, err := e.post(e.forged(reqID), "flow-1", ch.State)
	wantAccepted(t, res, err, "alice@example.com")
}

func TestAttacksRefused(t *testing.T) {
	for _, tc := range []struct {
		name string
		mod  func(e *env, r *samltest.Response)
		want string
		why  providers.Reason
	}{
		{"unsigned assertion in unsigned response", func(_ *env, r *samltest.Response) { r.SignAssertion = false }, "neither the Response nor the Assertion is signed", providers.ReasonSignature},
		{"only the response signed", func(_ *env, r *samltest.Response) { r.SignAssertion, r.SignResponse = false, true }, "assertion is not signed", providers.ReasonSignature},
		{"wrong audience", func(_ *env, r *samltest.Response) { r.Audience = "https://other.example/sp" }, "Audience", providers.ReasonAudience},
		{"wrong recipient", func(_ *env, r *samltest.Response) { r.Recipient = "https://other.example/acs" }, "Recipient", providers.ReasonAudience},
		{"wrong destination", func(_ *env, r *samltest.Response) { r.Destination = "https://other.example/acs" }, "Destination", providers.ReasonAudience},
		{"no destination", func(_ *env, r *samltest.Response) { r.Destination = "" }, "no Destination", providers.ReasonOther},
		{"wrong issuer", func(_ *env, r *samltest.Response) { r.Issuer = "https://other-idp.example" }, "ssuer", providers.ReasonAudience},
		{"wrong InResponseTo", func(_ *env, r *samltest.Response) { r.InResponseTo = "id-test-999" }, "InResponseTo", providers.ReasonState},
		{"no InResponseTo", func(_ *env, r *samltest.Response) { r.InResponseTo = "" }, "InResponseTo", providers.ReasonState},
		{"expired", func(e *env, r *samltest.Response) {
			r.IssueInstant = fixedNow.Add(-time.Hour)
			r.NotBefore, r.NotOnOrAfter = r.IssueInstant, r.IssueInstant.Add(5*time.Minute)
		}, "expired", providers.ReasonExpired},
		{"failed status", func(_ *env, r *samltest.Response) {
			r.Status = "urn:oasis:names:tc:SAML:2.0:status:Requester"
		}, "IdP answered Requester", providers.ReasonIdPError},
		{"attacker-encrypted unsigned assertion", func(e *env, r *samltest.Response) {
			r.SignAssertion = false
			r.EncryptTo = e.p.cert
		}, "neither the Response nor the Assertion is signed", providers.ReasonSignature},
		{"attacker-encrypted assertion signed by another key", func(e *env, r *samltest.Response) {
			e.idp = attackerIdP(e.t, e.idp)
			r.EncryptTo = e.p.cert
		}, "signature", providers.ReasonSignature},
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

// attackerIdP signs like idp, with the same entity ID and URLs, but with
// the attacker's own key.
func attackerIdP(t testing.TB, idp *samltest.IdP) *samltest.IdP {
	t.Helper()
	k, c, err := samltest.NewKeyPair("attacker", fixedNow)
	if err != nil {
		t.Fatal(err)
	}
	evil := *idp
	evil.Key, evil.Cert = k, c
	return &evil
}

func TestAssertionCount(t *testing.T) {
	for _, tc := range []struct {
		name  string
		build func(e *env, r samltest.Response) *etree.Document
	}{
		{"two signed assertions in a signed response", func(e *env, r samltest.Response) *etree.Document {
			a1 := mustAssertion(e, r)
			r.AssertionID, r.NameID = "id-assertion-2", "admin@example.com"
			a2 := mustAssertion(e, r)
			return e.signedResponse(r, a1, a2)
		}},
		{"encrypted and plain assertion", func(e *env, r samltest.Response) *etree.Document {
			a1 := mustAssertion(e, r)
			r.AssertionID = "id-assertion-2"
			enc, err := samltest.EncryptAssertion(mustAssertion(e, r), e.p.cert)
			if err != nil {
				e.t.Fatal(err)
			}
			return e.signedResponse(r, enc, a1)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, nil)
			ch, reqID := e.begin("flow-1")
			_, err := e.postXML(docBytes(t, tc.build(e, e.forged(reqID))), "flow-1", ch.State)
			wantRefused(t, err, "exactly one Assertion")
		})
	}
}

func mustAssertion(e *env, r samltest.Response) *etree.Element {
	e.t.Helper()
	a, err := e.idp.ForgeAssertion(r)
	if err != nil {
		e.t.Fatal(err)
	}
	return a
}

// signedResponse wraps assertions in a Response signed by the IdP.
func (e *env) signedResponse(r samltest.Response, assertions ...*etree.Element) *etree.Document {
	e.t.Helper()
	resp := e.idp.ResponseElement(r)
	for _, a := range assertions {
		resp.AddChild(a)
	}
	signed, err := e.idp.Sign(resp)
	if err != nil {
		e.t.Fatal(err)
	}
	doc := etree.NewDocument()
	doc.SetRoot(signed)
	return doc
}

func docBytes(t testing.TB, doc *etree.Document) []byte {
	t.Helper()
	b, err := doc.WriteToBytes()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestXSW builds signature-wrapping variants from a validly signed
// response: the signed assertion stays intact somewhere in the document
// while an evil one sits where a careless reader would look.
func TestXSW(t *testing.T) {
	evilOf := func(e *env, r samltest.Response) *etree.Element {
		r.NameID = "admin@example.com"
		r.SignAssertion = false
		return mustAssertion(e, r)
	}
	for _, tc := range []struct {
		name  string
		wrap  func(e *env, r samltest.Response, doc *etree.Document)
		wants []string
	}{
		{"evil sibling before the signed assertion", func(e *env, r samltest.Response, doc *etree.Document) {
			doc.Root().InsertChildAt(2, evilOf(e, r))
		}, []string{"exactly one Assertion"}},
		{"signed assertion moved into Extensions", func(e *env, r samltest.Response, doc *etree.Document) {
			signed := doc.Root().SelectElement("Assertion")
			doc.Root().RemoveChild(signed)
			ext := etree.NewElement("samlp:Extensions")
			ext.AddChild(signed)
			doc.Root().InsertChildAt(1, ext)
			doc.Root().AddChild(evilOf(e, r))
		}, []string{"exactly one Assertion"}},
		{"evil assertion carrying the signature, signed one in ds:Object", func(e *env, r samltest.Response, doc *etree.Document) {
			signed := doc.Root().SelectElement("Assertion")
			doc.Root().RemoveChild(signed)
			evil := evilOf(e, r)
			evil.CreateAttr("ID", signed.SelectAttrValue("ID", ""))
			sig := signed.SelectElement("Signature").Copy()
			obj := sig.CreateElement("ds:Object")
			obj.AddChild(signed)
			evil.InsertChildAt(1, sig)
			doc.Root().AddChild(evil)
		}, []string{"exactly one Assertion"}},
		{"NameID changed inside the signed assertion", func(_ *env, _ samltest.Response, doc *etree.Document) {
			doc.FindElement("//NameID").SetText("admin@example.com")
		}, []string{"signature", "Signature"}},
		{"evil response wrapping the signed response", func(e *env, r samltest.Response, doc *etree.Document) {
			orig := doc.Root()
			r.ResponseID = "id-evil"
			evil := e.idp.ResponseElement(r)
			ext := evil.CreateElement("samlp:Extensions")
			ext.AddChild(orig)
			doc.SetRoot(evil)
		}, []string{"exactly one Assertion", "Assertion"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, nil)
			ch, reqID := e.begin("flow-1")
			r := e.forged(reqID)
			doc, err := e.idp.Forge(r)
			if err != nil {
				t.Fatal(err)
			}
			tc.wrap(e, r, doc)
			res, err := e.postXML(docBytes(t, doc), "flow-1", ch.State)
			if err == nil {
				t.Fatalf("accepted as %q", res.Identity.Subject)
			}
			for _, w := range tc.wants {
				if strings.Contains(err.Error(), w) {
					wantRefused(t, err, w)
					return
				}
			}
			t.Fatalf("refused for another reason: %v", err)
		})
	}
}

// TestCrewjamXSWFixtures replays crewjam/saml's own XSW permutations
// (testdata/xsw, copied from crewjam/saml v0.6.3 testdata; OneLogin
// metadata and clock of the originals) through Finish.
func TestCrewjamXSWFixtures(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("testdata", "xsw", "TestXsw*_response"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no fixtures: %v", err)
	}
	md := readTestdata(t, "xsw/TestSPCanHandleOneloginResponse_IDPMetadata")
	c := newClock(time.Date(2016, 1, 5, 17, 53, 12, 0, time.UTC))
	cfg := &Config{
		MetadataXML:       md,
		SPKey:             secretFile(t, "sp-key.pem"),
		SPCert:            secretFile(t, "sp-cert.pem"),
		AllowIdPInitiated: true,
		Binding:           "post",
	}
	p, err := cfg.OpenWith(context.Background(), "onelogin", depsFor("https://29ee6d2e.ngrok.io"), Options{Now: c.Now})
	if err != nil {
		t.Fatal(err)
	}
	state := []byte(`{"r":"id-d40c15c104b52691eccf0a2a5c8a15595be75423","f":""}`)
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			req := samltest.PostRequest(p.ACSURL(), url.Values{"SAMLResponse": {strings.TrimSpace(string(b))}})
			_, err = p.Finish(context.Background(), req, state)
			wantRefused(t, err, "")
			if !strings.Contains(err.Error(), "ignature") && !strings.Contains(err.Error(), "exactly one") {
				t.Fatalf("refused, but not for the wrapping: %v", err)
			}
			t.Log(err)
		})
	}
}

// TestCommentInjection: a comment inside a signed NameID does not change
// the signed canonical text, so the signature stays valid; the subject must
// be the whole text (CVE-2018-7340), never the part before the comment.
func TestCommentInjection(t *testing.T) {
	for _, tc := range []struct{ signed, injected string }{
		{"admin@evil", "admin<!---->@evil"},
		{"admin@corp.example.evil.com", "admin@corp.example<!-- x -->.evil.com"},
	} {
		t.Run(tc.injected, func(t *testing.T) {
			e := newEnv(t, nil)
			ch, reqID := e.begin("flow-1")
			r := e.forged(reqID)
			r.NameID = tc.signed
			doc, err := e.idp.Forge(r)
			if err != nil {
				t.Fatal(err)
			}
			x := strings.Replace(string(docBytes(t, doc)), ">"+tc.signed+"<", ">"+tc.injected+"<", 1)
			if !strings.Contains(x, tc.injected) {
				t.Fatal("injection not applied")
			}
			res, err := e.postXML([]byte(x), "flow-1", ch.State)
			if err != nil {
				wantRefused(t, err, "")
				return
			}
			if res.Identity.Subject != tc.signed || res.Identity.Claim(ClaimNameID) != tc.signed {
				t.Fatalf("subject %q, want the whole signed text %q", res.Identity.Subject, tc.signed)
			}
		})
	}
}

// TestCrossIdP: a response IdP A issued for its SP must not log anyone in
// at IdP B's ACS.
func TestCrossIdP(t *testing.T) {
	e := newEnv(t, nil)
	idpB := newIdP(t, e.clock, nil)
	pB := e.open("entra", idpB, nil)

	ch, _ := e.begin("flow-a")
	acs, err := samltest.NewBrowser().Login(context.Background(), e.idp, ch, "alice", "wonderland")
	if err != nil {
		t.Fatal(err)
	}
	if err := acs.ParseForm(); err != nil {
		t.Fatal(err)
	}
	chB, err := pB.Begin(context.Background(), "flow-a", "")
	if err != nil {
		t.Fatal(err)
	}
	_, err = pB.Finish(context.Background(), samltest.PostRequest(pB.ACSURL(), acs.PostForm), chB.State)
	wantRefused(t, err, "")
	t.Log(err)

	// Even forged for B's ACS and audience, A's signature is not B's.
	r := e.idp.NewResponse(pB.ACSURL(), pB.EntityID(), "id-test-2", "alice@example.com")
	doc, err := e.idp.Forge(r)
	if err != nil {
		t.Fatal(err)
	}
	_, err = pB.Finish(context.Background(), samltest.ACSRequest(pB.ACSURL(), docBytes(t, doc), "flow-a"), chB.State)
	wantRefused(t, err, "")
	t.Log(err)
}

func TestClockSkewBoundaries(t *testing.T) {
	now := fixedNow
	for _, tc := range []struct {
		name string
		skew time.Duration
		set  func(r *samltest.Response)
		want string // "" = accepted
	}{
		{"expired exactly at skew", 0, func(r *samltest.Response) {
			r.IssueInstant, r.NotBefore, r.NotOnOrAfter = now.Add(-70*time.Second), now.Add(-70*time.Second), now.Add(-60*time.Second)
		}, ""},
		{"expired one second past skew", 0, func(r *samltest.Response) {
			r.IssueInstant, r.NotBefore, r.NotOnOrAfter = now.Add(-70*time.Second), now.Add(-70*time.Second), now.Add(-61*time.Second)
		}, "expired"},
		{"not yet valid exactly at skew", 0, func(r *samltest.Response) {
			r.NotBefore = now.Add(60 * time.Second)
		}, ""},
		{"not yet valid one second past skew", 0, func(r *samltest.Response) {
			r.NotBefore = now.Add(61 * time.Second)
		}, "not valid before"},
		{"issued in the future past skew", 0, func(r *samltest.Response) {
			r.IssueInstant = now.Add(61 * time.Second)
		}, "future"},
		{"custom skew 10s at the boundary", 10 * time.Second, func(r *samltest.Response) {
			r.IssueInstant, r.NotBefore, r.NotOnOrAfter = now.Add(-20*time.Second), now.Add(-20*time.Second), now.Add(-10*time.Second)
		}, ""},
		{"custom skew 10s one second past", 10 * time.Second, func(r *samltest.Response) {
			r.IssueInstant, r.NotBefore, r.NotOnOrAfter = now.Add(-20*time.Second), now.Add(-20*time.Second), now.Add(-11*time.Second)
		}, "expired"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, func(c *Config) { c.ClockSkew = tc.skew })
			ch, reqID := e.begin("flow-1")
			r := e.forged(reqID)
			tc.set(&r)
			res, err := e.post(r, "flow-1", ch.State)
			if tc.want == "" {
				wantAccepted(t, res, err, "alice@example.com")
				return
			}
			wantRefused(t, err, tc.want)
		})
	}
}

func TestEntityExpansionRefused(t *testing.T) {
	const head = `<samlp:Response xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" ID="x" Version="2.0" Destination="https://usher.example/usher/saml/okta/acs">`
	for name, x := range map[string]string{
		"xxe": `<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]>` + head + `&x;</samlp:Response>`,
		"billion laughs": `<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">` +
			`<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">` +
			`<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">` +
			`<!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">]>` + head + `&lol4;</samlp:Response>`,
	} {
		t.Run(name, func(t *testing.T) {
			e := newEnv(t, nil)
			ch, _ := e.begin("flow-1")
			_, err := e.postXML([]byte(x), "flow-1", ch.State)
			wantRefused(t, err, "DTD")
		})
	}
	t.Run("DTD in a validly signed response", func(t *testing.T) {
		e := newEnv(t, nil)
		ch, reqID := e.begin("flow-1")
		doc, err := e.idp.Forge(e.forged(reqID))
		if err != nil {
			t.Fatal(err)
		}
		x := `<!DOCTYPE samlp:Response [<!ENTITY e "alice">]>` + string(docBytes(t, doc))
		_, err = e.postXML([]byte(x), "flow-1", ch.State)
		wantRefused(t, err, "DTD")
	})
}

func TestOversizedRefused(t *testing.T) {
	t.Run("body", func(t *testing.T) {
		e := newEnv(t, nil)
		ch, _ := e.begin("flow-1")
		big := strings.Repeat("A", 4<<20)
		req := samltest.PostRequest(e.p.ACSURL(), url.Values{"SAMLResponse": {big}, "RelayState": {"flow-1"}})
		if got := e.p.FlowID(req); got != "" {
			t.Fatalf("FlowID read an oversized body: %q", got)
		}
		_, err := e.p.Finish(context.Background(), req, ch.State)
		wantRefused(t, err, "larger than")
	})
	t.Run("decoded response", func(t *testing.T) {
		e := newEnv(t, func(c *Config) { c.MaxResponseBytes = 1024 })
		ch, reqID := e.begin("flow-1")
		_, err := e.post(e.forged(reqID), "flow-1", ch.State)
		wantRefused(t, err, "larger than 1024")
	})
	t.Run("not POST", func(t *testing.T) {
		e := newEnv(t, nil)
		ch, _ := e.begin("flow-1")
		req := samltest.PostRequest(e.p.ACSURL(), url.Values{})
		req.Method = "GET"
		_, err := e.p.Finish(context.Background(), req, ch.State)
		wantRefused(t, err, "only POST")
	})
	t.Run("not base64", func(t *testing.T) {
		e := newEnv(t, nil)
		ch, _ := e.begin("flow-1")
		req := samltest.PostRequest(e.p.ACSURL(), url.Values{"SAMLResponse": {"%%%"}, "RelayState": {"flow-1"}})
		_, err := e.p.Finish(context.Background(), req, ch.State)
		wantRefused(t, err, "base64")
	})
}

func TestOptionsAccepted(t *testing.T) {
	for _, tc := range []struct {
		name    string
		mod     func(*Config)
		set     func(e *env, r *samltest.Response)
		subject string
		want    string
	}{
		{"only response signed, allowed", func(c *Config) { c.AllowUnsignedAssertions = true },
			func(_ *env, r *samltest.Response) { r.SignAssertion, r.SignResponse = false, true }, "alice@example.com", ""},
		{"unsigned assertion, unsigned response, allowed", func(c *Config) { c.AllowUnsignedAssertions = true },
			func(_ *env, r *samltest.Response) { r.SignAssertion = false }, "", "neither the Response nor the Assertion is signed"},
		{"both signed", nil,
			func(_ *env, r *samltest.Response) { r.SignResponse = true }, "alice@example.com", ""},
		{"encrypted signed assertion", nil,
			func(e *env, r *samltest.Response) { r.EncryptTo = e.p.cert }, "alice@example.com", ""},
		{"nameid format matches", func(c *Config) { c.NameIDFormat = "emailAddress" },
			func(*env, *samltest.Response) {}, "alice@example.com", ""},
		{"nameid format differs", func(c *Config) { c.NameIDFormat = "persistent" },
			func(*env, *samltest.Response) {}, "", "NameID format"},
		{"subject from attribute", func(c *Config) { c.Subject = "http://schemas.microsoft.com/identity/claims/objectidentifier" },
			func(_ *env, r *samltest.Response) {
				r.Attributes = map[string][]string{"http://schemas.microsoft.com/identity/claims/objectidentifier": {"0b9f-42"}}
			}, "0b9f-42", ""},
		{"subject attribute missing", func(c *Config) { c.Subject = "oid" },
			func(*env, *samltest.Response) {}, "", `no attribute "oid"`},
		{"subject attribute ambiguous", func(c *Config) { c.Subject = "oid" },
			func(_ *env, r *samltest.Response) { r.Attributes = map[string][]string{"oid": {"a", "b"}} }, "", "several values"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, tc.mod)
			ch, reqID := e.begin("flow-1")
			r := e.forged(reqID)
			tc.set(e, &r)
			res, err := e.post(r, "flow-1", ch.State)
			if tc.want != "" {
				wantRefused(t, err, tc.want)
				return
			}
			wantAccepted(t, res, err, tc.subject)
		})
	}
}

func TestFriendlyNameClaims(t *testing.T) {
	e := newEnv(t, nil)
	ch, reqID := e.begin("flow-1")
	r := e.forged(reqID)
	r.Attributes = map[string][]string{
		"urn:oid:1.3.6.1.4.1.5923.1.1.1.7": {"jira-admins", "jira-users"},
		"nameid":                           {"spoofed"},
	}
	r.FriendlyNames = map[string]string{"urn:oid:1.3.6.1.4.1.5923.1.1.1.7": "eduPersonEntitlement"}
	res, err := e.post(r, "flow-1", ch.State)
	wantAccepted(t, res, err, "alice@example.com")
	for _, k := range []string{"urn:oid:1.3.6.1.4.1.5923.1.1.1.7", "eduPersonEntitlement"} {
		if got := strings.Join(res.Identity.Claims[k], ","); got != "jira-admins,jira-users" {
			t.Errorf("claim %s = %q", k, got)
		}
	}
	if got := res.Identity.Claims[ClaimNameID]; len(got) != 1 || got[0] != "alice@example.com" {
		t.Errorf("an attribute overrode the nameid claim: %q", got)
	}
}
