//! The pauses table: targets and command names whose commands claims skip.

use diesel::sql_types::{BigInt, Text};
use diesel::{QueryableByName, RunQueryDsl, SqliteConnection};
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

/// The claim's condition that skips paused targets and names (`target` is the claim's
/// target parameter).
pub(crate) fn claim_filter(tables: &Tables) -> String {
    format!(
        "NOT EXISTS (SELECT 1 FROM {p} WHERE kind = 'target' AND value = ?) \
         AND name NOT IN (SELECT value FROM {p} WHERE kind = 'name')",
        p = tables.pauses
    )
}

pub(crate) fn pause(
    conn: &mut SqliteConnection,
    tables: &Tables,
    scope: &PauseScope,
    now: Timestamp,
) -> TxResult<bool> {
    let added = diesel::sql_query(format!(
        "INSERT INTO {} (kind, value, paused_at) VALUES (?, ?, ?) ON CONFLICT (kind, value) DO NOTHING",
        tables.pauses
    ))
    .bind::<Text, _>(scope.kind())
    .bind::<Text, _>(scope.value())
    .bind::<BigInt, _>(now.as_micros())
    .execute(conn)?;
    Ok(added == 1)
}

pub(crate) fn resume(conn: &mut SqliteConnection, tables: &Tables, scope: &PauseScope) -> TxResult<bool> {
    let removed = diesel::sql_query(format!("DELETE FROM {} WHERE kind = ? AND value = ?", tables.pauses))
        .bind::<Text, _>(scope.kind())
        .bind::<Text, _>(scope.value())
        .execute(conn)?;
    Ok(removed == 1)
}

pub(crate) fn list(conn: &mut SqliteConnection, tables: &Tables) -> TxResult<Vec<PauseRecord>> {
    let rows: Vec<PauseRow> = diesel::sql_query(format!(
        "SELECT kind, value, paused_at FROM {} ORDER BY kind, value",
        tables.pauses
    ))
    .load(conn)?;
    Ok(rows
        .into_iter()
        .map(|r| PauseScope::record(&r.kind, r.value, r.paused_at))
        .collect::<orch::Result<_>>()?)
}
