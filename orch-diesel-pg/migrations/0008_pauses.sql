-- Pauses: a target or a command name whose commands claims skip until resumed. Values
-- compare byte-wise (COLLATE "C"), as names and targets do in the commands table.
CREATE TABLE IF NOT EXISTS {prefix}pauses (
    kind      TEXT   COLLATE "C" NOT NULL,
    value     TEXT   COLLATE "C" NOT NULL,
    paused_at BIGINT NOT NULL,
    PRIMARY KEY (kind, value)
);
