-- Saga instances: one row per (saga, correlation id), saved compare-and-set on version.
-- `data` and `compensations` are JSON text, opaque to the store; `last_event` is the
-- id of the last event command applied. Times are microseconds since the Unix epoch.
--
-- One statement, idempotent on its own (DDL commits implicitly). MySQL has no partial
-- indexes, so the indexes the other backends restrict (`WHERE status = 'active'`,
-- `WHERE timeout_at IS NOT NULL`) cover every row here.
CREATE TABLE IF NOT EXISTS `{prefix}sagas` (
    saga           VARCHAR(255) NOT NULL,
    correlation_id VARCHAR(255) NOT NULL,
    state          VARCHAR(255) NOT NULL,
    status         VARCHAR(32) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    data           LONGTEXT NOT NULL,
    version        BIGINT NOT NULL,
    compensations  LONGTEXT NOT NULL,
    last_event     CHAR(36) CHARACTER SET ascii COLLATE ascii_bin NULL,
    timeout_at     BIGINT NULL,
    created_at     BIGINT NOT NULL,
    updated_at     BIGINT NOT NULL,
    PRIMARY KEY (saga, correlation_id),
    -- Queries by status and state.
    KEY sagas_status (saga, status, state),
    -- Stale instances.
    KEY sagas_updated (saga, updated_at),
    -- Instances past their timeout.
    KEY sagas_timeout (saga, timeout_at)
) ENGINE = InnoDB DEFAULT CHARACTER SET = utf8mb4 COLLATE = utf8mb4_bin;
