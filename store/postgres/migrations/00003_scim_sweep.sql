-- +goose Up
-- SCIM state is scoped by IdP everywhere: every key starts with idp, so one
-- IdP's push can never reach another's rows. The *_key columns are the
-- lower-cased names (folded in Go, so SQLite and PostgreSQL fold alike)
-- because the apps compare user and group names case-insensitively. An
-- empty external_id means "none" and is not unique. Ids use the "C"
-- collation so paging orders bytewise, as SQLite and Go do.
CREATE TABLE scim_users (
    idp           text        COLLATE "C" NOT NULL,
    id            text        COLLATE "C" NOT NULL,
    external_id   text        NOT NULL DEFAULT '',
    user_name     text        NOT NULL,
    user_name_key text        NOT NULL,
    subject       text        NOT NULL DEFAULT '',
    active        boolean     NOT NULL,
    resource      bytea       NOT NULL,
    created       timestamptz NOT NULL,
    updated       timestamptz NOT NULL,
    version       integer     NOT NULL,
    PRIMARY KEY (idp, id),
    CONSTRAINT scim_users_user_name UNIQUE (idp, user_name_key)
);
CREATE UNIQUE INDEX scim_users_external_id ON scim_users (idp, external_id) WHERE external_id <> '';

CREATE TABLE scim_groups (
    idp              text        COLLATE "C" NOT NULL,
    id               text        COLLATE "C" NOT NULL,
    external_id      text        NOT NULL DEFAULT '',
    display_name     text        NOT NULL,
    display_name_key text        NOT NULL,
    created          timestamptz NOT NULL,
    updated          timestamptz NOT NULL,
    version          integer     NOT NULL,
    PRIMARY KEY (idp, id),
    CONSTRAINT scim_groups_display_name UNIQUE (idp, display_name_key)
);
CREATE UNIQUE INDEX scim_groups_external_id ON scim_groups (idp, external_id) WHERE external_id <> '';

-- Deleting a user or a group deletes its membership rows.
CREATE TABLE scim_members (
    idp      text COLLATE "C" NOT NULL,
    group_id text COLLATE "C" NOT NULL,
    user_id  text COLLATE "C" NOT NULL,
    PRIMARY KEY (idp, group_id, user_id),
    FOREIGN KEY (idp, group_id) REFERENCES scim_groups (idp, id) ON DELETE CASCADE,
    FOREIGN KEY (idp, user_id) REFERENCES scim_users (idp, id) ON DELETE CASCADE
);
CREATE INDEX scim_members_user ON scim_members (idp, user_id, group_id);

CREATE TABLE sweep_runs (
    id       bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    policy   text        NOT NULL,
    dry_run  boolean     NOT NULL,
    started  timestamptz NOT NULL,
    finished timestamptz,
    state    text        NOT NULL,
    planned  integer     NOT NULL DEFAULT 0,
    applied  integer     NOT NULL DEFAULT 0,
    failed   integer     NOT NULL DEFAULT 0,
    reason   text        NOT NULL DEFAULT '',
    plan     bytea       NOT NULL DEFAULT ''
);
CREATE INDEX sweep_runs_policy ON sweep_runs (policy, state, id);

CREATE TABLE sweep_items (
    run_id bigint NOT NULL REFERENCES sweep_runs (id) ON DELETE CASCADE,
    item   text   NOT NULL,
    PRIMARY KEY (run_id, item)
);

-- Sweeps page through bindings in bytewise (idp, subject) order, whatever
-- the database's default collation.
CREATE INDEX bindings_page ON bindings (idp COLLATE "C", subject COLLATE "C");

-- Not tied to bindings: an admin may set the date before the first login.
CREATE TABLE access_expiry (
    idp        text        NOT NULL,
    subject    text        NOT NULL,
    expires_at timestamptz NOT NULL,
    PRIMARY KEY (idp, subject)
);

-- +goose Down
DROP TABLE access_expiry;
DROP INDEX bindings_page;
DROP TABLE sweep_items;
DROP TABLE sweep_runs;
DROP TABLE scim_members;
DROP TABLE scim_groups;
DROP TABLE scim_users;
