package confluence_test

import (
	"testing"

	"github.com/usherhq/usher/config"
	"github.com/usherhq/usher/targets"
	"github.com/usherhq/usher/targets/atlassiantest"
	"github.com/usherhq/usher/targets/confluence"
	"github.com/usherhq/usher/targets/targettest"
)

func TestContract(t *testing.T) {
	targettest.Run(t, func(t *testing.T, deps targets.Deps) (targets.Target, *atlassiantest.Server) {
		srv := atlassiantest.New(atlassiantest.Confluence, atlassiantest.Options{AdminUser: "admin", AdminPassword: "s3cret"})
		deps.Upstream = targettest.Serve(t, srv)
		cfg := &confluence.Config{Conn: targets.Conn{Username: "admin", Password: config.SecretValue("s3cret")}}
		if errs := cfg.Validate(); len(errs) > 0 {
			t.Fatalf("Validate: %v", errs)
		}
		dir, err := cfg.Open("confluence", deps)
		if err != nil {
			t.Fatal(err)
		}
		return dir, srv
	})
}
