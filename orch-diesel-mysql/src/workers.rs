//! The workers table: one row per worker process, for monitors, keyed by worker id.

use diesel::QueryableByName;
use diesel::sql_types::{BigInt, Integer, Text};
use diesel_async::{AsyncMysqlConnection, RunQueryDsl};
use orch::store::WorkerRecord;
use orch::store::backend::{decode_names, encode_names};
use orch::{Error, Timestamp};

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
        let id = self.id;
        let corrupt =
            |column: &str, value: i64| Error::Corrupt(format!("invalid {column} {value} of worker {id:?}"));
        let pid = u32::try_from(self.pid).map_err(|_| corrupt("pid", self.pid))?;
        let concurrency =
            u32::try_from(self.concurrency).map_err(|_| corrupt("concurrency", self.concurrency.into()))?;
        let running = u32::try_from(self.running).map_err(|_| corrupt("running", self.running.into()))?;
        Ok(WorkerRecord {
            instance_key: self.instance_key,
            host: self.host,
            pid,
            names: decode_names(&self.names)?,
            concurrency,
            running,
            started_at: Timestamp::from_micros(self.started_at),
            heartbeat_at: Timestamp::from_micros(self.heartbeat_at),
            id,
        })
    }
}

/// Inserts the worker's row, or replaces every column of the one with its id, in the
/// caller's transaction. Counts above `INT`'s range are refused by the database
/// (strict mode), never truncated.
pub(crate) async fn record(
    conn: &mut AsyncMysqlConnection,
    tables: &Tables,
    w: &WorkerRecord,
) -> TxResult<()> {
    diesel::sql_query(format!(
        "INSERT INTO {} ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON DUPLICATE KEY UPDATE \
         instance_key = VALUES(instance_key), host = VALUES(host), pid = VALUES(pid), \
         names = VALUES(names), concurrency = VALUES(concurrency), running = VALUES(running), \
         started_at = VALUES(started_at), heartbeat_at = VALUES(heartbeat_at)",
        tables.workers
    ))
    .bind::<Text, _>(&w.id)
    .bind::<Text, _>(&w.instance_key)
    .bind::<Text, _>(&w.host)
    .bind::<BigInt, _>(i64::from(w.pid))
    .bind::<Text, _>(encode_names(&w.names))
    .bind::<BigInt, _>(i64::from(w.concurrency))
    .bind::<BigInt, _>(i64::from(w.running))
    .bind::<BigInt, _>(w.started_at.as_micros())
    .bind::<BigInt, _>(w.heartbeat_at.as_micros())
    .execute(conn)
    .await?;
    Ok(())
}

/// Deletes the worker's row, if there is one.
pub(crate) async fn remove(conn: &mut AsyncMysqlConnection, tables: &Tables, id: &str) -> TxResult<()> {
    diesel::sql_query(format!("DELETE FROM {} WHERE id = ?", tables.workers))
        .bind::<Text, _>(id)
        .execute(conn)
        .await?;
    Ok(())
}

/// Every row, by id.
pub(crate) async fn list(conn: &mut AsyncMysqlConnection, tables: &Tables) -> TxResult<Vec<WorkerRecord>> {
    let rows: Vec<WorkerRow> =
        diesel::sql_query(format!("SELECT {COLUMNS} FROM {} ORDER BY id", tables.workers)).load(conn).await?;
    Ok(rows.into_iter().map(WorkerRow::into_record).collect::<orch::Result<_>>()?)
}

/// Deletes the rows whose last heartbeat is before `before`, returning how many.
pub(crate) async fn prune(
    conn: &mut AsyncMysqlConnection,
    tables: &Tables,
    before: Timestamp,
) -> TxResult<u64> {
    let deleted = diesel::sql_query(format!("DELETE FROM {} WHERE heartbeat_at < ?", tables.workers))
        .bind::<BigInt, _>(before.as_micros())
        .execute(conn)
        .await?;
    Ok(u64::try_from(deleted).unwrap_or(u64::MAX))
}

#[derive(QueryableByName)]
struct Now {
    #[diesel(sql_type = BigInt)]
    micros: i64,
}

/// The server's clock now, in UTC whatever the session's time zone.
pub(crate) async fn server_time(conn: &mut AsyncMysqlConnection) -> TxResult<Timestamp> {
    let now: Now = diesel::sql_query(
        "SELECT CAST(TIMESTAMPDIFF(MICROSECOND, '1970-01-01 00:00:00', UTC_TIMESTAMP(6)) AS SIGNED) AS micros",
    )
    .get_result(conn)
    .await?;
    Ok(Timestamp::from_micros(now.micros))
}
