package sambatest

import (
	"errors"
	"os"
	"testing"
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
			if os.Getenv("CI") == "" && errors.Is(err, ErrNotAvailable) {
				t.Skip(err)
			}
			t.Fatal(err)
		}
		t.Logf("provisioned in %v, started in %v", s.ProvisionTime, s.StartTime)
		s.Stop()
	}
}
