package appsso

import (
	"html/template"
	"net/http"
)

// errorPage looks like usher's other pages: what happened in words a
// person can act on, and a request ID to quote. The cause goes to the log
// only.
var errorPage = template.Must(template.New("error").Parse(`<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1"><title>{{.Title}}</title>
<style>body{font:16px/1.5 system-ui,sans-serif;max-width:32rem;margin:4rem auto;padding:0 1rem;color:#172b4d}h1{font-size:1.5rem}.note{color:#5e6c84;font-size:.9rem}</style></head><body>
<h1>{{.Title}}</h1><p>{{.Message}}</p>
<p class="note">Request ID: <code>{{.RequestID}}</code>. Quote it if you contact your administrator.</p>{{if .SignOut}}<p><a href="/usher/logout">Sign in as someone else</a></p>{{end}}</body></html>
`))

func (p *Provider) fail(w http.ResponseWriter, r *http.Request, status int, title, msg string, cause error) {
	id := w.Header().Get("X-Request-Id")
	if id == "" {
		id = randomID()
		w.Header().Set("X-Request-Id", id)
	}
	if cause != nil {
		level := p.log.Warn
		if status >= 500 {
			level = p.log.Error
		}
		level("appsso: "+title, "status", status, "err", cause, "path", r.URL.Path, "request_id", id)
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Frame-Options", "DENY")
	w.Header().Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'")
	w.WriteHeader(status)
	_ = errorPage.Execute(w, struct {
		Title, Message, RequestID string
		SignOut                   bool
	}{title, msg, id, status == http.StatusForbidden})
}
