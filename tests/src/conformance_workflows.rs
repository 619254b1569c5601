//! The workflow cases of the conformance suite: dependency order, outputs passed on,
//! concurrency, failure propagation, cancellation, builder rejections.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use orch::{
    Command, Context, Error, FailureKind, HandlerError, JournalKind, NewCommand, Orch, Registry, State,
    Store, Worker, WorkerHandle, Workflow, WorkflowError, WorkflowState, WorkflowStatus,
};
use serde::{Deserialize, Serialize};

use crate::harness::Harness;
use crate::support::{WAIT, fast_config};

/// A workflow step: reads the outputs of the steps named in `reads`, records when it
/// started and finished, and returns `name(outputs…)`; fails for good when `fail`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepCommand {
    /// The step's name, echoed in the output.
    pub name: String,
    /// Dependencies whose outputs go into this step's output.
    pub reads: Vec<String>,
    /// Fail instead of succeeding.
    pub fail: bool,
    /// Wait until cancelled instead of finishing.
    pub hold: bool,
}

impl Command for StepCommand {
    type Output = String;
    const RETRIES: u32 = 0;
}

fn step(name: &str, reads: &[&str]) -> NewCommand {
    NewCommand::of(&StepCommand {
        name: name.into(),
        reads: reads.iter().map(|r| r.to_string()).collect(),
        fail: false,
        hold: false,
    })
}

/// What the step handlers saw, in order: `start:<name>` and `end:<name>`.
type Log = Arc<Mutex<Vec<String>>>;

fn registry(log: &Log) -> Registry {
    let mut registry = Registry::new();
    let log = Arc::clone(log);
    registry
        .register_fn(move |c: StepCommand, ctx: Context| {
            let log = Arc::clone(&log);
            async move {
                log.lock().unwrap().push(format!("start:{}", c.name));
                if c.hold {
                    ctx.cancellation_token().cancelled().await;
                    return Err(HandlerError::new("stopped"));
                }
                let mut inputs = Vec::new();
                for dependency in &c.reads {
                    inputs.push(ctx.dependency_output::<StepCommand>(dependency).await?);
                }
                log.lock().unwrap().push(format!("end:{}", c.name));
                if c.fail {
                    return Err(HandlerError::permanent(format!("{} failed", c.name)));
                }
                Ok(format!("{}({})", c.name, inputs.join(",")))
            }
        })
        .unwrap();
    registry
}

fn workers(store: &Arc<dyn Store>, log: &Log, count: usize, concurrency: usize) -> Vec<WorkerHandle> {
    (0..count)
        .map(|i| {
            let config = orch::WorkerConfig {
                concurrency,
                instance_key: orch::DEFAULT_TARGET.into(),
                ..fast_config(&format!("wf{i}"))
            };
            Worker::new(Orch::new(Arc::clone(store)), registry(log), config).unwrap().start()
        })
        .collect()
}

async fn wait(orch: &Orch, id: orch::WorkflowId) -> WorkflowStatus {
    tokio::time::timeout(WAIT, orch.wait_workflow(id)).await.expect("the workflow finished in time").unwrap()
}

async fn output(orch: &Orch, status: &WorkflowStatus, name: &str) -> String {
    let step = status.step(name).unwrap_or_else(|| panic!("no step {name}"));
    orch.output::<StepCommand>(step.command_id)
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("{name} has no output"))
}

/// Asserts that in `log` every step started only after each of its dependencies ended.
fn assert_order(log: &[String], status: &WorkflowStatus) {
    let position = |event: String| log.iter().position(|e| *e == event);
    for step in &status.steps {
        let started =
            position(format!("start:{}", step.name)).unwrap_or_else(|| panic!("{} never ran", step.name));
        for dependency in &step.depends_on {
            let ended = position(format!("end:{dependency}")).expect("a dependency ran");
            assert!(
                ended < started,
                "{} started before its dependency {dependency} ended: {log:?}",
                step.name
            );
        }
    }
}

/// The seed's example (payments, then analytics) and a diamond (A → B, A → C, B + C → D):
/// no step starts before its dependencies succeeded, and each reads their outputs.
pub async fn workflow_runs_in_dependency_order(h: &dyn Harness) {
    let store = h.store().await;
    let log: Log = Arc::default();
    let running = workers(&store, &log, 2, 4);
    let orch = Orch::new(Arc::clone(&store));

    let seed = Workflow::builder()
        .step("payments", step("payments", &[]))
        .step_after("analytics", step("analytics", &["payments"]), ["payments"])
        .build()
        .unwrap();
    let diamond = Workflow::builder()
        .step_after("d", step("d", &["b", "c"]), ["b", "c"])
        .step_after("b", step("b", &["a"]), ["a"])
        .step_after("c", step("c", &["a"]), ["a"])
        .step("a", step("a", &[]))
        .build()
        .unwrap();
    let seed_id = orch.start_workflow(seed).await.unwrap();
    let diamond_id = orch.start_workflow(diamond).await.unwrap();

    let seed = wait(&orch, seed_id).await;
    let diamond = wait(&orch, diamond_id).await;
    for w in running {
        w.shutdown().await;
    }
    assert_eq!(seed.state, WorkflowState::Succeeded);
    assert_eq!(diamond.state, WorkflowState::Succeeded);
    assert_eq!(output(&orch, &seed, "analytics").await, "analytics(payments())");
    assert_eq!(output(&orch, &diamond, "d").await, "d(b(a()),c(a()))");
    let log = log.lock().unwrap().clone();
    assert_order(&log, &seed);
    assert_order(&log, &diamond);
    assert_eq!(diamond.step("d").unwrap().depends_on, vec!["b".to_string(), "c".to_string()]);

    let d = diamond.step("d").unwrap().command_id;
    let kinds: Vec<JournalKind> = store.journal(d).await.unwrap().into_iter().map(|e| e.kind).collect();
    assert_eq!(kinds[..2], [JournalKind::Enqueued, JournalKind::Unblocked], "{kinds:?}");
    let record = store.get(d).await.unwrap().unwrap();
    assert_eq!(record.workflow.as_ref().map(|w| w.workflow_id), Some(diamond_id));
    assert_eq!(record.correlation_id, diamond_id.to_string());
}

/// Independent steps overlap in time on two workers that each run one command at a
/// time: each step waits until the other has started.
pub async fn workflow_steps_run_concurrently(h: &dyn Harness) {
    #[derive(Debug, Clone, Serialize, Deserialize)]
    struct MeetCommand;
    impl Command for MeetCommand {
        type Output = ();
        const RETRIES: u32 = 0;
        const TIMEOUT: Duration = Duration::from_secs(60);
    }
    let store = h.store().await;
    let barrier = Arc::new(tokio::sync::Barrier::new(2));
    let running: Vec<WorkerHandle> = (0..2)
        .map(|i| {
            let barrier = Arc::clone(&barrier);
            let mut registry = Registry::new();
            registry
                .register_fn(move |_: MeetCommand, _: Context| {
                    let barrier = Arc::clone(&barrier);
                    async move {
                        barrier.wait().await;
                        Ok::<_, HandlerError>(())
                    }
                })
                .unwrap();
            // One command per worker: none claimed ahead, so each worker takes one step.
            let config = orch::WorkerConfig {
                concurrency: 1,
                prefetch: 0,
                instance_key: orch::DEFAULT_TARGET.into(),
                ..fast_config(&format!("meet{i}"))
            };
            Worker::new(Orch::new(Arc::clone(&store)), registry, config).unwrap().start()
        })
        .collect();
    let orch = Orch::new(Arc::clone(&store));
    let workflow = Workflow::builder()
        .step("left", NewCommand::of(&MeetCommand))
        .step("right", NewCommand::of(&MeetCommand))
        .build()
        .unwrap();
    let id = orch.start_workflow(workflow).await.unwrap();
    let status = wait(&orch, id).await;
    for w in running {
        w.shutdown().await;
    }
    assert_eq!(status.state, WorkflowState::Succeeded, "both steps met while running at once");
}

/// A step that fails for good cancels its transitive dependents; an independent
/// branch still runs; the workflow ends failed.
pub async fn workflow_failure_cancels_dependents(h: &dyn Harness) {
    let store = h.store().await;
    let log: Log = Arc::default();
    let running = workers(&store, &log, 1, 4);
    let orch = Orch::new(Arc::clone(&store));
    let failing = NewCommand::of(&StepCommand { name: "a".into(), reads: vec![], fail: true, hold: false });
    let workflow = Workflow::builder()
        .step("a", failing)
        .step_after("b", step("b", &[]), ["a"])
        .step_after("c", step("c", &[]), ["b"])
        .step("other", step("other", &[]))
        .build()
        .unwrap();
    let id = orch.start_workflow(workflow).await.unwrap();
    let status = wait(&orch, id).await;
    for w in running {
        w.shutdown().await;
    }
    assert_eq!(status.state, WorkflowState::Failed);
    let state = |name: &str| status.step(name).unwrap().state;
    assert_eq!(
        [state("a"), state("b"), state("c"), state("other")],
        [State::Failed, State::Cancelled, State::Cancelled, State::Succeeded]
    );
    let a = status.step("a").unwrap().command_id;
    for name in ["b", "c"] {
        let record = store.get(status.step(name).unwrap().command_id).await.unwrap().unwrap();
        let error = record.error.expect("a cancelled dependent records why");
        assert_eq!(error.kind, FailureKind::Cancelled);
        assert!(error.message.contains(&a.to_string()), "{name}: {}", error.message);
        assert_eq!(record.attempts, 0, "{name} never ran");
        let kinds: Vec<JournalKind> =
            store.journal(record.id).await.unwrap().into_iter().map(|e| e.kind).collect();
        assert_eq!(kinds[..2], [JournalKind::Enqueued, JournalKind::Cancelled], "{name}");
        assert!(!kinds.contains(&JournalKind::Claimed), "{name} never ran: {kinds:?}");
    }
    let log = log.lock().unwrap().clone();
    assert!(!log.iter().any(|e| e == "start:b" || e == "start:c"), "{log:?}");
}

/// Cancelling a workflow cancels the running step (through its worker) and the
/// blocked ones; finished steps keep their state.
pub async fn workflow_cancel_stops_unfinished(h: &dyn Harness) {
    let store = h.store().await;
    let log: Log = Arc::default();
    let running = workers(&store, &log, 1, 4);
    let orch = Orch::new(Arc::clone(&store));
    let holding =
        NewCommand::of(&StepCommand { name: "hold".into(), reads: vec![], fail: false, hold: true });
    let workflow = Workflow::builder()
        .step("first", step("first", &[]))
        .step_after("hold", holding, ["first"])
        .step_after("last", step("last", &[]), ["hold"])
        .build()
        .unwrap();
    let id = orch.start_workflow(workflow).await.unwrap();
    crate::support::eventually("the holding step to start", || {
        let log = Arc::clone(&log);
        async move { log.lock().unwrap().iter().any(|e| e == "start:hold").then_some(()) }
    })
    .await;
    // The running step is asked to stop; the blocked one is cancelled, unless the
    // running one's cancellation already cascaded to it.
    let cancelled = orch.cancel_workflow(id).await.unwrap();
    assert!((1..=2).contains(&cancelled), "cancelled {cancelled}");
    let status = wait(&orch, id).await;
    for w in running {
        w.shutdown().await;
    }
    assert_eq!(status.state, WorkflowState::Failed);
    let states: Vec<State> =
        ["first", "hold", "last"].iter().map(|n| status.step(n).unwrap().state).collect();
    assert_eq!(states, [State::Succeeded, State::Cancelled, State::Cancelled]);
}

/// Graphs that cannot run are rejected when built, with typed errors, and nothing is
/// stored; an unknown workflow id is reported as such.
pub async fn workflow_builder_rejections(h: &dyn Harness) {
    let store = h.store().await;
    let orch = Orch::new(Arc::clone(&store));
    let rejected = [
        Workflow::builder().step("a", step("a", &[])).step("a", step("a", &[])).build(),
        Workflow::builder().step_after("a", step("a", &[]), ["missing"]).build(),
        Workflow::builder()
            .step_after("a", step("a", &[]), ["b"])
            .step_after("b", step("b", &[]), ["a"])
            .build(),
        Workflow::builder().build(),
    ];
    let errors: Vec<WorkflowError> = rejected
        .into_iter()
        .map(|r| match r {
            Err(Error::InvalidWorkflow(e)) => e,
            other => panic!("expected InvalidWorkflow, got {other:?}"),
        })
        .collect();
    assert!(matches!(errors[0], WorkflowError::DuplicateStep(ref s) if s == "a"));
    assert!(
        matches!(errors[1], WorkflowError::UnknownDependency { ref dependency, .. } if dependency == "missing")
    );
    assert!(matches!(errors[2], WorkflowError::Cycle(_)));
    assert!(matches!(errors[3], WorkflowError::Empty));
    assert!(store.list(orch::store::ListParams::default()).await.unwrap().is_empty());
    let unknown = orch::WorkflowId::generate(orch::Timestamp::from_millis(1));
    assert!(orch.workflow(unknown).await.unwrap().is_none());
    assert!(matches!(orch.wait_workflow(unknown).await, Err(Error::WorkflowNotFound(id)) if id == unknown));
}
