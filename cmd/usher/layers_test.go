package main

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

const module = "github.com/usherhq/usher"

// parsedPackage is one package directory's non-test files.
type parsedPackage struct {
	dir     string // relative to the module root, "proxy", "store/sqlite"
	files   []*ast.File
	imports map[string]bool
}

// parseTree parses every non-test Go file of the module.
func parseTree(t *testing.T) []*parsedPackage {
	t.Helper()
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	byDir := map[string]*parsedPackage{}
	fset := token.NewFileSet()
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (strings.HasPrefix(d.Name(), ".") || d.Name() == "testdata") && path != root {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, filepath.Dir(path))
		p := byDir[rel]
		if p == nil {
			p = &parsedPackage{dir: filepath.ToSlash(rel), imports: map[string]bool{}}
			byDir[rel] = p
		}
		p.files = append(p.files, f)
		for _, im := range f.Imports {
			v, _ := strconv.Unquote(im.Path.Value)
			p.imports[v] = true
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var out []*parsedPackage
	for _, p := range byDir {
		out = append(out, p)
	}
	return out
}

func under(dir, pkg string) bool { return dir == pkg || strings.HasPrefix(dir, pkg+"/") }

// TestLayers keeps the boundaries DESIGN.md draws: the proxy translates
// HTTP and reaches people only through the lifecycle; protocol and
// database libraries stay inside the package that wraps them; the audit
// log has one writer.
func TestLayers(t *testing.T) {
	pkgs := parseTree(t)
	if len(pkgs) < 10 {
		t.Fatalf("found %d packages; is the module root right?", len(pkgs))
	}
	forbidden := []struct {
		pkg     string // the importing package tree
		imports string // an import path prefix it must not use
		why     string
	}{
		{"proxy", module + "/store", "the proxy admits people through jit.Lifecycle"},
		{"proxy", module + "/targets", "the proxy never calls an app's API"},
		{"admin", module + "/targets", "the admin page acts through the lifecycle"},
		{"scim", module + "/targets", "SCIM pushes reach the apps through the lifecycle"},
		{"sweep", module + "/proxy", "sweeps do not depend on HTTP handling"},
		{"jit", module + "/proxy", "the lifecycle knows nothing of HTTP handling"},
		{"store", module + "/jit", "the store holds data, not decisions"},
		{"config", module + "/", "config holds data, not behaviour"},
	}
	for _, p := range pkgs {
		for _, f := range forbidden {
			if !under(p.dir, f.pkg) {
				continue
			}
			for im := range p.imports {
				if strings.HasPrefix(im, f.imports) && !(f.pkg == "store" && strings.HasPrefix(im, module+"/store")) &&
					!(f.pkg == "config" && !strings.HasPrefix(im, module+"/")) {
					t.Errorf("%s imports %s: %s", p.dir, im, f.why)
				}
			}
		}
		for im := range p.imports {
			switch {
			case strings.HasPrefix(im, "github.com/crewjam/saml") && !under(p.dir, "providers/saml"):
				t.Errorf("%s imports %s: only providers/saml wraps crewjam/saml", p.dir, im)
			case strings.HasPrefix(im, "github.com/jackc/pgx") && !under(p.dir, "store"):
				t.Errorf("%s imports %s: only the store talks to PostgreSQL", p.dir, im)
			case im == "modernc.org/sqlite" && !under(p.dir, "store"):
				t.Errorf("%s imports %s: only the store talks to SQLite", p.dir, im)
			}
		}
	}
}

// TestOneAuditWriter: only jit's audit writer appends to the audit log.
func TestOneAuditWriter(t *testing.T) {
	for _, p := range parseTree(t) {
		if under(p.dir, "store") || p.dir == "jit" {
			continue
		}
		for _, f := range p.files {
			ast.Inspect(f, func(n ast.Node) bool {
				call, ok := n.(*ast.CallExpr)
				if !ok {
					return true
				}
				if sel, ok := call.Fun.(*ast.SelectorExpr); ok && sel.Sel.Name == "Append" {
					t.Errorf("%s calls %s.Append: audit entries go through jit.AuditLog", p.dir, types(sel.X))
				}
				return true
			})
		}
	}
}

func types(e ast.Expr) string {
	switch x := e.(type) {
	case *ast.Ident:
		return x.Name
	case *ast.SelectorExpr:
		return types(x.X) + "." + x.Sel.Name
	}
	return "…"
}
