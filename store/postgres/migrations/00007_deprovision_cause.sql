-- +goose Up
-- Who took a person's access away, and how, as structured fields: the
-- source (scim, sweep, admin, directory), its actor (policy, admin,
-- directory), the run, and the action applied. The reason stays human.
ALTER TABLE app_states ADD COLUMN deprovisioned_source TEXT NOT NULL DEFAULT '';
ALTER TABLE app_states ADD COLUMN deprovisioned_actor TEXT NOT NULL DEFAULT '';
ALTER TABLE app_states ADD COLUMN deprovisioned_run BIGINT NOT NULL DEFAULT 0;
ALTER TABLE app_states ADD COLUMN deprovisioned_action TEXT NOT NULL DEFAULT '';

-- +goose Down
ALTER TABLE app_states DROP COLUMN deprovisioned_action;
ALTER TABLE app_states DROP COLUMN deprovisioned_run;
ALTER TABLE app_states DROP COLUMN deprovisioned_actor;
ALTER TABLE app_states DROP COLUMN deprovisioned_source;
