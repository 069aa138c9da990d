package config

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"regexp"
	"strings"

	"github.com/goccy/go-yaml"
	"github.com/goccy/go-yaml/ast"
)

// Raw is a YAML block kept undecoded, with its place in the file: an IdP's
// `config:` block, whose schema belongs to the provider type. cmd/usher
// picks the type's Config struct and calls Decode, which is as strict as the
// rest of the file and reports in the same terms (path, line, column).
type Raw struct {
	src  *source
	node ast.Node // nil when the block is absent or null
	path string   // e.g. idps[1].config
	// line and col place the block, or its parent when the block is absent.
	line, col int
}

// IsZero reports whether the block is absent or empty (null).
func (r Raw) IsZero() bool { return r.node == nil }

// Path is the block's YAML path, e.g. "idps[1].config".
func (r Raw) Path() string { return r.path }

func (r Raw) file() string {
	if r.src == nil {
		return ""
	}
	return r.src.file
}

func (r Raw) anchors() map[string]ast.Node {
	if r.src == nil {
		return nil
	}
	return r.src.anchors
}

// Decode fills v, a non-nil pointer to a struct (or any type the loader
// handles), strictly: unknown keys and type mismatches are all reported as
// Errors with full paths such as idps[1].config.client_idd. Fields absent
// from the block keep the values v already has, so a provider can preset
// its defaults. Secret, Raw and time.Duration fields work as in the main
// file. A zero Raw decodes nothing and returns nil.
func (r Raw) Decode(v any) error {
	rv := reflect.ValueOf(v)
	if rv.Kind() != reflect.Pointer || rv.IsNil() {
		return fmt.Errorf("config: Raw.Decode needs a non-nil pointer, got %T", v)
	}
	if r.IsZero() {
		return nil
	}
	src := r.src
	if src == nil {
		src = &source{}
	}
	d := &decoder{src: src}
	d.decode(r.node, r.path, rv.Elem())
	return d.errs.sorted().Err()
}

// ErrorAt positions a problem with field, a path relative to the block
// ("issuer", "claims.groups", "certificates[1]"). When field is absent from
// the file the error points at the closest enclosing key that is present.
func (r Raw) ErrorAt(field, msg string) Error {
	e := Error{File: r.file(), Path: joinKey(r.path, field), Line: r.line, Column: r.col, Msg: msg}
	if strings.HasPrefix(field, "[") {
		e.Path = r.path + field
	}
	if field == "" {
		e.Path = r.path
	}
	if r.node != nil {
		e.Line, e.Column = locate(r.node, r.anchors(), field)
	}
	return e
}

// Errors positions the problems a provider's Validate returned. An error
// that is already an Error or Errors keeps its place; a *FieldError is
// placed at its field; anything else is placed at the block.
func (r Raw) Errors(errs []error) Errors {
	var out Errors
	for _, err := range errs {
		if err == nil {
			continue
		}
		var es Errors
		var e Error
		var fe *FieldError
		switch {
		case errors.As(err, &es):
			out = append(out, es...)
		case errors.As(err, &e):
			out = append(out, e)
		case errors.As(err, &fe):
			out = append(out, r.ErrorAt(fe.Field, fe.Msg))
		default:
			out = append(out, r.ErrorAt("", err.Error()))
		}
	}
	return out.sorted()
}

// secretish matches keys whose values dumps must not show.
var secretish = regexp.MustCompile(`(?i)secret|password|passwd|token|key|credential|private`)

// maxDumpNodes bounds a block in dumps; provider blocks are a few dozen
// values, anything far larger is an alias expansion nobody wants to read.
const maxDumpNodes = 10_000

// redactedForm is the block as plain values with secrets replaced, for
// dumps. References ({env: X}, {file: Y}) are kept: they say where a
// secret lives, not what it is.
func (r Raw) redactedForm(ordered bool) any {
	if r.IsZero() {
		return nil
	}
	budget := maxDumpNodes
	g := generic(r.node, r.anchors(), &budget, ordered)
	if budget < 0 {
		return "[block too large to show]"
	}
	return redactNode(g, false)
}

func redactNode(v any, sensitive bool) any {
	switch x := v.(type) {
	case yaml.MapSlice:
		if isReference(x.ToMap()) {
			return x
		}
		if sensitive || isInlineSecret(len(x), func(k string) bool { return x[0].Key == k }) {
			return redacted
		}
		out := make(yaml.MapSlice, len(x))
		for i, it := range x {
			k := fmt.Sprint(it.Key)
			out[i] = yaml.MapItem{Key: it.Key, Value: redactNode(it.Value, secretish.MatchString(k))}
		}
		return out
	case map[string]any:
		m := make(map[any]any, len(x))
		for k, v := range x {
			m[k] = v
		}
		if isReference(m) {
			return x
		}
		if sensitive || isInlineSecret(len(x), func(k string) bool { _, ok := x[k]; return ok }) {
			return redacted
		}
		out := make(map[string]any, len(x))
		for k, v := range x {
			out[k] = redactNode(v, secretish.MatchString(k))
		}
		return out
	case []any:
		if sensitive {
			return redacted
		}
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = redactNode(e, false)
		}
		return out
	case nil:
		return nil
	}
	if sensitive {
		return redacted
	}
	return v
}

// isReference reports a secret reference mapping: exactly {env: X} or
// {file: Y}.
func isReference(m map[any]any) bool {
	if len(m) != 1 {
		return false
	}
	for k, v := range m {
		_, isStr := v.(string)
		return isStr && (k == "env" || k == "file")
	}
	return false
}

// isInlineSecret reports the {value: ...} form of a Secret.
func isInlineSecret(n int, has func(string) bool) bool {
	return n == 1 && has("value")
}

// MarshalYAML emits the block with secret-looking values redacted.
func (r Raw) MarshalYAML() (any, error) { return r.redactedForm(true), nil }

// MarshalJSON emits the block with secret-looking values redacted.
func (r Raw) MarshalJSON() ([]byte, error) { return json.Marshal(r.redactedForm(false)) }
