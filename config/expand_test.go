package config

import (
	"strings"
	"testing"
)

func TestExpand(t *testing.T) {
	env := map[string]string{"A": "x", "B_2": "y", "EMPTY": "", "YAMLISH": "a: b\n- c"}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	tests := []struct {
		in, want, err string
	}{
		{"plain", "plain", ""},
		{"${A}", "x", ""},
		{"pre-${A}-${B_2}-post", "pre-x-y-post", ""},
		{"${EMPTY}", "", ""},
		{"$${A}", "${A}", ""},
		{"pa$$word", "pa$$word", ""},
		{"p@$sw0rd$", "p@$sw0rd$", ""},
		{"$", "$", ""},
		{"$A", "$A", ""},
		{"${YAMLISH}", "a: b\n- c", ""},
		{"${UNSET}", "", "UNSET is not set"},
		{"${1A}", "", "must be followed by a variable name"},
		{"${A", "", "must be followed by a variable name"},
		{"${}", "", "must be followed by a variable name"},
		{"${ A }", "", "must be followed by a variable name"},
	}
	for _, tt := range tests {
		got, err := expand(tt.in, lookup)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("expand(%q) error = %v, want %q", tt.in, err, tt.err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("expand(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
}

// TestExpandInFile checks expansion happens on parsed values only: a
// variable cannot add keys, "$" in a password survives, keys are literal.
func TestExpandInFile(t *testing.T) {
	t.Setenv("USHER_TEST_HOST", "jira.example.com\nidps: []")
	t.Setenv("USHER_TEST_PASS", "p$ss")
	c := mustParse(t, base+`headers:
  shared_secret: {value: "pa$$w0rd$ and $${NOT_A_VAR} and ${USHER_TEST_PASS}"}
`)
	got, err := c.Headers.SharedSecret.Value.Resolve()
	if want := "pa$$w0rd$ and ${NOT_A_VAR} and p$ss"; err != nil || got != want {
		t.Errorf("shared secret = %q, %v; want %q", got, err, want)
	}

	_, err = Parse("usher.yaml", []byte(strings.Replace(base, "{host: jira.example.com}", "{host: \"${USHER_TEST_HOST}\"}", 1)))
	checkErrors(t, err, []wantErr{{"apps[0].route.host", 9, 13, "want a lowercase host name"}})

	_, err = Parse("usher.yaml", []byte(base+"${USHER_TEST_PASS}: x\n"))
	checkErrors(t, err, []wantErr{{"${USHER_TEST_PASS}", 13, 1, "unknown key"}})

	c = mustParse(t, strings.Replace(base, "keys: [{env: K}]", "keys:\n    - |\n      line ${USHER_TEST_PASS}", 1))
	if got, _ := c.Session.Keys[0].Resolve(); got != "line p$ss\n" {
		t.Errorf("block scalar = %q", got)
	}
}
