//go:build unix

package proxy

import "syscall"

// peekIdle asks the kernel, without blocking and without consuming
// anything, whether the upstream closed an idle connection or sent bytes
// nobody asked for. http.Transport learns both from a goroutine parked on
// every idle connection; one non-blocking recv at reuse is far cheaper.
func peekIdle(uc *upConn) bool {
	if uc.raw == nil {
		return true
	}
	uc.peekN, uc.peekErr = 0, nil
	if err := uc.raw.Read(uc.peekFn); err != nil {
		return false
	}
	// EAGAIN: open and quiet. n == 0 without error: closed. n > 0:
	// unsolicited bytes.
	return uc.peekErr == syscall.EAGAIN
}

func (uc *upConn) peek(fd uintptr) bool {
	uc.peekN, _, uc.peekErr = syscall.Recvfrom(int(fd), uc.peekBuf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
	return true // never wait for readiness: the answer is wanted now
}
