//! The commands table: every lifecycle transition, each fenced where it must be.
//!
//! Every function here runs on the caller's connection, inside the caller's
//! transaction for anything that changes rows. MySQL has no `UPDATE … RETURNING`, so
//! rows are locked and read with `SELECT … FOR UPDATE` (or identified by the fresh
//! lease token of a claim) and changes are checked by their matched-row count (the
//! connection sets `CLIENT_FOUND_ROWS`, so a row updated to the values it already had
//! still counts). No `UPDATE` here has a `SET` expression that reads a column assigned
//! earlier in the same statement: MySQL evaluates `SET` assignments left to right
//! against the partly updated row, unlike SQLite and PostgreSQL.

use std::collections::HashMap;

use diesel::mysql::Mysql;
use diesel::query_builder::{BoxedSqlQuery, SqlQuery};
use diesel::sql_types::{BigInt, Nullable, SmallInt, Text};
use diesel::{OptionalExtension, QueryableByName};
use diesel_async::{AsyncMysqlConnection, RunQueryDsl};
use orch::store::backend::{
    NewJournalEntry, PolicyEncoder, RawCommand, add_queue_count, attempt_given_back, distinct_successes,
    finish_queue_stats, lease_expired_message, micros, millis, outcome_follow_ups, u32_of,
    unreadable_completion, unreadable_message,
};
use orch::store::sql::{self, Placeholders, SqlStatement, SqlValue};
use orch::store::{
    CancelStatus, ClaimParams, ClaimedCommand, CommandId, CommandRecord, Completion, CompletionStatus,
    CountRow, HeartbeatParams, InsertCommand, Lease, LeaseStatus, LeaseToken, ListParams, Outcome,
    QueueStats, Rescued, RetryStatus, WorkflowQuery, WorkflowSummary,
};
use orch::{FailureKind, State, Timestamp};

use crate::{Tables, TxResult};
use crate::{dependencies, journal};

/// Rows per multi-row INSERT: 18 binds each, far below MySQL's 65,535 placeholders,
/// and few enough to keep a statement well within `max_allowed_packet` for
/// ordinary inputs.
const INSERT_CHUNK: usize = 500;

/// Ids per `IN (…)` list.
pub(crate) const ID_CHUNK: usize = 1_000;

pub(crate) type Query = BoxedSqlQuery<'static, Mysql, SqlQuery>;

pub(crate) fn query(sql: String) -> Query {
    diesel::sql_query(sql).into_boxed()
}

pub(crate) fn placeholders(n: usize) -> String {
    let mut s = String::with_capacity(n * 3);
    for i in 0..n {
        s.push_str(if i == 0 { "?" } else { ", ?" });
    }
    s
}

/// A `LIMIT` value.
pub(crate) fn limit_of(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Binds each id of `ids` in order.
pub(crate) fn bind_ids<'a>(mut q: Query, ids: impl IntoIterator<Item = &'a str>) -> Query {
    for id in ids {
        q = q.bind::<Text, _>(id.to_owned());
    }
    q
}

#[derive(QueryableByName)]
pub(crate) struct CommandRow {
    #[diesel(sql_type = Text)]
    id: String,
    #[diesel(sql_type = Text)]
    name: String,
    #[diesel(sql_type = Text)]
    target: String,
    #[diesel(sql_type = Text)]
    state: String,
    #[diesel(sql_type = Text)]
    input: String,
    #[diesel(sql_type = Nullable<Text>)]
    output: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    error_kind: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    error: Option<String>,
    #[diesel(sql_type = BigInt)]
    attempts: i64,
    #[diesel(sql_type = BigInt)]
    max_attempts: i64,
    #[diesel(sql_type = BigInt)]
    timeout_ms: i64,
    #[diesel(sql_type = Text)]
    retry_policy: String,
    #[diesel(sql_type = BigInt)]
    scheduled_at: i64,
    #[diesel(sql_type = BigInt)]
    created_at: i64,
    #[diesel(sql_type = BigInt)]
    updated_at: i64,
    #[diesel(sql_type = Nullable<BigInt>)]
    started_at: Option<i64>,
    #[diesel(sql_type = Nullable<BigInt>)]
    finished_at: Option<i64>,
    #[diesel(sql_type = Nullable<Text>)]
    lease_token: Option<String>,
    #[diesel(sql_type = Nullable<BigInt>)]
    lease_expires_at: Option<i64>,
    #[diesel(sql_type = Nullable<Text>)]
    worker: Option<String>,
    #[diesel(sql_type = BigInt)]
    cancel_requested: i64,
    #[diesel(sql_type = BigInt)]
    follow_ups_due: i64,
    #[diesel(sql_type = Nullable<Text>)]
    parent_id: Option<String>,
    #[diesel(sql_type = Text)]
    correlation_id: String,
    #[diesel(sql_type = Nullable<Text>)]
    workflow_id: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    step: Option<String>,
    #[diesel(sql_type = SmallInt)]
    priority: i16,
    #[diesel(sql_type = Nullable<Text>)]
    unique_key: Option<String>,
    #[diesel(sql_type = BigInt)]
    unique_window: i64,
}

impl CommandRow {
    fn into_record(self) -> orch::Result<CommandRecord> {
        RawCommand {
            id: self.id,
            name: self.name,
            target: self.target,
            state: self.state,
            input: self.input,
            output: self.output,
            error_kind: self.error_kind,
            error: self.error,
            attempts: self.attempts,
            max_attempts: self.max_attempts,
            timeout_ms: self.timeout_ms,
            retry_policy: self.retry_policy,
            scheduled_at: self.scheduled_at,
            created_at: self.created_at,
            updated_at: self.updated_at,
            started_at: self.started_at,
            finished_at: self.finished_at,
            lease_token: self.lease_token,
            lease_expires_at: self.lease_expires_at,
            worker: self.worker,
            cancel_requested: self.cancel_requested != 0,
            follow_ups_due: self.follow_ups_due != 0,
            parent_id: self.parent_id,
            correlation_id: self.correlation_id,
            workflow_id: self.workflow_id,
            step: self.step,
            priority: i64::from(self.priority),
            unique_key: self.unique_key,
            unique_window: self.unique_window,
        }
        .into_record()
    }
}

pub(crate) fn records(rows: Vec<CommandRow>) -> TxResult<Vec<CommandRecord>> {
    Ok(rows.into_iter().map(CommandRow::into_record).collect::<orch::Result<_>>()?)
}

#[derive(QueryableByName)]
pub(crate) struct IdRow {
    #[diesel(sql_type = Text)]
    pub(crate) id: String,
}

/// Inserts commands, their dependency edges and their `enqueued` journal entries, in
/// the caller's transaction. A command with dependencies starts `blocked`.
pub(crate) async fn insert(
    conn: &mut AsyncMysqlConnection,
    tables: &Tables,
    commands: &[&InsertCommand],
) -> TxResult<()> {
    let mut policies = PolicyEncoder::default();
    for chunk in commands.chunks(INSERT_CHUNK) {
        let mut sql = format!(
            "INSERT INTO {} (id, name, target, state, input, max_attempts, timeout_ms, retry_policy, \
             scheduled_at, created_at, updated_at, parent_id, correlation_id, workflow_id, step, priority, \
             unique_key, unique_window) VALUES ",
            tables.commands
        );
        for i in 0..chunk.len() {
            sql.push_str(if i == 0 { "(" } else { ", (" });
            sql.push_str("?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)");
        }
        let mut q = query(sql);
        for c in chunk {
            let policy = policies.encode(&c.retry_policy)?;
            q = q
                .bind::<Text, _>(c.id.to_string())
                .bind::<Text, _>(c.name.clone())
                .bind::<Text, _>(c.target.clone())
                .bind::<Text, _>(initial_state(c).as_str())
                .bind::<Text, _>(c.input.clone())
                .bind::<BigInt, _>(i64::from(c.max_attempts))
                .bind::<BigInt, _>(millis(c.timeout))
                .bind::<Text, _>(policy)
                .bind::<BigInt, _>(c.scheduled_at.as_micros())
                .bind::<BigInt, _>(c.created_at.as_micros())
                .bind::<BigInt, _>(c.created_at.as_micros())
                .bind::<Nullable<Text>, _>(c.parent_id.map(|p| p.to_string()))
                .bind::<Text, _>(c.correlation_id.clone())
                .bind::<Nullable<Text>, _>(c.workflow.as_ref().map(|w| w.workflow_id.to_string()))
                .bind::<Nullable<Text>, _>(c.workflow.as_ref().map(|w| w.step.clone()))
                .bind::<SmallInt, _>(c.priority)
                .bind::<Nullable<Text>, _>(c.unique.as_ref().map(|u| u.key.clone()))
                .bind::<BigInt, _>(c.unique.as_ref().map_or(0, |u| u.window_micros()));
        }
        q.execute(conn).await?;
    }
    dependencies::insert_edges(conn, tables, commands).await?;
    let entries: Vec<NewJournalEntry> = commands.iter().map(|c| NewJournalEntry::enqueued(c)).collect();
    journal::append(conn, tables, &entries).await
}

/// Inserts commands as [`insert`] does, and returns the id each is stored under.
///
/// A command whose unique key another command holds is not inserted; the holder's id
/// stands for it. Keyed commands are inserted one at a time: the unique index on
/// `unique_live` makes a second insert of a held key fail with a duplicate-key error,
/// after waiting for a concurrent insert of that key to commit or roll back, and only
/// that statement is undone; the holder is then read with a locking read (which sees
/// the latest committed rows, not the transaction's snapshot). If the holder finished
/// in between, the insert is tried again.
pub(crate) async fn insert_unique(
    conn: &mut AsyncMysqlConnection,
    tables: &Tables,
    commands: &[InsertCommand],
) -> TxResult<Vec<CommandId>> {
    let mut ids: Vec<CommandId> = commands.iter().map(|c| c.id).collect();
    let plain: Vec<&InsertCommand> = commands.iter().filter(|c| c.unique.is_none()).collect();
    insert(conn, tables, &plain).await?;
    let mut first_of: HashMap<String, CommandId> = HashMap::new();
    // In key order, so that pushes of several keys at once wait for each other's keys
    // in one order.
    let mut keyed: Vec<(usize, &InsertCommand, &orch::store::UniqueKey)> =
        commands.iter().enumerate().filter_map(|(i, c)| c.unique.as_ref().map(|u| (i, c, u))).collect();
    keyed.sort_by(|(_, _, a), (_, _, b)| (&a.key, a.window_micros()).cmp(&(&b.key, b.window_micros())));
    for (i, c, unique) in keyed {
        let live = format!("{} {}", unique.window_micros(), unique.key);
        if let Some(first) = first_of.get(&live) {
            ids[i] = *first;
            continue;
        }
        ids[i] = insert_keyed(conn, tables, c, &live).await?;
        first_of.insert(live, ids[i]);
    }
    Ok(ids)
}

/// How often [`insert_keyed`] tries again when the key's holder finished between the
/// failed insert and the lookup.
const UNIQUE_ROUNDS: usize = 16;

async fn insert_keyed(
    conn: &mut AsyncMysqlConnection,
    tables: &Tables,
    command: &InsertCommand,
    live: &str,
) -> TxResult<CommandId> {
    for _ in 0..UNIQUE_ROUNDS {
        match insert(conn, tables, &[command]).await {
            Ok(()) => return Ok(command.id),
            Err(crate::TxError::Diesel(diesel::result::Error::DatabaseError(
                diesel::result::DatabaseErrorKind::UniqueViolation,
                info,
            ))) if info.message().contains("commands_unique") => {}
            Err(e) => return Err(e),
        }
        let holder: Option<IdRow> =
            query(format!("SELECT id FROM {} WHERE unique_live = ? LOCK IN SHARE MODE", tables.commands))
                .bind::<Text, _>(live.to_owned())
                .get_result(conn)
                .await
                .optional()?;
        if let Some(holder) = holder {
            return Ok(holder.id.parse()?);
        }
    }
    Err(orch::Error::Corrupt(format!(
        "unique key {:?} changed holders {UNIQUE_ROUNDS} times during one push",
        live
    ))
    .into())
}

/// The state a new command starts in: `blocked` while it has dependencies.
fn initial_state(c: &InsertCommand) -> State {
    if c.depends_on.is_empty() { State::Pending } else { State::Blocked }
}

/// Leases a batch of due commands under one fresh token.
pub(crate) async fn claim(
    conn: &mut AsyncMysqlConnection,
    tables: &Tables,
    p: &ClaimParams,
) -> TxResult<Vec<ClaimedCommand>> {
    let now = p.now.as_micros();
    // Paused targets and names are left out before the batch is picked (`pauses`).
    let names = crate::pauses::claimable(conn, tables, &p.target, &p.names).await?;
    if names.is_empty() {
        return Ok(Vec::new());
    }
    // Rows another claim has locked are skipped, not waited for: concurrent claims
    // take disjoint batches. The scan must follow an index in claim order and stop at
    // the limit, locking only the rows it returns: for one name the index by name, for
    // several the index by due time (which checks the name in the index entry). Any
    // plan that sorts would lock every candidate and starve concurrent claims.
    let index = if names.len() == 1 { "commands_claim" } else { "commands_due" };
    let mut q = query(format!(
        "SELECT id FROM {} FORCE INDEX ({index}) \
         WHERE state = 'pending' AND target = ? AND name IN ({}) AND scheduled_at <= ? \
         ORDER BY priority, scheduled_at, id LIMIT ? FOR UPDATE SKIP LOCKED",
        tables.commands,
        placeholders(names.len())
    ))
    .bind::<Text, _>(p.target.clone());
    for name in &names {
        q = q.bind::<Text, _>(name.clone());
    }
    let ids: Vec<IdRow> = q.bind::<BigInt, _>(now).bind::<BigInt, _>(limit_of(p.limit)).load(conn).await?;
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let token = LeaseToken::generate();
    let mut rows: Vec<CommandRow> = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(ID_CHUNK) {
        let update = query(format!(
            "UPDATE {} SET state = 'running', attempts = attempts + 1, lease_token = ?, worker = ?, \
             started_at = ?, updated_at = ?, lease_expires_at = ? + timeout_ms * 1000 + ?, cancel_requested = 0 \
             WHERE state = 'pending' AND id IN ({})",
            tables.commands,
            placeholders(chunk.len())
        ))
        .bind::<Text, _>(token.to_string())
        .bind::<Text, _>(p.worker.clone())
        .bind::<BigInt, _>(now)
        .bind::<BigInt, _>(now)
        .bind::<BigInt, _>(now)
        .bind::<BigInt, _>(micros(p.lease_buffer));
        bind_ids(update, chunk.iter().map(|r| r.id.as_str())).execute(conn).await?;
        // No RETURNING: the fresh token identifies exactly the rows this claim leased.
        let read = query(format!(
            "SELECT {} FROM {} WHERE lease_token = ? AND id IN ({})",
            tables.columns,
            tables.commands,
            placeholders(chunk.len())
        ))
        .bind::<Text, _>(token.to_string());
        rows.extend(bind_ids(read, chunk.iter().map(|r| r.id.as_str())).load::<CommandRow>(conn).await?);
    }
    rows.sort_by(|a, b| (a.priority, a.scheduled_at, &a.id).cmp(&(b.priority, b.scheduled_at, &b.id)));
    let mut claimed = Vec::with_capacity(rows.len());
    let mut entries = Vec::with_capacity(rows.len());
    let mut unreadable: Vec<Completion> = Vec::new();
    for row in rows {
        let raw_id = row.id.clone();
        let record = match row.into_record() {
            Ok(record) => record,
            // A row a producer damaged by hand: failed alone, so it holds up no claim.
            Err(e) => {
                tracing::error!(id = raw_id, error = %e, "failing a stored row that does not read as a command");
                match raw_id.parse::<CommandId>() {
                    Ok(id) => unreadable.push(unreadable_completion(
                        Lease { id, token },
                        p.now,
                        &p.worker,
                        &e.to_string(),
                    )),
                    Err(_) => fail_unparsable_id(conn, tables, &raw_id, token, &e.to_string(), p.now).await?,
                }
                continue;
            }
        };
        let lease_expires_at = record.lease_expires_at.unwrap_or(p.now);
        entries.push(NewJournalEntry::claimed(
            record.id,
            p.now,
            record.attempts,
            &p.worker,
            lease_expires_at,
        ));
        claimed.push(ClaimedCommand {
            lease: Lease { id: record.id, token },
            name: record.name,
            input: record.input,
            attempt: record.attempts,
            max_attempts: record.max_attempts,
            timeout: record.timeout,
            retry_policy: record.retry_policy,
            lease_expires_at,
            correlation_id: record.correlation_id,
            workflow: record.workflow,
        });
    }
    journal::append(conn, tables, &entries).await?;
    if !unreadable.is_empty() {
        complete(conn, tables, &unreadable).await?;
    }
    Ok(claimed)
}

/// Fails a claimed row whose id is not even a UUID, by its stored id and the claim's
/// lease: no completion (nor journal entry) can name it, and left running it would be
/// claimed again after its lease, failing every claim it is part of.
async fn fail_unparsable_id(
    conn: &mut AsyncMysqlConnection,
    tables: &Tables,
    raw_id: &str,
    token: LeaseToken,
    why: &str,
    now: Timestamp,
) -> TxResult<()> {
    query(format!(
        "UPDATE {} SET state = 'failed', error_kind = 'decode', error = ?, finished_at = ?, updated_at = ?, \
         lease_token = NULL, lease_expires_at = NULL WHERE id = ? AND lease_token = ? AND state = 'running'",
        tables.commands
    ))
    .bind::<Text, _>(unreadable_message(why))
    .bind::<BigInt, _>(now.as_micros())
    .bind::<BigInt, _>(now.as_micros())
    .bind::<Text, _>(raw_id.to_owned())
    .bind::<Text, _>(token.to_string())
    .execute(conn)
    .await?;
    Ok(())
}

#[derive(QueryableByName)]
struct FactsRow {
    #[diesel(sql_type = Text)]
    id: String,
    #[diesel(sql_type = BigInt)]
    attempts: i64,
    #[diesel(sql_type = BigInt)]
    cancel_requested: i64,
    #[diesel(sql_type = Text)]
    state: String,
}

/// What the journal and heartbeats need to know of a command.
#[derive(Debug, Clone, Copy)]
struct Facts {
    attempts: u32,
    cancel_requested: bool,
    state: State,
}

/// The facts of the commands with these ids that exist, by id text.
async fn facts(
    conn: &mut AsyncMysqlConnection,
    tables: &Tables,
    ids: &[String],
) -> TxResult<HashMap<String, Facts>> {
    let mut ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    ids.sort_unstable();
    ids.dedup();
    let mut out = HashMap::with_capacity(ids.len());
    for chunk in ids.chunks(ID_CHUNK) {
        let q = query(format!(
            "SELECT id, attempts, cancel_requested, state FROM {} WHERE id IN ({})",
            tables.commands,
            placeholders(chunk.len())
        ));
        let rows: Vec<FactsRow> = bind_ids(q, chunk.iter().copied()).load(conn).await?;
        for r in rows {
            let fact = Facts {
                attempts: u32_of(r.attempts),
                cancel_requested: r.cancel_requested != 0,
                state: State::parse(&r.state)?,
            };
            out.insert(r.id, fact);
        }
    }
    Ok(out)
}

/// Indexes of `ids` in id order (stable), so multi-row transactions lock rows in
/// one global order and do not deadlock each other.
fn id_order(ids: &[CommandId]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..ids.len()).collect();
    order.sort_by_key(|&i| ids[i]);
    order
}

pub(crate) async fn heartbeat(
    conn: &mut AsyncMysqlConnection,
    tables: &Tables,
    p: &HeartbeatParams,
) -> TxResult<Vec<LeaseStatus>> {
    let now = p.now.as_micros();
    let buffer = micros(p.lease_buffer);
    let ids: Vec<CommandId> = p.leases.iter().map(|l| l.id).collect();
    // Locked in id order (as completions lock them, so the two never deadlock), then
    // every lease still held is renewed by one statement.
    let tokens = lock_leases(conn, tables, &ids).await?;
    let held: Vec<bool> = p
        .leases
        .iter()
        .map(|l| tokens.get(&l.id.to_string()).is_some_and(|t| *t == l.token.to_string()))
        .collect();
    let renew: Vec<String> =
        p.leases.iter().zip(&held).filter(|(_, h)| **h).map(|(l, _)| l.id.to_string()).collect();
    if !renew.is_empty() {
        query(format!(
            "UPDATE {} AS c JOIN JSON_TABLE(?, '$[*]' COLUMNS (\
             id CHAR(36) CHARACTER SET ascii COLLATE ascii_bin PATH '$')) AS v ON c.id = v.id \
             SET c.lease_expires_at = ? + c.timeout_ms * 1000 + ?, c.updated_at = ?",
            tables.commands
        ))
        .bind::<Text, _>(serde_json::Value::from(renew).to_string())
        .bind::<BigInt, _>(now)
        .bind::<BigInt, _>(buffer)
        .bind::<BigInt, _>(now)
        .execute(conn)
        .await?;
    }
    // The renewed rows stay locked by this transaction, so their flags are current.
    let id_texts: Vec<String> = ids.iter().map(CommandId::to_string).collect();
    let facts = facts(conn, tables, &id_texts).await?;
    let mut statuses = Vec::with_capacity(p.leases.len());
    let mut lost = Vec::new();
    for (i, lease) in p.leases.iter().enumerate() {
        let fact = facts.get(&id_texts[i]).copied();
        if held[i] {
            statuses.push(LeaseStatus::Held { cancel_requested: fact.is_some_and(|f| f.cancel_requested) });
        } else {
            let attempt = fact.map_or(0, |f| f.attempts);
            lost.push(NewJournalEntry::lease_lost(*lease, p.now, attempt, None, "lease renewal"));
            statuses.push(LeaseStatus::Lost);
        }
    }
    journal::append(conn, tables, &lost).await?;
    Ok(statuses)
}

enum Bind {
    Text(String),
    Int(i64),
}

#[derive(QueryableByName)]
struct LeaseRow {
    #[diesel(sql_type = Text)]
    id: String,
    #[diesel(sql_type = Text)]
    lease_token: String,
}

/// Locks the rows of `ids` in id order and returns the lease token of each one that is
/// running, by id.
async fn lock_leases(
    conn: &mut AsyncMysqlConnection,
    tables: &Tables,
    ids: &[CommandId],
) -> TxResult<HashMap<String, String>> {
    let mut ids: Vec<String> = ids.iter().map(CommandId::to_string).collect();
    ids.sort_unstable();
    ids.dedup();
    let mut out = HashMap::with_capacity(ids.len());
    for chunk in ids.chunks(ID_CHUNK) {
        let q = query(format!(
            "SELECT id, COALESCE(lease_token, '') AS lease_token FROM {} WHERE id IN ({}) AND state = 'running' \
             ORDER BY id FOR UPDATE",
            tables.commands,
            placeholders(chunk.len())
        ));
        let rows: Vec<LeaseRow> = bind_ids(q, chunk.iter().map(String::as_str)).load(conn).await?;
        out.extend(rows.into_iter().map(|r| (r.id, r.lease_token)));
    }
    Ok(out)
}

/// Records successes whose leases are held (their rows locked by [`lock_leases`]) in one
/// UPDATE instead of one per command: the rows are read from a JSON array by
/// `JSON_TABLE` and joined by primary key, so the statement's text and its cost per row
/// do not grow with the batch (a `CASE id WHEN …` per column is quadratic: 20 ms for
/// 360 rows on MariaDB).
async fn apply_successes(
    conn: &mut AsyncMysqlConnection,
    tables: &Tables,
    held: &[&Completion],
) -> TxResult<()> {
    if held.is_empty() {
        return Ok(());
    }
    let rows: Vec<serde_json::Value> = held
        .iter()
        .filter_map(|c| {
            let Outcome::Succeeded { output, .. } = &c.outcome else { return None };
            Some(serde_json::json!([c.lease.id.to_string(), output, c.now.as_micros()]))
        })
        .collect();
    let expected = rows.len();
    let matched = query(format!(
        "UPDATE {} AS c JOIN JSON_TABLE(?, '$[*]' COLUMNS (\
         id CHAR(36) CHARACTER SET ascii COLLATE ascii_bin PATH '$[0]', \
         output LONGTEXT PATH '$[1]', now BIGINT PATH '$[2]')) AS v ON c.id = v.id \
         SET c.state = 'succeeded', c.output = v.output, c.finished_at = v.now, c.updated_at = v.now, \
         c.lease_token = NULL, c.lease_expires_at = NULL WHERE c.state = 'running'",
        tables.commands
    ))
    .bind::<Text, _>(serde_json::Value::Array(rows).to_string())
    .execute(conn)
    .await?;
    debug_assert_eq!(matched, expected, "every locked, held row is updated");
    Ok(())
}

/// The fenced update that ends one attempt; whether the lease was held.
async fn finish_attempt(conn: &mut AsyncMysqlConnection, tables: &Tables, c: &Completion) -> TxResult<bool> {
    let now = c.now.as_micros();
    // Every branch ends the lease; which columns change depends on the outcome.
    let (set, binds): (&str, Vec<Bind>) = match &c.outcome {
        Outcome::Succeeded { output, .. } => (
            "state = 'succeeded', output = ?, finished_at = ?",
            vec![Bind::Text(output.clone()), Bind::Int(now)],
        ),
        // A requested cancel wins over another attempt: the command ends cancelled,
        // due for its follow-ups, at its old due time. No assignment here changes
        // `cancel_requested`, and `scheduled_at` reads only itself, so each CASE sees
        // the row as it was (see the module docs).
        Outcome::Retry { failure, retry_at } => (
            "state = CASE WHEN cancel_requested = 1 THEN 'cancelled' ELSE 'pending' END, \
             finished_at = CASE WHEN cancel_requested = 1 THEN ? ELSE finished_at END, \
             follow_ups_due = CASE WHEN cancel_requested = 1 THEN 1 ELSE follow_ups_due END, \
             error_kind = ?, error = ?, \
             scheduled_at = CASE WHEN cancel_requested = 1 THEN scheduled_at ELSE ? END",
            vec![
                Bind::Int(now),
                Bind::Text(failure.kind.as_str().into()),
                Bind::Text(failure.message.clone()),
                Bind::Int(retry_at.as_micros()),
            ],
        ),
        Outcome::Failed { failure, .. } => (
            "state = 'failed', error_kind = ?, error = ?, finished_at = ?",
            vec![
                Bind::Text(failure.kind.as_str().into()),
                Bind::Text(failure.message.clone()),
                Bind::Int(now),
            ],
        ),
        Outcome::Cancelled { .. } => ("state = 'cancelled', finished_at = ?", vec![Bind::Int(now)]),
        Outcome::Released { at, .. } => (
            "state = CASE WHEN cancel_requested = 1 THEN 'cancelled' ELSE 'pending' END, \
             finished_at = CASE WHEN cancel_requested = 1 THEN ? ELSE finished_at END, \
             follow_ups_due = CASE WHEN cancel_requested = 1 THEN 1 ELSE follow_ups_due END, \
             scheduled_at = CASE WHEN cancel_requested = 1 THEN scheduled_at ELSE ? END",
            vec![Bind::Int(now), Bind::Int(at.as_micros())],
        ),
    };
    let mut q = query(format!(
        "UPDATE {} SET {set}{}, updated_at = ?, lease_token = NULL, lease_expires_at = NULL \
         WHERE id = ? AND lease_token = ? AND state = 'running'",
        tables.commands,
        attempt_given_back(&c.outcome)
    ));
    for b in binds {
        q = match b {
            Bind::Text(s) => q.bind::<Text, _>(s),
            Bind::Int(i) => q.bind::<BigInt, _>(i),
        };
    }
    let matched = q
        .bind::<BigInt, _>(now)
        .bind::<Text, _>(c.lease.id.to_string())
        .bind::<Text, _>(c.lease.token.to_string())
        .execute(conn)
        .await?;
    Ok(matched > 0)
}

/// Applies a batch of completions, each fenced on its lease, with what they do to the
/// commands depending on them. Also returns whether a dependent was unblocked.
pub(crate) async fn complete(
    conn: &mut AsyncMysqlConnection,
    tables: &Tables,
    completions: &[Completion],
) -> TxResult<(Vec<CompletionStatus>, bool)> {
    let ids: Vec<CommandId> = completions.iter().map(|c| c.lease.id).collect();
    let mut applied = vec![false; completions.len()];
    // Successes of commands that appear once in the batch are applied together, after
    // every row of the batch is locked in id order (as heartbeats lock them, so the two
    // never deadlock); the leases read under the lock say which are still held.
    let together = distinct_successes(completions);
    if !together.is_empty() {
        let leases = lock_leases(conn, tables, &ids).await?;
        for &i in &together {
            let c = &completions[i];
            applied[i] =
                leases.get(&c.lease.id.to_string()).is_some_and(|token| *token == c.lease.token.to_string());
        }
        let held: Vec<&Completion> =
            together.iter().filter(|&&i| applied[i]).map(|&i| &completions[i]).collect();
        apply_successes(conn, tables, &held).await?;
    }
    let mut in_batch = vec![false; completions.len()];
    together.iter().for_each(|&i| in_batch[i] = true);
    for i in id_order(&ids) {
        if !in_batch[i] {
            applied[i] = finish_attempt(conn, tables, &completions[i]).await?;
        }
    }
    let id_texts: Vec<String> = ids.iter().map(CommandId::to_string).collect();
    let facts = facts(conn, tables, &id_texts).await?;
    let mut entries = Vec::new();
    let mut follow_ups: Vec<&InsertCommand> = Vec::new();
    let mut statuses = Vec::with_capacity(completions.len());
    // Applied `Retry` or `Released` completions that ended the command cancelled
    // because its cancellation was requested (decided by the fenced update, which
    // still holds the row's lock).
    let mut cancelled_instead = vec![false; completions.len()];
    for (i, c) in completions.iter().enumerate() {
        let fact = facts.get(&id_texts[i]);
        let attempt = fact.map_or(0, |f| f.attempts);
        if applied[i] {
            cancelled_instead[i] = matches!(c.outcome, Outcome::Retry { .. } | Outcome::Released { .. })
                && fact.is_some_and(|f| f.state == State::Cancelled);
            if cancelled_instead[i] {
                entries.extend(NewJournalEntry::completion_cancelled_instead(c, attempt));
            } else {
                entries.extend(NewJournalEntry::completion(c, attempt));
            }
            follow_ups.extend(outcome_follow_ups(&c.outcome));
            statuses.push(CompletionStatus::Applied);
        } else {
            entries.push(NewJournalEntry::lease_lost(
                c.lease,
                c.now,
                attempt,
                Some(c.worker.clone()),
                "recording the outcome",
            ));
            statuses.push(CompletionStatus::LeaseLost);
        }
    }
    journal::append(conn, tables, &entries).await?;
    insert(conn, tables, &follow_ups).await?;
    let mut succeeded = Vec::new();
    let mut ended = Vec::new();
    for (i, c) in completions.iter().enumerate().filter(|&(i, _)| applied[i]) {
        match c.outcome {
            Outcome::Succeeded { .. } => succeeded.push((c.lease.id, c.now)),
            Outcome::Failed { .. } => ended.push((c.lease.id, State::Failed, c.now)),
            Outcome::Cancelled { .. } => ended.push((c.lease.id, State::Cancelled, c.now)),
            Outcome::Retry { .. } | Outcome::Released { .. } if cancelled_instead[i] => {
                ended.push((c.lease.id, State::Cancelled, c.now));
            }
            Outcome::Retry { .. } | Outcome::Released { .. } => {}
        }
    }
    let unblocked = dependencies::unblock(conn, tables, &succeeded).await?;
    dependencies::cascade(conn, tables, &ended).await?;
    Ok((statuses, unblocked > 0))
}

#[derive(QueryableByName)]
struct StateRow {
    #[diesel(sql_type = Text)]
    state: String,
    #[diesel(sql_type = BigInt)]
    attempts: i64,
}

pub(crate) async fn cancel(
    conn: &mut AsyncMysqlConnection,
    tables: &Tables,
    id: CommandId,
    now: Timestamp,
) -> TxResult<CancelStatus> {
    let rows: Vec<StateRow> =
        diesel::sql_query(format!("SELECT state, attempts FROM {} WHERE id = ? FOR UPDATE", tables.commands))
            .bind::<Text, _>(id.to_string())
            .load(conn)
            .await?;
    let Some(row) = rows.into_iter().next() else {
        return Ok(CancelStatus::NotFound);
    };
    let state = State::parse(&row.state)?;
    let now_us = now.as_micros();
    let (set, binds, status): (&str, Vec<i64>, CancelStatus) = match state {
        State::Blocked | State::Pending => (
            "state = 'cancelled', finished_at = ?, updated_at = ?, follow_ups_due = 1",
            vec![now_us, now_us],
            CancelStatus::Cancelled,
        ),
        State::Running => ("cancel_requested = 1, updated_at = ?", vec![now_us], CancelStatus::Requested),
        finished => return Ok(CancelStatus::AlreadyFinished(finished)),
    };
    let mut q = query(format!("UPDATE {} SET {set} WHERE id = ? AND state = ?", tables.commands));
    for b in binds {
        q = q.bind::<BigInt, _>(b);
    }
    q.bind::<Text, _>(id.to_string()).bind::<Text, _>(state.as_str()).execute(conn).await?;
    journal::append(conn, tables, &[NewJournalEntry::cancel(id, now, u32_of(row.attempts), state)]).await?;
    if status == CancelStatus::Cancelled {
        dependencies::cascade(conn, tables, &[(id, State::Cancelled, now)]).await?;
    }
    Ok(status)
}

#[derive(QueryableByName)]
struct ExpiredRow {
    #[diesel(sql_type = Text)]
    id: String,
    #[diesel(sql_type = BigInt)]
    attempts: i64,
    #[diesel(sql_type = BigInt)]
    max_attempts: i64,
    #[diesel(sql_type = BigInt)]
    cancel_requested: i64,
    #[diesel(sql_type = Nullable<Text>)]
    worker: Option<String>,
}

/// The new state of rescued commands and the worker whose lease expired.
type RescueGroup = (State, Option<String>);

pub(crate) async fn rescue(
    conn: &mut AsyncMysqlConnection,
    tables: &Tables,
    now: Timestamp,
    limit: usize,
) -> TxResult<Vec<Rescued>> {
    let now_us = now.as_micros();
    // Locked rows belong to a transaction renewing or finishing them right now: skip
    // them; if still expired they are taken next time.
    let expired: Vec<ExpiredRow> = diesel::sql_query(format!(
        "SELECT id, attempts, max_attempts, cancel_requested, worker FROM {} FORCE INDEX (commands_lease) \
         WHERE state = 'running' AND lease_expires_at < ? ORDER BY lease_expires_at, id LIMIT ? \
         FOR UPDATE SKIP LOCKED",
        tables.commands
    ))
    .bind::<BigInt, _>(now_us)
    .bind::<BigInt, _>(limit_of(limit))
    .load(conn)
    .await?;
    if expired.is_empty() {
        return Ok(Vec::new());
    }
    // The new state of each row is decided here, from the values read under the lock,
    // so no SET expression depends on another (see the module docs). Rows going to
    // the same state from the same worker share one UPDATE (and one error text).
    let mut rescued = Vec::with_capacity(expired.len());
    let mut groups: Vec<(RescueGroup, Vec<&str>)> = Vec::new();
    for row in &expired {
        let state = if row.cancel_requested != 0 {
            State::Cancelled
        } else if row.attempts < row.max_attempts {
            State::Pending
        } else {
            State::Failed
        };
        rescued.push(Rescued { id: row.id.parse()?, state });
        let key = (state, row.worker.clone());
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, ids)) => ids.push(&row.id),
            None => groups.push((key, vec![&row.id])),
        }
    }
    for ((state, worker), ids) in &groups {
        for chunk in ids.chunks(ID_CHUNK) {
            let (set, binds): (&str, Vec<Bind>) = match state {
                State::Pending => (
                    "state = 'pending', scheduled_at = ?, finished_at = NULL, follow_ups_due = 0, \
                     error_kind = ?, error = ?",
                    vec![
                        Bind::Int(now_us),
                        Bind::Text(FailureKind::LeaseExpired.as_str().into()),
                        Bind::Text(lease_expired_message(worker.as_deref())),
                    ],
                ),
                State::Failed => (
                    "state = 'failed', finished_at = ?, follow_ups_due = 1, error_kind = ?, error = ?",
                    vec![
                        Bind::Int(now_us),
                        Bind::Text(FailureKind::LeaseExpired.as_str().into()),
                        Bind::Text(lease_expired_message(worker.as_deref())),
                    ],
                ),
                _ => ("state = 'cancelled', finished_at = ?, follow_ups_due = 1", vec![Bind::Int(now_us)]),
            };
            let mut q = query(format!(
                "UPDATE {} SET {set}, lease_token = NULL, lease_expires_at = NULL, updated_at = ? \
                 WHERE state = 'running' AND id IN ({})",
                tables.commands,
                placeholders(chunk.len())
            ));
            for b in binds {
                q = match b {
                    Bind::Text(s) => q.bind::<Text, _>(s),
                    Bind::Int(i) => q.bind::<BigInt, _>(i),
                };
            }
            bind_ids(q.bind::<BigInt, _>(now_us), chunk.iter().copied()).execute(conn).await?;
        }
    }
    let entries: Vec<NewJournalEntry> = expired
        .iter()
        .zip(&rescued)
        .map(|(row, r)| {
            NewJournalEntry::rescued(r.id, now, u32_of(row.attempts), row.worker.clone(), r.state)
        })
        .collect();
    journal::append(conn, tables, &entries).await?;
    let ended: Vec<_> = rescued
        .iter()
        .filter(|r| matches!(r.state, State::Failed | State::Cancelled))
        .map(|r| (r.id, r.state, now))
        .collect();
    dependencies::cascade(conn, tables, &ended).await?;
    Ok(rescued)
}

pub(crate) async fn follow_ups_due(
    conn: &mut AsyncMysqlConnection,
    tables: &Tables,
    names: &[String],
    limit: usize,
) -> TxResult<Vec<CommandRecord>> {
    let mut q = query(format!(
        "SELECT {} FROM {} WHERE follow_ups_due = 1 AND name IN ({}) ORDER BY id LIMIT ?",
        tables.columns,
        tables.commands,
        placeholders(names.len())
    ));
    for name in names {
        q = q.bind::<Text, _>(name.clone());
    }
    records(q.bind::<BigInt, _>(limit_of(limit)).load(conn).await?)
}

pub(crate) async fn resolve_follow_ups(
    conn: &mut AsyncMysqlConnection,
    tables: &Tables,
    id: CommandId,
    follow_ups: &[InsertCommand],
    now: Timestamp,
) -> TxResult<bool> {
    let matched = diesel::sql_query(format!(
        "UPDATE {} SET follow_ups_due = 0, updated_at = ? WHERE id = ? AND follow_ups_due = 1",
        tables.commands
    ))
    .bind::<BigInt, _>(now.as_micros())
    .bind::<Text, _>(id.to_string())
    .execute(conn)
    .await?;
    if matched == 0 {
        return Ok(false);
    }
    let facts = facts(conn, tables, &[id.to_string()]).await?;
    let attempt = facts.values().next().map_or(0, |f| f.attempts);
    let refs: Vec<&InsertCommand> = follow_ups.iter().collect();
    insert(conn, tables, &refs).await?;
    journal::append(conn, tables, &[NewJournalEntry::follow_ups_enqueued(id, now, attempt, follow_ups)])
        .await?;
    Ok(true)
}

pub(crate) async fn get(
    conn: &mut AsyncMysqlConnection,
    tables: &Tables,
    id: CommandId,
) -> TxResult<Option<CommandRecord>> {
    let rows: Vec<CommandRow> =
        diesel::sql_query(format!("SELECT {} FROM {} WHERE id = ?", tables.columns, tables.commands))
            .bind::<Text, _>(id.to_string())
            .load(conn)
            .await?;
    Ok(records(rows)?.into_iter().next())
}

pub(crate) async fn list(
    conn: &mut AsyncMysqlConnection,
    tables: &Tables,
    p: &ListParams,
) -> TxResult<Vec<CommandRecord>> {
    let statement = sql::list(Placeholders::Question, &tables.columns, &tables.commands, p);
    records(bind(statement).load(conn).await?)
}

/// A shared statement with its values bound as MySQL stores them (ids as text).
pub(crate) fn bind(statement: SqlStatement) -> Query {
    let mut q = query(statement.sql);
    for value in statement.binds {
        q = match value {
            SqlValue::Text(s) => q.bind::<Text, _>(s),
            SqlValue::Int(i) => q.bind::<BigInt, _>(i),
            SqlValue::Id(id) => q.bind::<Text, _>(id.to_string()),
            SqlValue::Workflow(id) => q.bind::<Text, _>(id.to_string()),
        };
    }
    q
}

#[derive(QueryableByName)]
struct WorkflowSqlRow {
    #[diesel(sql_type = Text)]
    workflow_id: String,
    #[diesel(sql_type = BigInt)]
    blocked: i64,
    #[diesel(sql_type = BigInt)]
    pending: i64,
    #[diesel(sql_type = BigInt)]
    running: i64,
    #[diesel(sql_type = BigInt)]
    succeeded: i64,
    #[diesel(sql_type = BigInt)]
    failed: i64,
    #[diesel(sql_type = BigInt)]
    cancelled: i64,
    #[diesel(sql_type = BigInt)]
    created_at: i64,
    #[diesel(sql_type = BigInt)]
    updated_at: i64,
}

/// Workflows newest first, with their step counts (`COUNT` is BIGINT, and `MIN`/`MAX`
/// of a BIGINT column stay BIGINT).
pub(crate) async fn workflows(
    conn: &mut AsyncMysqlConnection,
    tables: &Tables,
    q: &WorkflowQuery,
) -> TxResult<Vec<WorkflowSummary>> {
    let rows: Vec<WorkflowSqlRow> =
        bind(sql::workflows(Placeholders::Question, &tables.commands, q)).load(conn).await?;
    let summaries = rows
        .into_iter()
        .map(|r| {
            let counts = [r.blocked, r.pending, r.running, r.succeeded, r.failed, r.cancelled];
            Ok(sql::workflow_summary(r.workflow_id.parse()?, counts, r.created_at, r.updated_at))
        })
        .collect::<orch::Result<_>>()?;
    Ok(summaries)
}

#[derive(QueryableByName)]
struct CountSqlRow {
    #[diesel(sql_type = Text)]
    name: String,
    #[diesel(sql_type = Text)]
    target: String,
    #[diesel(sql_type = Text)]
    state: String,
    #[diesel(sql_type = BigInt)]
    n: i64,
}

pub(crate) async fn counts(conn: &mut AsyncMysqlConnection, tables: &Tables) -> TxResult<Vec<CountRow>> {
    let rows: Vec<CountSqlRow> = diesel::sql_query(format!(
        "SELECT name, target, state, COUNT(*) AS n FROM {} GROUP BY state, name, target \
         ORDER BY name, target, state",
        tables.commands
    ))
    .load(conn)
    .await?;
    rows.into_iter()
        .map(|r| {
            Ok(CountRow {
                name: r.name,
                target: r.target,
                state: State::parse(&r.state)?,
                count: u64::try_from(r.n).unwrap_or(0),
            })
        })
        .collect()
}

#[derive(QueryableByName)]
struct QueueStatsRow {
    #[diesel(sql_type = Text)]
    name: String,
    #[diesel(sql_type = Text)]
    target: String,
    #[diesel(sql_type = Text)]
    state: String,
    #[diesel(sql_type = BigInt)]
    n: i64,
    #[diesel(sql_type = BigInt)]
    due: i64,
    #[diesel(sql_type = Nullable<BigInt>)]
    oldest: Option<i64>,
}

pub(crate) async fn queue_stats(
    conn: &mut AsyncMysqlConnection,
    tables: &Tables,
    now: Timestamp,
) -> TxResult<Vec<QueueStats>> {
    let rows: Vec<QueueStatsRow> =
        bind(sql::queue_stats(Placeholders::Question, &tables.commands, now)).load(conn).await?;
    let mut stats = Vec::new();
    for r in rows {
        add_queue_count(&mut stats, r.name, r.target, State::parse(&r.state)?, r.n, r.due, r.oldest);
    }
    Ok(finish_queue_stats(stats))
}

pub(crate) async fn retry(
    conn: &mut AsyncMysqlConnection,
    tables: &Tables,
    id: CommandId,
    now: Timestamp,
) -> TxResult<RetryStatus> {
    let rows: Vec<StateRow> =
        diesel::sql_query(format!("SELECT state, attempts FROM {} WHERE id = ? FOR UPDATE", tables.commands))
            .bind::<Text, _>(id.to_string())
            .load(conn)
            .await?;
    let Some(row) = rows.into_iter().next() else {
        return Ok(RetryStatus::NotFound);
    };
    let state = State::parse(&row.state)?;
    if !matches!(state, State::Failed | State::Cancelled) {
        return Ok(RetryStatus::NotRetryable(state));
    }
    // A command with a dependency that has not succeeded goes back to waiting on it.
    // A locking read waits for a dependency completing at this moment and reads it
    // committed, so its unblocking cannot miss this command.
    let unmet: Vec<UnmetRow> = diesel::sql_query(format!(
        "SELECT p.id AS id FROM {d} d JOIN {c} p ON p.id = d.depends_on \
         WHERE d.command_id = ? AND p.state <> 'succeeded' LOCK IN SHARE MODE",
        d = tables.dependencies,
        c = tables.commands
    ))
    .bind::<Text, _>(id.to_string())
    .load(conn)
    .await?;
    let next = if unmet.is_empty() { "pending" } else { "blocked" };
    let now_us = now.as_micros();
    // `max_attempts = attempts + 1` reads `attempts`, which this statement does not
    // assign, so MySQL's left-to-right `SET` evaluation does not matter here.
    diesel::sql_query(format!(
        "UPDATE {} SET state = ?, scheduled_at = ?, max_attempts = attempts + 1, \
         finished_at = NULL, follow_ups_due = 0, cancel_requested = 0, updated_at = ?, \
         lease_token = NULL, lease_expires_at = NULL WHERE id = ? AND state = ?",
        tables.commands
    ))
    .bind::<Text, _>(next)
    .bind::<BigInt, _>(now_us)
    .bind::<BigInt, _>(now_us)
    .bind::<Text, _>(id.to_string())
    .bind::<Text, _>(state.as_str())
    .execute(conn)
    .await?;
    journal::append(conn, tables, &[NewJournalEntry::retry_requested(id, now, u32_of(row.attempts), state)])
        .await?;
    Ok(RetryStatus::Retried)
}

#[derive(QueryableByName)]
struct UnmetRow {
    #[diesel(sql_type = Text)]
    #[allow(dead_code, reason = "only the number of rows matters")]
    id: String,
}
