package tlsserve

import (
	"errors"
	"slices"
	"testing"

	"github.com/usherhq/usher/config"
)

func TestValidate(t *testing.T) {
	okACME := ACME{Email: "ops@example.com", Hosts: []string{"sso.example.com"}}
	for _, c := range []struct {
		name string
		cfg  Config
		want []string // FieldError.Field of each error, in order
	}{
		{"empty is off", Config{}, nil},
		{"off with proxies", Config{Mode: ModeOff, TrustedProxies: []string{"10.0.0.0/8", "192.0.2.7", "::1", "fd00::/8"}}, nil},
		{"unknown mode", Config{Mode: "tls"}, []string{"mode"}},
		{"files", Config{Mode: ModeFiles, CertFile: "c", KeyFile: "k"}, nil},
		{"files without files", Config{Mode: ModeFiles}, []string{"cert_file", "key_file"}},
		{"files with acme block", Config{Mode: ModeFiles, CertFile: "c", KeyFile: "k", ACME: okACME}, []string{"acme"}},
		{"off with files", Config{CertFile: "c"}, []string{"cert_file"}},
		{"acme", Config{Mode: ModeACME, ACME: okACME}, nil},
		{"acme empty", Config{Mode: ModeACME}, []string{"acme.email", "acme.hosts"}},
		{"acme shared", Config{Mode: ModeACME, ACME: ACME{Email: "ops@example.com", Hosts: []string{"sso.example.com"}, Shared: true}}, nil},
		{"acme shared with storage", Config{Mode: ModeACME, ACME: ACME{Email: "ops@example.com", Hosts: []string{"sso.example.com"}, Shared: true, Storage: "/var/lib/usher/acme"}}, []string{"acme.storage"}},
		{"off with shared", Config{ACME: ACME{Shared: true}}, []string{"acme"}},
		{"acme bad", Config{Mode: ModeACME, ACME: ACME{
			Email: "ops", CA: "http://ca.example.com/dir",
			Hosts:                []string{"ok.example.com", "*.example.com", "https://x.example.com", "a b"},
			DisableHTTPChallenge: true, DisableTLSALPNChallenge: true,
			AltHTTPPort: 70000, AltTLSALPNPort: -1,
		}}, []string{"acme.email", "acme.ca", "acme.hosts[1]", "acme.hosts[2]", "acme.hosts[3]",
			"acme.disable_tls_alpn_challenge", "acme.alt_http_port", "acme.alt_tls_alpn_port"}},
		{"acme with files", Config{Mode: ModeACME, ACME: okACME, KeyFile: "k"}, []string{"key_file"}},
		{"bad proxies", Config{TrustedProxies: []string{"10.0.0.0/33", "nope", "10.1.2.3"}}, []string{"trusted_proxies[0]", "trusted_proxies[1]"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			var got []string
			for _, err := range c.cfg.Validate() {
				var fe *config.FieldError
				if !errors.As(err, &fe) {
					t.Fatalf("%v is not a *config.FieldError", err)
				}
				got = append(got, fe.Field)
			}
			if !slices.Equal(got, c.want) {
				t.Errorf("fields = %q, want %q (errors: %v)", got, c.want, c.cfg.Validate())
			}
		})
	}
}

func TestNewRejectsInvalid(t *testing.T) {
	if _, err := New(Config{Mode: ModeACME}, nil, t.TempDir()); err == nil {
		t.Fatal("New accepted an ACME config without email and hosts")
	}
}
