package providers

import (
	"errors"
	"fmt"
	"testing"
)

func TestReasonOf(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		err  error
		want Reason
	}{
		{"nil", nil, ReasonOther},
		{"not a refusal", errors.New("dial tcp: connection refused"), ReasonOther},
		{"refusal", Refused(ReasonReplay, "assertion %q was already used", "id-1"), ReasonReplay},
		{"wrapped", fmt.Errorf("finish login at okta: %w", Refused(ReasonSignature, "bad")), ReasonSignature},
		// The words of a message do not decide the reason.
		{"misleading words", Refused(ReasonIdPError, "IdP answered: signature expired, replay"), ReasonIdPError},
		{"empty reason", Refused("", "x"), ReasonOther},
	} {
		if got := ReasonOf(tc.err); got != tc.want {
			t.Errorf("%s: ReasonOf = %q, want %q", tc.name, got, tc.want)
		}
	}
	err := Refused(ReasonState, "state %s", "x")
	if !errors.Is(err, ErrRefused) || err.Error() != "login refused: state x" {
		t.Errorf("refusal = %v", err)
	}
}
