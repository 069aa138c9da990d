-- +goose Up
-- Sweeps look pushed users up by the login subject they are bound to.
CREATE INDEX scim_users_subject ON scim_users (idp, subject);

-- +goose Down
DROP INDEX scim_users_subject;
