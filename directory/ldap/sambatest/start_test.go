package sambatest

import (
	"os"
	"testing"

	"github.com/usherhq/usher/directory/ldap/internal/ldaptest"
)

// TestStart starts and stops a server; USHER_SAMBA_STARTS repeats it.
func TestStart(t *testing.T) {
	n := 1
	if os.Getenv("USHER_SAMBA_STARTS") != "" {
		n = 3
	}
	for range n {
		s, err := Start()
		if err != nil {
			ldaptest.SkipUnavailable(t, err)
		}
		t.Logf("provisioned in %v, started in %v", s.ProvisionTime, s.StartTime)
		s.Stop()
	}
}
