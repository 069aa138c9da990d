-- +goose Up
-- The SCIM brake (idps[].scim.brake). scim_brakes has one row per IdP that
-- a brake decision locks first, so that decisions of one IdP are made one
-- at a time across replicas. scim_removals holds, per person, when the
-- brake last counted a SCIM removal of theirs: its window counts the rows
-- since then. scim_holds are the removals it held back for an admin, with
-- the brake's numbers at the time; window_s is seconds. Subjects use the
-- "C" collation so that paging orders bytewise, as SQLite and Go do.
CREATE TABLE scim_brakes (
    idp     text        NOT NULL PRIMARY KEY,
    decided timestamptz NOT NULL
);

CREATE TABLE scim_removals (
    idp     text        NOT NULL,
    subject text        NOT NULL,
    at      timestamptz NOT NULL,
    PRIMARY KEY (idp, subject)
);
CREATE INDEX scim_removals_at ON scim_removals (idp, at);

CREATE TABLE scim_holds (
    idp              text        NOT NULL,
    subject          text        COLLATE "C" NOT NULL,
    username         text        NOT NULL DEFAULT '',
    reason           text        NOT NULL DEFAULT '',
    held_at          timestamptz NOT NULL,
    removed          integer     NOT NULL,
    holds            integer     NOT NULL,
    people           integer     NOT NULL,
    max_removals     integer     NOT NULL,
    window_s         bigint      NOT NULL,
    sessions_revoked boolean     NOT NULL,
    PRIMARY KEY (idp, subject)
);
CREATE INDEX scim_holds_time ON scim_holds (idp, held_at, subject);

-- +goose Down
DROP TABLE scim_holds;
DROP TABLE scim_removals;
DROP TABLE scim_brakes;
