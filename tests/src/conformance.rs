//! The conformance suite: every backend must pass every case.
//!
//! Each case takes a [`Harness`] and asserts outcomes that a wrong store would get
//! wrong. Real-time waits poll with a deadline ([`eventually`]); time-dependent cases
//! move a [`ManualClock`] instead of sleeping.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use orch::store::{
    ClaimParams, ClaimedCommand, Completion, CompletionStatus, HeartbeatParams, InsertCommand, LeaseStatus,
    ListParams, Outcome,
};
use orch::{
    CancelStatus, CancellationToken, Clock, Command, CommandId, Context, Error, Failure, FailureKind,
    HandlerError, JournalKind, ManualClock, NewCommand, Orch, PauseScope, Registry, RetryPolicy, State,
    Status, Store, SystemClock, Timestamp, Worker,
};
use serde::{Deserialize, Serialize};

pub use crate::conformance_monitor::{
    list_filters_sort_and_page, monitor_counts_match_sql, workflows_are_summarized,
};
pub use crate::conformance_sagas::{
    saga_compensations_run_last_first, saga_concurrent_events_apply_in_order,
    saga_events_reach_only_their_saga, saga_failed_compensation_is_visible, saga_order_completes,
    saga_order_refunds_when_inventory_fails, saga_timeout_compensates,
};
pub use crate::conformance_schedules::{
    cron_slots_follow_the_dst_rule, schedule_fires_each_slot_once_across_workers,
};
pub use crate::conformance_unique::{
    unique_key_admits_one_of_concurrent_pushes, unique_key_holds_while_unfinished_or_for_its_period,
};
pub use crate::conformance_workflows::{
    workflow_builder_rejections, workflow_cancel_stops_unfinished, workflow_failure_cancels_dependents,
    workflow_runs_in_dependency_order, workflow_steps_run_concurrently,
};
use crate::harness::Harness;
use crate::support::{drive_until, eventually, fast_config, manual_config};

// ---------------------------------------------------------------------------
// Command types used by the cases.

/// Succeeds with its input; fast.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EchoCommand {
    /// A number returned as output.
    pub n: u64,
}
impl Command for EchoCommand {
    type Output = u64;
}

/// Records where it ran.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct RoutedCommand {
    n: u64,
    target: String,
}
impl Command for RoutedCommand {
    type Output = ();
}

/// Always fails; 2 retries, no backoff; alerts on failure.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct FlakyCommand {
    job: String,
}
impl Command for FlakyCommand {
    type Output = ();
    const RETRIES: u32 = 2;
    fn retry_policy() -> RetryPolicy {
        RetryPolicy::immediate()
    }
    fn on_failure(&self, error: &Failure) -> Vec<NewCommand> {
        vec![NewCommand::of(&AlertCommand { about: self.job.clone(), reason: error.message.clone() })]
    }
}

/// A follow-up nobody handles in these cases, so it stays visible as pending.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct AlertCommand {
    about: String,
    reason: String,
}
impl Command for AlertCommand {
    type Output = ();
}

/// Fails with a jittered exponential backoff.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct BackoffCommand;
impl Command for BackoffCommand {
    type Output = ();
    const RETRIES: u32 = 3;
    fn retry_policy() -> RetryPolicy {
        RetryPolicy {
            initial_delay: Duration::from_secs(10),
            max_delay: Duration::from_secs(60),
            multiplier: 2.0,
            jitter: 0.5,
        }
    }
}

/// Hangs until cancelled; 10 s timeout, 1 retry after 1 s.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct HangCommand;
impl Command for HangCommand {
    type Output = ();
    const TIMEOUT: Duration = Duration::from_secs(10);
    const RETRIES: u32 = 1;
    fn retry_policy() -> RetryPolicy {
        RetryPolicy::fixed(Duration::from_secs(1))
    }
}

/// Chains an echo on success.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ParentCommand {
    n: u64,
}
impl Command for ParentCommand {
    type Output = u64;
    fn on_success(&self, output: &u64) -> Vec<NewCommand> {
        vec![NewCommand::of(&EchoCommand { n: output + 1 })]
    }
}

/// Defines only `on_failure`: cancellation must reuse it.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct CancellableCommand {
    job: String,
}
impl Command for CancellableCommand {
    type Output = ();
    const TIMEOUT: Duration = Duration::from_secs(60);
    fn on_failure(&self, error: &Failure) -> Vec<NewCommand> {
        vec![NewCommand::of(&AlertCommand { about: self.job.clone(), reason: error.kind.to_string() })]
    }
}

/// Defines its own `on_cancel`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct CleanupOnCancelCommand;
impl Command for CleanupOnCancelCommand {
    type Output = ();
    fn on_failure(&self, _: &Failure) -> Vec<NewCommand> {
        vec![NewCommand::of(&AlertCommand { about: "cleanup".into(), reason: "failure".into() })]
    }
    fn on_cancel(&self) -> Vec<NewCommand> {
        vec![NewCommand::raw("cleanup", serde_json::json!({"after": "cancel"}))]
    }
}

/// Chains a follow-up whose id is already taken.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ClashCommand {
    taken: CommandId,
}
impl Command for ClashCommand {
    type Output = ();
    fn on_success(&self, _: &()) -> Vec<NewCommand> {
        vec![NewCommand::raw("child", serde_json::json!({})).id(self.taken)]
    }
}

/// Waits behind commands of the default priority.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct BackgroundCommand;
impl Command for BackgroundCommand {
    type Output = ();
    const PRIORITY: i16 = 10;
}

/// Chains an echo whose input is padded to `pad` bytes.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct PaddedParentCommand {
    pad: usize,
}
impl Command for PaddedParentCommand {
    type Output = ();
    fn on_success(&self, _: &()) -> Vec<NewCommand> {
        vec![padded_echo(5, self.pad)]
    }
}

/// An echo of `n` whose JSON input is exactly `bytes` long (at least 20).
fn padded_echo(n: u64, bytes: usize) -> NewCommand {
    let frame = format!("{{\"n\":{n},\"pad\":\"\"}}").len();
    let pad = "x".repeat(bytes.saturating_sub(frame));
    NewCommand::raw("echo", serde_json::json!({ "n": n, "pad": pad }))
}

// ---------------------------------------------------------------------------
// Helpers.

fn echo_registry() -> Registry {
    let mut registry = Registry::new();
    registry.register_fn(|c: EchoCommand, _ctx: Context| async move { Ok::<_, HandlerError>(c.n) }).unwrap();
    registry
}

/// Waits (with the suite's deadline) until the command finishes, and returns its status.
async fn finish(orch: &Orch, id: CommandId) -> Status {
    match tokio::time::timeout(crate::support::WAIT, orch.wait(id)).await {
        Ok(status) => status.expect("read the command's status"),
        Err(_) => panic!("command {id} did not finish within {:?}", crate::support::WAIT),
    }
}

/// Registers a `HangCommand` handler that never returns on its own; each attempt's
/// cancellation token is kept in the returned list, in start order.
fn register_hanging(registry: &mut Registry) -> Arc<Mutex<Vec<CancellationToken>>> {
    let tokens: Arc<Mutex<Vec<CancellationToken>>> = Arc::default();
    let kept = Arc::clone(&tokens);
    registry
        .register_fn(move |_: HangCommand, ctx: Context| {
            let kept = Arc::clone(&kept);
            async move {
                kept.lock().unwrap().push(ctx.cancellation_token().clone());
                std::future::pending::<()>().await;
                Ok::<_, HandlerError>(())
            }
        })
        .unwrap();
    tokens
}

async fn record(store: &Arc<dyn Store>, id: CommandId) -> orch::CommandRecord {
    store.get(id).await.unwrap().unwrap_or_else(|| panic!("command {id} not found"))
}

async fn all(store: &Arc<dyn Store>) -> Vec<orch::CommandRecord> {
    store.list(ListParams::default()).await.unwrap()
}

async fn named(store: &Arc<dyn Store>, name: &str) -> Vec<orch::CommandRecord> {
    store.list(ListParams { name: Some(name.into()), ..Default::default() }).await.unwrap()
}

async fn kinds(store: &Arc<dyn Store>, id: CommandId) -> Vec<JournalKind> {
    store.journal(id).await.unwrap().into_iter().map(|e| e.kind).collect()
}

fn insert(name: &str, now: Timestamp) -> InsertCommand {
    NewCommand::raw(name, serde_json::json!({})).resolve(now).expect("valid command")
}

fn claim_params(names: &[&str], now: Timestamp, worker: &str, limit: usize) -> ClaimParams {
    ClaimParams {
        target: orch::DEFAULT_TARGET.into(),
        names: names.iter().map(|n| n.to_string()).collect(),
        limit,
        now,
        worker: worker.into(),
        lease_buffer: Duration::from_secs(1),
    }
}

async fn claim_one(store: &Arc<dyn Store>, name: &str, now: Timestamp, worker: &str) -> ClaimedCommand {
    let mut claimed = store.claim(claim_params(&[name], now, worker, 1)).await.unwrap();
    assert_eq!(claimed.len(), 1, "expected one claimable `{name}` at {now}");
    claimed.remove(0)
}

// ---------------------------------------------------------------------------
// The cases.

/// 1. Four workers share 2,000 commands; every handler runs exactly once.
pub async fn claim_is_exclusive(h: &dyn Harness) {
    const N: u64 = 2_000;
    let store = h.store().await;
    let runs: Arc<Mutex<HashMap<u64, u32>>> = Arc::default();
    let mut workers = Vec::new();
    for i in 0..4 {
        let mut registry = Registry::new();
        let runs = Arc::clone(&runs);
        registry
            .register_fn(move |c: EchoCommand, _ctx: Context| {
                let runs = Arc::clone(&runs);
                async move {
                    *runs.lock().unwrap().entry(c.n).or_default() += 1;
                    Ok::<_, HandlerError>(c.n)
                }
            })
            .unwrap();
        let orch = Orch::new(Arc::clone(&store));
        let config = fast_config(&format!("w{i}"));
        let config = orch::WorkerConfig { instance_key: orch::DEFAULT_TARGET.into(), ..config };
        workers.push(Worker::new(orch, registry, config).unwrap().start());
    }
    let client = Orch::new(Arc::clone(&store));
    let batch: Vec<NewCommand> = (0..N).map(|n| NewCommand::of(&EchoCommand { n })).collect();
    client.push_many(batch).await.unwrap();

    eventually("all 2,000 commands to succeed", || async {
        let counts = store.counts().await.unwrap();
        let done: u64 = counts.iter().filter(|c| c.state == State::Succeeded).map(|c| c.count).sum();
        (done == N).then_some(())
    })
    .await;
    for w in workers {
        w.shutdown().await;
    }
    let runs = runs.lock().unwrap().clone();
    assert_eq!(runs.len() as u64, N, "every command ran");
    let twice: Vec<_> = runs.iter().filter(|(_, c)| **c != 1).collect();
    assert!(twice.is_empty(), "commands run more than once: {twice:?}");
    let records = all(&store).await;
    assert!(records.iter().all(|r| r.attempts == 1 && r.state == State::Succeeded));
    let holders: std::collections::HashSet<_> = records.iter().filter_map(|r| r.worker.clone()).collect();
    assert!(holders.len() >= 2, "work should spread over workers, got {holders:?}");
}

/// 2. Completing, failing or renewing with a stale lease changes nothing and reports it.
pub async fn stale_lease_changes_nothing(h: &dyn Harness) {
    let store = h.store().await;
    let t0 = Timestamp::from_millis(1_000_000);
    let row = insert("job", t0);
    let id = row.id;
    store.enqueue(vec![row]).await.unwrap();

    let stale = claim_one(&store, "job", t0, "worker-a").await;
    // Lease = timeout (5 s) + buffer (1 s); past it, the command is rescued and re-claimed.
    let t1 = t0 + Duration::from_secs(7);
    let rescued = store.rescue(t1, 100).await.unwrap();
    assert_eq!(rescued.len(), 1);
    assert_eq!(rescued[0].state, State::Pending);
    let fresh = claim_one(&store, "job", t1, "worker-b").await;
    assert_ne!(stale.lease.token, fresh.lease.token, "every claim gets a fresh token");
    assert_eq!(fresh.attempt, 2);

    let before = record(&store, id).await;
    let t2 = t1 + Duration::from_millis(10);
    let stale_outcomes = vec![
        Outcome::Succeeded { output: "1".into(), follow_ups: vec![insert("follow", t2)] },
        Outcome::Failed { failure: Failure::new(FailureKind::Error, "x"), follow_ups: vec![] },
        Outcome::Retry { failure: Failure::new(FailureKind::Error, "x"), retry_at: t2 },
        Outcome::Cancelled { follow_ups: vec![] },
        Outcome::Released { at: t2, started: true },
    ];
    for outcome in stale_outcomes {
        let status = store
            .complete(vec![Completion { lease: stale.lease, now: t2, worker: "worker-a".into(), outcome }])
            .await
            .unwrap();
        assert_eq!(status, vec![CompletionStatus::LeaseLost]);
    }
    let beat = store
        .heartbeat(HeartbeatParams {
            leases: vec![stale.lease],
            now: t2,
            lease_buffer: Duration::from_secs(60),
        })
        .await
        .unwrap();
    assert_eq!(beat, vec![LeaseStatus::Lost]);
    assert_eq!(record(&store, id).await, before, "a stale lease must change nothing");
    assert!(named(&store, "follow").await.is_empty(), "no follow-up from a stale completion");
    let lost = kinds(&store, id).await.iter().filter(|k| **k == JournalKind::LeaseLost).count();
    assert_eq!(lost, 6, "each refused change is journaled as lease_lost");

    // The current holder still can, and afterwards the old one still cannot.
    let ok = store
        .complete(vec![Completion {
            lease: fresh.lease,
            now: t2,
            worker: "worker-b".into(),
            outcome: Outcome::Succeeded { output: "2".into(), follow_ups: vec![] },
        }])
        .await
        .unwrap();
    assert_eq!(ok, vec![CompletionStatus::Applied]);
    let late = store
        .complete(vec![Completion {
            lease: stale.lease,
            now: t2,
            worker: "worker-a".into(),
            outcome: Outcome::Succeeded { output: "1".into(), follow_ups: vec![] },
        }])
        .await
        .unwrap();
    assert_eq!(late, vec![CompletionStatus::LeaseLost]);
    let done = record(&store, id).await;
    assert_eq!(done.state, State::Succeeded);
    assert_eq!(done.output.as_deref(), Some("2"));
    assert_eq!(done.lease_token, None);
}

/// 3. Retry count 2 means 3 runs, then `failed`, then (and not before) the failure follow-ups.
pub async fn retries_then_failure_follow_ups(h: &dyn Harness) {
    let store = h.store().await;
    let orch = Orch::new(Arc::clone(&store));
    let runs = Arc::new(AtomicU32::new(0));
    let alert_seen_early = Arc::new(AtomicBool::new(false));
    let mut registry = Registry::new();
    {
        let runs = Arc::clone(&runs);
        let early = Arc::clone(&alert_seen_early);
        registry
            .register_fn(move |_: FlakyCommand, ctx: Context| {
                let runs = Arc::clone(&runs);
                let early = Arc::clone(&early);
                async move {
                    runs.fetch_add(1, Ordering::SeqCst);
                    let alerts = ctx
                        .orch()
                        .store()
                        .list(ListParams { name: Some("alert".into()), ..Default::default() })
                        .await
                        .map_err(HandlerError::from)?;
                    if !alerts.is_empty() {
                        early.store(true, Ordering::SeqCst);
                    }
                    Err::<(), _>(HandlerError::new(format!("boom on attempt {}", ctx.attempt())))
                }
            })
            .unwrap();
    }
    let worker = Worker::new(orch.clone(), registry, fast_config("default")).unwrap().start();
    let id = orch.push(&FlakyCommand { job: "nightly".into() }).await.unwrap();
    let status = finish(&orch, id).await;
    worker.shutdown().await;

    assert!(matches!(&status, Status::Failed(f) if f.message == "boom on attempt 3"), "{status:?}");
    assert_eq!(runs.load(Ordering::SeqCst), 3, "retry count 2 → exactly 3 runs");
    let r = record(&store, id).await;
    assert_eq!((r.state, r.attempts, r.max_attempts), (State::Failed, 3, 3));
    assert!(
        !alert_seen_early.load(Ordering::SeqCst),
        "on_failure follow-ups must not exist before the final failure"
    );
    let alerts = named(&store, "alert").await;
    assert_eq!(alerts.len(), 1, "exactly one on_failure follow-up");
    assert_eq!(alerts[0].parent_id, Some(id));
    assert_eq!(alerts[0].correlation_id, r.correlation_id, "follow-ups inherit the correlation id");
    let input: serde_json::Value = serde_json::from_str(&alerts[0].input).unwrap();
    assert_eq!(input["reason"], "boom on attempt 3");
    let journal = kinds(&store, id).await;
    assert_eq!(journal.iter().filter(|k| **k == JournalKind::Failed).count(), 3);
    assert_eq!(journal.iter().filter(|k| **k == JournalKind::RetryScheduled).count(), 2);
}

/// 4. The next attempt is not claimable before the backoff delay, and is right after.
pub async fn backoff_delays_next_attempt(h: &dyn Harness) {
    let store = h.store().await;
    let clock = ManualClock::starting_2030();
    let orch = Orch::new(Arc::clone(&store)).with_clock(Arc::new(clock.clone()));
    let mut registry = Registry::new();
    registry
        .register_fn(|_: BackoffCommand, _ctx: Context| async { Err::<(), _>(HandlerError::new("not yet")) })
        .unwrap();
    let worker = Worker::new(orch.clone(), registry, manual_config("backoff")).unwrap().start();
    let failed_at = clock.now();
    let id = orch.push(&BackoffCommand).await.unwrap();
    let r = eventually("the first attempt to fail", || async {
        let r = record(&store, id).await;
        (r.state == State::Pending && r.attempts == 1).then_some(r)
    })
    .await;
    worker.shutdown().await;

    let (low, high) = BackoffCommand::retry_policy().bounds(1);
    let delay = r.scheduled_at.saturating_duration_since(failed_at);
    assert!(delay >= low && delay <= high, "delay {delay:?} outside the policy's bounds {low:?}..={high:?}");
    assert!(delay >= Duration::from_secs(5), "the first retry waits at least initial_delay × (1 - jitter)");

    let just_before = r.scheduled_at - Duration::from_micros(1);
    let early = store.claim(claim_params(&["backoff"], just_before, "probe", 10)).await.unwrap();
    assert!(early.is_empty(), "claimable {:?} before its backoff ended", r.scheduled_at);
    let on_time = store.claim(claim_params(&["backoff"], r.scheduled_at, "probe", 10)).await.unwrap();
    assert_eq!(on_time.len(), 1);
    assert_eq!(on_time[0].attempt, 2);
}

/// 5. A handler that exceeds its timeout is cancelled, journaled as timed out, and retried.
pub async fn timeout_cancels_and_retries(h: &dyn Harness) {
    let store = h.store().await;
    let clock = ManualClock::starting_2030();
    let orch = Orch::new(Arc::clone(&store)).with_clock(Arc::new(clock.clone()));
    let mut registry = Registry::new();
    let tokens = register_hanging(&mut registry);
    let worker = Worker::new(orch.clone(), registry, manual_config("hang")).unwrap().start();
    let id = orch.push(&HangCommand).await.unwrap();
    eventually("the first attempt to start", || async { (tokens.lock().unwrap().len() == 1).then_some(()) })
        .await;

    clock.advance(Duration::from_secs(10));
    let r = eventually("the timed-out attempt to be rescheduled", || async {
        let r = record(&store, id).await;
        (r.state == State::Pending).then_some(r)
    })
    .await;
    assert!(tokens.lock().unwrap()[0].is_cancelled(), "the handler's cancellation token fired");
    assert_eq!(r.attempts, 1);
    assert_eq!(r.error.as_ref().map(|e| e.kind), Some(FailureKind::Timeout));
    let journal = kinds(&store, id).await;
    assert!(
        journal.contains(&JournalKind::TimedOut) && journal.contains(&JournalKind::RetryScheduled),
        "{journal:?}"
    );

    drive_until(&clock, Duration::from_millis(100), "the second attempt starts", || async {
        (tokens.lock().unwrap().len() == 2).then_some(())
    })
    .await;
    clock.advance(Duration::from_secs(10));
    let status = eventually("the command to fail for good", || async {
        let s = orch.status(id).await.unwrap();
        s.is_final().then_some(s)
    })
    .await;
    worker.shutdown().await;
    assert!(matches!(status, Status::TimedOut(_)), "{status:?}");
    assert_eq!(record(&store, id).await.attempts, 2);
}

/// Panics with a message naming its input.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct PanicCommand;
/// Loops, yielding, and never looks at its cancellation token.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct SpinCommand;
/// Never returns.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct NeverCommand;
/// Succeeds at once.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct FineCommand;
macro_rules! poison_command {
    ($($t:ty: $timeout:expr),*) => {$(
        impl Command for $t {
            type Output = ();
            const TIMEOUT: Duration = $timeout;
            const RETRIES: u32 = 1;
            fn retry_policy() -> RetryPolicy {
                RetryPolicy::fixed(Duration::from_secs(1))
            }
        }
    )*};
}
// The manual clock runs ahead of real time while the test waits: only the commands
// meant to time out may have a timeout it can reach.
poison_command!(
    PanicCommand: Duration::from_secs(3_600),
    SpinCommand: Duration::from_secs(10),
    NeverCommand: Duration::from_secs(10),
    FineCommand: Duration::from_secs(3_600)
);

/// Counts the handler futures dropped (by an abort, at a timeout).
struct DropCount(Arc<AtomicU32>);
impl Drop for DropCount {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// Poison handlers (one panics, one spins ignoring its cancellation token, one never
/// returns) cost their commands their attempts and nothing else: a panic is a failed
/// attempt with its message in the journal, the others time out and are retried, their
/// futures are dropped, and the worker goes on running other commands.
pub async fn poison_handlers_spare_the_worker(h: &dyn Harness) {
    let store = h.store().await;
    let clock = ManualClock::starting_2030();
    let orch = Orch::new(Arc::clone(&store)).with_clock(Arc::new(clock.clone()));
    let dropped: Arc<AtomicU32> = Arc::default();
    let mut registry = Registry::new();
    registry
        .register_fn(|_: PanicCommand, ctx: Context| async move {
            assert!(ctx.attempt() == 0, "poisoned input in attempt {}", ctx.attempt());
            Ok::<_, HandlerError>(())
        })
        .unwrap();
    let guard = Arc::clone(&dropped);
    registry
        .register_fn(move |_: SpinCommand, _ctx: Context| {
            let guard = DropCount(Arc::clone(&guard));
            async move {
                let _guard = guard;
                loop {
                    tokio::task::yield_now().await;
                }
                #[allow(unreachable_code)]
                Ok::<_, HandlerError>(())
            }
        })
        .unwrap();
    let guard = Arc::clone(&dropped);
    registry
        .register_fn(move |_: NeverCommand, _ctx: Context| {
            let guard = DropCount(Arc::clone(&guard));
            async move {
                let _guard = guard;
                std::future::pending::<()>().await;
                Ok::<_, HandlerError>(())
            }
        })
        .unwrap();
    registry.register_fn(|_: FineCommand, _ctx: Context| async { Ok::<_, HandlerError>(()) }).unwrap();
    // A lease far longer than the timeouts: the test moves the clock in steps while
    // outcomes are written in real time, and the timeout, not a lapsed lease, must end
    // each attempt however slowly the database answers.
    let config = orch::WorkerConfig { lease_buffer: Duration::from_secs(600), ..manual_config("poison") };
    let worker = Worker::new(orch.clone(), registry, config).unwrap().start();
    let panicking = orch.push(&PanicCommand).await.unwrap();
    let spinning = orch.push(&SpinCommand).await.unwrap();
    let never = orch.push(&NeverCommand).await.unwrap();
    drive_until(&clock, Duration::from_millis(500), "the poison commands to end", || async {
        let mut ended = true;
        for id in [panicking, spinning, never] {
            ended &= orch.status(id).await.unwrap().is_final();
        }
        ended.then_some(())
    })
    .await;
    // The worker is still there and runs the next command.
    let fine = orch.push(&FineCommand).await.unwrap();
    drive_until(&clock, Duration::from_millis(100), "a fine command after the poison", || async {
        matches!(orch.status(fine).await.unwrap(), Status::Success(_)).then_some(())
    })
    .await;
    assert!(!worker.is_finished(), "the worker survived its poison handlers");
    worker.shutdown().await;

    let r = record(&store, panicking).await;
    assert_eq!((r.state, r.attempts), (State::Failed, 2));
    assert_eq!(r.error.as_ref().map(|e| e.kind), Some(FailureKind::Panic));
    let failed: Vec<String> = store
        .journal(panicking)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == JournalKind::Failed)
        .map(|e| e.message.unwrap_or_default())
        .collect();
    assert_eq!(failed.len(), 2, "{failed:?}");
    for (attempt, message) in (1..).zip(&failed) {
        assert!(message.contains(&format!("poisoned input in attempt {attempt}")), "{message}");
    }
    for id in [spinning, never] {
        let r = record(&store, id).await;
        assert_eq!((r.state, r.attempts), (State::Failed, 2), "{id}");
        assert_eq!(r.error.as_ref().map(|e| e.kind), Some(FailureKind::Timeout));
        let timed_out = kinds(&store, id).await.iter().filter(|k| **k == JournalKind::TimedOut).count();
        assert_eq!(timed_out, 2, "{id}");
    }
    assert_eq!(dropped.load(Ordering::SeqCst), 4, "each timed-out attempt's future was dropped");
}

/// 6. A delayed command is not claimed before its time, and is at its time.
pub async fn delayed_command_waits(h: &dyn Harness) {
    let store = h.store().await;
    let clock = ManualClock::starting_2030();
    let orch = Orch::new(Arc::clone(&store)).with_clock(Arc::new(clock.clone()));
    let start = clock.now();
    let id =
        orch.push_new(NewCommand::of(&EchoCommand { n: 1 }).delay(Duration::from_secs(60))).await.unwrap();
    assert_eq!(record(&store, id).await.scheduled_at, start + Duration::from_secs(60));

    for probe in [start, start + Duration::from_secs(30), start + Duration::from_millis(59_999)] {
        let claimed = store.claim(claim_params(&["echo"], probe, "probe", 10)).await.unwrap();
        assert!(claimed.is_empty(), "claimed at {probe}, before it was due");
    }

    // Through a worker on the manual clock as well: nothing runs until the clock gets there.
    let worker = Worker::new(orch.clone(), echo_registry(), manual_config("delay")).unwrap().start();
    clock.advance(Duration::from_secs(59));
    drive_until(&clock, Duration::from_millis(100), "the delayed command succeeds", || async {
        let r = record(&store, id).await;
        (r.state == State::Succeeded).then_some(())
    })
    .await;
    worker.shutdown().await;
    let r = record(&store, id).await;
    let started = r.started_at.expect("started");
    assert!(started >= start + Duration::from_secs(60), "started at {started}, before it was due");
}

/// A single worker taking one command at a time drains a mixed queue in claim order:
/// the lowest priority value first, then the earliest due, then the oldest; the store's
/// claim hands out the same order, and the priority is stored and read back.
pub async fn claims_follow_priority(h: &dyn Harness) {
    let store = h.store().await;
    let backend = h.backend();
    // Pushed by a clock an hour behind, so every command is due for the worker however
    // its delay spreads the due times.
    let past = ManualClock::new(SystemClock.now() - Duration::from_secs(3_600));
    let pusher = Orch::new(Arc::clone(&store)).with_clock(Arc::new(past));
    let mut ids = Vec::new();
    for n in 0..24u64 {
        let priority = [5, 0, -3, 0, 5, -3][(n % 6) as usize];
        let delay = Duration::from_millis((n * 7919) % 5 * 100);
        let command = NewCommand::of(&EchoCommand { n }).priority(priority).delay(delay);
        ids.push(pusher.push_new(command).await.unwrap());
    }
    // A low-priority command type by default.
    let background = pusher.push(&BackgroundCommand).await.unwrap();
    let mut expected = Vec::new();
    for &id in ids.iter().chain([&background]) {
        let r = record(&store, id).await;
        expected.push((r.priority, r.scheduled_at, r.id));
    }
    assert_eq!(record(&store, background).await.priority, BackgroundCommand::PRIORITY, "{backend}");
    assert_eq!(record(&store, ids[2]).await.priority, -3, "{backend}");
    expected.sort();
    let expected: Vec<CommandId> = expected.into_iter().map(|(_, _, id)| id).collect();

    let started: Arc<Mutex<Vec<CommandId>>> = Arc::default();
    let mut registry = Registry::new();
    for_each_start(&mut registry, &started);
    let config = orch::WorkerConfig { concurrency: 1, prefetch: 0, max_pull: 1, ..fast_config("default") };
    let worker = Worker::new(Orch::new(Arc::clone(&store)), registry, config).unwrap().start();
    eventually("the queue to drain", || async {
        (started.lock().unwrap().len() == expected.len()).then_some(())
    })
    .await;
    worker.shutdown().await;
    assert_eq!(*started.lock().unwrap(), expected, "{backend}: start order");
}

/// Pausing a name or a target holds back its commands from the next claim on, on
/// every worker, while other names and targets are claimed as before; resuming lets a
/// waiting worker run them. Pauses are stored and listed, pausing twice is reported.
pub async fn pause_holds_back_claims_until_resumed(h: &dyn Harness) {
    let store = h.store().await;
    let backend = h.backend();
    let orch = Orch::new(Arc::clone(&store));
    assert!(orch.pause(PauseScope::command::<EchoCommand>()).await.unwrap(), "{backend}");
    assert!(!orch.pause(PauseScope::name("echo")).await.unwrap(), "{backend}: paused already");
    assert!(orch.pause(PauseScope::target("eu")).await.unwrap(), "{backend}");
    assert!(matches!(orch.pause(PauseScope::target("")).await, Err(Error::InvalidConfig(_))), "{backend}");
    let listed: Vec<PauseScope> = orch.pauses().await.unwrap().into_iter().map(|p| p.scope).collect();
    assert_eq!(listed, vec![PauseScope::name("echo"), PauseScope::target("eu")], "{backend}");

    // Claims take nothing paused, and everything else.
    let echo = orch.push(&EchoCommand { n: 1 }).await.unwrap();
    let other = orch.push_new(NewCommand::raw("other", serde_json::json!({}))).await.unwrap();
    let in_eu = orch.push_new(NewCommand::raw("other", serde_json::json!({})).target("eu")).await.unwrap();
    let now = SystemClock.now();
    let claimed = store.claim(claim_params(&["echo", "other"], now, "probe", 10)).await.unwrap();
    assert_eq!(claimed.iter().map(|c| c.lease.id).collect::<Vec<_>>(), vec![other], "{backend}");
    let eu = ClaimParams { target: "eu".into(), ..claim_params(&["other"], now, "probe", 10) };
    assert!(store.claim(eu.clone()).await.unwrap().is_empty(), "{backend}: the target is paused");
    assert_eq!(record(&store, in_eu).await.state, State::Pending);

    // A running worker leaves the paused name alone: once it has run a command pushed
    // after the pause, it has claimed since, and the echo still waits.
    let mut registry = echo_registry();
    registry.register_fn(|_: BackgroundCommand, _ctx: Context| async { Ok::<_, HandlerError>(()) }).unwrap();
    let worker = Worker::new(orch.clone(), registry, fast_config("default")).unwrap().start();
    let marker = orch.push(&BackgroundCommand).await.unwrap();
    assert_eq!(finish(&orch, marker).await, Status::Success("null".into()), "{backend}");
    assert_eq!(record(&store, echo).await.state, State::Pending, "{backend}: paused name claimed");
    assert!(orch.resume(PauseScope::name("echo")).await.unwrap(), "{backend}");
    assert!(!orch.resume(PauseScope::name("echo")).await.unwrap(), "{backend}: resumed already");
    assert_eq!(finish(&orch, echo).await, Status::Success("1".into()), "{backend}: resumed");
    worker.shutdown().await;
    let listed: Vec<PauseScope> = orch.pauses().await.unwrap().into_iter().map(|p| p.scope).collect();
    assert_eq!(listed, vec![PauseScope::target("eu")], "{backend}");
    assert!(orch.resume(PauseScope::target("eu")).await.unwrap(), "{backend}");
    assert_eq!(store.claim(eu).await.unwrap().iter().map(|c| c.lease.id).collect::<Vec<_>>(), vec![in_eu]);
}

/// Retention deletes exactly the finished commands that finished before the cutoff,
/// with their journals and dependency edges, a batch at a time, and keeps what is
/// running, pending, recent, or still has follow-ups to push.
pub async fn retention_prunes_only_old_finished_commands(h: &dyn Harness) {
    let store = h.store().await;
    let backend = h.backend();
    let t0 = Timestamp::from_millis(1_900_000_000_000);
    let cutoff = t0 + Duration::from_secs(1_800);
    let t1 = t0 + Duration::from_secs(3_600);
    let done = |lease, now, outcome| Completion { lease, now, worker: "w".into(), outcome };
    let succeeded = || Outcome::Succeeded { output: "null".into(), follow_ups: Vec::new() };
    let finish = |name: &'static str, at: Timestamp, outcome: Outcome| {
        let store = Arc::clone(&store);
        async move {
            let row = insert(name, at);
            store.enqueue(vec![row.clone()]).await.unwrap();
            let claimed = claim_one(&store, name, at, "w").await;
            let status = store.complete(vec![done(claimed.lease, at, outcome)]).await.unwrap();
            assert_eq!(status, vec![CompletionStatus::Applied]);
            row.id
        }
    };
    let mut old = Vec::new();
    for i in 0..3 {
        old.push(finish(["old_a", "old_b", "old_c"][i], t0, succeeded()).await);
    }
    let failure = Failure::new(FailureKind::Error, "no");
    old.push(finish("old_failed", t0, Outcome::Failed { failure, follow_ups: Vec::new() }).await);
    // A workflow of two finished steps: its dependency edge goes with them.
    let workflow = orch::Workflow::builder()
        .step("a", NewCommand::raw("wf_a", serde_json::json!({})))
        .step_after("b", NewCommand::raw("wf_b", serde_json::json!({})), ["a"])
        .build()
        .unwrap();
    let pusher = Orch::new(Arc::clone(&store)).with_clock(Arc::new(ManualClock::new(t0)));
    let workflow_id = pusher.start_workflow(workflow).await.unwrap();
    for name in ["wf_a", "wf_b"] {
        let claimed = claim_one(&store, name, t0, "w").await;
        store.complete(vec![done(claimed.lease, t0, succeeded())]).await.unwrap();
        old.push(claimed.lease.id);
    }
    // Kept: finished after the cutoff, running, pending, cancelled with follow-ups due.
    let recent = finish("recent", t1, succeeded()).await;
    let running_row = insert("running", t0);
    store.enqueue(vec![running_row.clone(), insert("pending", t0)]).await.unwrap();
    claim_one(&store, "running", t0, "w").await;
    let pending = named(&store, "pending").await[0].id;
    let cancelled_row = insert("cancelled", t0);
    store.enqueue(vec![cancelled_row.clone()]).await.unwrap();
    assert_eq!(store.cancel(cancelled_row.id, t0).await.unwrap(), CancelStatus::Cancelled);
    let follow_ups_due = record(&store, cancelled_row.id).await.follow_ups_due;

    // Batches of two until nothing is left to prune.
    let mut pruned = 0;
    loop {
        let n = store.prune_finished(cutoff, 2).await.unwrap().expect("nobody else prunes");
        assert!(n <= 2, "{backend}: {n}");
        pruned += n;
        if n == 0 {
            break;
        }
    }
    assert_eq!(pruned, old.len() as u64, "{backend}: pruned");
    for id in &old {
        assert!(store.get(*id).await.unwrap().is_none(), "{backend}: {id} pruned");
        assert!(store.journal(*id).await.unwrap().is_empty(), "{backend}: {id}'s journal pruned");
    }
    assert!(store.workflow_steps(workflow_id).await.unwrap().is_empty(), "{backend}");
    for id in [recent, running_row.id, pending] {
        assert!(!kinds(&store, id).await.is_empty(), "{backend}: {id} kept with its journal");
    }
    if follow_ups_due {
        // Kept until its follow-ups are dealt with, then pruned.
        assert!(store.get(cancelled_row.id).await.unwrap().is_some(), "{backend}: follow-ups still due");
        store.resolve_follow_ups(cancelled_row.id, Vec::new(), t0).await.unwrap();
    }
    assert_eq!(store.prune_finished(cutoff, 100).await.unwrap(), Some(1), "{backend}: the cancelled one");
    assert!(store.get(cancelled_row.id).await.unwrap().is_none(), "{backend}");
    // Everything, with the cutoff past the recent one.
    assert_eq!(store.prune_finished(t1 + Duration::from_secs(1), 100).await.unwrap(), Some(1), "{backend}");
    assert_eq!(all(&store).await.len(), 2, "{backend}: the running and the pending one");

    // A worker prunes on its own, by its clock and its configured retention.
    let late = finish("late", t1, succeeded()).await;
    let clock = ManualClock::new(t1 + Duration::from_secs(7_200));
    let orch = Orch::new(Arc::clone(&store)).with_clock(Arc::new(clock));
    let config =
        orch::WorkerConfig { retention: Some(Duration::from_secs(3_600)), ..manual_config("pruner") };
    let worker = Worker::new(orch, echo_registry(), config).unwrap().start();
    eventually("the worker to prune", || async { store.get(late).await.unwrap().is_none().then_some(()) })
        .await;
    worker.shutdown().await;
    assert_eq!(all(&store).await.len(), 2, "{backend}: the worker pruned only the finished one");
}

/// Records the id of every echo and background command as its handler starts.
fn for_each_start(registry: &mut Registry, started: &Arc<Mutex<Vec<CommandId>>>) {
    let seen = Arc::clone(started);
    registry
        .register_fn(move |c: EchoCommand, ctx: Context| {
            seen.lock().unwrap().push(ctx.id());
            async move { Ok::<_, HandlerError>(c.n) }
        })
        .unwrap();
    let seen = Arc::clone(started);
    registry
        .register_fn(move |_: BackgroundCommand, ctx: Context| {
            seen.lock().unwrap().push(ctx.id());
            async move { Ok::<_, HandlerError>(()) }
        })
        .unwrap();
}

/// 7. A worker with instance key `a` never runs a command targeted at `b`.
pub async fn target_routing(h: &dyn Harness) {
    let store = h.store().await;
    let seen: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let mut workers = Vec::new();
    for key in ["a", "b"] {
        let seen = Arc::clone(&seen);
        let mut registry = Registry::new();
        registry
            .register_fn(move |c: RoutedCommand, _ctx: Context| {
                let seen = Arc::clone(&seen);
                async move {
                    seen.lock().unwrap().push((key.to_owned(), c.target));
                    Ok::<_, HandlerError>(())
                }
            })
            .unwrap();
        let orch = Orch::new(Arc::clone(&store));
        workers.push(Worker::new(orch, registry, fast_config(key)).unwrap().start());
    }
    let client = Orch::new(Arc::clone(&store));
    let mut batch = Vec::new();
    for n in 0..60u64 {
        let target = ["a", "b", "c"][(n % 3) as usize];
        batch.push(NewCommand::of(&RoutedCommand { n, target: target.into() }).target(target));
    }
    client.push_many(batch).await.unwrap();
    eventually("40 routed commands to run", || async { (seen.lock().unwrap().len() >= 40).then_some(()) })
        .await;
    eventually("a and b commands to be recorded", || async {
        let counts = store.counts().await.unwrap();
        let done: u64 = counts.iter().filter(|c| c.state == State::Succeeded).map(|c| c.count).sum();
        (done == 40).then_some(())
    })
    .await;
    for w in workers {
        w.shutdown().await;
    }
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 40);
    for (worker_key, target) in seen.iter() {
        assert_eq!(worker_key, target, "worker `{worker_key}` ran a command for `{target}`");
    }
    let c = store.list(ListParams { target: Some("c".into()), ..Default::default() }).await.unwrap();
    assert_eq!(c.len(), 20);
    assert!(
        c.iter().all(|r| r.state == State::Pending && r.attempts == 0),
        "commands for `c` wait, unclaimed"
    );
}

/// 8. `on_success` follow-ups commit in the same transaction as the success.
pub async fn success_follow_ups_commit_with_success(h: &dyn Harness) {
    let store = h.store().await;
    let t0 = Timestamp::from_millis(5_000_000);
    let parent = insert("parent", t0);
    let existing = insert("other", t0);
    let parent_id = parent.id;
    store.enqueue(vec![parent, existing.clone()]).await.unwrap();
    let claimed = claim_one(&store, "parent", t0, "w").await;

    // Step 1: claimed, nothing else exists yet.
    assert_eq!(record(&store, parent_id).await.state, State::Running);
    assert_eq!(all(&store).await.len(), 2);

    // Step 2: a completion whose follow-up cannot be inserted (its id is taken) must
    // leave no trace: the parent still running under the same lease, no partial rows.
    let mut clash = insert("child", t0);
    clash.id = existing.id;
    let good = insert("child", t0);
    let result = store
        .complete(vec![Completion {
            lease: claimed.lease,
            now: t0,
            worker: "w".into(),
            outcome: Outcome::Succeeded { output: "7".into(), follow_ups: vec![good.clone(), clash] },
        }])
        .await;
    assert!(result.is_err(), "a follow-up that cannot be stored fails the whole completion");
    let r = record(&store, parent_id).await;
    assert_eq!(
        (r.state, r.output.clone()),
        (State::Running, None),
        "success must not commit without its follow-ups"
    );
    assert_eq!(r.lease_token, Some(claimed.lease.token));
    assert!(store.get(good.id).await.unwrap().is_none(), "no follow-up may commit without the success");

    // Step 3: the real completion: success and follow-up appear together.
    let status = store
        .complete(vec![Completion {
            lease: claimed.lease,
            now: t0,
            worker: "w".into(),
            outcome: Outcome::Succeeded { output: "7".into(), follow_ups: vec![good.clone()] },
        }])
        .await
        .unwrap();
    assert_eq!(status, vec![CompletionStatus::Applied]);
    let r = record(&store, parent_id).await;
    assert_eq!(r.state, State::Succeeded);
    let child = record(&store, good.id).await;
    assert_eq!(child.state, State::Pending);

    // Through the worker: the typed on_success chain, with parent and correlation.
    let store = h.store().await;
    let orch = Orch::new(Arc::clone(&store));
    let mut registry = echo_registry();
    registry
        .register_fn(|c: ParentCommand, _ctx: Context| async move { Ok::<_, HandlerError>(c.n * 10) })
        .unwrap();
    let worker = Worker::new(orch.clone(), registry, fast_config("default")).unwrap().start();
    let id = orch.push(&ParentCommand { n: 4 }).await.unwrap();
    let children = eventually("the chained echo to succeed", || async {
        let c = named(&store, "echo").await;
        (c.len() == 1 && c[0].state == State::Succeeded).then_some(c)
    })
    .await;
    worker.shutdown().await;
    assert_eq!(children[0].parent_id, Some(id));
    assert_eq!(children[0].output.as_deref(), Some("41"));
    assert_eq!(children[0].correlation_id, record(&store, id).await.correlation_id);
    assert_eq!(orch.output::<ParentCommand>(id).await.unwrap(), Some(40));
}

/// 9. Cancelling a command without `on_cancel` runs its `on_failure` follow-ups.
pub async fn cancel_defaults_to_failure_follow_ups(h: &dyn Harness) {
    let store = h.store().await;
    let orch = Orch::new(Arc::clone(&store));
    let started = Arc::new(AtomicU32::new(0));
    let mut registry = Registry::new();
    {
        let started = Arc::clone(&started);
        registry
            .register_fn(move |_: CancellableCommand, ctx: Context| {
                let started = Arc::clone(&started);
                async move {
                    started.fetch_add(1, Ordering::SeqCst);
                    ctx.cancellation_token().cancelled().await;
                    Ok::<_, HandlerError>(())
                }
            })
            .unwrap();
        registry
            .register_fn(|_: CleanupOnCancelCommand, _ctx: Context| async { Ok::<_, HandlerError>(()) })
            .unwrap();
    }

    // Pending commands, cancelled before any worker runs: follow-ups come from a worker later.
    let pending = orch
        .push_new(
            NewCommand::of(&CancellableCommand { job: "pending".into() }).delay(Duration::from_secs(3600)),
        )
        .await
        .unwrap();
    let own = orch
        .push_new(NewCommand::of(&CleanupOnCancelCommand).delay(Duration::from_secs(3600)))
        .await
        .unwrap();
    assert_eq!(orch.cancel(pending).await.unwrap(), CancelStatus::Cancelled);
    assert_eq!(orch.cancel(own).await.unwrap(), CancelStatus::Cancelled);
    assert_eq!(orch.cancel(pending).await.unwrap(), CancelStatus::AlreadyFinished(State::Cancelled));
    assert_eq!(orch.cancel(CommandId::generate(Timestamp::EPOCH)).await.unwrap(), CancelStatus::NotFound);
    assert_eq!(orch.status(pending).await.unwrap(), Status::Cancelled);
    assert!(record(&store, pending).await.follow_ups_due);

    let worker = Worker::new(orch.clone(), registry, fast_config("default")).unwrap().start();

    // A running command: the handler's token fires and the command ends cancelled.
    let running = orch.push(&CancellableCommand { job: "running".into() }).await.unwrap();
    eventually("the handler to start", || async { (started.load(Ordering::SeqCst) == 1).then_some(()) })
        .await;
    assert_eq!(orch.cancel(running).await.unwrap(), CancelStatus::Requested);
    let status = finish(&orch, running).await;
    assert_eq!(status, Status::Cancelled);

    let alerts = eventually("an alert for each cancelled cancellable", || async {
        let a = named(&store, "alert").await;
        (a.len() == 2).then_some(a)
    })
    .await;
    let cleanup = eventually("the on_cancel follow-up", || async {
        let c = named(&store, "cleanup").await;
        (c.len() == 1).then_some(c)
    })
    .await;
    worker.shutdown().await;

    let mut parents: Vec<_> = alerts.iter().map(|a| a.parent_id.unwrap()).collect();
    parents.sort();
    let mut expected = vec![pending, running];
    expected.sort();
    assert_eq!(parents, expected, "on_failure follow-ups of both cancelled commands");
    for a in &alerts {
        let input: serde_json::Value = serde_json::from_str(&a.input).unwrap();
        assert_eq!(input["reason"], "cancelled", "on_failure is given the cancelled failure");
    }
    assert_eq!(cleanup[0].parent_id, Some(own), "a type's own on_cancel wins over on_failure");
    assert!(!record(&store, pending).await.follow_ups_due, "follow-ups are pushed once");
    let journal = kinds(&store, running).await;
    assert!(journal.contains(&JournalKind::CancelRequested) && journal.contains(&JournalKind::Cancelled));
}

/// 10. Undecodable input fails at once: decode error journaled, no retries, worker lives on.
pub async fn undecodable_input_fails_at_once(h: &dyn Harness) {
    let store = h.store().await;
    let orch = Orch::new(Arc::clone(&store));
    let worker = Worker::new(orch.clone(), echo_registry(), fast_config("default")).unwrap().start();
    let bad = orch
        .push_new(NewCommand::raw("echo", serde_json::json!({"n": "not a number"})).retries(5))
        .await
        .unwrap();
    let status = finish(&orch, bad).await;
    let Status::Failed(failure) = status else { panic!("expected a failure, got {status:?}") };
    assert_eq!(failure.kind, FailureKind::Decode);
    assert!(failure.message.contains("echo"), "{}", failure.message);
    let r = record(&store, bad).await;
    assert_eq!((r.state, r.attempts), (State::Failed, 1), "no retries burned on undecodable input");
    let journal = store.journal(bad).await.unwrap();
    assert!(
        journal
            .iter()
            .any(|e| e.kind == JournalKind::Failed
                && e.message.as_deref().is_some_and(|m| m.contains("decode")))
    );

    let good = orch.push(&EchoCommand { n: 9 }).await.unwrap();
    let status = finish(&orch, good).await;
    worker.shutdown().await;
    assert_eq!(status, Status::Success("9".into()), "the worker keeps running");
}

/// Rows damaged in the table by hand, as a careless producer would leave them: each
/// ends failed with a typed decoding error in its journal (or, where the database
/// refuses the damage, runs as pushed), none takes the worker or the other commands
/// down.
pub async fn malformed_rows_fail_alone(h: &dyn Harness) {
    let (store, location) = h.located_store().await;
    let orch = Orch::new(Arc::clone(&store));
    let backend = h.backend();
    let nested = format!("'{}{}'", "[".repeat(10_000), "]".repeat(10_000));
    let large = format!("'{{\"n\": 7, \"pad\": \"{}\"}}'", "x".repeat(10 << 20));
    let (nul, bad_utf8) = match backend {
        "sqlite" => ("'{\"n\": 1' || char(0) || '}'", "CAST(X'7B226E223A20317DFF' AS TEXT)"),
        "mysql" => ("CONCAT('{\"n\": 1', CHAR(0), '}')", "CONCAT('{\"n\": 1}', UNHEX('FF'))"),
        _ => ("'{\"n\": 1' || chr(0) || '}'", "convert_from('\\x7b226e223a20317dff'::bytea, 'UTF8')"),
    };
    let damage: Vec<(&str, String)> = vec![
        ("invalid JSON", "'{not json'".to_owned()),
        ("the wrong shape", "'{\"unexpected\": true}'".to_owned()),
        ("a NUL byte", nul.to_owned()),
        ("invalid UTF-8", bad_utf8.to_owned()),
        ("10,000 levels of nesting", nested),
    ];
    let mut damaged = Vec::new();
    let mut refused = Vec::new();
    for (what, value) in &damage {
        let id = orch.push(&EchoCommand { n: 1 }).await.unwrap();
        match h
            .sql_execute(&location, &format!("UPDATE {{commands}} SET input = {value} WHERE id = '{id}'"))
            .await
        {
            Ok(()) => damaged.push((*what, id)),
            Err(e) => refused.push((*what, id, e)),
        }
    }
    // A column the library itself reads: the row cannot even be read as a command.
    let unreadable = orch.push(&EchoCommand { n: 1 }).await.unwrap();
    h.sql_execute(
        &location,
        &format!("UPDATE {{commands}} SET retry_policy = '{{bad' WHERE id = '{unreadable}'"),
    )
    .await
    .expect("any text fits the retry policy column");
    let big = orch.push(&EchoCommand { n: 1 }).await.unwrap();
    h.sql_execute(&location, &format!("UPDATE {{commands}} SET input = {large} WHERE id = '{big}'"))
        .await
        .expect("a 10 MB input fits every backend's text column");
    let worker = Worker::new(orch.clone(), echo_registry(), fast_config("default")).unwrap().start();
    let good = orch.push(&EchoCommand { n: 9 }).await.unwrap();
    for &(what, id) in &damaged {
        let status = finish(&orch, id).await;
        let Status::Failed(failure) = status else {
            panic!("{backend}, {what}: expected a failure, got {status:?}")
        };
        assert_eq!(failure.kind, FailureKind::Decode, "{backend}, {what}: {}", failure.message);
        let r = record(&store, id).await;
        assert_eq!((r.state, r.attempts), (State::Failed, 1), "{backend}, {what}");
        assert!(kinds(&store, id).await.contains(&JournalKind::Failed), "{backend}, {what}");
    }
    // The row that does not read as a command is failed by the claim that met it, and
    // reading it gives a typed error; the state is read with plain SQL.
    eventually("the unreadable row to be failed", || async {
        let counts = h.sql_state_counts(&location).await;
        (counts.get("failed").copied().unwrap_or(0) == damaged.len() as i64 + 1).then_some(())
    })
    .await;
    assert!(
        matches!(store.get(unreadable).await, Err(Error::Corrupt(_))),
        "{backend}: reading the damaged row"
    );
    assert!(
        kinds(&store, unreadable).await.contains(&JournalKind::Failed),
        "{backend}: the damaged row's journal"
    );
    // What the database refused to store is as it was pushed, and runs.
    for (what, id, error) in &refused {
        assert_eq!(
            finish(&orch, *id).await,
            Status::Success("1".into()),
            "{backend}, {what} (refused: {error})"
        );
    }
    // Unknown fields are ignored: the padded input decodes.
    assert_eq!(finish(&orch, big).await, Status::Success("7".into()), "{backend}: the 10 MB input");
    assert_eq!(finish(&orch, good).await, Status::Success("9".into()), "{backend}: the worker keeps running");
    worker.shutdown().await;
    // Text columns: PostgreSQL refuses NUL bytes and invalid UTF-8 outright; SQLite
    // stores both.
    if backend == "sqlite" {
        assert!(refused.is_empty(), "SQLite stores whatever it is given: {refused:?}");
    }
}

/// Inputs over the size limit are refused at push time with a typed error, whatever
/// pushes them, and nothing of the push is stored; the limit is configurable.
pub async fn oversized_inputs_are_refused_at_push(h: &dyn Harness) {
    let store = h.store().await;
    let backend = h.backend();
    let orch = Orch::new(Arc::clone(&store));
    assert_eq!(orch.max_input_bytes(), Some(orch::DEFAULT_MAX_INPUT_BYTES));
    let total = || async { store.counts().await.unwrap().iter().map(|c| c.count).sum::<u64>() };

    // The default limit: one byte over is refused, the limit itself is stored.
    let over = orch::DEFAULT_MAX_INPUT_BYTES + 1;
    match orch.push_new(padded_echo(1, over)).await {
        Err(Error::InputTooLarge { name, bytes, limit }) => {
            assert_eq!(
                (name.as_str(), bytes, limit),
                ("echo", over, orch::DEFAULT_MAX_INPUT_BYTES),
                "{backend}"
            )
        }
        other => panic!("{backend}: expected InputTooLarge, got {other:?}"),
    }
    let at_limit = orch.push_new(padded_echo(2, orch::DEFAULT_MAX_INPUT_BYTES)).await.unwrap();
    // A batch with one oversized command stores none of them.
    let batch = vec![padded_echo(3, 100), padded_echo(4, over), padded_echo(5, 100)];
    assert!(matches!(orch.push_many(batch).await, Err(Error::InputTooLarge { .. })), "{backend}");
    assert_eq!(total().await, 1, "{backend}: only the command at the limit is stored");

    // A configured limit applies to pushes, workflows and handlers' follow-ups.
    let small = Orch::new(Arc::clone(&store)).with_max_input_bytes(Some(1024));
    assert!(matches!(
        small.push_new(padded_echo(6, 1025)).await,
        Err(Error::InputTooLarge { limit: 1024, .. })
    ));
    let workflow = orch::Workflow::builder()
        .step("a", padded_echo(7, 100))
        .step_after("b", padded_echo(8, 2048), ["a"])
        .build()
        .unwrap();
    assert!(matches!(small.start_workflow(workflow).await, Err(Error::InputTooLarge { .. })), "{backend}");
    assert_eq!(total().await, 1, "{backend}: no step of the refused workflow is stored");
    let mut registry = echo_registry();
    registry
        .register_fn(|_: PaddedParentCommand, _ctx: Context| async { Ok::<_, HandlerError>(()) })
        .unwrap();
    let worker = Worker::new(small.clone(), registry, fast_config("default")).unwrap().start();
    let parent = small.push(&PaddedParentCommand { pad: 4096 }).await.unwrap();
    let Status::Failed(failure) = finish(&small, parent).await else {
        panic!("{backend}: expected a failure")
    };
    assert!(failure.message.contains("over the limit of 1024 bytes"), "{backend}: {}", failure.message);
    let fits = small.push(&PaddedParentCommand { pad: 1000 }).await.unwrap();
    assert_eq!(finish(&small, fits).await, Status::Success("null".into()), "{backend}");
    assert_eq!(
        finish(&small, at_limit).await,
        Status::Success("2".into()),
        "{backend}: stored inputs still run"
    );
    worker.shutdown().await;

    // No limit: a larger input than the default is stored and read back whole.
    let unlimited = Orch::new(Arc::clone(&store)).with_max_input_bytes(None);
    let big = unlimited.push_new(padded_echo(9, over + 1024)).await.unwrap();
    assert_eq!(record(&store, big).await.input.len(), over + 1024, "{backend}");
}

/// 11. A command whose name no worker handles is never claimed and stays visible.
pub async fn unknown_name_stays_pending(h: &dyn Harness) {
    let store = h.store().await;
    let orch = Orch::new(Arc::clone(&store));
    let unknown = orch.push_new(NewCommand::raw("nobody_handles_this", serde_json::json!({}))).await.unwrap();
    let worker = Worker::new(orch.clone(), echo_registry(), fast_config("default")).unwrap().start();
    // Several echoes pushed after it: once they are done, the worker has polled past it.
    let mut last = None;
    for n in 0..3 {
        last = Some(orch.push(&EchoCommand { n }).await.unwrap());
    }
    finish(&orch, last.unwrap()).await;
    worker.shutdown().await;
    let r = record(&store, unknown).await;
    assert_eq!((r.state, r.attempts, r.worker.clone()), (State::Pending, 0, None));
    assert_eq!(kinds(&store, unknown).await, vec![JournalKind::Enqueued]);
    let counts = store.counts().await.unwrap();
    assert!(
        counts.iter().any(|c| c.name == "nobody_handles_this" && c.state == State::Pending && c.count == 1)
    );
}

/// 12. A dead worker's expired lease is rescued: the attempt counts, another worker runs it.
pub async fn expired_lease_is_rescued(h: &dyn Harness) {
    let store = h.store().await;
    let clock = ManualClock::starting_2030();
    let shared_clock: orch::SharedClock = Arc::new(clock.clone());
    let started = Arc::new(AtomicU32::new(0));
    let mut doomed = Registry::new();
    {
        let started = Arc::clone(&started);
        doomed
            .register_fn(move |_: EchoCommand, _ctx: Context| {
                let started = Arc::clone(&started);
                async move {
                    started.fetch_add(1, Ordering::SeqCst);
                    std::future::pending::<()>().await;
                    Ok::<_, HandlerError>(0)
                }
            })
            .unwrap();
    }
    let orch_a = Orch::new(Arc::clone(&store)).with_clock(Arc::clone(&shared_clock));
    let a = Worker::new(orch_a.clone(), doomed, manual_config("worker-a")).unwrap().start();
    let id = orch_a.push(&EchoCommand { n: 5 }).await.unwrap();
    eventually("worker a to start the command", || async {
        (started.load(Ordering::SeqCst) == 1).then_some(())
    })
    .await;
    a.abort().await; // dies without a word: the lease stays until it expires
    // Every task of worker a is gone once nothing sleeps on the clock any more; before
    // that, moving the clock could still fire its handler's timeout.
    eventually("worker a's tasks to stop", || async { (clock.sleepers() == 0).then_some(()) }).await;

    let held = record(&store, id).await;
    assert_eq!((held.state, held.worker.as_deref()), (State::Running, Some("worker-a")));
    // Lease = timeout 5 s + buffer 2 s.
    clock.advance(Duration::from_secs(8));
    let orch_b = Orch::new(Arc::clone(&store)).with_clock(Arc::clone(&shared_clock));
    let b = Worker::new(orch_b, echo_registry(), manual_config("worker-b")).unwrap().start();
    let r =
        drive_until(&clock, Duration::from_millis(100), "worker b to finish the rescued command", || async {
            let r = record(&store, id).await;
            (r.state == State::Succeeded).then_some(r)
        })
        .await;
    b.shutdown().await;
    assert_eq!(r.attempts, 2, "the lost attempt counts");
    assert_eq!(r.worker.as_deref(), Some("worker-b"));
    assert_eq!(r.output.as_deref(), Some("5"));
    let journal = store.journal(id).await.unwrap();
    let rescued = journal.iter().find(|e| e.kind == JournalKind::Rescued).expect("a rescued entry");
    assert!(rescued.message.as_deref().unwrap_or_default().contains("worker-a"));
}

/// 13. Table prefixes that are not plain identifiers are rejected with a typed error.
pub async fn invalid_prefix_is_rejected(h: &dyn Harness) {
    for bad in ["x; DROP TABLE y", "", &"p".repeat(64), "1abc", "a-b", "a b", "naïve"] {
        match h.store_with_prefix(bad).await {
            Err(Error::InvalidPrefix { prefix, .. }) => assert_eq!(prefix, bad),
            Err(other) => panic!("prefix {bad:?}: expected InvalidPrefix, got {other}"),
            Ok(_) => panic!("prefix {bad:?} was accepted"),
        }
    }
    let ok = h.store_with_prefix("valid_prefix_1_").await.expect("a plain identifier is accepted");
    ok.migrate().await.unwrap();
    ok.migrate().await.expect("migrate is idempotent");
}

/// 14. Two stores with different prefixes in one database do not see each other's commands.
pub async fn prefixes_are_isolated(h: &dyn Harness) {
    let first = h.store_with_prefix("iso_one_").await.unwrap();
    let second = h.store_with_prefix("iso_two_").await.unwrap();
    first.migrate().await.unwrap();
    second.migrate().await.unwrap();
    let now = Timestamp::from_millis(1_000);
    let a = insert("job", now);
    let b = insert("job", now);
    first.enqueue(vec![a.clone()]).await.unwrap();
    second.enqueue(vec![b.clone(), insert("other", now)]).await.unwrap();

    assert_eq!(all(&first).await.iter().map(|r| r.id).collect::<Vec<_>>(), vec![a.id]);
    assert_eq!(all(&second).await.len(), 2);
    assert!(first.get(b.id).await.unwrap().is_none());
    assert!(second.get(a.id).await.unwrap().is_none());
    let claimed = first.claim(claim_params(&["job", "other"], now, "w", 10)).await.unwrap();
    assert_eq!(claimed.iter().map(|c| c.lease.id).collect::<Vec<_>>(), vec![a.id]);
    assert_eq!(
        record(&second, b.id).await.state,
        State::Pending,
        "a claim in one prefix leaves the other alone"
    );
    assert!(first.journal(b.id).await.unwrap().is_empty());
}

/// The journal holds every step of a command's life, in order.
pub async fn journal_records_every_step(h: &dyn Harness) {
    let store = h.store().await;
    let t0 = Timestamp::from_millis(9_000_000);
    let row = insert("job", t0);
    let id = row.id;
    store.enqueue(vec![row]).await.unwrap();
    let first = claim_one(&store, "job", t0, "w1").await;
    let retry_at = t0 + Duration::from_secs(1);
    store
        .complete(vec![Completion {
            lease: first.lease,
            now: t0,
            worker: "w1".into(),
            outcome: Outcome::Retry { failure: Failure::new(FailureKind::Timeout, "slow"), retry_at },
        }])
        .await
        .unwrap();
    let second = claim_one(&store, "job", retry_at, "w2").await;
    store
        .complete(vec![Completion {
            lease: second.lease,
            now: retry_at,
            worker: "w2".into(),
            outcome: Outcome::Succeeded { output: "null".into(), follow_ups: vec![] },
        }])
        .await
        .unwrap();
    let journal = store.journal(id).await.unwrap();
    let steps: Vec<_> = journal.iter().map(|e| (e.kind, e.attempt, e.worker.clone())).collect();
    assert_eq!(
        steps,
        vec![
            (JournalKind::Enqueued, 0, None),
            (JournalKind::Claimed, 1, Some("w1".into())),
            (JournalKind::TimedOut, 1, Some("w1".into())),
            (JournalKind::RetryScheduled, 1, Some("w1".into())),
            (JournalKind::Claimed, 2, Some("w2".into())),
            (JournalKind::Succeeded, 2, Some("w2".into())),
        ]
    );
    assert!(journal.windows(2).all(|w| w[0].seq < w[1].seq && w[0].at <= w[1].at));
    assert_eq!(journal[2].message.as_deref(), Some("timeout: slow"));
    for (entry, claim) in [(&journal[1], &first), (&journal[4], &second)] {
        let expected = format!("lease until {}", claim.lease_expires_at);
        assert_eq!(
            entry.message.as_deref(),
            Some(expected.as_str()),
            "the claimed entry names the lease's end"
        );
    }
}

/// `wait` and `status` report success, failure, cancellation and not-found.
pub async fn wait_reports_statuses(h: &dyn Harness) {
    let store = h.store().await;
    let orch = Orch::new(Arc::clone(&store));
    let mut registry = echo_registry();
    registry
        .register_fn(|_: FlakyCommand, _ctx: Context| async {
            Err::<(), _>(HandlerError::permanent("no way"))
        })
        .unwrap();
    let worker = Worker::new(orch.clone(), registry, fast_config("default")).unwrap().start();
    let ok = orch.push(&EchoCommand { n: 3 }).await.unwrap();
    let bad = orch.push(&FlakyCommand { job: "x".into() }).await.unwrap();
    let out = tokio::time::timeout(crate::support::WAIT, orch.wait_output::<EchoCommand>(ok))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(out, Ok(3));
    let status = finish(&orch, bad).await;
    worker.shutdown().await;
    assert!(matches!(&status, Status::Failed(f) if f.message == "no way"), "{status:?}");
    assert_eq!(record(&store, bad).await.attempts, 1, "a permanent error is not retried");
    let missing = CommandId::generate(Timestamp::EPOCH);
    assert_eq!(orch.wait(missing).await.unwrap(), Status::NotFound);
    assert!(matches!(orch.output::<EchoCommand>(missing).await, Err(Error::NotFound(_))));
}

/// A follow-up the store refuses fails its command with the reason; the worker goes on.
pub async fn unstorable_follow_up_fails_the_command(h: &dyn Harness) {
    let store = h.store().await;
    let orch = Orch::new(Arc::clone(&store));
    let taken = orch.push_new(NewCommand::raw("parked", serde_json::json!({}))).await.unwrap();
    let mut registry = echo_registry();
    registry.register_fn(|_: ClashCommand, _ctx: Context| async { Ok::<_, HandlerError>(()) }).unwrap();
    let worker = Worker::new(orch.clone(), registry, fast_config("default")).unwrap().start();
    let id = orch.push(&ClashCommand { taken }).await.unwrap();
    let status = finish(&orch, id).await;
    let Status::Failed(failure) = status else { panic!("expected a failure, got {status:?}") };
    assert!(failure.message.contains("follow-up"), "{}", failure.message);
    assert_eq!(record(&store, taken).await.name, "parked", "the existing command is untouched");
    let after = orch.push(&EchoCommand { n: 1 }).await.unwrap();
    let status = finish(&orch, after).await;
    worker.shutdown().await;
    assert_eq!(status, Status::Success("1".into()), "the worker keeps running");
}

/// Shutdown lets running handlers finish within the grace period, then cancels the
/// rest and releases their commands for another worker; it claims nothing new.
pub async fn shutdown_releases_unfinished(h: &dyn Harness) {
    let store = h.store().await;
    let orch = Orch::new(Arc::clone(&store));
    let mut registry = echo_registry();
    let tokens = register_hanging(&mut registry);
    let config = orch::WorkerConfig { shutdown_grace: Duration::from_millis(200), ..fast_config("default") };
    let worker = Worker::new(orch.clone(), registry, config).unwrap().start();
    let hung = orch.push(&HangCommand).await.unwrap();
    eventually("the hanging handler to start", || async {
        (tokens.lock().unwrap().len() == 1).then_some(())
    })
    .await;
    worker.shutdown().await;

    assert!(tokens.lock().unwrap()[0].is_cancelled(), "the handler was told to stop");
    let r = record(&store, hung).await;
    assert_eq!((r.state, r.lease_token), (State::Pending, None), "released for another worker");
    assert_eq!(r.attempts, 1, "the interrupted attempt counts");
    assert!(kinds(&store, hung).await.contains(&JournalKind::Released));
    let later = orch.push(&EchoCommand { n: 1 }).await.unwrap();
    assert_eq!(record(&store, later).await.state, State::Pending, "a stopped worker claims nothing");
}

/// A worker holds claimed commands beyond its handlers (`prefetch`): they wait for a
/// handler slot without starting, a cancel request reaches a held one before its
/// handler starts, and shutdown releases the held ones.
pub async fn held_commands_wait_for_a_slot(h: &dyn Harness) {
    let store = h.store().await;
    let orch = Orch::new(Arc::clone(&store));
    let started: Arc<Mutex<Vec<CommandId>>> = Arc::default();
    let mut registry = Registry::new();
    let seen = Arc::clone(&started);
    registry
        .register_fn(move |_: HangCommand, ctx: Context| {
            let seen = Arc::clone(&seen);
            async move {
                seen.lock().unwrap().push(ctx.id());
                ctx.cancellation_token().cancelled().await;
                Ok::<_, HandlerError>(())
            }
        })
        .unwrap();
    let mut ids = Vec::new();
    for _ in 0..4 {
        ids.push(orch.push(&HangCommand).await.unwrap());
    }
    let config = orch::WorkerConfig {
        concurrency: 1,
        prefetch: 3,
        max_pull: 8,
        shutdown_grace: Duration::from_millis(200),
        ..fast_config("default")
    };
    let worker = Worker::new(orch.clone(), registry, config).unwrap().start();
    eventually("one handler running and all four commands leased", || async {
        let leased = all(&store).await.iter().filter(|r| r.state == State::Running).count();
        (started.lock().unwrap().len() == 1 && leased == 4).then_some(())
    })
    .await;
    let first = started.lock().unwrap()[0];
    let held: Vec<CommandId> = ids.iter().copied().filter(|id| *id != first).collect();

    assert_eq!(orch.cancel(held[0]).await.unwrap(), orch::CancelStatus::Requested);
    eventually("the held command to be cancelled", || async {
        (record(&store, held[0]).await.state == State::Cancelled).then_some(())
    })
    .await;
    assert_eq!(*started.lock().unwrap(), vec![first], "the cancelled command never started");

    worker.shutdown().await;
    assert_eq!(*started.lock().unwrap(), vec![first], "no handler starts after shutdown begins");
    for id in [first, held[1], held[2]] {
        let r = record(&store, id).await;
        assert_eq!((r.state, r.lease_token), (State::Pending, None), "{id} released at shutdown");
        assert!(kinds(&store, id).await.contains(&JournalKind::Released));
        // The interrupted attempt counts; one that never started does not.
        assert_eq!(r.attempts, u32::from(id == first), "{id}: attempts after release");
    }
}

/// Waits for a gate; its timeout is long enough never to fire in a test.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct GatedCommand;
impl Command for GatedCommand {
    type Output = ();
    const TIMEOUT: Duration = Duration::from_secs(3_600);
}

/// A worker whose process stood still past its leases (here its clock moves on with no
/// renewal) while another worker took them back: on resuming it must not start the
/// commands its local queue held, only find their leases gone.
pub async fn held_command_with_lapsed_lease_does_not_start(h: &dyn Harness) {
    let store = h.store().await;
    let clock = ManualClock::starting_2030();
    let orch = Orch::new(Arc::clone(&store)).with_clock(Arc::new(clock.clone()));
    let started: Arc<Mutex<Vec<CommandId>>> = Arc::default();
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let mut registry = Registry::new();
    let (seen, open) = (Arc::clone(&started), Arc::clone(&gate));
    registry
        .register_fn(move |_: GatedCommand, ctx: Context| {
            let (seen, open) = (Arc::clone(&seen), Arc::clone(&open));
            async move {
                seen.lock().unwrap().push(ctx.id());
                let _pass = open.acquire().await;
                Ok::<_, HandlerError>(())
            }
        })
        .unwrap();
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(orch.push(&GatedCommand).await.unwrap());
    }
    // No renewals or rescues of its own within the test's manual time.
    let config = orch::WorkerConfig {
        concurrency: 1,
        prefetch: 2,
        max_pull: 4,
        heartbeat_interval: Duration::from_secs(24 * 3_600),
        rescue_interval: Duration::from_secs(24 * 3_600),
        lease_buffer: Duration::from_secs(48 * 3_600),
        ..manual_config("paused")
    };
    let lease = GatedCommand::TIMEOUT + config.lease_buffer;
    let worker = Worker::new(orch.clone(), registry, config).unwrap().start();
    eventually("one handler running and all three commands leased", || async {
        let leased = all(&store).await.iter().filter(|r| r.state == State::Running).count();
        (started.lock().unwrap().len() == 1 && leased == 3).then_some(())
    })
    .await;
    let first = started.lock().unwrap()[0];

    // Past every lease, another worker rescues them and claims them again; then the
    // stalled worker's clock catches up (its running handler times out, so the held
    // commands get their slot one after another).
    let later = clock.now() + lease + Duration::from_secs(1);
    // A rescue skips rows another transaction holds locked at that moment (on MariaDB
    // the stalled worker's own maintenance scans at start can hold one): rescue until
    // all three are back.
    let rescued = AtomicU32::new(0);
    eventually("all three leases rescued", || async {
        let n = store.rescue(later, 10).await.unwrap().len() as u32;
        (rescued.fetch_add(n, Ordering::SeqCst) + n == 3).then_some(())
    })
    .await;
    let thief =
        store.claim(claim_params(&[GatedCommand::name().as_ref()], later, "thief", 10)).await.unwrap();
    assert_eq!(thief.len(), 3);
    clock.set(later);
    gate.add_permits(10);
    eventually("each command's stale lease refused", || async {
        let mut refused = 0;
        for &id in &ids {
            refused += usize::from(kinds(&store, id).await.contains(&JournalKind::LeaseLost));
        }
        (refused == 3).then_some(())
    })
    .await;
    worker.shutdown().await;
    assert_eq!(*started.lock().unwrap(), vec![first], "no held command started on a lapsed lease");
    for c in &thief {
        let r = record(&store, c.lease.id).await;
        assert_eq!(
            (r.state, r.lease_token, r.attempts),
            (State::Running, Some(c.lease.token), 2),
            "{}",
            r.id
        );
    }
}

/// One completion batch of many successes (which stores may apply in one statement),
/// one of them on a stale lease, and a retry: each is fenced on its own lease.
pub async fn batched_successes_are_fenced(h: &dyn Harness) {
    let store = h.store().await;
    let now = Timestamp::from_micros(1_000_000);
    let mut rows: Vec<InsertCommand> = (0..6).map(|_| insert("batch", now)).collect();
    // A dependent of the fourth, which a batched success unblocks.
    let mut dependent = insert("dependent", now);
    dependent.depends_on = vec![rows[3].id];
    rows.push(dependent.clone());
    store.enqueue(rows).await.unwrap();
    let claimed = store.claim(claim_params(&["batch"], now, "w1", 6)).await.unwrap();
    assert_eq!(claimed.len(), 6);
    assert_eq!(claimed[3].lease.id, dependent.depends_on[0], "claimed in push order");
    let later = Timestamp::from_micros(2_000_000);
    let mut completions: Vec<Completion> = claimed
        .iter()
        .enumerate()
        .map(|(i, c)| Completion {
            lease: c.lease,
            now: later,
            worker: "w1".into(),
            outcome: Outcome::Succeeded { output: format!("{{\"n\":{i}}}"), follow_ups: Vec::new() },
        })
        .collect();
    // One batched success pushes a follow-up.
    let follow_up = insert("after_batch", later);
    if let Outcome::Succeeded { follow_ups, .. } = &mut completions[2].outcome {
        follow_ups.push(follow_up.clone());
    }
    completions[4].lease =
        orch::store::Lease { id: claimed[4].lease.id, token: orch::store::LeaseToken::generate() };
    completions[5].outcome = Outcome::Retry {
        failure: orch::Failure::new(orch::FailureKind::Error, "again"),
        retry_at: Timestamp::from_micros(3_000_000),
    };
    // Reversed, so the batch is not in id or claim order.
    completions.reverse();
    let statuses = store.complete(completions).await.unwrap();
    let mut expected = vec![CompletionStatus::Applied; 6];
    expected[1] = CompletionStatus::LeaseLost;
    assert_eq!(statuses, expected);
    for (i, c) in claimed.iter().enumerate() {
        let r = record(&store, c.lease.id).await;
        match i {
            0..=3 => {
                assert_eq!(r.state, State::Succeeded, "{i}");
                assert_eq!(r.output.as_deref(), Some(format!("{{\"n\":{i}}}").as_str()), "{i}");
                assert_eq!((r.finished_at, r.lease_token), (Some(later), None), "{i}");
                assert_eq!(kinds(&store, c.lease.id).await.last(), Some(&JournalKind::Succeeded), "{i}");
            }
            4 => {
                assert_eq!(
                    (r.state, r.lease_token),
                    (State::Running, Some(c.lease.token)),
                    "a stale lease changes nothing"
                );
                assert_eq!(kinds(&store, c.lease.id).await.last(), Some(&JournalKind::LeaseLost));
            }
            _ => assert_eq!((r.state, r.scheduled_at), (State::Pending, Timestamp::from_micros(3_000_000))),
        }
    }
    assert_eq!(record(&store, follow_up.id).await.state, State::Pending, "the follow-up is pushed");
    assert_eq!(record(&store, dependent.id).await.state, State::Pending, "unblocked by its dependency");
}

/// A command may only depend on commands pushed with it, in an order that can run: a
/// dependency pushed earlier may have finished already (the dependent would wait for
/// ever), and so would a cycle. Either push is refused whole with a clear error.
pub async fn dependencies_are_pushed_together(h: &dyn Harness) {
    let store = h.store().await;
    let now = Timestamp::from_millis(1_000);
    let earlier = insert("first", now);
    store.enqueue(vec![earlier.clone()]).await.unwrap();
    let mut late = insert("late", now);
    late.depends_on = vec![earlier.id];
    let err = store.enqueue(vec![late.clone()]).await.unwrap_err();
    assert!(matches!(&err, orch::Error::InvalidConfig(m) if m.contains("not inserted with it")), "{err}");
    assert!(store.get(late.id).await.unwrap().is_none(), "nothing of the refused push is stored");

    let (mut a, mut b) = (insert("a", now), insert("b", now));
    a.depends_on = vec![b.id];
    b.depends_on = vec![a.id];
    let err = store.enqueue(vec![a.clone(), b.clone()]).await.unwrap_err();
    assert!(matches!(&err, orch::Error::InvalidConfig(m) if m.contains("cycle")), "{err}");
    assert!(store.get(a.id).await.unwrap().is_none() && store.get(b.id).await.unwrap().is_none());
}

/// `list` with `unfinished` returns exactly the blocked, pending and running commands,
/// in id order.
pub async fn list_finds_unfinished(h: &dyn Harness) {
    let store = h.store().await;
    let now = Timestamp::from_millis(1_000);
    let rows: Vec<InsertCommand> = (0..4).map(|_| insert("job", now)).collect();
    store.enqueue(rows.clone()).await.unwrap();
    let running = claim_one(&store, "job", now, "w").await;
    let done = claim_one(&store, "job", now, "w").await;
    let completion = Completion {
        lease: done.lease,
        now,
        worker: "w".into(),
        outcome: Outcome::Succeeded { output: "null".into(), follow_ups: Vec::new() },
    };
    assert_eq!(store.complete(vec![completion]).await.unwrap(), [CompletionStatus::Applied]);
    assert_eq!(store.cancel(rows[3].id, now).await.unwrap(), CancelStatus::Cancelled);
    let unfinished: Vec<CommandId> = store
        .list(ListParams { unfinished: true, ..ListParams::default() })
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    let mut expected = vec![running.lease.id, rows[2].id];
    expected.sort();
    assert_eq!(unfinished, expected);
}

/// A cancel requested while a command runs wins over its next attempt: an attempt
/// that fails (or is released) ends the command cancelled, with its failure recorded
/// and its blocked dependents cancelled, instead of running it again.
pub async fn cancel_request_wins_over_retry(h: &dyn Harness) {
    let store = h.store().await;
    let now = Timestamp::from_millis(1_000);
    for released in [false, true] {
        let mut parent = insert("job", now);
        let mut child = insert("child", now);
        let workflow = orch::WorkflowId::generate(now);
        parent.workflow = Some(orch::StepOf { workflow_id: workflow, step: "parent".into() });
        child.workflow = Some(orch::StepOf { workflow_id: workflow, step: "child".into() });
        child.depends_on = vec![parent.id];
        store.enqueue(vec![parent.clone(), child.clone()]).await.unwrap();
        let claimed = claim_one(&store, "job", now, "w").await;
        assert_eq!(store.cancel(parent.id, now).await.unwrap(), CancelStatus::Requested);
        let failure = Failure::new(FailureKind::Error, "boom");
        let outcome = if released {
            Outcome::Released { at: now + Duration::from_secs(1), started: true }
        } else {
            Outcome::Retry { failure: failure.clone(), retry_at: now + Duration::from_secs(1) }
        };
        let completion = Completion { lease: claimed.lease, now, worker: "w".into(), outcome };
        assert_eq!(store.complete(vec![completion]).await.unwrap(), [CompletionStatus::Applied]);
        let r = record(&store, parent.id).await;
        assert_eq!((r.state, r.follow_ups_due), (State::Cancelled, true), "released: {released}");
        assert_eq!((r.finished_at, r.scheduled_at), (Some(now), now), "due time unchanged");
        assert!(r.lease_token.is_none());
        if !released {
            assert_eq!(r.error, Some(failure));
        }
        let journal = kinds(&store, parent.id).await;
        let tail = if released {
            vec![JournalKind::Cancelled]
        } else {
            vec![JournalKind::Failed, JournalKind::Cancelled]
        };
        assert_eq!(journal[journal.len() - tail.len()..], tail[..], "{journal:?}");
        assert_eq!(record(&store, child.id).await.state, State::Cancelled, "its dependent is cancelled");
        assert!(
            store
                .claim(claim_params(&["job"], now + Duration::from_secs(5), "w", 10))
                .await
                .unwrap()
                .is_empty()
        );
    }
}

/// Workers record themselves in the workers table when they start, refresh their row
/// at every heartbeat, and remove it when they shut down; rows of workers that died
/// long ago are pruned.
pub async fn workers_are_recorded(h: &dyn Harness) {
    let store = h.store().await;
    let at = |ms: i64| Timestamp::from_millis(1_900_000_000_000 + ms);
    let row = |id: &str, names: &[&str], heartbeat: i64| orch::WorkerRecord {
        id: id.into(),
        instance_key: "edge".into(),
        host: "host-a".into(),
        pid: 4_242,
        names: names.iter().map(|n| n.to_string()).collect(),
        concurrency: 8,
        running: 3,
        started_at: at(0),
        heartbeat_at: at(heartbeat),
    };
    store.record_worker(row("w1", &[], 1_000)).await.unwrap();
    store.record_worker(row("w2", &["a", "b", "c"], 2_000)).await.unwrap();
    let refreshed = orch::WorkerRecord { running: 5, ..row("w1", &[], 9_000) };
    store.record_worker(refreshed.clone()).await.unwrap();
    assert_eq!(store.workers().await.unwrap(), vec![refreshed.clone(), row("w2", &["a", "b", "c"], 2_000)]);
    assert_eq!(store.prune_workers(at(5_000)).await.unwrap(), 1, "only w2 is older");
    assert_eq!(store.workers().await.unwrap(), vec![refreshed]);
    store.remove_worker("w1").await.unwrap();
    store.remove_worker("nobody").await.unwrap();
    assert!(store.workers().await.unwrap().is_empty());

    // A real worker records itself, heartbeats, and removes its row at shutdown.
    let worker =
        Worker::new(Orch::new(Arc::clone(&store)), echo_registry(), fast_config("live")).unwrap().start();
    let id = worker.id().to_owned();
    let first = eventually("the worker to record itself", || async {
        store.workers().await.unwrap().into_iter().find(|w| w.id == id)
    })
    .await;
    assert_eq!((first.instance_key.as_str(), first.pid), ("live", std::process::id()));
    assert_eq!(first.names, ["echo"]);
    eventually("a later heartbeat", || async {
        store.workers().await.unwrap().into_iter().find(|w| w.id == id && w.heartbeat_at > first.heartbeat_at)
    })
    .await;
    worker.shutdown().await;
    assert!(store.workers().await.unwrap().iter().all(|w| w.id != id), "a stopped worker removes its row");
}

/// Queue stats count every state per (name, target), split pending into due and
/// scheduled at the given time, and report the oldest due time.
pub async fn queue_stats_count_by_state(h: &dyn Harness) {
    let store = h.store().await;
    let t0 = Timestamp::from_millis(1_900_000_000_000);
    let at = |s: u64| t0 + Duration::from_secs(s);
    let push = |name: &str, target: &str, delay: u64| {
        NewCommand::raw(name, serde_json::json!({}))
            .target(target)
            .delay(Duration::from_secs(delay))
            .resolve(t0)
            .unwrap()
    };
    // job@a: three due at t0, one due at t0+5, one at t0+100; job@b: one; mail@a: one,
    // and one blocked on it.
    let rows = [
        push("job", "a", 0),
        push("job", "a", 5),
        push("job", "a", 100),
        push("job", "a", 0),
        push("job", "a", 0),
        push("job", "b", 0),
        push("mail", "a", 0),
    ];
    let mut blocked = push("mail", "a", 0);
    blocked.depends_on = vec![rows[6].id];
    blocked.workflow = Some(orch::StepOf { workflow_id: orch::WorkflowId::generate(t0), step: "b".into() });
    store.enqueue(rows.iter().cloned().chain([blocked]).collect()).await.unwrap();
    let claim = |target: &str, ids: usize| ClaimParams {
        target: target.into(),
        limit: ids,
        ..claim_params(&["job"], t0, "w", ids)
    };
    // The three jobs of `a` due at t0: one succeeds, one fails, one is retried (due
    // again at t0); the job of `b` runs; the mail is cancelled, and its dependent with it.
    let claimed = store.claim(claim("a", 3)).await.unwrap();
    assert_eq!(claimed.len(), 3);
    let ok = Outcome::Succeeded { output: "null".into(), follow_ups: Vec::new() };
    let failed = Outcome::Failed { failure: Failure::new(FailureKind::Error, "x"), follow_ups: Vec::new() };
    let retry = Outcome::Retry { failure: Failure::new(FailureKind::Error, "x"), retry_at: t0 };
    let complete = |lease, outcome| Completion { lease, now: t0, worker: "w".into(), outcome };
    let done = store
        .complete(vec![
            complete(claimed[0].lease, ok),
            complete(claimed[1].lease, failed),
            complete(claimed[2].lease, retry),
        ])
        .await
        .unwrap();
    assert!(done.iter().all(|s| *s == CompletionStatus::Applied));
    store.claim(claim("b", 1)).await.unwrap();
    assert_eq!(store.cancel(rows[6].id, t0).await.unwrap(), CancelStatus::Cancelled);

    let stats = store.queue_stats(at(10)).await.unwrap();
    let expected = vec![
        orch::QueueStats {
            name: "job".into(),
            target: "a".into(),
            due: 2,
            scheduled: 1,
            succeeded: 1,
            failed: 1,
            oldest_due: Some(t0),
            ..Default::default()
        },
        orch::QueueStats { name: "job".into(), target: "b".into(), running: 1, ..Default::default() },
        orch::QueueStats { name: "mail".into(), target: "a".into(), cancelled: 2, ..Default::default() },
    ];
    assert_eq!(stats, expected);
    // Earlier, the job due at t0+5 is still scheduled.
    let early = store.queue_stats(at(1)).await.unwrap();
    assert_eq!((early[0].due, early[0].scheduled, early[0].oldest_due), (1, 2, Some(t0)));
}

/// A failed or cancelled command can be run again: pending, due now, with one more
/// attempt; anything else is refused with its state.
pub async fn retry_runs_failed_commands_again(h: &dyn Harness) {
    let store = h.store().await;
    let clock = ManualClock::starting_2030();
    let orch = Orch::new(Arc::clone(&store)).with_clock(Arc::new(clock.clone()));
    let now = clock.now();
    let failing = orch.push_new(NewCommand::raw("job", serde_json::json!({})).retries(0)).await.unwrap();
    let claimed = claim_one(&store, "job", now, "w").await;
    let failure = Failure::new(FailureKind::Error, "boom");
    let outcome = Outcome::Failed { failure: failure.clone(), follow_ups: Vec::new() };
    store
        .complete(vec![Completion { lease: claimed.lease, now, worker: "w".into(), outcome }])
        .await
        .unwrap();

    clock.advance(Duration::from_secs(60));
    assert_eq!(orch.retry(failing).await.unwrap(), orch::RetryStatus::Retried);
    let r = record(&store, failing).await;
    assert_eq!((r.state, r.attempts, r.max_attempts), (State::Pending, 1, 2));
    assert_eq!((r.scheduled_at, r.finished_at, r.follow_ups_due), (clock.now(), None, false));
    assert_eq!(r.error, Some(failure), "the last error stays visible");
    assert_eq!(kinds(&store, failing).await.last(), Some(&JournalKind::RetryRequested));
    let again = claim_one(&store, "job", clock.now(), "w").await;
    assert_eq!(again.attempt, 2);
    assert_eq!(orch.retry(failing).await.unwrap(), orch::RetryStatus::NotRetryable(State::Running));

    let cancelled = orch.push_new(NewCommand::raw("other", serde_json::json!({}))).await.unwrap();
    orch.cancel(cancelled).await.unwrap();
    assert_eq!(orch.retry(cancelled).await.unwrap(), orch::RetryStatus::Retried);
    assert_eq!(record(&store, cancelled).await.state, State::Pending);
    assert_eq!(orch.retry(cancelled).await.unwrap(), orch::RetryStatus::NotRetryable(State::Pending));
    let unknown = CommandId::generate(now);
    assert_eq!(orch.retry(unknown).await.unwrap(), orch::RetryStatus::NotFound);
}

/// Retrying a step whose dependency has not succeeded makes it wait again (blocked);
/// retrying the dependency and letting it succeed unblocks it.
pub async fn retry_waits_for_dependencies(h: &dyn Harness) {
    let store = h.store().await;
    let now = Timestamp::from_millis(1_000);
    let workflow = orch::WorkflowId::generate(now);
    let mut a = NewCommand::raw("job", serde_json::json!({})).retries(0).resolve(now).unwrap();
    let mut b = insert("later", now);
    a.workflow = Some(orch::StepOf { workflow_id: workflow, step: "a".into() });
    b.workflow = Some(orch::StepOf { workflow_id: workflow, step: "b".into() });
    b.depends_on = vec![a.id];
    store.enqueue(vec![a.clone(), b.clone()]).await.unwrap();
    let claimed = claim_one(&store, "job", now, "w").await;
    let failed = Outcome::Failed { failure: Failure::new(FailureKind::Error, "x"), follow_ups: Vec::new() };
    store
        .complete(vec![Completion { lease: claimed.lease, now, worker: "w".into(), outcome: failed }])
        .await
        .unwrap();
    assert_eq!(record(&store, b.id).await.state, State::Cancelled, "cancelled with its dependency");

    assert_eq!(store.retry(b.id, now).await.unwrap(), orch::RetryStatus::Retried);
    assert_eq!(record(&store, b.id).await.state, State::Blocked, "its dependency has not succeeded");
    assert!(store.claim(claim_params(&["later"], now, "w", 10)).await.unwrap().is_empty());
    assert_eq!(store.retry(a.id, now).await.unwrap(), orch::RetryStatus::Retried);
    let again = claim_one(&store, "job", now, "w").await;
    let ok = Outcome::Succeeded { output: "null".into(), follow_ups: Vec::new() };
    store
        .complete(vec![Completion { lease: again.lease, now, worker: "w".into(), outcome: ok }])
        .await
        .unwrap();
    assert_eq!(record(&store, b.id).await.state, State::Pending, "unblocked when its dependency succeeded");
}
