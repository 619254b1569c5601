-- Workers: one row per worker process, for monitors. Registered when it starts,
-- refreshed at every heartbeat, removed when it shuts down; a row whose heartbeat is
-- old belongs to a worker that died. `names` is JSON text (the command names it
-- handles). Times are microseconds since the Unix epoch.
-- Ids compare byte-wise (COLLATE "C"), so orderings match every other backend.
CREATE TABLE {prefix}workers (
    id           TEXT    COLLATE "C" PRIMARY KEY,
    instance_key TEXT    COLLATE "C" NOT NULL,
    host         TEXT    NOT NULL,
    pid          BIGINT  NOT NULL,
    names        TEXT    NOT NULL,
    concurrency  INTEGER NOT NULL,
    running      INTEGER NOT NULL,
    started_at   BIGINT  NOT NULL,
    heartbeat_at BIGINT  NOT NULL
);
-- Pruning workers that died long ago.
CREATE INDEX {prefix}workers_heartbeat ON {prefix}workers (heartbeat_at);
