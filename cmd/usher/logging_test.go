package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/usherhq/usher/config"
)

func TestLoggerDropsPersonalFields(t *testing.T) {
	for _, format := range []string{"json", "text"} {
		var buf bytes.Buffer
		log := newLogger(&buf, config.Log{Format: format, Level: "info", Drop: []string{"email", "Username"}})
		log.Info("login", "idp", "okta", "username", "alice", "email", "alice@example.com")
		log.Debug("hidden at info level")
		out := buf.String()
		if strings.Contains(out, "alice") || !strings.Contains(out, "okta") || strings.Contains(out, "hidden") {
			t.Errorf("%s log: %q", format, out)
		}
		if format == "json" && !strings.HasPrefix(out, "{") {
			t.Errorf("json log is not JSON: %q", out)
		}
	}
}
