package jit

import (
	"context"
	"errors"
	"maps"
	"time"

	"github.com/usherhq/usher/providers"
)

// GroupResolver reads a person's complete group list from their IdP's
// own directory. The lifecycle asks it when an identity says its groups
// did not fit (Entra ID's group overage: _claim_names or hasgroups in a
// token, the groups.link attribute in an assertion, or a directory sync
// that could not read every membership), so that such an admission maps
// the whole list instead of only adding groups.
type GroupResolver interface {
	// ResolveGroups returns every group of the person id names, in the
	// form the IdP's group claim carries (names or object IDs). It must
	// honour ctx: a login may be waiting.
	ResolveGroups(ctx context.Context, id providers.Identity) ([]string, error)
}

// ClaimGroupsIncomplete marks an identity whose group list is known to
// be partial: a directory sync sets it for a person the connector could
// not read every membership of. Like the IdPs' own overage markers, it
// makes the mapping add groups only, unless a GroupResolver completes
// the list.
const ClaimGroupsIncomplete = "usher:groups_incomplete"

// overageMarkers are the claims that say a group list is partial.
var overageMarkers = []string{
	"_claim_names.groups", "hasgroups", "http://schemas.microsoft.com/claims/groups.link", ClaimGroupsIncomplete,
}

// resolveTimeout bounds a group lookup: a login waits for it, and the
// admission goes on without it (adding groups only) when it is slow.
const resolveTimeout = 10 * time.Second

// completeGroups replaces a partial group list with the resolver's, when
// the IdP has one; otherwise, or when the lookup fails, id comes back as
// it was and Map adds groups only, as before.
func (l *Lifecycle) completeGroups(ctx context.Context, m *Mapper, id providers.Identity, cause Cause) providers.Identity {
	r := l.Overage[id.IdP]
	if r == nil || !groupsIncomplete(&id) {
		return id
	}
	ctx, cancel := context.WithTimeout(ctx, resolveTimeout)
	defer cancel()
	groups, err := r.ResolveGroups(ctx, id)
	if err == nil && groups == nil {
		err = errors.New("no group list")
	}
	if err != nil {
		l.log().Warn("group overage: the directory lookup failed; groups are only added this time, none removed",
			"idp", id.IdP, "subject", id.Subject, "source", string(cause.Source), "err", err)
		return id
	}
	claims := maps.Clone(id.Claims)
	for _, k := range overageMarkers {
		delete(claims, k)
	}
	claims[m.groupClaim] = groups
	l.log().Info("group overage resolved through the directory", "idp", id.IdP, "subject", id.Subject, "groups", len(groups))
	id.Claims = claims
	return id
}
