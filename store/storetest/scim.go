package storetest

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/usherhq/usher/store"
)

// RunSCIM runs the store.SCIM conformance suite as subtests. open must
// return a store backed by a fresh, empty, migrated database; the suite
// closes it.
func RunSCIM[S interface {
	store.Store
	store.SCIM
}](t *testing.T, open func(t *testing.T) S) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s store.SCIM)
	}{
		{"UserRoundTrip", testSCIMUserRoundTrip},
		{"UserReplace", testSCIMUserReplace},
		{"UserInvalid", testSCIMUserInvalid},
		{"UserNotFound", testSCIMUserNotFound},
		{"UserConflicts", testSCIMUserConflicts},
		{"FindUser", testSCIMFindUser},
		{"UsersPaging", testSCIMUsersPaging},
		{"IdPIsolation", testSCIMIdPIsolation},
		{"GroupRoundTrip", testSCIMGroupRoundTrip},
		{"GroupConflicts", testSCIMGroupConflicts},
		{"GroupUnknownMember", testSCIMGroupUnknownMember},
		{"FindGroup", testSCIMFindGroup},
		{"GroupsPaging", testSCIMGroupsPaging},
		{"DeleteUserLeavesGroups", testSCIMDeleteUserLeavesGroups},
		{"DeleteGroupDropsMembers", testSCIMDeleteGroupDropsMembers},
		{"ConcurrentPut", testSCIMConcurrentPut},
		{"ContextCanceled", testSCIMContextCanceled},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel() // every test has a database of its own
			s := open(t)
			t.Cleanup(func() {
				if err := s.Close(); err != nil {
					t.Errorf("close: %v", err)
				}
			})
			tt.fn(t, s)
		})
	}
}

func scimUser(idp, id, userName, externalID string) store.SCIMUser {
	return store.SCIMUser{
		IdP: idp, ID: id, UserName: userName, ExternalID: externalID,
		Subject: idp + "-sub-" + id, Active: true,
		Resource: fmt.Appendf(nil, `{"userName":%q,"idp":%q}`, userName, idp),
		Created:  base, Updated: base,
	}
}

func scimPutUser(t *testing.T, s store.SCIM, u store.SCIMUser) {
	t.Helper()
	if err := s.PutSCIMUser(context.Background(), u); err != nil {
		t.Fatalf("PutSCIMUser(%s/%s %s): %v", u.IdP, u.ID, u.UserName, err)
	}
}

func scimGetUser(t *testing.T, s store.SCIM, idp, id string) store.SCIMUser {
	t.Helper()
	u, err := s.SCIMUser(context.Background(), idp, id)
	if err != nil {
		t.Fatalf("SCIMUser(%s/%s): %v", idp, id, err)
	}
	return u
}

// scimSameUser compares everything but Version, which the caller checks.
func scimSameUser(t *testing.T, what string, got, want store.SCIMUser) {
	t.Helper()
	if got.IdP != want.IdP || got.ID != want.ID || got.ExternalID != want.ExternalID ||
		got.UserName != want.UserName || got.Subject != want.Subject || got.Active != want.Active ||
		string(got.Resource) != string(want.Resource) ||
		!got.Created.Equal(ms(want.Created)) || !got.Updated.Equal(ms(want.Updated)) {
		t.Fatalf("%s:\n got %+v\nwant %+v", what, got, want)
	}
	if got.Created.Location() != time.UTC || got.Updated.Location() != time.UTC {
		t.Fatalf("%s: times not in UTC: %v, %v", what, got.Created, got.Updated)
	}
}

func scimPutGroup(t *testing.T, s store.SCIM, g store.SCIMGroup) {
	t.Helper()
	if err := s.PutSCIMGroup(context.Background(), g); err != nil {
		t.Fatalf("PutSCIMGroup(%s/%s %s): %v", g.IdP, g.ID, g.DisplayName, err)
	}
}

func scimGetGroup(t *testing.T, s store.SCIM, idp, id string) store.SCIMGroup {
	t.Helper()
	g, err := s.SCIMGroup(context.Background(), idp, id)
	if err != nil {
		t.Fatalf("SCIMGroup(%s/%s): %v", idp, id, err)
	}
	return g
}

func scimUserGroups(t *testing.T, s store.SCIM, idp, userID string) []string {
	t.Helper()
	names, err := s.SCIMUserGroups(context.Background(), idp, userID)
	if err != nil {
		t.Fatalf("SCIMUserGroups(%s/%s): %v", idp, userID, err)
	}
	return names
}

func testSCIMUserRoundTrip(t *testing.T, s store.SCIM) {
	want := scimUser("okta", "u1", "Alice", "ext-1")
	want.Updated = base.Add(time.Minute)
	want.Version = 42 // ignored: the store counts
	scimPutUser(t, s, want)
	got := scimGetUser(t, s, "okta", "u1")
	scimSameUser(t, "SCIMUser", got, want)
	if got.Version != 1 {
		t.Fatalf("new user Version = %d, want 1", got.Version)
	}

	// Zero times mean now; an inactive user without a resource round-trips.
	before := time.Now().Add(-time.Second)
	scimPutUser(t, s, store.SCIMUser{IdP: "okta", ID: "u2", UserName: "bob"})
	got = scimGetUser(t, s, "okta", "u2")
	after := time.Now().Add(time.Second)
	for _, tm := range []time.Time{got.Created, got.Updated} {
		if tm.Before(before) || tm.After(after) {
			t.Fatalf("zero time became %v, want about now", tm)
		}
	}
	if got.Active || len(got.Resource) != 0 || got.ExternalID != "" || got.Subject != "" || got.Version != 1 {
		t.Fatalf("minimal user came back as %+v", got)
	}
}

func testSCIMUserReplace(t *testing.T, s store.SCIM) {
	first := scimUser("okta", "u1", "alice", "ext-1")
	scimPutUser(t, s, first)

	second := first
	second.UserName = "alice.smith"
	second.ExternalID = "ext-2"
	second.Subject = "other"
	second.Active = false
	second.Resource = []byte(`{"active":false}`)
	second.Created = base.Add(24 * time.Hour) // ignored: Created is the first Put's
	second.Updated = base.Add(time.Hour)
	scimPutUser(t, s, second)

	got := scimGetUser(t, s, "okta", "u1")
	want := second
	want.Created = first.Created
	scimSameUser(t, "replaced", got, want)
	if got.Version != 2 {
		t.Fatalf("Version after replace = %d, want 2", got.Version)
	}
	// Every Put is a change, even an identical one.
	scimPutUser(t, s, second)
	if got := scimGetUser(t, s, "okta", "u1"); got.Version != 3 {
		t.Fatalf("Version after third Put = %d, want 3", got.Version)
	}
	// The old names are free again, the new ones taken.
	ctx := context.Background()
	if _, err := s.FindSCIMUser(ctx, "okta", "userName", "alice"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("old userName still found: %v", err)
	}
	if _, err := s.FindSCIMUser(ctx, "okta", "externalId", "ext-1"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("old externalId still found: %v", err)
	}
	scimPutUser(t, s, scimUser("okta", "u2", "alice", "ext-1"))
}

func testSCIMUserInvalid(t *testing.T, s store.SCIM) {
	for _, u := range []store.SCIMUser{
		{ID: "u1", UserName: "alice"},
		{IdP: "okta", UserName: "alice"},
		{IdP: "okta", ID: "u1"},
	} {
		err := s.PutSCIMUser(context.Background(), u)
		if err == nil || errors.Is(err, store.ErrConflict) || !errors.Is(err, store.ErrInvalid) {
			t.Errorf("PutSCIMUser(%+v) = %v, want a validation error (ErrInvalid)", u, err)
		}
	}
	for _, g := range []store.SCIMGroup{
		{ID: "g1", DisplayName: "Admins"},
		{IdP: "okta", DisplayName: "Admins"},
		{IdP: "okta", ID: "g1"},
	} {
		err := s.PutSCIMGroup(context.Background(), g)
		if err == nil || errors.Is(err, store.ErrConflict) || !errors.Is(err, store.ErrInvalid) {
			t.Errorf("PutSCIMGroup(%+v) = %v, want a validation error (ErrInvalid)", g, err)
		}
	}
}

func testSCIMUserNotFound(t *testing.T, s store.SCIM) {
	ctx := context.Background()
	if _, err := s.SCIMUser(ctx, "okta", "nobody"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("SCIMUser = %v, want ErrNotFound", err)
	}
	if err := s.DeleteSCIMUser(ctx, "okta", "nobody"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("DeleteSCIMUser = %v, want ErrNotFound", err)
	}
	if _, err := s.SCIMGroup(ctx, "okta", "nobody"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("SCIMGroup = %v, want ErrNotFound", err)
	}
	if err := s.DeleteSCIMGroup(ctx, "okta", "nobody"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("DeleteSCIMGroup = %v, want ErrNotFound", err)
	}
	// An unknown user is in no groups.
	if names := scimUserGroups(t, s, "okta", "nobody"); len(names) != 0 {
		t.Fatalf("SCIMUserGroups(unknown) = %v, want none", names)
	}
	// By the bound login subject, within the IdP only.
	scimPutUser(t, s, scimUser("okta", "u9", "ivy", "ext-9"))
	if u, err := s.FindSCIMUser(ctx, "okta", "subject", "okta-sub-u9"); err != nil || u.ID != "u9" {
		t.Fatalf("FindSCIMUser(subject) = %+v, %v", u, err)
	}
	if _, err := s.FindSCIMUser(ctx, "entra", "subject", "okta-sub-u9"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("FindSCIMUser(subject) in another IdP = %v, want ErrNotFound", err)
	}
	if err := s.DeleteSCIMUser(ctx, "okta", "u9"); err != nil {
		t.Fatal(err)
	}
	// Users without an externalId are not found by an empty one.
	scimPutUser(t, s, scimUser("okta", "u1", "alice", ""))
	if _, err := s.FindSCIMUser(ctx, "okta", "externalId", ""); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("FindSCIMUser(externalId=\"\") = %v, want ErrNotFound", err)
	}
	if err := s.DeleteSCIMUser(ctx, "okta", "u1"); err != nil {
		t.Fatalf("DeleteSCIMUser: %v", err)
	}
	if _, err := s.SCIMUser(ctx, "okta", "u1"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("SCIMUser after delete = %v, want ErrNotFound", err)
	}
	if err := s.DeleteSCIMUser(ctx, "okta", "u1"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("second DeleteSCIMUser = %v, want ErrNotFound", err)
	}
}

func testSCIMUserConflicts(t *testing.T, s store.SCIM) {
	ctx := context.Background()
	alice := scimUser("okta", "u1", "alice", "ext-1")
	scimPutUser(t, s, alice)
	bob := scimUser("okta", "u2", "bob", "ext-2")
	scimPutUser(t, s, bob)
	// Users without an externalId do not collide with each other.
	scimPutUser(t, s, scimUser("okta", "u3", "carol", ""))
	scimPutUser(t, s, scimUser("okta", "u4", "dave", ""))

	for _, u := range []store.SCIMUser{
		scimUser("okta", "u9", "alice", ""),      // new user, taken userName
		scimUser("okta", "u9", "ALICE", ""),      // case-insensitively
		scimUser("okta", "u9", "erin", "ext-1"),  // taken externalId
		scimUser("okta", "u2", "Alice", "ext-2"), // existing user renaming onto a taken name
		scimUser("okta", "u2", "bob", "ext-1"),   // existing user taking an externalId
	} {
		if err := s.PutSCIMUser(ctx, u); !errors.Is(err, store.ErrConflict) {
			t.Fatalf("PutSCIMUser(%s/%s %s ext=%q) = %v, want ErrConflict", u.IdP, u.ID, u.UserName, u.ExternalID, err)
		}
	}
	// Nothing changed.
	if _, err := s.SCIMUser(ctx, "okta", "u9"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("refused user was stored: %v", err)
	}
	got := scimGetUser(t, s, "okta", "u2")
	scimSameUser(t, "bob after refused changes", got, bob)
	if got.Version != 1 {
		t.Fatalf("refused Put bumped Version to %d", got.Version)
	}
	// externalId is exact: another case is another value.
	scimPutUser(t, s, scimUser("okta", "u5", "erin", "EXT-1"))
	// Changing only the case of one's own userName is no conflict.
	alice.UserName = "Alice"
	scimPutUser(t, s, alice)
	if got := scimGetUser(t, s, "okta", "u1"); got.UserName != "Alice" || got.Version != 2 {
		t.Fatalf("case rename = %+v", got)
	}
}

func testSCIMFindUser(t *testing.T, s store.SCIM) {
	ctx := context.Background()
	alice := scimUser("okta", "u1", "Alice.Smith", "Ext-1")
	scimPutUser(t, s, alice)
	scimPutUser(t, s, scimUser("okta", "u2", "bob", "ext-2"))
	tests := []struct {
		attr, value string
		want        string // ID; "" = ErrNotFound
	}{
		{"userName", "Alice.Smith", "u1"},
		{"userName", "alice.smith", "u1"},
		{"userName", "ALICE.SMITH", "u1"},
		{"username", "bob", "u2"}, // SCIM attribute names are case-insensitive
		{"userName", "alice", ""},
		{"externalId", "Ext-1", "u1"},
		{"externalId", "ext-1", ""}, // exact
		{"externalId", "ext-2", "u2"},
		{"externalid", "ext-2", "u2"},
		{"externalId", "nope", ""},
	}
	for _, tt := range tests {
		got, err := s.FindSCIMUser(ctx, "okta", tt.attr, tt.value)
		switch {
		case tt.want == "" && !errors.Is(err, store.ErrNotFound):
			t.Errorf("FindSCIMUser(%s=%q) = %+v, %v; want ErrNotFound", tt.attr, tt.value, got, err)
		case tt.want != "" && (err != nil || got.ID != tt.want):
			t.Errorf("FindSCIMUser(%s=%q) = %+v, %v; want %s", tt.attr, tt.value, got, err, tt.want)
		}
	}
	got, err := s.FindSCIMUser(ctx, "okta", "userName", "alice.smith")
	if err != nil {
		t.Fatalf("FindSCIMUser: %v", err)
	}
	scimSameUser(t, "found", got, alice)
	for _, attr := range []string{"emails", "id", "displayName", ""} {
		_, err := s.FindSCIMUser(ctx, "okta", attr, "u1")
		if err == nil || errors.Is(err, store.ErrNotFound) || !errors.Is(err, store.ErrInvalid) {
			t.Errorf("FindSCIMUser(%q) = %v, want ErrInvalid, not ErrNotFound", attr, err)
		}
	}
}

func scimIDs[T any](items []T, id func(T) string) []string {
	var ids []string
	for _, it := range items {
		ids = append(ids, id(it))
	}
	return ids
}

func testSCIMUsersPaging(t *testing.T, s store.SCIM) {
	ctx := context.Background()
	if users, total, err := s.SCIMUsers(ctx, "okta", 0, 10); err != nil || len(users) != 0 || total != 0 {
		t.Fatalf("SCIMUsers of an empty IdP = %v, %d, %v", users, total, err)
	}
	var want []string
	for _, i := range rand.Perm(25) {
		id := fmt.Sprintf("u%02d", i)
		scimPutUser(t, s, scimUser("okta", id, "user"+id, ""))
		want = append(want, id)
	}
	// Another IdP's users neither show nor count.
	for i := range 7 {
		id := fmt.Sprintf("u%02d", i)
		scimPutUser(t, s, scimUser("entra", id, "user"+id, ""))
	}
	slices.Sort(want)
	userID := func(u store.SCIMUser) string { return u.ID }

	var got []string
	for offset := 0; offset < 30; offset += 10 {
		users, total, err := s.SCIMUsers(ctx, "okta", offset, 10)
		if err != nil {
			t.Fatalf("SCIMUsers(%d, 10): %v", offset, err)
		}
		if total != 25 {
			t.Fatalf("SCIMUsers(%d, 10) total = %d, want 25", offset, total)
		}
		if wantLen := min(10, 25-offset); len(users) != wantLen {
			t.Fatalf("SCIMUsers(%d, 10) gave %d users, want %d", offset, len(users), wantLen)
		}
		for _, u := range users {
			if u.IdP != "okta" {
				t.Fatalf("SCIMUsers(okta) returned %+v", u)
			}
		}
		got = append(got, scimIDs(users, userID)...)
	}
	if !slices.Equal(got, want) {
		t.Fatalf("paged ids = %v, want %v", got, want)
	}
	tests := []struct {
		offset, limit int
		want          []string
	}{
		{25, 10, nil},
		{100, 10, nil},
		{0, 0, nil}, // SCIM count=0: the total only
		{-5, 3, want[:3]},
		{23, 10, want[23:]},
	}
	for _, tt := range tests {
		users, total, err := s.SCIMUsers(ctx, "okta", tt.offset, tt.limit)
		if err != nil || total != 25 || !slices.Equal(scimIDs(users, userID), tt.want) {
			t.Errorf("SCIMUsers(%d, %d) = %v, %d, %v; want %v, 25", tt.offset, tt.limit, scimIDs(users, userID), total, err, tt.want)
		}
	}
	if _, total, err := s.SCIMUsers(ctx, "entra", 0, 100); err != nil || total != 7 {
		t.Fatalf("SCIMUsers(entra) total = %d, %v; want 7", total, err)
	}
}

// Two IdPs pushing the same ids and names each see only their own.
func testSCIMIdPIsolation(t *testing.T, s store.SCIM) {
	ctx := context.Background()
	okta := scimUser("okta", "1", "alice", "ext-1")
	entra := scimUser("entra", "1", "ALICE", "ext-1")
	scimPutUser(t, s, okta)
	scimPutUser(t, s, entra) // same id, userName and externalId: no conflict
	scimSameUser(t, "okta's", scimGetUser(t, s, "okta", "1"), okta)
	scimSameUser(t, "entra's", scimGetUser(t, s, "entra", "1"), entra)
	for _, idp := range []string{"okta", "entra"} {
		for _, f := range [][2]string{{"userName", "alice"}, {"externalId", "ext-1"}} {
			got, err := s.FindSCIMUser(ctx, idp, f[0], f[1])
			if err != nil || got.IdP != idp || got.Subject != idp+"-sub-1" {
				t.Fatalf("FindSCIMUser(%s, %s=%s) = %+v, %v; want %s's user", idp, f[0], f[1], got, err, idp)
			}
		}
	}
	if _, err := s.SCIMUser(ctx, "google", "1"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("SCIMUser at a third IdP = %v, want ErrNotFound", err)
	}
	if _, err := s.FindSCIMUser(ctx, "google", "userName", "alice"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("FindSCIMUser at a third IdP = %v, want ErrNotFound", err)
	}

	// Groups: same ids and names, members from the own IdP only.
	scimPutUser(t, s, scimUser("okta", "2", "bob", ""))
	scimPutGroup(t, s, store.SCIMGroup{IdP: "okta", ID: "g", DisplayName: "Admins", ExternalID: "gx", Members: []string{"1", "2"}})
	scimPutGroup(t, s, store.SCIMGroup{IdP: "entra", ID: "g", DisplayName: "admins", ExternalID: "gx", Members: []string{"1"}})
	if err := s.PutSCIMGroup(ctx, store.SCIMGroup{IdP: "entra", ID: "h", DisplayName: "Other", Members: []string{"2"}}); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("entra group with okta's user 2 = %v, want ErrNotFound", err)
	}
	if g := scimGetGroup(t, s, "okta", "g"); !slices.Equal(g.Members, []string{"1", "2"}) || g.DisplayName != "Admins" {
		t.Fatalf("okta group = %+v", g)
	}
	if g := scimGetGroup(t, s, "entra", "g"); !slices.Equal(g.Members, []string{"1"}) || g.DisplayName != "admins" {
		t.Fatalf("entra group = %+v", g)
	}
	if names := scimUserGroups(t, s, "entra", "1"); !slices.Equal(names, []string{"admins"}) {
		t.Fatalf("SCIMUserGroups(entra/1) = %v", names)
	}
	if names := scimUserGroups(t, s, "okta", "1"); !slices.Equal(names, []string{"Admins"}) {
		t.Fatalf("SCIMUserGroups(okta/1) = %v", names)
	}
	for _, idp := range []string{"okta", "entra"} {
		g, err := s.FindSCIMGroup(ctx, idp, "externalId", "gx")
		if err != nil || g.IdP != idp {
			t.Fatalf("FindSCIMGroup(%s, externalId) = %+v, %v", idp, g, err)
		}
	}

	// Deleting okta's user 1 and group g leaves entra's alone.
	if err := s.DeleteSCIMUser(ctx, "okta", "1"); err != nil {
		t.Fatalf("DeleteSCIMUser(okta/1): %v", err)
	}
	if err := s.DeleteSCIMGroup(ctx, "okta", "g"); err != nil {
		t.Fatalf("DeleteSCIMGroup(okta/g): %v", err)
	}
	scimSameUser(t, "entra's after okta's delete", scimGetUser(t, s, "entra", "1"), entra)
	if g := scimGetGroup(t, s, "entra", "g"); !slices.Equal(g.Members, []string{"1"}) || g.Version != 1 {
		t.Fatalf("entra group after okta's deletes = %+v", g)
	}
	if users, total, err := s.SCIMUsers(ctx, "entra", 0, 10); err != nil || total != 1 || len(users) != 1 || users[0].IdP != "entra" {
		t.Fatalf("SCIMUsers(entra) = %+v, %d, %v", users, total, err)
	}
	if groups, total, err := s.SCIMGroups(ctx, "okta", 0, 10); err != nil || total != 0 || len(groups) != 0 {
		t.Fatalf("SCIMGroups(okta) = %+v, %d, %v", groups, total, err)
	}
}

func testSCIMGroupRoundTrip(t *testing.T, s store.SCIM) {
	for _, id := range []string{"a", "b", "c"} {
		scimPutUser(t, s, scimUser("okta", id, "user-"+id, ""))
	}
	first := store.SCIMGroup{IdP: "okta", ID: "g1", ExternalID: "gx1", DisplayName: "Jira Admins",
		Members: []string{"c", "a", "a"}, Created: base, Updated: base.Add(time.Second), Version: 9}
	scimPutGroup(t, s, first)
	got := scimGetGroup(t, s, "okta", "g1")
	if got.IdP != "okta" || got.ID != "g1" || got.ExternalID != "gx1" || got.DisplayName != "Jira Admins" ||
		!slices.Equal(got.Members, []string{"a", "c"}) || got.Version != 1 ||
		!got.Created.Equal(ms(base)) || !got.Updated.Equal(ms(base.Add(time.Second))) || got.Created.Location() != time.UTC {
		t.Fatalf("SCIMGroup = %+v", got)
	}
	if names := scimUserGroups(t, s, "okta", "a"); !slices.Equal(names, []string{"Jira Admins"}) {
		t.Fatalf("SCIMUserGroups(a) = %v", names)
	}

	// Replace: the member list is replaced, Created kept, Version bumped.
	second := first
	second.DisplayName = "jira-admins"
	second.Members = []string{"b"}
	second.Created = base.Add(time.Hour)
	second.Updated = base.Add(2 * time.Hour)
	scimPutGroup(t, s, second)
	got = scimGetGroup(t, s, "okta", "g1")
	if got.DisplayName != "jira-admins" || !slices.Equal(got.Members, []string{"b"}) || got.Version != 2 ||
		!got.Created.Equal(ms(base)) || !got.Updated.Equal(ms(base.Add(2*time.Hour))) {
		t.Fatalf("replaced group = %+v", got)
	}
	if names := scimUserGroups(t, s, "okta", "a"); len(names) != 0 {
		t.Fatalf("SCIMUserGroups(a) after removal = %v, want none", names)
	}
	// An empty member list empties the group.
	second.Members = nil
	scimPutGroup(t, s, second)
	if got := scimGetGroup(t, s, "okta", "g1"); len(got.Members) != 0 || got.Version != 3 {
		t.Fatalf("emptied group = %+v", got)
	}

	// A user's groups come back by name, sorted.
	for i, name := range []string{"Zeta", "alpha", "Beta"} {
		scimPutGroup(t, s, store.SCIMGroup{IdP: "okta", ID: fmt.Sprint("m", i), DisplayName: name, Members: []string{"a", "c"}})
	}
	if names := scimUserGroups(t, s, "okta", "a"); !slices.Equal(names, []string{"Beta", "Zeta", "alpha"}) {
		t.Fatalf("SCIMUserGroups(a) = %v, want [Beta Zeta alpha]", names)
	}
}

func testSCIMGroupConflicts(t *testing.T, s store.SCIM) {
	ctx := context.Background()
	admins := store.SCIMGroup{IdP: "okta", ID: "g1", DisplayName: "Admins", ExternalID: "gx1"}
	scimPutGroup(t, s, admins)
	scimPutGroup(t, s, store.SCIMGroup{IdP: "okta", ID: "g2", DisplayName: "Users"})
	scimPutGroup(t, s, store.SCIMGroup{IdP: "okta", ID: "g3", DisplayName: "Guests"})
	for _, g := range []store.SCIMGroup{
		{IdP: "okta", ID: "g9", DisplayName: "ADMINS"},
		{IdP: "okta", ID: "g9", DisplayName: "Staff", ExternalID: "gx1"},
		{IdP: "okta", ID: "g2", DisplayName: "admins"},
	} {
		if err := s.PutSCIMGroup(ctx, g); !errors.Is(err, store.ErrConflict) {
			t.Fatalf("PutSCIMGroup(%s/%s %s ext=%q) = %v, want ErrConflict", g.IdP, g.ID, g.DisplayName, g.ExternalID, err)
		}
	}
	if _, err := s.SCIMGroup(ctx, "okta", "g9"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("refused group was stored: %v", err)
	}
	if g := scimGetGroup(t, s, "okta", "g2"); g.DisplayName != "Users" || g.Version != 1 {
		t.Fatalf("refused rename changed the group: %+v", g)
	}
}

func testSCIMGroupUnknownMember(t *testing.T, s store.SCIM) {
	ctx := context.Background()
	scimPutUser(t, s, scimUser("okta", "a", "alice", ""))
	scimPutGroup(t, s, store.SCIMGroup{IdP: "okta", ID: "g1", DisplayName: "Admins", Members: []string{"a"}})

	// Nothing changes when one member is unknown: not the group, not its
	// members.
	err := s.PutSCIMGroup(ctx, store.SCIMGroup{IdP: "okta", ID: "g1", DisplayName: "Renamed", Members: []string{"ghost"}})
	if !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("PutSCIMGroup with an unknown member = %v, want ErrNotFound", err)
	}
	if g := scimGetGroup(t, s, "okta", "g1"); g.DisplayName != "Admins" || !slices.Equal(g.Members, []string{"a"}) || g.Version != 1 {
		t.Fatalf("group after refused Put = %+v", g)
	}
	err = s.PutSCIMGroup(ctx, store.SCIMGroup{IdP: "okta", ID: "g2", DisplayName: "New", Members: []string{"a", "ghost"}})
	if !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("new group with an unknown member = %v, want ErrNotFound", err)
	}
	if _, err := s.SCIMGroup(ctx, "okta", "g2"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("refused new group was stored: %v", err)
	}
	if names := scimUserGroups(t, s, "okta", "a"); !slices.Equal(names, []string{"Admins"}) {
		t.Fatalf("SCIMUserGroups(a) = %v", names)
	}
}

func testSCIMFindGroup(t *testing.T, s store.SCIM) {
	ctx := context.Background()
	scimPutUser(t, s, scimUser("okta", "a", "alice", ""))
	scimPutGroup(t, s, store.SCIMGroup{IdP: "okta", ID: "g1", DisplayName: "Jira Admins", ExternalID: "GX", Members: []string{"a"}})
	tests := []struct {
		attr, value string
		want        string
	}{
		{"displayName", "Jira Admins", "g1"},
		{"displayName", "jira admins", "g1"},
		{"displayname", "JIRA ADMINS", "g1"},
		{"displayName", "Jira", ""},
		{"externalId", "GX", "g1"},
		{"externalId", "gx", ""},
		{"externalId", "", ""},
	}
	for _, tt := range tests {
		got, err := s.FindSCIMGroup(ctx, "okta", tt.attr, tt.value)
		switch {
		case tt.want == "" && !errors.Is(err, store.ErrNotFound):
			t.Errorf("FindSCIMGroup(%s=%q) = %+v, %v; want ErrNotFound", tt.attr, tt.value, got, err)
		case tt.want != "" && (err != nil || got.ID != tt.want || !slices.Equal(got.Members, []string{"a"})):
			t.Errorf("FindSCIMGroup(%s=%q) = %+v, %v; want %s with member a", tt.attr, tt.value, got, err, tt.want)
		}
	}
	for _, attr := range []string{"members", "userName", ""} {
		_, err := s.FindSCIMGroup(ctx, "okta", attr, "x")
		if err == nil || errors.Is(err, store.ErrNotFound) || !errors.Is(err, store.ErrInvalid) {
			t.Errorf("FindSCIMGroup(%q) = %v, want ErrInvalid, not ErrNotFound", attr, err)
		}
	}
}

func testSCIMGroupsPaging(t *testing.T, s store.SCIM) {
	ctx := context.Background()
	scimPutUser(t, s, scimUser("okta", "a", "alice", ""))
	var want []string
	for _, i := range rand.Perm(12) {
		id := fmt.Sprintf("g%02d", i)
		scimPutGroup(t, s, store.SCIMGroup{IdP: "okta", ID: id, DisplayName: "group " + id, Members: []string{"a"}})
		want = append(want, id)
	}
	scimPutGroup(t, s, store.SCIMGroup{IdP: "entra", ID: "g00", DisplayName: "group g00"})
	slices.Sort(want)
	var got []string
	for offset := 0; offset < 12; offset += 5 {
		groups, total, err := s.SCIMGroups(ctx, "okta", offset, 5)
		if err != nil || total != 12 {
			t.Fatalf("SCIMGroups(%d, 5) = %d groups, total %d, %v; want total 12", offset, len(groups), total, err)
		}
		for _, g := range groups {
			if g.IdP != "okta" || !slices.Equal(g.Members, []string{"a"}) {
				t.Fatalf("SCIMGroups returned %+v", g)
			}
		}
		got = append(got, scimIDs(groups, func(g store.SCIMGroup) string { return g.ID })...)
	}
	if !slices.Equal(got, want) {
		t.Fatalf("paged group ids = %v, want %v", got, want)
	}
	if groups, total, err := s.SCIMGroups(ctx, "okta", 0, 0); err != nil || total != 12 || len(groups) != 0 {
		t.Fatalf("SCIMGroups(0, 0) = %d groups, total %d, %v; want the total only", len(groups), total, err)
	}
}

func testSCIMDeleteUserLeavesGroups(t *testing.T, s store.SCIM) {
	ctx := context.Background()
	scimPutUser(t, s, scimUser("okta", "a", "alice", ""))
	scimPutUser(t, s, scimUser("okta", "b", "bob", ""))
	scimPutGroup(t, s, store.SCIMGroup{IdP: "okta", ID: "g1", DisplayName: "One", Members: []string{"a", "b"}})
	scimPutGroup(t, s, store.SCIMGroup{IdP: "okta", ID: "g2", DisplayName: "Two", Members: []string{"a"}})
	scimPutGroup(t, s, store.SCIMGroup{IdP: "okta", ID: "g3", DisplayName: "Three", Members: []string{"b"}})

	if err := s.DeleteSCIMUser(ctx, "okta", "a"); err != nil {
		t.Fatalf("DeleteSCIMUser: %v", err)
	}
	// The groups a was in changed, so their Version moved on.
	for _, tt := range []struct {
		id      string
		members []string
		version int
	}{{"g1", []string{"b"}, 2}, {"g2", nil, 2}, {"g3", []string{"b"}, 1}} {
		g := scimGetGroup(t, s, "okta", tt.id)
		if !slices.Equal(g.Members, tt.members) || g.Version != tt.version {
			t.Errorf("%s after deleting a = members %v version %d; want %v version %d", tt.id, g.Members, g.Version, tt.members, tt.version)
		}
	}
	if names := scimUserGroups(t, s, "okta", "a"); len(names) != 0 {
		t.Fatalf("deleted user still in %v", names)
	}
	// A new user with the old id starts without the old memberships.
	scimPutUser(t, s, scimUser("okta", "a", "alice", ""))
	if names := scimUserGroups(t, s, "okta", "a"); len(names) != 0 {
		t.Fatalf("recreated user inherited %v", names)
	}
}

func testSCIMDeleteGroupDropsMembers(t *testing.T, s store.SCIM) {
	ctx := context.Background()
	scimPutUser(t, s, scimUser("okta", "a", "alice", ""))
	scimPutGroup(t, s, store.SCIMGroup{IdP: "okta", ID: "g1", DisplayName: "One", Members: []string{"a"}})
	scimPutGroup(t, s, store.SCIMGroup{IdP: "okta", ID: "g2", DisplayName: "Two", Members: []string{"a"}})
	if err := s.DeleteSCIMGroup(ctx, "okta", "g1"); err != nil {
		t.Fatalf("DeleteSCIMGroup: %v", err)
	}
	if _, err := s.SCIMGroup(ctx, "okta", "g1"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("SCIMGroup after delete = %v, want ErrNotFound", err)
	}
	if err := s.DeleteSCIMGroup(ctx, "okta", "g1"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("second DeleteSCIMGroup = %v, want ErrNotFound", err)
	}
	if names := scimUserGroups(t, s, "okta", "a"); !slices.Equal(names, []string{"Two"}) {
		t.Fatalf("SCIMUserGroups after group delete = %v, want [Two]", names)
	}
	// The user is untouched, and a new group with the old id starts empty.
	if u := scimGetUser(t, s, "okta", "a"); u.Version != 1 {
		t.Fatalf("user after group delete = %+v", u)
	}
	scimPutGroup(t, s, store.SCIMGroup{IdP: "okta", ID: "g1", DisplayName: "One"})
	if g := scimGetGroup(t, s, "okta", "g1"); len(g.Members) != 0 || g.Version != 1 {
		t.Fatalf("recreated group = %+v, want no members, version 1", g)
	}
}

// Replicas creating one resource at once all succeed, and every Put
// counts. Many rounds, because the window in which two creations race
// inside the database is narrow.
func testSCIMConcurrentPut(t *testing.T, s store.SCIM) {
	const rounds, racers = 40, 8
	scimPutUser(t, s, scimUser("okta", "a", "alice", ""))
	for r := range rounds {
		var wg sync.WaitGroup
		errs := make(chan error, 2*racers)
		start := make(chan struct{})
		uid, gid := fmt.Sprint("u", r), fmt.Sprint("g", r)
		for range racers {
			wg.Go(func() {
				<-start
				errs <- s.PutSCIMUser(context.Background(), scimUser("okta", uid, "user-"+uid, "ext-"+uid))
			})
			wg.Go(func() {
				<-start
				errs <- s.PutSCIMGroup(context.Background(), store.SCIMGroup{IdP: "okta", ID: gid, DisplayName: "team " + gid, ExternalID: "ext-" + gid, Members: []string{"a"}})
			})
		}
		close(start)
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatalf("round %d: concurrent Put of one resource: %v", r, err)
			}
		}
		if u := scimGetUser(t, s, "okta", uid); u.Version != racers {
			t.Fatalf("round %d: Version after %d Puts = %d", r, racers, u.Version)
		}
		if g := scimGetGroup(t, s, "okta", gid); g.Version != racers || !slices.Equal(g.Members, []string{"a"}) {
			t.Fatalf("round %d: group after %d Puts = %+v", r, racers, g)
		}
	}
}

func testSCIMContextCanceled(t *testing.T, s store.SCIM) {
	scimPutUser(t, s, scimUser("okta", "a", "alice", ""))
	scimPutGroup(t, s, store.SCIMGroup{IdP: "okta", ID: "g", DisplayName: "Team", Members: []string{"a"}})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	calls := map[string]func() error{
		"PutSCIMUser":    func() error { return s.PutSCIMUser(ctx, scimUser("okta", "b", "bob", "")) },
		"SCIMUser":       func() error { _, err := s.SCIMUser(ctx, "okta", "a"); return err },
		"FindSCIMUser":   func() error { _, err := s.FindSCIMUser(ctx, "okta", "userName", "alice"); return err },
		"SCIMUsers":      func() error { _, _, err := s.SCIMUsers(ctx, "okta", 0, 10); return err },
		"DeleteSCIMUser": func() error { return s.DeleteSCIMUser(ctx, "okta", "a") },
		"PutSCIMGroup": func() error {
			return s.PutSCIMGroup(ctx, store.SCIMGroup{IdP: "okta", ID: "h", DisplayName: "Other", Members: []string{"a"}})
		},
		"SCIMGroup":       func() error { _, err := s.SCIMGroup(ctx, "okta", "g"); return err },
		"FindSCIMGroup":   func() error { _, err := s.FindSCIMGroup(ctx, "okta", "displayName", "Team"); return err },
		"SCIMGroups":      func() error { _, _, err := s.SCIMGroups(ctx, "okta", 0, 10); return err },
		"DeleteSCIMGroup": func() error { return s.DeleteSCIMGroup(ctx, "okta", "g") },
		"SCIMUserGroups":  func() error { _, err := s.SCIMUserGroups(ctx, "okta", "a"); return err },
	}
	for name, call := range calls {
		// The caller gave up: that is not the database's fault.
		if err := call(); !errors.Is(err, context.Canceled) || errors.Is(err, store.ErrUnavailable) {
			t.Errorf("%s with canceled context = %v, want context.Canceled and not ErrUnavailable", name, err)
		}
	}
	// Nothing was written or deleted.
	bg := context.Background()
	if _, err := s.SCIMUser(bg, "okta", "b"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("canceled PutSCIMUser stored a user: %v", err)
	}
	if _, err := s.SCIMGroup(bg, "okta", "h"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("canceled PutSCIMGroup stored a group: %v", err)
	}
	scimGetUser(t, s, "okta", "a")
	if g := scimGetGroup(t, s, "okta", "g"); !slices.Equal(g.Members, []string{"a"}) {
		t.Errorf("group after canceled calls = %+v", g)
	}
}
