//! The pauses table: targets and command names whose commands claims skip.
//!
//! A claim reads the pauses with a plain (non-locking) SELECT before it picks its batch
//! and leaves paused names out of it: inside the batch's `FOR UPDATE SKIP LOCKED`, a
//! subquery on this table would lock its rows too, and a claim that found them locked
//! by another would skip them, and with them the pause.

use diesel::QueryableByName;
use diesel::sql_types::{BigInt, Text};
use diesel_async::{AsyncMysqlConnection, RunQueryDsl};
use orch::Timestamp;
use orch::store::{PauseRecord, PauseScope};

use crate::{Tables, TxResult};

#[derive(QueryableByName)]
struct PauseRow {
    #[diesel(sql_type = Text)]
    kind: String,
    #[diesel(sql_type = Text)]
    value: String,
    #[diesel(sql_type = BigInt)]
    paused_at: i64,
}

pub(crate) async fn pause(
    conn: &mut AsyncMysqlConnection,
    tables: &Tables,
    scope: &PauseScope,
    now: Timestamp,
) -> TxResult<bool> {
    let added = diesel::sql_query(format!(
        "INSERT IGNORE INTO {} (kind, value, paused_at) VALUES (?, ?, ?)",
        tables.pauses
    ))
    .bind::<Text, _>(scope.kind())
    .bind::<Text, _>(scope.value())
    .bind::<BigInt, _>(now.as_micros())
    .execute(conn)
    .await?;
    Ok(added == 1)
}

pub(crate) async fn resume(
    conn: &mut AsyncMysqlConnection,
    tables: &Tables,
    scope: &PauseScope,
) -> TxResult<bool> {
    let removed = diesel::sql_query(format!("DELETE FROM {} WHERE kind = ? AND value = ?", tables.pauses))
        .bind::<Text, _>(scope.kind())
        .bind::<Text, _>(scope.value())
        .execute(conn)
        .await?;
    Ok(removed == 1)
}

pub(crate) async fn list(conn: &mut AsyncMysqlConnection, tables: &Tables) -> TxResult<Vec<PauseRecord>> {
    let rows: Vec<PauseRow> = diesel::sql_query(format!(
        "SELECT CAST(kind AS CHAR) AS kind, value, paused_at FROM {} ORDER BY kind, value",
        tables.pauses
    ))
    .load(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| PauseScope::record(&r.kind, r.value, r.paused_at))
        .collect::<orch::Result<_>>()?)
}

/// The names of `names` a claim for `target` may take: none while the target is
/// paused, else those not paused.
pub(crate) async fn claimable(
    conn: &mut AsyncMysqlConnection,
    tables: &Tables,
    target: &str,
    names: &[String],
) -> TxResult<Vec<String>> {
    let paused = list(conn, tables).await?;
    if paused.iter().any(|p| p.scope == PauseScope::Target(target.to_owned())) {
        return Ok(Vec::new());
    }
    Ok(names
        .iter()
        .filter(|n| !paused.iter().any(|p| p.scope == PauseScope::Name((*n).clone())))
        .cloned()
        .collect())
}
