-- +goose Up
-- Times are unix milliseconds (UTC). username_key is the lower-cased
-- username: the apps compare usernames case-insensitively, so uniqueness
-- must too, or "Alice" could take over "alice".
CREATE TABLE bindings (
    idp          TEXT    NOT NULL,
    subject      TEXT    NOT NULL,
    username     TEXT    NOT NULL,
    username_key TEXT    NOT NULL UNIQUE,
    created_at   INTEGER NOT NULL,
    last_login   INTEGER,
    PRIMARY KEY (idp, subject)
);

CREATE TABLE audit (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    time     INTEGER NOT NULL,
    action   TEXT    NOT NULL DEFAULT '',
    idp      TEXT    NOT NULL DEFAULT '',
    subject  TEXT    NOT NULL DEFAULT '',
    username TEXT    NOT NULL DEFAULT '',
    app      TEXT    NOT NULL DEFAULT '',
    actor    TEXT    NOT NULL DEFAULT '',
    outcome  TEXT    NOT NULL DEFAULT '',
    detail   TEXT    NOT NULL DEFAULT ''
);
CREATE INDEX audit_time ON audit (time, id);
CREATE INDEX audit_idp ON audit (idp, time, id);
CREATE INDEX audit_username ON audit (username, time, id);
CREATE INDEX audit_app ON audit (app, time, id);
CREATE INDEX audit_action ON audit (action, time, id);

-- +goose Down
DROP TABLE audit;
DROP TABLE bindings;
