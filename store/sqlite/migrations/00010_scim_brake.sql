-- +goose Up
-- The SCIM brake (idps[].scim.brake). scim_brakes has one row per IdP that
-- a brake decision takes first, so that decisions of one IdP are made one
-- at a time. scim_removals holds, per person, when the brake last counted
-- a SCIM removal of theirs: its window counts the rows since then.
-- scim_holds are the removals it held back for an admin, with the
-- brake's numbers at the time. Times are unix milliseconds (UTC);
-- window_s is seconds.
CREATE TABLE scim_brakes (
    idp     TEXT    NOT NULL PRIMARY KEY,
    decided INTEGER NOT NULL
);

CREATE TABLE scim_removals (
    idp     TEXT    NOT NULL,
    subject TEXT    NOT NULL,
    at      INTEGER NOT NULL,
    PRIMARY KEY (idp, subject)
);
CREATE INDEX scim_removals_at ON scim_removals (idp, at);

CREATE TABLE scim_holds (
    idp              TEXT    NOT NULL,
    subject          TEXT    NOT NULL,
    username         TEXT    NOT NULL DEFAULT '',
    reason           TEXT    NOT NULL DEFAULT '',
    held_at          INTEGER NOT NULL,
    removed          INTEGER NOT NULL,
    holds            INTEGER NOT NULL,
    people           INTEGER NOT NULL,
    max_removals     INTEGER NOT NULL,
    window_s         INTEGER NOT NULL,
    sessions_revoked INTEGER NOT NULL,
    PRIMARY KEY (idp, subject)
);
CREATE INDEX scim_holds_time ON scim_holds (idp, held_at, subject);

-- +goose Down
DROP TABLE scim_holds;
DROP TABLE scim_removals;
DROP TABLE scim_brakes;
