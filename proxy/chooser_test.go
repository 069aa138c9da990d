package proxy

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/usherhq/usher/providers"
	"github.com/usherhq/usher/session"
)

// chooserIdPStub is a provider whose Begin redirects to its IdP, unless it is
// unavailable. It fails the test on Finish: no test here gets that far.
type chooserIdPStub struct {
	t    *testing.T
	id   string
	down bool
}

func (p *chooserIdPStub) ID() string   { return p.id }
func (p *chooserIdPStub) Type() string { return "oidc" }

func (p *chooserIdPStub) Available() error {
	if p.down {
		return &providers.UnavailableError{Name: p.id + " IdP", Reason: "its discovery document could not be fetched"}
	}
	return nil
}

func (p *chooserIdPStub) Ready(context.Context) error { return p.Available() }

func (p *chooserIdPStub) Begin(_ context.Context, flowID, hint string) (*providers.Challenge, error) {
	if err := p.Available(); err != nil {
		return nil, err
	}
	return &providers.Challenge{URL: "https://" + p.id + ".example/authorize?state=" + flowID + "&login_hint=" + url.QueryEscape(hint), State: []byte("{}")}, nil
}

func (p *chooserIdPStub) FlowID(*http.Request) string { return "" }

func (p *chooserIdPStub) Finish(context.Context, *http.Request, []byte) (*providers.Result, error) {
	p.t.Error("Finish called")
	return nil, io.EOF
}

var _ providers.Checker = (*chooserIdPStub)(nil)

// chooserHandler is usher's public handler for the given IdPs, with
// domains when domains holds any for an IdP id.
func chooserHandler(t *testing.T, idps []*chooserIdPStub, domains map[string][]string) *Handler {
	t.Helper()
	codec, err := session.NewCodec([][]byte{[]byte("0123456789abcdef0123456789abcdef")}, session.Options{
		Name: "usher_session", Secure: true, Idle: time.Hour, Absolute: 8 * time.Hour,
	})
	if err != nil {
		t.Fatal(err)
	}
	var list []IdP
	for _, p := range idps {
		list = append(list, IdP{Provider: p, Name: p.id + " IdP", Domains: domains[p.id]})
	}
	public, _ := url.Parse("https://sso.example.com")
	return New(Options{PublicURL: public, Codec: codec, IdPs: list, Log: slog.New(slog.DiscardHandler)})
}

func serve(h http.Handler, r *http.Request) (*http.Response, string) {
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, r)
	resp := rec.Result()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

func postForm(target string, form url.Values) *http.Request {
	r := httptest.NewRequest(http.MethodPost, target, strings.NewReader(form.Encode()))
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return r
}

// TestChooserShowsUnavailableIdP: an IdP that cannot start logins is
// listed without a link; following a link to it anyway, or being sent
// there by home-realm discovery, gives a 503 that says what is missing.
func TestChooserShowsUnavailableIdP(t *testing.T) {
	t.Parallel()
	acme, globex := &chooserIdPStub{t: t, id: "acme", down: true}, &chooserIdPStub{t: t, id: "globex"}
	h := chooserHandler(t, []*chooserIdPStub{acme, globex}, map[string][]string{"acme": {"acme.test"}, "globex": {"globex.test"}})

	resp, body := serve(h, httptest.NewRequest(http.MethodGet, "/usher/login?rd=/wiki", nil))
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("chooser: %d\n%s", resp.StatusCode, body)
	}
	if strings.Contains(body, "idp=acme") || !strings.Contains(body, "acme IdP <span class=\"note\">(unavailable right now)</span>") {
		t.Errorf("the unavailable IdP must be listed as such, without a link:\n%s", body)
	}
	if !strings.Contains(body, `<a class="idp" href="/usher/login?idp=globex&amp;rd=%2Fwiki">globex IdP</a>`) {
		t.Errorf("the available IdP lost its link:\n%s", body)
	}

	for name, r := range map[string]*http.Request{
		"link":      httptest.NewRequest(http.MethodGet, "/usher/login?idp=acme&rd=/", nil),
		"discovery": postForm("/usher/login", url.Values{"email": {"alice@acme.test"}, "rd": {"/"}}),
	} {
		resp, body := serve(h, r)
		if resp.StatusCode != http.StatusServiceUnavailable ||
			!strings.Contains(body, "acme IdP is unavailable: its discovery document could not be fetched.") ||
			!strings.Contains(body, "choose another sign-in option") || !strings.Contains(body, `href="/usher/login"`) {
			t.Errorf("%s to the unavailable IdP: %d\n%s", name, resp.StatusCode, body)
		}
	}

	// Back up: the link is there again.
	acme.down = false
	_, body = serve(h, httptest.NewRequest(http.MethodGet, "/usher/login", nil))
	if !strings.Contains(body, "idp=acme") || strings.Contains(body, "unavailable") {
		t.Errorf("the IdP is back but the chooser still says otherwise:\n%s", body)
	}
}

// TestChooserWithoutDomains: with no domains configured, the chooser has
// no e-mail box, and a posted address gets the list of IdPs, not an error.
func TestChooserWithoutDomains(t *testing.T) {
	t.Parallel()
	h := chooserHandler(t, []*chooserIdPStub{{t: t, id: "acme"}, {t: t, id: "globex"}}, nil)
	resp, body := serve(h, httptest.NewRequest(http.MethodGet, "/usher/login?rd=/wiki", nil))
	if resp.StatusCode != http.StatusOK || strings.Contains(body, `name="email"`) || strings.Contains(body, "<form") {
		t.Fatalf("chooser without domains: %d, want no e-mail box\n%s", resp.StatusCode, body)
	}
	if !strings.Contains(body, "idp=acme") || !strings.Contains(body, "idp=globex") {
		t.Fatalf("chooser lacks an IdP:\n%s", body)
	}
	resp, body = serve(h, postForm("/usher/login", url.Values{"email": {"eve@initech.test"}, "rd": {"/wiki"}}))
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, "idp=globex&amp;rd=%2Fwiki") || strings.Contains(body, `class="err"`) {
		t.Fatalf("a posted address without domains: %d, want the chooser\n%s", resp.StatusCode, body)
	}

	// With domains, the box is there.
	h = chooserHandler(t, []*chooserIdPStub{{t: t, id: "acme"}, {t: t, id: "globex"}}, map[string][]string{"globex": {"globex.test"}})
	if _, body := serve(h, httptest.NewRequest(http.MethodGet, "/usher/login", nil)); !strings.Contains(body, `name="email"`) {
		t.Fatalf("chooser with domains lacks the e-mail box:\n%s", body)
	}
}

// TestOnlyIdPUnavailable: with one IdP, /usher/login goes straight to it;
// unavailable, the page says so and offers no other option.
func TestOnlyIdPUnavailable(t *testing.T) {
	t.Parallel()
	h := chooserHandler(t, []*chooserIdPStub{{t: t, id: "acme", down: true}}, nil)
	resp, body := serve(h, httptest.NewRequest(http.MethodGet, "/usher/login", nil))
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(body, "acme IdP is unavailable") || strings.Contains(body, "another sign-in option") {
		t.Fatalf("only IdP unavailable: %d\n%s", resp.StatusCode, body)
	}
}
