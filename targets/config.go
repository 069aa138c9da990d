package targets

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/usherhq/usher/config"
)

// Config is an app kind's own configuration (jira.Config, ...), decoded
// strictly from the app's `api:` block. cmd/usher picks the type through
// an explicit kind → Config map and calls Open.
type Config interface {
	Validate() []error
	Open(app string, deps Deps) (Target, error)
	// PrivilegedGroups are the kind's built-in administrator groups. usher
	// grants them only through an explicit mapping line, never through a
	// rule, a default or a name that merely matches; a kind that forgot
	// them would let a rule make people admins, so every kind declares
	// them here (nil when it has no fixed ones, as Bitbucket's global
	// permissions can go to any group).
	PrivilegedGroups() []string
}

// EmailHider is what a Config may also say: that its app does not tell an
// existing account's e-mail address, so the verified_email adoption
// policy can never take such an account over (usher check warns).
type EmailHider interface {
	HidesEmails() bool
}

// Deps is what usher hands every adapter when opening it.
type Deps struct {
	// Upstream is the app's upstream URL, the default REST base URL.
	Upstream *url.URL
	HTTP     *http.Client
	Log      *slog.Logger
	Now      func() time.Time
	// Sleep waits between retries; nil uses a timer. Tests record waits.
	Sleep func(ctx context.Context, d time.Duration) error
	// Observe, when set, is told about every app call (metrics).
	Observe func(op, result string, d time.Duration)
	// Accounts keeps the app-side ids of people for kinds that address
	// them by id (Atlassian Cloud); kinds that use usernames ignore it.
	Accounts Accounts
}

// Conn is the connection block Jira, Confluence and Bitbucket configs
// share (embedded with `yaml:",inline"`): an admin account with either a
// password or a personal access token.
type Conn struct {
	// URL is the REST base URL; default the app's upstream.
	URL      string        `yaml:"url"`
	Username string        `yaml:"username"`
	Password config.Secret `yaml:"password"`
	Token    config.Secret `yaml:"token"`
	// Concurrency caps requests in flight to the app (default 8).
	Concurrency int `yaml:"concurrency"`
	// Timeout bounds one attempt of one call (default 15s).
	Timeout time.Duration `yaml:"timeout"`
}

// Validate checks the block; errors name the YAML key.
func (c *Conn) Validate() []error {
	errs := ValidateURL("url", c.URL)
	switch {
	case c.Password.IsZero() && c.Token.IsZero():
		errs = append(errs, &config.FieldError{Field: "password", Msg: "set password (with username) or token"})
	case !c.Password.IsZero() && !c.Token.IsZero():
		errs = append(errs, &config.FieldError{Field: "token", Msg: "set password or token, not both"})
	case !c.Password.IsZero() && c.Username == "":
		errs = append(errs, &config.FieldError{Field: "username", Msg: "required with password"})
	case !c.Token.IsZero() && c.Username != "":
		errs = append(errs, &config.FieldError{Field: "username", Msg: "not used with token (the token names its user)"})
	}
	return append(errs, ValidateLimits(c.Concurrency, c.Timeout)...)
}

// Client resolves the secrets and builds the REST client.
func (c *Conn) Client(app string, deps Deps) (*Client, error) {
	auth := Auth{Username: c.Username}
	var err error
	if !c.Token.IsZero() {
		auth.Token, err = c.Token.Resolve()
	} else {
		auth.Password, err = c.Password.Resolve()
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", app, err)
	}
	return OpenClient(app, c.URL, auth, c.Concurrency, c.Timeout, deps)
}

// OpenClient builds a Client from config values: rawURL, or the upstream
// when empty, is the base URL.
func OpenClient(app, rawURL string, auth Auth, concurrency int, timeout time.Duration, deps Deps) (*Client, error) {
	base := deps.Upstream
	if rawURL != "" {
		u, err := url.Parse(rawURL)
		if err != nil {
			return nil, fmt.Errorf("%s: url: %w", app, err)
		}
		base = u
	}
	if base == nil {
		return nil, fmt.Errorf("%s: no url configured and no upstream", app)
	}
	return NewClient(ClientConfig{
		App: app, BaseURL: base, Auth: auth, HTTP: deps.HTTP,
		Timeout: timeout, Concurrency: concurrency,
		Log: deps.Log, Now: deps.Now, Sleep: deps.Sleep, Observe: deps.Observe,
	})
}

// ValidateURL checks an optional absolute http(s) URL field.
func ValidateURL(field, raw string) []error {
	if raw == "" {
		return nil
	}
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return []error{&config.FieldError{Field: field, Msg: "want an absolute http(s) URL"}}
	}
	return nil
}

// ValidateLimits checks the concurrency and timeout fields.
func ValidateLimits(concurrency int, timeout time.Duration) []error {
	var errs []error
	if concurrency < 0 {
		errs = append(errs, &config.FieldError{Field: "concurrency", Msg: "must not be negative"})
	}
	if timeout < 0 {
		errs = append(errs, &config.FieldError{Field: "timeout", Msg: "must not be negative"})
	}
	return errs
}

// RandomPassword is a long random password for apps that need one on
// create; logins go through usher, so nobody ever types it. The suffix
// satisfies the usual character-class policies.
func RandomPassword() (string, error) {
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("random password: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b) + "-Aa1", nil
}

// Timestamp decodes the last-login fields the apps use: epoch
// milliseconds (number or string), RFC 3339, or Jira's
// 2006-01-02T15:04:05.000-0700. Anything else decodes as the zero time
// rather than failing the whole read, since the formats are version
// dependent.
type Timestamp struct{ time.Time }

// UnmarshalJSON implements json.Unmarshaler.
func (t *Timestamp) UnmarshalJSON(b []byte) error {
	t.Time = time.Time{}
	s := strings.Trim(strings.TrimSpace(string(b)), `"`)
	if s == "" || s == "null" {
		return nil
	}
	if ms, err := strconv.ParseInt(s, 10, 64); err == nil {
		if ms > 0 {
			t.Time = time.UnixMilli(ms).UTC()
		}
		return nil
	}
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05.000-0700", "2006-01-02T15:04:05-0700"} {
		if v, err := time.Parse(layout, s); err == nil {
			t.Time = v
			return nil
		}
	}
	return nil
}

var _ json.Unmarshaler = (*Timestamp)(nil)
