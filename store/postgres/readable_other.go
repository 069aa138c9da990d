//go:build !(linux || darwin || freebsd || netbsd || openbsd || dragonfly)

package postgres

import "net"

// readable cannot peek at a socket here: connections are checked by the
// idle and fault rules only.
func readable(net.Conn) bool { return false }
