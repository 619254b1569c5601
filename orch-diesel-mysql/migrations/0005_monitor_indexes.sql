-- Listings sorted by due time or by attempts (the monitor's sort keys), read by keyset
-- a page at a time instead of sorting the whole table.
--
-- DDL commits implicitly, so the change must be idempotent on its own: MySQL 8 has no
-- `CREATE INDEX IF NOT EXISTS`, so, as in 0002, the ALTER is built from what
-- information_schema says is still missing (only the missing indexes, or nothing) and
-- run as a prepared statement.
SET @orch_missing = CONCAT_WS(', ',
    IF(EXISTS(SELECT 1 FROM information_schema.statistics
              WHERE table_schema = DATABASE() AND table_name = '{prefix}commands'
                AND index_name = 'commands_scheduled'),
       NULL,
       'ADD KEY commands_scheduled (scheduled_at, id)'),
    IF(EXISTS(SELECT 1 FROM information_schema.statistics
              WHERE table_schema = DATABASE() AND table_name = '{prefix}commands'
                AND index_name = 'commands_attempts'),
       NULL,
       'ADD KEY commands_attempts (attempts, id)'));
SET @orch_ddl = IF(@orch_missing = '', 'DO 0', CONCAT('ALTER TABLE `{prefix}commands` ', @orch_missing));
PREPARE orch_ddl FROM @orch_ddl;
EXECUTE orch_ddl;
DEALLOCATE PREPARE orch_ddl;
