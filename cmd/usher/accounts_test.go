package main

import (
	"errors"
	"path/filepath"
	"testing"

	"github.com/usherhq/usher/store/sqlite"
	"github.com/usherhq/usher/targets"
)

func TestBlobAccounts(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "usher.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	a := blobAccounts{st}
	want := func(what, username, id string) {
		t.Helper()
		got, err := a.AccountID(ctx, "cloud", username)
		if id == "" {
			if !errors.Is(err, targets.ErrNotFound) {
				t.Errorf("%s: AccountID(%s) = %q, %v; want ErrNotFound", what, username, got, err)
			}
			return
		}
		if err != nil || got != id {
			t.Errorf("%s: AccountID(%s) = %q, %v; want %q", what, username, got, err, id)
		}
	}
	wantName := func(what, id, username string) {
		t.Helper()
		got, err := a.Username(ctx, "cloud", id)
		if username == "" {
			if !errors.Is(err, targets.ErrNotFound) {
				t.Errorf("%s: Username(%s) = %q, %v; want ErrNotFound", what, id, got, err)
			}
			return
		}
		if err != nil || got != username {
			t.Errorf("%s: Username(%s) = %q, %v; want %q", what, id, got, err, username)
		}
	}

	want("empty", "alice", "")
	if err := a.PutAccountID(ctx, "cloud", "Alice", "5b10ac8d82e05b22cc7d4ef5"); err != nil {
		t.Fatal(err)
	}
	want("put", "ALICE", "5b10ac8d82e05b22cc7d4ef5")
	wantName("put", "5b10ac8d82e05b22cc7d4ef5", "Alice")
	want("other app", "alice", "5b10ac8d82e05b22cc7d4ef5")
	if _, err := a.AccountID(ctx, "cloud2", "alice"); !errors.Is(err, targets.ErrNotFound) {
		t.Errorf("another app sees alice: %v", err)
	}

	// A username with a slash, and an id bound anew to another name.
	if err := a.PutAccountID(ctx, "cloud", "x/y", "5b10ac8d82e05b22cc7d4ef5"); err != nil {
		t.Fatal(err)
	}
	want("moved", "x/y", "5b10ac8d82e05b22cc7d4ef5")
	want("moved away", "alice", "")
	wantName("moved", "5b10ac8d82e05b22cc7d4ef5", "x/y")

	// Rebinding a name to a new id frees the old id.
	if err := a.PutAccountID(ctx, "cloud", "x/y", "id-2"); err != nil {
		t.Fatal(err)
	}
	wantName("old id", "5b10ac8d82e05b22cc7d4ef5", "")
	wantName("new id", "id-2", "x/y")

	if err := a.DeleteAccountID(ctx, "cloud", "X/Y"); err != nil {
		t.Fatal(err)
	}
	want("deleted", "x/y", "")
	wantName("deleted", "id-2", "")
	if err := a.DeleteAccountID(ctx, "cloud", "nobody"); err != nil {
		t.Errorf("delete of nothing: %v", err)
	}

	// A reverse key left by a crash between the two writes names nobody.
	if err := st.PutBlob(ctx, idKey("cloud", "id-3"), []byte("ghost")); err != nil {
		t.Fatal(err)
	}
	wantName("stale reverse key", "id-3", "")
}
