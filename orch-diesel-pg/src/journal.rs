//! The journal table: append-only history of every command.

use diesel::QueryableByName;
use diesel::sql_types::{Array, BigInt, Integer, Nullable, Text, Uuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use orch::Timestamp;
use orch::store::backend::{NewJournalEntry, u32_of};
use orch::store::{CommandId, JournalEntry, JournalKind};

use crate::{Tables, TxResult};

/// Appends entries in order (so their `seq` follows it) in one INSERT from six arrays:
/// the statement text is the same for any number of entries.
pub(crate) async fn append(
    conn: &mut AsyncPgConnection,
    tables: &Tables,
    entries: &[NewJournalEntry],
) -> TxResult<()> {
    if entries.is_empty() {
        return Ok(());
    }
    let mut ids = Vec::with_capacity(entries.len());
    let mut ats = Vec::with_capacity(entries.len());
    let mut kinds = Vec::with_capacity(entries.len());
    let mut attempts = Vec::with_capacity(entries.len());
    let mut workers = Vec::with_capacity(entries.len());
    let mut messages = Vec::with_capacity(entries.len());
    for e in entries {
        ids.push(e.command_id.as_uuid());
        ats.push(e.at.as_micros());
        kinds.push(e.kind.as_str());
        attempts.push(i32::try_from(e.attempt).unwrap_or(i32::MAX));
        workers.push(e.worker.as_deref());
        messages.push(e.message.as_deref());
    }
    // WITH ORDINALITY keeps the given order for the serial `seq`.
    diesel::sql_query(format!(
        "INSERT INTO {} (command_id, at, kind, attempt, worker, message) \
         SELECT v.id, v.at, v.kind, v.attempt, v.worker, v.message \
         FROM unnest($1::uuid[], $2::bigint[], $3::text[], $4::integer[], $5::text[], $6::text[]) \
         WITH ORDINALITY AS v(id, at, kind, attempt, worker, message, n) ORDER BY v.n",
        tables.journal
    ))
    .bind::<Array<Uuid>, _>(&ids)
    .bind::<Array<BigInt>, _>(&ats)
    .bind::<Array<Text>, _>(&kinds)
    .bind::<Array<Integer>, _>(&attempts)
    .bind::<Array<Nullable<Text>>, _>(&workers)
    .bind::<Array<Nullable<Text>>, _>(&messages)
    .execute(conn)
    .await?;
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
