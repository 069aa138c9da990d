package targets

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math/rand/v2"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Auth is how the client proves itself to an app: HTTP Basic with a user
// (or, for Crowd, an application) name and password, or a bearer personal
// access token. Token wins when both are set.
type Auth struct {
	Username string
	Password string
	Token    string
}

// ClientConfig builds a Client. Zero values take the defaults noted.
type ClientConfig struct {
	App     string   // configured app name, for errors and logs
	BaseURL *url.URL // product base URL including any context path
	Auth    Auth
	HTTP    *http.Client // default http.DefaultClient
	// Timeout bounds one attempt of one call (default 15s).
	Timeout time.Duration
	// Concurrency caps requests in flight to this app (default 8). Waiting
	// for backoff does not hold a slot.
	Concurrency int
	// MaxRetries is how many times a failed call is retried (default 4;
	// negative means never).
	MaxRetries int
	// BackoffBase and BackoffMax bound the full-jitter exponential backoff
	// between retries when the app gives no Retry-After (default 250ms, 10s).
	BackoffBase time.Duration
	BackoffMax  time.Duration
	// MaxRetryAfter is the longest Retry-After the client waits for
	// (default 60s); a longer one ends the call with a Temporary error, so
	// a login does not hang on a rate limiter.
	MaxRetryAfter time.Duration
	Log           *slog.Logger
	Now           func() time.Time
	// Sleep waits d or until ctx ends; nil uses a timer. Tests inject one
	// that records the waits and returns at once.
	Sleep func(ctx context.Context, d time.Duration) error
	// Observe, when set, is told about every attempt (metrics).
	Observe func(op, result string, d time.Duration)
}

// Client is the REST client every adapter shares: JSON in and out,
// pre-emptive auth, a per-attempt timeout, a per-app concurrency limit and
// retries with backoff. It is safe for concurrent use.
type Client struct {
	cfg ClientConfig
	sem chan struct{}
}

// NewClient applies the defaults; it fails only without a base URL.
func NewClient(cfg ClientConfig) (*Client, error) {
	if cfg.BaseURL == nil {
		return nil, fmt.Errorf("%s: no base URL", cfg.App)
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = 8
	}
	if cfg.HTTP == nil {
		// Keep as many idle connections as calls may be in flight: the
		// default transport keeps two per host, so a busy moment would
		// open (and, over TLS, handshake) a new connection for most calls.
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.MaxIdleConnsPerHost = cfg.Concurrency
		cfg.HTTP = &http.Client{Transport: tr}
	}
	// Never follow redirects: Go turns a redirected PUT, POST or DELETE
	// into a GET, so a deactivation behind an http→https or login-page
	// redirect would "succeed" without changing anything. A 3xx is an
	// error the admin must see.
	hc := *cfg.HTTP
	hc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	cfg.HTTP = &hc
	if cfg.Timeout <= 0 {
		cfg.Timeout = 15 * time.Second
	}
	switch {
	case cfg.MaxRetries == 0:
		cfg.MaxRetries = 4
	case cfg.MaxRetries < 0:
		cfg.MaxRetries = 0
	}
	if cfg.BackoffBase <= 0 {
		cfg.BackoffBase = 250 * time.Millisecond
	}
	if cfg.BackoffMax <= 0 {
		cfg.BackoffMax = 10 * time.Second
	}
	if cfg.MaxRetryAfter <= 0 {
		cfg.MaxRetryAfter = 60 * time.Second
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Sleep == nil {
		cfg.Sleep = sleep
	}
	return &Client{cfg: cfg, sem: make(chan struct{}, cfg.Concurrency)}, nil
}

// App is the configured app name.
func (c *Client) App() string { return c.cfg.App }

// Request is one REST call.
type Request struct {
	Op     string // what usher was doing, for errors: "create user"
	User   string // the user concerned, or ""
	Method string
	// Path is relative to the base URL and already escaped, e.g.
	// "/rest/api/user/" + url.PathEscape(name) + "/group/" + url.PathEscape(g).
	Path  string
	Query url.Values
	Body  any // JSON-encoded when non-nil
	Out   any // JSON-decoded from a 2xx body when non-nil
	// Idempotent marks a POST whose repetition is harmless (adding a
	// membership the adapter treats "already a member" as success for).
	// GET, HEAD, PUT and DELETE are idempotent anyway.
	Idempotent bool
}

// Response is what a successful call returns besides Out.
type Response struct {
	Status int
	Header http.Header
	// Resent is true when an earlier attempt of this call failed without
	// an answer and so may have been applied by the app anyway. An adapter
	// that then gets "already exists" for a create re-reads the object and
	// treats the call as done; this is how retrying creates never applies
	// twice.
	Resent bool
}

// Do sends the call, retrying where safe:
//
//   - 429 is retried for every method: the rate limiter answers before the
//     resource runs. The wait is Retry-After (seconds or an HTTP date) when
//     given, capped at MaxRetryAfter; a longer wait gives up at once.
//   - 5xx is retried for idempotent calls only; a non-idempotent POST
//     (create user) that got a 5xx may have been half applied, so it is
//     returned as a Temporary error for the caller to retry later.
//   - A transport error or attempt timeout (no answer) is retried for every
//     method; the Response then says Resent.
//
// Any other non-2xx answer is returned at once as an *Error whose Err is
// an *APIError with the product's message. Exhausted retries give a
// Temporary *Error. Cancelling ctx stops waiting at once; the error then
// wraps ctx.Err() and is Temporary only for a deadline.
func (c *Client) Do(ctx context.Context, r Request) (Response, error) {
	var body []byte
	if r.Body != nil {
		b, err := json.Marshal(r.Body)
		if err != nil {
			return Response{}, c.fail(r, 0, false, fmt.Errorf("encode request: %w", err))
		}
		body = b
	}
	idempotent := r.Idempotent || r.Method != http.MethodPost
	var resp Response
	for attempt := 0; ; attempt++ {
		began := time.Now()
		status, hdr, data, err := c.attempt(ctx, r, body)
		c.observe(r.Op, status, err, time.Since(began))
		if err != nil {
			if ctx.Err() != nil {
				return resp, c.cancelled(ctx, r)
			}
			resp.Resent = true
			if attempt >= c.cfg.MaxRetries {
				return resp, c.fail(r, 0, true, err)
			}
			if err := c.wait(ctx, r, attempt, 0, c.backoff(attempt), err); err != nil {
				return resp, err
			}
			continue
		}
		resp.Status, resp.Header = status, hdr
		if status >= 200 && status < 300 {
			if r.Out != nil && len(bytes.TrimSpace(data)) > 0 {
				if err := json.Unmarshal(data, r.Out); err != nil {
					return resp, c.fail(r, status, false, fmt.Errorf("decode response: %w", err))
				}
			}
			return resp, nil
		}
		apiErr := parseAPIError(status, hdr, data)
		retryable := status == http.StatusTooManyRequests || (status >= 500 && idempotent)
		temporary := status == http.StatusTooManyRequests || status >= 500
		if !retryable || attempt >= c.cfg.MaxRetries {
			return resp, c.fail(r, status, temporary, apiErr)
		}
		d := c.backoff(attempt)
		if ra, ok := c.retryAfter(hdr); ok {
			if ra > c.cfg.MaxRetryAfter {
				return resp, c.fail(r, status, true, fmt.Errorf("%w (Retry-After %s exceeds the %s cap)", apiErr, ra, c.cfg.MaxRetryAfter))
			}
			d = ra
		}
		if err := c.wait(ctx, r, attempt, status, d, apiErr); err != nil {
			return resp, err
		}
	}
}

// observe reports one attempt to the metrics hook, with the operation
// reduced to its fixed words ("add to group jira-users" → "add to group")
// so that group and user names never become label values.
func (c *Client) observe(op string, status int, err error, d time.Duration) {
	if c.cfg.Observe == nil {
		return
	}
	result := "ok"
	switch {
	case err != nil || status >= 500:
		result = "error"
	case status == http.StatusTooManyRequests:
		result = "throttled"
	case status >= 400:
		result = "error"
	}
	c.cfg.Observe(OpLabel(op), result, d)
}

// OpLabel keeps the fixed words of an operation name: the first two, or
// three when the second is "to" or "from".
func OpLabel(op string) string {
	words := strings.Fields(op)
	n := 2
	if len(words) > 1 && (words[1] == "to" || words[1] == "from") {
		n = 3
	}
	if len(words) > n {
		words = words[:n]
	}
	return strings.Join(words, " ")
}

// attempt sends the call once, holding a concurrency slot only while the
// request is in flight.
func (c *Client) attempt(ctx context.Context, r Request, body []byte) (int, http.Header, []byte, error) {
	select {
	case c.sem <- struct{}{}:
	case <-ctx.Done():
		return 0, nil, nil, ctx.Err()
	}
	defer func() { <-c.sem }()
	actx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()

	u := strings.TrimRight(c.cfg.BaseURL.String(), "/") + r.Path
	if len(r.Query) > 0 {
		u += "?" + r.Query.Encode()
	}
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(actx, r.Method, u, rd)
	if err != nil {
		return 0, nil, nil, err
	}
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	} else if r.Method != http.MethodGet && r.Method != http.MethodHead {
		// Atlassian's XSRF check applies to writes that are not JSON
		// (§2.4): query-parameter posts such as Bitbucket's create user
		// carry no JSON body, so they need the opt-out header.
		req.Header.Set("X-Atlassian-Token", "no-check")
	}
	switch a := c.cfg.Auth; {
	case a.Token != "":
		req.Header.Set("Authorization", "Bearer "+a.Token)
	case a.Username != "":
		// Pre-emptive: Jira sends no challenge to anonymous requests (§2.1).
		req.SetBasicAuth(a.Username, a.Password)
	}
	res, err := c.cfg.HTTP.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			// The URL may carry secrets in its query (Bitbucket's create
			// takes the password there); errors reach logs and the audit.
			ue.URL = redactQuery(ue.URL)
		}
		return 0, nil, nil, err
	}
	defer res.Body.Close()
	data, err := io.ReadAll(io.LimitReader(res.Body, 8<<20))
	if err != nil {
		return 0, nil, nil, fmt.Errorf("read response: %w", err)
	}
	return res.StatusCode, res.Header, data, nil
}

// redactQuery drops a URL's query string.
func redactQuery(raw string) string {
	if i := strings.IndexByte(raw, '?'); i >= 0 {
		return raw[:i] + "?[query redacted]"
	}
	return raw
}

// backoff is full jitter: uniform in [0, min(max, base·2^attempt)].
func (c *Client) backoff(attempt int) time.Duration {
	d := c.cfg.BackoffMax
	if attempt < 30 {
		if e := c.cfg.BackoffBase << attempt; e > 0 && e < d {
			d = e
		}
	}
	return time.Duration(rand.Int64N(int64(d) + 1))
}

// retryAfter reads Retry-After as seconds or an HTTP date. "0" (the rate
// limiter's "tokens remain") counts as absent, so backoff applies.
func (c *Client) retryAfter(h http.Header) (time.Duration, bool) {
	v := strings.TrimSpace(h.Get("Retry-After"))
	if v == "" {
		return 0, false
	}
	if n, err := strconv.ParseInt(v, 10, 64); err == nil {
		if n <= 0 {
			return 0, false
		}
		if n > int64(24*time.Hour/time.Second) {
			n = int64(24 * time.Hour / time.Second)
		}
		return time.Duration(n) * time.Second, true
	}
	if t, err := http.ParseTime(v); err == nil {
		if d := t.Sub(c.cfg.Now()); d > 0 {
			return d, true
		}
	}
	return 0, false
}

func (c *Client) wait(ctx context.Context, r Request, attempt, status int, d time.Duration, cause error) error {
	c.cfg.Log.LogAttrs(ctx, slog.LevelDebug, "retrying app call",
		slog.String("app", c.cfg.App), slog.String("op", r.Op), slog.String("user", r.User),
		slog.Int("status", status), slog.Int("attempt", attempt+1), slog.Duration("wait", d),
		slog.String("cause", cause.Error()))
	if err := c.cfg.Sleep(ctx, d); err != nil {
		return c.cancelled(ctx, r)
	}
	return nil
}

func (c *Client) cancelled(ctx context.Context, r Request) error {
	err := ctx.Err()
	if err == nil {
		err = context.Canceled
	}
	return c.fail(r, 0, errors.Is(err, context.DeadlineExceeded), err)
}

func (c *Client) fail(r Request, status int, temporary bool, err error) *Error {
	return &Error{App: c.cfg.App, Op: r.Op, User: r.User, Status: status, Temporary: temporary, Err: err}
}

func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// APIError is an app's error answer, read from whichever of the four
// products' error envelopes the body uses (§1 "Error body").
type APIError struct {
	Status int
	// Messages are the human-readable messages: Jira errorMessages and
	// field errors, Confluence/Crowd message, Bitbucket errors[].message.
	Messages []string
	// Fields are Jira's per-field errors ("username": "A user with that
	// username already exists.").
	Fields map[string]string
	// Reason is Crowd's reason code (USER_NOT_FOUND) or Confluence's
	// reason phrase.
	Reason string
	// Exceptions are Bitbucket's exceptionName values.
	Exceptions []string
	// Codes are the Atlassian Cloud Organizations API's error codes
	// ("ADMIN-UAM-409-3"), from its {"errors":[{code, title, detail}]}
	// envelope (atlassian-sso-and-cloud.md §26.6).
	Codes []string
	// LoginReason is Jira/Confluence X-Seraph-LoginReason on auth failures
	// (AUTHENTICATED_FAILED usually means a CAPTCHA is pending).
	LoginReason string
}

func (e *APIError) Error() string {
	var parts []string
	if e.Reason != "" {
		parts = append(parts, e.Reason)
	}
	parts = append(parts, e.Messages...)
	if e.LoginReason != "" {
		parts = append(parts, "login reason "+e.LoginReason)
	}
	if len(parts) == 0 {
		return http.StatusText(e.Status)
	}
	return strings.Join(parts, "; ")
}

// Mentions reports whether any message, field error, reason or exception
// name contains s, case-insensitively.
func (e *APIError) Mentions(s string) bool {
	s = strings.ToLower(s)
	has := func(v string) bool { return strings.Contains(strings.ToLower(v), s) }
	if has(e.Reason) {
		return true
	}
	for _, m := range e.Messages {
		if has(m) {
			return true
		}
	}
	for _, m := range e.Fields {
		if has(m) {
			return true
		}
	}
	for _, m := range e.Exceptions {
		if has(m) {
			return true
		}
	}
	return false
}

// HasCode reports whether the answer carries the Organizations API error
// code (compared case-insensitively).
func (e *APIError) HasCode(code string) bool {
	for _, c := range e.Codes {
		if strings.EqualFold(c, code) {
			return true
		}
	}
	return false
}

func parseAPIError(status int, h http.Header, body []byte) *APIError {
	e := &APIError{Status: status, LoginReason: h.Get("X-Seraph-LoginReason")}
	body = bytes.TrimSpace(body)
	if len(body) == 0 {
		return e
	}
	if body[0] != '{' {
		// Auth failures may come back as HTML (§3.11); only plain text is
		// worth quoting.
		if strings.HasPrefix(h.Get("Content-Type"), "text/plain") {
			msg := string(body)
			if len(msg) > 200 {
				msg = msg[:200]
			}
			e.Messages = []string{msg}
		}
		return e
	}
	var env struct {
		ErrorMessages []string        `json:"errorMessages"` // Jira
		Errors        json.RawMessage `json:"errors"`        // Jira map, Bitbucket list
		Message       string          `json:"message"`       // Confluence, Crowd
		Reason        string          `json:"reason"`        // Confluence, Crowd
	}
	if json.Unmarshal(body, &env) != nil {
		return e
	}
	e.Messages = append(e.Messages, env.ErrorMessages...)
	if env.Message != "" {
		e.Messages = append(e.Messages, env.Message)
	}
	e.Reason = env.Reason
	if len(env.Errors) > 0 {
		var fields map[string]string
		var list []struct {
			Message       string `json:"message"`
			ExceptionName string `json:"exceptionName"`
			// The Cloud Organizations API's envelope (§26.6).
			Code   string `json:"code"`
			Title  string `json:"title"`
			Detail string `json:"detail"`
		}
		switch {
		case json.Unmarshal(env.Errors, &fields) == nil:
			if len(fields) > 0 {
				e.Fields = fields
				for _, k := range slices.Sorted(maps.Keys(fields)) {
					e.Messages = append(e.Messages, k+": "+fields[k])
				}
			}
		case json.Unmarshal(env.Errors, &list) == nil:
			for _, it := range list {
				if it.Message != "" {
					e.Messages = append(e.Messages, it.Message)
				}
				if it.ExceptionName != "" {
					e.Exceptions = append(e.Exceptions, it.ExceptionName)
				}
				if it.Code != "" {
					e.Codes = append(e.Codes, it.Code)
				}
				switch {
				case it.Title != "" && it.Detail != "":
					e.Messages = append(e.Messages, it.Title+": "+it.Detail)
				case it.Title != "" || it.Detail != "":
					e.Messages = append(e.Messages, it.Title+it.Detail)
				}
			}
		}
	}
	return e
}

// StatusOf is the HTTP status of a failed app call, 0 when there was none.
func StatusOf(err error) int {
	var e *Error
	if errors.As(err, &e) {
		return e.Status
	}
	return 0
}

// APIErrorOf is the app's error answer inside err, or nil.
func APIErrorOf(err error) *APIError {
	var e *APIError
	if errors.As(err, &e) {
		return e
	}
	return nil
}

// Reclassify returns err (an *Error from Do) with kind (ErrNotFound,
// ErrExists, ErrGroupNotFound) added to its chain, keeping the app, op,
// user, status and the product's message. Other errors are wrapped as is.
func Reclassify(err, kind error) error {
	var e *Error
	if !errors.As(err, &e) {
		return fmt.Errorf("%w: %v", kind, err)
	}
	c := *e
	c.Temporary = false
	if c.Err == nil {
		c.Err = kind
	} else {
		c.Err = fmt.Errorf("%w: %w", kind, c.Err)
	}
	return &c
}
