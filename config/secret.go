package config

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"reflect"
	"sort"
	"strings"

	"github.com/goccy/go-yaml"
	"github.com/goccy/go-yaml/ast"
)

const redacted = "[redacted]"

// Secret is a sensitive string given as exactly one of an inline value, an
// environment variable or a file:
//
//	key: {env: USHER_SESSION_KEY}
//	key: {file: /run/secrets/session-key}
//	key: {value: "..."}
//	key: "..."            # shorthand for value
//
// A Secret never prints its value: String, GoString, LogValue, MarshalJSON
// and MarshalYAML all give a redacted form. The fields sit behind a pointer
// so that even a reflective dump of a struct holding a Secret in an
// unexported field shows an address, not the value. Resolve reads it.
type Secret struct{ src *secretSource }

type secretSource struct{ value, env, file string }

// SecretValue, SecretEnv and SecretFile build Secrets in code (tests, the
// demo wiring).
func SecretValue(v string) Secret   { return Secret{&secretSource{value: v}} }
func SecretEnv(name string) Secret  { return Secret{&secretSource{env: name}} }
func SecretFile(path string) Secret { return Secret{&secretSource{file: path}} }

// IsZero reports whether no source is set (or an inline value is empty).
func (s Secret) IsZero() bool {
	return s.src == nil || *s.src == secretSource{}
}

// Env is the environment variable the secret is read from, or "".
func (s Secret) Env() string {
	if s.src == nil {
		return ""
	}
	return s.src.env
}

// File is the file the secret is read from, or "".
func (s Secret) File() string {
	if s.src == nil {
		return ""
	}
	return s.src.file
}

// Resolve returns the secret's value, reading the environment or the file
// now. Errors name the variable or file, never a value. A file's trailing
// newline is dropped, since `echo secret > file` writes one.
func (s Secret) Resolve() (string, error) {
	v, err := s.read()
	if err != nil {
		return "", fmt.Errorf("secret: %w", err)
	}
	return v, nil
}

// read is Resolve without the "secret:" prefix, for messages that name
// the setting instead.
func (s Secret) read() (string, error) {
	switch {
	case s.IsZero():
		return "", errors.New("not set")
	case s.src.env != "":
		v := os.Getenv(s.src.env)
		if v == "" {
			return "", fmt.Errorf("environment variable %s is not set or empty", s.src.env)
		}
		return v, nil
	case s.src.file != "":
		b, err := os.ReadFile(s.src.file)
		var pe *fs.PathError
		if errors.As(err, &pe) {
			return "", fmt.Errorf("file %s: %w", s.src.file, pe.Err)
		}
		if err != nil {
			return "", fmt.Errorf("file %s: %w", s.src.file, err)
		}
		v := strings.TrimRight(string(b), "\r\n")
		if v == "" {
			return "", fmt.Errorf("file %s is empty", s.src.file)
		}
		return v, nil
	}
	return s.src.value, nil
}

// String is "[redacted]", or "" for a zero Secret.
func (s Secret) String() string {
	if s.IsZero() {
		return ""
	}
	return redacted
}

// GoString keeps %#v from showing the value.
func (s Secret) GoString() string { return s.String() }

// Format covers every verb (%s, %v, %+v, %#v, %q, %x, ...), which a String
// method alone would not: %x on a struct prints its fields.
func (s Secret) Format(f fmt.State, verb rune) {
	if verb == 'q' {
		fmt.Fprintf(f, "%q", s.String())
		return
	}
	fmt.Fprint(f, s.String())
}

// LogValue keeps slog from showing the value.
func (s Secret) LogValue() slog.Value { return slog.StringValue(s.String()) }

// redactedForm is what dumps show: where the secret comes from, not what
// it is.
func (s Secret) redactedForm() any {
	switch {
	case s.IsZero():
		return nil
	case s.src.env != "":
		return yaml.MapSlice{{Key: "env", Value: s.src.env}}
	case s.src.file != "":
		return yaml.MapSlice{{Key: "file", Value: s.src.file}}
	}
	return redacted
}

// MarshalYAML emits {env: NAME}, {file: path} or "[redacted]".
func (s Secret) MarshalYAML() (any, error) { return s.redactedForm(), nil }

// MarshalJSON emits {"env":"NAME"}, {"file":"path"} or "[redacted]".
func (s Secret) MarshalJSON() ([]byte, error) {
	switch {
	case s.IsZero():
		return []byte("null"), nil
	case s.src.env != "":
		return json.Marshal(map[string]string{"env": s.src.env})
	case s.src.file != "":
		return json.Marshal(map[string]string{"file": s.src.file})
	}
	return json.Marshal(redacted)
}

var secretKeys = []string{"value", "env", "file"}

// decodeSecret accepts a scalar (shorthand for value) or a mapping with
// exactly one of value, env, file.
func (d *decoder) decodeSecret(n ast.Node, path string, v reflect.Value) {
	if isNull(n) {
		v.Set(reflect.ValueOf(Secret{}))
		return
	}
	if s, ok := scalarText(n); ok {
		v.Set(reflect.ValueOf(SecretValue(s)))
		return
	}
	es, ok := entries(n, d.src.anchors)
	if !ok {
		d.errorf(n, path, "want a secret ({env: NAME}, {file: path}, {value: ...} or a string), got %s", kindOf(n))
		return
	}
	var src secretSource
	var given []string
	bad := false
	for _, e := range es {
		k := keyString(e.Key)
		kp := joinKey(path, k)
		val, _ := resolve(e.Value, d.src.anchors)
		text, isScalar := scalarText(val)
		switch k {
		case "value", "env", "file":
		default:
			d.errorf(e.Key, kp, "unknown key%s", suggestOf(k, secretKeys))
			bad = true
			continue
		}
		given = append(given, k)
		if !isScalar {
			d.errorf(e.Value, kp, "want a string, got %s", kindOf(val))
			bad = true
			continue
		}
		switch k {
		case "value":
			src.value = text
		case "env":
			if !isEnvName(text) {
				d.errorf(e.Value, kp, "want an environment variable name, got %q", text)
				bad = true
			}
			src.env = text
		case "file":
			if text == "" {
				d.errorf(e.Value, kp, "want a file path")
				bad = true
			}
			src.file = text
		}
	}
	switch {
	case len(given) == 0 && !bad:
		d.errorf(n, path, "secret needs one of value, env or file")
		return
	case len(given) > 1:
		d.errorf(n, path, "secret takes only one of value, env or file, got %s", strings.Join(given, " and "))
		return
	case bad:
		return
	}
	sec := Secret{&src}
	d.src.remember(path, n, sec)
	v.Set(reflect.ValueOf(sec))
}

// placedSecret is a secret with its place in the file.
type placedSecret struct {
	path      string
	line, col int
	s         Secret
}

// remember records a decoded secret for CheckSecrets. A block decoded
// twice (at check and again at start) records its secrets once.
func (src *source) remember(path string, n ast.Node, s Secret) {
	line, col := position(n)
	src.mu.Lock()
	defer src.mu.Unlock()
	if src.secrets == nil {
		src.secrets = map[string]placedSecret{}
	}
	src.secrets[path] = placedSecret{path, line, col, s}
}

// CheckSecrets reads every secret decoded from the file so far (those
// of the common schema at Load, and those of each Raw block once it has
// been decoded, as cmd/usher does for IdP, app, TLS and sweep blocks)
// and reports each that cannot be read: an unset or empty environment
// variable, a missing, unreadable or empty file. Each problem carries its
// path and line; messages name the variable or the file, never a value.
// Secrets that are absent are left to validation, which knows whether
// they are required.
func (c *Config) CheckSecrets() Errors {
	if c.src == nil {
		return nil
	}
	c.src.mu.Lock()
	placed := make([]placedSecret, 0, len(c.src.secrets))
	for _, p := range c.src.secrets {
		placed = append(placed, p)
	}
	c.src.mu.Unlock()
	sort.Slice(placed, func(i, j int) bool { return placed[i].path < placed[j].path })
	var errs Errors
	for _, p := range placed {
		if p.s.IsZero() {
			continue
		}
		if _, err := p.s.read(); err != nil {
			errs = append(errs, Error{File: c.src.file, Path: p.path, Line: p.line, Column: p.col, Msg: err.Error()})
		}
	}
	return errs.sorted()
}

func isEnvName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !isNameByte(s[i], i == 0) {
			return false
		}
	}
	return true
}

func suggestOf(k string, names []string) string {
	fs := make([]field, len(names))
	for i, n := range names {
		fs[i] = field{name: n}
	}
	return suggest(k, fs)
}
