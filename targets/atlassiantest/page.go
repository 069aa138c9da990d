package atlassiantest

import (
	"html/template"
	"net/http"
	"net/url"
	"slices"
	"strings"
)

// The identity page stands in for the app's UI behind usher: it shows
// who the trusted header says the visitor is, what the other X-Remote-*
// headers add, and the emulator's record of that user. A visit by a
// known, active user counts as a login (it sets the last-login time), as
// the header authenticator in front of a real app would.

var pageTmpl = template.Must(template.New("page").Parse(`<!doctype html>
<html><head><meta charset="utf-8"><title>{{.Product}} (emulated)</title>
<style>body{font:16px/1.5 system-ui,sans-serif;max-width:44rem;margin:3rem auto;padding:0 1rem;color:#172b4d}dt{font-weight:600}dd{margin:0 0 .5rem 1rem}</style></head>
<body>
<h1>{{.Product}} (emulated) — {{if .Name}}you are {{.Name}}{{else}}you are not signed in{{end}}</h1>
{{if not .Name}}{{if .SSO}}<p>No {{.Product}} session.</p>{{else}}<p>No {{.Header}} header reached the app.</p>{{end}}{{end}}
{{if and .SSO .Name}}<p>Signed in through {{.Product}}'s built-in SSO (OpenID Connect), with the app's own session.</p>{{end}}
{{if .Headers}}<h2>Identity headers</h2><dl>{{range .Headers}}<dt>{{.Name}}</dt><dd>{{.Value}}</dd>{{end}}</dl>{{end}}
{{if .Name}}<h2>{{.Product}} account</h2>
{{with .User}}<dl>
<dt>Username</dt><dd>{{.Name}}</dd>
<dt>Display name</dt><dd>{{.DisplayName}}</dd>
<dt>Email</dt><dd>{{.Email}}</dd>
<dt>Status</dt><dd>{{if .Active}}active{{else}}deactivated — the app refuses this login{{end}}</dd>
<dt>Groups</dt><dd>{{range $i, $g := .Groups}}{{if $i}}, {{end}}{{$g}}{{else}}(none){{end}}</dd>
</dl>{{else}}<p>There is no such user in {{.Product}}: the app refuses this login.</p>{{end}}{{end}}
<p><a href="/">Home</a> · <a href="{{.Logout}}">Sign out</a></p>
</body></html>
`))

type pageHeader struct{ Name, Value string }

func (s *Server) servePage(w http.ResponseWriter, r *http.Request) {
	name := r.Header.Get(s.header)
	st := s.ssoConfig()
	if st != nil {
		// With SSO on, the app knows people by its own session only; an
		// identity header means nothing to it.
		if name = s.ssoUser(r, st); name == "" && !st.cfg.ShowLoginForm && isPageVisit(r) {
			http.Redirect(w, r, st.basePath+ssoLoginPath+"1?"+url.Values{"authDest": {r.URL.RequestURI()}}.Encode(), http.StatusFound)
			return
		}
	}
	data := struct {
		Product, Header, Name string
		SSO                   bool
		Logout                string
		Headers               []pageHeader
		User                  *User
	}{Product: productName(s.kind), Header: s.header, Name: name, SSO: st != nil, Logout: "/usher/logout"}
	if st != nil {
		data.Logout = st.basePath + logoutPath(s.kind)
	}
	for k, vs := range r.Header {
		if st == nil && (strings.HasPrefix(k, "X-Remote-") || k == http.CanonicalHeaderKey(s.header)) {
			data.Headers = append(data.Headers, pageHeader{k, strings.Join(vs, ", ")})
		}
	}
	slices.SortFunc(data.Headers, func(a, b pageHeader) int { return strings.Compare(a.Name, b.Name) })
	status := http.StatusUnauthorized
	if name != "" {
		s.mu.Lock()
		if u := s.lookup(name); u != nil {
			if u.active {
				u.lastLogin = s.now()
				s.gen.Add(1)
				status = http.StatusOK
			} else {
				status = http.StatusForbidden
			}
			e := s.export(u)
			data.User = &e
		} else {
			status = http.StatusForbidden
		}
		s.mu.Unlock()
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	if err := pageTmpl.Execute(w, data); err != nil {
		s.log.Warn("identity page: render", "err", err)
	}
}

// isPageVisit tells a browser navigation from a REST or XHR call, which
// gets the 401 rather than a redirect to the IdP.
func isPageVisit(r *http.Request) bool {
	if r.Method != http.MethodGet {
		return false
	}
	if m := r.Header.Get("Sec-Fetch-Mode"); m != "" {
		return m == "navigate"
	}
	return strings.Contains(r.Header.Get("Accept"), "text/html")
}

// logoutPath is the product's own logout URL, which ends the product
// session only (§16).
func logoutPath(k Kind) string {
	switch k {
	case Confluence:
		return "/logout.action"
	case Bitbucket:
		return "/j_atl_security_logout"
	}
	return "/secure/Logout!default.jspa"
}

func productName(k Kind) string {
	switch k {
	case Jira:
		return "Jira"
	case Confluence:
		return "Confluence"
	case Bitbucket:
		return "Bitbucket"
	case Crowd:
		return "Crowd"
	}
	return string(k)
}
