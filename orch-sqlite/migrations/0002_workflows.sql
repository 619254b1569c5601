-- Workflows: which step of which workflow a command is, and the dependency edges
-- between steps. A command with dependencies waits `blocked` until all succeed.
ALTER TABLE {prefix}commands ADD COLUMN workflow_id TEXT;
ALTER TABLE {prefix}commands ADD COLUMN step TEXT;
CREATE INDEX {prefix}commands_workflow ON {prefix}commands (workflow_id) WHERE workflow_id IS NOT NULL;

CREATE TABLE {prefix}dependencies (
    command_id TEXT NOT NULL,
    depends_on TEXT NOT NULL,
    PRIMARY KEY (command_id, depends_on)
) WITHOUT ROWID;
-- Finding the dependents of a command that just finished.
CREATE INDEX {prefix}dependencies_depends_on ON {prefix}dependencies (depends_on, command_id);
