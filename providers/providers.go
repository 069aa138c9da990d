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
	// Refusals wrap ErrRefused.
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
	HandleLogoutResponse(r *http.Request) error
}

// Metadataer is implemented by providers that publish metadata (SAML SP
// metadata).
type Metadataer interface {
	Metadata() ([]byte, string, error) // body, content type
}

// Deps is what usher hands every provider when opening it.
type Deps struct {
	// PublicURL is usher's external base URL, e.g. https://jira.example.com;
	// callback URLs are derived from it.
	PublicURL *url.URL
	Log       *slog.Logger
	Client    *http.Client
}

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

// Refused wraps a reason as an ErrRefused error.
func Refused(format string, args ...any) error {
	return &refusal{err: fmt.Errorf(format, args...)}
}

type refusal struct{ err error }

func (e *refusal) Error() string        { return "login refused: " + e.err.Error() }
func (e *refusal) Unwrap() error        { return e.err }
func (e *refusal) Is(target error) bool { return target == ErrRefused }
