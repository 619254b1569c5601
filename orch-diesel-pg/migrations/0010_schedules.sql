-- Schedules: recurring commands. `next_fire` is the next slot to fire; a worker fires it
-- by moving it on in the transaction that inserts the slot's command, holding the row
-- lock and only if it still holds the value the worker read, so each slot fires once
-- however many workers race. `last_fire` only grows: a slot not later than it never
-- fires again. `version` grows with every save and step, and a step applies only to
-- the version it was planned from.
CREATE TABLE IF NOT EXISTS {prefix}schedules (
    name            TEXT   COLLATE "C" PRIMARY KEY,
    cadence         TEXT   NOT NULL,
    zone            TEXT   NOT NULL,
    command         TEXT   NOT NULL,
    on_missed       TEXT   NOT NULL,
    missed_after_ms BIGINT NOT NULL,
    next_fire       BIGINT NOT NULL,
    last_fire       BIGINT NULL,
    last_command    UUID   NULL,
    missed          BIGINT NOT NULL DEFAULT 0,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    version         BIGINT NOT NULL DEFAULT 0
);
