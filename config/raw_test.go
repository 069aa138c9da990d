package config

import (
	"errors"
	"testing"
	"time"
)

// sampleOIDC stands in for a provider type's own Config.
type sampleOIDC struct {
	Issuer       string            `yaml:"issuer"`
	ClientID     string            `yaml:"client_id"`
	ClientSecret Secret            `yaml:"client_secret"`
	Scopes       []string          `yaml:"scopes"`
	ClockSkew    time.Duration     `yaml:"clock_skew"`
	InsecureTLS  *bool             `yaml:"insecure_tls"`
	MaxAge       int               `yaml:"max_age"`
	ClaimMap     map[string]string `yaml:"claim_map"`
	Groups       struct {
		Claim  string `yaml:"claim"`
		Prefix string `yaml:"prefix"`
	} `yaml:"groups"`
}

func (c *sampleOIDC) Validate() []error {
	var errs []error
	if c.Issuer == "" {
		errs = append(errs, &FieldError{Field: "issuer", Msg: "required"})
	}
	if c.ClientSecret.IsZero() {
		errs = append(errs, &FieldError{Field: "client_secret", Msg: "required"})
	}
	if c.Groups.Prefix == "bad" {
		errs = append(errs, &FieldError{Field: "groups.prefix", Msg: "not allowed"})
	}
	if c.MaxAge < 0 {
		errs = append(errs, errors.New("max_age must not be negative"))
	}
	return errs
}

func TestRawDecode(t *testing.T) {
	c := mustParse(t, base+`    config:
      issuer: https://idp.example.com
      client_id: 12345
      client_secret: s3cret
      scopes: [openid, email]
      clock_skew: 90s
      insecure_tls: false
      max_age: 3600
      claim_map: {mail: email}
      groups: {claim: roles, prefix: "okta-"}
`)
	var got sampleOIDC
	got.Scopes = []string{"default"}
	if err := c.IdPs[0].Config.Decode(&got); err != nil {
		t.Fatalf("Decode: %v", err)
	}
	if got.Issuer != "https://idp.example.com" || got.ClientID != "12345" || len(got.Scopes) != 2 || got.ClockSkew != 90*time.Second ||
		got.InsecureTLS == nil || *got.InsecureTLS || got.MaxAge != 3600 || got.ClaimMap["mail"] != "email" || got.Groups.Prefix != "okta-" {
		t.Errorf("decoded %+v", got)
	}
	if s, _ := got.ClientSecret.Resolve(); s != "s3cret" {
		t.Errorf("client_secret = %q", s)
	}

	var zero Raw
	if !zero.IsZero() || zero.Decode(&got) != nil {
		t.Errorf("zero Raw must decode nothing")
	}
	if err := c.IdPs[0].Config.Decode(got); err == nil {
		t.Errorf("Decode into a non-pointer succeeded")
	}
}

func TestRawDecodeErrors(t *testing.T) {
	c := mustParse(t, base+`  - id: entra
    type: oidc
    config:
      issuer: https://login.example.com
      client_idd: abc
      scopes: openid
      clock_skew: 5 minutes
      max_age: soon
      groups: {claim: roles, prefx: x}
      insecure_tls: [true]
`)
	err := c.IdPs[1].Config.Decode(&sampleOIDC{})
	checkErrors(t, err, []wantErr{
		{"idps[1].config.client_idd", 17, 7, `unknown key (did you mean "client_id"?)`},
		{"idps[1].config.scopes", 18, 15, "want a list, got a string"},
		{"idps[1].config.clock_skew", 19, 19, `got "5 minutes"`},
		{"idps[1].config.max_age", 20, 16, `want an integer`},
		{"idps[1].config.groups.prefx", 21, 30, `did you mean "prefix"?`},
		{"idps[1].config.insecure_tls", 22, 21, "want true or false, got a list"},
	})
}

func TestRawProviderErrors(t *testing.T) {
	c := mustParse(t, base+`    config:
      client_id: abc
      max_age: -1
      groups:
        prefix: bad
  - id: bare
    type: saml
`)
	var oc sampleOIDC
	if err := c.IdPs[0].Config.Decode(&oc); err != nil {
		t.Fatal(err)
	}
	got := c.IdPs[0].Config.Errors(oc.Validate())
	checkErrors(t, got, []wantErr{
		{"idps[0].config.issuer", 14, 7, "required"},        // absent: at the block
		{"idps[0].config.client_secret", 14, 7, "required"}, // absent: at the block
		{"idps[0].config", 14, 7, "max_age must not be negative"},
		{"idps[0].config.groups.prefix", 17, 9, "not allowed"},
	})

	bare := c.IdPs[1].Config
	if !bare.IsZero() {
		t.Fatalf("absent config block is not zero")
	}
	e := bare.ErrorAt("issuer", "required")
	if e.Error() != "usher.yaml:18:5: idps[1].config.issuer: required" {
		t.Errorf("ErrorAt on an absent block = %q, want it at the IdP entry", e.Error())
	}
	// Errors already positioned pass through.
	pos := Errors{{File: "usher.yaml", Path: "x", Line: 3, Column: 1, Msg: "m"}}
	if got := bare.Errors([]error{pos}); len(got) != 1 || got[0] != pos[0] {
		t.Errorf("Errors(Errors) = %v", got)
	}
}
