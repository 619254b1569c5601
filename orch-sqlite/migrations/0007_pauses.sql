-- Pauses: a target or a command name whose commands claims skip until resumed.
CREATE TABLE {prefix}pauses (
    kind      TEXT    NOT NULL,
    value     TEXT    NOT NULL,
    paused_at INTEGER NOT NULL,
    PRIMARY KEY (kind, value)
) WITHOUT ROWID;
