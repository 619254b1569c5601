//! Embedded migrations, applied in order under the write lock.
//!
//! `migrate` runs inside `BEGIN IMMEDIATE`, so when several processes start at once
//! the first applies what is missing and the others, waiting on the lock, find it done.

use diesel::connection::SimpleConnection;
use diesel::sql_types::Integer;
use diesel::{QueryableByName, RunQueryDsl, SqliteConnection};
use orch::TablePrefix;
use orch::store::backend::pending_migrations;

use crate::{Tables, TxResult};

/// Each migration's version and SQL, with `{prefix}` standing for the table prefix.
const MIGRATIONS: &[(i32, &str)] = &[
    (1, include_str!("../migrations/0001_commands_and_journal.sql")),
    (2, include_str!("../migrations/0002_workflows.sql")),
    (3, include_str!("../migrations/0003_sagas.sql")),
    (4, include_str!("../migrations/0004_workers.sql")),
    (5, include_str!("../migrations/0005_monitor_indexes.sql")),
    (6, include_str!("../migrations/0006_priority.sql")),
    (7, include_str!("../migrations/0007_pauses.sql")),
    (8, include_str!("../migrations/0008_unique_keys.sql")),
    (9, include_str!("../migrations/0009_schedules.sql")),
];

#[derive(QueryableByName)]
struct Version {
    #[diesel(sql_type = Integer)]
    version: i32,
}

pub(crate) fn run(conn: &mut SqliteConnection, tables: &Tables, prefix: &TablePrefix) -> TxResult<()> {
    conn.batch_execute(&format!(
        "CREATE TABLE IF NOT EXISTS {} (version INTEGER PRIMARY KEY NOT NULL, applied_at INTEGER NOT NULL)",
        tables.migrations
    ))?;
    let applied: Vec<i32> =
        diesel::sql_query(format!("SELECT version FROM {} ORDER BY version", tables.migrations))
            .load::<Version>(conn)?
            .into_iter()
            .map(|v| v.version)
            .collect();
    for (version, sql) in pending_migrations(MIGRATIONS, &applied, "orch-sqlite", prefix.as_str())? {
        conn.batch_execute(&sql.replace("{prefix}", prefix.as_str()))?;
        conn.batch_execute(&format!(
            "INSERT INTO {} (version, applied_at) VALUES ({version}, CAST(strftime('%s', 'now') AS INTEGER))",
            tables.migrations
        ))?;
        tracing::info!(version, prefix = %prefix, "applied sqlite migration");
    }
    Ok(())
}
