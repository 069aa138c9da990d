package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// logLine returns the first JSON log line whose message starts with msg.
func logLine(t *testing.T, logs *syncBuffer, msg string) map[string]any {
	t.Helper()
	for line := range strings.Lines(logs.String()) {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) == nil && strings.HasPrefix(m["msg"].(string), msg) {
			return m
		}
	}
	t.Fatalf("no log line %q in:\n%s", msg, logs.String())
	return nil
}

// A stop by signal is logged with the signal and the grace period; a
// shutdown that has to cut requests off says how many and after how
// long, not a bare "context deadline exceeded", and names the
// background work it stopped.
func TestShutdownSaysWhatItCutShort(t *testing.T) {
	t.Parallel()
	logs := &syncBuffer{}
	e := startEnvWith(t, envOptions{Tune: func(m *Main) {
		m.Log = slog.New(slog.NewJSONHandler(logs, nil))
		m.ShutdownGrace = 200 * time.Millisecond
	}})

	// An upstream whose /status answers only when the test ends.
	started, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		once.Do(func() { close(started) })
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(slow.Close)
	t.Cleanup(func() { close(release) })
	text, err := os.ReadFile(e.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	text = bytes.Replace(text, []byte(e.upstream.srv.URL), []byte(slow.URL), 1)
	if err := os.WriteFile(e.cfgPath, text, 0o600); err != nil {
		t.Fatal(err)
	}
	e.enableReload()
	if err := e.m.Reload(t.Context()); err != nil {
		t.Fatal(err)
	}
	go func() {
		if resp, err := http.Get(e.url + "/status"); err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	}()
	<-started

	ctx, stop := context.WithCancelCause(t.Context())
	stop(stopSignal{syscall.SIGTERM})
	err = e.m.Wait(ctx)
	if err == nil || err.Error() != "shutdown: 1 request still running after 200ms was cut off" {
		t.Fatalf("Wait = %v, want the request it cut off", err)
	}
	if l := logLine(t, logs, "shutting down"); l["signal"] != "SIGTERM" || l["grace"] != "200ms" || l["level"] != "INFO" {
		t.Errorf("shutdown log line %v", l)
	}
	e.m.Close()
	l := logLine(t, logs, "shutdown: background work stopped")
	var stopped []string
	for _, s := range l["stopped"].([]any) {
		stopped = append(stopped, s.(string))
	}
	if got := strings.Join(stopped, ", "); !strings.Contains(got, "session revocation refresh") {
		t.Errorf("stopped %q", got)
	}
}

// usher reload against a file the running usher refuses says so once:
// not "reload refused (500): {"error":"reload failed: reload refused...".
func TestReloadCommandRefusedSaysItOnce(t *testing.T) {
	t.Parallel()
	e := startEnv(t)
	e.enableReload()
	text, err := os.ReadFile(e.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	text = bytes.Replace(text, []byte("  listen: 127.0.0.1:0\n"), []byte("  listen: "+e.m.AdminAddr()+"\n"), 1)
	text = bytes.Replace(text, []byte("client_id: usher-acme"), []byte("client_idd: usher-acme"), 1)
	if err := os.WriteFile(e.cfgPath, text, 0o600); err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr := runCLI(t, "reload", "--config", e.cfgPath)
	if code != 1 || !strings.HasPrefix(stderr, "usher reload: reload failed: running config kept: ") ||
		!strings.Contains(stderr, "idps[0].config.client_idd: unknown key") || !strings.HasSuffix(stderr, "(HTTP 500)\n") ||
		strings.Count(stderr, "reload") != 2 {
		t.Fatalf("exit %d\n%s%s", code, stdout, stderr)
	}
}
