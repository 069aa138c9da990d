package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/usherhq/usher/store"
)

func TestPlaceholders(t *testing.T) {
	t.Parallel()
	tests := []struct{ in, numbered string }{
		{"SELECT 1", "SELECT 1"},
		{"a = ?", "a = $1"},
		{"INSERT INTO t (a, b) VALUES (?, ?) ON CONFLICT (a) DO UPDATE SET b = ?", "INSERT INTO t (a, b) VALUES ($1, $2) ON CONFLICT (a) DO UPDATE SET b = $3"},
		{"?,?,?,?,?,?,?,?,?,?,?", "$1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11"},
	}
	for _, tt := range tests {
		q := &Store{f: Flavor{}}
		if got := q.sql(tt.in); got != tt.in {
			t.Errorf("? flavor: sql(%q) = %q, want it unchanged", tt.in, got)
		}
		n := &Store{f: Flavor{Numbered: true}}
		if got := n.sql(tt.in); got != tt.numbered {
			t.Errorf("numbered flavor: sql(%q) = %q, want %q", tt.in, got, tt.numbered)
		}
	}
}

func TestText(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in            string
		ok            bool
		scrub, escape string
	}{
		{"alice", true, "alice", "alice"},
		{"Zoë 😀", true, "Zoë 😀", "Zoë 😀"},
		{"", true, "", ""},
		{"a\x00b", false, "a\uFFFDb", `a\x00b`},
		{"a\xffb", false, "a\uFFFDb", `a\xffb`},
		{"\xc3", false, "\uFFFD", `\xc3`}, // a cut-off two-byte rune
	}
	for _, tt := range tests {
		err := text("ok", tt.in)
		if (err == nil) != tt.ok || (err != nil && !errors.Is(err, store.ErrInvalid)) {
			t.Errorf("text(%q) = %v, want ok %v (else ErrInvalid)", tt.in, err, tt.ok)
		}
		if got := scrub(tt.in); got != tt.scrub || !isText(got) {
			t.Errorf("scrub(%q) = %q, want %q", tt.in, got, tt.scrub)
		}
		if got := escape(tt.in); got != tt.escape || !isText(got) {
			t.Errorf("escape(%q) = %q, want %q", tt.in, got, tt.escape)
		}
	}
	// fold keeps what text refuses, so the refusal is not lost.
	if got := fold("AL\xffICE"); got != "AL\xffICE" {
		t.Errorf("fold of invalid UTF-8 = %q, want it unchanged", got)
	}
	if got := fold("ALİCE"); got != "alice" {
		t.Errorf("fold(ALİCE) = %q", got)
	}
	if err := checkArgs([]any{"ok", 1, []byte("a\x00b"), nil, "a\x00b"}); !errors.Is(err, store.ErrInvalid) {
		t.Errorf("checkArgs with a NUL string = %v, want ErrInvalid (bytes may hold NUL)", err)
	}
}

func TestTimeColumn(t *testing.T) {
	t.Parallel()
	at0 := time.Date(2026, 3, 1, 12, 0, 0, 123e6, time.UTC)
	cet := time.FixedZone("CET", 3600)
	for _, v := range []any{at0.UnixMilli(), at0.In(cet), nil} {
		got := time.Now()
		if err := at(&got).Scan(v); err != nil {
			t.Fatalf("Scan(%T): %v", v, err)
		}
		want := at0
		if v == nil {
			want = time.Time{}
		}
		if !got.Equal(want) || (!got.IsZero() && got.Location() != time.UTC) {
			t.Errorf("Scan(%v) = %v, want %v in UTC", v, got, want)
		}
	}
	var got time.Time
	if err := at(&got).Scan("2026-03-01"); err == nil {
		t.Error("Scan of a string succeeded")
	}
}

// classify keeps the caller's cancellation apart from a database that did
// not answer in time.
func TestClassify(t *testing.T) {
	t.Parallel()
	errUnavailable := errors.New("connection reset")
	errBadValue := errors.New("invalid byte sequence")
	s := New(Flavor{Name: "test", Classify: func(err error) Fault {
		switch {
		case errors.Is(err, errUnavailable):
			return Fault{Kind: Unavailable}
		case errors.Is(err, errBadValue):
			return Fault{Kind: Invalid}
		}
		return Fault{}
	}}, Config{})

	live := context.Background()
	canceled, cancel := context.WithCancel(live)
	cancel()
	expired, cancel2 := context.WithDeadline(live, time.Now().Add(-time.Second))
	defer cancel2()

	tests := []struct {
		name  string
		ctx   context.Context
		err   error
		is    []error
		isNot []error
	}{
		{"no rows", live, sql.ErrNoRows, []error{store.ErrNotFound}, []error{store.ErrUnavailable}},
		{"typed", live, fmt.Errorf("x: %w", store.ErrConflict), []error{store.ErrConflict}, nil},
		{"down", live, errUnavailable, []error{store.ErrUnavailable, errUnavailable}, []error{store.ErrInvalid}},
		{"bad value", live, errBadValue, []error{store.ErrInvalid}, []error{store.ErrUnavailable}},
		{"other", live, io.ErrShortWrite, []error{io.ErrShortWrite}, []error{store.ErrUnavailable, store.ErrInvalid}},
		{"canceled", canceled, errors.New("interrupted"), []error{context.Canceled}, []error{store.ErrUnavailable}},
		{"deadline", expired, errors.New("interrupted"), []error{store.ErrUnavailable, context.DeadlineExceeded}, nil},
		{"bad value past the deadline", expired, errBadValue, []error{store.ErrInvalid}, []error{store.ErrUnavailable}},
	}
	for _, tt := range tests {
		got := s.classify(tt.ctx, tt.err)
		for _, want := range tt.is {
			if !errors.Is(got, want) {
				t.Errorf("%s: classify = %v, want it to be %v", tt.name, got, want)
			}
		}
		for _, not := range tt.isNot {
			if errors.Is(got, not) {
				t.Errorf("%s: classify = %v, want it not to be %v", tt.name, got, not)
			}
		}
	}
}
