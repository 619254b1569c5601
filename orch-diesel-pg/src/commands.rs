//! The commands table: every lifecycle transition, each fenced where it must be.
//!
//! Every function that changes rows runs inside the caller's transaction. Rows are
//! locked in a consistent order (claims and rescues skip locked rows; heartbeats and
//! completions lock by id; the blocked dependents a change reaches come last, locked
//! in one id-ordered statement, see [`crate::dependencies`]), so
//! concurrent workers never deadlock on each other.

use std::collections::HashMap;
use std::sync::LazyLock;

use diesel::QueryableByName;
use diesel::pg::Pg;
use diesel::query_builder::{BoxedSqlQuery, SqlQuery};
use diesel::sql_types::{Array, BigInt, Bool, Integer, Nullable, SmallInt, Text, Uuid};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use orch::store::backend::{
    COMMAND_COLUMNS, NewJournalEntry, PolicyEncoder, RawCommand, add_queue_count, attempt_given_back,
    distinct_successes, finish_queue_stats, micros, millis, outcome_follow_ups, u32_of,
    unreadable_completion,
};
use orch::store::sql::{self, Placeholders, SqlStatement, SqlValue};
use orch::store::{
    CancelStatus, ClaimParams, ClaimedCommand, CommandId, CommandRecord, Completion, CompletionStatus,
    CountRow, HeartbeatParams, InsertCommand, JournalKind, Lease, LeaseStatus, LeaseToken, ListParams,
    Outcome, QueueStats, Rescued, RetryStatus, WorkflowId, WorkflowQuery, WorkflowSummary,
};
use orch::{FailureKind, State, Timestamp};

use crate::prepared::Prepare;
use crate::{Tables, TxError, TxResult};
use crate::{dependencies, journal};

/// Every column, in [`RawCommand`]'s order.
pub(crate) static COLUMNS: LazyLock<String> = LazyLock::new(|| COMMAND_COLUMNS.join(", "));
/// Every column qualified by the alias `c`, for statements that join.
pub(crate) static C_COLUMNS: LazyLock<String> =
    LazyLock::new(|| COMMAND_COLUMNS.iter().map(|c| format!("c.{c}")).collect::<Vec<_>>().join(", "));

#[derive(QueryableByName)]
pub(crate) struct CommandRow {
    #[diesel(sql_type = Uuid)]
    id: uuid::Uuid,
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
    #[diesel(sql_type = Nullable<Uuid>)]
    lease_token: Option<uuid::Uuid>,
    #[diesel(sql_type = Nullable<BigInt>)]
    lease_expires_at: Option<i64>,
    #[diesel(sql_type = Nullable<Text>)]
    worker: Option<String>,
    #[diesel(sql_type = Bool)]
    cancel_requested: bool,
    #[diesel(sql_type = Bool)]
    follow_ups_due: bool,
    #[diesel(sql_type = Nullable<Uuid>)]
    parent_id: Option<uuid::Uuid>,
    #[diesel(sql_type = Text)]
    correlation_id: String,
    #[diesel(sql_type = Nullable<Uuid>)]
    workflow_id: Option<uuid::Uuid>,
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
    /// Decodes the row with the shared decoder, so every backend reads alike.
    pub(crate) fn into_record(self) -> orch::Result<CommandRecord> {
        RawCommand {
            id: self.id.hyphenated().to_string(),
            name: self.name,
            target: self.target,
            state: self.state,
            input: self.input,
            output: self.output,
            error_kind: self.error_kind,
            error: self.error,
            attempts: i64::from(self.attempts),
            max_attempts: i64::from(self.max_attempts),
            timeout_ms: self.timeout_ms,
            retry_policy: self.retry_policy,
            scheduled_at: self.scheduled_at,
            created_at: self.created_at,
            updated_at: self.updated_at,
            started_at: self.started_at,
            finished_at: self.finished_at,
            lease_token: self.lease_token.map(|t| t.hyphenated().to_string()),
            lease_expires_at: self.lease_expires_at,
            worker: self.worker,
            cancel_requested: self.cancel_requested,
            follow_ups_due: self.follow_ups_due,
            parent_id: self.parent_id.map(|p| p.hyphenated().to_string()),
            correlation_id: self.correlation_id,
            workflow_id: self.workflow_id.map(|w| w.hyphenated().to_string()),
            step: self.step,
            priority: i64::from(self.priority),
            unique_key: self.unique_key,
            unique_window: self.unique_window,
        }
        .into_record()
    }
}

fn records(rows: Vec<CommandRow>) -> TxResult<Vec<CommandRecord>> {
    Ok(rows.into_iter().map(CommandRow::into_record).collect::<orch::Result<_>>()?)
}

fn i32_of(v: u32) -> i32 {
    i32::try_from(v).unwrap_or(i32::MAX)
}

fn i64_of(v: usize) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// A bound value of a statement assembled at run time.
pub(crate) enum Bind {
    Text(String),
    BigInt(i64),
    Uuid(uuid::Uuid),
}

/// A statement assembled at run time with numbered parameters.
pub(crate) struct Statement {
    pub(crate) sql: String,
    binds: Vec<Bind>,
}

impl Statement {
    pub(crate) fn new(sql: impl Into<String>) -> Self {
        Statement { sql: sql.into(), binds: Vec::new() }
    }

    /// Binds `value` and returns its placeholder (`$n`).
    pub(crate) fn param(&mut self, value: Bind) -> String {
        self.binds.push(value);
        format!("${}", self.binds.len())
    }

    pub(crate) fn query(self) -> BoxedSqlQuery<'static, Pg, SqlQuery> {
        let mut query = diesel::sql_query(self.sql).into_boxed::<Pg>();
        for b in self.binds {
            query = match b {
                Bind::Text(s) => query.bind::<Text, _>(s),
                Bind::BigInt(i) => query.bind::<BigInt, _>(i),
                Bind::Uuid(u) => query.bind::<Uuid, _>(u),
            };
        }
        query
    }
}

/// Command rows as one array per column, for an `INSERT … SELECT … FROM unnest(…)`
/// whose text is the same for any number of rows (binding 14 arrays is far cheaper than
/// 14 parameters a row).
struct CommandArrays {
    ids: Vec<uuid::Uuid>,
    names: Vec<String>,
    targets: Vec<String>,
    states: Vec<&'static str>,
    inputs: Vec<String>,
    max_attempts: Vec<i32>,
    timeouts: Vec<i64>,
    policies: Vec<String>,
    scheduled: Vec<i64>,
    created: Vec<i64>,
    parents: Vec<Option<uuid::Uuid>>,
    correlations: Vec<String>,
    workflows: Vec<Option<uuid::Uuid>>,
    steps: Vec<Option<String>>,
    priorities: Vec<i16>,
    unique_keys: Vec<Option<String>>,
    unique_windows: Vec<i64>,
}

impl CommandArrays {
    /// Rows are blocked when they have dependencies, else pending.
    fn of(commands: &[&InsertCommand]) -> TxResult<Self> {
        let n = commands.len();
        let mut a = CommandArrays {
            ids: Vec::with_capacity(n),
            names: Vec::with_capacity(n),
            targets: Vec::with_capacity(n),
            states: Vec::with_capacity(n),
            inputs: Vec::with_capacity(n),
            max_attempts: Vec::with_capacity(n),
            timeouts: Vec::with_capacity(n),
            policies: Vec::with_capacity(n),
            scheduled: Vec::with_capacity(n),
            created: Vec::with_capacity(n),
            parents: Vec::with_capacity(n),
            correlations: Vec::with_capacity(n),
            workflows: Vec::with_capacity(n),
            steps: Vec::with_capacity(n),
            priorities: Vec::with_capacity(n),
            unique_keys: Vec::with_capacity(n),
            unique_windows: Vec::with_capacity(n),
        };
        let mut policies = PolicyEncoder::default();
        for c in commands {
            a.ids.push(c.id.as_uuid());
            a.names.push(c.name.clone());
            a.targets.push(c.target.clone());
            a.states.push(if c.depends_on.is_empty() { "pending" } else { "blocked" });
            a.inputs.push(c.input.clone());
            a.max_attempts.push(i32_of(c.max_attempts));
            a.timeouts.push(millis(c.timeout));
            a.policies.push(policies.encode(&c.retry_policy)?);
            a.scheduled.push(c.scheduled_at.as_micros());
            a.created.push(c.created_at.as_micros());
            a.parents.push(c.parent_id.map(|p| p.as_uuid()));
            a.correlations.push(c.correlation_id.clone());
            a.workflows.push(c.workflow.as_ref().map(|w| w.workflow_id.as_uuid()));
            a.steps.push(c.workflow.as_ref().map(|w| w.step.clone()));
            a.priorities.push(c.priority);
            a.unique_keys.push(c.unique.as_ref().map(|u| u.key.clone()));
            a.unique_windows.push(c.unique.as_ref().map_or(0, |u| u.window_micros()));
        }
        Ok(a)
    }

    /// How many parameters [`CommandArrays::sql`] reads.
    const PARAMS: usize = 17;

    /// The INSERT, reading the arrays from parameters `$first` to `$first + 16`.
    fn sql(table: &str, first: usize) -> String {
        let p: Vec<String> = (first..first + Self::PARAMS).map(|i| format!("${i}")).collect();
        format!(
            "INSERT INTO {table} (id, name, target, state, input, max_attempts, timeout_ms, retry_policy, \
             scheduled_at, created_at, updated_at, parent_id, correlation_id, workflow_id, step, priority, \
             unique_key, unique_window) \
             SELECT v.id, v.name, v.target, v.state, v.input, v.max_attempts, v.timeout_ms, v.retry_policy, \
             v.scheduled_at, v.created_at, v.created_at, v.parent_id, v.correlation_id, v.workflow_id, v.step, \
             v.priority, v.unique_key, v.unique_window \
             FROM unnest({}::uuid[], {}::text[], {}::text[], {}::text[], {}::text[], {}::integer[], {}::bigint[], \
             {}::text[], {}::bigint[], {}::bigint[], {}::uuid[], {}::text[], {}::uuid[], {}::text[], {}::smallint[], \
             {}::text[], {}::bigint[]) \
             AS v(id, name, target, state, input, max_attempts, timeout_ms, retry_policy, scheduled_at, created_at, \
             parent_id, correlation_id, workflow_id, step, priority, unique_key, unique_window)",
            p[0],
            p[1],
            p[2],
            p[3],
            p[4],
            p[5],
            p[6],
            p[7],
            p[8],
            p[9],
            p[10],
            p[11],
            p[12],
            p[13],
            p[14],
            p[15],
            p[16]
        )
    }

    fn bind(self, q: BoxedSqlQuery<'static, Pg, SqlQuery>) -> BoxedSqlQuery<'static, Pg, SqlQuery> {
        q.bind::<Array<Uuid>, _>(self.ids)
            .bind::<Array<Text>, _>(self.names)
            .bind::<Array<Text>, _>(self.targets)
            .bind::<Array<Text>, _>(self.states)
            .bind::<Array<Text>, _>(self.inputs)
            .bind::<Array<Integer>, _>(self.max_attempts)
            .bind::<Array<BigInt>, _>(self.timeouts)
            .bind::<Array<Text>, _>(self.policies)
            .bind::<Array<BigInt>, _>(self.scheduled)
            .bind::<Array<BigInt>, _>(self.created)
            .bind::<Array<Nullable<Uuid>>, _>(self.parents)
            .bind::<Array<Text>, _>(self.correlations)
            .bind::<Array<Nullable<Uuid>>, _>(self.workflows)
            .bind::<Array<Nullable<Text>>, _>(self.steps)
            .bind::<Array<SmallInt>, _>(self.priorities)
            .bind::<Array<Nullable<Text>>, _>(self.unique_keys)
            .bind::<Array<BigInt>, _>(self.unique_windows)
    }
}

/// Inserts command rows (blocked when they have dependencies, else pending) and their
/// dependency edges; no journal entries.
async fn insert_rows(
    conn: &mut AsyncPgConnection,
    tables: &Tables,
    commands: &[&InsertCommand],
) -> TxResult<()> {
    if commands.is_empty() {
        return Ok(());
    }
    let query = diesel::sql_query(CommandArrays::sql(&tables.commands, 1)).into_boxed::<Pg>();
    CommandArrays::of(commands)?.bind(query).prepared().execute(conn).await?;
    dependencies::insert_edges(conn, tables, commands).await
}

/// The condition under which a row holds its unique key, as the partial index
/// `commands_unique` states it (and `ON CONFLICT` must repeat it to name that index).
const HOLDS_KEY: &str =
    "unique_key IS NOT NULL AND (unique_window <> 0 OR state IN ('blocked', 'pending', 'running'))";

/// How often [`insert`] tries again for a command whose key holder finished between
/// the conflict and the lookup, before it reports the race as an error.
const UNIQUE_ROUNDS: usize = 16;

#[derive(QueryableByName)]
struct IdRow {
    #[diesel(sql_type = Uuid)]
    id: uuid::Uuid,
}

#[derive(QueryableByName)]
struct HolderRow {
    #[diesel(sql_type = Uuid)]
    id: uuid::Uuid,
    #[diesel(sql_type = Text)]
    unique_key: String,
    #[diesel(sql_type = BigInt)]
    unique_window: i64,
}

/// Inserts commands and their `enqueued` journal entries, and returns the id each is
/// stored under.
///
/// A command whose unique key another command holds is not inserted; the holder's id
/// stands for it. The insert names the unique index in `ON CONFLICT … DO NOTHING`,
/// which waits for a concurrent insert of the same key to commit or roll back, so of
/// concurrent pushes exactly one inserts; the others then read the holder.
pub(crate) async fn insert(
    conn: &mut AsyncPgConnection,
    tables: &Tables,
    commands: &[InsertCommand],
) -> TxResult<Vec<CommandId>> {
    let mut ids: Vec<CommandId> = commands.iter().map(|c| c.id).collect();
    if commands.iter().all(|c| c.unique.is_none()) {
        let rows: Vec<&InsertCommand> = commands.iter().collect();
        insert_rows(conn, tables, &rows).await?;
        let entries: Vec<NewJournalEntry> = commands.iter().map(NewJournalEntry::enqueued).collect();
        journal::append(conn, tables, &entries).await?;
        return Ok(ids);
    }
    // Commands of this call with one key: the first stands for the rest.
    let mut first_of: HashMap<(&str, i64), usize> = HashMap::new();
    let mut stands_for: Vec<Option<usize>> = vec![None; commands.len()];
    let mut todo: Vec<usize> = Vec::new();
    for (i, c) in commands.iter().enumerate() {
        match &c.unique {
            Some(u) => match first_of.get(&(u.key.as_str(), u.window_micros())) {
                Some(&first) => stands_for[i] = Some(first),
                None => {
                    first_of.insert((u.key.as_str(), u.window_micros()), i);
                    todo.push(i);
                }
            },
            None => todo.push(i),
        }
    }
    // Keyed rows go in in key order, so that pushes of several keys at once wait for
    // each other's keys in one order and cannot deadlock.
    let order = |i: &usize| commands[*i].unique.as_ref().map(|u| (u.key.as_str(), u.window_micros()));
    todo.sort_by(|a, b| order(a).cmp(&order(b)));
    let mut inserted: Vec<&InsertCommand> = Vec::new();
    for _ in 0..UNIQUE_ROUNDS {
        if todo.is_empty() {
            break;
        }
        let rows: Vec<&InsertCommand> = todo.iter().map(|&i| &commands[i]).collect();
        let sql = format!(
            "{} ON CONFLICT (unique_key, unique_window) WHERE {HOLDS_KEY} DO NOTHING RETURNING id",
            CommandArrays::sql(&tables.commands, 1)
        );
        let query = CommandArrays::of(&rows)?.bind(diesel::sql_query(sql).into_boxed::<Pg>());
        let new: std::collections::HashSet<uuid::Uuid> =
            query.load::<IdRow>(conn).await?.into_iter().map(|r| r.id).collect();
        let (done, conflicted): (Vec<usize>, Vec<usize>) =
            todo.iter().partition(|&&i| new.contains(&commands[i].id.as_uuid()));
        inserted.extend(done.iter().map(|&i| &commands[i]));
        if conflicted.is_empty() {
            todo.clear();
            break;
        }
        // Each conflict met a holder of the key; read it (a statement of its own, so
        // its snapshot includes the holder that committed while the insert waited).
        let (keys, windows): (Vec<String>, Vec<i64>) = conflicted
            .iter()
            .filter_map(|&i| commands[i].unique.as_ref().map(|u| (u.key.clone(), u.window_micros())))
            .unzip();
        let holders: Vec<HolderRow> = diesel::sql_query(format!(
            "SELECT id, unique_key, unique_window FROM {} \
             WHERE (unique_key, unique_window) IN (SELECT * FROM unnest($1::text[], $2::bigint[])) \
             AND {HOLDS_KEY}",
            tables.commands
        ))
        .bind::<Array<Text>, _>(keys)
        .bind::<Array<BigInt>, _>(windows)
        .load(conn)
        .await?;
        let holder_of: HashMap<(&str, i64), uuid::Uuid> =
            holders.iter().map(|h| ((h.unique_key.as_str(), h.unique_window), h.id)).collect();
        // A command whose holder finished in between tries again.
        todo = Vec::new();
        for i in conflicted {
            let u = commands[i].unique.as_ref().expect("only keyed commands conflict");
            match holder_of.get(&(u.key.as_str(), u.window_micros())) {
                Some(&holder) => ids[i] = CommandId::from_uuid(holder),
                None => todo.push(i),
            }
        }
    }
    if !todo.is_empty() {
        return Err(TxError::from(orch::Error::Corrupt(format!(
            "unique key {:?} changed holders {UNIQUE_ROUNDS} times during one push",
            commands[todo[0]].unique.as_ref().map(|u| u.key.as_str())
        ))));
    }
    for (i, first) in stands_for.iter().enumerate() {
        if let Some(first) = first {
            ids[i] = ids[*first];
        }
    }
    dependencies::insert_edges(conn, tables, &inserted).await?;
    let entries: Vec<NewJournalEntry> = inserted.iter().map(|c| NewJournalEntry::enqueued(c)).collect();
    journal::append(conn, tables, &entries).await?;
    Ok(ids)
}

/// Inserts commands that depend on nothing, their `enqueued` journal entries and the
/// wake-up `NOTIFY` in one statement: outside a transaction, a push is one round trip
/// and one commit. Commands with dependencies need [`insert`] (their edges are rows of
/// another table, written after them).
pub(crate) async fn insert_and_notify(
    conn: &mut AsyncPgConnection,
    tables: &Tables,
    commands: &[InsertCommand],
) -> TxResult<()> {
    debug_assert!(commands.iter().all(|c| c.depends_on.is_empty()));
    let rows: Vec<&InsertCommand> = commands.iter().collect();
    let entries: Vec<NewJournalEntry> = commands.iter().map(NewJournalEntry::enqueued).collect();
    // Both inserts run exactly once whether or not the final SELECT reads them.
    let sql = format!(
        "WITH c AS ({}), j AS ({}) SELECT pg_notify(${}, '')",
        CommandArrays::sql(&tables.commands, 1),
        journal::JournalArrays::sql(&tables.journal, 1 + CommandArrays::PARAMS),
        1 + CommandArrays::PARAMS + journal::JournalArrays::PARAMS,
    );
    let query = CommandArrays::of(&rows)?.bind(diesel::sql_query(sql).into_boxed::<Pg>());
    journal::JournalArrays::of(&entries)
        .bind(query)
        .bind::<Text, _>(tables.channel.clone())
        .prepared()
        .execute(conn)
        .await?;
    Ok(())
}

/// Leases a batch of due commands under one fresh token and journals the claims, in one
/// statement: outside a transaction, a claim is one round trip and one commit.
pub(crate) async fn claim(
    conn: &mut AsyncPgConnection,
    tables: &Tables,
    p: &ClaimParams,
) -> TxResult<Vec<ClaimedCommand>> {
    let token = LeaseToken::generate();
    // `batch` picks the commands in claim order and locks them, skipping rows another
    // claim holds; EvalPlanQual re-checks `state = 'pending'` on rows changed meanwhile,
    // so a command is never leased twice. `entries` writes each claim's journal entry,
    // its message the lease's end as `Timestamp` prints it (`NewJournalEntry::claimed`).
    // The claim commits without waiting for its WAL flush (`synchronous_commit` off for
    // this statement's transaction only): a claim lost to a server crash leaves the
    // command pending, to run again, as a worker crash after the claim would; the
    // completion's flush covers the claim before it, so no result depends on it.
    let sql = format!(
        "WITH batch AS (SELECT id FROM {t} WHERE state = 'pending' AND target = $1 AND name = ANY($2) \
         AND scheduled_at <= $3 AND {paused} ORDER BY priority, scheduled_at, id LIMIT $4 FOR UPDATE SKIP LOCKED), \
         claimed AS (UPDATE {t} AS c SET state = 'running', attempts = c.attempts + 1, lease_token = $5, \
         worker = $6, started_at = $3, updated_at = $3, lease_expires_at = $3 + c.timeout_ms * 1000 + $7, \
         cancel_requested = FALSE FROM batch WHERE c.id = batch.id RETURNING {columns}), \
         entries AS (INSERT INTO {j} (command_id, at, kind, attempt, worker, message) \
         SELECT id, $3, '{kind}', attempts, $6, 'lease until ' || \
         to_char(TIMESTAMP 'epoch' + lease_expires_at * INTERVAL '1 microsecond', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') \
         FROM claimed ORDER BY priority, scheduled_at, id) \
         SELECT * FROM claimed WHERE (SELECT set_config('synchronous_commit', 'off', true)) IS NOT NULL",
        t = tables.commands,
        j = tables.journal,
        kind = JournalKind::Claimed.as_str(),
        columns = *C_COLUMNS,
        paused = crate::pauses::claim_filter(tables, "$1"),
    );
    let mut rows: Vec<CommandRow> = diesel::sql_query(sql)
        .bind::<Text, _>(&p.target)
        .bind::<Array<Text>, _>(&p.names)
        .bind::<BigInt, _>(p.now.as_micros())
        .bind::<BigInt, _>(i64_of(p.limit))
        .bind::<Uuid, _>(token.as_uuid())
        .bind::<Text, _>(&p.worker)
        .bind::<BigInt, _>(micros(p.lease_buffer))
        .prepared()
        .load(conn)
        .await?;
    rows.sort_by_key(|r| (r.priority, r.scheduled_at, r.id));
    let mut claimed = Vec::with_capacity(rows.len());
    let mut unreadable: Vec<Completion> = Vec::new();
    for row in rows {
        let id = CommandId::from_uuid(row.id);
        let record = match row.into_record() {
            Ok(record) => record,
            // A row a producer damaged by hand: failed alone, so it holds up no claim.
            Err(e) => {
                tracing::error!(%id, error = %e, "failing a stored row that does not read as a command");
                unreadable.push(unreadable_completion(Lease { id, token }, p.now, &p.worker, &e.to_string()));
                continue;
            }
        };
        let lease_expires_at = record.lease_expires_at.unwrap_or(p.now);
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
    if !unreadable.is_empty() {
        conn.transaction::<_, TxError, _>(async |conn| complete(conn, tables, &unreadable).await.map(drop))
            .await?;
    }
    Ok(claimed)
}

#[derive(QueryableByName)]
struct Attempts {
    #[diesel(sql_type = Integer)]
    attempts: i32,
}

#[derive(QueryableByName)]
struct IdAttempts {
    #[diesel(sql_type = Uuid)]
    id: uuid::Uuid,
    #[diesel(sql_type = Integer)]
    attempts: i32,
}

#[derive(QueryableByName)]
struct HeartbeatRow {
    #[diesel(sql_type = Uuid)]
    id: uuid::Uuid,
    #[diesel(sql_type = Uuid)]
    lease_token: uuid::Uuid,
    #[diesel(sql_type = Bool)]
    cancel_requested: bool,
}

/// The current attempt number of a command (0 when it does not exist), for journaling
/// a refused change.
async fn current_attempt(conn: &mut AsyncPgConnection, tables: &Tables, id: CommandId) -> TxResult<u32> {
    let rows: Vec<Attempts> =
        diesel::sql_query(format!("SELECT attempts FROM {} WHERE id = $1", tables.commands))
            .bind::<Uuid, _>(id.as_uuid())
            .prepared()
            .load(conn)
            .await?;
    Ok(rows.into_iter().next().map_or(0, |r| u32_of(i64::from(r.attempts))))
}

/// Renews every held lease with one statement; journals the lost ones.
pub(crate) async fn heartbeat(
    conn: &mut AsyncPgConnection,
    tables: &Tables,
    p: &HeartbeatParams,
) -> TxResult<Vec<LeaseStatus>> {
    let ids: Vec<uuid::Uuid> = p.leases.iter().map(|l| l.id.as_uuid()).collect();
    let tokens: Vec<uuid::Uuid> = p.leases.iter().map(|l| l.token.as_uuid()).collect();
    // Rows are locked in id order (as completions lock them), then renewed; the UPDATE
    // repeats the fence in case a row changed between the snapshot and the lock.
    let sql = format!(
        "WITH held AS (SELECT c.id, c.lease_token FROM {t} AS c \
           JOIN unnest($3::uuid[], $4::uuid[]) AS l(id, token) ON c.id = l.id AND c.lease_token = l.token \
           WHERE c.state = 'running' ORDER BY c.id FOR UPDATE OF c) \
         UPDATE {t} AS c SET lease_expires_at = $1 + c.timeout_ms * 1000 + $2, updated_at = $1 \
         FROM held WHERE c.id = held.id AND c.lease_token = held.lease_token AND c.state = 'running' \
         RETURNING c.id, c.lease_token, c.cancel_requested",
        t = tables.commands
    );
    let rows: Vec<HeartbeatRow> = diesel::sql_query(sql)
        .bind::<BigInt, _>(p.now.as_micros())
        .bind::<BigInt, _>(micros(p.lease_buffer))
        .bind::<Array<Uuid>, _>(&ids)
        .bind::<Array<Uuid>, _>(&tokens)
        .prepared()
        .load(conn)
        .await?;
    let held: HashMap<(uuid::Uuid, uuid::Uuid), bool> =
        rows.into_iter().map(|r| ((r.id, r.lease_token), r.cancel_requested)).collect();
    let statuses: Vec<LeaseStatus> = p
        .leases
        .iter()
        .map(|l| match held.get(&(l.id.as_uuid(), l.token.as_uuid())) {
            Some(&cancel_requested) => LeaseStatus::Held { cancel_requested },
            None => LeaseStatus::Lost,
        })
        .collect();
    let lost: Vec<Lease> =
        p.leases.iter().zip(&statuses).filter(|(_, s)| **s == LeaseStatus::Lost).map(|(l, _)| *l).collect();
    if !lost.is_empty() {
        let lost_ids: Vec<uuid::Uuid> = lost.iter().map(|l| l.id.as_uuid()).collect();
        let attempts: HashMap<uuid::Uuid, u32> =
            diesel::sql_query(format!("SELECT id, attempts FROM {} WHERE id = ANY($1)", tables.commands))
                .bind::<Array<Uuid>, _>(&lost_ids)
                .load::<IdAttempts>(conn)
                .await?
                .into_iter()
                .map(|r| (r.id, u32_of(i64::from(r.attempts))))
                .collect();
        let entries: Vec<NewJournalEntry> = lost
            .iter()
            .map(|l| {
                let attempt = attempts.get(&l.id.as_uuid()).copied().unwrap_or(0);
                NewJournalEntry::lease_lost(*l, p.now, attempt, None, "lease renewal")
            })
            .collect();
        journal::append(conn, tables, &entries).await?;
    }
    Ok(statuses)
}

#[derive(QueryableByName)]
struct Applied {
    #[diesel(sql_type = Integer)]
    attempts: i32,
    /// The state the completion left the command in.
    #[diesel(sql_type = Text)]
    state: String,
    /// Whether other commands depend on this one.
    #[diesel(sql_type = Bool)]
    has_dependents: bool,
}

/// The SET of a retry or a release: back to pending, due at `scheduled_at`, unless
/// cancellation was requested meanwhile: then cancelled at `now`, its follow-ups due and
/// `scheduled_at` unchanged. Decided in the fenced UPDATE itself (every expression reads
/// the row as it was), so no cancel request slips in between.
fn back_to_pending(scheduled_at: String, now: &str) -> String {
    format!(
        "state = CASE WHEN c.cancel_requested THEN 'cancelled' ELSE 'pending' END, \
         scheduled_at = CASE WHEN c.cancel_requested THEN c.scheduled_at ELSE {scheduled_at} END, \
         finished_at = CASE WHEN c.cancel_requested THEN {now} ELSE c.finished_at END, \
         follow_ups_due = c.follow_ups_due OR c.cancel_requested"
    )
}

/// Applies one completion's state change, fenced on its lease; `None` when the lease is
/// no longer held.
async fn apply(conn: &mut AsyncPgConnection, tables: &Tables, c: &Completion) -> TxResult<Option<Applied>> {
    let now = c.now.as_micros();
    let mut st = Statement::new(String::new());
    // Every branch ends the lease; which columns change depends on the outcome.
    let set = match &c.outcome {
        Outcome::Succeeded { output, .. } => format!(
            "state = 'succeeded', output = {}, finished_at = {}",
            st.param(Bind::Text(output.clone())),
            st.param(Bind::BigInt(now))
        ),
        Outcome::Retry { failure, retry_at } => format!(
            "{}, error_kind = {}, error = {}",
            back_to_pending(st.param(Bind::BigInt(retry_at.as_micros())), &st.param(Bind::BigInt(now))),
            st.param(Bind::Text(failure.kind.as_str().to_owned())),
            st.param(Bind::Text(failure.message.clone())),
        ),
        Outcome::Failed { failure, .. } => format!(
            "state = 'failed', error_kind = {}, error = {}, finished_at = {}",
            st.param(Bind::Text(failure.kind.as_str().to_owned())),
            st.param(Bind::Text(failure.message.clone())),
            st.param(Bind::BigInt(now))
        ),
        Outcome::Cancelled { .. } => {
            format!("state = 'cancelled', finished_at = {}", st.param(Bind::BigInt(now)))
        }
        Outcome::Released { at, .. } => {
            back_to_pending(st.param(Bind::BigInt(at.as_micros())), &st.param(Bind::BigInt(now)))
        }
    };
    st.sql = format!(
        "UPDATE {t} AS c SET {set}{given}, updated_at = {}, lease_token = NULL, lease_expires_at = NULL \
         WHERE c.id = {} AND c.lease_token = {} AND c.state = 'running' \
         RETURNING c.attempts, c.state, EXISTS (SELECT 1 FROM {d} AS d WHERE d.depends_on = c.id) AS has_dependents",
        st.param(Bind::BigInt(now)),
        st.param(Bind::Uuid(c.lease.id.as_uuid())),
        st.param(Bind::Uuid(c.lease.token.as_uuid())),
        t = tables.commands,
        d = tables.dependencies,
        given = attempt_given_back(&c.outcome),
    );
    let rows: Vec<Applied> = st.query().prepared().load(conn).await?;
    Ok(rows.into_iter().next())
}

#[derive(QueryableByName)]
struct AppliedId {
    #[diesel(sql_type = Uuid)]
    id: uuid::Uuid,
    #[diesel(embed)]
    applied: Applied,
}

/// Applies many successes in one statement instead of one per command, each fenced on
/// its own lease; the caller has locked their rows. Returns what was applied, by id; a
/// command missing from the result had lost its lease.
async fn apply_successes(
    conn: &mut AsyncPgConnection,
    tables: &Tables,
    successes: &[&Completion],
) -> TxResult<HashMap<uuid::Uuid, Applied>> {
    let mut ids = Vec::with_capacity(successes.len());
    let mut tokens = Vec::with_capacity(successes.len());
    let mut outputs = Vec::with_capacity(successes.len());
    let mut nows = Vec::with_capacity(successes.len());
    for c in successes {
        let Outcome::Succeeded { output, .. } = &c.outcome else { continue };
        ids.push(c.lease.id.as_uuid());
        tokens.push(c.lease.token.as_uuid());
        outputs.push(output.clone());
        nows.push(c.now.as_micros());
    }
    let rows: Vec<AppliedId> = diesel::sql_query(format!(
        "UPDATE {t} AS c SET state = 'succeeded', output = v.output, finished_at = v.now, updated_at = v.now, \
         lease_token = NULL, lease_expires_at = NULL \
         FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::bigint[]) AS v(id, token, output, now) \
         WHERE c.id = v.id AND c.lease_token = v.token AND c.state = 'running' \
         RETURNING c.id, c.attempts, c.state, EXISTS (SELECT 1 FROM {d} AS d WHERE d.depends_on = c.id) AS has_dependents",
        t = tables.commands,
        d = tables.dependencies,
    ))
    .bind::<Array<Uuid>, _>(&ids)
    .bind::<Array<Uuid>, _>(&tokens)
    .bind::<Array<Text>, _>(&outputs)
    .bind::<Array<BigInt>, _>(&nows)
    .prepared().load(conn)
    .await?;
    Ok(rows.into_iter().map(|r| (r.id, r.applied)).collect())
}

/// Applies a batch of completions, each fenced on its lease, with their follow-ups, the
/// changes to their dependents and journal entries. Also says whether any command was
/// made due (a follow-up inserted or a dependent unblocked).
pub(crate) async fn complete(
    conn: &mut AsyncPgConnection,
    tables: &Tables,
    completions: &[Completion],
) -> TxResult<(Vec<CompletionStatus>, bool)> {
    // In id order, as heartbeats lock rows, so the two never deadlock. The sort is
    // stable: two completions of one command keep their order.
    let mut order: Vec<usize> = (0..completions.len()).collect();
    order.sort_by_key(|&i| completions[i].lease.id);
    let mut statuses = vec![CompletionStatus::LeaseLost; completions.len()];
    let mut entries = Vec::new();
    let mut follow_ups: Vec<&InsertCommand> = Vec::new();
    // Those with dependents, in id order: the ones that succeeded, the ones that ended.
    let mut succeeded = Vec::new();
    let mut ended = Vec::new();
    // Successes of commands that appear once in the batch are applied together; the
    // rest one by one, in id order.
    let together = distinct_successes(completions);
    let successes: Vec<&Completion> = together.iter().map(|&i| &completions[i]).collect();
    let mut in_batch = vec![false; completions.len()];
    together.iter().for_each(|&i| in_batch[i] = true);
    let mut batched = if together.is_empty() {
        HashMap::new()
    } else {
        // Every row of the batch is locked first, in id order (as heartbeats lock them,
        // so the two never deadlock), before the successes are applied out of that order.
        let mut all: Vec<uuid::Uuid> = completions.iter().map(|c| c.lease.id.as_uuid()).collect();
        all.sort_unstable();
        all.dedup();
        diesel::sql_query(format!(
            "SELECT id FROM {} WHERE id = ANY($1) ORDER BY id FOR UPDATE",
            tables.commands
        ))
        .bind::<Array<Uuid>, _>(&all)
        .prepared()
        .execute(conn)
        .await?;
        apply_successes(conn, tables, &successes).await?
    };
    for i in order {
        let c = &completions[i];
        let applied =
            if in_batch[i] { batched.remove(&c.lease.id.as_uuid()) } else { apply(conn, tables, c).await? };
        match applied {
            Some(applied) => {
                let attempt = u32_of(i64::from(applied.attempts));
                let state = State::parse(&applied.state)?;
                if applied.has_dependents {
                    match (&c.outcome, state) {
                        (Outcome::Succeeded { .. }, _) => succeeded.push((c.lease.id, c.now)),
                        (Outcome::Failed { .. }, _) => ended.push((c.lease.id, State::Failed, c.now)),
                        (_, State::Cancelled) => ended.push((c.lease.id, State::Cancelled, c.now)),
                        _ => {}
                    }
                }
                // A retry or release of a command whose cancellation was requested ended
                // it cancelled.
                let cancelled_instead = state == State::Cancelled
                    && matches!(c.outcome, Outcome::Retry { .. } | Outcome::Released { .. });
                entries.extend(if cancelled_instead {
                    NewJournalEntry::completion_cancelled_instead(c, attempt)
                } else {
                    NewJournalEntry::completion(c, attempt)
                });
                let more = outcome_follow_ups(&c.outcome);
                entries.extend(more.iter().map(NewJournalEntry::enqueued));
                follow_ups.extend(more);
                statuses[i] = CompletionStatus::Applied;
            }
            None => {
                let attempt = current_attempt(conn, tables, c.lease.id).await?;
                entries.push(NewJournalEntry::lease_lost(
                    c.lease,
                    c.now,
                    attempt,
                    Some(c.worker.clone()),
                    "recording the outcome",
                ));
            }
        }
    }
    // After every completion's own row: dependents are locked last, in one statement.
    let settled = dependencies::settle(conn, tables, &succeeded, &ended).await?;
    entries.extend(settled.entries);
    if !follow_ups.is_empty() {
        insert_rows(conn, tables, &follow_ups).await?;
    }
    let pushed = !follow_ups.is_empty() || settled.unblocked > 0;
    if pushed {
        crate::notify(conn, tables).await?;
    }
    journal::append(conn, tables, &entries).await?;
    Ok((statuses, pushed))
}

#[derive(QueryableByName)]
struct StateRow {
    #[diesel(sql_type = Text)]
    state: String,
    #[diesel(sql_type = Integer)]
    attempts: i32,
    #[diesel(sql_type = Bool)]
    has_dependents: bool,
}

/// What [`cancel`] knows of the commands depending on the one it cancels.
enum Dependents {
    /// There are none.
    None,
    /// There are some, not locked yet.
    Unlocked,
    /// Locked together with the command (which was blocked): it and its blocked
    /// dependents, transitively.
    Locked(Vec<dependencies::LockedRow>),
}

/// Cancels a blocked or pending command, or requests cancellation of a running one. A
/// command cancelled here takes its blocked dependents with it, transitively.
pub(crate) async fn cancel(
    conn: &mut AsyncPgConnection,
    tables: &Tables,
    id: CommandId,
    now: Timestamp,
) -> TxResult<CancelStatus> {
    // Locked, so the state read is the state changed. A command that is not blocked is
    // locked on its own (as claims and completions lock it), its dependents after it.
    let rows: Vec<StateRow> = diesel::sql_query(format!(
        "SELECT c.state, c.attempts, EXISTS (SELECT 1 FROM {d} AS d WHERE d.depends_on = c.id) AS has_dependents \
         FROM {t} AS c WHERE c.id = $1 AND c.state <> 'blocked' FOR UPDATE OF c",
        t = tables.commands,
        d = tables.dependencies,
    ))
    .bind::<Uuid, _>(id.as_uuid())
    .prepared().load(conn)
    .await?;
    // A blocked one (or a missing one) is locked together with its blocked dependents,
    // in the one id-ordered statement a cascade through it would use, so the two
    // cannot deadlock.
    let (state, attempts, dependents) = match rows.into_iter().next() {
        Some(row) => {
            let dependents = if row.has_dependents { Dependents::Unlocked } else { Dependents::None };
            (State::parse(&row.state)?, row.attempts, dependents)
        }
        None => {
            let locked = dependencies::lock_with_dependents(conn, tables, id).await?;
            let Some(own) = locked.iter().find(|r| r.id == id.as_uuid()) else {
                return Ok(CancelStatus::NotFound);
            };
            (State::parse(&own.state)?, own.attempts, Dependents::Locked(locked))
        }
    };
    let (set, status) = match state {
        State::Blocked | State::Pending => (
            "state = 'cancelled', finished_at = $1, updated_at = $1, follow_ups_due = TRUE",
            CancelStatus::Cancelled,
        ),
        State::Running => ("cancel_requested = TRUE, updated_at = $1", CancelStatus::Requested),
        finished => return Ok(CancelStatus::AlreadyFinished(finished)),
    };
    diesel::sql_query(format!("UPDATE {} SET {set} WHERE id = $2", tables.commands))
        .bind::<BigInt, _>(now.as_micros())
        .bind::<Uuid, _>(id.as_uuid())
        .prepared()
        .execute(conn)
        .await?;
    let attempt = u32_of(i64::from(attempts));
    let mut entries = vec![NewJournalEntry::cancel(id, now, attempt, state)];
    if status == CancelStatus::Cancelled {
        let origin = [(id, State::Cancelled, now)];
        let settled = match dependents {
            Dependents::None => dependencies::Settled::default(),
            Dependents::Unlocked => dependencies::settle(conn, tables, &[], &origin).await?,
            Dependents::Locked(locked) => {
                dependencies::cascade(conn, tables, &locked, &origin, Some(id)).await?
            }
        };
        entries.extend(settled.entries);
    }
    journal::append(conn, tables, &entries).await?;
    Ok(status)
}

#[derive(QueryableByName)]
struct RescuedRow {
    #[diesel(sql_type = Uuid)]
    id: uuid::Uuid,
    #[diesel(sql_type = Text)]
    state: String,
    #[diesel(sql_type = Integer)]
    attempts: i32,
    #[diesel(sql_type = Nullable<Text>)]
    worker: Option<String>,
    #[diesel(sql_type = Bool)]
    has_dependents: bool,
}

/// Takes back running commands whose lease expired before `now`.
pub(crate) async fn rescue(
    conn: &mut AsyncPgConnection,
    tables: &Tables,
    now: Timestamp,
    limit: usize,
) -> TxResult<Vec<Rescued>> {
    // Every SET expression sees the row as it was before the UPDATE, so the CASEs all
    // read the old state and attempts. The error text is `lease_expired_message`.
    let sql = format!(
        "WITH batch AS (SELECT id FROM {t} WHERE state = 'running' AND lease_expires_at < $1 \
           ORDER BY lease_expires_at LIMIT $2 FOR UPDATE SKIP LOCKED) \
         UPDATE {t} AS c SET \
           state = CASE WHEN c.cancel_requested THEN 'cancelled' WHEN c.attempts < c.max_attempts THEN 'pending' ELSE 'failed' END, \
           scheduled_at = CASE WHEN NOT c.cancel_requested AND c.attempts < c.max_attempts THEN $1 ELSE c.scheduled_at END, \
           finished_at = CASE WHEN NOT c.cancel_requested AND c.attempts < c.max_attempts THEN NULL ELSE $1 END, \
           follow_ups_due = c.cancel_requested OR c.attempts >= c.max_attempts, \
           error_kind = CASE WHEN c.cancel_requested THEN c.error_kind ELSE $3 END, \
           error = CASE WHEN c.cancel_requested THEN c.error ELSE 'lease of worker ' || COALESCE(c.worker, '?') || ' expired' END, \
           lease_token = NULL, lease_expires_at = NULL, updated_at = $1 \
         FROM batch WHERE c.id = batch.id AND c.state = 'running' AND c.lease_expires_at < $1 \
         RETURNING c.id, c.state, c.attempts, c.worker, \
           EXISTS (SELECT 1 FROM {d} AS d WHERE d.depends_on = c.id) AS has_dependents",
        t = tables.commands,
        d = tables.dependencies,
    );
    let rows: Vec<RescuedRow> = diesel::sql_query(sql)
        .bind::<BigInt, _>(now.as_micros())
        .bind::<BigInt, _>(i64_of(limit))
        .bind::<Text, _>(FailureKind::LeaseExpired.as_str())
        .prepared()
        .load(conn)
        .await?;
    let mut rescued = Vec::with_capacity(rows.len());
    let mut entries = Vec::with_capacity(rows.len());
    let mut ended = Vec::new();
    for row in rows {
        let id = CommandId::from_uuid(row.id);
        let state = State::parse(&row.state)?;
        if row.has_dependents && matches!(state, State::Failed | State::Cancelled) {
            ended.push((id, state, now));
        }
        entries.push(NewJournalEntry::rescued(id, now, u32_of(i64::from(row.attempts)), row.worker, state));
        rescued.push(Rescued { id, state });
    }
    ended.sort_by_key(|(id, _, _)| *id);
    entries.extend(dependencies::settle(conn, tables, &[], &ended).await?.entries);
    journal::append(conn, tables, &entries).await?;
    Ok(rescued)
}

/// Finished commands with these names whose follow-ups are still due, by id.
pub(crate) async fn follow_ups_due(
    conn: &mut AsyncPgConnection,
    tables: &Tables,
    names: &[String],
    limit: usize,
) -> TxResult<Vec<CommandRecord>> {
    let rows: Vec<CommandRow> = diesel::sql_query(format!(
        "SELECT {} FROM {} WHERE follow_ups_due AND name = ANY($1) ORDER BY id LIMIT $2",
        *COLUMNS, tables.commands
    ))
    .bind::<Array<Text>, _>(names)
    .bind::<BigInt, _>(i64_of(limit))
    .prepared()
    .load(conn)
    .await?;
    records(rows)
}

/// Pushes the follow-ups of a command whose `follow_ups_due` is set, and clears it.
pub(crate) async fn resolve_follow_ups(
    conn: &mut AsyncPgConnection,
    tables: &Tables,
    id: CommandId,
    follow_ups: &[InsertCommand],
    now: Timestamp,
) -> TxResult<bool> {
    let rows: Vec<Attempts> = diesel::sql_query(format!(
        "UPDATE {} SET follow_ups_due = FALSE, updated_at = $1 WHERE id = $2 AND follow_ups_due RETURNING attempts",
        tables.commands
    ))
    .bind::<BigInt, _>(now.as_micros())
    .bind::<Uuid, _>(id.as_uuid())
    .prepared().load(conn)
    .await?;
    let Some(row) = rows.into_iter().next() else {
        return Ok(false);
    };
    let attempt = u32_of(i64::from(row.attempts));
    insert(conn, tables, follow_ups).await?;
    journal::append(conn, tables, &[NewJournalEntry::follow_ups_enqueued(id, now, attempt, follow_ups)])
        .await?;
    if !follow_ups.is_empty() {
        crate::notify(conn, tables).await?;
    }
    Ok(true)
}

/// One command.
pub(crate) async fn get(
    conn: &mut AsyncPgConnection,
    tables: &Tables,
    id: CommandId,
) -> TxResult<Option<CommandRecord>> {
    let rows: Vec<CommandRow> =
        diesel::sql_query(format!("SELECT {} FROM {} WHERE id = $1", *COLUMNS, tables.commands))
            .bind::<Uuid, _>(id.as_uuid())
            .prepared()
            .load(conn)
            .await?;
    Ok(rows.into_iter().next().map(CommandRow::into_record).transpose()?)
}

/// Commands matching the filters in the chosen order, keyset-paginated: the shared
/// statement.
pub(crate) async fn list(
    conn: &mut AsyncPgConnection,
    tables: &Tables,
    p: &ListParams,
) -> TxResult<Vec<CommandRecord>> {
    let statement = sql::list(Placeholders::Numbered, &COLUMNS, &tables.commands, p);
    let rows: Vec<CommandRow> = bind(statement).load(conn).await?;
    records(rows)
}

/// A shared statement with its values bound as PostgreSQL stores them (ids as UUID).
pub(crate) fn bind(statement: SqlStatement) -> BoxedSqlQuery<'static, Pg, SqlQuery> {
    let mut query = diesel::sql_query(statement.sql).into_boxed::<Pg>();
    for value in statement.binds {
        query = match value {
            SqlValue::Text(s) => query.bind::<Text, _>(s),
            SqlValue::Int(i) => query.bind::<BigInt, _>(i),
            SqlValue::Id(id) => query.bind::<Uuid, _>(id.as_uuid()),
            SqlValue::Workflow(id) => query.bind::<Uuid, _>(id.as_uuid()),
        };
    }
    query
}

/// A row of [`sql::workflows`], in [`sql::WORKFLOW_COLUMNS`]' order.
#[derive(QueryableByName)]
struct WorkflowSqlRow {
    #[diesel(sql_type = Uuid)]
    workflow_id: uuid::Uuid,
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

/// Workflows newest first, with their step counts by state.
pub(crate) async fn workflows(
    conn: &mut AsyncPgConnection,
    tables: &Tables,
    q: &WorkflowQuery,
) -> TxResult<Vec<WorkflowSummary>> {
    let rows: Vec<WorkflowSqlRow> =
        bind(sql::workflows(Placeholders::Numbered, &tables.commands, q)).prepared().load(conn).await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            let counts = [r.blocked, r.pending, r.running, r.succeeded, r.failed, r.cancelled];
            Ok(sql::workflow_summary(
                WorkflowId::from_uuid(r.workflow_id),
                counts,
                r.created_at,
                r.updated_at,
            ))
        })
        .collect::<orch::Result<_>>()?)
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

/// Command counts by name, target and state.
pub(crate) async fn counts(conn: &mut AsyncPgConnection, tables: &Tables) -> TxResult<Vec<CountRow>> {
    let rows: Vec<CountSqlRow> = diesel::sql_query(format!(
        "SELECT name, target, state, COUNT(*) AS count FROM {} GROUP BY state, name, target \
         ORDER BY name, target, state",
        tables.commands
    ))
    .prepared()
    .load(conn)
    .await?;
    rows.into_iter()
        .map(|r| {
            Ok(CountRow {
                name: r.name,
                target: r.target,
                state: State::parse(&r.state)?,
                count: u64::try_from(r.count).unwrap_or(0),
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

/// Command counts per (name, target), pending split into due and scheduled by `now`,
/// with the oldest due time; one grouped query.
pub(crate) async fn queue_stats(
    conn: &mut AsyncPgConnection,
    tables: &Tables,
    now: Timestamp,
) -> TxResult<Vec<QueueStats>> {
    let rows: Vec<StatsSqlRow> =
        bind(sql::queue_stats(Placeholders::Numbered, &tables.commands, now)).prepared().load(conn).await?;
    let mut stats = Vec::new();
    for r in rows {
        add_queue_count(&mut stats, r.name, r.target, State::parse(&r.state)?, r.n, r.due, r.oldest);
    }
    Ok(finish_queue_stats(stats))
}

#[derive(QueryableByName)]
struct RetryRow {
    #[diesel(sql_type = Text)]
    state: String,
    #[diesel(sql_type = Integer)]
    attempts: i32,
}

/// Makes a failed or cancelled command pending again, due at `now`, with one more
/// attempt; its last error is kept and its unpushed follow-ups dropped. The caller
/// sends the wake-up.
pub(crate) async fn retry(
    conn: &mut AsyncPgConnection,
    tables: &Tables,
    id: CommandId,
    now: Timestamp,
) -> TxResult<RetryStatus> {
    // Locked on its own, as claims, completions and cancels lock a command that is
    // not blocked; a failed or cancelled command has no blocked dependents left.
    let rows: Vec<RetryRow> = diesel::sql_query(format!(
        "SELECT state, attempts FROM {} WHERE id = $1 FOR UPDATE",
        tables.commands
    ))
    .bind::<Uuid, _>(id.as_uuid())
    .prepared()
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
    // The dependencies are read under a share lock: one completing at this moment is
    // waited for and seen committed, so its unblocking cannot miss this command.
    let unmet: Vec<UnmetRow> = diesel::sql_query(format!(
        "SELECT p.id::text AS id FROM {d} d JOIN {c} p ON p.id = d.depends_on \
         WHERE d.command_id = $1 AND p.state <> 'succeeded' FOR SHARE OF p",
        d = tables.dependencies,
        c = tables.commands
    ))
    .bind::<Uuid, _>(id.as_uuid())
    .prepared()
    .load(conn)
    .await?;
    let next = if unmet.is_empty() { "pending" } else { "blocked" };
    diesel::sql_query(format!(
        "UPDATE {} SET state = $3, scheduled_at = $1, max_attempts = attempts + 1, finished_at = NULL, \
         follow_ups_due = FALSE, cancel_requested = FALSE, updated_at = $1, lease_token = NULL, \
         lease_expires_at = NULL WHERE id = $2",
        tables.commands
    ))
    .bind::<BigInt, _>(now.as_micros())
    .bind::<Uuid, _>(id.as_uuid())
    .bind::<Text, _>(next)
    .prepared()
    .execute(conn)
    .await?;
    let entry = NewJournalEntry::retry_requested(id, now, u32_of(i64::from(row.attempts)), state);
    journal::append(conn, tables, &[entry]).await?;
    Ok(RetryStatus::Retried)
}

#[derive(QueryableByName)]
struct UnmetRow {
    #[diesel(sql_type = Text)]
    #[allow(dead_code, reason = "only the number of rows matters")]
    id: String,
}
