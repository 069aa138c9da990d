// Package ldaptest is what the real-server harnesses under directory/ldap
// (slapdtest for OpenLDAP, sambatest for Active Directory) share:
// starting, awaiting and stopping a server process, the administrator
// connection with the helpers tests seed and change entries with, the
// LDIF subset those helpers read, a throwaway CA and server certificate,
// and one server per test package that skips (or fails under CI) where
// the server cannot run. What differs between the servers (configuration,
// ports, namespaces, the shape of a test's subtree) stays in each
// harness.
package ldaptest

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// ErrUnavailable means this machine cannot run the server (a program is
// not installed, or root is missing). The harnesses' own errors for it
// wrap this one.
var ErrUnavailable = errors.New("the server cannot run here")

// LookPath finds a program on PATH or in the sbin directories Debian puts
// servers in, which are not always on a test's PATH.
func LookPath(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, d := range []string{"/usr/sbin", "/sbin", "/usr/bin"} {
		if _, err := os.Stat(filepath.Join(d, name)); err == nil {
			return filepath.Join(d, name), nil
		}
	}
	return "", fmt.Errorf("%s not found", name)
}

// SkipUnavailable ends t when err wraps ErrUnavailable: a skip, or a
// failure when the CI environment variable is set, so that a CI run
// without the server cannot pass by testing nothing. Any other error fails
// t: a server that is installed and does not start is a broken harness,
// not a missing one.
func SkipUnavailable(t testing.TB, err error) {
	t.Helper()
	switch {
	case !errors.Is(err, ErrUnavailable):
		t.Fatal(err)
	case os.Getenv("CI") != "":
		t.Fatalf("%v (CI is set, so this fails instead of skipping)", err)
	default:
		t.Skipf("%v; skipping (set CI to fail instead)", err)
	}
}

// Shared is one server for a test package, started by the first test
// that asks (the package's other tests need not wait for it) and stopped
// by TestMain after m.Run:
//
//	var slapd = slapdtest.NewShared(slapdtest.Options{})
//	func TestMain(m *testing.M) { code := m.Run(); slapd.Stop(); os.Exit(code) }
type Shared[S interface{ Stop() }] struct {
	start func() (S, error)
	once  sync.Once
	srv   S
	err   error
}

// NewShared prepares a server that start makes on first use.
func NewShared[S interface{ Stop() }](start func() (S, error)) *Shared[S] {
	return &Shared[S]{start: start}
}

// Server starts the server on first use and returns it, or ends t with
// SkipUnavailable when it did not start.
func (sh *Shared[S]) Server(t testing.TB) S {
	t.Helper()
	sh.once.Do(func() { sh.srv, sh.err = sh.start() })
	if sh.err != nil {
		SkipUnavailable(t, sh.err)
	}
	return sh.srv
}

// Stop stops the server if one started.
func (sh *Shared[S]) Stop() {
	sh.once.Do(func() { sh.err = errors.New("ldaptest: Shared is stopped") })
	if sh.err == nil {
		sh.srv.Stop()
	}
}

// LastLines is the end of a program's output, for error messages.
func LastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
