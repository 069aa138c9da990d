package session

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
)

var t0 = time.Date(2026, 3, 1, 9, 0, 0, 123456789, time.UTC)

// newClock is a settable time source for the codec.
func newClock() *clockwork.FakeClock { return clockwork.NewFakeClockAt(t0) }

func secret(b byte) []byte { return bytes.Repeat([]byte{b}, 32) }

func newCodec(t testing.TB, clk *clockwork.FakeClock, keys [][]byte, mod func(*Options)) *Codec {
	t.Helper()
	o := Options{Name: "usher_session", Secure: true, Idle: 8 * time.Hour, Absolute: 24 * time.Hour, Now: clk.Now}
	if mod != nil {
		mod(&o)
	}
	c, err := NewCodec(keys, o)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func sampleSession(c *Codec) *Session {
	s := c.NewSession()
	s.IdP, s.Subject = "entra", "00u1abc"
	s.Username, s.Email, s.DisplayName = "jdoe", "jdoe@example.com", "Jürgen Döe"
	s.Groups = []string{"jira-users", "confluence-users", "team, with comma"}
	s.Apps = []string{"jira", "confluence"}
	s.Attributes = map[string]string{"department": "R&D", "cost_center": "4711"}
	s.LogoutHint = "nameid=jdoe;idx=_abc"
	return s
}

// save runs Save and returns the Set-Cookie and a request carrying it.
func save(t testing.TB, c *Codec, s *Session) (*http.Cookie, *http.Request) {
	t.Helper()
	rec := httptest.NewRecorder()
	if err := c.Save(rec, s); err != nil {
		t.Fatal(err)
	}
	cks := rec.Result().Cookies()
	if len(cks) != 1 {
		t.Fatalf("Save set %d cookies", len(cks))
	}
	return cks[0], withCookie(cks[0].Name, cks[0].Value)
}

func withCookie(name, value string) *http.Request {
	r := httptest.NewRequest("GET", "https://jira.example.com/browse/X-1", nil)
	r.Header.Set("Cookie", "other=1; "+name+"="+value+"; last=2")
	return r
}

func sameSession(t *testing.T, got, want *Session) {
	t.Helper()
	if got.ID != want.ID || got.IdP != want.IdP || got.Subject != want.Subject || got.Username != want.Username ||
		got.Email != want.Email || got.DisplayName != want.DisplayName || got.LogoutHint != want.LogoutHint ||
		!slices.Equal(got.Groups, want.Groups) || !slices.Equal(got.Apps, want.Apps) || !maps.Equal(got.Attributes, want.Attributes) || !got.Created.Equal(want.Created) || !got.Seen.Equal(want.Seen) {
		t.Fatalf("session mismatch\n got %+v\nwant %+v", got, want)
	}
}

func TestRoundTrip(t *testing.T) {
	clk := newClock()
	c := newCodec(t, clk, [][]byte{secret(1)}, nil)
	for _, mod := range []func(*Session){
		func(*Session) {},
		func(s *Session) { s.Groups = nil; s.Email = ""; s.LogoutHint = "" },
		func(s *Session) { s.DisplayName = "名前\x00\r\n"; s.Groups = []string{""} },
	} {
		s := sampleSession(c)
		mod(s)
		_, r := save(t, c, s)
		clk.Advance(30 * time.Second)
		got, refresh, err := c.Load(r)
		if err != nil {
			t.Fatal(err)
		}
		if refresh {
			t.Error("refresh after 30s, want none before a minute")
		}
		sameSession(t, got, s)
	}
}

func TestLoadNoSession(t *testing.T) {
	c := newCodec(t, newClock(), [][]byte{secret(1)}, nil)
	r := httptest.NewRequest("GET", "/", nil)
	r.Header.Set("Cookie", "usher_session=not-the-prefixed-name")
	if _, _, err := c.Load(r); !errors.Is(err, ErrNoSession) {
		t.Fatalf("err = %v, want ErrNoSession", err)
	}
}

func TestLoadFirstValidOfDuplicates(t *testing.T) {
	clk := newClock()
	c := newCodec(t, clk, [][]byte{secret(1)}, nil)
	s := sampleSession(c)
	ck, _ := save(t, c, s)
	r := httptest.NewRequest("GET", "/", nil)
	r.Header.Add("Cookie", ck.Name+"=garbage")
	r.Header.Add("Cookie", ck.Name+"="+ck.Value)
	got, _, err := c.Load(r)
	if err != nil {
		t.Fatal(err)
	}
	sameSession(t, got, s)
	r.Header.Del("Cookie")
	r.Header.Add("Cookie", ck.Name+"=garbage")
	if _, _, err := c.Load(r); !errors.Is(err, ErrInvalid) {
		t.Fatalf("err = %v, want ErrInvalid", err)
	}
}

func TestTampered(t *testing.T) {
	clk := newClock()
	c := newCodec(t, clk, [][]byte{secret(1)}, nil)
	ck, _ := save(t, c, sampleSession(c))
	raw, err := base64.RawURLEncoding.DecodeString(ck.Value)
	if err != nil {
		t.Fatal(err)
	}
	region := func(i int) string {
		switch {
		case i == 0:
			return "version"
		case i == 1:
			return "key id"
		case i < headerLen+nonceLen:
			return "nonce"
		case i < len(raw)-16:
			return "ciphertext"
		}
		return "tag"
	}
	for i := range raw {
		for _, bit := range []byte{0x01, 0x80} {
			bad := bytes.Clone(raw)
			bad[i] ^= bit
			_, _, err := c.Load(withCookie(ck.Name, base64.RawURLEncoding.EncodeToString(bad)))
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("byte %d (%s) flipped: err = %v, want ErrInvalid", i, region(i), err)
			}
		}
	}
	for name, v := range map[string]string{
		"truncated":  ck.Value[:len(ck.Value)-4],
		"extended":   ck.Value + "AAAA",
		"empty":      "",
		"not base64": "!!!!" + ck.Value,
		"padded":     ck.Value + "=",
		"huge":       strings.Repeat("A", 5000),
	} {
		if _, _, err := c.Load(withCookie(ck.Name, v)); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: err = %v, want ErrInvalid", name, err)
		}
	}
}

func TestOtherKeyRefused(t *testing.T) {
	clk := newClock()
	a := newCodec(t, clk, [][]byte{secret(1)}, nil)
	b := newCodec(t, clk, [][]byte{secret(2)}, nil)
	_, r := save(t, a, sampleSession(a))
	if _, _, err := b.Load(r); !errors.Is(err, ErrInvalid) {
		t.Fatalf("err = %v, want ErrInvalid", err)
	}
}

func TestKeyRotation(t *testing.T) {
	clk := newClock()
	old := newCodec(t, clk, [][]byte{secret(1)}, nil)
	rotated := newCodec(t, clk, [][]byte{secret(2), secret(1)}, nil)
	onlyNew := newCodec(t, clk, [][]byte{secret(2)}, nil)

	s := sampleSession(old)
	_, r := save(t, old, s)
	got, refresh, err := rotated.Load(r)
	if err != nil {
		t.Fatal(err)
	}
	if !refresh {
		t.Error("opened with an old key: want refresh so the cookie is re-sealed")
	}
	sameSession(t, got, s)
	if _, _, err := onlyNew.Load(r); !errors.Is(err, ErrInvalid) {
		t.Fatalf("new-key-only codec opened an old cookie: %v", err)
	}

	_, r2 := save(t, rotated, got)
	got2, refresh, err := onlyNew.Load(r2)
	if err != nil {
		t.Fatalf("re-sealed cookie does not open with the new key: %v", err)
	}
	if refresh {
		t.Error("refresh after re-seal with the first key")
	}
	sameSession(t, got2, s)
}

func TestExpiry(t *testing.T) {
	clk := newClock()
	c := newCodec(t, clk, [][]byte{secret(1)}, func(o *Options) { o.Idle, o.Absolute = time.Hour, 3*time.Hour })
	s := sampleSession(c)
	_, r := save(t, c, s)

	// Within idle: loads; after a minute it asks for a refresh and has
	// already moved Seen.
	clk.Advance(59 * time.Minute)
	got, refresh, err := c.Load(r)
	if err != nil || !refresh {
		t.Fatalf("at 59m: refresh=%v err=%v, want refresh", refresh, err)
	}
	if !got.Seen.Equal(clk.Now()) {
		t.Fatalf("Seen = %v, want now %v", got.Seen, clk.Now())
	}
	_, r = save(t, c, got)

	// The old cookie passes its idle timeout; the refreshed one does not.
	clk.Advance(59 * time.Minute)
	if _, _, err := c.Load(r); err != nil {
		t.Fatalf("refreshed cookie at 1h58m: %v", err)
	}
	clk.Advance(2 * time.Minute)
	if _, _, err := c.Load(r); !errors.Is(err, ErrExpired) {
		t.Fatalf("idle timeout: err = %v, want ErrExpired", err)
	}

	// Kept busy, it still dies at the absolute timeout.
	clk.Advance(t0.Sub(clk.Now()))
	s = sampleSession(c)
	_, r = save(t, c, s)
	for clk.Now().Before(t0.Add(3*time.Hour - 30*time.Minute)) {
		clk.Advance(30 * time.Minute)
		got, _, err := c.Load(r)
		if err != nil {
			t.Fatalf("at %v: %v", clk.Now().Sub(t0), err)
		}
		_, r = save(t, c, got)
	}
	clk.Advance(30 * time.Minute)
	if _, _, err := c.Load(r); !errors.Is(err, ErrExpired) {
		t.Fatalf("absolute timeout: err = %v, want ErrExpired", err)
	}
	if err := c.Save(httptest.NewRecorder(), s); !errors.Is(err, ErrExpired) {
		t.Fatalf("Save past absolute timeout: err = %v, want ErrExpired", err)
	}

	// Shortening the timeout applies to cookies already issued.
	clk.Advance(t0.Sub(clk.Now()))
	_, r = save(t, c, sampleSession(c))
	clk.Advance(90 * time.Minute)
	shorter := newCodec(t, clk, [][]byte{secret(1)}, func(o *Options) { o.Idle, o.Absolute = time.Hour, time.Hour })
	if _, _, err := shorter.Load(r); !errors.Is(err, ErrExpired) {
		t.Fatalf("shortened absolute timeout: err = %v, want ErrExpired", err)
	}
}

func TestSealOpenPurpose(t *testing.T) {
	clk := newClock()
	c := newCodec(t, clk, [][]byte{secret(1)}, nil)
	v, err := c.Seal("flow", []byte("state"), clk.Now().Add(10*time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if p, err := c.Open("flow", v); err != nil || string(p) != "state" {
		t.Fatalf("Open = %q, %v", p, err)
	}
	for _, purpose := range []string{"session", "flowx", "Flow", ""} {
		if _, err := c.Open(purpose, v); !errors.Is(err, ErrInvalid) {
			t.Errorf("Open(%q) of a flow value: err = %v, want ErrInvalid", purpose, err)
		}
	}
	// A session cookie never opens as a flow value, nor the reverse.
	ck, _ := save(t, c, sampleSession(c))
	if _, err := c.Open("flow", ck.Value); !errors.Is(err, ErrInvalid) {
		t.Errorf("session cookie opened as flow: %v", err)
	}
	if _, _, err := c.Load(withCookie(ck.Name, v)); !errors.Is(err, ErrInvalid) {
		t.Errorf("flow value loaded as session: %v", err)
	}
	if _, err := c.Seal("flow", nil, time.Time{}); err == nil {
		t.Error("Seal with zero expiry accepted")
	}
	clk.Advance(10 * time.Minute)
	if _, err := c.Open("flow", v); !errors.Is(err, ErrExpired) {
		t.Errorf("expired flow value: err = %v, want ErrExpired", err)
	}
}

func TestCookieAttributes(t *testing.T) {
	clk := newClock()
	tests := []struct {
		secure   bool
		domain   string
		wantName string
	}{
		{true, "", "__Host-usher_session"},
		{true, "example.com", "usher_session"},
		{false, "", "usher_session"},
		{false, "example.com", "usher_session"},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("secure=%v,domain=%q", tt.secure, tt.domain), func(t *testing.T) {
			c := newCodec(t, clk, [][]byte{secret(1)}, func(o *Options) { o.Secure, o.Domain = tt.secure, tt.domain })
			if c.CookieName() != tt.wantName {
				t.Fatalf("CookieName = %q, want %q", c.CookieName(), tt.wantName)
			}
			s := sampleSession(c)
			clk.Advance(time.Hour) // Max-Age counts the remaining absolute lifetime
			rec := httptest.NewRecorder()
			if err := c.Save(rec, s); err != nil {
				t.Fatal(err)
			}
			c.SetCookie(rec, "usher_flow", "v", 10*time.Minute)
			c.Clear(rec)
			c.ClearCookie(rec, "usher_flow")
			cks := rec.Result().Cookies()
			if len(cks) != 4 {
				t.Fatalf("%d cookies", len(cks))
			}
			wantFlow := strings.Replace(tt.wantName, "usher_session", "usher_flow", 1)
			for i, want := range []struct {
				name   string
				maxAge int
			}{{tt.wantName, 23 * 3600}, {wantFlow, 600}, {tt.wantName, -1}, {wantFlow, -1}} {
				ck := cks[i]
				if ck.Name != want.name || ck.MaxAge != want.maxAge || !ck.HttpOnly || ck.SameSite != http.SameSiteLaxMode ||
					ck.Secure != tt.secure || ck.Path != "/" || ck.Domain != tt.domain {
					t.Errorf("cookie %d = %s", i, ck.String())
				}
			}
			if raw := rec.Header().Values("Set-Cookie")[2]; !strings.Contains(raw, "Max-Age=0") {
				t.Errorf("Clear: %s, want Max-Age=0", raw)
			}
			r := httptest.NewRequest("GET", "/", nil)
			r.AddCookie(&http.Cookie{Name: wantFlow, Value: "v"})
			if v, ok := c.CookieValue(r, "usher_flow"); !ok || v != "v" {
				t.Errorf("CookieValue = %q, %v", v, ok)
			}
		})
	}
}

// TestBrowserRoundTrip lets a real client's cookie jar apply the Set-Cookie
// rules (the __Host- prefix needs Secure, Path=/ and no Domain).
func TestBrowserRoundTrip(t *testing.T) {
	clk := newClock()
	c := newCodec(t, clk, [][]byte{secret(1)}, nil)
	var loaded *Session
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/login" {
			s := sampleSession(c)
			if err := c.Save(w, s); err != nil {
				t.Error(err)
			}
			return
		}
		s, _, err := c.Load(r)
		if err != nil {
			http.Error(w, err.Error(), http.StatusUnauthorized)
			return
		}
		loaded = s
	}))
	defer srv.Close()
	jar, _ := cookiejar.New(nil)
	client := srv.Client()
	client.Jar = jar
	for _, p := range []string{"/login", "/page"} {
		resp, err := client.Get(srv.URL + p)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%s: %s", p, resp.Status)
		}
	}
	u, _ := url.Parse(srv.URL)
	if cks := jar.Cookies(u); len(cks) != 1 || cks[0].Name != "__Host-usher_session" {
		t.Fatalf("jar holds %v", cks)
	}
	if loaded == nil || loaded.Username != "jdoe" {
		t.Fatalf("loaded %+v", loaded)
	}
}

func TestOversize(t *testing.T) {
	clk := newClock()
	c := newCodec(t, clk, [][]byte{secret(1)}, nil)
	s := sampleSession(c)
	for i := 0; i < 200; i++ {
		s.Groups = append(s.Groups, fmt.Sprintf("confluence-space-%03d-readers", i))
	}
	rec := httptest.NewRecorder()
	err := c.Save(rec, s)
	if !errors.Is(err, ErrTooLarge) {
		t.Fatalf("err = %v, want ErrTooLarge", err)
	}
	if len(rec.Header().Values("Set-Cookie")) != 0 {
		t.Fatal("oversize Save still set a cookie")
	}
	t.Log(err)
	s.Groups = s.Groups[:50]
	if err := c.Save(httptest.NewRecorder(), s); err != nil {
		t.Fatalf("50 groups: %v", err)
	}
}

func TestRevocation(t *testing.T) {
	clk := newClock()
	rev := NewRevocations(24*time.Hour, clk.Now)
	c := newCodec(t, clk, [][]byte{secret(1)}, func(o *Options) { o.Revoker = rev })

	a, b := sampleSession(c), sampleSession(c)
	_, ra := save(t, c, a)
	_, rb := save(t, c, b)
	other := sampleSession(c)
	other.Subject = "someone-else"
	_, ro := save(t, c, other)

	rev.Add(a.ID, a.Created.Add(c.Absolute()))
	if _, _, err := c.Load(ra); !errors.Is(err, ErrRevoked) || !errors.Is(err, ErrExpired) {
		t.Fatalf("revoked by ID: err = %v, want ErrRevoked and ErrExpired", err)
	}
	if _, _, err := c.Load(rb); err != nil {
		t.Fatalf("sibling session: %v", err)
	}

	clk.Advance(time.Minute)
	rev.RevokeIdentity(b.IdP, b.Subject, clk.Now())
	if _, _, err := c.Load(rb); !errors.Is(err, ErrRevoked) {
		t.Fatalf("revoked by identity: err = %v", err)
	}
	if _, _, err := c.Load(ro); err != nil {
		t.Fatalf("another person's session: %v", err)
	}
	// An older revocation does not move the cut-off back.
	rev.RevokeIdentity(b.IdP, b.Subject, t0)
	if _, _, err := c.Load(rb); !errors.Is(err, ErrRevoked) {
		t.Fatalf("after older revocation: err = %v", err)
	}
	// Logging in again after the revocation works.
	clk.Advance(time.Nanosecond)
	fresh := sampleSession(c)
	_, rf := save(t, c, fresh)
	if _, _, err := c.Load(rf); err != nil {
		t.Fatalf("fresh login after identity revocation: %v", err)
	}

	// Entries are forgotten after the absolute timeout.
	if rev.Len() != 2 {
		t.Fatalf("Len = %d, want 2", rev.Len())
	}
	clk.Advance(24 * time.Hour)
	rev.Prune()
	if rev.Len() != 0 {
		t.Fatalf("Len after absolute timeout = %d, want 0", rev.Len())
	}
}

func TestCSRF(t *testing.T) {
	clk := newClock()
	old := newCodec(t, clk, [][]byte{secret(1)}, nil)
	c := newCodec(t, clk, [][]byte{secret(2), secret(1)}, nil)
	other := newCodec(t, clk, [][]byte{secret(3)}, nil)
	s, s2 := sampleSession(c), sampleSession(c)
	tok := c.CSRFToken(s)
	tests := []struct {
		name  string
		s     *Session
		token string
		want  bool
	}{
		{"own token", s, tok, true},
		{"token from the old key", s, old.CSRFToken(s), true},
		{"another session's token", s2, tok, false},
		{"token from an unknown key", s, other.CSRFToken(s), false},
		{"empty", s, "", false},
		{"truncated", s, tok[:len(tok)-1], false},
		{"flipped", s, flip(tok), false},
		{"no session", nil, tok, false},
	}
	for _, tt := range tests {
		if got := c.CheckCSRF(tt.s, tt.token); got != tt.want {
			t.Errorf("%s: CheckCSRF = %v, want %v", tt.name, got, tt.want)
		}
	}
}

func flip(s string) string {
	b := []byte(s)
	if b[0] == 'A' {
		b[0] = 'B'
	} else {
		b[0] = 'A'
	}
	return string(b)
}

func TestNewCodecChecks(t *testing.T) {
	ok := Options{Name: "n", Idle: time.Hour, Absolute: time.Hour}
	for name, tt := range map[string]struct {
		keys [][]byte
		opts Options
	}{
		"no keys":   {nil, ok},
		"short key": {[][]byte{secret(1), make([]byte, 31)}, ok},
		"no name":   {[][]byte{secret(1)}, Options{Idle: time.Hour, Absolute: time.Hour}},
		"no idle":   {[][]byte{secret(1)}, Options{Name: "n", Absolute: time.Hour}},
	} {
		if _, err := NewCodec(tt.keys, tt.opts); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	// Any long secret works, not only 32 random bytes.
	if _, err := NewCodec([][]byte{[]byte(strings.Repeat("correct horse battery staple ", 3))}, ok); err != nil {
		t.Error(err)
	}
}

func FuzzDecodeSession(f *testing.F) {
	c, _ := NewCodec([][]byte{secret(1)}, Options{Name: "n", Idle: time.Hour, Absolute: time.Hour})
	p, _ := encodeSession(sampleSession(c))
	f.Add(p)
	f.Add([]byte{1})
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := decodeSession(b)
		if err != nil {
			return
		}
		again, err := encodeSession(s)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := decodeSession(again); err != nil {
			t.Fatalf("re-encoded session does not decode: %v", err)
		}
	})
}

// BenchmarkLoad: "shared" is the hot path's LoadShared on a cookie seen
// before (cached), "copy" is Load (a private copy of the cached session),
// "cold" opens and decodes the value every time, as on a cache miss.
func BenchmarkLoad(b *testing.B) {
	clk := newClock()
	c := newCodec(b, clk, [][]byte{secret(1)}, func(o *Options) { o.Revoker = NewRevocations(24*time.Hour, clk.Now) })
	_, r := save(b, c, sampleSession(c))
	for _, bc := range []struct {
		name string
		load func(*http.Request) (*Session, bool, error)
	}{
		{"shared", c.LoadShared},
		{"copy", c.Load},
		{"cold", func(r *http.Request) (*Session, bool, error) {
			ck, _ := r.Cookie(c.CookieName())
			p, _, _, err := c.open(purposeSession, ck.Value)
			if err != nil {
				return nil, false, err
			}
			s, err := decodeSession(p)
			return s, false, err
		}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, _, err := bc.load(r); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func TestFlowCookieCrossSitePOST(t *testing.T) {
	for _, secure := range []bool{true, false} {
		c, err := NewCodec([][]byte{[]byte(strings.Repeat("k", 32))}, Options{Name: "usher_session", Secure: secure, Idle: time.Hour, Absolute: 2 * time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		rec := httptest.NewRecorder()
		c.SetFlowCookie(rec, "usher_flow_x", "v", time.Minute)
		ck := rec.Result().Cookies()[0]
		want := http.SameSiteLaxMode
		if secure {
			want = http.SameSiteNoneMode
		}
		if ck.SameSite != want || ck.Secure != secure || !ck.HttpOnly || ck.MaxAge != 60 {
			t.Errorf("secure=%v: flow cookie %+v", secure, ck)
		}
	}
}

// A cookie value that opened once is served from the Codec's cache: no
// decoding, no allocation, and still every time-dependent check.
func TestLoadSharedCache(t *testing.T) {
	clk := newClock()
	rev := NewRevocations(24*time.Hour, clk.Now)
	c := newCodec(t, clk, [][]byte{secret(1)}, func(o *Options) { o.Idle, o.Absolute, o.Revoker = time.Hour, 3*time.Hour, rev })
	s := sampleSession(c)
	_, r := save(t, c, s)

	first, refresh, err := c.LoadShared(r)
	if err != nil || refresh {
		t.Fatalf("first load: refresh=%v err=%v", refresh, err)
	}
	sameSession(t, first, s)
	if allocs := testing.AllocsPerRun(100, func() {
		if got, _, err := c.LoadShared(r); err != nil || got != first {
			t.Fatalf("cached load: %p %v, want %p", got, err, first)
		}
	}); allocs != 0 {
		t.Errorf("cached LoadShared allocates %.0f times, want 0", allocs)
	}

	// Load hands out a copy the caller may change.
	own, _, err := c.Load(r)
	if err != nil || own == first {
		t.Fatalf("Load: %p %v; want a copy of %p", own, err, first)
	}
	own.Groups[0], own.Attributes["department"], own.Username = "jira-administrators", "changed", "root"
	if again, _, _ := c.LoadShared(r); again.Groups[0] != "jira-users" || again.Attributes["department"] != "R&D" || again.Username != "jdoe" {
		t.Fatalf("changing Load's session changed the cached one: %+v", again)
	}

	// A refresh returns a private copy with Seen moved; the cache keeps
	// the cookie's own Seen.
	clk.Advance(2 * time.Minute)
	fresh, refresh, err := c.LoadShared(r)
	if err != nil || !refresh || fresh == first || !fresh.Seen.Equal(clk.Now()) || !first.Seen.Equal(s.Seen) {
		t.Fatalf("refresh: %v %v, Seen %v (cached %v)", refresh, err, fresh.Seen, first.Seen)
	}

	// Revocation, the idle timeout and the envelope's expiry still apply.
	rev.Add(s.ID, s.Created.Add(3*time.Hour))
	if _, _, err := c.LoadShared(r); !errors.Is(err, ErrRevoked) {
		t.Fatalf("revoked: %v", err)
	}
	s2 := sampleSession(c)
	_, r2 := save(t, c, s2)
	if _, _, err := c.LoadShared(r2); err != nil {
		t.Fatal(err)
	}
	clk.Advance(time.Hour)
	if _, _, err := c.LoadShared(r2); !errors.Is(err, ErrExpired) {
		t.Fatalf("past idle and envelope expiry: %v", err)
	}
}

func TestOpenCacheBounded(t *testing.T) {
	c := openCache{max: 10}
	for i := range 95 {
		c.put(fmt.Sprint(i), &opened{})
	}
	if n := len(c.cur) + len(c.old); n > 20 {
		t.Fatalf("%d entries, want at most 20", n)
	}
	if c.get("94") == nil || c.get("89") == nil {
		t.Fatal("recent entries dropped")
	}
	if c.get("0") != nil {
		t.Fatal("old entry kept")
	}
}
