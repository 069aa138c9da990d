package sweep

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"net/url"
	"slices"
	"strings"

	"github.com/usherhq/usher/directory"
	"github.com/usherhq/usher/store"
)

// dirIndex is what one complete directory pull says of each person it
// listed. The pull arrives page by page in the directory's order, and the
// bindings are read in theirs, so what the pages say is kept until the
// bindings are read: not the pages, only a 16-byte key per way a binding
// may name the person (subject, directory ID, lower-cased username),
// whatever the names' lengths, in one sorted slice. A key is a 120-bit
// hash under seeds drawn for each pull, so nobody outside the process can
// make two collide; its last byte holds what the pull says. By chance
// (odds below 2^-80 for a pull of a million people) a collision could only
// make someone the pull does not list seem listed: kept as present, or, in
// the one sweep after a scope change, taken for a listed leaver.
type dirIndex struct {
	err   error
	users int
	// seeds are per key space (exact, lower), two per key.
	seeds [2][2]maphash.Seed
	// keys hold, in their last byte, whether someone listed under the key
	// is still in (active, or only temporarily inactive: locked out, not
	// yet activated), and else the status that puts them out. The pull
	// appends; sort makes them one per key, in order.
	keys []dirKey
	// noMissing: the directory's scope changed since the last sweep, so
	// absence from this pull proves nothing; only explicit signals count.
	noMissing bool
}

type dirKey [2]uint64

// dirEntry is dirIn, or the directory.Status of a leaver plus one: it
// sorts after every leaver status.
type dirEntry uint8

const dirIn dirEntry = 0xff

// Key spaces: exact keys (subject, directory ID) and lower-cased
// usernames never meet.
const (
	exactKey = iota
	lowerKey
)

func newDirIndex() *dirIndex {
	x := &dirIndex{}
	for i := range x.seeds {
		for j := range x.seeds[i] {
			x.seeds[i][j] = maphash.MakeSeed()
		}
	}
	return x
}

// key is k's key in space, its last byte zero.
func (x *dirIndex) key(space int, k string) dirKey {
	return dirKey{maphash.String(x.seeds[space][0], k), maphash.String(x.seeds[space][1], k) &^ 0xff}
}

func (k dirKey) entry() dirEntry { return dirEntry(k[1] & 0xff) }

// compareKeys orders keys, their entries included.
func compareKeys(a, b dirKey) int {
	return cmp.Or(cmp.Compare(a[0], b[0]), cmp.Compare(a[1], b[1]))
}

// compareNames orders keys without their entries.
func compareNames(a, b dirKey) int {
	return cmp.Or(cmp.Compare(a[0], b[0]), cmp.Compare(a[1]&^0xff, b[1]&^0xff))
}

// add records that the pull listed someone under k with status st.
func (x *dirIndex) add(space int, k string, st directory.Status) {
	if k == "" {
		return
	}
	key := x.key(space, k)
	e := dirIn
	if st.Leaver() {
		e = dirEntry(st) + 1
	}
	key[1] |= uint64(e)
	x.keys = append(x.keys, key)
}

// sort readies the index for lookups: one key per name, in order; "in"
// when anyone listed under it is in, else the lowest leaver status.
func (x *dirIndex) sort() {
	slices.SortFunc(x.keys, compareKeys)
	out := x.keys[:0]
	for _, k := range x.keys {
		switch {
		case len(out) == 0 || compareNames(out[len(out)-1], k) != 0:
			out = append(out, k)
		case k.entry() == dirIn:
			out[len(out)-1] = k // the last of a name's keys is "in" when any is
		}
	}
	x.keys = out
}

// lookup returns what the pull says under key.
func (x *dirIndex) lookup(key dirKey) (dirEntry, bool) {
	i, ok := slices.BinarySearchFunc(x.keys, key, compareNames)
	if !ok {
		return 0, false
	}
	return x.keys[i].entry(), true
}

// gone reports why the pull says b is gone, or "" when it is present.
// A person matches by subject first, and, to be safe, also by the
// directory's ID or username: someone the pull lists in any of these
// ways is not "missing".
func (x *dirIndex) gone(b store.Binding) string {
	seen := false
	why := ""
	for _, k := range []dirKey{
		x.key(exactKey, b.Subject), x.key(lowerKey, strings.ToLower(b.Subject)), x.key(lowerKey, strings.ToLower(b.Username)),
	} {
		e, ok := x.lookup(k)
		switch {
		case !ok:
		case e == dirIn:
			return ""
		default:
			seen = true
			if why == "" {
				why = directory.Status(e-1).String() + " in the directory"
			}
		}
	}
	switch {
	case seen:
		return why
	case x.noMissing:
		return ""
	}
	return "missing from a complete pull of the directory"
}

// pull runs the directory source; a failure is kept in the index.
func (s *Sweeper) pull(ctx context.Context) *dirIndex {
	x := newDirIndex()
	if s.d.DirectoryScope != "" {
		last, _, err := s.d.Store.Blob(ctx, s.scopeKey())
		switch {
		case err == nil:
			x.noMissing = string(last) != s.d.DirectoryScope
		case !errors.Is(err, store.ErrNotFound):
			x.err = fmt.Errorf("read the scope of the last sweep: %w", err)
			return x
		}
	}
	x.err = s.d.Directory.Pull(ctx, func(page directory.Page) error {
		for _, p := range page.People {
			x.users++
			x.add(exactKey, p.Subject, p.Status)
			x.add(exactKey, p.ID, p.Status)
			x.add(lowerKey, strings.ToLower(p.Username), p.Status)
		}
		return nil
	})
	x.sort()
	if x.err == nil && x.users == 0 && ctx.Err() != nil {
		x.err = ctx.Err()
	}
	return x
}

// scopeKey is where the scope of the policy's last swept pull is kept.
func (s *Sweeper) scopeKey() string {
	// Policy names are free text: escaped, one never reads as a path.
	return "sweep/" + url.PathEscape(s.p.Name) + "/directory-scope"
}
