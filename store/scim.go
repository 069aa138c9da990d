package store

import (
	"context"
	"time"
)

// SCIMUser is a user as an IdP pushed it over SCIM, scoped to that IdP:
// one IdP never sees or changes another's users.
type SCIMUser struct {
	IdP        string
	ID         string // the SCIM resource id usher assigned
	ExternalID string
	UserName   string
	Subject    string // the (idp, subject) key it is bound to
	Active     bool
	Resource   []byte // the full SCIM resource as JSON
	Created    time.Time
	Updated    time.Time
	Version    int // increases on every change (ETag)
}

// SCIMGroup is a group pushed over SCIM with its member resource ids.
type SCIMGroup struct {
	IdP         string
	ID          string
	ExternalID  string
	DisplayName string
	Members     []string // SCIMUser IDs
	Created     time.Time
	Updated     time.Time
	Version     int
}

// SCIM holds pushed SCIM state. Lookups are per IdP; ErrNotFound when
// absent; ErrConflict when a userName or externalId is taken in that IdP.
type SCIM interface {
	PutSCIMUser(ctx context.Context, u SCIMUser) error
	SCIMUser(ctx context.Context, idp, id string) (SCIMUser, error)
	// FindSCIMUser looks up by "userName" (case-insensitive), "subject"
	// (the bound login subject, exact) or
	// "externalId" (exact).
	FindSCIMUser(ctx context.Context, idp, attr, value string) (SCIMUser, error)
	// SCIMUsers pages through an IdP's users ordered by ID; total counts all.
	SCIMUsers(ctx context.Context, idp string, offset, limit int) (users []SCIMUser, total int, err error)
	DeleteSCIMUser(ctx context.Context, idp, id string) error

	PutSCIMGroup(ctx context.Context, g SCIMGroup) error
	SCIMGroup(ctx context.Context, idp, id string) (SCIMGroup, error)
	FindSCIMGroup(ctx context.Context, idp, attr, value string) (SCIMGroup, error)
	SCIMGroups(ctx context.Context, idp string, offset, limit int) (groups []SCIMGroup, total int, err error)
	DeleteSCIMGroup(ctx context.Context, idp, id string) error
	// SCIMUserGroups lists the display names of the groups a user is in.
	SCIMUserGroups(ctx context.Context, idp, userID string) ([]string, error)
}
