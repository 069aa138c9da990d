-- +goose Up
-- Files other components keep, such as ACME certificates and keys, shared
-- by every replica. COLLATE "C" makes keys compare bytewise, whatever the
-- database's locale, which the prefix range scans rely on.
CREATE TABLE blobs (
    key      TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    value    BYTEA       NOT NULL,
    modified TIMESTAMPTZ NOT NULL
);

-- +goose Down
DROP TABLE blobs;
