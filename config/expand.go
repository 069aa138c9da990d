package config

import (
	"fmt"
	"strings"

	"github.com/goccy/go-yaml/ast"
)

// expandEnv replaces ${NAME} in every string value of the tree, in place.
// It runs on parsed YAML, never on the file's text, so a value cannot change
// the document's structure and a '$' in a password needs no care. Keys are
// left alone. Aliases are skipped: their anchor is expanded where it is
// defined.
func expandEnv(n ast.Node, path string, lookup func(string) (string, bool), report func(ast.Node, string, string)) {
	switch v := n.(type) {
	case *ast.StringNode:
		out, err := expand(v.Value, lookup)
		if err != nil {
			report(v, path, err.Error())
			return
		}
		v.Value = out
	case *ast.LiteralNode:
		expandEnv(v.Value, path, lookup, report)
	case *ast.AnchorNode:
		expandEnv(v.Value, path, lookup, report)
	case *ast.TagNode:
		expandEnv(v.Value, path, lookup, report)
	case *ast.MappingNode:
		for _, e := range v.Values {
			expandEnv(e, path, lookup, report)
		}
	case *ast.MappingValueNode:
		child := path
		if !v.Key.IsMergeKey() {
			child = joinKey(path, keyString(v.Key))
		}
		expandEnv(v.Value, child, lookup, report)
	case *ast.SequenceNode:
		for i, e := range v.Values {
			expandEnv(e, joinIndex(path, i), lookup, report)
		}
	}
}

// expand substitutes ${NAME} (NAME = [A-Za-z_][A-Za-z0-9_]*). "$${" stands
// for a literal "${"; any other '$' is kept as is. Anything else starting
// with "${" is an error rather than literal text, so that "${ DSN }" or
// "${DSN" cannot silently reach a database driver.
func expand(s string, lookup func(string) (string, bool)) (string, error) {
	if !strings.Contains(s, "${") {
		return s, nil
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		switch {
		case strings.HasPrefix(s[i:], "$${"):
			b.WriteString("${")
			i += 3
		case strings.HasPrefix(s[i:], "${"):
			j := i + 2
			for j < len(s) && isNameByte(s[j], j == i+2) {
				j++
			}
			if j == i+2 || j >= len(s) || s[j] != '}' {
				return "", fmt.Errorf(`"${" must be followed by a variable name and "}" (write "$${" for a literal "${")`)
			}
			name := s[i+2 : j]
			val, ok := lookup(name)
			if !ok {
				return "", fmt.Errorf("environment variable %s is not set", name)
			}
			b.WriteString(val)
			i = j + 1
		default:
			b.WriteByte(s[i])
			i++
		}
	}
	return b.String(), nil
}

func isNameByte(c byte, first bool) bool {
	switch {
	case c == '_', 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z':
		return true
	case '0' <= c && c <= '9':
		return !first
	}
	return false
}
