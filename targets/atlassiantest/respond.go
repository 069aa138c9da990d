package atlassiantest

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// caller is who a REST call authenticated as.
type caller struct {
	name  string
	admin bool
}

type callerKey struct{}

func withCaller(ctx context.Context, c caller) context.Context {
	return context.WithValue(ctx, callerKey{}, c)
}

func callerOf(r *http.Request) caller {
	c, _ := r.Context().Value(callerKey{}).(caller)
	return c
}

func same(a, b string) bool {
	return a != "" && subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1
}

// authenticate checks the Authorization header the way the product does
// (reference §2) and answers 401 itself when it fails.
func (s *Server) authenticate(w http.ResponseWriter, r *http.Request) (caller, bool) {
	hdr := r.Header.Get("Authorization")
	user, pass, basic := r.BasicAuth()
	if s.kind == Crowd {
		// Crowd authenticates the application; a user's credentials,
		// even an admin's, are refused (reference §2.1). The caller's
		// address is not checked: tests all come from loopback.
		if basic && same(user, s.opts.CrowdApp) && same(pass, s.opts.CrowdAppPassword) {
			return caller{name: user, admin: true}, true
		}
		w.Header().Set("WWW-Authenticate", `Basic realm="Crowd REST Service"`)
		s.fail(w, http.StatusUnauthorized, "", "Application failed to authenticate")
		return caller{}, false
	}
	if tok, ok := cutPrefixFold(hdr, "Bearer "); ok {
		if same(tok, s.opts.Token) {
			return s.tokenCaller(), true
		}
		s.unauthorized(w, true)
		return caller{}, false
	}
	if !basic {
		s.unauthorized(w, false)
		return caller{}, false
	}
	if same(user, s.opts.AdminUser) && same(pass, s.opts.AdminPassword) {
		return caller{name: user, admin: true}, true
	}
	// Only Bitbucket takes a token as the Basic password; Jira and
	// Confluence refuse it (reference §2.2).
	if s.kind == Bitbucket && same(user, s.opts.AdminUser) && same(pass, s.opts.Token) {
		return s.tokenCaller(), true
	}
	s.mu.Lock()
	u := s.lookup(user)
	ok := u != nil && u.active && same(pass, u.password)
	s.mu.Unlock()
	if ok {
		return caller{name: user}, true
	}
	s.unauthorized(w, true)
	return caller{}, false
}

// tokenCaller is who the administrator's personal access token
// authenticates as. Jira and Confluence tokens act with their user's
// full permissions (reference §2.2). Bitbucket's authenticate but are
// refused on the admin endpoints: its documentation says a token cannot
// change user accounts, the reference leaves admin calls open (§2.2,
// §11.2), and the adapters' run against it (issue #14) found the admin
// and user-management endpoints refused; so a Bitbucket token reads
// what any user may and gets 401 AuthorisationException on /admin/*.
func (s *Server) tokenCaller() caller {
	return caller{name: s.opts.AdminUser, admin: s.kind != Bitbucket}
}

func cutPrefixFold(s, prefix string) (string, bool) {
	if len(s) < len(prefix) || !equalFold(s[:len(prefix)], prefix) {
		return "", false
	}
	return s[len(prefix):], true
}

func equalFold(a, b string) bool { return lower(a) == lower(b) }

func (s *Server) unauthorized(w http.ResponseWriter, triedCredentials bool) {
	switch s.kind {
	case Jira, Confluence:
		// Seraph reports rejected logins in a header. Jira sends no
		// challenge to anonymous callers (reference §2.1).
		if triedCredentials {
			w.Header().Set("X-Seraph-LoginReason", "AUTHENTICATED_FAILED")
		}
		s.fail(w, http.StatusUnauthorized, "", "You are not authenticated. Authentication required to perform this operation.")
	case Bitbucket:
		exc := "com.atlassian.bitbucket.AuthorisationException"
		msg := "You are not permitted to access this resource"
		if triedCredentials {
			exc = "com.atlassian.bitbucket.auth.IncorrectPasswordAuthenticationException"
			msg = "Authentication failed. Please check your credentials and try again."
		}
		s.fail(w, http.StatusUnauthorized, exc, msg)
	}
}

// admin answers the product's "not an administrator" error unless the
// caller is one: 403 everywhere except Bitbucket, which answers 401
// (reference §5).
func (s *Server) admin(w http.ResponseWriter, r *http.Request) bool {
	if callerOf(r).admin {
		return true
	}
	switch s.kind {
	case Bitbucket:
		s.fail(w, http.StatusUnauthorized, "com.atlassian.bitbucket.AuthorisationException",
			"You are not permitted to access this resource")
	case Crowd:
		s.fail(w, http.StatusForbidden, "APPLICATION_PERMISSION_DENIED", "Application does not have permission")
	default:
		s.fail(w, http.StatusForbidden, "", "You do not have the permission to perform this operation.")
	}
	return false
}

// fail writes the product's error envelope (reference §3.11, §4.10,
// §5.7, §6.7). code is product-specific: Jira's field name for the
// "errors" map ("" puts msg in errorMessages), Bitbucket's exceptionName,
// Crowd's reason. Confluence ignores it.
func (s *Server) fail(w http.ResponseWriter, status int, code, msg string) {
	var body any
	switch s.kind {
	case Jira:
		e := map[string]any{"errorMessages": []string{}, "errors": map[string]string{}}
		if code != "" {
			e["errors"] = map[string]string{code: msg}
		} else {
			e["errorMessages"] = []string{msg}
		}
		body = e
	case Confluence:
		body = map[string]any{
			"statusCode": status,
			"data": map[string]any{
				"authorized": status != http.StatusUnauthorized && status != http.StatusForbidden,
				"valid":      status != http.StatusBadRequest, "allowedInReadOnlyMode": true,
				"errors": []any{}, "successful": false,
			},
			"message": msg,
			"reason":  http.StatusText(status),
		}
	case Bitbucket:
		if code == "" {
			code = "com.atlassian.bitbucket.ServiceException"
		}
		body = map[string]any{"errors": []map[string]any{{"context": nil, "message": msg, "exceptionName": code}}}
	case Crowd:
		if code == "" {
			code = crowdReason(status)
		}
		body = map[string]string{"reason": code, "message": msg}
	}
	writeJSON(w, status, body)
}

func crowdReason(status int) string {
	switch status {
	case http.StatusBadRequest:
		return "ILLEGAL_ARGUMENT"
	case http.StatusUnauthorized:
		// [U] real Crowd answers a plain-text "Application failed to
		// authenticate"; the JSON envelope keeps adapters' decoding
		// uniform and the message is the same.
		return "APPLICATION_ACCESS_DENIED"
	case http.StatusForbidden:
		return "APPLICATION_PERMISSION_DENIED"
	}
	return "OPERATION_FAILED"
}

// The bucket the 429 headers describe: Atlassian's default rate-limit
// settings (reference §7 lists the header names, not these values).
const (
	rateBucket   = 100
	rateFill     = 10
	rateInterval = 1
)

func (s *Server) tooMany(w http.ResponseWriter, retryAfter time.Duration) {
	h := w.Header()
	h.Set("Retry-After", strconv.Itoa(int(math.Ceil(retryAfter.Seconds()))))
	h.Set("X-RateLimit-Limit", strconv.Itoa(rateBucket))
	h.Set("X-RateLimit-Remaining", "0")
	h.Set("X-RateLimit-Interval-Seconds", strconv.Itoa(rateInterval))
	h.Set("X-RateLimit-FillRate", strconv.Itoa(rateFill))
	code := ""
	if s.kind == Bitbucket {
		code = "com.atlassian.bitbucket.throttle.ThrottledException" // [U] name
	}
	s.fail(w, http.StatusTooManyRequests, code, "Too many requests; retry after the Retry-After delay")
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		http.Error(w, "encode: "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json;charset=UTF-8")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

// decode reads a JSON body into v, answering 400 itself on failure.
func (s *Server) decode(w http.ResponseWriter, r *http.Request, v any) bool {
	err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(v)
	if err != nil {
		s.fail(w, http.StatusBadRequest, "", "Invalid JSON body: "+err.Error())
		return false
	}
	return true
}

// qint reads an integer query parameter, answering 400 itself when it is
// not one.
func (s *Server) qint(w http.ResponseWriter, q url.Values, name string, def int) (int, bool) {
	v := q.Get(name)
	if v == "" {
		return def, true
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		s.fail(w, http.StatusBadRequest, "", fmt.Sprintf("Invalid value %q for parameter %s", v, name))
		return 0, false
	}
	return n, true
}

// qbool reads a boolean query parameter.
func qbool(q url.Values, name string, def bool) bool {
	v := q.Get(name)
	if v == "" {
		return def
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		return def
	}
	return b
}

func base(r *http.Request) string {
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return scheme + "://" + r.Host
}

func itoa(n int) string { return strconv.Itoa(n) }

func pad(n, width int) string { return fmt.Sprintf("%0*x", width, n) }

func jsonString(s string) json.RawMessage {
	b, _ := json.Marshal(s)
	return b
}

// unquote gives a JSON string's value, or other JSON as its text.
func unquote(v json.RawMessage) string {
	var s string
	if json.Unmarshal(v, &s) == nil {
		return s
	}
	return string(v)
}

func epochMillis(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t.UnixMilli()
}
