-- +goose Up
-- username_key is the lower-cased username: the apps compare usernames
-- case-insensitively, so uniqueness must too, or "Alice" could take over
-- "alice". It is computed in Go so SQLite and PostgreSQL fold alike.
CREATE TABLE bindings (
    idp          text        NOT NULL,
    subject      text        NOT NULL,
    username     text        NOT NULL,
    username_key text        NOT NULL CONSTRAINT bindings_username_key UNIQUE,
    created_at   timestamptz NOT NULL,
    last_login   timestamptz,
    PRIMARY KEY (idp, subject)
);

CREATE TABLE audit (
    id       bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    time     timestamptz NOT NULL,
    action   text        NOT NULL DEFAULT '',
    idp      text        NOT NULL DEFAULT '',
    subject  text        NOT NULL DEFAULT '',
    username text        NOT NULL DEFAULT '',
    app      text        NOT NULL DEFAULT '',
    actor    text        NOT NULL DEFAULT '',
    outcome  text        NOT NULL DEFAULT '',
    detail   text        NOT NULL DEFAULT ''
);
CREATE INDEX audit_time ON audit (time, id);
CREATE INDEX audit_idp ON audit (idp, time, id);
CREATE INDEX audit_username ON audit (username, time, id);
CREATE INDEX audit_app ON audit (app, time, id);
CREATE INDEX audit_action ON audit (action, time, id);

-- +goose Down
DROP TABLE audit;
DROP TABLE bindings;
