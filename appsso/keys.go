package appsso

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/zitadel/oidc/v3/pkg/op"

	"github.com/usherhq/usher/session"
	"github.com/usherhq/usher/store"
)

// Signing keys live in the store's Blobs under keyPrefix, one blob per key:
// the public half in the clear (so every replica publishes every key, even
// one it could not open) and the private half sealed with a key derived
// from usher's session keys. The first session key seals; all open.
//
// A key signs from NotBefore until its successor's NotBefore, and stays in
// the JWKS for retireAfter longer, until every ID token it signed has
// expired. A new key is written prepublish before it signs, so every
// replica (which reloads the keys every refresh) and every relying party
// (which caches the JWKS) can see it first. Only the very first key of an
// algorithm signs at once: there is nothing to wait for.
const (
	keyPrefix = "appsso/keys"
	keyLease  = "appsso/keys"
	// purposeKey seals private keys at rest.
	purposeKey = "appsso signing key"
	// sealedKeyLife is how long a sealed private key stays openable; keys
	// are retired long before.
	sealedKeyLife = 50 * 365 * 24 * time.Hour
)

// keyRecord is one signing key as stored.
type keyRecord struct {
	KID       string          `json:"kid"`
	Alg       string          `json:"alg"`
	Created   time.Time       `json:"created"`
	NotBefore time.Time       `json:"not_before"`
	Public    json.RawMessage `json:"public"` // JWK
	Private   string          `json:"private"`
}

// signingKey is a loaded key. priv is nil when this replica cannot open it
// (sealed with a session key it does not have).
type signingKey struct {
	kid       string
	alg       jose.SignatureAlgorithm
	notBefore time.Time
	pub       any
	priv      crypto.Signer
}

// op.SigningKey: the private half, for signing.
type privateKey struct{ *signingKey }

func (k privateKey) SignatureAlgorithm() jose.SignatureAlgorithm { return k.alg }
func (k privateKey) Key() any                                    { return k.priv }
func (k privateKey) ID() string                                  { return k.kid }

// op.Key: the public half, for the JWKS.
type publicKey struct{ *signingKey }

func (k publicKey) ID() string                         { return k.kid }
func (k publicKey) Algorithm() jose.SignatureAlgorithm { return k.alg }
func (k publicKey) Use() string                        { return "sig" }
func (k publicKey) Key() any                           { return k.pub }

var (
	_ op.SigningKey = privateKey{}
	_ op.Key        = publicKey{}
)

// keySet is what one load found: the signing key per algorithm and every
// key to publish. It is replaced whole, never changed.
type keySet struct {
	active    map[jose.SignatureAlgorithm]*signingKey
	published []op.Key
	retired   []string // blob keys no longer published, to delete
}

// keyStore is the part of store.Store the keyring uses.
type keyStore interface {
	store.Blobs
	Lease(ctx context.Context, name, owner string, ttl time.Duration) (bool, error)
	ReleaseLease(ctx context.Context, name, owner string) error
}

// keyring loads, rotates and serves the signing keys. Sign and publish
// read an atomic snapshot; load and rotate run in the background.
type keyring struct {
	store       keyStore
	seal        *session.Codec
	algs        []jose.SignatureAlgorithm
	owner       string
	now         func() time.Time
	log         *slog.Logger
	rotateEvery time.Duration
	prepublish  time.Duration
	retireAfter time.Duration

	set   atomic.Pointer[keySet]
	mu    sync.Mutex             // serialises load
	cache map[string]*signingKey // by kid; stored keys never change
}

// errNoKey means no key of an algorithm can sign yet.
var errNoKey = errors.New("appsso: no signing key")

func (k *keyring) signing(alg jose.SignatureAlgorithm) (*signingKey, error) {
	s := k.set.Load()
	if s == nil || s.active[alg] == nil {
		return nil, fmt.Errorf("%w for %s", errNoKey, alg)
	}
	return s.active[alg], nil
}

func (k *keyring) published() []op.Key {
	if s := k.set.Load(); s != nil {
		return s.published
	}
	return nil
}

// load reads every stored key and works out which sign and which are
// published at now.
func (k *keyring) load(ctx context.Context) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	names, err := k.store.BlobKeys(ctx, keyPrefix, false)
	if err != nil {
		return fmt.Errorf("appsso: list signing keys: %w", err)
	}
	byAlg := map[jose.SignatureAlgorithm][]*signingKey{}
	blobOf := map[*signingKey]string{}
	for _, name := range names {
		kid := strings.TrimPrefix(name, keyPrefix+"/")
		sk := k.cache[kid]
		if sk == nil {
			raw, _, err := k.store.Blob(ctx, name)
			if errors.Is(err, store.ErrNotFound) {
				continue // retired by another replica just now
			}
			if err != nil {
				return fmt.Errorf("appsso: read signing key %s: %w", kid, err)
			}
			if sk, err = k.parse(raw); err != nil {
				k.log.Error("appsso: unusable signing key in the store; it is ignored", "kid", kid, "err", err)
				continue
			}
			if sk.priv != nil || k.cache[kid] == nil {
				k.cache[kid] = sk
			}
		}
		byAlg[sk.alg] = append(byAlg[sk.alg], sk)
		blobOf[sk] = name
	}
	now := k.now()
	set := &keySet{active: map[jose.SignatureAlgorithm]*signingKey{}}
	for alg, keys := range byAlg {
		slices.SortFunc(keys, func(a, b *signingKey) int {
			if c := a.notBefore.Compare(b.notBefore); c != 0 {
				return c
			}
			return strings.Compare(a.kid, b.kid)
		})
		for i, sk := range keys {
			var next *signingKey
			if i+1 < len(keys) {
				next = keys[i+1]
			}
			// Retired: a successor has signed for longer than any token
			// this key signed can live.
			if next != nil && !now.Before(next.notBefore.Add(k.retireAfter)) {
				set.retired = append(set.retired, blobOf[sk])
				continue
			}
			set.published = append(set.published, publicKey{sk})
			if !now.Before(sk.notBefore) && sk.priv != nil {
				set.active[alg] = sk // the latest that may sign wins
			}
		}
		if latest := keys[len(keys)-1]; !now.Before(latest.notBefore) && latest.priv == nil {
			k.log.Error("appsso: the newest signing key was sealed with a session key this replica does not have; signing with an older one", "kid", latest.kid, "alg", alg)
		}
	}
	slices.SortFunc(set.published, func(a, b op.Key) int { return strings.Compare(a.ID(), b.ID()) })
	k.set.Store(set)
	return nil
}

// rotate creates the keys that are due and deletes retired ones, under a
// lease so that replicas do not rotate at once. It reports whether it held
// the lease.
func (k *keyring) rotate(ctx context.Context) (bool, error) {
	ok, err := k.store.Lease(ctx, keyLease, k.owner, time.Minute)
	if err != nil {
		return false, fmt.Errorf("appsso: key lease: %w", err)
	}
	if !ok {
		return false, nil
	}
	defer func() {
		if err := k.store.ReleaseLease(context.WithoutCancel(ctx), keyLease, k.owner); err != nil {
			k.log.Warn("appsso: release key lease", "err", err)
		}
	}()
	// Read again under the lease: another replica may have rotated.
	if err := k.load(ctx); err != nil {
		return true, err
	}
	now := k.now()
	set := k.set.Load()
	changed := false
	for _, alg := range k.algs {
		newest := k.newest(set, alg)
		var notBefore time.Time
		switch {
		case newest == nil || set.active[alg] == nil && !newest.notBefore.After(now):
			// First key, or none this replica can open (the session keys
			// that sealed them are gone): nothing to wait for.
			notBefore = now
		case newest.notBefore.After(now):
			continue // the next key is already published, waiting
		case now.Add(k.prepublish).Before(newest.notBefore.Add(k.rotateEvery)):
			continue // not due
		default:
			notBefore = now.Add(k.prepublish)
		}
		if err := k.create(ctx, alg, now, notBefore); err != nil {
			return true, err
		}
		changed = true
	}
	for _, name := range set.retired {
		if err := k.store.DeleteBlob(ctx, name); err != nil && !errors.Is(err, store.ErrNotFound) {
			k.log.Warn("appsso: delete retired signing key", "key", name, "err", err)
			continue
		}
		k.mu.Lock()
		delete(k.cache, strings.TrimPrefix(name, keyPrefix+"/"))
		k.mu.Unlock()
		k.log.Info("appsso: signing key retired", "kid", strings.TrimPrefix(name, keyPrefix+"/"))
		changed = true
	}
	if changed {
		return true, k.load(ctx)
	}
	return true, nil
}

// newest is the published key of alg with the latest NotBefore.
func (k *keyring) newest(set *keySet, alg jose.SignatureAlgorithm) *signingKey {
	var n *signingKey
	for _, pk := range set.published {
		sk := pk.(publicKey).signingKey
		if sk.alg == alg && (n == nil || sk.notBefore.After(n.notBefore)) {
			n = sk
		}
	}
	return n
}

func (k *keyring) create(ctx context.Context, alg jose.SignatureAlgorithm, now, notBefore time.Time) error {
	var priv crypto.Signer
	var err error
	switch alg {
	case jose.RS256:
		priv, err = rsa.GenerateKey(rand.Reader, 2048)
	case jose.ES256:
		priv, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	default:
		return fmt.Errorf("appsso: no key type for %s", alg)
	}
	if err != nil {
		return fmt.Errorf("appsso: generate %s key: %w", alg, err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return fmt.Errorf("appsso: encode %s key: %w", alg, err)
	}
	pubDER, err := x509.MarshalPKIXPublicKey(priv.Public())
	if err != nil {
		return fmt.Errorf("appsso: encode %s public key: %w", alg, err)
	}
	// The key ID is a thumbprint-like hash of the public key: the same on
	// every replica, and new for every key.
	sum := sha256.Sum256(pubDER)
	kid := strings.ToLower(string(alg)) + "-" + base64.RawURLEncoding.EncodeToString(sum[:12])
	jwk, err := jose.JSONWebKey{Key: priv.Public(), KeyID: kid, Algorithm: string(alg), Use: "sig"}.MarshalJSON()
	if err != nil {
		return fmt.Errorf("appsso: encode %s JWK: %w", alg, err)
	}
	sealed, err := k.seal.Seal(purposeKey+" "+kid, der, now.Add(sealedKeyLife))
	if err != nil {
		return fmt.Errorf("appsso: seal %s key: %w", alg, err)
	}
	rec, err := json.Marshal(keyRecord{KID: kid, Alg: string(alg), Created: now.UTC(), NotBefore: notBefore.UTC(), Public: jwk, Private: sealed})
	if err != nil {
		return err
	}
	if err := k.store.PutBlob(ctx, keyPrefix+"/"+kid, rec); err != nil {
		return fmt.Errorf("appsso: store %s key: %w", alg, err)
	}
	k.log.Info("appsso: signing key created", "kid", kid, "alg", alg, "signs_from", notBefore.UTC())
	return nil
}

func (k *keyring) parse(raw []byte) (*signingKey, error) {
	var rec keyRecord
	if err := json.Unmarshal(raw, &rec); err != nil {
		return nil, fmt.Errorf("decode: %w", err)
	}
	alg := jose.SignatureAlgorithm(rec.Alg)
	if alg != jose.RS256 && alg != jose.ES256 {
		return nil, fmt.Errorf("algorithm %q", rec.Alg)
	}
	var jwk jose.JSONWebKey
	if err := jwk.UnmarshalJSON(rec.Public); err != nil || !jwk.IsPublic() {
		return nil, fmt.Errorf("public key: %v", err)
	}
	sk := &signingKey{kid: rec.KID, alg: alg, notBefore: rec.NotBefore, pub: jwk.Key}
	der, err := k.seal.Open(purposeKey+" "+rec.KID, rec.Private)
	if err != nil {
		// Published all the same: tokens it signed elsewhere still verify.
		k.log.Warn("appsso: cannot open a signing key (sealed with a session key this replica lacks)", "kid", rec.KID, "err", err)
		return sk, nil
	}
	priv, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return nil, fmt.Errorf("private key: %w", err)
	}
	signer, ok := priv.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("private key of type %T", priv)
	}
	sk.priv = signer
	return sk, nil
}

// ready makes sure every algorithm has a key that signs: it rotates (which
// creates first keys) or, when another replica holds the lease, waits for
// that replica's keys to appear.
func (k *keyring) ready(ctx context.Context, wait time.Duration) error {
	deadline := time.Now().Add(wait)
	for rotated := false; ; {
		if err := k.load(ctx); err != nil {
			return err
		}
		missing := false
		for _, alg := range k.algs {
			if _, err := k.signing(alg); err != nil {
				missing = true
			}
		}
		if !missing {
			return nil
		}
		if rotated {
			// Rotated under the lease and still nothing signs: the keys
			// there are unusable here (see the log).
			return fmt.Errorf("%w: the stored keys cannot be opened with these session keys", errNoKey)
		}
		held, err := k.rotate(ctx)
		if err != nil {
			return err
		}
		if held {
			rotated = true
			continue
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%w: another replica holds the key lease and wrote no key within %s", errNoKey, wait)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}
