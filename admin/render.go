package admin

import (
	"embed"
	"encoding/json"
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"
)

//go:embed templates/*.html
var templateFS embed.FS

// pageSet holds one template set per page: each page defines "content"
// for the shared layout, so pages cannot share one set.
type pageSet map[string]*template.Template

var pageNames = []string{"login", "message", "overview", "users", "user", "audit", "sweeps", "plan", "queue", "config", "directories", "dirrun", "holds"}

func mustPages() pageSet {
	base := template.Must(template.New("layout.html").Funcs(funcs).ParseFS(templateFS, "templates/layout.html", "templates/partials.html"))
	ps := pageSet{}
	for _, n := range pageNames {
		ps[n] = template.Must(template.Must(base.Clone()).ParseFS(templateFS, "templates/"+n+".html"))
	}
	return ps
}

// pageData is what every page template gets.
type pageData struct {
	Title string
	Actor string // "" on the login page: no navigation
	CSRF  string
	Path  string
	Data  any
}

type messageData struct {
	Message string
	Link    string
	Err     bool
}

func (h *handler) render(w http.ResponseWriter, r *http.Request, status int, name, title string, data any) {
	p := principalOf(r)
	pd := pageData{Title: title, Actor: p.Actor, CSRF: h.csrfToken(p), Path: r.URL.Path, Data: data}
	t, ok := h.pages[name]
	if !ok {
		h.log.Error("admin: no such page", "page", name)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	if err := t.ExecuteTemplate(w, "layout.html", pd); err != nil {
		h.log.Error("admin: render page", "page", name, "err", err)
	}
}

var funcs = template.FuncMap{
	"fmtTime": fmtTime,
	"ago": func(now, t time.Time) string {
		if t.IsZero() {
			return "—"
		}
		return ago(now.Sub(t))
	},
	"userURL": userURL,
	"esc":     url.PathEscape,
	"kvs":     kvs,
}

func fmtTime(t time.Time) string {
	if t.IsZero() {
		return "—"
	}
	return t.UTC().Format("2006-01-02 15:04:05Z")
}

func ago(d time.Duration) string {
	switch {
	case d < 0:
		return "in the future"
	case d < time.Minute:
		return fmt.Sprintf("%ds ago", int(d/time.Second))
	case d < time.Hour:
		return fmt.Sprintf("%dm ago", int(d/time.Minute))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh%02dm ago", int(d/time.Hour), int(d%time.Hour/time.Minute))
	default:
		return fmt.Sprintf("%dd ago", int(d/(24*time.Hour)))
	}
}

// userURL escapes each part: subjects may hold slashes (SAML NameIDs,
// URLs), and ServeMux matches wildcards on the escaped path.
func userURL(idp, subject string) string {
	return "/admin/users/" + url.PathEscape(idp) + "/" + url.PathEscape(subject)
}

type kv struct{ Key, Value string }

// kvs renders a claims or profile map as sorted key/value lines; lists of
// strings read as comma-separated, anything else as compact JSON.
func kvs(m map[string]any) []kv {
	out := make([]kv, 0, len(m))
	for k, v := range m {
		out = append(out, kv{Key: k, Value: valueText(v)})
	}
	slices.SortFunc(out, func(a, b kv) int { return strings.Compare(a.Key, b.Key) })
	return out
}

func valueText(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case nil:
		return ""
	case []any:
		parts := make([]string, 0, len(x))
		for _, e := range x {
			s, ok := e.(string)
			if !ok {
				return compactJSON(x)
			}
			parts = append(parts, s)
		}
		return strings.Join(parts, ", ")
	default:
		return compactJSON(x)
	}
}

// compactJSON marshals without HTML escaping: the template escapes, and
// "R\u0026D" helps nobody.
func compactJSON(v any) string {
	var b strings.Builder
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return fmt.Sprint(v)
	}
	return strings.TrimSuffix(b.String(), "\n")
}
