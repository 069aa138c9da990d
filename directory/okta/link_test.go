package okta

import (
	"net/http"
	"testing"
	"time"
)

func TestNextLink(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		h    []string
		want string
	}{
		{"none", nil, ""},
		{"two headers", []string{`<https://x/api/v1/users?limit=2>; rel="self"`, `<https://x/api/v1/users?after=a%2Cb&limit=2>; rel="next"`},
			"https://x/api/v1/users?after=a%2Cb&limit=2"},
		{"comma joined", []string{`<https://x/u?limit=2>; rel="self", <https://x/u?a=1,2&after=z>; rel="next"`}, "https://x/u?a=1,2&after=z"},
		{"self only", []string{`<https://x/u>; rel="self"`}, ""},
		{"unquoted and spaced", []string{`< https://x/n >;rel=next`}, "https://x/n"},
		{"several rels", []string{`<https://x/n>; rel="prev next"`}, "https://x/n"},
	}
	for _, tt := range tests {
		h := http.Header{}
		for _, v := range tt.h {
			h.Add("link", v)
		}
		if got := nextLink(h); got != tt.want {
			t.Errorf("%s: nextLink = %q, want %q", tt.name, got, tt.want)
		}
	}
}

func TestUntilReset(t *testing.T) {
	t.Parallel()
	now := time.Date(2025, 3, 1, 9, 0, 0, 0, time.UTC)
	h := http.Header{}
	h.Set("X-Rate-Limit-Reset", "1740819630") // 09:00:30 UTC
	// The server's clock is 10s ahead of ours: wait by its Date.
	h.Set("Date", now.Add(10*time.Second).Format(http.TimeFormat))
	if d, ok := untilReset(h, now); !ok || d != 20*time.Second {
		t.Errorf("untilReset = %s, %v; want 20s by the server's clock", d, ok)
	}
	h.Del("Date")
	if d, _ := untilReset(h, now); d != 30*time.Second {
		t.Errorf("untilReset without Date = %s, want 30s", d)
	}
	h.Set("X-Rate-Limit-Reset", "x")
	if _, ok := untilReset(h, now); ok {
		t.Error("a bad reset header was read")
	}
	h.Set("X-Rate-Limit-Remaining", "0")
	h.Set("X-Rate-Limit-Reset", "1740819630")
	if until := pace(h, now); !until.Equal(now.Add(30 * time.Second)) {
		t.Errorf("pace = %s, want a pause to the reset", until)
	}
}
