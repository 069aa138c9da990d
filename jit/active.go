package jit

import (
	"context"
	"errors"
)

// ActiveAgain is an IdP saying a person it had removed is active again (a
// SCIM push of active: true). It drops a removal the IdP's brake holds,
// and withdraws the removals the same source made and re-applies the
// person's last profile, unless admitting says the caller admits the
// person next (SCIM's automatic mode), which withdraws them itself and
// applies the new profile in one pass. What a sweep, a directory or an
// admin decided stays. A person usher never bound has nothing to undo.
func (l *Lifecycle) ActiveAgain(ctx context.Context, idp, subject string, cause Cause, admitting bool) error {
	if err := l.DropHold(ctx, idp, subject, cause); err != nil && !errors.Is(err, ErrNotHeld) {
		return err
	}
	if admitting {
		return nil
	}
	_, err := l.Reinstate(ctx, idp, subject, cause)
	if errors.Is(err, ErrUnbound) {
		return nil
	}
	return err
}
