-- Saga instances: one row per (saga, correlation id), saved compare-and-set on version.
-- `data` and `compensations` are JSON text, opaque to the store; `last_event` is the
-- id of the last event command applied. Times are microseconds since the Unix epoch.
-- Names compare byte-wise (COLLATE "C"), so orderings match every other backend.
CREATE TABLE {prefix}sagas (
    saga           TEXT   COLLATE "C" NOT NULL,
    correlation_id TEXT   COLLATE "C" NOT NULL,
    state          TEXT   COLLATE "C" NOT NULL,
    status         TEXT   NOT NULL,
    data           TEXT   NOT NULL,
    version        BIGINT NOT NULL,
    compensations  TEXT   NOT NULL,
    last_event     UUID   NULL,
    timeout_at     BIGINT NULL,
    created_at     BIGINT NOT NULL,
    updated_at     BIGINT NOT NULL,
    PRIMARY KEY (saga, correlation_id)
);
-- Queries by status and state.
CREATE INDEX {prefix}sagas_status ON {prefix}sagas (saga, status, state);
-- Stale instances.
CREATE INDEX {prefix}sagas_updated ON {prefix}sagas (saga, updated_at) WHERE status = 'active';
-- Instances past their timeout.
CREATE INDEX {prefix}sagas_timeout ON {prefix}sagas (saga, timeout_at) WHERE timeout_at IS NOT NULL;
