//! Pruning finished commands: one batch per write transaction.

use diesel::sql_types::{BigInt, Text};
use diesel::{QueryableByName, RunQueryDsl, SqliteConnection};
use orch::Timestamp;

use crate::commands::placeholders;
use crate::{Tables, TxResult};

#[derive(QueryableByName)]
struct Doomed {
    #[diesel(sql_type = Text)]
    id: String,
}

/// Deletes up to `limit` commands finished before `before`, with their journal entries
/// and dependency edges; returns how many. Found through the due-time index, oldest
/// first: a command finishes after it was due.
pub(crate) fn prune(
    conn: &mut SqliteConnection,
    tables: &Tables,
    before: Timestamp,
    limit: usize,
) -> TxResult<u64> {
    let doomed: Vec<Doomed> = diesel::sql_query(format!(
        "SELECT id FROM {} WHERE scheduled_at < ? AND state IN ('succeeded', 'failed', 'cancelled') \
         AND finished_at < ? AND follow_ups_due = 0 AND unique_window < ? ORDER BY scheduled_at, id LIMIT ?",
        tables.commands
    ))
    .bind::<BigInt, _>(before.as_micros())
    .bind::<BigInt, _>(before.as_micros())
    .bind::<BigInt, _>(before.as_micros())
    .bind::<BigInt, _>(i64::try_from(limit).unwrap_or(i64::MAX))
    .load(conn)?;
    if doomed.is_empty() {
        return Ok(0);
    }
    let list = placeholders(doomed.len());
    let run = |conn: &mut SqliteConnection, sql: String, times: usize| -> TxResult<usize> {
        let mut query = diesel::sql_query(sql).into_boxed::<diesel::sqlite::Sqlite>();
        for _ in 0..times {
            for d in &doomed {
                query = query.bind::<Text, _>(d.id.clone());
            }
        }
        Ok(query.execute(conn)?)
    };
    run(conn, format!("DELETE FROM {} WHERE command_id IN ({list})", tables.journal), 1)?;
    run(
        conn,
        format!("DELETE FROM {} WHERE command_id IN ({list}) OR depends_on IN ({list})", tables.dependencies),
        2,
    )?;
    let gone = run(conn, format!("DELETE FROM {} WHERE id IN ({list})", tables.commands), 1)?;
    Ok(gone as u64)
}
