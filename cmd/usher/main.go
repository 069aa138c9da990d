// Command usher is the login-time sync proxy: it logs people in through
// their identity providers and forwards them to Jira, Confluence and
// Bitbucket with trusted identity headers.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, cancel := context.WithCancelCause(context.Background())
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() {
		// Further signals are ignored while usher shuts down.
		if sig, ok := <-sigs; ok {
			cancel(stopSignal{sig})
		}
	}()
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	signal.Stop(sigs)
	cancel(nil)
	os.Exit(code)
}

// stopSignal is why the command's context ended when a signal asked
// usher to stop, so that the shutdown can say which.
type stopSignal struct{ sig os.Signal }

func (s stopSignal) Error() string { return "received " + s.name() }

func (s stopSignal) name() string {
	switch s.sig {
	case syscall.SIGTERM:
		return "SIGTERM"
	case os.Interrupt:
		return "SIGINT"
	}
	return s.sig.String()
}
