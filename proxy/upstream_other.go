//go:build !unix

package proxy

// peekIdle cannot look at the socket here; a closed idle connection is
// found when the request sent on it gets no answer, and replayable
// requests are sent again (connPool.roundTrip).
func peekIdle(*upConn) bool { return true }

func (uc *upConn) peek(uintptr) bool { return true }
