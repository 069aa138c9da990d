package proxy

import (
	"mime"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"unicode/utf8"
)

// decodeAs reads a header value the way the app's side would for each
// encoding: Tomcat's getHeader (bytes as ISO-8859-1), a UTF-8 reader,
// java.net.URLDecoder (form decoding: "+" is a space), and RFC 2047.
func decodeAs(t *testing.T, e HeaderEncoding, v string) string {
	t.Helper()
	switch e {
	case HeaderLatin1:
		r := make([]rune, len(v))
		for i := 0; i < len(v); i++ {
			r[i] = rune(v[i])
		}
		return string(r)
	case HeaderPercent:
		form, err := url.QueryUnescape(v)
		if err != nil {
			t.Fatalf("QueryUnescape(%q): %v", v, err)
		}
		if plain, err := url.PathUnescape(v); err != nil || plain != form {
			t.Fatalf("RFC 3986 and form decoding differ for %q: %q, %q", v, plain, form)
		}
		return form
	case HeaderRFC2047:
		d, err := new(mime.WordDecoder).DecodeHeader(v)
		if err != nil {
			t.Fatalf("DecodeHeader(%q): %v", v, err)
		}
		return d
	}
	return v
}

func TestHeaderEncodings(t *testing.T) {
	t.Parallel()
	values := []string{
		"jdoe", "Alice Archer", "alice@example.com", "Dávid Kovács", "Jürgen Döe", "ÿ",
		"Łukasz", "Győző", "名前 テスト", "100% sure", "a+b", "a%2Bb", "=?UTF-8?B?YWRtaW4=?=", "x =? y",
		strings.Repeat("é", 40) + strings.Repeat("名", 30), strings.Repeat("a", 200),
	}
	for _, e := range HeaderEncodings {
		for _, v := range values {
			got, ok := e.encode(v)
			fitsLatin1 := true
			for _, r := range v {
				fitsLatin1 = fitsLatin1 && r <= 0xff
			}
			if want := e != HeaderLatin1 || fitsLatin1; ok != want {
				t.Errorf("%s: encode(%q) ok = %v, want %v", e, v, ok, want)
				continue
			}
			if !ok {
				continue
			}
			if e != HeaderUTF8 && e != HeaderLatin1 {
				for i := 0; i < len(got); i++ {
					if got[i] < 0x20 || got[i] >= 0x7f {
						t.Errorf("%s: encode(%q) = %q holds byte %#x", e, v, got, got[i])
						break
					}
				}
			}
			if e == HeaderRFC2047 {
				for _, w := range strings.Fields(got) {
					if strings.HasPrefix(w, "=?") && len(w) > 75 {
						t.Errorf("encoded-word %q is %d characters, over 75", w, len(w))
					}
				}
			}
			if back := decodeAs(t, e, got); back != v {
				t.Errorf("%s: %q sent as %q reads back as %q", e, v, got, back)
			}
			ascii := utf8.RuneCountInString(v) == len(v)
			if ascii && !strings.ContainsAny(v, "%+") && !strings.Contains(v, "=?") && got != v {
				t.Errorf("%s: plain %q sent as %q, want it unchanged", e, v, got)
			}
		}
	}
}

// The encoding is applied to what the upstream receives, groups included,
// and a value that does not fit is left out alone.
func TestHeaderEncodingThroughTheForwarder(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		enc                HeaderEncoding
		wantName, wantGrps string
	}{
		{HeaderLatin1, "D\xe1vid Kov\xe1cs", "jira-users,\xdcbung"},
		{HeaderUTF8, "Dávid Kovács", "jira-users,Übung,Ωmega"},
		{HeaderPercent, "D%C3%A1vid Kov%C3%A1cs", "jira-users,%C3%9Cbung,%CE%A9mega"},
		{HeaderRFC2047, "=?UTF-8?B?RMOhdmlkIEtvdsOhY3M=?=", "=?UTF-8?B?amlyYS11c2VycyzDnGJ1bmcszqltZWdh?="},
	} {
		t.Run(string(tc.enc), func(t *testing.T) {
			t.Parallel()
			rec := &recorder{}
			up := newStack(t, rec, nil).upstream
			names := testNames
			names.Encoding = tc.enc
			fwd := NewForwarder(mustParseURL(t, up.URL), names, nil, nil)
			s := testSession()
			s.DisplayName = "Dávid Kovács"
			s.Groups = []string{"jira-users", "Übung", "Ωmega"}
			r, _ := http.NewRequest("GET", "http://jira.example.com/", nil)
			fwd.Forward(discard{}, r, s)
			h := rec.last(t).Header
			if got := h.Get("X-Remote-Name"); got != tc.wantName {
				t.Errorf("name %q, want %q", got, tc.wantName)
			}
			if got := h.Get("X-Remote-Groups"); got != tc.wantGrps {
				t.Errorf("groups %q, want %q", got, tc.wantGrps)
			}
			wantProblems := 0
			if tc.enc == HeaderLatin1 {
				wantProblems = 1 // Ωmega
			}
			if p := names.Problems(s); len(p) != wantProblems {
				t.Errorf("Problems = %q, want %d", p, wantProblems)
			}
		})
	}
}

type discard struct{ h http.Header }

func (d discard) Header() http.Header {
	if d.h == nil {
		return http.Header{}
	}
	return d.h
}
func (discard) Write(b []byte) (int, error) { return len(b), nil }
func (discard) WriteHeader(int)             {}
