-- Schedules: recurring commands. `next_fire` is the next slot to fire; a worker fires it
-- by moving it on in the transaction that inserts the slot's command, holding the row
-- lock (`SELECT … FOR UPDATE`) and only if it still holds the value the worker read,
-- so each slot fires once however many workers race. `last_fire` only grows: a slot
-- not later than it never fires again. `version` grows with every save and step, and a
-- step applies only to the version it was planned from.
--
-- One statement, idempotent on its own (DDL commits implicitly).
CREATE TABLE IF NOT EXISTS `{prefix}schedules` (
    name            VARCHAR(255) NOT NULL,
    cadence         VARCHAR(512) NOT NULL,
    zone            VARCHAR(64) NOT NULL,
    command         LONGTEXT NOT NULL,
    on_missed       VARCHAR(16) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    missed_after_ms BIGINT NOT NULL,
    next_fire       BIGINT NOT NULL,
    last_fire       BIGINT NULL,
    last_command    CHAR(36) CHARACTER SET ascii COLLATE ascii_bin NULL,
    missed          BIGINT NOT NULL DEFAULT 0,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    version         BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (name)
) ENGINE = InnoDB DEFAULT CHARACTER SET = utf8mb4 COLLATE = utf8mb4_bin;
