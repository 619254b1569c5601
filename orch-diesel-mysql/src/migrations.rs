//! Embedded migrations, applied in order under a named lock.
//!
//! DDL commits implicitly in MySQL, so no transaction can make a migration atomic.
//! Instead `migrate` takes the server-wide named lock `orch_migrate_<prefix>`
//! (`GET_LOCK`) on one dedicated connection: when several processes start at once the
//! first applies what is missing and the others, waiting on the lock, find it done.
//! Every statement is idempotent on its own (`CREATE TABLE IF NOT EXISTS`, indexes
//! declared inside it; an `ALTER TABLE` built from what information_schema says is
//! missing), so a migration cut short by a crash is completed by the next run, and a
//! version is recorded only after all its statements succeeded.

use diesel::QueryableByName;
use diesel::sql_types::{BigInt, Integer, Nullable, Text};
use diesel_async::{AsyncMysqlConnection, RunQueryDsl, SimpleAsyncConnection};
use orch::store::backend::pending_migrations;
use orch::{Error, TablePrefix};

use crate::{BACKEND, Tables, TxResult};

/// Each migration's version and SQL, with `{prefix}` standing for the table prefix.
pub(crate) const MIGRATIONS: &[(i32, &str)] = &[
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

/// How long `migrate` waits for another process's migration, in seconds.
const LOCK_WAIT_SECS: i64 = 60;

#[derive(QueryableByName)]
struct Version {
    #[diesel(sql_type = Integer)]
    version: i32,
}

#[derive(QueryableByName)]
struct Present {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    n: i64,
}

#[derive(QueryableByName)]
struct LockResult {
    #[diesel(sql_type = Nullable<BigInt>)]
    result: Option<i64>,
}

/// The statements of one migration file: `--` comment lines dropped, split at the
/// semicolons that end a line, `{prefix}` replaced.
pub(crate) fn statements(sql: &str, prefix: &TablePrefix) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in sql.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with("--") || trimmed.is_empty() {
            continue;
        }
        let (text, ends) = match trimmed.strip_suffix(';') {
            Some(text) => (text, true),
            None => (trimmed, false),
        };
        if !current.is_empty() {
            current.push(' ');
        }
        current.push_str(text);
        if ends {
            out.push(current.replace("{prefix}", prefix.as_str()));
            current.clear();
        }
    }
    if !current.trim().is_empty() {
        out.push(current.replace("{prefix}", prefix.as_str()));
    }
    out
}

/// The name of the migration lock of `prefix` (at most 13 + 32 characters, within
/// MySQL's 64-character limit for lock names).
pub(crate) fn lock_name(prefix: &TablePrefix) -> String {
    format!("orch_migrate_{prefix}")
}

/// Runs the missing migrations under the named lock, on `conn` (a connection of its
/// own, so the lock dies with it if this future is dropped half way).
pub(crate) async fn run(
    conn: &mut AsyncMysqlConnection,
    tables: &Tables,
    prefix: &TablePrefix,
) -> TxResult<()> {
    let lock = lock_name(prefix);
    let got: LockResult = diesel::sql_query("SELECT GET_LOCK(?, ?) AS result")
        .bind::<Text, _>(&lock)
        .bind::<BigInt, _>(LOCK_WAIT_SECS)
        .get_result(conn)
        .await?;
    if got.result != Some(1) {
        return Err(Error::backend(
            BACKEND,
            format!(
                "could not take the migration lock `{lock}` within {LOCK_WAIT_SECS} s \
                 (another process may be migrating prefix `{prefix}`)"
            ),
        )
        .into());
    }
    tracing::debug!(lock = %lock, "took the mysql migration lock");
    let result = apply(conn, tables, prefix).await;
    let released = diesel::sql_query("SELECT RELEASE_LOCK(?) AS result")
        .bind::<Text, _>(&lock)
        .get_result::<LockResult>(conn)
        .await;
    if let Err(e) = &released {
        tracing::warn!(lock = %lock, error = %e, "could not release the mysql migration lock; it goes with the connection");
    }
    result?;
    released?;
    Ok(())
}

async fn apply(conn: &mut AsyncMysqlConnection, tables: &Tables, prefix: &TablePrefix) -> TxResult<()> {
    // Only when it is missing: a user that may not create tables can still run an
    // up-to-date `migrate`, which then reads the versions and changes nothing.
    let present: Present = diesel::sql_query(
        "SELECT COUNT(*) AS n FROM information_schema.tables WHERE table_schema = DATABASE() AND table_name = ?",
    )
    .bind::<diesel::sql_types::Text, _>(format!("{prefix}migrations"))
    .get_result(conn)
    .await?;
    if present.n == 0 {
        conn.batch_execute(&format!(
            "CREATE TABLE IF NOT EXISTS {} (version INT NOT NULL PRIMARY KEY, applied_at BIGINT NOT NULL) \
             ENGINE = InnoDB",
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
    let mut changed = false;
    for (version, sql) in pending_migrations(MIGRATIONS, &applied, "orch-diesel-mysql", prefix.as_str())? {
        for statement in statements(sql, prefix) {
            conn.batch_execute(&statement).await?;
        }
        diesel::sql_query(format!(
            "INSERT INTO {} (version, applied_at) VALUES (?, UNIX_TIMESTAMP())",
            tables.migrations
        ))
        .bind::<Integer, _>(*version)
        .execute(conn)
        .await?;
        tracing::info!(version, prefix = %prefix, "applied mysql migration");
        changed = true;
    }
    if !changed {
        tracing::debug!(prefix = %prefix, version = MIGRATIONS.len(), "mysql schema is up to date");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migration_splits_into_prefixed_statements() {
        let prefix = TablePrefix::new("p_").unwrap();
        let statements = statements(MIGRATIONS[0].1, &prefix);
        assert_eq!(statements.len(), 2, "{statements:#?}");
        assert!(statements[0].starts_with("CREATE TABLE IF NOT EXISTS `p_commands` ("));
        assert!(statements[1].starts_with("CREATE TABLE IF NOT EXISTS `p_journal` ("));
        for s in &statements {
            assert!(!s.contains("--") && !s.contains(';') && !s.contains("{prefix}"), "{s}");
            assert!(s.ends_with("COLLATE = utf8mb4_bin"), "{s}");
        }
    }

    #[test]
    fn workflow_migration_guards_its_alter() {
        let prefix = TablePrefix::new("p_").unwrap();
        let statements = statements(MIGRATIONS[1].1, &prefix);
        assert_eq!(statements.len(), 6, "{statements:#?}");
        assert!(statements[0].starts_with("SET @orch_missing = CONCAT_WS("), "{}", statements[0]);
        assert!(statements[0].contains("table_name = 'p_commands'"));
        assert!(statements[1].contains("'ALTER TABLE `p_commands` '"), "{}", statements[1]);
        assert_eq!(
            statements[2..5],
            ["PREPARE orch_ddl FROM @orch_ddl", "EXECUTE orch_ddl", "DEALLOCATE PREPARE orch_ddl"]
        );
        assert!(statements[5].starts_with("CREATE TABLE IF NOT EXISTS `p_dependencies` ("));
        for s in &statements {
            assert!(!s.contains("--") && !s.contains(';') && !s.contains("{prefix}"), "{s}");
        }
    }

    #[test]
    fn saga_migration_is_one_create_table() {
        let prefix = TablePrefix::new("p_").unwrap();
        let statements = statements(MIGRATIONS[2].1, &prefix);
        assert_eq!(statements.len(), 1, "{statements:#?}");
        let s = &statements[0];
        assert!(s.starts_with("CREATE TABLE IF NOT EXISTS `p_sagas` ("), "{s}");
        assert!(s.contains("PRIMARY KEY (saga, correlation_id)"), "{s}");
        for index in ["sagas_status (saga, status, state)", "sagas_updated (saga, updated_at)"] {
            assert!(s.contains(&format!("KEY {index}")), "{s}");
        }
        assert!(s.contains("KEY sagas_timeout (saga, timeout_at)"), "{s}");
        assert!(!s.contains("--") && !s.contains(';') && !s.contains("{prefix}"), "{s}");
        assert!(s.ends_with("COLLATE = utf8mb4_bin"), "{s}");
    }

    #[test]
    fn worker_migration_is_one_create_table() {
        let prefix = TablePrefix::new("p_").unwrap();
        let statements = statements(MIGRATIONS[3].1, &prefix);
        assert_eq!(statements.len(), 1, "{statements:#?}");
        let s = &statements[0];
        assert!(s.starts_with("CREATE TABLE IF NOT EXISTS `p_workers` ("), "{s}");
        assert!(s.contains("PRIMARY KEY (id)"), "{s}");
        assert!(s.contains("KEY workers_heartbeat (heartbeat_at)"), "{s}");
        assert!(!s.contains("--") && !s.contains(';') && !s.contains("{prefix}"), "{s}");
        assert!(s.ends_with("COLLATE = utf8mb4_bin"), "{s}");
    }

    #[test]
    fn monitor_index_migration_guards_its_alter() {
        let prefix = TablePrefix::new("p_").unwrap();
        let statements = statements(MIGRATIONS[4].1, &prefix);
        assert_eq!(statements.len(), 5, "{statements:#?}");
        assert!(statements[0].starts_with("SET @orch_missing = CONCAT_WS("), "{}", statements[0]);
        assert!(statements[0].contains("table_name = 'p_commands'"));
        for index in ["commands_scheduled (scheduled_at, id)", "commands_attempts (attempts, id)"] {
            assert!(statements[0].contains(&format!("'ADD KEY {index}'")), "{}", statements[0]);
        }
        assert!(statements[1].contains("'ALTER TABLE `p_commands` '"), "{}", statements[1]);
        assert_eq!(
            statements[2..],
            ["PREPARE orch_ddl FROM @orch_ddl", "EXECUTE orch_ddl", "DEALLOCATE PREPARE orch_ddl"]
        );
        for s in &statements {
            assert!(!s.contains("--") && !s.contains(';') && !s.contains("{prefix}"), "{s}");
        }
    }

    #[test]
    fn lock_names_fit_mysql() {
        let longest = TablePrefix::new(&"p".repeat(TablePrefix::MAX_LEN)).unwrap();
        assert!(lock_name(&longest).len() <= 64);
    }
}
