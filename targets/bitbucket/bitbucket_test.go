package bitbucket_test

import (
	"errors"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/usherhq/usher/config"
	"github.com/usherhq/usher/targets"
	"github.com/usherhq/usher/targets/atlassiantest"
	"github.com/usherhq/usher/targets/bitbucket"
	"github.com/usherhq/usher/targets/targettest"
)

func TestContract(t *testing.T) {
	targettest.Run(t, func(t *testing.T, deps targets.Deps) (targets.Target, *atlassiantest.Server) {
		srv := atlassiantest.New(atlassiantest.Bitbucket, atlassiantest.Options{AdminUser: "admin", AdminPassword: "s3cret"})
		deps.Upstream = targettest.Serve(t, srv)
		cfg := &bitbucket.Config{Conn: targets.Conn{Username: "admin", Password: config.SecretValue("s3cret")}, LicenceGroups: []string{"stash-users"}}
		if errs := cfg.Validate(); len(errs) > 0 {
			t.Fatalf("Validate: %v", errs)
		}
		dir, err := cfg.Open("bitbucket", deps)
		if err != nil {
			t.Fatal(err)
		}
		return dir, srv
	})
}

// TestDirectLicence: a user licensed by a direct LICENSED_USER grant and
// no group reads as active, loses the grant on SetActive(false) and gets
// the first licence group back on SetActive(true) (§5.5).
func TestDirectLicence(t *testing.T) {
	srv := atlassiantest.New(atlassiantest.Bitbucket, atlassiantest.Options{AdminUser: "admin", AdminPassword: "s3cret", DefaultGroup: "-"})
	srv.AddUser(atlassiantest.User{Name: "solo", DisplayName: "Solo", Email: "solo@example.com", Active: true})
	u := targettest.Serve(t, srv)
	req, _ := http.NewRequest(http.MethodPut, u.String()+"/rest/api/1.0/admin/permissions/users?name=solo&permission=LICENSED_USER", nil)
	req.SetBasicAuth("admin", "s3cret")
	req.Header.Set("X-Atlassian-Token", "no-check")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if got, _ := srv.User("solo"); !got.Licensed {
		t.Fatalf("grant failed: %d", res.StatusCode)
	}
	cfg := &bitbucket.Config{Conn: targets.Conn{Username: "admin", Password: config.SecretValue("s3cret")}, LicenceGroups: []string{"stash-users"}}
	dir, err := cfg.Open("bitbucket", targets.Deps{Upstream: u})
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	if got, err := dir.GetUser(ctx, "solo"); err != nil || !got.Active {
		t.Fatalf("GetUser = %+v, %v; want active", got, err)
	}
	if err := dir.SetActive(ctx, "solo", false); err != nil {
		t.Fatal(err)
	}
	if got, _ := srv.User("solo"); got.Licensed {
		t.Errorf("still licensed after SetActive(false)")
	}
	if got, err := dir.GetUser(ctx, "solo"); err != nil || got.Active {
		t.Errorf("GetUser = %+v, %v; want inactive", got, err)
	}
	if err := dir.SetActive(ctx, "solo", true); err != nil {
		t.Fatal(err)
	}
	if got, _ := srv.User("solo"); !got.Licensed || !slices.Contains(got.Groups, "stash-users") {
		t.Errorf("after SetActive(true): %+v", got)
	}
}

var basicConn = targets.Conn{Username: "admin", Password: config.SecretValue("pw")}

func TestValidate(t *testing.T) {
	tests := []struct {
		name string
		cfg  bitbucket.Config
		want []string
	}{
		{"ok", bitbucket.Config{Conn: basicConn, LicenceGroups: []string{"stash-users"}}, nil},
		{"no licence groups", bitbucket.Config{Conn: basicConn}, []string{"licence_groups"}},
		{"blank group", bitbucket.Config{Conn: basicConn, LicenceGroups: []string{" "}}, []string{"licence_groups[0]"}},
		// A personal access token is refused on /admin/*: one clear
		// refusal, not the password-or-token advice as well.
		{"token", bitbucket.Config{Conn: targets.Conn{Token: config.SecretValue("t")}, LicenceGroups: []string{"stash-users"}}, []string{"token"}},
		{"token and password", bitbucket.Config{Conn: targets.Conn{Username: "admin", Password: config.SecretValue("pw"), Token: config.SecretValue("t")},
			LicenceGroups: []string{"stash-users"}}, []string{"token"}},
		{"token, bad url", bitbucket.Config{Conn: targets.Conn{Token: config.SecretValue("t"), URL: "ftp://x"}, LicenceGroups: []string{"stash-users"}}, []string{"token", "url"}},
		{"no credentials", bitbucket.Config{LicenceGroups: []string{"stash-users"}}, []string{"password"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var fields []string
			for _, err := range tc.cfg.Validate() {
				var fe *config.FieldError
				if !errors.As(err, &fe) {
					t.Fatalf("%v is not a FieldError", err)
				}
				fields = append(fields, fe.Field)
			}
			if !slices.Equal(fields, tc.want) {
				t.Errorf("fields = %v, want %v", fields, tc.want)
			}
			if slices.Contains(tc.want, "token") {
				msg := tc.cfg.Validate()[0].Error()
				if !strings.Contains(msg, "personal access token") || !strings.Contains(msg, "username and password") {
					t.Errorf("token refusal %q does not say what to use instead", msg)
				}
			}
		})
	}
}

// TestSeatGroupsCached: the global permissions of groups are read once
// per seatTTL, not once per person, and a change shows after it.
func TestSeatGroupsCached(t *testing.T) {
	clk := clockwork.NewFakeClock()
	srv := atlassiantest.New(atlassiantest.Bitbucket, atlassiantest.Options{AdminUser: "admin", AdminPassword: "pw",
		Users: []atlassiantest.User{
			{Name: "ann", DisplayName: "Ann", Email: "ann@example.com", Active: true, Groups: []string{"builders"}},
			{Name: "ben", DisplayName: "Ben", Email: "ben@example.com", Active: true, Groups: []string{"builders"}},
		}})
	cfg := &bitbucket.Config{Conn: basicConn, LicenceGroups: []string{"stash-users"}}
	dir, err := cfg.Open("bitbucket", targets.Deps{Upstream: targettest.Serve(t, srv), Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	sh := dir.(targets.SeatHolder)
	ctx := t.Context()
	const perms = "GET /rest/api/1.0/admin/permissions/groups"
	for _, name := range []string{"ann", "ben"} {
		if seat, err := sh.Seat(ctx, name); err != nil || len(seat.Groups) != 0 {
			t.Fatalf("Seat(%s) = %+v, %v; builders grants nothing yet", name, seat, err)
		}
	}
	if n := srv.Calls()[perms]; n != 1 {
		t.Errorf("%d reads of the group permissions for two people, want 1", n)
	}
	srv.SetGroupPermission("builders", "ADMIN")
	clk.Advance(31 * time.Second)
	if seat, err := sh.Seat(ctx, "ann"); err != nil || !slices.Equal(seat.Groups, []string{"builders"}) || len(seat.Released) != 0 {
		t.Fatalf("Seat(ann) after the grant = %+v, %v", seat, err)
	}
	if u, err := dir.GetUser(ctx, "ben"); err != nil || !u.Active {
		t.Errorf("GetUser(ben) = %+v, %v; want active through builders", u, err)
	}
	if n := srv.Calls()[perms]; n != 2 {
		t.Errorf("%d reads of the group permissions, want 2", n)
	}
}
