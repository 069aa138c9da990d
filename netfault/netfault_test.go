package netfault

import (
	"bufio"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"
)

// echo starts a line echo server and returns its address.
func echo(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				io.Copy(c, c)
			}()
		}
	}()
	return ln.Addr().String()
}

// wait is how long a test waits for an answer that should come at once,
// or for silence that should last: generous, so that a slow machine does
// not fail the test, and never slept through when the answer comes.
const wait = 300 * time.Millisecond

func dial(t *testing.T, p *Proxy) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", p.Addr(), 5*time.Second)
	if err != nil {
		t.Fatalf("dial %s: %v", p.Addr(), err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// roundTrip sends a line and reads it back.
func roundTrip(c net.Conn, line string) (string, error) {
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, line+"\n"); err != nil {
		return "", err
	}
	got, err := bufio.NewReader(c).ReadString('\n')
	return strings.TrimSuffix(got, "\n"), err
}

func mustEcho(t *testing.T, c net.Conn, line string) {
	t.Helper()
	if got, err := roundTrip(c, line); err != nil || got != line {
		t.Fatalf("echo %q = %q, %v", line, got, err)
	}
}

// silent checks nothing comes back for a while after writing.
func silent(t *testing.T, c net.Conn) {
	t.Helper()
	if _, err := io.WriteString(c, "anyone?\n"); err != nil {
		t.Fatalf("write while hanging: %v", err)
	}
	c.SetReadDeadline(time.Now().Add(wait))
	var b [1]byte
	n, err := c.Read(b[:])
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read while hanging = %d bytes, %v; want nothing until the deadline", n, err)
	}
}

// closed checks the connection has been ended by the proxy.
func closed(t *testing.T, c net.Conn) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	var b [1]byte
	if n, err := c.Read(b[:]); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read on a cut connection = %d bytes, %v; want it closed", n, err)
	}
}

func TestPass(t *testing.T) {
	t.Parallel()
	p := New(t, echo(t))
	c := dial(t, p)
	mustEcho(t, c, "hello")
	mustEcho(t, c, strings.Repeat("x", 100<<10)) // more than one buffer
}

func TestRefuse(t *testing.T) {
	t.Parallel()
	p := New(t, echo(t))
	open := dial(t, p)
	mustEcho(t, open, "before")
	p.Set(Refuse)
	// The reset may come while dialing or at the first read.
	c, err := net.DialTimeout("tcp", p.Addr(), 5*time.Second)
	if err == nil {
		defer c.Close()
		_, err = roundTrip(c, "refused")
	}
	if err == nil {
		t.Fatal("a new connection passed while refusing")
	}
	mustEcho(t, open, "open connections keep passing")
	p.Set(Pass)
	mustEcho(t, dial(t, p), "after")
}

func TestHang(t *testing.T) {
	t.Parallel()
	p := New(t, echo(t))
	quiet, used := dial(t, p), dial(t, p)
	mustEcho(t, quiet, "a")
	mustEcho(t, used, "b")
	p.Set(Hang)
	fresh := dial(t, p) // accepted, never answered
	silent(t, fresh)
	silent(t, used)
	p.Set(Pass)
	// Connections that lost bytes cannot resume; the quiet one can.
	closed(t, fresh)
	closed(t, used)
	mustEcho(t, quiet, "still here")
	mustEcho(t, dial(t, p), "new")
}

func TestCut(t *testing.T) {
	t.Parallel()
	p := New(t, echo(t))
	a, b := dial(t, p), dial(t, p)
	mustEcho(t, a, "a")
	mustEcho(t, b, "b")
	if n := p.Cut(); n != 2 {
		t.Errorf("Cut = %d, want 2 connections", n)
	}
	closed(t, a)
	closed(t, b)
	mustEcho(t, dial(t, p), "a new one passes")
}

// A server that closes after answering is passed on in order: the client
// reads the whole answer, then the end.
func TestOrderlyClose(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	answer := strings.Repeat("y", 200<<10)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		io.WriteString(c, answer)
		c.Close()
	}()
	p := New(t, ln.Addr().String())
	c := dial(t, p)
	c.SetDeadline(time.Now().Add(5 * time.Second))
	got, err := io.ReadAll(c)
	if err != nil || string(got) != answer {
		t.Fatalf("read %d bytes, %v; want the whole %d-byte answer, then EOF", len(got), err, len(answer))
	}
}

func TestClose(t *testing.T) {
	t.Parallel()
	p, err := Listen(echo(t))
	if err != nil {
		t.Fatal(err)
	}
	c := dial(t, p)
	mustEcho(t, c, "x")
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	closed(t, c)
	if c, err := net.DialTimeout("tcp", p.Addr(), time.Second); err == nil {
		c.Close()
		t.Fatal("the proxy still accepts after Close")
	}
}
