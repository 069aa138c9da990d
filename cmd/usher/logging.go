package main

import (
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/usherhq/usher/config"
)

// newLogger builds usher's logger: JSON by default, text on a terminal
// (or as configured), at the configured level, without the personal
// fields the admin chose to drop.
func newLogger(w io.Writer, c config.Log) *slog.Logger {
	level := slog.LevelInfo
	switch c.Level {
	case "debug":
		level = slog.LevelDebug
	case "warn":
		level = slog.LevelWarn
	case "error":
		level = slog.LevelError
	}
	drop := map[string]bool{}
	for _, k := range c.Drop {
		drop[strings.ToLower(k)] = true
	}
	opts := &slog.HandlerOptions{Level: level}
	if len(drop) > 0 {
		opts.ReplaceAttr = func(_ []string, a slog.Attr) slog.Attr {
			if drop[strings.ToLower(a.Key)] {
				return slog.Attr{}
			}
			return a
		}
	}
	text := c.Format == "text"
	if c.Format == "" || c.Format == "auto" {
		f, ok := w.(*os.File)
		text = ok && isTerminal(f)
	}
	if text {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}

func isTerminal(f *os.File) bool {
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}
