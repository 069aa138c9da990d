package proxy

import (
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"testing"
)

// BenchmarkForward measures one proxied request over real loopback HTTP
// (client → front server → proxy → upstream): "bare" is a plain
// ReverseProxy with the same pooled transport, "usher" adds the header
// stripping, X-Forwarded-* and identity injection. The difference is
// usher's cost, including the upstream parsing the extra headers.
func BenchmarkForward(b *testing.B) {
	body := []byte("upstream ok")
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write(body)
	}))
	defer up.Close()
	u, _ := url.Parse(up.URL)
	transport := SharedTransport()
	defer transport.CloseIdleConnections()

	bare := &httputil.ReverseProxy{
		Rewrite:    func(pr *httputil.ProxyRequest) { pr.SetURL(u) },
		Transport:  transport,
		BufferPool: bufferPool{}, // as the Forwarder, so only header work differs
	}
	fwd := NewForwarder(u, testNames, transport, nil)
	s := testSession()
	s.Groups = []string{"jira-users", "jira-developers", "confluence-users", "team-platform"}

	for _, bc := range []struct {
		name string
		h    http.Handler
	}{
		{"bare", bare},
		{"usher", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fwd.Forward(w, r, s) })},
	} {
		b.Run(bc.name, func(b *testing.B) {
			front := httptest.NewServer(bc.h)
			defer front.Close()
			client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
			req, _ := http.NewRequest("GET", front.URL+"/browse/X-1", nil)
			// A browser-like request with a spoof attempt to strip.
			req.Header.Set("User-Agent", "Mozilla/5.0")
			req.Header.Set("Accept", "text/html,application/xhtml+xml")
			req.Header.Set("Accept-Language", "en-GB,en;q=0.9")
			req.Header.Set("Cookie", "__Host-usher_session=AAAA; JSESSIONID=1234")
			req.Header["x_remote_user"] = []string{"mallory"}
			b.ReportAllocs()
			for b.Loop() {
				resp, err := client.Do(req)
				if err != nil {
					b.Fatal(err)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					b.Fatal(resp.Status)
				}
			}
		})
	}
}
