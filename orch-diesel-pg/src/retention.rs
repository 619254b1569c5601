//! Pruning finished commands: one batch per statement, under a transaction-scoped
//! advisory lock so that one caller prunes a prefix at a time.

use diesel::QueryableByName;
use diesel::sql_types::{BigInt, Bool};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use orch::Timestamp;

use crate::{Tables, TxResult};

#[derive(QueryableByName)]
struct Got {
    #[diesel(sql_type = Bool)]
    got: bool,
}

#[derive(QueryableByName)]
struct Gone {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

/// In the caller's transaction: `None` when another transaction is pruning this prefix,
/// else deletes up to `limit` commands finished before `before` (found through the
/// due-time index, oldest first: a command finishes after it was due), their journal
/// entries and dependency edges, and returns how many.
pub(crate) async fn prune(
    conn: &mut AsyncPgConnection,
    tables: &Tables,
    before: Timestamp,
    limit: usize,
) -> TxResult<Option<u64>> {
    let got: Got = diesel::sql_query("SELECT pg_try_advisory_xact_lock($1) AS got")
        .bind::<BigInt, _>(crate::migrations::advisory_key("prune", &tables.prefix))
        .get_result(conn)
        .await?;
    if !got.got {
        return Ok(None);
    }
    let gone: Gone = diesel::sql_query(format!(
        "WITH doomed AS (SELECT id FROM {c} WHERE scheduled_at < $1 \
         AND state IN ('succeeded', 'failed', 'cancelled') AND finished_at < $1 AND NOT follow_ups_due \
         AND unique_window < $1 \
         ORDER BY scheduled_at, id LIMIT $2 FOR UPDATE SKIP LOCKED), \
         j AS (DELETE FROM {j} WHERE command_id IN (SELECT id FROM doomed)), \
         d AS (DELETE FROM {d} WHERE command_id IN (SELECT id FROM doomed) OR depends_on IN (SELECT id FROM doomed)), \
         gone AS (DELETE FROM {c} WHERE id IN (SELECT id FROM doomed) RETURNING id) \
         SELECT COUNT(*) AS n FROM gone",
        c = tables.commands,
        j = tables.journal,
        d = tables.dependencies,
    ))
    .bind::<BigInt, _>(before.as_micros())
    .bind::<BigInt, _>(i64::try_from(limit).unwrap_or(i64::MAX))
    .get_result(conn)
    .await?;
    Ok(Some(u64::try_from(gone.n).unwrap_or(0)))
}
