// Package providers defines what usher needs from an identity provider (IdP):
// start a login, finish it, and hand back a verified Identity. The protocol
// implementations live in providers/oidc and providers/saml; cmd/usher wires
// them through an explicit type → Config map.
package providers

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/usherhq/usher/config"
)

// Identity is a person as an IdP vouched for them. (IdP, Subject) is the
// stable key usher binds to an app username; Claims carry everything else the
// IdP said, flattened to string lists (nested OIDC objects use dotted keys,
// SAML attributes appear under both Name and FriendlyName).
type Identity struct {
	IdP     string
	Subject string
	Claims  map[string][]string
	// LogoutHint is small opaque data the provider wants back at logout
	// (a SAML NameID and SessionIndex, for instance). It travels in the
	// session cookie, so providers keep it short.
	LogoutHint string
}

// Claim returns the first value of a claim, or "".
func (id Identity) Claim(name string) string {
	if v := id.Claims[name]; len(v) > 0 {
		return v[0]
	}
	return ""
}

// Challenge is how a login starts: the browser is sent to URL, either by a
// redirect (Form == nil) or by an auto-submitted POST of Form to URL.
type Challenge struct {
	URL  string
	Form url.Values
	// State is opaque per-login state (PKCE verifier, nonce, SAML request
	// ID, ...). usher keeps it in the encrypted flow cookie and hands it back
	// to Finish unchanged; providers must not trust anything else.
	State []byte
}

// Provider is one configured IdP. Implementations are safe for concurrent
// use; Begin and Finish honour context cancellation.
type Provider interface {
	// ID is the configured IdP id ("okta", "entra"), used in routes,
	// cookies, logs and bindings.
	ID() string
	// Type is the protocol: "oidc" or "saml". It names the route prefix
	// (/usher/{type}/{id}/...).
	Type() string
	// Begin starts a login. flowID is a fresh random value that the
	// provider must send to the IdP as the round-trip value the protocol
	// echoes back (OIDC state, SAML RelayState); usher finds the flow
	// cookie by it. loginHint is an e-mail address the user typed into the
	// chooser, or "".
	Begin(ctx context.Context, flowID, loginHint string) (*Challenge, error)
	// FlowID reads the round-trip value back from a callback request
	// ("" when there is none, as in an IdP-initiated SAML login).
	FlowID(r *http.Request) string
	// Finish completes a login from the IdP's callback request. state is
	// what Begin returned, or nil when no flow cookie came back (an
	// IdP-initiated login, which providers refuse unless configured).
	// Refusals wrap ErrRefused and carry a Reason (see Refused); a request
	// the browser cut short is a refusal too, never a technical failure.
	Finish(ctx context.Context, r *http.Request, state []byte) (*Result, error)
}

// Result is a finished login.
type Result struct {
	Identity Identity
	// ReturnTo is set only for logins usher did not start (SAML
	// IdP-initiated): the configured landing path.
	ReturnTo string
}

// Logouter is implemented by providers whose IdP offers single logout.
type Logouter interface {
	// LogoutURL is where to send the browser after usher cleared its own
	// session; returnTo is an absolute URL the IdP may send the user back
	// to. An empty URL means the IdP has no logout endpoint.
	LogoutURL(ctx context.Context, id Identity, returnTo string) (string, error)
}

// LogoutResponder is implemented by providers whose IdP sends the browser
// back with a logout response (SAML single logout).
type LogoutResponder interface {
	// HandleLogoutResponse verifies the IdP's answer to usher's own logout
	// request. Refusals wrap ErrRefused.
	HandleLogoutResponse(r *http.Request) error
}

// LogoutRequestHandler is implemented by providers whose IdP may ask usher
// to end sessions: SAML single logout begun at the IdP or at another
// service provider. Implementations are safe for concurrent use.
type LogoutRequestHandler interface {
	// IsLogoutRequest reports whether r, sent to the provider's logout
	// endpoint, carries a logout request rather than the answer to one of
	// usher's. It reads a POST body within the provider's bound.
	IsLogoutRequest(r *http.Request) bool
	// HandleLogoutRequest verifies the logout request in r (signature,
	// issuer, destination, freshness, replay). current is the identity of
	// the usher session the browser brought along, or nil. Refusals wrap
	// ErrRefused, and then nothing may be ended.
	HandleLogoutRequest(ctx context.Context, r *http.Request, current *Identity) (*LogoutRequest, error)
}

// LogoutRequest is a verified request from the IdP to end sessions.
type LogoutRequest struct {
	// Subjects are the subjects (of this IdP) whose sessions must end.
	// Empty when the provider cannot tell whom the request names; the
	// caller then ends nothing and Answer says so to the IdP.
	Subjects []string
	// Answer builds the reply to the IdP, to be sent through the browser:
	// ended reports whether every session of Subjects was ended (and
	// Subjects was not empty).
	Answer func(ended bool) (*Challenge, error)
}

// BodyLimiter is implemented by providers whose callbacks may carry more
// than the proxy's default body limit (a SAML response with many groups).
type BodyLimiter interface {
	// MaxBodyBytes is the largest callback request body to accept.
	MaxBodyBytes() int64
}

// Metadataer is implemented by providers that publish metadata (SAML SP
// metadata).
type Metadataer interface {
	Metadata() ([]byte, string, error) // body, content type
}

// Deps is what usher hands a provider when opening it.
type Deps struct {
	// PublicURL is usher's external base URL, e.g. https://jira.example.com;
	// callback URLs are derived from it.
	PublicURL *url.URL
	// Name is the IdP's display name, for messages people read (the
	// chooser, an unavailable IdP's error). Default: the id.
	Name   string
	Log    *slog.Logger
	Client *http.Client
	// Cache keeps the last good copy of what the provider fetched from
	// its IdP (discovery document, metadata), so that usher starts and
	// reloads while the IdP does not answer. nil: no copies are kept.
	Cache Cache
	// Clock drives background retries and the readiness cache. Default:
	// the real clock.
	Clock clockwork.Clock
}

// Cache keeps documents a provider fetched from its IdP. usher gives each
// provider a cache of its own, so keys are the provider's choice and
// never collide with another IdP's; replicas on one database share it.
// Values are small (kilobytes). Methods are safe for concurrent use and
// honour context cancellation.
type Cache interface {
	// Get returns the value of key and when it was put, or an error
	// wrapping ErrNotCached when there is none.
	Get(ctx context.Context, key string) ([]byte, time.Time, error)
	// Put creates or replaces key.
	Put(ctx context.Context, key string, value []byte) error
}

// ErrNotCached is what Cache.Get wraps when it holds nothing for a key.
var ErrNotCached = errors.New("not cached")

// Checker is implemented by providers that can tell whether they can
// serve logins now. Both methods are safe for concurrent use.
type Checker interface {
	// Available reports, without any I/O, whether Begin can start a
	// login: nil, or an error wrapping ErrUnavailable. The chooser page
	// calls it on every view.
	Available() error
	// Ready reports whether logins can start and finish: nil, or why
	// not. It may ask the IdP (within ctx), and keeps its answer for a
	// short while, so that a load balancer polling /readyz every second
	// is no load on the IdP.
	Ready(ctx context.Context) error
}

// ErrUnavailable marks a provider that cannot start logins because what
// it needs from its IdP (the discovery document, the metadata) could not
// be loaded or has expired. It is a technical failure, not a refusal:
// the provider keeps trying in the background.
var ErrUnavailable = errors.New("identity provider unavailable")

// UnavailableError is an ErrUnavailable with what is missing.
type UnavailableError struct {
	// Name is the IdP's display name.
	Name string
	// Reason says what is missing, in words the sign-in page may show:
	// "its discovery document could not be fetched".
	Reason string
	// Err is the last failure behind it, for logs and /readyz; nil when
	// there is none to tell.
	Err error
}

func (e *UnavailableError) Error() string {
	if e.Err == nil {
		return e.Message()
	}
	return e.Message() + ": " + e.Err.Error()
}

// Message is the text for people: "<name> is unavailable: <reason>".
func (e *UnavailableError) Message() string { return e.Name + " is unavailable: " + e.Reason }

func (e *UnavailableError) Unwrap() error        { return e.Err }
func (e *UnavailableError) Is(target error) bool { return target == ErrUnavailable }

// Config is a provider type's own configuration, decoded strictly from the
// IdP entry's `config:` block. Open builds the provider.
type Config interface {
	Validate() []error
	Open(ctx context.Context, id string, deps Deps) (Provider, error)
	// ClaimDefaults names the claims the type's identities carry the
	// username and the display name in, for mappings that name none.
	ClaimDefaults() config.ClaimDefaults
}

// ErrRefused marks a login the provider refused on purpose: a bad
// signature, a wrong audience, a replay, a state mismatch. Such errors map
// to a 4xx page; anything else is a technical failure (5xx).
var ErrRefused = errors.New("login refused")

// Reason says why a refusal happened, from a small fixed set whose values
// are the login reasons of package metrics, so a refusal is counted by
// what it is, never by the words of its message.
type Reason string

// The refusal reasons.
const (
	// ReasonReplay: a message (assertion, code, logout request) was used
	// before.
	ReasonReplay Reason = "replay"
	// ReasonSignature: missing, invalid or untrusted signature, or a
	// disallowed algorithm.
	ReasonSignature Reason = "signature"
	// ReasonAudience: issued for another client, SP, endpoint or issuer.
	ReasonAudience Reason = "audience"
	// ReasonExpired: outside its validity window (expired, issued in the
	// future, not yet valid).
	ReasonExpired Reason = "expired"
	// ReasonState: the answer does not belong to the login flow this
	// browser started (state, RelayState, nonce, InResponseTo, flow cookie).
	ReasonState Reason = "state"
	// ReasonIdPError: the IdP itself answered with an error (OIDC error
	// parameter, a SAML status other than Success).
	ReasonIdPError Reason = "idp_error"
	// ReasonOther: anything else, including requests the browser cut
	// short and malformed input.
	ReasonOther Reason = "other"
)

// Refused returns an ErrRefused error with its reason.
func Refused(reason Reason, format string, args ...any) error {
	return &refusal{reason: reason, err: fmt.Errorf(format, args...)}
}

// ReasonOf returns the reason of the outermost refusal in err's chain:
// ReasonOther for a refusal made without one, or for an error that is no
// refusal at all.
func ReasonOf(err error) Reason {
	var r *refusal
	if errors.As(err, &r) && r.reason != "" {
		return r.reason
	}
	return ReasonOther
}

type refusal struct {
	reason Reason
	err    error
}

func (e *refusal) Error() string        { return "login refused: " + e.err.Error() }
func (e *refusal) Unwrap() error        { return e.err }
func (e *refusal) Is(target error) bool { return target == ErrRefused }
