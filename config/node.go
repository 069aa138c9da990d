package config

import (
	"fmt"
	"strconv"
	"strings"
	"sync"

	"github.com/goccy/go-yaml/ast"
)

// source is one parsed file: what positioned errors and Raw blocks need to
// point back into it.
type source struct {
	file    string
	root    ast.Node
	anchors map[string]ast.Node

	// secrets are the secrets decoded so far, by YAML path (CheckSecrets).
	// Raw blocks are decoded after Parse, possibly by several goroutines.
	mu      sync.Mutex
	secrets map[string]placedSecret
}

// maxNodes bounds the work an alias-heavy document can cause ("billion
// laughs"); a real usher configuration has a few hundred nodes.
const maxNodes = 100_000

// collectAnchors records every anchor by name. YAML allows an anchor to be
// redefined; an alias refers to the closest preceding definition, which a
// forward walk that overwrites reproduces for the aliases usher can see.
func collectAnchors(n ast.Node, into map[string]ast.Node) {
	switch n := n.(type) {
	case *ast.AnchorNode:
		if n.Name != nil {
			into[n.Name.GetToken().Value] = n.Value
		}
		collectAnchors(n.Value, into)
	case *ast.MappingNode:
		for _, e := range n.Values {
			collectAnchors(e, into)
		}
	case *ast.MappingValueNode:
		collectAnchors(n.Key, into)
		collectAnchors(n.Value, into)
	case *ast.SequenceNode:
		for _, v := range n.Values {
			collectAnchors(v, into)
		}
	case *ast.TagNode:
		collectAnchors(n.Value, into)
	}
}

// resolve looks through anchors, aliases and tags to the node that carries
// the value. An unknown alias resolves to nil with ok false.
func resolve(n ast.Node, anchors map[string]ast.Node) (ast.Node, bool) {
	for i := 0; i < 64; i++ {
		switch v := n.(type) {
		case *ast.AnchorNode:
			n = v.Value
		case *ast.TagNode:
			n = v.Value
		case *ast.AliasNode:
			target, ok := anchors[v.Value.GetToken().Value]
			if !ok {
				return nil, false
			}
			n = target
		default:
			return n, true
		}
	}
	return nil, false
}

// position is where a node starts. A block mapping's own token is the
// first ':', so it is placed at its first key instead.
func position(n ast.Node) (line, col int) {
	switch v := n.(type) {
	case nil:
		return 0, 0
	case *ast.MappingNode:
		if !v.IsFlowStyle && len(v.Values) > 0 {
			return position(v.Values[0].Key)
		}
	case *ast.MappingValueNode:
		return position(v.Key)
	case *ast.DocumentNode:
		// GetToken would dereference a nil Body.
		if v.Start != nil && v.Start.Position != nil {
			return v.Start.Position.Line, v.Start.Position.Column
		}
		if v.Body == nil {
			return 0, 0
		}
		return position(v.Body)
	}
	tk := n.GetToken()
	if tk == nil || tk.Position == nil {
		return 0, 0
	}
	return tk.Position.Line, tk.Position.Column
}

func isNull(n ast.Node) bool {
	_, ok := n.(*ast.NullNode)
	return n == nil || ok
}

// entries lists a mapping's key/value pairs with merge keys (<<) applied:
// merged entries first, then local ones; a local key overrides a merged one.
// ok is false when n is not a mapping.
func entries(n ast.Node, anchors map[string]ast.Node) ([]*ast.MappingValueNode, bool) {
	return mergedEntries(n, anchors, map[ast.Node]bool{})
}

// mergedEntries expands each merged mapping once per top-level call, which
// keeps merge cycles and merge-of-merges chains from exploding.
func mergedEntries(n ast.Node, anchors map[string]ast.Node, expanded map[ast.Node]bool) ([]*ast.MappingValueNode, bool) {
	var vals []*ast.MappingValueNode
	switch m := n.(type) {
	case *ast.MappingNode:
		vals = m.Values
	case *ast.MappingValueNode:
		vals = []*ast.MappingValueNode{m}
	default:
		return nil, false
	}
	var merged, local []*ast.MappingValueNode
	localKeys := map[string]bool{}
	for _, e := range vals {
		if e.Key.IsMergeKey() {
			src, _ := resolve(e.Value, anchors)
			var sources []ast.Node
			if seq, ok := src.(*ast.SequenceNode); ok {
				for _, s := range seq.Values {
					r, _ := resolve(s, anchors)
					sources = append(sources, r)
				}
			} else {
				sources = append(sources, src)
			}
			for _, s := range sources {
				if s == nil || expanded[s] {
					continue
				}
				expanded[s] = true
				if es, ok := mergedEntries(s, anchors, expanded); ok {
					merged = append(merged, es...)
				}
			}
			continue
		}
		local = append(local, e)
		localKeys[keyString(e.Key)] = true
	}
	if len(merged) == 0 {
		return local, true
	}
	out := make([]*ast.MappingValueNode, 0, len(merged)+len(local))
	seen := map[string]bool{}
	for _, e := range merged {
		k := keyString(e.Key)
		if localKeys[k] || seen[k] {
			continue
		}
		seen[k] = true
		out = append(out, e)
	}
	return append(out, local...), true
}

func keyString(k ast.MapKeyNode) string {
	if s, ok := scalarText(k); ok {
		return s
	}
	return k.String()
}

// scalarText is the text of a scalar as written (after ${VAR} expansion for
// strings). ok is false for mappings, sequences and null.
func scalarText(n ast.Node) (string, bool) {
	switch v := n.(type) {
	case *ast.StringNode:
		return v.Value, true
	case *ast.LiteralNode:
		return v.Value.Value, true
	case *ast.IntegerNode, *ast.FloatNode, *ast.BoolNode, *ast.InfinityNode, *ast.NanNode:
		return v.GetToken().Value, true
	case *ast.MappingKeyNode:
		return scalarText(v.Value)
	}
	return "", false
}

// kindOf names a node's kind for error messages.
func kindOf(n ast.Node) string {
	switch n.(type) {
	case nil, *ast.NullNode:
		return "null"
	case *ast.MappingNode, *ast.MappingValueNode:
		return "a mapping"
	case *ast.SequenceNode:
		return "a list"
	case *ast.StringNode, *ast.LiteralNode:
		return "a string"
	case *ast.IntegerNode, *ast.FloatNode, *ast.InfinityNode, *ast.NanNode:
		return "a number"
	case *ast.BoolNode:
		return "a boolean"
	}
	return n.Type().String()
}

// joinKey and joinIndex build paths like idps[1].config.client_id.
func joinKey(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func joinIndex(path string, i int) string { return path + "[" + strconv.Itoa(i) + "]" }

// pathSegment is one step of a YAML path: a key, or an index when key is "".
type pathSegment struct {
	key   string
	index int
}

// splitPath parses "idps[1].config.issuer" into segments.
func splitPath(p string) ([]pathSegment, error) {
	var segs []pathSegment
	for p != "" {
		switch {
		case p[0] == '.':
			p = p[1:]
		case p[0] == '[':
			end := strings.IndexByte(p, ']')
			if end < 0 {
				return nil, fmt.Errorf("unclosed [ in path")
			}
			i, err := strconv.Atoi(p[1:end])
			if err != nil || i < 0 {
				return nil, fmt.Errorf("bad index %q in path", p[1:end])
			}
			segs = append(segs, pathSegment{index: i})
			p = p[end+1:]
		default:
			end := strings.IndexAny(p, ".[")
			if end < 0 {
				end = len(p)
			}
			segs = append(segs, pathSegment{key: p[:end]})
			p = p[end:]
		}
	}
	return segs, nil
}

// locate finds the position of path below n, falling back to the deepest
// ancestor that exists (a missing required key is reported where its parent
// is). A mapping entry is placed at its key.
func locate(n ast.Node, anchors map[string]ast.Node, path string) (line, col int) {
	segs, err := splitPath(path)
	if err != nil {
		return position(n)
	}
	line, col = position(n)
	for _, s := range segs {
		r, ok := resolve(n, anchors)
		if !ok {
			return line, col
		}
		if s.key != "" {
			es, _ := entries(r, anchors)
			var found *ast.MappingValueNode
			for _, e := range es {
				if keyString(e.Key) == s.key {
					found = e
					break
				}
			}
			if found == nil {
				return line, col
			}
			line, col = position(found.Key)
			n = found.Value
			continue
		}
		seq, ok := r.(*ast.SequenceNode)
		if !ok || s.index >= len(seq.Values) {
			return line, col
		}
		n = seq.Values[s.index]
		line, col = position(n)
	}
	return line, col
}
