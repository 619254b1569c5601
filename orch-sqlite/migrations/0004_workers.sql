-- Worker processes, for monitors: registered at start, refreshed by every heartbeat,
-- removed at shutdown; an old heartbeat marks a worker that died.
CREATE TABLE {prefix}workers (
    id           TEXT    PRIMARY KEY NOT NULL,
    instance_key TEXT    NOT NULL,
    host         TEXT    NOT NULL,
    pid          INTEGER NOT NULL,
    names        TEXT    NOT NULL,
    concurrency  INTEGER NOT NULL,
    running      INTEGER NOT NULL,
    started_at   INTEGER NOT NULL,
    heartbeat_at INTEGER NOT NULL
) WITHOUT ROWID;
-- Pruning workers that died long ago.
CREATE INDEX {prefix}workers_heartbeat ON {prefix}workers (heartbeat_at);
