package appsso

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/zitadel/oidc/v3/pkg/oidc"
	"github.com/zitadel/oidc/v3/pkg/op"

	"github.com/usherhq/usher/session"
)

// storage is zitadel's op.Storage over self-contained sealed values. Of the
// contract, usher uses: AuthRequestByCode (opens the code),
// DeleteAuthRequest (consumes it: the one durable write), CreateAccessToken
// (seals the access token), the userinfo methods, the keys and the
// clients. Authorization requests are never stored (the authorize
// endpoint is usher's own and seals them into the URL), so CreateAuthRequest
// and AuthRequestByID refuse; refresh tokens, introspection, revocation,
// JWT profile and token exchange are not offered.
type storage struct{ p *Provider }

var (
	_ op.Storage                   = storage{}
	_ op.CanSetUserinfoFromRequest = storage{}
)

var errNotOffered = errors.New("appsso: not offered")

// notOffered answers the parts of the contract usher does not serve with a
// protocol error, not a 500.
func notOffered(what string) error {
	return oidc.ErrRequestNotSupported().WithDescription("%s is not offered", what).WithParent(errNotOffered)
}

func (s storage) CreateAuthRequest(context.Context, *oidc.AuthRequest, string) (op.AuthRequest, error) {
	return nil, notOffered("stored authorization requests")
}

func (s storage) AuthRequestByID(context.Context, string) (op.AuthRequest, error) {
	return nil, notOffered("stored authorization requests")
}

// AuthRequestByCode opens a code. A code sealed for another purpose, by
// an unknown key, tampered with or past its minute fails here; a replay
// fails at DeleteAuthRequest.
func (s storage) AuthRequestByCode(_ context.Context, code string) (op.AuthRequest, error) {
	raw, err := s.p.seal.Open(purposeCode, code)
	if err != nil {
		return nil, fmt.Errorf("appsso: code: %w", err)
	}
	g := new(grant)
	if err := json.Unmarshal(raw, g); err != nil || g.ID == "" {
		return nil, fmt.Errorf("appsso: code: malformed")
	}
	return &authRequest{g: g, id: g.ID}, nil
}

// SaveAuthCode has nothing to save: the code is the sealed grant.
func (s storage) SaveAuthCode(context.Context, string, string) error { return nil }

// DeleteAuthRequest consumes a code. The op package calls it after the
// client, PKCE verifier and redirect URI checked out and the tokens were
// made, before answering: so a code burns only on a redemption that would
// succeed, and a second one is refused on every replica. Per RFC 6749
// §4.1.2 and the OAuth security BCP, the tokens issued from a replayed
// code are revoked too (userinfo refuses them on every replica).
func (s storage) DeleteAuthRequest(ctx context.Context, id string) error {
	now := s.p.now()
	seen, err := s.p.opt.Store.SeenOnce(ctx, "appsso/code/"+id, now.Add(codeTTL+time.Minute))
	if err != nil {
		return oidc.ErrServerError().WithDescription("could not record the code").WithParent(err)
	}
	if !seen {
		return nil
	}
	s.p.log.Warn("appsso: authorization code used twice; refused, and the tokens issued from it are revoked", "code_id", id)
	if s.p.opt.Revocations != nil {
		if err := s.p.opt.Revocations.RevokeSession(ctx, &session.Session{ID: grantRevocationID(id), Created: now}); err != nil {
			s.p.log.Error("appsso: revoke the tokens of a replayed code", "code_id", id, "err", err)
		}
	}
	return oidc.ErrInvalidGrant().WithDescription("code already used")
}

// grantRevocationID is the session ID under which the tokens of one code
// are revoked.
func grantRevocationID(codeID string) string { return "appsso:" + codeID }

func (s storage) CreateAccessToken(_ context.Context, req op.TokenRequest) (string, time.Time, error) {
	ar, ok := req.(*authRequest)
	if !ok {
		return "", time.Time{}, notOffered("this grant")
	}
	exp := s.p.now().Add(tokenTTL)
	id, err := accessTokenID(ar.g, exp)
	return id, exp, err
}

func (s storage) CreateAccessAndRefreshTokens(context.Context, op.TokenRequest, string) (string, string, time.Time, error) {
	return "", "", time.Time{}, notOffered("refresh tokens")
}

func (s storage) TokenRequestByRefreshToken(context.Context, string) (op.RefreshTokenRequest, error) {
	return nil, notOffered("refresh tokens")
}

func (s storage) TerminateSession(context.Context, string, string) error {
	return notOffered("end session")
}

func (s storage) RevokeToken(context.Context, string, string, string) *oidc.Error {
	return oidc.ErrRequestNotSupported().WithDescription("token revocation is not offered")
}

func (s storage) GetRefreshTokenInfo(context.Context, string, string) (string, string, error) {
	return "", "", op.ErrInvalidRefreshToken
}

// algKey carries the signing algorithm of the client a token request is
// for, set by the token handler, to SigningKey.
type algKey struct{}

func (s storage) SigningKey(ctx context.Context) (op.SigningKey, error) {
	alg, _ := ctx.Value(algKey{}).(jose.SignatureAlgorithm)
	if alg == "" {
		alg = jose.RS256
	}
	k, err := s.p.keys.signing(alg)
	if err != nil {
		return nil, err
	}
	return privateKey{k}, nil
}

func (s storage) SignatureAlgorithms(context.Context) ([]jose.SignatureAlgorithm, error) {
	return s.p.keys.algs, nil
}

func (s storage) KeySet(context.Context) ([]op.Key, error) { return s.p.keys.published(), nil }

func (s storage) GetClientByClientID(_ context.Context, id string) (op.Client, error) {
	if c := s.p.clients[id]; c != nil {
		return c, nil
	}
	return nil, fmt.Errorf("appsso: unknown client %q", id)
}

func (s storage) AuthorizeClientIDSecret(_ context.Context, id, secret string) error {
	c := s.p.clients[id]
	if c == nil || !c.checkSecret(secret) {
		return oidc.ErrInvalidClient().WithDescription("client authentication failed")
	}
	return nil
}

// SetUserinfoFromScopes has nothing to add: the ID token's claims come
// from the grant, in SetUserinfoFromRequest.
func (s storage) SetUserinfoFromScopes(context.Context, *oidc.UserInfo, string, string, []string) error {
	return nil
}

func (s storage) SetUserinfoFromRequest(_ context.Context, info *oidc.UserInfo, req op.IDTokenRequest, scopes []string) error {
	ar, ok := req.(*authRequest)
	if !ok {
		return notOffered("this grant")
	}
	s.p.claims(info, ar.g, scopes)
	return nil
}

// SetUserinfoFromToken answers userinfo. The token was opened (and its
// seal's expiry checked) by the op package through Crypto.Decrypt; what is
// left: its own expiry, and whether its code was replayed or its usher
// session revoked (logout, deprovisioning) since.
func (s storage) SetUserinfoFromToken(_ context.Context, info *oidc.UserInfo, tokenID, subject, _ string) error {
	// A JWT signed by usher (an ID token) is not an access token: the op
	// package would hand its empty jti here, which does not parse.
	g, err := parseAccessTokenID(tokenID)
	if err != nil || g.Sub != subject {
		return oidc.ErrInvalidRequest().WithDescription("invalid access token")
	}
	if !s.p.now().Before(time.Unix(0, g.Expires)) {
		return oidc.ErrInvalidRequest().WithDescription("access token expired")
	}
	if s.p.opt.Revoker != nil && s.p.opt.Revoker.Revoked(&session.Session{
		ID: grantRevocationID(g.ID), IdP: g.IdP, Subject: g.Subject, Created: time.Unix(0, g.SessionCreated),
	}) {
		return oidc.ErrInvalidRequest().WithDescription("access token revoked")
	}
	s.p.claims(info, g, g.Scopes)
	return nil
}

func (s storage) SetIntrospectionFromToken(context.Context, *oidc.IntrospectionResponse, string, string, string) error {
	return notOffered("introspection")
}

func (s storage) GetPrivateClaimsFromScopes(context.Context, string, string, []string) (map[string]any, error) {
	return nil, nil
}

func (s storage) GetKeyByIDAndClientID(context.Context, string, string) (*jose.JSONWebKey, error) {
	return nil, notOffered("JWT client authentication")
}

func (s storage) ValidateJWTProfileScopes(context.Context, string, []string) ([]string, error) {
	return nil, notOffered("the JWT profile grant")
}

func (s storage) Health(context.Context) error { return nil }

// sealer is the op package's Crypto: it seals codes and access tokens
// with usher's derived keys, each with its own purpose and expiry, and
// opens only access tokens (codes are opened by AuthRequestByCode).
type sealer struct{ p *Provider }

func (c sealer) Encrypt(s string) (string, error) {
	now := c.p.now()
	switch {
	case strings.HasPrefix(s, codePrefix):
		return c.p.seal.Seal(purposeCode, []byte(s[len(codePrefix):]), now.Add(codeTTL))
	case strings.HasPrefix(s, accessPrefix):
		return c.p.seal.Seal(purposeAccess, []byte(s), now.Add(tokenTTL))
	}
	return "", errors.New("appsso: nothing else is sealed")
}

func (c sealer) Decrypt(s string) (string, error) {
	b, err := c.p.seal.Open(purposeAccess, s)
	return string(b), err
}

// scopeGroups asks for the groups claim.
const scopeGroups = "groups"

// claims fills the claims of an ID token or a userinfo answer from a
// grant. preferred_username is always there: it is the username usher
// provisioned in the app, what the app signs the person in as, and the
// Atlassian client falls back to userinfo for it when the ID token lacks
// it. The rest follows the scopes asked for.
func (p *Provider) claims(info *oidc.UserInfo, g *grant, scopes []string) {
	info.Subject = g.Sub
	info.PreferredUsername = g.Username
	if slices.Contains(scopes, oidc.ScopeProfile) && g.Name != "" {
		info.Name = g.Name
	}
	if slices.Contains(scopes, oidc.ScopeEmail) && g.Email != "" {
		info.Email = g.Email
		// The address comes from the organisation's own IdP through
		// usher's mapping, which the admin trusts for provisioning; the
		// Atlassian client does not read this claim (reference §10).
		info.EmailVerified = true
	}
	if slices.Contains(scopes, scopeGroups) && p.clients[g.Client] != nil && p.clients[g.Client].Groups {
		groups := g.Groups
		if groups == nil {
			groups = []string{} // an empty list is a valid answer, an absent claim is not (reference §13)
		}
		info.AppendClaims("groups", groups)
	}
}
