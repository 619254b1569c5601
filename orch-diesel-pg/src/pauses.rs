//! The pauses table: targets and command names whose commands claims skip.

use diesel::QueryableByName;
use diesel::sql_types::{BigInt, Text};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
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

/// The claim's condition that skips paused targets and names, `target` being the
/// parameter that holds the claim's target. Both subqueries run once per claim.
pub(crate) fn claim_filter(tables: &Tables, target: &str) -> String {
    format!(
        "NOT EXISTS (SELECT 1 FROM {p} WHERE kind = 'target' AND value = {target}) \
         AND name <> ALL (SELECT value FROM {p} WHERE kind = 'name')",
        p = tables.pauses
    )
}

pub(crate) async fn pause(
    conn: &mut AsyncPgConnection,
    tables: &Tables,
    scope: &PauseScope,
    now: Timestamp,
) -> TxResult<bool> {
    let added = diesel::sql_query(format!(
        "INSERT INTO {} (kind, value, paused_at) VALUES ($1, $2, $3) ON CONFLICT (kind, value) DO NOTHING",
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
    conn: &mut AsyncPgConnection,
    tables: &Tables,
    scope: &PauseScope,
) -> TxResult<bool> {
    let removed = diesel::sql_query(format!("DELETE FROM {} WHERE kind = $1 AND value = $2", tables.pauses))
        .bind::<Text, _>(scope.kind())
        .bind::<Text, _>(scope.value())
        .execute(conn)
        .await?;
    Ok(removed == 1)
}

pub(crate) async fn list(conn: &mut AsyncPgConnection, tables: &Tables) -> TxResult<Vec<PauseRecord>> {
    let rows: Vec<PauseRow> = diesel::sql_query(format!(
        "SELECT kind, value, paused_at FROM {} ORDER BY kind, value",
        tables.pauses
    ))
    .load(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| PauseScope::record(&r.kind, r.value, r.paused_at))
        .collect::<orch::Result<_>>()?)
}
