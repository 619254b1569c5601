//! The commands table: every lifecycle transition, each fenced where it must be.
//!
//! Every function here runs inside the caller's transaction (a write transaction,
//! `BEGIN IMMEDIATE`, for anything that changes rows).

use diesel::query_builder::{BoxedSqlQuery, SqlQuery};
use diesel::sql_types::{BigInt, Binary, Bool, Integer, Nullable, Text};
use diesel::sqlite::Sqlite;
use std::collections::HashMap;

use diesel::{OptionalExtension, QueryableByName, RunQueryDsl, SqliteConnection};
use orch::store::backend::{
    NewJournalEntry, PolicyEncoder, RawCommand, add_queue_count, attempt_given_back, distinct_successes,
    finish_queue_stats, micros, millis, outcome_follow_ups, u32_of, unreadable_completion,
    unreadable_message,
};
use orch::store::sql::{self, Placeholders, SqlStatement, SqlValue};
use orch::store::{
    CancelStatus, ClaimParams, ClaimedCommand, CommandId, CommandRecord, Completion, CompletionStatus,
    CountRow, HeartbeatParams, InsertCommand, Lease, LeaseStatus, LeaseToken, ListParams, Outcome,
    QueueStats, Rescued, RetryStatus, WorkflowQuery, WorkflowSummary,
};
use orch::{Error, State, Timestamp};

use crate::prepared::{Prepare, shaped_chunks};
use crate::{Tables, TxResult};
use crate::{dependencies, journal};

/// Every column, in [`CommandRow`]'s order.
pub(crate) const COLUMNS: &str = "id, name, target, state, input, output, error_kind, error, attempts, \
     max_attempts, timeout_ms, retry_policy, scheduled_at, created_at, updated_at, started_at, finished_at, \
     lease_token, lease_expires_at, worker, cancel_requested, follow_ups_due, parent_id, correlation_id, \
     workflow_id, step, priority, unique_key, unique_window";

/// Most rows per INSERT, a power of two (`shaped_chunks`): 18 binds each.
const INSERT_CHUNK: usize = 64;

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
    /// Read as bytes: SQLite stores whatever text a producer gives it, valid UTF-8 or
    /// not, and one such row must not make every read of the table fail.
    #[diesel(sql_type = Binary)]
    input: Vec<u8>,
    #[diesel(sql_type = Nullable<Text>)]
    output: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    error_kind: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    error: Option<String>,
    #[diesel(sql_type = Integer)]
    attempts: i32,
    #[diesel(sql_type = Integer)]
    max_attempts: i32,
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
    #[diesel(sql_type = Integer)]
    cancel_requested: i32,
    #[diesel(sql_type = Integer)]
    follow_ups_due: i32,
    #[diesel(sql_type = Nullable<Text>)]
    parent_id: Option<String>,
    #[diesel(sql_type = Text)]
    correlation_id: String,
    #[diesel(sql_type = Nullable<Text>)]
    workflow_id: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    step: Option<String>,
    #[diesel(sql_type = Integer)]
    priority: i32,
    #[diesel(sql_type = Nullable<Text>)]
    unique_key: Option<String>,
    #[diesel(sql_type = BigInt)]
    unique_window: i64,
}

impl CommandRow {
    /// Why the stored input cannot be handed to a handler, if it cannot.
    fn input_error(&self) -> Option<String> {
        std::str::from_utf8(&self.input)
            .err()
            .map(|e| format!("the stored input is not valid UTF-8 (at byte {})", e.valid_up_to()))
    }

    /// The record; an input that is not valid UTF-8 is shown with replacement characters.
    pub(crate) fn into_record(self) -> Result<CommandRecord, Error> {
        RawCommand {
            id: self.id,
            name: self.name,
            target: self.target,
            state: self.state,
            input: String::from_utf8(self.input)
                .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()),
            output: self.output,
            error_kind: self.error_kind,
            error: self.error,
            attempts: self.attempts.into(),
            max_attempts: self.max_attempts.into(),
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
            priority: self.priority.into(),
            unique_key: self.unique_key,
            unique_window: self.unique_window,
        }
        .into_record()
    }
}

pub(crate) fn placeholders(n: usize) -> String {
    let mut s = String::with_capacity(n * 3);
    for i in 0..n {
        s.push_str(if i == 0 { "?" } else { ", ?" });
    }
    s
}

/// The condition under which a row holds its unique key, as the partial index
/// `commands_unique` states it.
const HOLDS_KEY: &str =
    "unique_key IS NOT NULL AND (unique_window <> 0 OR state IN ('blocked', 'pending', 'running'))";

/// Inserts commands and their `enqueued` journal entries, and returns the id each is
/// stored under. A command whose unique key a stored command (or an earlier one of this
/// call) holds is not inserted: the holder's id stands for it. The caller's write
/// transaction keeps the check and the insert together, so no other push can come
/// between them.
pub(crate) fn insert(
    conn: &mut SqliteConnection,
    tables: &Tables,
    commands: &[InsertCommand],
) -> TxResult<Vec<CommandId>> {
    let mut ids: Vec<CommandId> = commands.iter().map(|c| c.id).collect();
    let mut holders: HashMap<(&str, i64), CommandId> = HashMap::new();
    let mut duplicate = vec![false; commands.len()];
    for (i, c) in commands.iter().enumerate() {
        let Some(unique) = &c.unique else { continue };
        let slot = (unique.key.as_str(), unique.window_micros());
        if let Some(holder) = holders.get(&slot) {
            (ids[i], duplicate[i]) = (*holder, true);
            continue;
        }
        let found: Option<IdRow> = diesel::sql_query(format!(
            "SELECT id FROM {} WHERE unique_key = ? AND unique_window = ? AND {HOLDS_KEY} LIMIT 1",
            tables.commands
        ))
        .bind::<Text, _>(&unique.key)
        .bind::<BigInt, _>(slot.1)
        .get_result(conn)
        .optional()?;
        match found {
            Some(row) => (ids[i], duplicate[i]) = (row.id.parse()?, true),
            None => {
                holders.insert(slot, c.id);
            }
        }
    }
    let fresh: Vec<&InsertCommand> =
        commands.iter().zip(&duplicate).filter(|(_, d)| !**d).map(|(c, _)| c).collect();
    insert_rows(conn, tables, &fresh)?;
    Ok(ids)
}

/// Inserts command rows, their dependency edges and their `enqueued` journal entries.
fn insert_rows(conn: &mut SqliteConnection, tables: &Tables, commands: &[&InsertCommand]) -> TxResult<()> {
    let mut policies = PolicyEncoder::default();
    for chunk in shaped_chunks(commands, INSERT_CHUNK) {
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
        let mut query = diesel::sql_query(sql).into_boxed::<Sqlite>();
        for c in chunk {
            let policy = policies.encode(&c.retry_policy)?;
            query = query
                .bind::<Text, _>(c.id.to_string())
                .bind::<Text, _>(c.name.clone())
                .bind::<Text, _>(c.target.clone())
                .bind::<Text, _>(if c.depends_on.is_empty() { "pending" } else { "blocked" })
                .bind::<Text, _>(c.input.clone())
                .bind::<Integer, _>(i32::try_from(c.max_attempts).unwrap_or(i32::MAX))
                .bind::<BigInt, _>(millis(c.timeout))
                .bind::<Text, _>(policy)
                .bind::<BigInt, _>(c.scheduled_at.as_micros())
                .bind::<BigInt, _>(c.created_at.as_micros())
                .bind::<BigInt, _>(c.created_at.as_micros())
                .bind::<Nullable<Text>, _>(c.parent_id.map(|p| p.to_string()))
                .bind::<Text, _>(c.correlation_id.clone())
                .bind::<Nullable<Text>, _>(c.workflow.as_ref().map(|w| w.workflow_id.to_string()))
                .bind::<Nullable<Text>, _>(c.workflow.as_ref().map(|w| w.step.clone()))
                .bind::<Integer, _>(i32::from(c.priority))
                .bind::<Nullable<Text>, _>(c.unique.as_ref().map(|u| u.key.clone()))
                .bind::<BigInt, _>(c.unique.as_ref().map_or(0, |u| u.window_micros()));
        }
        query.prepared().execute(conn)?;
    }
    dependencies::insert_edges(conn, tables, commands)?;
    let entries: Vec<NewJournalEntry> = commands.iter().map(|c| NewJournalEntry::enqueued(c)).collect();
    journal::append(conn, tables, &entries)
}

/// Leases a batch of due commands under one fresh token.
pub(crate) fn claim(
    conn: &mut SqliteConnection,
    tables: &Tables,
    p: &ClaimParams,
) -> TxResult<Vec<ClaimedCommand>> {
    let token = LeaseToken::generate();
    // The inner SELECT picks the batch in claim order; the write lock taken by
    // BEGIN IMMEDIATE means no other connection can claim between it and the UPDATE.
    let sql = format!(
        "UPDATE {t} SET state = 'running', attempts = attempts + 1, lease_token = ?, worker = ?, \
         started_at = ?, updated_at = ?, lease_expires_at = ? + timeout_ms * 1000 + ?, cancel_requested = 0 \
         WHERE id IN (SELECT id FROM {t} WHERE state = 'pending' AND target = ? AND scheduled_at <= ? \
         AND name IN ({names}) AND {paused} ORDER BY priority, scheduled_at, id LIMIT ?) RETURNING {COLUMNS}",
        t = tables.commands,
        names = placeholders(p.names.len()),
        paused = crate::pauses::claim_filter(tables),
    );
    let now = p.now.as_micros();
    let mut query = diesel::sql_query(sql)
        .into_boxed::<Sqlite>()
        .bind::<Text, _>(token.to_string())
        .bind::<Text, _>(p.worker.clone())
        .bind::<BigInt, _>(now)
        .bind::<BigInt, _>(now)
        .bind::<BigInt, _>(now)
        .bind::<BigInt, _>(micros(p.lease_buffer))
        .bind::<Text, _>(p.target.clone())
        .bind::<BigInt, _>(now);
    for name in &p.names {
        query = query.bind::<Text, _>(name.clone());
    }
    query = query.bind::<Text, _>(p.target.clone());
    query = query.bind::<BigInt, _>(i64::try_from(p.limit).unwrap_or(i64::MAX));
    let mut rows: Vec<CommandRow> = query.prepared().load(conn)?;
    rows.sort_by(|a, b| (a.priority, a.scheduled_at, &a.id).cmp(&(b.priority, b.scheduled_at, &b.id)));
    let mut claimed = Vec::with_capacity(rows.len());
    let mut entries = Vec::with_capacity(rows.len());
    // Rows a careless producer damaged: failed below, each alone, so they hold up
    // nothing else.
    let mut damaged: Vec<Completion> = Vec::new();
    for row in rows {
        let input_error = row.input_error();
        let raw_id = row.id.clone();
        let record = match row.into_record() {
            Ok(record) => record,
            Err(e) => {
                tracing::error!(id = raw_id, error = %e, "failing a stored row that does not read as a command");
                match raw_id.parse::<CommandId>() {
                    Ok(id) => damaged.push(unreadable_completion(
                        Lease { id, token },
                        p.now,
                        &p.worker,
                        &e.to_string(),
                    )),
                    Err(_) => fail_unparsable_id(conn, tables, &raw_id, token, &e.to_string(), p.now)?,
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
        if let Some(why) = input_error {
            tracing::error!(id = %record.id, error = %why, "failing a command whose stored input cannot be read");
            damaged.push(unreadable_completion(Lease { id: record.id, token }, p.now, &p.worker, &why));
            continue;
        }
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
    journal::append(conn, tables, &entries)?;
    for c in &damaged {
        complete(conn, tables, c)?;
    }
    Ok(claimed)
}

/// Fails a claimed row whose id is not even a UUID, by its stored id and the claim's
/// lease: no completion (nor journal entry) can name it, and left running it would be
/// claimed again after its lease, failing every claim it is part of.
fn fail_unparsable_id(
    conn: &mut SqliteConnection,
    tables: &Tables,
    raw_id: &str,
    token: LeaseToken,
    why: &str,
    now: Timestamp,
) -> TxResult<()> {
    diesel::sql_query(format!(
        "UPDATE {} SET state = 'failed', error_kind = 'decode', error = ?, finished_at = ?, updated_at = ?, \
         lease_token = NULL, lease_expires_at = NULL WHERE id = ? AND lease_token = ? AND state = 'running'",
        tables.commands
    ))
    .bind::<Text, _>(unreadable_message(why))
    .bind::<BigInt, _>(now.as_micros())
    .bind::<BigInt, _>(now.as_micros())
    .bind::<Text, _>(raw_id)
    .bind::<Text, _>(token.to_string())
    .execute(conn)?;
    Ok(())
}

#[derive(QueryableByName)]
struct Attempts {
    #[diesel(sql_type = Integer)]
    attempts: i32,
}

#[derive(QueryableByName)]
struct HeartbeatRow {
    #[diesel(sql_type = Integer)]
    cancel_requested: i32,
}

/// The current attempt number of a command, for journaling refused changes.
fn current_attempt(conn: &mut SqliteConnection, tables: &Tables, id: CommandId) -> TxResult<u32> {
    let rows: Vec<Attempts> =
        diesel::sql_query(format!("SELECT attempts FROM {} WHERE id = ?", tables.commands))
            .bind::<Text, _>(id.to_string())
            .prepared()
            .load(conn)?;
    Ok(rows.first().map_or(0, |r| u32_of(r.attempts.into())))
}

fn lease_lost_entry(
    conn: &mut SqliteConnection,
    tables: &Tables,
    lease: Lease,
    at: Timestamp,
    worker: Option<String>,
    what: &str,
) -> TxResult<()> {
    let attempt = current_attempt(conn, tables, lease.id)?;
    journal::append(conn, tables, &[NewJournalEntry::lease_lost(lease, at, attempt, worker, what)])
}

pub(crate) fn heartbeat(
    conn: &mut SqliteConnection,
    tables: &Tables,
    p: &HeartbeatParams,
) -> TxResult<Vec<LeaseStatus>> {
    let sql = format!(
        "UPDATE {} SET lease_expires_at = ? + timeout_ms * 1000 + ?, updated_at = ? \
         WHERE id = ? AND lease_token = ? AND state = 'running' RETURNING cancel_requested",
        tables.commands
    );
    let buffer = micros(p.lease_buffer);
    let mut statuses = Vec::with_capacity(p.leases.len());
    for lease in &p.leases {
        let rows: Vec<HeartbeatRow> = diesel::sql_query(&sql)
            .bind::<BigInt, _>(p.now.as_micros())
            .bind::<BigInt, _>(buffer)
            .bind::<BigInt, _>(p.now.as_micros())
            .bind::<Text, _>(lease.id.to_string())
            .bind::<Text, _>(lease.token.to_string())
            .prepared()
            .load(conn)?;
        statuses.push(match rows.first() {
            Some(row) => LeaseStatus::Held { cancel_requested: row.cancel_requested != 0 },
            None => {
                lease_lost_entry(conn, tables, *lease, p.now, None, "lease renewal")?;
                LeaseStatus::Lost
            }
        });
    }
    Ok(statuses)
}

#[derive(QueryableByName)]
struct AppliedSuccess {
    #[diesel(sql_type = Text)]
    id: String,
    #[diesel(sql_type = Integer)]
    attempts: i32,
    #[diesel(sql_type = Bool)]
    has_dependents: bool,
}

/// Applies a batch of completions, each fenced on its lease and with its consequences;
/// says of each whether it made commands due (follow-ups inserted, dependents
/// unblocked). The successes of commands that appear once in the batch are applied by
/// one statement that reads them from a JSON array (`json_each`, so its text is the
/// same for any batch) and journaled by one insert; the rest one by one.
pub(crate) fn complete_batch(
    conn: &mut SqliteConnection,
    tables: &Tables,
    completions: &[Completion],
) -> TxResult<Vec<(CompletionStatus, bool)>> {
    let together = distinct_successes(completions);
    let mut results: Vec<Option<(CompletionStatus, bool)>> = vec![None; completions.len()];
    if !together.is_empty() {
        let rows: Vec<serde_json::Value> = together
            .iter()
            .filter_map(|&i| {
                let c = &completions[i];
                let Outcome::Succeeded { output, .. } = &c.outcome else { return None };
                Some(serde_json::json!([
                    c.lease.id.to_string(),
                    c.lease.token.to_string(),
                    output,
                    c.now.as_micros()
                ]))
            })
            .collect();
        let batch = serde_json::Value::Array(rows).to_string();
        // `+state`: the planner must look each row up by id from the array, never walk
        // the running rows (the state index) once per array element.
        let applied: Vec<AppliedSuccess> = diesel::sql_query(format!(
            "UPDATE {t} SET state = 'succeeded', output = json_extract(v.value, '$[2]'), \
             finished_at = json_extract(v.value, '$[3]'), updated_at = json_extract(v.value, '$[3]'), \
             lease_token = NULL, lease_expires_at = NULL \
             FROM json_each(?) AS v \
             WHERE {t}.id = json_extract(v.value, '$[0]') AND {t}.lease_token = json_extract(v.value, '$[1]') \
             AND +{t}.state = 'running' \
             RETURNING {t}.id AS id, {t}.attempts AS attempts, \
             EXISTS (SELECT 1 FROM {d} AS d WHERE d.depends_on = {t}.id) AS has_dependents",
            t = tables.commands,
            d = tables.dependencies,
        ))
        .bind::<Text, _>(batch)
        .prepared()
        .load(conn)?;
        let applied: std::collections::HashMap<String, AppliedSuccess> =
            applied.into_iter().map(|a| (a.id.clone(), a)).collect();
        let mut entries = Vec::with_capacity(together.len());
        // The follow-ups of every batched success, inserted together after the loop.
        let mut follow_ups: Vec<InsertCommand> = Vec::new();
        for &i in &together {
            let c = &completions[i];
            let Some(a) = applied.get(&c.lease.id.to_string()) else {
                lease_lost_entry(
                    conn,
                    tables,
                    c.lease,
                    c.now,
                    Some(c.worker.clone()),
                    "recording the outcome",
                )?;
                results[i] = Some((CompletionStatus::LeaseLost, false));
                continue;
            };
            entries.extend(NewJournalEntry::completion(c, u32_of(a.attempts.into())));
            let pushes = outcome_follow_ups(&c.outcome);
            follow_ups.extend_from_slice(pushes);
            let unblocked = if a.has_dependents {
                dependencies::unblock_dependents(conn, tables, c.lease.id, c.now)?
            } else {
                0
            };
            results[i] = Some((CompletionStatus::Applied, unblocked > 0 || !pushes.is_empty()));
        }
        if !follow_ups.is_empty() {
            insert(conn, tables, &follow_ups)?;
        }
        journal::append(conn, tables, &entries)?;
    }
    completions
        .iter()
        .zip(results)
        .map(|(c, done)| match done {
            Some(result) => Ok(result),
            None => complete(conn, tables, c),
        })
        .collect()
}

/// Applies one completion, fenced on its lease; also says whether it made commands due
/// (follow-ups inserted, dependents unblocked).
pub(crate) fn complete(
    conn: &mut SqliteConnection,
    tables: &Tables,
    c: &Completion,
) -> TxResult<(CompletionStatus, bool)> {
    let now = c.now.as_micros();
    // Every branch ends the lease; which columns change depends on the outcome.
    let (set, binds): (&str, Vec<Bind>) = match &c.outcome {
        Outcome::Succeeded { output, .. } => (
            "state = 'succeeded', output = ?, finished_at = ?",
            vec![Bind::Text(output.clone()), Bind::Int(now)],
        ),
        // A requested cancel wins over another attempt: the command ends cancelled.
        // SQLite evaluates every SET expression against the row as it was, so each CASE
        // sees the old `cancel_requested` and `scheduled_at`.
        Outcome::Retry { failure, retry_at } => (
            "state = CASE WHEN cancel_requested = 1 THEN 'cancelled' ELSE 'pending' END, \
             finished_at = CASE WHEN cancel_requested = 1 THEN ? ELSE finished_at END, \
             follow_ups_due = CASE WHEN cancel_requested = 1 THEN 1 ELSE follow_ups_due END, \
             error_kind = ?, error = ?, scheduled_at = CASE WHEN cancel_requested = 1 THEN scheduled_at ELSE ? END",
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
    let sql = format!(
        "UPDATE {} SET {set}{}, updated_at = ?, lease_token = NULL, lease_expires_at = NULL \
         WHERE id = ? AND lease_token = ? AND state = 'running' RETURNING attempts, state",
        tables.commands,
        attempt_given_back(&c.outcome)
    );
    let mut query = diesel::sql_query(sql).into_boxed::<Sqlite>();
    for b in binds {
        query = match b {
            Bind::Text(s) => query.bind::<Text, _>(s),
            Bind::Int(i) => query.bind::<BigInt, _>(i),
        };
    }
    let rows: Vec<StateRow> = query
        .bind::<BigInt, _>(now)
        .bind::<Text, _>(c.lease.id.to_string())
        .bind::<Text, _>(c.lease.token.to_string())
        .prepared()
        .load(conn)?;
    let Some(row) = rows.first() else {
        lease_lost_entry(conn, tables, c.lease, c.now, Some(c.worker.clone()), "recording the outcome")?;
        return Ok((CompletionStatus::LeaseLost, false));
    };
    let attempt = u32_of(row.attempts.into());
    let cancelled_instead =
        matches!(c.outcome, Outcome::Retry { .. } | Outcome::Released { .. }) && row.state == "cancelled";
    if cancelled_instead {
        journal::append(conn, tables, &NewJournalEntry::completion_cancelled_instead(c, attempt))?;
        dependencies::cancel_dependents(conn, tables, c.lease.id, State::Cancelled, c.now)?;
        return Ok((CompletionStatus::Applied, false));
    }
    let entries = NewJournalEntry::completion(c, attempt);
    journal::append(conn, tables, &entries)?;
    let follow_ups = outcome_follow_ups(&c.outcome);
    if !follow_ups.is_empty() {
        insert(conn, tables, follow_ups)?;
    }
    let unblocked = match &c.outcome {
        Outcome::Succeeded { .. } => dependencies::unblock_dependents(conn, tables, c.lease.id, c.now)?,
        Outcome::Failed { .. } => {
            dependencies::cancel_dependents(conn, tables, c.lease.id, State::Failed, c.now)?;
            0
        }
        Outcome::Cancelled { .. } => {
            dependencies::cancel_dependents(conn, tables, c.lease.id, State::Cancelled, c.now)?;
            0
        }
        Outcome::Retry { .. } | Outcome::Released { .. } => 0,
    };
    Ok((CompletionStatus::Applied, unblocked > 0 || !follow_ups.is_empty()))
}

enum Bind {
    Text(String),
    Int(i64),
}

#[derive(QueryableByName)]
struct StateRow {
    #[diesel(sql_type = Text)]
    state: String,
    #[diesel(sql_type = Integer)]
    attempts: i32,
}

pub(crate) fn cancel(
    conn: &mut SqliteConnection,
    tables: &Tables,
    id: CommandId,
    now: Timestamp,
) -> TxResult<CancelStatus> {
    let rows: Vec<StateRow> =
        diesel::sql_query(format!("SELECT state, attempts FROM {} WHERE id = ?", tables.commands))
            .bind::<Text, _>(id.to_string())
            .prepared()
            .load(conn)?;
    let Some(row) = rows.first() else {
        return Ok(CancelStatus::NotFound);
    };
    let state = State::parse(&row.state)?;
    let (sql, status) = match state {
        State::Blocked | State::Pending => (
            "state = 'cancelled', finished_at = ?1, updated_at = ?1, follow_ups_due = 1",
            CancelStatus::Cancelled,
        ),
        State::Running => ("cancel_requested = 1, updated_at = ?1", CancelStatus::Requested),
        finished => return Ok(CancelStatus::AlreadyFinished(finished)),
    };
    // Numbered parameters: the time is bound once and used by every SET that needs it.
    diesel::sql_query(format!("UPDATE {} SET {sql} WHERE id = ?2 AND state = ?3", tables.commands))
        .bind::<BigInt, _>(now.as_micros())
        .bind::<Text, _>(id.to_string())
        .bind::<Text, _>(state.as_str())
        .prepared()
        .execute(conn)?;
    journal::append(conn, tables, &[NewJournalEntry::cancel(id, now, u32_of(row.attempts.into()), state)])?;
    if status == CancelStatus::Cancelled {
        dependencies::cancel_dependents(conn, tables, id, State::Cancelled, now)?;
    }
    Ok(status)
}

#[derive(QueryableByName)]
struct RescuedRow {
    #[diesel(sql_type = Text)]
    id: String,
    #[diesel(sql_type = Text)]
    state: String,
    #[diesel(sql_type = Integer)]
    attempts: i32,
    #[diesel(sql_type = Nullable<Text>)]
    worker: Option<String>,
}

pub(crate) fn rescue(
    conn: &mut SqliteConnection,
    tables: &Tables,
    now: Timestamp,
    limit: usize,
) -> TxResult<Vec<Rescued>> {
    // SQLite evaluates every SET expression against the row as it was before the
    // UPDATE, so the CASEs below all see the old state and attempts.
    let sql = format!(
        "UPDATE {t} SET \
           state = CASE WHEN cancel_requested = 1 THEN 'cancelled' WHEN attempts < max_attempts THEN 'pending' ELSE 'failed' END, \
           scheduled_at = CASE WHEN cancel_requested = 0 AND attempts < max_attempts THEN ? ELSE scheduled_at END, \
           finished_at = CASE WHEN cancel_requested = 0 AND attempts < max_attempts THEN NULL ELSE ? END, \
           follow_ups_due = CASE WHEN cancel_requested = 0 AND attempts < max_attempts THEN 0 ELSE 1 END, \
           error_kind = CASE WHEN cancel_requested = 1 THEN error_kind ELSE 'lease_expired' END, \
           error = CASE WHEN cancel_requested = 1 THEN error ELSE 'lease of worker ' || COALESCE(worker, '?') || ' expired' END, \
           lease_token = NULL, lease_expires_at = NULL, updated_at = ? \
         WHERE id IN (SELECT id FROM {t} WHERE state = 'running' AND lease_expires_at < ? ORDER BY lease_expires_at LIMIT ?) \
         RETURNING id, state, attempts, worker",
        t = tables.commands
    );
    let rows: Vec<RescuedRow> = diesel::sql_query(sql)
        .bind::<BigInt, _>(now.as_micros())
        .bind::<BigInt, _>(now.as_micros())
        .bind::<BigInt, _>(now.as_micros())
        .bind::<BigInt, _>(now.as_micros())
        .bind::<BigInt, _>(i64::try_from(limit).unwrap_or(i64::MAX))
        .prepared()
        .load(conn)?;
    let mut rescued = Vec::with_capacity(rows.len());
    let mut entries = Vec::with_capacity(rows.len());
    for row in rows {
        let id: CommandId = row.id.parse()?;
        let state = State::parse(&row.state)?;
        entries.push(NewJournalEntry::rescued(id, now, u32_of(row.attempts.into()), row.worker, state));
        rescued.push(Rescued { id, state });
    }
    journal::append(conn, tables, &entries)?;
    for r in &rescued {
        if matches!(r.state, State::Failed | State::Cancelled) {
            dependencies::cancel_dependents(conn, tables, r.id, r.state, now)?;
        }
    }
    Ok(rescued)
}

pub(crate) fn follow_ups_due(
    conn: &mut SqliteConnection,
    tables: &Tables,
    names: &[String],
    limit: usize,
) -> TxResult<Vec<CommandRecord>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM {} WHERE follow_ups_due = 1 AND name IN ({}) ORDER BY id LIMIT ?",
        tables.commands,
        placeholders(names.len())
    );
    let mut query = diesel::sql_query(sql).into_boxed::<Sqlite>();
    for name in names {
        query = query.bind::<Text, _>(name.clone());
    }
    let rows: Vec<CommandRow> =
        query.bind::<BigInt, _>(i64::try_from(limit).unwrap_or(i64::MAX)).prepared().load(conn)?;
    Ok(rows.into_iter().map(CommandRow::into_record).collect::<Result<_, _>>()?)
}

pub(crate) fn resolve_follow_ups(
    conn: &mut SqliteConnection,
    tables: &Tables,
    id: CommandId,
    follow_ups: &[InsertCommand],
    now: Timestamp,
) -> TxResult<bool> {
    let rows: Vec<Attempts> = diesel::sql_query(format!(
        "UPDATE {} SET follow_ups_due = 0, updated_at = ? WHERE id = ? AND follow_ups_due = 1 RETURNING attempts",
        tables.commands
    ))
    .bind::<BigInt, _>(now.as_micros())
    .bind::<Text, _>(id.to_string())
    .prepared().load(conn)?;
    let Some(row) = rows.first() else {
        return Ok(false);
    };
    insert(conn, tables, follow_ups)?;
    let entry = NewJournalEntry::follow_ups_enqueued(id, now, u32_of(row.attempts.into()), follow_ups);
    journal::append(conn, tables, &[entry])?;
    Ok(true)
}

pub(crate) fn get(
    conn: &mut SqliteConnection,
    tables: &Tables,
    id: CommandId,
) -> TxResult<Option<CommandRecord>> {
    let rows: Vec<CommandRow> =
        diesel::sql_query(format!("SELECT {COLUMNS} FROM {} WHERE id = ?", tables.commands))
            .bind::<Text, _>(id.to_string())
            .prepared()
            .load(conn)?;
    Ok(rows.into_iter().next().map(CommandRow::into_record).transpose()?)
}

/// The most rows one `list` call returns.
pub(crate) fn list(
    conn: &mut SqliteConnection,
    tables: &Tables,
    p: &ListParams,
) -> TxResult<Vec<CommandRecord>> {
    let statement = sql::list(Placeholders::Question, COLUMNS, &tables.commands, p);
    let rows: Vec<CommandRow> = bind(statement).load(conn)?;
    Ok(rows.into_iter().map(CommandRow::into_record).collect::<Result<_, _>>()?)
}

/// A shared statement with its values bound as SQLite stores them (ids as text).
pub(crate) fn bind(statement: SqlStatement) -> BoxedSqlQuery<'static, Sqlite, SqlQuery> {
    let mut query = diesel::sql_query(statement.sql).into_boxed::<Sqlite>();
    for value in statement.binds {
        query = match value {
            SqlValue::Text(s) => query.bind::<Text, _>(s),
            SqlValue::Int(i) => query.bind::<BigInt, _>(i),
            SqlValue::Id(id) => query.bind::<Text, _>(id.to_string()),
            SqlValue::Workflow(id) => query.bind::<Text, _>(id.to_string()),
        };
    }
    query
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

/// Workflows newest first, with their step counts.
pub(crate) fn workflows(
    conn: &mut SqliteConnection,
    tables: &Tables,
    q: &WorkflowQuery,
) -> TxResult<Vec<WorkflowSummary>> {
    let rows: Vec<WorkflowSqlRow> =
        bind(sql::workflows(Placeholders::Question, &tables.commands, q)).prepared().load(conn)?;
    Ok(rows
        .into_iter()
        .map(|r| {
            let counts = [r.blocked, r.pending, r.running, r.succeeded, r.failed, r.cancelled];
            Ok(sql::workflow_summary(r.workflow_id.parse()?, counts, r.created_at, r.updated_at))
        })
        .collect::<Result<_, Error>>()?)
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
    count: i64,
}

pub(crate) fn counts(conn: &mut SqliteConnection, tables: &Tables) -> TxResult<Vec<CountRow>> {
    let rows: Vec<CountSqlRow> = diesel::sql_query(format!(
        "SELECT name, target, state, COUNT(*) AS count FROM {} GROUP BY state, name, target ORDER BY name, target, state",
        tables.commands
    ))
    .prepared().load(conn)?;
    rows.into_iter()
        .map(|r| {
            Ok(CountRow {
                name: r.name,
                target: r.target,
                state: State::parse(&r.state)?,
                count: r.count.max(0) as u64,
            })
        })
        .collect()
}

#[derive(QueryableByName)]
struct StatsSqlRow {
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

pub(crate) fn queue_stats(
    conn: &mut SqliteConnection,
    tables: &Tables,
    now: Timestamp,
) -> TxResult<Vec<QueueStats>> {
    let rows: Vec<StatsSqlRow> =
        bind(sql::queue_stats(Placeholders::Question, &tables.commands, now)).prepared().load(conn)?;
    let mut stats = Vec::new();
    for r in rows {
        add_queue_count(&mut stats, r.name, r.target, State::parse(&r.state)?, r.n, r.due, r.oldest);
    }
    Ok(finish_queue_stats(stats))
}

pub(crate) fn retry(
    conn: &mut SqliteConnection,
    tables: &Tables,
    id: CommandId,
    now: Timestamp,
) -> TxResult<RetryStatus> {
    let rows: Vec<StateRow> =
        diesel::sql_query(format!("SELECT state, attempts FROM {} WHERE id = ?", tables.commands))
            .bind::<Text, _>(id.to_string())
            .prepared()
            .load(conn)?;
    let Some(row) = rows.first() else {
        return Ok(RetryStatus::NotFound);
    };
    let state = State::parse(&row.state)?;
    if !matches!(state, State::Failed | State::Cancelled) {
        return Ok(RetryStatus::NotRetryable(state));
    }
    // A command with a dependency that has not succeeded goes back to waiting on it.
    let unmet: Vec<IdRow> = diesel::sql_query(format!(
        "SELECT p.id AS id FROM {d} d JOIN {c} p ON p.id = d.depends_on \
         WHERE d.command_id = ? AND p.state <> 'succeeded'",
        d = tables.dependencies,
        c = tables.commands
    ))
    .bind::<Text, _>(id.to_string())
    .prepared()
    .load(conn)?;
    let next = if unmet.is_empty() { "pending" } else { "blocked" };
    diesel::sql_query(format!(
        "UPDATE {} SET state = ?3, scheduled_at = ?1, max_attempts = attempts + 1, finished_at = NULL, \
         follow_ups_due = 0, cancel_requested = 0, updated_at = ?1, lease_token = NULL, lease_expires_at = NULL \
         WHERE id = ?2",
        tables.commands
    ))
    .bind::<BigInt, _>(now.as_micros())
    .bind::<Text, _>(id.to_string())
    .bind::<Text, _>(next)
    .prepared().execute(conn)?;
    let entry = NewJournalEntry::retry_requested(id, now, u32_of(row.attempts.into()), state);
    journal::append(conn, tables, &[entry])?;
    Ok(RetryStatus::Retried)
}

#[derive(QueryableByName)]
struct IdRow {
    #[diesel(sql_type = Text)]
    id: String,
}
