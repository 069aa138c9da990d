package config

import (
	"encoding"
	"fmt"
	"math"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/goccy/go-yaml"
	"github.com/goccy/go-yaml/ast"
)

// decoder fills Go values from YAML nodes strictly: every key must name a
// field, every value must fit its field's type, and every problem is
// collected (with path and position) instead of stopping at the first.
type decoder struct {
	src       *source
	errs      Errors
	nodes     int
	overLimit bool
}

var (
	secretType   = reflect.TypeFor[Secret]()
	rawType      = reflect.TypeFor[Raw]()
	durationType = reflect.TypeFor[time.Duration]()
	textType     = reflect.TypeFor[encoding.TextUnmarshaler]()
)

func (d *decoder) errorf(n ast.Node, path, format string, args ...any) {
	line, col := position(n)
	d.errs = append(d.errs, Error{File: d.src.file, Path: path, Line: line, Column: col, Msg: fmt.Sprintf(format, args...)})
}

// withinLimit reports whether the node budget still holds, and reports
// (once) the value at which it ran out.
func (d *decoder) withinLimit(n ast.Node, path string) bool {
	if d.nodes <= maxNodes {
		return true
	}
	if !d.overLimit {
		d.overLimit = true
		d.errorf(n, path, "document too large (more than %d values after expanding aliases)", maxNodes)
	}
	return false
}

func (d *decoder) typeError(n ast.Node, path, want string) {
	d.errorf(n, path, "want %s, got %s", want, kindOf(n))
}

// decode sets v (settable) from n.
func (d *decoder) decode(n ast.Node, path string, v reflect.Value) {
	d.nodes++
	if !d.withinLimit(n, path) {
		return
	}
	orig := n
	n, ok := resolve(n, d.src.anchors)
	if !ok {
		d.errorf(orig, path, "unknown alias")
		return
	}
	t := v.Type()
	switch t {
	case secretType:
		d.decodeSecret(n, path, v)
		return
	case rawType:
		r := Raw{src: d.src, path: path}
		if !isNull(n) {
			r.node = n
		}
		r.line, r.col = position(orig)
		v.Set(reflect.ValueOf(r))
		return
	case durationType:
		d.decodeDuration(n, path, v)
		return
	}
	if isNull(n) {
		v.SetZero()
		return
	}
	if t.Kind() == reflect.Pointer {
		if v.IsNil() {
			v.Set(reflect.New(t.Elem()))
		}
		d.decode(n, path, v.Elem())
		return
	}
	if reflect.PointerTo(t).Implements(textType) {
		s, ok := scalarText(n)
		if !ok {
			d.typeError(n, path, "a string")
			return
		}
		if err := v.Addr().Interface().(encoding.TextUnmarshaler).UnmarshalText([]byte(s)); err != nil {
			d.errorf(n, path, "%v", err)
		}
		return
	}
	switch t.Kind() {
	case reflect.Struct:
		d.decodeStruct(n, path, v)
	case reflect.Slice:
		seq, ok := n.(*ast.SequenceNode)
		if !ok {
			d.typeError(n, path, "a list")
			return
		}
		s := reflect.MakeSlice(t, len(seq.Values), len(seq.Values))
		for i, e := range seq.Values {
			d.decode(e, joinIndex(path, i), s.Index(i))
		}
		v.Set(s)
	case reflect.Map:
		if t.Key().Kind() != reflect.String {
			d.errorf(n, path, "internal: unsupported map key type %s", t.Key())
			return
		}
		es, ok := entries(n, d.src.anchors)
		if !ok {
			d.typeError(n, path, "a mapping")
			return
		}
		m := reflect.MakeMapWithSize(t, len(es))
		for _, e := range es {
			k, ok := scalarText(e.Key)
			if !ok {
				d.errorf(e.Key, path, "map keys must be strings")
				continue
			}
			ev := reflect.New(t.Elem()).Elem()
			d.decode(e.Value, joinKey(path, k), ev)
			m.SetMapIndex(reflect.ValueOf(k).Convert(t.Key()), ev)
		}
		v.Set(m)
	case reflect.String:
		s, ok := scalarText(n)
		if !ok {
			d.typeError(n, path, "a string")
			return
		}
		v.SetString(s)
	case reflect.Bool:
		var b bool
		switch x := n.(type) {
		case *ast.BoolNode:
			b = x.Value
		case *ast.StringNode: // quoted, or produced by ${VAR}
			var err error
			if b, err = strconv.ParseBool(x.Value); err != nil {
				d.errorf(n, path, "want true or false, got %q", x.Value)
				return
			}
		default:
			d.typeError(n, path, "true or false")
			return
		}
		v.SetBool(b)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		s, ok := numberText(n)
		if !ok {
			d.typeError(n, path, "an integer")
			return
		}
		i, err := strconv.ParseInt(strings.ReplaceAll(s, "_", ""), 0, 64)
		if err != nil || v.OverflowInt(i) {
			d.errorf(n, path, "want an integer that fits %s, got %q", t.Kind(), s)
			return
		}
		v.SetInt(i)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		s, ok := numberText(n)
		if !ok {
			d.typeError(n, path, "a non-negative integer")
			return
		}
		u, err := strconv.ParseUint(strings.ReplaceAll(s, "_", ""), 0, 64)
		if err != nil || v.OverflowUint(u) {
			d.errorf(n, path, "want a non-negative integer that fits %s, got %q", t.Kind(), s)
			return
		}
		v.SetUint(u)
	case reflect.Float32, reflect.Float64:
		var f float64
		switch x := n.(type) {
		case *ast.FloatNode:
			f = x.Value
		case *ast.InfinityNode:
			f = x.Value
		case *ast.NanNode:
			f = math.NaN()
		case *ast.IntegerNode, *ast.StringNode:
			s, _ := scalarText(n)
			var err error
			if f, err = strconv.ParseFloat(strings.ReplaceAll(s, "_", ""), 64); err != nil {
				d.errorf(n, path, "want a number, got %q", s)
				return
			}
		default:
			d.typeError(n, path, "a number")
			return
		}
		if math.IsNaN(f) || math.IsInf(f, 0) {
			// A NaN compares false with every limit: a safety valve set
			// to it would never trip.
			d.errorf(n, path, "want a finite number, got %v", f)
			return
		}
		if v.OverflowFloat(f) {
			d.errorf(n, path, "number too large for %s", t.Kind())
			return
		}
		v.SetFloat(f)
	case reflect.Interface:
		if t.NumMethod() != 0 {
			d.errorf(n, path, "internal: cannot decode into %s", t)
			return
		}
		budget := maxNodes - d.nodes
		g := generic(n, d.src.anchors, &budget, false)
		d.nodes = maxNodes - budget
		if !d.withinLimit(n, path) {
			return
		}
		if g != nil {
			v.Set(reflect.ValueOf(g))
		}
	default:
		d.errorf(n, path, "internal: cannot decode into %s", t)
	}
}

// numberText accepts number nodes and strings (quoted numbers, or numbers
// that came from ${VAR}); parsing decides whether the text is a number.
func numberText(n ast.Node) (string, bool) {
	switch n.(type) {
	case *ast.IntegerNode, *ast.FloatNode, *ast.InfinityNode, *ast.NanNode, *ast.StringNode:
		return scalarText(n)
	}
	return "", false
}

func (d *decoder) decodeDuration(n ast.Node, path string, v reflect.Value) {
	if isNull(n) {
		v.SetInt(0)
		return
	}
	if i, ok := n.(*ast.IntegerNode); ok && i.GetToken().Value == "0" {
		v.SetInt(0)
		return
	}
	s, ok := scalarText(n)
	if _, isStr := n.(*ast.StringNode); !ok || !isStr {
		d.errorf(n, path, "want a duration such as 90s, 10m or 8h, got %s", kindOf(n))
		return
	}
	dur, err := time.ParseDuration(s)
	if err != nil {
		d.errorf(n, path, "want a duration such as 90s, 10m or 8h, got %q", s)
		return
	}
	v.SetInt(int64(dur))
}

// field is a struct field as the YAML schema sees it.
type field struct {
	name  string
	index []int
	typ   reflect.Type
}

// fieldsOf lists the YAML keys of a struct type: the yaml tag name, else
// the lower-cased field name; "-" hides a field; embedded structs without a
// name, or with ",inline", contribute their own fields.
func fieldsOf(t reflect.Type) []field {
	var out []field
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag := f.Tag.Get("yaml")
		if tag == "-" {
			continue
		}
		name, opts, _ := strings.Cut(tag, ",")
		inline := strings.Contains(","+opts+",", ",inline,")
		if f.Anonymous && f.Type.Kind() == reflect.Struct && (inline || name == "") {
			for _, sub := range fieldsOf(f.Type) {
				sub.index = append([]int{i}, sub.index...)
				out = append(out, sub)
			}
			continue
		}
		if !f.IsExported() {
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		out = append(out, field{name: name, index: []int{i}, typ: f.Type})
	}
	return out
}

func (d *decoder) decodeStruct(n ast.Node, path string, v reflect.Value) {
	es, ok := entries(n, d.src.anchors)
	if !ok {
		d.typeError(n, path, "a mapping")
		return
	}
	fields := fieldsOf(v.Type())
	byName := make(map[string]field, len(fields))
	for _, f := range fields {
		byName[f.name] = f
	}
	seen := map[string]bool{}
	for _, e := range es {
		k, ok := scalarText(e.Key)
		if !ok {
			d.errorf(e.Key, path, "keys must be strings")
			continue
		}
		f, ok := byName[k]
		if !ok {
			d.errorf(e.Key, joinKey(path, k), "unknown key%s", suggest(k, fields))
			continue
		}
		seen[k] = true
		d.decode(e.Value, joinKey(path, k), v.FieldByIndex(f.index))
	}
	// An absent Raw block still knows where it belongs, so that a provider's
	// "issuer: required" can point at the IdP entry.
	for _, f := range fields {
		if f.typ == rawType && !seen[f.name] {
			r := Raw{src: d.src, path: joinKey(path, f.name)}
			r.line, r.col = position(n)
			v.FieldByIndex(f.index).Set(reflect.ValueOf(r))
		}
	}
}

// suggest offers the closest known key for a typo.
func suggest(k string, fields []field) string {
	best, bestDist := "", 3
	for _, f := range fields {
		if dist := editDistance(k, f.name); dist < bestDist {
			best, bestDist = f.name, dist
		}
	}
	if best == "" {
		return ""
	}
	return fmt.Sprintf(" (did you mean %q?)", best)
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// generic turns a node into plain Go values (map[string]any or MapSlice,
// []any, scalars). budget bounds alias expansion.
func generic(n ast.Node, anchors map[string]ast.Node, budget *int, ordered bool) any {
	*budget--
	if *budget < 0 {
		return nil
	}
	n, ok := resolve(n, anchors)
	if !ok || isNull(n) {
		return nil
	}
	switch v := n.(type) {
	case *ast.SequenceNode:
		out := make([]any, len(v.Values))
		for i, e := range v.Values {
			out[i] = generic(e, anchors, budget, ordered)
		}
		return out
	case *ast.MappingNode, *ast.MappingValueNode:
		es, _ := entries(v, anchors)
		if ordered {
			out := make(yaml.MapSlice, 0, len(es))
			for _, e := range es {
				out = append(out, yaml.MapItem{Key: keyString(e.Key), Value: generic(e.Value, anchors, budget, ordered)})
			}
			return out
		}
		out := make(map[string]any, len(es))
		for _, e := range es {
			out[keyString(e.Key)] = generic(e.Value, anchors, budget, ordered)
		}
		return out
	case *ast.StringNode:
		return v.Value
	case *ast.LiteralNode:
		return v.Value.Value
	case ast.ScalarNode:
		return v.GetValue()
	}
	return n.String()
}
