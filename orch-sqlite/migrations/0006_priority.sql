-- Claim priority: among due pending commands of a target and name, the lowest priority
-- value is claimed first (0 by default, negative before it), then the earlier due, then
-- the older.
ALTER TABLE {prefix}commands ADD COLUMN priority INTEGER NOT NULL DEFAULT 0;
DROP INDEX IF EXISTS {prefix}commands_claim;
CREATE INDEX {prefix}commands_claim ON {prefix}commands (target, name, priority, scheduled_at, id) WHERE state = 'pending';
