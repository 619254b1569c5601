//! The sagas table: saga instances, saved compare-and-set on their version.
//!
//! A save is one statement on the instance's row: an `INSERT … ON CONFLICT DO NOTHING`
//! to create it, an `UPDATE … WHERE version = $expected` to replace it. Under READ
//! COMMITTED a concurrent writer of the same row waits for the first to commit and then
//! re-checks the version against the committed row, so of two writers expecting the
//! same version exactly one changes a row; the other changes none and reports a
//! conflict, having written nothing. The commands of a save go in the same transaction,
//! through the same path as [`Store::enqueue`](orch::Store::enqueue).

use diesel::QueryableByName;
use diesel::sql_types::{BigInt, Nullable, Text, Uuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use orch::Timestamp;
use orch::store::{CommandId, SagaQuery, SagaRecord, SagaStatus, SagaWrite, SagaWriteStatus};

use crate::commands::{self, Bind, Statement};
use crate::prepared::Prepare;
use crate::{Tables, TxResult, notify};

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
    #[diesel(sql_type = Nullable<Uuid>)]
    last_event: Option<uuid::Uuid>,
    #[diesel(sql_type = Nullable<BigInt>)]
    timeout_at: Option<i64>,
    #[diesel(sql_type = BigInt)]
    created_at: i64,
    #[diesel(sql_type = BigInt)]
    updated_at: i64,
}

impl SagaRow {
    fn into_record(self) -> orch::Result<SagaRecord> {
        Ok(SagaRecord {
            saga: self.saga,
            correlation_id: self.correlation_id,
            state: self.state,
            status: SagaStatus::parse(&self.status)?,
            data: self.data,
            version: self.version,
            compensations: self.compensations,
            last_event: self.last_event.map(CommandId::from_uuid),
            timeout_at: self.timeout_at.map(Timestamp::from_micros),
            created_at: Timestamp::from_micros(self.created_at),
            updated_at: Timestamp::from_micros(self.updated_at),
        })
    }
}

/// One instance.
pub(crate) async fn get(
    conn: &mut AsyncPgConnection,
    tables: &Tables,
    saga: &str,
    correlation_id: &str,
) -> TxResult<Option<SagaRecord>> {
    let rows: Vec<SagaRow> = diesel::sql_query(format!(
        "SELECT {COLUMNS} FROM {} WHERE saga = $1 AND correlation_id = $2",
        tables.sagas
    ))
    .bind::<Text, _>(saga)
    .bind::<Text, _>(correlation_id)
    .prepared()
    .load(conn)
    .await?;
    Ok(rows.into_iter().next().map(SagaRow::into_record).transpose()?)
}

/// Creates or replaces the instance, compare-and-set on the version, with its commands
/// and (when there are any) the wake-up `NOTIFY`; runs inside the caller's transaction
/// and writes nothing on a conflict.
pub(crate) async fn save(
    conn: &mut AsyncPgConnection,
    tables: &Tables,
    write: &SagaWrite,
) -> TxResult<SagaWriteStatus> {
    let r = &write.record;
    let last_event = r.last_event.map(|e| e.as_uuid());
    let timeout_at = r.timeout_at.map(Timestamp::as_micros);
    let changed = match write.expected_version {
        None => {
            diesel::sql_query(format!(
                "INSERT INTO {} ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
                 ON CONFLICT (saga, correlation_id) DO NOTHING",
                tables.sagas
            ))
            .bind::<Text, _>(&r.saga)
            .bind::<Text, _>(&r.correlation_id)
            .bind::<Text, _>(&r.state)
            .bind::<Text, _>(r.status.as_str())
            .bind::<Text, _>(&r.data)
            .bind::<BigInt, _>(r.version)
            .bind::<Text, _>(&r.compensations)
            .bind::<Nullable<Uuid>, _>(last_event)
            .bind::<Nullable<BigInt>, _>(timeout_at)
            .bind::<BigInt, _>(r.created_at.as_micros())
            .bind::<BigInt, _>(r.updated_at.as_micros())
            .prepared()
            .execute(conn)
            .await?
        }
        Some(expected) => {
            diesel::sql_query(format!(
                "UPDATE {} SET state = $1, status = $2, data = $3, version = $4, compensations = $5, \
                 last_event = $6, timeout_at = $7, updated_at = $8 \
                 WHERE saga = $9 AND correlation_id = $10 AND version = $11",
                tables.sagas
            ))
            .bind::<Text, _>(&r.state)
            .bind::<Text, _>(r.status.as_str())
            .bind::<Text, _>(&r.data)
            .bind::<BigInt, _>(r.version)
            .bind::<Text, _>(&r.compensations)
            .bind::<Nullable<Uuid>, _>(last_event)
            .bind::<Nullable<BigInt>, _>(timeout_at)
            .bind::<BigInt, _>(r.updated_at.as_micros())
            .bind::<Text, _>(&r.saga)
            .bind::<Text, _>(&r.correlation_id)
            .bind::<BigInt, _>(expected)
            .prepared()
            .execute(conn)
            .await?
        }
    };
    if changed == 0 {
        return Ok(SagaWriteStatus::Conflict);
    }
    if !write.commands.is_empty() {
        commands::insert(conn, tables, &write.commands).await?;
        notify(conn, tables).await?;
    }
    Ok(SagaWriteStatus::Saved)
}

/// Instances matching every filter given, by (saga, correlation id).
pub(crate) async fn list(
    conn: &mut AsyncPgConnection,
    tables: &Tables,
    q: &SagaQuery,
) -> TxResult<Vec<SagaRecord>> {
    let mut st = Statement::new(String::new());
    let mut sql = format!("SELECT {COLUMNS} FROM {} WHERE TRUE", tables.sagas);
    if let Some(saga) = &q.saga {
        sql.push_str(&format!(" AND saga = {}", st.param(Bind::Text(saga.clone()))));
    }
    if let Some(state) = &q.state {
        sql.push_str(&format!(" AND state = {}", st.param(Bind::Text(state.clone()))));
    }
    if let Some(status) = q.status {
        sql.push_str(&format!(" AND status = {}", st.param(Bind::Text(status.as_str().to_owned()))));
    }
    if let Some(before) = q.updated_before {
        sql.push_str(&format!(" AND updated_at < {}", st.param(Bind::BigInt(before.as_micros()))));
    }
    if let Some(before) = q.timeout_before {
        sql.push_str(&format!(
            " AND timeout_at IS NOT NULL AND timeout_at <= {}",
            st.param(Bind::BigInt(before.as_micros()))
        ));
    }
    let limit = if q.limit == 0 { LIST_MAX } else { q.limit.min(LIST_MAX) };
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    sql.push_str(&format!(" ORDER BY saga, correlation_id LIMIT {}", st.param(Bind::BigInt(limit))));
    st.sql = sql;
    let rows: Vec<SagaRow> = st.query().load(conn).await?;
    Ok(rows.into_iter().map(SagaRow::into_record).collect::<orch::Result<_>>()?)
}
