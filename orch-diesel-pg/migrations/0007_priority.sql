-- Claim priority: among due pending commands of a target, the lowest priority value is
-- claimed first (0 by default, negative before it), then the earlier due, then the older. The claim reads this index in
-- that order and skips the rows not yet due.
ALTER TABLE {prefix}commands ADD COLUMN IF NOT EXISTS priority SMALLINT NOT NULL DEFAULT 0;
DROP INDEX IF EXISTS {prefix}commands_due;
CREATE INDEX IF NOT EXISTS {prefix}commands_due ON {prefix}commands (target, priority, scheduled_at, id) WHERE state = 'pending';
