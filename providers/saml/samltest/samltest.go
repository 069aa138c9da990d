// Package samltest owns an in-process SAML identity provider for tests and
// the demo: crewjam/saml's samlidp server behind an httptest server, with
// users, attributes and groups, a browser stand-in that walks the real
// redirect → login form → auto-POST exchange, and a forge for hand-built
// signed responses (fixed clock, chosen fields) to test attacks. It is
// never reachable from a configuration file.
package samltest

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log"
	"math/big"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"strings"
	"time"

	"github.com/crewjam/saml/logger"
	"github.com/crewjam/saml/samlidp"
	"github.com/jonboulle/clockwork"
	dsig "github.com/russellhaering/goxmldsig"
	"golang.org/x/crypto/bcrypt"
	"golang.org/x/net/html"

	"github.com/usherhq/usher/providers"
)

// User is a person the IdP knows. samlidp sends Email as the NameID
// (emailAddress format) and the rest as attributes: uid (Name), mail, cn,
// sn, givenName and eduPersonAffiliation (Groups).
type User struct {
	Name       string
	Password   string
	Email      string
	CommonName string
	GivenName  string
	Surname    string
	Groups     []string
}

// Options configure New. Zero values pick defaults.
type Options struct {
	// Now is the IdP's clock. Default time.Now.
	Now func() time.Time
	// Key and Cert sign responses. Default: a fresh RSA-2048 pair valid
	// for ten years either side of Now.
	Key  *rsa.PrivateKey
	Cert *x509.Certificate
	// Users are added at start.
	Users []User
	// Logger receives samlidp's log lines. Default: discarded.
	Logger logger.Interface
}

// IdP is a running test identity provider. Close it when done.
type IdP struct {
	Key    *rsa.PrivateKey
	Cert   *x509.Certificate
	Server *samlidp.Server

	srv *httptest.Server
	now func() time.Time
}

// New starts an IdP on a local httptest server.
func New(opts Options) (*IdP, error) {
	i := &IdP{Key: opts.Key, Cert: opts.Cert, now: opts.Now}
	if opts.Logger == nil {
		opts.Logger = log.New(io.Discard, "", 0)
	}
	if i.now == nil {
		i.now = time.Now
	}
	if i.Key == nil || i.Cert == nil {
		k, c, err := NewKeyPair("samltest idp", i.now())
		if err != nil {
			return nil, err
		}
		i.Key, i.Cert = k, c
	}
	i.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		i.Server.ServeHTTP(w, r)
	}))
	u, err := url.Parse(i.srv.URL)
	if err != nil {
		i.srv.Close()
		return nil, err
	}
	i.Server, err = samlidp.New(samlidp.Options{
		URL:         *u,
		Key:         i.Key,
		Certificate: i.Cert,
		Store:       &samlidp.MemoryStore{},
		Logger:      opts.Logger,
		Clock:       dsig.NewFakeClock(nowClock{Clock: clockwork.NewRealClock(), now: i.now}),
	})
	if err != nil {
		i.srv.Close()
		return nil, fmt.Errorf("samltest: start idp: %w", err)
	}
	for _, u := range opts.Users {
		if err := i.AddUser(u); err != nil {
			i.srv.Close()
			return nil, err
		}
	}
	return i, nil
}

type nowClock struct {
	clockwork.Clock
	now func() time.Time
}

func (c nowClock) Now() time.Time { return c.now() }

// Close stops the HTTP server.
func (i *IdP) Close() { i.srv.Close() }

// URL is the IdP's base URL.
func (i *IdP) URL() string { return i.srv.URL }

// EntityID is the IdP's entity ID (its metadata URL).
func (i *IdP) EntityID() string { return i.srv.URL + "/metadata" }

// MetadataURL is where the IdP serves its metadata.
func (i *IdP) MetadataURL() string { return i.srv.URL + "/metadata" }

// Metadata returns the IdP metadata XML.
func (i *IdP) Metadata() ([]byte, error) {
	return xmlBytes(i.Server.IDP.Metadata())
}

// AddUser stores u with a bcrypt hash of its password.
func (i *IdP) AddUser(u User) error {
	hash, err := bcrypt.GenerateFromPassword([]byte(u.Password), bcrypt.MinCost)
	if err != nil {
		return fmt.Errorf("samltest: hash password: %w", err)
	}
	err = i.Server.Store.Put("/users/"+u.Name, samlidp.User{
		Name:           u.Name,
		HashedPassword: hash,
		Groups:         u.Groups,
		Email:          u.Email,
		CommonName:     u.CommonName,
		Surname:        u.Surname,
		GivenName:      u.GivenName,
	})
	if err != nil {
		return fmt.Errorf("samltest: add user %s: %w", u.Name, err)
	}
	return nil
}

// AddServiceProvider registers an SP from its metadata XML under name.
func (i *IdP) AddServiceProvider(name string, metadata []byte) error {
	return i.admin(http.MethodPut, "/services/"+name, metadata)
}

// AddShortcut makes /login/{name} start an IdP-initiated login at the SP
// with entity ID spEntityID, sending relayState ("" for none).
func (i *IdP) AddShortcut(name, spEntityID, relayState string) error {
	sc := samlidp.Shortcut{Name: name, ServiceProviderID: spEntityID}
	if relayState != "" {
		sc.RelayState = &relayState
	}
	b, err := json.Marshal(sc)
	if err != nil {
		return err
	}
	return i.admin(http.MethodPut, "/shortcuts/"+name, b)
}

func (i *IdP) admin(method, path string, body []byte) error {
	rec := httptest.NewRecorder()
	i.Server.ServeHTTP(rec, httptest.NewRequest(method, path, bytes.NewReader(body)))
	if rec.Code/100 != 2 {
		return fmt.Errorf("samltest: %s %s: %d %s", method, path, rec.Code, strings.TrimSpace(rec.Body.String()))
	}
	return nil
}

// Browser is a user agent with a cookie jar that walks IdP pages.
type Browser struct {
	Client *http.Client
}

// NewBrowser returns a browser that does not follow redirects on its own.
func NewBrowser() *Browser {
	jar, _ := cookiejar.New(nil) // cookiejar.New never fails with nil options
	return &Browser{Client: &http.Client{
		Jar: jar,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}}
}

// Login performs the browser side of an SP-initiated login: it signs user
// in at the IdP, sends ch there (redirect or auto-POST), fills the login
// form if the IdP still shows one, and returns the POST the IdP's
// auto-submitted form would make to the ACS, ready for Provider.Finish.
//
// Signing in first matters for signed HTTP-Redirect requests: samlidp's
// login form re-posts the request without its query-string signature.
func (b *Browser) Login(ctx context.Context, idp *IdP, ch *providers.Challenge, user, password string) (*http.Request, error) {
	if err := b.SignIn(ctx, idp, user, password); err != nil {
		return nil, err
	}
	var page *form
	var err error
	if ch.Form == nil {
		page, err = b.fetchForm(ctx, http.MethodGet, ch.URL, nil)
	} else {
		page, err = b.fetchForm(ctx, http.MethodPost, ch.URL, ch.Form)
	}
	if err != nil {
		return nil, fmt.Errorf("samltest: send AuthnRequest: %w", err)
	}
	if _, ok := page.values["password"]; ok {
		page.values.Set("user", user)
		page.values.Set("password", password)
		if page, err = b.fetchForm(ctx, http.MethodPost, page.action, page.values); err != nil {
			return nil, fmt.Errorf("samltest: submit login form: %w", err)
		}
	}
	return page.request()
}

// SignIn logs user in at the IdP, leaving its session cookie in the jar.
func (b *Browser) SignIn(ctx context.Context, idp *IdP, user, password string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, idp.URL()+"/login",
		strings.NewReader(url.Values{"user": {user}, "password": {password}}.Encode()))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := b.Client.Do(req)
	if err != nil {
		return fmt.Errorf("samltest: sign in at IdP: %w", err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("samltest: sign in at IdP: %s", resp.Status)
	}
	return nil
}

// IdPInitiated signs user in at the IdP and follows the shortcut,
// returning the unsolicited POST to the ACS.
func (b *Browser) IdPInitiated(ctx context.Context, idp *IdP, shortcut, user, password string) (*http.Request, error) {
	if err := b.SignIn(ctx, idp, user, password); err != nil {
		return nil, err
	}
	page, err := b.fetchForm(ctx, http.MethodGet, idp.URL()+"/login/"+shortcut, nil)
	if err != nil {
		return nil, err
	}
	return page.request()
}

// form is an HTML form found on a page.
type form struct {
	action string
	values url.Values
}

// request is the POST the form submits, as a server receives it.
func (f *form) request() (*http.Request, error) {
	if f.values.Get("SAMLResponse") == "" {
		return nil, errors.New("samltest: the IdP page has no SAMLResponse form")
	}
	return PostRequest(f.action, f.values), nil
}

// PostRequest builds a form POST to target as an HTTP server would receive
// it (RequestURI set, as httptest.NewRequest does).
func PostRequest(target string, values url.Values) *http.Request {
	r := httptest.NewRequest(http.MethodPost, target, strings.NewReader(values.Encode()))
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return r
}

func (b *Browser) fetchForm(ctx context.Context, method, target string, values url.Values) (*form, error) {
	var body io.Reader
	if values != nil {
		body = strings.NewReader(values.Encode())
	}
	req, err := http.NewRequestWithContext(ctx, method, target, body)
	if err != nil {
		return nil, err
	}
	if values != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	resp, err := b.Client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	page, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s %s: %s: %s", method, target, resp.Status, bytes.TrimSpace(page))
	}
	f, err := parseForm(page)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, target, err)
	}
	if f.action == "" {
		f.action = target
	}
	return f, nil
}

// parseForm reads the first form of an HTML page.
func parseForm(page []byte) (*form, error) {
	doc, err := html.Parse(bytes.NewReader(page))
	if err != nil {
		return nil, err
	}
	var f *form
	var walk func(n *html.Node)
	walk = func(n *html.Node) {
		if n.Type == html.ElementNode {
			switch n.Data {
			case "form":
				if f == nil {
					f = &form{action: attr(n, "action"), values: url.Values{}}
				}
			case "input":
				if f != nil && attr(n, "name") != "" {
					f.values.Set(attr(n, "name"), attr(n, "value"))
				}
			}
		}
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			walk(c)
		}
	}
	walk(doc)
	if f == nil {
		return nil, fmt.Errorf("no form on the page: %.200s", page)
	}
	return f, nil
}

func attr(n *html.Node, name string) string {
	for _, a := range n.Attr {
		if a.Key == name {
			return a.Val
		}
	}
	return ""
}

// NewKeyPair makes an RSA-2048 key and a self-signed certificate valid ten
// years either side of now.
func NewKeyPair(cn string, now time.Time) (*rsa.PrivateKey, *x509.Certificate, error) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(now.UnixNano()),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    now.AddDate(-10, 0, 0),
		NotAfter:     now.AddDate(10, 0, 0),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, err
	}
	return key, cert, nil
}

// PEM encodes a key pair for a provider's sp_key and sp_cert.
func PEM(key *rsa.PrivateKey, cert *x509.Certificate) (keyPEM, certPEM string) {
	k := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)})
	c := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw})
	return string(k), string(c)
}
