-- +goose Up
-- The last mapped profile of each identity, for "sync now" and manual
-- provisioning.
CREATE TABLE profiles (
    idp        TEXT        NOT NULL,
    subject    TEXT        NOT NULL,
    profile    BYTEA       NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (idp, subject)
);

-- +goose Down
DROP TABLE profiles;
