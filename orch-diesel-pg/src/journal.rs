//! The journal table: append-only history of every command.

use diesel::QueryableByName;
use diesel::pg::Pg;
use diesel::sql_types::{BigInt, Integer, Nullable, Text, Uuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use orch::Timestamp;
use orch::store::backend::{NewJournalEntry, u32_of};
use orch::store::{CommandId, JournalEntry, JournalKind};

use crate::{Tables, TxResult};

/// Rows per INSERT: 6 binds each, far below PostgreSQL's 65,535 bind parameters.
const CHUNK: usize = 5_000;

/// Appends entries in order (so their `seq` follows it), one multi-row INSERT per chunk.
pub(crate) async fn append(
    conn: &mut AsyncPgConnection,
    tables: &Tables,
    entries: &[NewJournalEntry],
) -> TxResult<()> {
    for chunk in entries.chunks(CHUNK) {
        let mut sql = format!(
            "INSERT INTO {} (command_id, at, kind, attempt, worker, message) VALUES ",
            tables.journal
        );
        for i in 0..chunk.len() {
            let b = i * 6;
            if i > 0 {
                sql.push_str(", ");
            }
            sql.push_str(&format!(
                "(${}, ${}, ${}, ${}, ${}, ${})",
                b + 1,
                b + 2,
                b + 3,
                b + 4,
                b + 5,
                b + 6
            ));
        }
        let mut query = diesel::sql_query(sql).into_boxed::<Pg>();
        for e in chunk {
            query = query
                .bind::<Uuid, _>(e.command_id.as_uuid())
                .bind::<BigInt, _>(e.at.as_micros())
                .bind::<Text, _>(e.kind.as_str())
                .bind::<Integer, _>(i32::try_from(e.attempt).unwrap_or(i32::MAX))
                .bind::<Nullable<Text>, _>(e.worker.as_deref())
                .bind::<Nullable<Text>, _>(e.message.as_deref());
        }
        query.execute(conn).await?;
    }
    Ok(())
}

#[derive(QueryableByName)]
struct EntryRow {
    #[diesel(sql_type = BigInt)]
    seq: i64,
    #[diesel(sql_type = Uuid)]
    command_id: uuid::Uuid,
    #[diesel(sql_type = BigInt)]
    at: i64,
    #[diesel(sql_type = Text)]
    kind: String,
    #[diesel(sql_type = Integer)]
    attempt: i32,
    #[diesel(sql_type = Nullable<Text>)]
    worker: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    message: Option<String>,
}

/// The journal of one command, oldest first.
pub(crate) async fn read(
    conn: &mut AsyncPgConnection,
    tables: &Tables,
    id: CommandId,
) -> TxResult<Vec<JournalEntry>> {
    let rows: Vec<EntryRow> = diesel::sql_query(format!(
        "SELECT seq, command_id, at, kind, attempt, worker, message FROM {} WHERE command_id = $1 ORDER BY seq",
        tables.journal
    ))
    .bind::<Uuid, _>(id.as_uuid())
    .load(conn)
    .await?;
    rows.into_iter()
        .map(|r| {
            Ok(JournalEntry {
                seq: r.seq,
                command_id: CommandId::from_uuid(r.command_id),
                at: Timestamp::from_micros(r.at),
                kind: JournalKind::parse(&r.kind)?,
                attempt: u32_of(i64::from(r.attempt)),
                worker: r.worker,
                message: r.message,
            })
        })
        .collect()
}
