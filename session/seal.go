package session

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"time"
)

// Wire format of a sealed value, base64url without padding:
//
//	version (1) | key id (1) | nonce (12) | AES-256-GCM(expires (8, unix ns, big endian) | payload)
//
// The additional data is version | key id | purpose, so a value sealed for
// one purpose never opens for another. The key id is derived from the key
// and only picks which key to try first; ids may collide, in which case
// every key with that id is tried.
const (
	wireVersion = 1
	headerLen   = 2
	nonceLen    = 12
	expiresLen  = 8
	minSecret   = 32
)

type key struct {
	id   byte
	aead cipher.AEAD // safe for concurrent use: holds only the expanded key
	csrf []byte      // HMAC-SHA256 key for CSRF tokens
	// sessionAD is the additional data of session cookies, precomputed
	// because Load runs on every request.
	sessionAD []byte
}

// deriveKey turns a raw secret into independent keys with HKDF-SHA256, so
// any strong secret (not only 32 random bytes) is usable.
func deriveKey(secret []byte) (key, error) {
	if len(secret) < minSecret {
		return key{}, fmt.Errorf("secret is %d bytes, need at least %d", len(secret), minSecret)
	}
	enc, err := hkdf.Key(sha256.New, secret, nil, "usher cookie aes-256-gcm v1", 32)
	if err != nil {
		return key{}, err
	}
	id, err := hkdf.Key(sha256.New, secret, nil, "usher cookie key id v1", 1)
	if err != nil {
		return key{}, err
	}
	csrf, err := hkdf.Key(sha256.New, secret, nil, "usher csrf v1", 32)
	if err != nil {
		return key{}, err
	}
	block, err := aes.NewCipher(enc)
	if err != nil {
		return key{}, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return key{}, err
	}
	k := key{id: id[0], aead: aead, csrf: csrf}
	k.sessionAD = additionalData([]byte{wireVersion, k.id}, purposeSession)
	return k, nil
}

// Seal encrypts and authenticates plaintext for purpose, valid until
// expires. Open with the same purpose returns it.
func (c *Codec) Seal(purpose string, plaintext []byte, expires time.Time) (string, error) {
	if purpose == "" {
		return "", errors.New("session: seal: empty purpose")
	}
	if expires.IsZero() {
		return "", errors.New("session: seal: zero expiry")
	}
	v, err := c.seal(purpose, plaintext, expires)
	if err != nil {
		return "", fmt.Errorf("session: seal %s: %w", purpose, err)
	}
	if len(v) > maxCookieValue {
		return "", fmt.Errorf("session: seal %s: %w: %d bytes", purpose, ErrTooLarge, len(v))
	}
	return v, nil
}

// Open returns the plaintext Seal sealed for purpose. Errors match
// ErrExpired or ErrInvalid.
func (c *Codec) Open(purpose, sealed string) ([]byte, error) {
	if purpose == "" {
		return nil, fmt.Errorf("%w: empty purpose", ErrInvalid)
	}
	p, _, _, err := c.open(purpose, sealed)
	return p, err
}

func (c *Codec) seal(purpose string, plaintext []byte, expires time.Time) (string, error) {
	k := &c.keys[0]
	buf := make([]byte, headerLen+nonceLen, headerLen+nonceLen+expiresLen+len(plaintext)+k.aead.Overhead())
	buf[0], buf[1] = wireVersion, k.id
	rand.Read(buf[headerLen:]) // never fails since Go 1.24
	inner := binary.BigEndian.AppendUint64(make([]byte, 0, expiresLen+len(plaintext)), uint64(expires.UnixNano()))
	inner = append(inner, plaintext...)
	ad := additionalData(buf[:headerLen], purpose)
	out := k.aead.Seal(buf, buf[headerLen:], inner, ad)
	return base64.RawURLEncoding.EncodeToString(out), nil
}

// open returns the payload, the index of the key that opened it and the
// envelope's expiry (unix ns).
func (c *Codec) open(purpose, sealed string) ([]byte, int, int64, error) {
	if len(sealed) > maxCookieValue {
		return nil, 0, 0, fmt.Errorf("%w: %d bytes", ErrInvalid, len(sealed))
	}
	raw, err := base64.RawURLEncoding.DecodeString(sealed)
	if err != nil {
		return nil, 0, 0, fmt.Errorf("%w: encoding", ErrInvalid)
	}
	if len(raw) < headerLen+nonceLen+expiresLen+16 {
		return nil, 0, 0, fmt.Errorf("%w: short", ErrInvalid)
	}
	if raw[0] != wireVersion {
		return nil, 0, 0, fmt.Errorf("%w: version %d", ErrInvalid, raw[0])
	}
	nonce, ct := raw[headerLen:headerLen+nonceLen], raw[headerLen+nonceLen:]
	for i := range c.keys {
		k := &c.keys[i]
		if k.id != raw[1] {
			continue
		}
		ad := k.sessionAD
		if purpose != purposeSession {
			ad = additionalData(raw[:headerLen], purpose)
		}
		// Decrypt in place: ct is ours, freshly decoded.
		plain, err := k.aead.Open(ct[:0], nonce, ct, ad)
		if err != nil {
			continue
		}
		if len(plain) < expiresLen {
			return nil, 0, 0, fmt.Errorf("%w: short payload", ErrInvalid)
		}
		exp := int64(binary.BigEndian.Uint64(plain))
		if c.now().UnixNano() >= exp {
			return nil, 0, 0, errSealedExpired
		}
		return plain[expiresLen:], i, exp, nil
	}
	return nil, 0, 0, fmt.Errorf("%w: no key opens it", ErrInvalid)
}

var errSealedExpired = fmt.Errorf("%w: sealed value", ErrExpired)

func additionalData(header []byte, purpose string) []byte {
	ad := make([]byte, 0, len(header)+len(purpose))
	return append(append(ad, header...), purpose...)
}

// CSRFToken returns the CSRF token of s: an HMAC of its ID under a key
// derived from the sealing key.
func (c *Codec) CSRFToken(s *Session) string {
	if s == nil || s.ID == "" {
		return ""
	}
	return base64.RawURLEncoding.EncodeToString(csrfMAC(c.keys[0].csrf, s.ID))
}

// CheckCSRF reports whether token is s's CSRF token under any key, so
// tokens in pages rendered before a key rotation still work.
func (c *Codec) CheckCSRF(s *Session, token string) bool {
	if s == nil || s.ID == "" || len(token) != base64.RawURLEncoding.EncodedLen(sha256.Size) {
		return false
	}
	// Strict: a token whose unused trailing bits differ is another
	// string for the same bytes, and must not pass as the same token.
	got, err := base64.RawURLEncoding.Strict().DecodeString(token)
	if err != nil {
		return false
	}
	ok := false
	for i := range c.keys {
		// Check every key, not just until a match, so timing does not
		// tell which key matched.
		if hmac.Equal(got, csrfMAC(c.keys[i].csrf, s.ID)) {
			ok = true
		}
	}
	return ok
}

func csrfMAC(k []byte, id string) []byte {
	m := hmac.New(sha256.New, k)
	m.Write([]byte("usher csrf\x00"))
	m.Write([]byte(id))
	return m.Sum(nil)
}
