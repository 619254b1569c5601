//! The worker: claims due commands, runs their handlers, records the outcomes.
//!
//! One worker is four kinds of tokio task:
//! - the *poller* claims batches of due commands for its instance key and the names
//!   it has handlers for, up to `concurrency + prefetch` held at once, and starts one
//!   execution task per command; at most `concurrency` of them run their handler, the
//!   others wait for a slot (the local queue) with their leases renewed;
//! - each *execution* runs a handler under its timeout and a stop token, and turns the
//!   result into an [`Outcome`];
//! - the *completer* writes outcomes to the store in batches (as many as have queued
//!   up while the previous batch was written), so a busy worker pays one transaction
//!   for many completions;
//! - the *maintainer* renews the leases of running commands (and learns of lost
//!   leases and cancel requests), rescues expired leases of vanished workers, and
//!   pushes the follow-ups of commands that finished outside a worker.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::client::Orch;
use crate::clock::Timestamp;
use crate::command::{DEFAULT_TARGET, NewCommand};
use crate::error::{Error, Failure, FailureKind, Result};
use crate::handler::{Context, ErasedHandler, Registry, RunResult};
use crate::store::{
    ClaimParams, ClaimedCommand, CommandId, CommandRecord, Completion, CompletionStatus, HeartbeatParams,
    InsertCommand, Lease, LeaseStatus, Outcome, State, WorkerRecord,
};

/// How a worker behaves. Every field has a default; [`WorkerConfig::validate`] checks them.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// The instance key: the worker claims only commands targeted at it. Default `"default"`.
    pub instance_key: String,
    /// How many handlers run at once. Default 16.
    pub concurrency: usize,
    /// How many claimed commands may wait in the worker for a free handler slot, beyond
    /// the `concurrency` running ones. Claiming ahead lets one round trip fetch a large
    /// batch; the cost is that those commands are leased to this worker (another idle
    /// worker cannot take them), and if the process dies they wait for their lease to
    /// expire like the running ones. At shutdown they are released at once. Default 16;
    /// 0 claims only for free slots.
    pub prefetch: usize,
    /// The most commands claimed in one round trip. Default 64.
    pub max_pull: usize,
    /// How long an idle worker waits before looking for due commands again. Pushes
    /// through the same store in this process wake it at once, and on PostgreSQL pushes
    /// from any process. Default 2 s.
    pub poll_interval: Duration,
    /// A lease lasts the command's timeout plus this buffer, and is renewed while the
    /// handler runs. It must exceed the clock skew between nodes. Default 30 s.
    pub lease_buffer: Duration,
    /// How often leases of running commands are renewed (and cancel requests seen).
    /// Default 1 s.
    pub heartbeat_interval: Duration,
    /// How often expired leases are rescued, pending follow-ups pushed and the worker's
    /// row in the workers table refreshed (monitors call a worker stale after 30 s
    /// without a refresh). Default 10 s.
    pub rescue_interval: Duration,
    /// On shutdown, how long running handlers may go on before they are cancelled and
    /// their commands released. Default 10 s.
    pub shutdown_grace: Duration,
    /// The name recorded as lease holder; default `host-pid-random`.
    pub worker_id: Option<String>,
    /// How long finished commands (succeeded, failed, cancelled) and their journal are
    /// kept: once a minute a worker deletes those that finished longer ago, in
    /// transactions of [`crate::store::PRUNE_BATCH`], one worker of the store at a time
    /// ([`Store::prune_finished`](crate::Store::prune_finished)). `None` keeps everything. Default
    /// [`DEFAULT_RETENTION`] (7 days).
    pub retention: Option<Duration>,
    /// Whether this worker fires due [schedules](crate::schedule) (any worker may; each
    /// slot fires once however many do). Default true.
    pub fire_schedules: bool,
}

/// How long finished commands are kept by default: 7 days.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

/// How often a worker prunes finished commands, unless a round found more than it
/// could delete (then again at its next maintenance tick).
pub const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// The most commands one pruning round deletes.
pub const PRUNE_PER_ROUND: usize = 20 * crate::store::PRUNE_BATCH;

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            instance_key: DEFAULT_TARGET.to_owned(),
            concurrency: 16,
            prefetch: 16,
            max_pull: 64,
            poll_interval: Duration::from_secs(2),
            lease_buffer: Duration::from_secs(30),
            heartbeat_interval: Duration::from_secs(1),
            rescue_interval: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(10),
            worker_id: None,
            retention: Some(DEFAULT_RETENTION),
            fire_schedules: true,
        }
    }
}

impl WorkerConfig {
    /// Checks every field, naming the first one that is out of range.
    pub fn validate(&self) -> Result<()> {
        let fail = |m: String| Err(Error::InvalidConfig(m));
        if self.instance_key.is_empty() {
            return fail("instance_key must not be empty".into());
        }
        if self.concurrency == 0 {
            return fail("concurrency must be at least 1".into());
        }
        if self.max_pull == 0 {
            return fail("max_pull must be at least 1".into());
        }
        if self.concurrency.saturating_add(self.prefetch) > MAX_HELD {
            return fail(format!(
                "concurrency + prefetch ({} + {}) must be at most {MAX_HELD}",
                self.concurrency, self.prefetch
            ));
        }
        if self.retention.is_some_and(|r| r.is_zero()) {
            return fail("retention must be greater than zero (None keeps every finished command)".into());
        }
        for (name, value) in [
            ("poll_interval", self.poll_interval),
            ("heartbeat_interval", self.heartbeat_interval),
            ("rescue_interval", self.rescue_interval),
        ] {
            if value.is_zero() {
                return fail(format!("{name} must be greater than zero"));
            }
        }
        if self.lease_buffer <= self.heartbeat_interval {
            return fail(format!(
                "lease_buffer ({:?}) must be longer than heartbeat_interval ({:?}), or leases expire between renewals",
                self.lease_buffer, self.heartbeat_interval
            ));
        }
        if self.worker_id.as_deref() == Some("") {
            return fail("worker_id must not be empty".into());
        }
        Ok(())
    }
}

/// The most commands one worker may hold (`concurrency + prefetch`).
pub const MAX_HELD: usize = 1_000_000;

/// A configured worker, ready to [`start`](Worker::start).
pub struct Worker {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("id", &self.shared.worker_id)
            .field("names", &self.shared.names)
            .field("config", &self.shared.config)
            .finish()
    }
}

struct Shared {
    orch: Orch,
    registry: Registry,
    names: Vec<String>,
    config: WorkerConfig,
    worker_id: String,
    host: String,
    started_at: Timestamp,
    /// Commands held: running, waiting for a handler slot, or being recorded.
    running: Mutex<HashMap<CommandId, Running>>,
    /// One permit per handler slot (`concurrency`); a running handler holds one.
    permits: Semaphore,
}

/// How long the row of a worker that stopped heartbeating stays in the workers table,
/// visible to monitors as stale, before any worker's maintainer removes it.
pub const FORGET_DEAD_WORKERS_AFTER: Duration = Duration::from_secs(24 * 3600);

impl Shared {
    /// This worker's row in the workers table, as of now.
    fn record(&self) -> WorkerRecord {
        let running = self.config.concurrency - self.permits.available_permits();
        WorkerRecord {
            id: self.worker_id.clone(),
            instance_key: self.config.instance_key.clone(),
            host: self.host.clone(),
            pid: std::process::id(),
            names: self.names.clone(),
            concurrency: u32::try_from(self.config.concurrency).unwrap_or(u32::MAX),
            running: u32::try_from(running).unwrap_or(u32::MAX),
            started_at: self.started_at,
            heartbeat_at: self.orch.clock().now(),
        }
    }
}

struct Running {
    lease: Lease,
    stop: CancellationToken,
    reason: StopSlot,
    /// When the lease runs out unless renewed again, by this worker's clock (micros):
    /// set at the claim, moved on by each renewal.
    expires: Arc<AtomicI64>,
    /// The attempt's timeout, to compute a renewed lease's end.
    timeout: Duration,
}

/// Why a running attempt was stopped, set once by whoever stops it.
type StopSlot = Arc<Mutex<Option<StopReason>>>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StopReason {
    CancelRequested,
    LeaseLost,
    Shutdown,
}

type CompletionRequest = (Completion, oneshot::Sender<CompletionStatus>);

impl Worker {
    /// A worker running the handlers of `registry` for commands pushed through `orch`'s store.
    pub fn new(orch: Orch, registry: Registry, config: WorkerConfig) -> Result<Self> {
        config.validate()?;
        if registry.is_empty() {
            return Err(Error::invalid_config("a worker needs at least one registered handler"));
        }
        let host = host_name();
        let worker_id = config.worker_id.clone().unwrap_or_else(|| default_worker_id(&host));
        let names = registry.names();
        let started_at = orch.clock().now();
        let permits = Semaphore::new(config.concurrency);
        Ok(Worker {
            shared: Arc::new(Shared {
                orch,
                registry,
                names,
                config,
                worker_id,
                host,
                started_at,
                running: Mutex::new(HashMap::new()),
                permits,
            }),
        })
    }

    /// The name recorded as lease holder.
    pub fn id(&self) -> &str {
        &self.shared.worker_id
    }

    /// Starts the worker's tasks on the current tokio runtime.
    pub fn start(self) -> WorkerHandle {
        let shutdown = CancellationToken::new();
        let id = self.shared.worker_id.clone();
        let main = tokio::spawn(run(self.shared, shutdown.clone()));
        WorkerHandle { id, shutdown, main }
    }
}

/// A running worker.
#[derive(Debug)]
pub struct WorkerHandle {
    id: String,
    shutdown: CancellationToken,
    main: JoinHandle<()>,
}

impl WorkerHandle {
    /// The worker's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Stops claiming, lets running handlers finish within the grace period, then
    /// cancels the rest and releases their commands, records every outcome, and returns.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        if let Err(e) = self.main.await {
            tracing::error!(worker = %self.id, error = %e, "worker task ended abnormally");
        }
    }

    /// Stops everything at once, recording nothing, as if the process had died: its
    /// leases stay until they expire and are rescued. Returns once the worker's main
    /// task has ended; the tasks it started are aborted then, and stop at their next
    /// await point (a store write already under way may still land).
    pub async fn abort(self) {
        self.main.abort();
        let _ = self.main.await;
    }

    /// Whether the worker has stopped.
    pub fn is_finished(&self) -> bool {
        self.main.is_finished()
    }
}

/// Aborts a task when dropped, so aborting a worker reaches every task it started.
struct AbortOnDrop<T>(JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn host_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok().map(|h| h.trim().to_owned()))
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

fn default_worker_id(host: &str) -> String {
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    format!("{host}-{}-{}", std::process::id(), &suffix[..8])
}

async fn run(shared: Arc<Shared>, shutdown: CancellationToken) {
    let clock = Arc::clone(shared.orch.clock());
    let signals = Arc::clone(shared.orch.signals());
    let config = &shared.config;
    tracing::info!(
        worker = %shared.worker_id,
        target = %config.instance_key,
        names = ?shared.names,
        concurrency = config.concurrency,
        "worker started"
    );
    // Times this worker writes and compares follow the database's clock (when the
    // client keeps its clock in step, as `Orch::new` does).
    shared.orch.keep_clock_synced().await;
    if let Err(e) = shared.orch.store().record_worker(shared.record()).await {
        tracing::warn!(error = %e, "recording the worker failed; its heartbeat will retry");
    }

    // Slots bound the commands this worker holds (claimed, not yet recorded); the
    // permits in `shared` bound the handlers running among them.
    let capacity = config.concurrency + config.prefetch;
    let slots = Arc::new(Semaphore::new(capacity));
    // Room for the outcome of every command the worker can hold, so outcomes that pile up
    // while a batch is written go into the next batch.
    let (complete_tx, complete_rx) = mpsc::channel::<CompletionRequest>(capacity);
    let completer = AbortOnDrop(tokio::spawn(completer(Arc::clone(&shared), complete_rx)));
    let maintainer_stop = CancellationToken::new();
    let mut maintainer = AbortOnDrop(tokio::spawn(maintainer(Arc::clone(&shared), maintainer_stop.clone())));
    let scheduler = config
        .fire_schedules
        .then(|| AbortOnDrop(tokio::spawn(scheduler(shared.orch.clone(), maintainer_stop.clone()))));

    // A busy worker claims once this many slots are free, so it fetches batches instead
    // of one command per finished one. Never more than `prefetch`: while fewer slots are
    // free, every handler is busy (or its outcome is being recorded).
    let claim_at = config.prefetch.min(config.max_pull / 2).max(1);
    let mut tasks = JoinSet::new();
    let mut failures: u32 = 0;

    let store_signal = shared.orch.store().wake_signal();
    while !shutdown.is_cancelled() {
        // Registered before claiming, so a push that lands during the claim still wakes us.
        let pushed = signals.pushed.notified();
        tokio::pin!(pushed);
        pushed.as_mut().enable();
        let mut woken = std::pin::pin!(store_signal.as_deref().map(tokio::sync::Notify::notified));
        if let Some(notified) = woken.as_mut().as_pin_mut() {
            notified.enable();
        }

        let room = slots.available_permits();
        let mut full_batch = false;
        if room >= claim_at {
            let limit = room.min(config.max_pull);
            let params = ClaimParams {
                target: config.instance_key.clone(),
                names: shared.names.clone(),
                limit,
                now: clock.now(),
                worker: shared.worker_id.clone(),
                lease_buffer: config.lease_buffer,
            };
            match shared.orch.store().claim(params).await {
                Ok(batch) => {
                    failures = 0;
                    full_batch = batch.len() == limit;
                    if !batch.is_empty() {
                        tracing::debug!(count = batch.len(), "claimed");
                    }
                    for claimed in batch {
                        let slot = Arc::clone(&slots)
                            .try_acquire_owned()
                            .expect("claims never exceed the free slots");
                        let shared = Arc::clone(&shared);
                        let tx = complete_tx.clone();
                        let shutdown = shutdown.clone();
                        tasks.spawn(async move {
                            execute(&shared, claimed, tx, &shutdown).await;
                            drop(slot);
                        });
                    }
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    tracing::warn!(error = %e, consecutive = failures, "claim failed; retrying after the poll interval");
                }
            }
        }
        while tasks.try_join_next().is_some() {}
        let starved = slots.available_permits() < claim_at;
        if full_batch && failures == 0 && !starved {
            continue;
        }
        // Claims that fail (the database is down) back off, but never past 5 s (or the
        // poll interval, when longer), so work resumes soon after the database does.
        let wait = config
            .poll_interval
            .saturating_mul(failures.clamp(1, 10))
            .min(config.poll_interval.max(MAX_CLAIM_BACKOFF));
        let sleep = clock.sleep_until(clock.now() + wait);
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = &mut pushed => {}
            _ = async {
                match woken.as_mut().as_pin_mut() {
                    Some(notified) => notified.await,
                    None => std::future::pending().await,
                }
            } => {}
            _ = sleep => {}
            Some(_) = tasks.join_next(), if starved => {}
        }
    }

    tracing::info!(worker = %shared.worker_id, running = tasks.len(), "worker stopping");
    let drained =
        tokio::time::timeout(config.shutdown_grace, async { while tasks.join_next().await.is_some() {} })
            .await;
    if drained.is_err() {
        let running: Vec<_> = {
            let running = shared.running.lock().unwrap_or_else(|e| e.into_inner());
            running.values().map(|r| (Arc::clone(&r.reason), r.stop.clone())).collect()
        };
        tracing::warn!(count = running.len(), "grace period over; cancelling and releasing running commands");
        for (reason, stop) in running {
            set_reason(&reason, StopReason::Shutdown);
            stop.cancel();
        }
        while tasks.join_next().await.is_some() {}
    }
    drop(complete_tx);
    let mut completer = completer;
    let _ = (&mut completer.0).await;
    maintainer_stop.cancel();
    // Waited for, so a heartbeat under way cannot write the row back after it is removed.
    let _ = (&mut maintainer.0).await;
    if let Some(mut scheduler) = scheduler {
        let _ = (&mut scheduler.0).await;
    }
    if let Err(e) = shared.orch.store().remove_worker(&shared.worker_id).await {
        tracing::warn!(error = %e, "removing the worker's row failed; it will look stale and be pruned");
    }
    tracing::info!(worker = %shared.worker_id, "worker stopped");
}

fn set_reason(slot: &Mutex<Option<StopReason>>, reason: StopReason) {
    let mut slot = slot.lock().unwrap_or_else(|e| e.into_inner());
    slot.get_or_insert(reason);
}

async fn execute(
    shared: &Arc<Shared>,
    claimed: ClaimedCommand,
    completions: mpsc::Sender<CompletionRequest>,
    shutdown: &CancellationToken,
) {
    let id = claimed.lease.id;
    let span = tracing::info_span!("command", %id, name = %claimed.name, attempt = claimed.attempt);
    async {
        let stop = CancellationToken::new();
        let reason = Arc::new(Mutex::new(None));
        let expires = Arc::new(AtomicI64::new(claimed.lease_expires_at.as_micros()));
        shared.running.lock().unwrap_or_else(|e| e.into_inner()).insert(
            id,
            Running {
                lease: claimed.lease,
                stop: stop.clone(),
                reason: Arc::clone(&reason),
                expires: Arc::clone(&expires),
                timeout: claimed.timeout,
            },
        );
        // Held commands wait here for a handler slot; a stop or the worker's shutdown
        // reaches them before their handler starts.
        let outcome = tokio::select! {
            biased;
            _ = stop.cancelled() => stopped(shared, &claimed, &reason, false),
            _ = shutdown.cancelled() => {
                tracing::debug!("released at shutdown before it started");
                Some(Outcome::Released { at: shared.orch.clock().now(), started: false })
            }
            permit = shared.permits.acquire() => {
                let _permit = permit.expect("the permits are never closed");
                if lease_still_held(shared, &claimed, &expires).await {
                    run_attempt(shared, &claimed, &stop, &reason).await
                } else {
                    None
                }
            }
        };
        if let Some(outcome) = outcome {
            let completion = Completion {
                lease: claimed.lease,
                now: shared.orch.clock().now(),
                worker: shared.worker_id.clone(),
                outcome,
            };
            let (tx, rx) = oneshot::channel();
            if completions.send((completion, tx)).await.is_ok() {
                match rx.await {
                    Ok(CompletionStatus::Applied) => {}
                    Ok(CompletionStatus::LeaseLost) => {
                        tracing::warn!("lease lost before the outcome was recorded; it was discarded");
                    }
                    Err(_) => tracing::warn!("outcome not recorded: the worker stopped first"),
                }
            }
        }
        shared.running.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
        shared.orch.signals().finished.notify_waiters();
    }
    .instrument(span)
    .await
}

/// Whether a held command's lease is still this worker's, checked before its handler
/// starts. A lease renewed within the last heartbeats is taken as held without asking;
/// one whose end is near or past by this worker's clock (the process was paused, or
/// renewals failed) is renewed first, and the handler does not start unless the store
/// says it is still held: a lease taken back by a rescue must not run its command a
/// second time.
async fn lease_still_held(shared: &Arc<Shared>, claimed: &ClaimedCommand, expires: &AtomicI64) -> bool {
    let now = shared.orch.clock().now();
    let margin = shared.config.heartbeat_interval;
    if now + margin < Timestamp::from_micros(expires.load(Ordering::Relaxed)) {
        return true;
    }
    let params =
        HeartbeatParams { leases: vec![claimed.lease], now, lease_buffer: shared.config.lease_buffer };
    match shared.orch.store().heartbeat(params).await.as_deref() {
        Ok([LeaseStatus::Held { .. }]) => {
            let renewed = now + claimed.timeout + shared.config.lease_buffer;
            expires.store(renewed.as_micros(), Ordering::Relaxed);
            true
        }
        Ok(_) => {
            tracing::warn!("lease lost while the command waited for a handler slot; not starting it");
            false
        }
        Err(e) => {
            // Unknown: starting could run the command twice; leaving it lets the lease
            // run out and a rescue make it due again.
            tracing::warn!(error = %e, "could not confirm the lease of a held command; not starting it");
            false
        }
    }
}

/// The outcome of an attempt stopped by a cancel request, a lost lease or shutdown
/// (`started`: whether its handler had started); `None` when the lease was lost and
/// nothing may be recorded.
fn stopped(
    shared: &Arc<Shared>,
    claimed: &ClaimedCommand,
    reason: &Mutex<Option<StopReason>>,
    started: bool,
) -> Option<Outcome> {
    let why = reason.lock().unwrap_or_else(|e| e.into_inner()).unwrap_or(StopReason::Shutdown);
    match why {
        StopReason::LeaseLost => {
            tracing::warn!("lease lost; handler stopped and its result discarded");
            None
        }
        StopReason::CancelRequested => {
            tracing::info!("cancelled on request");
            let follow_ups = shared
                .registry
                .get(&claimed.name)
                .map(|h| h.cancel_follow_ups(&claimed.input))
                .unwrap_or_default();
            Some(match resolve(shared, claimed, follow_ups) {
                Ok(follow_ups) => Outcome::Cancelled { follow_ups },
                Err(e) => {
                    tracing::error!(error = %e, "on_cancel follow-ups are invalid; cancelling without them");
                    Outcome::Cancelled { follow_ups: Vec::new() }
                }
            })
        }
        StopReason::Shutdown => {
            tracing::info!("released at shutdown");
            Some(Outcome::Released { at: shared.orch.clock().now(), started })
        }
    }
}

/// Runs one attempt; `None` when the lease was lost and nothing may be recorded.
async fn run_attempt(
    shared: &Arc<Shared>,
    claimed: &ClaimedCommand,
    stop: &CancellationToken,
    reason: &Mutex<Option<StopReason>>,
) -> Option<Outcome> {
    let clock = shared.orch.clock();
    let Some(handler) = shared.registry.get(&claimed.name) else {
        // Claims only ask for registered names, so this is a store bug; give it back.
        tracing::error!("claimed a command with no registered handler; releasing it");
        return Some(Outcome::Released { at: clock.now(), started: false });
    };
    let ctx = Context {
        id: claimed.lease.id,
        name: claimed.name.clone(),
        attempt: claimed.attempt,
        max_attempts: claimed.max_attempts,
        correlation_id: claimed.correlation_id.clone(),
        workflow: claimed.workflow.clone(),
        token: stop.child_token(),
        orch: shared.orch.clone(),
    };
    let deadline = clock.now() + claimed.timeout;
    tracing::debug!("started");
    let future = match handler.run(&claimed.input, ctx) {
        Ok(future) => future,
        Err(failure) => {
            tracing::warn!(error = %failure.message, "input does not decode; failing without retries");
            return Some(Outcome::Failed { failure, follow_ups: Vec::new() });
        }
    };
    let mut task = AbortOnDrop(tokio::spawn(future));
    let timeout = clock.sleep_until(deadline);
    // A stop (cancel request, lost lease, shutdown) wins over a result that is ready at
    // the same time: a handler that returns because its token fired was cancelled.
    let result = tokio::select! {
        biased;
        _ = stop.cancelled() => return stopped(shared, claimed, reason, true),
        joined = &mut task.0 => match joined {
            Ok(result) => Ok(result),
            Err(e) if e.is_panic() => Err(Failure::new(FailureKind::Panic, panic_message(e.into_panic()))),
            Err(e) => Err(Failure::new(FailureKind::Error, format!("handler task ended: {e}"))),
        },
        _ = timeout => {
            stop.cancel();
            Err(Failure::new(FailureKind::Timeout, format!("timed out after {:?}", claimed.timeout)))
        }
    };
    drop(task);
    Some(match result {
        Ok(RunResult::Succeeded { output, follow_ups }) => match resolve(shared, claimed, follow_ups) {
            Ok(follow_ups) => {
                tracing::info!(follow_ups = follow_ups.len(), "succeeded");
                Outcome::Succeeded { output, follow_ups }
            }
            Err(e) => failed_for_good(
                shared,
                claimed,
                handler.as_ref(),
                Failure::new(FailureKind::Error, format!("on_success follow-ups are invalid: {e}")),
            ),
        },
        Ok(RunResult::Failed(error)) => {
            let failure = Failure::new(FailureKind::Error, error.message());
            if error.is_retryable() {
                failed_attempt(shared, claimed, handler.as_ref(), failure)
            } else {
                failed_for_good(shared, claimed, handler.as_ref(), failure)
            }
        }
        Err(failure) => failed_attempt(shared, claimed, handler.as_ref(), failure),
    })
}

fn failed_attempt(
    shared: &Arc<Shared>,
    claimed: &ClaimedCommand,
    handler: &dyn ErasedHandler,
    failure: Failure,
) -> Outcome {
    if claimed.attempt < claimed.max_attempts {
        let (hi, lo) = claimed.lease.id.as_uuid().as_u64_pair();
        let delay = claimed.retry_policy.delay(claimed.attempt, hi ^ lo);
        let retry_at = shared.orch.clock().now() + delay;
        tracing::warn!(error = %failure, retry_in = ?delay, "attempt failed; will retry");
        Outcome::Retry { failure, retry_at }
    } else {
        failed_for_good(shared, claimed, handler, failure)
    }
}

fn failed_for_good(
    shared: &Arc<Shared>,
    claimed: &ClaimedCommand,
    handler: &dyn ErasedHandler,
    failure: Failure,
) -> Outcome {
    tracing::warn!(error = %failure, "failed for good");
    let follow_ups = handler.failure_follow_ups(&claimed.input, &failure);
    let follow_ups = resolve(shared, claimed, follow_ups).unwrap_or_else(|e| {
        tracing::error!(error = %e, "on_failure follow-ups are invalid; failing without them");
        Vec::new()
    });
    Outcome::Failed { failure, follow_ups }
}

fn resolve(
    shared: &Arc<Shared>,
    claimed: &ClaimedCommand,
    follow_ups: Vec<NewCommand>,
) -> Result<Vec<InsertCommand>> {
    let rows = resolve_for(shared.orch.clock().now(), claimed.lease.id, &claimed.correlation_id, follow_ups)?;
    crate::command::check_input_sizes(&rows, shared.orch.max_input_bytes())?;
    Ok(rows)
}

fn resolve_for(
    now: Timestamp,
    parent: CommandId,
    correlation_id: &str,
    follow_ups: Vec<NewCommand>,
) -> Result<Vec<InsertCommand>> {
    follow_ups
        .into_iter()
        .map(|f| {
            f.check_no_unique_key("chained as a follow-up")?;
            f.into_insert(now, Some((parent, correlation_id)))
        })
        .collect()
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    let text = if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    };
    format!("handler panicked: {text}")
}

async fn completer(shared: Arc<Shared>, mut rx: mpsc::Receiver<CompletionRequest>) {
    const MAX_BATCH: usize = 1024;
    let mut batch: Vec<CompletionRequest> = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = rx.recv().await {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let completions: Vec<Completion> = batch.iter().map(|(c, _)| c.clone()).collect();
        let statuses = record_outcomes(&shared, completions).await;
        for ((_, reply), status) in batch.drain(..).zip(statuses) {
            let _ = reply.send(status);
        }
    }
}

/// Writes a batch of outcomes, retrying while the store fails.
///
/// A batch that keeps failing is split so one bad completion cannot hold up the
/// others; a single completion that keeps failing while it carries follow-ups (one of
/// which the store refuses, say a duplicate id) is recorded as failed without them,
/// with the store's error as the reason. Errors that are not the completion's fault
/// (the database is down) are retried until they pass.
async fn record_outcomes(shared: &Arc<Shared>, completions: Vec<Completion>) -> Vec<CompletionStatus> {
    const TRIES_BEFORE_SPLIT: u32 = 3;
    let mut delay = Duration::from_millis(50);
    let mut tries = 0;
    loop {
        match shared.orch.store().complete(completions.clone()).await {
            Ok(statuses) => return statuses,
            Err(e) => {
                tries += 1;
                tracing::error!(error = %e, count = completions.len(), retry_in = ?delay, "recording outcomes failed; retrying");
                if tries >= TRIES_BEFORE_SPLIT {
                    if completions.len() > 1 {
                        let mut statuses = Vec::with_capacity(completions.len());
                        for c in completions {
                            statuses.extend(Box::pin(record_outcomes(shared, vec![c])).await);
                        }
                        return statuses;
                    }
                    if let Some(stripped) = without_follow_ups(&completions[0], &e) {
                        return Box::pin(record_outcomes(shared, vec![stripped])).await;
                    }
                }
                tokio::time::sleep(delay).await;
                // Capped well below any lease: once the database is back, results are
                // recorded within a second.
                delay = (delay * 2).min(Duration::from_secs(1));
            }
        }
    }
}

/// The completion recorded as a failure without its follow-ups, if it had any.
fn without_follow_ups(c: &Completion, error: &Error) -> Option<Completion> {
    let has_follow_ups = match &c.outcome {
        Outcome::Succeeded { follow_ups, .. }
        | Outcome::Failed { follow_ups, .. }
        | Outcome::Cancelled { follow_ups } => !follow_ups.is_empty(),
        Outcome::Retry { .. } | Outcome::Released { .. } => false,
    };
    has_follow_ups.then(|| Completion {
        outcome: Outcome::Failed {
            failure: Failure::new(
                FailureKind::Error,
                format!("its follow-up commands could not be stored: {error}"),
            ),
            follow_ups: Vec::new(),
        },
        ..c.clone()
    })
}

/// The longest wait between claims that fail, unless the poll interval is longer.
const MAX_CLAIM_BACKOFF: Duration = Duration::from_secs(5);

async fn maintainer(shared: Arc<Shared>, stop: CancellationToken) {
    let clock = Arc::clone(shared.orch.clock());
    let config = &shared.config;
    let mut next_rescue = clock.now();
    let mut next_prune = clock.now();
    let mut ticks: u64 = 0;
    loop {
        shared.orch.keep_clock_synced().await;
        let now = clock.now();
        if let Some(age) = config.retention
            && now >= next_prune
        {
            next_prune = now + PRUNE_EVERY;
            match shared.orch.store().prune_finished(now - age, PRUNE_PER_ROUND).await {
                Ok(Some(0)) => {}
                Ok(Some(pruned)) => {
                    tracing::info!(pruned, older_than = ?age, "pruned finished commands");
                    // More may be waiting: the next tick goes on.
                    if pruned as usize >= PRUNE_PER_ROUND {
                        next_prune = now;
                    }
                }
                Ok(None) => tracing::debug!("another worker is pruning finished commands"),
                Err(e) => tracing::warn!(error = %e, "pruning finished commands failed; will retry"),
            }
        }
        if now >= next_rescue {
            // The worker's row is refreshed each rescue tick (the first records it again
            // after start), so an idle worker makes few calls.
            if ticks > 0
                && let Err(e) = shared.orch.store().record_worker(shared.record()).await
            {
                tracing::warn!(error = %e, "recording the worker's heartbeat failed; will retry");
            }
            rescue_and_follow_up(&shared, now).await;
            // Saga events go to the default instance, so its workers watch the timeouts.
            if let Some(sagas) = shared.registry.sagas()
                && config.instance_key == DEFAULT_TARGET
                && let Err(e) = sagas.publish_timeouts(&shared.orch, now).await
            {
                tracing::warn!(error = %e, "publishing saga timeouts failed; will retry");
            }
            let cutoff = Timestamp::from_micros(
                now.as_micros()
                    .saturating_sub(i64::try_from(FORGET_DEAD_WORKERS_AFTER.as_micros()).unwrap_or(0)),
            );
            if ticks.is_multiple_of(PRUNE_WORKERS_EVERY)
                && let Err(e) = shared.orch.store().prune_workers(cutoff).await
            {
                tracing::warn!(error = %e, "pruning dead workers failed; will retry");
            }
            ticks += 1;
            next_rescue = now + config.rescue_interval;
        }
        let wake = (clock.now() + config.heartbeat_interval).min(next_rescue);
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = clock.sleep_until(wake) => {}
        }
        heartbeat(&shared).await;
    }
}

/// How often a worker reads the schedules again when none is due sooner: schedules
/// saved by other processes are seen within this time (in this process, at once).
pub const SCHEDULE_REFRESH: Duration = Duration::from_secs(10);

/// Fires due schedules: sleeps until the earliest next slot (or the refresh), then
/// steps every due schedule.
async fn scheduler(orch: Orch, stop: CancellationToken) {
    let clock = Arc::clone(orch.clock());
    let signals = Arc::clone(orch.signals());
    let mut failures: u32 = 0;
    loop {
        // Registered before reading, so a schedule saved meanwhile wakes the next sleep.
        let saved = signals.scheduled.notified();
        let now = clock.now();
        let wake = match crate::schedule::fire_due(orch.store().as_ref(), now).await {
            Ok(next) => {
                failures = 0;
                next.map_or(now + SCHEDULE_REFRESH, |n| n.min(now + SCHEDULE_REFRESH))
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                let wait = (Duration::from_millis(100) * 2u32.saturating_pow(failures.min(6)))
                    .min(MAX_CLAIM_BACKOFF);
                tracing::warn!(error = %e, ?wait, "reading the schedules failed; will retry");
                now + wait
            }
        };
        if wake <= now {
            // Another worker stepped a schedule just now: read again.
            tokio::task::yield_now().await;
            continue;
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = clock.sleep_until(wake) => {}
            _ = saved => {}
        }
    }
}

/// Dead workers' rows are pruned on every this many rescue ticks.
const PRUNE_WORKERS_EVERY: u64 = 6;

async fn heartbeat(shared: &Arc<Shared>) {
    type Entry = (Lease, CancellationToken, StopSlot, Arc<AtomicI64>, Duration);
    let entries: Vec<Entry> = {
        let running = shared.running.lock().unwrap_or_else(|e| e.into_inner());
        running
            .values()
            .map(|r| (r.lease, r.stop.clone(), Arc::clone(&r.reason), Arc::clone(&r.expires), r.timeout))
            .collect()
    };
    if entries.is_empty() {
        return;
    }
    let params = HeartbeatParams {
        leases: entries.iter().map(|(lease, ..)| *lease).collect(),
        now: shared.orch.clock().now(),
        lease_buffer: shared.config.lease_buffer,
    };
    let params_now = params.now;
    match shared.orch.store().heartbeat(params).await {
        Ok(statuses) => {
            for ((lease, stop, reason, expires, timeout), status) in entries.into_iter().zip(statuses) {
                if let LeaseStatus::Held { .. } = status {
                    let renewed = params_now + timeout + shared.config.lease_buffer;
                    expires.store(renewed.as_micros(), Ordering::Relaxed);
                }
                match status {
                    LeaseStatus::Held { cancel_requested: false } => {}
                    LeaseStatus::Held { cancel_requested: true } => {
                        tracing::info!(id = %lease.id, "cancel requested; stopping handler");
                        set_reason(&reason, StopReason::CancelRequested);
                        stop.cancel();
                    }
                    LeaseStatus::Lost => {
                        tracing::warn!(id = %lease.id, "lease lost; stopping handler");
                        set_reason(&reason, StopReason::LeaseLost);
                        stop.cancel();
                    }
                }
            }
        }
        Err(e) => tracing::warn!(error = %e, "lease renewal failed; will retry"),
    }
}

async fn rescue_and_follow_up(shared: &Arc<Shared>, now: Timestamp) {
    match shared.orch.store().rescue(now, 1_000).await {
        Ok(rescued) if !rescued.is_empty() => {
            for r in &rescued {
                tracing::warn!(id = %r.id, state = %r.state, "rescued an expired lease");
            }
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "rescue failed; will retry"),
    }
    let due = match shared.orch.store().follow_ups_due(&shared.names, 100).await {
        Ok(due) => due,
        Err(e) => {
            tracing::warn!(error = %e, "reading due follow-ups failed; will retry");
            return;
        }
    };
    for record in due {
        match push_due_follow_ups(shared, &record).await {
            Ok(()) => {}
            // Follow-ups that can never be stored are dropped, as they are when a worker
            // records an outcome, so they cannot hold up the follow-ups behind them.
            Err(
                e @ (Error::InvalidConfig(_)
                | Error::Encode { .. }
                | Error::InvalidWorkflow(_)
                | Error::InputTooLarge { .. }),
            ) => {
                tracing::error!(id = %record.id, error = %e, "follow-ups are invalid; dropping them");
                let now = shared.orch.clock().now();
                if let Err(e) = shared.orch.store().resolve_follow_ups(record.id, Vec::new(), now).await {
                    tracing::warn!(id = %record.id, error = %e, "clearing invalid follow-ups failed; will retry");
                }
            }
            Err(e) => tracing::warn!(id = %record.id, error = %e, "pushing follow-ups failed; will retry"),
        }
    }
}

async fn push_due_follow_ups(shared: &Arc<Shared>, record: &CommandRecord) -> Result<()> {
    let Some(handler) = shared.registry.get(&record.name) else {
        return Ok(());
    };
    let follow_ups = match record.state {
        State::Cancelled => handler.cancel_follow_ups(&record.input),
        State::Failed => {
            let failure = record
                .error
                .clone()
                .unwrap_or_else(|| Failure::new(FailureKind::Error, "failed without a recorded error"));
            handler.failure_follow_ups(&record.input, &failure)
        }
        _ => Vec::new(),
    };
    let now = shared.orch.clock().now();
    let rows = resolve_for(now, record.id, &record.correlation_id, follow_ups)?;
    crate::command::check_input_sizes(&rows, shared.orch.max_input_bytes())?;
    let count = rows.len();
    if shared.orch.store().resolve_follow_ups(record.id, rows, now).await? {
        tracing::info!(id = %record.id, state = %record.state, count, "pushed follow-ups");
        if count > 0 {
            shared.orch.signals().pushed.notify_waiters();
        }
    }
    Ok(())
}

/// One attempt run by [`Worker::run_due_once`].
pub(crate) struct DueRun {
    /// The claim the attempt ran under.
    pub(crate) claimed: ClaimedCommand,
    /// What was recorded; `None` when the attempt lost its lease and nothing could be.
    pub(crate) outcome: Option<Outcome>,
}

impl Worker {
    /// Does once, in the caller's task, what the worker's tasks do over time, so that a
    /// test can drive a worker step by step (see [`crate::testing`]): the maintainer's
    /// pass (expired leases rescued, due follow-ups pushed, saga timeouts published),
    /// then one claim of due commands (at most `max_pull`), whose handlers all run at
    /// once, each outcome recorded before this returns. No lease is renewed meanwhile
    /// and no row is kept in the workers table. Runs come back in claim order.
    pub(crate) async fn run_due_once(&self) -> Result<Vec<DueRun>> {
        let shared = &self.shared;
        let now = shared.orch.clock().now();
        rescue_and_follow_up(shared, now).await;
        if let Some(sagas) = shared.registry.sagas()
            && shared.config.instance_key == DEFAULT_TARGET
        {
            sagas.publish_timeouts(&shared.orch, now).await?;
        }
        let params = ClaimParams {
            target: shared.config.instance_key.clone(),
            names: shared.names.clone(),
            limit: shared.config.max_pull,
            now: shared.orch.clock().now(),
            worker: shared.worker_id.clone(),
            lease_buffer: shared.config.lease_buffer,
        };
        let batch = shared.orch.store().claim(params).await?;
        let mut tasks = JoinSet::new();
        for (index, claimed) in batch.into_iter().enumerate() {
            let shared = Arc::clone(shared);
            tasks.spawn(async move {
                let id = claimed.lease.id;
                let span =
                    tracing::info_span!("command", %id, name = %claimed.name, attempt = claimed.attempt);
                let outcome = async {
                    let stop = CancellationToken::new();
                    let reason = Arc::new(Mutex::new(None));
                    run_attempt(&shared, &claimed, &stop, &reason).await
                }
                .instrument(span)
                .await;
                let recorded = match &outcome {
                    Some(outcome) => {
                        let completion = Completion {
                            lease: claimed.lease,
                            now: shared.orch.clock().now(),
                            worker: shared.worker_id.clone(),
                            outcome: outcome.clone(),
                        };
                        shared
                            .orch
                            .store()
                            .complete(vec![completion])
                            .await
                            .map(|statuses| statuses.first() == Some(&CompletionStatus::Applied))
                    }
                    None => Ok(false),
                };
                shared.orch.signals().finished.notify_waiters();
                let outcome = match recorded {
                    Ok(true) => outcome,
                    Ok(false) => None,
                    Err(e) => return (index, Err(e)),
                };
                (index, Ok(DueRun { claimed, outcome }))
            });
        }
        let mut runs = Vec::with_capacity(tasks.len());
        let mut first_error = None;
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok((index, Ok(run))) => runs.push((index, run)),
                Ok((_, Err(e))) => {
                    first_error.get_or_insert(e);
                }
                Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                // Aborted: only when the runtime itself shuts down.
                Err(_) => {
                    first_error.get_or_insert(Error::Shutdown);
                }
            }
        }
        if let Some(e) = first_error {
            return Err(e);
        }
        runs.sort_by_key(|(index, _)| *index);
        Ok(runs.into_iter().map(|(_, run)| run).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_validation_names_the_field() {
        assert!(WorkerConfig::default().validate().is_ok());
        let cases: Vec<(WorkerConfig, &str)> = vec![
            (WorkerConfig { concurrency: 0, ..Default::default() }, "concurrency"),
            (WorkerConfig { max_pull: 0, ..Default::default() }, "max_pull"),
            (WorkerConfig { prefetch: usize::MAX, ..Default::default() }, "prefetch"),
            (WorkerConfig { instance_key: String::new(), ..Default::default() }, "instance_key"),
            (WorkerConfig { poll_interval: Duration::ZERO, ..Default::default() }, "poll_interval"),
            (WorkerConfig { lease_buffer: Duration::from_millis(500), ..Default::default() }, "lease_buffer"),
        ];
        for (config, field) in cases {
            match config.validate() {
                Err(Error::InvalidConfig(message)) => assert!(message.contains(field), "{message}"),
                other => panic!("expected InvalidConfig for {field}, got {other:?}"),
            }
        }
    }
}
