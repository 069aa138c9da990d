package scim

import (
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
)

// entraUser is Entra's documented create for person i, inactive when
// active is "False" (Entra's Switch([IsSoftDeleted], ...) default mapping
// sends a string).
func entraUser(i int, active string) string {
	return strings.NewReplacer(
		"0a21f0f2-8d2a-4f8e-bf98-7363c4aed4ef", entraSubject(i),
		"Test_User_ab6490ee-1e48-479e-a20b-2d77186b5dd1", entraName(i),
		"Test_User_fd0ea19b-0777-472c-9f96-4f70d2226f2e@testuser.com", entraName(i),
		`"active": true`, `"active": `+active,
	).Replace(entraCreateUser)
}

func entraSubject(i int) string { return fmt.Sprintf("0a21f0f2-0000-4000-8000-%012d", i) }
func entraName(i int) string    { return fmt.Sprintf("person%d@contoso.com", i) }

// oktaUser is Okta's documented create for person i.
func oktaUser(i int) string {
	return strings.NewReplacer(
		"test.user@okta.local", oktaName(i),
		"00ujl29u0le5T6Aj10h7", oktaSubject(i),
		`"givenName": "Test"`, fmt.Sprintf(`"givenName": "Test%d"`, i),
	).Replace(oktaCreateUser)
}

func oktaSubject(i int) string { return fmt.Sprintf("00u%017d", i) }
func oktaName(i int) string    { return fmt.Sprintf("person%d@okta.local", i) }

// TestFirstImportInBatches runs the first import of two IdPs the way
// they document it, each reaching its people over several cycles, with
// a few explicit deactivations and deletions in between. Nobody the IdP
// did not deactivate or delete is deprovisioned: a person not pushed yet
// is unknown, never a leaver.
func TestFirstImportInBatches(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	const people, batches = 30, 3
	entraIDs, oktaIDs := map[int]string{}, map[int]string{}
	wantGone := map[string]string{} // subject -> reason

	// Entra's cycle: look the user up by its matching attribute
	// (userName), create when absent, otherwise leave alone; groups by
	// displayName without members, then members by PATCH.
	entraCycle := func(from, to int) {
		for i := from; i < to; i++ {
			if wantGone["entra/"+entraSubject(i)] == ReasonDeleted {
				continue // unassigned: out of the job's scope
			}
			active := "true"
			if i%10 == 7 { // soft-deleted in Entra when the job first sees it
				active = `"False"`
			}
			q := "/Users?filter=" + url.QueryEscape(fmt.Sprintf(`userName eq "%s"`, entraName(i)))
			r := e.must(http.StatusOK, tokenA, "GET", q, "")
			if r.body["totalResults"] == 1.0 {
				continue
			}
			r = e.must(http.StatusCreated, tokenA, "POST", "/Users", entraUser(i, active))
			entraIDs[i] = r.body["id"].(string)
			if active != "true" {
				wantGone["entra/"+entraSubject(i)] = ReasonDeactivated
			}
		}
		name := fmt.Sprintf("Batch %d", from)
		q := "/Groups?excludedAttributes=members&filter=" + url.QueryEscape(fmt.Sprintf(`displayName eq "%s"`, name))
		if e.must(http.StatusOK, tokenA, "GET", q, "").body["totalResults"] == 0.0 {
			g := strings.NewReplacer(`"displayName": "displayName"`, `"displayName": "`+name+`"`,
				"8aa1a0c0-c4c3-4bc0-b4a5-2ef676900159", fmt.Sprintf("8aa1a0c0-0000-4000-8000-%012d", from)).Replace(entraCreateGroup)
			gid := e.must(http.StatusCreated, tokenA, "POST", "/Groups", g).body["id"].(string)
			for i := from; i < to; i++ {
				e.must(http.StatusOK, tokenA, "PATCH", "/Groups/"+gid, fmt.Sprintf(entraAddMembers, entraIDs[i]))
			}
		}
	}
	// Okta's push: list what the app has (paged), look each user up,
	// create it, then a group with its members.
	oktaCycle := func(from, to int) {
		for start := 1; ; start += 10 {
			r := e.must(http.StatusOK, tokenB, "GET", fmt.Sprintf("/Users?startIndex=%d&count=10", start), "")
			if r.body["itemsPerPage"] == 0.0 {
				break
			}
		}
		var members []string
		for i := from; i < to; i++ {
			q := "/Users?filter=" + url.QueryEscape(fmt.Sprintf(`userName eq "%s"`, oktaName(i))) + "&startIndex=1&count=100"
			if e.must(http.StatusOK, tokenB, "GET", q, "").body["totalResults"] == 1.0 {
				continue
			}
			oktaIDs[i] = e.must(http.StatusCreated, tokenB, "POST", "/Users", oktaUser(i)).body["id"].(string)
			members = append(members, fmt.Sprintf(`{"value": %q, "display": %q}`, oktaIDs[i], oktaName(i)))
		}
		g := strings.Replace(oktaCreateGroup, `"Test SCIMv2"`, fmt.Sprintf(`"Okta batch %d"`, from), 1)
		gid := e.must(http.StatusCreated, tokenB, "POST", "/Groups", g).body["id"].(string)
		e.must(http.StatusOK, tokenB, "PATCH", "/Groups/"+gid, `{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
			"Operations":[{"op":"add","path":"members","value":[`+strings.Join(members, ",")+`]}]}`)
	}

	for b := range batches {
		from, to := b*people/batches, (b+1)*people/batches
		entraCycle(from, to)
		oktaCycle(from, to)
		// Between cycles the IdPs act on people they already pushed:
		// Entra disables one (PATCH active false), Okta deactivates one
		// and Entra deletes one (unassigned with delete).
		if b == 1 {
			e.must(http.StatusOK, tokenA, "PATCH", "/Users/"+entraIDs[2], entraDisable)
			wantGone["entra/"+entraSubject(2)] = ReasonDeactivated
			e.must(http.StatusOK, tokenB, "PATCH", "/Users/"+oktaIDs[3], oktaDeactivate)
			wantGone["okta/"+oktaSubject(3)] = ReasonDeactivated
			e.must(http.StatusNoContent, tokenA, "DELETE", "/Users/"+entraIDs[4], "")
			wantGone["entra/"+entraSubject(4)] = ReasonDeleted
		}
	}
	// A later full cycle changes nothing: everybody in scope is found.
	entraCycle(0, people)

	gone := map[string]string{}
	provisioned := map[string]bool{}
	for _, c := range e.hooks.take("") {
		key := c.idp + "/" + c.subject
		switch c.kind {
		case "deprovision":
			if prev, twice := gone[key]; twice {
				t.Errorf("%s deprovisioned twice (%s, %s)", key, prev, c.reason)
			}
			gone[key] = c.reason
		case "provision":
			provisioned[key] = true
			if !c.user.Active {
				t.Errorf("%s provisioned while inactive", key)
			}
		}
	}
	for key, reason := range gone {
		if wantGone[key] != reason {
			t.Errorf("wrongful deprovisioning of %s (%s)", key, reason)
		}
	}
	for key, reason := range wantGone {
		if gone[key] != reason {
			t.Errorf("%s not deprovisioned (want %s, got %q)", key, reason, gone[key])
		}
	}
	t.Logf("%d people pushed by two IdPs in %d batches; %d deprovisioned, all by an explicit deactivation or delete", 2*people, batches, len(gone))

	// Everyone else is active in usher's SCIM state and was provisioned,
	// with their groups.
	for i := range people {
		for _, p := range []struct{ idp, token, id, subject string }{
			{"entra", tokenA, entraIDs[i], entraSubject(i)},
			{"okta", tokenB, oktaIDs[i], oktaSubject(i)},
		} {
			key := p.idp + "/" + p.subject
			r := e.do(p.token, "GET", "/Users/"+p.id, "")
			switch {
			case wantGone[key] == ReasonDeleted:
				wantError(t, r, http.StatusNotFound, "")
			case wantGone[key] != "":
				wantField(t, r.body, "active", false)
			default:
				wantField(t, r.body, "active", true)
				if !provisioned[key] {
					t.Errorf("%s never provisioned", key)
				}
			}
		}
	}
	u, err := e.db.FindSCIMUser(t.Context(), "okta", "userName", oktaName(people-1))
	if err != nil {
		t.Fatal(err)
	}
	groups, err := e.db.SCIMUserGroups(t.Context(), "okta", u.ID)
	if err != nil || !slices.Equal(groups, []string{fmt.Sprintf("Okta batch %d", (batches-1)*people/batches)}) {
		t.Errorf("groups of the last Okta person = %v, %v", groups, err)
	}
}
