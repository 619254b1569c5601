-- Saga instances: one row per (saga, correlation id), saved compare-and-set on version.
CREATE TABLE {prefix}sagas (
    saga           TEXT    NOT NULL,
    correlation_id TEXT    NOT NULL,
    state          TEXT    NOT NULL,
    status         TEXT    NOT NULL,
    data           TEXT    NOT NULL,
    version        INTEGER NOT NULL,
    compensations  TEXT    NOT NULL,
    last_event     TEXT,
    timeout_at     INTEGER,
    created_at     INTEGER NOT NULL,
    updated_at     INTEGER NOT NULL,
    PRIMARY KEY (saga, correlation_id)
) WITHOUT ROWID;
-- Queries by status and state.
CREATE INDEX {prefix}sagas_status ON {prefix}sagas (saga, status, state);
-- Stale instances.
CREATE INDEX {prefix}sagas_updated ON {prefix}sagas (saga, updated_at) WHERE status = 'active';
-- Instances past their timeout.
CREATE INDEX {prefix}sagas_timeout ON {prefix}sagas (saga, timeout_at) WHERE timeout_at IS NOT NULL;
