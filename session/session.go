// Package session owns usher's browser state: the encrypted, authenticated
// session cookie (who is logged in, until when), generic sealed values for
// other short-lived cookies such as the login flow cookie, key rotation,
// CSRF tokens and in-memory session revocation. Everything here runs on the
// hot path of every proxied request, so it does no I/O.
package session

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"
	"time"
)

// Errors returned by Load and Open; match them with errors.Is.
var (
	// ErrNoSession means the request carries no session cookie.
	ErrNoSession = errors.New("session: no session cookie")
	// ErrExpired means the value was genuine but its idle or absolute
	// lifetime is over (or it was revoked: see ErrRevoked).
	ErrExpired = errors.New("session: expired")
	// ErrInvalid means the value was tampered with, sealed by an unknown
	// key or for another purpose, or is malformed.
	ErrInvalid = errors.New("session: invalid")
	// ErrRevoked means the session was revoked. Errors carrying it also
	// match ErrExpired, because the caller's answer is the same: log in
	// again.
	ErrRevoked = errors.New("session: revoked")
	// ErrTooLarge means Save refused a session whose cookie would exceed
	// what browsers reliably store (usually too many groups).
	ErrTooLarge = errors.New("session: cookie too large")
)

const (
	// maxCookieValue bounds what Load and Open even try to decode.
	maxCookieValue = 4096
	// maxSavedCookie bounds name=value of a cookie we emit; browsers keep
	// at least 4096 bytes per cookie including attributes.
	maxSavedCookie = 3800
	// refreshAfter limits how often an active session is re-sealed just to
	// move Seen forward.
	refreshAfter = time.Minute
	// purposeSession is the additional data binding sealed values to the
	// session cookie.
	purposeSession = "session"
)

// Session is one logged-in person, as carried in the session cookie.
type Session struct {
	ID          string // random 128-bit, base64url; the revocation key
	IdP         string
	Subject     string
	Username    string
	Email       string
	DisplayName string
	Groups      []string
	// Apps are the apps the person may enter; nil means every app (the
	// IdP's access policy names no apps).
	Apps []string
	// Attributes are the custom attributes sent to apps as headers
	// (headers.attributes); only those travel in the cookie.
	Attributes map[string]string
	LogoutHint string
	Created    time.Time // absolute timeout counts from here
	Seen       time.Time // idle timeout counts from here; refreshed at most once a minute
}

// Revoker tells Load whether a genuine, unexpired session was revoked. It
// is called on every request, so it must not do I/O; it must be safe for
// concurrent use.
type Revoker interface {
	Revoked(s *Session) bool
}

// Options configure a Codec.
type Options struct {
	Name     string // cookie base name, e.g. "usher_session"
	Domain   string // "" = host-only
	Secure   bool   // true when the public URL is https
	Idle     time.Duration
	Absolute time.Duration
	Now      func() time.Time
	// Revoker, when set, is consulted by Load; nil means no revocation.
	Revoker Revoker
}

// Codec seals and opens usher's cookies. It is safe for concurrent use.
type Codec struct {
	opts    Options
	keys    []key // keys[0] seals; all open
	name    string
	now     func() time.Time
	revoker Revoker
	cache   openCache
}

// NewCodec returns a Codec. keys are raw secrets of at least 32 bytes each;
// the first seals, all open, so a new key can be put first while cookies
// sealed with the old one stay valid.
func NewCodec(keys [][]byte, opts Options) (*Codec, error) {
	if len(keys) == 0 {
		return nil, errors.New("session: no keys")
	}
	if opts.Name == "" {
		return nil, errors.New("session: empty cookie name")
	}
	if opts.Idle <= 0 || opts.Absolute <= 0 {
		return nil, fmt.Errorf("session: idle (%s) and absolute (%s) timeouts must be positive", opts.Idle, opts.Absolute)
	}
	c := &Codec{opts: opts, now: opts.Now, revoker: opts.Revoker, cache: openCache{max: cacheMax}}
	if c.now == nil {
		c.now = time.Now
	}
	c.name = c.prefixed(opts.Name)
	for i, secret := range keys {
		k, err := deriveKey(secret)
		if err != nil {
			return nil, fmt.Errorf("session: key %d: %w", i+1, err)
		}
		c.keys = append(c.keys, k)
	}
	return c, nil
}

// CookieName is the session cookie's name as sent to browsers.
func (c *Codec) CookieName() string { return c.name }

// Idle is the idle timeout.
func (c *Codec) Idle() time.Duration { return c.opts.Idle }

// Absolute is the absolute timeout: no session lives longer after Created.
func (c *Codec) Absolute() time.Duration { return c.opts.Absolute }

// PrefixedName is the name a cookie with base name gets from SetCookie:
// "__Host-"+name under HTTPS without a Domain, name otherwise.
func (c *Codec) PrefixedName(name string) string { return c.prefixed(name) }

func (c *Codec) prefixed(name string) string {
	if c.opts.Secure && c.opts.Domain == "" {
		return "__Host-" + name
	}
	return name
}

// NewSession returns a session with a fresh random ID and Created and Seen
// set to now; the caller fills in the identity.
func (c *Codec) NewSession() *Session {
	var b [16]byte
	rand.Read(b[:]) // never fails since Go 1.24
	now := c.now()
	return &Session{ID: base64.RawURLEncoding.EncodeToString(b[:]), Created: now, Seen: now}
}

// Load opens the session cookie of r. refresh reports that the caller
// should Save the session again: Seen was more than a minute old (Load has
// already moved it to now) or the cookie was sealed with an older key.
// Errors match ErrNoSession, ErrExpired (idle, absolute or revoked) or
// ErrInvalid. The Session is the caller's to change.
func (c *Codec) Load(r *http.Request) (s *Session, refresh bool, err error) {
	s, refresh, err = c.LoadShared(r)
	if err != nil || refresh {
		return s, refresh, err // a refreshed session is already a copy
	}
	return s.clone(), false, nil
}

// LoadShared is Load for the hot path: it allocates nothing when this
// Codec has opened the same cookie value before. The Session it returns
// may be shared with other requests and must not be changed; when
// refresh is true it is a copy of the caller's own, with Seen moved to
// now, ready for Save.
func (c *Codec) LoadShared(r *http.Request) (s *Session, refresh bool, err error) {
	err = ErrNoSession
	// Several cookies of that name can arrive (a stale domain cookie beside
	// a host-only one); the first that opens wins.
	for _, line := range r.Header["Cookie"] {
		for len(line) > 0 {
			var part string
			if i := strings.IndexByte(line, ';'); i >= 0 {
				part, line = line[:i], line[i+1:]
			} else {
				part, line = line, ""
			}
			name, value, ok := strings.Cut(strings.TrimSpace(part), "=")
			if !ok || name != c.name {
				continue
			}
			s, refresh, e := c.loadValue(value)
			if e == nil {
				return s, refresh, nil
			}
			if err == ErrNoSession {
				err = e
			}
		}
	}
	return nil, false, err
}

// clone copies s with its own slices and map.
func (s *Session) clone() *Session {
	cp := *s
	cp.Groups = slices.Clone(s.Groups)
	cp.Apps = slices.Clone(s.Apps)
	cp.Attributes = maps.Clone(s.Attributes)
	return &cp
}

// loadValue opens one cookie value, from the cache when it opened before.
// The returned Session is shared unless refresh is true.
func (c *Codec) loadValue(value string) (*Session, bool, error) {
	if len(value) > 1 && value[0] == '"' && value[len(value)-1] == '"' {
		value = value[1 : len(value)-1]
	}
	now := c.now()
	o := c.cache.get(value)
	if o == nil {
		plain, keyIndex, exp, err := c.open(purposeSession, value)
		if err != nil {
			return nil, false, err
		}
		s, err := decodeSession(plain)
		if err != nil {
			return nil, false, err
		}
		o = &opened{s: s, expires: exp, keyIndex: keyIndex}
		c.cache.put(value, o)
	} else if now.UnixNano() >= o.expires {
		return nil, false, errSealedExpired
	}
	s := o.s
	// The envelope expiry was fixed at Save; check again against the
	// current timeouts so that shortening them takes effect at once.
	if !now.Before(s.Created.Add(c.opts.Absolute)) {
		return nil, false, fmt.Errorf("%w: absolute timeout", ErrExpired)
	}
	if !now.Before(s.Seen.Add(c.opts.Idle)) {
		return nil, false, fmt.Errorf("%w: idle timeout", ErrExpired)
	}
	if c.revoker != nil && c.revoker.Revoked(s) {
		return nil, false, fmt.Errorf("%w (%w)", ErrRevoked, ErrExpired)
	}
	refresh := o.keyIndex != 0
	if now.Sub(s.Seen) > refreshAfter {
		refresh = true
	}
	if refresh {
		s = s.clone()
		if now.Sub(s.Seen) > refreshAfter {
			s.Seen = now
		}
	}
	return s, refresh, nil
}

// Save seals s into the session cookie. Seen is set to now when zero;
// Created must be set. Max-Age is the remaining absolute lifetime.
func (c *Codec) Save(w http.ResponseWriter, s *Session) error {
	if s == nil || s.ID == "" || s.Created.IsZero() {
		return errors.New("session: save: session needs ID and Created")
	}
	now := c.now()
	if s.Seen.IsZero() {
		s.Seen = now
	}
	absEnd := s.Created.Add(c.opts.Absolute)
	if !now.Before(absEnd) {
		return fmt.Errorf("%w: save after the absolute timeout", ErrExpired)
	}
	expires := s.Seen.Add(c.opts.Idle)
	if absEnd.Before(expires) {
		expires = absEnd
	}
	if !now.Before(expires) {
		return fmt.Errorf("%w: save after the idle timeout", ErrExpired)
	}
	plain, err := encodeSession(s)
	if err != nil {
		return err
	}
	value, err := c.seal(purposeSession, plain, expires)
	if err != nil {
		return err
	}
	if n := len(c.name) + 1 + len(value); n > maxSavedCookie {
		return fmt.Errorf("%w: %d bytes with %d groups (limit %d)", ErrTooLarge, n, len(s.Groups), maxSavedCookie)
	}
	c.writeCookie(w, c.name, value, absEnd.Sub(now))
	return nil
}

// Clear deletes the session cookie.
func (c *Codec) Clear(w http.ResponseWriter) { c.writeCookie(w, c.name, "", -1) }

// SetCookie sets a cookie with the session cookie's attributes (HttpOnly,
// SameSite=Lax, Secure, Path=/, Domain, "__Host-" prefix rule). name is the
// base name; read it back with CookieValue. maxAge <= 0 deletes it.
func (c *Codec) SetCookie(w http.ResponseWriter, name, value string, maxAge time.Duration) {
	c.writeCookie(w, c.prefixed(name), value, maxAge)
}

// SetFlowCookie sets a login flow cookie. It differs from SetCookie in one
// attribute: under HTTPS it is SameSite=None, because the IdP answers a
// SAML login (and an OIDC form_post) with a cross-site POST, on which
// browsers do not send Lax cookies. Its value is sealed to one flow ID and
// is useless to anyone but the browser that started the login. Without
// HTTPS, browsers refuse SameSite=None, so it stays Lax (fine for
// loopback demos, where IdP and usher are the same site).
func (c *Codec) SetFlowCookie(w http.ResponseWriter, name, value string, maxAge time.Duration) {
	if !c.opts.Secure {
		c.writeCookie(w, c.prefixed(name), value, maxAge)
		return
	}
	ck := &http.Cookie{
		Name: c.prefixed(name), Value: value, Path: "/", Domain: c.opts.Domain,
		Secure: true, HttpOnly: true, SameSite: http.SameSiteNoneMode,
		MaxAge: int((maxAge + time.Second - 1) / time.Second),
	}
	http.SetCookie(w, ck)
}

// ClearCookie deletes a cookie set by SetCookie.
func (c *Codec) ClearCookie(w http.ResponseWriter, name string) {
	c.writeCookie(w, c.prefixed(name), "", -1)
}

// CookieValue returns the value of the cookie SetCookie set under name.
func (c *Codec) CookieValue(r *http.Request, name string) (string, bool) {
	ck, err := r.Cookie(c.prefixed(name))
	if err != nil {
		return "", false
	}
	return ck.Value, true
}

func (c *Codec) writeCookie(w http.ResponseWriter, name, value string, maxAge time.Duration) {
	ck := &http.Cookie{
		Name:     name,
		Value:    value,
		Path:     "/",
		Domain:   c.opts.Domain,
		Secure:   c.opts.Secure,
		HttpOnly: true,
		SameSite: http.SameSiteLaxMode,
	}
	switch {
	case maxAge <= 0:
		ck.MaxAge = -1 // "Max-Age=0": delete now
	default:
		// Round up so a cookie never disappears before its content expires.
		ck.MaxAge = int((maxAge + time.Second - 1) / time.Second)
	}
	http.SetCookie(w, ck)
}
