package scim

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"

	scimerr "github.com/elimity-com/scim/errors"

	"github.com/usherhq/usher/store"
)

// apiError is an answer the IdP gets as a SCIM error document (RFC 7644
// §3.12). cause, when set, is logged and never shown.
type apiError struct {
	doc   scimerr.ScimError
	retry bool // add Retry-After
	cause error
}

func (e *apiError) Error() string {
	if e.cause != nil {
		return e.doc.Error() + ": " + e.cause.Error()
	}
	return e.doc.Error()
}

func (e *apiError) Unwrap() error { return e.cause }

func newErr(status int, typ scimerr.ScimType, format string, args ...any) *apiError {
	return &apiError{doc: scimerr.ScimError{Status: status, ScimType: typ, Detail: fmt.Sprintf(format, args...)}}
}

func invalidSyntax(format string, args ...any) *apiError {
	return newErr(http.StatusBadRequest, scimerr.ScimTypeInvalidSyntax, format, args...)
}

func invalidValue(format string, args ...any) *apiError {
	return newErr(http.StatusBadRequest, scimerr.ScimTypeInvalidValue, format, args...)
}

func invalidPath(format string, args ...any) *apiError {
	return newErr(http.StatusBadRequest, scimerr.ScimTypeInvalidPath, format, args...)
}

func invalidFilter(format string, args ...any) *apiError {
	return newErr(http.StatusBadRequest, scimerr.ScimTypeInvalidFilter, format, args...)
}

func noTarget(format string, args ...any) *apiError {
	return newErr(http.StatusBadRequest, scimerr.ScimTypeNoTarget, format, args...)
}

func mutability(format string, args ...any) *apiError {
	return newErr(http.StatusBadRequest, scimerr.ScimTypeMutability, format, args...)
}

func notFound(kind, id string) *apiError {
	return newErr(http.StatusNotFound, "", "%s %q not found", kind, id)
}

func errTooLarge(limit int64) *apiError {
	return newErr(http.StatusRequestEntityTooLarge, "", "request body exceeds %d bytes", limit)
}

var (
	errUnauthorized   = newErr(http.StatusUnauthorized, "", "missing or invalid bearer token")
	errMethod         = newErr(http.StatusMethodNotAllowed, "", "method not allowed on this endpoint")
	errNoEndpoint     = newErr(http.StatusNotFound, "", "no such endpoint")
	errNotImplemented = newErr(http.StatusNotImplemented, "", "not supported by usher")
)

// unavailable is a failure before anything was stored: the IdP should
// retry the same request.
func unavailable(cause error) *apiError {
	e := newErr(http.StatusServiceUnavailable, "", "temporarily unable to store the change; retry later")
	e.retry, e.cause = true, cause
	return e
}

// storeErr maps a store failure. Store messages name files and hosts, so
// they go to the log, not to the IdP.
func storeErr(err error, kind, id string) *apiError {
	switch {
	case errors.Is(err, store.ErrNotFound):
		e := notFound(kind, id)
		e.cause = err
		return e
	case errors.Is(err, store.ErrConflict):
		e := newErr(http.StatusConflict, scimerr.ScimTypeUniqueness,
			"a %s with this userName, displayName or externalId already exists for this IdP", kind)
		e.cause = err
		return e
	case errors.Is(err, store.ErrInvalid):
		// The same request would fail again: a 400, never a 503 the IdP
		// retries forever. The door's own checks catch what they know;
		// this is the store's last word.
		e := newErr(http.StatusBadRequest, scimerr.ScimTypeInvalidValue, "the %s holds a value usher cannot store", kind)
		e.cause = err
		return e
	}
	return unavailable(err)
}

// writeError answers with a SCIM error and logs it once: 5xx at error
// level with the cause, the IdP's own mistakes at debug level.
func (s *server) writeError(w http.ResponseWriter, r *http.Request, d *idp, err error) {
	ae, ok := errors.AsType[*apiError](err)
	if !ok {
		ae = newErr(http.StatusInternalServerError, "", "internal error")
		ae.cause = err
	}
	attrs := []any{"method", r.Method, "path", r.URL.Path, "status", ae.doc.Status}
	if d != nil {
		attrs = append(attrs, "idp", d.ID)
	}
	if ae.cause != nil {
		attrs = append(attrs, "err", ae.cause)
	}
	level := slog.LevelDebug
	if ae.doc.Status >= 500 {
		level = slog.LevelError
	}
	s.log.Log(r.Context(), level, "scim: request failed: "+ae.doc.Detail, attrs...)
	if ae.retry {
		w.Header().Set("Retry-After", retryAfter)
	}
	w.WriteHeader(ae.doc.Status)
	b, _ := json.Marshal(ae.doc)
	w.Write(b)
}

// writeJSON answers with a resource or list.
func writeJSON(w http.ResponseWriter, status int, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode response: %w", err)
	}
	w.WriteHeader(status)
	w.Write(b)
	return nil
}
