package saml

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/usherhq/usher/config"
	"github.com/usherhq/usher/providers"
)

func TestValidate(t *testing.T) {
	ok := func() Config {
		return Config{
			MetadataXML: "<x/>",
			SPKey:       config.SecretValue("k"),
			SPCert:      config.SecretValue("c"),
		}
	}
	for _, tc := range []struct {
		name string
		mod  func(*Config)
		want string
	}{
		{"ok", func(*Config) {}, ""},
		{"no metadata", func(c *Config) { c.MetadataXML = "" }, "exactly one of metadata_url"},
		{"two metadata", func(c *Config) { c.MetadataFile = "/m.xml" }, "exactly one of metadata_url"},
		{"bad url", func(c *Config) { c.MetadataXML, c.MetadataURL = "", "ftp://x" }, "metadata_url"},
		{"plain http url", func(c *Config) { c.MetadataXML, c.MetadataURL = "", "http://idp.example.com/md" }, "must use https"},
		{"http on loopback", func(c *Config) { c.MetadataXML, c.MetadataURL = "", "http://127.0.0.1:8080/md" }, ""},
		{"no key", func(c *Config) { c.SPKey = config.Secret{} }, "sp_key: required"},
		{"no cert", func(c *Config) { c.SPCert = config.Secret{} }, "sp_cert: required"},
		{"binding", func(c *Config) { c.Binding = "artifact" }, "binding"},
		{"landing off-site", func(c *Config) { c.IdPInitiatedPath = "https://evil.example/" }, "idp_initiated_path"},
		{"landing protocol-relative", func(c *Config) { c.IdPInitiatedPath = "//evil.example/" }, "idp_initiated_path"},
		{"landing backslash", func(c *Config) { c.IdPInitiatedPath = `/\evil.example` }, "idp_initiated_path"},
		{"nameid format", func(c *Config) { c.NameIDFormat = "email" }, "nameid_format"},
		{"skew too large", func(c *Config) { c.ClockSkew = time.Hour }, "clock_skew"},
		{"negative size", func(c *Config) { c.MaxResponseBytes = -1 }, "max_response_bytes"},
		{"huge size", func(c *Config) { c.MaxResponseBytes = 64 << 20 }, "max_response_bytes"},
		{"large size", func(c *Config) { c.MaxResponseBytes = 4 << 20 }, ""},
		{"metadata validity", func(c *Config) { c.SPMetadataValidFor = 5 * 365 * 24 * time.Hour }, ""},
		{"short metadata validity", func(c *Config) { c.SPMetadataValidFor = time.Hour }, "sp_metadata_valid_for"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := ok()
			tc.mod(&c)
			errs := c.Validate()
			if tc.want == "" {
				if len(errs) != 0 {
					t.Fatalf("errors %v", errs)
				}
				return
			}
			for _, err := range errs {
				if strings.Contains(err.Error(), tc.want) {
					return
				}
			}
			t.Fatalf("errors %v, want one about %q", errs, tc.want)
		})
	}
}

func TestDecodeStrict(t *testing.T) {
	yaml := `
server: {public_url: "https://usher.example"}
session: {keys: ["MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="]}
idps:
  - id: okta
    type: saml
    config:
      metadata_file: testdata/m.xml
      sp_key: {env: SP_KEY}
      sp_cert: {file: /run/sp.pem}
      binding: post
      allow_idp_initiated: true
      idp_initiated_path: /dashboard
      subject: http://schemas.microsoft.com/identity/claims/objectidentifier
      nameid_format: persistent
      clock_skew: 30s
      metadata_refresh: 2h
      max_response_bytes: 100000
`
	cfg, err := config.Parse("usher.yaml", []byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	var c Config
	if err := cfg.IdPs[0].Config.Decode(&c); err != nil {
		t.Fatal(err)
	}
	if c.Binding != "post" || !c.AllowIdPInitiated || c.ClockSkew != 30*time.Second || c.MetadataRefresh != 2*time.Hour ||
		c.SPKey.Env() != "SP_KEY" || c.SPCert.File() != "/run/sp.pem" || c.MaxResponseBytes != 100000 || c.NameIDFormat != "persistent" {
		t.Fatalf("decoded %+v", c)
	}
	bad := strings.Replace(yaml, "binding: post", "bindng: post", 1)
	if cfg, err = config.Parse("usher.yaml", []byte(bad)); err == nil {
		err = cfg.IdPs[0].Config.Decode(&c)
	}
	if err == nil || !strings.Contains(err.Error(), "bindng") {
		t.Fatalf("unknown key accepted: %v", err)
	}
}

func TestOpenNeedsKeyPair(t *testing.T) {
	cfg := &Config{MetadataXML: staticIdPMetadata(t, readTestdata(t, "idp-cert.pem"))}
	_, err := cfg.Open(context.Background(), "okta", providers.Deps{PublicURL: publicURL})
	if err == nil || !strings.Contains(err.Error(), "sp_key: required") {
		t.Fatalf("err = %v", err)
	}
	// A certificate that is not the key's.
	cfg.SPKey, cfg.SPCert = secretFile(t, "sp-key.pem"), secretFile(t, "idp-cert.pem")
	_, err = cfg.Open(context.Background(), "okta", providers.Deps{PublicURL: publicURL})
	if err == nil || !strings.Contains(err.Error(), "does not hold the public key") {
		t.Fatalf("err = %v", err)
	}
}

func TestGenerateKeyPair(t *testing.T) {
	keyPEM, certPEM, err := GenerateKeyPair("usher.example", 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cfg := &Config{
		MetadataXML: staticIdPMetadata(t, readTestdata(t, "idp-cert.pem")),
		SPKey:       config.SecretValue(string(keyPEM)),
		SPCert:      config.SecretValue(string(certPEM)),
	}
	p, err := cfg.OpenWith(context.Background(), "okta", providers.Deps{PublicURL: publicURL}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if p.key.N.BitLen() != 3072 || p.cert.Subject.CommonName != "usher.example" {
		t.Fatalf("key %d bits, CN %q", p.key.N.BitLen(), p.cert.Subject.CommonName)
	}
}
