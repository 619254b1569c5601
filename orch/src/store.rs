//! The storage contract every backend implements.
//!
//! A [`Store`] holds commands and their journal and performs the lifecycle's state
//! changes atomically. It makes no scheduling decisions of its own: every operation
//! is given the current time by its caller (from the injected [`Clock`](crate::Clock)),
//! and every change to a running command is fenced by the lease token of the claim
//! that started it.

pub mod backend;
pub mod sql;

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use uuid::Uuid;

use crate::clock::Timestamp;
use crate::error::{Error, Failure, Result};
use crate::retry::RetryPolicy;

/// The id of a command: a UUID whose leading bits are its creation time (version 7),
/// so ids sort roughly by creation.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CommandId(Uuid);

impl CommandId {
    /// A new id for a command created at `now`. Ids generated in one process increase
    /// strictly, even within one millisecond (a 12-bit counter follows the time), so
    /// commands pushed one after another sort in push order.
    pub fn generate(now: Timestamp) -> Self {
        let random = Uuid::new_v4();
        let (millis, counter) = next_millis_and_counter(u64::try_from(now.as_millis()).unwrap_or(0));
        let mut bytes = [0u8; 10];
        bytes.copy_from_slice(&random.as_bytes()[6..16]);
        bytes[..2].copy_from_slice(&counter.to_be_bytes());
        CommandId(uuid::Builder::from_unix_timestamp_millis(millis, &bytes).into_uuid())
    }

    /// The id as a UUID.
    pub fn as_uuid(&self) -> Uuid {
        self.0
    }

    /// An id from a UUID.
    pub fn from_uuid(uuid: Uuid) -> Self {
        CommandId(uuid)
    }
}

/// The time and counter of the next id: the counter counts up within a millisecond
/// (and the millisecond moves on when it runs out, or when the clock went backward), so
/// ids from this process never repeat or go down.
fn next_millis_and_counter(millis: u64) -> (u64, u16) {
    static LAST: std::sync::Mutex<(u64, u16)> = std::sync::Mutex::new((0, 0));
    let mut last = LAST.lock().unwrap_or_else(|e| e.into_inner());
    let (last_millis, last_counter) = *last;
    let next = if millis > last_millis {
        (millis, 0)
    } else if last_counter < 0x0fff {
        (last_millis, last_counter + 1)
    } else {
        (last_millis + 1, 0)
    };
    *last = next;
    next
}

impl fmt::Display for CommandId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0.hyphenated(), f)
    }
}

impl fmt::Debug for CommandId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for CommandId {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Uuid::parse_str(s)
            .map(CommandId)
            .map_err(|e| Error::Corrupt(format!("invalid command id {s:?}: {e}")))
    }
}

/// A lease token: fresh for every claim, required for every change to a running command.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct LeaseToken(Uuid);

impl LeaseToken {
    /// A fresh random token.
    pub fn generate() -> Self {
        LeaseToken(Uuid::new_v4())
    }

    /// The token as a UUID.
    pub fn as_uuid(&self) -> Uuid {
        self.0
    }
}

impl fmt::Display for LeaseToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0.hyphenated(), f)
    }
}

impl fmt::Debug for LeaseToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for LeaseToken {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Uuid::parse_str(s)
            .map(LeaseToken)
            .map_err(|e| Error::Corrupt(format!("invalid lease token {s:?}: {e}")))
    }
}

/// The id of a workflow: a UUID whose leading bits are its start time (version 7).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct WorkflowId(Uuid);

impl WorkflowId {
    /// A new id for a workflow started at `now`.
    pub fn generate(now: Timestamp) -> Self {
        WorkflowId(CommandId::generate(now).as_uuid())
    }

    /// Wraps a UUID read from storage.
    pub fn from_uuid(uuid: Uuid) -> Self {
        WorkflowId(uuid)
    }

    /// The id as a UUID.
    pub fn as_uuid(&self) -> Uuid {
        self.0
    }
}

impl fmt::Display for WorkflowId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0.hyphenated(), f)
    }
}

impl fmt::Debug for WorkflowId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for WorkflowId {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Uuid::parse_str(s)
            .map(WorkflowId)
            .map_err(|e| Error::Corrupt(format!("invalid workflow id {s:?}: {e}")))
    }
}

/// Where a command stands in a workflow: which workflow, and which step of it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StepOf {
    /// The workflow.
    pub workflow_id: WorkflowId,
    /// The step's name, unique within its workflow.
    pub step: String,
}

/// A validated table prefix: 1 to 63 ASCII letters, digits or `_`, starting with a
/// letter or `_`. Backends put it in front of every table and index name, so it is
/// checked before any SQL is built.
///
/// ```
/// use orch::TablePrefix;
/// assert!(TablePrefix::new("orch_").is_ok());
/// assert!(TablePrefix::new("x; DROP TABLE y").is_err());
/// assert!(TablePrefix::new("1abc").is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TablePrefix(String);

impl TablePrefix {
    /// The longest prefix accepted, so that prefixed names stay within every
    /// database's identifier limit (64 on MySQL, 63 on PostgreSQL) with room for
    /// index names.
    pub const MAX_LEN: usize = 32;

    /// The default prefix, `orch_`.
    pub fn default_prefix() -> Self {
        TablePrefix("orch_".to_owned())
    }

    /// Validates `prefix`.
    pub fn new(prefix: &str) -> Result<Self> {
        let reject = |reason| Err(Error::InvalidPrefix { prefix: prefix.to_owned(), reason });
        let mut chars = prefix.chars();
        match chars.next() {
            None => return reject("it is empty"),
            Some(c) if !(c.is_ascii_alphabetic() || c == '_') => {
                return reject("it must start with an ASCII letter or `_`");
            }
            Some(_) => {}
        }
        if prefix.len() > Self::MAX_LEN {
            return reject("it is too long");
        }
        if !chars.all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return reject("it contains a character other than an ASCII letter, digit or `_`");
        }
        Ok(TablePrefix(prefix.to_owned()))
    }

    /// The prefix text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for TablePrefix {
    fn default() -> Self {
        Self::default_prefix()
    }
}

impl fmt::Display for TablePrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The lifecycle state of a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Waiting on other commands (workflow dependencies).
    Blocked,
    /// Waiting to be claimed, due at its `scheduled_at`.
    Pending,
    /// Leased by one worker.
    Running,
    /// Finished with an output.
    Succeeded,
    /// Finished without success, for good.
    Failed,
    /// Cancelled before it finished.
    Cancelled,
}

impl State {
    /// Every state, in lifecycle order.
    pub const ALL: [State; 6] =
        [State::Blocked, State::Pending, State::Running, State::Succeeded, State::Failed, State::Cancelled];

    /// The name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Blocked => "blocked",
            State::Pending => "pending",
            State::Running => "running",
            State::Succeeded => "succeeded",
            State::Failed => "failed",
            State::Cancelled => "cancelled",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "blocked" => State::Blocked,
            "pending" => State::Pending,
            "running" => State::Running,
            "succeeded" => State::Succeeded,
            "failed" => State::Failed,
            "cancelled" => State::Cancelled,
            other => return Err(Error::Corrupt(format!("unknown command state {other:?}"))),
        })
    }

    /// Whether the state is final.
    pub fn is_terminal(self) -> bool {
        matches!(self, State::Succeeded | State::Failed | State::Cancelled)
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A command row to insert, with every option resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct InsertCommand {
    /// The new command's id.
    pub id: CommandId,
    /// The command name.
    pub name: String,
    /// The instance key of the workers that may run it.
    pub target: String,
    /// The input as JSON text.
    pub input: String,
    /// Retries + 1.
    pub max_attempts: u32,
    /// The timeout of each attempt.
    pub timeout: Duration,
    /// The backoff between attempts.
    pub retry_policy: RetryPolicy,
    /// When it becomes due.
    pub scheduled_at: Timestamp,
    /// When it was created.
    pub created_at: Timestamp,
    /// The command whose outcome pushed this one, for follow-ups.
    pub parent_id: Option<CommandId>,
    /// Shared by a command and all its follow-ups.
    pub correlation_id: String,
    /// The workflow step this command is, if any.
    pub workflow: Option<StepOf>,
    /// Commands (of the same insert) that must all succeed before this one may run.
    /// A command with dependencies is inserted `blocked`.
    pub depends_on: Vec<CommandId>,
    /// The claim priority: the lowest value first, then due time, then id.
    pub priority: i16,
    /// The deduplication key, if the command was pushed with one.
    pub unique: Option<UniqueKey>,
}

/// The most bytes a [`UniqueKey`] may have (every backend indexes it whole).
pub const MAX_UNIQUE_KEY_BYTES: usize = 200;

/// A command's deduplication key: while a command holding it is unfinished (or, with
/// `until`, until the end of the fixed period the push fell in), another push with the
/// same key inserts nothing and reports the holder's id. Every backend enforces it with
/// a unique index, so concurrent pushes cannot both insert.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UniqueKey {
    /// The key, 1 to [`MAX_UNIQUE_KEY_BYTES`] bytes.
    pub key: String,
    /// `None`: unique while a command holding the key is blocked, pending or running.
    /// `Some(end)`: unique among the commands pushed in the period ending at `end`,
    /// finished or not (periods are aligned to the Unix epoch).
    pub until: Option<Timestamp>,
}

impl UniqueKey {
    /// The period end as stored: 0 when the key holds while unfinished.
    pub fn window_micros(&self) -> i64 {
        self.until.map_or(0, Timestamp::as_micros)
    }

    /// The key as stored (`window` 0: unique while unfinished).
    pub fn from_stored(key: Option<String>, window: i64) -> Option<UniqueKey> {
        key.map(|key| UniqueKey { key, until: (window != 0).then_some(Timestamp::from_micros(window)) })
    }
}

/// What a push did with one command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Pushed {
    /// The id of the stored command: the new one, or for a duplicate the command
    /// holding the unique key.
    pub id: CommandId,
    /// Whether nothing was inserted because an unfinished command (or one of the same
    /// period) holds the same unique key.
    pub duplicate: bool,
}

/// A recurring schedule as stored: its definition (see [`crate::schedule::Schedule`])
/// and where it stands.
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduleRecord {
    /// The schedule's unique name.
    pub name: String,
    /// The cadence as stored: `cron <expression>` or `every <microseconds>`.
    pub cadence: String,
    /// The IANA time zone cron slots are read in (`UTC` for intervals).
    pub zone: String,
    /// The command pushed at each slot, as JSON.
    pub command: String,
    /// What happens to slots missed while no worker ran: `skip` or `once`.
    pub on_missed: String,
    /// How late a slot may fire before it counts as missed.
    pub missed_after: Duration,
    /// The next slot to fire.
    pub next_fire: Timestamp,
    /// The latest slot fired, if any.
    pub last_fire: Option<Timestamp>,
    /// The command the latest fire pushed.
    pub last_command: Option<CommandId>,
    /// How many slots were missed (skipped, or folded into one catch-up fire) in all.
    pub missed: u64,
    /// When the schedule was first saved.
    pub created_at: Timestamp,
    /// When it last changed (saved or stepped).
    pub updated_at: Timestamp,
    /// Grows by one with every save and every step, so a step planned from an older
    /// read changes nothing.
    pub version: i64,
}

impl ScheduleRecord {
    /// Whether its next slot is overdue at `now` by more than `missed_after`: no worker
    /// has fired it (none is running, or all are behind).
    pub fn is_late(&self, now: Timestamp) -> bool {
        now.saturating_duration_since(self.next_fire) > self.missed_after
    }
}

/// What [`Store::fire_schedule`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FireStatus {
    /// The slot fired; its command has this id.
    Fired(CommandId),
    /// The schedule moved on without firing (skipped slots).
    Skipped,
    /// Nothing changed: another worker stepped the schedule first.
    Lost,
}

/// One step of a schedule, applied by [`Store::fire_schedule`] only if the schedule
/// still stands where its caller read it.
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduleFire {
    /// The schedule.
    pub name: String,
    /// The next slot the caller read: the step applies only while it is unchanged.
    pub expected_next: Timestamp,
    /// The version the caller read: the step applies only while it is unchanged (the
    /// schedule was not saved again, nor stepped by another worker).
    pub expected_version: i64,
    /// The slot fired and the command it pushes (inserted in the same transaction);
    /// `None` when slots are only skipped. A slot fires only if it is later than the
    /// latest fired one, so no slot ever fires twice.
    pub fire: Option<(Timestamp, InsertCommand)>,
    /// The next slot after this step.
    pub next_fire: Timestamp,
    /// Slots this step counts as missed.
    pub missed: u64,
    /// The time of the step.
    pub now: Timestamp,
}

/// A stored command, as read back.
#[derive(Debug, Clone, PartialEq)]
pub struct CommandRecord {
    /// The id.
    pub id: CommandId,
    /// The command name.
    pub name: String,
    /// The instance key of the workers that may run it.
    pub target: String,
    /// The lifecycle state.
    pub state: State,
    /// The input as JSON text.
    pub input: String,
    /// The output as JSON text, once succeeded.
    pub output: Option<String>,
    /// The last failure, if any attempt failed.
    pub error: Option<Failure>,
    /// How many times it has been claimed.
    pub attempts: u32,
    /// Retries + 1.
    pub max_attempts: u32,
    /// The timeout of each attempt.
    pub timeout: Duration,
    /// The backoff between attempts.
    pub retry_policy: RetryPolicy,
    /// When it is (or was) due.
    pub scheduled_at: Timestamp,
    /// When it was created.
    pub created_at: Timestamp,
    /// When it last changed.
    pub updated_at: Timestamp,
    /// When the latest attempt started.
    pub started_at: Option<Timestamp>,
    /// When it reached a terminal state.
    pub finished_at: Option<Timestamp>,
    /// The current lease token, while running.
    pub lease_token: Option<LeaseToken>,
    /// When the current lease expires, while running.
    pub lease_expires_at: Option<Timestamp>,
    /// The worker holding (or that last held) the lease.
    pub worker: Option<String>,
    /// Whether cancellation of the running attempt was requested.
    pub cancel_requested: bool,
    /// Whether the failure or cancel follow-ups of a command finished outside a
    /// worker (cancelled while pending, failed by a rescue) are still to be pushed.
    pub follow_ups_due: bool,
    /// The command whose outcome pushed this one.
    pub parent_id: Option<CommandId>,
    /// Shared by a command and all its follow-ups.
    pub correlation_id: String,
    /// The workflow step this command is, if any.
    pub workflow: Option<StepOf>,
    /// The claim priority: the lowest value first, then due time, then id.
    pub priority: i16,
    /// The deduplication key it was pushed with, if any.
    pub unique: Option<UniqueKey>,
}

/// The handle on one claimed command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Lease {
    /// The command.
    pub id: CommandId,
    /// The token of the claim.
    pub token: LeaseToken,
}

/// What [`Store::claim`] needs.
#[derive(Debug, Clone)]
pub struct ClaimParams {
    /// Only commands for this instance key.
    pub target: String,
    /// Only commands with these names (the ones the worker has handlers for).
    pub names: Vec<String>,
    /// At most this many.
    pub limit: usize,
    /// The caller's time: only commands with `scheduled_at <= now` are due.
    pub now: Timestamp,
    /// Who claims, recorded as the lease holder.
    pub worker: String,
    /// The lease is `now + timeout + lease_buffer`.
    pub lease_buffer: Duration,
}

/// A command leased to the caller by [`Store::claim`].
#[derive(Debug, Clone, PartialEq)]
pub struct ClaimedCommand {
    /// The lease: required for every later change.
    pub lease: Lease,
    /// The command name.
    pub name: String,
    /// The input as JSON text.
    pub input: String,
    /// Which attempt this is (1 for the first).
    pub attempt: u32,
    /// Retries + 1.
    pub max_attempts: u32,
    /// The timeout of this attempt.
    pub timeout: Duration,
    /// The backoff between attempts.
    pub retry_policy: RetryPolicy,
    /// When the lease expires unless renewed.
    pub lease_expires_at: Timestamp,
    /// The correlation id, inherited by follow-ups.
    pub correlation_id: String,
    /// The workflow step this command is, if any.
    pub workflow: Option<StepOf>,
}

/// What [`Store::heartbeat`] needs.
#[derive(Debug, Clone)]
pub struct HeartbeatParams {
    /// The leases to renew.
    pub leases: Vec<Lease>,
    /// The caller's time.
    pub now: Timestamp,
    /// Each lease is renewed to `now + timeout + lease_buffer`.
    pub lease_buffer: Duration,
}

/// The state of one lease after a heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseStatus {
    /// Still held and renewed.
    Held {
        /// Cancellation of the command was requested; the handler should stop.
        cancel_requested: bool,
    },
    /// No longer held: nothing the holder does will change the command.
    Lost,
}

/// How an attempt ended, as recorded by [`Store::complete`].
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The handler returned an output.
    Succeeded {
        /// The output as JSON text.
        output: String,
        /// The `on_success` follow-ups, inserted in the same transaction.
        follow_ups: Vec<InsertCommand>,
    },
    /// The attempt failed and another one is due at `retry_at`.
    Retry {
        /// Why the attempt failed.
        failure: Failure,
        /// When the next attempt is due.
        retry_at: Timestamp,
    },
    /// The command failed for good.
    Failed {
        /// Why.
        failure: Failure,
        /// The `on_failure` follow-ups, inserted in the same transaction.
        follow_ups: Vec<InsertCommand>,
    },
    /// The running command was cancelled on request.
    Cancelled {
        /// The `on_cancel` follow-ups, inserted in the same transaction.
        follow_ups: Vec<InsertCommand>,
    },
    /// The worker gave the command back unfinished (it is shutting down); the command
    /// is pending again at `at`. An attempt whose handler had started still counts; one
    /// that waited in the worker's local queue and never started is not counted.
    Released {
        /// When it is due again.
        at: Timestamp,
        /// Whether the handler had started.
        started: bool,
    },
}

/// One attempt's result, handed to [`Store::complete`].
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    /// The lease of the claim that ran the attempt.
    pub lease: Lease,
    /// The caller's time.
    pub now: Timestamp,
    /// Who ran it.
    pub worker: String,
    /// How it ended.
    pub outcome: Outcome,
}

/// Whether [`Store::complete`] applied a completion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompletionStatus {
    /// Applied, together with its follow-ups and journal entries.
    Applied,
    /// The lease was no longer held; nothing changed but a `lease_lost` journal entry.
    LeaseLost,
}

/// The result of [`Store::cancel`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelStatus {
    /// The command was blocked or pending and is now cancelled.
    Cancelled,
    /// The command is running; its worker has been asked to stop it.
    Requested,
    /// The command had already finished in this state.
    AlreadyFinished(State),
    /// No such command.
    NotFound,
}

/// A command returned to the queue (or failed) by [`Store::rescue`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rescued {
    /// The command.
    pub id: CommandId,
    /// Its new state: `pending` when attempts are left, `failed` when not,
    /// `cancelled` when cancellation had been requested.
    pub state: State,
}

/// What [`Store::list`] returns, and in what order: every filter given must hold.
///
/// Pages are read by keyset: pass the [`ListCursor`] of the last record of a page as
/// `after` to read the next one, so each page costs the same however deep it is.
#[derive(Debug, Clone, Default)]
pub struct ListParams {
    /// Only this state.
    pub state: Option<State>,
    /// Only this name.
    pub name: Option<String>,
    /// Only this target.
    pub target: Option<String>,
    /// Only this correlation id.
    pub correlation_id: Option<String>,
    /// Only commands not finished (blocked, pending or running), read in one statement
    /// so a command moving between those states is never missed.
    pub unfinished: bool,
    /// Only commands claimed at least this many times.
    pub min_attempts: Option<u32>,
    /// Only commands created before this time.
    pub created_before: Option<Timestamp>,
    /// Only commands created at or after this time.
    pub created_after: Option<Timestamp>,
    /// Only commands whose last error contains this text, ignoring the case of ASCII
    /// letters (and of other letters where the database's `LOWER` folds them).
    pub error_contains: Option<String>,
    /// Only the follow-ups of this command.
    pub parent: Option<CommandId>,
    /// Only the steps of this workflow.
    pub workflow: Option<WorkflowId>,
    /// The sort key (ties broken by id).
    pub order: ListOrder,
    /// Largest first instead of smallest first.
    pub descending: bool,
    /// Keyset pagination: only records after this one in the chosen order.
    pub after: Option<ListCursor>,
    /// At most this many (the store may cap it).
    pub limit: usize,
}

/// The sort key of [`Store::list`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ListOrder {
    /// Creation order: ids are time-ordered, so this is id order.
    #[default]
    Created,
    /// Due time, then id.
    Scheduled,
    /// Attempts so far, then id.
    Attempts,
}

impl ListOrder {
    /// The sort key of `record` in this order.
    pub fn key_of(self, record: &CommandRecord) -> i64 {
        match self {
            ListOrder::Created => 0,
            ListOrder::Scheduled => record.scheduled_at.as_micros(),
            ListOrder::Attempts => i64::from(record.attempts),
        }
    }
}

/// A position in a [`Store::list`] order: the sort key and id of one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ListCursor {
    /// The record's sort key ([`ListOrder::key_of`]); unused for [`ListOrder::Created`].
    pub key: i64,
    /// The record's id.
    pub id: CommandId,
}

impl ListCursor {
    /// The position of `record` in `order`.
    pub fn of(record: &CommandRecord, order: ListOrder) -> Self {
        ListCursor { key: order.key_of(record), id: record.id }
    }

    /// The position of id `id` in creation order.
    pub fn id(id: CommandId) -> Self {
        ListCursor { key: 0, id }
    }
}

/// What [`Store::workflows`] returns: workflows, newest first.
#[derive(Debug, Clone, Default)]
pub struct WorkflowQuery {
    /// Only workflows in this state.
    pub state: Option<crate::workflow::WorkflowState>,
    /// Keyset pagination: only workflows older than this one.
    pub before: Option<WorkflowId>,
    /// At most this many (the store may cap it; 0 means the cap).
    pub limit: usize,
}

/// One workflow as [`Store::workflows`] summarizes it: how many steps are in each state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkflowSummary {
    /// The workflow.
    pub id: WorkflowId,
    /// Steps waiting on dependencies.
    pub blocked: u64,
    /// Steps pending.
    pub pending: u64,
    /// Steps running.
    pub running: u64,
    /// Steps succeeded.
    pub succeeded: u64,
    /// Steps failed.
    pub failed: u64,
    /// Steps cancelled.
    pub cancelled: u64,
    /// When its first step was created.
    pub created_at: Timestamp,
    /// When a step last changed.
    pub updated_at: Timestamp,
}

impl WorkflowSummary {
    /// How many steps it has.
    pub fn steps(&self) -> u64 {
        self.blocked + self.pending + self.running + self.succeeded + self.failed + self.cancelled
    }

    /// Running until every step finished; then succeeded or failed.
    pub fn state(&self) -> crate::workflow::WorkflowState {
        use crate::workflow::WorkflowState;
        if self.blocked + self.pending + self.running > 0 {
            WorkflowState::Running
        } else if self.failed + self.cancelled > 0 {
            WorkflowState::Failed
        } else {
            WorkflowState::Succeeded
        }
    }
}

/// The number of commands with one (name, target, state).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CountRow {
    /// The command name.
    pub name: String,
    /// The target.
    pub target: String,
    /// The state.
    pub state: State,
    /// How many.
    pub count: u64,
}

/// What happened to a command, as recorded in its journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum JournalKind {
    /// Stored.
    Enqueued,
    /// Leased by a worker for an attempt.
    Claimed,
    /// The attempt succeeded.
    Succeeded,
    /// The attempt failed (handler error, panic, undecodable input).
    Failed,
    /// The attempt ran past its timeout and was cancelled.
    TimedOut,
    /// Another attempt was scheduled.
    RetryScheduled,
    /// Cancellation of the running attempt was requested.
    CancelRequested,
    /// The command was cancelled.
    Cancelled,
    /// An expired lease was taken back from a vanished worker.
    Rescued,
    /// A change was refused because the caller's lease was no longer held.
    LeaseLost,
    /// A worker gave the command back unfinished.
    Released,
    /// Follow-up commands were pushed for a command finished outside a worker.
    FollowUpsEnqueued,
    /// Every dependency succeeded; the command went from blocked to pending.
    Unblocked,
    /// A failed or cancelled command was made pending again on request.
    RetryRequested,
}

impl JournalKind {
    /// The name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            JournalKind::Enqueued => "enqueued",
            JournalKind::Claimed => "claimed",
            JournalKind::Succeeded => "succeeded",
            JournalKind::Failed => "failed",
            JournalKind::TimedOut => "timed_out",
            JournalKind::RetryScheduled => "retry_scheduled",
            JournalKind::CancelRequested => "cancel_requested",
            JournalKind::Cancelled => "cancelled",
            JournalKind::Rescued => "rescued",
            JournalKind::LeaseLost => "lease_lost",
            JournalKind::Released => "released",
            JournalKind::FollowUpsEnqueued => "follow_ups_enqueued",
            JournalKind::Unblocked => "unblocked",
            JournalKind::RetryRequested => "retry_requested",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "enqueued" => JournalKind::Enqueued,
            "claimed" => JournalKind::Claimed,
            "succeeded" => JournalKind::Succeeded,
            "failed" => JournalKind::Failed,
            "timed_out" => JournalKind::TimedOut,
            "retry_scheduled" => JournalKind::RetryScheduled,
            "cancel_requested" => JournalKind::CancelRequested,
            "cancelled" => JournalKind::Cancelled,
            "rescued" => JournalKind::Rescued,
            "lease_lost" => JournalKind::LeaseLost,
            "released" => JournalKind::Released,
            "follow_ups_enqueued" => JournalKind::FollowUpsEnqueued,
            "unblocked" => JournalKind::Unblocked,
            "retry_requested" => JournalKind::RetryRequested,
            other => return Err(Error::Corrupt(format!("unknown journal kind {other:?}"))),
        })
    }
}

impl fmt::Display for JournalKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One entry of a command's journal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalEntry {
    /// Increasing within a store.
    pub seq: i64,
    /// The command.
    pub command_id: CommandId,
    /// When (by the clock of whoever wrote it).
    pub at: Timestamp,
    /// What happened.
    pub kind: JournalKind,
    /// The attempt it concerns (0 before the first claim).
    pub attempt: u32,
    /// The worker involved, if any.
    pub worker: Option<String>,
    /// Details: an error text, a retry time, a parent id.
    pub message: Option<String>,
}

/// One step of a workflow as stored: its command and the commands it depends on.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkflowStepRecord {
    /// The step's command (its `workflow` names the step).
    pub command: CommandRecord,
    /// The commands this step depends on.
    pub depends_on: Vec<CommandId>,
}

/// Where a saga instance stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SagaStatus {
    /// Taking events.
    Active,
    /// Reached a final state.
    Completed,
    /// Running its compensations, last registered first.
    Compensating,
    /// Every compensation succeeded.
    Compensated,
    /// A compensation failed for good.
    CompensationFailed,
}

impl SagaStatus {
    /// Every status.
    pub const ALL: [SagaStatus; 5] = [
        SagaStatus::Active,
        SagaStatus::Completed,
        SagaStatus::Compensating,
        SagaStatus::Compensated,
        SagaStatus::CompensationFailed,
    ];

    /// The name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            SagaStatus::Active => "active",
            SagaStatus::Completed => "completed",
            SagaStatus::Compensating => "compensating",
            SagaStatus::Compensated => "compensated",
            SagaStatus::CompensationFailed => "compensation_failed",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Result<Self> {
        SagaStatus::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| Error::Corrupt(format!("unknown saga status {s:?}")))
    }

    /// Whether the saga is over (completed, compensated or compensation failed).
    pub fn is_final(self) -> bool {
        matches!(self, SagaStatus::Completed | SagaStatus::Compensated | SagaStatus::CompensationFailed)
    }
}

impl fmt::Display for SagaStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A saga instance as stored: one row per (saga, correlation id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SagaRecord {
    /// The saga (state machine) name.
    pub saga: String,
    /// The instance's correlation id.
    pub correlation_id: String,
    /// The current state of the machine.
    pub state: String,
    /// Active, completed, compensating, compensated or compensation failed.
    pub status: SagaStatus,
    /// The instance data as JSON text.
    pub data: String,
    /// Incremented by every save; saves are compare-and-set on it.
    pub version: i64,
    /// The registered compensations as JSON text (opaque to the store).
    pub compensations: String,
    /// The last event command applied, so a redelivered event is not applied twice.
    pub last_event: Option<CommandId>,
    /// When the instance times out if it does not move before then.
    pub timeout_at: Option<Timestamp>,
    /// When the instance was created.
    pub created_at: Timestamp,
    /// When the instance was last saved.
    pub updated_at: Timestamp,
}

/// What [`Store::save_saga`] writes.
#[derive(Debug, Clone, PartialEq)]
pub struct SagaWrite {
    /// The instance as it is to be stored (its `version` is the new version).
    pub record: SagaRecord,
    /// The version the writer read: `None` to create the instance (a conflict if it
    /// exists), `Some(v)` to replace version `v` (a conflict if the stored version differs).
    pub expected_version: Option<i64>,
    /// Commands to insert in the same transaction (as [`Store::enqueue`] does).
    pub commands: Vec<InsertCommand>,
}

/// Whether [`Store::save_saga`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SagaWriteStatus {
    /// Saved, with its commands.
    Saved,
    /// Another writer got there first; nothing was written.
    Conflict,
}

/// What [`Store::sagas`] returns: instances matching every filter given, by
/// (saga, correlation id).
#[derive(Debug, Clone, Default)]
pub struct SagaQuery {
    /// Only this saga.
    pub saga: Option<String>,
    /// Only instances in this state.
    pub state: Option<String>,
    /// Only instances with this status.
    pub status: Option<SagaStatus>,
    /// Only instances last saved before this time (stale ones).
    pub updated_before: Option<Timestamp>,
    /// Only instances whose `timeout_at` is set and at or before this time.
    pub timeout_before: Option<Timestamp>,
    /// At most this many (the store may cap it; 0 means the cap).
    pub limit: usize,
}

/// The most commands [`Store::prune_finished`] deletes in one transaction.
pub const PRUNE_BATCH: usize = 1_000;

/// What a pause holds back from claims: every command of a target (instance key), or
/// every command of a name, whatever its target.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PauseScope {
    /// The commands of this target.
    Target(String),
    /// The commands of this name.
    Name(String),
}

impl PauseScope {
    /// The commands of `target`.
    pub fn target(target: impl Into<String>) -> Self {
        PauseScope::Target(target.into())
    }

    /// The commands named `name`.
    pub fn name(name: impl Into<String>) -> Self {
        PauseScope::Name(name.into())
    }

    /// The commands of type `C`.
    pub fn command<C: crate::Command>() -> Self {
        PauseScope::Name(C::name().into_owned())
    }

    /// `target` or `name`, as stored.
    pub fn kind(&self) -> &'static str {
        match self {
            PauseScope::Target(_) => "target",
            PauseScope::Name(_) => "name",
        }
    }

    /// The target or the name.
    pub fn value(&self) -> &str {
        match self {
            PauseScope::Target(v) | PauseScope::Name(v) => v,
        }
    }

    /// The scope a stored kind and value describe.
    pub fn parse(kind: &str, value: String) -> Result<Self> {
        match kind {
            "target" => Ok(PauseScope::Target(value)),
            "name" => Ok(PauseScope::Name(value)),
            other => Err(Error::Corrupt(format!("unknown pause kind {other:?}"))),
        }
    }

    /// The record of a stored pause row.
    pub fn record(kind: &str, value: String, paused_at_micros: i64) -> Result<PauseRecord> {
        Ok(PauseRecord {
            scope: PauseScope::parse(kind, value)?,
            paused_at: Timestamp::from_micros(paused_at_micros),
        })
    }

    /// Fails with [`Error::InvalidConfig`] for an empty target or name.
    pub fn validate(&self) -> Result<()> {
        if self.value().is_empty() {
            return Err(Error::invalid_config(format!("a paused {} must not be empty", self.kind())));
        }
        Ok(())
    }
}

impl fmt::Display for PauseScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.kind(), self.value())
    }
}

/// A stored pause.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PauseRecord {
    /// What it holds back.
    pub scope: PauseScope,
    /// When it was paused (by the pauser's clock).
    pub paused_at: Timestamp,
}

/// A worker process as recorded in the workers table, for monitors: registered when it
/// starts, refreshed at every heartbeat, removed when it shuts down. A row whose
/// heartbeat is old belongs to a worker that died.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerRecord {
    /// The worker id (the lease holder name of its claims).
    pub id: String,
    /// The instance key it serves.
    pub instance_key: String,
    /// The host it runs on.
    pub host: String,
    /// Its process id.
    pub pid: u32,
    /// The command names it has handlers for.
    pub names: Vec<String>,
    /// How many handlers it runs at once.
    pub concurrency: u32,
    /// How many were running at its last heartbeat.
    pub running: u32,
    /// When it started.
    pub started_at: Timestamp,
    /// Its last heartbeat.
    pub heartbeat_at: Timestamp,
}

/// How many commands of one (name, target) are in each state, for monitors.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// The command name.
    pub name: String,
    /// The target.
    pub target: String,
    /// Waiting on dependencies.
    pub blocked: u64,
    /// Pending and due.
    pub due: u64,
    /// Pending, due later (delayed or waiting out a retry backoff).
    pub scheduled: u64,
    /// Running.
    pub running: u64,
    /// Succeeded.
    pub succeeded: u64,
    /// Failed.
    pub failed: u64,
    /// Cancelled.
    pub cancelled: u64,
    /// The due time of the oldest due pending command (how long the queue lags).
    pub oldest_due: Option<Timestamp>,
}

/// The result of [`Store::retry`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryStatus {
    /// The failed or cancelled command is pending again, due now, with one more attempt.
    Retried,
    /// The command has not finished (blocked, pending or running), or succeeded.
    NotRetryable(State),
    /// No such command.
    NotFound,
}

/// Storage for commands and their journal.
///
/// Implementations must make each method atomic (one transaction), fence every change
/// to a running command on `(id, lease token, state = running)`, and never let two
/// concurrent [`Store::claim`] calls lease the same command. The conformance suite in
/// the `tests` crate checks all of this against a real database.
///
/// **Dependencies** (workflow steps): a command inserted with `depends_on` is `blocked`
/// and its edges are stored. In the transaction that makes a command `succeeded`, every
/// blocked command depending on it whose dependencies have now all succeeded becomes
/// `pending` (journaled [`JournalKind::Unblocked`]); the dependent rows must be locked
/// before the other dependencies are checked, so two dependencies finishing at once
/// cannot both miss that the other succeeded. In the transaction that makes a command
/// `failed` or `cancelled` (by [`Store::complete`], [`Store::cancel`] or
/// [`Store::rescue`]), every blocked command depending on it, transitively, becomes
/// `cancelled` with a [`FailureKind::Cancelled`](crate::FailureKind) error naming the
/// dependency, `follow_ups_due` set, journaled [`JournalKind::Cancelled`].
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// The backend's short name (`sqlite`, `postgres`, `mysql`).
    fn backend(&self) -> &'static str;

    /// Creates or upgrades the tables. Idempotent, and safe to run from several
    /// processes at once.
    async fn migrate(&self) -> Result<()>;

    /// Inserts commands, all or none, with an `enqueued` journal entry each.
    ///
    /// Returns, in order, the id each command is stored under: its own, or for a
    /// command whose [`UniqueKey`] another command holds, the holder's (nothing is
    /// inserted for it). Two commands of one call with the same key insert the first.
    async fn enqueue(&self, commands: Vec<InsertCommand>) -> Result<Vec<CommandId>>;

    /// Leases up to `limit` due pending commands for the target and names, oldest due
    /// first, each with a fresh lease token, counting an attempt and journaling the claim.
    async fn claim(&self, params: ClaimParams) -> Result<Vec<ClaimedCommand>>;

    /// Renews leases; reports for each (in order) whether it is still held and whether
    /// cancellation was requested.
    async fn heartbeat(&self, params: HeartbeatParams) -> Result<Vec<LeaseStatus>>;

    /// Records attempt results; each is applied with its follow-ups and journal entries
    /// in one transaction, or refused when its lease is no longer held.
    async fn complete(&self, completions: Vec<Completion>) -> Result<Vec<CompletionStatus>>;

    /// Cancels a blocked or pending command at once, or requests cancellation of a
    /// running one. A command cancelled here has `follow_ups_due` set.
    async fn cancel(&self, id: CommandId, now: Timestamp) -> Result<CancelStatus>;

    /// Takes back up to `limit` running commands whose lease expired before `now`:
    /// pending again when attempts are left, failed when not, cancelled when
    /// cancellation was requested. Commands that end here have `follow_ups_due` set.
    async fn rescue(&self, now: Timestamp, limit: usize) -> Result<Vec<Rescued>>;

    /// Up to `limit` finished commands with these names whose follow-ups are still due.
    async fn follow_ups_due(&self, names: &[String], limit: usize) -> Result<Vec<CommandRecord>>;

    /// Pushes the follow-ups of a command whose `follow_ups_due` is set, and clears it,
    /// in one transaction. Returns `false` (and changes nothing) when it was already clear.
    async fn resolve_follow_ups(
        &self,
        id: CommandId,
        follow_ups: Vec<InsertCommand>,
        now: Timestamp,
    ) -> Result<bool>;

    /// One command.
    async fn get(&self, id: CommandId) -> Result<Option<CommandRecord>>;

    /// Commands matching the filters, by id ascending.
    async fn list(&self, params: ListParams) -> Result<Vec<CommandRecord>>;

    /// Command counts by name, target and state (zero counts omitted).
    async fn counts(&self) -> Result<Vec<CountRow>>;

    /// The journal of one command, oldest first.
    async fn journal(&self, id: CommandId) -> Result<Vec<JournalEntry>>;

    /// The steps of a workflow with their dependencies, by command id; empty when no
    /// such workflow exists.
    async fn workflow_steps(&self, workflow_id: WorkflowId) -> Result<Vec<WorkflowStepRecord>>;

    /// One saga instance.
    async fn saga(&self, saga: &str, correlation_id: &str) -> Result<Option<SagaRecord>>;

    /// Creates or replaces a saga instance, compare-and-set on its version, together
    /// with its commands (inserted as [`Store::enqueue`] inserts, dependencies
    /// included) in one transaction; on a conflict nothing is written.
    async fn save_saga(&self, write: SagaWrite) -> Result<SagaWriteStatus>;

    /// Saga instances matching a query.
    async fn sagas(&self, query: SagaQuery) -> Result<Vec<SagaRecord>>;

    /// Command counts per (name, target) with pending split into due and scheduled by
    /// `now`, and the oldest due time; by name, then target; pairs with no commands
    /// are omitted.
    async fn queue_stats(&self, now: Timestamp) -> Result<Vec<QueueStats>>;

    /// Runs a failed or cancelled command again: it becomes pending, due at `now`, with
    /// one more attempt allowed (`max_attempts = attempts + 1`), its last error kept,
    /// its unpushed failure or cancel follow-ups dropped (it has not ended after all),
    /// journaled [`JournalKind::RetryRequested`]. A command with a dependency that has
    /// not succeeded becomes `blocked` instead, and waits for it (read under a lock, so
    /// a dependency succeeding at the same moment is not missed). Dependents already
    /// cancelled because it ended stay cancelled; retry them too to resume a workflow.
    async fn retry(&self, id: CommandId, now: Timestamp) -> Result<RetryStatus>;

    /// Workflows matching `query`, newest first, each with its step counts by state.
    async fn workflows(&self, query: WorkflowQuery) -> Result<Vec<WorkflowSummary>>;

    /// Inserts or replaces a worker's row (by id).
    async fn record_worker(&self, worker: WorkerRecord) -> Result<()>;

    /// Removes a worker's row; removing one that is not there is not an error.
    async fn remove_worker(&self, id: &str) -> Result<()>;

    /// Every recorded worker, by id.
    async fn workers(&self) -> Result<Vec<WorkerRecord>>;

    /// Removes the rows of workers whose last heartbeat is before `before` (workers
    /// that died long ago), returning how many.
    async fn prune_workers(&self, before: Timestamp) -> Result<u64>;

    /// Deletes finished commands (succeeded, failed or cancelled, with no follow-ups
    /// still to push, holding no period [`UniqueKey`] whose period ends after
    /// `before`) that finished before `before`, oldest due first, with their
    /// journal entries and dependency edges: at most `limit`, in transactions of at most
    /// [`PRUNE_BATCH`] commands each, so no lock is held for long. One caller prunes a
    /// store at a time: `None` when another is pruning it right now; else how many were
    /// deleted (fewer than `limit` when no more are old enough).
    async fn prune_finished(&self, before: Timestamp, limit: usize) -> Result<Option<u64>>;

    /// Holds back claims of `scope` until [`Store::resume`]: commands already claimed
    /// run on, and everything else about the queue goes on as before. `false` when it
    /// was paused already (its first `paused_at` is kept).
    async fn pause(&self, scope: PauseScope, now: Timestamp) -> Result<bool>;

    /// Lets claims of `scope` go on; `false` when it was not paused.
    async fn resume(&self, scope: &PauseScope) -> Result<bool>;

    /// Every pause, ordered by kind and value.
    async fn pauses(&self) -> Result<Vec<PauseRecord>>;

    /// Saves a schedule: inserts it, or updates the definition of the one of that
    /// name. An update keeps the stored next slot unless the cadence or zone changed
    /// (then `record.next_fire` replaces it), and keeps the fire history.
    async fn save_schedule(&self, record: ScheduleRecord) -> Result<()>;

    /// Deletes a schedule; whether it existed.
    async fn remove_schedule(&self, name: &str) -> Result<bool>;

    /// Every schedule, by name.
    async fn schedules(&self) -> Result<Vec<ScheduleRecord>>;

    /// Applies one step of a schedule in one transaction: moves its next slot from
    /// `expected_next` to `next_fire`, counts missed slots, and with `fire` records the
    /// slot as fired and inserts its command. Changes nothing ([`FireStatus::Lost`]) if
    /// the schedule is gone or its next slot or version is no longer the one the
    /// caller read (another worker stepped it, or it was saved again). A slot not later
    /// than the latest fired does not fire: the schedule moves on
    /// ([`FireStatus::Skipped`]).
    async fn fire_schedule(&self, fire: ScheduleFire) -> Result<FireStatus>;

    /// The database's own clock, read now: what every process's clock is corrected to
    /// (see [`crate::Orch::sync_clock`]). `None` (the default) for a store with no
    /// clock of its own, whose users then keep their own clocks.
    async fn server_time(&self) -> Result<Option<Timestamp>> {
        Ok(None)
    }

    /// A signal that fires when commands may have become due, so an idle worker looks
    /// again before its poll interval is over. A backend with a cross-process channel
    /// (PostgreSQL's `LISTEN`/`NOTIFY`) fires it for pushes from any process; others
    /// fire it for pushes through this store in this process. `None` (the default)
    /// leaves workers to their poll interval and the client's own wake-ups. Waiters
    /// must register (`Notify::notified` + `enable`) before they look for work, since
    /// the signal wakes only those already waiting.
    fn wake_signal(&self) -> Option<Arc<Notify>> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_validation() {
        for ok in ["orch_", "_x", "a", "A1_b2", &"a".repeat(32)] {
            assert!(TablePrefix::new(ok).is_ok(), "{ok}");
        }
        for bad in ["", "1abc", "x; DROP TABLE y", "a-b", "a b", "é", &"a".repeat(33), "a\"b"] {
            assert!(matches!(TablePrefix::new(bad), Err(Error::InvalidPrefix { .. })), "{bad}");
        }
    }

    #[test]
    fn ids_from_one_process_increase_within_a_millisecond() {
        let now = Timestamp::from_millis(1_700_000_000_000);
        let ids: Vec<CommandId> = (0..10_000).map(|_| CommandId::generate(now)).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn ids_sort_by_creation_time() {
        let a = CommandId::generate(Timestamp::from_millis(1_000));
        let b = CommandId::generate(Timestamp::from_millis(2_000));
        assert!(a < b);
        assert_eq!(a.to_string().parse::<CommandId>().unwrap(), a);
    }

    #[test]
    fn states_round_trip() {
        for s in State::ALL {
            assert_eq!(State::parse(s.as_str()).unwrap(), s);
        }
        assert!(State::parse("zombie").is_err());
    }
}
