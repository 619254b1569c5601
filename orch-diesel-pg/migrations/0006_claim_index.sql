-- The claim path reads due pending commands of one target in (scheduled_at, id) order
-- and filters the names on the rows it visits. The former index led with the name, so a
-- claim for a set of names (`name = ANY(...)`) could not read it in due order, and the
-- planner walked the all-states (scheduled_at, id) index instead, skipping every row
-- that was not pending.
DROP INDEX IF EXISTS {prefix}commands_claim;
CREATE INDEX IF NOT EXISTS {prefix}commands_due ON {prefix}commands (target, scheduled_at, id) WHERE state = 'pending';
