package saml

import (
	"bytes"
	"context"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/html"

	"github.com/jonboulle/clockwork"
	"github.com/usherhq/usher/config"
	"github.com/usherhq/usher/providers"
	"github.com/usherhq/usher/providers/saml/samltest"
)

var update = flag.Bool("update", false, "rewrite golden files under testdata/")

// fixedNow is the clock of every test.
var fixedNow = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

var publicURL = mustURL("https://usher.example")

func mustURL(s string) *url.URL {
	u, err := url.Parse(s)
	if err != nil {
		panic(err)
	}
	return u
}

func readTestdata(t testing.TB, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

type keyPair struct {
	key  *rsa.PrivateKey
	cert *x509.Certificate
}

var (
	fixedKeysOnce sync.Once
	fixedSP       keyPair
	fixedIdP      keyPair
)

// fixedKeys are the committed test key pairs, so golden files stay stable.
func fixedKeys(t testing.TB) (sp, idp keyPair) {
	t.Helper()
	fixedKeysOnce.Do(func() {
		load := func(name string) keyPair {
			k, err := parseKey([]byte(readTestdata(t, name+"-key.pem")))
			if err != nil {
				panic(err)
			}
			c, err := parseCert([]byte(readTestdata(t, name+"-cert.pem")))
			if err != nil {
				panic(err)
			}
			return keyPair{k, c}
		}
		fixedSP, fixedIdP = load("sp"), load("idp")
	})
	return fixedSP, fixedIdP
}

// newClock is a settable test clock at t.
func newClock(t time.Time) *clockwork.FakeClock { return clockwork.NewFakeClockAt(t) }

// env is an IdP from samltest and a Provider trusting it.
type env struct {
	t     testing.TB
	clock *clockwork.FakeClock
	idp   *samltest.IdP
	p     *Provider
	ids   int
}

func newIdP(t testing.TB, c *clockwork.FakeClock, kp *keyPair) *samltest.IdP {
	t.Helper()
	opts := samltest.Options{
		Now: c.Now,
		Users: []samltest.User{{
			Name: "alice", Password: "wonderland", Email: "alice@example.com",
			CommonName: "Alice Liddell", GivenName: "Alice", Surname: "Liddell",
			Groups: []string{"jira-users", "confluence-users"},
		}},
	}
	if kp != nil {
		opts.Key, opts.Cert = kp.key, kp.cert
	}
	idp, err := samltest.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(idp.Close)
	return idp
}

// newEnv starts an IdP with the fixed IdP key and opens a provider "okta"
// for it; mod adjusts the provider config.
func newEnv(t testing.TB, mod func(*Config)) *env {
	t.Helper()
	c := newClock(fixedNow)
	_, idpKeys := fixedKeys(t)
	idp := newIdP(t, c, &idpKeys)
	e := &env{t: t, clock: c, idp: idp}
	e.p = e.open("okta", idp, mod)
	return e
}

// open opens a provider with id trusting idp, and registers it at idp.
func (e *env) open(id string, idp *samltest.IdP, mod func(*Config)) *Provider {
	e.t.Helper()
	md, err := idp.Metadata()
	if err != nil {
		e.t.Fatal(err)
	}
	cfg := &Config{
		MetadataXML: string(md),
		SPKey:       config.SecretValue(readTestdata(e.t, "sp-key.pem")),
		SPCert:      config.SecretValue(readTestdata(e.t, "sp-cert.pem")),
	}
	if mod != nil {
		mod(cfg)
	}
	p, err := cfg.OpenWith(context.Background(), id, providers.Deps{PublicURL: publicURL}, Options{
		Now: e.clock.Now,
		NewID: func() string {
			e.ids++
			return fmt.Sprintf("id-test-%d", e.ids)
		},
	})
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { _ = p.Close() })
	spMD, _, err := p.Metadata()
	if err != nil {
		e.t.Fatal(err)
	}
	if err := idp.AddServiceProvider(id, spMD); err != nil {
		e.t.Fatal(err)
	}
	return p
}

// begin starts a login for flowID and returns its state and request ID.
func (e *env) begin(flowID string) (*providers.Challenge, string) {
	e.t.Helper()
	ch, err := e.p.Begin(context.Background(), flowID, "")
	if err != nil {
		e.t.Fatal(err)
	}
	return ch, fmt.Sprintf("id-test-%d", e.ids)
}

// forged is a response the IdP signs for e.p answering requestID.
func (e *env) forged(requestID string) samltest.Response {
	return e.idp.NewResponse(e.p.ACSURL(), e.p.EntityID(), requestID, "alice@example.com")
}

// post forges r and posts it to e.p's ACS with state, returning Finish's result.
func (e *env) post(r samltest.Response, flowID string, state []byte) (*providers.Result, error) {
	e.t.Helper()
	doc, err := e.idp.Forge(r)
	if err != nil {
		e.t.Fatal(err)
	}
	b, err := samltest.Bytes(doc)
	if err != nil {
		e.t.Fatal(err)
	}
	return e.postXML(b, flowID, state)
}

func (e *env) postXML(b []byte, flowID string, state []byte) (*providers.Result, error) {
	req := samltest.ACSRequest(e.p.ACSURL(), b, flowID)
	if got := e.p.FlowID(req); got != flowID {
		e.t.Fatalf("FlowID = %q, want %q", got, flowID)
	}
	return e.p.Finish(context.Background(), req, state)
}

// wantRefused fails unless err is a refusal whose text contains want.
func wantRefused(t testing.TB, err error, want string) {
	t.Helper()
	if err == nil {
		t.Fatalf("accepted, want refusal containing %q", want)
	}
	if !errors.Is(err, providers.ErrRefused) {
		t.Fatalf("error %v is not a refusal", err)
	}
	if !strings.Contains(err.Error(), want) {
		t.Fatalf("refusal %q does not say %q", err, want)
	}
}

func wantAccepted(t testing.TB, res *providers.Result, err error, subject string) {
	t.Helper()
	if err != nil {
		t.Fatalf("refused: %v", err)
	}
	if res.Identity.Subject != subject {
		t.Fatalf("subject = %q, want %q", res.Identity.Subject, subject)
	}
}

func secretFile(t testing.TB, name string) config.Secret {
	t.Helper()
	return config.SecretValue(readTestdata(t, name))
}

func depsFor(public string) providers.Deps {
	return providers.Deps{PublicURL: mustURL(public)}
}

func jsonUnmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }

func httptestRequest(method, target string, body io.Reader) *http.Request {
	return httptest.NewRequest(method, target, body)
}

type htmlForm struct {
	action string
	values url.Values
}

// samltestForm reads the first form of an IdP page (action and inputs).
func samltestForm(page []byte) (*htmlForm, error) {
	doc, err := html.Parse(bytes.NewReader(page))
	if err != nil {
		return nil, err
	}
	var f *htmlForm
	var walk func(n *html.Node)
	walk = func(n *html.Node) {
		if n.Type == html.ElementNode {
			get := func(k string) string {
				for _, a := range n.Attr {
					if a.Key == k {
						return a.Val
					}
				}
				return ""
			}
			switch {
			case n.Data == "form" && f == nil:
				f = &htmlForm{action: get("action"), values: url.Values{}}
			case n.Data == "input" && f != nil && get("name") != "":
				f.values.Set(get("name"), get("value"))
			}
		}
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			walk(c)
		}
	}
	walk(doc)
	if f == nil {
		return nil, errors.New("no form")
	}
	return f, nil
}
