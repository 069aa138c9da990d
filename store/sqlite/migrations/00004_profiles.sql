-- +goose Up
-- The last mapped profile of each identity, for "sync now" and manual
-- provisioning. Times are unix milliseconds (UTC).
CREATE TABLE profiles (
    idp        TEXT    NOT NULL,
    subject    TEXT    NOT NULL,
    profile    BLOB    NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (idp, subject)
);

-- +goose Down
DROP TABLE profiles;
