//! The sagas table: saga instances, saved compare-and-set on their version.

use diesel::sql_types::{BigInt, Nullable, Text};
use diesel::sqlite::Sqlite;
use diesel::{QueryableByName, RunQueryDsl, SqliteConnection};
use orch::Timestamp;
use orch::store::{SagaQuery, SagaRecord, SagaStatus, SagaWrite, SagaWriteStatus};

use crate::prepared::Prepare;
use crate::{Tables, TxResult, commands};

const COLUMNS: &str = "saga, correlation_id, state, status, data, version, compensations, last_event, \
     timeout_at, created_at, updated_at";

/// The most rows one query returns.
const LIST_MAX: usize = 10_000;

#[derive(QueryableByName)]
struct SagaRow {
    #[diesel(sql_type = Text)]
    saga: String,
    #[diesel(sql_type = Text)]
    correlation_id: String,
    #[diesel(sql_type = Text)]
    state: String,
    #[diesel(sql_type = Text)]
    status: String,
    #[diesel(sql_type = Text)]
    data: String,
    #[diesel(sql_type = BigInt)]
    version: i64,
    #[diesel(sql_type = Text)]
    compensations: String,
    #[diesel(sql_type = Nullable<Text>)]
    last_event: Option<String>,
    #[diesel(sql_type = Nullable<BigInt>)]
    timeout_at: Option<i64>,
    #[diesel(sql_type = BigInt)]
    created_at: i64,
    #[diesel(sql_type = BigInt)]
    updated_at: i64,
}

impl SagaRow {
    fn into_record(self) -> Result<SagaRecord, orch::Error> {
        Ok(SagaRecord {
            saga: self.saga,
            correlation_id: self.correlation_id,
            state: self.state,
            status: SagaStatus::parse(&self.status)?,
            data: self.data,
            version: self.version,
            compensations: self.compensations,
            last_event: self.last_event.as_deref().map(str::parse).transpose()?,
            timeout_at: self.timeout_at.map(Timestamp::from_micros),
            created_at: Timestamp::from_micros(self.created_at),
            updated_at: Timestamp::from_micros(self.updated_at),
        })
    }
}

pub(crate) fn get(
    conn: &mut SqliteConnection,
    tables: &Tables,
    saga: &str,
    correlation_id: &str,
) -> TxResult<Option<SagaRecord>> {
    let rows: Vec<SagaRow> = diesel::sql_query(format!(
        "SELECT {COLUMNS} FROM {} WHERE saga = ? AND correlation_id = ?",
        tables.sagas
    ))
    .bind::<Text, _>(saga)
    .bind::<Text, _>(correlation_id)
    .prepared()
    .load(conn)?;
    Ok(rows.into_iter().next().map(SagaRow::into_record).transpose()?)
}

/// Inserts or replaces the instance, compare-and-set on the version, with its commands.
pub(crate) fn save(
    conn: &mut SqliteConnection,
    tables: &Tables,
    write: &SagaWrite,
) -> TxResult<SagaWriteStatus> {
    let r = &write.record;
    let changed = match write.expected_version {
        None => diesel::sql_query(format!(
            "INSERT INTO {} ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (saga, correlation_id) DO NOTHING",
            tables.sagas
        ))
        .bind::<Text, _>(&r.saga)
        .bind::<Text, _>(&r.correlation_id)
        .bind::<Text, _>(&r.state)
        .bind::<Text, _>(r.status.as_str())
        .bind::<Text, _>(&r.data)
        .bind::<BigInt, _>(r.version)
        .bind::<Text, _>(&r.compensations)
        .bind::<Nullable<Text>, _>(r.last_event.map(|e| e.to_string()))
        .bind::<Nullable<BigInt>, _>(r.timeout_at.map(Timestamp::as_micros))
        .bind::<BigInt, _>(r.created_at.as_micros())
        .bind::<BigInt, _>(r.updated_at.as_micros())
        .prepared().execute(conn)?,
        Some(expected) => diesel::sql_query(format!(
            "UPDATE {} SET state = ?, status = ?, data = ?, version = ?, compensations = ?, last_event = ?, \
             timeout_at = ?, updated_at = ? WHERE saga = ? AND correlation_id = ? AND version = ?",
            tables.sagas
        ))
        .bind::<Text, _>(&r.state)
        .bind::<Text, _>(r.status.as_str())
        .bind::<Text, _>(&r.data)
        .bind::<BigInt, _>(r.version)
        .bind::<Text, _>(&r.compensations)
        .bind::<Nullable<Text>, _>(r.last_event.map(|e| e.to_string()))
        .bind::<Nullable<BigInt>, _>(r.timeout_at.map(Timestamp::as_micros))
        .bind::<BigInt, _>(r.updated_at.as_micros())
        .bind::<Text, _>(&r.saga)
        .bind::<Text, _>(&r.correlation_id)
        .bind::<BigInt, _>(expected)
        .prepared().execute(conn)?,
    };
    if changed == 0 {
        return Ok(SagaWriteStatus::Conflict);
    }
    if !write.commands.is_empty() {
        commands::insert(conn, tables, &write.commands)?;
    }
    Ok(SagaWriteStatus::Saved)
}

pub(crate) fn list(conn: &mut SqliteConnection, tables: &Tables, q: &SagaQuery) -> TxResult<Vec<SagaRecord>> {
    let mut sql = format!("SELECT {COLUMNS} FROM {} WHERE 1 = 1", tables.sagas);
    let mut texts: Vec<String> = Vec::new();
    let mut times: Vec<i64> = Vec::new();
    // Text filters first, then time filters, so binds follow the placeholders' order.
    for (column, value) in [
        ("saga", q.saga.clone()),
        ("state", q.state.clone()),
        ("status", q.status.map(|s| s.as_str().to_owned())),
    ] {
        if let Some(v) = value {
            sql.push_str(&format!(" AND {column} = ?"));
            texts.push(v);
        }
    }
    if let Some(before) = q.updated_before {
        sql.push_str(" AND updated_at < ?");
        times.push(before.as_micros());
    }
    if let Some(before) = q.timeout_before {
        sql.push_str(" AND timeout_at IS NOT NULL AND timeout_at <= ?");
        times.push(before.as_micros());
    }
    sql.push_str(" ORDER BY saga, correlation_id LIMIT ?");
    let mut query = diesel::sql_query(sql).into_boxed::<Sqlite>();
    for t in texts {
        query = query.bind::<Text, _>(t);
    }
    for t in times {
        query = query.bind::<BigInt, _>(t);
    }
    let limit = if q.limit == 0 { LIST_MAX } else { q.limit.min(LIST_MAX) };
    let rows: Vec<SagaRow> = query.bind::<BigInt, _>(limit as i64).load(conn)?;
    Ok(rows.into_iter().map(SagaRow::into_record).collect::<Result<_, _>>()?)
}
