-- +goose Up
-- Who took a person's access away, and how, as structured fields: the
-- source (scim, sweep, admin, directory), its actor (policy, admin,
-- directory), the run, and the action applied. The reason stays human.
ALTER TABLE app_states ADD COLUMN deprovisioned_source TEXT NOT NULL DEFAULT '';
ALTER TABLE app_states ADD COLUMN deprovisioned_actor TEXT NOT NULL DEFAULT '';
ALTER TABLE app_states ADD COLUMN deprovisioned_run BIGINT NOT NULL DEFAULT 0;
ALTER TABLE app_states ADD COLUMN deprovisioned_action TEXT NOT NULL DEFAULT '';
-- Marks of the previous version said who in their reason's first word.
UPDATE app_states SET deprovisioned_source = 'scim' WHERE deprovisioned AND deprovisioned_reason LIKE 'scim:%';
UPDATE app_states SET deprovisioned_source = 'sweep' WHERE deprovisioned AND deprovisioned_reason LIKE 'sweep:%';
UPDATE app_states SET deprovisioned_source = 'admin' WHERE deprovisioned AND deprovisioned_reason LIKE 'admin%';

-- +goose Down
ALTER TABLE app_states DROP COLUMN deprovisioned_action;
ALTER TABLE app_states DROP COLUMN deprovisioned_run;
ALTER TABLE app_states DROP COLUMN deprovisioned_actor;
ALTER TABLE app_states DROP COLUMN deprovisioned_source;
