//! Helpers for testing handlers: run one inline with no store, or drive a queue on a
//! real store step by step, on a manual clock.
//!
//! # Inline, with no store
//!
//! [`run_inline`] runs the handler a [`Registry`] holds for a command once, in the
//! caller's task, and reports what a worker would make of the attempt: the typed
//! output or the [`HandlerError`], the follow-ups its `on_success` or `on_failure`
//! hook chains, and the commands it pushed through [`Context::push`].
//!
//! ```
//! use orch::testing::run_inline;
//! use orch::{Command, Context, HandlerError, NewCommand, Registry};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Debug, PartialEq, Serialize, Deserialize)]
//! struct SignUpCommand { email: String }
//!
//! #[derive(Debug, PartialEq, Serialize, Deserialize)]
//! struct WelcomeCommand { to: String }
//!
//! impl Command for WelcomeCommand { type Output = (); }
//!
//! impl Command for SignUpCommand {
//!     type Output = u64;
//!     fn on_success(&self, _user_id: &u64) -> Vec<NewCommand> {
//!         vec![NewCommand::of(&WelcomeCommand { to: self.email.clone() })]
//!     }
//! }
//!
//! async fn sign_up(cmd: SignUpCommand, _ctx: Context) -> Result<u64, HandlerError> {
//!     if !cmd.email.contains('@') {
//!         return Err(HandlerError::permanent("not an email address"));
//!     }
//!     Ok(7)
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> orch::Result<()> {
//! let mut registry = Registry::new();
//! registry.register_fn(sign_up)?;
//!
//! let run = run_inline(&registry, &SignUpCommand { email: "ada@example.com".into() }).await?;
//! assert_eq!(run.result, Ok(7));
//! run.assert_follow_up(&WelcomeCommand { to: "ada@example.com".into() });
//!
//! let run = run_inline(&registry, &SignUpCommand { email: "nobody".into() }).await?;
//! assert!(run.failed_for_good());
//! assert!(run.follow_ups.is_empty());
//! # Ok(()) }
//! ```
//!
//! # On a store, step by step
//!
//! A [`TestQueue`] pairs a store with a [`ManualClock`]: pushes go to the store, and
//! [`TestQueue::run_until_idle`] runs every command that is due by the clock (their
//! follow-ups and the workflow steps they unblock too) until nothing due is left,
//! with no worker running in the background and no real waiting. Time moves only
//! when the test calls [`TestQueue::advance`] (or [`TestQueue::advance_to_next_due`]),
//! so a retry's backoff, a delay or a saga's timeout is reached exactly.
//!
//! ```no_run
//! use std::sync::Arc;
//! use std::time::Duration;
//! use orch::testing::TestQueue;
//! use orch::{Command, Context, HandlerError, Registry, Status, Store};
//! # use serde::{Deserialize, Serialize};
//! # #[derive(Debug, PartialEq, Serialize, Deserialize)]
//! # struct FetchCommand { url: String }
//! # impl Command for FetchCommand { type Output = u16; }
//!
//! async fn fetch(_cmd: FetchCommand, ctx: Context) -> Result<u16, HandlerError> {
//!     // Fails the first attempt, as a flaky server would.
//!     if ctx.attempt() == 1 { Err(HandlerError::new("connection reset")) } else { Ok(200) }
//! }
//!
//! # async fn demo(store: Arc<dyn Store>) -> orch::Result<()> {
//! let mut registry = Registry::new();
//! registry.register_fn(fetch)?;
//! let queue = TestQueue::new(store, registry)?;
//!
//! let id = queue.push(&FetchCommand { url: "https://example.com".into() }).await?;
//! let first = queue.run_until_idle().await?;
//! assert_eq!((first.ran(), first.retried()), (1, 1));
//!
//! // The retry is due 1 s (± 20 % jitter) later.
//! queue.advance(Duration::from_secs(2));
//! let second = queue.run_until_idle().await?;
//! assert_eq!(second.succeeded(), 1);
//! assert_eq!(queue.output::<FetchCommand>(id).await?, Some(200));
//! queue.assert_pushed(&FetchCommand { url: "https://example.com".into() }).await?;
//! # Ok(()) }
//! ```

use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use crate::client::{Orch, Status};
use crate::clock::{Clock, ManualClock, Timestamp};
use crate::command::{Command, DEFAULT_MAX_INPUT_BYTES, NewCommand, check_input_sizes};
use crate::error::{Error, Failure, FailureKind, HandlerError, Result};
use crate::handler::{Context, Registry, RunResult};
use crate::store::{
    CancelStatus, ClaimParams, ClaimedCommand, CommandId, CommandRecord, Completion, CompletionStatus,
    CountRow, HeartbeatParams, InsertCommand, JournalEntry, LeaseStatus, ListCursor, ListOrder, ListParams,
    Outcome, QueueStats, Rescued, RetryStatus, SagaQuery, SagaRecord, SagaWrite, SagaWriteStatus, State,
    Store, WorkerRecord, WorkflowId, WorkflowQuery, WorkflowStepRecord, WorkflowSummary,
};
use crate::worker::{Worker, WorkerConfig};

// ---------------------------------------------------------------------------------
// Inline runs
// ---------------------------------------------------------------------------------

/// Runs the handler `registry` holds for `command` once, inline, with no store: see
/// [`Inline`] for what the attempt looks like to the handler.
pub async fn run_inline<C: Command>(registry: &Registry, command: &C) -> Result<InlineRun<C>> {
    Inline::new(registry).run(command).await
}

/// Runs a handler inline, with no store: the options of the attempt, then
/// [`Inline::run`].
///
/// The handler gets a [`Context`] with a fresh id (also its correlation id), attempt 1
/// of `C::RETRIES + 1` unless [`Inline::attempt`] says otherwise, a cancellation token
/// that never fires, and a client on a [`ManualClock`] (2030-01-01 unless
/// [`Inline::clock`] gives another) whose store records pushes
/// ([`InlineRun::pushed`]) and refuses everything else: a handler that reads the
/// store (a workflow step asking for [`Context::dependency_output`], a saga) needs a
/// [`TestQueue`].
///
/// The command goes through JSON as it would through a store, and so does the output.
/// The command's timeout is not enforced (wrap the call in `tokio::time::timeout` to
/// bound it), and a handler that panics panics the caller.
#[derive(Debug, Clone)]
pub struct Inline<'r> {
    registry: &'r Registry,
    attempt: Option<u32>,
    clock: Option<ManualClock>,
}

impl<'r> Inline<'r> {
    /// Inline runs of the handlers in `registry`.
    pub fn new(registry: &'r Registry) -> Self {
        Inline { registry, attempt: None, clock: None }
    }

    /// Runs the attempt with this number (1 for the first), clamped to the command's
    /// last. On the last attempt a failure is final, so `on_failure` follow-ups appear.
    pub fn attempt(mut self, attempt: u32) -> Self {
        self.attempt = Some(attempt.max(1));
        self
    }

    /// Runs the command's last attempt (`C::RETRIES + 1`).
    pub fn last_attempt(mut self) -> Self {
        self.attempt = Some(u32::MAX);
        self
    }

    /// The clock the handler's client reads.
    pub fn clock(mut self, clock: ManualClock) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Runs `command`'s handler once. Errors when no handler is registered for its
    /// name, when it does not go through JSON and back, or when its follow-ups could
    /// not be pushed (a worker fails such a command); the handler's own failure is
    /// [`InlineRun::result`].
    pub async fn run<C: Command>(self, command: &C) -> Result<InlineRun<C>> {
        let name = C::name().into_owned();
        let handler = self
            .registry
            .get(&name)
            .ok_or_else(|| Error::invalid_config(format!("no handler for command `{name}` is registered")))?;
        let input = serde_json::to_string(command)
            .map_err(|source| Error::Encode { what: format!("input of command `{name}`"), source })?;
        serde_json::from_str::<C>(&input)
            .map_err(|source| Error::Decode { what: format!("input of command `{name}`"), source })?;

        let clock = self.clock.unwrap_or_else(ManualClock::starting_2030);
        let now = clock.now();
        let max_attempts = C::RETRIES.saturating_add(1);
        let attempt = self.attempt.unwrap_or(1).min(max_attempts);
        let id = CommandId::generate(now);
        let correlation_id = id.to_string();
        let store = Arc::new(InlineStore::default());
        let orch = Orch::new(Arc::clone(&store) as Arc<dyn Store>).with_clock(Arc::new(clock.clone()));
        let ctx = Context {
            id,
            name: name.clone(),
            attempt,
            max_attempts,
            correlation_id: correlation_id.clone(),
            workflow: None,
            token: CancellationToken::new(),
            orch,
        };
        let future = handler.run(&input, ctx).map_err(|failure| {
            Error::invalid_config(format!("handler for `{name}` refused its input: {}", failure.message))
        })?;
        let (result, follow_ups) = match future.await {
            RunResult::Succeeded { output, follow_ups } => {
                let output = serde_json::from_str::<C::Output>(&output).map_err(|source| Error::Decode {
                    what: format!("output of command `{name}`"),
                    source,
                })?;
                (Ok(output), follow_ups)
            }
            RunResult::Failed(error) => {
                let final_failure = !error.is_retryable() || attempt >= max_attempts;
                let follow_ups = if final_failure {
                    handler.failure_follow_ups(&input, &Failure::new(FailureKind::Error, error.message()))
                } else {
                    Vec::new()
                };
                (Err(error), follow_ups)
            }
        };
        let now = clock.now();
        let follow_ups = follow_ups
            .into_iter()
            .map(|f| {
                f.check_no_unique_key("chained as a follow-up")?;
                f.into_insert(now, Some((id, &correlation_id)))
            })
            .collect::<Result<Vec<_>>>()?;
        check_input_sizes(&follow_ups, Some(DEFAULT_MAX_INPUT_BYTES))?;
        let pushed = std::mem::take(&mut *store.pushed.lock().unwrap_or_else(|e| e.into_inner()));
        Ok(InlineRun { id, attempt, max_attempts, result, follow_ups, pushed })
    }
}

/// What one inline attempt did (see [`Inline`]).
#[derive(Debug)]
pub struct InlineRun<C: Command> {
    /// The id the handler saw in its context.
    pub id: CommandId,
    /// The attempt's number.
    pub attempt: u32,
    /// The attempts the command is allowed.
    pub max_attempts: u32,
    /// The handler's output (decoded from its JSON form), or its error.
    pub result: std::result::Result<C::Output, HandlerError>,
    /// The follow-ups a worker would push with this outcome: the `on_success` ones
    /// after a success, the `on_failure` ones after a failure that is final (a
    /// permanent error or the last attempt), none when the attempt would be retried.
    pub follow_ups: Vec<InsertCommand>,
    /// The commands the handler pushed itself through its context, in order.
    pub pushed: Vec<InsertCommand>,
}

impl<C: Command> InlineRun<C> {
    /// Whether the handler succeeded.
    pub fn succeeded(&self) -> bool {
        self.result.is_ok()
    }

    /// Whether a worker would run the command again after this attempt.
    pub fn will_retry(&self) -> bool {
        matches!(&self.result, Err(e) if e.is_retryable() && self.attempt < self.max_attempts)
    }

    /// Whether the command would fail for good with this attempt.
    pub fn failed_for_good(&self) -> bool {
        self.result.is_err() && !self.will_retry()
    }

    /// The follow-ups of type `D`, decoded.
    ///
    /// # Panics
    ///
    /// When one named like `D` does not decode as `D`.
    pub fn follow_ups_of<D: Command>(&self) -> Vec<D> {
        decode_all(self.follow_ups.iter().map(|c| (c.name.as_str(), c.input.as_str())))
    }

    /// The commands of type `D` the handler pushed itself, decoded.
    ///
    /// # Panics
    ///
    /// When one named like `D` does not decode as `D`.
    pub fn pushed_of<D: Command>(&self) -> Vec<D> {
        decode_all(self.pushed.iter().map(|c| (c.name.as_str(), c.input.as_str())))
    }

    /// Asserts that a follow-up of type `D` with this input is chained.
    ///
    /// # Panics
    ///
    /// When none is, listing the follow-ups there are.
    #[track_caller]
    pub fn assert_follow_up<D: Command + PartialEq + Debug>(&self, expected: &D) {
        assert_listed("follow-up", expected, &self.follow_ups_of::<D>(), &names(&self.follow_ups));
    }

    /// Asserts that the handler pushed a command of type `D` with this input.
    ///
    /// # Panics
    ///
    /// When it did not, listing what it pushed.
    #[track_caller]
    pub fn assert_pushed<D: Command + PartialEq + Debug>(&self, expected: &D) {
        assert_listed("pushed command", expected, &self.pushed_of::<D>(), &names(&self.pushed));
    }
}

fn names(rows: &[InsertCommand]) -> Vec<&str> {
    rows.iter().map(|r| r.name.as_str()).collect()
}

fn decode_all<'a, D: Command>(rows: impl Iterator<Item = (&'a str, &'a str)>) -> Vec<D> {
    let name = D::name();
    rows.filter(|(n, _)| *n == name)
        .map(|(_, input)| {
            serde_json::from_str(input)
                .unwrap_or_else(|e| panic!("a `{name}` command's input {input} does not decode: {e}"))
        })
        .collect()
}

#[track_caller]
fn assert_listed<D: Command + PartialEq + Debug>(what: &str, expected: &D, found: &[D], all: &[&str]) {
    if !found.contains(expected) {
        panic!(
            "expected a {what} `{name}` with input {expected:?}; the `{name}` ones are {found:?} (all names: {all:?})",
            name = D::name()
        );
    }
}

/// The store behind an inline run's client: records pushes, refuses the rest.
#[derive(Debug, Default)]
struct InlineStore {
    pushed: Mutex<Vec<InsertCommand>>,
}

fn no_store<T>(what: &str) -> Result<T> {
    Err(Error::backend(
        "inline",
        format!("an inline run has no store, so `{what}` is not available; use orch::testing::TestQueue"),
    ))
}

#[async_trait]
impl Store for InlineStore {
    fn backend(&self) -> &'static str {
        "inline"
    }

    async fn migrate(&self) -> Result<()> {
        Ok(())
    }

    async fn enqueue(&self, commands: Vec<InsertCommand>) -> Result<Vec<CommandId>> {
        let ids = commands.iter().map(|c| c.id).collect();
        self.pushed.lock().unwrap_or_else(|e| e.into_inner()).extend(commands);
        Ok(ids)
    }

    async fn claim(&self, _: ClaimParams) -> Result<Vec<ClaimedCommand>> {
        no_store("claim")
    }

    async fn heartbeat(&self, _: HeartbeatParams) -> Result<Vec<LeaseStatus>> {
        no_store("heartbeat")
    }

    async fn complete(&self, _: Vec<Completion>) -> Result<Vec<CompletionStatus>> {
        no_store("complete")
    }

    async fn cancel(&self, _: CommandId, _: Timestamp) -> Result<CancelStatus> {
        no_store("cancel")
    }

    async fn rescue(&self, _: Timestamp, _: usize) -> Result<Vec<Rescued>> {
        no_store("rescue")
    }

    async fn follow_ups_due(&self, _: &[String], _: usize) -> Result<Vec<CommandRecord>> {
        no_store("follow_ups_due")
    }

    async fn resolve_follow_ups(&self, _: CommandId, _: Vec<InsertCommand>, _: Timestamp) -> Result<bool> {
        no_store("resolve_follow_ups")
    }

    async fn get(&self, _: CommandId) -> Result<Option<CommandRecord>> {
        no_store("get")
    }

    async fn list(&self, _: ListParams) -> Result<Vec<CommandRecord>> {
        no_store("list")
    }

    async fn counts(&self) -> Result<Vec<CountRow>> {
        no_store("counts")
    }

    async fn journal(&self, _: CommandId) -> Result<Vec<JournalEntry>> {
        no_store("journal")
    }

    async fn workflow_steps(&self, _: WorkflowId) -> Result<Vec<WorkflowStepRecord>> {
        no_store("workflow_steps")
    }

    async fn saga(&self, _: &str, _: &str) -> Result<Option<SagaRecord>> {
        no_store("saga")
    }

    async fn save_saga(&self, _: SagaWrite) -> Result<SagaWriteStatus> {
        no_store("save_saga")
    }

    async fn sagas(&self, _: SagaQuery) -> Result<Vec<SagaRecord>> {
        no_store("sagas")
    }

    async fn queue_stats(&self, _: Timestamp) -> Result<Vec<QueueStats>> {
        no_store("queue_stats")
    }

    async fn retry(&self, _: CommandId, _: Timestamp) -> Result<RetryStatus> {
        no_store("retry")
    }

    async fn workflows(&self, _: WorkflowQuery) -> Result<Vec<WorkflowSummary>> {
        no_store("workflows")
    }

    async fn record_worker(&self, _: WorkerRecord) -> Result<()> {
        no_store("record_worker")
    }

    async fn remove_worker(&self, _: &str) -> Result<()> {
        no_store("remove_worker")
    }

    async fn workers(&self) -> Result<Vec<WorkerRecord>> {
        no_store("workers")
    }

    async fn prune_workers(&self, _: Timestamp) -> Result<u64> {
        no_store("prune_workers")
    }

    async fn pause(&self, _: crate::PauseScope, _: Timestamp) -> Result<bool> {
        no_store("pause")
    }

    async fn prune_finished(&self, _: Timestamp, _: usize) -> Result<Option<u64>> {
        no_store("prune_finished")
    }

    async fn resume(&self, _: &crate::PauseScope) -> Result<bool> {
        no_store("resume")
    }

    async fn pauses(&self) -> Result<Vec<crate::PauseRecord>> {
        no_store("pauses")
    }

    async fn save_schedule(&self, _: crate::store::ScheduleRecord) -> Result<()> {
        no_store("save_schedule")
    }

    async fn remove_schedule(&self, _: &str) -> Result<bool> {
        no_store("remove_schedule")
    }

    async fn schedules(&self) -> Result<Vec<crate::store::ScheduleRecord>> {
        no_store("schedules")
    }

    async fn fire_schedule(&self, _: crate::store::ScheduleFire) -> Result<crate::store::FireStatus> {
        no_store("fire_schedule")
    }
}

// ---------------------------------------------------------------------------------
// A queue driven step by step
// ---------------------------------------------------------------------------------

/// The most attempts one [`TestQueue::run_until_idle`] call runs before it gives up.
pub const MAX_RUNS_UNTIL_IDLE: usize = 10_000;

/// A store, a registry and a [`ManualClock`], driven by the test: commands run only in
/// [`TestQueue::run_until_idle`] (and [`TestQueue::run_until_done`]), and time moves
/// only in [`TestQueue::advance`] (and [`TestQueue::advance_to_next_due`]).
///
/// The client ([`TestQueue::orch`]) reads the manual clock as it is, uncorrected by the
/// database's. Handlers run as a worker runs them, each in its own task, with their
/// outcomes, follow-ups, retries and backoff recorded by the store, but no lease is
/// renewed while they run and a command's timeout is measured on the manual clock, so
/// it fires only when another task advances the clock past it. A cancel request for a
/// running command is not seen.
///
/// See the [module documentation](self) for an example.
#[derive(Debug)]
pub struct TestQueue {
    orch: Orch,
    clock: ManualClock,
    worker: Worker,
    config: WorkerConfig,
    names: Vec<String>,
}

/// The worker id a [`TestQueue`] claims under unless its configuration names one.
pub const TEST_WORKER_ID: &str = "orch-test-queue";

impl TestQueue {
    /// A queue over `store` (migrated already) for the handlers of `registry`, on a
    /// manual clock starting at 2030-01-01, serving the default target.
    pub fn new(store: Arc<dyn Store>, registry: Registry) -> Result<Self> {
        Self::with_config(store, registry, ManualClock::starting_2030(), WorkerConfig::default())
    }

    /// A queue on `clock` whose claims follow `config` (its `instance_key`,
    /// `max_pull`, `lease_buffer` and `worker_id` matter; the intervals do not).
    pub fn with_config(
        store: Arc<dyn Store>,
        registry: Registry,
        clock: ManualClock,
        mut config: WorkerConfig,
    ) -> Result<Self> {
        config.worker_id.get_or_insert_with(|| TEST_WORKER_ID.to_owned());
        let orch = Orch::new(store).with_clock(Arc::new(clock.clone()));
        let names = registry.names();
        let worker = Worker::new(orch.clone(), registry, config.clone())?;
        Ok(TestQueue { orch, clock, worker, config, names })
    }

    /// The client, on the manual clock.
    pub fn orch(&self) -> &Orch {
        &self.orch
    }

    /// The manual clock.
    pub fn clock(&self) -> &ManualClock {
        &self.clock
    }

    /// The time by the manual clock.
    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// Moves the clock forward; nothing runs until [`TestQueue::run_until_idle`].
    pub fn advance(&self, by: Duration) {
        self.clock.advance(by);
    }

    /// Pushes a typed command with its type's defaults.
    pub async fn push<C: Command>(&self, command: &C) -> Result<CommandId> {
        self.orch.push(command).await
    }

    /// Pushes a command with per-push overrides.
    pub async fn push_new(&self, command: NewCommand) -> Result<CommandId> {
        self.orch.push_new(command).await
    }

    /// Runs every command that is due now, for this queue's target and handlers, and
    /// whatever becomes due as they finish (their follow-ups, the workflow steps they
    /// unblock, retries whose backoff is zero, follow-ups of commands cancelled or
    /// rescued meanwhile), until a claim finds nothing; the clock does not move. First
    /// it fires the [schedules](crate::schedule) due now (unless the configuration's
    /// `fire_schedules` is off), as a worker would.
    ///
    /// # Panics
    ///
    /// After [`MAX_RUNS_UNTIL_IDLE`] attempts with work still due (a handler that
    /// chains itself forever, say).
    pub async fn run_until_idle(&self) -> Result<RunSummary> {
        let mut summary = RunSummary::default();
        if self.config.fire_schedules {
            crate::schedule::fire_due(self.orch.store().as_ref(), self.now()).await?;
        }
        loop {
            let runs = self.worker.run_due_once().await?;
            if runs.is_empty() {
                return Ok(summary);
            }
            summary.attempts.extend(runs.into_iter().map(|run| AttemptRun {
                id: run.claimed.lease.id,
                name: run.claimed.name,
                attempt: run.claimed.attempt,
                outcome: run.outcome,
            }));
            assert!(
                summary.attempts.len() < MAX_RUNS_UNTIL_IDLE,
                "run_until_idle ran {} attempts and work is still due; does a handler chain itself forever? {:?}",
                summary.attempts.len(),
                summary.tally()
            );
        }
    }

    /// When the next pending command this queue would run becomes due: `None` when
    /// there is none, a time at or before now when one is due already.
    pub async fn next_due(&self) -> Result<Option<Timestamp>> {
        self.next_pending(None).await
    }

    /// The due time of the first pending command this queue serves, in due-time order,
    /// of those due strictly after `after` when given.
    async fn next_pending(&self, after: Option<Timestamp>) -> Result<Option<Timestamp>> {
        let mut params = ListParams {
            state: Some(State::Pending),
            target: Some(self.config.instance_key.clone()),
            order: ListOrder::Scheduled,
            // Every id sorts after the nil one, so this starts a microsecond after `after`.
            after: after.map(|at| ListCursor {
                key: at.as_micros().saturating_add(1),
                id: CommandId::from_uuid(uuid::Uuid::nil()),
            }),
            limit: 500,
            ..ListParams::default()
        };
        loop {
            let page = self.orch.store().list(params.clone()).await?;
            if let Some(found) = page.iter().find(|c| self.names.contains(&c.name)) {
                return Ok(Some(found.scheduled_at));
            }
            match page.last() {
                Some(last) => params.after = Some(ListCursor::of(last, ListOrder::Scheduled)),
                None => return Ok(None),
            }
        }
    }

    /// Moves the clock to when the next pending command becomes due (unless that is
    /// now or past); returns that time, `None` (the clock unmoved) when nothing is
    /// pending.
    pub async fn advance_to_next_due(&self) -> Result<Option<Timestamp>> {
        let next = self.next_due().await?;
        if let Some(at) = next
            && at > self.now()
        {
            self.clock.set(at);
        }
        Ok(next)
    }

    /// Runs until nothing this queue serves is pending later than now:
    /// [`TestQueue::run_until_idle`], then moving the clock to the next due time and
    /// running again, as often as it takes. Retries come at their backoff, delayed
    /// commands at their delay; a pending command the store does not hand out is
    /// passed over.
    ///
    /// # Panics
    ///
    /// After [`MAX_RUNS_UNTIL_IDLE`] attempts in all.
    pub async fn run_until_done(&self) -> Result<RunSummary> {
        let mut summary = self.run_until_idle().await?;
        while let Some(at) = self.next_pending(Some(self.now())).await? {
            self.clock.set(at);
            let more = self.run_until_idle().await?;
            summary.attempts.extend(more.attempts);
            assert!(
                summary.attempts.len() < MAX_RUNS_UNTIL_IDLE,
                "run_until_done ran {} attempts and work is still pending: {:?}",
                summary.attempts.len(),
                summary.tally()
            );
        }
        Ok(summary)
    }

    /// The command's status.
    pub async fn status(&self, id: CommandId) -> Result<Status> {
        self.orch.status(id).await
    }

    /// The typed output of a succeeded command; `None` while it has not succeeded.
    pub async fn output<C: Command>(&self, id: CommandId) -> Result<Option<C::Output>> {
        self.orch.output::<C>(id).await
    }

    /// Every stored command named like `C`, in the order they were pushed.
    pub async fn records<C: Command>(&self) -> Result<Vec<CommandRecord>> {
        let mut params =
            ListParams { name: Some(C::name().into_owned()), limit: 1_000, ..ListParams::default() };
        let mut all = Vec::new();
        loop {
            let page = self.orch.store().list(params.clone()).await?;
            match page.last() {
                Some(last) => params.after = Some(ListCursor::of(last, ListOrder::Created)),
                None => return Ok(all),
            }
            all.extend(page);
        }
    }

    /// The inputs of every command of type `C` in the store (pushed by the test, by
    /// handlers, or chained as follow-ups), in the order they were pushed.
    pub async fn pushed<C: Command>(&self) -> Result<Vec<C>> {
        let records = self.records::<C>().await?;
        records
            .iter()
            .map(|r| {
                serde_json::from_str(&r.input)
                    .map_err(|source| Error::Decode { what: format!("input of command {}", r.id), source })
            })
            .collect()
    }

    /// Asserts that a command of type `C` with this input is in the store.
    ///
    /// # Panics
    ///
    /// When none is, listing the inputs of the `C` commands there are.
    pub async fn assert_pushed<C: Command + PartialEq + Debug>(&self, expected: &C) -> Result<()> {
        let pushed = self.pushed::<C>().await?;
        assert!(
            pushed.contains(expected),
            "expected a `{name}` command with input {expected:?} to have been pushed; the `{name}` commands are {pushed:?}",
            name = C::name()
        );
        Ok(())
    }
}

/// What one [`TestQueue::run_until_idle`] (or [`TestQueue::run_until_done`]) ran.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunSummary {
    /// Every attempt, in the order they were claimed.
    pub attempts: Vec<AttemptRun>,
}

/// One attempt in a [`RunSummary`].
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptRun {
    /// The command.
    pub id: CommandId,
    /// Its name.
    pub name: String,
    /// Which attempt it was (1 for the first).
    pub attempt: u32,
    /// What was recorded; `None` when the attempt's lease was taken back first and
    /// nothing was.
    pub outcome: Option<Outcome>,
}

impl RunSummary {
    /// How many attempts ran.
    pub fn ran(&self) -> usize {
        self.attempts.len()
    }

    /// How many attempts succeeded.
    pub fn succeeded(&self) -> usize {
        self.count(|o| matches!(o, Outcome::Succeeded { .. }))
    }

    /// How many attempts failed with a retry to come.
    pub fn retried(&self) -> usize {
        self.count(|o| matches!(o, Outcome::Retry { .. }))
    }

    /// How many attempts failed for good.
    pub fn failed(&self) -> usize {
        self.count(|o| matches!(o, Outcome::Failed { .. }))
    }

    /// How many attempts ended cancelled.
    pub fn cancelled(&self) -> usize {
        self.count(|o| matches!(o, Outcome::Cancelled { .. }))
    }

    /// The attempts of commands named like `C`.
    pub fn of<C: Command>(&self) -> Vec<&AttemptRun> {
        let name = C::name();
        self.attempts.iter().filter(|a| a.name == name).collect()
    }

    fn count(&self, matches: impl Fn(&Outcome) -> bool) -> usize {
        self.attempts.iter().filter(|a| a.outcome.as_ref().is_some_and(&matches)).count()
    }

    fn tally(&self) -> [(&'static str, usize); 4] {
        [
            ("succeeded", self.succeeded()),
            ("retried", self.retried()),
            ("failed", self.failed()),
            ("cancelled", self.cancelled()),
        ]
    }
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct ChargeCommand {
        cents: u64,
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct ReceiptCommand {
        cents: u64,
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct AlertCommand {
        reason: String,
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct AuditCommand {
        attempt: u32,
    }

    impl Command for ReceiptCommand {
        type Output = ();
    }

    impl Command for AlertCommand {
        type Output = ();
    }

    impl Command for AuditCommand {
        type Output = ();
    }

    impl Command for ChargeCommand {
        type Output = String;
        const RETRIES: u32 = 2;

        fn on_success(&self, _charge_id: &String) -> Vec<NewCommand> {
            vec![NewCommand::of(&ReceiptCommand { cents: self.cents })]
        }

        fn on_failure(&self, error: &Failure) -> Vec<NewCommand> {
            vec![NewCommand::of(&AlertCommand { reason: error.message.clone() })]
        }
    }

    /// Charges under 100 cents are refused for good, 13 cents fails (retryably), and
    /// every attempt pushes an audit record first.
    async fn charge(cmd: ChargeCommand, ctx: Context) -> std::result::Result<String, HandlerError> {
        ctx.push(NewCommand::of(&AuditCommand { attempt: ctx.attempt() })).await?;
        match cmd.cents {
            13 => Err(HandlerError::new("card network timed out")),
            c if c < 100 => Err(HandlerError::permanent("below the minimum charge")),
            c => Ok(format!("ch_{c}_{}", ctx.attempt())),
        }
    }

    fn registry() -> Registry {
        let mut registry = Registry::new();
        registry.register_fn(charge).unwrap();
        registry
    }

    #[tokio::test]
    async fn success_returns_the_output_and_on_success_follow_ups() {
        let registry = registry();
        let run = run_inline(&registry, &ChargeCommand { cents: 500 }).await.unwrap();
        assert_eq!(run.result, Ok("ch_500_1".to_owned()));
        assert!(run.succeeded() && !run.will_retry() && !run.failed_for_good());
        assert_eq!((run.attempt, run.max_attempts), (1, 3));
        assert_eq!(run.follow_ups_of::<ReceiptCommand>(), vec![ReceiptCommand { cents: 500 }]);
        run.assert_follow_up(&ReceiptCommand { cents: 500 });
        assert!(run.follow_ups_of::<AlertCommand>().is_empty());
        // Follow-ups are resolved as a worker resolves them: children of the command.
        let receipt = &run.follow_ups[0];
        assert_eq!(receipt.parent_id, Some(run.id));
        assert_eq!(receipt.correlation_id, run.id.to_string());
        // What the handler pushed itself is recorded apart from the follow-ups.
        run.assert_pushed(&AuditCommand { attempt: 1 });
        assert_eq!(run.pushed[0].parent_id, Some(run.id));
    }

    #[tokio::test]
    async fn a_retryable_failure_chains_nothing_until_the_last_attempt() {
        let registry = registry();
        let first = run_inline(&registry, &ChargeCommand { cents: 13 }).await.unwrap();
        assert_eq!(first.result, Err(HandlerError::new("card network timed out")));
        assert!(first.will_retry() && !first.failed_for_good());
        assert!(first.follow_ups.is_empty());

        let last = Inline::new(&registry).last_attempt().run(&ChargeCommand { cents: 13 }).await.unwrap();
        assert_eq!(last.attempt, 3);
        assert!(last.failed_for_good() && !last.will_retry());
        last.assert_follow_up(&AlertCommand { reason: "card network timed out".into() });
        last.assert_pushed(&AuditCommand { attempt: 3 });

        let clamped = Inline::new(&registry).attempt(9).run(&ChargeCommand { cents: 13 }).await.unwrap();
        assert_eq!(clamped.attempt, 3);
        let second = Inline::new(&registry).attempt(2).run(&ChargeCommand { cents: 500 }).await.unwrap();
        assert_eq!(second.result.as_deref(), Ok("ch_500_2"));
    }

    #[tokio::test]
    async fn a_permanent_failure_is_final_on_the_first_attempt() {
        let registry = registry();
        let run = run_inline(&registry, &ChargeCommand { cents: 5 }).await.unwrap();
        assert!(run.failed_for_good());
        assert!(!run.result.as_ref().unwrap_err().is_retryable());
        assert_eq!(
            run.follow_ups_of::<AlertCommand>(),
            vec![AlertCommand { reason: "below the minimum charge".into() }]
        );
    }

    #[tokio::test]
    async fn the_context_reads_the_given_clock_and_has_no_store() {
        #[derive(Serialize, Deserialize)]
        struct NowCommand;
        impl Command for NowCommand {
            type Output = (Timestamp, bool);
        }
        let mut registry = Registry::new();
        registry
            .register_fn(|_: NowCommand, ctx: Context| async move {
                let store_refused = ctx.orch().get(ctx.id()).await.is_err();
                Ok::<_, HandlerError>((ctx.orch().clock().now(), store_refused))
            })
            .unwrap();
        let clock = ManualClock::new(Timestamp::from_millis(42_000));
        let run = Inline::new(&registry).clock(clock).run(&NowCommand).await.unwrap();
        assert_eq!(run.result, Ok((Timestamp::from_millis(42_000), true)));
    }

    #[tokio::test]
    async fn an_unregistered_command_is_an_error() {
        let err = run_inline(&Registry::new(), &ChargeCommand { cents: 1 }).await.unwrap_err();
        assert!(err.to_string().contains("no handler for command `charge`"), "{err}");
    }

    #[tokio::test]
    #[should_panic(expected = "expected a follow-up `receipt` with input ReceiptCommand { cents: 7 }")]
    async fn a_missing_follow_up_panics_with_what_there_is() {
        let registry = registry();
        let run = run_inline(&registry, &ChargeCommand { cents: 500 }).await.unwrap();
        run.assert_follow_up(&ReceiptCommand { cents: 7 });
    }
}
