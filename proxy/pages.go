package proxy

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"html/template"
	"net/http"
	"net/url"
	"strconv"
	"sync/atomic"

	"github.com/usherhq/usher/providers"
)

// The pages are deliberately plain: they work without JavaScript (except
// the auto-submit of a SAML POST, which has a button fallback) and say what
// happened in words an end user can act on, with a request ID to quote.
var pages = template.Must(template.New("").Parse(`
{{define "head"}}<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1"><title>{{.}}</title>
<style>body{font:16px/1.5 system-ui,sans-serif;max-width:32rem;margin:4rem auto;padding:0 1rem;color:#172b4d}h1{font-size:1.5rem}.idp,button{display:block;width:100%;box-sizing:border-box;margin:.5rem 0;padding:.7rem;border:1px solid #c1c7d0;border-radius:4px;background:#f4f5f7;color:#172b4d;text-align:center;text-decoration:none;font:inherit;cursor:pointer}input{width:100%;box-sizing:border-box;padding:.6rem;font:inherit}.note{color:#5e6c84;font-size:.9rem}.err{color:#bf2600}.off{background:#fff;color:#6b778c;cursor:default}</style></head><body>{{end}}
{{define "chooser"}}{{template "head" "Sign in"}}<h1>Sign in</h1>
{{if .Message}}<p class="err" role="alert">{{.Message}}</p>{{end}}
{{if .Discovery}}<form method="post" action="/usher/login"><label for="email">Work e-mail</label>
<input id="email" name="email" type="email" autocomplete="username" value="{{.Email}}" autofocus>
<input type="hidden" name="rd" value="{{.Return}}"><button type="submit">Continue</button></form>
<p class="note">or choose your sign-in provider:</p>
{{else}}<p class="note">Choose your sign-in provider:</p>
{{end}}{{range .IdPs}}{{if .Unavailable}}<p class="idp off" aria-disabled="true">{{.Name}} <span class="note">(unavailable right now)</span></p>{{else}}<a class="idp" href="{{.URL}}">{{.Name}}</a>{{end}}{{end}}
</body></html>{{end}}
{{define "post"}}{{template "head" "Signing in"}}<form method="post" action="{{.URL}}" id="f">
{{range $k, $vs := .Form}}{{range $vs}}<input type="hidden" name="{{$k}}" value="{{.}}">{{end}}{{end}}
<noscript><p>Press the button to continue signing in.</p></noscript><button type="submit">Continue</button></form>
<script>document.getElementById("f").submit()</script></body></html>{{end}}
{{define "logout"}}{{template "head" "Sign out"}}<h1>Sign out</h1><p>Signed in as <b>{{.User}}</b>.</p>
<form method="post" action="/usher/logout"><input type="hidden" name="csrf" value="{{.Token}}"><button type="submit">Sign out</button></form></body></html>{{end}}
{{define "message"}}{{template "head" .Title}}<h1>{{.Title}}</h1><p>{{.Message}}</p>{{if .Link}}<p><a href="{{.Link}}">Continue</a></p>{{end}}</body></html>{{end}}
{{define "error"}}{{template "head" .Title}}<h1>{{.Title}}</h1><p>{{.Message}}</p>
<p class="note">Request ID: <code>{{.RequestID}}</code>. Quote it if you contact your administrator.</p>{{if .Retry}}<p><a href="/usher/login">Sign in again</a></p>{{end}}</body></html>{{end}}
`))

type chooserPage struct {
	Message, Email, Return string
	// Discovery shows the e-mail box: some IdP has domains.
	Discovery bool
	IdPs      []chooserIdP
}

type chooserIdP struct {
	Name string
	URL  string
	// Unavailable IdPs are listed without a link: a login there would
	// fail at once.
	Unavailable bool
}

type postPage struct {
	URL  string
	Form url.Values
}

type logoutPage struct{ User, Token string }

type messagePage struct{ Title, Message, Link string }

type errorPage struct {
	Title, Message, RequestID string
	Retry                     bool
}

func (h *Handler) chooser(w http.ResponseWriter, r *http.Request, rd, email, msg string) {
	p := chooserPage{Message: msg, Email: email, Return: rd, Discovery: len(h.domains) > 0}
	for _, idp := range h.order {
		q := url.Values{"idp": {idp.Provider.ID()}, "rd": {rd}}
		c := chooserIdP{Name: idp.Name, URL: "/usher/login?" + q.Encode()}
		if ch, ok := idp.Provider.(providers.Checker); ok {
			c.Unavailable = ch.Available() != nil
		}
		p.IdPs = append(p.IdPs, c)
	}
	status := http.StatusOK
	if msg != "" {
		status = http.StatusBadRequest
	}
	h.render(w, r, status, "chooser", p)
}

func (h *Handler) render(w http.ResponseWriter, r *http.Request, status int, name string, data any) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Frame-Options", "DENY")
	w.Header().Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; form-action *; frame-ancestors 'none'")
	w.WriteHeader(status)
	if err := pages.ExecuteTemplate(w, name, data); err != nil {
		h.log.Error("render page", "page", name, "err", err, "request_id", requestID(r))
	}
}

// fail answers with an error page. The user sees title and message and a
// request ID; the cause, which may name keys, claims or hosts, goes only to
// the log.
func (h *Handler) fail(w http.ResponseWriter, r *http.Request, status int, title, msg string, cause error) {
	h.failWith(w, r, status, title, msg, cause, status == http.StatusForbidden)
}

// failWith is fail with a choice whether the page offers to sign in
// again.
func (h *Handler) failWith(w http.ResponseWriter, r *http.Request, status int, title, msg string, cause error, retry bool) {
	id := requestID(r)
	if id == "" {
		id = h.reqIDs.next()
	}
	w.Header().Set("X-Request-Id", id)
	if cause != nil {
		level := h.log.Warn
		if status >= 500 {
			level = h.log.Error
		}
		level(title, "status", status, "err", cause, "path", r.URL.Path, "request_id", id)
	}
	h.render(w, r, status, "error", errorPage{Title: title, Message: msg, RequestID: id, Retry: retry})
}

// requestIDs hands out cheap unique request IDs: a random per-process
// prefix and a counter, so the hot path pays no syscall for randomness.
type requestIDs struct {
	prefix string
	n      *atomic.Uint64
}

func newRequestIDs() requestIDs {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return requestIDs{prefix: hex.EncodeToString(b[:]) + "-", n: new(atomic.Uint64)}
}

func (g requestIDs) next() string {
	return g.prefix + strconv.FormatUint(g.n.Add(1), 36)
}

type requestIDKey struct{}

func requestID(r *http.Request) string {
	id, _ := r.Context().Value(requestIDKey{}).(string)
	return id
}

// withRequestID tags usher's own endpoints with a request ID that error
// pages show and logs carry.
func withRequestID(r *http.Request, id string) *http.Request {
	return r.WithContext(context.WithValue(r.Context(), requestIDKey{}, id))
}
