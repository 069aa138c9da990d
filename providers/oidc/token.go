package oidc

// ID token verification (signature, algorithm, nonce, time claims),
// the userinfo merge and claim flattening.

import (
	"context"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	gooidc "github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"

	"github.com/usherhq/usher/providers"
)

// keyErrSlot is the context key under which verifyIDToken asks keySet to
// keep the error of the signature check, which go-oidc's verifier
// flattens to text.
type keyErrSlot struct{}

// keySet is go-oidc's key set, reporting its error through the context.
type keySet struct{ remote gooidc.KeySet }

func (k keySet) VerifySignature(ctx context.Context, jwt string) ([]byte, error) {
	payload, err := k.remote.VerifySignature(ctx, jwt)
	if slot, ok := ctx.Value(keyErrSlot{}).(*error); ok && err != nil {
		*slot = err
	}
	return payload, err
}

// verifyIDToken checks signature (allowed asymmetric algorithms only),
// issuer, audience, azp, expiry, not-before, issue time and nonce, and
// returns the raw claims. go-oidc checks the signature and parses; every
// other check is made here, so each refusal says its reason.
func (p *Provider) verifyIDToken(ctx context.Context, raw, nonce string) (*gooidc.IDToken, map[string]any, error) {
	d := p.disc.Load()
	if d == nil {
		return nil, nil, p.Available()
	}
	return p.verifyWith(ctx, d, raw, nonce)
}

// verifyWith is verifyIDToken with the keys of discovery d.
func (p *Provider) verifyWith(ctx context.Context, d *discovered, raw, nonce string) (*gooidc.IDToken, map[string]any, error) {
	alg, err := jwtAlg(raw)
	if err != nil {
		return nil, nil, p.refuse(providers.ReasonOther, "malformed ID token: %v", err)
	}
	if !slices.Contains(p.algs, alg) {
		return nil, nil, p.refuse(providers.ReasonSignature, "ID token signed with %q, which is not allowed", alg)
	}
	var keyErr error
	vctx, cancel := context.WithTimeout(context.WithValue(ctx, keyErrSlot{}, &keyErr), keyFetchTimeout)
	defer cancel()
	idt, err := d.verifier.Verify(vctx, raw)
	switch {
	case err == nil:
	case keyErr != nil && errors.Unwrap(keyErr) != nil:
		// go-oidc wraps (%w) only the failure to fetch the JWKS, which
		// is an outage, not a bad token. Its other key set errors are
		// plain: the token's signature is wrong.
		return nil, nil, fmt.Errorf("oidc %s: verify ID token: %w", p.id, keyErr)
	case keyErr != nil:
		return nil, nil, p.refuse(providers.ReasonSignature, "ID token signature: %v", keyErr)
	default:
		// Parsing: a malformed token or claims.
		return nil, nil, p.refuse(providers.ReasonOther, "ID token rejected: %v", err)
	}
	if idt.Issuer != p.issuer && !(p.issuer == googleIssuer && idt.Issuer == googleIssuerNoScheme) {
		return nil, nil, p.refuse(providers.ReasonAudience, "ID token issued by a different provider: %q, expected %q", idt.Issuer, p.issuer)
	}
	if !slices.Contains(idt.Audience, p.clientID) {
		return nil, nil, p.refuse(providers.ReasonAudience, "ID token for %q, expected audience %q", idt.Audience, p.clientID)
	}
	var claims map[string]any
	if err := decodeClaims(idt, &claims); err != nil {
		return nil, nil, p.refuse(providers.ReasonOther, "ID token claims: %v", err)
	}
	// A time within exactly skew of its limit is accepted.
	now := p.now()
	late, early := now.Add(-p.skew), now.Add(p.skew)
	if idt.Expiry.Before(late) {
		return nil, nil, p.refuse(providers.ReasonExpired, "ID token expired at %s", idt.Expiry.UTC().Format(time.RFC3339))
	}
	if idt.IssuedAt.After(early) {
		return nil, nil, p.refuse(providers.ReasonExpired, "ID token issued in the future (iat %s, now %s, skew %s)",
			idt.IssuedAt.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339), p.skew)
	}
	if nbf, ok := numericDate(claims["nbf"]); ok && nbf.After(early) {
		return nil, nil, p.refuse(providers.ReasonExpired, "ID token not valid before %s (now %s, skew %s)",
			nbf.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339), p.skew)
	}
	if subtle.ConstantTimeCompare([]byte(idt.Nonce), []byte(nonce)) != 1 {
		return nil, nil, p.refuse(providers.ReasonState, "ID token nonce does not match this login flow")
	}
	if idt.Subject == "" {
		return nil, nil, p.refuse(providers.ReasonOther, "ID token has no subject")
	}
	azp, hasAzp := claims["azp"].(string)
	switch {
	case hasAzp && azp != p.clientID:
		return nil, nil, p.refuse(providers.ReasonAudience, "ID token authorized party %q is not client %q", azp, p.clientID)
	case !hasAzp && (claims["azp"] != nil || len(idt.Audience) > 1):
		return nil, nil, p.refuse(providers.ReasonAudience, "ID token has several audiences but no authorized party (azp)")
	}
	return idt, claims, nil
}

// Google's ID tokens sometimes name the issuer without its scheme; go-oidc
// accepts that for Google alone, and so does usher.
const (
	googleIssuer         = "https://accounts.google.com"
	googleIssuerNoScheme = "accounts.google.com"
)

// numericDate reads a JWT NumericDate claim (seconds since the epoch,
// possibly with a fraction).
func numericDate(v any) (time.Time, bool) {
	n, ok := v.(json.Number)
	if !ok {
		return time.Time{}, false
	}
	f, err := n.Float64()
	if err != nil {
		return time.Time{}, false
	}
	sec := int64(f)
	return time.Unix(sec, int64((f-float64(sec))*1e9)), true
}

// jwtAlg reads the alg header without trusting anything else in the token.
func jwtAlg(raw string) (string, error) {
	head, _, ok := strings.Cut(raw, ".")
	if !ok {
		return "", errors.New("not a JWS")
	}
	b, err := base64.RawURLEncoding.DecodeString(head)
	if err != nil {
		return "", fmt.Errorf("header: %v", err)
	}
	var h struct {
		Alg string `json:"alg"`
	}
	if err := json.Unmarshal(b, &h); err != nil {
		return "", fmt.Errorf("header: %v", err)
	}
	return h.Alg, nil
}

// decodeClaims keeps numbers as written (json.Number), so 1700000000 does
// not become 1.7e+09.
func decodeClaims(src interface{ Claims(any) error }, into *map[string]any) error {
	var raw json.RawMessage
	if err := src.Claims(&raw); err != nil {
		return err
	}
	dec := json.NewDecoder(strings.NewReader(string(raw)))
	dec.UseNumber()
	return dec.Decode(into)
}

// protocolClaims describe the token, not the person; the ID token's values
// win over userinfo's.
var protocolClaims = []string{"iss", "sub", "aud", "exp", "iat", "nbf", "auth_time", "nonce", "azp", "at_hash", "c_hash", "acr", "amr", "sid", "jti"}

func (p *Provider) mergeUserinfo(ctx context.Context, d *discovered, tok *oauth2.Token, sub string, claims map[string]any) error {
	ui, err := d.op.UserInfo(ctx, oauth2.StaticTokenSource(tok))
	if err != nil {
		return fmt.Errorf("oidc %s: userinfo: %w", p.id, err)
	}
	if ui.Subject != sub {
		return p.refuse(providers.ReasonOther, "userinfo subject %q differs from the ID token's %q", ui.Subject, sub)
	}
	var extra map[string]any
	if err := decodeClaims(ui, &extra); err != nil {
		return fmt.Errorf("oidc %s: userinfo claims: %w", p.id, err)
	}
	if _, ok := extra["email"]; ok {
		// An address and its verification travel together: the ID
		// token's email_verified says nothing about userinfo's address.
		delete(claims, "email_verified")
	}
	for k, v := range extra {
		if !slices.Contains(protocolClaims, k) && k != p.subject {
			claims[k] = v
		}
	}
	return nil
}

// dropped are token mechanics that would only clutter an Identity.
var dropped = []string{"nonce", "at_hash", "c_hash", "_claim_names", "_claim_sources"}

// flatten turns JSON claims into string lists: scalars as text, arrays of
// scalars as lists, nested objects under dotted keys (realm_access.roles).
func flatten(claims map[string]any) map[string][]string {
	out := make(map[string][]string, len(claims))
	for k, v := range claims {
		if slices.Contains(dropped, k) {
			continue
		}
		flattenInto(out, k, v)
	}
	// Of the distributed claims, only the fact that the groups are
	// elsewhere matters (Entra's group overage): the mapping must not
	// take a missing groups claim for "in no group". The endpoint itself
	// is never called, so it is not kept.
	if names, ok := claims["_claim_names"].(map[string]any); ok {
		if src, ok := names["groups"].(string); ok {
			out["_claim_names.groups"] = []string{src}
		}
	}
	return out
}

func flattenInto(out map[string][]string, key string, v any) {
	switch v := v.(type) {
	case nil:
	case string:
		out[key] = append(out[key], v)
	case json.Number:
		out[key] = append(out[key], v.String())
	case bool:
		out[key] = append(out[key], fmt.Sprint(v))
	case float64:
		out[key] = append(out[key], fmt.Sprint(v))
	case []any:
		for _, e := range v {
			flattenInto(out, key, e)
		}
	case map[string]any:
		for k, e := range v {
			flattenInto(out, key+"."+k, e)
		}
	}
}
