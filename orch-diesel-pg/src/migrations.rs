//! Embedded migrations, applied in order under a transaction-scoped advisory lock.
//!
//! `migrate` runs in one transaction that first takes `pg_advisory_xact_lock` on a key
//! derived from the prefix, so when several processes start at once the first applies
//! what is missing and the others, waiting on the lock, find it done.

use diesel::QueryableByName;
use diesel::sql_types::{BigInt, Integer};
use diesel_async::{AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use orch::store::backend::pending_migrations;

use crate::{Tables, TxResult};

/// Each migration's version and SQL, with `{prefix}` standing for the table prefix.
pub(crate) const MIGRATIONS: &[(i32, &str)] = &[
    (1, include_str!("../migrations/0001_commands_and_journal.sql")),
    (2, include_str!("../migrations/0002_workflows.sql")),
    (3, include_str!("../migrations/0003_sagas.sql")),
    (4, include_str!("../migrations/0004_workers.sql")),
    (5, include_str!("../migrations/0005_monitor_indexes.sql")),
    (6, include_str!("../migrations/0006_claim_index.sql")),
    (7, include_str!("../migrations/0007_priority.sql")),
    (8, include_str!("../migrations/0008_pauses.sql")),
    (9, include_str!("../migrations/0009_unique_keys.sql")),
    (10, include_str!("../migrations/0010_schedules.sql")),
];

#[derive(QueryableByName)]
struct Present {
    #[diesel(sql_type = diesel::sql_types::Bool)]
    present: bool,
}

#[derive(QueryableByName)]
struct Version {
    #[diesel(sql_type = Integer)]
    version: i32,
}

/// The advisory lock key of `what` (`migrate`, `prune`) for a prefix: FNV-1a over a
/// fixed tag and the prefix, stable across processes and versions.
pub(crate) fn advisory_key(what: &str, prefix: &str) -> i64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let tag = format!("orch-diesel-pg:{what}:");
    for byte in tag.bytes().chain(prefix.bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    i64::from_ne_bytes(hash.to_ne_bytes())
}

/// The advisory lock key of a prefix's schema.
fn lock_key(prefix: &str) -> i64 {
    advisory_key("migrate", prefix)
}

async fn lock(conn: &mut AsyncPgConnection, tables: &Tables) -> TxResult<()> {
    diesel::sql_query("SELECT pg_advisory_xact_lock($1)")
        .bind::<BigInt, _>(lock_key(&tables.prefix))
        .execute(conn)
        .await?;
    Ok(())
}

/// Applies the missing migrations; runs inside the caller's transaction.
pub(crate) async fn run(conn: &mut AsyncPgConnection, tables: &Tables) -> TxResult<()> {
    lock(conn, tables).await?;
    // Only when it is missing: a role that may not create tables can still run an
    // up-to-date `migrate`, which then reads the versions and changes nothing.
    let present: Present = diesel::sql_query("SELECT to_regclass($1) IS NOT NULL AS present")
        .bind::<diesel::sql_types::Text, _>(&tables.migrations)
        .get_result(conn)
        .await?;
    if !present.present {
        conn.batch_execute(&format!(
            "CREATE TABLE IF NOT EXISTS {} (version INTEGER PRIMARY KEY NOT NULL, applied_at BIGINT NOT NULL)",
            tables.migrations
        ))
        .await?;
    }
    let applied: Vec<i32> =
        diesel::sql_query(format!("SELECT version FROM {} ORDER BY version", tables.migrations))
            .load::<Version>(conn)
            .await?
            .into_iter()
            .map(|v| v.version)
            .collect();
    for (version, sql) in pending_migrations(MIGRATIONS, &applied, "orch-diesel-pg", &tables.prefix)? {
        conn.batch_execute(&sql.replace("{prefix}", &tables.prefix)).await?;
        diesel::sql_query(format!(
            "INSERT INTO {} (version, applied_at) VALUES ($1, (EXTRACT(EPOCH FROM clock_timestamp()) * 1000000)::BIGINT)",
            tables.migrations
        ))
        .bind::<Integer, _>(*version)
        .execute(conn)
        .await?;
        tracing::info!(version, prefix = %tables.prefix, "applied postgres migration");
    }
    tracing::debug!(prefix = %tables.prefix, version = MIGRATIONS.len(), "postgres schema is up to date");
    Ok(())
}

/// Drops every table of the prefix; runs inside the caller's transaction.
pub(crate) async fn drop_all(conn: &mut AsyncPgConnection, tables: &Tables) -> TxResult<()> {
    lock(conn, tables).await?;
    conn.batch_execute(&format!(
        "DROP TABLE IF EXISTS {}, {}, {}, {}, {}, {}, {}, {}",
        tables.commands,
        tables.journal,
        tables.dependencies,
        tables.sagas,
        tables.workers,
        tables.pauses,
        tables.schedules,
        tables.migrations
    ))
    .await?;
    tracing::debug!(prefix = %tables.prefix, "dropped postgres tables");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::lock_key;

    #[test]
    fn lock_keys_are_stable_and_distinct() {
        assert_eq!(lock_key("orch_"), lock_key("orch_"));
        assert_ne!(lock_key("orch_"), lock_key("orch2_"));
    }
}
