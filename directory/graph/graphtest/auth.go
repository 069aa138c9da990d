package graphtest

import (
	"crypto/rand"
	"crypto/sha1" //nolint:gosec // x5t is a SHA-1 thumbprint by definition.
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/google/uuid"
)

type certKey struct {
	cert      *x509.Certificate
	x5t, s256 string
}

// AddCertApp registers an app that authenticates with a client assertion
// signed by the key of cert (reference §2.1). Both header styles are
// accepted: RS256 with x5t (SHA-1) and PS256 with x5t#S256. [U] which
// combinations Entra still accepts; the emulator accepts either
// thumbprint with RS256 or PS256.
func (s *Server) AddCertApp(clientID string, cert *x509.Certificate) {
	sum1 := sha1.Sum(cert.Raw) //nolint:gosec // see import
	sum256 := sha256.Sum256(cert.Raw)
	s.lock(func() {
		s.apps[clientID] = &app{cert: &certKey{
			cert: cert,
			x5t:  base64.RawURLEncoding.EncodeToString(sum1[:]),
			s256: base64.RawURLEncoding.EncodeToString(sum256[:]),
		}}
	})
}

// oauthError is the v2.0 endpoint's error shape (reference §2.1), not
// Graph's.
func (s *Server) oauthError(status int, code string, aadsts int, msg string) reply {
	now := s.clock.Now().UTC()
	return reply{status: status, body: map[string]any{
		"error": code,
		"error_description": fmt.Sprintf("AADSTS%d: %s Trace ID: %s Correlation ID: %s Timestamp: %s",
			aadsts, msg, uuid.NewString(), uuid.NewString(), now.Format("2006-01-02 15:04:05Z")),
		"error_codes":    []int{aadsts},
		"timestamp":      now.Format("2006-01-02 15:04:05Z"),
		"trace_id":       uuid.NewString(),
		"correlation_id": uuid.NewString(),
	}}
}

// token serves POST /{tenant}/oauth2/v2.0/token for the client
// credentials grant.
func (s *Server) token(r *http.Request) reply {
	tenant := strings.TrimSuffix(strings.TrimPrefix(r.URL.Path, "/"), "/oauth2/v2.0/token")
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/x-www-form-urlencoded") {
		return s.oauthError(400, "invalid_request", 900144, "The request body must contain the following parameter: 'grant_type'.")
	}
	if err := r.ParseForm(); err != nil {
		return s.oauthError(400, "invalid_request", 900144, "Malformed request body.")
	}
	f := r.PostForm
	if tenant != s.Tenant {
		return s.oauthError(400, "invalid_request", 90002, fmt.Sprintf("Tenant '%s' not found.", tenant))
	}
	if f.Get("grant_type") != "client_credentials" {
		return s.oauthError(400, "unsupported_grant_type", 70003, "The app requested an unsupported grant type.")
	}
	clientID, secret := f.Get("client_id"), f.Get("client_secret")
	if u, p, basic := r.BasicAuth(); basic {
		uu, _ := url.QueryUnescape(u)
		pp, _ := url.QueryUnescape(p)
		clientID, secret = uu, pp
	}
	if want := s.URL + "/.default"; f.Get("scope") != want {
		return s.oauthError(400, "invalid_scope", 1002012, fmt.Sprintf(
			"The provided value for scope %s is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI).", f.Get("scope")))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	a := s.apps[clientID]
	if a == nil {
		return s.oauthError(400, "unauthorized_client", 700016, fmt.Sprintf(
			"Application with identifier '%s' was not found in the directory '%s'.", clientID, s.Tenant))
	}
	switch {
	case f.Get("client_assertion") != "":
		if f.Get("client_assertion_type") != "urn:ietf:params:oauth:client-assertion-type:jwt-bearer" {
			return s.oauthError(400, "invalid_request", 50027, "Invalid client_assertion_type.")
		}
		if secret != "" {
			return s.oauthError(400, "invalid_request", 90014, "Send either a client secret or a client assertion, not both.")
		}
		if rep, bad := s.checkAssertion(a, clientID, f.Get("client_assertion"), s.URL+r.URL.Path); bad {
			return rep
		}
	case a.secret == "" || secret != a.secret:
		return s.oauthError(401, "invalid_client", 7000215, "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID.")
	}
	b := make([]byte, 24)
	rand.Read(b)
	tok := "eyJ0eXAi." + base64.RawURLEncoding.EncodeToString(b)
	s.tokens[tok] = issued{client: clientID, expiry: s.clock.Now().Add(s.tokenLifetime)}
	secs := int(s.tokenLifetime / time.Second)
	return ok(map[string]any{"token_type": "Bearer", "expires_in": secs, "ext_expires_in": secs, "access_token": tok})
}

// checkAssertion verifies a client assertion JWT (reference §2.1). Caller
// holds s.mu.
func (s *Server) checkAssertion(a *app, clientID, raw, tokenURL string) (reply, bool) {
	if a.cert == nil {
		return s.oauthError(401, "invalid_client", 700027, "Client assertion failed signature validation: the app has no certificate."), true
	}
	tok, err := jwt.ParseSigned(raw, []jose.SignatureAlgorithm{jose.RS256, jose.PS256})
	if err != nil || len(tok.Headers) != 1 {
		return s.oauthError(400, "invalid_request", 50027, "Invalid JWT token: "+fmt.Sprint(err)), true
	}
	h := tok.Headers[0]
	x5t, _ := h.ExtraHeaders["x5t"].(string)
	s256, _ := h.ExtraHeaders["x5t#S256"].(string)
	if x5t != a.cert.x5t && s256 != a.cert.s256 {
		return s.oauthError(401, "invalid_client", 700027, "Client assertion contains an invalid signature. [Reason - The key was not found.]"), true
	}
	var c jwt.Claims
	if err := tok.Claims(a.cert.cert.PublicKey, &c); err != nil {
		return s.oauthError(401, "invalid_client", 700027, "Client assertion failed signature validation."), true
	}
	if c.Issuer != clientID || c.Subject != clientID {
		return s.oauthError(401, "invalid_client", 700021, "Client assertion application identifier doesn't match 'client_id' parameter."), true
	}
	if !c.Audience.Contains(tokenURL) {
		return s.oauthError(401, "invalid_client", 700023, "Client assertion audience claim does not match Realm issuer."), true
	}
	now := s.clock.Now()
	if c.Expiry == nil || !now.Before(c.Expiry.Time()) || (c.NotBefore != nil && now.Add(5*time.Minute).Before(c.NotBefore.Time())) {
		return s.oauthError(401, "invalid_client", 700024, "Client assertion is not within its valid time range."), true
	}
	if c.ID == "" || s.jtis[c.ID] {
		// [U] the exact code for a replayed assertion.
		return s.oauthError(401, "invalid_client", 700025, "Client assertion is missing a jti or was replayed."), true
	}
	s.jtis[c.ID] = true
	return reply{}, false
}

// authorize checks the bearer token of a Graph call.
func (s *Server) authorize(r *http.Request) (reply, bool) {
	tok, found := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !found || tok == "" {
		return graphError(401, "InvalidAuthenticationToken", "Access token is empty."), true
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	is, known := s.tokens[tok]
	switch {
	case !known:
		return graphError(401, "InvalidAuthenticationToken", "Access token validation failure. Invalid audience."), true
	case !s.clock.Now().Before(is.expiry):
		return graphError(401, "InvalidAuthenticationToken", "Lifetime validation failed, the token is expired."), true
	case s.apps[is.client].denied:
		return graphError(403, "Authorization_RequestDenied", "Insufficient privileges to complete the operation."), true
	}
	return reply{}, false
}
