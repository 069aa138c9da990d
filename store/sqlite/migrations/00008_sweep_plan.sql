-- +goose Up
-- The items of a sweep run's plan, in plan order: the sweep records them
-- while it plans and reads them back a page at a time while it applies,
-- so that neither holds the whole plan in memory. Progress stays in
-- sweep_items, by item key.
CREATE TABLE sweep_plan_items (
    run_id INTEGER NOT NULL REFERENCES sweep_runs (id) ON DELETE CASCADE,
    seq    INTEGER NOT NULL,
    item   TEXT    NOT NULL,
    data   BLOB    NOT NULL,
    PRIMARY KEY (run_id, seq)
);

-- +goose Down
DROP TABLE sweep_plan_items;
