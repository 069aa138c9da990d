package ldaptest

import (
	"bytes"
	"errors"
	"fmt"
	"os/exec"
	"runtime"
	"sync"
	"syscall"
	"time"
)

// Process is a server a harness started: its output, kept for error
// messages, and its end, watched.
type Process struct {
	cmd    *exec.Cmd
	exited chan struct{}
	out    lockedBuffer
}

// ErrExited means the server ended while it was awaited.
var ErrExited = errors.New("the server exited")

// Start starts cmd with its standard output and error collected and
// Pdeathsig set, so that the server ends with the test binary even when
// the binary dies without cleanup. Set anything else (arguments, a stdin
// pipe) on cmd before.
func Start(cmd *exec.Cmd) (*Process, error) {
	p := &Process{cmd: cmd, exited: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = &p.out, &p.out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	// A child the server forked can outlive it with the output pipe
	// open: the process counts as ended a second after the server did.
	cmd.WaitDelay = time.Second
	if err := startFromLivingThread(cmd); err != nil {
		return nil, err
	}
	go func() { cmd.Wait(); close(p.exited) }()
	return p, nil
}

// Pid is the server's process ID.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Output is the end of what the server wrote.
func (p *Process) Output() string { return LastLines(p.out.String(), 20) }

// Await calls ready every 10ms until it reports true. It fails, naming
// what it waited for and with the server's output, when the server ends
// first (ErrExited) or deadline passes.
func (p *Process) Await(deadline time.Time, what string, ready func() bool) error {
	for !ready() {
		select {
		case <-p.exited:
			return fmt.Errorf("%w while %s: %s", ErrExited, what, p.Output())
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not ready in time (%s): %s", what, p.Output())
		}
	}
	return nil
}

// Stop sends SIGTERM, waits up to grace for the server to end, then kills
// it.
func (p *Process) Stop(grace time.Duration) {
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(grace):
		p.cmd.Process.Kill()
		<-p.exited
	}
}

// startFromLivingThread starts cmd from an OS thread that lives as long
// as the test binary. Pdeathsig fires when the *thread* that started the
// child ends, and Go ends threads (those of goroutines that exit while
// locked to their thread): a child started from an ordinary goroutine can
// be killed at any moment.
func startFromLivingThread(cmd *exec.Cmd) error {
	spawnOnce.Do(func() {
		spawn = make(chan spawnReq)
		go func() {
			runtime.LockOSThread() // never unlocked: this thread stays
			for r := range spawn {
				r.done <- r.cmd.Start()
			}
		}()
	})
	done := make(chan error, 1)
	spawn <- spawnReq{cmd, done}
	return <-done
}

type spawnReq struct {
	cmd  *exec.Cmd
	done chan error
}

var (
	spawnOnce sync.Once
	spawn     chan spawnReq
)

// lockedBuffer collects a server's output; past 64 KiB it keeps the
// start, where a failed start says why.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.b.Len() > 1<<16 {
		return len(p), nil
	}
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
