package config

import (
	"slices"
	"strings"
	"testing"
)

// ssoBase is base with room for more apps after jira.
const ssoBase = `server:
  public_url: https://sso.example.com
session:
  keys: [{env: K}]
idps:
  - id: okta
    type: oidc
apps:
`

func TestAppSSOErrors(t *testing.T) {
	t.Parallel()
	runParseCases(t, []parseCase{{
		name: "provider client without the app's url",
		src:  ssoBase + "  - {name: jira, kind: jira, sso: {client_id: jira, client_secret: {env: S}}}\n",
		want: []wantErr{
			{"apps[0].upstream", 9, 5, "or, for an app people reach directly, its url"},
			{"apps[0].url", 9, 5, "required with sso"},
			{"apps[0].sso.redirect_uris", 9, 30, "required for apps of kind jira"},
		},
	}, {
		name: "redirect URI on another host",
		src:  ssoBase + "  - {name: jira, kind: jira, url: https://jira.example.com, sso: {client_id: jira, client_secret: {env: S}, redirect_uris: [https://evil.example.net/plugins/servlet/oidc/callback, http://jira.example.com/cb]}}\n",
		want: []wantErr{
			{"apps[0].sso.redirect_uris[0]", 9, 0, "not on the app's host https://jira.example.com"},
			{"apps[0].sso.redirect_uris[1]", 9, 0, "not on the app's host https://jira.example.com"},
		},
	}, {
		name: "fragment, relative and duplicate redirect URIs",
		src:  ssoBase + "  - {name: app, kind: generic, url: https://app.example.com, sso: {client_id: app, client_secret: {env: S}, redirect_uris: [\"https://app.example.com/cb#x\", /cb, https://app.example.com/cb, https://app.example.com/cb]}}\n",
		want: []wantErr{
			{"apps[0].sso.redirect_uris[0]", 9, 0, "fragment"},
			{"apps[0].sso.redirect_uris[1]", 9, 0, "want an absolute URL"},
			{"apps[0].sso.redirect_uris[3]", 9, 0, "duplicate"},
		},
	}, {
		name: "generic app needs redirect URIs",
		src:  ssoBase + "  - {name: app, kind: generic, url: https://app.example.com, sso: {client_id: app, client_secret: {env: S}}}\n",
		want: []wantErr{{"apps[0].sso.redirect_uris", 9, 0, "required for apps of kind generic"}},
	}, {
		name: "secret and public, alg, duplicate client",
		src: ssoBase + "  - {name: a, kind: jira, url: https://a.example.com, sso: {client_id: x, client_secret: {env: S}, public: true, signing_alg: HS256}}\n" +
			"  - {name: b, kind: jira, url: https://b.example.com, sso: {client_id: x}}\n",
		want: []wantErr{
			{"apps[0].sso.client_secret", 9, 0, "a public client has no secret"},
			{"apps[0].sso.signing_alg", 9, 0, "want RS256 or ES256"},
			{"apps[1].sso.client_secret", 10, 0, "required"},
			{"apps[1].sso.client_id", 10, 0, "already registered by apps[0]"},
		},
	}, {
		name: "provider only app with a route",
		src:  ssoBase + "  - {name: jira, kind: jira, url: https://jira.example.com, route: {host: jira.example.com}, sso: {client_id: jira, client_secret: {env: S}}}\n",
		want: []wantErr{{"apps[0].route", 9, 0, "only for an app usher proxies"}},
	}, {
		name: "proxied app whose url the route does not serve",
		src: ssoBase + "  - {name: wiki, kind: confluence, upstream: http://wiki:8090, route: {path_prefix: /wiki}, url: https://sso.example.com/confluence, sso: {client_id: wiki, client_secret: {env: S}}}\n" +
			"  - {name: jira, kind: jira, upstream: http://jira:8080, route: {host: jira.example.com}, url: https://other.example.com, sso: {client_id: jira, client_secret: {env: S}}}\n",
		want: []wantErr{
			{"apps[0].url", 9, 0, "not served by this app's route (path /wiki on sso.example.com)"},
			{"apps[1].url", 10, 0, "not served by this app's route (host jira.example.com on jira.example.com)"},
		},
	}, {
		name: "url with a query",
		src:  ssoBase + "  - {name: jira, kind: jira, url: \"https://jira.example.com/?x=1\"}\n",
		want: []wantErr{{"apps[0].url", 9, 0, "without query"}},
	}})
}

func TestAppSSODefaultsAndModes(t *testing.T) {
	t.Parallel()
	c := mustParse(t, ssoBase+`  - {name: jira, kind: jira, url: "https://jira.example.com/", sso: {client_id: jira, client_secret: {env: S}}}
  - {name: wiki, kind: confluence, upstream: http://wiki:8090, route: {path_prefix: /wiki}, url: https://sso.example.com/wiki, sso: {client_id: "my wiki/1", public: true}}
  - {name: git, kind: bitbucket, upstream: http://git:7990, route: {host: git.example.com}}
  - {name: crowd, kind: crowd, url: https://crowd.example.com}
`)
	if got := c.Apps[0].URL; got != "https://jira.example.com" {
		t.Errorf("url = %q: want the trailing slash dropped", got)
	}
	if got, want := c.Apps[0].SSO.RedirectURIs, []string{"https://jira.example.com/plugins/servlet/oidc/callback"}; !slices.Equal(got, want) {
		t.Errorf("default redirect URIs = %q, want %q", got, want)
	}
	if got := c.Apps[0].SSO.SigningAlg; got != "RS256" {
		t.Errorf("signing_alg default = %q", got)
	}
	if got := c.Apps[1].SSO.RedirectURIs; len(got) != 1 || !strings.HasPrefix(got[0], "https://sso.example.com/wiki/plugins") {
		t.Errorf("context-path redirect URI = %q", got)
	}
	var modes []string
	for _, a := range c.Apps {
		modes = append(modes, a.Mode())
	}
	if want := []string{"provider only", "proxy + provider", "proxy + header", "provisioning only"}; !slices.Equal(modes, want) {
		t.Errorf("modes = %q, want %q", modes, want)
	}
}
