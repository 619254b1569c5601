//! Pruning finished commands: batches of short transactions on a connection of its
//! own that holds a named lock, so that one caller prunes a prefix at a time.

use diesel::QueryableByName;
use diesel::sql_types::{BigInt, Nullable, Text};
use diesel_async::{AsyncConnection, AsyncMysqlConnection, RunQueryDsl};
use orch::{TablePrefix, Timestamp};

use crate::commands::{IdRow, placeholders};
use crate::{Tables, TxError, TxResult};

#[derive(QueryableByName)]
struct LockResult {
    #[diesel(sql_type = Nullable<BigInt>)]
    result: Option<i64>,
}

fn lock_name(prefix: &TablePrefix) -> String {
    format!("orch:prune:{prefix}")
}

/// Deletes up to `limit` commands finished before `before` in batches of at most
/// `batch`, each in its own transaction; `None` when another connection holds the
/// prefix's pruning lock. `conn` should be a connection of its own: the named lock
/// belongs to the session.
pub(crate) async fn prune(
    conn: &mut AsyncMysqlConnection,
    tables: &Tables,
    prefix: &TablePrefix,
    before: Timestamp,
    limit: usize,
    batch: usize,
) -> TxResult<Option<u64>> {
    let lock = lock_name(prefix);
    let got: LockResult =
        diesel::sql_query("SELECT GET_LOCK(?, 0) AS result").bind::<Text, _>(&lock).get_result(conn).await?;
    if got.result != Some(1) {
        return Ok(None);
    }
    let mut total = 0u64;
    let result = async {
        while (total as usize) < limit {
            let take = batch.min(limit - total as usize);
            let gone = conn
                .transaction::<_, TxError, _>(async |conn| prune_batch(conn, tables, before, take).await)
                .await?;
            total += gone;
            if (gone as usize) < take {
                break;
            }
        }
        Ok::<_, TxError>(())
    }
    .await;
    let released = diesel::sql_query("SELECT RELEASE_LOCK(?) AS result")
        .bind::<Text, _>(&lock)
        .get_result::<LockResult>(conn)
        .await;
    if let Err(e) = &released {
        tracing::warn!(lock = %lock, error = %e, "could not release the mysql pruning lock; it goes with the connection");
    }
    result?;
    Ok(Some(total))
}

/// One batch: the oldest due finished commands (through the due-time index; a command
/// finishes after it was due), their journal entries, dependency edges and rows.
async fn prune_batch(
    conn: &mut AsyncMysqlConnection,
    tables: &Tables,
    before: Timestamp,
    limit: usize,
) -> TxResult<u64> {
    let doomed: Vec<IdRow> = diesel::sql_query(format!(
        "SELECT id FROM {} FORCE INDEX (commands_scheduled) WHERE scheduled_at < ? \
         AND state IN ('succeeded', 'failed', 'cancelled') AND finished_at < ? AND follow_ups_due = 0 \
         AND unique_window < ? ORDER BY scheduled_at, id LIMIT ? FOR UPDATE SKIP LOCKED",
        tables.commands
    ))
    .bind::<BigInt, _>(before.as_micros())
    .bind::<BigInt, _>(before.as_micros())
    .bind::<BigInt, _>(before.as_micros())
    .bind::<BigInt, _>(i64::try_from(limit).unwrap_or(i64::MAX))
    .load(conn)
    .await?;
    if doomed.is_empty() {
        return Ok(0);
    }
    let list = placeholders(doomed.len());
    let bind_all = |sql: String, times: usize| {
        let mut q = diesel::sql_query(sql).into_boxed::<diesel::mysql::Mysql>();
        for _ in 0..times {
            for d in &doomed {
                q = q.bind::<Text, _>(d.id.clone());
            }
        }
        q
    };
    bind_all(format!("DELETE FROM {} WHERE command_id IN ({list})", tables.journal), 1).execute(conn).await?;
    bind_all(
        format!("DELETE FROM {} WHERE command_id IN ({list}) OR depends_on IN ({list})", tables.dependencies),
        2,
    )
    .execute(conn)
    .await?;
    let gone =
        bind_all(format!("DELETE FROM {} WHERE id IN ({list})", tables.commands), 1).execute(conn).await?;
    Ok(gone as u64)
}
