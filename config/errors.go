package config

import (
	"fmt"
	"sort"
	"strings"
)

// Error is one problem in a configuration file, positioned so that an
// admin can jump to it: "usher.yaml:12:5: idps[1].config.issuer: required".
type Error struct {
	File   string // file name as given to Load or Parse; may be empty
	Path   string // YAML path such as idps[1].config.issuer; may be empty
	Line   int    // 1-based; 0 when the problem has no place in the file
	Column int    // 1-based; 0 when unknown
	Msg    string
}

func (e Error) Error() string {
	var b strings.Builder
	switch {
	case e.File != "" && e.Line > 0:
		fmt.Fprintf(&b, "%s:%d:%d: ", e.File, e.Line, e.Column)
	case e.File != "":
		fmt.Fprintf(&b, "%s: ", e.File)
	case e.Line > 0:
		fmt.Fprintf(&b, "%d:%d: ", e.Line, e.Column)
	}
	if e.Path != "" {
		b.WriteString(e.Path)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// Errors is every problem found in one configuration, in file order.
type Errors []Error

func (es Errors) Error() string {
	lines := make([]string, len(es))
	for i, e := range es {
		lines[i] = e.Error()
	}
	return strings.Join(lines, "\n")
}

// Err returns es as an error, or nil when there are none. Use it instead of
// returning an empty Errors as an error, which would be a non-nil interface.
func (es Errors) Err() error {
	if len(es) == 0 {
		return nil
	}
	return es
}

// sorted orders problems by position; those without one go last, in the
// order they were found.
func (es Errors) sorted() Errors {
	sort.SliceStable(es, func(i, j int) bool {
		a, b := es[i], es[j]
		if (a.Line == 0) != (b.Line == 0) {
			return b.Line == 0
		}
		if a.Line != b.Line {
			return a.Line < b.Line
		}
		return a.Column < b.Column
	})
	return es
}

// covers reports whether an error at path p is a consequence of an error
// already reported at prefix (the same value or something inside it).
func covers(prefix, p string) bool {
	if prefix == p {
		return true
	}
	if !strings.HasPrefix(p, prefix) {
		return false
	}
	c := p[len(prefix)]
	return c == '.' || c == '['
}

// FieldError is a problem with one key of a block that another package
// decodes (an IdP's `config:`, an app's `api:`, a sweep): Field is the
// path relative to that block ("issuer", "acme.email", "licence_groups[1]").
// Raw.Errors places it at that key's line. Packages return it from their
// Validate so that no path is ever read back out of an error's text.
type FieldError struct {
	Field string
	Msg   string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Msg }

// FieldErrorf builds a *FieldError.
func FieldErrorf(field, format string, args ...any) *FieldError {
	return &FieldError{Field: field, Msg: fmt.Sprintf(format, args...)}
}
