-- +goose Up
-- SCIM state is scoped by IdP everywhere: every key starts with idp, so one
-- IdP's push can never reach another's rows. The *_key columns are the
-- lower-cased names (folded in Go, like bindings.username_key) because the
-- apps compare user and group names case-insensitively. An empty
-- external_id means "none" and is not unique.
CREATE TABLE scim_users (
    idp           TEXT    NOT NULL,
    id            TEXT    NOT NULL,
    external_id   TEXT    NOT NULL DEFAULT '',
    user_name     TEXT    NOT NULL,
    user_name_key TEXT    NOT NULL,
    subject       TEXT    NOT NULL DEFAULT '',
    active        INTEGER NOT NULL,
    resource      BLOB    NOT NULL,
    created       INTEGER NOT NULL,
    updated       INTEGER NOT NULL,
    version       INTEGER NOT NULL,
    PRIMARY KEY (idp, id),
    UNIQUE (idp, user_name_key)
);
CREATE UNIQUE INDEX scim_users_external_id ON scim_users (idp, external_id) WHERE external_id <> '';

CREATE TABLE scim_groups (
    idp              TEXT    NOT NULL,
    id               TEXT    NOT NULL,
    external_id      TEXT    NOT NULL DEFAULT '',
    display_name     TEXT    NOT NULL,
    display_name_key TEXT    NOT NULL,
    created          INTEGER NOT NULL,
    updated          INTEGER NOT NULL,
    version          INTEGER NOT NULL,
    PRIMARY KEY (idp, id),
    UNIQUE (idp, display_name_key)
);
CREATE UNIQUE INDEX scim_groups_external_id ON scim_groups (idp, external_id) WHERE external_id <> '';

-- Deleting a user or a group deletes its membership rows.
CREATE TABLE scim_members (
    idp      TEXT NOT NULL,
    group_id TEXT NOT NULL,
    user_id  TEXT NOT NULL,
    PRIMARY KEY (idp, group_id, user_id),
    FOREIGN KEY (idp, group_id) REFERENCES scim_groups (idp, id) ON DELETE CASCADE,
    FOREIGN KEY (idp, user_id) REFERENCES scim_users (idp, id) ON DELETE CASCADE
);
CREATE INDEX scim_members_user ON scim_members (idp, user_id, group_id);

CREATE TABLE sweep_runs (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    policy   TEXT    NOT NULL,
    dry_run  INTEGER NOT NULL,
    started  INTEGER NOT NULL,
    finished INTEGER,
    state    TEXT    NOT NULL,
    planned  INTEGER NOT NULL DEFAULT 0,
    applied  INTEGER NOT NULL DEFAULT 0,
    failed   INTEGER NOT NULL DEFAULT 0,
    reason   TEXT    NOT NULL DEFAULT '',
    plan     BLOB    NOT NULL DEFAULT x''
);
CREATE INDEX sweep_runs_policy ON sweep_runs (policy, state, id);

CREATE TABLE sweep_items (
    run_id INTEGER NOT NULL REFERENCES sweep_runs (id) ON DELETE CASCADE,
    item   TEXT    NOT NULL,
    PRIMARY KEY (run_id, item)
);

-- Not tied to bindings: an admin may set the date before the first login.
CREATE TABLE access_expiry (
    idp        TEXT    NOT NULL,
    subject    TEXT    NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (idp, subject)
);

-- +goose Down
DROP TABLE access_expiry;
DROP TABLE sweep_items;
DROP TABLE sweep_runs;
DROP TABLE scim_members;
DROP TABLE scim_groups;
DROP TABLE scim_users;
