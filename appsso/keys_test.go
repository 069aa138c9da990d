package appsso_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/usherhq/usher/appsso"
)

func jwksKIDs(t *testing.T, h *harness) []string {
	t.Helper()
	resp, err := http.Get(h.op.Issuer() + "/keys")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var set jose.JSONWebKeySet
	if err := json.NewDecoder(resp.Body).Decode(&set); err != nil {
		t.Fatal(err)
	}
	var kids []string
	for _, k := range set.Keys {
		if !k.IsPublic() || k.Use != "sig" {
			t.Fatalf("JWKS key %s: public %v use %q", k.KeyID, k.IsPublic(), k.Use)
		}
		kids = append(kids, k.KeyID)
	}
	slices.Sort(kids)
	return kids
}

// idTokenKID runs a flow for client a and returns the kid of its ID token.
func idTokenKID(t *testing.T, h *harness) string {
	t.Helper()
	c := h.codeFor(t, url.Values{"client_id": {"a"}, "redirect_uri": {appA}})
	status, body := h.tokenRequest(redeem(c, appA), []string{"a", "secret-a"})
	if status != 200 {
		t.Fatalf("token: %d %v", status, body)
	}
	raw, _ := body["id_token"].(string)
	jws, err := jose.ParseSigned(raw, []jose.SignatureAlgorithm{jose.RS256})
	if err != nil {
		t.Fatal(err)
	}
	return jws.Signatures[0].Header.KeyID
}

// TestKeyRotation: the first key is made at start and signs at once; a
// new one is published Prepublish before it signs; the old one stays in
// the JWKS until the tokens it signed have expired, then goes; and a second
// replica on the same store signs and publishes the same keys.
func TestKeyRotation(t *testing.T) {
	t.Parallel()
	const every, pre = 24 * time.Hour, 10 * time.Minute
	opts := func(o *appsso.Options) { o.RotateEvery, o.Prepublish = every, pre }
	h := newHarness(t, harnessOptions{NoJira: true, Options: opts, Clients: []appsso.Client{{ID: "a", Secret: "secret-a", App: "wiki", RedirectURIs: []string{appA}}}})
	ctx := context.Background()
	first := jwksKIDs(t, h)
	if len(first) != 1 || !strings.HasPrefix(first[0], "rs256-") || idTokenKID(t, h) != first[0] {
		t.Fatalf("first keys %v", first)
	}
	// A replica on the same store and secrets: same keys, no new one.
	replica := h.newProvider()
	if err := replica.RefreshKeys(ctx); err != nil {
		t.Fatal(err)
	}
	if got := jwksKIDs(t, h); !slices.Equal(got, first) {
		t.Fatalf("a second replica changed the keys: %v", got)
	}

	// Not due yet.
	h.clock.Advance(every - pre - time.Minute)
	if err := h.op.RefreshKeys(ctx); err != nil {
		t.Fatal(err)
	}
	if got := jwksKIDs(t, h); !slices.Equal(got, first) {
		t.Fatalf("rotated early: %v", got)
	}
	// Due: a new key is published but does not sign yet.
	h.clock.Advance(2 * time.Minute)
	if err := replica.RefreshKeys(ctx); err != nil { // either replica may rotate
		t.Fatal(err)
	}
	if err := h.op.RefreshKeys(ctx); err != nil {
		t.Fatal(err)
	}
	both := jwksKIDs(t, h)
	if len(both) != 2 || idTokenKID(t, h) != first[0] {
		t.Fatalf("after rotation: JWKS %v; the old key must still sign", both)
	}
	newKID := both[0]
	if newKID == first[0] {
		newKID = both[1]
	}
	// Prepublish over: the new key signs, on both replicas; the old one is
	// still published for the tokens it signed.
	h.clock.Advance(pre)
	for _, p := range []*appsso.Provider{h.op, replica} {
		if err := p.RefreshKeys(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if kid := idTokenKID(t, h); kid != newKID || !slices.Equal(jwksKIDs(t, h), both) {
		t.Fatalf("signed with %s (want %s), JWKS %v", kid, newKID, jwksKIDs(t, h))
	}
	h.op, replica = replica, h.op // the other replica serves now
	if kid := idTokenKID(t, h); kid != newKID {
		t.Fatalf("replica signs with %s, want %s", kid, newKID)
	}
	// Once its tokens have expired, the old key is retired and deleted.
	h.clock.Advance(16 * time.Minute)
	if err := h.op.RefreshKeys(ctx); err != nil {
		t.Fatal(err)
	}
	if got := jwksKIDs(t, h); !slices.Equal(got, []string{newKID}) {
		t.Fatalf("after retirement: %v, want only %s", got, newKID)
	}
	names, _ := h.store.BlobKeys(ctx, "appsso/keys", false)
	if len(names) != 1 {
		t.Fatalf("stored keys %v", names)
	}
	blob, _, _ := h.store.Blob(ctx, names[0])
	if strings.Contains(string(blob), `"d":`) || strings.Contains(string(blob), "PRIVATE KEY") {
		t.Fatal("a private key is stored in the clear")
	}
}

// TestKeysNeedTheSessionKeys: a replica whose session keys cannot open
// the stored private key makes its own and still publishes the others'.
func TestKeysNeedTheSessionKeys(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOptions{NoJira: true, Clients: []appsso.Client{{ID: "a", Secret: "secret-a", App: "wiki", RedirectURIs: []string{appA}}}})
	first := jwksKIDs(t, h)
	h.secret = []byte("another-session-key-of-32-bytes-or-more!")
	other := h.newProvider()
	h.op = other
	got := jwksKIDs(t, h)
	if len(got) != 2 || !slices.Contains(got, first[0]) {
		t.Fatalf("JWKS %v, want the old key and a new one", got)
	}
	if kid := idTokenKID(t, h); kid == first[0] {
		t.Fatal("signed with a key it cannot open")
	}
}
