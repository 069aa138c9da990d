package scim

import (
	"net/http"
	"testing"
)

// PATCH forms beyond the documented requests that Entra and Okta send
// depending on the attribute mapping.
func TestUserPatchForms(t *testing.T) {
	e := newEnv(t)
	ext := enterpriseURN
	for _, tc := range []struct {
		name, ops string
		want      map[string]any // dotted path -> value in the response
		wantExt   map[string]any
	}{
		{"no path, dotted keys", `{"op":"replace","value":{"name.givenName":"Ann","displayName":"Ann F"}}`,
			map[string]any{"name.givenName": "Ann", "name.familyName": "familyName", "displayName": "Ann F"}, nil},
		{"no path, nested extension", `{"op":"Add","value":{"` + ext + `":{"department":"Ops","manager":{"value":"m2"}}}}`,
			nil, map[string]any{"department": "Ops", "manager.value": "m2"}},
		{"no path, flattened extension key", `{"op":"Replace","value":{"` + ext + `:department":"Legal"}}`,
			nil, map[string]any{"department": "Legal"}},
		{"extension sub-attribute path", `{"op":"replace","path":"` + ext + `:manager.value","value":"m3"}`,
			nil, map[string]any{"manager.value": "m3"}},
		{"remove extension attribute", `{"op":"remove","path":"` + ext + `:department"}`,
			nil, map[string]any{"department": nil}},
		{"new work email through a filter", `{"op":"replace","path":"emails[type eq \"home\"].value","value":"ann@home.example"}`,
			map[string]any{"emails.1.value": "ann@home.example", "emails.1.type": "home"}, nil},
		{"case-insensitive names", `{"op":"REPLACE","path":"Name.GivenName","value":"Anne"}`,
			map[string]any{"name.givenName": "Anne"}, nil},
		{"remove a filtered element", `{"op":"remove","path":"emails[type eq \"home\"]"}`,
			map[string]any{"emails.1": nil, "emails.0.type": "work"}, nil},
		{"add to a multi-valued attribute", `{"op":"add","path":"phoneNumbers","value":[{"value":"+41 1","type":"work"}]}`,
			map[string]any{"phoneNumbers.0.value": "+41 1"}, nil},
		{"primary as a string", `{"op":"replace","path":"emails[type eq \"work\"].primary","value":"True"}`,
			map[string]any{"emails.0.primary": true}, nil},
		{"externalId", `{"op":"replace","path":"externalId","value":"new-ext"}`,
			map[string]any{"externalId": "new-ext"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id := e.must(http.StatusCreated, tokenA, "POST", "/Users", entraCreateUser).body["id"].(string)
			defer e.must(http.StatusNoContent, tokenA, "DELETE", "/Users/"+id, "")
			if tc.wantExt != nil && tc.name != "no path, nested extension" {
				e.must(http.StatusOK, tokenA, "PATCH", "/Users/"+id, entraPatchEnterprise)
			}
			if tc.name == "remove a filtered element" {
				e.must(http.StatusOK, tokenA, "PATCH", "/Users/"+id, `{"schemas":["`+patchOpURN+`"],"Operations":[{"op":"add","path":"emails","value":[{"value":"h@x","type":"home"}]}]}`)
			}
			r := e.must(http.StatusOK, tokenA, "PATCH", "/Users/"+id, `{"schemas":["`+patchOpURN+`"],"Operations":[`+tc.ops+`]}`)
			for k, v := range tc.want {
				wantField(t, r.body, k, v)
			}
			doc, _ := r.body[ext].(map[string]any)
			for k, v := range tc.wantExt {
				wantField(t, doc, k, v)
			}
			// What was answered is what is stored.
			g := e.must(http.StatusOK, tokenA, "GET", "/Users/"+id, "")
			if g.raw != r.raw {
				t.Errorf("GET differs from the PATCH answer:\n%s\n%s", g.raw, r.raw)
			}
		})
	}
}
