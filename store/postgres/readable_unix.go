//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package postgres

import (
	"errors"
	"net"
	"syscall"
)

// readable reports whether c's socket has something to read, or was closed
// by the peer, without reading it or waiting: one non-blocking peek. An
// idle PostgreSQL connection has nothing to read unless the server closed
// it or is saying goodbye (57P01 on a restart).
//
// The peek runs under RawConn.Control, not Read: pgx may have a reader
// goroutine parked in Read on an idle connection, holding the read lock,
// and a peek must never wait for it.
func readable(c net.Conn) bool {
	if tc, ok := c.(interface{ NetConn() net.Conn }); ok { // TLS: peek at the socket under it
		c = tc.NetConn()
	}
	sc, ok := c.(syscall.Conn)
	if !ok {
		return false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	var yes bool
	err = rc.Control(func(fd uintptr) {
		var b [1]byte
		n, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		// n > 0: data; n == 0 without an error: end of stream; an error
		// other than "nothing yet": a reset connection.
		yes = n > 0 || (err == nil && n == 0) || (err != nil && !errors.Is(err, syscall.EAGAIN) && !errors.Is(err, syscall.EWOULDBLOCK))
	})
	return yes || err != nil
}
