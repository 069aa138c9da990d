package proxy

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/textproto"
	"strings"
)

// The direct path forwards a plain GET or HEAD (no body, no upgrade) to a
// plain-HTTP upstream without httputil.ReverseProxy: the request head is
// written from the incoming header straight onto a pooled upstream
// connection, and the answer is copied back. It makes the same decisions
// as ReverseProxy with the Forwarder's rewrite, header for header, and
// TestDirectMatchesReverseProxy holds it to that; what it saves is the
// per-request clone of the request and its header map, the context with
// the 1xx trace, the ProxyRequest and the header re-serialisation, about
// a third of the proxy's allocations.
//
// Everything else (bodies, upgrades, Expect, upstream paths or queries,
// queries ReverseProxy would re-encode, TLS upstreams) goes through
// ReverseProxy.

// hopHeaders are removed in both directions (RFC 9110 §7.6.1, and the
// older names ReverseProxy also removes).
var hopHeaders = []string{
	"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate",
	"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade",
}

// directOK reports whether r can take the direct path.
func (f *Forwarder) directOK(r *http.Request) bool {
	if f.direct == nil || f.noDirect {
		return false
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		return false
	}
	if (r.Body != nil && r.Body != http.NoBody) || r.ContentLength != 0 || len(r.TransferEncoding) > 0 {
		return false
	}
	if r.URL.Opaque != "" || !strings.HasPrefix(r.URL.Path, "/") || !queryClean(r.URL.RawQuery) {
		return false
	}
	// Request.Write strips an IPv6 zone from Host; such hosts are left to it.
	if strings.IndexByte(r.Host, '%') >= 0 {
		return false
	}
	_, up := r.Header["Upgrade"]
	_, expect := r.Header["Expect"]
	_, trailer := r.Header["Trailer"]
	return !up && !expect && !trailer
}

// queryClean reports whether ReverseProxy would forward the query as it
// is (its cleanQueryParams re-encodes a query with ";", a bad escape or
// more than 10,000 parameters).
func queryClean(s string) bool {
	if strings.Count(s, "&") >= 10000 {
		return false
	}
	for i := 0; i < len(s); {
		switch s[i] {
		case ';':
			return false
		case '%':
			if i+2 >= len(s) || !ishex(s[i+1]) || !ishex(s[i+2]) {
				return false
			}
			i += 3
		default:
			i++
		}
	}
	return true
}

func ishex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// forwardDirect sends r (already stripped and carrying usher's headers,
// see Forward) and copies the answer to w.
func (f *Forwarder) forwardDirect(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	p := f.direct
	for attempt := 0; ; attempt++ {
		uc, err := p.get(ctx, attempt > 0)
		if err != nil {
			f.fail(w, r, err)
			return
		}
		stop := context.AfterFunc(ctx, uc.abortFn)
		uc.rd.total, uc.rd.limit = 0, p.t.maxHeaderBytes
		err = f.writeHead(uc.bw, r)
		if err == nil {
			err = uc.bw.Flush()
		}
		var resp *http.Response
		if err == nil {
			resp, err = f.readAnswer(uc, r, w)
		}
		if err == nil {
			f.answer(w, r, resp, &upBody{uc: uc, rc: resp.Body, stop: stop, reuse: !resp.Close})
			return
		}
		stop()
		uc.close()
		// A kept-alive connection the upstream closed as we sent: GET and
		// HEAD are sent again, once, on a new connection, if nothing came
		// back (as http.Transport does).
		if attempt == 0 && uc.reused && uc.rd.total == 0 && ctx.Err() == nil {
			continue
		}
		if ctx.Err() != nil {
			err = fmt.Errorf("%w (%w)", ctx.Err(), err)
		}
		f.fail(w, r, err)
		return
	}
}

// writeHead writes the request line and header as ReverseProxy with
// rewrite would: hop-by-hop headers and those the client named in
// Connection removed (except usher's own), X-Forwarded-For, -Host and
// -Proto set, Te: trailers kept, no User-Agent added.
func (f *Forwarder) writeHead(bw *bufio.Writer, r *http.Request) error {
	bw.WriteString(r.Method)
	bw.WriteByte(' ')
	bw.WriteString(r.URL.EscapedPath())
	if r.URL.ForceQuery || r.URL.RawQuery != "" {
		bw.WriteByte('?')
		bw.WriteString(r.URL.RawQuery)
	}
	bw.WriteString(" HTTP/1.1\r\nHost: ")
	host := f.upstream.Host
	if f.PreserveHost && r.Host != "" {
		host = r.Host
	}
	bw.WriteString(host)
	bw.WriteString("\r\n")

	conn := r.Header["Connection"]
	for name, vals := range r.Header {
		if skipOutgoing(name) || (len(conn) > 0 && hasToken(conn, name) && !f.isOurs(name)) {
			continue
		}
		if name == "User-Agent" {
			// Request.Write sends the first only, and none when it is empty.
			if len(vals) == 0 || vals[0] == "" {
				continue
			}
			vals = vals[:1]
		}
		for _, v := range vals {
			writeField(bw, name, v)
		}
	}
	if hasToken(r.Header["Te"], "trailers") {
		bw.WriteString("Te: trailers\r\n")
	}
	if ip, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		writeField(bw, "X-Forwarded-For", ip)
	}
	writeField(bw, "X-Forwarded-Host", r.Host)
	proto := f.Proto
	if proto == "" {
		proto = "http"
		if r.TLS != nil {
			proto = "https"
		}
	}
	writeField(bw, "X-Forwarded-Proto", proto)
	_, err := bw.WriteString("\r\n")
	return err
}

// skipOutgoing names the headers writeHead never copies: hop-by-hop,
// framing, and those it writes itself.
func skipOutgoing(name string) bool {
	switch name {
	case "Host", "Content-Length", "Connection", "Proxy-Connection", "Keep-Alive",
		"Proxy-Authenticate", "Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding",
		"Upgrade", "Forwarded", "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto":
		return true
	}
	return false
}

// hasToken reports whether a header's comma-separated values hold token,
// read as ReverseProxy reads them (the Connection names it removes,
// httpguts.HeaderValuesContainsToken for Te): each value trimmed, nothing
// cut at ";", and only ASCII letters compared in any case, so that what
// the two paths send never differs.
func hasToken(vals []string, token string) bool {
	for _, v := range vals {
		for v != "" {
			tok := v
			if i := strings.IndexByte(v, ','); i >= 0 {
				tok, v = v[:i], v[i+1:]
			} else {
				v = ""
			}
			if asciiEqualFold(textproto.TrimString(tok), token) {
				return true
			}
		}
	}
	return false
}

// asciiEqualFold is strings.EqualFold for ASCII letters only: "\u212a"
// (Kelvin) is not "k" here, as it is not to httpguts.
func asciiEqualFold(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		x, y := a[i], b[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

func (f *Forwarder) isOurs(name string) bool {
	for _, n := range f.ours {
		if n == name {
			return true
		}
	}
	return false
}

// writeField writes one header line, with CR and LF in the value turned
// into spaces and the value trimmed, as Request.Write does. Go's server
// has refused such bytes in client headers already, and usher's own
// values are checked; this keeps a line break from ever being written.
func writeField(bw *bufio.Writer, name, v string) {
	if strings.ContainsAny(v, "\r\n") {
		v = strings.NewReplacer("\r", " ", "\n", " ").Replace(v)
	}
	bw.WriteString(name)
	bw.WriteString(": ")
	bw.WriteString(textproto.TrimString(v))
	bw.WriteString("\r\n")
}

// readAnswer reads the upstream's answer, passing 1xx informational
// answers (103 Early Hints) on to the client as ReverseProxy does.
func (f *Forwarder) readAnswer(uc *upConn, r *http.Request, w http.ResponseWriter) (*http.Response, error) {
	for {
		resp, err := http.ReadResponse(uc.br, r)
		if err != nil {
			return nil, err
		}
		switch c := resp.StatusCode; {
		case c == http.StatusSwitchingProtocols:
			return nil, fmt.Errorf("proxy: upstream switched protocols (%q) unasked", resp.Header.Get("Upgrade"))
		case c >= 100 && c <= 199:
			h := w.Header()
			copyHeader(h, resp.Header)
			w.WriteHeader(c)
			clear(h) // WriteHeader keeps a 1xx's header for the final answer
			uc.rd.limit = uc.pool.t.maxHeaderBytes
			continue
		}
		uc.rd.limit = -1
		return resp, nil
	}
}

// answer copies the upstream's answer to the client, as ReverseProxy
// does: hop-by-hop headers removed, trailers passed on, streaming answers
// flushed as they come, and a body that fails half-way aborts the
// client's connection (http.ErrAbortHandler) rather than ending cleanly.
func (f *Forwarder) answer(w http.ResponseWriter, r *http.Request, resp *http.Response, body *upBody) {
	removeHopByHop(resp.Header)
	f.Metrics.Request(f.App, resp.StatusCode)
	h := w.Header()
	copyHeader(h, resp.Header)
	announced := len(resp.Trailer)
	if announced > 0 {
		keys := make([]string, 0, announced)
		for k := range resp.Trailer {
			keys = append(keys, k)
		}
		h.Add("Trailer", strings.Join(keys, ", "))
	}
	w.WriteHeader(resp.StatusCode)
	flushEach := resp.ContentLength == -1 || isEventStream(resp.Header.Get("Content-Type"))
	rc := http.NewResponseController(w)
	if flushEach {
		rc.Flush() // headers now, even if the first bytes take a while
	}
	buf := copyBuffers.Get().(*[]byte)
	err := copyBody(w, body, *buf, flushEach, rc)
	copyBuffers.Put(buf)
	if err != nil {
		body.Close()
		if r.Context().Value(http.ServerContextKey) != nil {
			panic(http.ErrAbortHandler)
		}
		return
	}
	body.Close()
	if len(resp.Trailer) > 0 {
		rc.Flush() // chunked, so the trailers can follow
	}
	if len(resp.Trailer) == announced {
		copyHeader(h, resp.Trailer)
		return
	}
	for k, vv := range resp.Trailer {
		for _, v := range vv {
			h.Add(http.TrailerPrefix+k, v)
		}
	}
}

func copyBody(w io.Writer, body io.Reader, buf []byte, flushEach bool, rc *http.ResponseController) error {
	for {
		n, rerr := body.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return werr
			}
			if flushEach {
				rc.Flush() // as ReverseProxy, a writer that cannot flush still gets the bytes
			}
		}
		if rerr == io.EOF {
			return nil
		}
		if rerr != nil {
			return rerr
		}
	}
}

// isEventStream reports a text/event-stream Content-Type, parameters
// aside, without mime.ParseMediaType's allocations.
func isEventStream(ct string) bool {
	if i := strings.IndexByte(ct, ';'); i >= 0 {
		ct = ct[:i]
	}
	return strings.EqualFold(textproto.TrimString(ct), "text/event-stream")
}

func removeHopByHop(h http.Header) {
	for _, v := range h["Connection"] {
		for v != "" {
			tok := v
			if i := strings.IndexByte(v, ','); i >= 0 {
				tok, v = v[:i], v[i+1:]
			} else {
				v = ""
			}
			if tok = textproto.TrimString(tok); tok != "" {
				h.Del(tok)
			}
		}
	}
	for _, k := range hopHeaders {
		delete(h, k)
	}
}

func copyHeader(dst, src http.Header) {
	for k, vv := range src {
		for _, v := range vv {
			dst[k] = append(dst[k], v)
		}
	}
}
