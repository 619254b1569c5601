-- Pauses: a target or a command name whose commands claims skip until resumed.
--
-- One statement, idempotent on its own (DDL commits implicitly).
CREATE TABLE IF NOT EXISTS `{prefix}pauses` (
    kind      VARCHAR(16) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    value     VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    paused_at BIGINT NOT NULL,
    PRIMARY KEY (kind, value)
) ENGINE = InnoDB DEFAULT CHARACTER SET = utf8mb4 COLLATE = utf8mb4_bin;
