-- Workflows: which step of which workflow a command is, and the dependency edges
-- between steps. A command with dependencies waits `blocked` until all succeed.
-- Adding nullable columns without a default only changes the catalog: no rewrite.
ALTER TABLE {prefix}commands
    ADD COLUMN workflow_id UUID NULL,
    ADD COLUMN step        TEXT COLLATE "C" NULL;
CREATE INDEX {prefix}commands_workflow ON {prefix}commands (workflow_id) WHERE workflow_id IS NOT NULL;

-- One row per edge: `command_id` runs only after `depends_on` succeeded. `position`
-- keeps the order in which the step listed its dependencies.
CREATE TABLE {prefix}dependencies (
    command_id UUID    NOT NULL,
    depends_on UUID    NOT NULL,
    position   INTEGER NOT NULL,
    PRIMARY KEY (command_id, depends_on)
);
-- Finding the dependents of a command that just finished (covering: no heap visits).
CREATE INDEX {prefix}dependencies_depends_on ON {prefix}dependencies (depends_on, command_id);
