//! The journal table: append-only history of every command.

use diesel::sql_types::{BigInt, Integer, Nullable, Text};
use diesel::sqlite::Sqlite;
use diesel::{QueryableByName, RunQueryDsl, SqliteConnection};
use orch::Timestamp;
use orch::store::backend::NewJournalEntry;
use orch::store::{CommandId, JournalEntry, JournalKind};

use crate::prepared::{Prepare, shaped_chunks};
use crate::{Tables, TxResult};

/// Most rows per INSERT, a power of two (`shaped_chunks`): 6 binds each.
const CHUNK: usize = 128;

pub(crate) fn append(
    conn: &mut SqliteConnection,
    tables: &Tables,
    entries: &[NewJournalEntry],
) -> TxResult<()> {
    for chunk in shaped_chunks(entries, CHUNK) {
        let mut sql = format!(
            "INSERT INTO {} (command_id, at, kind, attempt, worker, message) VALUES ",
            tables.journal
        );
        for i in 0..chunk.len() {
            sql.push_str(if i == 0 { "(?, ?, ?, ?, ?, ?)" } else { ", (?, ?, ?, ?, ?, ?)" });
        }
        let mut query = diesel::sql_query(sql).into_boxed::<Sqlite>();
        for e in chunk {
            query = query
                .bind::<Text, _>(e.command_id.to_string())
                .bind::<BigInt, _>(e.at.as_micros())
                .bind::<Text, _>(e.kind.as_str())
                .bind::<Integer, _>(e.attempt as i32)
                .bind::<Nullable<Text>, _>(e.worker.clone())
                .bind::<Nullable<Text>, _>(e.message.clone());
        }
        query.prepared().execute(conn)?;
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
    #[diesel(sql_type = Integer)]
    attempt: i32,
    #[diesel(sql_type = Nullable<Text>)]
    worker: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    message: Option<String>,
}

pub(crate) fn read(
    conn: &mut SqliteConnection,
    tables: &Tables,
    id: CommandId,
) -> TxResult<Vec<JournalEntry>> {
    let rows: Vec<EntryRow> = diesel::sql_query(format!(
        "SELECT seq, command_id, at, kind, attempt, worker, message FROM {} WHERE command_id = ? ORDER BY seq",
        tables.journal
    ))
    .bind::<Text, _>(id.to_string())
    .prepared().load(conn)?;
    rows.into_iter()
        .map(|r| {
            Ok(JournalEntry {
                seq: r.seq,
                command_id: r.command_id.parse()?,
                at: Timestamp::from_micros(r.at),
                kind: JournalKind::parse(&r.kind)?,
                attempt: r.attempt.max(0) as u32,
                worker: r.worker,
                message: r.message,
            })
        })
        .collect()
}
