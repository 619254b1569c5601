//! Helpers for `Store` implementations: the journal entries each transition writes and
//! the decoding of stored rows, decided once here so every backend records the same
//! history and reads the same columns the same way. Nothing here knows SQL.

use std::time::Duration;

use crate::clock::Timestamp;
use crate::error::{Error, Failure, FailureKind, Result};
use crate::retry::RetryPolicy;
use crate::store::{
    CommandId, CommandRecord, Completion, InsertCommand, JournalKind, Lease, Outcome, ScheduleFire,
    ScheduleRecord, State, StepOf, UniqueKey,
};

/// The start of the error text of a row failed because it does not read as a command.
pub const UNREADABLE_ROW: &str = "the stored row does not read as a command";

/// The error text of a claimed row that does not read as a command (`why`: what does
/// not parse).
pub fn unreadable_message(why: &str) -> String {
    format!("{UNREADABLE_ROW}: {why}")
}

/// The completion a claim applies to a row it leased that does not read as a command (a
/// value a producer wrote into the table by hand that the library cannot parse): failed
/// for good, kind `decode`, through the store's ordinary completion (journal, dependents
/// cancelled), so the row holds up no claim.
pub fn unreadable_completion(lease: Lease, now: Timestamp, worker: &str, why: &str) -> Completion {
    Completion {
        lease,
        now,
        worker: worker.to_owned(),
        outcome: Outcome::Failed {
            failure: Failure::new(FailureKind::Decode, unreadable_message(why)),
            follow_ups: Vec::new(),
        },
    }
}

/// A journal row to append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewJournalEntry {
    /// The command.
    pub command_id: CommandId,
    /// When.
    pub at: Timestamp,
    /// What happened.
    pub kind: JournalKind,
    /// The attempt it concerns.
    pub attempt: u32,
    /// The worker involved.
    pub worker: Option<String>,
    /// Details.
    pub message: Option<String>,
}

impl NewJournalEntry {
    /// The `enqueued` entry of a newly inserted command.
    pub fn enqueued(command: &InsertCommand) -> Self {
        NewJournalEntry {
            command_id: command.id,
            at: command.created_at,
            kind: JournalKind::Enqueued,
            attempt: 0,
            worker: None,
            message: Some(match command.parent_id {
                Some(parent) => format!("follow-up of {parent}; due {}", command.scheduled_at),
                None => format!("due {}", command.scheduled_at),
            }),
        }
    }

    /// The `claimed` entry of a command leased by `worker` at `now` for `attempt`.
    pub fn claimed(
        id: CommandId,
        now: Timestamp,
        attempt: u32,
        worker: &str,
        lease_expires_at: Timestamp,
    ) -> Self {
        NewJournalEntry {
            command_id: id,
            at: now,
            kind: JournalKind::Claimed,
            attempt,
            worker: Some(worker.to_owned()),
            message: Some(format!("lease until {lease_expires_at}")),
        }
    }

    /// The `lease_lost` entry for a refused change (`what` names it, e.g. "lease renewal").
    pub fn lease_lost(lease: Lease, at: Timestamp, attempt: u32, worker: Option<String>, what: &str) -> Self {
        NewJournalEntry {
            command_id: lease.id,
            at,
            kind: JournalKind::LeaseLost,
            attempt,
            worker,
            message: Some(format!("{what} refused: lease {} is no longer held", lease.token)),
        }
    }

    /// The entries of an applied completion; `attempt` is the command's attempt count.
    pub fn completion(c: &Completion, attempt: u32) -> Vec<Self> {
        let entry = |kind, message: Option<String>| NewJournalEntry {
            command_id: c.lease.id,
            at: c.now,
            kind,
            attempt,
            worker: Some(c.worker.clone()),
            message,
        };
        let failure_kind = |f: &Failure| match f.kind {
            FailureKind::Timeout => JournalKind::TimedOut,
            _ => JournalKind::Failed,
        };
        match &c.outcome {
            Outcome::Succeeded { follow_ups, .. } => {
                vec![entry(JournalKind::Succeeded, follow_up_note(follow_ups))]
            }
            Outcome::Retry { failure, retry_at } => vec![
                entry(failure_kind(failure), Some(failure.to_string())),
                entry(JournalKind::RetryScheduled, Some(format!("next attempt due {retry_at}"))),
            ],
            Outcome::Failed { failure, follow_ups } => {
                let mut message = failure.to_string();
                if let Some(note) = follow_up_note(follow_ups) {
                    message = format!("{message}; {note}");
                }
                vec![entry(failure_kind(failure), Some(message))]
            }
            Outcome::Cancelled { follow_ups } => {
                vec![entry(JournalKind::Cancelled, follow_up_note(follow_ups))]
            }
            Outcome::Released { at, started: true } => {
                vec![entry(JournalKind::Released, Some(format!("due again {at}")))]
            }
            Outcome::Released { at, started: false } => {
                vec![entry(
                    JournalKind::Released,
                    Some(format!("not started, attempt not counted; due again {at}")),
                )]
            }
        }
    }

    /// The entries of a `Retry` or `Released` completion applied to a command whose
    /// cancellation was requested: it ends cancelled instead of pending (the failure,
    /// if any, is still recorded).
    pub fn completion_cancelled_instead(c: &Completion, attempt: u32) -> Vec<Self> {
        let mut entries: Vec<Self> = match &c.outcome {
            Outcome::Retry { .. } => Self::completion(c, attempt)
                .into_iter()
                .filter(|e| e.kind != JournalKind::RetryScheduled)
                .collect(),
            _ => Vec::new(),
        };
        entries.push(NewJournalEntry {
            command_id: c.lease.id,
            at: c.now,
            kind: JournalKind::Cancelled,
            attempt,
            worker: Some(c.worker.clone()),
            message: Some(CANCELLED_INSTEAD.to_owned()),
        });
        entries
    }

    /// The entry of [`Store::cancel`](crate::Store::cancel) on a command found in `state`:
    /// `cancelled` for a blocked or pending one, `cancel_requested` for a running one.
    pub fn cancel(id: CommandId, at: Timestamp, attempt: u32, state: State) -> Self {
        NewJournalEntry {
            command_id: id,
            at,
            kind: if state == State::Running { JournalKind::CancelRequested } else { JournalKind::Cancelled },
            attempt,
            worker: None,
            message: Some(format!("cancel requested while {state}")),
        }
    }

    /// The entry of a command rescued from `worker`'s expired lease, now in `state`.
    pub fn rescued(id: CommandId, at: Timestamp, attempt: u32, worker: Option<String>, state: State) -> Self {
        let message = format!("lease of worker {} expired; now {state}", worker.as_deref().unwrap_or("?"));
        NewJournalEntry {
            command_id: id,
            at,
            kind: JournalKind::Rescued,
            attempt,
            worker,
            message: Some(message),
        }
    }

    /// The entry of a blocked command whose dependencies have all succeeded.
    pub fn unblocked(id: CommandId, at: Timestamp) -> Self {
        NewJournalEntry {
            command_id: id,
            at,
            kind: JournalKind::Unblocked,
            attempt: 0,
            worker: None,
            message: Some("every dependency succeeded".to_owned()),
        }
    }

    /// The entry of a blocked command cancelled because `dependency` ended `state`;
    /// its message is [`dependency_failure_message`].
    pub fn dependency_cancelled(id: CommandId, at: Timestamp, dependency: CommandId, state: State) -> Self {
        NewJournalEntry {
            command_id: id,
            at,
            kind: JournalKind::Cancelled,
            attempt: 0,
            worker: None,
            message: Some(dependency_failure_message(dependency, state)),
        }
    }

    /// The entry of [`Store::retry`](crate::Store::retry) on a command that was `state`.
    pub fn retry_requested(id: CommandId, at: Timestamp, attempt: u32, state: State) -> Self {
        NewJournalEntry {
            command_id: id,
            at,
            kind: JournalKind::RetryRequested,
            attempt,
            worker: None,
            message: Some(format!("retried by request after it {state}; due {at}")),
        }
    }

    /// The entry of [`Store::resolve_follow_ups`](crate::Store::resolve_follow_ups).
    pub fn follow_ups_enqueued(
        id: CommandId,
        at: Timestamp,
        attempt: u32,
        follow_ups: &[InsertCommand],
    ) -> Self {
        NewJournalEntry {
            command_id: id,
            at,
            kind: JournalKind::FollowUpsEnqueued,
            attempt,
            worker: None,
            message: Some(follow_up_note(follow_ups).unwrap_or_else(|| "no follow-ups".to_owned())),
        }
    }
}

/// The message of the `cancelled` entry of a command that would have been retried or
/// released but had a cancel request.
pub const CANCELLED_INSTEAD: &str = "cancel requested; not retried";

/// "follow-ups: a, b", or `None` when there are none.
pub fn follow_up_note(follow_ups: &[InsertCommand]) -> Option<String> {
    if follow_ups.is_empty() {
        return None;
    }
    let names: Vec<&str> = follow_ups.iter().map(|f| f.name.as_str()).collect();
    Some(format!("follow-ups: {}", names.join(", ")))
}

/// The follow-ups an outcome inserts.
pub fn outcome_follow_ups(outcome: &Outcome) -> &[InsertCommand] {
    match outcome {
        Outcome::Succeeded { follow_ups, .. }
        | Outcome::Failed { follow_ups, .. }
        | Outcome::Cancelled { follow_ups } => follow_ups,
        Outcome::Retry { .. } | Outcome::Released { .. } => &[],
    }
}

/// What a backend adds to the SET of the fenced update that applies `outcome`: a release
/// of a command whose handler never started gives its attempt back; nothing otherwise.
pub fn attempt_given_back(outcome: &Outcome) -> &'static str {
    if matches!(outcome, Outcome::Released { started: false, .. }) { ", attempts = attempts - 1" } else { "" }
}

/// The completions of a batch that a backend may apply with one statement: the
/// successes of commands that appear once in the batch, as indexes in id order; none
/// when there are fewer than two.
pub fn distinct_successes(completions: &[Completion]) -> Vec<usize> {
    let mut seen: std::collections::HashMap<CommandId, usize> = std::collections::HashMap::new();
    for c in completions {
        *seen.entry(c.lease.id).or_default() += 1;
    }
    let mut together: Vec<usize> = (0..completions.len())
        .filter(|&i| {
            let c = &completions[i];
            matches!(c.outcome, Outcome::Succeeded { .. }) && seen[&c.lease.id] == 1
        })
        .collect();
    together.sort_by_key(|&i| completions[i].lease.id);
    if together.len() < 2 {
        together.clear();
    }
    together
}

/// One dependency edge of a newly inserted command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DependencyEdge {
    /// The command that waits.
    pub command: CommandId,
    /// The command it waits for.
    pub dependency: CommandId,
    /// The dependency's place in the command's list (duplicates removed).
    pub position: u32,
}

/// The edges of newly inserted commands, after checking that each dependency is another
/// command of the same insert and that the edges form no cycle: a dependency outside
/// the insert could have finished already, and a command on a cycle would stay
/// blocked for ever. A dependency listed twice is stored once. Every backend calls
/// this before writing a command's edges.
pub fn dependency_edges<C: std::borrow::Borrow<InsertCommand>>(
    commands: &[C],
) -> Result<Vec<DependencyEdge>> {
    use std::collections::{HashMap, HashSet, VecDeque};
    let commands: Vec<&InsertCommand> = commands.iter().map(|c| c.borrow()).collect();
    if commands.iter().all(|c| c.depends_on.is_empty()) {
        return Ok(Vec::new());
    }
    let ids: HashSet<CommandId> = commands.iter().map(|c| c.id).collect();
    let mut edges = Vec::new();
    let mut waiting_on: HashMap<CommandId, usize> = HashMap::new();
    let mut dependents: HashMap<CommandId, Vec<CommandId>> = HashMap::new();
    for c in commands {
        let mut seen = HashSet::new();
        for &dependency in &c.depends_on {
            if dependency == c.id {
                return Err(Error::invalid_config(format!("command {} depends on itself", c.id)));
            }
            if !ids.contains(&dependency) {
                return Err(Error::invalid_config(format!(
                    "command {} depends on {dependency}, which is not inserted with it",
                    c.id
                )));
            }
            if seen.insert(dependency) {
                let position = u32::try_from(seen.len() - 1).unwrap_or(u32::MAX);
                edges.push(DependencyEdge { command: c.id, dependency, position });
                dependents.entry(dependency).or_default().push(c.id);
            }
        }
        waiting_on.insert(c.id, seen.len());
    }
    // Kahn: whatever never becomes free of dependencies is on (or behind) a cycle.
    let mut free: VecDeque<CommandId> =
        waiting_on.iter().filter(|(_, n)| **n == 0).map(|(id, _)| *id).collect();
    let mut done = 0;
    while let Some(id) = free.pop_front() {
        done += 1;
        for dependent in dependents.get(&id).into_iter().flatten() {
            let n = waiting_on.get_mut(dependent).expect("every command is counted");
            *n -= 1;
            if *n == 0 {
                free.push_back(*dependent);
            }
        }
    }
    if done < waiting_on.len() {
        let mut stuck: Vec<String> =
            waiting_on.iter().filter(|(_, n)| **n > 0).map(|(id, _)| id.to_string()).collect();
        stuck.sort();
        return Err(Error::invalid_config(format!(
            "the dependencies of commands {} form a cycle",
            stuck.join(", ")
        )));
    }
    Ok(edges)
}

/// The error text (kind `cancelled`) of a blocked command cancelled because one of its
/// dependencies, directly or through others, ended `state` (failed or cancelled).
pub fn dependency_failure_message(dependency: CommandId, state: State) -> String {
    format!("dependency {dependency} ended {state}")
}

/// The error text a rescue records on a command whose lease expired.
pub fn lease_expired_message(worker: Option<&str>) -> String {
    format!("lease of worker {} expired", worker.unwrap_or("?"))
}

/// A retry policy as stored (JSON text).
pub fn encode_policy(policy: &RetryPolicy) -> Result<String> {
    serde_json::to_string(policy).map_err(|source| Error::Encode { what: "retry policy".into(), source })
}

/// Encodes the retry policies of many rows, reusing the text of the previous row when
/// the policy is the same (the rows of one push usually share one).
#[derive(Debug, Default)]
pub struct PolicyEncoder {
    last: Option<(RetryPolicy, String)>,
}

impl PolicyEncoder {
    /// `policy` as stored, as [`encode_policy`] writes it.
    pub fn encode(&mut self, policy: &RetryPolicy) -> Result<String> {
        if let Some((last, text)) = &self.last
            && last == policy
        {
            return Ok(text.clone());
        }
        let text = encode_policy(policy)?;
        self.last = Some((*policy, text.clone()));
        Ok(text)
    }
}

/// Clamps a stored integer to `u32` (negative values, which no store writes, read as 0).
pub fn u32_of(v: i64) -> u32 {
    u32::try_from(v.max(0)).unwrap_or(u32::MAX)
}

/// A duration as whole milliseconds, saturating.
pub fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// A duration as whole microseconds, saturating.
pub fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

/// `url` with any password replaced by `***` (in the user info and in a `password`
/// query parameter), for logs and error messages.
///
/// ```
/// use orch::store::backend::redact_url;
/// assert_eq!(redact_url("postgres://app:s3cret@db:5432/jobs"), "postgres://app:***@db:5432/jobs");
/// assert_eq!(redact_url("mysql://db/jobs?user=app&password=x"), "mysql://db/jobs?user=app&password=***");
/// ```
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "<not a URL>".to_owned();
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _password)) => format!("{user}:***@{host}"),
            None => format!("{userinfo}@{host}"),
        },
        None => authority.to_owned(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let params: Vec<String> = query
                .split('&')
                .map(|param| match param.split_once('=') {
                    Some((key, _)) if key.eq_ignore_ascii_case("password") => format!("{key}=***"),
                    _ => param.to_owned(),
                })
                .collect();
            format!("{path}?{}", params.join("&"))
        }
        None => tail.to_owned(),
    };
    format!("{scheme}://{authority}{tail}")
}

/// Checks the pool options every server backend takes.
pub fn check_pool_options(max_connections: u32, connect_timeout: Duration) -> Result<()> {
    if max_connections == 0 {
        return Err(Error::invalid_config("max_connections must be at least 1"));
    }
    if connect_timeout.is_zero() {
        return Err(Error::invalid_config("connect_timeout must be longer than zero"));
    }
    Ok(())
}

/// The migrations of `known` (version, SQL) not yet in `applied`, in order; an error
/// when the database holds a version newer than any known, which means an older
/// `backend` crate is running against a newer schema.
pub fn pending_migrations<'a>(
    known: &'a [(i32, &'a str)],
    applied: &[i32],
    backend: &str,
    prefix: &str,
) -> Result<Vec<&'a (i32, &'a str)>> {
    let newest_known = known.last().map_or(0, |(v, _)| *v);
    if let Some(&newest) = applied.iter().max()
        && newest > newest_known
    {
        return Err(Error::invalid_config(format!(
            "the database schema (prefix `{prefix}`) is at version {newest}, newer than this {backend} knows \
             ({newest_known}); upgrade {backend}"
        )));
    }
    Ok(known.iter().filter(|(v, _)| !applied.contains(v)).collect())
}

/// Adds one grouped count row (name, target, state, count, due pending count, oldest
/// due time) to per-(name, target) stats; backends group by name, target and state
/// and fold their rows with this, then call [`finish_queue_stats`].
pub fn add_queue_count(
    stats: &mut Vec<crate::store::QueueStats>,
    name: String,
    target: String,
    state: State,
    count: i64,
    due: i64,
    oldest_due: Option<i64>,
) {
    let count = u64::try_from(count).unwrap_or(0);
    let due = u64::try_from(due).unwrap_or(0).min(count);
    let entry = match stats.iter_mut().position(|s| s.name == name && s.target == target) {
        Some(i) => &mut stats[i],
        None => {
            stats.push(crate::store::QueueStats { name, target, ..Default::default() });
            stats.last_mut().expect("just pushed")
        }
    };
    match state {
        State::Blocked => entry.blocked += count,
        State::Pending => {
            entry.due += due;
            entry.scheduled += count - due;
            if let Some(oldest) = oldest_due.map(Timestamp::from_micros) {
                entry.oldest_due = Some(entry.oldest_due.map_or(oldest, |o| o.min(oldest)));
            }
        }
        State::Running => entry.running += count,
        State::Succeeded => entry.succeeded += count,
        State::Failed => entry.failed += count,
        State::Cancelled => entry.cancelled += count,
    }
}

/// Sorts folded stats by name, then target.
pub fn finish_queue_stats(mut stats: Vec<crate::store::QueueStats>) -> Vec<crate::store::QueueStats> {
    stats.sort_by(|a, b| (&a.name, &a.target).cmp(&(&b.name, &b.target)));
    stats
}

/// A worker's command names as stored (JSON text).
pub fn encode_names(names: &[String]) -> String {
    serde_json::to_string(names).unwrap_or_else(|_| "[]".to_owned())
}

/// A worker's command names from their stored form.
pub fn decode_names(json: &str) -> Result<Vec<String>> {
    serde_json::from_str(json).map_err(|e| Error::Corrupt(format!("invalid worker names {json:?}: {e}")))
}

/// A command row as the SQL backends store it: ids and enums as text, times as
/// microseconds since the epoch, flags as integers. [`RawCommand::into_record`]
/// validates every column, so a corrupt row is an [`Error::Corrupt`], never a panic.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct RawCommand {
    pub id: String,
    pub name: String,
    pub target: String,
    pub state: String,
    pub input: String,
    pub output: Option<String>,
    pub error_kind: Option<String>,
    pub error: Option<String>,
    pub attempts: i64,
    pub max_attempts: i64,
    pub timeout_ms: i64,
    pub retry_policy: String,
    pub scheduled_at: i64,
    pub created_at: i64,
    pub updated_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub lease_token: Option<String>,
    pub lease_expires_at: Option<i64>,
    pub worker: Option<String>,
    pub cancel_requested: bool,
    pub follow_ups_due: bool,
    pub parent_id: Option<String>,
    pub correlation_id: String,
    pub workflow_id: Option<String>,
    pub step: Option<String>,
    pub priority: i64,
    pub unique_key: Option<String>,
    pub unique_window: i64,
}

/// A schedule row, decoded and validated (shared so every backend reads alike).
#[allow(clippy::too_many_arguments)]
pub fn schedule_record(
    name: String,
    cadence: String,
    zone: String,
    command: String,
    on_missed: String,
    missed_after_ms: i64,
    next_fire: i64,
    last_fire: Option<i64>,
    last_command: Option<String>,
    missed: i64,
    created_at: i64,
    updated_at: i64,
    version: i64,
) -> Result<ScheduleRecord> {
    Ok(ScheduleRecord {
        name,
        cadence,
        zone,
        command,
        on_missed,
        missed_after: Duration::from_millis(u64::try_from(missed_after_ms).unwrap_or(0)),
        next_fire: Timestamp::from_micros(next_fire),
        last_fire: last_fire.map(Timestamp::from_micros),
        last_command: last_command.as_deref().map(str::parse).transpose()?,
        missed: u64::try_from(missed).unwrap_or(0),
        created_at: Timestamp::from_micros(created_at),
        updated_at: Timestamp::from_micros(updated_at),
        version,
    })
}

/// What a schedule step does to the stored schedule (see [`Store::fire_schedule`](crate::Store::fire_schedule)),
/// decided alike by every backend from the locked row.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ScheduleStep<'a> {
    /// The stored next slot is not the one the caller read: change nothing.
    Lost,
    /// Move the next slot on without firing (skipped slots, or a slot not later than
    /// the latest fired).
    Advance,
    /// Insert this command for this slot and move the next slot on.
    Fire(Timestamp, &'a InsertCommand),
}

impl<'a> ScheduleStep<'a> {
    /// The step for a schedule stored with `(next_fire, last_fire, version)` (`None`:
    /// no such schedule).
    pub fn decide(stored: Option<(i64, Option<i64>, i64)>, fire: &'a ScheduleFire) -> Self {
        match stored {
            Some((next, last, version))
                if next == fire.expected_next.as_micros() && version == fire.expected_version =>
            {
                match &fire.fire {
                    Some((slot, command)) if last.is_none_or(|last| last < slot.as_micros()) => {
                        ScheduleStep::Fire(*slot, command)
                    }
                    _ => ScheduleStep::Advance,
                }
            }
            _ => ScheduleStep::Lost,
        }
    }
}

/// Every column of a [`RawCommand`], in its field order, for `SELECT` lists.
pub const COMMAND_COLUMNS: [&str; 29] = [
    "id",
    "name",
    "target",
    "state",
    "input",
    "output",
    "error_kind",
    "error",
    "attempts",
    "max_attempts",
    "timeout_ms",
    "retry_policy",
    "scheduled_at",
    "created_at",
    "updated_at",
    "started_at",
    "finished_at",
    "lease_token",
    "lease_expires_at",
    "worker",
    "cancel_requested",
    "follow_ups_due",
    "parent_id",
    "correlation_id",
    "workflow_id",
    "step",
    "priority",
    "unique_key",
    "unique_window",
];

impl RawCommand {
    /// Decodes and validates the row.
    pub fn into_record(self) -> Result<CommandRecord> {
        let error = match (self.error_kind, self.error) {
            (Some(kind), message) => Some(Failure::new(
                FailureKind::parse(&kind)
                    .ok_or_else(|| Error::Corrupt(format!("unknown failure kind {kind:?}")))?,
                message.unwrap_or_default(),
            )),
            (None, _) => None,
        };
        let retry_policy = serde_json::from_str(&self.retry_policy)
            .map_err(|e| Error::Corrupt(format!("invalid retry policy {:?}: {e}", self.retry_policy)))?;
        Ok(CommandRecord {
            id: self.id.parse()?,
            name: self.name,
            target: self.target,
            state: State::parse(&self.state)?,
            input: self.input,
            output: self.output,
            error,
            attempts: u32_of(self.attempts),
            max_attempts: u32_of(self.max_attempts),
            timeout: Duration::from_millis(u64::try_from(self.timeout_ms.max(0)).unwrap_or(0)),
            retry_policy,
            scheduled_at: Timestamp::from_micros(self.scheduled_at),
            created_at: Timestamp::from_micros(self.created_at),
            updated_at: Timestamp::from_micros(self.updated_at),
            started_at: self.started_at.map(Timestamp::from_micros),
            finished_at: self.finished_at.map(Timestamp::from_micros),
            lease_token: self.lease_token.as_deref().map(str::parse).transpose()?,
            lease_expires_at: self.lease_expires_at.map(Timestamp::from_micros),
            worker: self.worker,
            cancel_requested: self.cancel_requested,
            follow_ups_due: self.follow_ups_due,
            parent_id: self.parent_id.as_deref().map(str::parse).transpose()?,
            correlation_id: self.correlation_id,
            priority: i16::try_from(self.priority)
                .map_err(|_| Error::Corrupt(format!("priority {} is out of range", self.priority)))?,
            unique: UniqueKey::from_stored(self.unique_key, self.unique_window),
            workflow: match (self.workflow_id, self.step) {
                (Some(workflow_id), Some(step)) => Some(StepOf { workflow_id: workflow_id.parse()?, step }),
                (None, None) => None,
                (w, s) => {
                    return Err(Error::Corrupt(format!(
                        "workflow id {w:?} and step {s:?} must be both set or both empty"
                    )));
                }
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_schedule_step_fires_only_from_the_slot_read_and_after_the_latest_fired() {
        let row =
            crate::NewCommand::raw("tick", serde_json::json!({})).resolve(Timestamp::from_micros(5)).unwrap();
        let fire = ScheduleFire {
            name: "s".into(),
            expected_next: Timestamp::from_micros(10),
            expected_version: 3,
            fire: Some((Timestamp::from_micros(10), row)),
            next_fire: Timestamp::from_micros(20),
            missed: 0,
            now: Timestamp::from_micros(12),
        };
        assert!(
            matches!(ScheduleStep::decide(Some((10, None, 3)), &fire), ScheduleStep::Fire(t, _) if t.as_micros() == 10)
        );
        assert!(matches!(ScheduleStep::decide(Some((10, Some(9), 3)), &fire), ScheduleStep::Fire(..)));
        assert_eq!(
            ScheduleStep::decide(Some((10, Some(10), 3)), &fire),
            ScheduleStep::Advance,
            "fired already"
        );
        assert_eq!(
            ScheduleStep::decide(Some((20, Some(10), 4)), &fire),
            ScheduleStep::Lost,
            "stepped by another"
        );
        assert_eq!(ScheduleStep::decide(Some((10, None, 4)), &fire), ScheduleStep::Lost, "saved again");
        assert_eq!(ScheduleStep::decide(None, &fire), ScheduleStep::Lost, "removed");
        let skip = ScheduleFire { fire: None, ..fire.clone() };
        assert_eq!(ScheduleStep::decide(Some((10, None, 3)), &skip), ScheduleStep::Advance);
    }
    use crate::store::LeaseToken;

    fn insert_rows(n: usize) -> Vec<InsertCommand> {
        let now = Timestamp::from_millis(1_000);
        (0..n).map(|_| crate::NewCommand::raw("job", serde_json::json!({})).resolve(now).unwrap()).collect()
    }

    #[test]
    fn edges_keep_the_listed_order_and_reject_what_cannot_run() {
        let mut r = insert_rows(4);
        let (a, b, c) = (r[0].id, r[1].id, r[2].id);
        r[3].depends_on = vec![c, a, c, b];
        let refs: Vec<&InsertCommand> = r.iter().collect();
        let found = dependency_edges(&refs).unwrap();
        let listed: Vec<(CommandId, u32)> = found.iter().map(|e| (e.dependency, e.position)).collect();
        assert_eq!(listed, vec![(c, 0), (a, 1), (b, 2)]);

        let outsider = insert_rows(1)[0].id;
        let mut r = insert_rows(2);
        r[1].depends_on = vec![outsider];
        let refs: Vec<&InsertCommand> = r.iter().collect();
        assert!(
            matches!(dependency_edges(&refs), Err(Error::InvalidConfig(m)) if m.contains("not inserted with it"))
        );

        let mut r = insert_rows(3);
        let (a, b, c) = (r[0].id, r[1].id, r[2].id);
        r[0].depends_on = vec![c];
        r[1].depends_on = vec![a];
        r[2].depends_on = vec![b];
        let refs: Vec<&InsertCommand> = r.iter().collect();
        assert!(matches!(dependency_edges(&refs), Err(Error::InvalidConfig(m)) if m.contains("cycle")));

        let mut r = insert_rows(1);
        r[0].depends_on = vec![r[0].id];
        let refs: Vec<&InsertCommand> = r.iter().collect();
        assert!(matches!(dependency_edges(&refs), Err(Error::InvalidConfig(m)) if m.contains("itself")));
    }

    #[test]
    fn policy_encoder_matches_encode_policy() {
        let mut encoder = PolicyEncoder::default();
        for policy in
            [RetryPolicy::default(), RetryPolicy::default(), RetryPolicy::immediate(), RetryPolicy::default()]
        {
            assert_eq!(encoder.encode(&policy).unwrap(), encode_policy(&policy).unwrap());
        }
    }

    fn raw() -> RawCommand {
        RawCommand {
            id: CommandId::generate(Timestamp::from_millis(1)).to_string(),
            name: "job".into(),
            target: "default".into(),
            state: "running".into(),
            input: "{}".into(),
            output: None,
            error_kind: Some("timeout".into()),
            error: Some("too slow".into()),
            attempts: 2,
            max_attempts: 4,
            timeout_ms: 5_000,
            retry_policy: encode_policy(&RetryPolicy::default()).unwrap(),
            scheduled_at: 1,
            created_at: 1,
            updated_at: 2,
            started_at: Some(2),
            finished_at: None,
            lease_token: Some(LeaseToken::generate().to_string()),
            lease_expires_at: Some(9),
            worker: Some("w".into()),
            cancel_requested: false,
            follow_ups_due: false,
            parent_id: None,
            correlation_id: "c".into(),
            workflow_id: None,
            step: None,
            priority: 0,
            unique_key: None,
            unique_window: 0,
        }
    }

    #[test]
    fn redaction_hides_passwords_only() {
        assert_eq!(redact_url("mysql://u:p@ss@h/x?ssl=true"), "mysql://u:***@h/x?ssl=true");
        assert_eq!(redact_url("postgres://root@127.0.0.1:5432/test"), "postgres://root@127.0.0.1:5432/test");
        assert_eq!(redact_url("postgres://h/db?Password=x"), "postgres://h/db?Password=***");
        assert_eq!(redact_url("not a url"), "<not a URL>");
    }

    #[test]
    fn pending_migrations_refuses_newer_schemas() {
        let prefix = "orch_";
        let known = [(1, "a"), (2, "b")];
        let missing = pending_migrations(&known, &[1], "orch-x", prefix).unwrap();
        assert_eq!(missing, vec![&(2, "b")]);
        assert!(pending_migrations(&known, &[1, 2], "orch-x", prefix).unwrap().is_empty());
        let err = pending_migrations(&known, &[1, 2, 3], "orch-x", prefix).unwrap_err();
        assert!(matches!(err, Error::InvalidConfig(ref m) if m.contains("version 3")), "{err}");
        assert!(check_pool_options(0, Duration::from_secs(1)).is_err());
        assert!(check_pool_options(1, Duration::ZERO).is_err());
    }

    #[test]
    fn decodes_a_valid_row() {
        let record = raw().into_record().unwrap();
        assert_eq!(record.state, State::Running);
        assert_eq!(record.error.unwrap().kind, FailureKind::Timeout);
        assert_eq!(record.timeout, Duration::from_secs(5));
    }

    #[test]
    fn corrupt_columns_are_typed_errors() {
        let cases: Vec<RawCommand> = vec![
            RawCommand { state: "zombie".into(), ..raw() },
            RawCommand { id: "not-a-uuid".into(), ..raw() },
            RawCommand { error_kind: Some("meteor".into()), ..raw() },
            RawCommand { retry_policy: "{".into(), ..raw() },
            RawCommand { lease_token: Some("x".into()), ..raw() },
            RawCommand { workflow_id: Some("not-a-uuid".into()), step: Some("a".into()), ..raw() },
            RawCommand { step: Some("a".into()), ..raw() },
            RawCommand { priority: 40_000, ..raw() },
        ];
        for case in cases {
            assert!(matches!(case.clone().into_record(), Err(Error::Corrupt(_))), "{case:?}");
        }
    }
}
