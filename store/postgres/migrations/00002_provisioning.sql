-- +goose Up
-- *_key columns are lower-cased in Go, as in store/sqlite: the apps compare
-- usernames and group names case-insensitively, so lookups and uniqueness
-- must too, while the plain columns keep the spelling stored. They are
-- COLLATE "C" so that paging orders bytewise, as SQLite does, whatever
-- the database's locale.
CREATE TABLE app_states (
    app                  text        NOT NULL,
    username_key         text        COLLATE "C" NOT NULL,
    username             text        NOT NULL,
    idp                  text        NOT NULL DEFAULT '',
    subject              text        NOT NULL DEFAULT '',
    hash                 text        NOT NULL DEFAULT '',
    synced_at            timestamptz,
    deprovisioned        boolean     NOT NULL DEFAULT false,
    deprovisioned_at     timestamptz,
    deprovisioned_reason text        NOT NULL DEFAULT '',
    PRIMARY KEY (app, username_key)
);

CREATE TABLE managed_groups (
    app          text        NOT NULL,
    username_key text        COLLATE "C" NOT NULL,
    group_key    text        COLLATE "C" NOT NULL,
    username     text        NOT NULL,
    grp          text        NOT NULL,
    idp          text        NOT NULL DEFAULT '',
    rule         text        NOT NULL DEFAULT '',
    added_at     timestamptz NOT NULL,
    PRIMARY KEY (app, username_key, group_key)
);

-- The retry queue. A row is pending until completed (deleted). owner and
-- lease_until say who works on it ('' and NULL: nobody). generation counts
-- payload replacements; claim_gen is the generation the owner was handed,
-- so Complete can tell a newer wish arrived meanwhile.
CREATE TABLE jobs (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind        text        NOT NULL,
    app         text        NOT NULL,
    key         text        NOT NULL,
    payload     bytea       NOT NULL,
    attempts    integer     NOT NULL DEFAULT 0,
    not_before  timestamptz NOT NULL,
    last_error  text        NOT NULL DEFAULT '',
    failed_at   timestamptz,
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL,
    owner       text        NOT NULL DEFAULT '',
    lease_until timestamptz,
    generation  bigint      NOT NULL DEFAULT 0,
    claim_gen   bigint      NOT NULL DEFAULT 0,
    CONSTRAINT jobs_dedup UNIQUE (kind, app, key)
);
CREATE INDEX jobs_due ON jobs (not_before, id);
CREATE INDEX jobs_failed ON jobs (failed_at) WHERE last_error <> '';

CREATE TABLE seen_once (
    key     text        PRIMARY KEY,
    expires timestamptz NOT NULL
);
CREATE INDEX seen_once_expires ON seen_once (expires);

-- Revoke inserts under a table lock, so seq order is commit order and a
-- replica polling "after N" never skips a row committed late.
CREATE TABLE revocations (
    seq        bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    session_id text        NOT NULL DEFAULT '',
    idp        text        NOT NULL DEFAULT '',
    subject    text        NOT NULL DEFAULT '',
    before_at  timestamptz,
    until_at   timestamptz NOT NULL,
    created_at timestamptz NOT NULL
);
CREATE INDEX revocations_until ON revocations (until_at);

CREATE TABLE leases (
    name    text        PRIMARY KEY,
    owner   text        NOT NULL,
    expires timestamptz NOT NULL
);

-- +goose Down
DROP TABLE leases;
DROP TABLE revocations;
DROP TABLE seen_once;
DROP TABLE jobs;
DROP TABLE managed_groups;
DROP TABLE app_states;
