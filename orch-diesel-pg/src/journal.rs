//! The journal table: append-only history of every command.

use diesel::QueryableByName;
use diesel::pg::Pg;
use diesel::query_builder::{BoxedSqlQuery, SqlQuery};
use diesel::sql_types::{Array, BigInt, Integer, Nullable, Text, Uuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use orch::Timestamp;
use orch::store::backend::{NewJournalEntry, u32_of};
use orch::store::{CommandId, JournalEntry, JournalKind};

use crate::prepared::Prepare;
use crate::{Tables, TxResult};

/// Journal entries as one array per column, for an `INSERT … SELECT … FROM unnest(…)`
/// whose text is the same for any number of entries.
pub(crate) struct JournalArrays {
    ids: Vec<uuid::Uuid>,
    ats: Vec<i64>,
    kinds: Vec<&'static str>,
    attempts: Vec<i32>,
    workers: Vec<Option<String>>,
    messages: Vec<Option<String>>,
}

impl JournalArrays {
    pub(crate) fn of(entries: &[NewJournalEntry]) -> Self {
        let n = entries.len();
        let mut a = JournalArrays {
            ids: Vec::with_capacity(n),
            ats: Vec::with_capacity(n),
            kinds: Vec::with_capacity(n),
            attempts: Vec::with_capacity(n),
            workers: Vec::with_capacity(n),
            messages: Vec::with_capacity(n),
        };
        for e in entries {
            a.ids.push(e.command_id.as_uuid());
            a.ats.push(e.at.as_micros());
            a.kinds.push(e.kind.as_str());
            a.attempts.push(i32::try_from(e.attempt).unwrap_or(i32::MAX));
            a.workers.push(e.worker.clone());
            a.messages.push(e.message.clone());
        }
        a
    }

    /// The INSERT, reading the arrays from parameters `$first` to `$first + 5`. WITH
    /// ORDINALITY keeps the given order for the serial `seq`.
    /// How many parameters [`JournalArrays::sql`] reads.
    pub(crate) const PARAMS: usize = 6;

    pub(crate) fn sql(table: &str, first: usize) -> String {
        let p: Vec<String> = (first..first + Self::PARAMS).map(|i| format!("${i}")).collect();
        format!(
            "INSERT INTO {table} (command_id, at, kind, attempt, worker, message) \
             SELECT v.id, v.at, v.kind, v.attempt, v.worker, v.message \
             FROM unnest({}::uuid[], {}::bigint[], {}::text[], {}::integer[], {}::text[], {}::text[]) \
             WITH ORDINALITY AS v(id, at, kind, attempt, worker, message, n) ORDER BY v.n",
            p[0], p[1], p[2], p[3], p[4], p[5]
        )
    }

    pub(crate) fn bind(
        self,
        q: BoxedSqlQuery<'static, Pg, SqlQuery>,
    ) -> BoxedSqlQuery<'static, Pg, SqlQuery> {
        q.bind::<Array<Uuid>, _>(self.ids)
            .bind::<Array<BigInt>, _>(self.ats)
            .bind::<Array<Text>, _>(self.kinds)
            .bind::<Array<Integer>, _>(self.attempts)
            .bind::<Array<Nullable<Text>>, _>(self.workers)
            .bind::<Array<Nullable<Text>>, _>(self.messages)
    }
}

/// Appends entries in order (so their `seq` follows it) in one INSERT from six arrays.
pub(crate) async fn append(
    conn: &mut AsyncPgConnection,
    tables: &Tables,
    entries: &[NewJournalEntry],
) -> TxResult<()> {
    if entries.is_empty() {
        return Ok(());
    }
    let query = diesel::sql_query(JournalArrays::sql(&tables.journal, 1)).into_boxed::<Pg>();
    JournalArrays::of(entries).bind(query).prepared().execute(conn).await?;
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
    .prepared().load(conn)
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
