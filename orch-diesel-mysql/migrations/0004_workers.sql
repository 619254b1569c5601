-- Workers: one row per running worker process, for monitors. Registered when it
-- starts, refreshed at every heartbeat, removed when it shuts down; a row whose
-- heartbeat is old belongs to a worker that died (pruned by `heartbeat_at`).
-- `names` is a JSON array of command names. Times are microseconds since the Unix
-- epoch.
--
-- One statement, idempotent on its own (DDL commits implicitly).
CREATE TABLE IF NOT EXISTS `{prefix}workers` (
    id           VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    instance_key VARCHAR(255) NOT NULL,
    host         VARCHAR(255) NOT NULL,
    pid          BIGINT NOT NULL,
    names        LONGTEXT NOT NULL,
    concurrency  INT NOT NULL,
    running      INT NOT NULL,
    started_at   BIGINT NOT NULL,
    heartbeat_at BIGINT NOT NULL,
    PRIMARY KEY (id),
    -- Pruning the workers that died.
    KEY workers_heartbeat (heartbeat_at)
) ENGINE = InnoDB DEFAULT CHARACTER SET = utf8mb4 COLLATE = utf8mb4_bin;
