package scim

// Request bodies as the IdPs document them.
//
// Entra: "Tutorial: Develop and plan provisioning for a SCIM endpoint in
// Microsoft Entra ID", section "User Operations" / "Group Operations",
// https://learn.microsoft.com/en-us/entra/identity/app-provisioning/use-scim-to-provision-users-and-groups
// and "Known issues and resolutions with SCIM 2.0 protocol compliance of
// the Microsoft Entra user provisioning service",
// https://learn.microsoft.com/en-us/entra/identity/app-provisioning/application-provisioning-config-problem-scim-compatibility
//
// Okta: "Okta and SCIM Version 2.0",
// https://developer.okta.com/docs/api/openapi/okta-scim/guides/scim-20

// Entra, "Create User" request.
const entraCreateUser = `{
  "schemas": [
    "urn:ietf:params:scim:schemas:core:2.0:User",
    "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"],
  "externalId": "0a21f0f2-8d2a-4f8e-bf98-7363c4aed4ef",
  "userName": "Test_User_ab6490ee-1e48-479e-a20b-2d77186b5dd1",
  "active": true,
  "emails": [{
    "primary": true,
    "type": "work",
    "value": "Test_User_fd0ea19b-0777-472c-9f96-4f70d2226f2e@testuser.com"
  }],
  "meta": {
    "resourceType": "User"
  },
  "name": {
    "formatted": "givenName familyName",
    "familyName": "familyName",
    "givenName": "givenName"
  },
  "roles": []
}`

// Entra, "Update User [Multi-valued properties]" request.
const entraPatchMulti = `{
  "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
  "Operations": [
    {
      "op": "Replace",
      "path": "emails[type eq \"work\"].value",
      "value": "updatedEmail@microsoft.com"
    },
    {
      "op": "Replace",
      "path": "name.familyName",
      "value": "updatedFamilyName"
    }
  ]
}`

// Entra, "Update User [Single-valued properties]" request.
const entraPatchSingle = `{
  "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
  "Operations": [{
    "op": "Replace",
    "path": "userName",
    "value": "5b50642d-79fc-4410-9e90-4c077cdd1a59@testuser.com"
  }]
}`

// Entra, "Disable User" request.
const entraDisable = `{
  "Operations": [
    {
      "op": "Replace",
      "path": "active",
      "value": false
    }
  ],
  "schemas": [
    "urn:ietf:params:scim:api:messages:2.0:PatchOp"
  ]
}`

// Entra without the aadOptscim062020 flag, from the known-issues page:
// active as a string and the op capitalised, without a path.
const entraDisableString = `{
  "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
  "Operations": [{"op": "Replace", "value": {"active": "False"}}]
}`

const entraEnableString = `{
  "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
  "Operations": [{"op": "Replace", "path": "active", "value": "True"}]
}`

// Entra's attribute mapping of department and manager to the enterprise
// extension; manager arrives as the manager's id.
const entraPatchEnterprise = `{
  "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
  "Operations": [
    {"op": "Add", "path": "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department", "value": "Sales"},
    {"op": "Add", "path": "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager", "value": "2819c223-7f76-453a-919d-413861904646"},
    {"op": "Add", "path": "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber", "value": "701984"}
  ]
}`

// Entra, "Create Group" request.
const entraCreateGroup = `{
  "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group", "http://schemas.microsoft.com/2006/11/ResourceManagement/ADSCIM/Group"],
  "externalId": "8aa1a0c0-c4c3-4bc0-b4a5-2ef676900159",
  "displayName": "displayName",
  "meta": {
    "resourceType": "Group"
  }
}`

// Entra, "Update Group [Add Members]" request; %s is the user id.
const entraAddMembers = `{
  "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
  "Operations": [{
    "op": "Add",
    "path": "members",
    "value": [{
      "$ref": null,
      "value": "%s"
    }]
  }]
}`

// Entra, "Update Group [Remove Members]" request.
const entraRemoveMembers = `{
  "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
  "Operations": [{
    "op": "Remove",
    "path": "members",
    "value": [{
      "$ref": null,
      "value": "%s"
    }]
  }]
}`

// Entra with aadOptscim062020 (known-issues page): remove by filter.
const entraRemoveMemberFilter = `{
  "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
  "Operations": [{"op": "remove", "path": "members[value eq \"%s\"]"}]
}`

// Okta, "Create the user" request.
const oktaCreateUser = `{
  "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
  "userName": "test.user@okta.local",
  "name": {
    "givenName": "Test",
    "familyName": "User"
  },
  "emails": [{
    "primary": true,
    "value": "test.user@okta.local",
    "type": "work"
  }],
  "displayName": "Test User",
  "locale": "en-US",
  "externalId": "00ujl29u0le5T6Aj10h7",
  "groups": [],
  "password": "1mz050nq",
  "active": true
}`

// Okta, "Update a specific User (PUT)" request; %s is the id.
const oktaPutUser = `{
  "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
  "id": "%s",
  "userName": "test.user@okta.local",
  "name": {
    "givenName": "Another",
    "middleName": "Excited",
    "familyName": "User"
  },
  "emails": [{
    "primary": true,
    "value": "test.user@okta.local",
    "type": "work",
    "display": "test.user@okta.local"
  }],
  "active": true,
  "groups": [],
  "meta": {
    "resourceType": "User"
  }
}`

// Okta, "Update a specific User (PATCH)" request: deactivation.
const oktaDeactivate = `{
  "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
  "Operations": [{
    "op": "replace",
    "value": {
      "active": false
    }
  }]
}`

// Okta, "Create Groups" request.
const oktaCreateGroup = `{
  "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
  "displayName": "Test SCIMv2",
  "members": []
}`

// Okta, "Update a specific Group name" request; %s is the group id.
const oktaRenameGroup = `{
  "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
  "Operations": [{
    "op": "replace",
    "value": {
      "id": "%s",
      "displayName": "Test SCIMv2 renamed"
    }
  }]
}`

// Okta, "Update specific Group membership" request; ids of two users.
const oktaGroupMembership = `{
  "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
  "Operations": [
    {"op": "remove", "path": "members[value eq \"%[2]s\"]"},
    {"op": "add", "path": "members", "value": [{"value": "%[1]s", "display": "test.user@okta.local"}]},
    {"op": "replace", "path": "members", "value": [
      {"value": "%[1]s", "display": "test.user@okta.local"},
      {"value": "%[2]s", "display": "other.user@okta.local"}]}
  ]
}`
