//! The workers table: one row per worker process, refreshed at its heartbeats.

use diesel::QueryableByName;
use diesel::sql_types::{BigInt, Integer, Text};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use orch::store::WorkerRecord;
use orch::store::backend::{decode_names, encode_names, u32_of};
use orch::{Error, Timestamp};

use crate::prepared::Prepare;
use crate::{Tables, TxResult};

const COLUMNS: &str = "id, instance_key, host, pid, names, concurrency, running, started_at, heartbeat_at";

#[derive(QueryableByName)]
struct WorkerRow {
    #[diesel(sql_type = Text)]
    id: String,
    #[diesel(sql_type = Text)]
    instance_key: String,
    #[diesel(sql_type = Text)]
    host: String,
    #[diesel(sql_type = BigInt)]
    pid: i64,
    #[diesel(sql_type = Text)]
    names: String,
    #[diesel(sql_type = Integer)]
    concurrency: i32,
    #[diesel(sql_type = Integer)]
    running: i32,
    #[diesel(sql_type = BigInt)]
    started_at: i64,
    #[diesel(sql_type = BigInt)]
    heartbeat_at: i64,
}

impl WorkerRow {
    fn into_record(self) -> orch::Result<WorkerRecord> {
        Ok(WorkerRecord {
            pid: u32::try_from(self.pid)
                .map_err(|_| Error::Corrupt(format!("invalid pid {} of worker {:?}", self.pid, self.id)))?,
            names: decode_names(&self.names)?,
            concurrency: u32_of(self.concurrency.into()),
            running: u32_of(self.running.into()),
            started_at: Timestamp::from_micros(self.started_at),
            heartbeat_at: Timestamp::from_micros(self.heartbeat_at),
            id: self.id,
            instance_key: self.instance_key,
            host: self.host,
        })
    }
}

/// A `u32` in an INTEGER column, saturating.
fn integer(v: u32) -> i32 {
    i32::try_from(v).unwrap_or(i32::MAX)
}

/// Inserts the worker's row, or replaces every column of the row with its id.
pub(crate) async fn record(conn: &mut AsyncPgConnection, tables: &Tables, w: &WorkerRecord) -> TxResult<()> {
    diesel::sql_query(format!(
        "INSERT INTO {} ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
         ON CONFLICT (id) DO UPDATE SET instance_key = EXCLUDED.instance_key, host = EXCLUDED.host, \
         pid = EXCLUDED.pid, names = EXCLUDED.names, concurrency = EXCLUDED.concurrency, \
         running = EXCLUDED.running, started_at = EXCLUDED.started_at, heartbeat_at = EXCLUDED.heartbeat_at",
        tables.workers
    ))
    .bind::<Text, _>(&w.id)
    .bind::<Text, _>(&w.instance_key)
    .bind::<Text, _>(&w.host)
    .bind::<BigInt, _>(i64::from(w.pid))
    .bind::<Text, _>(encode_names(&w.names))
    .bind::<Integer, _>(integer(w.concurrency))
    .bind::<Integer, _>(integer(w.running))
    .bind::<BigInt, _>(w.started_at.as_micros())
    .bind::<BigInt, _>(w.heartbeat_at.as_micros())
    .prepared()
    .execute(conn)
    .await?;
    Ok(())
}

/// Deletes the worker's row, if there is one.
pub(crate) async fn remove(conn: &mut AsyncPgConnection, tables: &Tables, id: &str) -> TxResult<()> {
    diesel::sql_query(format!("DELETE FROM {} WHERE id = $1", tables.workers))
        .bind::<Text, _>(id)
        .prepared()
        .execute(conn)
        .await?;
    Ok(())
}

/// Every row, by id.
pub(crate) async fn list(conn: &mut AsyncPgConnection, tables: &Tables) -> TxResult<Vec<WorkerRecord>> {
    let rows: Vec<WorkerRow> =
        diesel::sql_query(format!("SELECT {COLUMNS} FROM {} ORDER BY id", tables.workers))
            .prepared()
            .load(conn)
            .await?;
    Ok(rows.into_iter().map(WorkerRow::into_record).collect::<orch::Result<_>>()?)
}

/// Deletes the rows whose last heartbeat is before `before`, returning how many.
pub(crate) async fn prune(conn: &mut AsyncPgConnection, tables: &Tables, before: Timestamp) -> TxResult<u64> {
    let deleted = diesel::sql_query(format!("DELETE FROM {} WHERE heartbeat_at < $1", tables.workers))
        .bind::<BigInt, _>(before.as_micros())
        .prepared()
        .execute(conn)
        .await?;
    Ok(u64::try_from(deleted).unwrap_or(u64::MAX))
}

#[derive(QueryableByName)]
struct Now {
    #[diesel(sql_type = BigInt)]
    micros: i64,
}

/// The server's clock now (`clock_timestamp()`, not the transaction's start).
pub(crate) async fn server_time(conn: &mut AsyncPgConnection) -> TxResult<Timestamp> {
    let now: Now =
        diesel::sql_query("SELECT (extract(epoch FROM clock_timestamp()) * 1000000)::bigint AS micros")
            .get_result(conn)
            .await?;
    Ok(Timestamp::from_micros(now.micros))
}
