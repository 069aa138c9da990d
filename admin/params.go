package admin

import (
	"fmt"
	"net/http"
	"strings"
	"unicode"
	"unicode/utf8"
)

// maxField bounds a value an admin types or a URL carries (an IdP id, a
// subject, a username, a search): the longest an IdP sends is far below
// it, so a longer one is a pasted mistake, not a person.
const maxField = 512

// FieldProblem says what keeps a value from being an IdP id, a subject,
// a username or a search the admin pages take, or "" when nothing does.
// The store refuses a NUL and invalid UTF-8 (store.ErrInvalid); refusing
// them at the door makes them the caller's 400 instead of a failure of
// usher. `usher sync --subject` takes subjects by the same rule.
func FieldProblem(v string) string {
	switch {
	case len(v) > maxField:
		return fmt.Sprintf("is %d bytes long; at most %d", len(v), maxField)
	case !utf8.ValidString(v):
		return "is not valid UTF-8"
	case strings.ContainsFunc(v, unicode.IsControl):
		return "holds a control character"
	}
	return ""
}

// checkFields refuses a required value that is empty or any value with a
// FieldProblem, naming it. names and values alternate.
func checkFields(required bool, nameValues ...string) error {
	for i := 0; i+1 < len(nameValues); i += 2 {
		name, v := nameValues[i], nameValues[i+1]
		if v == "" && required {
			return fmt.Errorf("%s is required", name)
		}
		if p := FieldProblem(v); p != "" {
			return fmt.Errorf("%s %s", name, p)
		}
	}
	return nil
}

// identity reads the {idp} and {subject} of a person's URL and refuses,
// with 400, values no identity can have. subject is "" on a route
// without one.
func (h *handler) identity(w http.ResponseWriter, r *http.Request) (idp, subject string, ok bool) {
	idp, subject = r.PathValue("idp"), r.PathValue("subject")
	err := checkFields(true, "the IdP in the URL", idp)
	if err == nil && strings.Contains(r.Pattern, "{subject}") {
		err = checkFields(true, "the subject in the URL", subject)
	}
	if err != nil {
		h.fail(w, r, http.StatusBadRequest, err.Error(), nil)
		return "", "", false
	}
	return idp, subject, true
}
