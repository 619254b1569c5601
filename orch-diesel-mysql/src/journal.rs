//! The journal table: append-only history of every command.

use diesel::QueryableByName;
use diesel::mysql::Mysql;
use diesel::sql_types::{BigInt, Nullable, Text};
use diesel_async::{AsyncMysqlConnection, RunQueryDsl};
use orch::Timestamp;
use orch::store::backend::{NewJournalEntry, u32_of};
use orch::store::{CommandId, JournalEntry, JournalKind};

use crate::{Tables, TxResult};

/// Rows per INSERT: 6 binds each, far below MySQL's 65,535 placeholders, and small
/// enough to stay well within `max_allowed_packet`.
const CHUNK: usize = 1_000;

/// Appends entries (in order) inside the caller's transaction.
pub(crate) async fn append(
    conn: &mut AsyncMysqlConnection,
    tables: &Tables,
    entries: &[NewJournalEntry],
) -> TxResult<()> {
    for chunk in entries.chunks(CHUNK) {
        let mut sql = format!(
            "INSERT INTO {} (command_id, at, kind, attempt, worker, message) VALUES ",
            tables.journal
        );
        for i in 0..chunk.len() {
            sql.push_str(if i == 0 { "(?, ?, ?, ?, ?, ?)" } else { ", (?, ?, ?, ?, ?, ?)" });
        }
        let mut query = diesel::sql_query(sql).into_boxed::<Mysql>();
        for e in chunk {
            query = query
                .bind::<Text, _>(e.command_id.to_string())
                .bind::<BigInt, _>(e.at.as_micros())
                .bind::<Text, _>(e.kind.as_str())
                .bind::<BigInt, _>(i64::from(e.attempt))
                .bind::<Nullable<Text>, _>(e.worker.clone())
                .bind::<Nullable<Text>, _>(e.message.clone());
        }
        query.execute(conn).await?;
    }
    Ok(())
}

#[derive(QueryableByName)]
struct EntryRow {
    #[diesel(sql_type = BigInt)]
    seq: i64,
    #[diesel(sql_type = Text)]
    command_id: String,
    #[diesel(sql_type = BigInt)]
    at: i64,
    #[diesel(sql_type = Text)]
    kind: String,
    #[diesel(sql_type = BigInt)]
    attempt: i64,
    #[diesel(sql_type = Nullable<Text>)]
    worker: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    message: Option<String>,
}

/// The journal of one command, oldest first.
pub(crate) async fn read(
    conn: &mut AsyncMysqlConnection,
    tables: &Tables,
    id: CommandId,
) -> TxResult<Vec<JournalEntry>> {
    let rows: Vec<EntryRow> = diesel::sql_query(format!(
        "SELECT seq, command_id, at, kind, attempt, worker, message FROM {} WHERE command_id = ? ORDER BY seq",
        tables.journal
    ))
    .bind::<Text, _>(id.to_string())
    .load(conn)
    .await?;
    rows.into_iter()
        .map(|r| {
            Ok(JournalEntry {
                seq: r.seq,
                command_id: r.command_id.parse()?,
                at: Timestamp::from_micros(r.at),
                kind: JournalKind::parse(&r.kind)?,
                attempt: u32_of(r.attempt),
                worker: r.worker,
                message: r.message,
            })
        })
        .collect()
}
