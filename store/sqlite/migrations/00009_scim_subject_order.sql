-- +goose Up
-- A lookup by subject takes the first match by id. With id in the index
-- the database walks only the subject's rows, in order; without it SQLite
-- preferred walking every user of the IdP in id order, one lookup per
-- swept person.
DROP INDEX scim_users_subject;
CREATE INDEX scim_users_subject ON scim_users (idp, subject, id);

-- +goose Down
DROP INDEX scim_users_subject;
CREATE INDEX scim_users_subject ON scim_users (idp, subject);
