-- Unique keys: a command pushed with a key is stored with it, and `unique_window` says
-- how long the key holds: 0 while the command is unfinished, otherwise the end of the
-- period (microseconds since the epoch) the push fell in, finished or not.
--
-- MySQL has no partial indexes, so a stored generated column, `unique_live`, holds the
-- window and key exactly while the row holds the key and is NULL otherwise; its unique
-- index admits one holder per key and window (NULLs never collide), and the server
-- recomputes it on every state change, so finishing a command frees its key in the
-- same statement. It is binary, so keys compare byte for byte as on the other backends
-- (a `utf8mb4_bin` column would ignore trailing spaces). The whole change is one
-- ALTER, applied whole or not at all.
SET @orch_ddl = IF(EXISTS(SELECT 1 FROM information_schema.columns
                          WHERE table_schema = DATABASE() AND table_name = '{prefix}commands'
                            AND column_name = 'unique_live'),
    'DO 0',
    CONCAT('ALTER TABLE `{prefix}commands` ',
           'ADD COLUMN unique_key VARCHAR(255) NULL, ',
           'ADD COLUMN unique_window BIGINT NOT NULL DEFAULT 0, ',
           'ADD COLUMN unique_live VARBINARY(1200) AS (CASE WHEN unique_key IS NOT NULL AND ',
           '(unique_window <> 0 OR state IN (''blocked'', ''pending'', ''running'')) ',
           'THEN CONCAT(unique_window, '' '', unique_key) END) STORED, ',
           'ADD UNIQUE KEY commands_unique (unique_live)'));
PREPARE orch_ddl FROM @orch_ddl;
EXECUTE orch_ddl;
DEALLOCATE PREPARE orch_ddl;
