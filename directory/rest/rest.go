// Package rest is the HTTP plumbing the directory connectors share
// (Graph, Okta, Google Workspace, OneLogin):
//
//   - Client: one call = several attempts, each with its own deadline;
//     bounded body reads; retries on throttling (429) and outages
//     (502/503/504, transport errors, bodies cut short) that honour the
//     server's wait hint (Retry-After in seconds or as an HTTP date, or
//     a connector's own such as Okta's X-Rate-Limit-Reset) within a
//     wait Budget, or that a connector recognises in the body (Google's
//     quota errors are 403s with a reason); a client-wide pause after a throttle so that parallel
//     workers do not keep hammering; one credential refresh and retry on
//     401; no redirects; and origin pinning, so that a paging link the
//     server hands back can never carry our credentials to another host.
//   - TokenCache, ClientCredentials and JWTBearer: OAuth 2.0 tokens
//     from the client credentials grant (secret in a form or a JSON
//     body, HTTP Basic, or a private_key_jwt client assertion) or the
//     JWT bearer grant (Google service accounts), cached and renewed
//     before they expire.
//   - Assertion, ParsePrivateKey, ParseCertificate: signed JWT client
//     assertions from PEM keys (Entra certificates, Okta service apps,
//     Google service accounts).
//   - CheckBaseURL: the configuration rule for base URLs (https, plain
//     http only on loopback).
//
// The package knows no directory's paths or JSON: a connector supplies
// its error envelope (Config.Decode) and, if the server paces clients
// in its own headers, its hints (Config.Retry, Config.Pace).
package rest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jonboulle/clockwork"
)

// Config builds a Client. Zero values take the defaults noted.
type Config struct {
	// Service names the directory in errors and logs ("graph", "okta").
	Service string
	// Origin pins the client: every request URL must have this scheme
	// and host (port included). Required.
	Origin *url.URL
	// HTTP makes the calls; default a client whose transport keeps 16
	// idle connections per host. Its own Timeout is left alone; Client
	// sets per-attempt deadlines.
	HTTP  *http.Client
	Clock clockwork.Clock
	Log   *slog.Logger
	// Observe is told about every attempt: op, "ok" / "throttled" /
	// "error", duration.
	Observe func(op, result string, d time.Duration)
	// Auth sets credentials on every request that does not say NoAuth.
	Auth Auth
	// Timeout bounds one attempt, body read included (default 30s).
	Timeout time.Duration
	// MaxBody is the largest body read (default 32 MiB); a larger answer
	// is an error, never silently cut.
	MaxBody int64
	// MaxAttempts bounds the attempts of one call (default 6).
	MaxAttempts int
	// MaxWait is the wait budget of a call made without a Budget
	// (default 2 minutes).
	MaxWait time.Duration
	// BackoffBase and BackoffMax shape the full-jitter exponential
	// backoff used when the server gives no wait hint (default 1s, 30s).
	BackoffBase, BackoffMax time.Duration
	// Retry decides whether a non-2xx answer is worth retrying and reads
	// the server's wait hint (0 for none). Default DefaultRetry.
	Retry func(status int, h http.Header, now time.Time) (retry bool, wait time.Duration)
	// Judge, when set, replaces Retry for a service whose throttling
	// signal is in the body, not only the status (Google answers quota
	// errors as 403 with errors[].reason userRateLimitExceeded). It sees
	// the whole non-2xx answer and says whether to retry, whether the
	// answer is a throttle (counted "throttled" and pausing the client,
	// as a 429 is without Judge), and the server's wait hint (0 for
	// none: backoff).
	Judge func(status int, h http.Header, body []byte, now time.Time) (retry, throttled bool, wait time.Duration)
	// Pace, when set, sees every answer's headers and may return a time
	// before which no request should start (a rate-limit window that is
	// used up). Zero means no pause.
	Pace func(h http.Header, now time.Time) time.Time
	// Decode turns an error answer's body into an error (the service's
	// error envelope). Default: the status text and the body's start.
	Decode func(status int, h http.Header, body []byte) error
}

// Auth puts credentials on requests.
type Auth interface {
	// Authorize sets the request's credentials, fetching them if needed.
	Authorize(ctx context.Context, r *http.Request) error
	// Refresh is called after the server answered 401 to a request that
	// carried the Authorization value refused. It drops that credential
	// and reports whether a retry with a fresh one makes sense (false for
	// a fixed API token).
	Refresh(refused string) bool
}

// Client sends a directory's API calls. It is safe for concurrent use.
type Client struct {
	cfg Config

	mu         sync.Mutex
	pauseUntil time.Time
}

// New applies the defaults; it fails only without an origin.
func New(cfg Config) (*Client, error) {
	if cfg.Origin == nil || cfg.Origin.Host == "" {
		return nil, fmt.Errorf("%s: no origin", cfg.Service)
	}
	// The default transport keeps 2 idle connections per host; parallel
	// membership reads would then open and close connections all along.
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 16
	hc := &http.Client{Transport: tr}
	if cfg.HTTP != nil {
		c := *cfg.HTTP
		hc = &c
	}
	// A redirect would carry the Authorization header wherever the server
	// points; a directory API has no reason to redirect a read.
	hc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	cfg.HTTP = hc
	if cfg.Clock == nil {
		cfg.Clock = clockwork.NewRealClock()
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Observe == nil {
		cfg.Observe = func(string, string, time.Duration) {}
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 30 * time.Second
	}
	if cfg.MaxBody <= 0 {
		cfg.MaxBody = 32 << 20
	}
	if cfg.MaxAttempts <= 0 {
		cfg.MaxAttempts = 6
	}
	if cfg.MaxWait <= 0 {
		cfg.MaxWait = 2 * time.Minute
	}
	if cfg.BackoffBase <= 0 {
		cfg.BackoffBase = time.Second
	}
	if cfg.BackoffMax <= 0 {
		cfg.BackoffMax = 30 * time.Second
	}
	if cfg.Retry == nil {
		cfg.Retry = DefaultRetry
	}
	if cfg.Decode == nil {
		cfg.Decode = decodePlain
	}
	return &Client{cfg: cfg}, nil
}

// Clock is the client's clock.
func (c *Client) Clock() clockwork.Clock { return c.cfg.Clock }

// Request is one API call.
type Request struct {
	// Op names the call in metrics and errors ("users", "members").
	Op string
	// Method defaults to GET.
	Method string
	// URL is absolute and must be on the client's origin.
	URL    string
	Header http.Header
	// Body is sent with every attempt; ContentType labels it.
	Body        []byte
	ContentType string
	// Budget is shared by the calls of one run (a pull); nil gives this
	// call a budget of Config.MaxWait.
	Budget *Budget
	// NoAuth sends the request without credentials (token endpoints).
	NoAuth bool
	// Decode overrides Config.Decode for this call (a token endpoint
	// answers in the OAuth error shape, not the API's).
	Decode func(status int, h http.Header, body []byte) error
}

// Response is a 2xx answer.
type Response struct {
	Status int
	Header http.Header
	Body   []byte
}

// Error is a call that failed for good.
type Error struct {
	Service string
	Op      string
	// URL is the request URL without its query (which can hold cursors
	// and filters with personal data).
	URL string
	// Status is the last answer's status, 0 when none came.
	Status int
	// Throttled: the server kept throttling and the wait budget or the
	// attempts ran out.
	Throttled bool
	// Err is the decoded API error or the transport error.
	Err error
}

func (e *Error) Error() string {
	var b strings.Builder
	// The service is left out: callers prefix their own context
	// ("graph entra: pull: ...").
	fmt.Fprintf(&b, "%s %s", e.Op, e.URL)
	if e.Status != 0 {
		fmt.Fprintf(&b, ": HTTP %d", e.Status)
	}
	if e.Throttled {
		b.WriteString(" (throttled)")
	}
	if e.Err != nil {
		b.WriteString(": ")
		b.WriteString(e.Err.Error())
	}
	return b.String()
}

func (e *Error) Unwrap() error { return e.Err }

// StatusOf is the HTTP status of a failed call (0 when no answer came).
func StatusOf(err error) int {
	var e *Error
	if errors.As(err, &e) {
		return e.Status
	}
	return 0
}

// Budget caps the total time the calls of one run (a pull, a delta) may
// spend waiting on throttling and backoff. Safe for concurrent use.
type Budget struct {
	mu   sync.Mutex
	left time.Duration
}

// NewBudget allows d of waiting in all.
func NewBudget(d time.Duration) *Budget { return &Budget{left: d} }

// take spends d, or reports that not that much is left.
func (b *Budget) take(d time.Duration) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if d > b.left {
		return false
	}
	b.left -= d
	return true
}

// GetJSON GETs url and decodes a 2xx JSON body into out.
func (c *Client) GetJSON(ctx context.Context, op, url string, hdr http.Header, budget *Budget, out any) (*Response, error) {
	res, err := c.Do(ctx, Request{Op: op, URL: url, Header: hdr, Budget: budget})
	if err != nil {
		return nil, err
	}
	if err := DecodeJSON(res.Body, out); err != nil {
		return res, &Error{Service: c.cfg.Service, Op: op, URL: stripQuery(url), Status: res.Status, Err: err}
	}
	return res, nil
}

// DecodeJSON decodes one JSON value and refuses trailing data.
func DecodeJSON(body []byte, out any) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(out); err != nil {
		return fmt.Errorf("decode response: %w", err)
	}
	if dec.More() {
		return errors.New("decode response: trailing data after the JSON value")
	}
	return nil
}

// Do sends the call, retrying where the answer allows (see the package
// comment), and returns the first 2xx answer. Any other outcome is an
// *Error, or the context's error wrapped when ctx ends first.
func (c *Client) Do(ctx context.Context, r Request) (*Response, error) {
	if r.Method == "" {
		r.Method = http.MethodGet
	}
	fail := func(status int, throttled bool, err error) error {
		return &Error{Service: c.cfg.Service, Op: r.Op, URL: stripQuery(r.URL), Status: status, Throttled: throttled, Err: err}
	}
	u, err := url.Parse(r.URL)
	if err != nil {
		return nil, fail(0, false, err)
	}
	if u.Scheme != c.cfg.Origin.Scheme || u.Host != c.cfg.Origin.Host {
		return nil, fail(0, false, fmt.Errorf("refusing to call %s://%s: only %s://%s is configured", u.Scheme, u.Host, c.cfg.Origin.Scheme, c.cfg.Origin.Host))
	}
	budget := r.Budget
	if budget == nil {
		budget = NewBudget(c.cfg.MaxWait)
	}
	refreshed := false
	for attempt := 1; ; attempt++ {
		if err := c.waitPause(ctx, budget); err != nil {
			return nil, fail(0, errors.Is(err, errBudget), err)
		}
		began := c.cfg.Clock.Now()
		status, hdr, body, sent, err := c.attempt(ctx, r)
		took := c.cfg.Clock.Since(began)
		if err != nil {
			c.cfg.Observe(r.Op, "error", took)
			if ctx.Err() != nil {
				return nil, fail(0, false, ctx.Err())
			}
			if errors.Is(err, errTooLarge) || errors.Is(err, errNoCredentials) {
				return nil, fail(status, false, err)
			}
			if attempt >= c.cfg.MaxAttempts {
				return nil, fail(0, false, fmt.Errorf("%w (gave up after %d attempts)", err, attempt))
			}
			if werr := c.wait(ctx, r, budget, attempt, c.backoff(attempt), err); werr != nil {
				return nil, fail(0, false, fmt.Errorf("%w; %w", err, werr))
			}
			continue
		}
		now := c.cfg.Clock.Now()
		if c.cfg.Pace != nil {
			if until := c.cfg.Pace(hdr, now); until.After(now) {
				c.pause(until)
			}
		}
		if status >= 200 && status < 300 {
			c.cfg.Observe(r.Op, "ok", took)
			return &Response{Status: status, Header: hdr, Body: body}, nil
		}
		var retry, throttled bool
		var hint time.Duration
		if c.cfg.Judge != nil {
			retry, throttled, hint = c.cfg.Judge(status, hdr, body, now)
		} else {
			throttled = status == http.StatusTooManyRequests
			retry, hint = c.cfg.Retry(status, hdr, now)
		}
		if throttled {
			c.cfg.Observe(r.Op, "throttled", took)
		} else {
			c.cfg.Observe(r.Op, "error", took)
		}
		decode := c.cfg.Decode
		if r.Decode != nil {
			decode = r.Decode
		}
		apiErr := decode(status, hdr, body)
		if status == http.StatusUnauthorized && !r.NoAuth && c.cfg.Auth != nil && !refreshed {
			refreshed = true
			if c.cfg.Auth.Refresh(sent) {
				c.cfg.Log.LogAttrs(ctx, slog.LevelDebug, "credential refused, refreshing once",
					slog.String("service", c.cfg.Service), slog.String("op", r.Op))
				attempt-- // a refresh is not a failed attempt
				continue
			}
		}
		if !retry {
			return nil, fail(status, false, apiErr)
		}
		if attempt >= c.cfg.MaxAttempts {
			return nil, fail(status, throttled, fmt.Errorf("%w (gave up after %d attempts)", apiErr, attempt))
		}
		d := hint
		if d <= 0 {
			d = c.backoff(attempt)
		}
		if throttled {
			c.pause(now.Add(d))
		}
		if werr := c.wait(ctx, r, budget, attempt, d, apiErr); werr != nil {
			return nil, fail(status, throttled, fmt.Errorf("%w; %w", apiErr, werr))
		}
	}
}

var (
	errTooLarge      = errors.New("response body too large")
	errNoCredentials = errors.New("no credentials")
	errBudget        = errors.New("wait budget exhausted")
)

// attempt sends the request once, under its own deadline. sent is the
// Authorization value it carried.
func (c *Client) attempt(ctx context.Context, r Request) (status int, hdr http.Header, body []byte, sent string, err error) {
	actx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	var rd io.Reader
	if r.Body != nil {
		rd = bytes.NewReader(r.Body)
	}
	req, err := http.NewRequestWithContext(actx, r.Method, r.URL, rd)
	if err != nil {
		return 0, nil, nil, "", err
	}
	for k, v := range r.Header {
		req.Header[k] = v
	}
	if req.Header.Get("Accept") == "" {
		req.Header.Set("Accept", "application/json")
	}
	if r.ContentType != "" {
		req.Header.Set("Content-Type", r.ContentType)
	}
	if !r.NoAuth && c.cfg.Auth != nil {
		if err := c.cfg.Auth.Authorize(ctx, req); err != nil {
			return 0, nil, nil, "", fmt.Errorf("%w: %w", errNoCredentials, err)
		}
		sent = req.Header.Get("Authorization")
	}
	res, err := c.cfg.HTTP.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			ue.URL = stripQuery(ue.URL)
		}
		return 0, nil, nil, sent, err
	}
	defer res.Body.Close()
	body, err = io.ReadAll(io.LimitReader(res.Body, c.cfg.MaxBody+1))
	if err != nil {
		return 0, nil, nil, sent, fmt.Errorf("read response: %w", err)
	}
	if int64(len(body)) > c.cfg.MaxBody {
		return res.StatusCode, nil, nil, sent, fmt.Errorf("%w: more than %d bytes", errTooLarge, c.cfg.MaxBody)
	}
	return res.StatusCode, res.Header, body, sent, nil
}

func (c *Client) backoff(attempt int) time.Duration {
	d := c.cfg.BackoffMax
	if attempt < 30 {
		if e := c.cfg.BackoffBase << (attempt - 1); e > 0 && e < d {
			d = e
		}
	}
	// Full jitter, but never less than half the step: a zero wait would
	// turn an outage into a burst of retries.
	return d/2 + time.Duration(rand.Int64N(int64(d/2)+1))
}

// pause holds every request of this client until t (a throttle applies
// to the app, not to one request).
func (c *Client) pause(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if t.After(c.pauseUntil) {
		c.pauseUntil = t
	}
}

func (c *Client) waitPause(ctx context.Context, budget *Budget) error {
	c.mu.Lock()
	until := c.pauseUntil
	c.mu.Unlock()
	d := until.Sub(c.cfg.Clock.Now())
	if d <= 0 {
		return ctx.Err()
	}
	if !budget.take(d) {
		return fmt.Errorf("the server asked to pause %s: %w", d.Round(time.Second), errBudget)
	}
	return c.sleep(ctx, d)
}

func (c *Client) wait(ctx context.Context, r Request, budget *Budget, attempt int, d time.Duration, cause error) error {
	if !budget.take(d) {
		return fmt.Errorf("waiting %s more: %w", d.Round(time.Second), errBudget)
	}
	c.cfg.Log.LogAttrs(ctx, slog.LevelDebug, "retrying directory call",
		slog.String("service", c.cfg.Service), slog.String("op", r.Op),
		slog.Int("attempt", attempt), slog.Duration("wait", d), slog.String("cause", cause.Error()))
	return c.sleep(ctx, d)
}

func (c *Client) sleep(ctx context.Context, d time.Duration) error {
	t := c.cfg.Clock.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.Chan():
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// DefaultRetry retries 429, 500, 502, 503 and 504, with the Retry-After
// hint. Directory calls are reads (and token requests), so repeating one
// after a server error can do no harm.
func DefaultRetry(status int, h http.Header, now time.Time) (bool, time.Duration) {
	switch status {
	case http.StatusTooManyRequests, http.StatusInternalServerError, http.StatusBadGateway,
		http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		d, _ := RetryAfter(h, now)
		return true, d
	}
	return false, 0
}

// maxHint caps any single server wait hint: a Retry-After of a day is a
// misconfigured server, and the Budget decides anyway.
const maxHint = time.Hour

// RetryAfter reads Retry-After as delay-seconds or an HTTP date (RFC
// 9110 §10.2.3). A hint of zero or in the past counts as absent.
func RetryAfter(h http.Header, now time.Time) (time.Duration, bool) {
	v := strings.TrimSpace(h.Get("Retry-After"))
	if v == "" {
		return 0, false
	}
	if n, err := strconv.ParseInt(v, 10, 64); err == nil {
		if n <= 0 {
			return 0, false
		}
		if n > int64(maxHint/time.Second) {
			return maxHint, true
		}
		return time.Duration(n) * time.Second, true
	}
	if t, err := http.ParseTime(v); err == nil {
		d := t.Sub(now)
		if d <= 0 {
			return 0, false
		}
		return min(d, maxHint), true
	}
	return 0, false
}

// decodePlain is the default error decoding: status text and the start
// of the body.
func decodePlain(status int, _ http.Header, body []byte) error {
	return fmt.Errorf("%s: %s", http.StatusText(status), Snippet(body))
}

// Snippet is the start of a body, one line, for error messages.
func Snippet(body []byte) string {
	s := strings.Join(strings.Fields(string(body)), " ")
	if len(s) > 200 {
		s = s[:200] + "…"
	}
	return s
}

func stripQuery(raw string) string {
	if i := strings.IndexByte(raw, '?'); i >= 0 {
		return raw[:i]
	}
	return raw
}

// CheckBaseURL is the rule for configured base URLs: absolute, https,
// no query or fragment; plain http only on loopback (tests, emulators).
func CheckBaseURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") {
		return fmt.Errorf("%q is not an absolute http(s) URL", raw)
	}
	if u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return fmt.Errorf("%q must not carry a query, fragment or user info", raw)
	}
	if u.Scheme == "http" && !IsLoopback(u.Hostname()) {
		return fmt.Errorf("%q must use https (plain http only on loopback)", raw)
	}
	return nil
}

// IsLoopback reports a loopback host name or address.
func IsLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
