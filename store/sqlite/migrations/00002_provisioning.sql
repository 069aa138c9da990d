-- +goose Up
-- Times are unix milliseconds (UTC). *_key columns are lower-cased in Go:
-- the apps compare usernames and group names case-insensitively, so lookups
-- and uniqueness must too, while the plain columns keep the spelling stored.
CREATE TABLE app_states (
    app                  TEXT    NOT NULL,
    username_key         TEXT    NOT NULL,
    username             TEXT    NOT NULL,
    idp                  TEXT    NOT NULL DEFAULT '',
    subject              TEXT    NOT NULL DEFAULT '',
    hash                 TEXT    NOT NULL DEFAULT '',
    synced_at            INTEGER,
    deprovisioned        INTEGER NOT NULL DEFAULT 0,
    deprovisioned_at     INTEGER,
    deprovisioned_reason TEXT    NOT NULL DEFAULT '',
    PRIMARY KEY (app, username_key)
);

CREATE TABLE managed_groups (
    app          TEXT    NOT NULL,
    username_key TEXT    NOT NULL,
    group_key    TEXT    NOT NULL,
    username     TEXT    NOT NULL,
    grp          TEXT    NOT NULL,
    idp          TEXT    NOT NULL DEFAULT '',
    rule         TEXT    NOT NULL DEFAULT '',
    added_at     INTEGER NOT NULL,
    PRIMARY KEY (app, username_key, group_key)
);

-- The retry queue. A row is pending until completed (deleted). owner and
-- lease_until say who works on it (owner '' and lease_until 0: nobody).
-- generation counts payload replacements; claim_gen is the generation the
-- owner was handed, so Complete can tell a newer wish arrived meanwhile.
CREATE TABLE jobs (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    kind        TEXT    NOT NULL,
    app         TEXT    NOT NULL,
    key         TEXT    NOT NULL,
    payload     BLOB    NOT NULL,
    attempts    INTEGER NOT NULL DEFAULT 0,
    not_before  INTEGER NOT NULL,
    last_error  TEXT    NOT NULL DEFAULT '',
    failed_at   INTEGER,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    owner       TEXT    NOT NULL DEFAULT '',
    lease_until INTEGER NOT NULL DEFAULT 0,
    generation  INTEGER NOT NULL DEFAULT 0,
    claim_gen   INTEGER NOT NULL DEFAULT 0,
    UNIQUE (kind, app, key)
);
CREATE INDEX jobs_due ON jobs (not_before, id);
CREATE INDEX jobs_failed ON jobs (failed_at) WHERE last_error <> '';

CREATE TABLE seen_once (
    key     TEXT    PRIMARY KEY,
    expires INTEGER NOT NULL
);
CREATE INDEX seen_once_expires ON seen_once (expires);

-- AUTOINCREMENT: a pruned seq is never handed out again, so a replica
-- polling "after N" cannot miss a revocation.
CREATE TABLE revocations (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    session_id TEXT    NOT NULL DEFAULT '',
    idp        TEXT    NOT NULL DEFAULT '',
    subject    TEXT    NOT NULL DEFAULT '',
    before_at  INTEGER,
    until_at   INTEGER NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX revocations_until ON revocations (until_at);

CREATE TABLE leases (
    name    TEXT    PRIMARY KEY,
    owner   TEXT    NOT NULL,
    expires INTEGER NOT NULL
);

-- +goose Down
DROP TABLE leases;
DROP TABLE revocations;
DROP TABLE seen_once;
DROP TABLE jobs;
DROP TABLE managed_groups;
DROP TABLE app_states;
