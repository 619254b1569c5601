//! The workers table: one row per running worker process, for monitors.

use diesel::sql_types::{BigInt, Integer, Text};
use diesel::{QueryableByName, RunQueryDsl, SqliteConnection};
use orch::store::WorkerRecord;
use orch::store::backend::{decode_names, encode_names, u32_of};
use orch::{Error, Timestamp};

use crate::prepared::Prepare;
use crate::{Tables, TxResult};

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

pub(crate) fn record(conn: &mut SqliteConnection, tables: &Tables, w: &WorkerRecord) -> TxResult<()> {
    diesel::sql_query(format!(
        "INSERT INTO {} (id, instance_key, host, pid, names, concurrency, running, started_at, heartbeat_at) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET instance_key = excluded.instance_key, \
         host = excluded.host, pid = excluded.pid, names = excluded.names, concurrency = excluded.concurrency, \
         running = excluded.running, started_at = excluded.started_at, heartbeat_at = excluded.heartbeat_at",
        tables.workers
    ))
    .bind::<Text, _>(&w.id)
    .bind::<Text, _>(&w.instance_key)
    .bind::<Text, _>(&w.host)
    .bind::<BigInt, _>(i64::from(w.pid))
    .bind::<Text, _>(encode_names(&w.names))
    .bind::<Integer, _>(i32::try_from(w.concurrency).unwrap_or(i32::MAX))
    .bind::<Integer, _>(i32::try_from(w.running).unwrap_or(i32::MAX))
    .bind::<BigInt, _>(w.started_at.as_micros())
    .bind::<BigInt, _>(w.heartbeat_at.as_micros())
    .prepared().execute(conn)?;
    Ok(())
}

pub(crate) fn remove(conn: &mut SqliteConnection, tables: &Tables, id: &str) -> TxResult<()> {
    diesel::sql_query(format!("DELETE FROM {} WHERE id = ?", tables.workers))
        .bind::<Text, _>(id)
        .prepared()
        .execute(conn)?;
    Ok(())
}

pub(crate) fn prune(conn: &mut SqliteConnection, tables: &Tables, before: Timestamp) -> TxResult<u64> {
    let removed = diesel::sql_query(format!("DELETE FROM {} WHERE heartbeat_at < ?", tables.workers))
        .bind::<BigInt, _>(before.as_micros())
        .prepared()
        .execute(conn)?;
    Ok(removed as u64)
}

pub(crate) fn list(conn: &mut SqliteConnection, tables: &Tables) -> TxResult<Vec<WorkerRecord>> {
    let rows: Vec<WorkerRow> = diesel::sql_query(format!(
        "SELECT id, instance_key, host, pid, names, concurrency, running, started_at, heartbeat_at FROM {} ORDER BY id",
        tables.workers
    ))
    .prepared().load(conn)?;
    rows.into_iter()
        .map(|r| {
            Ok(WorkerRecord {
                pid: u32::try_from(r.pid)
                    .map_err(|_| Error::Corrupt(format!("worker {} has an invalid pid {}", r.id, r.pid)))?,
                names: decode_names(&r.names)?,
                concurrency: u32_of(r.concurrency.into()),
                running: u32_of(r.running.into()),
                started_at: Timestamp::from_micros(r.started_at),
                heartbeat_at: Timestamp::from_micros(r.heartbeat_at),
                id: r.id,
                instance_key: r.instance_key,
                host: r.host,
            })
        })
        .collect()
}

#[derive(QueryableByName)]
struct Now {
    #[diesel(sql_type = BigInt)]
    micros: i64,
}

/// The time by the database's reckoning (SQLite reads the operating system's clock,
/// to the millisecond).
pub(crate) fn server_time(conn: &mut SqliteConnection) -> TxResult<Timestamp> {
    let now: Now = diesel::sql_query(
        "SELECT CAST(ROUND((julianday('now') - 2440587.5) * 86400000.0) AS INTEGER) * 1000 AS micros",
    )
    .get_result(conn)?;
    Ok(Timestamp::from_micros(now.micros))
}
