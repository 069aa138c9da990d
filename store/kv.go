package store

import (
	"context"
	"errors"
	"slices"
	"strings"
	"time"
)

// Blobs is a small key-value store for files other components keep (ACME
// certificates and keys), shared by every replica on the same database.
// Keys are slash-separated paths with no leading, trailing or doubled
// slash; "a" is a prefix of "a/b" but not of "ab/c". Values are small
// (kilobytes) and read and written whole. Methods are safe for concurrent
// use and honour context cancellation.
type Blobs interface {
	// PutBlob creates or replaces key. The modified time is the store's
	// clock, at millisecond precision.
	PutBlob(ctx context.Context, key string, value []byte) error
	// Blob returns the value of key and when it was last put, in UTC, or
	// ErrNotFound.
	Blob(ctx context.Context, key string) ([]byte, time.Time, error)
	// DeleteBlob deletes key and every key under key+"/". ErrNotFound
	// when nothing matched.
	DeleteBlob(ctx context.Context, key string) error
	// BlobKeys lists the keys under prefix+"/" in byte order ("" lists
	// everything). Unless recursive, only direct children: a key deeper
	// down is shortened to the child "directory" leading to it, listed
	// once. Recursive lists every stored key under prefix, and no
	// directories. Nothing under prefix is an empty list, not an error.
	BlobKeys(ctx context.Context, prefix string, recursive bool) ([]string, error)
}

// CheckBlobKey refuses a key Blobs does not accept. Backends call it so
// that they agree on what a key is.
func CheckBlobKey(key string) error {
	switch {
	case key == "":
		return errors.New("empty key")
	case strings.HasPrefix(key, "/") || strings.HasSuffix(key, "/") || strings.Contains(key, "//"):
		return errors.New("key has an empty path component")
	}
	return nil
}

// BlobPrefixRange returns the bounds lo <= key < hi of the keys under
// prefix+"/" in byte order ('0' follows '/'), so backends can answer with
// an index range scan instead of a LIKE that would need escaping. An
// empty prefix gives an empty hi: no upper bound.
func BlobPrefixRange(prefix string) (lo, hi string) {
	if prefix == "" {
		return "", ""
	}
	return prefix + "/", prefix + "0"
}

// BlobChildren shortens sorted keys under prefix to prefix's direct
// children, each once, for the non-recursive BlobKeys.
func BlobChildren(prefix string, keys []string) []string {
	base := prefix
	if base != "" {
		base += "/"
	}
	var out []string
	for _, k := range keys {
		rest, ok := strings.CutPrefix(k, base)
		if !ok {
			continue
		}
		if i := strings.IndexByte(rest, '/'); i >= 0 {
			k = base + rest[:i]
		}
		if n := len(out); n == 0 || out[n-1] != k {
			out = append(out, k)
		}
	}
	// A directory "a" sorts after a file "a.b" but its keys ("a/x") sort
	// before "a0": shortening can break the order, so restore it.
	slices.Sort(out)
	return slices.Compact(out)
}
