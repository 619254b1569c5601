-- Unique keys: a command pushed with a key is stored with it, and `unique_window` says
-- how long the key holds: 0 while the command is unfinished, otherwise the end of the
-- period (microseconds since the epoch) the push fell in, finished or not. The partial
-- unique index admits one holder per key and window; a push names it in
-- `ON CONFLICT … DO NOTHING`, so concurrent pushes of one key insert one row.
ALTER TABLE {prefix}commands ADD COLUMN IF NOT EXISTS unique_key TEXT COLLATE "C" NULL;
ALTER TABLE {prefix}commands ADD COLUMN IF NOT EXISTS unique_window BIGINT NOT NULL DEFAULT 0;
CREATE UNIQUE INDEX IF NOT EXISTS {prefix}commands_unique ON {prefix}commands (unique_key, unique_window)
    WHERE unique_key IS NOT NULL AND (unique_window <> 0 OR state IN ('blocked', 'pending', 'running'));
