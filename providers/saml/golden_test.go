package saml

import (
	"bytes"
	"compress/flate"
	"context"
	"encoding/base64"
	"encoding/pem"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/usherhq/usher/providers"
)

// staticIdPMetadata is IdP metadata with fixed URLs and one or more
// signing certificates (PEM), as an admin would paste into metadata_xml.
func staticIdPMetadata(t testing.TB, certsPEM ...string) string {
	t.Helper()
	var keys strings.Builder
	for _, c := range certsPEM {
		block, _ := pem.Decode([]byte(c))
		if block == nil {
			t.Fatal("bad PEM")
		}
		keys.WriteString(`<KeyDescriptor use="signing"><ds:KeyInfo><ds:X509Data><ds:X509Certificate>` +
			base64.StdEncoding.EncodeToString(block.Bytes) +
			`</ds:X509Certificate></ds:X509Data></ds:KeyInfo></KeyDescriptor>`)
	}
	return `<?xml version="1.0"?>
<EntityDescriptor xmlns="urn:oasis:names:tc:SAML:2.0:metadata" xmlns:ds="http://www.w3.org/2000/09/xmldsig#" entityID="https://idp.example/metadata">
<IDPSSODescriptor protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol">` + keys.String() + `
<SingleLogoutService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect" Location="https://idp.example/slo"/>
<SingleSignOnService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect" Location="https://idp.example/sso"/>
<SingleSignOnService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST" Location="https://idp.example/sso"/>
</IDPSSODescriptor>
</EntityDescriptor>`
}

func openStatic(t testing.TB, mod func(*Config)) *Provider {
	t.Helper()
	cfg := &Config{
		MetadataXML: staticIdPMetadata(t, readTestdata(t, "idp-cert.pem")),
		SPKey:       secretFile(t, "sp-key.pem"),
		SPCert:      secretFile(t, "sp-cert.pem"),
	}
	if mod != nil {
		mod(cfg)
	}
	c := newClock(fixedNow)
	p, err := cfg.OpenWith(context.Background(), "okta", providers.Deps{PublicURL: publicURL}, Options{
		Now:   c.Now,
		NewID: func() string { return "id-golden-1" },
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return p
}

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./providers/saml -update)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from golden file; got:\n%s", name, got)
	}
}

func TestGoldenSPMetadata(t *testing.T) {
	p := openStatic(t, nil)
	b, ct, err := p.Metadata()
	if err != nil {
		t.Fatal(err)
	}
	if ct != "application/samlmetadata+xml" {
		t.Errorf("content type %q", ct)
	}
	golden(t, "sp-metadata.xml", b)
}

func TestGoldenAuthnRequest(t *testing.T) {
	for _, tc := range []struct {
		file string
		mod  func(*Config)
	}{
		{"authnrequest-redirect.xml", nil},
		{"authnrequest-post-signed.xml", func(c *Config) { c.Binding = "post"; c.SignRequests = true; c.NameIDFormat = "persistent" }},
	} {
		t.Run(tc.file, func(t *testing.T) {
			p := openStatic(t, tc.mod)
			ch, err := p.Begin(context.Background(), "flow-1", "")
			if err != nil {
				t.Fatal(err)
			}
			var xml []byte
			if ch.Form == nil {
				u, err := url.Parse(ch.URL)
				if err != nil {
					t.Fatal(err)
				}
				if u.Query().Get("RelayState") != "flow-1" {
					t.Errorf("RelayState missing: %s", ch.URL)
				}
				deflated, err := base64.StdEncoding.DecodeString(u.Query().Get("SAMLRequest"))
				if err != nil {
					t.Fatal(err)
				}
				if xml, err = io.ReadAll(flate.NewReader(bytes.NewReader(deflated))); err != nil {
					t.Fatal(err)
				}
			} else {
				if ch.URL != "https://idp.example/sso" || ch.Form.Get("RelayState") != "flow-1" {
					t.Errorf("challenge %s %v", ch.URL, ch.Form)
				}
				if xml, err = base64.StdEncoding.DecodeString(ch.Form.Get("SAMLRequest")); err != nil {
					t.Fatal(err)
				}
			}
			if string(ch.State) != `{"r":"id-golden-1","f":"flow-1"}` {
				t.Errorf("state %s", ch.State)
			}
			golden(t, tc.file, append(xml, '\n'))
		})
	}
}
