//! A model-based property test of the command lifecycle.
//!
//! Random sequences of push, claim, advance time, complete, fail, heartbeat, worker
//! vanishes, rescue and cancel run against a real store under a manual clock. After
//! every step the store must agree with a small model of the lifecycle: each command's
//! state, attempts, lease and due time. Stale leases (held by a worker whose lease
//! expired and was re-claimed) are used on purpose and must change nothing. At the end,
//! with time past every deadline and a live worker, every command must be terminal.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use orch::store::{
    ClaimParams, Completion, CompletionStatus, HeartbeatParams, Lease, LeaseStatus, LeaseToken, ListParams,
    Outcome,
};
use orch::{CancelStatus, CommandId, Failure, FailureKind, NewCommand, State, Store, Timestamp};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

use crate::harness::Harness;

const WORKERS: usize = 2;
const TIMEOUT: Duration = orch::DEFAULT_TIMEOUT;
const BUFFER: Duration = Duration::from_secs(1);
const RETRY_DELAY: Duration = Duration::from_secs(1);

/// One step of a generated scenario.
#[derive(Debug, Clone)]
pub enum Op {
    /// Push a command due after a delay, with a retry count.
    Push {
        /// Delay before it is due.
        delay_ms: u64,
        /// Retries allowed.
        retries: u32,
    },
    /// A worker claims up to `limit` due commands.
    Claim {
        /// Which worker.
        worker: usize,
        /// Batch size.
        limit: usize,
    },
    /// Time moves on.
    Advance {
        /// By how much.
        ms: u64,
    },
    /// A worker records success for one of the leases it holds (maybe a stale one).
    Complete {
        /// Which worker.
        worker: usize,
        /// Which of its leases.
        pick: usize,
    },
    /// A worker records a failed attempt for one of its leases.
    Fail {
        /// Which worker.
        worker: usize,
        /// Which of its leases.
        pick: usize,
    },
    /// A worker renews all its leases.
    Heartbeat {
        /// Which worker.
        worker: usize,
    },
    /// A worker dies, forgetting its leases (they stay in the store until they expire).
    Vanish {
        /// Which worker.
        worker: usize,
    },
    /// Expired leases are rescued.
    Rescue,
    /// A client cancels a command.
    Cancel {
        /// Which command (index into the known ones).
        pick: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let worker = 0..WORKERS;
    prop_oneof![
        3 => (prop_oneof![Just(0u64), 0..4_000u64], 0..3u32).prop_map(|(delay_ms, retries)| Op::Push { delay_ms, retries }),
        3 => (worker.clone(), 1..4usize).prop_map(|(worker, limit)| Op::Claim { worker, limit }),
        3 => prop_oneof![0..2_000u64, 5_000..9_000u64].prop_map(|ms| Op::Advance { ms }),
        2 => (worker.clone(), any::<usize>()).prop_map(|(worker, pick)| Op::Complete { worker, pick }),
        2 => (worker.clone(), any::<usize>()).prop_map(|(worker, pick)| Op::Fail { worker, pick }),
        2 => worker.clone().prop_map(|worker| Op::Heartbeat { worker }),
        1 => worker.prop_map(|worker| Op::Vanish { worker }),
        2 => Just(Op::Rescue),
        1 => any::<usize>().prop_map(|pick| Op::Cancel { pick }),
    ]
}

#[derive(Debug, Clone, PartialEq)]
struct ModelCommand {
    state: State,
    attempts: u32,
    max_attempts: u32,
    scheduled_at: Timestamp,
    token: Option<LeaseToken>,
    expires: Option<Timestamp>,
    cancel_requested: bool,
}

#[derive(Debug, Default)]
struct Model {
    commands: BTreeMap<CommandId, ModelCommand>,
    held: [Vec<Lease>; WORKERS],
}

impl Model {
    fn holds(&self, lease: &Lease) -> bool {
        self.commands
            .get(&lease.id)
            .is_some_and(|c| c.state == State::Running && c.token == Some(lease.token))
    }
}

/// Runs `cases` random scenarios against fresh stores from `harness`.
pub fn run<H: Harness>(harness: Arc<H>, cases: u32) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let mut runner = TestRunner::new(Config { cases, failure_persistence: None, ..Config::default() });
    let result = runner.run(&proptest::collection::vec(op(), 1..60), |ops| {
        rt.block_on(async {
            let store = harness.store().await;
            check(store, ops).await
        })
    });
    if let Err(e) = result {
        panic!("{} lifecycle property failed: {e}", harness.backend());
    }
}

fn fail(msg: String) -> TestCaseError {
    TestCaseError::fail(msg)
}

async fn check(store: Arc<dyn Store>, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let mut now = Timestamp::from_millis(1_900_000_000_000);
    let mut model = Model::default();
    let err = |e: orch::Error| fail(format!("store error: {e}"));
    for (step, op) in ops.iter().enumerate() {
        match op {
            Op::Push { delay_ms, retries } => {
                let row = NewCommand::raw("job", serde_json::json!({ "step": step }))
                    .delay(Duration::from_millis(*delay_ms))
                    .retries(*retries)
                    .resolve(now)
                    .map_err(err)?;
                model.commands.insert(
                    row.id,
                    ModelCommand {
                        state: State::Pending,
                        attempts: 0,
                        max_attempts: retries + 1,
                        scheduled_at: row.scheduled_at,
                        token: None,
                        expires: None,
                        cancel_requested: false,
                    },
                );
                store.enqueue(vec![row]).await.map_err(err)?;
            }
            Op::Claim { worker, limit } => {
                let mut due: Vec<(Timestamp, CommandId)> = model
                    .commands
                    .iter()
                    .filter(|(_, c)| c.state == State::Pending && c.scheduled_at <= now)
                    .map(|(id, c)| (c.scheduled_at, *id))
                    .collect();
                due.sort();
                due.truncate(*limit);
                let claimed = store
                    .claim(ClaimParams {
                        target: orch::DEFAULT_TARGET.into(),
                        names: vec!["job".into()],
                        limit: *limit,
                        now,
                        worker: format!("w{worker}"),
                        lease_buffer: BUFFER,
                    })
                    .await
                    .map_err(err)?;
                let mut got: Vec<CommandId> = claimed.iter().map(|c| c.lease.id).collect();
                got.sort();
                let mut want: Vec<CommandId> = due.iter().map(|(_, id)| *id).collect();
                want.sort();
                prop_assert_eq!(&got, &want, "step {}: claim returned the wrong commands", step);
                for c in claimed {
                    let m = model.commands.get_mut(&c.lease.id).expect("claimed a known command");
                    m.state = State::Running;
                    m.attempts += 1;
                    m.token = Some(c.lease.token);
                    m.expires = Some(now + TIMEOUT + BUFFER);
                    m.cancel_requested = false;
                    prop_assert_eq!(c.attempt, m.attempts);
                    model.held[*worker].push(c.lease);
                }
            }
            Op::Advance { ms } => now = now + Duration::from_millis(*ms),
            Op::Complete { worker, pick } | Op::Fail { worker, pick } => {
                let held = &mut model.held[*worker];
                if held.is_empty() {
                    continue;
                }
                let lease = held.remove(pick % held.len());
                let valid = model.holds(&lease);
                let m = model.commands.get_mut(&lease.id).expect("known");
                let outcome = if matches!(op, Op::Complete { .. }) {
                    Outcome::Succeeded { output: "null".into(), follow_ups: vec![] }
                } else if m.attempts < m.max_attempts {
                    Outcome::Retry {
                        failure: Failure::new(FailureKind::Error, "x"),
                        retry_at: now + RETRY_DELAY,
                    }
                } else {
                    Outcome::Failed { failure: Failure::new(FailureKind::Error, "x"), follow_ups: vec![] }
                };
                let status = store
                    .complete(vec![Completion {
                        lease,
                        now,
                        worker: format!("w{worker}"),
                        outcome: outcome.clone(),
                    }])
                    .await
                    .map_err(err)?;
                let expected = if valid { CompletionStatus::Applied } else { CompletionStatus::LeaseLost };
                prop_assert_eq!(status, vec![expected], "step {}: completion with lease {:?}", step, lease);
                if valid {
                    m.token = None;
                    m.expires = None;
                    match outcome {
                        Outcome::Succeeded { .. } => m.state = State::Succeeded,
                        // A requested cancel wins over the retry.
                        Outcome::Retry { .. } if m.cancel_requested => m.state = State::Cancelled,
                        Outcome::Retry { retry_at, .. } => {
                            m.state = State::Pending;
                            m.scheduled_at = retry_at;
                        }
                        _ => m.state = State::Failed,
                    }
                }
            }
            Op::Heartbeat { worker } => {
                let leases = model.held[*worker].clone();
                if leases.is_empty() {
                    continue;
                }
                let statuses = store
                    .heartbeat(HeartbeatParams { leases: leases.clone(), now, lease_buffer: BUFFER })
                    .await
                    .map_err(err)?;
                prop_assert_eq!(statuses.len(), leases.len());
                for (lease, status) in leases.iter().zip(statuses) {
                    if model.holds(lease) {
                        let m = model.commands.get_mut(&lease.id).expect("known");
                        prop_assert_eq!(status, LeaseStatus::Held { cancel_requested: m.cancel_requested });
                        m.expires = Some(now + TIMEOUT + BUFFER);
                    } else {
                        prop_assert_eq!(status, LeaseStatus::Lost, "step {}: stale lease renewed", step);
                        model.held[*worker].retain(|l| l != lease);
                    }
                }
            }
            Op::Vanish { worker } => model.held[*worker].clear(),
            Op::Rescue => {
                let rescued = store.rescue(now, 10_000).await.map_err(err)?;
                let mut got: Vec<(CommandId, State)> = rescued.iter().map(|r| (r.id, r.state)).collect();
                got.sort();
                let mut want = Vec::new();
                for (id, m) in model.commands.iter_mut() {
                    if m.state == State::Running && m.expires.is_some_and(|e| e < now) {
                        m.state = if m.cancel_requested {
                            State::Cancelled
                        } else if m.attempts < m.max_attempts {
                            m.scheduled_at = now;
                            State::Pending
                        } else {
                            State::Failed
                        };
                        m.token = None;
                        m.expires = None;
                        want.push((*id, m.state));
                    }
                }
                want.sort();
                prop_assert_eq!(got, want, "step {}: rescue", step);
            }
            Op::Cancel { pick } => {
                if model.commands.is_empty() {
                    continue;
                }
                let id = *model.commands.keys().nth(pick % model.commands.len()).expect("non-empty");
                let m = model.commands.get_mut(&id).expect("known");
                let status = store.cancel(id, now).await.map_err(err)?;
                let expected = match m.state {
                    State::Blocked | State::Pending => {
                        m.state = State::Cancelled;
                        CancelStatus::Cancelled
                    }
                    State::Running => {
                        m.cancel_requested = true;
                        CancelStatus::Requested
                    }
                    finished => CancelStatus::AlreadyFinished(finished),
                };
                prop_assert_eq!(status, expected, "step {}: cancel", step);
            }
        }
        compare(&store, &model, step).await?;
    }

    // Time runs past every deadline; a live worker rescues, claims and completes.
    for _ in 0..3 {
        now = now + Duration::from_secs(3600);
        store.rescue(now, 10_000).await.map_err(err)?;
        let claimed = store
            .claim(ClaimParams {
                target: orch::DEFAULT_TARGET.into(),
                names: vec!["job".into()],
                limit: 10_000,
                now,
                worker: "live".into(),
                lease_buffer: BUFFER,
            })
            .await
            .map_err(err)?;
        let completions = claimed
            .into_iter()
            .map(|c| Completion {
                lease: c.lease,
                now,
                worker: "live".into(),
                outcome: Outcome::Succeeded { output: "null".into(), follow_ups: vec![] },
            })
            .collect();
        store.complete(completions).await.map_err(err)?;
    }
    let records = store.list(ListParams::default()).await.map_err(err)?;
    prop_assert_eq!(records.len(), model.commands.len());
    for r in records {
        prop_assert!(r.state.is_terminal(), "command {} still {} after every deadline passed", r.id, r.state);
        prop_assert!(r.attempts <= r.max_attempts);
    }
    Ok(())
}

async fn compare(store: &Arc<dyn Store>, model: &Model, step: usize) -> Result<(), TestCaseError> {
    let records = store
        .list(ListParams { limit: 10_000, ..Default::default() })
        .await
        .map_err(|e| fail(format!("list: {e}")))?;
    prop_assert_eq!(records.len(), model.commands.len(), "step {}: command count", step);
    for r in records {
        let m = model.commands.get(&r.id).ok_or_else(|| fail(format!("unknown command {}", r.id)))?;
        prop_assert_eq!(r.state, m.state, "step {}: state of {}", step, r.id);
        prop_assert_eq!(r.attempts, m.attempts, "step {}: attempts of {}", step, r.id);
        prop_assert!(r.attempts <= r.max_attempts, "step {}: attempts exceed retries + 1", step);
        prop_assert_eq!(r.lease_token, m.token, "step {}: lease of {}", step, r.id);
        prop_assert_eq!(
            r.lease_token.is_some(),
            r.state == State::Running,
            "step {}: lease iff running",
            step
        );
        if r.state == State::Running {
            prop_assert_eq!(r.lease_expires_at, m.expires, "step {}: lease expiry of {}", step, r.id);
            prop_assert_eq!(r.cancel_requested, m.cancel_requested);
        }
        if r.state == State::Pending {
            prop_assert_eq!(r.scheduled_at, m.scheduled_at, "step {}: due time of {}", step, r.id);
        }
    }
    Ok(())
}
