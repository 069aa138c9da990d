// Package oidctest owns a real, in-process OpenID Provider built on
// zitadel/oidc's op package: discovery, JWKS, authorization endpoint with an
// HTML login form, token endpoint with PKCE, userinfo and end_session. Tests
// run it on loopback to drive real authorization code flows; `usher demo`
// runs it on a fixed 127.0.0.1 port so a browser can log in. It is never a
// provider type a configuration file can name.
package oidctest

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/zitadel/oidc/v3/pkg/op"
)

// User is a person who can log in at the IdP.
type User struct {
	Subject  string
	Username string
	Password string
	Email    string
	Name     string
	// Groups become the "groups" claim of ID token and userinfo.
	Groups []string
	// Claims are further claims, nested objects allowed
	// ({"realm_access": {"roles": [...]}}).
	Claims map[string]any
	// EmailVerified is what the IdP says of Email; the zero value says
	// it is verified.
	EmailVerified Verification
}

// Verification is what an IdP says of a user's e-mail address.
type Verification int

const (
	// Verified: email_verified is true.
	Verified Verification = iota
	// Unverified: email_verified is false.
	Unverified
	// NoVerificationClaim: no email_verified claim at all, as Entra ID.
	NoVerificationClaim
)

// Client is a registered relying party. A client without Secret is public
// and must use PKCE.
type Client struct {
	ID           string
	Secret       string
	RedirectURIs []string
	// PostLogoutRedirectURIs are the allowed end_session return URLs.
	PostLogoutRedirectURIs []string
}

// Options configure an IdP.
type Options struct {
	// Issuer is the IdP's base URL (scheme and host, no trailing slash).
	// New requires it; Start derives it from the listener.
	Issuer string
	// Addr is where Start listens, default "127.0.0.1:0".
	Addr string
	// Name is shown on the login page, default "Test IdP".
	Name    string
	Users   []User
	Clients []Client
	// IDTokenLifetime defaults to one hour.
	IDTokenLifetime time.Duration
	// IssParameter makes the IdP behave as RFC 9207 describes: it announces
	// authorization_response_iss_parameter_supported in discovery and adds
	// the iss parameter to every authorization response redirect.
	IssParameter bool
	Log          *slog.Logger
}

// IdP is a running OpenID Provider. It is an http.Handler; Start also
// serves it. Safe for concurrent use.
type IdP struct {
	issuer   string
	name     string
	issParam bool
	log      *slog.Logger
	store    *storage
	provider *op.Provider
	mux      *http.ServeMux
	srv      *http.Server
}

// New builds an IdP for opts.Issuer without serving it; the caller serves
// it at that address.
func New(opts Options) (*IdP, error) {
	iss, err := url.Parse(opts.Issuer)
	if err != nil || iss.Scheme == "" || iss.Host == "" || strings.Trim(iss.Path, "/") != "" {
		return nil, fmt.Errorf("oidctest: issuer %q must be an absolute URL without a path", opts.Issuer)
	}
	issuer := strings.TrimSuffix(opts.Issuer, "/")
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, fmt.Errorf("oidctest: generate signing key: %w", err)
	}
	ttl := opts.IDTokenLifetime
	if ttl <= 0 {
		ttl = time.Hour
	}
	name := opts.Name
	if name == "" {
		name = "Test IdP"
	}
	logger := opts.Log
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	st := &storage{
		key:      key,
		keyID:    newID(),
		now:      time.Now,
		tokenTT:  ttl,
		users:    map[string]*User{},
		byName:   map[string]*User{},
		clients:  map[string]*client{},
		requests: map[string]*authRequest{},
		codes:    map[string]string{},
		tokens:   map[string]*accessToken{},
	}
	for _, u := range opts.Users {
		if u.Subject == "" || u.Username == "" {
			return nil, errors.New("oidctest: every user needs Subject and Username")
		}
		u := u
		u.Groups = append([]string(nil), u.Groups...)
		st.users[u.Subject] = &u
		st.byName[u.Username] = &u
		if u.Email != "" {
			if _, taken := st.byName[u.Email]; !taken {
				st.byName[u.Email] = &u
			}
		}
	}
	for _, c := range opts.Clients {
		if c.ID == "" {
			return nil, errors.New("oidctest: every client needs an ID")
		}
		st.clients[c.ID] = &client{
			id:             c.ID,
			secret:         c.Secret,
			redirectURIs:   append([]string(nil), c.RedirectURIs...),
			logoutURIs:     append([]string(nil), c.PostLogoutRedirectURIs...),
			idTokenTTL:     ttl,
			loginURLPrefix: issuer + "/login?authRequestID=",
		}
	}

	var cryptoKey [32]byte
	_, _ = rand.Read(cryptoKey[:]) // crypto/rand.Read never fails (Go 1.24+)
	provider, err := op.NewProvider(&op.Config{
		CryptoKey:                cryptoKey,
		CryptoKeyId:              "k1",
		DefaultLogoutRedirectURI: "/logged-out",
		CodeMethodS256:           true,
		AuthMethodPost:           true,
	}, st, op.StaticIssuer(issuer), op.WithAllowInsecure())
	if err != nil {
		return nil, fmt.Errorf("oidctest: create provider: %w", err)
	}

	i := &IdP{
		issuer:   issuer,
		name:     name,
		issParam: opts.IssParameter,
		log:      logger,
		store:    st,
		provider: provider,
		mux:      http.NewServeMux(),
	}
	i.mux.Handle("/login", op.NewIssuerInterceptor(provider.IssuerFromRequest).HandlerFunc(i.login))
	i.mux.HandleFunc("/logged-out", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = io.WriteString(w, "signed out\n")
	})
	i.mux.Handle("/", provider)
	return i, nil
}

// Start builds an IdP and serves it on opts.Addr (default an ephemeral
// loopback port); the issuer is http://{listen address}. Close stops it.
func Start(opts Options) (*IdP, error) {
	addr := opts.Addr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("oidctest: listen: %w", err)
	}
	opts.Issuer = "http://" + ln.Addr().String()
	i, err := New(opts)
	if err != nil {
		ln.Close()
		return nil, err
	}
	i.srv = &http.Server{Handler: i, ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(i.log.Handler(), slog.LevelWarn)}
	go func() {
		if err := i.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			i.log.Error("oidctest: serve", "issuer", i.issuer, "err", err)
		}
	}()
	return i, nil
}

// Close stops a server begun by Start; it is a no-op for New.
func (i *IdP) Close() error {
	if i.srv == nil {
		return nil
	}
	return i.srv.Close()
}

// Issuer is the IdP's issuer URL, also its discovery base.
func (i *IdP) Issuer() string { return i.issuer }

// PublicKey is the RSA key the IdP signs ID tokens with.
func (i *IdP) PublicKey() *rsa.PublicKey { return &i.store.key.PublicKey }

// SignIDToken signs arbitrary claims with the IdP's own key and key ID
// (RS256), for tests that need tokens the IdP would never issue.
func (i *IdP) SignIDToken(claims map[string]any) (string, error) {
	signer, err := jose.NewSigner(jose.SigningKey{
		Algorithm: jose.RS256,
		Key:       &jose.JSONWebKey{Key: i.store.key, KeyID: i.store.keyID},
	}, (&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		return "", fmt.Errorf("oidctest: signer: %w", err)
	}
	payload, err := json.Marshal(claims)
	if err != nil {
		return "", fmt.Errorf("oidctest: marshal claims: %w", err)
	}
	obj, err := signer.Sign(payload)
	if err != nil {
		return "", fmt.Errorf("oidctest: sign: %w", err)
	}
	return obj.CompactSerialize()
}

// ServeHTTP serves the IdP's endpoints and login page.
func (i *IdP) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !i.issParam {
		i.mux.ServeHTTP(w, r)
		return
	}
	if r.URL.Path == "/.well-known/openid-configuration" {
		i.discoveryWithIss(w, r)
		return
	}
	i.mux.ServeHTTP(&issWriter{ResponseWriter: w, issuer: i.issuer}, r)
}

// discoveryWithIss adds the RFC 9207 flag, which zitadel/oidc does not
// know about, to the discovery document.
func (i *IdP) discoveryWithIss(w http.ResponseWriter, r *http.Request) {
	rec := httptest.NewRecorder()
	i.mux.ServeHTTP(rec, r)
	var doc map[string]any
	if rec.Code != http.StatusOK || json.Unmarshal(rec.Body.Bytes(), &doc) != nil {
		w.WriteHeader(rec.Code)
		_, _ = w.Write(rec.Body.Bytes())
		return
	}
	doc["authorization_response_iss_parameter_supported"] = true
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(doc)
}

// issWriter adds the iss parameter to authorization responses: redirects
// that carry a code or an error.
type issWriter struct {
	http.ResponseWriter
	issuer string
}

func (w *issWriter) WriteHeader(code int) {
	if code >= 300 && code < 400 {
		if u, err := url.Parse(w.Header().Get("Location")); err == nil {
			q := u.Query()
			if q.Has("code") || q.Has("error") {
				q.Set("iss", w.issuer)
				u.RawQuery = q.Encode()
				w.Header().Set("Location", u.String())
			}
		}
	}
	w.ResponseWriter.WriteHeader(code)
}

var loginPage = template.Must(template.New("login").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Sign in · {{.Name}}</title>
<style>body{font-family:sans-serif;max-width:22rem;margin:4rem auto}label,input,button{display:block;width:100%;margin:.4rem 0}.err{color:#b00}</style>
</head><body>
<h1>{{.Name}}</h1>
<p>Sign in to continue.</p>
{{if .Error}}<p class="err">{{.Error}}</p>{{end}}
<form method="post" action="{{.Action}}">
<input type="hidden" name="authRequestID" value="{{.ID}}">
<label>Username <input name="username" value="{{.Username}}" autocomplete="username" autofocus></label>
<label>Password <input type="password" name="password" autocomplete="current-password"></label>
<button type="submit">Sign in</button>
</form></body></html>
`))

type loginData struct {
	Name, Action, ID, Username, Error string
}

// login is the IdP's own login UI: a username/password form that completes
// the pending auth request and sends the browser back into the OP, which
// redirects to the client with code and state.
func (i *IdP) login(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		http.Error(w, "bad form", http.StatusBadRequest)
		return
	}
	id := r.Form.Get("authRequestID")
	hint, ok := i.store.loginHint(id)
	if !ok {
		http.Error(w, "unknown or finished login request", http.StatusBadRequest)
		return
	}
	data := loginData{Name: i.name, Action: i.issuer + "/login", ID: id, Username: hint}
	switch r.Method {
	case http.MethodGet:
		i.render(w, http.StatusOK, data)
	case http.MethodPost:
		username := r.PostForm.Get("username")
		if err := i.store.checkPassword(id, username, r.PostForm.Get("password")); err != nil {
			data.Username, data.Error = username, err.Error()
			i.render(w, http.StatusUnauthorized, data)
			return
		}
		http.Redirect(w, r, op.AuthCallbackURL(i.provider)(r.Context(), id), http.StatusFound)
	default:
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
	}
}

func (i *IdP) render(w http.ResponseWriter, status int, data loginData) {
	var buf bytes.Buffer
	if err := loginPage.Execute(&buf, data); err != nil {
		http.Error(w, "render login page", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

// Login does what a browser does with authURL (an authorization request
// URL pointing at this IdP): it follows the redirects to the login form,
// posts username and password, and follows the IdP's redirects until one
// leaves the IdP. It returns that URL, the client's callback with code and
// state (or with an error). client may carry a cookie jar; its redirect
// policy is replaced for the exchange.
func (i *IdP) Login(client *http.Client, authURL, username, password string) (string, error) {
	c := &http.Client{}
	if client != nil {
		cp := *client
		c = &cp
	}
	c.CheckRedirect = func(req *http.Request, via []*http.Request) error {
		if !i.owns(req.URL) {
			return http.ErrUseLastResponse
		}
		if len(via) >= 10 {
			return errors.New("oidctest: too many redirects")
		}
		return nil
	}

	resp, err := c.Get(authURL)
	if err != nil {
		return "", fmt.Errorf("oidctest: authorization request: %w", err)
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	resp.Body.Close()
	if loc, ok := i.leaving(resp); ok {
		return loc, nil
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("oidctest: authorization request: %s: %s", resp.Status, bytes.TrimSpace(body))
	}
	id := resp.Request.URL.Query().Get("authRequestID")
	if id == "" {
		return "", fmt.Errorf("oidctest: authorization request ended at %s, not the login form", resp.Request.URL)
	}

	resp, err = c.PostForm(i.issuer+"/login", url.Values{
		"authRequestID": {id},
		"username":      {username},
		"password":      {password},
	})
	if err != nil {
		return "", fmt.Errorf("oidctest: post login form: %w", err)
	}
	resp.Body.Close()
	if loc, ok := i.leaving(resp); ok {
		return loc, nil
	}
	return "", fmt.Errorf("oidctest: login as %q failed: %s", username, resp.Status)
}

// leaving reports a redirect to somewhere outside the IdP.
func (i *IdP) leaving(resp *http.Response) (string, bool) {
	if resp.StatusCode < 300 || resp.StatusCode >= 400 {
		return "", false
	}
	loc, err := resp.Location()
	if err != nil || i.owns(loc) {
		return "", false
	}
	return loc.String(), true
}

func (i *IdP) owns(u *url.URL) bool {
	return strings.HasPrefix(u.Scheme+"://"+u.Host+"/", i.issuer+"/")
}

// SetUser adds a user or replaces the one with the same Subject, so a test
// can change groups or names between two logins.
func (i *IdP) SetUser(u User) {
	st := i.store
	st.mu.Lock()
	defer st.mu.Unlock()
	if old, ok := st.users[u.Subject]; ok {
		delete(st.byName, old.Username)
		if st.byName[old.Email] == old {
			delete(st.byName, old.Email)
		}
	}
	u.Groups = append([]string(nil), u.Groups...)
	st.users[u.Subject] = &u
	st.byName[u.Username] = &u
	if _, taken := st.byName[u.Email]; u.Email != "" && !taken {
		st.byName[u.Email] = &u
	}
}
