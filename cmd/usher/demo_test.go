package main

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestDemoJiraSignsInThroughProvider runs `usher demo` and signs alice in
// to the emulated Jira that uses its built-in OIDC client against usher's
// OpenID Provider, as a browser would.
func TestDemoJiraSignsInThroughProvider(t *testing.T) {
	port := freePortPair(t)
	ctx, cancel := context.WithCancel(context.Background())
	var out syncBuffer
	done := make(chan error, 1)
	go func() { done <- cmdDemo(ctx, []string{"--port", strconv.Itoa(port)}, &out, io.Discard) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("demo: %v", err)
		}
	}()
	re := regexp.MustCompile(`Emulated Jira with its own SSO, reached directly \(not through usher\): (http://\S+)`)
	var jiraURL string
	for deadline := time.Now().Add(30 * time.Second); jiraURL == ""; {
		if m := re.FindStringSubmatch(out.String()); m != nil {
			jiraURL = m[1]
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the demo printed no line for the SSO Jira:\n%s", out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	public := "http://127.0.0.1:" + strconv.Itoa(port)
	if !strings.Contains(out.String(), "issuer "+public+"/usher/op") {
		t.Errorf("demo output lacks the issuer:\n%s", out.String())
	}

	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar, Timeout: 10 * time.Second}
	page := func(method, u string, form url.Values) (*http.Response, string) {
		var body io.Reader
		if form != nil {
			body = strings.NewReader(form.Encode())
		}
		req, _ := http.NewRequest(method, u, body)
		req.Header.Set("Accept", "text/html")
		if form != nil {
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}
	// The app sends the browser to usher, which shows its IdP chooser.
	resp, body := page("GET", jiraURL, nil)
	if !strings.HasPrefix(resp.Request.URL.String(), public+"/usher/login?") || !strings.Contains(body, "Acme Okta (demo)") {
		t.Fatalf("landed on %s (%d), want usher's chooser", resp.Request.URL, resp.StatusCode)
	}
	rd := resp.Request.URL.Query().Get("rd")
	// Choose acme; its login form.
	resp, _ = page("GET", public+"/usher/login?"+url.Values{"idp": {"acme"}, "rd": {rd}}.Encode(), nil)
	id := resp.Request.URL.Query().Get("authRequestID")
	if id == "" {
		t.Fatalf("landed on %s, want the demo IdP's login form", resp.Request.URL)
	}
	issuer := resp.Request.URL.Scheme + "://" + resp.Request.URL.Host
	resp, body = page("POST", issuer+"/login", url.Values{"authRequestID": {id}, "username": {"alice"}, "password": {"alice"}})
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Request.URL.String(), jiraURL) || !strings.Contains(body, "you are alice") ||
		!strings.Contains(body, "built-in SSO") {
		t.Fatalf("after the IdP: %d at %s\n%s", resp.StatusCode, resp.Request.URL, body)
	}
}

// freePortPair finds a port p with p+1 free too (the demo's admin port).
func freePortPair(t *testing.T) int {
	t.Helper()
	for range 20 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		p := ln.Addr().(*net.TCPAddr).Port
		ln2, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p+1))
		ln.Close()
		if err == nil {
			ln2.Close()
			return p
		}
	}
	t.Fatal("no free port pair")
	return 0
}
