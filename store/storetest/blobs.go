package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/usherhq/usher/store"
)

// RunBlobs runs the store.Blobs conformance suite as subtests. open must
// return a store on a fresh, empty, migrated database that takes its time
// from now; the suite closes it if it is an io.Closer.
func RunBlobs(t *testing.T, open func(t *testing.T, now func() time.Time) store.Blobs) {
	runClocked(t, open, []clockedTest[store.Blobs]{
		{"BlobRoundTrip", testBlobRoundTrip},
		{"BlobInvalidKeys", testBlobInvalidKeys},
		{"BlobKeys", testBlobKeys},
		{"BlobDelete", testBlobDelete},
		{"BlobConcurrent", testBlobConcurrent},
		{"BlobContextCanceled", testBlobCanceled},
	})
}

func putBlob(t *testing.T, s store.Blobs, key string, value []byte) {
	t.Helper()
	if err := s.PutBlob(context.Background(), key, value); err != nil {
		t.Fatalf("PutBlob(%s): %v", key, err)
	}
}

func blobKeys(t *testing.T, s store.Blobs, prefix string, recursive bool) []string {
	t.Helper()
	keys, err := s.BlobKeys(context.Background(), prefix, recursive)
	if err != nil {
		t.Fatalf("BlobKeys(%q, %v): %v", prefix, recursive, err)
	}
	return keys
}

func testBlobRoundTrip(t *testing.T, s store.Blobs, clock *suiteClock) {
	ctx := context.Background()
	big := bytes.Repeat([]byte{0, 1, 2, 0xff}, 1<<18) // 1 MiB with NULs and non-UTF-8 bytes
	steps := []struct {
		advance time.Duration
		key     string
		value   []byte
	}{
		{0, "certificates/ca/example.com/example.com.crt", []byte("-----BEGIN CERTIFICATE-----\n")},
		{time.Minute, "certificates/ca/example.com/example.com.crt", []byte("renewed")},
		{0, "empty", nil},
		{time.Second, "big", big},
		{0, "ünïcode/ключ", []byte("v")},
	}
	for i, st := range steps {
		clock.Add(st.advance)
		putBlob(t, s, st.key, st.value)
		got, modified, err := s.Blob(ctx, st.key)
		if err != nil {
			t.Fatalf("step %d: Blob(%s): %v", i, st.key, err)
		}
		if !bytes.Equal(got, st.value) || got == nil {
			t.Fatalf("step %d: Blob(%s) = %d bytes (nil %v), want %d", i, st.key, len(got), got == nil, len(st.value))
		}
		if want := ms(clock.Now()); !modified.Equal(want) {
			t.Fatalf("step %d: Blob(%s) modified %v, want %v", i, st.key, modified, want)
		}
		inUTC(t, "Blob modified", modified)
	}
	for _, key := range []string{"missing", "certificates", "certificates/ca/example.com/example.com.cr"} {
		if _, _, err := s.Blob(ctx, key); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("Blob(%s) = %v, want ErrNotFound", key, err)
		}
	}
}

func testBlobInvalidKeys(t *testing.T, s store.Blobs, _ *suiteClock) {
	ctx := context.Background()
	for _, key := range []string{"", "/a", "a/", "a//b", "/"} {
		if err := s.PutBlob(ctx, key, []byte("x")); !errors.Is(err, store.ErrInvalid) {
			t.Errorf("PutBlob(%q) = %v, want ErrInvalid", key, err)
		}
		if err := s.DeleteBlob(ctx, key); !errors.Is(err, store.ErrInvalid) || errors.Is(err, store.ErrNotFound) {
			t.Errorf("DeleteBlob(%q) = %v, want a key error (ErrInvalid)", key, err)
		}
	}
	if keys, err := s.BlobKeys(ctx, "a/", false); !errors.Is(err, store.ErrInvalid) {
		t.Errorf("BlobKeys(\"a/\") = %q, %v; want a key error (ErrInvalid)", keys, err)
	}
}

// blobLayout has files next to directories of the same name, names that
// share a prefix but not a path component, and LIKE wildcards.
var blobLayout = []string{
	"a", "a/b", "a/c/d", "a/c/e", "a/c/f/g", "a.b", "a0", "ab/x",
	"p%/x", "p_/y", "pq/z",
}

func testBlobKeys(t *testing.T, s store.Blobs, _ *suiteClock) {
	for _, k := range blobLayout {
		putBlob(t, s, k, []byte(k))
	}
	for _, c := range []struct {
		prefix    string
		recursive bool
		want      []string
	}{
		{"a", false, []string{"a/b", "a/c"}},
		{"a", true, []string{"a/b", "a/c/d", "a/c/e", "a/c/f/g"}},
		{"a/c", false, []string{"a/c/d", "a/c/e", "a/c/f"}},
		{"a/c", true, []string{"a/c/d", "a/c/e", "a/c/f/g"}},
		{"a/c/f/g", false, nil}, // a file has no children
		{"p%", true, []string{"p%/x"}},
		{"p_", false, []string{"p_/y"}},
		{"missing", false, nil},
		{"missing", true, nil},
		{"", false, []string{"a", "a.b", "a0", "ab", "p%", "p_", "pq"}},
		{"", true, blobLayout},
	} {
		got := blobKeys(t, s, c.prefix, c.recursive)
		want := slices.Clone(c.want)
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Errorf("BlobKeys(%q, %v) = %q, want %q", c.prefix, c.recursive, got, want)
		}
	}
}

func testBlobDelete(t *testing.T, s store.Blobs, _ *suiteClock) {
	ctx := context.Background()
	for _, k := range blobLayout {
		putBlob(t, s, k, []byte(k))
	}
	steps := []struct {
		key  string
		want error
		left []string // every key afterwards; nil: unchanged
	}{
		{"a/c", nil, []string{"a", "a/b", "a.b", "a0", "ab/x", "p%/x", "p_/y", "pq/z"}},
		{"a/c", store.ErrNotFound, nil},
		{"p%", nil, []string{"a", "a/b", "a.b", "a0", "ab/x", "p_/y", "pq/z"}},
		{"a", nil, []string{"a.b", "a0", "ab/x", "p_/y", "pq/z"}},
		{"ab/x", nil, []string{"a.b", "a0", "p_/y", "pq/z"}},
		{"missing", store.ErrNotFound, nil},
	}
	var left []string
	for i, st := range steps {
		err := s.DeleteBlob(ctx, st.key)
		if st.want == nil && err != nil || st.want != nil && !errors.Is(err, st.want) {
			t.Fatalf("step %d: DeleteBlob(%s) = %v, want %v", i, st.key, err, st.want)
		}
		if st.left != nil {
			left = slices.Sorted(slices.Values(st.left))
		}
		if got := blobKeys(t, s, "", true); !slices.Equal(got, left) {
			t.Fatalf("step %d: after DeleteBlob(%s) keys %q, want %q", i, st.key, got, left)
		}
	}
}

// Replicas writing one key at once: the value read is always one of the
// written values whole, and distinct keys all land.
func testBlobConcurrent(t *testing.T, s store.Blobs, _ *suiteClock) {
	ctx := context.Background()
	const writers = 8
	values := make([][]byte, writers)
	for i := range values {
		values[i] = bytes.Repeat([]byte{byte('a' + i)}, 64<<10)
	}
	errs := make(chan error, writers*3)
	var wg sync.WaitGroup
	for i := range writers {
		wg.Go(func() {
			errs <- s.PutBlob(ctx, "shared", values[i])
			errs <- s.PutBlob(ctx, fmt.Sprint("own/", i), values[i])
			v, _, err := s.Blob(ctx, "shared")
			if err == nil && !slices.ContainsFunc(values, func(w []byte) bool { return bytes.Equal(v, w) }) {
				err = fmt.Errorf("read a mixed value of %d bytes", len(v))
			}
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if got := blobKeys(t, s, "own", false); len(got) != writers {
		t.Fatalf("BlobKeys(own) = %q, want %d keys", got, writers)
	}
}

func testBlobCanceled(t *testing.T, s store.Blobs, _ *suiteClock) {
	putBlob(t, s, "k", []byte("v"))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := s.PutBlob(ctx, "k", []byte("w")); err == nil {
		t.Error("PutBlob with a canceled context succeeded")
	}
	if _, _, err := s.Blob(ctx, "k"); err == nil {
		t.Error("Blob with a canceled context succeeded")
	}
	if err := s.DeleteBlob(ctx, "k"); err == nil {
		t.Error("DeleteBlob with a canceled context succeeded")
	}
	if _, err := s.BlobKeys(ctx, "", true); err == nil {
		t.Error("BlobKeys with a canceled context succeeded")
	}
	if v, _, err := s.Blob(context.Background(), "k"); err != nil || string(v) != "v" {
		t.Errorf("after canceled calls Blob(k) = %q, %v; want v", v, err)
	}
}
