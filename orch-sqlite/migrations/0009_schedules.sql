-- Schedules: recurring commands. `next_fire` is the next slot to fire; a worker fires it
-- by moving it on in the transaction that inserts the slot's command, only if it still
-- holds the value the worker read, so each slot fires once however many workers race.
-- `version` grows with every save and step, and a step applies only to the version
-- it was planned from. `last_fire` only grows: a slot not later than it never fires again.
CREATE TABLE {prefix}schedules (
    name            TEXT    PRIMARY KEY NOT NULL,
    cadence         TEXT    NOT NULL,
    zone            TEXT    NOT NULL,
    command         TEXT    NOT NULL,
    on_missed       TEXT    NOT NULL,
    missed_after_ms INTEGER NOT NULL,
    next_fire       INTEGER NOT NULL,
    last_fire       INTEGER NULL,
    last_command    TEXT    NULL,
    missed          INTEGER NOT NULL DEFAULT 0,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    version         INTEGER NOT NULL DEFAULT 0
);
