package session

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"time"
)

// Session payload, inside the sealed envelope: a hand-written binary
// encoding because Load runs on every proxied request (see BenchmarkLoad).
//
//	format (1) | ID | IdP | Subject | Username | Email | DisplayName | LogoutHint
//	| group count (uvarint) | groups... | app count (uvarint) | apps...
//	| attribute count×2 (uvarint) | name, value, name, value...
//	| Created (varint unix ns) | Seen (varint unix ns)
//
// Strings are uvarint length then bytes.
const payloadFormat = 1

func encodeSession(s *Session) ([]byte, error) {
	n := 1 + 2*binary.MaxVarintLen64 + binary.MaxVarintLen64
	strs := [...]string{s.ID, s.IdP, s.Subject, s.Username, s.Email, s.DisplayName, s.LogoutHint}
	for _, v := range strs {
		n += binary.MaxVarintLen64 + len(v)
	}
	attrs := attrList(s.Attributes)
	for _, l := range [...][]string{s.Groups, s.Apps, attrs} {
		for _, g := range l {
			n += binary.MaxVarintLen64 + len(g)
		}
	}
	if n > 2*maxCookieValue {
		return nil, fmt.Errorf("%w: %d bytes of session data, %d groups", ErrTooLarge, n, len(s.Groups))
	}
	b := make([]byte, 1, n)
	b[0] = payloadFormat
	for _, v := range strs {
		b = appendString(b, v)
	}
	for _, l := range [...][]string{s.Groups, s.Apps, attrs} {
		b = binary.AppendUvarint(b, uint64(len(l)))
		for _, g := range l {
			b = appendString(b, g)
		}
	}
	b = binary.AppendVarint(b, s.Created.UnixNano())
	b = binary.AppendVarint(b, s.Seen.UnixNano())
	return b, nil
}

// attrList flattens attributes to name, value pairs in name order, so
// equal sessions encode equally.
func attrList(m map[string]string) []string {
	if len(m) == 0 {
		return nil
	}
	names := make([]string, 0, len(m))
	for k := range m {
		names = append(names, k)
	}
	slices.Sort(names)
	l := make([]string, 0, 2*len(m))
	for _, k := range names {
		l = append(l, k, m[k])
	}
	return l
}

func appendString(b []byte, s string) []byte {
	return append(binary.AppendUvarint(b, uint64(len(s))), s...)
}

var errMalformed = errors.New("malformed payload")

// decodeSession copies p into one string and slices every field out of
// it: one allocation for all the text.
func decodeSession(p []byte) (*Session, error) {
	if len(p) == 0 || p[0] != payloadFormat {
		return nil, fmt.Errorf("%w: payload format", ErrInvalid)
	}
	d := decoder{buf: string(p), off: 1}
	s := &Session{}
	for _, f := range [...]*string{&s.ID, &s.IdP, &s.Subject, &s.Username, &s.Email, &s.DisplayName, &s.LogoutHint} {
		*f = d.string()
	}
	s.Groups = d.strings()
	s.Apps = d.strings()
	if kv := d.strings(); len(kv) > 0 {
		if len(kv)%2 != 0 {
			return nil, fmt.Errorf("%w: %w", ErrInvalid, errMalformed)
		}
		s.Attributes = make(map[string]string, len(kv)/2)
		for i := 0; i < len(kv); i += 2 {
			s.Attributes[kv[i]] = kv[i+1]
		}
	}
	created, seen := d.varint(), d.varint()
	if d.err != nil || d.off != len(d.buf) {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, errMalformed)
	}
	s.Created, s.Seen = time.Unix(0, created), time.Unix(0, seen)
	return s, nil
}

// strings reads a counted list. Each element takes at least one byte,
// which bounds the allocation by the input size.
func (d *decoder) strings() []string {
	n := d.uvarint()
	if n == 0 || d.err != nil {
		return nil
	}
	if n > uint64(len(d.buf)-d.off) {
		d.err = errMalformed
		return nil
	}
	l := make([]string, n)
	for i := range l {
		l[i] = d.string()
	}
	return l
}

type decoder struct {
	buf string
	off int
	err error
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	var x uint64
	var shift uint
	for i := 0; i < binary.MaxVarintLen64; i++ {
		if d.off >= len(d.buf) {
			break
		}
		c := d.buf[d.off]
		d.off++
		if c < 0x80 {
			if i == binary.MaxVarintLen64-1 && c > 1 {
				break
			}
			return x | uint64(c)<<shift
		}
		x |= uint64(c&0x7f) << shift
		shift += 7
	}
	d.err = errMalformed
	return 0
}

func (d *decoder) varint() int64 {
	ux := d.uvarint()
	x := int64(ux >> 1)
	if ux&1 != 0 {
		x = ^x
	}
	return x
}

func (d *decoder) string() string {
	n := d.uvarint()
	if d.err != nil {
		return ""
	}
	if n > uint64(len(d.buf)-d.off) {
		d.err = errMalformed
		return ""
	}
	s := d.buf[d.off : d.off+int(n)]
	d.off += int(n)
	return s
}
