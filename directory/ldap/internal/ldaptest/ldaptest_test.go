package ldaptest

import (
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"
)

func TestParseLDIF(t *testing.T) {
	t.Parallel()
	recs, err := ParseLDIF("# c\ndn: a=b\nx: 1\ny: 2\nX: 3\n\ndn: c=d\nz: 4\n")
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 2 || recs[0].DN != "a=b" || len(recs[0].Attrs) != 2 || len(recs[0].Attrs[0].Values) != 2 || recs[1].Attrs[0].Values[0] != "4" {
		t.Errorf("got %+v", recs)
	}
	for _, bad := range []struct{ name, ldif, want string }{
		{"no dn", "x: 1\n", "starts with dn"},
		{"no colon", "dn: a=b\nx\n", "attribute: value"},
		{"base64", "dn: a=b\nx:: MQ==\n", "base64"},
		{"url", "dn: a=b\nx:< file:///etc/passwd\n", "URL"},
		{"continuation", "dn: a=b\nx: 1\n 2\n", "continuation"},
		{"continued pair", "dn: a=b\nx: 1\n y: 2\n", "continuation"},
	} {
		if _, err := ParseLDIF(bad.ldif); err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("%s: ParseLDIF = %v, want an error about %q", bad.name, err, bad.want)
		}
	}
}

func TestProcessAwait(t *testing.T) {
	t.Parallel()
	// A server that ends at start: the error says so, with its output.
	p, err := Start(exec.Command("sh", "-c", "echo bad config >&2; exit 1"))
	if err != nil {
		t.Fatal(err)
	}
	err = p.Await(time.Now().Add(10*time.Second), "listening", func() bool { return false })
	if !errors.Is(err, ErrExited) || !strings.Contains(err.Error(), "bad config") {
		t.Errorf("Await on an ended server = %v, want ErrExited with its output", err)
	}

	// One that never gets ready: the deadline ends the wait.
	p, err = Start(exec.Command("sleep", "60"))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Stop(time.Second)
	err = p.Await(time.Now().Add(50*time.Millisecond), "listening", func() bool { return false })
	if err == nil || errors.Is(err, ErrExited) {
		t.Errorf("Await past the deadline = %v, want a timeout", err)
	}
	calls := 0
	if err := p.Await(time.Now().Add(10*time.Second), "listening", func() bool { calls++; return calls == 3 }); err != nil || calls != 3 {
		t.Errorf("Await = %v after %d calls, want nil after 3", err, calls)
	}
}

func TestProcessStopKillsAfterGrace(t *testing.T) {
	t.Parallel()
	// The shell ignores SIGTERM, and its sleep, which holds the output
	// pipe, outlives the kill.
	p, err := Start(exec.Command("sh", "-c", "trap '' TERM; echo ready; while :; do sleep 10; done"))
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Await(time.Now().Add(10*time.Second), "trapping TERM", func() bool { return strings.Contains(p.Output(), "ready") }); err != nil {
		t.Fatal(err)
	}
	begin := time.Now()
	p.Stop(100 * time.Millisecond)
	select {
	case <-p.exited:
	default:
		t.Fatal("Stop returned with the process running")
	}
	if d := time.Since(begin); d < 100*time.Millisecond || d > 5*time.Second {
		t.Errorf("Stop took %v: want the grace, then the kill, then at most the wait for the output pipe", d)
	}
}

type fakeServer struct{ stopped *int }

func (f fakeServer) Stop() { *f.stopped++ }

func TestShared(t *testing.T) {
	t.Setenv("CI", "")
	starts, stops := 0, 0
	sh := NewShared(func() (fakeServer, error) {
		starts++
		return fakeServer{}, fmt.Errorf("not here: %w", ErrUnavailable)
	})
	for range 2 {
		t.Run("unavailable", func(t *testing.T) {
			sh.Server(t)
			t.Error("Server returned without a server")
		})
	}
	if starts != 1 {
		t.Errorf("%d starts, want one for the package", starts)
	}
	sh.Stop() // nothing started: nothing to stop

	sh = NewShared(func() (fakeServer, error) { starts++; return fakeServer{&stops}, nil })
	sh.Server(t)
	sh.Server(t)
	sh.Stop()
	if starts != 2 || stops != 1 {
		t.Errorf("%d starts, %d stops; want one more start and one stop", starts, stops)
	}

	// Stop before any test asked: no start afterwards either.
	sh = NewShared(func() (fakeServer, error) { starts++; return fakeServer{&stops}, nil })
	sh.Stop()
	if starts != 2 || stops != 1 {
		t.Errorf("Stop on an unused Shared started or stopped a server")
	}
}
