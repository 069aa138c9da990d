-- +goose Up
-- Files other components keep, such as ACME certificates and keys, shared
-- through the database. modified is unix milliseconds (UTC); keys compare
-- bytewise (BINARY), which the prefix range scans rely on.
CREATE TABLE blobs (
    key      TEXT    NOT NULL PRIMARY KEY,
    value    BLOB    NOT NULL,
    modified INTEGER NOT NULL
);

-- +goose Down
DROP TABLE blobs;
