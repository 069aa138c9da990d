package crowd_test

import (
	"errors"
	"slices"
	"testing"

	"github.com/usherhq/usher/config"
	"github.com/usherhq/usher/targets"
	"github.com/usherhq/usher/targets/atlassiantest"
	"github.com/usherhq/usher/targets/crowd"
	"github.com/usherhq/usher/targets/targettest"
)

func TestContract(t *testing.T) {
	targettest.Run(t, func(t *testing.T, deps targets.Deps) (targets.Target, *atlassiantest.Server) {
		srv := atlassiantest.New(atlassiantest.Crowd, atlassiantest.Options{CrowdApp: "usher", CrowdAppPassword: "s3cret"})
		deps.Upstream = targettest.Serve(t, srv)
		cfg := &crowd.Config{Application: "usher", ApplicationPassword: config.SecretValue("s3cret")}
		if errs := cfg.Validate(); len(errs) > 0 {
			t.Fatalf("Validate: %v", errs)
		}
		dir, err := cfg.Open("crowd", deps)
		if err != nil {
			t.Fatal(err)
		}
		return dir, srv
	})
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name string
		cfg  crowd.Config
		want []string
	}{
		{"ok", crowd.Config{URL: "https://crowd.example.com/crowd", Application: "usher", ApplicationPassword: config.SecretValue("p")}, nil},
		{"missing", crowd.Config{URL: "crowd"}, []string{"url", "application", "application_password"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var fields []string
			for _, err := range tc.cfg.Validate() {
				var fe *config.FieldError
				if !errors.As(err, &fe) {
					t.Fatalf("%v is not a FieldError", err)
				}
				fields = append(fields, fe.Field)
			}
			if !slices.Equal(fields, tc.want) {
				t.Errorf("fields = %v, want %v", fields, tc.want)
			}
		})
	}
}

// TestUserCredentialsRefused: Crowd authenticates applications; a user's
// name and password get 401 (§6.1), reported as a non-temporary error.
func TestUserCredentialsRefused(t *testing.T) {
	srv := atlassiantest.New(atlassiantest.Crowd, atlassiantest.Options{CrowdApp: "usher", CrowdAppPassword: "s3cret",
		Users: []atlassiantest.User{{Name: "jdoe", Password: "pw", Active: true}}})
	cfg := &crowd.Config{Application: "jdoe", ApplicationPassword: config.SecretValue("pw")}
	dir, err := cfg.Open("crowd", targets.Deps{Upstream: targettest.Serve(t, srv)})
	if err != nil {
		t.Fatal(err)
	}
	_, err = dir.GetUser(t.Context(), "jdoe")
	if targets.StatusOf(err) != 401 || targets.IsTemporary(err) {
		t.Errorf("GetUser with user credentials = %v, want a permanent 401", err)
	}
}
