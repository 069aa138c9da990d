package oidc

// The HTTP client towards the IdP: every response body bounded.

import (
	"fmt"
	"io"
	"net/http"
	"time"
)

// boundedClient is base (or, without one, a client with timeout) with
// every response body bounded: the discovery document at discovery to
// maxDiscoveryBytes, anything else to maxResponseBytes. go-oidc reads
// discovery, JWKS and userinfo bodies whole, so the bound must sit below it.
func boundedClient(base *http.Client, timeout time.Duration, discovery string) *http.Client {
	c := &http.Client{Timeout: timeout}
	if base != nil {
		cp := *base
		c = &cp
	}
	rt := c.Transport
	if rt == nil {
		rt = http.DefaultTransport
	}
	c.Transport = &boundedTransport{base: rt, discovery: discovery}
	return c
}

// boundedTransport fails a response whose body is longer than its limit,
// rather than handing on a truncated one.
type boundedTransport struct {
	base      http.RoundTripper
	discovery string
}

func (t *boundedTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := t.base.RoundTrip(r)
	if err != nil {
		return nil, err
	}
	limit := int64(maxResponseBytes)
	u := *r.URL
	u.RawQuery, u.Fragment = "", ""
	if u.String() == t.discovery {
		limit = maxDiscoveryBytes
	}
	if resp.ContentLength > limit {
		resp.Body.Close()
		return nil, fmt.Errorf("%s: response of %d bytes is larger than %d", u.Redacted(), resp.ContentLength, limit)
	}
	resp.Body = &boundedBody{rc: resp.Body, left: limit, limit: limit, url: u.Redacted()}
	return resp, nil
}

type boundedBody struct {
	rc    io.ReadCloser
	left  int64
	limit int64
	url   string
}

func (b *boundedBody) Read(p []byte) (int, error) {
	if b.left < 0 {
		return 0, b.tooLarge()
	}
	if int64(len(p)) > b.left+1 {
		p = p[:b.left+1]
	}
	n, err := b.rc.Read(p)
	b.left -= int64(n)
	if b.left < 0 {
		// One byte past the limit: the body is too large. Hand back
		// what fits, never the byte beyond it.
		return n + int(b.left), b.tooLarge()
	}
	return n, err
}

func (b *boundedBody) tooLarge() error {
	return fmt.Errorf("%s: response body larger than %d bytes", b.url, b.limit)
}

func (b *boundedBody) Close() error { return b.rc.Close() }
