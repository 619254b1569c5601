-- Claim priority: among due pending commands of a target, the lowest priority value is
-- claimed first (0 by default, negative before it), then the earlier due, then the
-- older. Both claim indexes take the priority after the target, so the claim still
-- reads an index in claim order and stops at its limit.
--
-- The column and both indexes change in one ALTER, which InnoDB applies whole or not
-- at all; whether it is still to do is read from information_schema (MySQL 8 has no
-- `ADD COLUMN IF NOT EXISTS`), as in 0002.
SET @orch_ddl = IF(EXISTS(SELECT 1 FROM information_schema.columns
                          WHERE table_schema = DATABASE() AND table_name = '{prefix}commands'
                            AND column_name = 'priority'),
    'DO 0',
    CONCAT('ALTER TABLE `{prefix}commands` ',
           'ADD COLUMN priority SMALLINT NOT NULL DEFAULT 0, ',
           'DROP KEY commands_claim, ADD KEY commands_claim (state, target, name, priority, scheduled_at, id), ',
           'DROP KEY commands_due, ADD KEY commands_due (state, target, priority, scheduled_at, id, name)'));
PREPARE orch_ddl FROM @orch_ddl;
EXECUTE orch_ddl;
DEALLOCATE PREPARE orch_ddl;
