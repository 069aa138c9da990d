// Package netfault is a TCP proxy for tests that puts network faults
// between a client and the server it talks to, on command. A test points
// the client at Proxy.Addr instead of the server, then switches the proxy
// at run time: refuse new connections, hang (accept, swallow every byte,
// answer nothing: a server that is up but stuck), cut the open
// connections, and pass again. That is how a test shows that every call
// fails within its deadline with a typed error while a database, an app
// or an IdP is out, and that the client recovers once it is back.
//
// The proxy forwards bytes and knows no protocol, so it serves PostgreSQL,
// HTTP and LDAP alike (not TLS termination: a TLS client simply talks
// through it to the server). A Proxy is safe for concurrent use; Set and
// Cut may be called while connections run.
package netfault

import (
	"errors"
	"io"
	"net"
	"sync"
	"testing"
)

// Mode is what the proxy does with traffic.
type Mode int

const (
	// Pass forwards bytes both ways: no fault.
	Pass Mode = iota
	// Refuse resets every new connection as soon as it is accepted, the
	// way a server that is down behind a load balancer looks (not
	// ECONNREFUSED: the port stays the proxy's). Open connections keep
	// passing.
	Refuse
	// Hang accepts new connections without connecting them to the server,
	// and reads and drops every byte either side sends on any connection:
	// nothing is ever answered. A connection that lost bytes this way is
	// cut when the proxy leaves Hang, since its stream has a gap; one that
	// stayed quiet passes again.
	Hang
)

func (m Mode) String() string {
	switch m {
	case Pass:
		return "pass"
	case Refuse:
		return "refuse"
	case Hang:
		return "hang"
	}
	return "mode(?)"
}

// Proxy is a TCP proxy to one server.
type Proxy struct {
	target string
	ln     net.Listener

	mu     sync.Mutex
	mode   Mode
	links  map[*link]struct{}
	closed bool
	wg     sync.WaitGroup
}

// link is one client connection and, unless it was accepted while
// hanging, its connection to the server.
type link struct {
	client, server net.Conn // server is nil when accepted in Hang
	gap            bool     // bytes were dropped: the stream cannot resume
	ended          int      // directions that ended in order
}

// New starts a proxy to target (host:port) on a free loopback port, and
// closes it when the test ends.
func New(tb testing.TB, target string) *Proxy {
	tb.Helper()
	p, err := Listen(target)
	if err != nil {
		tb.Fatalf("netfault: %v", err)
	}
	tb.Cleanup(func() { p.Close() })
	return p
}

// Listen starts a proxy to target (host:port) on a free loopback port, in
// mode Pass. The caller closes it.
func Listen(target string) (*Proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &Proxy{target: target, ln: ln, links: map[*link]struct{}{}}
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

// Addr is the host:port clients dial instead of the server.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Mode reports the current mode.
func (p *Proxy) Mode() Mode {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.mode
}

// Set switches the mode; it applies at once, to new connections and to
// bytes still in flight on open ones.
func (p *Proxy) Set(m Mode) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.mode == Hang && m != Hang {
		for l := range p.links {
			if l.gap || l.server == nil {
				p.drop(l, true)
			}
		}
	}
	p.mode = m
}

// Cut closes every open connection, resetting the client's side, the way
// a server restart or a failover drops them. It reports how many there
// were. New connections are handled by the mode as usual.
func (p *Proxy) Cut() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := len(p.links)
	for l := range p.links {
		p.drop(l, true)
	}
	return n
}

// Close stops accepting, cuts every connection and waits for the proxy's
// goroutines to end.
func (p *Proxy) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	err := p.ln.Close()
	for l := range p.links {
		p.drop(l, true)
	}
	p.mu.Unlock()
	p.wg.Wait()
	return err
}

// drop closes a link, resetting the client's side when hard; p.mu is
// held.
func (p *Proxy) drop(l *link, hard bool) {
	if hard {
		reset(l.client)
	} else {
		l.client.Close()
	}
	if l.server != nil {
		l.server.Close()
	}
	delete(p.links, l)
}

// reset closes c so that the peer sees a reset rather than an orderly end.
func reset(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
	c.Close()
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return // closed
		}
		switch p.Mode() {
		case Refuse:
			reset(c)
			continue
		case Hang:
			p.start(&link{client: c})
			continue
		}
		s, err := net.Dial("tcp", p.target)
		if err != nil {
			reset(c) // the server is really down: the client sees that
			continue
		}
		p.start(&link{client: c, server: s})
	}
}

// start registers l and runs its pipes.
func (p *Proxy) start(l *link) {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		reset(l.client)
		if l.server != nil {
			l.server.Close()
		}
		return
	}
	p.links[l] = struct{}{}
	p.wg.Add(1)
	if l.server != nil {
		p.wg.Add(1)
		go p.pipe(l, l.server, l.client)
	}
	p.mu.Unlock()
	go p.pipe(l, l.client, l.server)
}

// pipe copies from src to dst (nil: nowhere) until src ends, dropping
// what arrives while the proxy hangs.
func (p *Proxy) pipe(l *link, src, dst net.Conn) {
	defer p.wg.Done()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			p.mu.Lock()
			hang := p.mode == Hang || dst == nil
			l.gap = l.gap || hang
			p.mu.Unlock()
			if !hang {
				if _, werr := dst.Write(buf[:n]); werr != nil {
					p.end(l, true)
					return
				}
			}
		}
		switch {
		case err == nil:
		case errors.Is(err, io.EOF) && dst != nil:
			// An orderly end one way: pass it on, so that what was
			// written arrives whole; the link ends when both ways have.
			if tc, ok := dst.(*net.TCPConn); ok {
				tc.CloseWrite()
			}
			p.mu.Lock()
			if l.ended++; l.ended == 2 {
				if _, ok := p.links[l]; ok {
					p.drop(l, false)
				}
			}
			p.mu.Unlock()
			return
		default:
			p.end(l, !errors.Is(err, io.EOF))
			return
		}
	}
}

// end drops l if it is still open.
func (p *Proxy) end(l *link, hard bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, ok := p.links[l]; ok {
		p.drop(l, hard)
	}
}
