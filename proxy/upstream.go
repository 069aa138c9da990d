package proxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"net/url"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Transport is the round tripper every Forwarder shares (SharedTransport).
//
// Requests without a body and without an Upgrade to a plain-HTTP upstream,
// which is most of what browsers ask of Jira, Confluence and Bitbucket
// (pages, assets, REST reads), are written and answered on the calling
// goroutine over Transport's own pool of upstream connections. Everything
// else (request bodies, Expect: 100-continue, WebSocket upgrades, TLS
// upstreams) goes through HTTP, a stock *http.Transport.
//
// Why two paths: http.Transport hands every request and response between
// the handler goroutine and two goroutines per connection, over channels.
// Under wrk on this project's 2-core machine that hand-off cost about 16 µs
// of CPU per request, a quarter of the proxy's whole cost (see
// cmd/usher/load_test.go). The direct path does the same protocol work with
// net/http's own code (Request.Write, ReadResponse); it only leaves out
// what a request without a body cannot need. Requests with bodies keep
// http.Transport, whose concurrent read and write lets an upstream answer
// (413, 401) before a large upload is sent, and which waits for
// 100 Continue.
//
// Safe for concurrent use.
type Transport struct {
	// HTTP carries every request the direct path does not take.
	HTTP *http.Transport

	dialer         *net.Dialer
	idleTimeout    time.Duration
	maxIdle        int   // idle connections kept per upstream
	maxHeaderBytes int64 // response header bytes, 1xx included

	mu    sync.Mutex
	pools map[string]*connPool
}

// SharedTransport returns a pooled transport for upstreams, meant to be
// shared by every Forwarder (and kept across config reloads, so a reload
// keeps the upstream connections). It ignores HTTP_PROXY (upstreams are
// internal), keeps many idle connections per upstream and speaks HTTP/1.1
// (WebSocket upgrades need it). There is no response header timeout: some
// app requests (reports, exports) legitimately take minutes, and a client
// that gives up cancels the upstream request.
func SharedTransport() *Transport {
	d := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
	t := &Transport{
		HTTP: &http.Transport{
			DialContext:           d.DialContext,
			MaxIdleConns:          1024,
			MaxIdleConnsPerHost:   256,
			IdleConnTimeout:       90 * time.Second,
			TLSHandshakeTimeout:   10 * time.Second,
			ExpectContinueTimeout: time.Second,
			ForceAttemptHTTP2:     false,
			WriteBufferSize:       16 << 10,
			ReadBufferSize:        16 << 10,
		},
		dialer:         d,
		idleTimeout:    90 * time.Second,
		maxIdle:        256,
		maxHeaderBytes: 10 << 20, // http.Transport's default
		pools:          map[string]*connPool{},
	}
	return t
}

// RoundTrip implements http.RoundTripper.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	if !direct(req) {
		return t.HTTP.RoundTrip(req)
	}
	return t.pool(req.URL).roundTrip(req)
}

// CloseIdleConnections closes every idle upstream connection of both paths.
func (t *Transport) CloseIdleConnections() {
	t.mu.Lock()
	pools := make([]*connPool, 0, len(t.pools))
	for _, p := range t.pools {
		pools = append(pools, p)
	}
	t.mu.Unlock()
	for _, p := range pools {
		p.closeIdle(time.Time{})
	}
	t.HTTP.CloseIdleConnections()
}

// bound returns a round tripper for one upstream, which skips the pool
// lookup on every request.
func (t *Transport) bound(upstream *url.URL) http.RoundTripper {
	return &boundTransport{t: t, host: upstream.Host, p: t.pool(upstream)}
}

type boundTransport struct {
	t    *Transport
	host string
	p    *connPool
}

func (b *boundTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if !direct(req) || req.URL.Host != b.host {
		return b.t.RoundTrip(req)
	}
	return b.p.roundTrip(req)
}

// direct reports whether req can take the direct path: plain HTTP, no
// body, no protocol upgrade, no expectation. Upgrade and Expect are
// looked up in the outgoing header, where ReverseProxy has already
// removed hop-by-hop headers and put back the Upgrade it forwards.
func direct(req *http.Request) bool {
	if req.URL.Scheme != "http" || (req.Body != nil && req.Body != http.NoBody) || req.ContentLength != 0 || req.Close {
		return false
	}
	if _, ok := req.Header["Upgrade"]; ok {
		return false
	}
	_, ok := req.Header["Expect"]
	return !ok
}

// replayable mirrors http.Transport: only these methods are sent again on
// a fresh connection when a kept-alive one turns out to be closed.
func replayable(method string) bool {
	switch method {
	case "", http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace:
		return true
	}
	return false
}

func (t *Transport) pool(u *url.URL) *connPool {
	port := u.Port()
	if port == "" {
		port = "80"
	}
	addr := net.JoinHostPort(u.Hostname(), port)
	t.mu.Lock()
	defer t.mu.Unlock()
	p := t.pools[addr]
	if p == nil {
		p = &connPool{t: t, addr: addr}
		t.pools[addr] = p
	}
	return p
}

// connPool holds the idle connections to one upstream address, most
// recently used last.
type connPool struct {
	t    *Transport
	addr string // host:port

	mu      sync.Mutex
	idle    []*upConn
	reaping bool

	dials atomic.Int64 // connections opened, for tests of reuse
}

var errRetryFresh = errors.New("retry on a fresh connection")

func (p *connPool) roundTrip(req *http.Request) (*http.Response, error) {
	ctx := req.Context()
	uc, err := p.get(ctx, false)
	if err != nil {
		return nil, err
	}
	resp, err := uc.roundTrip(req)
	if err == nil {
		return resp, nil
	}
	uc.close()
	// A kept-alive connection the upstream closed just as we sent: send
	// again once, on a connection of our own, if nothing came back and
	// the method allows it (as http.Transport does).
	if !uc.reused || uc.rd.total != 0 || !replayable(req.Method) || ctx.Err() != nil {
		return nil, err
	}
	if uc, err = p.get(ctx, true); err != nil {
		return nil, err
	}
	if resp, err = uc.roundTrip(req); err != nil {
		uc.close()
		return nil, err
	}
	return resp, nil
}

// get returns an idle connection that is still open, or a new one.
func (p *connPool) get(ctx context.Context, fresh bool) (*upConn, error) {
	if !fresh {
		now := time.Now()
		for {
			p.mu.Lock()
			n := len(p.idle)
			if n == 0 {
				p.mu.Unlock()
				break
			}
			uc := p.idle[n-1]
			p.idle[n-1] = nil
			p.idle = p.idle[:n-1]
			p.mu.Unlock()
			if now.Sub(uc.idleSince) < p.t.idleTimeout && uc.stillIdle() {
				uc.reused = true
				return uc, nil
			}
			uc.close()
		}
	}
	c, err := p.t.dialer.DialContext(ctx, "tcp", p.addr)
	if err != nil {
		return nil, err
	}
	p.dials.Add(1)
	uc := &upConn{pool: p, c: c}
	uc.rd = connReader{c: c, limit: -1}
	uc.br = bufio.NewReaderSize(&uc.rd, 16<<10)
	uc.bw = bufio.NewWriterSize(c, 4<<10)
	uc.abortFn = uc.abort
	if sc, ok := c.(syscall.Conn); ok {
		uc.raw, _ = sc.SyscallConn()
	}
	uc.peekFn = uc.peek
	return uc, nil
}

// put keeps uc for the next request, closing the oldest idle connection
// beyond the cap.
func (p *connPool) put(uc *upConn) {
	uc.idleSince = time.Now()
	var drop *upConn
	p.mu.Lock()
	if len(p.idle) >= p.t.maxIdle {
		drop = p.idle[0]
		copy(p.idle, p.idle[1:])
		p.idle[len(p.idle)-1] = uc
	} else {
		p.idle = append(p.idle, uc)
	}
	startReaper := !p.reaping
	p.reaping = true
	p.mu.Unlock()
	if drop != nil {
		drop.close()
	}
	if startReaper {
		time.AfterFunc(p.t.idleTimeout, p.reap)
	}
}

// reap closes connections idle longer than the idle timeout, and runs
// again while any are left, so an upstream that went quiet does not keep
// our sockets (in CLOSE_WAIT once it hangs up) for ever.
func (p *connPool) reap() {
	p.closeIdle(time.Now().Add(-p.t.idleTimeout))
	p.mu.Lock()
	again := len(p.idle) > 0
	p.reaping = again
	p.mu.Unlock()
	if again {
		time.AfterFunc(p.t.idleTimeout/2, p.reap)
	}
}

// closeIdle closes idle connections idle since before cutoff; a zero
// cutoff closes them all.
func (p *connPool) closeIdle(cutoff time.Time) {
	p.mu.Lock()
	var old []*upConn
	keep := p.idle[:0]
	for _, uc := range p.idle {
		if cutoff.IsZero() || uc.idleSince.Before(cutoff) {
			old = append(old, uc)
		} else {
			keep = append(keep, uc)
		}
	}
	clear(p.idle[len(keep):])
	p.idle = keep
	p.mu.Unlock()
	for _, uc := range old {
		uc.close()
	}
}

// upConn is one upstream connection of the direct path. It serves one
// request at a time; between requests it sits in its pool.
type upConn struct {
	pool   *connPool
	c      net.Conn
	rd     connReader
	br     *bufio.Reader
	bw     *bufio.Writer
	reused bool

	idleSince time.Time
	// Method values made once per connection rather than per request.
	abortFn func()
	raw     syscall.RawConn // nil when the platform has none
	peekFn  func(fd uintptr) bool
	peekBuf [1]byte
	peekN   int
	peekErr error
}

// connReader counts the bytes of one exchange and bounds the response
// header (limit < 0: no bound, while a body is read).
type connReader struct {
	c     net.Conn
	total int64
	limit int64
}

var errHeaderTooLarge = errors.New("proxy: upstream response header too large")

func (r *connReader) Read(p []byte) (int, error) {
	if r.limit == 0 {
		return 0, errHeaderTooLarge
	}
	if r.limit > 0 && int64(len(p)) > r.limit {
		p = p[:r.limit]
	}
	n, err := r.c.Read(p)
	r.total += int64(n)
	if r.limit > 0 {
		r.limit -= int64(n)
	}
	return n, err
}

// abort unblocks a read or write in progress when the client's request
// is cancelled; the connection is closed afterwards, never reused.
func (uc *upConn) abort() { uc.c.SetDeadline(time.Unix(1, 0)) }

func (uc *upConn) close() { uc.c.Close() }

// stillIdle reports whether an idle connection is still usable: nothing
// buffered or pending from the upstream (an unsolicited answer would be
// read as the next request's), and not closed by the upstream.
func (uc *upConn) stillIdle() bool {
	if uc.br.Buffered() > 0 {
		return false
	}
	return peekIdle(uc)
}

func (uc *upConn) roundTrip(req *http.Request) (*http.Response, error) {
	ctx := req.Context()
	stop := context.AfterFunc(ctx, uc.abortFn)
	fail := func(err error) (*http.Response, error) {
		stop()
		if ctx.Err() != nil {
			return nil, fmt.Errorf("%w (%w)", ctx.Err(), err)
		}
		return nil, err
	}
	uc.rd.total = 0
	uc.rd.limit = uc.pool.t.maxHeaderBytes
	if err := req.Write(uc.bw); err != nil {
		return fail(err)
	}
	if err := uc.bw.Flush(); err != nil {
		return fail(err)
	}
	trace := httptrace.ContextClientTrace(ctx)
	var resp *http.Response
	for {
		var err error
		if resp, err = http.ReadResponse(uc.br, req); err != nil {
			return fail(err)
		}
		if c := resp.StatusCode; c < 100 || c > 199 || c == http.StatusSwitchingProtocols {
			break
		}
		// 1xx informational (103 Early Hints): handed to ReverseProxy,
		// which forwards it to the client, as http.Transport does.
		if trace != nil && trace.Got1xxResponse != nil {
			if err := trace.Got1xxResponse(resp.StatusCode, textproto.MIMEHeader(resp.Header)); err != nil {
				return fail(err)
			}
			uc.rd.limit = uc.pool.t.maxHeaderBytes
		}
	}
	uc.rd.limit = -1
	if resp.StatusCode == http.StatusSwitchingProtocols {
		// Nothing asked to switch: ReverseProxy refuses the answer, and
		// the connection speaks who knows what now.
		stop()
		uc.close()
		resp.Body = http.NoBody
		return resp, nil
	}
	resp.Body = &upBody{uc: uc, rc: resp.Body, stop: stop, reuse: !resp.Close}
	return resp, nil
}

// upBody hands the connection back to its pool once the body has been
// read to its end, or closes it when the body is closed early or fails.
type upBody struct {
	uc    *upConn
	rc    io.ReadCloser
	stop  func() bool
	reuse bool
	done  atomic.Bool
}

func (b *upBody) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	if err != nil {
		b.finish(err == io.EOF)
	}
	return n, err
}

func (b *upBody) Close() error {
	b.finish(false)
	return nil
}

func (b *upBody) finish(eof bool) {
	if !b.done.CompareAndSwap(false, true) {
		return
	}
	// stop fails when the client's cancellation already set a deadline
	// in the past on the connection.
	if b.stop() && eof && b.reuse {
		b.uc.pool.put(b.uc)
		return
	}
	b.uc.close()
}
