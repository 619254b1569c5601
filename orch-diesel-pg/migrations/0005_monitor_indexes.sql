-- Listings sorted by due time or by attempts (the monitor's sort keys), read by keyset
-- a page at a time instead of sorting the whole table.
CREATE INDEX {prefix}commands_scheduled ON {prefix}commands (scheduled_at, id);
CREATE INDEX {prefix}commands_attempts ON {prefix}commands (attempts, id);
