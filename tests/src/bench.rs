//! The benchmark behind `cargo xtask bench`: the workload of `../shared/peerbench`
//! (no-op commands, C concurrent handlers, a 100 ms poll) run against `orch` on each
//! backend, so the figures compare directly with the peers measured by that harness.
//!
//! Per backend, each phase on a fresh table prefix:
//! - **push**: N commands pushed one by one (each awaited), then N with `push_many` in
//!   batches of `--batch` (on another prefix).
//! - **process**: a worker started on the N one-by-one commands; the time until the
//!   store reports all N succeeded.
//! - **latency**: with the worker idle, `--latency-jobs` commands pushed at
//!   `--latency-rate` per second; push → handler start, p50/p95/p99.
//! - **idle**: store calls per second of an idle worker with the default configuration
//!   (2 s poll, 10 s rescue tick), counted by a wrapper around the store.
//! - **history**: `--history` finished commands written straight into the table (then
//!   checkpointed where the backend allows, as rows accumulated over time would be),
//!   then the process phase again; the slowdown against the empty table.
//!
//! Timing uses the wall clock (`Instant`); this is the one place measuring it is the
//! point.

#![allow(clippy::disallowed_methods, reason = "a benchmark measures wall-clock time")]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use orch::store::{
    CancelStatus, ClaimParams, ClaimedCommand, CommandRecord, Completion, CompletionStatus, CountRow,
    HeartbeatParams, InsertCommand, JournalEntry, LeaseStatus, ListParams, QueueStats, Rescued, RetryStatus,
    SagaQuery, SagaRecord, SagaWrite, SagaWriteStatus, WorkerRecord, WorkflowQuery, WorkflowStepRecord,
    WorkflowSummary,
};
use orch::{
    Command, CommandId, Context, HandlerError, NewCommand, Orch, Registry, Result, Store, Timestamp, Worker,
    WorkerConfig, WorkflowId,
};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

/// The benchmark's settings.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// Commands per phase.
    pub commands: u64,
    /// Handlers at once.
    pub concurrency: usize,
    /// Claimed commands a worker may hold beyond `concurrency` (its local queue).
    pub prefetch: usize,
    /// The most commands claimed per round trip.
    pub max_pull: usize,
    /// The worker's idle poll interval.
    pub poll: Duration,
    /// `push_many` batch size.
    pub batch: usize,
    /// Commands of the latency phase.
    pub latency_jobs: u64,
    /// Their push rate per second.
    pub latency_rate: u64,
    /// Finished commands stored before the second process phase (0 skips it).
    pub history: u64,
    /// How long the idle worker's store calls are counted.
    pub idle: Duration,
    /// Fill the processing queue with `push_many` instead of one push per command (a
    /// quicker run for profiling; the one-by-one push figure is then not measured).
    pub skip_single_push: bool,
    /// A pause between writing the history and processing beside it, so the server
    /// flushes the bulk write first (MariaDB with a small buffer pool and redo log
    /// otherwise spends the processing run writing the history back).
    pub settle: Duration,
}

impl Default for BenchConfig {
    fn default() -> Self {
        BenchConfig {
            commands: 20_000,
            concurrency: 16,
            prefetch: WorkerConfig::default().prefetch,
            max_pull: WorkerConfig::default().max_pull,
            poll: Duration::from_millis(100),
            batch: 1000,
            latency_jobs: 200,
            latency_rate: 100,
            history: 1_000_000,
            idle: Duration::from_secs(10),
            skip_single_push: false,
            settle: Duration::ZERO,
        }
    }
}

/// One backend's figures.
#[derive(Debug, Clone, Default, Serialize)]
pub struct BenchResult {
    /// The backend.
    pub backend: String,
    /// Commands per phase.
    pub commands: u64,
    /// The worker configuration of the processing and latency phases: handlers,
    /// local queue, claim size, poll interval (ms).
    pub concurrency: usize,
    /// See `concurrency`.
    pub prefetch: usize,
    /// See `concurrency`.
    pub max_pull: usize,
    /// See `concurrency`.
    pub poll_ms: u64,
    /// One-by-one pushes per second (0 when skipped).
    pub push_per_s: f64,
    /// `push_many` pushes per second.
    pub push_many_per_s: f64,
    /// Processed per second, worker start to the last completion in the store.
    pub process_per_s: f64,
    /// Store calls per command while processing (claims, completions, heartbeats and
    /// the bench's own completion checks): how well claims and completions batch.
    pub process_calls_per_command: f64,
    /// Pickup latency percentiles, milliseconds.
    pub latency_p50_ms: f64,
    /// 95th percentile.
    pub latency_p95_ms: f64,
    /// 99th percentile.
    pub latency_p99_ms: f64,
    /// Store calls per second of an idle worker (default configuration).
    pub idle_calls_per_s: f64,
    /// Finished commands stored for the history phase.
    pub history: u64,
    /// Processed per second with that history.
    pub process_with_history_per_s: Option<f64>,
    /// Handler runs beyond one per command (must be 0).
    pub duplicates: u64,
}

/// The no-op command: its handler records when it started.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BenchCommand {
    /// Its index within the phase.
    pub seq: u64,
}

impl Command for BenchCommand {
    type Output = ();
    const NAME: Option<&'static str> = Some("bench_noop");
}

/// Handler start times by sequence number, microseconds since the recorder started.
struct Recorder {
    epoch: Instant,
    started: Vec<AtomicU64>,
    runs: AtomicU64,
    seen: AtomicU64,
    all_seen: Notify,
}

impl Recorder {
    fn new(n: u64) -> Arc<Self> {
        Arc::new(Recorder {
            epoch: Instant::now(),
            started: (0..n).map(|_| AtomicU64::new(0)).collect(),
            runs: AtomicU64::new(0),
            seen: AtomicU64::new(0),
            all_seen: Notify::new(),
        })
    }

    fn micros(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(u64::MAX).max(1)
    }

    fn start(&self, seq: u64) {
        self.runs.fetch_add(1, Ordering::Relaxed);
        if let Some(slot) = self.started.get(seq as usize)
            && slot.compare_exchange(0, self.micros(), Ordering::Relaxed, Ordering::Relaxed).is_ok()
            && self.seen.fetch_add(1, Ordering::Relaxed) + 1 == self.started.len() as u64
        {
            self.all_seen.notify_waiters();
        }
    }
}

fn registry(recorder: &Arc<Recorder>) -> Registry {
    let mut registry = Registry::new();
    let recorder = Arc::clone(recorder);
    registry
        .register_fn(move |c: BenchCommand, _ctx: Context| {
            recorder.start(c.seq);
            async { Ok::<(), HandlerError>(()) }
        })
        .expect("register the bench handler");
    registry
}

fn worker_config(cfg: &BenchConfig) -> WorkerConfig {
    WorkerConfig {
        concurrency: cfg.concurrency,
        prefetch: cfg.prefetch,
        max_pull: cfg.max_pull,
        poll_interval: cfg.poll,
        ..WorkerConfig::default()
    }
}

/// Opens a fresh, migrated store on a new table prefix.
pub type Opener =
    dyn Fn(String) -> futures_util::future::BoxFuture<'static, Result<Arc<dyn Store>>> + Send + Sync;

/// Writes `rows` finished commands straight into the store's table (backend SQL).
pub type HistoryWriter = dyn Fn(String, u64) -> futures_util::future::BoxFuture<'static, std::result::Result<(), String>>
    + Send
    + Sync;

/// Whether some bench command is not finished: one indexed lookup, so polling it does
/// not slow the worker down however many finished rows the table holds.
async fn unfinished(store: &dyn Store) -> Result<bool> {
    let params =
        ListParams { unfinished: true, name: Some("bench_noop".into()), limit: 1, ..Default::default() };
    Ok(!store.list(params).await?.is_empty())
}

/// Starts a worker on `store` and waits until the store reports `n` succeeded; returns
/// commands per second and the handler runs.
async fn process(store: Arc<dyn Store>, cfg: &BenchConfig, n: u64) -> Result<(f64, u64)> {
    let recorder = Recorder::new(n);
    let orch = Orch::new(Arc::clone(&store));
    let started = Instant::now();
    let worker = Worker::new(orch, registry(&recorder), worker_config(cfg))?.start();
    let deadline = started + Duration::from_secs(1800);
    // Every command was handled, then the store agrees nothing is left.
    while recorder.seen.load(Ordering::Relaxed) < n {
        assert!(Instant::now() < deadline, "processing did not finish in 30 min");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    while unfinished(store.as_ref()).await? {
        assert!(Instant::now() < deadline, "processing did not finish in 30 min");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = started.elapsed();
    worker.shutdown().await;
    Ok((n as f64 / elapsed.as_secs_f64(), recorder.runs.load(Ordering::Relaxed)))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Runs every phase on one backend.
pub async fn run_backend(
    backend: &str,
    open: &Opener,
    history: &HistoryWriter,
    cfg: &BenchConfig,
) -> Result<BenchResult> {
    let n = cfg.commands;
    let run = std::process::id();
    let mut result = BenchResult {
        backend: backend.to_owned(),
        commands: n,
        concurrency: cfg.concurrency,
        prefetch: cfg.prefetch,
        max_pull: cfg.max_pull,
        poll_ms: u64::try_from(cfg.poll.as_millis()).unwrap_or(u64::MAX),
        ..Default::default()
    };
    let commands = |base: u64| (0..n).map(move |seq| NewCommand::of(&BenchCommand { seq: base + seq }));

    // push_many, on its own prefix.
    let store = open(format!("bb{run}_")).await?;
    let orch = Orch::new(Arc::clone(&store));
    let all: Vec<NewCommand> = commands(0).collect();
    let started = Instant::now();
    for chunk in all.chunks(cfg.batch) {
        orch.push_many(chunk.to_vec()).await?;
    }
    result.push_many_per_s = n as f64 / started.elapsed().as_secs_f64();
    eprintln!("{backend}: push_many {:.0}/s", result.push_many_per_s);

    // One by one, then processed.
    let counted = Arc::new(CountingStore::new(open(format!("bp{run}_")).await?));
    let store: Arc<dyn Store> = counted.clone();
    let orch = Orch::new(Arc::clone(&store));
    if cfg.skip_single_push {
        for chunk in commands(0).collect::<Vec<_>>().chunks(cfg.batch) {
            orch.push_many(chunk.to_vec()).await?;
        }
    } else {
        let started = Instant::now();
        for seq in 0..n {
            orch.push(&BenchCommand { seq }).await?;
        }
        result.push_per_s = n as f64 / started.elapsed().as_secs_f64();
        eprintln!("{backend}: push {:.0}/s", result.push_per_s);
    }
    let calls_before = counted.calls();
    let (claims_before, completions_before) = (counted.claims().totals(), counted.completions().totals());
    let (rate, runs) = process(Arc::clone(&store), cfg, n).await?;
    for (what, before, after) in [
        ("claims", claims_before, counted.claims().totals()),
        ("completions", completions_before, counted.completions().totals()),
    ] {
        let (calls, items, ms) = (after.0 - before.0, after.1 - before.1, after.2 - before.2);
        eprintln!(
            "{backend}: {what}: {calls} calls, {:.1} commands and {:.2} ms per call",
            items as f64 / calls.max(1) as f64,
            ms / calls.max(1) as f64
        );
    }
    result.process_calls_per_command = (counted.calls() - calls_before) as f64 / n as f64;
    result.process_per_s = rate;
    result.duplicates = runs.saturating_sub(n);
    eprintln!(
        "{backend}: process {rate:.0}/s, {:.3} store calls per command",
        result.process_calls_per_command
    );

    // Store calls of an idle worker with the default configuration (2 s poll).
    let idle = Worker::new(orch.clone(), registry(&Recorder::new(0)), WorkerConfig::default())?.start();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let calls_before = counted.calls();
    let idle_started = Instant::now();
    tokio::time::sleep(cfg.idle).await;
    result.idle_calls_per_s = (counted.calls() - calls_before) as f64 / idle_started.elapsed().as_secs_f64();
    idle.shutdown().await;

    // Pickup latency on an idle worker polling every `cfg.poll`.
    let recorder = Recorder::new(cfg.latency_jobs);
    let worker = Worker::new(orch.clone(), registry(&recorder), worker_config(cfg))?.start();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut pushed_at = Vec::with_capacity(cfg.latency_jobs as usize);
    let mut tick =
        tokio::time::interval(Duration::from_secs(1) / u32::try_from(cfg.latency_rate.max(1)).unwrap_or(1));
    for seq in 0..cfg.latency_jobs {
        tick.tick().await;
        pushed_at.push(recorder.micros());
        orch.push(&BenchCommand { seq }).await?;
    }
    let wait = recorder.all_seen.notified();
    if recorder.seen.load(Ordering::Relaxed) < cfg.latency_jobs {
        let _ = tokio::time::timeout(Duration::from_secs(60), wait).await;
    }
    worker.shutdown().await;
    let mut latencies: Vec<f64> = recorder
        .started
        .iter()
        .zip(&pushed_at)
        .filter_map(|(start, pushed)| {
            let s = start.load(Ordering::Relaxed);
            (s > 0).then(|| s.saturating_sub(*pushed) as f64 / 1000.0)
        })
        .collect();
    latencies.sort_by(f64::total_cmp);
    result.latency_p50_ms = percentile(&latencies, 50.0);
    result.latency_p95_ms = percentile(&latencies, 95.0);
    result.latency_p99_ms = percentile(&latencies, 99.0);
    eprintln!(
        "{backend}: latency p50 {:.1} ms p99 {:.1} ms; idle {:.2} calls/s",
        result.latency_p50_ms, result.latency_p99_ms, result.idle_calls_per_s
    );

    // History: many finished rows, then the same processing.
    if cfg.history > 0 {
        let prefix = format!("bh{run}_");
        let store = open(prefix.clone()).await?;
        let started = Instant::now();
        history(prefix, cfg.history)
            .await
            .map_err(|e| orch::Error::invalid_config(format!("writing history: {e}")))?;
        eprintln!(
            "{backend}: {} finished rows written in {:.1} s",
            cfg.history,
            started.elapsed().as_secs_f64()
        );
        let orch = Orch::new(Arc::clone(&store));
        let all: Vec<NewCommand> = commands(0).collect();
        for chunk in all.chunks(cfg.batch) {
            orch.push_many(chunk.to_vec()).await?;
        }
        if !cfg.settle.is_zero() {
            eprintln!("{backend}: letting the server flush the history for {:?}", cfg.settle);
            tokio::time::sleep(cfg.settle).await;
        }
        let (rate, _) = process(store, cfg, n).await?;
        result.history = cfg.history;
        result.process_with_history_per_s = Some(rate);
        eprintln!("{backend}: process with history {rate:.0}/s");
    }
    Ok(result)
}

/// A store that counts the calls made through it.
pub struct CountingStore {
    inner: Arc<dyn Store>,
    calls: AtomicU64,
    claims: CallStats,
    completions: CallStats,
}

/// Calls of one store method: how many, the commands they carried, their total time.
#[derive(Debug, Default)]
pub struct CallStats {
    calls: AtomicU64,
    items: AtomicU64,
    micros: AtomicU64,
}

impl CallStats {
    fn add(&self, items: usize, took: Duration) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.items.fetch_add(items as u64, Ordering::Relaxed);
        self.micros.fetch_add(u64::try_from(took.as_micros()).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// (calls, commands, total milliseconds) so far.
    pub fn totals(&self) -> (u64, u64, f64) {
        (
            self.calls.load(Ordering::Relaxed),
            self.items.load(Ordering::Relaxed),
            self.micros.load(Ordering::Relaxed) as f64 / 1000.0,
        )
    }
}

impl CountingStore {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn Store>) -> Self {
        CountingStore {
            inner,
            calls: AtomicU64::new(0),
            claims: CallStats::default(),
            completions: CallStats::default(),
        }
    }

    /// Claims so far.
    pub fn claims(&self) -> &CallStats {
        &self.claims
    }

    /// Completions so far.
    pub fn completions(&self) -> &CallStats {
        &self.completions
    }

    /// Calls so far.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    fn count(&self) -> &dyn Store {
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.inner.as_ref()
    }
}

#[async_trait]
impl Store for CountingStore {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }
    async fn migrate(&self) -> Result<()> {
        self.count().migrate().await
    }
    async fn enqueue(&self, commands: Vec<InsertCommand>) -> Result<Vec<CommandId>> {
        self.count().enqueue(commands).await
    }
    async fn claim(&self, params: ClaimParams) -> Result<Vec<ClaimedCommand>> {
        let started = Instant::now();
        let claimed = self.count().claim(params).await?;
        self.claims.add(claimed.len(), started.elapsed());
        Ok(claimed)
    }
    async fn heartbeat(&self, params: HeartbeatParams) -> Result<Vec<LeaseStatus>> {
        self.count().heartbeat(params).await
    }
    async fn complete(&self, completions: Vec<Completion>) -> Result<Vec<CompletionStatus>> {
        let started = Instant::now();
        let count = completions.len();
        let statuses = self.count().complete(completions).await?;
        self.completions.add(count, started.elapsed());
        Ok(statuses)
    }
    async fn cancel(&self, id: CommandId, now: Timestamp) -> Result<CancelStatus> {
        self.count().cancel(id, now).await
    }
    async fn rescue(&self, now: Timestamp, limit: usize) -> Result<Vec<Rescued>> {
        self.count().rescue(now, limit).await
    }
    async fn follow_ups_due(&self, names: &[String], limit: usize) -> Result<Vec<CommandRecord>> {
        self.count().follow_ups_due(names, limit).await
    }
    async fn resolve_follow_ups(
        &self,
        id: CommandId,
        follow_ups: Vec<InsertCommand>,
        now: Timestamp,
    ) -> Result<bool> {
        self.count().resolve_follow_ups(id, follow_ups, now).await
    }
    async fn get(&self, id: CommandId) -> Result<Option<CommandRecord>> {
        self.count().get(id).await
    }
    async fn list(&self, params: ListParams) -> Result<Vec<CommandRecord>> {
        self.count().list(params).await
    }
    async fn counts(&self) -> Result<Vec<CountRow>> {
        self.count().counts().await
    }
    async fn journal(&self, id: CommandId) -> Result<Vec<JournalEntry>> {
        self.count().journal(id).await
    }
    async fn workflow_steps(&self, workflow_id: WorkflowId) -> Result<Vec<WorkflowStepRecord>> {
        self.count().workflow_steps(workflow_id).await
    }
    async fn saga(&self, saga: &str, correlation_id: &str) -> Result<Option<SagaRecord>> {
        self.count().saga(saga, correlation_id).await
    }
    async fn save_saga(&self, write: SagaWrite) -> Result<SagaWriteStatus> {
        self.count().save_saga(write).await
    }
    async fn sagas(&self, query: SagaQuery) -> Result<Vec<SagaRecord>> {
        self.count().sagas(query).await
    }
    async fn queue_stats(&self, now: Timestamp) -> Result<Vec<QueueStats>> {
        self.count().queue_stats(now).await
    }
    async fn retry(&self, id: CommandId, now: Timestamp) -> Result<RetryStatus> {
        self.count().retry(id, now).await
    }
    async fn workflows(&self, query: WorkflowQuery) -> Result<Vec<WorkflowSummary>> {
        self.count().workflows(query).await
    }
    async fn record_worker(&self, worker: WorkerRecord) -> Result<()> {
        self.count().record_worker(worker).await
    }
    async fn remove_worker(&self, id: &str) -> Result<()> {
        self.count().remove_worker(id).await
    }
    async fn workers(&self) -> Result<Vec<WorkerRecord>> {
        self.count().workers().await
    }
    async fn prune_workers(&self, before: Timestamp) -> Result<u64> {
        self.count().prune_workers(before).await
    }
    async fn server_time(&self) -> Result<Option<Timestamp>> {
        self.count().server_time().await
    }
    async fn pause(&self, scope: orch::PauseScope, now: Timestamp) -> Result<bool> {
        self.count().pause(scope, now).await
    }
    async fn prune_finished(&self, before: Timestamp, limit: usize) -> Result<Option<u64>> {
        self.count().prune_finished(before, limit).await
    }
    async fn resume(&self, scope: &orch::PauseScope) -> Result<bool> {
        self.count().resume(scope).await
    }
    async fn pauses(&self) -> Result<Vec<orch::PauseRecord>> {
        self.count().pauses().await
    }
    async fn save_schedule(&self, record: orch::ScheduleRecord) -> Result<()> {
        self.count().save_schedule(record).await
    }
    async fn remove_schedule(&self, name: &str) -> Result<bool> {
        self.count().remove_schedule(name).await
    }
    async fn schedules(&self) -> Result<Vec<orch::ScheduleRecord>> {
        self.count().schedules().await
    }
    async fn fire_schedule(&self, fire: orch::store::ScheduleFire) -> Result<orch::store::FireStatus> {
        self.count().fire_schedule(fire).await
    }
    fn wake_signal(&self) -> Option<Arc<Notify>> {
        self.inner.wake_signal()
    }
}
