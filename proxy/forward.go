package proxy

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httputil"
	"net/url"
	"sync"

	"github.com/usherhq/usher/metrics"
	"github.com/usherhq/usher/session"
)

// Forwarder sends requests to one upstream app with usher's identity
// headers. It is safe for concurrent use; set the exported fields before
// the first Forward.
type Forwarder struct {
	// PreserveHost sends the client's Host to the upstream (default true),
	// so the app sees its public host name (Jira's base URL check).
	PreserveHost bool
	// Proto, when set, is sent as X-Forwarded-Proto instead of the scheme
	// of the connection usher received ("https" behind a TLS terminator).
	Proto string
	// App and Metrics count responses by app and status class; a nil
	// Metrics counts nothing.
	App     string
	Metrics *metrics.Metrics

	upstream  *url.URL
	names     HeaderNames
	canon     HeaderNames // names in canonical form, computed once
	protected protectedSet
	rp        *httputil.ReverseProxy
	log       *slog.Logger
	ids       requestIDs
	ours      []string // canonical names of the headers usher sets
	attrs     []attrHeader
	// direct is the upstream's connection pool when plain GET and HEAD
	// requests can skip ReverseProxy (direct.go); noDirect turns that off
	// (tests compare both paths).
	direct   *connPool
	noDirect bool
}

type attrHeader struct{ attr, header string }

// NewForwarder returns a Forwarder to upstream. upstream's path is joined
// in front of the request path (httputil.ProxyRequest.SetURL). transport
// nil means a new SharedTransport; log nil discards.
func NewForwarder(upstream *url.URL, h HeaderNames, transport http.RoundTripper, log *slog.Logger) *Forwarder {
	if transport == nil {
		transport = SharedTransport()
	}
	var direct *connPool
	if t, ok := transport.(*Transport); ok {
		if upstream.Scheme == "http" && (upstream.Path == "" || upstream.Path == "/") && upstream.RawQuery == "" {
			direct = t.pool(upstream)
		}
		transport = t.bound(upstream)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	f := &Forwarder{
		PreserveHost: true,
		upstream:     upstream,
		names:        h,
		protected:    newProtectedSet(h),
		log:          log,
		ids:          newRequestIDs(),
		direct:       direct,
	}
	f.canon = HeaderNames{
		Username:     http.CanonicalHeaderKey(h.Username),
		Email:        http.CanonicalHeaderKey(h.Email),
		DisplayName:  http.CanonicalHeaderKey(h.DisplayName),
		Groups:       http.CanonicalHeaderKey(h.Groups),
		SecretHeader: http.CanonicalHeaderKey(h.SecretHeader),
		SecretValue:  h.SecretValue,
	}
	for _, n := range []string{f.canon.Username, f.canon.Email, f.canon.DisplayName, f.canon.Groups} {
		if n != "" {
			f.ours = append(f.ours, n)
		}
	}
	if f.canon.SecretHeader != "" && f.canon.SecretValue != "" {
		f.ours = append(f.ours, f.canon.SecretHeader)
	}
	for attr, name := range h.Attributes {
		f.attrs = append(f.attrs, attrHeader{attr, http.CanonicalHeaderKey(name)})
		f.ours = append(f.ours, http.CanonicalHeaderKey(name))
	}
	f.rp = &httputil.ReverseProxy{
		Rewrite:      f.rewrite,
		Transport:    transport,
		BufferPool:   bufferPool{},
		ErrorHandler: f.fail,
		ModifyResponse: func(resp *http.Response) error {
			f.Metrics.Request(f.App, resp.StatusCode)
			return nil
		},
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		// FlushInterval stays 0: ReverseProxy flushes every write of
		// text/event-stream and of responses without Content-Length.
	}
	return f
}

// Forward proxies r to the upstream. With s == nil (pass-through traffic)
// the client's identity headers are stripped and none are set.
//
// The identity is written into r's own header, after every client copy
// is removed, rather than carried to Rewrite in the request context: that
// would clone the request once more on the hot path.
func (f *Forwarder) Forward(w http.ResponseWriter, r *http.Request, s *session.Session) {
	closeAfterChunked(w, r)
	f.protected.strip(r.Header)
	if f.canon.SecretHeader != "" && f.canon.SecretValue != "" {
		// Pass-through requests came through usher too.
		r.Header[f.canon.SecretHeader] = []string{f.canon.SecretValue}
	}
	if s != nil {
		f.setIdentity(r.Header, s)
	}
	if f.directOK(r) {
		stripCookies(r.Header, f.names.CookiePrefixes)
		f.forwardDirect(w, r)
		return
	}
	f.rp.ServeHTTP(w, r)
}

// closeAfterChunked makes the server close the client connection after
// answering a request framed by Transfer-Encoding. Go's server reads such
// a request by Transfer-Encoding and drops any Content-Length beside it,
// as RFC 9112 §6.1 allows; the same section says the connection MUST be
// closed after the answer, because a proxy in front of usher that went
// by the Content-Length instead would take the rest of the body for the
// start of the next request on that connection, perhaps another user's.
// Legitimate chunked uploads (git push) only pay a reconnect.
func closeAfterChunked(w http.ResponseWriter, r *http.Request) {
	if len(r.TransferEncoding) > 0 {
		w.Header()["Connection"] = []string{"close"}
	}
}

// rewrite runs after ReverseProxy has cloned the request and removed
// hop-by-hop headers from the clone, including those the client named in
// Connection. It puts usher's own headers back from the incoming request,
// so a client cannot use Connection to remove them.
func (f *Forwarder) rewrite(pr *httputil.ProxyRequest) {
	out := pr.Out
	f.protected.strip(out.Trailer)
	stripCookies(out.Header, f.names.CookiePrefixes)
	pr.SetURL(f.upstream)
	pr.SetXForwarded()
	if f.Proto != "" {
		out.Header["X-Forwarded-Proto"] = []string{f.Proto}
	}
	if f.PreserveHost {
		out.Host = pr.In.Host
	}
	for _, name := range f.ours {
		if v, ok := pr.In.Header[name]; ok {
			out.Header[name] = v
		}
	}
}

// setIdentity writes the session's identity into h, which Forward has
// already cleared of every client copy.
func (f *Forwarder) setIdentity(h http.Header, s *session.Session) {
	// One backing array for all identity values instead of one each.
	vals := make([]string, 0, 4)
	set := func(name, v string) {
		vals = append(vals, v)
		h[name] = vals[len(vals)-1 : len(vals) : len(vals)]
	}
	enc := f.names.Encoding
	dropped := 0
	for _, hv := range [...]struct{ name, v string }{
		{f.canon.Username, s.Username}, {f.canon.Email, s.Email}, {f.canon.DisplayName, s.DisplayName},
	} {
		if hv.name == "" || hv.v == "" {
			continue
		}
		if !headerValueOK(hv.v) {
			dropped++
		} else if v, ok := enc.encode(hv.v); ok {
			set(hv.name, v)
		} else {
			dropped++
		}
	}
	if f.canon.Groups != "" {
		v, n := joinGroups(s.Groups, enc)
		if v != "" {
			set(f.canon.Groups, v)
		}
		dropped += n
	}
	for _, a := range f.attrs {
		v := s.Attributes[a.attr]
		if v == "" {
			continue
		}
		if !headerValueOK(v) {
			dropped++
		} else if ev, ok := enc.encode(v); ok {
			h[a.header] = []string{ev}
		} else {
			dropped++
		}
	}
	if dropped > 0 {
		// Debug, not warn: this repeats on every request of the session;
		// login reports it once through HeaderNames.Problems.
		f.log.Debug("proxy: identity values not sendable as headers left out",
			"idp", s.IdP, "session", s.ID, "dropped", dropped)
	}
}

// fail answers when the upstream could not be reached or did not answer.
// The client gets a short message; the cause goes to the log.
func (f *Forwarder) fail(w http.ResponseWriter, r *http.Request, err error) {
	if errors.Is(err, ErrBodyTooSlow) || BodyTooSlow(r) {
		f.Metrics.Request(f.App, http.StatusRequestTimeout)
		f.log.Info("proxy: request body too slow, cut off", "upstream", f.upstream.Redacted(),
			"method", r.Method, "path", r.URL.Path, "client", r.RemoteAddr, "err", err)
		w.Header().Set("Connection", "close")
		http.Error(w, "Request timeout: the request body arrived too slowly.", http.StatusRequestTimeout)
		return
	}
	if errors.Is(err, context.Canceled) && r.Context().Err() != nil {
		f.log.Debug("proxy: client went away", "upstream", f.upstream.Redacted(), "method", r.Method, "path", r.URL.Path)
		w.WriteHeader(http.StatusBadGateway)
		return
	}
	f.Metrics.Request(f.App, http.StatusBadGateway)
	id := f.ids.next()
	f.log.Error("proxy: upstream request failed", "upstream", f.upstream.Redacted(),
		"method", r.Method, "host", r.Host, "path", r.URL.Path, "request_id", id, "err", err)
	w.Header().Set("X-Request-Id", id)
	http.Error(w, "Bad gateway: the application did not answer. Request ID: "+id, http.StatusBadGateway)
}

// bufferPool recycles ReverseProxy's copy buffers (32 KiB each otherwise
// allocated per request).
type bufferPool struct{}

var copyBuffers = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

func (bufferPool) Get() []byte  { return *copyBuffers.Get().(*[]byte) }
func (bufferPool) Put(b []byte) { copyBuffers.Put(&b) }
