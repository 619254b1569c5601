-- Workflows: which step of which workflow a command is, and the dependency edges
-- between the steps. A command with dependencies waits `blocked` until all succeed.
--
-- DDL commits implicitly, so each change must be idempotent on its own: a run cut
-- short is completed by the next one. MariaDB has `ADD COLUMN IF NOT EXISTS` and
-- `CREATE INDEX IF NOT EXISTS`, MySQL 8 has neither, so the ALTER is built from what
-- information_schema says is still missing (only the missing parts, or nothing) and
-- run as a prepared statement. Both servers accept this.
SET @orch_missing = CONCAT_WS(', ',
    IF(EXISTS(SELECT 1 FROM information_schema.columns
              WHERE table_schema = DATABASE() AND table_name = '{prefix}commands'
                AND column_name = 'workflow_id'),
       NULL,
       'ADD COLUMN workflow_id CHAR(36) CHARACTER SET ascii COLLATE ascii_bin NULL'),
    IF(EXISTS(SELECT 1 FROM information_schema.columns
              WHERE table_schema = DATABASE() AND table_name = '{prefix}commands'
                AND column_name = 'step'),
       NULL,
       'ADD COLUMN step VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NULL'),
    -- The steps of one workflow.
    IF(EXISTS(SELECT 1 FROM information_schema.statistics
              WHERE table_schema = DATABASE() AND table_name = '{prefix}commands'
                AND index_name = 'commands_workflow'),
       NULL,
       'ADD KEY commands_workflow (workflow_id)'));
SET @orch_ddl = IF(@orch_missing = '', 'DO 0', CONCAT('ALTER TABLE `{prefix}commands` ', @orch_missing));
PREPARE orch_ddl FROM @orch_ddl;
EXECUTE orch_ddl;
DEALLOCATE PREPARE orch_ddl;

-- The dependency edges: `command_id` may run once `depends_on` has succeeded. The
-- primary key lists the dependencies of a command; the second index finds the
-- dependents of a command that just finished.
CREATE TABLE IF NOT EXISTS `{prefix}dependencies` (
    command_id CHAR(36) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    depends_on CHAR(36) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    PRIMARY KEY (command_id, depends_on),
    KEY dependencies_depends_on (depends_on)
) ENGINE = InnoDB DEFAULT CHARACTER SET = utf8mb4 COLLATE = utf8mb4_bin;
