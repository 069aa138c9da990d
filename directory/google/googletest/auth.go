package googletest

import (
	"net/http"
	"strings"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

func oauthError(status int, code, desc string) reply {
	return reply{status: status, body: map[string]any{"error": code, "error_description": desc}}
}

// token serves the JWT bearer grant of a service account with
// domain-wide delegation (reference §4.1). The checks follow the
// reference's emulator checklist (§4.5): signature by the account's
// key, aud, scope, sub, exp − iat ≤ 3600. [U] Google's exact
// invalid_grant descriptions are unverified; the one for a delegation
// that does not cover the scopes is the reference's.
func (s *Server) token(r *http.Request) reply {
	if err := r.ParseForm(); err != nil {
		return oauthError(400, "invalid_request", "Malformed request.")
	}
	f := r.PostForm
	if g := f.Get("grant_type"); g != "urn:ietf:params:oauth:grant-type:jwt-bearer" {
		return oauthError(400, "unsupported_grant_type", "Invalid grant_type: "+g)
	}
	tok, err := jwt.ParseSigned(f.Get("assertion"), []jose.SignatureAlgorithm{jose.RS256})
	if err != nil || len(tok.Headers) != 1 {
		return oauthError(400, "invalid_grant", "Invalid JWT: not a compact RS256 JWS.")
	}
	var unverified jwt.Claims
	_ = tok.UnsafeClaimsWithoutVerification(&unverified)
	s.mu.Lock()
	defer s.mu.Unlock()
	sa := s.accounts[unverified.Issuer]
	if sa == nil {
		return oauthError(401, "invalid_client", "The OAuth client was not found.")
	}
	if kid := tok.Headers[0].KeyID; kid != "" && kid != sa.keyID {
		return oauthError(400, "invalid_grant", "Invalid JWT Signature.")
	}
	var c jwt.Claims
	var extra struct {
		Scope string `json:"scope"`
	}
	if err := tok.Claims(sa.key, &c, &extra); err != nil {
		return oauthError(400, "invalid_grant", "Invalid JWT Signature.")
	}
	now := s.clock.Now()
	switch {
	case !c.Audience.Contains(s.URL + "/token"):
		return oauthError(400, "invalid_grant", "Invalid JWT: Failed audience check.")
	case c.IssuedAt == nil || c.Expiry == nil || c.Expiry.Time().Sub(c.IssuedAt.Time()) > time.Hour ||
		!now.Before(c.Expiry.Time()) || c.IssuedAt.Time().After(now.Add(time.Minute)):
		return oauthError(400, "invalid_grant", "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe. Check your iat and exp values in the JWT claim.")
	}
	scopes := strings.Fields(extra.Scope)
	if len(scopes) == 0 {
		return oauthError(400, "invalid_scope", "Invalid OAuth scope or ID token audience provided.")
	}
	granted := s.delegations[sa.clientID]
	for _, sc := range scopes {
		if !granted[sc] {
			return oauthError(401, "unauthorized_client",
				"Client is unauthorized to retrieve access tokens using this method, or client not authorized for any of the scopes requested.")
		}
	}
	if c.Subject != "" && s.findUser(c.Subject) == nil {
		return oauthError(400, "invalid_grant", "Invalid email or User ID")
	}
	access := "ya29." + randomHex(40)
	s.tokens[access] = issued{sub: c.Subject, scopes: set(scopes...), expiry: now.Add(s.tokenLifetime)}
	return okBody(map[string]any{"access_token": access, "expires_in": int(s.tokenLifetime / time.Second), "token_type": "Bearer"})
}
