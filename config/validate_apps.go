package config

// Checks of the apps list: kinds, routes, the Cloud block and the apps'
// OpenID Provider clients (sso).

import (
	"net/url"
	"strings"
)

func (v *validator) apps() {
	names := map[string]int{}
	routes := map[string]int{}
	clientIDs := map[string]int{}
	for i, a := range v.c.Apps {
		p := joinIndex("apps", i)
		switch {
		case a.Name == "":
			v.errorf(p+".name", "required")
		case !appNameRE.MatchString(a.Name):
			v.errorf(p+".name", "want lowercase letters, digits and '-', got %q", a.Name)
		default:
			if j, dup := names[a.Name]; dup {
				v.errorf(p+".name", "duplicate app name %q (also apps[%d])", a.Name, j)
			} else {
				names[a.Name] = i
			}
		}
		if !oneOf(a.Kind, appKinds) {
			v.errorf(p+".kind", "want one of %s, got %q", strings.Join(appKinds, ", "), a.Kind)
		}
		if a.Kind == KindCloud {
			v.cloudApp(p, a)
			continue
		}
		switch {
		case a.Upstream == "" && a.URL == "":
			v.errorf(p+".upstream", "required: the app's address for usher to proxy to (or, for an app people reach directly, its url)")
		case a.Upstream == "":
		default:
			if u, err := url.Parse(a.Upstream); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
				v.errorf(p+".upstream", "want an absolute http or https URL without query, got %q", a.Upstream)
			}
		}
		v.appSSO(i, p, a, clientIDs)
		r := a.Route
		if a.Upstream == "" {
			// Not proxied: nothing may route to it.
			if r.Host != "" || r.PathPrefix != "" {
				v.errorf(p+".route", "only for an app usher proxies (with upstream)")
			}
			if a.PassThrough.Authorization || len(a.PassThrough.Paths) > 0 {
				v.errorf(p+".pass_through", "only for an app usher proxies (with upstream)")
			}
			continue
		}
		if r.Host == "" && r.PathPrefix == "" {
			v.errorf(p+".route", "needs host, path_prefix or both")
		}
		if r.Host != "" && !validHostPort(r.Host) {
			v.errorf(p+".route.host", "want a lowercase host name (with optional :port), got %q", r.Host)
		}
		if r.PathPrefix != "" && !strings.HasPrefix(r.PathPrefix, "/") {
			v.errorf(p+".route.path_prefix", "must start with /, got %q", r.PathPrefix)
		}
		if r.Host != "" || r.PathPrefix != "" {
			key := r.Host + "\x00" + strings.TrimSuffix(r.PathPrefix, "/")
			if j, dup := routes[key]; dup {
				v.errorf(p+".route", "same route as apps[%d] (%s)", j, routeString(r))
			} else {
				routes[key] = i
			}
		}
		for k, pt := range a.PassThrough.Paths {
			switch {
			case !strings.HasPrefix(pt, "/"):
				v.errorf(joinIndex(p+".pass_through.paths", k), "must start with /, got %q", pt)
			case strings.Trim(pt, "/") == "":
				// Every request would skip sign-in.
				v.errorf(joinIndex(p+".pass_through.paths", k), "%q would let every request past sign-in; name the paths the app protects itself (matched against the full request path)", pt)
			}
		}
	}
}

// cloudApp checks an Atlassian Cloud app: usher provisions it and
// proxies nothing to it, so it has an api block and no upstream, route
// or pass_through.
func (v *validator) cloudApp(p string, a App) {
	const why = "Atlassian Cloud logins do not pass through usher: a cloud app is provisioned only"
	if a.Upstream != "" {
		v.errorf(p+".upstream", "remove it: %s", why)
	}
	if a.Route != (Route{}) {
		v.errorf(p+".route", "remove it: %s", why)
	}
	if a.PassThrough.Authorization || len(a.PassThrough.Paths) > 0 {
		v.errorf(p+".pass_through", "remove it: %s", why)
	}
	if a.API.IsZero() {
		v.errorf(p+".api", "required: the organization's and site's credentials (see docs/apps/atlassian-cloud.md)")
	}
}

// appSSO checks an app's url and its client registration at usher's
// OpenID Provider, refusing contradictions: a client without the app's
// url, a redirect URI on another host than the app's, a url the proxy
// route does not serve.
func (v *validator) appSSO(i int, p string, a App, clientIDs map[string]int) {
	var base *url.URL
	if a.URL != "" {
		u, err := url.Parse(a.URL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil || u.Opaque != "" {
			v.errorf(p+".url", "want the app's absolute http or https base URL without query, fragment or user info, got %q", a.URL)
		} else {
			base = u
		}
	}
	if base != nil && a.Upstream != "" {
		v.urlMatchesRoute(p, a, base)
	}
	s := a.SSO
	if s == nil {
		return
	}
	sp := p + ".sso"
	if a.URL == "" {
		v.errorf(p+".url", "required with sso: the app's base URL, which its redirect URIs must be on")
	}
	switch {
	case s.ClientID == "":
		v.errorf(sp+".client_id", "required")
	case strings.IndexFunc(s.ClientID, func(r rune) bool { return r < 0x20 || r == 0x7f }) >= 0 || len(s.ClientID) > 255:
		v.errorf(sp+".client_id", "want up to 255 printable characters")
	default:
		if j, dup := clientIDs[s.ClientID]; dup {
			v.errorf(sp+".client_id", "client %q is already registered by apps[%d]", s.ClientID, j)
		} else {
			clientIDs[s.ClientID] = i
		}
	}
	switch {
	case s.Public && !s.ClientSecret.IsZero():
		v.errorf(sp+".client_secret", "a public client has no secret (it proves itself with PKCE); remove one of them")
	case !s.Public && s.ClientSecret.IsZero():
		v.errorf(sp+".client_secret", "required (or public: true for a client that cannot keep a secret)")
	}
	if !oneOf(s.SigningAlg, []string{"RS256", "ES256"}) {
		v.errorf(sp+".signing_alg", "want RS256 or ES256, got %q", s.SigningAlg)
	}
	if len(s.RedirectURIs) == 0 {
		v.errorf(sp+".redirect_uris", "required for apps of kind %s (jira, confluence and bitbucket default to <url>%s)", a.Kind, AtlassianCallbackPath)
	}
	seen := map[string]bool{}
	for k, ru := range s.RedirectURIs {
		rp := joinIndex(sp+".redirect_uris", k)
		u, err := url.Parse(ru)
		switch {
		case err != nil || u.Scheme == "" || u.Host == "" || u.Opaque != "":
			v.errorf(rp, "want an absolute URL, got %q", ru)
		case strings.Contains(ru, "#") || u.User != nil:
			v.errorf(rp, "must not hold a fragment or user info, got %q", ru)
		case base != nil && (!strings.EqualFold(u.Scheme, base.Scheme) || !strings.EqualFold(u.Host, base.Host)):
			v.errorf(rp, "%s is not on the app's host %s://%s (url)", ru, base.Scheme, base.Host)
		case seen[ru]:
			v.errorf(rp, "duplicate redirect URI %s", ru)
		}
		seen[ru] = true
	}
}

// urlMatchesRoute refuses a proxied app whose url the proxy route does not
// serve: the app would send browsers where usher does not forward them.
func (v *validator) urlMatchesRoute(p string, a App, base *url.URL) {
	host := a.Route.Host
	if host == "" {
		pub, err := url.Parse(v.c.Server.PublicURL)
		if err != nil {
			return
		}
		host = pub.Host
	}
	wantHost := strings.EqualFold(base.Host, host) || (!strings.Contains(host, ":") && strings.EqualFold(base.Hostname(), host))
	prefix := strings.TrimSuffix(a.Route.PathPrefix, "/")
	path := strings.TrimSuffix(base.Path, "/")
	wantPath := prefix == "" || path == prefix || strings.HasPrefix(path, prefix+"/")
	if !wantHost || !wantPath {
		v.errorf(p+".url", "%s is not served by this app's route (%s on %s): with an upstream, url is the address usher proxies the app at", a.URL, routeString(a.Route), host)
	}
}

func routeString(r Route) string {
	switch {
	case r.Host == "":
		return "path " + r.PathPrefix
	case r.PathPrefix == "":
		return "host " + r.Host
	}
	return "host " + r.Host + " path " + r.PathPrefix
}
