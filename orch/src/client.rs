//! The client: push commands, read their state, cancel them, wait for them.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use crate::clock::Timestamp;
use crate::clock::{SharedClock, SyncedClock, SystemClock};
use crate::command::{Command, NewCommand};
use crate::error::{Error, Failure, FailureKind, Result};
use crate::saga::{SagaData, SagaEvent, SagaInstance, decode_instance, event_for};
use crate::schedule::Schedule;
use crate::store::{
    CancelStatus, CommandId, CommandRecord, JournalEntry, ListParams, PauseRecord, PauseScope, Pushed,
    RetryStatus, SagaQuery, SagaRecord, SagaStatus, ScheduleRecord, State, Store, WorkflowId,
};
use crate::workflow::{Workflow, WorkflowState, WorkflowStatus};

/// The outcome of a command as the API reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// Not finished yet: blocked, pending or running.
    InProgress(State),
    /// Succeeded, with its output as JSON text.
    Success(String),
    /// Failed for good, with the last failure.
    Failed(Failure),
    /// The last attempt ran past its timeout and no attempts were left.
    TimedOut(Failure),
    /// Cancelled.
    Cancelled,
    /// No such command.
    NotFound,
}

impl Status {
    /// The status of a stored command.
    pub fn of(record: &CommandRecord) -> Status {
        let failure = || {
            record
                .error
                .clone()
                .unwrap_or_else(|| Failure::new(FailureKind::Error, "failed without a recorded error"))
        };
        match record.state {
            State::Blocked | State::Pending | State::Running => Status::InProgress(record.state),
            State::Succeeded => Status::Success(record.output.clone().unwrap_or_else(|| "null".to_owned())),
            State::Failed => {
                let failure = failure();
                if failure.kind == FailureKind::Timeout {
                    Status::TimedOut(failure)
                } else {
                    Status::Failed(failure)
                }
            }
            State::Cancelled => Status::Cancelled,
        }
    }

    /// Whether the command has finished (or does not exist).
    pub fn is_final(&self) -> bool {
        !matches!(self, Status::InProgress(_))
    }
}

/// How often a client measures its clock against the database's by default.
pub const DEFAULT_CLOCK_SYNC: Duration = Duration::from_secs(60);

/// The smallest offset to the database's clock that a client corrects; below it the
/// client keeps its own clock (see [`Orch::sync_clock`]).
pub const MIN_CORRECTION: Duration = Duration::from_millis(10);

/// Keeps a client's clock in step with its database's.
#[derive(Debug)]
struct ClockSync {
    clock: Arc<SyncedClock>,
    every: Duration,
    /// When the offset was last measured, by the uncorrected clock (micros);
    /// `i64::MIN` before the first measurement.
    measured_at: std::sync::atomic::AtomicI64,
    /// One measurement at a time.
    measuring: tokio::sync::Mutex<()>,
}

impl ClockSync {
    fn new(inner: SharedClock, every: Duration) -> Arc<Self> {
        Arc::new(ClockSync {
            clock: Arc::new(SyncedClock::new(inner)),
            every,
            measured_at: std::sync::atomic::AtomicI64::new(i64::MIN),
            measuring: tokio::sync::Mutex::new(()),
        })
    }

    fn due(&self) -> bool {
        let last = self.measured_at.load(std::sync::atomic::Ordering::Relaxed);
        last == i64::MIN || self.clock.inner().now() >= Timestamp::from_micros(last) + self.every
    }
}

/// Wakes local tasks when commands are pushed or finished in this process.
#[derive(Debug, Default)]
pub(crate) struct Signals {
    pub(crate) pushed: Notify,
    pub(crate) finished: Notify,
    /// A schedule was saved: workers read the schedules again.
    pub(crate) scheduled: Notify,
}

/// The handle applications use: push, read, cancel, wait. Cheap to clone.
///
/// ```
/// # async fn demo(store: std::sync::Arc<dyn orch::Store>) -> orch::Result<()> {
/// use orch::{Command, Orch};
/// # #[derive(serde::Serialize, serde::Deserialize)] struct PingCommand;
/// # impl Command for PingCommand { type Output = (); }
/// let orch = Orch::new(store);
/// let id = orch.push(&PingCommand).await?;
/// println!("{:?}", orch.status(id).await?);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Orch {
    store: Arc<dyn Store>,
    clock: SharedClock,
    signals: Arc<Signals>,
    wait_poll: Duration,
    max_input_bytes: Option<usize>,
    sync: Option<Arc<ClockSync>>,
}

impl std::fmt::Debug for Orch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Orch").field("backend", &self.store.backend()).field("clock", &self.clock).finish()
    }
}

impl Orch {
    /// A client over `store`, with the system clock kept in step with the database's
    /// (see [`Orch::sync_clock`]).
    pub fn new(store: Arc<dyn Store>) -> Self {
        let sync = ClockSync::new(Arc::new(SystemClock), DEFAULT_CLOCK_SYNC);
        Orch {
            store,
            clock: Arc::clone(&sync.clock) as SharedClock,
            sync: Some(sync),
            signals: Arc::default(),
            wait_poll: Duration::from_millis(100),
            max_input_bytes: Some(crate::command::DEFAULT_MAX_INPUT_BYTES),
        }
    }

    /// Uses `clock` for every time this client and its workers read, as it is: a
    /// clock given here (a [`crate::ManualClock`] in tests, say) is not corrected to the
    /// database's unless [`Orch::sync_clock_every`] is called after this.
    pub fn with_clock(mut self, clock: SharedClock) -> Self {
        self.clock = clock;
        self.sync = None;
        self
    }

    /// Keeps this client's clock in step with the database's, measuring the offset
    /// between them at first use and then `every` (default
    /// [`DEFAULT_CLOCK_SYNC`], on for [`Orch::new`]); `None` turns it off.
    ///
    /// Every time `orch` writes or compares (due times, lease ends, backoff) comes
    /// from the client's clock; with the correction, processes whose own clocks
    /// disagree still agree on them to within a few milliseconds (half a round trip
    /// to the database), so no live lease is taken back early and no delayed command
    /// runs early by the database's reckoning. Without it, a process whose clock runs
    /// ahead by more than [`crate::WorkerConfig::lease_buffer`] takes live leases back.
    pub fn sync_clock_every(mut self, every: Option<Duration>) -> Self {
        let inner = match &self.sync {
            Some(sync) => Arc::clone(sync.clock.inner()),
            None => Arc::clone(&self.clock),
        };
        match every {
            Some(every) => {
                let sync = ClockSync::new(inner, every);
                self.clock = Arc::clone(&sync.clock) as SharedClock;
                self.sync = Some(sync);
            }
            None => {
                self.clock = inner;
                self.sync = None;
            }
        }
        self
    }

    /// Measures the offset between this client's clock and the database's now and
    /// corrects the clock by it; returns the correction in microseconds (positive:
    /// the database is ahead). `None` when the clock is not kept in step (see
    /// [`Orch::sync_clock_every`]) or the store has no clock of its own.
    ///
    /// The database's time is read halfway through a round trip; a new measurement
    /// replaces the correction only when it moved by more than half that round trip
    /// (at least 1 ms), so the clock does not jitter, and an offset under
    /// [`MIN_CORRECTION`] is not applied at all, so that processes on one machine keep
    /// one clock.
    pub async fn sync_clock(&self) -> Result<Option<i64>> {
        let Some(sync) = &self.sync else { return Ok(None) };
        let _one = sync.measuring.lock().await;
        let inner = sync.clock.inner();
        let before = inner.now();
        let server = self.store.server_time().await?;
        let after = inner.now();
        let Some(server) = server else { return Ok(None) };
        let round_trip = after.as_micros().saturating_sub(before.as_micros()).max(0);
        let midpoint = before.as_micros().saturating_add(round_trip / 2);
        let measured = server.as_micros().saturating_sub(midpoint);
        // Small offsets are not applied: processes that share a clock (one machine) or
        // keep theirs within a few milliseconds stay on their own, identical, clocks.
        // Correcting each by its own measurement error would put a worker a fraction of
        // a millisecond behind a pusher, and a command pushed "now" would not be due
        // for it until its next poll.
        let offset = if measured.abs() < MIN_CORRECTION.as_micros() as i64 { 0 } else { measured };
        let current = sync.clock.offset_micros();
        let first = sync.measured_at.load(std::sync::atomic::Ordering::Relaxed) == i64::MIN;
        if first || offset.abs_diff(current) > (round_trip / 2).max(1_000) as u64 {
            sync.clock.set_offset(offset);
            if offset.abs() >= 1_000_000 {
                tracing::warn!(
                    offset_ms = offset / 1_000,
                    round_trip_us = round_trip,
                    "this process's clock is off the database's; correcting by the offset"
                );
            } else {
                tracing::debug!(
                    offset_us = offset,
                    round_trip_us = round_trip,
                    "clock offset to the database measured"
                );
            }
        }
        sync.measured_at.store(after.as_micros(), std::sync::atomic::Ordering::Relaxed);
        Ok(Some(sync.clock.offset_micros()))
    }

    /// Measures the clock offset again when it is due; a failure is logged and the
    /// last correction kept.
    pub(crate) async fn keep_clock_synced(&self) {
        if self.sync.as_ref().is_some_and(|s| s.due())
            && let Err(e) = self.sync_clock().await
        {
            tracing::warn!(error = %e, "measuring the clock offset to the database failed; keeping the last one");
        }
    }

    /// The time now by this client's clock, measured against the database's first
    /// when that is due.
    async fn now(&self) -> Timestamp {
        self.keep_clock_synced().await;
        self.clock.now()
    }

    /// How often [`Orch::wait`] reads the store when no local signal arrives
    /// (default 100 ms; commands finished by workers in this process wake it at once).
    pub fn with_wait_poll(mut self, every: Duration) -> Self {
        self.wait_poll = every.max(Duration::from_millis(1));
        self
    }

    /// The largest JSON input (in bytes) a push through this client or its workers
    /// accepts, `None` for no limit (default [`crate::DEFAULT_MAX_INPUT_BYTES`]).
    ///
    /// A larger input is refused with [`Error::InputTooLarge`] before anything is
    /// stored: a push fails as a whole; a handler's follow-up is treated as any
    /// invalid follow-up (the command fails, or an `on_failure`/`on_cancel`
    /// follow-up is dropped with an error in the log); a saga transition that would
    /// push one fails for good.
    pub fn with_max_input_bytes(mut self, limit: Option<usize>) -> Self {
        self.max_input_bytes = limit;
        self
    }

    /// The input size limit in force (see [`Orch::with_max_input_bytes`]).
    pub fn max_input_bytes(&self) -> Option<usize> {
        self.max_input_bytes
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The clock.
    pub fn clock(&self) -> &SharedClock {
        &self.clock
    }

    pub(crate) fn signals(&self) -> &Arc<Signals> {
        &self.signals
    }

    /// Pushes a typed command with its type's defaults.
    pub async fn push<C: Command>(&self, command: &C) -> Result<CommandId> {
        self.push_new(NewCommand::of(command)).await
    }

    /// Pushes a command with per-push overrides. For a command whose
    /// [unique key](NewCommand::unique_key) another command holds, nothing is inserted
    /// and the holder's id is returned; [`Orch::push_outcome`] also says which happened.
    pub async fn push_new(&self, command: NewCommand) -> Result<CommandId> {
        Ok(self.push_outcome(command).await?.id)
    }

    /// Pushes a command and reports whether it was inserted or was a duplicate of a
    /// command holding the same [unique key](NewCommand::unique_key).
    pub async fn push_outcome(&self, command: NewCommand) -> Result<Pushed> {
        Ok(self.push_many_outcomes(vec![command]).await?[0])
    }

    /// Pushes many commands in one round trip, all or none. Ids are returned in order
    /// (for a duplicate unique key, the holder's).
    pub async fn push_many(&self, commands: Vec<NewCommand>) -> Result<Vec<CommandId>> {
        Ok(self.push_many_outcomes(commands).await?.into_iter().map(|p| p.id).collect())
    }

    /// Pushes many commands in one transaction and reports, in order, what became of
    /// each.
    pub async fn push_many_outcomes(&self, commands: Vec<NewCommand>) -> Result<Vec<Pushed>> {
        let now = self.now().await;
        let rows = commands.into_iter().map(|c| c.into_insert(now, None)).collect::<Result<Vec<_>>>()?;
        self.insert(rows).await
    }

    pub(crate) async fn push_child(
        &self,
        command: NewCommand,
        parent: CommandId,
        correlation_id: &str,
    ) -> Result<CommandId> {
        let row = command.into_insert(self.now().await, Some((parent, correlation_id)))?;
        Ok(self.insert(vec![row]).await?[0].id)
    }

    async fn insert(&self, rows: Vec<crate::store::InsertCommand>) -> Result<Vec<Pushed>> {
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        crate::command::check_input_sizes(&rows, self.max_input_bytes)?;
        let own: Vec<CommandId> = rows.iter().map(|r| r.id).collect();
        let count = rows.len();
        let stored = self.store.enqueue(rows).await?;
        if stored.len() != count {
            return Err(Error::Corrupt(format!(
                "the store reported {} ids for {count} pushed commands",
                stored.len()
            )));
        }
        let pushed: Vec<Pushed> =
            own.iter().zip(stored).map(|(own, id)| Pushed { id, duplicate: *own != id }).collect();
        let duplicates = pushed.iter().filter(|p| p.duplicate).count();
        tracing::debug!(count, duplicates, "commands pushed");
        if duplicates < count {
            self.signals.pushed.notify_waiters();
        }
        Ok(pushed)
    }

    /// Saves a recurring schedule (see [`crate::schedule`]): from now on, running
    /// workers push its command at each slot, each slot once. Saving a schedule of the
    /// same name again updates its definition; its next slot stays unless the cadence
    /// or zone changed, so every process may save its schedules at startup.
    pub async fn schedule(&self, schedule: Schedule) -> Result<()> {
        let record = schedule.to_record(self.now().await)?;
        let (name, next) = (record.name.clone(), record.next_fire);
        self.store.save_schedule(record).await?;
        tracing::info!(schedule = %name, next = %next, "schedule saved");
        self.signals.scheduled.notify_waiters();
        Ok(())
    }

    /// Deletes a schedule; whether it existed. Commands it pushed are not touched.
    pub async fn unschedule(&self, name: &str) -> Result<bool> {
        self.store.remove_schedule(name).await
    }

    /// Every stored schedule, by name, with its next and latest slots.
    pub async fn schedules(&self) -> Result<Vec<ScheduleRecord>> {
        self.store.schedules().await
    }

    /// The stored command, if it exists.
    pub async fn get(&self, id: CommandId) -> Result<Option<CommandRecord>> {
        self.store.get(id).await
    }

    /// Holds back claims of `scope` (a target or a command name) until
    /// [`Orch::resume`]: workers claim none of its commands from their next claim on
    /// (commands already claimed run on); pushes, cancels and everything else go on.
    /// `false` when it was paused already.
    ///
    /// ```
    /// # async fn demo(orch: orch::Orch) -> orch::Result<()> {
    /// use orch::PauseScope;
    /// orch.pause(PauseScope::target("eu-west")).await?;
    /// orch.pause(PauseScope::name("send_email")).await?;
    /// for pause in orch.pauses().await? {
    ///     println!("{} since {}", pause.scope, pause.paused_at);
    /// }
    /// orch.resume(PauseScope::name("send_email")).await?;
    /// # Ok(()) }
    /// ```
    pub async fn pause(&self, scope: PauseScope) -> Result<bool> {
        scope.validate()?;
        let paused = self.store.pause(scope.clone(), self.now().await).await?;
        tracing::info!(%scope, newly = paused, "paused");
        Ok(paused)
    }

    /// Lets claims of `scope` go on; `false` when it was not paused.
    pub async fn resume(&self, scope: PauseScope) -> Result<bool> {
        scope.validate()?;
        let resumed = self.store.resume(&scope).await?;
        tracing::info!(%scope, was_paused = resumed, "resumed");
        // Idle workers in this process look again at once.
        self.signals.pushed.notify_waiters();
        Ok(resumed)
    }

    /// Every pause in force.
    pub async fn pauses(&self) -> Result<Vec<PauseRecord>> {
        self.store.pauses().await
    }

    /// The command's status.
    pub async fn status(&self, id: CommandId) -> Result<Status> {
        Ok(match self.store.get(id).await? {
            Some(record) => Status::of(&record),
            None => Status::NotFound,
        })
    }

    /// The typed output of a succeeded command; `None` while it has not succeeded.
    pub async fn output<C: Command>(&self, id: CommandId) -> Result<Option<C::Output>> {
        let record = self.store.get(id).await?.ok_or(Error::NotFound(id))?;
        match (record.state, record.output) {
            (State::Succeeded, Some(json)) => serde_json::from_str(&json)
                .map(Some)
                .map_err(|source| Error::Decode { what: format!("output of command {id}"), source }),
            _ => Ok(None),
        }
    }

    /// Cancels a command: at once when blocked or pending; when running, its worker's
    /// cancellation token fires at the next heartbeat and the command ends cancelled.
    pub async fn cancel(&self, id: CommandId) -> Result<CancelStatus> {
        let status = self.store.cancel(id, self.now().await).await?;
        tracing::debug!(%id, ?status, "cancel");
        if status == CancelStatus::Cancelled {
            self.signals.finished.notify_waiters();
        }
        Ok(status)
    }

    /// Runs a failed or cancelled command again (see [`Store::retry`]).
    pub async fn retry(&self, id: CommandId) -> Result<RetryStatus> {
        let status = self.store.retry(id, self.now().await).await?;
        tracing::info!(%id, ?status, "retry requested");
        if status == RetryStatus::Retried {
            self.signals.pushed.notify_waiters();
        }
        Ok(status)
    }

    /// The journal of a command, oldest entry first.
    pub async fn journal(&self, id: CommandId) -> Result<Vec<JournalEntry>> {
        self.store.journal(id).await
    }

    /// Waits until the command finishes and returns its final status
    /// ([`Status::NotFound`] when there is no such command).
    ///
    /// Wrap it in `tokio::time::timeout` to bound the wait.
    pub async fn wait(&self, id: CommandId) -> Result<Status> {
        loop {
            let finished = self.signals.finished.notified();
            tokio::pin!(finished);
            finished.as_mut().enable();
            let status = self.status(id).await?;
            if status.is_final() {
                return Ok(status);
            }
            tokio::select! {
                _ = finished => {}
                _ = tokio::time::sleep(self.wait_poll) => {}
            }
        }
    }

    /// Starts a workflow: stores every step in one transaction (steps with
    /// dependencies blocked, the others pending) and returns its id. Each step's
    /// correlation id is the workflow id unless the step's command sets its own.
    ///
    /// ```no_run
    /// # async fn demo(orch: orch::Orch) -> orch::Result<()> {
    /// use orch::{NewCommand, Workflow};
    /// let workflow = Workflow::builder()
    ///     .step("payments", NewCommand::raw("charge", serde_json::json!({ "order": 7 })))
    ///     .step_after("analytics", NewCommand::raw("record_sale", serde_json::json!({ "order": 7 })), ["payments"])
    ///     .build()?;
    /// let id = orch.start_workflow(workflow).await?;
    /// let status = orch.wait_workflow(id).await?;
    /// println!("workflow {id} ended {}", status.state);
    /// # Ok(()) }
    /// ```
    pub async fn start_workflow(&self, workflow: Workflow) -> Result<WorkflowId> {
        let now = self.now().await;
        let id = WorkflowId::generate(now);
        let rows = workflow.into_rows(id, now)?;
        let steps = rows.len();
        self.insert(rows).await?;
        tracing::info!(workflow = %id, steps, "workflow started");
        Ok(id)
    }

    /// The workflow's state and steps; `None` when there is no such workflow.
    pub async fn workflow(&self, id: WorkflowId) -> Result<Option<WorkflowStatus>> {
        let steps = self.store.workflow_steps(id).await?;
        Ok(WorkflowStatus::from_steps(id, &steps))
    }

    /// Waits until every step of the workflow has finished and returns its status
    /// ([`Error::WorkflowNotFound`] when there is no such workflow).
    pub async fn wait_workflow(&self, id: WorkflowId) -> Result<WorkflowStatus> {
        loop {
            let finished = self.signals.finished.notified();
            tokio::pin!(finished);
            finished.as_mut().enable();
            let status = self.workflow(id).await?.ok_or(Error::WorkflowNotFound(id))?;
            if status.state != WorkflowState::Running {
                return Ok(status);
            }
            tokio::select! {
                _ = finished => {}
                _ = tokio::time::sleep(self.wait_poll) => {}
            }
        }
    }

    /// Cancels every step that has not finished: blocked and pending steps at once,
    /// running ones at their worker's next heartbeat. Returns how many steps were
    /// cancelled or asked to stop.
    pub async fn cancel_workflow(&self, id: WorkflowId) -> Result<usize> {
        let mut count = 0;
        // Earlier steps first: cancelling one also cancels its blocked dependents.
        for step in self.store.workflow_steps(id).await? {
            if step.command.state.is_terminal() {
                continue;
            }
            match self.cancel(step.command.id).await? {
                CancelStatus::Cancelled | CancelStatus::Requested => count += 1,
                CancelStatus::AlreadyFinished(_) | CancelStatus::NotFound => {}
            }
        }
        tracing::info!(workflow = %id, count, "workflow cancelled");
        Ok(count)
    }

    /// The journals of every step of the workflow, merged in the order they were written.
    pub async fn workflow_journal(&self, id: WorkflowId) -> Result<Vec<JournalEntry>> {
        let mut entries = Vec::new();
        for step in self.store.workflow_steps(id).await? {
            entries.extend(self.store.journal(step.command.id).await?);
        }
        entries.sort_by_key(|e| e.seq);
        Ok(entries)
    }

    /// Publishes `event` to the instance `correlation_id` of the saga named `saga`,
    /// durably: the event is a command, applied by a worker that has the saga
    /// registered, after every event published to the instance before it. The first
    /// event that an `initially()` transition accepts creates the instance.
    pub async fn publish<E: SagaEvent>(
        &self,
        saga: &str,
        correlation_id: &str,
        event: &E,
    ) -> Result<CommandId> {
        self.push_new(event_for(saga, correlation_id, event)?).await
    }

    /// The stored instance of a saga, if it exists.
    pub async fn saga(&self, saga: &str, correlation_id: &str) -> Result<Option<SagaRecord>> {
        self.store.saga(saga, correlation_id).await
    }

    /// The instance of a saga with its data decoded as `D`.
    pub async fn saga_instance<D: SagaData>(
        &self,
        saga: &str,
        correlation_id: &str,
    ) -> Result<Option<SagaInstance<D>>> {
        self.store.saga(saga, correlation_id).await?.map(decode_instance).transpose()
    }

    /// Saga instances matching `query` (by saga, state, status, staleness).
    pub async fn sagas(&self, query: SagaQuery) -> Result<Vec<SagaRecord>> {
        self.store.sagas(query).await
    }

    /// Active instances of `saga` not saved for longer than `older_than`, by the
    /// injected clock.
    pub async fn stale_sagas(&self, saga: &str, older_than: Duration) -> Result<Vec<SagaRecord>> {
        let cutoff = Timestamp::from_micros(
            self.clock
                .now()
                .as_micros()
                .saturating_sub(i64::try_from(older_than.as_micros()).unwrap_or(i64::MAX)),
        );
        self.store
            .sagas(SagaQuery {
                saga: Some(saga.to_owned()),
                status: Some(SagaStatus::Active),
                updated_before: Some(cutoff),
                ..SagaQuery::default()
            })
            .await
    }

    /// The journals of every command of a saga instance (its events, the commands its
    /// transitions pushed, its compensations), merged in the order they were written.
    pub async fn saga_journal(&self, correlation_id: &str) -> Result<Vec<JournalEntry>> {
        let params = ListParams { correlation_id: Some(correlation_id.to_owned()), ..ListParams::default() };
        let mut entries = Vec::new();
        for command in self.store.list(params).await? {
            entries.extend(self.store.journal(command.id).await?);
        }
        entries.sort_by_key(|e| e.seq);
        Ok(entries)
    }

    /// Waits for a typed command to finish and returns its output, or an error naming
    /// how it ended.
    pub async fn wait_output<C: Command>(
        &self,
        id: CommandId,
    ) -> Result<std::result::Result<C::Output, Status>> {
        match self.wait(id).await? {
            Status::Success(json) => serde_json::from_str(&json)
                .map(Ok)
                .map_err(|source| Error::Decode { what: format!("output of command {id}"), source }),
            other => Ok(Err(other)),
        }
    }
}
