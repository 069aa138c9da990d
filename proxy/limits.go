package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Limits on what one client can hold of usher (server.body_read_timeout,
// server.body_min_rate, server.max_conns_per_client). Without them, 19,000
// connections trickling request bodies held 405 MB and nearly every file
// descriptor for as long as they liked, and each one also held an
// upstream connection and an app thread.

// BodyLimits bound how slowly a request body may arrive.
type BodyLimits struct {
	// ReadTimeout is the longest wait for the next bytes of a body; it is
	// also the grace period before MinRate starts to count.
	ReadTimeout time.Duration
	// MinRate, in bytes per second, is the slowest average a body may
	// arrive at: a body that has delivered n bytes must have done so
	// within ReadTimeout + n/MinRate of its start. An upload of any size
	// is allowed as long as it keeps this pace, so a 2 GB upload over a
	// slow link is fine while a body that trickles a byte now and then is
	// cut off. 0 means no rate, only ReadTimeout.
	MinRate int64
}

// ErrBodyTooSlow is the error a request body's Read returns once the body
// misses its BodyLimits; the Forwarder answers 408 for it.
var ErrBodyTooSlow = errors.New("request body too slow")

// LimitBodies bounds the arrival of every request body served by next,
// through read deadlines on the client connection
// (http.ResponseController), so a slow body ends in a timed-out read
// rather than a goroutine, a connection and an upstream request held for
// ever. Requests without a body pass untouched.
func LimitBodies(next http.Handler, l BodyLimits) http.Handler {
	if l.ReadTimeout <= 0 {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Body != nil && r.Body != http.NoBody {
			b := &slowBody{rc: http.NewResponseController(w), body: r.Body, limits: l}
			// Also bounds a body nobody reads, which the server discards
			// after the handler returns.
			if err := b.rc.SetReadDeadline(time.Now().Add(l.ReadTimeout)); err == nil {
				// The server cancels the request's context on any read
				// error, so the error a handler sees may be only "context
				// canceled"; BodyTooSlow finds the cause through the
				// context. One context per request with a body, never on
				// the bodiless hot path.
				r = r.WithContext(context.WithValue(r.Context(), slowBodyKey{}, b))
				r.Body = b
			}
		}
		next.ServeHTTP(w, r)
	})
}

type slowBody struct {
	rc      *http.ResponseController
	body    io.ReadCloser
	limits  BodyLimits
	n       int64         // bytes read so far
	waited  time.Duration // time spent waiting for them
	done    bool
	tooSlow atomic.Bool
}

type slowBodyKey struct{}

// BodyTooSlow reports whether r's body was cut off by LimitBodies.
func BodyTooSlow(r *http.Request) bool {
	b, ok := r.Context().Value(slowBodyKey{}).(*slowBody)
	return ok && b.tooSlow.Load()
}

// deadline is when a read that starts now must have returned: after
// ReadTimeout, or sooner if the body is behind MinRate. The pace counts
// only time spent waiting for the client, not time usher spent writing
// to a slow upstream between reads.
func (b *slowBody) deadline(now time.Time) time.Time {
	d := b.limits.ReadTimeout
	if b.limits.MinRate > 0 {
		allowed := b.limits.ReadTimeout + time.Duration(float64(b.n)/float64(b.limits.MinRate)*float64(time.Second))
		if left := allowed - b.waited; left < d {
			d = left
		}
	}
	return now.Add(d)
}

func (b *slowBody) Read(p []byte) (int, error) {
	if b.done {
		return b.body.Read(p)
	}
	start := time.Now()
	b.rc.SetReadDeadline(b.deadline(start))
	n, err := b.body.Read(p)
	b.n += int64(n)
	b.waited += time.Since(start)
	switch {
	case err == io.EOF:
		// The whole body is in: the server now watches the connection for
		// the client going away, and a deadline left behind would read as
		// exactly that in the middle of a long answer.
		b.done = true
		b.rc.SetReadDeadline(time.Time{})
	case errors.Is(err, os.ErrDeadlineExceeded):
		b.tooSlow.Store(true)
		err = fmt.Errorf("%w: %d bytes in %s (%w)", ErrBodyTooSlow, b.n, b.waited.Round(time.Millisecond), err)
	}
	return n, err
}

func (b *slowBody) Close() error { return b.body.Close() }

// clientKey is what a client is counted by: its address, and for IPv6
// its /64, which one subscriber usually holds whole.
func clientKey(a netip.Addr) netip.Addr {
	a = a.Unmap()
	if a.Is6() {
		p, _ := a.Prefix(64)
		return p.Addr()
	}
	return a
}

// clientCounts counts open connections or requests per client.
type clientCounts struct {
	max int32
	mu  sync.Mutex
	n   map[netip.Addr]int32
}

func (c *clientCounts) acquire(k netip.Addr) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n[k] >= c.max {
		return false
	}
	c.n[k]++
	return true
}

func (c *clientCounts) release(k netip.Addr) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n[k] <= 1 {
		delete(c.n, k) // the map holds only clients with something open
		return
	}
	c.n[k]--
}

// LimitConnsPerClient wraps ln so that no client address holds more than
// max open connections; a connection over the limit is closed as soon as
// it is accepted, before any byte is read. Connections from exempt
// prefixes (the trusted proxies: every client behind them arrives through
// their addresses) are not counted; LimitRequestsPerClient counts the
// clients behind them instead. max <= 0 returns ln unchanged.
func LimitConnsPerClient(ln net.Listener, max int, exempt []netip.Prefix, log *slog.Logger) net.Listener {
	if max <= 0 {
		return ln
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &limitListener{Listener: ln, counts: clientCounts{max: int32(max), n: map[netip.Addr]int32{}}, exempt: exempt, log: log}
}

type limitListener struct {
	net.Listener
	counts  clientCounts
	exempt  []netip.Prefix
	log     *slog.Logger
	refused atomic.Int64
	lastLog atomic.Int64 // unix seconds
}

func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		ap, err := netip.ParseAddrPort(c.RemoteAddr().String())
		if err != nil || l.isExempt(ap.Addr()) {
			return c, nil
		}
		k := clientKey(ap.Addr())
		if l.counts.acquire(k) {
			return &countedConn{Conn: c, l: l, key: k}, nil
		}
		c.Close()
		n := l.refused.Add(1)
		// One line per second at most: a flood must not become a log flood.
		if now := time.Now().Unix(); l.lastLog.Swap(now) != now {
			l.log.Warn("connection refused: client holds too many connections (if this address is a proxy or load balancer, list it in server.tls.trusted_proxies)",
				"client", k, "max", l.counts.max, "refused_total", n)
		}
	}
}

func (l *limitListener) isExempt(a netip.Addr) bool {
	a = a.Unmap()
	for _, p := range l.exempt {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

type countedConn struct {
	net.Conn
	l    *limitListener
	key  netip.Addr
	once sync.Once
}

func (c *countedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.l.counts.release(c.key) })
	return err
}

// LimitRequestsPerClient answers 429 to a client that already has max
// requests in progress. It runs after the trusted-proxy handling, so a
// client behind a trusted proxy is counted by the address the proxy
// reported (see docs/config.md, server.max_conns_per_client, for why
// that is safe only with trusted_proxies naming the proxies alone).
// max <= 0 returns next unchanged.
func LimitRequestsPerClient(next http.Handler, max int) http.Handler {
	if max <= 0 {
		return next
	}
	counts := &clientCounts{max: int32(max), n: map[netip.Addr]int32{}}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ap, err := netip.ParseAddrPort(r.RemoteAddr)
		if err != nil {
			next.ServeHTTP(w, r)
			return
		}
		k := clientKey(ap.Addr())
		if !counts.acquire(k) {
			w.Header().Set("Retry-After", strconv.Itoa(1))
			w.Header().Set("Connection", "close")
			http.Error(w, "Too many requests from your address at once; try again shortly.", http.StatusTooManyRequests)
			return
		}
		defer counts.release(k)
		next.ServeHTTP(w, r)
	})
}

// ParsePrefixes reads trusted proxy entries (CIDRs or single addresses)
// as prefixes.
func ParsePrefixes(entries []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, e := range entries {
		if p, err := netip.ParsePrefix(e); err == nil {
			out = append(out, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(e)
		if err != nil {
			return nil, fmt.Errorf("trusted proxy %q: neither an address nor a CIDR", e)
		}
		out = append(out, netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()))
	}
	return out, nil
}
