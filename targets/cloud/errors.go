package cloud

import (
	"errors"
	"net/http"

	"github.com/usherhq/usher/targets"
)

// The refusals of the Cloud APIs, in words an admin can act on. Each
// arrives wrapped in a *targets.Error that keeps the app, the operation,
// the user, the HTTP status and Atlassian's own message.
var (
	// ErrLicenceLimit: ADMIN-UAM-409-3, an app's user limit would be
	// exceeded (§26.5, §26.6).
	ErrLicenceLimit = errors.New("licence limit reached: raise the app's user limit or suspend someone first")
	// ErrGroupSynced: the group comes from the organization's IdP sync
	// and cannot be changed here (§26.5). It is a targets.ErrGroupReadOnly.
	ErrGroupSynced error = readOnlyGroup("group is managed by the org's IdP sync: change it in the identity provider")
	// ErrOrgKeyRefused: 401 from api.atlassian.com. Site API tokens and
	// OAuth tokens are refused there; org API keys expire (§23).
	ErrOrgKeyRefused = errors.New("the Organizations API refused the credential: org_key must be a valid, unexpired organization API key")
	// ErrManageRefused: 403 from the user-management API for a managed
	// account, which it gives a key created with scopes (§23).
	ErrManageRefused = errors.New("the user-management API refused the organization API key: create the key without scopes")
	// ErrNotOrgAdmin: ADMIN-UAM-403-2.
	ErrNotOrgAdmin = errors.New("the organization API key may not manage this organization")
	// ErrForbidden: another 403 from the Organizations API.
	ErrForbidden = errors.New("the Organizations API refused the call (forbidden)")
	// ErrPaymentRequired: ADMIN-UAM-402-1; the invite API needs a paid
	// subscription in the organization (§26.3).
	ErrPaymentRequired = errors.New("the Organizations API invite needs a paid subscription in the organization: use invite: site")
	// ErrOrgNotFound: ADMIN-UAM-404-2.
	ErrOrgNotFound = errors.New("organization not found: check org_id")
	// ErrInactive: ADMIN-UAM-400-2.
	ErrInactive = errors.New("the account is inactive")
	// ErrNotLicensed: ADMIN-UAM-400-4.
	ErrNotLicensed = errors.New("the product is not licensed in this organization")
	// ErrSiteTokenRefused: 401 from the site. A scoped API token only
	// works through the api.atlassian.com gateway (§23).
	ErrSiteTokenRefused = errors.New("the site refused email and api_token: use a classic (unscoped) API token of that admin account")
	// ErrSiteForbidden: 403 from the site's create user, which needs an
	// admin who is also an organization admin (§24).
	ErrSiteForbidden = errors.New("the site refused the call: the admin account must administer Jira and the organization")
)

// readOnlyGroup is a group refusal that is also targets.ErrGroupReadOnly,
// so callers that only know the targets package leave the group alone.
type readOnlyGroup string

func (e readOnlyGroup) Error() string        { return string(e) }
func (e readOnlyGroup) Is(target error) bool { return target == targets.ErrGroupReadOnly }

// call says what kind of resource a request addressed, which decides
// what a bare 404 or 403 means.
type call int

const (
	callUser   call = iota // a user path: 404 is "no such user"
	callSearch             // a search: 404 is the org or directory
	callInvite
	callManage // the user-management API
	callGroup  // a group path: 404 is "no such group"
)

// classify adds the typed refusal to an Organizations API error, keeping
// it a *targets.Error. Temporary errors (429, 5xx, no answer) pass as
// they are.
func (t *Target) classify(err error, c call) error {
	if err == nil || targets.IsTemporary(err) {
		return err
	}
	e := targets.APIErrorOf(err)
	has := func(code string) bool { return e != nil && e.HasCode(code) }
	st := targets.StatusOf(err)
	switch {
	case st == 0:
		return err
	case has("ADMIN-UAM-409-3"):
		return targets.Reclassify(err, ErrLicenceLimit)
	case has("ADMIN-UAM-402-1"), st == http.StatusPaymentRequired:
		return targets.Reclassify(err, ErrPaymentRequired)
	case st == http.StatusUnauthorized:
		return targets.Reclassify(err, ErrOrgKeyRefused)
	case st == http.StatusForbidden && c == callManage:
		return targets.Reclassify(err, ErrManageRefused)
	case has("ADMIN-UAM-403-2"):
		return targets.Reclassify(err, ErrNotOrgAdmin)
	case st == http.StatusForbidden:
		return targets.Reclassify(err, ErrForbidden)
	case has("ADMIN-UAM-404-2"):
		return targets.Reclassify(err, ErrOrgNotFound)
	case has("ADMIN-UAM-404-3"), st == http.StatusNotFound && c == callGroup:
		return targets.Reclassify(err, targets.ErrGroupNotFound)
	case st == http.StatusNotFound && (c == callUser || c == callManage):
		return targets.Reclassify(err, targets.ErrNotFound)
	case has("ADMIN-UAM-400-2"):
		return targets.Reclassify(err, ErrInactive)
	case has("ADMIN-UAM-400-4"):
		return targets.Reclassify(err, ErrNotLicensed)
	}
	return err
}

// classifySite does the same for the site's Jira REST API, whose error
// body has no codes (§24). Its words at a licence limit are not
// documented [U]; "limit" with "licen" or "user" is taken as one.
func (t *Target) classifySite(err error) error {
	if err == nil || targets.IsTemporary(err) {
		return err
	}
	e := targets.APIErrorOf(err)
	switch st := targets.StatusOf(err); {
	case st == http.StatusUnauthorized:
		return targets.Reclassify(err, ErrSiteTokenRefused)
	case st == http.StatusForbidden:
		return targets.Reclassify(err, ErrSiteForbidden)
	case e != nil && e.Mentions("limit") && (e.Mentions("licen") || e.Mentions("user limit")):
		return targets.Reclassify(err, ErrLicenceLimit)
	}
	return err
}
